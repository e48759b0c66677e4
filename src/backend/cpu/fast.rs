//! CPU fast path: `f32`, pairs (or documents) spread over threads with rayon, inner loops
//! written to vectorise (see `simd.rs`), AVX2 + FMA chosen at run time when present.
//!
//! Sinkhorn works on the scaled form of [`crate::ot::scaled`] (support only, costs shifted
//! by row and column minima, base-2 log units), with `K` stored row-major and transposed so
//! both reductions stream contiguous memory:
//!
//! ```text
//! F_i ← −log2 Σ_j 2^(K_ij + G_j + log2 b_j)
//! G_j ← −log2 Σ_i 2^(K_ij + F_i + log2 a_i)
//! ```
//!
//! The marginal check is the next row update in
//! disguise: `Σ_j P_ij = a_i · 2^(F_i − F_i^new)`, so the check computes `F^new`, keeps it
//! for the next iteration and costs no extra pass.

use rayon::prelude::*;

use super::simd;
use crate::backend::peak::Exp2Peak;
use crate::error::Result;
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs, Problem};
use crate::ot::scaled::{self, ScaledPair, Support};
use crate::ot::sinkhorn::{SinkhornKernels, Solution};

/// The CPU fast path (`--backend cpu`, the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFast;

/// Run `$body` with `FMA` bound to a const bool, compiled with AVX2 + FMA when the CPU has
/// them. `$body` must be a call to a `#[inline(always)]` generic function so that it is
/// instantiated inside the feature-enabled wrapper.
macro_rules! dispatch {
    (|$fma:ident| $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                const $fma: bool = true;
                // SAFETY: the CPU supports AVX2 and FMA (checked just above), which is the
                // only requirement of a `#[target_feature(enable = "avx2,fma")]` function.
                unsafe {
                    with_avx2(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else {
                const $fma: bool = false;
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            const $fma: bool = false;
            $body
        }
    }};
}

/// Elements per parallel task of the element-wise passes (64 KiB of `f32`).
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

/// The exact (erf) GELU, `x·Φ(x)`, in place: vectorised (erf as a rational function, see
/// [`simd::erf`]) and spread over threads. The encoders' activation on the CPU.
pub fn gelu_in_place(values: &mut [f32]) {
    values
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .for_each(|chunk| dispatch!(|FMA| simd::gelu_in_place::<FMA>(chunk)));
}

/// [`gelu_in_place`], and the derivative `Φ(x) + x·φ(x)` of each input into `grad`.
///
/// # Panics
/// If `grad` and `values` differ in length (a caller's bug, not user input).
pub fn gelu_with_grad(values: &mut [f32], grad: &mut [f32]) {
    assert_eq!(values.len(), grad.len(), "gelu_with_grad: lengths differ");
    values
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(grad.par_chunks_mut(ELEMENTWISE_CHUNK))
        .for_each(|(v, g)| dispatch!(|FMA| simd::gelu_with_grad::<FMA>(v, g)));
}

/// `2^x` of every element in place ([`simd::exp2_f64`]: `f64`, branch-free, vectorised),
/// with AVX2 + FMA when the CPU has them. Forms the `f64` plans of the `f32` backends.
pub(crate) fn exp2_f64_in_place(values: &mut [f64]) {
    dispatch!(|FMA| simd::exp2_f64_in_place::<FMA>(values))
}

impl CpuFast {
    /// The exp2 throughput probe ([`crate::backend::peak`]): one task per thread, each one
    /// vector of [`simd::LANES`] lanes through [`simd::exp2_chains`] (the Sinkhorn passes'
    /// exponential, AVX2 + FMA when the CPU has them).
    pub fn exp2_peak(&self, min_exps: u64) -> Result<Exp2Peak> {
        let tasks = rayon::current_num_threads();
        let lanes = tasks * simd::LANES;
        let rounds = Exp2Peak::rounds_for(min_exps, lanes)?;
        let sums: Vec<f32> = (0..tasks)
            .into_par_iter()
            .flat_map_iter(|_| dispatch!(|FMA| simd::exp2_chains::<FMA>(rounds)))
            .collect();
        Ok(Exp2Peak {
            lanes,
            rounds,
            sums,
        })
    }

    /// Pairwise cosine cost (same contract as [`super::CpuReference::cosine_cost`]).
    pub fn cosine_cost(&self, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
        super::check_pair_batch(x, y)?;
        let (b, n, m, d) = (x.b, x.n, y.n, x.d);
        let mut data = vec![0.0f32; b * n * m];
        data.par_chunks_mut(n * m)
            .enumerate()
            .for_each(|(p, out)| dispatch!(|FMA| cosine_pair::<FMA>(x, y, p, d, out)));
        Ok(CostBatch { b, n, m, data })
    }

    /// MaxSim scores (same contract as [`super::CpuReference::maxsim`]).
    pub fn maxsim(&self, queries: &Embeddings, docs: &PackedDocs) -> Result<Vec<f32>> {
        super::check_maxsim(queries, docs)?;
        let d = docs.d;
        // The real query tokens, packed and normalised; `qstart[q]..qstart[q + 1]` are
        // query q's rows.
        let mut qstart = Vec::with_capacity(queries.b + 1);
        let mut qn = Vec::with_capacity(queries.lengths.iter().sum::<usize>() * d);
        for q in 0..queries.b {
            qstart.push(qn.len() / d);
            for i in 0..queries.lengths[q] {
                qn.extend_from_slice(queries.row(q, i));
            }
        }
        qstart.push(qn.len() / d);
        normalise_in_place(&mut qn, d);
        let dn = normalised_rows(&docs.data, d);
        let nd = docs.len();
        let qtiles = tiles(&queries.lengths, MAXSIM_QUERY_TOKENS);
        let dtiles = tiles(&docs.lengths, MAXSIM_DOC_TOKENS);
        let max_tq = qtiles
            .iter()
            .map(|r| qstart[r.end] - qstart[r.start])
            .max()
            .unwrap_or(0);
        // Parallel over tiles of documents (there are many more documents than queries);
        // each tile is scored against every query tile by one sgemm of token similarities,
        // then reduced: max over the document's tokens, summed over the query's tokens.
        let per_tile: Vec<(std::ops::Range<usize>, Vec<f32>)> = dtiles
            .into_par_iter()
            .map(|dr| {
                let t0 = docs.offsets[dr.start];
                let t1 = docs.offsets[dr.end - 1] + docs.lengths[dr.end - 1];
                let tc = t1 - t0;
                let dmat = &dn[t0 * d..t1 * d];
                let mut scores = vec![0.0f32; queries.b * dr.len()];
                let mut sim = vec![0.0f32; max_tq * tc];
                for qr in &qtiles {
                    let (s0, s1) = (qstart[qr.start], qstart[qr.end]);
                    let tq = s1 - s0;
                    if tq == 0 {
                        continue;
                    }
                    let a = &qn[s0 * d..s1 * d];
                    // SAFETY: `a` holds `tq × d` values (row stride d), `dmat` holds
                    // `tc × d` values read as the transposed `d × tc` operand (row stride
                    // 1, column stride d), and `sim` holds at least `tq × tc` values (row
                    // stride tc); all three are live, distinct allocations for the call.
                    unsafe {
                        matrixmultiply::sgemm(
                            tq,
                            d,
                            tc,
                            1.0,
                            a.as_ptr(),
                            d as isize,
                            1,
                            dmat.as_ptr(),
                            1,
                            d as isize,
                            0.0,
                            sim.as_mut_ptr(),
                            tc as isize,
                            1,
                        );
                    }
                    for q in qr.clone() {
                        for (kk, k) in dr.clone().enumerate() {
                            let c0 = docs.offsets[k] - t0;
                            let c1 = c0 + docs.lengths[k];
                            scores[q * dr.len() + kk] = (qstart[q] - s0..qstart[q + 1] - s0)
                                .map(|i| {
                                    sim[i * tc + c0..i * tc + c1]
                                        .iter()
                                        .copied()
                                        .fold(f32::NEG_INFINITY, f32::max)
                                })
                                .sum();
                        }
                    }
                }
                (dr, scores)
            })
            .collect();
        let mut out = vec![0.0f32; queries.b * nd];
        for (dr, scores) in per_tile {
            let w = dr.len();
            for q in 0..queries.b {
                out[q * nd + dr.start..q * nd + dr.end].copy_from_slice(&scores[q * w..q * w + w]);
            }
        }
        Ok(out)
    }
}

/// Query tokens per sgemm tile of the MaxSim fast path. With d = 384 a 256-token query
/// tile (384 KB), a 512-token document tile (768 KB) and their similarity block (512 KB)
/// stay in L2.
const MAXSIM_QUERY_TOKENS: usize = 256;
/// Document tokens per tile of the MaxSim fast path (the unit of parallel work).
const MAXSIM_DOC_TOKENS: usize = 512;

/// Consecutive items grouped until each group holds at least `target` tokens (the last
/// may hold fewer; an item longer than `target` is a group of its own).
fn tiles(lengths: &[usize], target: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &len) in lengths.iter().enumerate() {
        tokens += len;
        if tokens >= target {
            out.push(start..i + 1);
            (start, tokens) = (i + 1, 0);
        }
    }
    if start < lengths.len() {
        out.push(start..lengths.len());
    }
    out
}

