//! The Sinkhorn primitives of [`SinkhornKernels`] on the device (`shaders/sinkhorn.wgsl`).
//!
//! `prepare` compacts each pair to its support, shifts the cost by its row minima α and the
//! column minima β of the rest (as the CPU fast path does, so the f32 potentials stay
//! small), scales it to base-2 units (`K = −(C − α − β)·log2(e)/ε`) and uploads K and Kᵀ.
//! `iterate` and `marginal_errors` then only write the pairs' active flags (b × 16 bytes) and
//! dispatch; `marginal_errors` reads back one f32 per pair, `finish` the potentials, from
//! which the plan is computed on the host in f64 against the original cost.
//! `iterate_checked` (unless [`SolverChecks::Host`]) runs several rounds of iterations and a
//! check with the stopping rule on the device (`shaders/sinkhorn_retire.wgsl`), and reads
//! back 16 bytes per pair once for all of them.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::context::{
    SinkhornKernel, SolverChecks, WgpuContext, BACKEND, LOOP_PASS_BUDGET, NARROW_LEN,
    SINKHORN_COLS_SPLIT, SINKHORN_ERRORS, SINKHORN_ERRORS_SPLIT, SINKHORN_ITERATE_BLOCKED,
    SINKHORN_ITERATE_STREAM, SINKHORN_ITERATE_TILE, SINKHORN_NARROW, SINKHORN_RETIRE,
    SINKHORN_ROWS_SPLIT, SINKHORN_TERMS_SPLIT, TIMER_PAIRS,
};
use super::kernels::{passes, MAX_LEN};
use super::Wgpu;
use crate::error::{Error, Result};
use crate::ot::problem::Problem;
use crate::ot::scaled::{self, ScaledPair, Support};
use crate::ot::sinkhorn::{self, Checked, CheckedRounds, SinkhornKernels, Solution, Stop};

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RetireParams {
    pairs: u32,
    threshold_bits: u32,
    _pad: [u32; 2],
}

/// The compute passes `iterate_checked` may record between two read-backs: within the
/// context's timestamp slots (a timing session then counts every pass), with room to spare.
const PASSES_PER_READBACK: usize = TIMER_PAIRS as usize * 3 / 4;

