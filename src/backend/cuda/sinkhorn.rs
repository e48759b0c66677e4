//! Sinkhorn on the GPU: [`SinkhornKernels`] over `sinkhorn_iterate_f32`, and the fused
//! cost + Sinkhorn path over `sinkhorn_fused_f32`.
//!
//! The host prepares what the CPU fast path prepares (see [`crate::backend::cpu::fast`]):
//! each pair's support packed to the top-left of its `(n, m)` block, the cost shifted by its
//! row minima α and column minima β and scaled to `K = −C'·log2(e)/ε`, and `log2` of the
//! weights. One launch runs a whole solver chunk (`check_every` iterations) for every active
//! pair and leaves each pair's marginal error on the device; the check reads back `b`
//! floats. `finish` reads the potentials back and forms the plan in `f64` on the host.

use std::cell::RefCell;

use cudarc::driver::{CudaSlice, LaunchConfig};
use rayon::prelude::*;

use super::device::{
    as_u32, grid_x, lengths_u32, padded, CostKernel, CudaBackend, FusedCost, SinkhornLse,
    SinkhornSplit, SolverChecks, BACKEND, SINKHORN_SPLIT_ENV,
};
use super::ptx;
use crate::backend::cpu::check_pair_batch;
use crate::error::{Error, Result};
use crate::ot::problem::{Embeddings, Problem, SinkhornParams};
use crate::ot::scaled::{self, ScaledPair, Support};
use crate::ot::sinkhorn::{
    self, Checked, CheckedRounds, SinkhornKernels, SinkhornOutput, Solution,
};

use crate::ot::scaled::LOG2E;

/// Shared memory of `sinkhorn_iterate_f32` (see the header of `kernels/sinkhorn.ptx`): its
/// vectors are padded to multiples of 4 floats (16-byte aligned for vector loads).
fn iterate_smem(n: usize, m: usize, k_in_smem: bool) -> usize {
    let (n4, m4) = (n.next_multiple_of(4), m.next_multiple_of(4));
    128 + 12 * n4 + 12 * m4 + if k_in_smem { 4 * n * (m | 1) } else { 0 }
}

/// What `sinkhorn_iterate_f32` needs beyond [`iterate_smem`] for the absorbed log-sum-exps
/// (lse_mode 1, K on chip only): c[n], d[m] and 32 fallback flags after K.
fn iterate_absorbed_smem(n: usize, m: usize) -> usize {
    4 * n + 4 * m + 128
}

/// Shared memory of `sinkhorn_fused_f32` (see the header of `kernels/sinkhorn_fused.ptx`):
/// the staging area of its cost phase doubles on the tensor cores (tf32 halves), is two
/// 20,480-byte buffers with producer warps (cost_mode 2) and none when the cost is given
/// (cost_mode 3); its vectors are padded to multiples of 4 floats (16-byte aligned for
/// vector loads). The absorbed log-sum-exps (lse_mode 1) keep two more vectors after K; the
/// scaled passes (lse_mode 2) four, from the next multiple of 16 bytes after K.
fn fused_smem(n: usize, m: usize, cost_mode: u32, lse: SinkhornLse) -> usize {
    let stage = match cost_mode {
        0 => 18432,
        1 => 36864,
        2 => 40960,
        _ => 0,
    };
    let (n4, m4) = (n.next_multiple_of(4), m.next_multiple_of(4));
    let k = 4 * n * (m | 1);
    let after_k = match lse {
        SinkhornLse::Shifted => 0,
        SinkhornLse::Absorbed => 4 * n4 + 4 * m4,
        SinkhornLse::Scaled => k.next_multiple_of(16) - k + 8 * n4 + 8 * m4,
    };
    stage + 128 + 12 * n4 + 12 * m4 + k + after_k
}

/// The shared memory of a solve's chunk on `sinkhorn_fused_f32` continuing from K
/// (cost_mode 4) in place of `sinkhorn_iterate_f32`, or `None` for the iterate kernel: the
/// scaled passes, which only the fused kernel has, for pairs with K on chip whose vectors
/// fit the device's opt-in limit (the others run the iterate kernel, shifted).
fn continue_smem(
    lse: SinkhornLse,
    n: usize,
    m: usize,
    k_in_smem: bool,
    smem_optin: usize,
) -> Option<usize> {
    let smem = fused_smem(n, m, 4, SinkhornLse::Scaled);
    (lse == SinkhornLse::Scaled && k_in_smem && smem <= smem_optin).then_some(smem)
}

/// The `lse_mode` argument of `sinkhorn_fused_f32` and `sinkhorn_iterate_f32`.
fn lse_mode_arg(lse: SinkhornLse) -> u32 {
    match lse {
        SinkhornLse::Shifted => 0,
        SinkhornLse::Absorbed => 1,
        SinkhornLse::Scaled => 2,
    }
}

/// The `cost_mode` of a fused launch of `block` threads for pairs of `n × m`: the cost given
/// (3) when the standalone cost kernel was asked for; the producer-warp phase (2) where it
/// was asked for, the block has 512 threads, the cost phase is on the tensor cores and its
/// larger staging fits `smem_optin`; else the cost kernel's own mode.
fn fused_launch_mode(
    (cost, phase, lse): (CostKernel, FusedCost, SinkhornLse),
    block: u32,
    (n, m): (usize, usize),
    smem_optin: usize,
) -> u32 {
    match fused_cost_mode(cost, phase) {
        1 if block == 512
            && phase == FusedCost::Pipelined
            && fused_smem(n, m, 2, lse) <= smem_optin =>
        {
            2
        }
        mode => mode,
    }
}

/// The `cost_mode` argument of `sinkhorn_fused_f32` before the launch's shape is known: the
/// cost given (3) when asked for, else the cost kernel's own mode (the launch may upgrade 1
/// to the producer-warp phase, 2, which needs more shared memory).
fn fused_cost_mode(cost: CostKernel, phase: FusedCost) -> u32 {
    if phase == FusedCost::Standalone {
        return 3;
    }
    match cost {
        CostKernel::Fp32 => 0,
        CostKernel::Auto
        | CostKernel::Tf32x3
        | CostKernel::Tf32x3Wide
        | CostKernel::Wgmma
        | CostKernel::WgmmaRs => 1,
    }
}

