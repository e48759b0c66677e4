//! The standard benchmark problems, shared by `optical bench` and the criterion benches so
//! that both measure the same thing.
//!
//! | kernel            | problem                                                        | throughput unit |
//! |-------------------|----------------------------------------------------------------|-----------------|
//! | `cosine-cost`     | b=64, n=m=128, d=384, f32                                      | GB/s (x + y read, C written) |
//! | `maxsim`          | 8 queries × 32 tokens against 1,000 documents × 48 tokens, d=128 | GB/s (documents read), GFLOP/s |
//! | `sinkhorn`        | b=64, n=m=128, ε=0.05, 200 iterations (no early stop)          | G exp/s (2·b·n·m per iteration) |
//! | `sinkhorn-512`    | b=4, n=m=512, ε=0.05, 100 iterations (no early stop)           | G exp/s |
//! | `sinkhorn-checks` | a distillation step's OT: b=16, n=m=32, d=384, ε=0.005, threshold 1e-3, a check every 5 iterations, up to 500: where the checks' synchronisations, not the exponentials, take the time on a GPU | G exp/s (iterations run) |
//! | `sinkhorn-2048`   | b=2, n=m=2048, ε=0.05, 50 iterations: a few pairs far larger than on-chip memory (opt-in) | G exp/s |
//! | `sinkhorn-fused`  | embeddings b=256, n=m=128, d=384 → cosine cost + Sinkhorn, ε=0.05, 100 iterations (opt-in) | G exp/s |
//! | `sinkhorn-fused-1` | the same problem with 1 iteration: on a GPU mostly the cost phase, which `sinkhorn-fused` less this leaves to the iterations (opt-in) | G exp/s |
//! | `cosine-cost-hbm` | b=512, n=m=128, d=384: 235 MB moved per call, several times any GPU's L2, so that repeated calls measure HBM and not L2 (opt-in) | GB/s |
//! | `exp2-peak` | at least 2^30 exponentials in independent chains over the whole device and nothing else ([`crate::backend::peak`]): the measured exp rate that the Sinkhorn floors assume (opt-in) | G exp/s |
//!
//! Inputs are seeded (normal embeddings; costs are their cosine costs), so every run and
//! every backend sees the same numbers. Timing: one warm-up call, then calls until at
//! least `min_seconds` have passed (at least 3); the median is reported. Backends that can
//! time their kernels alone (CUDA, with events) also report `device_seconds_per_call`: the
//! same job from inputs in device memory to outputs in device memory, without transfers
//! or host work; the rates are then given for both.

pub mod compare;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::backend::peak::CHAINS;
use crate::backend::{Backend, DeviceJob};
use crate::error::Result;
use crate::ot::problem::{Embeddings, PackedDocs, Problem, SinkhornParams};
use crate::rng::SplitMix64;

/// One measured kernel.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRecord {
    pub kernel: &'static str,
    pub backend: &'static str,
    pub shape: String,
    pub seconds_per_call: f64,
    pub calls: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gexp_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflop_per_s: Option<f64>,
    /// Kernel time alone (no transfers, no host work), where the backend can measure it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_seconds_per_call: Option<f64>,
    /// The rate of `gb_per_s`, `gexp_per_s` or `gflop_per_s` (whichever is the kernel's
    /// throughput unit) computed from `device_seconds_per_call`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_rate: Option<f64>,
    /// Mean iterations per pair of a solve that stops on its own (`sinkhorn-checks`): a
    /// result, so not part of `shape` (`bench compare` notes when it changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations_mean: Option<f64>,
    /// Host-side phases of a timed call (`--phases`; see [`crate::phases`]): seconds per call
    /// of each, first seen first. Phases nest, so they do not add up to the wall time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_phases: Vec<PhaseTime>,
    /// The processor and its threads (`AMD EPYC 7B13, 2 threads`): wall times depend on it
    /// on every backend.
    pub cpu: String,
    /// The GPU or adapter that ran the kernels, on the GPU backends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// The lanes a throughput probe ran on (`exp2-peak`: threads × vector width on the CPU,
    /// threads on a GPU): the hardware's, not the problem's, so not part of `shape`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lanes: Option<usize>,
    /// The kernel settings of this record's backend in effect (`OPTICAL_CPU_*`,
    /// `OPTICAL_WGPU_*` or `OPTICAL_CUDA_*`: variable → choice, defaults included), as
    /// `optical info` lists them: `bench compare` notes timings taken under different ones.
    pub settings: BTreeMap<&'static str, &'static str>,
    /// Whether the host phases were timed (`--phases`): the bookkeeping is in the wall time,
    /// and on CUDA each download then waits for the stream first.
    pub phases: bool,
    /// The version of optical that measured it.
    pub version: &'static str,
}

