//! Backends and their run-time selection.
//!
//! Every backend implements the same small set of primitives — the pairwise cosine cost,
//! MaxSim scoring, and the Sinkhorn reductions of [`SinkhornKernels`](crate::ot::sinkhorn::SinkhornKernels) — with identical
//! semantics; the solver's control logic lives once in [`crate::ot::sinkhorn`]. A backend
//! that is not compiled in, or finds no device, is reported as
//! [`Error::BackendUnavailable`], never a panic.

#[macro_use]
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
mod choice;
pub mod cpu;
pub mod cuda;
pub mod peak;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs, Problem, SinkhornParams};
use crate::ot::sinkhorn::{self, SinkhornOutput};

#[cfg(feature = "wgpu")]
pub use self::wgpu::Wgpu;
pub use cpu::{CpuFast, CpuReference};
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use peak::Exp2Peak;

/// The backends a user can ask for (`--backend`). More may come: a `match` on it needs a
/// wildcard arm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// CPU fast path: `f32`, multi-threaded, vectorised. The default.
    #[default]
    Cpu,
    /// CPU reference: `f64` accumulation, single-threaded. The ground truth.
    CpuReference,
    /// WGSL kernels through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// Hand-written PTX through the CUDA driver.
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cpu,
        BackendKind::CpuReference,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::CpuReference => "cpu-reference",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this build contains the backend (it may still find no device).
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Cpu | BackendKind::CpuReference => true,
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::parameter("backend", "one of cpu, cpu-reference, wgpu, cuda", s))
    }
}

/// A backend ready to run kernels. Its GPU variants exist with their features (`wgpu`,
/// `cuda`), and a feature turned on anywhere in a build turns it on for every crate in it:
/// a `match` on it needs a wildcard arm.
///
/// A backend is `Send + Sync`: several threads may share one. The CPU backends run each
/// call on the rayon pool; the GPU backends queue every call's work on one stream (CUDA:
/// one context and stream per process, on device 0) or one queue (wgpu), so calls from
/// several threads run one after another on the device.
#[non_exhaustive]
pub enum Backend {
    Cpu(CpuFast),
    CpuReference(CpuReference),
    #[cfg(feature = "cuda")]
    Cuda(CudaBackend),
    #[cfg(feature = "wgpu")]
    Wgpu(Wgpu),
}

// What the docs above promise, checked at compile time.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Backend>();
};

impl Backend {
    /// Open a backend: find its device. The GPU backends compile or load each kernel on
    /// its first use, so the first call of a kernel carries that time (see
    /// `docs/PERFORMANCE.md`, "Start-up").
    pub fn new(kind: BackendKind) -> Result<Backend> {
        match kind {
            BackendKind::Cpu => Ok(Backend::Cpu(CpuFast)),
            BackendKind::CpuReference => Ok(Backend::CpuReference(CpuReference)),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(Backend::Cuda(CudaBackend::new()?)),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(not_compiled_in(kind)),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Ok(Backend::Wgpu(Wgpu::new()?)),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu => Err(not_compiled_in(kind)),
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Cpu(_) => BackendKind::Cpu,
            Backend::CpuReference(_) => BackendKind::CpuReference,
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => BackendKind::Cuda,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(_) => BackendKind::Wgpu,
        }
    }

