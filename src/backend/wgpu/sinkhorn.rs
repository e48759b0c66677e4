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
    WgpuContext, NARROW_LEN, SINKHORN_ERRORS, SINKHORN_ITERATE_STREAM, SINKHORN_ITERATE_TILE,
    SINKHORN_NARROW,
};
use super::kernels::MAX_LEN;
use super::Wgpu;
use crate::error::{Error, Result};
use crate::ot::problem::Problem;
use crate::ot::sinkhorn::{SinkhornKernels, Solution};

const LOG2E: f64 = std::f64::consts::LOG2_E;

/// Plan, f, g and transport cost of one pair, padding included.
type PairSolution = (Vec<f64>, Vec<f64>, Vec<f64>, f64);

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
    rows: Vec<Vec<usize>>,
    cols: Vec<Vec<usize>>,
    alpha: Vec<Vec<f64>>,
    beta: Vec<Vec<f64>>,
    chunks: Vec<Chunk>,
}

/// K and Kᵀ of one pair in its `2·n·m` slab, log2 a, log2 b, and the initial G (g = 0).
struct Prepared {
    rows: Vec<usize>,
    cols: Vec<usize>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    slab: Vec<f32>,
    log2_a: Vec<f32>,
    log2_b: Vec<f32>,
    g0: Vec<f32>,
}

