//! The device side of the WGPU backend: adapter choice, device and queue, the pipelines
//! (each compiled on first use, then kept for the context) and a pool of reusable buffers.
//!
//! "Get a device" ([`WgpuContext::new`], [`adapters`]) is split from "run on this device"
//! (the kernels in the sibling modules), so tests and benches can share one context.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};

/// Environment variable that picks the adapter: a case-insensitive substring of its name.
pub const ADAPTER_ENV: &str = "OPTICAL_WGPU_ADAPTER";

pub(crate) const BACKEND: &str = "wgpu";

/// Workgroup memory every Sinkhorn shader uses besides its cost tile: hf and hg (2 × 512
/// f32), partial sums (256 f32), a status word (16 B), with a little slack.
const SINKHORN_FIXED_WORKGROUP_BYTES: u32 = 2 * 512 * 4 + 256 * 4 + 16 + 48;

pub(crate) const SHADER_COSINE: &str = include_str!("../../../shaders/cosine_cost.wgsl");
pub(crate) const SHADER_MAXSIM: &str = include_str!("../../../shaders/maxsim.wgsl");
pub(crate) const SHADER_PEAK: &str = include_str!("../../../shaders/peak.wgsl");
pub(crate) const SHADER_RETIRE: &str = include_str!("../../../shaders/sinkhorn_retire.wgsl");
// The register-blocked kernels' passes (shaders/blocked_lse.wgsl) are appended to the two
// Sinkhorn modules: WGSL has no includes.
pub(crate) const SHADER_SINKHORN: &str = concat!(
    include_str!("../../../shaders/sinkhorn.wgsl"),
    "\n",
    include_str!("../../../shaders/blocked_lse.wgsl")
);
pub(crate) const SHADER_FUSED: &str = concat!(
    include_str!("../../../shaders/fused_sinkhorn.wgsl"),
    "\n",
    include_str!("../../../shaders/blocked_lse.wgsl")
);

/// Every WGSL module of the backend, `(file name, text)`, for validation and docs (the two
/// Sinkhorn modules with `shaders/blocked_lse.wgsl` appended).
pub const SHADERS: [(&str, &str); 6] = [
    ("cosine_cost.wgsl", SHADER_COSINE),
    ("maxsim.wgsl", SHADER_MAXSIM),
    ("sinkhorn.wgsl", SHADER_SINKHORN),
    ("sinkhorn_retire.wgsl", SHADER_RETIRE),
    ("fused_sinkhorn.wgsl", SHADER_FUSED),
    ("peak.wgsl", SHADER_PEAK),
];

/// Largest number of real rows (and of columns) of a pair that the register-blocked Sinkhorn
/// kernels take: 8 per invocation along each side of their 16 × 16 grid.
pub const BLOCKED_MAX_LEN: usize = 128;

/// Workgroup memory of the register-blocked fused kernel at its largest grid (G = 16), the
/// larger of the two blocked kernels: hf and hg (2 × 512 f32), partial sums (256), partials
/// (2 × 128 × 17, which also stage the embeddings while the cost is built), level-1 results
/// (256 × 2), the fast path's shifts (2 × 128) and its flag, and the status word (the headers
/// of `shaders/fused_sinkhorn.wgsl` and `shaders/blocked_lse.wgsl`): 25,620 B.
const BLOCKED_WORKGROUP_BYTES: u32 =
    4 * (2 * 512 + 256 + 2 * 128 * 17 + 256 * 2 + 2 * 128 + 1) + 16;

/// Which WGSL kernels run the Sinkhorn iterations, chosen by `$OPTICAL_WGPU_SINKHORN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkhornKernel {
    /// The register-blocked kernels wherever every pair of a dispatch has at most
    /// [`BLOCKED_MAX_LEN`] rows and columns: K in registers, 8 × 8 entries per invocation,
    /// every invocation on every row and column update, 25 KiB of workgroup memory whatever
    /// the pair. Larger pairs take the tile kernels where K fits the tile, else the split
    /// half-iterations (a pair spread over many workgroups, one dispatch per half-iteration).
    #[default]
    Blocked,
    /// One workgroup per pair and one invocation per row (and per column) update, K in a
    /// workgroup-memory tile when it fits (`tile_capacity`), else streamed from global
    /// memory: for the fused solve the tile kernel, or the materialised path when the tile
    /// does not fit.
    Rows,
}

/// Environment variable that picks the Sinkhorn kernels: `blocked` (default) or `rows`.
pub const SINKHORN_KERNEL_ENV: &str = "OPTICAL_WGPU_SINKHORN";

env_choice!(SinkhornKernel, SINKHORN_KERNEL_ENV, {
    Blocked => "blocked",
    Rows => "rows",
});

/// How the register-blocked Sinkhorn kernels form each row's (and column's) log-sum-exp,
/// chosen by `$OPTICAL_WGPU_LSE` (`shaders/blocked_lse.wgsl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockedLse {
    /// Every term shifted by the line's maximum, partials merged as (max, sum) pairs: 72
    /// `exp2` per invocation and half-iteration. The default until a GPU has timed
    /// [`Self::Shifted`]: on lavapipe that one is 25–30 % slower (its branches around barriers
    /// cost llvmpipe more than the exponentials it saves), and on a GPU it is not yet
    /// measured.
    #[default]
    Max,
    /// The terms shifted by the line's current potential (the update of the CPU fast path and
    /// of the PTX passes): no maximum, merges that are plain sums, 64 `exp2`; a pair whose
    /// sums leave [2⁻⁶⁰, 2⁶⁰] redoes the half-iteration as [`Self::Max`] does, and lines of
    /// fewer than 16 entries always do. Same results to f32 rounding.
    Shifted,
}

/// Environment variable that picks how the blocked kernels form their log-sum-exps: `max`
/// (default) or `shifted`.
pub const BLOCKED_LSE_ENV: &str = "OPTICAL_WGPU_LSE";

