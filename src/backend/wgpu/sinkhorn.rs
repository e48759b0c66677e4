//! The Sinkhorn primitives of [`SinkhornKernels`] on the device (`shaders/sinkhorn.wgsl`).
//!
//! `prepare` compacts each pair to its support, shifts the cost by its row minima α and the
//! column minima β of the rest (as the CPU fast path does, so the f32 potentials stay
//! small), scales it to base-2 units (`K = −(C − α − β)·log2(e)/ε`) and uploads K and Kᵀ.
//! `iterate` and `marginal_errors` then only write the pairs' active flags (b × 16 bytes) and
//! dispatch; `marginal_errors` reads back one f32 per pair, `finish` the potentials, from
//! which the plan is computed on the host in f64 against the original cost.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::context::{
    SinkhornKernel, WgpuContext, BACKEND, LOOP_PASS_BUDGET, NARROW_LEN, SINKHORN_COLS_SPLIT,
    SINKHORN_ERRORS, SINKHORN_ERRORS_SPLIT, SINKHORN_ITERATE_BLOCKED, SINKHORN_ITERATE_STREAM,
    SINKHORN_ITERATE_TILE, SINKHORN_NARROW, SINKHORN_ROWS_SPLIT, SINKHORN_TERMS_SPLIT,
};
use super::kernels::{passes, MAX_LEN};
use super::Wgpu;
use crate::error::{Error, Result};
use crate::ot::problem::Problem;
use crate::ot::scaled::{self, ScaledPair, Support};
use crate::ot::sinkhorn::{SinkhornKernels, Solution};

/// Iterations of the split half-iterations recorded per compute pass: bounds the memory of
/// one pass's commands when a solve asks for many iterations between checks.
const SPLIT_ITERATIONS_PER_PASS: u32 = 1024;

/// Largest padded set length of the split half-iterations (16 lines per workgroup, at most
/// 65,535 workgroups along a dispatch's x), the only kernels for pairs beyond [`MAX_LEN`].
const SPLIT_MAX_LEN: usize = 65535 * 16;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    pairs: u32,
    n: u32,
    m: u32,
    iterations: u32,
}

/// The pairs of one dispatch and their device buffers.
struct Chunk {
    start: usize,
    len: usize,
    params: wgpu::Buffer,
    info: wgpu::Buffer,
    f: wgpu::Buffer,
    g: wgpu::Buffer,
    err: wgpu::Buffer,
    others: Vec<wgpu::Buffer>,
    group: wgpu::BindGroup,
    /// Whether some pair of the chunk fits the on-chip tile (else the streaming pipeline,
    /// which reserves no tile, is used).
    any_on_chip: bool,
    /// Whether every pair of the chunk takes the register-blocked iterations.
    blocked: bool,
    /// Whether the chunk runs the split half-iterations and the split check.
    split: bool,
    /// Offset of the pipelines to use: `SINKHORN_NARROW` when every pair is at most
    /// `NARROW_LEN` × `NARROW_LEN`, else 0.
    variant: usize,
    /// `(nr, nc, active, 0)` per pair, as last written to `info`.
    host_info: Vec<[u32; 4]>,
}

/// Per-batch state: host copies of the supports and shifts, device buffers per chunk.
pub struct WgpuSinkhornState {
    epsilon: f64,
    n: usize,
    m: usize,
    supports: Vec<Support>,
    chunks: Vec<Chunk>,
}

/// K and Kᵀ of one pair in its `2·n·m` slab, log2 a, log2 b, and the initial G (g = 0).
struct Prepared {
    support: Support,
    slab: Vec<f32>,
    log2_a: Vec<f32>,
    log2_b: Vec<f32>,
    g0: Vec<f32>,
}

