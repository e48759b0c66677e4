//! CUDA backend: the hand-written PTX of `kernels/` run through the CUDA driver.
//!
//! The PTX text is embedded in the binary ([`ptx`]) and JIT-compiled by the driver for the
//! GPU it finds (the files target `sm_80`, so Ampere, Ada and Hopper all load them), one
//! module at a time when a launch first needs one of its kernels, then kept for the
//! process (`optical info` compiles them all and reports how long each took).
//! cudarc loads the driver library at run time, so neither building nor running needs a
//! CUDA toolkit; without a driver or a device the backend reports
//! [`crate::Error::BackendUnavailable`]. The driver library is probed before cudarc is
//! called, because cudarc's loader panics when the library is missing.
//!
//! | kernel family | entry points | file |
//! |---|---|---|
//! | cosine cost | `row_inv_norm_f32`, `cosine_cost_f32`, `cosine_cost_tf32x3_f32` or `cosine_cost_tf32x3w_f32` ([`CostKernel`], `$OPTICAL_CUDA_COST_KERNEL`) | `kernels/cosine_cost.ptx` |
//! | cosine cost on Hopper's wgmma | `cosine_cost_wgmma_f32` or `cosine_cost_wgmma_rs_f32` (x from registers) (compute capability 9.0 only) | `kernels/cosine_cost_sm90a.ptx` |
//! | MaxSim | a cost kernel + `maxsim_reduce_f32`, or `maxsim_f32` (+ `row_inv_norm_f32`) ([`MaxsimRoute`], `$OPTICAL_CUDA_MAXSIM`) | `kernels/maxsim.ptx` |
//! | Sinkhorn | `sinkhorn_iterate_f32`; `sinkhorn_half_split_f32` and `sinkhorn_split_error_f32` ([`SinkhornSplit`], `$OPTICAL_CUDA_SINKHORN_SPLIT`); the stopping rule `sinkhorn_retire_f32` ([`SolverChecks`], `$OPTICAL_CUDA_CHECKS`) | `kernels/sinkhorn.ptx` |
//! | cost + Sinkhorn | `sinkhorn_fused_f32` (which also continues solves from a cost under [`SinkhornLse::Scaled`], `$OPTICAL_CUDA_LSE=scaled`, in place of `sinkhorn_iterate_f32`) | `kernels/sinkhorn_fused.ptx` |
//!
//! The Sinkhorn kernels work in the base-2 log units of the CPU fast path
//! ([`crate::backend::cpu::fast`]): the host gathers each pair's support, shifts the cost
//! by its row and column minima and scales it by `−log2(e)/ε`; one CTA per pair then runs
//! all the iterations of a solver chunk with the scaled cost resident in shared memory when
//! it fits, and writes the pair's marginal error, so a chunk costs one launch and the check
//! reads back `b` floats. Pairs whose scaled cost does not fit in shared memory run each
//! half-iteration as its own launch instead, a warp per row (or column), so that a few large
//! pairs still spread over the whole GPU.
//!
//! Copies of 1 MiB or more between host and device go through two page-locked staging
//! buffers, pipelined with the DMA engine ([`Staging`], `$OPTICAL_CUDA_STAGING`).

pub mod ptx;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod sinkhorn;
#[cfg(feature = "cuda")]
mod staging;

#[cfg(feature = "cuda")]
pub use device::{
    probe, usable_device_count, CostKernel, CudaBackend, FusedCost, FusedThreads, MaxsimRoute,
    SinkhornLse, SinkhornSplit, SolverChecks, Staging, WgmmaStages, COST_KERNEL_ENV,
    FUSED_COST_ENV, FUSED_THREADS_ENV, LSE_ENV, MAXSIM_ENV, SINKHORN_SPLIT_ENV, SOLVER_CHECKS_ENV,
    STAGING_ENV, WGMMA_STAGES_ENV,
};