fn normalise_in_place(data: &mut [f32], d: usize) {
    data.par_chunks_mut(d).for_each(|row| {
        let s = dispatch!(|FMA| simd::inv_norm::<FMA>(row));
        row.iter_mut().for_each(|v| *v *= s);
    });
}

/// One pair's cosine cost: the token dot products as one sgemm into the pair's
/// `(n, m)` block (row stride m), then scaled by the inverse norms and turned into
/// `1 − cos`. Padding rows and columns are left at 0.
#[inline(always)]
fn cosine_pair<const FMA: bool>(
    x: &Embeddings,
    y: &Embeddings,
    p: usize,
    d: usize,
    out: &mut [f32],
) {
    let m = y.n;
    let (lx, ly) = (x.lengths[p], y.lengths[p]);
    if lx == 0 || ly == 0 {
        return;
    }
    // Plain loops, not iterator adapters: a closure's `fold` is compiled outside the AVX2 +
    // FMA wrapper, where `mul_add` becomes a call to libm's `fmaf` per element (that made
    // the norms 40 % of this kernel's time).
    let mut ix = Vec::with_capacity(lx);
    for i in 0..lx {
        ix.push(simd::inv_norm::<FMA>(x.row(p, i)));
    }
    let mut iy = Vec::with_capacity(ly);
    for j in 0..ly {
        iy.push(simd::inv_norm::<FMA>(y.row(p, j)));
    }
    let xa = &x.data[p * x.n * d..(p * x.n + lx) * d];
    let ya = &y.data[p * y.n * d..(p * y.n + ly) * d];
    assert!(out.len() >= (lx - 1) * m + ly);
    // SAFETY: `xa` holds `lx × d` values (row stride d), `ya` holds `ly × d` values read
    // as the transposed `d × ly` operand (row stride 1, column stride d), and `out` holds
    // at least `(lx − 1)·m + ly` values, the `lx × ly` block written with row stride m
    // (checked above); the three are distinct live allocations for the call.
    unsafe {
        matrixmultiply::sgemm(
            lx,
            d,
            ly,
            1.0,
            xa.as_ptr(),
            d as isize,
            1,
            ya.as_ptr(),
            1,
            d as isize,
            0.0,
            out.as_mut_ptr(),
            m as isize,
            1,
        );
    }
    for (i, &sx) in ix.iter().enumerate() {
        let row = &mut out[i * m..i * m + ly];
        for (c, &sy) in row.iter_mut().zip(&iy) {
            let cos = *c * sx * sy;
            *c = 1.0 - cos.clamp(-1.0, 1.0);
        }
    }
}

