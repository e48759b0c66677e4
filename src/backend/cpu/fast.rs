//! CPU fast path: `f32`, pairs (or documents) spread over threads with rayon, inner loops
//! written to vectorise (see `simd.rs`), AVX2 + FMA chosen at run time when present.
//!
//! Sinkhorn works on the scaled form of [`crate::ot::scaled`] (support only, costs shifted
//! by row and column minima, base-2 log units). In the log domain ([`SinkhornForm::Log`])
//! `K` is stored row-major and transposed so both reductions stream contiguous memory:
//!
//! ```text
//! F_i ← −log2 Σ_j 2^(K_ij + G_j + log2 b_j)
//! G_j ← −log2 Σ_i 2^(K_ij + F_i + log2 a_i)
//! ```
//!
//! By default ([`SinkhornForm::Scaled`], `$OPTICAL_CPU_SINKHORN`) pairs of at least 16 rows
//! and columns keep `Q_ij = 2^(K_ij + c_i + d_j)` and its transpose instead, and each update
//! is a matrix–vector product with no exponential per element:
//!
//! ```text
//! F_i ← c_i − log2 Σ_j Q_ij v_j,   u_i = a_i / Σ_j Q_ij v_j      (v_j = 2^(G_j + log2 b_j − d_j))
//! G_j ← d_j − log2 Σ_i Q_ij u_i,   v_j = b_j / Σ_i Q_ij u_i
//! ```
//!
//! summed 64 lines at a time through the other orientation (`simd::cross_sums`); a line
//! whose sum leaves [2⁻²⁰, 2²⁰] gets a new shift and its entries again. Pairs of at least
//! [`STREAM_MIN_ENTRIES`] entries, and every scaled pair under [`SinkhornForm::Streamed`],
//! keep `Q` alone and sweep it once per iteration: each row's sum, its update, and its
//! share of the column sums while the row is in L1.
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
        let nd = docs.len();
        let qtiles = tiles(&queries.lengths, MAXSIM_QUERY_TOKENS);
        let dtiles = tiles(&docs.lengths, MAXSIM_DOC_TOKENS);
        let max_tq = qtiles
            .iter()
            .map(|r| qstart[r.end] - qstart[r.start])
            .max()
            .unwrap_or(0);
        // Parallel over tiles of documents (there are many more documents than queries);
        // each tile is normalised where it is scored, then scored against every query tile
        // by one sgemm of token similarities, then reduced: max over the document's tokens,
        // summed over the query's tokens.
        let per_tile: Vec<(std::ops::Range<usize>, Vec<f32>)> = dtiles
            .into_par_iter()
            .map(|dr| {
                let scores = dispatch!(|FMA| maxsim_tile::<FMA>(
                    &qn,
                    &qstart,
                    &qtiles,
                    max_tq,
                    docs,
                    dr.clone()
                ));
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

/// The MaxSim scores `(queries, documents of dr)` of one tile of documents against every
/// query tile: the tile's tokens normalised into a buffer of the tile's own, one sgemm of
/// token similarities per query tile, then per (query, document) the sum over the query's
/// tokens of the maximum over the document's tokens. `qn` holds the real query tokens,
/// normalised, query `q`'s from row `qstart[q]`.
#[inline(always)]
fn maxsim_tile<const FMA: bool>(
    qn: &[f32],
    qstart: &[usize],
    qtiles: &[std::ops::Range<usize>],
    max_tq: usize,
    docs: &PackedDocs,
    dr: std::ops::Range<usize>,
) -> Vec<f32> {
    let d = docs.d;
    let nq = qstart.len() - 1;
    let t0 = docs.offsets[dr.start];
    let t1 = docs.offsets[dr.end - 1] + docs.lengths[dr.end - 1];
    let tc = t1 - t0;
    let mut dmat = docs.data[t0 * d..t1 * d].to_vec();
    // Plain loops (see `cosine_pair`): the norms stay inside the AVX2 + FMA code. (Pushing
    // the scaled values into an empty buffer instead of scaling a copy was 20 % slower: the
    // pushes do not vectorise.)
    for row in dmat.chunks_exact_mut(d) {
        let s = simd::inv_norm::<FMA>(row);
        for v in row.iter_mut() {
            *v *= s;
        }
    }
    let mut scores = vec![0.0f32; nq * dr.len()];
    let mut sim = vec![0.0f32; max_tq * tc];
    for qr in qtiles {
        let (s0, s1) = (qstart[qr.start], qstart[qr.end]);
        let tq = s1 - s0;
        if tq == 0 {
            continue;
        }
        let a = &qn[s0 * d..s1 * d];
        // SAFETY: `a` holds `tq × d` values (row stride d), `dmat` holds `tc × d` values
        // read as the transposed `d × tc` operand (row stride 1, column stride d), and `sim`
        // holds at least `tq × tc` values (row stride tc); all three are live, distinct
        // allocations for the call.
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
                let mut total = 0.0f32;
                for i in qstart[q] - s0..qstart[q + 1] - s0 {
                    total += simd::max(&sim[i * tc + c0..i * tc + c1]);
                }
                scores[q * dr.len() + kk] = total;
            }
        }
    }
    scores
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

/// How the fast path iterates Sinkhorn, chosen by `$OPTICAL_CPU_SINKHORN`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkhornForm {
    /// `log`: the log-domain passes of the module docs, `2·n·m` exponentials per iteration
    /// (the default before the scaled form; every pair of fewer than 16 rows or columns
    /// takes it in either setting).
    Log,
    /// `scaled` (the default): the stabilised scaling form (absorption, as POT's
    /// `sinkhorn_stabilized`) for pairs of at least 16 rows and 16 columns; the others stay
    /// in the log domain.
    /// The matrix is `Q_ij = 2^(K_ij + c_i + d_j)` itself and each half-iteration a
    /// matrix–vector product, `F_i = c_i − log2 Σ_j Q_ij v_j` with
    /// `v_j = 2^(G_j + log2 b_j − d_j)` (the columns likewise with `u`): no exponential per
    /// element. A line whose sum leaves [2⁻²⁰, 2²⁰] gets a new shift (`c_i` or `d_j`, from
    /// the line's largest term in the log domain) and its `Q` entries again, then its sum
    /// lies in [1, len]. The same potentials as [`Self::Log`] to `f32` rounding; 4.1× faster
    /// per call on the standard `sinkhorn` problem (`docs/PERFORMANCE.md`, CPU v7).
    ///
    /// Pairs of at least [`STREAM_MIN_ENTRIES`] entries take the one sweep per iteration of
    /// [`Self::Streamed`].
    #[default]
    Scaled,
    /// `streamed`: the scaled form with one sweep of `Q` per iteration, for every pair that
    /// takes the scaled form. Each row's sum is a dot product with `v`, its update follows
    /// at once, and so does its share of the column sums, `u_i · Q_i` added into the
    /// accumulator of its block of [`STREAM_BLOCK_ROWS`] rows while the row is in L1; the
    /// blocks' accumulators are added in block order and the columns updated from them.
    /// `Qᵀ` is not kept. For pairs whose `Q` does not stay in cache this reads it once per
    /// iteration instead of `Q` and `Qᵀ` once each. The results do not depend on the
    /// number of threads (the blocks are fixed by the pair's shape).
    Streamed,
}

