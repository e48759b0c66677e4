//! The device: driver probe, context, stream, modules (each JIT-compiled on its first
//! launch and cached for the process), checked launches, and the cosine-cost and MaxSim
//! kernels.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use cudarc::driver::sys::{
    CUdevice_attribute, CUevent_flags, CUfunction_attribute, CUmemPool_attribute,
};
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut,
    DeviceRepr, DriverError, LaunchArgs, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::ptx::{self, PtxModule};
use super::staging::{Stager, STAGE_MIN};
use crate::backend::choice::choices;
use crate::backend::cpu::{check_maxsim, check_pair_batch};
use crate::backend::{DeviceJob, Exp2Peak};
use crate::error::{Error, Result};
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs};

pub(super) const BACKEND: &str = "cuda";

/// Threads per CTA of the kernels whose tiling fixes it (the cosine-cost kernels).
pub(super) const TILE_THREADS: u32 = 256;
/// Rows (and columns) of one cosine-cost output tile.
const TILE: usize = 64;
/// Bytes of one stage of `cosine_cost_wgmma_f32` (a 16-float chunk of 128 rows of x and of
/// y, both split into tf32 halves).
const WGMMA_STAGE: u32 = 32_768;
/// Bytes of the inverse norms after the stages of `cosine_cost_wgmma_f32`.
const WGMMA_NORMS: u32 = 1_024;
/// Dynamic shared memory of `cosine_cost_wgmma_rs_f32` (two stages of y only, and the
/// inverse norms).
const WGMMA_RS_SMEM: u32 = 33_792;
/// Output tile of `cosine_cost_tf32x3w_f32` and the wgmma kernels.
const WIDE_TILE: usize = 128;
/// Warps per CTA of the row-norm and MaxSim kernels.
const WARPS: u32 = 8;
/// The PTX files say `.target sm_80`: the driver JIT-compiles them for 8.0 and newer.
const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// The entry points with dynamic shared memory (and no static shared memory): opted in to
/// all of it when their module loads.
const DYNAMIC_SMEM_ENTRIES: [&str; 5] = [
    ptx::MAXSIM,
    ptx::SINKHORN_ITERATE,
    ptx::SINKHORN_FUSED,
    ptx::COSINE_COST_WGMMA,
    ptx::COSINE_COST_WGMMA_RS,
];

/// One module of [`ptx::MODULES`] after its JIT compilation: its entry points, resolved
/// (each keeps the module alive), and how long loading took.
struct LoadedModule {
    functions: Vec<(&'static str, CudaFunction)>,
    took: Duration,
}

/// A module's state: not yet needed, loaded, or why it cannot be (kept, so that every
/// launch from it reports the same).
type ModuleSlot = OnceLock<std::result::Result<LoadedModule, String>>;

/// One GPU with its context, stream and loaded kernels.
pub(super) struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors (132 on an H100 SXM or H200).
    pub sms: usize,
    /// Largest shared memory a CTA may use after opting in, bytes.
    pub smem_optin: usize,
    /// The modules of [`ptx::MODULES`], in that order, each JIT-compiled by the driver on
    /// the first launch of one of its entry points: a process that only computes costs
    /// never compiles the Sinkhorn modules, and a module the driver refuses disables only
    /// its own kernels (`kernels/cosine_cost_sm90a.ptx` loads on compute capability 9.0
    /// only).
    modules: [ModuleSlot; ptx::MODULES.len()],
    /// The page-locked staging buffers of large copies ([`Stager`]): allocated on the first
    /// one; `Err` says why they could not be (copies then take the driver's pageable path).
    stager: Mutex<Option<std::result::Result<Stager, String>>>,
    /// Whether freed device memory stays in the stream-ordered pool between calls, or why
    /// not (see [`keep_freed_memory`]).
    pool: std::result::Result<(), String>,
}

/// The CUDA backend (`--backend cuda`): device 0, shared by every handle in the process.
#[derive(Clone)]
pub struct CudaBackend {
    pub(super) dev: Arc<Device>,
    cost_kernel: CostKernel,
    fused_threads: FusedThreads,
    fused_cost: FusedCost,
    lse: SinkhornLse,
    split: SinkhornSplit,
    staging: Staging,
    maxsim: MaxsimRoute,
    wgmma_stages: WgmmaStages,
    checks: SolverChecks,
}

/// How many stages of shared memory `cosine_cost_wgmma_f32` cycles through. With two, each
/// chunk's `wgmma` group must retire before the barrier that ends the chunk (the next
/// chunk's stores go to the stage it reads), so a CTA's tensor work pauses once per chunk
/// until its next group is issued, and only the other CTA on the SM can fill the pause.
/// With three, the kernel waits with one group still in flight (`wgmma.wait_group 1`, as
/// CUTLASS's main loops do), and the next chunk's group queues behind it. Both fit two CTAs
/// per SM (66,560 and 99,328 bytes). The kernel reads the stage count from the dynamic
/// shared memory it is launched with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WgmmaStages {
    /// Two stages of 32 KB: each chunk's group retires before the barrier.
    #[default]
    Two,
    /// Three stages of 32 KB: one group in flight across each barrier. Checked by ptxas and
    /// the PTX interpreter, not yet timed on a GPU, so not the default.
    Three,
}

/// Environment variable that picks [`WgmmaStages`]: `2` (default) or `3`.
pub const WGMMA_STAGES_ENV: &str = "OPTICAL_CUDA_WGMMA_STAGES";

env_choice!(WgmmaStages, WGMMA_STAGES_ENV, {
    Two => "2",
    Three => "3",
});

impl WgmmaStages {
    /// The dynamic shared memory `cosine_cost_wgmma_f32` is launched with: the stages, then
    /// the inverse norms (66,560 bytes for two stages, 99,328 for three).
    pub fn shared_bytes(self) -> u32 {
        let stages = match self {
            WgmmaStages::Two => 2,
            WgmmaStages::Three => 3,
        };
        stages * WGMMA_STAGE + WGMMA_NORMS
    }
}

/// Threads per CTA of the fused Sinkhorn kernel (`sinkhorn_fused_f32`): its cost phase runs
/// on the first 256, its iterations on all of them, four lanes per row (and per column).
/// With two CTAs per SM (the shared memory of a 128 × 128 pair allows two), 512 threads
/// give each SM scheduler 8 warps to hide the shared-load and `ex2` latencies of the
/// iterations instead of 4; the H200 profile of the 256-thread kernel showed it
/// latency-bound at 23 % occupancy (`docs/PERFORMANCE.md`). Pairs of at most 64 rows and
/// columns keep four lanes each busy with 256 threads, and the smaller block lets twice as
/// many CTAs share an SM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FusedThreads {
    /// 512 threads when a pair has more than 64 rows or columns, else 256.
    #[default]
    Auto,
    /// 512 threads for every shape.
    Threads512,
    /// 256 threads for every shape.
    Threads256,
}

/// Environment variable that picks the fused kernel's block: `auto` (default), `512` or
/// `256`.
pub const FUSED_THREADS_ENV: &str = "OPTICAL_CUDA_FUSED_THREADS";

impl FusedThreads {
    /// Threads per CTA for pairs of up to `n` rows and `m` columns.
    pub fn block(self, n: usize, m: usize) -> u32 {
        match self {
            FusedThreads::Auto if n.max(m) > 64 => 512,
            FusedThreads::Auto => 256,
            FusedThreads::Threads512 => 512,
            FusedThreads::Threads256 => 256,
        }
    }
}

env_choice!(FusedThreads, FUSED_THREADS_ENV, {
    Auto => "auto",
    Threads512 => "512",
    Threads256 => "256",
});

/// How the fused kernel's tensor-core cost phase runs with a 512-thread block. On the H200
/// the serial phase took 155 of the 455 µs of the problem (`sinkhorn-fused-1`),
/// 1.7× the standalone cost kernel on the same pairs, while warps 8–15 waited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FusedCost {
    /// `cost_mode` 1: a norm pass over every row, then per 32-float chunk the 8 cost warps
    /// load, split and store it, and run its MMAs; warps 8–15 wait at a barrier.
    #[default]
    Serial,
    /// `cost_mode` 2: warps 8–15 load, split and store the next 16-float chunk (and add up
    /// the rows' norms on the way, so there is no norm pass) while warps 0–7 run the MMAs of
    /// the current one, through two buffers of 20,480 bytes; the tile's epilogue on all 16
    /// warps. Checked by ptxas and the PTX interpreter, not yet measured on a GPU, so not
    /// the default. Blocks of 256 threads and the FP32 cost phase keep the serial phase.
    Pipelined,
    /// `cost_mode` 3: the standalone cost kernel (the one [`CostKernel`] picks for the
    /// batch: wgmma on Hopper for large batches) runs first, on the same stream, into the
    /// cost buffer the fused kernel writes anyway; the fused kernel then only loads it (one
    /// 16.8 MB read from L2 for the problem) and iterates with K on chip as before.
    /// The iterations still read nothing from HBM; the cost goes through it once, as it
    /// already did on its way to the host. Any block size, no staging area in shared
    /// memory. Not yet measured on a GPU.
    Standalone,
}

/// Environment variable that picks [`FusedCost`]: `serial` (default), `pipelined` or
/// `standalone`.
pub const FUSED_COST_ENV: &str = "OPTICAL_CUDA_FUSED_COST";

env_choice!(FusedCost, FUSED_COST_ENV, {
    Serial => "serial",
    Pipelined => "pipelined",
    Standalone => "standalone",
});

