//! WGPU backend: the WGSL kernels of `shaders/` run through wgpu on Vulkan, Metal or DX12
//! (Mesa's lavapipe in CI).
//!
//! | op                    | shader                          | CPU twin                       |
//! |-----------------------|---------------------------------|--------------------------------|
//! | cosine cost           | `shaders/cosine_cost.wgsl`      | `CpuReference::cosine_cost`    |
//! | MaxSim                | `shaders/maxsim.wgsl`           | `CpuReference::maxsim`         |
//! | Sinkhorn primitives   | `shaders/sinkhorn.wgsl`         | `impl SinkhornKernels`         |
//! | stopping rule         | `shaders/sinkhorn_retire.wgsl`  | the check in `ot::sinkhorn::solve` |
//! | fused cost + Sinkhorn | `shaders/fused_sinkhorn.wgsl` (tile and register-blocked kernels) | `Backend::sinkhorn_embeddings` |
//! | blocked LSE passes    | `shaders/blocked_lse.wgsl` (appended to both Sinkhorn modules) | — |
//! | exp2 throughput probe | `shaders/peak.wgsl`             | `CpuFast::exp2_peak`           |
//!
//! Everything runs in `f32` on the device; plans, potentials and costs come back as `f64`
//! like every backend's. Batches larger than one storage binding (or than 65,535
//! workgroups) are cut into chunks; one item that alone exceeds a binding is an error.
//!
//! Sinkhorn kernels ([`SinkhornKernel`], `$OPTICAL_WGPU_SINKHORN`): by default a dispatch whose
//! pairs all have at most [`BLOCKED_MAX_LEN`] (128) support rows and columns runs a
//! register-blocked kernel (K in registers, 8 × 8 per invocation of a 16 × 16 grid, 25 KiB of
//! workgroup memory whatever the pair); `rows` (and larger pairs) take the kernels that give
//! one invocation a whole row (under `blocked` on GPU adapters, pairs whose K does not fit
//! the tile take split half-iterations instead: a pair over many workgroups, one dispatch
//! per half-iteration). Pairs with more than 512 rows or columns always take the split.
//!
//! Fused path rule ([`Wgpu::fused_kernel_for`]): [`Wgpu::sinkhorn_embeddings`] runs the
//! register-blocked fused kernel when it takes every pair, else the tile kernel when every
//! pair's support fits its on-chip tile, `len_x · (len_y | 1) ≤ tile_capacity()` (sized from
//! the device's workgroup memory); otherwise it computes the cost with the cosine kernel and
//! runs the materialised Sinkhorn (the blocked iterations where they apply, else the
//! iterations that keep K in the tile or stream it from global memory).
//!
//! Log-sum-exps of the blocked kernels ([`BlockedLse`], `$OPTICAL_WGPU_LSE`): `max` (the
//! default) shifts each line's terms by their maximum and merges (max, sum) pairs; `shifted`
//! shifts them by the line's current potential, as the CPU fast path and the PTX passes do
//! (an eighth fewer `exp2`, no maxima), falling back to `max` for a half-iteration whose sums
//! leave their safe range. Same results to f32 rounding; the default changes when a GPU has
//! timed both (`scripts/gpu-check.sh`, step `bench-wgpu-shifted`).
//!
//! Checks ([`SolverChecks`], `$OPTICAL_WGPU_CHECKS`): on GPU adapters by default the
//! solver's stopping rule runs on the device after each check, so a solve reads back after
//! 1, 2, 4, … up to 32 check intervals instead of after every one; on CPU adapters
//! (lavapipe), and with `host`, every check reads back.
//!
//! Subgroup operations are not used: every kernel is the portable path (workgroup memory and
//! barriers only). `optical info` reports whether an adapter has them (`Features::SUBGROUP`),
//! so a subgroup variant can be added behind that check.

mod context;
mod kernels;
mod sinkhorn;

use std::sync::Arc;

pub(crate) use context::caps_loop_passes;
pub use context::{
    adapters, choose_adapter, describe_adapter, BlockedLse, CostTiling, MaxsimTiling,
    SinkhornKernel, SolverChecks, WgpuContext, ADAPTER_ENV, BLOCKED_LSE_ENV, BLOCKED_MAX_LEN,
    COST_TILING_ENV, MAXSIM_TILING_ENV, SHADERS, SINKHORN_KERNEL_ENV, SOLVER_CHECKS_ENV,
};
pub use sinkhorn::WgpuSinkhornState;

use crate::error::Result;
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs, SinkhornParams};
use crate::ot::sinkhorn::SinkhornOutput;

/// The WGPU backend (`--backend wgpu`). Cheap to clone: clones share one device context.
#[derive(Clone)]
pub struct Wgpu {
    ctx: Arc<WgpuContext>,
}

impl Wgpu {
    /// Open the preferred adapter (`$OPTICAL_WGPU_ADAPTER` picks one by name).
    pub fn new() -> Result<Wgpu> {
        Ok(Wgpu::with_context(Arc::new(WgpuContext::new()?)))
    }

    /// Run on an existing context (tests and benches share one).
    pub fn with_context(ctx: Arc<WgpuContext>) -> Wgpu {
        Wgpu { ctx }
    }

    pub fn context(&self) -> &Arc<WgpuContext> {
        &self.ctx
    }

    /// Pairwise cosine cost (same contract as [`crate::backend::CpuReference::cosine_cost`]).
    pub fn cosine_cost(&self, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
        kernels::cosine_cost(&self.ctx, x, y)
    }

    /// MaxSim scores (same contract as [`crate::backend::CpuReference::maxsim`]).
    pub fn maxsim(&self, queries: &Embeddings, docs: &PackedDocs) -> Result<Vec<f32>> {
        kernels::maxsim(&self.ctx, queries, docs)
    }

    /// The exp2 throughput probe (`shaders/peak.wgsl`; see [`crate::backend::peak`]).
    pub fn exp2_peak(&self, min_exps: u64) -> Result<crate::backend::Exp2Peak> {
        kernels::exp2_peak(&self.ctx, min_exps)
    }

    /// Entropic OT between embedding sets with the fused kernel when the pairs fit on-chip
    /// (see the module docs for the rule); `None` when they do not, and the caller takes
    /// the materialised path ([`crate::backend::Backend::sinkhorn_embeddings`] does both).
    /// The inputs and the solution are checked as that method checks them.
    pub fn sinkhorn_embeddings(
        &self,
        x: &Embeddings,
        y: &Embeddings,
        params: &SinkhornParams,
    ) -> Result<Option<SinkhornOutput>> {
        crate::backend::cpu::check_embeddings_solve(x, y, params)?;
        let out = kernels::fused_sinkhorn(&self.ctx, x, y, params)?;
        if let Some(out) = &out {
            out.check_finite(params.epsilon)?;
        }
        Ok(out)
    }

    /// The fused kernel that [`Wgpu::sinkhorn_embeddings`] runs for this batch, or `None`
    /// when it takes the materialised path.
    pub fn fused_kernel_for(&self, x: &Embeddings, y: &Embeddings) -> Option<SinkhornKernel> {
        kernels::fused_kernel_for(&self.ctx, x, y)
    }
}