/// Environment variable that picks [`SinkhornForm`]: `scaled` (default), `log` or
/// `streamed`.
pub const SINKHORN_FORM_ENV: &str = "OPTICAL_CPU_SINKHORN";

env_choice!(SinkhornForm, SINKHORN_FORM_ENV, {
    Scaled => "scaled",
    Log => "log",
    Streamed => "streamed",
});

/// Entries of `K` from which [`SinkhornForm::Scaled`] streams a pair (one sweep of `Q` per
/// iteration, [`SinkhornForm::Streamed`]).
pub const STREAM_MIN_ENTRIES: usize = 1 << 20;

/// Rows per block of the streamed sweep; each block accumulates its own column sums.
pub const STREAM_BLOCK_ROWS: usize = 64;

/// Lines a pair needs on both sides for [`SinkhornForm::Scaled`]: shorter lines keep the
/// log domain's exact fixed points (see `simd::update_lines`).
const SCALED_MIN_LINES: usize = 16;

/// The range in which a scaled line's sum is accepted: the vector entry it gives is then
/// within 2²⁰ of its weight, so an entry of `Q` stored as 0 (below 2⁻⁹⁰) weighs at most
/// 2⁻⁷⁰ against the sum.
const SCALED_SUM_MIN: f32 = 1.0 / (1u32 << 20) as f32;
const SCALED_SUM_MAX: f32 = (1u32 << 20) as f32;