/// How the Sinkhorn passes with K on chip (the fused kernel's, and `sinkhorn_iterate_f32`'s
/// when K fits in shared memory) keep their log-sum-exps in range. Both compute the same
/// potentials to f32 rounding and fall back to the online maximum for a warp whose sums
/// leave [2⁻¹⁰⁰, 2¹⁰⁰].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkhornLse {
    /// `lse_mode` 0: each term is shifted by the line's current potential,
    /// `2^(K_ij + H_j + F_i)`: two additions per element before the `ex2`.
    #[default]
    Shifted,
    /// `lse_mode` 1: the shifts live in the on-chip matrix, `K″_ij = K_ij + c_i + d_j` with
    /// `c`, `d` the potentials when they were last absorbed, so each term is
    /// `2^(K″_ij + V_j)` with one vector entry per column (row): one addition per element
    /// fewer (SASS instructions per chunk of 8 on sm_90, row and column pass: 42 and 48
    /// instead of 51 and 57 in the fused kernel, 43 and 49 instead of 52 and 58 in
    /// `sinkhorn_iterate_f32`, which absorbs the potentials it starts from as it loads K).
    /// After an iteration in which any warp fell back, the CTA absorbs the current
    /// potentials into K″ (an `n·m` update in shared memory, rare once the iterate settles).
    /// 4·(n + m) bytes more shared memory per pair (and 128 for the iterate kernel's flags);
    /// a launch where that does not fit runs shifted. Checked by ptxas and the PTX
    /// interpreter, not yet timed on a GPU, so not the default.
    Absorbed,
    /// `lse_mode` 2 of the fused kernel: the matrix on chip is `Q_ij = 2^(K_ij + c_i + d_j)` itself, so a row update is
    /// `F_i = c_i − log2 Σ_j Q_ij v_j` with `v_j = 2^(G_j + log2 b_j − d_j)`: a product and an
    /// addition per element, no `ex2` (the column update likewise). A pass whose sums leave
    /// [2⁻²⁰, 2²⁰] is redone after rebuilding Q from K in global memory with the line maxima
    /// as shifts (each row's, or column's, largest term 1); at ε = 0.05 that is once, before
    /// the first pass (`scripts/sinkhorn-scaled-model.py`). The stabilised scaling iteration
    /// of the OT literature; the same potentials to f32 rounding. 8·(n + m) bytes more shared
    /// memory per pair (a launch where that does not fit runs shifted). `sinkhorn_iterate_f32`
    /// has no such passes: under this setting a solve from a cost (and every chunk after a
    /// fused launch's first) runs on the fused kernel continuing from K (`cost_mode` 4)
    /// where its vectors fit. Checked by ptxas and the PTX interpreter, not yet timed on a
    /// GPU, so not the default.
    Scaled,
}

/// Environment variable that picks [`SinkhornLse`]: `shifted` (default), `absorbed` or
/// `scaled`.
pub const LSE_ENV: &str = "OPTICAL_CUDA_LSE";

env_choice!(SinkhornLse, LSE_ENV, {
    Shifted => "shifted",
    Absorbed => "absorbed",
    Scaled => "scaled",
});

/// How the Sinkhorn iterations run for pairs whose K does not fit in shared memory (the
/// fused kernel and `sinkhorn_iterate_f32` keep it on chip up to about 128 x 128 at 1 CTA
/// per pair). `sinkhorn_iterate_f32` then streams K from global memory with one CTA per
/// pair for all iterations: b = 4 pairs of 512 x 512 keep 4 of an H200's 132 SMs busy
/// (3.8 ms for 100 iterations, 76x its exp floor). The split runs each half-iteration as
/// its own launch of `sinkhorn_half_split_f32`, a warp per row (or column) and 8 per CTA,
/// so a pair spreads over n / 8 CTAs; the convergence check is split the same way (each
/// row's error term, then `sinkhorn_split_error_f32` sums each pair's terms).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkhornSplit {
    /// Split half-iterations for every pair whose K stays in global memory.
    #[default]
    On,
    /// One CTA per pair for all iterations (`sinkhorn_iterate_f32` streaming K).
    Off,
}

/// Environment variable that picks [`SinkhornSplit`]: `on` (default) or `off`.
pub const SINKHORN_SPLIT_ENV: &str = "OPTICAL_CUDA_SINKHORN_SPLIT";

env_choice!(SinkhornSplit, SINKHORN_SPLIT_ENV, {
    On => "on",
    Off => "off",
});

/// Where the Sinkhorn solver applies its stopping rule on this backend, chosen by
/// `$OPTICAL_CUDA_CHECKS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SolverChecks {
    /// On the device (`sinkhorn_retire_f32` after each check's launch): the host reads the
    /// pairs' states back after 1, 2, 4, … up to 32 check intervals instead of after each.
    /// The same iterations, errors and results as [`Self::Host`].
    #[default]
    Device,
    /// On the host: every check copies the errors back (one synchronisation per
    /// `check_every` iterations).
    Host,
}

/// Environment variable that picks [`SolverChecks`]: `device` (default) or `host`.
pub const SOLVER_CHECKS_ENV: &str = "OPTICAL_CUDA_CHECKS";

env_choice!(SolverChecks, SOLVER_CHECKS_ENV, {
    Device => "device",
    Host => "host",
});

/// How copies of at least 1 MiB move between host and device
/// ([`crate::backend::cuda`]'s staging module). On the H200 run the driver's own path for
/// pageable memory moved ≈ 9.4 GB/s, so that the large calls spent 99 % of their wall time
/// copying (`cosine-cost-hbm`: 25 ms per call for 0.22 ms on the device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Staging {
    /// Through two page-locked buffers of 8 MiB kept for the process: the host threads
    /// copy one chunk while the DMA engine moves the other.
    #[default]
    Pinned,
    /// Straight from and to pageable memory (the driver stages it itself).
    Pageable,
}

/// Environment variable that picks [`Staging`]: `pinned` (default) or `pageable`.
pub const STAGING_ENV: &str = "OPTICAL_CUDA_STAGING";

env_choice!(Staging, STAGING_ENV, {
    Pinned => "pinned",
    Pageable => "pageable",
});

/// How MaxSim scores are computed. On the standard problem (8 × 32 query tokens against
/// 1,000 × 48 document tokens, d = 128) an H200 took 672 µs with [`Self::Direct`] (14× its
/// FP32 FMA floor: each lane's dot products load a query and a document float4 per 4 FMAs)
/// and 164 µs with [`Self::Tiled`], the default since that run (`docs/PERFORMANCE.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxsimRoute {
    /// The cosines of every query token against a block of documents' tokens from the cost
    /// kernel ([`CostKernel`], on the tensor cores by default) into a scratch matrix of at
    /// most 256 MiB, then `maxsim_reduce_f32`: per (query, document) a warp takes each query
    /// token's minimum cost over the document's tokens and sums `1 − min` in order.
    #[default]
    Tiled,
    /// `maxsim_f32`: one CTA per document, the document staged in shared memory, whole dot
    /// products per lane.
    Direct,
}

/// Environment variable that picks [`MaxsimRoute`]: `tiled` (default) or `direct`.
pub const MAXSIM_ENV: &str = "OPTICAL_CUDA_MAXSIM";

env_choice!(MaxsimRoute, MAXSIM_ENV, {
    Tiled => "tiled",
    Direct => "direct",
});

/// Cost floats the tiled MaxSim route keeps per block of documents (256 MiB).
const TILED_COST_FLOATS: usize = 1 << 26;

/// Blocks of whole documents `(doc0, docs, tok0, tokens)` whose tokens, times `rows` query
/// tokens, fit [`TILED_COST_FLOATS`]; a document longer than that is a block alone.
fn document_blocks(offsets: &[usize], lengths: &[usize], rows: usize) -> Vec<[usize; 4]> {
    let budget = (TILED_COST_FLOATS / rows.max(1)).max(1);
    let mut blocks: Vec<[usize; 4]> = Vec::new();
    for (k, (&off, &len)) in offsets.iter().zip(lengths).enumerate() {
        match blocks.last_mut() {
            Some([_, docs, tok0, tokens]) if off + len - *tok0 <= budget => {
                *docs += 1;
                *tokens = off + len - *tok0;
            }
            _ => blocks.push([k, 1, off, len]),
        }
    }
    blocks
}