env_choice!(BlockedLse, BLOCKED_LSE_ENV, {
    Max => "max",
    Shifted => "shifted",
});

/// Where the Sinkhorn solver applies its stopping rule on this backend, chosen by
/// `$OPTICAL_WGPU_CHECKS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SolverChecks {
    /// [`Self::Device`] on GPU adapters, [`Self::Host`] on CPU adapters (lavapipe). On a GPU
    /// a read-back is a synchronisation with the device and the dispatches of rounds with
    /// nothing left to do cost microseconds; on lavapipe the read-back is cheap and every
    /// dispatch costs about as much as one (the `sinkhorn-checks` bench: 86 ms per call
    /// checking on the host, 98 ms on the device).
    #[default]
    Auto,
    /// On the device (`shaders/sinkhorn_retire.wgsl`): many check intervals run between two
    /// read-backs (one after 1, 2, 4, … up to 32 intervals), the converged pairs stopped by
    /// the device. The same iterations, errors and results as [`Self::Host`].
    Device,
    /// On the host: every check reads the errors back (one synchronisation per
    /// `check_every` iterations).
    Host,
}

/// Environment variable that picks where the solver checks: `auto` (default), `device` or
/// `host`.
pub const SOLVER_CHECKS_ENV: &str = "OPTICAL_WGPU_CHECKS";

impl SolverChecks {
    /// Where this choice checks on an adapter of `device_type`: [`Self::Auto`] resolved.
    pub fn resolve(self, device_type: wgpu::DeviceType) -> SolverChecks {
        match self {
            SolverChecks::Auto if device_type == wgpu::DeviceType::Cpu => SolverChecks::Host,
            SolverChecks::Auto => SolverChecks::Device,
            chosen => chosen,
        }
    }
}

env_choice!(SolverChecks, SOLVER_CHECKS_ENV, {
    Auto => "auto",
    Device => "device",
    Host => "host",
});

/// Which WGSL kernel computes cosine costs of sets of at least 64 rows on
/// both sides, chosen by `$OPTICAL_WGPU_COST` (smaller sets always take the 16 × 16 kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CostTiling {
    /// `cosine_cost_blocked_f32`: 64 × 64 blocks of C per workgroup, 4 × 4 per invocation.
    #[default]
    Blocked,
    /// `cosine_cost_f32`: 16 × 16 blocks, one entry per invocation.
    Tile,
}

/// Which WGSL kernel computes MaxSim scores, chosen by `$OPTICAL_WGPU_MAXSIM`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxsimTiling {
    /// [`Self::Tile`] on GPU adapters, [`Self::Blocked`] on CPU adapters (lavapipe). On an
    /// H200 through NVIDIA's Vulkan driver the tile kernel ran the standard problem in
    /// 916 µs and the blocked one in 1.32 ms; on lavapipe the blocked one is the faster.
    #[default]
    Auto,
    /// `maxsim_f32`: blocks of 32 query × 64 document tokens, 2 × 4 per invocation.
    Blocked,
    /// `maxsim_tile_f32`: 16 × 16 blocks, one dot product per invocation.
    Tile,
}

/// Environment variable that picks the MaxSim kernel: `auto` (default), `blocked` or `tile`.
pub const MAXSIM_TILING_ENV: &str = "OPTICAL_WGPU_MAXSIM";

impl MaxsimTiling {
    /// The kernel this choice runs on an adapter of `device_type`: [`Self::Auto`] resolved.
    pub fn resolve(self, device_type: wgpu::DeviceType) -> MaxsimTiling {
        match self {
            MaxsimTiling::Auto if device_type == wgpu::DeviceType::Cpu => MaxsimTiling::Blocked,
            MaxsimTiling::Auto => MaxsimTiling::Tile,
            chosen => chosen,
        }
    }
}

env_choice!(MaxsimTiling, MAXSIM_TILING_ENV, {
    Auto => "auto",
    Blocked => "blocked",
    Tile => "tile",
});

/// Environment variable that picks the cost kernel: `blocked` (default) or `tile`.
pub const COST_TILING_ENV: &str = "OPTICAL_WGPU_COST";

env_choice!(CostTiling, COST_TILING_ENV, {
    Blocked => "blocked",
    Tile => "tile",
});

/// How a binding is declared in a shader.
#[derive(Clone, Copy)]
pub(crate) enum Bind {
    Uniform,
    Read,
    ReadWrite,
}

/// One kernel family: its bind group layout, its shader module and its pipelines.
///
/// A pipeline is compiled the first time a kernel asks for it ([`Family::pipeline`]), not
/// when the context opens: a call uses two or three of the backend's 34 pipelines, and
/// compiling all of them took ≈ 0.8 s of every `optical ot … --backend wgpu` on lavapipe.
/// The WGSL of every module is still parsed and validated when the context opens.
pub(crate) struct Family {
    pub layout: wgpu::BindGroupLayout,
    device: wgpu::Device,
    pipeline_layout: wgpu::PipelineLayout,
    module: wgpu::ShaderModule,
    entries: Vec<(&'static str, Vec<(&'static str, f64)>)>,
    /// One slot per entry: the pipeline, or the compiler's error, once asked for.
    pipelines: Vec<OnceLock<std::result::Result<wgpu::ComputePipeline, String>>>,
}