/// A pair's state in the scaled form ([`SinkhornForm::Scaled`]); the potentials `F`, `G`
/// stay in [`FastPair`], current after every pass.
struct ScaledForm {
    /// `Q (nr, nc)` and its transpose `(nc, nr)`, kept equal (`Qᵀ` empty when streamed).
    q: Vec<f32>,
    qt: Vec<f32>,
    /// Whether the pair takes the streamed sweep ([`SinkhornForm::Streamed`]), and then the
    /// column sums of each block of [`STREAM_BLOCK_ROWS`] rows, `(blocks, nc)` (empty
    /// otherwise).
    streamed: bool,
    partials: Vec<f32>,
    /// The shifts absorbed into `Q`: `c (nr)`, `d (nc)`.
    c: Vec<f32>,
    d: Vec<f32>,
    /// `u_i = 2^(F_i + log2 a_i − c_i)`, `v_j = 2^(G_j + log2 b_j − d_j)`; `u_next` goes
    /// with `FastPair::f_next`.
    u: Vec<f32>,
    v: Vec<f32>,
    u_next: Vec<f32>,
    /// The weights `a = 2^log2 a`, `b = 2^log2 b`.
    a: Vec<f32>,
    b: Vec<f32>,
    sums: Vec<f32>,
}

impl ScaledForm {
    /// `c = 0`, `d = 0`, `Q = 2^K`, and the vectors of `F = 0` and `g`.
    #[inline(always)]
    fn new<const FMA: bool>(
        k: &[f32],
        (nr, nc): (usize, usize),
        (log2_a, log2_b): (&[f32], &[f32]),
        g: &[f32],
        streamed: bool,
    ) -> ScaledForm {
        let d = vec![0.0f32; nc];
        let mut q = vec![0.0f32; nr * nc];
        for (line, kl) in q.chunks_exact_mut(nc).zip(k.chunks_exact(nc)) {
            simd::scaled_line::<FMA>(line, kl, 0.0, &d);
        }
        let (qt, partials) = if streamed {
            (
                Vec::new(),
                vec![0.0f32; nr.div_ceil(STREAM_BLOCK_ROWS) * nc],
            )
        } else {
            let mut qt = vec![0.0f32; nr * nc];
            scaled::transpose_into(&q, nr, nc, nc, &mut qt, nr);
            (qt, Vec::new())
        };
        let exp2 = |x: f32| (x as f64).exp2() as f32;
        let a: Vec<f32> = log2_a.iter().map(|&la| exp2(la)).collect();
        ScaledForm {
            q,
            qt,
            streamed,
            partials,
            c: vec![0.0; nr],
            v: g.iter().zip(log2_b).map(|(&g, &lb)| exp2(g + lb)).collect(),
            d,
            u: a.clone(),
            u_next: vec![0.0; nr],
            b: log2_b.iter().map(|&lb| exp2(lb)).collect(),
            a,
            sums: vec![0.0; nr.max(nc)],
        }
    }
}

/// One side of a scaled half-iteration: the row update (lines `Q`, vector `v`, shifts `c`,
/// writing `F` and `u`) or the column update (`Qᵀ`, `u`, `d`, writing `G` and `v`).
struct ScaledSide<'a> {
    /// The lines (`Q` or `Qᵀ`, `w.len()` per line) and the other orientation.
    lines: &'a mut [f32],
    cross: &'a mut [f32],
    /// `K` (nr, nc), for new shifts and entries: a line's entries are `k_step` apart and
    /// lines `k_line` apart (rows: 1 and nc; columns: nc and 1).
    k: &'a [f32],
    k_step: usize,
    k_line: usize,
    /// The other side's vector, potentials, log-weights and shifts.
    w: &'a [f32],
    other_pot: &'a [f32],
    other_log_w: &'a [f32],
    other_shift: &'a [f32],
    /// This side's shifts, weights, and the potentials and vector it writes.
    shift: &'a mut [f32],
    weights: &'a [f32],
    pot: &'a mut [f32],
    vec: &'a mut [f32],
    sums: &'a mut [f32],
}

/// A scaled line shifted anew: its largest term in the log domain, `kl_j + h_j`, becomes
/// 2⁰ (times its vector entry). Writes the line's entries `2^(kl_j + shift + other_shift_j)`
/// and returns the new shift. `h` (the other side's potentials plus log-weights) is built
/// on first use, since most passes shift no line.
#[inline(always)]
fn shift_line_anew<const FMA: bool>(
    line: &mut [f32],
    kl: &[f32],
    h: &mut Vec<f32>,
    (other_pot, other_log_w): (&[f32], &[f32]),
    other_shift: &[f32],
) -> f32 {
    if h.is_empty() {
        *h = other_pot
            .iter()
            .zip(other_log_w)
            .map(|(p, lw)| p + lw)
            .collect();
    }
    let shift = -simd::line_max(kl, h);
    simd::scaled_line::<FMA>(line, kl, shift, other_shift);
    shift
}