    /// What runs this backend's kernels, for benchmark records: the GPU or adapter name,
    /// or `None` for the CPU backends (whose processor [`crate::bench::cpu_model`] names).
    pub fn device_name(&self) -> Option<String> {
        match self {
            Backend::Cpu(_) | Backend::CpuReference(_) => None,
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => Some(c.device_name().to_string()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => Some(w.context().adapter_name().to_string()),
        }
    }

    /// Device-only time of one standard job (kernels only: no transfers, no host work), for
    /// backends that can measure it: CUDA with events, WGPU with pass timestamps where the
    /// adapter has them; `None` for the CPU backends. The job's inputs are checked as the
    /// ordinary entry points check them, on every backend: a bad ε or mismatched batches are
    /// an error, never a timing of kernels launched on them.
    #[allow(unused_variables)]
    pub fn device_seconds(
        &self,
        job: DeviceJob<'_>,
        min_seconds: f64,
    ) -> Result<Option<(f64, usize)>> {
        match job {
            DeviceJob::CosineCost(x, y) => cpu::check_pair_batch(x, y)?,
            DeviceJob::Maxsim(q, docs) => cpu::check_maxsim(q, docs)?,
            DeviceJob::Sinkhorn(problem, params) => {
                params.validate()?;
                crate::ot::problem::check_cost_resolution(problem.max_abs_cost(), params.epsilon)?;
            }
            DeviceJob::SinkhornFused(x, y, params) => cpu::check_embeddings_solve(x, y, params)?,
            DeviceJob::Exp2Peak(_) => {}
        }
        #[cfg(feature = "cuda")]
        if let Backend::Cuda(k) = self {
            return k.time_job(job, min_seconds).map(Some);
        }
        #[cfg(feature = "wgpu")]
        if let Backend::Wgpu(k) = self {
            return self.time_wgpu_job(k.context(), job, min_seconds);
        }
        Ok(None)
    }

    /// WGPU: the job through the ordinary entry points, each call's compute passes timed
    /// with GPU timestamps ([`self::wgpu::WgpuContext::time_passes`]), sampled as every bench
    /// is ([`crate::bench::median_seconds`]). `None` when the adapter cannot write timestamps.
    #[cfg(feature = "wgpu")]
    fn time_wgpu_job(
        &self,
        ctx: &self::wgpu::WgpuContext,
        job: DeviceJob<'_>,
        min_seconds: f64,
    ) -> Result<Option<(f64, usize)>> {
        if !ctx.has_timestamps() {
            return Ok(None);
        }
        let run = || -> Result<()> {
            match job {
                DeviceJob::CosineCost(x, y) => self.cosine_cost(x, y).map(drop),
                DeviceJob::Maxsim(q, docs) => self.maxsim(q, docs).map(drop),
                DeviceJob::Sinkhorn(problem, params) => self.sinkhorn(problem, params).map(drop),
                DeviceJob::SinkhornFused(x, y, params) => {
                    self.sinkhorn_embeddings(x, y, params).map(drop)
                }
                DeviceJob::Exp2Peak(min_exps) => self.exp2_peak(min_exps).map(drop),
            }
        };
        crate::bench::median_seconds(min_seconds, || {
            // has_timestamps() held above, so time_passes answers Some.
            ctx.time_passes(run)?
                .map(|((), seconds)| seconds)
                .ok_or_else(|| Error::Backend {
                    backend: "wgpu",
                    operation: "time passes",
                    what: "the adapter writes no timestamps".into(),
                })
        })
        .map(Some)
    }

    /// Pairwise cosine cost `C[p, i, j] = 1 − cos(x_pi, y_pj)` on real tokens, 0 on padding.
    pub fn cosine_cost(&self, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
        cpu::check_pair_batch(x, y)?;
        check_output_memory(
            "cosine cost",
            &format!("(b, n, m) = ({}, {}, {}) f32", x.b, x.n, y.n),
            [x.b, x.n, y.n, 4],
        )?;
        match self {
            Backend::Cpu(k) => k.cosine_cost(x, y),
            Backend::CpuReference(k) => k.cosine_cost(x, y),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.cosine_cost(x, y),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(k) => k.cosine_cost(x, y),
        }
    }

    /// MaxSim scores `(queries, documents)`.
    pub fn maxsim(&self, queries: &Embeddings, docs: &PackedDocs) -> Result<Vec<f32>> {
        cpu::check_maxsim(queries, docs)?;
        check_output_memory(
            "maxsim",
            &format!("(queries, documents) = ({}, {}) f32", queries.b, docs.len()),
            [queries.b, docs.len(), 4, 1],
        )?;
        match self {
            Backend::Cpu(k) => k.maxsim(queries, docs),
            Backend::CpuReference(k) => k.maxsim(queries, docs),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.maxsim(queries, docs),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(k) => k.maxsim(queries, docs),
        }
    }

    /// Entropic OT between embedding sets: cosine cost on real tokens, uniform weights over
    /// them, then Sinkhorn. Backends with a fused kernel override this so that the cost
    /// stays on-chip; the result must equal the materialised path.
    pub fn sinkhorn_embeddings(
        &self,
        x: &Embeddings,
        y: &Embeddings,
        params: &SinkhornParams,
    ) -> Result<SinkhornOutput> {
        cpu::check_embeddings_solve(x, y, params)?;
        // Per plan entry, the materialised path's peak: the f32 cost (4 bytes), the f64
        // problem and plan (16), a backend's f32 copy of the cost (4) and a caller's f32
        // copy of the plan (4), as measured from `optical ot solve` (about 28).
        check_solve_memory([x.b, x.n, y.n], 28, "the plan and the cost in f64 and f32")?;
        #[cfg(feature = "cuda")]
        if let Backend::Cuda(k) = self {
            // Checked finite by the solver.
            return k.sinkhorn_embeddings(x, y, params);
        }
        #[cfg(feature = "wgpu")]
        if let Backend::Wgpu(k) = self {
            // The fused kernel (its solution checked finite), when every pair fits on-chip;
            // else the materialised path.
            if let Some(out) = k.sinkhorn_embeddings(x, y, params)? {
                return Ok(out);
            }
        }
        let cost = self.cosine_cost(x, y)?;
        let problem = Problem::from_cost_and_lengths(&cost, &x.lengths, &y.lengths)?;
        self.sinkhorn(&problem, params)
    }

    /// The exp2 throughput probe ([`peak`]): at least `min_exps` exponentials in
    /// independent chains spread over the whole device (every SM of a GPU, every thread of
    /// the CPU), nothing else computed. The result is checked ([`Exp2Peak::check`]), so
    /// a timing of it is the rate of exponentials that actually ran.
    pub fn exp2_peak(&self, min_exps: u64) -> Result<Exp2Peak> {
        let peak = match self {
            Backend::Cpu(k) => k.exp2_peak(min_exps),
            Backend::CpuReference(k) => k.exp2_peak(min_exps),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => k.exp2_peak(min_exps),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(k) => k.exp2_peak(min_exps),
        }?;
        peak.check(self.kind().name())?;
        Ok(peak)
    }

    /// Batched log-domain Sinkhorn.
    pub fn sinkhorn(&self, problem: &Problem, params: &SinkhornParams) -> Result<SinkhornOutput> {
        // Here rather than in `sinkhorn::solve`, which the tests drive past it on purpose.
        crate::ot::problem::check_cost_resolution(problem.max_abs_cost(), params.epsilon)?;
        // Beyond the problem itself: the f64 plan (8 bytes per entry), a backend's f32 copy
        // of the cost (4) and a caller's f32 copy of the plan (4).
        check_solve_memory(
            [problem.pairs, problem.n, problem.m],
            16,
            "the plan in f64 and f32",
        )?;
        match self {
            Backend::Cpu(k) => sinkhorn::solve(k, problem, params),
            Backend::CpuReference(k) => sinkhorn::solve(k, problem, params),
            #[cfg(feature = "cuda")]
            Backend::Cuda(k) => sinkhorn::solve(k, problem, params),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(k) => sinkhorn::solve(k, problem, params),
        }
    }
}

/// One line per backend for `optical info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackendInfo {
    pub backend: &'static str,
    pub compiled_in: bool,
    pub available: bool,
    pub devices: Vec<serde_json::Value>,
    pub note: String,
}