impl Family {
    /// Pipeline `index` of the family (the constants below), compiled on first use; a
    /// compilation error is kept and returned by every later call.
    pub(crate) fn pipeline(&self, index: usize) -> Result<&wgpu::ComputePipeline> {
        let (Some(slot), Some((entry, constants))) =
            (self.pipelines.get(index), self.entries.get(index))
        else {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "compile shaders",
                what: format!(
                    "no pipeline {index} in a family of {} (this is a bug in optical)",
                    self.pipelines.len()
                ),
            });
        };
        slot.get_or_init(|| {
            let _phase = crate::phases::phase("compile pipelines");
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&self.pipeline_layout),
                    module: &self.module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        // Every workgroup variable is written before it is read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                });
            match pollster::block_on(scope.pop()) {
                Some(e) => Err(format!("entry point {entry} {constants:?}: {e}")),
                None => Ok(pipeline),
            }
        })
        .as_ref()
        .map_err(|what| Error::Backend {
            backend: BACKEND,
            operation: "compile shaders",
            what: what.clone(),
        })
    }

    /// Compile every pipeline of the family now (see [`WgpuContext::compile_all`]).
    pub(crate) fn compile_all(&self) -> Result<usize> {
        for i in 0..self.pipelines.len() {
            self.pipeline(i)?;
        }
        Ok(self.pipelines.len())
    }
}

/// The compiled pipelines, indexed by the constants below.
pub(crate) struct Pipelines {
    pub cosine: Family,
    pub maxsim: Family,
    pub sinkhorn: Family,
    /// The solver's stopping rule on the device (`shaders/sinkhorn_retire.wgsl`).
    pub retire: Family,
    pub fused: Family,
    /// The register-blocked fused kernel; `None` when the device has less workgroup memory
    /// than it needs.
    pub fused_blocked: Option<Family>,
    /// The exp2 throughput probe (`shaders/peak.wgsl`).
    pub peak: Family,
    /// f32 values of cost tile the Sinkhorn shaders may keep in workgroup memory.
    pub tile_capacity: u32,
}

pub(crate) const COSINE_NORMS: usize = 0;
pub(crate) const COSINE_COST: usize = 1;
pub(crate) const COSINE_COST_BLOCKED: usize = 2;
/// Sets of at least this many rows on both sides take `cosine_cost_blocked_f32` (64 × 64
/// blocks of C per workgroup, 4 × 4 per invocation); smaller ones the 16 × 16 kernel.
pub(crate) const COSINE_BLOCKED_MIN: usize = 64;
pub(crate) const MAXSIM_NORMS: usize = 0;
pub(crate) const MAXSIM_SCORES: usize = 1;
pub(crate) const MAXSIM_SCORES_TILE: usize = 2;
/// Sinkhorn pipelines come in two workgroup sizes: index + `NARROW` is the 64-invocation
/// variant, for dispatches whose pairs are all at most `NARROW_LEN` × `NARROW_LEN`.
pub(crate) const SINKHORN_ITERATE_TILE: usize = 0;
pub(crate) const SINKHORN_ITERATE_STREAM: usize = 1;
pub(crate) const SINKHORN_ERRORS: usize = 2;
/// The register-blocked iterations (G = 16; + 1: the narrow G = 8; + [`BLOCKED_SHIFTED`]:
/// [`BlockedLse::Shifted`]), present when [`WgpuContext::has_blocked_kernel`].
pub(crate) const SINKHORN_ITERATE_BLOCKED: usize = 10;
/// Offset of the [`BlockedLse::Shifted`] pipelines after their [`BlockedLse::Max`] ones, in
/// the Sinkhorn family (blocked iterations) and in the blocked fused family (solve and plan,
/// wide and narrow).
pub(crate) const BLOCKED_SHIFTED: usize = 2;
pub(crate) const FUSED_BLOCKED_SHIFTED: usize = 4;
/// The split half-iterations (row update, column update), one dispatch each.
pub(crate) const SINKHORN_ROWS_SPLIT: usize = 6;
pub(crate) const SINKHORN_COLS_SPLIT: usize = 7;
/// The split convergence check: each row's error term (the row update's pipeline with
/// SPLIT_TERMS), then each pair's sum of its terms.
pub(crate) const SINKHORN_TERMS_SPLIT: usize = 8;
pub(crate) const SINKHORN_ERRORS_SPLIT: usize = 9;
pub(crate) const SINKHORN_RETIRE: usize = 0;
pub(crate) const FUSED_SOLVE: usize = 0;
pub(crate) const FUSED_PLAN: usize = 1;
pub(crate) const SINKHORN_NARROW: usize = 3;
pub(crate) const FUSED_NARROW: usize = 2;
pub(crate) const NARROW_LEN: usize = 64;
pub(crate) const PEAK_EX2: usize = 0;

/// What `optical info` shows about one adapter.
pub fn describe_adapter(adapter: &wgpu::Adapter) -> serde_json::Value {
    let info = adapter.get_info();
    let l = adapter.limits();
    serde_json::json!({
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        "subgroups": adapter.features().contains(wgpu::Features::SUBGROUP),
        "timestamps": adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        "limits": {
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        },
    })
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds (Vulkan, Metal, DX12).
pub fn adapters() -> Vec<wgpu::Adapter> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Preference order when no adapter is named: discrete, integrated, virtual, other, CPU.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The adapter to use: the first whose name contains `$OPTICAL_WGPU_ADAPTER` (any case) when
/// it is set, else the most preferred kind.
pub fn choose_adapter(found: Vec<wgpu::Adapter>) -> Result<wgpu::Adapter> {
    let names: Vec<String> = found.iter().map(|a| a.get_info().name).collect();
    if found.is_empty() {
        return Err(Error::BackendUnavailable {
            backend: BACKEND,
            reason: "no Vulkan, Metal or DX12 adapter found (for software Vulkan install Mesa's \
                     lavapipe: `apt-get install mesa-vulkan-drivers libvulkan1`)"
                .into(),
        });
    }
    match std::env::var(ADAPTER_ENV) {
        Ok(want) if !want.is_empty() => {
            let w = want.to_lowercase();
            found
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&w))
                .ok_or_else(|| Error::BackendUnavailable {
                    backend: BACKEND,
                    reason: format!(
                        "{ADAPTER_ENV}={want:?} matches none of the adapters found: {names:?}"
                    ),
                })
        }
        _ => Ok(found
            .into_iter()
            .min_by_key(|a| rank(a.get_info().device_type))
            .expect("non-empty")),
    }
}