/// Threads per CTA of the iterate kernel, rounded up to whole warps, 1 to 32 warps: four
/// per row (row pass) and per column (column pass) when K is on chip, where the kernel
/// gives each row to four lanes; one per row and column when it streams K from global
/// memory.
fn iterate_block(n: usize, m: usize, k_in_smem: bool) -> u32 {
    let per_line = if k_in_smem { 4 } else { 1 };
    ((per_line * n.max(m)).div_ceil(32).clamp(1, 32) * 32) as u32
}

/// A batch on the device.
pub struct CudaSinkhornState {
    epsilon: f64,
    pairs: usize,
    n: usize,
    m: usize,
    host: Vec<Support>,
    k: CudaSlice<f32>,
    kt: CudaSlice<f32>,
    log2a: CudaSlice<f32>,
    log2b: CudaSlice<f32>,
    f: CudaSlice<f32>,
    g: CudaSlice<f32>,
    rows: CudaSlice<u32>,
    cols: CudaSlice<u32>,
    active: CudaSlice<u32>,
    err: CudaSlice<f32>,
    /// Each row's share of the marginal error, `(pairs, n)`, for the split check (one
    /// element without the split).
    terms: CudaSlice<f32>,
    k_in_smem: bool,
    /// K stays in global memory and [`SinkhornSplit::On`]: the iterations and checks run
    /// as split half-iterations (decided, and the size checked, by `prepare`).
    split: bool,
    /// `(checks, error bits, stop, 0)` per pair, written by `sinkhorn_retire_f32`.
    status: CudaSlice<u32>,
    /// `err` holds the error of the current iterate of every pair that was ever active.
    errors_current: bool,
    /// Iterations the fused launch already ran for the solver's first chunk.
    fused_ahead: usize,
}

/// Pack pair `p` in the scaled form of [`crate::ot::scaled`] into its slots of the padded
/// batch buffers (`K` with row stride `m`); returns its support and its initial `G` (g = 0).
fn pack_pair(
    problem: &Problem,
    p: usize,
    epsilon: f64,
    k: &mut [f32],
    log2a: &mut [f32],
    log2b: &mut [f32],
) -> (Support, Vec<f32>) {
    let m = problem.m;
    let scaled = ScaledPair::new(problem, p, epsilon);
    let nc = scaled.support.cols.len();
    for (ci, row) in scaled.k.chunks_exact(nc).enumerate() {
        k[ci * m..ci * m + nc].copy_from_slice(row);
    }
    log2a[..scaled.log2_a.len()].copy_from_slice(&scaled.log2_a);
    log2b[..nc].copy_from_slice(&scaled.log2_b);
    let g0 = scaled.initial_g(epsilon);
    (scaled.support, g0)
}

/// Lines (rows or columns) per CTA of `sinkhorn_half_split_f32`: a warp each, 8 warps.
const SPLIT_LINES_PER_CTA: usize = 8;

/// Whether the split kernels' grid (`ceil(lines / 8)` CTAs along y, at most 65,535) covers
/// `n` rows and `m` columns.
fn split_fits(n: usize, m: usize) -> Result<()> {
    let most = 65535 * SPLIT_LINES_PER_CTA;
    if n.max(m) > most {
        return Err(Error::parameter(
            "n, m",
            format!("at most {most} rows and columns per pair"),
            format!("n = {n}, m = {m}"),
        ));
    }
    Ok(())
}

impl CudaBackend {
    /// `iterations` iterations of every active pair, then every active pair's marginal
    /// error in `err`: one launch of `sinkhorn_iterate_f32`, or, for pairs whose K stays in
    /// global memory and with [`SinkhornSplit::On`], two launches of
    /// `sinkhorn_half_split_f32` per iteration, one more for the error terms and
    /// `sinkhorn_split_error_f32` for their sums. All on the stream, with no host
    /// synchronisation.
    fn launch_iterate(&self, st: &mut CudaSinkhornState, iterations: usize) -> Result<()> {
        if st.split {
            for _ in 0..iterations {
                self.launch_half(st, false, 0)?;
                self.launch_half(st, true, 0)?;
            }
            self.launch_half(st, false, 1)?;
            self.launch_split_error(st)?;
            st.errors_current = true;
            return Ok(());
        }
        self.launch_iterate_kernel(st, iterations)
    }

    /// Each active pair's error from the terms of the last mode-1 half launch.
    fn launch_split_error(&self, st: &mut CudaSinkhornState) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (grid_x("pairs", st.pairs)?, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = as_u32("n", st.n)?;
        let mut l = self.launch(ptx::SINKHORN_SPLIT_ERROR)?;
        l.buf(&st.terms)
            .buf(&st.rows)
            .buf(&st.active)
            .buf_mut(&mut st.err)
            .u32(&n);
        // SAFETY: terms holds pairs*n floats (allocated by `prepare` for split states, the
        // only ones that launch this), rows and active pairs entries with
        // rows[p] <= n, err pairs floats; block 32 = the kernel's .maxntid, no shared memory.
        unsafe { l.launch(cfg) }
    }