/// The kernel settings in effect that apply to `backend` (see [`BenchRecord::settings`]).
pub fn backend_settings(backend: &str) -> BTreeMap<&'static str, &'static str> {
    let prefix = match backend {
        "cpu" => "OPTICAL_CPU_",
        "wgpu" => "OPTICAL_WGPU_",
        "cuda" => "OPTICAL_CUDA_",
        _ => return BTreeMap::new(),
    };
    crate::backend::settings()
        .into_iter()
        .filter(|s| s.variable.starts_with(prefix))
        .filter_map(|s| Some((s.variable, s.value?)))
        .collect()
}

/// The processor's model name (from `/proc/cpuinfo`, else the architecture) and the
/// threads this process may use.
pub fn cpu_model() -> (String, usize) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    // The threads the CPU kernels run on (`RAYON_NUM_THREADS` included), not the machine's.
    let threads = rayon::current_num_threads();
    (model, threads)
}

/// One host-side phase of a timed call.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    pub seconds_per_call: f64,
}

pub const KERNELS: [&str; 5] = [
    "cosine-cost",
    "maxsim",
    "sinkhorn",
    "sinkhorn-512",
    "sinkhorn-checks",
];

/// ε of the Sinkhorn problems with a fixed number of iterations.
pub const EPSILON: f64 = 0.05;

/// A Sinkhorn problem from a cost with a fixed number of iterations (no early stop): `b`
/// pairs of `n × n` cosine costs of `d = 64` embeddings, ε = [`EPSILON`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkhornShape {
    /// The kernel name `optical bench --kernels` takes.
    pub kernel: &'static str,
    pub b: usize,
    pub n: usize,
    pub iterations: usize,
}

/// The `sinkhorn*` problems from a cost, in the order of the table above: the criterion
/// benches take the ones in [`KERNELS`] ([`SinkhornShape::standard`]).
pub const SINKHORN_SHAPES: [SinkhornShape; 3] = [
    SinkhornShape {
        kernel: "sinkhorn",
        b: 64,
        n: 128,
        iterations: 200,
    },
    SinkhornShape {
        kernel: "sinkhorn-512",
        b: 4,
        n: 512,
        iterations: 100,
    },
    SinkhornShape {
        kernel: "sinkhorn-2048",
        b: 2,
        n: 2048,
        iterations: 50,
    },
];

impl SinkhornShape {
    /// The problem (seeded: the same costs every run).
    pub fn problem(&self) -> Problem {
        sinkhorn_problem(self.b, self.n, self.n, 64)
    }

    /// ε = [`EPSILON`], `iterations` iterations, no early stop.
    pub fn params(&self) -> SinkhornParams {
        fixed_iterations(EPSILON, self.iterations)
    }

    /// Exponentials the log-domain passes evaluate: two per entry and iteration (the unit
    /// of every Sinkhorn rate, whatever form a backend runs).
    pub fn exps(&self) -> u64 {
        2 * (self.b * self.n * self.n * self.iterations) as u64
    }

    /// `b64_n128_it200`: the criterion benches' name of the problem.
    pub fn id(&self) -> String {
        format!("b{}_n{}_it{}", self.b, self.n, self.iterations)
    }

    /// Whether `optical bench` runs it by default (it is in [`KERNELS`]).
    pub fn standard(&self) -> bool {
        KERNELS.contains(&self.kernel)
    }
}