/// Device, queue, pipelines and buffer pool of one adapter.
pub struct WgpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) pipelines: Pipelines,
    pool: Mutex<Vec<wgpu::Buffer>>,
    lost: Arc<Mutex<Option<String>>>,
    /// Extra cap on the bytes of one binding (see [`WgpuContext::with_binding_limit`]).
    binding_limit: u64,
    /// Which Sinkhorn kernels run (see [`SinkhornKernel`]).
    sinkhorn_kernel: SinkhornKernel,
    /// Where the solver checks (see [`SolverChecks`]).
    solver_checks: SolverChecks,
    /// How the blocked kernels form their log-sum-exps (see [`BlockedLse`]).
    blocked_lse: BlockedLse,
    /// Which kernel computes costs of large sets (see [`CostTiling`]).
    cost_tiling: CostTiling,
    /// Which kernel computes MaxSim scores (see [`MaxsimTiling`]).
    maxsim_tiling: MaxsimTiling,
    /// Whether pairs that fit neither the blocked kernels nor the tile take the split
    /// half-iterations (see [`WgpuContext::with_split_large`]).
    split_large: bool,
    /// Timestamps around compute passes, when the adapter can write them.
    timer: Option<PassTimer>,
    /// The loop passes one shader invocation may make, on adapters that cap them
    /// ([`LLVMPIPE_LOOP_PASSES`]); `None`: no cap.
    loop_passes: Option<u64>,
}

/// Mesa's llvmpipe (lavapipe, the software Vulkan driver CI runs on) counts the passes of
/// every loop of a shader invocation against one budget of 65,535
/// (`LP_MAX_TGSI_LOOP_ITERATIONS` in gallivm) and, once it is spent, ends every loop after
/// its current pass, silently: a dispatch that runs too many Sinkhorn iterations, or a cost
/// over too many dimensions, returns wrong numbers with no error. The backend keeps every
/// dispatch's estimated passes within [`LOOP_PASS_BUDGET`] of it there.
pub(crate) const LLVMPIPE_LOOP_PASSES: u64 = 65_535;

/// The share of the cap the estimates may use (3/4): they bound the loops the shaders
/// write, measured on lavapipe (Mesa 22.3) at 1.1–2× the passes actually counted, and the
/// rest covers loops the compiler adds or does not unroll.
pub(crate) const LOOP_PASS_BUDGET: u64 = LLVMPIPE_LOOP_PASSES * 3 / 4;

/// Whether an adapter caps the loop passes of a shader invocation (llvmpipe).
pub(crate) fn caps_loop_passes(info: &wgpu::AdapterInfo) -> Option<u64> {
    let llvmpipe = |s: &str| s.to_ascii_lowercase().contains("llvmpipe");
    (llvmpipe(&info.name) || llvmpipe(&info.driver)).then_some(LLVMPIPE_LOOP_PASSES)
}

/// Timestamp pairs (one per compute pass) a timing session holds between two read-backs.
pub(crate) const TIMER_PAIRS: u32 = 256;

/// GPU timestamps at the start and end of every compute pass while a timing session
/// ([`WgpuContext::time_passes`]) is on. Passes take consecutive slots; the next read-back
/// ([`WgpuContext::submit_and_read`]) resolves them in the same submission and adds their
/// durations up. Uploads and read-back copies run outside passes, so they are not counted.
/// A session times only the passes recorded on its own thread, and sessions run one at a
/// time, so other threads sharing the context neither disturb nor get counted.
struct PassTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    state: Mutex<TimerState>,
    /// Held for the whole of a timing session.
    session: Mutex<()>,
}

#[derive(Default)]
struct TimerState {
    /// The thread whose passes are being timed, during a session.
    owner: Option<std::thread::ThreadId>,
    /// Slots used since the last read-back.
    pairs: u32,
    /// A pass found no free slot: the session's total would be short.
    overflow: bool,
    seconds: f64,
}

impl TimerState {
    /// Whether the calling thread's passes are being timed.
    fn mine(&self) -> bool {
        self.owner == Some(std::thread::current().id())
    }
}

impl WgpuContext {
    /// Open the preferred adapter (see [`choose_adapter`]).
    pub fn new() -> Result<WgpuContext> {
        // The settings first: a wrong one is the error even where no adapter is found.
        SinkhornKernel::from_env()?;
        SolverChecks::from_env()?;
        BlockedLse::from_env()?;
        CostTiling::from_env()?;
        MaxsimTiling::from_env()?;
        WgpuContext::with_adapter(choose_adapter(adapters())?)
    }