fn normalised_rows(data: &[f32], d: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    normalise_in_place(&mut out, d);
    out
}

/// Entries of `K` from which a pair's rows and columns are spread over threads when fewer
/// pairs than threads are active (256 × 256).
const SPLIT_MIN_ENTRIES: usize = 1 << 16;

/// Entries of `K` per parallel task when a pair is split.
const SPLIT_TASK_ENTRIES: usize = 1 << 14;

/// `pot_l ← −log2 Σ_k 2^(lines[l, k] + h_k)` for every line `l` of `lines` (row-major,
/// `h.len()` per line), shifted by the line's current potential ([`simd::update_lines`]).
/// With `split`, blocks of lines run on different threads; each line is computed exactly
/// as without, so the result does not depend on the split.
#[inline(always)]
fn lse_lines<const FMA: bool>(out: &mut [f32], lines: &[f32], h: &[f32], split: bool) {
    let len = h.len();
    if split {
        // About four tasks per thread (load balance), none much under SPLIT_TASK_ENTRIES.
        let lines_per_thread = out.len().div_ceil(4 * rayon::current_num_threads());
        let per_task = lines_per_thread.max(SPLIT_TASK_ENTRIES / len).max(1);
        out.par_chunks_mut(per_task)
            .zip(lines.par_chunks(per_task * len))
            .for_each(|(o, block)| dispatch!(|FMA2| simd::update_lines::<FMA2>(o, block, h)));
    } else {
        simd::update_lines::<FMA>(out, lines, h);
    }
}