/// The pairs of one dispatch and their device buffers.
struct Chunk {
    start: usize,
    len: usize,
    params: wgpu::Buffer,
    info: wgpu::Buffer,
    f: wgpu::Buffer,
    g: wgpu::Buffer,
    err: wgpu::Buffer,
    /// `(checks, error bits, stop, 0)` per pair, written by `sinkhorn_retire_f32`.
    status: wgpu::Buffer,
    retire_params: wgpu::Buffer,
    others: Vec<wgpu::Buffer>,
    group: wgpu::BindGroup,
    retire_group: wgpu::BindGroup,
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
                let retire_params = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("optical sinkhorn retire params"),
                    size: std::mem::size_of::<RetireParams>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let status = ctx.storage((c * 16) as u64);
                let retire_group = ctx.bind_group(
                    &ctx.pipelines.retire,
                    &[&retire_params, &info, &err, &status],
                );
                Chunk {
                    start,
                    len: c,
                    params,
                    info,
                    f,
                    g,
                    err,
                    status,
                    retire_params,
                    others: vec![kmat, log_a, log_b],
                    group,
                    retire_group,
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
        let (n, m) = (state.n, state.m);
        for chunk in &mut state.chunks {
            if !self.set_active(chunk, active) {
                continue;
            }
            for step in iteration_steps(ctx, chunk, n, m, iterations)? {
                submit_step(ctx, chunk, n, m, &step)?;
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
            ctx.encode(&mut enc, &check_dispatches(ctx, chunk, state.n)?);
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

    fn iterate_checked(
        &self,
        state: &mut WgpuSinkhornState,
        active: &[bool],
        chunks: &[usize],
        threshold: f64,
    ) -> Result<Option<CheckedRounds>> {
        let ctx = self.ctx();
        if ctx.solver_checks() == SolverChecks::Host || chunks.is_empty() {
            return Ok(None);
        }
        let _phase = crate::phases::phase("iterate and check");
        let threshold_bits = sinkhorn::f32_floor(threshold).to_bits();
        // The chunks with an active pair take part: their flags written, their statuses
        // zeroed (queued writes land before the next submission's commands).
        let mut taking = vec![false; state.chunks.len()];
        let mut passes_per_round = 0usize;
        for (c, chunk) in state.chunks.iter_mut().enumerate() {
            if !self.set_active(chunk, active) {
                continue;
            }
            taking[c] = true;
            ctx.queue.write_buffer(
                &chunk.retire_params,
                0,
                bytemuck::bytes_of(&RetireParams {
                    pairs: chunk.len as u32,
                    threshold_bits,
                    _pad: [0; 2],
                }),
            );
            ctx.queue
                .write_buffer(&chunk.status, 0, &vec![0u8; chunk.len * 16]);
            // The iterations' passes (two at most, or one per SPLIT_ITERATIONS_PER_PASS
            // iterations of the split) and the check's.
            passes_per_round += if chunk.split {
                chunks[0].div_ceil(SPLIT_ITERATIONS_PER_PASS as usize) + 1
            } else {
                3
            };
        }
        // Rounds of the first round's length, within the passes between two read-backs.
        let same = chunks.iter().take_while(|&&c| c == chunks[0]).count();
        let rounds = (PASSES_PER_READBACK / passes_per_round.max(1)).clamp(1, same);
        let iterations = u32::try_from(chunks[0])
            .map_err(|_| Error::parameter("iterations", "at most 4294967295", chunks[0]))?;
        let (n, m) = (state.n, state.m);
        let taking_chunks = || state.chunks.iter().zip(&taking).filter(|(_, &t)| t);
        let mut steps = Vec::new();
        for (chunk, _) in taking_chunks() {
            steps.push(iteration_steps(ctx, chunk, n, m, iterations)?);
        }
        let mut checks = Vec::new();
        for (chunk, _) in taking_chunks() {
            let mut dispatches = check_dispatches(ctx, chunk, n)?;
            dispatches.push((
                ctx.pipelines.retire.pipeline(SINKHORN_RETIRE)?,
                &chunk.retire_group,
                [(chunk.len as u32).div_ceil(64), 1, 1],
            ));
            checks.push(dispatches);
        }
        let reads: Vec<(&wgpu::Buffer, usize)> = taking_chunks()
            .map(|(chunk, _)| (&chunk.status, chunk.len))
            .collect();
        let statuses = if steps.iter().all(|s| s.len() == 1) {
            // One params value per chunk for every round: all the rounds and the read-back in
            // one submission.
            for ((chunk, _), s) in taking_chunks().zip(&steps) {
                write_params(ctx, chunk, n, m, s[0].per_dispatch);
            }
            let mut enc = ctx.encoder();
            for _ in 0..rounds {
                for pass in steps.iter().flat_map(|s| &s[0].passes) {
                    ctx.encode(&mut enc, pass);
                }
                for check in &checks {
                    ctx.encode(&mut enc, check);
                }
            }
            ctx.submit_and_read::<[u32; 4]>("sinkhorn iterate_checked", enc, &reads)?
        } else {
            // Iterations that need two params values (an adapter's loop cap leaves a rest):
            // one submission per write, still no read-back until the end.
            for _ in 0..rounds {
                for ((chunk, _), s) in taking_chunks().zip(&steps) {
                    for step in s {
                        submit_step(ctx, chunk, n, m, step)?;
                    }
                }
                let mut enc = ctx.encoder();
                for check in &checks {
                    ctx.encode(&mut enc, check);
                }
                ctx.checked("sinkhorn iterate_checked", || {
                    ctx.queue.submit([enc.finish()]);
                })?;
            }
            ctx.submit_and_read::<[u32; 4]>("sinkhorn iterate_checked", ctx.encoder(), &reads)?
        };
        drop((steps, checks, reads));
        let mut pairs = vec![
            Checked {
                checks: 0,
                error: f64::INFINITY,
                stop: Stop::Running,
            };
            active.len()
        ];
        let taking_mut = state.chunks.iter_mut().zip(&taking).filter(|(_, &t)| t);
        for ((chunk, _), status) in taking_mut.zip(statuses) {
            for (k, s) in status.iter().enumerate() {
                let checked = Checked::from_status(s);
                // The device made the pair inactive: so does the host's copy of the flags.
                if checked.stop != Stop::Running {
                    chunk.host_info[k][2] = 0;
                }
                pairs[chunk.start + k] = checked;
            }
        }
        Ok(Some(CheckedRounds { rounds, pairs }))
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
            ctx.recycle([chunk.info, chunk.f, chunk.g, chunk.err, chunk.status]);
            ctx.recycle(chunk.others);
        }
        Ok(sol)
    }
}

/// The dispatches of a check of `chunk`: each active pair's marginal error into `err`.
fn check_dispatches<'a>(
    ctx: &'a WgpuContext,
    chunk: &'a Chunk,
    n: usize,
) -> Result<Vec<Dispatch<'a>>> {
    let sk = &ctx.pipelines.sinkhorn;
    let pairs = [chunk.len as u32, 1, 1];
    Ok(if chunk.split {
        // Each row's term over ceil(n / 16) workgroups per pair, then the sums.
        let rows = [(n as u32).div_ceil(16), chunk.len as u32, 1];
        vec![
            (sk.pipeline(SINKHORN_TERMS_SPLIT)?, &chunk.group, rows),
            (sk.pipeline(SINKHORN_ERRORS_SPLIT)?, &chunk.group, pairs),
        ]
    } else {
        vec![(
            sk.pipeline(SINKHORN_ERRORS + chunk.variant)?,
            &chunk.group,
            pairs,
        )]
    })
}