    /// One launch of `sinkhorn_half_split_f32` over every active pair, a warp per line: the
    /// row update (or with `columns` the column update) in mode 0, each row's error term in
    /// mode 1.
    fn launch_half(&self, st: &mut CudaSinkhornState, columns: bool, mode: u32) -> Result<()> {
        debug_assert!(
            !(columns && mode == 1),
            "terms has n entries per pair: rows only"
        );
        let (own, other) = if columns { (st.m, st.n) } else { (st.n, st.m) };
        let cfg = LaunchConfig {
            grid_dim: (
                grid_x("pairs", st.pairs)?,
                own.div_ceil(SPLIT_LINES_PER_CTA) as u32,
                1,
            ),
            block_dim: (32 * SPLIT_LINES_PER_CTA as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (own_u, other_u) = (as_u32("n", own)?, as_u32("m", other)?);
        let mut l = self.launch(ptx::SINKHORN_HALF_SPLIT)?;
        if columns {
            l.buf(&st.kt)
                .buf(&st.f)
                .buf(&st.log2a)
                .buf_mut(&mut st.g)
                .buf(&st.log2b)
                .buf_mut(&mut st.terms)
                .buf(&st.cols)
                .buf(&st.rows);
        } else {
            l.buf(&st.k)
                .buf(&st.g)
                .buf(&st.log2b)
                .buf_mut(&mut st.f)
                .buf(&st.log2a)
                .buf_mut(&mut st.terms)
                .buf(&st.rows)
                .buf(&st.cols);
        }
        l.buf(&st.active).u32(&own_u).u32(&other_u).u32(&mode);
        // SAFETY: with k_in_smem == 0, k holds pairs*n*m floats and kt pairs*m*n (uploaded by
        // `prepare`); f, log2a and terms pairs*n, g and log2b pairs*m; rows, cols and active
        // pairs entries with rows[p] <= n and cols[p] <= m. The kernel reads kmat[p] rows
        // below own_len[p] up to other_len[p] columns and writes own[p][i] (mode 0) or
        // terms[p][i] (mode 1, rows only: terms has n per pair) for i < own_len[p];
        // grid.y = ceil(own / 8) <= 65535 (split_fits, checked by `prepare` for this state's
        // n and m), block 256 = the kernel's .maxntid, no shared memory.
        unsafe { l.launch(cfg) }
    }

    fn launch_iterate_kernel(&self, st: &mut CudaSinkhornState, iterations: usize) -> Result<()> {
        if let Some(smem) = continue_smem(self.lse(), st.n, st.m, st.k_in_smem, self.dev.smem_optin)
        {
            return self.launch_fused_continue(st, iterations, smem);
        }
        let shifted = iterate_smem(st.n, st.m, st.k_in_smem);
        // lse_mode applies to K on chip only; the scaled passes were taken above where they
        // fit (else this kernel runs shifted).
        let wanted = match self.lse() {
            SinkhornLse::Absorbed if st.k_in_smem => SinkhornLse::Absorbed,
            _ => SinkhornLse::Shifted,
        };
        let (lse, smem) = self.lse_that_fits(wanted, |lse| match lse {
            SinkhornLse::Absorbed => shifted + iterate_absorbed_smem(st.n, st.m),
            SinkhornLse::Shifted | SinkhornLse::Scaled => shifted,
        });
        let lse_mode = lse_mode_arg(lse);
        let cfg = LaunchConfig {
            grid_dim: (grid_x("pairs", st.pairs)?, 1, 1),
            block_dim: (iterate_block(st.n, st.m, st.k_in_smem), 1, 1),
            shared_mem_bytes: as_u32("shared memory", smem)?,
        };
        let (n, m) = (as_u32("n", st.n)?, as_u32("m", st.m)?);
        let (iters, ksm) = (as_u32("iterations", iterations)?, st.k_in_smem as u32);
        let mut l = self.launch(ptx::SINKHORN_ITERATE)?;
        l.buf(&st.k)
            .buf(&st.kt)
            .buf(&st.log2a)
            .buf(&st.log2b)
            .buf_mut(&mut st.f)
            .buf_mut(&mut st.g)
            .buf(&st.rows)
            .buf(&st.cols)
            .buf(&st.active)
            .buf_mut(&mut st.err)
            .u32(&n)
            .u32(&m)
            .u32(&iters)
            .u32(&ksm)
            .u32(&lse_mode);
        // SAFETY: k holds pairs*n*m floats, kt pairs*m*n when k_in_smem == 0 (else it is not
        // read), log2a and f pairs*n, log2b and g pairs*m, rows/cols/active/err pairs entries,
        // with rows[p] <= n and cols[p] <= m (supports of a validated Problem); the dynamic
        // shared memory is exactly the header's size for (n, m, k_in_smem, lse_mode), checked
        // against the device's opt-in limit in `prepare` (and above for lse_mode 1, which is
        // only passed with K on chip).
        unsafe { l.launch(cfg) }?;
        st.errors_current = true;
        Ok(())
    }

    /// `iterations` iterations of the scaled passes continuing the state's solve, then each
    /// active pair's error: `sinkhorn_fused_f32` in cost_mode 4, which loads F and G, builds
    /// its matrix from K in `k` and otherwise leaves pairs, supports and outputs as
    /// `sinkhorn_iterate_f32` does (inactive pairs untouched).
    fn launch_fused_continue(
        &self,
        st: &mut CudaSinkhornState,
        iterations: usize,
        smem: usize,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (grid_x("pairs", st.pairs)?, 1, 1),
            block_dim: (self.fused_threads().block(st.n, st.m), 1, 1),
            shared_mem_bytes: as_u32("shared memory", smem)?,
        };
        let (n, m) = (as_u32("n", st.n)?, as_u32("m", st.m)?);
        let iters = as_u32("iterations", iterations)?;
        // dp and kscale are not read with cost_mode 4, nor are x, y and cost (k stands in).
        let (dp, kscale, cost_mode) = (4u32, 1.0f32, 4u32);
        let lse_mode = lse_mode_arg(SinkhornLse::Scaled);
        let mut l = self.launch(ptx::SINKHORN_FUSED)?;
        l.buf(&st.k)
            .buf(&st.k)
            .buf(&st.rows)
            .buf(&st.cols)
            .buf(&st.log2a)
            .buf(&st.log2b)
            .buf(&st.k)
            .buf(&st.k)
            .buf_mut(&mut st.f)
            .buf_mut(&mut st.g)
            .buf_mut(&mut st.err)
            .u32(&n)
            .u32(&m)
            .u32(&dp)
            .u32(&iters)
            .f32(&kscale)
            .u32(&cost_mode)
            .u32(&lse_mode)
            .buf(&st.active);
        // SAFETY: with cost_mode 4 the kernel reads k (pairs*n*m floats, uploaded by
        // `prepare`), rows, cols and active (pairs u32 each, rows[p] <= n and cols[p] <= m:
        // supports of a validated Problem, at least 1 for active pairs), log2a and f
        // (pairs*n), log2b and g (pairs*m), writes f, g and err (pairs) of active pairs only,
        // and never touches x, y or cost; the block is 256 or 512 threads (the kernel's
        // .maxntid 512), and the dynamic shared memory is the header's size for (n, m),
        // cost_mode 4 and lse_mode 2, checked against the device's opt-in limit by the caller.
        unsafe { l.launch(cfg) }?;
        st.errors_current = true;
        Ok(())
    }

    /// The stopping rule after a check, on the device: every active pair counts the check,
    /// keeps its error in `status`, and is made inactive when it converged or its error is
    /// not finite.
    fn launch_retire(&self, st: &mut CudaSinkhornState, threshold_bits: u32) -> Result<()> {
        let pairs = as_u32("pairs", st.pairs)?;
        let cfg = LaunchConfig {
            grid_dim: (pairs.div_ceil(256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.launch(ptx::SINKHORN_RETIRE)?;
        l.buf_mut(&mut st.active)
            .buf(&st.err)
            .buf_mut(&mut st.status)
            .u32(&pairs)
            .u32(&threshold_bits);
        // SAFETY: active and err hold pairs entries, status 4 * pairs (allocated with the
        // state); the kernel touches entries below `pairs` only; block 256 = the kernel's
        // .maxntid, no shared memory.
        unsafe { l.launch(cfg) }
    }

    fn upload_active(&self, st: &mut CudaSinkhornState, active: &[bool]) -> Result<()> {
        if active.len() != st.pairs {
            return Err(Error::shape(
                "active",
                format!("({},) flags", st.pairs),
                format!("({},)", active.len()),
            ));
        }
        let mask: Vec<u32> = active.iter().map(|&a| a as u32).collect();
        self.dev
            .stream
            .memcpy_htod(&mask, &mut st.active)
            .map_err(super::device::driver("upload the active mask"))
    }

    /// Device time of `iterations` iterations of every pair from zero potentials.
    pub(super) fn time_sinkhorn(
        &self,
        problem: &Problem,
        epsilon: f64,
        iterations: usize,
        min_seconds: f64,
    ) -> Result<(f64, usize)> {
        let mut st = self.prepare(problem, epsilon)?;
        self.upload_active(&mut st, &vec![true; problem.pairs])?;
        let stream = self.dev.stream.clone();
        self.time_on_device(min_seconds, || {
            reset_potentials(&stream, &mut st)?;
            self.launch_iterate(&mut st, iterations)
        })
    }

    /// Device time of a checked solve of every pair from zero potentials (the solver's
    /// loop: chunks of `check_every` iterations, the stopping rule after each, until every
    /// pair stopped), from the prepared cost in device memory to the last check's
    /// read-back; the potentials are not read back.
    pub(super) fn time_sinkhorn_checked(
        &self,
        problem: &Problem,
        params: &SinkhornParams,
        min_seconds: f64,
    ) -> Result<(f64, usize)> {
        params.validate()?;
        let mut st = self.prepare(problem, params.epsilon)?;
        let stream = self.dev.stream.clone();
        self.time_on_device(min_seconds, || {
            reset_potentials(&stream, &mut st)?;
            sinkhorn::iterate_to_stop(self, &mut st, problem.pairs, params).map(drop)
        })
    }

    /// Upload embeddings and weights and run the fused kernel (cost + `iterations`).
    fn launch_fused(
        &self,
        x: &Embeddings,
        y: &Embeddings,
        epsilon: f64,
        iterations: usize,
    ) -> Result<FusedBuffers> {
        let (b, n, m, d) = (x.b, x.n, y.n, x.d);
        let dp = d.next_multiple_of(4);
        let uniform = |lengths: &[usize], width: usize| -> Vec<f32> {
            lengths
                .iter()
                .flat_map(|&len| {
                    let l2 = (1.0 / len as f64).log2() as f32;
                    (0..width).map(move |i| if i < len { l2 } else { 0.0 })
                })
                .collect()
        };
        let mut bufs = FusedBuffers {
            x: self.upload(&padded(&x.data, d, dp))?,
            y: self.upload(&padded(&y.data, d, dp))?,
            x_len: self.upload(&lengths_u32("x lengths", &x.lengths)?)?,
            y_len: self.upload(&lengths_u32("y lengths", &y.lengths)?)?,
            log2a: self.upload(&uniform(&x.lengths, n))?,
            log2b: self.upload(&uniform(&y.lengths, m))?,
            cost: self.zeros(b * n * m)?,
            k: self.zeros(b * n * m)?,
            f: self.zeros(b * n)?,
            g: self.zeros(b * m)?,
            err: self.zeros(b)?,
            dp,
        };
        self.run_fused(&mut bufs, (b, n, m), epsilon, iterations)?;
        Ok(bufs)
    }

    fn run_fused(
        &self,
        bufs: &mut FusedBuffers,
        (b, n, m): (usize, usize, usize),
        epsilon: f64,
        iterations: usize,
    ) -> Result<()> {
        let (block, cost_mode, lse, smem) = self.fused_shape(n, m);
        if cost_mode == 3 {
            // The cost first, on the same stream, into the buffer the fused kernel reads.
            self.cost_into(
                &bufs.x,
                &bufs.y.as_view(),
                &bufs.x_len,
                &bufs.y_len,
                (b, n, m, bufs.dp),
                &mut bufs.cost,
            )?;
        }
        let cfg = LaunchConfig {
            grid_dim: (grid_x("b", b)?, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: as_u32("shared memory", smem)?,
        };
        let (nu, mu, dpu) = (as_u32("n", n)?, as_u32("m", m)?, as_u32("d", bufs.dp)?);
        let iters = as_u32("iterations", iterations)?;
        let kscale = (-LOG2E / epsilon) as f32;
        let lse_mode = lse_mode_arg(lse);
        let mut l = self.launch(ptx::SINKHORN_FUSED)?;
        l.buf(&bufs.x)
            .buf(&bufs.y)
            .buf(&bufs.x_len)
            .buf(&bufs.y_len)
            .buf(&bufs.log2a)
            .buf(&bufs.log2b)
            .buf_mut(&mut bufs.cost)
            .buf_mut(&mut bufs.k)
            .buf_mut(&mut bufs.f)
            .buf_mut(&mut bufs.g)
            .buf_mut(&mut bufs.err)
            .u32(&nu)
            .u32(&mu)
            .u32(&dpu)
            .u32(&iters)
            .f32(&kscale)
            .u32(&cost_mode)
            .u32(&lse_mode)
            // active: read with cost_mode 4 only (x_len stands in)
            .buf(&bufs.x_len);
        // SAFETY: x holds b*n*dp floats and y b*m*dp (dp % 4 == 0, 16-byte aligned rows),
        // the lengths b u32 each within 1..=n / 1..=m, log2a and f b*n, log2b and g b*m,
        // cost and k b*n*m, err b; block = 256 or 512 threads (FusedThreads), the kernel's
        // .maxntid 512 and the cost phase's 256 named-barrier threads both hold (cost_mode 2
        // only with 512), and the dynamic shared memory is the header's size for (n, m),
        // this cost_mode and lse_mode (c and d after K with lse_mode 1; c, d, u and v from
        // the next 16 bytes after K with lse_mode 2), checked against the device's opt-in
        // limit by the caller (and by fused_shape for cost_mode 2 and lse_mode 1 and 2); the
        // scaled passes' rebuilds read k (b*n*m, written by this launch before them, ordered
        // by bar.sync); with cost_mode 3 the cost kernel queued before it on
        // this stream has written every entry of cost (b*n*m) that the kernel reads.
        unsafe { l.launch(cfg) }
    }

    /// Device time of the fused kernel (cost + `iterations` iterations) on uploaded inputs.
    pub(super) fn time_fused(
        &self,
        x: &Embeddings,
        y: &Embeddings,
        epsilon: f64,
        iterations: usize,
        min_seconds: f64,
    ) -> Result<(f64, usize)> {
        check_pair_batch(x, y)?;
        self.check_fused_fits(x.n, y.n)?;
        // The solve would take the materialised path here (see sinkhorn_embeddings); a
        // timing of the fused kernel cannot.
        if !((-LOG2E / epsilon) as f32).is_normal() {
            return Err(Error::parameter(
                "epsilon",
                "an ε whose −log2(e)/ε is a normal f32, for the fused kernel's device time",
                format!("{epsilon:e}"),
            ));
        }
        let mut bufs = self.launch_fused(x, y, epsilon, iterations)?;
        let dims = (x.b, x.n, y.n);
        self.time_on_device(min_seconds, || {
            self.run_fused(&mut bufs, dims, epsilon, iterations)
        })
    }

    /// Threads per CTA, `cost_mode`, log-sum-exps and dynamic shared memory of the fused
    /// launch for pairs of `n × m`: the cost given (cost_mode 3) when asked for; the
    /// producer-warp cost phase (cost_mode 2) where it was asked for, the block has 512
    /// threads, the cost phase is on the tensor cores and its 4 KB more fit; else the cost
    /// kernel's own mode. The absorbed log-sum-exps where asked for and their vectors fit.
    fn fused_shape(&self, n: usize, m: usize) -> (u32, u32, SinkhornLse, usize) {
        let block = self.fused_threads().block(n, m);
        let mode = fused_launch_mode(
            (self.cost_kernel(), self.fused_cost(), self.lse()),
            block,
            (n, m),
            self.dev.smem_optin,
        );
        let (lse, smem) = self.lse_that_fits(self.lse(), |lse| fused_smem(n, m, mode, lse));
        (block, mode, lse, smem)
    }

    /// The log-sum-exps a launch takes, and its shared memory (`smem` of each): `wanted`
    /// where its vectors fit the device's opt-in limit, else the shifted ones (the same
    /// potentials to f32 rounding).
    fn lse_that_fits(
        &self,
        wanted: SinkhornLse,
        smem: impl Fn(SinkhornLse) -> usize,
    ) -> (SinkhornLse, usize) {
        let need = smem(wanted);
        if wanted != SinkhornLse::Shifted && need <= self.dev.smem_optin {
            (wanted, need)
        } else {
            (SinkhornLse::Shifted, smem(SinkhornLse::Shifted))
        }
    }

    fn check_fused_fits(&self, n: usize, m: usize) -> Result<()> {
        // The shifted size: where the absorbed vectors do not fit, the launch runs shifted.
        let need = fused_smem(
            n,
            m,
            fused_cost_mode(self.cost_kernel(), self.fused_cost()),
            SinkhornLse::Shifted,
        );
        if need > self.dev.smem_optin {
            return Err(Error::parameter(
                "n, m",
                format!(
                    "a cost tile that fits in {} B of shared memory",
                    self.dev.smem_optin
                ),
                format!("n = {n}, m = {m} ({need} B)"),
            ));
        }
        Ok(())
    }

    /// Entropic OT between embedding sets with the cost computed on chip. Falls back to the
    /// materialised path (cost kernel, then Sinkhorn from global memory) when a pair's cost
    /// does not fit in shared memory. Same result as the materialised path.
    pub fn sinkhorn_embeddings(
        &self,
        x: &Embeddings,
        y: &Embeddings,
        params: &SinkhornParams,
    ) -> Result<SinkhornOutput> {
        crate::backend::cpu::check_embeddings_solve(x, y, params)?;
        let (b, n, m) = (x.b, x.n, y.n);
        // The fused kernel scales the cost by −log2(e)/ε in f32: where that is not a normal
        // f32 (ε beyond about 1e38, or below about 4e-39), the materialised path, which
        // scales in f64.
        let kscale_normal = ((-LOG2E / params.epsilon) as f32).is_normal();
        if self.check_fused_fits(n, m).is_err() || !kscale_normal {
            let cost = self.cosine_cost(x, y)?;
            let problem = Problem::from_cost_and_lengths(&cost, &x.lengths, &y.lengths)?;
            return sinkhorn::solve(self, &problem, params);
        }
        // The solver's first chunk runs inside the fused launch.
        let first = params.check_every.min(params.max_iterations);
        let bufs = self.launch_fused(x, y, params.epsilon, first)?;
        let cost = crate::ot::problem::CostBatch {
            b,
            n,
            m,
            data: self.download(&bufs.cost)?,
        };
        let problem = Problem::from_cost_and_lengths(&cost, &x.lengths, &y.lengths)?;
        let host = (0..b)
            .map(|p| Support {
                rows: (0..x.lengths[p]).collect(),
                cols: (0..y.lengths[p]).collect(),
                alpha: vec![0.0; x.lengths[p]],
                beta: vec![0.0; y.lengths[p]],
            })
            .collect();
        let state = CudaSinkhornState {
            epsilon: params.epsilon,
            pairs: b,
            n,
            m,
            host,
            k: bufs.k,
            kt: self.zeros(1)?,
            log2a: bufs.log2a,
            log2b: bufs.log2b,
            f: bufs.f,
            g: bufs.g,
            rows: bufs.x_len,
            cols: bufs.y_len,
            active: self.zeros(b)?,
            err: bufs.err,
            terms: self.zeros(1)?,
            status: self.zeros(4 * b)?,
            k_in_smem: true,
            split: false,
            errors_current: true,
            fused_ahead: first,
        };
        let continued = Prepared {
            cuda: self,
            state: RefCell::new(Some(state)),
        };
        sinkhorn::solve(&continued, &problem, params)
    }
}

/// The device buffers of a fused solve.
struct FusedBuffers {
    x: CudaSlice<f32>,
    y: CudaSlice<f32>,
    x_len: CudaSlice<u32>,
    y_len: CudaSlice<u32>,
    log2a: CudaSlice<f32>,
    log2b: CudaSlice<f32>,
    cost: CudaSlice<f32>,
    k: CudaSlice<f32>,
    f: CudaSlice<f32>,
    g: CudaSlice<f32>,
    err: CudaSlice<f32>,
    dp: usize,
}

impl SinkhornKernels for CudaBackend {
    type State = CudaSinkhornState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<CudaSinkhornState> {
        let (pairs, n, m) = (problem.pairs, problem.n, problem.m);
        let k_in_smem = iterate_smem(n, m, true) <= self.dev.smem_optin;
        let split = !k_in_smem && self.split() == SinkhornSplit::On;
        if split {
            // The split kernels keep nothing in shared memory: any size whose lines fit the
            // grid (a warp per line, SPLIT_LINES_PER_CTA per CTA along grid.y).
            split_fits(n, m)?;
        } else if iterate_smem(n, m, false) > self.dev.smem_optin {
            return Err(Error::parameter(
                "n, m",
                format!(
                    "potentials that fit in {} B of shared memory (or \
                     {SINKHORN_SPLIT_ENV}=on, the default, for larger pairs)",
                    self.dev.smem_optin
                ),
                format!("n = {n}, m = {m}"),
            ));
        }
        let mut k = vec![0.0f32; pairs * n * m];
        let mut log2a = vec![0.0f32; pairs * n];
        let mut log2b = vec![0.0f32; pairs * m];
        let (host, g0): (Vec<Support>, Vec<Vec<f32>>) = k
            .par_chunks_mut(n * m)
            .zip(log2a.par_chunks_mut(n))
            .zip(log2b.par_chunks_mut(m))
            .enumerate()
            .map(|(p, ((k, la), lb))| pack_pair(problem, p, epsilon, k, la, lb))
            .unzip();
        let mut g = vec![0.0f32; pairs * m];
        for (dst, src) in g.chunks_mut(m).zip(&g0) {
            dst[..src.len()].copy_from_slice(src);
        }
        let kt = if k_in_smem {
            self.zeros(1)?
        } else {
            let mut kt = vec![0.0f32; pairs * m * n];
            kt.par_chunks_mut(m * n)
                .zip(k.par_chunks(n * m))
                .zip(&host)
                .for_each(|((kt, k), hp)| {
                    scaled::transpose_into(k, hp.rows.len(), hp.cols.len(), m, kt, n);
                });
            self.upload(&kt)?
        };
        let counts = |f: &dyn Fn(&Support) -> usize| -> Result<Vec<u32>> {
            lengths_u32("support", &host.iter().map(f).collect::<Vec<_>>())
        };
        Ok(CudaSinkhornState {
            epsilon,
            pairs,
            n,
            m,
            rows: self.upload(&counts(&|h| h.rows.len())?)?,
            cols: self.upload(&counts(&|h| h.cols.len())?)?,
            k: self.upload(&k)?,
            kt,
            log2a: self.upload(&log2a)?,
            log2b: self.upload(&log2b)?,
            f: self.zeros(pairs * n)?,
            g: self.upload(&g)?,
            active: self.zeros(pairs)?,
            err: self.zeros(pairs)?,
            terms: self.zeros(if split { pairs * n } else { 1 })?,
            status: self.zeros(4 * pairs)?,
            host,
            k_in_smem,
            split,
            errors_current: false,
            fused_ahead: 0,
        })
    }

    fn iterate(
        &self,
        state: &mut CudaSinkhornState,
        active: &[bool],
        iterations: usize,
    ) -> Result<()> {
        if state.fused_ahead > 0 {
            if state.fused_ahead != iterations {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "sinkhorn iterate",
                    what: format!(
                        "the fused launch ran {} iterations, the solver asked for {iterations}",
                        state.fused_ahead
                    ),
                });
            }
            state.fused_ahead = 0;
            return Ok(());
        }
        self.upload_active(state, active)?;
        self.launch_iterate(state, iterations)
    }

    fn marginal_errors(&self, state: &mut CudaSinkhornState, active: &[bool]) -> Result<Vec<f64>> {
        if !state.errors_current {
            self.upload_active(state, active)?;
            self.launch_iterate(state, 0)?;
        }
        let err = self.download(&state.err)?;
        Ok(err
            .iter()
            .zip(active)
            .map(|(&e, &a)| if a { e as f64 } else { 0.0 })
            .collect())
    }

    fn iterate_checked(
        &self,
        state: &mut CudaSinkhornState,
        active: &[bool],
        chunks: &[usize],
        threshold: f64,
    ) -> Result<Option<CheckedRounds>> {
        if self.solver_checks() == SolverChecks::Host || chunks.is_empty() {
            return Ok(None);
        }
        let _phase = crate::phases::phase("iterate and check");
        let threshold_bits = sinkhorn::f32_floor(threshold).to_bits();
        self.upload_active(state, active)?;
        self.dev
            .stream
            .memset_zeros(&mut state.status)
            .map_err(super::device::driver("reset the check states"))?;
        for (round, &iterations) in chunks.iter().enumerate() {
            if round == 0 && state.fused_ahead > 0 {
                // The fused launch ran the first interval and left its errors in err.
                if state.fused_ahead != iterations {
                    return Err(Error::Backend {
                        backend: BACKEND,
                        operation: "sinkhorn iterate_checked",
                        what: format!(
                            "the fused launch ran {} iterations, the solver asked for \
                             {iterations}",
                            state.fused_ahead
                        ),
                    });
                }
                state.fused_ahead = 0;
            } else {
                self.launch_iterate(state, iterations)?;
            }
            self.launch_retire(state, threshold_bits)?;
        }
        // The device's active flags changed: what the host last uploaded no longer holds,
        // and the next upload_active (with the solver's updated flags) restores agreement.
        let status = self.download(&state.status)?;
        let pairs = status.chunks_exact(4).map(Checked::from_status).collect();
        Ok(Some(CheckedRounds {
            rounds: chunks.len(),
            pairs,
        }))
    }

    fn finish(&self, state: CudaSinkhornState, problem: &Problem) -> Result<Solution> {
        let (n, m) = (problem.n, problem.m);
        let f_dev = self.download(&state.f)?;
        let g_dev = self.download(&state.g)?;
        Ok(scaled::solution(problem, state.epsilon, |p| {
            (
                &state.host[p],
                &f_dev[p * n..(p + 1) * n],
                &g_dev[p * m..(p + 1) * m],
            )
        }))
    }
}

/// Zero potentials, as a solve starts from (the errors on the device then belong to the
/// previous solve: not current).
fn reset_potentials(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    st: &mut CudaSinkhornState,
) -> Result<()> {
    stream
        .memset_zeros(&mut st.f)
        .and_then(|_| stream.memset_zeros(&mut st.g))
        .map_err(super::device::driver("reset the potentials"))?;
    st.errors_current = false;
    Ok(())
}

/// The solver over a state the fused launch already built (and advanced by one chunk).
struct Prepared<'a> {
    cuda: &'a CudaBackend,
    state: RefCell<Option<CudaSinkhornState>>,
}

impl SinkhornKernels for Prepared<'_> {
    type State = CudaSinkhornState;

    fn prepare(&self, _problem: &Problem, _epsilon: f64) -> Result<CudaSinkhornState> {
        self.state.borrow_mut().take().ok_or(Error::Backend {
            backend: BACKEND,
            operation: "sinkhorn prepare",
            what: "the fused state was already used".to_string(),
        })
    }

    fn iterate(&self, state: &mut Self::State, active: &[bool], iterations: usize) -> Result<()> {
        self.cuda.iterate(state, active, iterations)
    }

    fn marginal_errors(&self, state: &mut Self::State, active: &[bool]) -> Result<Vec<f64>> {
        self.cuda.marginal_errors(state, active)
    }

    fn iterate_checked(
        &self,
        state: &mut Self::State,
        active: &[bool],
        chunks: &[usize],
        threshold: f64,
    ) -> Result<Option<CheckedRounds>> {
        self.cuda.iterate_checked(state, active, chunks, threshold)
    }

    fn finish(&self, state: Self::State, problem: &Problem) -> Result<Solution> {
        self.cuda.finish(state, problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipelined_cost_phase_runs_only_where_its_launch_holds() {
        let optin = 232_448; // an H100's or H200's opt-in shared memory per block
        let pipelined = FusedCost::Pipelined;
        // The pairs: 512 threads, tensor cores, 110,208 bytes.
        assert_eq!(fused_smem(128, 128, 2, SinkhornLse::Shifted), 110_208);
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Tf32x3, pipelined, SinkhornLse::Shifted),
                512,
                (128, 128),
                optin
            ),
            2
        );
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Auto, pipelined, SinkhornLse::Shifted),
                512,
                (128, 128),
                optin
            ),
            2
        );
        // Not asked for, 256 threads, or the FP32 cost phase: the kernel's own mode.
        let serial = FusedCost::Serial;
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Tf32x3, serial, SinkhornLse::Shifted),
                512,
                (128, 128),
                optin
            ),
            1
        );
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Tf32x3, pipelined, SinkhornLse::Shifted),
                256,
                (64, 64),
                optin
            ),
            1
        );
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Fp32, pipelined, SinkhornLse::Shifted),
                512,
                (128, 128),
                optin
            ),
            0
        );
        // Where its 4 KB more do not fit but the serial phase does: the serial phase.
        let (n, m) = (200, 200);
        let need = fused_smem(n, m, 2, SinkhornLse::Shifted);
        assert!(fused_smem(n, m, 1, SinkhornLse::Shifted) <= need - 4096);
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Tf32x3, pipelined, SinkhornLse::Shifted),
                512,
                (n, m),
                need - 1
            ),
            1
        );
        assert_eq!(
            fused_launch_mode(
                (CostKernel::Tf32x3, pipelined, SinkhornLse::Shifted),
                512,
                (n, m),
                need
            ),
            2
        );
    }

    #[test]
    fn the_log_sum_exps_vectors_after_k_keep_two_ctas_per_sm() {
        // (mode, lse_mode, bytes after K for 128 x 128, for 13 x 70): the absorbed shifts c
        // and d, 4 (n4 + m4); the scaled passes' c, d, u and v, 8 (n4 + m4) from the next
        // multiple of 16 after K (the interpreter's sizes for the same launches): K of
        // 128 x 129 floats is a multiple of 16 bytes, 13 x 71 floats (3,692) 4 bytes short.
        for (lse, arg, full, ragged) in [
            (SinkhornLse::Shifted, 0, 0, 0),
            (SinkhornLse::Absorbed, 1, 1024, 4 * 16 + 4 * 72),
            (SinkhornLse::Scaled, 2, 2048, 4 + 8 * 16 + 8 * 72),
        ] {
            assert_eq!(lse_mode_arg(lse), arg);
            for mode in 0..5 {
                let shifted = fused_smem(128, 128, mode, SinkhornLse::Shifted);
                assert_eq!(fused_smem(128, 128, mode, lse) - shifted, full);
            }
            let shifted = fused_smem(13, 70, 3, SinkhornLse::Shifted);
            assert_eq!(fused_smem(13, 70, 3, lse) - shifted, ragged);
            // The largest of them, the producer-warp phase, still fits two CTAs (and the
            // driver's 1 KB each) in an H100's or H200's 228 KB per SM.
            assert!(2 * (fused_smem(128, 128, 2, lse) + 1024) <= 228 * 1024);
        }
        // The producer-warp phase only where its larger size, the vectors included, fits.
        let absorbed = SinkhornLse::Absorbed;
        let need = fused_smem(200, 200, 2, absorbed);
        let phase = (CostKernel::Tf32x3, FusedCost::Pipelined, absorbed);
        assert_eq!(fused_launch_mode(phase, 512, (200, 200), need - 1), 1);
        assert_eq!(fused_launch_mode(phase, 512, (200, 200), need), 2);
    }

    #[test]
    fn a_solve_continued_from_k_takes_the_iterate_kernels_space_and_the_scaled_vectors() {
        // cost_mode 4 (the fused kernel continuing a solve, in place of sinkhorn_iterate_f32
        // for the scaled passes): no staging, so the iterate kernel's layout with K on chip
        // and the scaled vectors after K. For the `sinkhorn` bench's pairs that is 2,048
        // bytes more; its registers (64 per thread, 512 threads) allow two CTAs per SM, and
        // the shared memory keeps that on an H100 or H200.
        for (n, m) in [(128, 128), (17, 29), (1, 1)] {
            assert_eq!(
                fused_smem(n, m, 4, SinkhornLse::Shifted),
                iterate_smem(n, m, true)
            );
            assert_eq!(
                fused_smem(n, m, 4, SinkhornLse::Scaled),
                fused_smem(n, m, 3, SinkhornLse::Scaled)
            );
        }
        assert_eq!(
            fused_smem(128, 128, 4, SinkhornLse::Scaled),
            iterate_smem(128, 128, true) + 2048
        );
        assert!(2 * (fused_smem(128, 128, 4, SinkhornLse::Scaled) + 1024) <= 228 * 1024);
        // Which kernel a chunk runs on: the fused one for the scaled passes with K on chip
        // where the vectors fit, else the iterate kernel (shifted, absorbed, K streamed, or
        // 8 (n4 + m4) bytes too many).
        let optin = 232_448;
        let need = fused_smem(128, 128, 4, SinkhornLse::Scaled);
        assert_eq!(
            continue_smem(SinkhornLse::Scaled, 128, 128, true, optin),
            Some(need)
        );
        assert_eq!(
            continue_smem(SinkhornLse::Scaled, 128, 128, true, need),
            Some(need)
        );
        assert_eq!(
            continue_smem(SinkhornLse::Scaled, 128, 128, true, need - 1),
            None
        );
        assert_eq!(
            continue_smem(SinkhornLse::Scaled, 512, 512, false, optin),
            None
        );
        for lse in [SinkhornLse::Shifted, SinkhornLse::Absorbed] {
            assert_eq!(continue_smem(lse, 128, 128, true, optin), None);
        }
    }

    #[test]
    fn the_iterate_kernel_takes_its_absorbed_vectors_after_k() {
        // c[n], d[m] and 32 flags: the interpreter's size for the same launch.
        assert_eq!(iterate_absorbed_smem(17, 29), 4 * 17 + 4 * 29 + 128);
        // The `sinkhorn` bench's pairs keep room for them on an H100 or H200.
        assert!(iterate_smem(128, 128, true) + iterate_absorbed_smem(128, 128) <= 232_448);
    }

    #[test]
    fn the_given_cost_runs_wherever_it_was_asked_for_without_staging() {
        let standalone = FusedCost::Standalone;
        for (kernel, block) in [
            (CostKernel::Auto, 512),
            (CostKernel::Fp32, 512),
            (CostKernel::Wgmma, 256),
            (CostKernel::WgmmaRs, 512),
        ] {
            assert_eq!(
                fused_launch_mode(
                    (kernel, standalone, SinkhornLse::Shifted),
                    block,
                    (128, 128),
                    0
                ),
                3
            );
        }
        // No staging: the pairs need 36,864 bytes less than the serial phase.
        assert_eq!(
            fused_smem(128, 128, 1, SinkhornLse::Shifted)
                - fused_smem(128, 128, 3, SinkhornLse::Shifted),
            36_864
        );
        assert_eq!(
            fused_smem(128, 128, 3, SinkhornLse::Shifted),
            128 + 24 * 128 + 4 * 128 * 129
        );
    }
}