fn prepare_pair(problem: &Problem, p: usize, epsilon: f64) -> Prepared {
    let (n, m) = (problem.n, problem.m);
    let scaled = ScaledPair::new(problem, p, epsilon);
    let (nr, nc) = (scaled.support.rows.len(), scaled.support.cols.len());
    let mut slab = vec![0.0f32; 2 * n * m];
    let (k, kt) = slab.split_at_mut(n * m);
    k[..nr * nc].copy_from_slice(&scaled.k);
    scaled::transpose_into(&scaled.k, nr, nc, nc, kt, nr);
    let mut log2_a = scaled.log2_a.clone();
    log2_a.resize(n, 0.0);
    let mut log2_b = scaled.log2_b.clone();
    log2_b.resize(m, 0.0);
    let mut g0 = scaled.initial_g(epsilon);
    g0.resize(m, 0.0);
    Prepared {
        support: scaled.support,
        slab,
        log2_a,
        log2_b,
        g0,
    }
}

impl Wgpu {
    fn ctx(&self) -> &WgpuContext {
        self.context()
    }

    /// Write the active flags of a chunk when they changed; whether any pair is active.
    fn set_active(&self, chunk: &mut Chunk, active: &[bool]) -> bool {
        let mut changed = false;
        let mut any = false;
        for (k, info) in chunk.host_info.iter_mut().enumerate() {
            let a = active[chunk.start + k] as u32;
            any |= a == 1;
            if info[2] != a {
                info[2] = a;
                changed = true;
            }
        }
        if changed {
            self.ctx()
                .queue
                .write_buffer(&chunk.info, 0, bytemuck::cast_slice(&chunk.host_info));
        }
        any
    }
}

impl SinkhornKernels for Wgpu {
    type State = WgpuSinkhornState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<WgpuSinkhornState> {
        let ctx = self.ctx();
        let (b, n, m) = (problem.pairs, problem.n, problem.m);
        // Pairs beyond MAX_LEN run the split half-iterations only: a dispatch of
        // ceil(lines / 16) workgroups along x.
        // 16 lanes share a line: on llvmpipe, an invocation's loop passes bound it too.
        let (most, why) = match ctx.loop_pass_cap() {
            Some(_) => (
                SPLIT_MAX_LEN.min(16 * (LOOP_PASS_BUDGET - 64) as usize),
                "16 lanes per line, within llvmpipe's loop passes per shader",
            ),
            None => (SPLIT_MAX_LEN, "16 lines per workgroup, 65,535 workgroups"),
        };
        if n > most || m > most {
            return Err(Error::shape(
                "wgpu sinkhorn cost",
                format!("n, m ≤ {most} ({why})"),
                format!("n = {n}, m = {m}"),
            ));
        }
        // err holds one error and, for the split check, one term per row.
        let per_pair = [(2 * n * m * 4) as u64, ((n + 1) * 4) as u64, (m * 4) as u64];
        let chunk = ctx.chunk_len("sinkhorn prepare", &per_pair, b)?;
        let cap = ctx.tile_capacity() as usize;
        let mut state = WgpuSinkhornState {
            epsilon,
            n,
            m,
            supports: Vec::with_capacity(b),
            chunks: Vec::new(),
        };
        for start in (0..b).step_by(chunk) {
            let c = chunk.min(b - start);
            let prepared: Vec<Prepared> = (start..start + c)
                .into_par_iter()
                .map(|p| prepare_pair(problem, p, epsilon))
                .collect();
            let mut slab = Vec::with_capacity(c * 2 * n * m);
            let mut la = Vec::with_capacity(c * n);
            let mut lb = Vec::with_capacity(c * m);
            let mut g0 = Vec::with_capacity(c * m);
            let mut host_info = Vec::with_capacity(c);
            let mut any_on_chip = false;
            let mut narrow = true;
            let mut blocked = true;
            for pr in prepared {
                let (nr, nc) = (pr.support.rows.len(), pr.support.cols.len());
                any_on_chip |= nr * (nc | 1) <= cap;
                blocked &= ctx.blocked_takes(nr, nc);
                narrow &= nr <= NARROW_LEN && nc <= NARROW_LEN;
                host_info.push([nr as u32, nc as u32, 1, 0]);
                slab.extend_from_slice(&pr.slab);
                la.extend_from_slice(&pr.log2_a);
                lb.extend_from_slice(&pr.log2_b);
                g0.extend_from_slice(&pr.g0);
                state.supports.push(pr.support);
            }
            let chunk_state = ctx.checked("sinkhorn prepare", || {
                let params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("optical sinkhorn params"),
                    size: std::mem::size_of::<Params>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let info = ctx.upload(&host_info);
                let kmat = ctx.upload(&slab);
                let log_a = ctx.upload(&la);
                let log_b = ctx.upload(&lb);
                let f = ctx.upload(&vec![0.0f32; c * n]);
                let g = ctx.upload(&g0);
                let err = ctx.storage((c * (1 + n) * 4) as u64);
                let group = ctx.bind_group(
                    &ctx.pipelines.sinkhorn,
                    &[&params, &info, &kmat, &log_a, &log_b, &f, &g, &err],
                );
                Chunk {
                    start,
                    len: c,
                    params,
                    info,
                    f,
                    g,
                    err,
                    others: vec![kmat, log_a, log_b],
                    group,
                    any_on_chip,
                    blocked,
                    // Pairs with more than MAX_LEN rows or columns: only the split takes them.
                    split: n > MAX_LEN
                        || m > MAX_LEN
                        || !blocked
                            && !any_on_chip
                            && ctx.sinkhorn_kernel() == SinkhornKernel::Blocked
                            && ctx.split_large(),
                    variant: if narrow { SINKHORN_NARROW } else { 0 },
                    host_info,
                }
            })?;
            state.chunks.push(chunk_state);
        }
        Ok(state)
    }