/// Which tiling computes cosine costs: the standalone cost kernel, and the cost phase of the
/// fused Sinkhorn kernel. All have the same contract and the same parity tests.
///
/// Device time on an H200 (`benches/results/2026-11-27-h200.md`), b = 64 and b = 512 pairs
/// of 128 × 128 at d = 384: [`Self::Tf32x3`] 33 and 187 µs, [`Self::Wgmma`] 40 and 142 µs,
/// [`Self::Tf32x3Wide`] 52 and 161 µs, [`Self::Fp32`] 40 and 231 µs. The 128 × 128 tiles
/// win once there are enough of them to fill the GPU; with 64 tiles for 132 SMs the 64 × 64
/// tiles of [`Self::Tf32x3`] spread the work over four times as many CTAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CostKernel {
    /// The default: [`Self::Wgmma`] on compute capability 9.0 when the problem has at least
    /// two tiles of 128 × 128 per SM, else [`Self::Tf32x3`] (and
    /// [`Self::Tf32x3`] in the fused kernel's cost phase).
    #[default]
    Auto,
    /// `cosine_cost_tf32x3_f32`: the tensor cores in split precision (3xTF32), about f32
    /// accuracy at tensor-core rate, 64 × 64 tiles.
    Tf32x3,
    /// `cosine_cost_tf32x3w_f32`: 3xTF32 on 128 × 128 tiles with 64 × 32 warp tiles (half
    /// the shared-memory traffic per output of [`Self::Tf32x3`]). The fused kernel's cost
    /// phase uses the [`Self::Tf32x3`] tiling for it.
    Tf32x3Wide,
    /// `cosine_cost_wgmma_f32` (`kernels/cosine_cost_sm90a.ptx`): 3xTF32 on Hopper's
    /// warpgroup instructions (`wgmma.mma_async` m64n128k8, operands in shared memory, a
    /// pipeline of two or three stages: [`WgmmaStages`]), 128 × 128 tiles. Compute
    /// capability 9.0 only. The fused kernel's cost phase uses the [`Self::Tf32x3`] tiling
    /// for it.
    Wgmma,
    /// `cosine_cost_wgmma_rs_f32` (same module): [`Self::Wgmma`] with x taken by `wgmma`
    /// from registers instead of shared memory (each thread loads and splits its own A
    /// fragments), which cuts the shared-memory traffic per chunk from 104 to 64 KB.
    /// Compute capability 9.0 only; not yet timed on a GPU, so [`Self::Auto`] does not
    /// take it. The fused kernel's cost phase uses the [`Self::Tf32x3`] tiling for it.
    WgmmaRs,
    /// `cosine_cost_f32`: FP32 FMA, a 4x4 register tile per thread (compute-bound at
    /// d = 384: 27 flop/B against an FP32 ridge of about 16 flop/B on an H200).
    Fp32,
}

/// Environment variable that picks the cost kernel: `auto` (default), `tf32x3`, `fp32`,
/// `tf32x3w`, `wgmma` or `wgmma-rs`.
pub const COST_KERNEL_ENV: &str = "OPTICAL_CUDA_COST_KERNEL";

/// Tiles of 128 × 128 per SM from which [`CostKernel::Auto`] takes [`CostKernel::Wgmma`] on
/// compute capability 9.0: two, one full wave at the two CTAs per SM its shared memory
/// allows. Measured on either side: 64 tiles on 132 SMs (0.5 per SM) ran faster on
/// [`CostKernel::Tf32x3`] (33 against 40 µs), 512 tiles (3.9 per SM) on
/// [`CostKernel::Wgmma`] (142 against 187 µs).
pub const WGMMA_TILES_PER_SM: usize = 2;

env_choice!(CostKernel, COST_KERNEL_ENV, {
    Auto => "auto",
    Tf32x3 => "tf32x3",
    Fp32 => "fp32",
    Tf32x3Wide => "tf32x3w",
    Wgmma => "wgmma",
    WgmmaRs => "wgmma-rs",
});

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.dev.name)
            .field("compute_capability", &self.dev.compute_capability)
            .field("cost_kernel", &self.cost_kernel)
            .field("fused_threads", &self.fused_threads.name())
            .field("fused_cost", &self.fused_cost.name())
            .field("lse", &self.lse.name())
            .field("split", &self.split.name())
            .field("staging", &self.staging.name())
            .field("maxsim", &self.maxsim.name())
            .finish()
    }
}

/// Why device 0 could not be opened; kept so that every later attempt reports the same.
#[derive(Clone, Debug)]
struct InitFailure {
    /// No driver or no device (as opposed to a driver that failed).
    unavailable: bool,
    what: String,
}

impl InitFailure {
    fn unavailable(what: impl Into<String>) -> Self {
        InitFailure {
            unavailable: true,
            what: what.into(),
        }
    }

    fn failed(what: impl Into<String>) -> Self {
        InitFailure {
            unavailable: false,
            what: what.into(),
        }
    }

    fn into_error(self) -> Error {
        if self.unavailable {
            Error::BackendUnavailable {
                backend: BACKEND,
                reason: self.what,
            }
        } else {
            Error::Backend {
                backend: BACKEND,
                operation: "initialise device 0",
                what: self.what,
            }
        }
    }
}

static DEVICE0: OnceLock<Result<Arc<Device>, InitFailure>> = OnceLock::new();

/// Whether the CUDA driver library can be loaded at all. cudarc's own loader panics when
/// it cannot, so this runs first.
fn driver_library_present() -> bool {
    // SAFETY: `is_culib_present` only tries to dlopen the driver library under its usual
    // names and closes it again; loading the NVIDIA driver library runs no user code.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Run driver calls that may hit cudarc's symbol loader. The library was found to be
/// present; a symbol missing from an old driver still panics inside cudarc, which is the
/// one case caught here, as a last resort, and reported as an unavailable backend.
fn guarded<T>(f: impl FnOnce() -> Result<T, InitFailure>) -> Result<T, InitFailure> {
    if !driver_library_present() {
        return Err(InitFailure::unavailable(
            "no CUDA driver library found (libcuda.so.1); install the NVIDIA driver",
        ));
    }
    crate::error::catch_panic_quietly(f).unwrap_or_else(|panic| {
        Err(InitFailure::unavailable(format!(
            "the CUDA driver library lacks a required function (driver too old?): {panic}"
        )))
    })
}

fn device_count() -> Result<usize, InitFailure> {
    let count = CudaContext::device_count()
        .map_err(|e| InitFailure::unavailable(format!("the CUDA driver reports {e}")))?;
    Ok(count.max(0) as usize)
}

fn open_device(ordinal: usize) -> Result<Device, InitFailure> {
    let count = device_count()?;
    if count <= ordinal {
        return Err(InitFailure::unavailable(format!(
            "no CUDA device {ordinal}: the driver reports {count} device(s)"
        )));
    }
    fn fail(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> InitFailure {
        move |e| InitFailure::failed(format!("{what}: {e}"))
    }
    let ctx = CudaContext::new(ordinal).map_err(fail("create the context"))?;
    // SAFETY: this backend issues all its work on the one stream created below; every buffer
    // is allocated, used and freed in that stream's order, which is all that event tracking
    // would enforce.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().map_err(fail("create a stream"))?;
    let pool = keep_freed_memory(&ctx).map_err(|e| e.to_string());
    let name = ctx.name().map_err(fail("query the device name"))?;
    let compute_capability = ctx
        .compute_capability()
        .map_err(fail("query the compute capability"))?;
    if compute_capability < MIN_COMPUTE_CAPABILITY {
        let ((a, b), (c, d)) = (MIN_COMPUTE_CAPABILITY, compute_capability);
        return Err(InitFailure::unavailable(format!(
            "{name} has compute capability {c}.{d}; the PTX kernels target {a}.{b} (sm_80) or newer"
        )));
    }
    let smem_optin = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(fail("query the shared memory per block"))?
        .max(0) as usize;
    let sms = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(fail("query the multiprocessor count"))?
        .max(1) as usize;
    Ok(Device {
        ctx,
        stream,
        name,
        compute_capability,
        sms,
        smem_optin,
        modules: Default::default(),
        stager: Mutex::new(None),
        pool,
    })
}

impl Device {
    /// The function of `entry`, JIT-compiling its module on first use.
    pub(super) fn function(&self, entry: &'static str) -> Result<&CudaFunction> {
        let index = ptx::MODULES
            .iter()
            .position(|module| module.entries.contains(&entry))
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                operation: "launch",
                what: format!("{entry} is in no module of kernels/"),
            })?;
        let module = &ptx::MODULES[index];
        let loaded = self.modules[index]
            .get_or_init(|| self.load(module))
            .as_ref()
            .map_err(|what| Error::Backend {
                backend: BACKEND,
                operation: "load a kernel module",
                what: what.clone(),
            })?;
        loaded
            .functions
            .iter()
            .find(|(name, _)| *name == entry)
            .map(|(_, f)| f)
            .ok_or_else(|| Error::Backend {
                backend: BACKEND,
                operation: "launch",
                what: format!("{entry} was not resolved in kernels/{}", module.file),
            })
    }

    /// JIT-compile `module` and resolve its entry points (opting the dynamic-shared-memory
    /// ones in to all of it), or say why not.
    fn load(&self, module: &PtxModule) -> std::result::Result<LoadedModule, String> {
        let start = Instant::now();
        // sm_90a PTX loads on compute capability 9.0 only (its instructions are not in later
        // architectures' PTX either).
        if module.target == "sm_90a" && self.compute_capability != (9, 0) {
            let (major, minor) = self.compute_capability;
            return Err(format!(
                "{} has compute capability {major}.{minor}; kernels/{} ({}) needs 9.0 \
                 (tf32x3, fp32 or tf32x3w run everywhere)",
                self.name,
                module.file,
                module.entries.join(", ")
            ));
        }
        let loaded = guarded(|| {
            self.ctx
                .load_module(Ptx::from_src(module.source))
                .map_err(|e| {
                    InitFailure::failed(format!("JIT-compile kernels/{}: {e}", module.file))
                })
        })
        .map_err(|e| e.what)?;
        let mut functions = Vec::with_capacity(module.entries.len());
        for &entry in module.entries {
            let f = loaded
                .load_function(entry)
                .map_err(|e| format!("find {entry} in kernels/{}: {e}", module.file))?;
            if DYNAMIC_SMEM_ENTRIES.contains(&entry) {
                f.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    self.smem_optin as i32,
                )
                .map_err(|e| {
                    format!(
                        "opt {entry} in to {} B of shared memory: {e}",
                        self.smem_optin
                    )
                })?;
            }
            functions.push((entry, f));
        }
        Ok(LoadedModule {
            functions,
            took: start.elapsed(),
        })
    }

    /// Load every module now, for `optical info`: the time each took to JIT-compile and
    /// resolve (the driver's compute cache, `~/.nv/ComputeCache`, makes later processes'
    /// loads cheaper), and why the sm_90a module did not load where it did not; `Err` when
    /// a module every device needs failed.
    fn jit_report(&self) -> std::result::Result<String, String> {
        let mut parts = Vec::with_capacity(ptx::MODULES.len());
        for (module, slot) in ptx::MODULES.iter().zip(&self.modules) {
            match slot.get_or_init(|| self.load(module)) {
                Ok(m) => parts.push(format!(
                    "{} {:.0} ms",
                    module.file,
                    m.took.as_secs_f64() * 1e3
                )),
                Err(why) if module.target == "sm_90a" => {
                    parts.push(format!("{} not loaded ({why})", module.file))
                }
                Err(why) => return Err(why.clone()),
            }
        }
        Ok(parts.join(", "))
    }
}