/// One pair on its support, in base-2 log units (see the module docs).
pub struct FastPair {
    support: Support,
    /// `K (nr, nc)` and its transpose `(nc, nr)`.
    k: Vec<f32>,
    kt: Vec<f32>,
    log2_a: Vec<f32>,
    log2_b: Vec<f32>,
    f: Vec<f32>,
    g: Vec<f32>,
    /// `F^new` computed by the last marginal check, reused by the next row update when
    /// `f_next_valid`.
    f_next: Vec<f32>,
    f_next_valid: bool,
    scratch: Vec<f32>,
}

pub struct FastState {
    epsilon: f64,
    pairs: Vec<FastPair>,
}

impl FastPair {
    fn new(problem: &Problem, p: usize, epsilon: f64) -> FastPair {
        let scaled = ScaledPair::new(problem, p, epsilon);
        let (nr, nc) = (scaled.support.rows.len(), scaled.support.cols.len());
        let mut kt = vec![0.0f32; nr * nc];
        scaled::transpose_into(&scaled.k, nr, nc, nc, &mut kt, nr);
        FastPair {
            g: scaled.initial_g(epsilon),
            f: vec![0.0; nr],
            f_next: vec![0.0; nr],
            f_next_valid: false,
            scratch: vec![0.0; nr.max(nc)],
            kt,
            k: scaled.k,
            log2_a: scaled.log2_a,
            log2_b: scaled.log2_b,
            support: scaled.support,
        }
    }

    /// Whether the pair is large enough to spread its rows and columns over threads when
    /// there are fewer active pairs than threads (below this a half-iteration takes a few
    /// microseconds, comparable with a rayon fork-join).
    fn splittable(&self) -> bool {
        self.support.rows.len() * self.support.cols.len() >= SPLIT_MIN_ENTRIES
    }

    /// `out_i = −log2 Σ_j 2^(K_ij + G_j + log2 b_j)`; rows spread over threads if `split`.
    #[inline(always)]
    fn row_update<const FMA: bool>(&mut self, out_is_next: bool, split: bool) {
        let nc = self.support.cols.len();
        let h = &mut self.scratch[..nc];
        for ((h, &g), &lb) in h.iter_mut().zip(&self.g).zip(&self.log2_b) {
            *h = g + lb;
        }
        let out = if out_is_next {
            self.f_next.copy_from_slice(&self.f);
            &mut self.f_next
        } else {
            &mut self.f
        };
        lse_lines::<FMA>(out, &self.k, h, split);
    }