    fn iterate(
        &self,
        state: &mut WgpuSinkhornState,
        active: &[bool],
        iterations: usize,
    ) -> Result<()> {
        let ctx = self.ctx();
        let iterations = u32::try_from(iterations)
            .map_err(|_| Error::parameter("iterations", "at most 4294967295", iterations))?;
        let mut enc = ctx.encoder();
        // One submission per params write: each write must precede its dispatches.
        let submit = |enc: &mut wgpu::CommandEncoder| {
            let done = std::mem::replace(enc, ctx.encoder());
            ctx.checked("sinkhorn iterate", || {
                ctx.queue.submit([done.finish()]);
            })
        };
        let (n, m) = (state.n as u32, state.m as u32);
        for chunk in &mut state.chunks {
            if !self.set_active(chunk, active) {
                continue;
            }
            let write_params = |iterations: u32| {
                ctx.queue.write_buffer(
                    &chunk.params,
                    0,
                    bytemuck::bytes_of(&Params {
                        pairs: chunk.len as u32,
                        n,
                        m,
                        iterations,
                    }),
                )
            };
            if chunk.split {
                write_params(iterations);
                // Split half-iterations: a pair over ceil(lines / 16) workgroups, one
                // dispatch per half-iteration (each dispatch sees the last's writes), at most
                // SPLIT_ITERATIONS_PER_PASS iterations per compute pass.
                let sk = &ctx.pipelines.sinkhorn;
                let (row_half, col_half) = (
                    sk.pipeline(SINKHORN_ROWS_SPLIT)?,
                    sk.pipeline(SINKHORN_COLS_SPLIT)?,
                );
                let rows = [n.div_ceil(16), chunk.len as u32, 1];
                let cols = [m.div_ceil(16), chunk.len as u32, 1];
                let mut left = iterations;
                while left > 0 {
                    let now = left.min(SPLIT_ITERATIONS_PER_PASS);
                    let halves: Vec<_> = (0..now)
                        .flat_map(|_| {
                            [
                                (row_half, &chunk.group, rows),
                                (col_half, &chunk.group, cols),
                            ]
                        })
                        .collect();
                    ctx.encode(&mut enc, &halves);
                    left -= now;
                }
                submit(&mut enc)?;
                continue;
            }
            let narrow = chunk.variant == SINKHORN_NARROW;
            let (index, per_iteration) = if chunk.blocked {
                // G = 8 (the next pipeline) when every pair is at most 64 × 64.
                (
                    SINKHORN_ITERATE_BLOCKED + narrow as usize,
                    passes::BLOCKED_ITERATION,
                )
            } else if chunk.any_on_chip {
                (
                    SINKHORN_ITERATE_TILE + chunk.variant,
                    passes::rows_iteration(state.n, state.m, narrow),
                )
            } else {
                (
                    SINKHORN_ITERATE_STREAM + chunk.variant,
                    passes::rows_iteration(state.n, state.m, narrow),
                )
            };
            let pipeline = ctx.pipelines.sinkhorn.pipeline(index)?;
            // Where the adapter caps an invocation's loop passes (llvmpipe), the iterations
            // go in several dispatches of at most `each`, then one of the rest.
            let setup = passes::rows_setup(state.n, state.m, narrow);
            let each = ctx
                .iterations_per_dispatch(setup, per_iteration, iterations.max(1))
                .ok_or_else(|| Error::Backend {
                    backend: BACKEND,
                    operation: "sinkhorn iterate",
                    what: format!(
                        "one iteration of a {} × {} pair needs more loop passes than the \
                         adapter ({}) lets a shader make; use another backend",
                        state.n,
                        state.m,
                        ctx.adapter_name()
                    ),
                })?;
            let (whole, rest) = (iterations / each, iterations % each);
            for (count, per_dispatch) in [(whole, each), (u32::from(rest > 0), rest)] {
                if count == 0 {
                    continue;
                }
                write_params(per_dispatch);
                let dispatches: Vec<_> = (0..count)
                    .map(|_| (pipeline, &chunk.group, [chunk.len as u32, 1, 1]))
                    .collect();
                ctx.encode(&mut enc, &dispatches);
                submit(&mut enc)?;
            }
        }
        Ok(())
    }