/// A compute dispatch: pipeline, bind group, grid.
type Dispatch<'a> = (&'a wgpu::ComputePipeline, &'a wgpu::BindGroup, [u32; 3]);

/// Dispatches of `iterations` iterations of a chunk that share one params value.
struct Step<'a> {
    /// `params.iterations`: the iterations each dispatch runs.
    per_dispatch: u32,
    /// Compute passes, in order.
    passes: Vec<Vec<Dispatch<'a>>>,
}

fn write_params(ctx: &WgpuContext, chunk: &Chunk, n: usize, m: usize, iterations: u32) {
    ctx.queue.write_buffer(
        &chunk.params,
        0,
        bytemuck::bytes_of(&Params {
            pairs: chunk.len as u32,
            n: n as u32,
            m: m as u32,
            iterations,
        }),
    );
}

/// Write `step`'s params and submit its passes: one submission per params write, since
/// each write must precede its dispatches.
fn submit_step(
    ctx: &WgpuContext,
    chunk: &Chunk,
    n: usize,
    m: usize,
    step: &Step<'_>,
) -> Result<()> {
    write_params(ctx, chunk, n, m, step.per_dispatch);
    let mut enc = ctx.encoder();
    for pass in &step.passes {
        ctx.encode(&mut enc, pass);
    }
    ctx.checked("sinkhorn iterate", || {
        ctx.queue.submit([enc.finish()]);
    })
}

/// How `iterations` iterations of `chunk` (padded sizes `n × m`) are dispatched: one step,
/// or two where the adapter caps an invocation's loop passes (llvmpipe) and the iterations
/// go in several dispatches of at most `each`, then one of the rest.
fn iteration_steps<'a>(
    ctx: &'a WgpuContext,
    chunk: &'a Chunk,
    n: usize,
    m: usize,
    iterations: u32,
) -> Result<Vec<Step<'a>>> {
    let sk = &ctx.pipelines.sinkhorn;
    if chunk.split {
        // Split half-iterations: a pair over ceil(lines / 16) workgroups, one dispatch per
        // half-iteration (each dispatch sees the last's writes), at most
        // SPLIT_ITERATIONS_PER_PASS iterations per compute pass.
        let (row_half, col_half) = (
            sk.pipeline(SINKHORN_ROWS_SPLIT)?,
            sk.pipeline(SINKHORN_COLS_SPLIT)?,
        );
        let rows = [(n as u32).div_ceil(16), chunk.len as u32, 1];
        let cols = [(m as u32).div_ceil(16), chunk.len as u32, 1];
        let mut passes = Vec::new();
        let mut left = iterations;
        while left > 0 {
            let now = left.min(SPLIT_ITERATIONS_PER_PASS);
            passes.push(
                (0..now)
                    .flat_map(|_| {
                        [
                            (row_half, &chunk.group, rows),
                            (col_half, &chunk.group, cols),
                        ]
                    })
                    .collect(),
            );
            left -= now;
        }
        return Ok(vec![Step {
            per_dispatch: iterations,
            passes,
        }]);
    }
    let narrow = chunk.variant == SINKHORN_NARROW;
    let (index, per_iteration) = if chunk.blocked {
        // G = 8 (the next pipeline) when every pair is at most 64 × 64.
        (
            SINKHORN_ITERATE_BLOCKED + narrow as usize + ctx.blocked_lse_offset(false),
            passes::blocked_iteration(ctx.blocked_lse()),
        )
    } else if chunk.any_on_chip {
        (
            SINKHORN_ITERATE_TILE + chunk.variant,
            passes::rows_iteration(n, m, narrow),
        )
    } else {
        (
            SINKHORN_ITERATE_STREAM + chunk.variant,
            passes::rows_iteration(n, m, narrow),
        )
    };
    let pipeline = sk.pipeline(index)?;
    let setup = passes::rows_setup(n, m, narrow);
    let each = ctx
        .iterations_per_dispatch(setup, per_iteration, iterations.max(1))
        .ok_or_else(|| Error::Backend {
            backend: BACKEND,
            operation: "sinkhorn iterate",
            what: format!(
                "one iteration of a {n} × {m} pair needs more loop passes than the adapter \
                 ({}) lets a shader make; use another backend",
                ctx.adapter_name()
            ),
        })?;
    let (whole, rest) = (iterations / each, iterations % each);
    Ok([(whole, each), (u32::from(rest > 0), rest)]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, per_dispatch)| Step {
            per_dispatch,
            passes: vec![(0..count)
                .map(|_| (pipeline, &chunk.group, [chunk.len as u32, 1, 1]))
                .collect()],
        })
        .collect())
}