/// Freed device memory the stream-ordered pool keeps for the next allocations.
const POOL_KEEP_BYTES: u64 = 1 << 30;

/// Let the device's stream-ordered memory pool keep up to [`POOL_KEEP_BYTES`] of freed
/// memory across synchronisations. Its default release threshold is 0: every
/// synchronisation hands the freed memory back to the driver, so each call's buffers (235 MB
/// for `cosine-cost-hbm`) are mapped afresh. A failure only costs that mapping, so it is
/// reported by `optical info`, not fatal.
fn keep_freed_memory(ctx: &Arc<CudaContext>) -> std::result::Result<(), DriverError> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    ctx.bind_to_thread()?;
    let mut keep: u64 = POOL_KEEP_BYTES;
    // SAFETY: FFI. The pool is the current pool of this context's device, which the
    // stream-ordered allocations of this backend come from; the driver API documents the
    // value of CU_MEMPOOL_ATTR_RELEASE_THRESHOLD as a cuuint64_t, which `keep` is, and it is
    // read during the call only.
    unsafe {
        let pool = result::device::get_mem_pool(ctx.cu_device())?;
        result::mem_pool::set_attribute(
            pool,
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )
    }
}

/// How many CUDA devices the driver reports, or why none can be used. Checked before
/// burn's CUDA device is created: cudarc's loader panics when the driver is missing.
pub fn usable_device_count() -> std::result::Result<usize, String> {
    guarded(device_count).map_err(|e| e.what)
}

/// What `optical info` shows for CUDA: whether a device is usable, one JSON object per
/// device, and a note (why not, or the kernels' state).
pub fn probe() -> (bool, Vec<serde_json::Value>, String) {
    let devices = guarded(|| {
        let count = device_count()?;
        let mut out = Vec::with_capacity(count);
        for ordinal in 0..count {
            let ctx = CudaContext::new(ordinal)
                .map_err(|e| InitFailure::failed(format!("device {ordinal}: {e}")))?;
            let attr = |a| ctx.attribute(a).unwrap_or(-1);
            out.push(serde_json::json!({
                "ordinal": ordinal,
                "name": ctx.name().unwrap_or_else(|e| format!("unknown ({e})")),
                "compute_capability": ctx
                    .compute_capability()
                    .map(|(a, b)| format!("{a}.{b}"))
                    .unwrap_or_else(|e| format!("unknown ({e})")),
                "memory_mib": ctx.total_mem().map(|b| b >> 20).unwrap_or(0),
                "multiprocessors": attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
                "shared_memory_per_block_optin": attr(
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
                ),
            }));
        }
        Ok(out)
    });
    match devices {
        Err(e) => (false, vec![], e.what),
        Ok(devices) if devices.is_empty() => (
            false,
            devices,
            "the CUDA driver reports no device".to_string(),
        ),
        Ok(devices) => {
            let note = CudaBackend::new()
                .map_err(|e| e.to_string())
                .and_then(|b| Ok(b.info_note(&b.dev.jit_report()?)));
            match note {
                Ok(note) => (true, devices, note),
                Err(why) => (false, devices, why),
            }
        }
    }
}

/// A checked launch: records the type of every argument pushed and compares the list with
/// the entry point's signature ([`ptx::SIGNATURES`], itself checked against the PTX).
pub(super) struct Launch<'a> {
    args: LaunchArgs<'a>,
    entry: &'static str,
    pushed: Vec<&'static str>,
}

impl<'a> Launch<'a> {
    /// A device buffer the kernel only reads.
    pub fn buf<T>(&mut self, buf: &'a CudaSlice<T>) -> &mut Self {
        self.args.arg(buf);
        self.pushed.push("u64");
        self
    }

    /// A range of a device buffer the kernel only reads.
    pub fn view<'c: 'a, T>(&mut self, view: &'a CudaView<'c, T>) -> &mut Self {
        self.args.arg(view);
        self.pushed.push("u64");
        self
    }

    /// A device buffer the kernel writes.
    pub fn buf_mut<T>(&mut self, buf: &'a mut CudaSlice<T>) -> &mut Self {
        self.args.arg(buf);
        self.pushed.push("u64");
        self
    }

    pub fn u32(&mut self, value: &'a u32) -> &mut Self {
        self.args.arg(value);
        self.pushed.push("u32");
        self
    }

    pub fn f32(&mut self, value: &'a f32) -> &mut Self {
        self.args.arg(value);
        self.pushed.push("f32");
        self
    }

    /// Launch on the backend's stream.
    ///
    /// # Safety
    /// Every buffer must be at least as large as the kernel's header says it reads or
    /// writes for the given scalars and launch geometry (the argument types and order are
    /// checked here).
    pub unsafe fn launch(mut self, cfg: LaunchConfig) -> Result<()> {
        let expected = ptx::signature(self.entry);
        if expected != Some(self.pushed.as_slice()) {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "launch",
                what: format!(
                    "{}: the kernel takes {expected:?}, the launch pushed {:?}",
                    self.entry, self.pushed
                ),
            });
        }
        // SAFETY: the argument types match the entry point's parameters (checked above);
        // the buffer sizes are this function's contract, forwarded to the caller.
        unsafe { self.args.launch(cfg) }
            .map(drop)
            .map_err(|e| Error::Backend {
                backend: BACKEND,
                operation: "launch",
                what: format!("{}: {e}", self.entry),
            })
    }
}

/// Map a driver error to the crate's error, naming the operation.
pub(super) fn driver<E: std::fmt::Display>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Backend {
        backend: BACKEND,
        operation,
        what: e.to_string(),
    }
}

/// A size the kernels take as `u32`.
pub(super) fn as_u32(name: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::parameter(name, "at most 4294967295", value))
}

/// A grid's x dimension of `blocks`: CUDA takes at most 2³¹ − 1 there, and a larger one
/// would fail at launch with a bare `CUDA_ERROR_INVALID_VALUE`.
pub(super) fn grid_x(name: &'static str, blocks: usize) -> Result<u32> {
    if blocks > i32::MAX as usize {
        return Err(Error::parameter(
            name,
            format!("at most {} (CUDA's grid limit along x)", i32::MAX),
            blocks,
        ));
    }
    as_u32(name, blocks)
}

/// Rows of `d` floats, zero-padded to `dp` (a multiple of 4) for the 16-byte loads; zeros
/// change no dot product and no norm.
pub(super) fn padded(data: &[f32], d: usize, dp: usize) -> Cow<'_, [f32]> {
    if d == dp {
        return Cow::Borrowed(data);
    }
    let rows = data.len() / d;
    let mut out = vec![0.0f32; rows * dp];
    for (dst, src) in out.chunks_exact_mut(dp).zip(data.chunks_exact(d)) {
        dst[..d].copy_from_slice(src);
    }
    Cow::Owned(out)
}

/// Whether [`CostKernel::Auto`] takes the wgmma kernel for `b` pairs of `n × m` on a device
/// of compute capability `cc` with `sms` SMs (if its module loads): compute capability 9.0,
/// 32-bit row offsets that reach every float, and at least `WGMMA_TILES_PER_SM` tiles of
/// 128 × 128 per SM.
fn wants_wgmma(
    cc: (i32, i32),
    sms: usize,
    (b, n, m): (usize, usize, usize),
    wide_fits: bool,
) -> bool {
    let tiles = b.saturating_mul(n.div_ceil(WIDE_TILE) * m.div_ceil(WIDE_TILE));
    cc == (9, 0) && wide_fits && tiles >= WGMMA_TILES_PER_SM * sms
}

/// Whether the 128 × 128-tile kernels' 32-bit row offsets reach every float of `b` pairs of
/// `n` and `m` rows of `dp` floats (beyond that the tf32x3w choice runs the 64 × 64 kernel).
fn wide_offsets_fit(b: usize, n: usize, m: usize, dp: usize) -> bool {
    [b * n * dp, b * m * dp]
        .iter()
        .all(|&floats| floats < 1 << 32)
}

pub(super) fn lengths_u32(name: &'static str, lengths: &[usize]) -> Result<Vec<u32>> {
    lengths.iter().map(|&l| as_u32(name, l)).collect()
}

impl CudaBackend {
    /// Open device 0 (once per process; later calls share it).
    /// Device 0, with the cost kernel that `$OPTICAL_CUDA_COST_KERNEL` names (default
    /// tf32x3) and the fused kernel's block that `$OPTICAL_CUDA_FUSED_THREADS` names (default
    /// auto: 512 threads for pairs with more than 64 rows or columns, else 256), and the
    /// split half-iterations that `$OPTICAL_CUDA_SINKHORN_SPLIT` names (default on). All
    /// are read before any device is looked for.
    pub fn new() -> Result<CudaBackend> {
        let cost_kernel = CostKernel::from_env()?;
        let fused_threads = FusedThreads::from_env()?;
        let fused_cost = FusedCost::from_env()?;
        let lse = SinkhornLse::from_env()?;
        let split = SinkhornSplit::from_env()?;
        let staging = Staging::from_env()?;
        let maxsim = MaxsimRoute::from_env()?;
        let wgmma_stages = WgmmaStages::from_env()?;
        let checks = SolverChecks::from_env()?;
        let dev = DEVICE0
            .get_or_init(|| guarded(|| open_device(0)).map(Arc::new))
            .clone()
            .map_err(InitFailure::into_error)?;
        Ok(CudaBackend {
            dev,
            cost_kernel,
            fused_threads,
            fused_cost,
            lse,
            split,
            staging,
            maxsim,
            wgmma_stages,
            checks,
        })
    }