/// What each backend finds on this machine.
pub fn probe_all() -> Vec<BackendInfo> {
    BackendKind::ALL
        .into_iter()
        .map(|kind| match kind {
            BackendKind::Cpu | BackendKind::CpuReference => BackendInfo {
                backend: kind.name(),
                compiled_in: true,
                available: true,
                devices: vec![serde_json::json!({
                    "name": "host CPU",
                    "threads": rayon::current_num_threads(),
                    "avx2_fma": cpu_has_avx2_fma(),
                })],
                note: String::new(),
            },
            BackendKind::Cuda if kind.compiled_in() => probe_cuda(),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => probe_wgpu(),
            _ => BackendInfo {
                backend: kind.name(),
                compiled_in: false,
                available: false,
                devices: vec![],
                note: format!("not compiled in (cargo feature `{}`)", kind.name()),
            },
        })
        .collect()
}

pub use choice::Setting;

/// Every kernel setting this build reads from the environment (`OPTICAL_CPU_*`, and
/// `OPTICAL_WGPU_*` and `OPTICAL_CUDA_*` where those backends are compiled in), with its
/// choices and the choice in effect: what `optical info` lists.
pub fn settings() -> Vec<Setting> {
    #[allow(unused_mut)]
    let mut all = vec![choice::setting::<cpu::fast::SinkhornForm>()];
    #[cfg(feature = "wgpu")]
    {
        use self::wgpu::{BlockedLse, CostTiling, MaxsimTiling, SinkhornKernel, SolverChecks};
        all.extend([
            choice::setting::<SinkhornKernel>(),
            choice::setting::<BlockedLse>(),
            choice::setting::<SolverChecks>(),
            choice::setting::<MaxsimTiling>(),
            choice::setting::<CostTiling>(),
        ]);
    }
    #[cfg(feature = "cuda")]
    {
        use cuda::{
            CostKernel, FusedCost, FusedThreads, MaxsimRoute, SinkhornLse, SinkhornSplit,
            SolverChecks, Staging, WgmmaStages,
        };
        all.extend([
            choice::setting::<CostKernel>(),
            choice::setting::<WgmmaStages>(),
            choice::setting::<FusedThreads>(),
            choice::setting::<FusedCost>(),
            choice::setting::<SinkhornLse>(),
            choice::setting::<SinkhornSplit>(),
            choice::setting::<SolverChecks>(),
            choice::setting::<Staging>(),
            choice::setting::<MaxsimRoute>(),
        ]);
    }
    all
}