fn prepare_pair(problem: &Problem, p: usize, epsilon: f64) -> Prepared {
    let (n, m) = (problem.n, problem.m);
    let (rows, cols) = problem.support(p);
    let (nr, nc) = (rows.len(), cols.len());
    let c = problem.cost_of(p);
    let mut cs: Vec<f64> = rows
        .iter()
        .flat_map(|&i| cols.iter().map(move |&j| c[i * m + j]))
        .collect();
    let alpha: Vec<f64> = cs
        .chunks_exact(nc)
        .map(|r| r.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    for (r, &al) in cs.chunks_exact_mut(nc).zip(&alpha) {
        r.iter_mut().for_each(|v| *v -= al);
    }
    let mut beta = vec![f64::INFINITY; nc];
    for r in cs.chunks_exact(nc) {
        for (b, &v) in beta.iter_mut().zip(r) {
            *b = b.min(v);
        }
    }
    let scale = -LOG2E / epsilon;
    let mut slab = vec![0.0f32; 2 * n * m];
    for i in 0..nr {
        for j in 0..nc {
            let k = ((cs[i * nc + j] - beta[j]) * scale) as f32;
            slab[i * nc + j] = k;
            slab[n * m + j * nr + i] = k;
        }
    }
    let mut log2_a = vec![0.0f32; n];
    for (o, &i) in log2_a.iter_mut().zip(&rows) {
        *o = problem.a[p * n + i].log2() as f32;
    }
    let mut log2_b = vec![0.0f32; m];
    for (o, &j) in log2_b.iter_mut().zip(&cols) {
        *o = problem.b[p * m + j].log2() as f32;
    }
    let mut g0 = vec![0.0f32; m];
    for (o, &bj) in g0.iter_mut().zip(&beta) {
        *o = (-bj * LOG2E / epsilon) as f32;
    }
    Prepared {
        rows,
        cols,
        alpha,
        beta,
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
        if n > MAX_LEN || m > MAX_LEN {
            return Err(Error::shape(
                "wgpu sinkhorn cost",
                format!("n, m ≤ {MAX_LEN} (one workgroup keeps a pair's potentials on-chip)"),
                format!("n = {n}, m = {m}"),
            ));
        }
        let per_pair = [(2 * n * m * 4) as u64, (n * 4) as u64, (m * 4) as u64];
        let chunk = ctx.chunk_len("sinkhorn prepare", &per_pair, b)?;
        let cap = ctx.tile_capacity() as usize;
        let mut state = WgpuSinkhornState {
            epsilon,
            n,
            m,
            rows: Vec::with_capacity(b),
            cols: Vec::with_capacity(b),
            alpha: Vec::with_capacity(b),
            beta: Vec::with_capacity(b),
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
            for pr in prepared {
                let (nr, nc) = (pr.rows.len(), pr.cols.len());
                any_on_chip |= nr * (nc | 1) <= cap;
                narrow &= nr <= NARROW_LEN && nc <= NARROW_LEN;
                host_info.push([nr as u32, nc as u32, 1, 0]);
                slab.extend_from_slice(&pr.slab);
                la.extend_from_slice(&pr.log2_a);
                lb.extend_from_slice(&pr.log2_b);
                g0.extend_from_slice(&pr.g0);
                state.rows.push(pr.rows);
                state.cols.push(pr.cols);
                state.alpha.push(pr.alpha);
                state.beta.push(pr.beta);
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
                let err = ctx.storage((c * 4) as u64);
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
        let (n, m) = (state.n as u32, state.m as u32);
        for chunk in &mut state.chunks {
            if !self.set_active(chunk, active) {
                continue;
            }
            ctx.queue.write_buffer(
                &chunk.params,
                0,
                bytemuck::bytes_of(&Params {
                    pairs: chunk.len as u32,
                    n,
                    m,
                    iterations,
                }),
            );
            let pipeline = if chunk.any_on_chip {
                &ctx.pipelines.sinkhorn.pipelines[SINKHORN_ITERATE_TILE + chunk.variant]
            } else {
                &ctx.pipelines.sinkhorn.pipelines[SINKHORN_ITERATE_STREAM + chunk.variant]
            };
            ctx.encode(
                &mut enc,
                &[(pipeline, &chunk.group, [chunk.len as u32, 1, 1])],
            );
            // One submission per chunk: each chunk's params write must precede its dispatch.
            let done = std::mem::replace(&mut enc, ctx.encoder());
            ctx.checked("sinkhorn iterate", || {
                ctx.queue.submit([done.finish()]);
            })?;
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
            ctx.encode(
                &mut enc,
                &[(
                    &ctx.pipelines.sinkhorn.pipelines[SINKHORN_ERRORS + chunk.variant],
                    &chunk.group,
                    [chunk.len as u32, 1, 1],
                )],
            );
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
        let per_pair: Vec<PairSolution> = (0..problem.pairs)
            .into_par_iter()
            .map(|p| {
                let (rows, cols) = (&state.rows[p], &state.cols[p]);
                let c = problem.cost_of(p);
                let mut plan = vec![0.0; n * m];
                let mut f = vec![0.0; n];
                let mut g = vec![0.0; m];
                let mut total = 0.0;
                for (ci, &i) in rows.iter().enumerate() {
                    let fi = big_f[p * n + ci] as f64;
                    f[i] = fi * eps / LOG2E + state.alpha[p][ci];
                    let a = problem.a[p * n + i];
                    for (cj, &j) in cols.iter().enumerate() {
                        let gj = big_g[p * m + cj] as f64;
                        let k =
                            -(c[i * m + j] - state.alpha[p][ci] - state.beta[p][cj]) * LOG2E / eps;
                        let v = a * problem.b[p * m + j] * (fi + gj + k).exp2();
                        plan[i * m + j] = v;
                        total += v * c[i * m + j];
                    }
                }
                for (cj, &j) in cols.iter().enumerate() {
                    g[j] = big_g[p * m + cj] as f64 * eps / LOG2E + state.beta[p][cj];
                }
                (plan, f, g, total)
            })
            .collect();
        let mut sol = Solution {
            plan: Vec::with_capacity(problem.pairs * n * m),
            f: Vec::with_capacity(problem.pairs * n),
            g: Vec::with_capacity(problem.pairs * m),
            cost: Vec::with_capacity(problem.pairs),
        };
        for (plan, f, g, c) in per_pair {
            sol.plan.extend(plan);
            sol.f.extend(f);
            sol.g.extend(g);
            sol.cost.push(c);
        }
        for chunk in state.chunks {
            ctx.recycle([chunk.info, chunk.f, chunk.g, chunk.err]);
            ctx.recycle(chunk.others);
        }
        Ok(sol)
    }
}