/// Each line's potential `shift − log2 sum` and vector entry `weight / sum`, eight lines at
/// a time so that the logarithm and the division vectorise.
#[inline(always)]
fn potentials_from_sums<const FMA: bool>(
    pot: &mut [f32],
    vec: &mut [f32],
    sums: &[f32],
    shift: &[f32],
    weights: &[f32],
) {
    let n = pot.len();
    let lanes = simd::LANES;
    let full = n - n % lanes;
    for ((((p, x), s), sh), wt) in pot[..full]
        .chunks_exact_mut(lanes)
        .zip(vec[..full].chunks_exact_mut(lanes))
        .zip(sums[..full].chunks_exact(lanes))
        .zip(shift[..full].chunks_exact(lanes))
        .zip(weights[..full].chunks_exact(lanes))
    {
        let mut lg = [0.0f32; simd::LANES];
        for l in 0..simd::LANES {
            lg[l] = simd::log2_pos::<FMA>(s[l]);
        }
        for l in 0..simd::LANES {
            p[l] = sh[l] - lg[l];
            x[l] = wt[l] / s[l];
        }
    }
    for l in full..n {
        pot[l] = shift[l] - simd::log2_pos::<FMA>(sums[l]);
        vec[l] = weights[l] / sums[l];
    }
}

/// A scaled half-iteration ([`SinkhornForm::Scaled`]): every line's sum (lines spread over
/// threads if `split`), new shifts and entries for the lines whose sum left
/// [`SCALED_SUM_MIN`, `SCALED_SUM_MAX`] (their sums taken again), then the potentials
/// `shift − log2 sum` and the vector `weight / sum`. Each line's result depends only on
/// that line, so the split does not change a bit.
#[inline(always)]
fn scaled_pass<const FMA: bool>(side: ScaledSide<'_>, split: bool) {
    let ScaledSide {
        lines,
        cross,
        k,
        k_step,
        k_line,
        w,
        other_pot,
        other_log_w,
        other_shift,
        shift,
        weights,
        pot,
        vec,
        sums,
    } = side;
    let (len, n) = (w.len(), pot.len());
    let sums = &mut sums[..n];
    // Every line's sum through the other orientation (a multiply-add of 64 lines per step;
    // tasks of whole blocks of 64).
    let by_cross = &*cross;
    if split {
        let lines_per_thread = n.div_ceil(4 * rayon::current_num_threads());
        let per_task = lines_per_thread
            .max(SPLIT_TASK_ENTRIES / len)
            .next_multiple_of(8 * simd::LANES);
        sums.par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(t, s)| {
                dispatch!(|FMA2| simd::cross_sums::<FMA2>(s, by_cross, n, t * per_task, w))
            });
    } else {
        simd::cross_sums::<FMA>(sums, by_cross, n, 0, w);
    }
    let mut h: Vec<f32> = Vec::new();
    for l in 0..n {
        if (SCALED_SUM_MIN..=SCALED_SUM_MAX).contains(&sums[l]) {
            continue;
        }
        let kl: Vec<f32> = (0..len).map(|j| k[l * k_line + j * k_step]).collect();
        let line = &mut lines[l * len..(l + 1) * len];
        shift[l] = shift_line_anew::<FMA>(line, &kl, &mut h, (other_pot, other_log_w), other_shift);
        for (j, &qv) in line.iter().enumerate() {
            cross[j * n + l] = qv;
        }
        sums[l] = simd::chain_dot::<FMA>(line, w);
    }
    potentials_from_sums::<FMA>(pot, vec, sums, shift, weights);
}

/// One block of rows of the streamed sweep and what it writes: `Q`'s rows (shifted anew
/// when out of range), their `K` rows, shifts `c`, weights `a`, the potentials and vector
/// entries it writes, and the block's column sums.
struct StreamBlock<'a> {
    q: &'a mut [f32],
    k: &'a [f32],
    c: &'a mut [f32],
    a: &'a [f32],
    pot: &'a mut [f32],
    vec: &'a mut [f32],
    acc: &'a mut [f32],
}

/// A block's slices as the sweep's zipped chunk iterators hand them over: `((((Q, K), c),
/// a), (potentials, vector))`.
type StreamArgs<'a> = (
    (((&'a mut [f32], &'a [f32]), &'a mut [f32]), &'a [f32]),
    (&'a mut [f32], &'a mut [f32]),
);