    fn marginal_errors(&self, state: &mut WgpuSinkhornState, active: &[bool]) -> Result<Vec<f64>> {
        let ctx = self.ctx();
        let mut errors = vec![0.0f64; active.len()];
        for chunk in &mut state.chunks {
            if !self.set_active(chunk, active) {
                continue;
            }
            let mut enc = ctx.encoder();
            let sk = &ctx.pipelines.sinkhorn;
            let pairs = [chunk.len as u32, 1, 1];
            if chunk.split {
                // Each row's term over ceil(n / 16) workgroups per pair, then the sums.
                let rows = [(state.n as u32).div_ceil(16), chunk.len as u32, 1];
                ctx.encode(
                    &mut enc,
                    &[
                        (sk.pipeline(SINKHORN_TERMS_SPLIT)?, &chunk.group, rows),
                        (sk.pipeline(SINKHORN_ERRORS_SPLIT)?, &chunk.group, pairs),
                    ],
                );
            } else {
                ctx.encode(
                    &mut enc,
                    &[(
                        sk.pipeline(SINKHORN_ERRORS + chunk.variant)?,
                        &chunk.group,
                        pairs,
                    )],
                );
            }
            let errs = ctx.submit_and_read::<f32>(
                "sinkhorn marginal_errors",
                enc,
                &[(&chunk.err, chunk.len)],
            )?;
            for (k, &e) in errs[0].iter().enumerate() {
                errors[chunk.start + k] = e as f64;
            }
        }
        Ok(errors)
    }

    fn finish(&self, state: WgpuSinkhornState, problem: &Problem) -> Result<Solution> {
        let ctx = self.ctx();
        let (n, m, eps) = (state.n, state.m, state.epsilon);
        let mut big_f = Vec::with_capacity(problem.pairs * n);
        let mut big_g = Vec::with_capacity(problem.pairs * m);
        for chunk in &state.chunks {
            let enc = ctx.encoder();
            let mut out = ctx.submit_and_read::<f32>(
                "sinkhorn finish",
                enc,
                &[(&chunk.f, chunk.len * n), (&chunk.g, chunk.len * m)],
            )?;
            big_g.extend(out.pop().unwrap_or_default());
            big_f.extend(out.pop().unwrap_or_default());
        }
        let sol = scaled::solution(problem, eps, |p| {
            (
                &state.supports[p],
                &big_f[p * n..(p + 1) * n],
                &big_g[p * m..(p + 1) * m],
            )
        });
        for chunk in state.chunks {
            ctx.recycle([chunk.info, chunk.f, chunk.g, chunk.err]);
            ctx.recycle(chunk.others);
        }
        Ok(sol)
    }
}