#[cfg_attr(all(feature = "cuda", feature = "wgpu"), allow(dead_code))]
fn not_compiled_in(kind: BackendKind) -> Error {
    Error::BackendUnavailable {
        backend: kind.name(),
        reason: format!(
            "this build of optical does not include it; rebuild with `--features {}`",
            kind.name()
        ),
    }
}

/// Refuse an output whose size `dims` (element counts and the bytes per element) the
/// machine cannot allocate, before any work: a product past the address space, or one the
/// kernel refuses to reserve (on Linux, more than memory and swap), would otherwise abort
/// the process at the allocation instead of returning an error.
pub(crate) fn check_output_memory(what: &str, shape: &str, dims: [usize; 4]) -> Result<()> {
    let bytes = dims.iter().map(|&d| d as u128).product::<u128>();
    let refuse = || {
        Error::value(
            what,
            format!(
                "the output {shape} needs {:.1} GiB, more than this machine can allocate",
                bytes as f64 / (1u64 << 30) as f64
            ),
        )
    };
    let bytes = usize::try_from(bytes)
        .ok()
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(refuse)?;
    // Reserved, never touched, then released: the address space alone, no page of memory.
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| refuse())
}

/// [`check_output_memory`] for a solve of `(b, n, m)` plan entries at `bytes` each (`what`
/// says what they hold).
fn check_solve_memory([b, n, m]: [usize; 3], bytes: usize, what: &str) -> Result<()> {
    check_output_memory(
        "sinkhorn",
        &format!("(b, n, m) = ({b}, {n}, {m}): {what}"),
        [b, n, m, bytes],
    )
}