    /// Open a device on `adapter` with the adapter's own limits (not WebGPU's defaults: the
    /// Sinkhorn tile grows with the workgroup memory) and validate every shader module (the
    /// pipelines are compiled on first use: [`WgpuContext::compile_all`]).
    pub fn with_adapter(adapter: wgpu::Adapter) -> Result<WgpuContext> {
        let sinkhorn_kernel = SinkhornKernel::from_env()?;
        let solver_checks = SolverChecks::from_env()?;
        let blocked_lse = BlockedLse::from_env()?;
        let cost_tiling = CostTiling::from_env()?;
        let maxsim_tiling = MaxsimTiling::from_env()?;
        let info = adapter.get_info();
        let split_large = info.device_type != wgpu::DeviceType::Cpu;
        let loop_passes = caps_loop_passes(&info);
        let limits = adapter.limits();
        if limits.max_compute_invocations_per_workgroup < 256
            || limits.max_storage_buffers_per_shader_stage < 8
            || limits.max_compute_workgroup_storage_size < SINKHORN_FIXED_WORKGROUP_BYTES + 64
        {
            return Err(Error::BackendUnavailable {
                backend: BACKEND,
                reason: format!(
                    "adapter {:?} is too small: need 256 invocations per workgroup, 8 storage \
                     buffers per stage and {} B of workgroup memory; it has {}, {} and {} B",
                    info.name,
                    SINKHORN_FIXED_WORKGROUP_BYTES + 64,
                    limits.max_compute_invocations_per_workgroup,
                    limits.max_storage_buffers_per_shader_stage,
                    limits.max_compute_workgroup_storage_size
                ),
            });
        }
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("optical"),
            required_features: if timestamps {
                wgpu::Features::TIMESTAMP_QUERY
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::BackendUnavailable {
            backend: BACKEND,
            reason: format!("adapter {:?}: request_device failed: {e}", info.name),
        })?;
        // Errors outside an error scope must not panic (wgpu's default handler does).
        let lost = Arc::new(Mutex::new(None::<String>));
        let sink = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let tile_capacity =
            (limits.max_compute_workgroup_storage_size - SINKHORN_FIXED_WORKGROUP_BYTES) / 4;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let blocked = limits.max_compute_workgroup_storage_size >= BLOCKED_WORKGROUP_BYTES;
        let pipelines = Pipelines::build(&device, tile_capacity, blocked);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "compile shaders",
                what: e.to_string(),
            });
        }
        let timer = timestamps.then(|| PassTimer {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("optical pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * TIMER_PAIRS,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("optical timestamp resolve"),
                size: 16 * TIMER_PAIRS as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            state: Mutex::new(TimerState::default()),
            session: Mutex::new(()),
        });
        Ok(WgpuContext {
            timer,
            device,
            queue,
            info,
            limits,
            pipelines,
            pool: Mutex::new(Vec::new()),
            lost,
            binding_limit: u64::MAX,
            sinkhorn_kernel,
            solver_checks,
            blocked_lse,
            cost_tiling,
            maxsim_tiling,
            split_large,
            loop_passes,
        })
    }

    /// The loop passes one shader invocation may make on this adapter, when it caps them
    /// (llvmpipe: 65,535, `LLVMPIPE_LOOP_PASSES`).
    pub fn loop_pass_cap(&self) -> Option<u64> {
        self.loop_passes
    }

    /// Whether a dispatch whose invocations make at most `passes` loop passes runs whole
    /// on this adapter.
    pub(crate) fn loops_fit(&self, passes: u64) -> bool {
        self.loop_passes.is_none() || passes <= LOOP_PASS_BUDGET
    }

    /// How many Sinkhorn iterations one dispatch may run, of the `wanted`, when its
    /// invocations make at most `setup` loop passes before the iterations and
    /// `per_iteration` in each: all of them where loops are not capped; on llvmpipe as
    /// many as keep the estimate within [`LOOP_PASS_BUDGET`]. `None` when not even one fits.
    pub(crate) fn iterations_per_dispatch(
        &self,
        setup: u64,
        per_iteration: u64,
        wanted: u32,
    ) -> Option<u32> {
        if self.loop_passes.is_none() {
            return Some(wanted);
        }
        let room = LOOP_PASS_BUDGET.checked_sub(setup)? / per_iteration.max(1);
        (room >= 1).then(|| wanted.min(u32::try_from(room).unwrap_or(u32::MAX)))
    }

    /// Compile every pipeline of the backend now, rather than each on its first use, and
    /// return how many there are. A compiler error names the entry point.
    pub fn compile_all(&self) -> Result<usize> {
        let p = &self.pipelines;
        let mut count = p.cosine.compile_all()? + p.maxsim.compile_all()?;
        count += p.sinkhorn.compile_all()? + p.retire.compile_all()? + p.fused.compile_all()?;
        if let Some(blocked) = &p.fused_blocked {
            count += blocked.compile_all()?;
        }
        count += p.peak.compile_all()?;
        Ok(count)
    }

    /// Name of the adapter in use.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// The limits the device was opened with (the adapter's).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// f32 values of a pair's (support) cost that the Sinkhorn kernels keep on-chip: a pair
    /// is solved from workgroup memory when `rows · (cols | 1) ≤ tile_capacity()`.
    pub fn tile_capacity(&self) -> u32 {
        self.pipelines.tile_capacity
    }

    /// Which Sinkhorn kernels run (`$OPTICAL_WGPU_SINKHORN` when the context was opened).
    pub fn sinkhorn_kernel(&self) -> SinkhornKernel {
        self.sinkhorn_kernel
    }

    /// Which kernel computes costs of large sets (`$OPTICAL_WGPU_COST` when the context was
    /// opened).
    pub fn cost_tiling(&self) -> CostTiling {
        self.cost_tiling
    }

    /// The MaxSim kernel this context runs: [`MaxsimTiling::Auto`] resolved for its adapter.
    pub fn maxsim_tiling(&self) -> MaxsimTiling {
        self.maxsim_tiling.resolve(self.info.device_type)
    }

    /// Use `tiling` for MaxSim instead of what the environment named (tests, benches).
    pub fn with_maxsim_tiling(mut self, tiling: MaxsimTiling) -> WgpuContext {
        self.maxsim_tiling = tiling;
        self
    }

    /// Use `tiling` instead of what the environment named (tests, benches).
    pub fn with_cost_tiling(mut self, tiling: CostTiling) -> WgpuContext {
        self.cost_tiling = tiling;
        self
    }

    /// Use `kernel` instead of what the environment named (tests, benches).
    pub fn with_sinkhorn_kernel(mut self, kernel: SinkhornKernel) -> WgpuContext {
        self.sinkhorn_kernel = kernel;
        self
    }

    /// Check where `checks` says instead of what the environment named (tests, benches).
    pub fn with_solver_checks(mut self, checks: SolverChecks) -> WgpuContext {
        self.solver_checks = checks;
        self
    }

    /// Form the blocked kernels' log-sum-exps as `lse` says instead of what the environment
    /// named (tests, benches).
    pub fn with_blocked_lse(mut self, lse: BlockedLse) -> WgpuContext {
        self.blocked_lse = lse;
        self
    }

    /// How the blocked kernels form their log-sum-exps (`$OPTICAL_WGPU_LSE` when the context
    /// was opened).
    pub fn blocked_lse(&self) -> BlockedLse {
        self.blocked_lse
    }

    /// Pipeline offset of [`Self::blocked_lse`] in the Sinkhorn family.
    pub(crate) fn blocked_lse_offset(&self, fused: bool) -> usize {
        match (self.blocked_lse, fused) {
            (BlockedLse::Max, _) => 0,
            (BlockedLse::Shifted, false) => BLOCKED_SHIFTED,
            (BlockedLse::Shifted, true) => FUSED_BLOCKED_SHIFTED,
        }
    }

    /// Where the solver checks on this adapter (see [`SolverChecks`]): `Device` or `Host`.
    pub fn solver_checks(&self) -> SolverChecks {
        self.solver_checks.resolve(self.info.device_type)
    }

    /// Whether pairs too large for the blocked kernels and the tile take the split
    /// half-iterations (a pair over many workgroups, two dispatches per iteration) under
    /// [`SinkhornKernel::Blocked`]: by default on every adapter but a CPU one (there the
    /// pairs of a batch already fill the cores, and the extra dispatches and merges only
    /// cost: 2.9× slower on lavapipe for b = 4 pairs of 512 × 512), else the one-workgroup-
    /// per-pair iterations that stream K.
    pub fn with_split_large(mut self, on: bool) -> WgpuContext {
        self.split_large = on;
        self
    }

    /// See [`WgpuContext::with_split_large`].
    pub fn split_large(&self) -> bool {
        self.split_large
    }

    /// Whether a pair of `rows` × `cols` support may take the register-blocked kernels:
    /// they are chosen, the device has their workgroup memory, and the pair fits their grid.
    pub(crate) fn blocked_takes(&self, rows: usize, cols: usize) -> bool {
        self.sinkhorn_kernel == SinkhornKernel::Blocked
            && self.has_blocked_kernel()
            && rows.max(cols) <= BLOCKED_MAX_LEN
    }

    /// Whether the device has the workgroup memory of the register-blocked kernels.
    pub fn has_blocked_kernel(&self) -> bool {
        self.pipelines.fused_blocked.is_some()
    }

    /// Cut batches as if one binding held at most `bytes`: the chunked paths then run on
    /// small inputs (tests), or device memory per dispatch stays bounded.
    pub fn with_binding_limit(mut self, bytes: u64) -> WgpuContext {
        self.binding_limit = bytes;
        self
    }

    /// Largest byte size of one storage binding.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(self.binding_limit)
    }

    /// How many items of a batch go into one dispatch: every buffer of a chunk must fit one
    /// binding (`bytes_per_item` lists the per-item bytes of each buffer) and the grid
    /// dimension. An item that alone exceeds a binding is an error, never a truncation.
    pub(crate) fn chunk_len(
        &self,
        operation: &'static str,
        bytes_per_item: &[u64],
        max_items: usize,
    ) -> Result<usize> {
        let cap = self.max_binding();
        let mut items = max_items
            .min(self.limits.max_compute_workgroups_per_dimension as usize)
            .max(1);
        for &per in bytes_per_item {
            if per > cap {
                // The input's shape, not a failure of the device: the same exit as any
                // other shape this backend cannot take.
                return Err(Error::shape(
                    format!("wgpu {operation}"),
                    format!(
                        "one batch item's buffers within the adapter's largest binding, \
                         {cap} B each"
                    ),
                    format!("an item needing a {per} B buffer"),
                ));
            }
            if let Some(fit) = cap.checked_div(per) {
                items = items.min(fit as usize);
            }
        }
        Ok(items.max(1))
    }

    /// Run `f` and turn any validation or out-of-memory error it raised into an [`Error`].
    pub(crate) fn checked<T>(&self, operation: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        // An error raised outside any scope (a buffer or bind group created before `f`)
        // came first: the scoped ones are usually its consequences (an invalid bind group
        // after an invalid buffer), so it is the one to report.
        if let Some(e) = self.lost.lock().ok().and_then(|mut s| s.take()) {
            return Err(Error::Backend {
                backend: BACKEND,
                operation,
                what: e,
            });
        }
        if let Some(e) = o.or(v) {
            return Err(Error::Backend {
                backend: BACKEND,
                operation,
                what: e.to_string(),
            });
        }
        Ok(out)
    }

    /// A storage buffer holding `data` (at least 4 bytes), from the pool when one fits.
    pub(crate) fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> wgpu::Buffer {
        let _phase = crate::phases::phase("copy to device");
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buf = self.storage(bytes.len() as u64);
        if !bytes.is_empty() {
            self.queue.write_buffer(&buf, 0, bytes);
        }
        buf
    }

    /// A storage buffer of at least `size` bytes (contents unspecified), from the pool when
    /// one of a fitting size is there.
    pub(crate) fn storage(&self, size: u64) -> wgpu::Buffer {
        let size = size.max(4).next_multiple_of(4);
        if let Ok(mut pool) = self.pool.lock() {
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.size() >= size && b.size() <= 2 * size)
                .min_by_key(|(_, b)| b.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return pool.swap_remove(i);
            }
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("optical storage"),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Give storage buffers back for reuse (the pool holds at most 32 buffers).
    pub(crate) fn recycle(&self, buffers: impl IntoIterator<Item = wgpu::Buffer>) {
        if let Ok(mut pool) = self.pool.lock() {
            for b in buffers {
                if pool.len() < 32 {
                    pool.push(b);
                }
            }
        }
    }

    pub(crate) fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("optical params"),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    pub(crate) fn bind_group(&self, family: &Family, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &family.layout,
            entries: &entries,
        })
    }

    /// Record one compute pass of `(pipeline, bind group, grid)` dispatches.
    pub(crate) fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: &[(&wgpu::ComputePipeline, &wgpu::BindGroup, [u32; 3])],
    ) {
        let slot = self.timer.as_ref().and_then(|t| {
            let mut state = t.state.lock().ok()?;
            if !state.mine() {
                return None;
            }
            if state.pairs == TIMER_PAIRS {
                state.overflow = true;
                return None;
            }
            state.pairs += 1;
            Some((t, state.pairs - 1))
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: slot.map(|(t, i)| wgpu::ComputePassTimestampWrites {
                query_set: &t.set,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            }),
        });
        for (pipeline, group, [x, y, z]) in dispatches {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, *group, &[]);
            pass.dispatch_workgroups(*x, *y, *z);
        }
    }

    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// Submit `encoder`, then copy `len` values of type `T` from the start of `src` to the
    /// host (waits for the device).
    pub(crate) fn submit_and_read<T: bytemuck::Pod>(
        &self,
        operation: &'static str,
        mut encoder: wgpu::CommandEncoder,
        reads: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<T>>> {
        let size = std::mem::size_of::<T>() as u64;
        let staging: Vec<(wgpu::Buffer, u64)> = reads
            .iter()
            .map(|&(src, len)| {
                let bytes = (len as u64 * size).max(4).next_multiple_of(4);
                let dst = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("optical read-back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(src, 0, &dst, 0, bytes);
                (dst, bytes)
            })
            .collect();
        // Timestamps of the passes recorded since the last read-back (this encoder's and
        // those of encoders submitted without a read).
        let stamps = self.timer.as_ref().and_then(|t| {
            let mut state = t.state.lock().ok()?;
            if !state.mine() {
                return None;
            }
            let pairs = std::mem::take(&mut state.pairs);
            drop(state);
            if pairs == 0 {
                return None;
            }
            let bytes = 16 * pairs as u64;
            encoder.resolve_query_set(&t.set, 0..2 * pairs, &t.resolve, 0);
            let dst = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("optical timestamp read-back"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &dst, 0, bytes);
            Some((t, dst))
        });
        self.checked(operation, || {
            self.queue.submit([encoder.finish()]);
        })?;
        if let Some((t, dst)) = stamps {
            let ticks: Vec<u64> = self.read_mapped(operation, &dst, None)?;
            let period = self.queue.get_timestamp_period() as f64 * 1e-9;
            let seconds: f64 = ticks
                .chunks_exact(2)
                .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
                .sum();
            if let Ok(mut state) = t.state.lock() {
                state.seconds += seconds;
            }
        }
        let mut out = Vec::with_capacity(reads.len());
        for ((dst, _), &(_, len)) in staging.iter().zip(reads) {
            out.push(self.read_mapped(operation, dst, Some(len))?);
        }
        Ok(out)
    }

    /// Map a read-back buffer (waiting for the device) and copy its first `len` values, or
    /// all of it for `None`.
    fn read_mapped<T: bytemuck::Pod>(
        &self,
        operation: &'static str,
        dst: &wgpu::Buffer,
        len: Option<usize>,
    ) -> Result<Vec<T>> {
        let wait = crate::phases::phase("wait for device");
        let (tx, rx) = std::sync::mpsc::channel();
        dst.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.fail(operation, e.to_string()))?;
        rx.recv()
            .map_err(|e| self.fail(operation, e.to_string()))?
            .map_err(|e| self.fail(operation, e.to_string()))?;
        drop(wait);
        let _phase = crate::phases::phase("copy to host");
        let view = dst
            .get_mapped_range(..)
            .map_err(|e| self.fail(operation, e.to_string()))?;
        let bytes = match len {
            Some(len) => &view[..len * std::mem::size_of::<T>()],
            None => &view[..],
        };
        let values = bytemuck::pod_collect_to_vec(bytes);
        drop(view);
        dst.unmap();
        Ok(values)
    }

    /// Whether the adapter writes GPU timestamps, so [`WgpuContext::time_passes`] can run.
    pub fn has_timestamps(&self) -> bool {
        self.timer.is_some()
    }

    /// Run `f` with a GPU timestamp at the start and end of every compute pass it records on
    /// this thread, and return its result with the summed duration of those passes (kernels
    /// only: no uploads, no read-backs, no host work). `None` when the adapter has no
    /// timestamps. Sessions on other threads wait for this one.
    /// Every pass must be followed by a read-back before `f` returns, as every kernel entry
    /// point of this backend does.
    pub fn time_passes<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<Option<(T, f64)>> {
        let Some(timer) = &self.timer else {
            return Ok(None);
        };
        let poisoned = || self.fail("time passes", "timer lock poisoned".into());
        let _session = timer.session.lock().map_err(|_| poisoned())?;
        let reset = |owner: Option<std::thread::ThreadId>| -> Result<()> {
            *timer.state.lock().map_err(|_| poisoned())? = TimerState {
                owner,
                ..TimerState::default()
            };
            Ok(())
        };
        reset(Some(std::thread::current().id()))?;
        let out = f();
        let (seconds, overflow, pending) = {
            let state = timer.state.lock().map_err(|_| poisoned())?;
            (state.seconds, state.overflow, state.pairs)
        };
        reset(None)?;
        let out = out?;
        if overflow || pending > 0 {
            return Err(self.fail(
                "time passes",
                format!(
                    "{} compute passes were not timed (at most {TIMER_PAIRS} between two \
                     read-backs, each resolved by one)",
                    if overflow {
                        "some".to_string()
                    } else {
                        pending.to_string()
                    }
                ),
            ));
        }
        Ok(Some((out, seconds)))
    }

    fn fail(&self, operation: &'static str, what: String) -> Error {
        Error::Backend {
            backend: BACKEND,
            operation,
            what,
        }
    }
}