    /// The same device, computing cosine costs with `kernel`.
    pub fn with_cost_kernel(mut self, kernel: CostKernel) -> Self {
        self.cost_kernel = kernel;
        self
    }

    pub fn cost_kernel(&self) -> CostKernel {
        self.cost_kernel
    }

    /// The same device, launching the fused Sinkhorn kernel with `threads` per CTA.
    pub fn with_fused_threads(mut self, threads: FusedThreads) -> Self {
        self.fused_threads = threads;
        self
    }

    pub fn fused_threads(&self) -> FusedThreads {
        self.fused_threads
    }

    /// The same device, running the fused kernel's tensor-core cost phase as `cost`.
    pub fn with_fused_cost(mut self, cost: FusedCost) -> Self {
        self.fused_cost = cost;
        self
    }

    pub fn fused_cost(&self) -> FusedCost {
        self.fused_cost
    }

    /// The same device, keeping the on-chip Sinkhorn passes' log-sum-exps in range as `lse`.
    pub fn with_lse(mut self, lse: SinkhornLse) -> Self {
        self.lse = lse;
        self
    }

    pub fn lse(&self) -> SinkhornLse {
        self.lse
    }

    /// The same device, with or without split half-iterations for pairs whose K stays in
    /// global memory.
    pub fn with_split(mut self, split: SinkhornSplit) -> Self {
        self.split = split;
        self
    }

    pub fn split(&self) -> SinkhornSplit {
        self.split
    }

    /// The same device, applying the solver's stopping rule where `checks` says.
    pub fn with_solver_checks(mut self, checks: SolverChecks) -> Self {
        self.checks = checks;
        self
    }

    /// Where the solver's stopping rule runs (see [`SolverChecks`]).
    pub fn solver_checks(&self) -> SolverChecks {
        self.checks
    }

    /// The same device, copying large buffers through `staging`.
    pub fn with_staging(mut self, staging: Staging) -> Self {
        self.staging = staging;
        self
    }

    pub fn staging(&self) -> Staging {
        self.staging
    }

    /// The same device, computing MaxSim scores by `route`.
    pub fn with_maxsim(mut self, route: MaxsimRoute) -> Self {
        self.maxsim = route;
        self
    }

    pub fn maxsim_route(&self) -> MaxsimRoute {
        self.maxsim
    }

    /// The same device, running `cosine_cost_wgmma_f32` with `stages` stages.
    pub fn with_wgmma_stages(mut self, stages: WgmmaStages) -> Self {
        self.wgmma_stages = stages;
        self
    }

    pub fn wgmma_stages(&self) -> WgmmaStages {
        self.wgmma_stages
    }

    /// Run `f` with the staging buffers when a copy of `bytes` should use them (allocating
    /// them on first use); `None` when it goes through the driver's pageable path.
    fn with_stager<R>(&self, bytes: usize, f: impl FnOnce(&mut Stager) -> R) -> Option<R> {
        if self.staging == Staging::Pageable || bytes < STAGE_MIN {
            return None;
        }
        // Busy (another thread's copy, or a rayon task of this one's that called back in):
        // the pageable path, rather than waiting or deadlocking. A panic while the lock was
        // held left no copy half-done that matters: the stager waits for its buffers'
        // events before every use.
        let mut slot = match self.dev.stager.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let stager = slot.get_or_insert_with(|| {
            Stager::new(&self.dev.ctx).map_err(|e| format!("page-locked staging buffers: {e}"))
        });
        stager.as_mut().ok().map(f)
    }

    /// `data` uploaded and downloaded again through the copy path the backend uses for
    /// buffers of its size (the staging buffers from 1 MiB on, unless
    /// [`Staging::Pageable`]): what the parity tests check bit for bit across chunk
    /// boundaries.
    pub fn round_trip(&self, data: &[f32]) -> Result<Vec<f32>> {
        let buf = self.upload(data)?;
        self.download(&buf)
    }

    /// `optical info`'s note on a usable device: the modules' JIT compilation (`jit`) and
    /// the settings read from the environment.
    fn info_note(&self, jit: &str) -> String {
        format!(
            "kernels JIT-compiled for device 0 ({}: {jit}); cosine costs on {} \
             ({COST_KERNEL_ENV}: {}; {} stages in the wgmma kernel, {WGMMA_STAGES_ENV}: {}); \
             fused Sinkhorn with {} threads per pair \
             ({FUSED_THREADS_ENV}: {}) and a {} cost phase ({FUSED_COST_ENV}: {}); {} \
             log-sum-exps in the on-chip passes ({LSE_ENV}: {}); split \
             half-iterations for pairs whose K \
             stays in global memory: {} ({SINKHORN_SPLIT_ENV}: {}); the solver's \
             stopping rule on the {} ({SOLVER_CHECKS_ENV}: {}); MaxSim {} \
             ({MAXSIM_ENV}: {}); {}",
            self.dev.name,
            match self.cost_kernel {
                CostKernel::Auto if self.dev.compute_capability == (9, 0) =>
                    "the tensor cores (3xTF32; on wgmma with 128x128 tiles from 2 tiles per SM, else 64x64 tiles)",
                CostKernel::Auto => "the tensor cores (3xTF32)",
                CostKernel::Fp32 => "FP32 FMA",
                CostKernel::Tf32x3 => "the tensor cores (3xTF32)",
                CostKernel::Tf32x3Wide => "the tensor cores (3xTF32, 128x128 tiles)",
                CostKernel::Wgmma => "the tensor cores (3xTF32 on wgmma, 128x128 tiles)",
                CostKernel::WgmmaRs =>
                    "the tensor cores (3xTF32 on wgmma with x in registers, 128x128 tiles)",
            },
            choices::<CostKernel>(),
            self.wgmma_stages.name(),
            choices::<WgmmaStages>(),
            self.fused_threads.name(),
            choices::<FusedThreads>(),
            self.fused_cost.name(),
            choices::<FusedCost>(),
            self.lse.name(),
            choices::<SinkhornLse>(),
            self.split.name(),
            choices::<SinkhornSplit>(),
            self.checks.name(),
            choices::<SolverChecks>(),
            self.maxsim.name(),
            choices::<MaxsimRoute>(),
            self.staging_note()
        )
    }

    /// What large copies go through, for `optical info`.
    fn staging_note(&self) -> String {
        let pool = match &self.dev.pool {
            Ok(()) => format!(
                "freed device memory kept up to {} MiB",
                POOL_KEEP_BYTES >> 20
            ),
            Err(e) => format!("freed device memory returned at each synchronisation ({e})"),
        };
        let copies = match self.staging {
            Staging::Pageable => "the driver's pageable path".to_string(),
            Staging::Pinned => {
                let slot = self.dev.stager.lock().unwrap_or_else(|e| e.into_inner());
                match &*slot {
                    Some(Err(e)) => format!("the driver's pageable path ({e})"),
                    _ => "two page-locked 8 MiB staging buffers".to_string(),
                }
            }
        };
        format!(
            "copies of 1 MiB or more through {copies} ({STAGING_ENV}: {}); {pool}",
            choices::<Staging>()
        )
    }