/// A standard problem timed on a device alone (see [`Backend::device_seconds`]).
#[derive(Clone, Copy, Debug)]
pub enum DeviceJob<'a> {
    /// The pairwise cosine cost of two embedding batches.
    CosineCost(&'a Embeddings, &'a Embeddings),
    /// MaxSim scores of queries against packed documents.
    Maxsim(&'a Embeddings, &'a PackedDocs),
    /// `params.max_iterations` Sinkhorn iterations of every pair, from zero potentials; with
    /// a stopping rule that can end it earlier (`check_every < max_iterations`), the checked
    /// solve, its checks included.
    Sinkhorn(&'a Problem, &'a SinkhornParams),
    /// Cosine cost + `params.max_iterations` iterations (the fused kernel where there is one).
    SinkhornFused(&'a Embeddings, &'a Embeddings, &'a SinkhornParams),
    /// The exp2 throughput probe with at least this many exponentials
    /// ([`Backend::exp2_peak`]).
    Exp2Peak(u64),
}

fn probe_cuda() -> BackendInfo {
    #[cfg(feature = "cuda")]
    let (available, devices, note) = cuda::probe();
    #[cfg(not(feature = "cuda"))]
    let (available, devices, note) = (false, vec![], String::new());
    BackendInfo {
        backend: BackendKind::Cuda.name(),
        compiled_in: true,
        available,
        devices,
        note,
    }
}

#[cfg(feature = "wgpu")]
fn probe_wgpu() -> BackendInfo {
    let found = self::wgpu::adapters();
    let devices = found.iter().map(self::wgpu::describe_adapter).collect();
    let chosen = self::wgpu::choose_adapter(found).and_then(|a| {
        Ok((
            a,
            (
                self::wgpu::SinkhornKernel::from_env()?,
                self::wgpu::BlockedLse::from_env()?,
            ),
            self::wgpu::CostTiling::from_env()?,
            self::wgpu::MaxsimTiling::from_env()?,
            self::wgpu::SolverChecks::from_env()?,
        ))
    });
    let (available, note) = match chosen {
        Ok((a, (kernels, lse), tiling, maxsim, checks)) => {
            let info = a.get_info();
            let cap = self::wgpu::caps_loop_passes(&info).map_or(String::new(), |cap| {
                format!(
                    "; its driver ends a shader's loops after {cap} passes, so long Sinkhorn \
                     dispatches are split and costs over very many dimensions (or MaxSim \
                     against very long documents) are refused"
                )
            });
            (
                true,
                format!(
                    "uses {:?} (set {} to a substring of another adapter's name); Sinkhorn \
                     kernels {} ({}: {}), their log-sum-exps shifted by the {} ({}: {}); \
                     cosine costs of sets of 64 rows or more on the {} \
                     kernel ({}: {}); MaxSim on the {}{} kernel ({}: {}); the solver's \
                     stopping rule on the {}{} ({}: {}){cap}",
                    info.name,
                    self::wgpu::ADAPTER_ENV,
                    kernels.name(),
                    self::wgpu::SINKHORN_KERNEL_ENV,
                    choice::choices::<self::wgpu::SinkhornKernel>(),
                    match lse {
                        self::wgpu::BlockedLse::Max => "maximum",
                        self::wgpu::BlockedLse::Shifted => "current potential",
                    },
                    self::wgpu::BLOCKED_LSE_ENV,
                    choice::choices::<self::wgpu::BlockedLse>(),
                    tiling.name(),
                    self::wgpu::COST_TILING_ENV,
                    choice::choices::<self::wgpu::CostTiling>(),
                    maxsim.resolve(info.device_type).name(),
                    if maxsim == self::wgpu::MaxsimTiling::Auto {
                        " (auto)"
                    } else {
                        ""
                    },
                    self::wgpu::MAXSIM_TILING_ENV,
                    choice::choices::<self::wgpu::MaxsimTiling>(),
                    checks.resolve(info.device_type).name(),
                    if checks == self::wgpu::SolverChecks::Auto {
                        " (auto)"
                    } else {
                        ""
                    },
                    self::wgpu::SOLVER_CHECKS_ENV,
                    choice::choices::<self::wgpu::SolverChecks>()
                ),
            )
        }
        Err(e) => (false, e.to_string()),
    };
    BackendInfo {
        backend: "wgpu",
        compiled_in: true,
        available,
        devices,
        note,
    }
}

fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