impl Pipelines {
    fn build(device: &wgpu::Device, tile_capacity: u32, blocked: bool) -> Pipelines {
        use Bind::*;
        let tile = [("TILE_CAPACITY", tile_capacity as f64), ("WG", 256.0)];
        let stream = [("TILE_CAPACITY", 1.0), ("WG", 256.0)];
        let tile_narrow = [("TILE_CAPACITY", tile_capacity as f64), ("WG", 64.0)];
        let stream_narrow = [("TILE_CAPACITY", 1.0), ("WG", 64.0)];
        let blocked_wide = [("G", 16.0), ("WG", 256.0)];
        let blocked_narrow = [("G", 8.0), ("WG", 64.0)];
        let shifted_wide = [("G", 16.0), ("WG", 256.0), ("SHIFTED", 1.0)];
        let shifted_narrow = [("G", 8.0), ("WG", 64.0), ("SHIFTED", 1.0)];
        let cosine = family(
            device,
            "cosine_cost",
            SHADER_COSINE,
            &[Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite],
            &[
                ("inv_norms_f32", &[]),
                ("cosine_cost_f32", &[]),
                ("cosine_cost_blocked_f32", &[]),
            ],
        );
        let maxsim = family(
            device,
            "maxsim",
            SHADER_MAXSIM,
            &[
                Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite,
            ],
            &[
                ("inv_norms_f32", &[]),
                ("maxsim_f32", &[]),
                ("maxsim_tile_f32", &[]),
            ],
        );
        let mut sinkhorn_entries: Vec<EntryPoint<'_>> = vec![
            ("sinkhorn_iterate_f32", &tile),
            ("sinkhorn_iterate_f32", &stream),
            ("sinkhorn_errors_f32", &stream),
            ("sinkhorn_iterate_f32", &tile_narrow),
            ("sinkhorn_iterate_f32", &stream_narrow),
            ("sinkhorn_errors_f32", &stream_narrow),
            ("sinkhorn_half_split_f32", &[("SPLIT_COLS", 0.0)]),
            ("sinkhorn_half_split_f32", &[("SPLIT_COLS", 1.0)]),
            (
                "sinkhorn_half_split_f32",
                &[("SPLIT_COLS", 0.0), ("SPLIT_TERMS", 1.0)],
            ),
            ("sinkhorn_split_errors_f32", &stream),
        ];
        if blocked {
            // SINKHORN_ITERATE_BLOCKED: only where the workgroup memory allows.
            sinkhorn_entries.push(("sinkhorn_iterate_blocked_f32", &blocked_wide));
            sinkhorn_entries.push(("sinkhorn_iterate_blocked_f32", &blocked_narrow));
            // + BLOCKED_SHIFTED
            sinkhorn_entries.push(("sinkhorn_iterate_blocked_f32", &shifted_wide));
            sinkhorn_entries.push(("sinkhorn_iterate_blocked_f32", &shifted_narrow));
        }
        let sinkhorn = family(
            device,
            "sinkhorn",
            SHADER_SINKHORN,
            &[
                Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite,
            ],
            &sinkhorn_entries,
        );
        let retire = family(
            device,
            "sinkhorn_retire",
            SHADER_RETIRE,
            &[Uniform, ReadWrite, Read, ReadWrite],
            &[("sinkhorn_retire_f32", &[])],
        );
        let fused = family(
            device,
            "fused_sinkhorn",
            SHADER_FUSED,
            &[
                Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
            ],
            &[
                ("fused_sinkhorn_f32", &tile),
                ("fused_plan_f32", &tile),
                ("fused_sinkhorn_f32", &tile_narrow),
                ("fused_plan_f32", &tile_narrow),
            ],
        );
        // The same module and bindings as `fused`, the same entry-point order: G = 16, then
        // the narrow G = 8 (a module per family keeps the pipelines' indices apart).
        let fused_blocked = blocked.then(|| {
            family(
                device,
                "fused_sinkhorn_blocked",
                SHADER_FUSED,
                &[
                    Uniform, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite,
                ],
                &[
                    ("fused_blocked_f32", &blocked_wide),
                    ("fused_blocked_plan_f32", &blocked_wide),
                    ("fused_blocked_f32", &blocked_narrow),
                    ("fused_blocked_plan_f32", &blocked_narrow),
                    // + FUSED_BLOCKED_SHIFTED (the plan kernels do not iterate, but keep
                    // the indices' pattern)
                    ("fused_blocked_f32", &shifted_wide),
                    ("fused_blocked_plan_f32", &shifted_wide),
                    ("fused_blocked_f32", &shifted_narrow),
                    ("fused_blocked_plan_f32", &shifted_narrow),
                ],
            )
        });
        let peak = family(
            device,
            "peak",
            SHADER_PEAK,
            &[Uniform, ReadWrite],
            &[("ex2_peak_f32", &[])],
        );
        Pipelines {
            cosine,
            maxsim,
            sinkhorn,
            retire,
            fused,
            fused_blocked,
            peak,
            tile_capacity,
        }
    }
}

type EntryPoint<'a> = (&'static str, &'a [(&'static str, f64)]);

fn family(
    device: &wgpu::Device,
    label: &str,
    source: &'static str,
    binds: &[Bind],
    entries: &[EntryPoint<'_>],
) -> Family {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(source)),
    });
    let layout_entries: Vec<wgpu::BindGroupLayoutEntry> = binds
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Bind::Uniform => wgpu::BufferBindingType::Uniform,
                    Bind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Bind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &layout_entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    Family {
        layout,
        device: device.clone(),
        pipeline_layout,
        module,
        entries: entries.iter().map(|(e, c)| (*e, c.to_vec())).collect(),
        pipelines: entries.iter().map(|_| OnceLock::new()).collect(),
    }
}