/// The rows of one block of the streamed sweep ([`FastPair::streamed_rows`]); `other` is
/// `(v, G, log2 b, d)`.
#[inline(always)]
fn stream_block<const FMA: bool>(blk: StreamBlock<'_>, other: (&[f32], &[f32], &[f32], &[f32])) {
    let StreamBlock {
        q,
        k,
        c,
        a,
        pot,
        vec,
        acc,
    } = blk;
    let (v, g, log2_b, d) = other;
    let nc = v.len();
    acc.fill(0.0);
    let mut h: Vec<f32> = Vec::new();
    for (l, row) in q.chunks_exact_mut(nc).enumerate() {
        let mut s = simd::dot::<FMA>(row, v);
        if !(SCALED_SUM_MIN..=SCALED_SUM_MAX).contains(&s) {
            let kl = &k[l * nc..(l + 1) * nc];
            c[l] = shift_line_anew::<FMA>(row, kl, &mut h, (g, log2_b), d);
            s = simd::dot::<FMA>(row, v);
        }
        pot[l] = c[l] - simd::log2_pos::<FMA>(s);
        vec[l] = a[l] / s;
        simd::axpy::<FMA>(acc, vec[l], row);
    }
}

/// One pair on its support, in base-2 log units (see the module docs).
pub struct FastPair {
    support: Support,
    /// `K (nr, nc)` and its transpose `(nc, nr)` (empty for the scaled form).
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
    /// The scaled form's state, for pairs that take it.
    scaled: Option<ScaledForm>,
}

pub struct FastState {
    epsilon: f64,
    pairs: Vec<FastPair>,
}