    /// The device's compute capability, e.g. (9, 0) for Hopper.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.dev.compute_capability
    }

    /// The device's streaming multiprocessors (132 on an H100 SXM or H200).
    pub fn multiprocessors(&self) -> usize {
        self.dev.sms
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// A launch of `entry` (its module JIT-compiled first if no launch needed it yet).
    pub(super) fn launch(&self, entry: &'static str) -> Result<Launch<'_>> {
        Ok(self.launch_function(self.dev.function(entry)?, entry))
    }

    fn launch_function<'a>(&'a self, f: &'a CudaFunction, entry: &'static str) -> Launch<'a> {
        Launch {
            args: self.dev.stream.launch_builder(f),
            entry,
            pushed: Vec::with_capacity(16),
        }
    }

    pub(super) fn upload<T: DeviceRepr + Pod>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        let _phase = crate::phases::phase("copy to device");
        let stream = &self.dev.stream;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let staged = self.with_stager(bytes.len(), |stager| -> Result<CudaSlice<T>> {
            // SAFETY: the upload below writes every element before anything reads one.
            let mut dst = unsafe { stream.alloc::<T>(data.len()) }.map_err(driver("allocate"))?;
            let (ptr, record) = dst.device_ptr_mut(stream);
            stager
                .upload(stream, bytes, ptr, bytes.len())
                .map_err(driver("upload"))?;
            drop(record);
            Ok(dst)
        });
        match staged {
            Some(dst) => dst,
            None => stream.clone_htod(data).map_err(driver("upload")),
        }
    }

    pub(super) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        self.dev
            .stream
            .alloc_zeros(len.max(1))
            .map_err(driver("allocate"))
    }

    /// A device buffer of `len` elements (at least one) left uninitialised.
    ///
    /// # Safety
    /// The caller writes every element before anything reads it.
    pub(super) unsafe fn uninit<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: forwarded to the caller, who initialises every element before reading.
        unsafe { self.dev.stream.alloc(len.max(1)) }.map_err(driver("allocate"))
    }

    pub(super) fn download<T: DeviceRepr + Pod + Send + Sync>(
        &self,
        buf: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        let stream = &self.dev.stream;
        if crate::phases::enabled() {
            // Timed apart, so that the copy's phase holds the copy alone.
            let _phase = crate::phases::phase("wait for device");
            stream
                .synchronize()
                .map_err(driver("wait for the device"))?;
        }
        let _phase = crate::phases::phase("copy to host");
        let len = buf.len();
        let size = std::mem::size_of::<T>();
        // Values that a chunk does not hold whole take the driver's path.
        let bytes = if super::staging::stages::<T>() {
            size * len
        } else {
            0
        };
        let staged = self.with_stager(bytes, |stager| {
            let (ptr, _record) = buf.device_ptr(stream);
            stager
                .download::<T>(stream, ptr, len * size, len)
                .map_err(driver("download"))
        });
        match staged {
            Some(out) => out,
            None => stream.clone_dtoh(buf).map_err(driver("download")),
        }
    }

    /// `inv[r] = 1/‖rows[r]‖` (0 for a zero row) for `rows` rows of `dp` floats.
    fn row_inv_norms(
        &self,
        rows: &CudaSlice<f32>,
        count: usize,
        dp: usize,
    ) -> Result<CudaSlice<f32>> {
        let mut inv = self.zeros::<f32>(count)?;
        let (count_u, d4) = (as_u32("rows", count)?, as_u32("d", dp / 4)?);
        let cfg = LaunchConfig {
            grid_dim: (count_u.div_ceil(WARPS), 1, 1),
            block_dim: (32 * WARPS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.launch(ptx::ROW_INV_NORM)?;
        l.buf(rows).buf_mut(&mut inv).u32(&count_u).u32(&d4);
        // SAFETY: `rows` holds `count * dp` floats (dp = 4 * d4) and `inv` `count`; one warp
        // per row covers rows < count exactly, the kernel's whole read/write set.
        unsafe { l.launch(cfg) }?;
        Ok(inv)
    }

    /// The cost kernel that computes the cost of `b` pairs of `n × m` rows of `d` floats:
    /// the chosen one, or for [`CostKernel::Auto`] the one it picks for this problem on this
    /// device (wgmma only where its module loads). The fused kernel's cost phase takes
    /// [`CostKernel::Tf32x3`] for [`CostKernel::Auto`].
    pub fn cost_kernel_for(&self, b: usize, n: usize, m: usize, d: usize) -> CostKernel {
        self.resolve_cost_kernel(b, n, m, wide_offsets_fit(b, n, m, d.next_multiple_of(4)))
    }

    fn resolve_cost_kernel(&self, b: usize, n: usize, m: usize, wide_fits: bool) -> CostKernel {
        if self.cost_kernel != CostKernel::Auto {
            return self.cost_kernel;
        }
        let large = wants_wgmma(
            self.dev.compute_capability,
            self.dev.sms,
            (b, n, m),
            wide_fits,
        );
        if large && self.dev.function(ptx::COSINE_COST_WGMMA).is_ok() {
            CostKernel::Wgmma
        } else {
            CostKernel::Tf32x3
        }
    }

    /// The cosine cost of uploaded, padded embeddings into a fresh `(b, n, m)` buffer.
    fn cost_on_device(
        &self,
        xg: &CudaSlice<f32>,
        yg: &CudaView<'_, f32>,
        xl: &CudaSlice<u32>,
        yl: &CudaSlice<u32>,
        (b, n, m, dp): (usize, usize, usize, usize),
    ) -> Result<CudaSlice<f32>> {
        // SAFETY: every cost kernel writes every element i < n, j < m of every pair (0 for
        // padding), so the buffer is fully initialised before anything reads it.
        let mut out = unsafe { self.uninit::<f32>(b * n * m) }?;
        self.cost_into(xg, yg, xl, yl, (b, n, m, dp), &mut out)?;
        Ok(out)
    }

    /// The cosine cost of uploaded, padded embeddings into `out` (at least `b·n·m` floats),
    /// every entry of which is written. The buffer sizes are checked here; the lengths in
    /// `xl` and `yl` must come from validated [`Embeddings`] (1 ≤ x_len ≤ n, 1 ≤ y_len ≤ m),
    /// as they do in every caller.
    pub(super) fn cost_into(
        &self,
        xg: &CudaSlice<f32>,
        yg: &CudaView<'_, f32>,
        xl: &CudaSlice<u32>,
        yl: &CudaSlice<u32>,
        (b, n, m, dp): (usize, usize, usize, usize),
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        for (what, have, need) in [
            ("x buffer", xg.len(), b * n * dp),
            ("y buffer", yg.len(), b * m * dp),
            ("x lengths", xl.len(), b),
            ("y lengths", yl.len(), b),
            ("cost buffer", out.len(), b * n * m),
        ] {
            if have < need {
                return Err(Error::parameter(
                    what,
                    format!("at least {need} elements"),
                    format!("{have}"),
                ));
            }
        }
        let wide_fits = wide_offsets_fit(b, n, m, dp);
        let kernel = self.resolve_cost_kernel(b, n, m, wide_fits);
        let (entry, tile, smem) = match kernel {
            CostKernel::Fp32 => (ptx::COSINE_COST, TILE, 0),
            CostKernel::Tf32x3Wide if wide_fits => (ptx::COSINE_COST_TF32X3W, WIDE_TILE, 0),
            CostKernel::Wgmma if wide_fits => (
                ptx::COSINE_COST_WGMMA,
                WIDE_TILE,
                self.wgmma_stages.shared_bytes(),
            ),
            CostKernel::WgmmaRs if wide_fits => {
                (ptx::COSINE_COST_WGMMA_RS, WIDE_TILE, WGMMA_RS_SMEM)
            }
            // The 128 × 128 kernels (wgmma's too) address rows by 32-bit offsets: where those
            // do not reach every float, whichever was asked for, the 64 × 64 kernel (64-bit).
            CostKernel::Auto
            | CostKernel::Tf32x3
            | CostKernel::Tf32x3Wide
            | CostKernel::Wgmma
            | CostKernel::WgmmaRs => (ptx::COSINE_COST_TF32X3, TILE, 0),
        };
        // Only the wgmma module can be missing on a working device (compute capability 9.0
        // only): that is a wrong choice of kernel rather than a failing device.
        let function = self.dev.function(entry).map_err(|e| match (kernel, e) {
            (CostKernel::Wgmma | CostKernel::WgmmaRs, Error::Backend { what, .. }) => {
                Error::parameter(
                    COST_KERNEL_ENV,
                    "a cost kernel this device runs",
                    format!("{}: {what}", kernel.name()),
                )
            }
            (_, e) => e,
        })?;
        let (tiles_i, tiles_j) = (n.div_ceil(tile), m.div_ceil(tile));
        // One CTA per tile, numbered pair-major: block (p * tiles_i + ti) * tiles_j + tj.
        let blocks = b
            .checked_mul(tiles_i * tiles_j)
            .filter(|&blocks| blocks <= i32::MAX as usize)
            .ok_or_else(|| {
                Error::parameter(
                    "b, n, m",
                    format!("at most {} tiles of {tile}x{tile} per launch", i32::MAX),
                    format!("b = {b}, n = {n}, m = {m}"),
                )
            })?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (TILE_THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let (nu, mu, dpu) = (as_u32("n", n)?, as_u32("m", m)?, as_u32("d", dp)?);
        let mut l = self.launch_function(function, entry);
        l.buf(xg)
            .view(yg)
            .buf(xl)
            .buf(yl)
            .buf_mut(out)
            .u32(&nu)
            .u32(&mu)
            .u32(&dpu);
        // SAFETY: x holds b*n*dp floats, y b*m*dp, the lengths b u32 each with
        // 1 <= x_len <= n and 1 <= y_len <= m (validated Embeddings), out at least b*n*m
        // (checked above); the grid b * ceil(n/tile) * ceil(m/tile) x 256 threads, with the
        // tile of the chosen kernel, is the geometry the cost kernels require (they derive
        // the pair and tile from the block index; static shared memory only, except the
        // wgmma kernels' dynamic bytes: 66,560 or 99,328, from which the first takes its
        // stage count, and 33,792; within the opt-in limit set when their module was
        // loaded), the wide kernel runs only when its 32-bit row offsets cannot overflow,
        // and they write only i < n, j < m.
        unsafe { l.launch(cfg) }
    }

    /// Pairwise cosine cost (same contract as [`crate::backend::CpuReference::cosine_cost`]).
    pub fn cosine_cost(&self, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
        check_pair_batch(x, y)?;
        let (b, n, m, d) = (x.b, x.n, y.n, x.d);
        let dp = d.next_multiple_of(4);
        let xg = self.upload(&padded(&x.data, d, dp))?;
        let yg = self.upload(&padded(&y.data, d, dp))?;
        let xl = self.upload(&lengths_u32("x lengths", &x.lengths)?)?;
        let yl = self.upload(&lengths_u32("y lengths", &y.lengths)?)?;
        let out = self.cost_on_device(&xg, &yg.as_view(), &xl, &yl, (b, n, m, dp))?;
        Ok(CostBatch {
            b,
            n,
            m,
            data: self.download(&out)?,
        })
    }

    /// MaxSim scores (same contract as [`crate::backend::CpuReference::maxsim`]).
    pub fn maxsim(&self, queries: &Embeddings, docs: &PackedDocs) -> Result<Vec<f32>> {
        check_maxsim(queries, docs)?;
        let inputs = MaxsimInputs::upload(self, queries, docs)?;
        let out = inputs.run(self)?;
        self.download(&out)
    }

    /// The exp2 probe's launch for at least `min_exps` exponentials: 8 CTAs of 256 threads
    /// per SM (2,048 threads, the most an SM of compute capability 8.0 or 9.0 holds), the
    /// lanes and the rounds.
    fn exp2_peak_launch(&self, min_exps: u64) -> Result<(LaunchConfig, usize, u32)> {
        const THREADS: u32 = 256;
        let ctas = as_u32("exp2 probe blocks", 8 * self.dev.sms)?;
        let lanes = (ctas * THREADS) as usize;
        let cfg = LaunchConfig {
            grid_dim: (ctas, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        Ok((cfg, lanes, Exp2Peak::rounds_for(min_exps, lanes)?))
    }

    fn run_exp2_peak(
        &self,
        out: &mut CudaSlice<f32>,
        cfg: LaunchConfig,
        rounds: u32,
    ) -> Result<()> {
        let lanes = (cfg.grid_dim.0 * cfg.block_dim.0) as usize;
        if out.len() < lanes {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "exp2 probe",
                what: format!(
                    "{lanes} lanes need as many floats, the buffer holds {}",
                    out.len()
                ),
            });
        }
        let mut l = self.launch(ptx::EX2_PEAK)?;
        l.buf_mut(out).u32(&rounds);
        // SAFETY: ex2_peak_f32 writes out[ctaid.x * ntid.x + tid.x] once per thread and reads
        // nothing else; `out` holds at least grid * block floats (checked above).
        unsafe { l.launch(cfg) }
    }

    /// The exp2 throughput probe (kernels/peak.ptx; see [`crate::backend::peak`]).
    pub fn exp2_peak(&self, min_exps: u64) -> Result<Exp2Peak> {
        let (cfg, lanes, rounds) = self.exp2_peak_launch(min_exps)?;
        // SAFETY: the kernel writes every one of the `lanes` floats.
        let mut out = unsafe { self.uninit::<f32>(lanes) }?;
        self.run_exp2_peak(&mut out, cfg, rounds)?;
        Ok(Exp2Peak {
            lanes,
            rounds,
            sums: self.download(&out)?,
        })
    }

    /// Time `run` with CUDA events: one warm-up call, then calls until `min_seconds` have
    /// passed (at least 3); the median device time per call, in seconds.
    pub(super) fn time_on_device(
        &self,
        min_seconds: f64,
        mut run: impl FnMut() -> Result<()>,
    ) -> Result<(f64, usize)> {
        let event = || {
            self.dev
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver("create an event"))
        };
        let (start, end) = (event()?, event()?);
        crate::bench::median_seconds(min_seconds, || {
            start
                .record(&self.dev.stream)
                .map_err(driver("record an event"))?;
            run()?;
            end.record(&self.dev.stream)
                .map_err(driver("record an event"))?;
            let ms = start.elapsed_ms(&end).map_err(driver("time a kernel"))?;
            Ok(ms as f64 * 1e-3)
        })
    }

    /// Device time of one standard job, inputs uploaded beforehand (see [`DeviceJob`]): the
    /// kernels of one call, from inputs in device memory to outputs in device memory.
    pub fn time_job(&self, job: DeviceJob<'_>, min_seconds: f64) -> Result<(f64, usize)> {
        match job {
            DeviceJob::CosineCost(x, y) => {
                check_pair_batch(x, y)?;
                let (b, n, m, d) = (x.b, x.n, y.n, x.d);
                let dp = d.next_multiple_of(4);
                let xg = self.upload(&padded(&x.data, d, dp))?;
                let yg = self.upload(&padded(&y.data, d, dp))?;
                let xl = self.upload(&lengths_u32("x lengths", &x.lengths)?)?;
                let yl = self.upload(&lengths_u32("y lengths", &y.lengths)?)?;
                self.time_on_device(min_seconds, || {
                    self.cost_on_device(&xg, &yg.as_view(), &xl, &yl, (b, n, m, dp))
                        .map(drop)
                })
            }
            DeviceJob::Maxsim(q, docs) => {
                check_maxsim(q, docs)?;
                let inputs = MaxsimInputs::upload(self, q, docs)?;
                self.time_on_device(min_seconds, || inputs.run(self).map(drop))
            }
            // A stopping rule that can end the solve early (`sinkhorn-checks`): the checked
            // solve, checks and read-backs included, which is what that bench measures.
            DeviceJob::Sinkhorn(problem, params) if params.check_every < params.max_iterations => {
                self.time_sinkhorn_checked(problem, params, min_seconds)
            }
            DeviceJob::Sinkhorn(problem, params) => {
                self.time_sinkhorn(problem, params.epsilon, params.max_iterations, min_seconds)
            }
            DeviceJob::SinkhornFused(x, y, params) => {
                self.time_fused(x, y, params.epsilon, params.max_iterations, min_seconds)
            }
            DeviceJob::Exp2Peak(min_exps) => {
                let (cfg, lanes, rounds) = self.exp2_peak_launch(min_exps)?;
                // SAFETY: the kernel writes every one of the `lanes` floats, and they are
                // never read.
                let mut out = unsafe { self.uninit::<f32>(lanes) }?;
                self.time_on_device(min_seconds, || self.run_exp2_peak(&mut out, cfg, rounds))
            }
        }
    }
}

/// MaxSim inputs in device memory.
struct MaxsimInputs {
    q: CudaSlice<f32>,
    q_len: CudaSlice<u32>,
    docs: CudaSlice<f32>,
    d_off: CudaSlice<u32>,
    d_len: CudaSlice<u32>,
    nq: usize,
    qn: usize,
    nd: usize,
    tokens: usize,
    dp: usize,
    max_len: usize,
    /// The documents' first tokens and lengths, on the host (the tiled route's blocks).
    offsets: Vec<usize>,
    lengths: Vec<usize>,
}

impl MaxsimInputs {
    fn upload(cuda: &CudaBackend, queries: &Embeddings, docs: &PackedDocs) -> Result<Self> {
        let d = docs.d;
        let dp = d.next_multiple_of(4);
        let (nq, qn, nd) = (queries.b, queries.n, docs.len());
        let tokens = docs.data.len() / d;
        // The kernel indexes queries x tokens and queries x documents in u32.
        as_u32("queries x query tokens", nq * qn)?;
        as_u32("queries x documents", nq * nd)?;
        as_u32("document tokens", tokens)?;
        Ok(MaxsimInputs {
            q: cuda.upload(&padded(&queries.data, d, dp))?,
            q_len: cuda.upload(&lengths_u32("query lengths", &queries.lengths)?)?,
            docs: cuda.upload(&padded(&docs.data, d, dp))?,
            d_off: cuda.upload(&lengths_u32("document offsets", &docs.offsets)?)?,
            d_len: cuda.upload(&lengths_u32("document lengths", &docs.lengths)?)?,
            nq,
            qn,
            nd,
            tokens,
            dp,
            max_len: docs.lengths.iter().copied().max().unwrap_or(1),
            offsets: docs.offsets.clone(),
            lengths: docs.lengths.clone(),
        })
    }

    fn run(&self, cuda: &CudaBackend) -> Result<CudaSlice<f32>> {
        if cuda.maxsim == MaxsimRoute::Tiled {
            return self.run_tiled(cuda);
        }
        let q_inv = cuda.row_inv_norms(&self.q, self.nq * self.qn, self.dp)?;
        let d_inv = cuda.row_inv_norms(&self.docs, self.tokens, self.dp)?;
        let mut out = cuda.zeros::<f32>(self.nq * self.nd)?;
        let stride4 = (self.dp / 4) | 1;
        let staged = 128 + 16 * stride4 * self.max_len;
        let in_smem = staged <= cuda.dev.smem_optin;
        let cfg = LaunchConfig {
            grid_dim: (grid_x("documents", self.nd)?, 1, 1),
            block_dim: (32 * WARPS, 1, 1),
            shared_mem_bytes: if in_smem { staged as u32 } else { 128 },
        };
        let (nq, qn, nd) = (self.nq as u32, self.qn as u32, self.nd as u32);
        let (dp, s4, insm) = (as_u32("d", self.dp)?, stride4 as u32, in_smem as u32);
        let mut l = cuda.launch(ptx::MAXSIM)?;
        l.buf(&self.q)
            .buf(&q_inv)
            .buf(&self.q_len)
            .buf(&self.docs)
            .buf(&d_inv)
            .buf(&self.d_off)
            .buf(&self.d_len)
            .buf_mut(&mut out)
            .u32(&nq)
            .u32(&qn)
            .u32(&nd)
            .u32(&dp)
            .u32(&s4)
            .u32(&insm);
        // SAFETY: q holds nq*qn*dp floats and q_inv nq*qn; docs holds tokens*dp floats and
        // d_inv tokens; d_off/d_len (nd) describe documents inside the tokens (validated
        // PackedDocs) and q_len (nq) is within 1..=qn; out holds nq*nd; the dynamic shared
        // memory covers 128 B plus, when staged, max_len rows of stride4 float4.
        unsafe { l.launch(cfg) }?;
        Ok(out)
    }

    /// [`MaxsimRoute::Tiled`]: per block of documents, the cost kernel on (1, nq·qn, block
    /// tokens) and `maxsim_reduce_f32`.
    fn run_tiled(&self, cuda: &CudaBackend) -> Result<CudaSlice<f32>> {
        let rows = self.nq * self.qn;
        let mut out = cuda.zeros::<f32>(self.nq * self.nd)?;
        let x_len = cuda.upload(&[as_u32("queries x query tokens", rows)?])?;
        let (nq, qn, nd) = (self.nq as u32, self.qn as u32, self.nd as u32);
        for [doc0, docs, tok0, tokens] in document_blocks(&self.offsets, &self.lengths, rows) {
            let y = self.docs.slice(tok0 * self.dp..(tok0 + tokens) * self.dp);
            let y_len = cuda.upload(&[as_u32("block tokens", tokens)?])?;
            let cost =
                cuda.cost_on_device(&self.q, &y, &x_len, &y_len, (1, rows, tokens, self.dp))?;
            let warps = self.nq * docs;
            let cfg = LaunchConfig {
                grid_dim: (grid_x("MaxSim warps", warps.div_ceil(8))?, 1, 1),
                block_dim: (32 * 8, 1, 1),
                shared_mem_bytes: 0,
            };
            let (doc0, docs, tok0, m) = (doc0 as u32, docs as u32, tok0 as u32, tokens as u32);
            let mut l = cuda.launch(ptx::MAXSIM_REDUCE)?;
            l.buf(&cost)
                .buf(&self.q_len)
                .buf(&self.d_off)
                .buf(&self.d_len)
                .buf_mut(&mut out)
                .u32(&nq)
                .u32(&qn)
                .u32(&nd)
                .u32(&doc0)
                .u32(&docs)
                .u32(&tok0)
                .u32(&m);
            // SAFETY: cost holds rows x m floats for this block's tokens tok0 .. tok0 + m,
            // which hold documents doc0 .. doc0 + docs whole (document_blocks); q_len (nq)
            // is within 1..=qn; d_off/d_len hold nd entries and out nq*nd; the grid has a
            // warp for each of the nq*docs (query, document) pairs (the rest return at once)
            // and the kernel uses no shared memory.
            unsafe { l.launch(cfg) }?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_are_blocked_whole_within_the_budget() {
        let lengths = [3usize, 5, 2, 7, 1];
        let offsets = [0usize, 3, 8, 10, 17];
        // Everything in one block when it fits.
        assert_eq!(document_blocks(&offsets, &lengths, 4), vec![[0, 5, 0, 18]]);
        // A budget of 8 tokens per block (rows = TILED_COST_FLOATS / 8).
        let rows = TILED_COST_FLOATS / 8;
        assert_eq!(
            document_blocks(&offsets, &lengths, rows),
            vec![[0, 2, 0, 8], [2, 1, 8, 2], [3, 2, 10, 8]]
        );
        // A document longer than the budget is a block of its own.
        let rows = TILED_COST_FLOATS / 4;
        assert_eq!(
            document_blocks(&offsets, &lengths, rows),
            vec![
                [0, 1, 0, 3],
                [1, 1, 3, 5],
                [2, 1, 8, 2],
                [3, 1, 10, 7],
                [4, 1, 17, 1]
            ]
        );
    }

    use super::*;

    #[test]
    fn opening_never_panics_and_a_missing_driver_is_unavailable() {
        match CudaBackend::new() {
            Ok(b) => assert!(!b.device_name().is_empty()),
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, "cuda");
                if !driver_library_present() {
                    assert!(reason.contains("driver library"), "{reason}");
                }
            }
            Err(e) => panic!("a present driver failed: {e}"),
        }
        // The failure is cached, not retried into a different answer.
        assert_eq!(CudaBackend::new().is_ok(), CudaBackend::new().is_ok());
    }

    #[test]
    fn every_entry_resolves_to_one_module() {
        for (entry, _) in ptx::SIGNATURES {
            let holders = ptx::MODULES
                .iter()
                .filter(|m| m.entries.contains(&entry))
                .count();
            assert_eq!(holders, 1, "{entry} is in {holders} modules");
        }
        for entry in DYNAMIC_SMEM_ENTRIES {
            assert!(ptx::signature(entry).is_some(), "{entry} is never launched");
        }
    }

    #[test]
    fn probe_agrees_with_opening() {
        let (available, devices, note) = probe();
        assert_eq!(available, CudaBackend::new().is_ok(), "{note}");
        assert!(available || !note.is_empty());
        assert!(!available || !devices.is_empty());
    }

    #[test]
    fn padding_rows_keeps_values_and_adds_zeros() {
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            padded(&data, 3, 4).as_ref(),
            &[1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]
        );
        assert!(matches!(padded(&data, 2, 2), Cow::Borrowed(_)));
        assert!(as_u32("n", usize::MAX).is_err());
        assert_eq!(as_u32("n", 7).unwrap(), 7);
    }

    /// The wgmma kernel takes its stage count from the dynamic shared memory it is launched
    /// with: three stages from 99,328 bytes. The host's sizes must be the ones it tests for
    /// (two stages, 66,560 bytes, below the threshold) and its norms must sit after them.
    #[test]
    fn wgmma_stage_sizes_match_the_kernel() {
        let src = ptx::COSINE_COST_SM90A_MODULE.source;
        let three = WgmmaStages::Three.shared_bytes();
        assert_eq!((WgmmaStages::Two.shared_bytes(), three), (66_560, 99_328));
        assert!(src.contains(&format!("setp.ge.u32     p3, t, {three};")));
        let (after2, after3) = (2 * WGMMA_STAGE, 3 * WGMMA_STAGE);
        let norms = format!("    mov.u32         t, {after2};\n    @p3 mov.u32     t, {after3};\n");
        assert!(src.contains(&norms), "norms after the stages: {norms}");
    }

    #[test]
    fn auto_takes_wgmma_only_on_hopper_for_problems_that_fill_the_gpu() {
        let h200 = ((9, 0), 132);
        // The two measured problems: 64 pairs of 128 x 128 (0.5 tiles per SM) stay on the
        // 64 x 64 kernel, 512 pairs (3.9 per SM) take wgmma.
        assert!(!wants_wgmma(h200.0, h200.1, (64, 128, 128), true));
        assert!(wants_wgmma(h200.0, h200.1, (512, 128, 128), true));
        // The threshold: two tiles per SM; a 129-row pair is four tiles.
        assert!(!wants_wgmma(h200.0, h200.1, (263, 128, 128), true));
        assert!(wants_wgmma(h200.0, h200.1, (264, 128, 128), true));
        assert!(wants_wgmma(h200.0, h200.1, (66, 129, 129), true));
        // Never on Ampere or Blackwell, nor where the 32-bit offsets do not reach.
        assert!(!wants_wgmma((8, 0), 108, (4096, 128, 128), true));
        assert!(!wants_wgmma((10, 0), 148, (4096, 128, 128), true));
        assert!(!wants_wgmma(h200.0, h200.1, (4096, 128, 128), false));
        // Large counts saturate instead of overflowing.
        assert!(wants_wgmma(h200.0, h200.1, (usize::MAX, 128, 128), true));
    }

    #[test]
    fn cost_kernel_names_parse_and_bad_ones_say_what_is_expected() {
        for k in CostKernel::ALL {
            assert_eq!(k.name().parse::<CostKernel>().unwrap(), k);
        }
        assert_eq!(CostKernel::default(), CostKernel::Auto);
        for t in FusedThreads::ALL {
            assert_eq!(t.name().parse::<FusedThreads>().unwrap(), t);
        }
        let auto = FusedThreads::default();
        assert_eq!(auto, FusedThreads::Auto);
        assert_eq!(
            [(128, 128), (65, 3), (64, 64), (1, 1)].map(|(n, m)| auto.block(n, m)),
            [512, 512, 256, 256]
        );
        assert_eq!(FusedThreads::Threads256.block(128, 128), 256);
        assert_eq!(FusedThreads::Threads512.block(1, 1), 512);
        for s in SinkhornSplit::ALL {
            assert_eq!(s.name().parse::<SinkhornSplit>().unwrap(), s);
        }
        assert_eq!(SinkhornSplit::default(), SinkhornSplit::On);
        let e = "yes".parse::<SinkhornSplit>().unwrap_err().to_string();
        assert!(
            e.contains(SINKHORN_SPLIT_ENV) && e.contains("on or off") && e.contains("yes"),
            "{e}"
        );
        for s in Staging::ALL {
            assert_eq!(s.name().parse::<Staging>().unwrap(), s);
        }
        for r in MaxsimRoute::ALL {
            assert_eq!(r.name().parse::<MaxsimRoute>().unwrap(), r);
        }
        assert_eq!(MaxsimRoute::default(), MaxsimRoute::Tiled);
        let e = "fast".parse::<MaxsimRoute>().unwrap_err().to_string();
        assert!(
            e.contains(MAXSIM_ENV) && e.contains("tiled or direct") && e.contains("fast"),
            "{e}"
        );
        assert_eq!(Staging::default(), Staging::Pinned);
        let e = "locked".parse::<Staging>().unwrap_err().to_string();
        assert!(
            e.contains(STAGING_ENV) && e.contains("pinned or pageable") && e.contains("locked"),
            "{e}"
        );
        let e = "384".parse::<FusedThreads>().unwrap_err().to_string();
        assert!(
            e.contains(FUSED_THREADS_ENV) && e.contains("auto, 512 or 256") && e.contains("384"),
            "{e}"
        );
        let e = "tf32".parse::<CostKernel>().unwrap_err().to_string();
        assert!(
            e.contains("OPTICAL_CUDA_COST_KERNEL")
                && e.contains("auto, tf32x3, fp32, tf32x3w, wgmma or wgmma-rs")
                && e.contains("tf32"),
            "{e}"
        );
    }
}