    /// `G_j = −log2 Σ_i 2^(K_ij + F_i + log2 a_i)`; columns spread over threads if `split`.
    #[inline(always)]
    fn col_update<const FMA: bool>(&mut self, split: bool) {
        let nr = self.support.rows.len();
        let h = &mut self.scratch[..nr];
        for ((h, &f), &la) in h.iter_mut().zip(&self.f).zip(&self.log2_a) {
            *h = f + la;
        }
        lse_lines::<FMA>(&mut self.g, &self.kt, h, split);
    }

    #[inline(always)]
    fn iterate<const FMA: bool>(&mut self, iterations: usize, split: bool) {
        for it in 0..iterations {
            if it == 0 && self.f_next_valid {
                std::mem::swap(&mut self.f, &mut self.f_next);
            } else {
                self.row_update::<FMA>(false, split);
            }
            self.col_update::<FMA>(split);
        }
        self.f_next_valid = false;
    }

    #[inline(always)]
    fn marginal_error<const FMA: bool>(&mut self, split: bool) -> f64 {
        self.row_update::<FMA>(true, split);
        self.f_next_valid = true;
        self.f
            .iter()
            .zip(&self.f_next)
            .zip(&self.log2_a)
            .map(|((&f, &fnew), &la)| {
                let a = (la as f64).exp2();
                a * (((f - fnew) as f64).exp2() - 1.0).abs()
            })
            .sum()
    }
}

/// Whether large pairs should be split over threads: fewer active pairs than threads.
fn split_large_pairs(active: &[bool]) -> bool {
    active.iter().filter(|&&a| a).count() < rayon::current_num_threads()
}

impl SinkhornKernels for CpuFast {
    type State = FastState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<FastState> {
        let pairs = (0..problem.pairs)
            .into_par_iter()
            .map(|p| FastPair::new(problem, p, epsilon))
            .collect();
        Ok(FastState { epsilon, pairs })
    }

    fn iterate(&self, state: &mut FastState, active: &[bool], iterations: usize) -> Result<()> {
        let split = split_large_pairs(active);
        // Pairs side by side, one thread each; with fewer pairs than threads, the large
        // ones then run one after another with their rows and columns spread over threads.
        state
            .pairs
            .par_iter_mut()
            .zip(active)
            .filter(|(pair, &a)| a && !(split && pair.splittable()))
            .for_each(|(pair, _)| dispatch!(|FMA| pair.iterate::<FMA>(iterations, false)));
        if split {
            for (pair, _) in state
                .pairs
                .iter_mut()
                .zip(active)
                .filter(|(pair, &a)| a && pair.splittable())
            {
                dispatch!(|FMA| pair.iterate::<FMA>(iterations, true));
            }
        }
        Ok(())
    }

    fn marginal_errors(&self, state: &mut FastState, active: &[bool]) -> Result<Vec<f64>> {
        let split = split_large_pairs(active);
        let mut errors: Vec<f64> = state
            .pairs
            .par_iter_mut()
            .zip(active)
            .map(|(pair, &a)| {
                if a && !(split && pair.splittable()) {
                    dispatch!(|FMA| pair.marginal_error::<FMA>(false))
                } else {
                    0.0
                }
            })
            .collect();
        if split {
            for ((pair, &a), e) in state.pairs.iter_mut().zip(active).zip(&mut errors) {
                if a && pair.splittable() {
                    *e = dispatch!(|FMA| pair.marginal_error::<FMA>(true));
                }
            }
        }
        Ok(errors)
    }

    fn finish(&self, state: FastState, problem: &Problem) -> Result<Solution> {
        Ok(scaled::solution(problem, state.epsilon, |p| {
            let pair = &state.pairs[p];
            (&pair.support, &pair.f[..], &pair.g[..])
        }))
    }
}