impl FastPair {
    fn new(problem: &Problem, p: usize, epsilon: f64, form: SinkhornForm) -> FastPair {
        let scaled = ScaledPair::new(problem, p, epsilon);
        let (nr, nc) = (scaled.support.rows.len(), scaled.support.cols.len());
        let g = scaled.initial_g(epsilon);
        let streamed = form == SinkhornForm::Streamed
            || (form == SinkhornForm::Scaled && nr * nc >= STREAM_MIN_ENTRIES);
        let scaled_form = (form != SinkhornForm::Log
            && nr >= SCALED_MIN_LINES
            && nc >= SCALED_MIN_LINES)
            .then(|| {
                dispatch!(|FMA| ScaledForm::new::<FMA>(
                    &scaled.k,
                    (nr, nc),
                    (&scaled.log2_a, &scaled.log2_b),
                    &g,
                    streamed
                ))
            });
        // Kᵀ for the log-domain column passes; the scaled form reads K's columns in place
        // (only when a column gets a new shift).
        let kt = if scaled_form.is_some() {
            Vec::new()
        } else {
            let mut kt = vec![0.0f32; nr * nc];
            scaled::transpose_into(&scaled.k, nr, nc, nc, &mut kt, nr);
            kt
        };
        FastPair {
            scaled: scaled_form,
            g,
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

    /// The scaled form's row update into `F` and `u` (or `F^new` and `u_next`), or its
    /// column update into `G` and `v`.
    #[inline(always)]
    fn scaled_update<const FMA: bool>(&mut self, columns: bool, out_is_next: bool, split: bool) {
        let nc = self.support.cols.len();
        let FastPair {
            k,
            log2_a,
            log2_b,
            f,
            g,
            f_next,
            scaled: Some(form),
            ..
        } = self
        else {
            unreachable!("scaled_update on a pair without the scaled form")
        };
        let ScaledForm {
            q,
            qt,
            c,
            d,
            u,
            v,
            u_next,
            a,
            b,
            sums,
            streamed: _,
            partials: _,
        } = form;
        let side = if columns {
            ScaledSide {
                lines: qt,
                cross: q,
                k,
                k_step: nc,
                k_line: 1,
                w: u,
                other_pot: f,
                other_log_w: log2_a,
                other_shift: c,
                shift: d,
                weights: b,
                pot: g,
                vec: v,
                sums,
            }
        } else {
            let (pot, vec) = if out_is_next {
                (f_next, u_next)
            } else {
                (f, u)
            };
            ScaledSide {
                lines: q,
                cross: qt,
                k,
                k_step: 1,
                k_line: nc,
                w: v,
                other_pot: g,
                other_log_w: log2_b,
                other_shift: d,
                shift: c,
                weights: a,
                pot,
                vec,
                sums,
            }
        };
        scaled_pass::<FMA>(side, split);
    }

    /// Whether the pair takes the streamed sweep ([`SinkhornForm::Streamed`]).
    fn streamed(&self) -> bool {
        self.scaled.as_ref().is_some_and(|s| s.streamed)
    }

    /// The streamed sweep's rows: `F` and `u` (or `F^new` and `u_next` for a check, whose
    /// sweep the next iteration then takes as its rows), each
    /// row's sum a dot product with `v`, a row whose sum leaves [`SCALED_SUM_MIN`,
    /// `SCALED_SUM_MAX`] shifted anew from `K`, and each block's column sums `Σ u_i Q_i`
    /// into its accumulator. Blocks spread over threads if `split`; a block's results depend
    /// only on the block.
    #[inline(always)]
    fn streamed_rows<const FMA: bool>(&mut self, out_is_next: bool, split: bool) {
        let nc = self.support.cols.len();
        let FastPair {
            k,
            log2_b,
            f,
            g,
            f_next,
            scaled: Some(form),
            ..
        } = self
        else {
            unreachable!("streamed_rows on a pair without the scaled form")
        };
        let ScaledForm {
            q,
            c,
            d,
            u,
            v,
            u_next,
            a,
            partials,
            ..
        } = form;
        let (pot, vec) = if out_is_next {
            (f_next, u_next)
        } else {
            (f, u)
        };
        let (g, log2_b, d, v) = (&*g, &*log2_b, &*d, &*v);
        let block = |(((((qb, kb), cb), ab), (pb, xb)), acc): (StreamArgs<'_>, &mut [f32])| {
            dispatch!(|FMA2| stream_block::<FMA2>(
                StreamBlock {
                    q: qb,
                    k: kb,
                    c: cb,
                    a: ab,
                    pot: pb,
                    vec: xb,
                    acc
                },
                (v, g, log2_b, d)
            ))
        };
        let rows = STREAM_BLOCK_ROWS;
        if split {
            q.par_chunks_mut(rows * nc)
                .zip(k.par_chunks(rows * nc))
                .zip(c.par_chunks_mut(rows))
                .zip(a.par_chunks(rows))
                .zip(pot.par_chunks_mut(rows).zip(vec.par_chunks_mut(rows)))
                .zip(partials.par_chunks_mut(nc))
                .for_each(block);
        } else {
            q.chunks_mut(rows * nc)
                .zip(k.chunks(rows * nc))
                .zip(c.chunks_mut(rows))
                .zip(a.chunks(rows))
                .zip(pot.chunks_mut(rows).zip(vec.chunks_mut(rows)))
                .zip(partials.chunks_mut(nc))
                .for_each(block);
        }
    }

    /// The streamed sweep's columns after its rows: the blocks' column sums added in block
    /// order, a column whose sum leaves the range shifted anew from `K` (its entries and sum
    /// taken again), then `G` and `v`.
    #[inline(always)]
    fn streamed_columns<const FMA: bool>(&mut self) {
        let (nr, nc) = (self.support.rows.len(), self.support.cols.len());
        let FastPair {
            k,
            log2_a,
            f,
            g,
            scaled: Some(form),
            ..
        } = self
        else {
            unreachable!("streamed_columns on a pair without the scaled form")
        };
        let ScaledForm {
            q,
            c,
            d,
            u,
            v,
            b,
            sums,
            partials,
            ..
        } = form;
        let sums = &mut sums[..nc];
        // In `f64`: a tall pair has hundreds of blocks of nearly equal sums, whose rounding
        // in one `f32` total grows with their number.
        let mut total = vec![0.0f64; nc];
        for block in partials.chunks_exact(nc) {
            for (t, &p) in total.iter_mut().zip(block) {
                *t += p as f64;
            }
        }
        for (s, t) in sums.iter_mut().zip(total) {
            *s = t as f32;
        }
        let mut h: Vec<f32> = Vec::new();
        let mut line = vec![0.0f32; nr];
        for j in 0..nc {
            if (SCALED_SUM_MIN..=SCALED_SUM_MAX).contains(&sums[j]) {
                continue;
            }
            let kl: Vec<f32> = (0..nr).map(|i| k[i * nc + j]).collect();
            d[j] = shift_line_anew::<FMA>(&mut line, &kl, &mut h, (f, log2_a), c);
            for (i, &qv) in line.iter().enumerate() {
                q[i * nc + j] = qv;
            }
            sums[j] = simd::dot::<FMA>(&line, u);
        }
        potentials_from_sums::<FMA>(g, v, sums, d, b);
    }

    #[inline(always)]
    fn iterate<const FMA: bool>(&mut self, iterations: usize, split: bool) {
        if self.streamed() {
            for it in 0..iterations {
                if it == 0 && self.f_next_valid {
                    // The check's sweep was this iteration's rows: `F^new`, `u_next`, and
                    // the blocks' column sums taken with `u_next`.
                    std::mem::swap(&mut self.f, &mut self.f_next);
                    let form = self.scaled.as_mut().expect("streamed");
                    std::mem::swap(&mut form.u, &mut form.u_next);
                } else {
                    self.streamed_rows::<FMA>(false, split);
                }
                self.streamed_columns::<FMA>();
            }
            self.f_next_valid = false;
            return;
        }
        if self.scaled.is_some() {
            for it in 0..iterations {
                if it == 0 && self.f_next_valid {
                    std::mem::swap(&mut self.f, &mut self.f_next);
                    let form = self.scaled.as_mut().expect("checked above");
                    std::mem::swap(&mut form.u, &mut form.u_next);
                } else {
                    self.scaled_update::<FMA>(false, false, split);
                }
                self.scaled_update::<FMA>(true, false, split);
            }
            self.f_next_valid = false;
            return;
        }
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
        if self.streamed() {
            self.streamed_rows::<FMA>(true, split);
        } else if self.scaled.is_some() {
            self.scaled_update::<FMA>(false, true, split);
        } else {
            self.row_update::<FMA>(true, split);
        }
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

/// The fast path with its Sinkhorn form given instead of read from
/// `$OPTICAL_CPU_SINKHORN` (tests and benches that compare the forms in one process).
#[derive(Clone, Copy, Debug)]
pub struct CpuFastWith(pub SinkhornForm);

fn prepare_form(problem: &Problem, epsilon: f64, form: SinkhornForm) -> FastState {
    let pairs = (0..problem.pairs)
        .into_par_iter()
        .map(|p| FastPair::new(problem, p, epsilon, form))
        .collect();
    FastState { epsilon, pairs }
}

impl SinkhornKernels for CpuFastWith {
    type State = FastState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<FastState> {
        Ok(prepare_form(problem, epsilon, self.0))
    }

    fn iterate(&self, state: &mut FastState, active: &[bool], iterations: usize) -> Result<()> {
        CpuFast.iterate(state, active, iterations)
    }

    fn marginal_errors(&self, state: &mut FastState, active: &[bool]) -> Result<Vec<f64>> {
        CpuFast.marginal_errors(state, active)
    }

    fn finish(&self, state: FastState, problem: &Problem) -> Result<Solution> {
        CpuFast.finish(state, problem)
    }
}

impl SinkhornKernels for CpuFast {
    type State = FastState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<FastState> {
        Ok(prepare_form(problem, epsilon, SinkhornForm::from_env()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scaled half-iteration on three lines of 20: line 0 in range (kept), line 1's
    /// entries all flushed to 0 by a shift of −200, line 2's sum above 2²⁰ by a shift of
    /// +40. Lines 1 and 2 get new shifts and entries; every line's potential is the
    /// log-domain update, its vector entry `weight · 2^(pot − shift)`, and `cross` stays
    /// the transpose of `lines`.
    #[test]
    fn scaled_lines_out_of_range_get_new_shifts_and_the_log_domain_update() {
        let (n, len) = (3usize, 20usize);
        let k: Vec<f32> = (0..n * len).map(|x| -((x * 7 % 13) as f32) * 0.5).collect();
        let other_pot: Vec<f32> = (0..len).map(|j| 0.1 * j as f32 - 1.0).collect();
        let other_log_w = vec![-(len as f32).log2(); len];
        let other_shift: Vec<f32> = (0..len).map(|j| 0.05 * j as f32).collect();
        let w: Vec<f32> = (0..len)
            .map(|j| ((other_pot[j] + other_log_w[j] - other_shift[j]) as f64).exp2() as f32)
            .collect();
        let mut shift = vec![0.0f32, -200.0, 40.0];
        let mut lines = vec![0.0f32; n * len];
        for l in 0..n {
            let line = &mut lines[l * len..(l + 1) * len];
            simd::scaled_line::<false>(line, &k[l * len..(l + 1) * len], shift[l], &other_shift);
        }
        assert!(lines[len..2 * len].iter().all(|&q| q == 0.0));
        let mut cross = vec![0.0f32; n * len];
        scaled::transpose_into(&lines, n, len, len, &mut cross, n);
        let weights = [0.2f32, 0.3, 0.5];
        let (mut pot, mut vec, mut sums) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let side = ScaledSide {
            lines: &mut lines,
            cross: &mut cross,
            k: &k,
            k_step: 1,
            k_line: len,
            w: &w,
            other_pot: &other_pot,
            other_log_w: &other_log_w,
            other_shift: &other_shift,
            shift: &mut shift,
            weights: &weights,
            pot: &mut pot,
            vec: &mut vec,
            sums: &mut sums,
        };
        scaled_pass::<false>(side, false);
        assert_eq!(shift[0], 0.0, "line 0 was in range");
        for l in 0..n {
            let h = |j: usize| (other_pot[j] + other_log_w[j]) as f64;
            let kl = |j: usize| k[l * len + j] as f64;
            let want = -(0..len).map(|j| (kl(j) + h(j)).exp2()).sum::<f64>().log2();
            assert!(
                (pot[l] as f64 - want).abs() < 2e-6,
                "line {l}: {} vs {want}",
                pot[l]
            );
            let vec_want = weights[l] as f64 * (pot[l] as f64 - shift[l] as f64).exp2();
            assert!(
                ((vec[l] as f64) - vec_want).abs() < 1e-6 * vec_want,
                "line {l}"
            );
            if l > 0 {
                let max = (0..len).map(|j| kl(j) + h(j)).fold(f64::MIN, f64::max);
                assert!(
                    (shift[l] as f64 + max).abs() < 1e-5,
                    "line {l}: shift {}",
                    shift[l]
                );
                assert!(
                    (1.0..=len as f32).contains(&sums[l]),
                    "line {l}: sum {}",
                    sums[l]
                );
            }
            for j in 0..len {
                assert_eq!(lines[l * len + j].to_bits(), cross[j * n + l].to_bits());
            }
        }
    }

    /// The streamed sweep on a pair of 70 × 23 (two blocks of rows): rows whose sums leave
    /// the range (one zeroed, one scaled by 2³⁰, in different blocks) and columns whose
    /// summed blocks do (one zeroed, one scaled by 10³⁰) get new shifts; every potential is
    /// then the log-domain update from `K`, in `f64`, and `Q` is `2^(K + c + d)` again.
    #[test]
    fn streamed_sweep_shifts_lines_anew_and_gives_the_log_domain_updates() {
        let (n, m) = (70usize, 23usize);
        let mut rng = crate::rng::SplitMix64::new(5);
        let cost: Vec<f64> = (0..n * m).map(|_| 2.0 * rng.uniform()).collect();
        let problem = Problem::new(1, n, m, cost, None, None).unwrap();
        let mut pair = FastPair::new(&problem, 0, 0.5, SinkhornForm::Streamed);
        assert!(pair.streamed());
        // One ordinary sweep first, so that F, G, u and v are no longer the start's.
        dispatch!(|FMA| {
            pair.streamed_rows::<FMA>(false, false);
            pair.streamed_columns::<FMA>();
        });
        let form = pair.scaled.as_mut().unwrap();
        form.q[3 * m..4 * m].fill(0.0);
        for x in &mut form.q[66 * m..67 * m] {
            *x *= (1u64 << 30) as f32;
        }
        dispatch!(|FMA| pair.streamed_rows::<FMA>(false, true));
        let kc = pair.k.clone();
        let k = |i: usize, j: usize| kc[i * m + j] as f64;
        // Each potential against its log-domain update, −log2 Σ_o 2^term(line, o).
        let assert_updates =
            |what: &str, got: &[f32], other: usize, term: &dyn Fn(usize, usize) -> f64| {
                for (l, &g) in got.iter().enumerate() {
                    let want = -(0..other).map(|o| term(l, o).exp2()).sum::<f64>().log2();
                    assert!((g as f64 - want).abs() < 1e-5, "{what} {l}: {g} vs {want}");
                }
            };
        assert_updates("row", &pair.f, m, &|i, j| {
            k(i, j) + pair.g[j] as f64 + pair.log2_b[j] as f64
        });
        let form = pair.scaled.as_mut().unwrap();
        assert_eq!(form.partials.len(), 2 * m);
        form.partials[1] = 0.0;
        form.partials[m + 1] = 0.0;
        form.partials[2] *= 1e30;
        dispatch!(|FMA| pair.streamed_columns::<FMA>());
        assert_updates("column", &pair.g, n, &|j, i| {
            k(i, j) + pair.f[i] as f64 + pair.log2_a[i] as f64
        });
        let form = pair.scaled.as_ref().unwrap();
        for i in 0..n {
            for j in 0..m {
                let want = (k(i, j) + form.c[i] as f64 + form.d[j] as f64).exp2();
                let got = form.q[i * m + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * want + 1e-27,
                    "Q[{i}, {j}] = {got}, 2^(K + c + d) = {want}"
                );
            }
        }
    }

    #[test]
    fn the_form_a_value_names_or_a_clear_error() {
        // The shared setting mechanism (`backend::choice`): the default first, names
        // trimmed, an error that names the variable, the choices and the value.
        assert_eq!(SinkhornForm::ALL[0], SinkhornForm::default());
        assert_eq!(
            "scaled".parse::<SinkhornForm>().unwrap(),
            SinkhornForm::Scaled
        );
        assert_eq!(" log ".parse::<SinkhornForm>().unwrap(), SinkhornForm::Log);
        assert_eq!(
            "streamed".parse::<SinkhornForm>().unwrap(),
            SinkhornForm::Streamed
        );
        let err = "exp".parse::<SinkhornForm>().unwrap_err().to_string();
        assert!(err.contains("OPTICAL_CPU_SINKHORN"), "{err}");
        assert!(
            err.contains("scaled, log or streamed") && err.contains("exp"),
            "{err}"
        );
    }
}