/// The `sinkhorn-checks` problem's parameters: `optical distill`'s defaults (ε, threshold,
/// check interval, iteration cap; a test holds them to `DistillConfig::sinkhorn`).
pub fn checks_params() -> SinkhornParams {
    SinkhornParams {
        epsilon: 0.005,
        max_iterations: 500,
        threshold: 1e-3,
        check_every: 5,
    }
}

/// The `sinkhorn-checks` problem: a distillation step's OT, 16 pairs of 32 × 32 cosine
/// costs of `d = 384` embeddings (solve it with [`checks_params`]).
pub fn checks_problem() -> Problem {
    sinkhorn_problem(16, 32, 32, 384)
}

/// The `sinkhorn-fused` problem's embeddings: 256 pairs of 128 × 128 rows of d = 384
/// (solve them with [`fused_params`]).
pub fn fused_problem() -> (Embeddings, Embeddings) {
    let (b, n, d) = (256, 128, 384);
    (embeddings(5, b, n, d), embeddings(6, b, n, d))
}

/// The `sinkhorn-fused` problem's parameters (`sinkhorn-fused-1`: one iteration).
pub fn fused_params(iterations: usize) -> SinkhornParams {
    fixed_iterations(EPSILON, iterations)
}

/// Kernels timed only when asked for by name (`--kernels`): too slow for the CPU default run.
pub const EXTRA_KERNELS: [&str; 5] = [
    "sinkhorn-fused",
    "sinkhorn-fused-1",
    "cosine-cost-hbm",
    "sinkhorn-2048",
    "exp2-peak",
];

/// Exponentials of the `exp2-peak` problem (at least; each backend rounds up to whole
/// rounds of its lanes): ≈ 0.26 ms on an H100's 16 `ex2` per clock and SM.
pub const EXP2_PEAK_EXPS: u64 = 1 << 30;

/// Seeded `(b, n, d)` normal embeddings, all rows real.
pub fn embeddings(seed: u64, b: usize, n: usize, d: usize) -> Embeddings {
    let mut rng = SplitMix64::new(seed);
    Embeddings::new("bench", b, n, d, rng.normals_f32(b * n * d), None)
        .expect("bench shapes are valid")
}

/// A standard Sinkhorn problem: the cosine cost of seeded embeddings, uniform weights.
pub fn sinkhorn_problem(b: usize, n: usize, m: usize, d: usize) -> Problem {
    let x = embeddings(1, b, n, d);
    let y = embeddings(2, b, m, d);
    let cost = crate::backend::CpuFast
        .cosine_cost(&x, &y)
        .expect("bench shapes are valid");
    Problem::new(
        b,
        n,
        m,
        cost.data.iter().map(|&v| v as f64).collect(),
        None,
        None,
    )
    .expect("bench problem is valid")
}

/// Parameters that run exactly `iterations` iterations (one convergence check, at the end).
pub fn fixed_iterations(epsilon: f64, iterations: usize) -> SinkhornParams {
    SinkhornParams {
        epsilon,
        max_iterations: iterations,
        threshold: 0.0,
        check_every: iterations,
    }
}

/// The MaxSim standard problem: (queries, documents).
pub fn maxsim_problem() -> (Embeddings, PackedDocs) {
    let (nq, qt, nd, dt, d) = (8, 32, 1000, 48, 128);
    let q = embeddings(3, nq, qt, d);
    let mut rng = SplitMix64::new(4);
    let docs = PackedDocs::new("bench", d, rng.normals_f32(nd * dt * d), vec![dt; nd])
        .expect("bench shapes are valid");
    (q, docs)
}

/// The bench's sampling rule, for any clock: one warm-up call of `sample` (its value is
/// dropped), then calls until there are at least 3 samples and `min_seconds` of wall time
/// has passed; the median sample (seconds) and the number of samples.
pub fn median_seconds(
    min_seconds: f64,
    mut sample: impl FnMut() -> Result<f64>,
) -> Result<(f64, usize)> {
    sample()?;
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || start.elapsed().as_secs_f64() < min_seconds {
        samples.push(sample()?);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], samples.len()))
}

/// Wall time of `f` under [`median_seconds`], and the mean time per call of each host
/// phase over the measured calls (empty unless phases are on; the warm-up call's are
/// dropped, so one-time setup does not count).
fn time<F: FnMut() -> Result<()>>(
    min_seconds: f64,
    mut f: F,
) -> Result<(f64, usize, Vec<PhaseTime>)> {
    let mut calls = 0usize;
    let (s, n) = median_seconds(min_seconds, || {
        if calls == 1 {
            crate::phases::take();
        }
        calls += 1;
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    let phases = crate::phases::take()
        .into_iter()
        .map(|(phase, total)| PhaseTime {
            phase,
            seconds_per_call: total / n as f64,
        })
        .collect();
    Ok((s, n, phases))
}

/// Time one standard kernel on `backend`.
pub fn run_kernel(backend: &Backend, kernel: &str, min_seconds: f64) -> Result<BenchRecord> {
    let name = backend.kind().name();
    let (cpu, threads) = cpu_model();
    let cpu = format!("{cpu}, {threads} threads");
    let gpu = backend.device_name();
    let settings = backend_settings(name);
    let phases = crate::phases::enabled();
    let record = |kernel, shape: String, (s, calls, host_phases): (f64, usize, Vec<PhaseTime>)| {
        BenchRecord {
            kernel,
            backend: name,
            shape,
            seconds_per_call: s,
            calls,
            gb_per_s: None,
            gexp_per_s: None,
            gflop_per_s: None,
            device_seconds_per_call: None,
            device_rate: None,
            iterations_mean: None,
            host_phases,
            cpu: cpu.clone(),
            gpu: gpu.clone(),
            lanes: None,
            settings: settings.clone(),
            phases,
            version: env!("CARGO_PKG_VERSION"),
        }
    };
    // Attach the device-only time and the rate `amount / time` computed from it.
    let device = |r: &mut BenchRecord, job: DeviceJob<'_>, amount: f64| -> Result<()> {
        if let Some((s, _)) = backend.device_seconds(job, min_seconds)? {
            r.device_seconds_per_call = Some(s);
            r.device_rate = Some(amount / s / 1e9);
        }
        Ok(())
    };
    if let Some(shape) = SINKHORN_SHAPES.into_iter().find(|s| s.kernel == kernel) {
        let SinkhornShape {
            b, n, iterations, ..
        } = shape;
        let problem = shape.problem();
        let params = shape.params();
        let t = time(min_seconds, || {
            backend.sinkhorn(&problem, &params).map(drop)
        })?;
        let exps = shape.exps() as f64;
        let mut r = record(
            shape.kernel,
            format!("b={b} n={n} m={n} eps={EPSILON} iterations={iterations}"),
            t,
        );
        r.gexp_per_s = Some(exps / r.seconds_per_call / 1e9);
        device(&mut r, DeviceJob::Sinkhorn(&problem, &params), exps)?;
        return Ok(r);
    }
    match kernel {
        "cosine-cost" | "cosine-cost-hbm" => {
            let (name, b) = if kernel == "cosine-cost" {
                ("cosine-cost", 64)
            } else {
                ("cosine-cost-hbm", 512)
            };
            let (n, m, d) = (128, 128, 384);
            let x = embeddings(1, b, n, d);
            let y = embeddings(2, b, m, d);
            let t = time(min_seconds, || backend.cosine_cost(&x, &y).map(drop))?;
            let bytes = 4.0 * (b * n * d + b * m * d + b * n * m) as f64;
            let mut r = record(name, format!("b={b} n={n} m={m} d={d}"), t);
            r.gb_per_s = Some(bytes / r.seconds_per_call / 1e9);
            r.gflop_per_s = Some(2.0 * (b * n * m * d) as f64 / r.seconds_per_call / 1e9);
            device(&mut r, DeviceJob::CosineCost(&x, &y), bytes)?;
            Ok(r)
        }
        "maxsim" => {
            let (q, docs) = maxsim_problem();
            let t = time(min_seconds, || backend.maxsim(&q, &docs).map(drop))?;
            let tokens: usize = docs.lengths.iter().sum();
            let flops = 2.0 * (q.b * q.n * tokens * docs.d) as f64;
            let mut r = record(
                "maxsim",
                format!(
                    "queries={}x{} docs={}x{} d={}",
                    q.b,
                    q.n,
                    docs.len(),
                    docs.lengths[0],
                    docs.d
                ),
                t,
            );
            r.gb_per_s = Some(4.0 * docs.data.len() as f64 / r.seconds_per_call / 1e9);
            r.gflop_per_s = Some(flops / r.seconds_per_call / 1e9);
            device(
                &mut r,
                DeviceJob::Maxsim(&q, &docs),
                4.0 * docs.data.len() as f64,
            )?;
            Ok(r)
        }
        "sinkhorn-checks" => {
            let problem = checks_problem();
            let (b, n) = (problem.pairs, problem.n);
            let params = checks_params();
            let mut iterations = 0usize;
            let t = time(min_seconds, || {
                let out = backend.sinkhorn(&problem, &params)?;
                iterations = out.iterations.iter().map(|&i| i as usize).sum();
                Ok(())
            })?;
            let exps = 2.0 * (n * n * iterations) as f64;
            let mut r = record(
                "sinkhorn-checks",
                format!(
                    "b={b} n={n} m={n} d=384 eps={} threshold={:e} check_every={}",
                    params.epsilon, params.threshold, params.check_every
                ),
                t,
            );
            r.iterations_mean = Some(iterations as f64 / b as f64);
            r.gexp_per_s = Some(exps / r.seconds_per_call / 1e9);
            device(&mut r, DeviceJob::Sinkhorn(&problem, &params), exps)?;
            Ok(r)
        }
        "sinkhorn-fused" | "sinkhorn-fused-1" => {
            let iters = if kernel == "sinkhorn-fused" { 100 } else { 1 };
            let (x, y) = fused_problem();
            let (b, n, d) = (x.b, x.n, x.d);
            let params = fused_params(iters);
            let t = time(min_seconds, || {
                backend.sinkhorn_embeddings(&x, &y, &params).map(drop)
            })?;
            let exps = 2.0 * (b * n * n * iters) as f64;
            let mut r = record(
                if iters == 1 {
                    "sinkhorn-fused-1"
                } else {
                    "sinkhorn-fused"
                },
                format!("b={b} n={n} m={n} d={d} eps={EPSILON} iterations={iters}"),
                t,
            );
            r.gexp_per_s = Some(exps / r.seconds_per_call / 1e9);
            device(&mut r, DeviceJob::SinkhornFused(&x, &y, &params), exps)?;
            Ok(r)
        }
        "exp2-peak" => {
            let mut ran = (0, 0.0);
            let t = time(min_seconds, || {
                let peak = backend.exp2_peak(EXP2_PEAK_EXPS)?;
                ran = (peak.lanes, peak.exps());
                Ok(())
            })?;
            let (lanes, exps) = ran;
            // The work asked for: the lanes (and so the rounds that reach it) are the
            // machine's, so two machines time the same problem.
            let mut r = record(
                "exp2-peak",
                format!("exps={EXP2_PEAK_EXPS} chains={CHAINS}"),
                t,
            );
            r.lanes = Some(lanes);
            r.gexp_per_s = Some(exps / r.seconds_per_call / 1e9);
            device(&mut r, DeviceJob::Exp2Peak(EXP2_PEAK_EXPS), exps)?;
            Ok(r)
        }
        other => Err(crate::error::Error::parameter(
            "kernel",
            format!(
                "one of {}, {}",
                KERNELS.join(", "),
                EXTRA_KERNELS.join(", ")
            ),
            other,
        )),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "distill")]
    #[test]
    fn the_checks_problem_solves_as_distillation_does() {
        assert_eq!(
            super::checks_params(),
            crate::distill::DistillConfig::default().sinkhorn()
        );
    }
}
