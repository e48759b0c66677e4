//! The working form the `f32` backends (CPU fast path, WGSL, PTX) share, and the way back.
//!
//! Each pair is restricted to its support (rows and columns of positive weight), its cost
//! shifted by row minima `α_i` and then column minima `β_j` of the rest, and scaled to
//! base-2 log units:
//!
//! ```text
//! K_ij = −(C_ij − α_i − β_j) · log2(e) / ε          (so K ≤ 0 and each row and column has a 0)
//! F_i  = (f_i − α_i) · log2(e) / ε,   G_j = (g_j − β_j) · log2(e) / ε
//! ```
//!
//! The shift leaves the plan unchanged (it moves the potentials by constants, added back by
//! [`solution`]) and keeps `K` and the potentials small, so pairs whose costs are all large
//! keep their `f32` precision. Every backend starts from `g = 0`, i.e. `G = −β·log2(e)/ε`
//! ([`ScaledPair::initial_g`]), so all of them follow the same iterates.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::ot::problem::Problem;
use crate::ot::sinkhorn::Solution;

pub const LOG2E: f64 = std::f64::consts::LOG2_E;

/// What a backend keeps of a pair to map its potentials back: the support and the shifts.
#[derive(Clone, Debug)]
pub struct Support {
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
    pub alpha: Vec<f64>,
    pub beta: Vec<f64>,
}

/// A pair in the scaled working form.
#[derive(Clone, Debug)]
pub struct ScaledPair {
    pub support: Support,
    /// `K (rows, cols)`, row-major with stride `cols`.
    pub k: Vec<f32>,
    pub log2_a: Vec<f32>,
    pub log2_b: Vec<f32>,
}

impl ScaledPair {
    /// Pair `p` of `problem` in the scaled form. Rows are spread over threads in blocks of
    /// at least [`MIN_TASK_ENTRIES`] entries (so a small pair is one task and a few large
    /// pairs use every thread); the minima are exact whatever the split, so the result does
    /// not depend on the thread count.
    pub fn new(problem: &Problem, p: usize, epsilon: f64) -> ScaledPair {
        let (rows, cols) = problem.support(p);
        let (nc, m) = (cols.len(), problem.m);
        let c = problem.cost_of(p);
        // Real columns are usually a prefix (ragged batches): then rows are read as slices.
        let prefix = nc > 0 && cols[nc - 1] == nc - 1;
        let row_of = |i: usize| -> Cow<'_, [f64]> {
            let row = &c[i * m..(i + 1) * m];
            if prefix {
                Cow::Borrowed(&row[..nc])
            } else {
                Cow::Owned(cols.iter().map(|&j| row[j]).collect())
            }
        };
        let min_rows = MIN_TASK_ENTRIES.div_ceil(nc.max(1));
        let alpha: Vec<f64> = rows
            .par_iter()
            .with_min_len(min_rows)
            .map(|&i| row_of(i).iter().copied().fold(f64::INFINITY, f64::min))
            .collect();
        let beta = rows
            .par_iter()
            .zip(&alpha)
            .with_min_len(min_rows)
            .fold(
                || vec![f64::INFINITY; nc],
                |mut beta, (&i, &al)| {
                    for (b, &v) in beta.iter_mut().zip(row_of(i).iter()) {
                        *b = b.min(v - al);
                    }
                    beta
                },
            )
            .reduce(
                || vec![f64::INFINITY; nc],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x = x.min(y));
                    a
                },
            );
        let scale = -LOG2E / epsilon;
        let mut k = vec![0.0f32; rows.len() * nc];
        k.par_chunks_mut(nc.max(1))
            .zip(rows.par_iter().zip(&alpha))
            .with_min_len(min_rows)
            .for_each(|(out, (&i, &al))| {
                for ((o, &v), &bj) in out.iter_mut().zip(row_of(i).iter()).zip(&beta) {
                    *o = ((v - al - bj) * scale) as f32;
                }
            });
        let log2_a = rows
            .iter()
            .map(|&i| problem.a[p * problem.n + i].log2() as f32)
            .collect();
        let log2_b = cols
            .iter()
            .map(|&j| problem.b[p * m + j].log2() as f32)
            .collect();
        ScaledPair {
            support: Support {
                rows,
                cols,
                alpha,
                beta,
            },
            k,
            log2_a,
            log2_b,
        }
    }

    /// The scaled `G` that means `g = 0`, every backend's starting point.
    pub fn initial_g(&self, epsilon: f64) -> Vec<f32> {
        let scale = -LOG2E / epsilon;
        self.support
            .beta
            .iter()
            .map(|&b| (b * scale) as f32)
            .collect()
    }
}

/// Entries a parallel task of the per-pair passes handles at least: a 128 × 128 pair is one
/// task, a 2048 × 2048 pair 256.
pub const MIN_TASK_ENTRIES: usize = 1 << 14;

/// Columns (of the source) per parallel task of [`transpose_into`]; tiles of 32 × 32 keep
/// both the reads and the writes within a few cache lines per row.
const TRANSPOSE_BLOCK: usize = 32;

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`, `j < cols`: a blocked
/// transpose, spread over threads by blocks of source columns (each a contiguous run of
/// `dst` rows). Entries of `dst` outside that range are left as they are.
pub fn transpose_into(
    src: &[f32],
    rows: usize,
    cols: usize,
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let min_blocks = MIN_TASK_ENTRIES.div_ceil(rows * TRANSPOSE_BLOCK);
    dst[..cols * dst_stride]
        .par_chunks_mut(TRANSPOSE_BLOCK * dst_stride)
        .with_min_len(min_blocks)
        .enumerate()
        .for_each(|(block, out)| {
            let j0 = block * TRANSPOSE_BLOCK;
            let width = out.len() / dst_stride;
            for i0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
                for i in i0..(i0 + TRANSPOSE_BLOCK).min(rows) {
                    let row = &src[i * src_stride + j0..i * src_stride + j0 + width];
                    for (dj, &v) in row.iter().enumerate() {
                        out[dj * dst_stride + i] = v;
                    }
                }
            }
        });
}

/// Rows of the plan each parallel task forms (whatever the batch's shape, so that a few
/// large pairs spread over every thread as well as many small ones).
const ROWS_PER_TASK: usize = 16;

/// Map scaled potentials back: `f`, `g` in cost units (0 on padding), the `f64` plan
/// `P_ij = a_i b_j 2^(F_i + G_j + K_ij)` with `K` recomputed from the `f64` cost, and
/// `⟨P, C⟩`. `scaled(p)` gives pair `p`'s support and its `F`, `G` on that support.
///
/// Rows are formed in parallel across pairs, the exponent of a whole row first and then
/// its `2^x` through the vectorised [`exp2_f64`](crate::backend::cpu::simd::exp2_f64)
/// (within 2 ulp of libm's; libm's scalar `exp2` was most of the time here). `⟨P, C⟩` is
/// summed per row, then over the rows in order: a fixed order, whatever the thread count.
pub fn solution<'a, S>(problem: &Problem, epsilon: f64, scaled: S) -> Solution
where
    S: Fn(usize) -> (&'a Support, &'a [f32], &'a [f32]) + Sync,
{
    let _phase = crate::phases::phase("plan (f64)");
    let (pairs, n, m) = (problem.pairs, problem.n, problem.m);
    // Each row's position in its pair's support (usize::MAX: a padding row).
    let mut support_row = vec![usize::MAX; pairs * n];
    support_row
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(p, pos)| {
            for (ci, &i) in scaled(p).0.rows.iter().enumerate() {
                pos[i] = ci;
            }
        });
    // Zeroed by the thread pool: `vec![0.0; len]` clears memory the allocator reuses on one
    // thread (calloc; the CLI keeps freed memory in the process), a 33.5 MB pass for
    // 256 pairs of 128 × 128.
    let mut plan = Vec::with_capacity(pairs * n * m);
    plan.par_extend(rayon::iter::repeat_n(0.0, pairs * n * m));
    let mut sol = Solution {
        plan,
        f: vec![0.0; pairs * n],
        g: vec![0.0; pairs * m],
        cost: vec![0.0; pairs],
    };
    let mut row_cost = vec![0.0f64; pairs * n];
    sol.plan
        .par_chunks_mut(m * ROWS_PER_TASK)
        .zip(sol.f.par_chunks_mut(ROWS_PER_TASK))
        .zip(row_cost.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, ((plan, f), row_cost))| {
            let mut e = Vec::with_capacity(m);
            for (r, ((plan, f), total)) in plan
                .chunks_mut(m)
                .zip(f.iter_mut())
                .zip(row_cost.iter_mut())
                .enumerate()
            {
                let (p, i) = (
                    (task * ROWS_PER_TASK + r) / n,
                    (task * ROWS_PER_TASK + r) % n,
                );
                let ci = support_row[p * n + i];
                if ci == usize::MAX {
                    continue;
                }
                let (s, big_f, big_g) = scaled(p);
                *f = big_f[ci] as f64 * epsilon / LOG2E + s.alpha[ci];
                let c = &problem.cost_of(p)[i * m..(i + 1) * m];
                let b = &problem.b[p * m..(p + 1) * m];
                let (fi, al, a) = (big_f[ci] as f64, s.alpha[ci], problem.a[p * n + i]);
                let nc = s.cols.len();
                // Real columns are usually a prefix (ragged batches); then every access is
                // contiguous. Otherwise gather and scatter through the support's columns.
                let prefix = nc > 0 && s.cols[nc - 1] == nc - 1;
                e.clear();
                if prefix {
                    e.extend(c[..nc].iter().zip(&s.beta).zip(&big_g[..nc]).map(
                        |((&cij, &bj), &gj)| fi + gj as f64 + -(cij - al - bj) * LOG2E / epsilon,
                    ));
                } else {
                    e.extend(s.cols.iter().zip(&s.beta).zip(&big_g[..nc]).map(
                        |((&j, &bj), &gj)| fi + gj as f64 + -(c[j] - al - bj) * LOG2E / epsilon,
                    ));
                }
                crate::backend::cpu::fast::exp2_f64_in_place(&mut e);
                if prefix {
                    for (((v, &x), &bj), &cij) in plan[..nc].iter_mut().zip(&e).zip(b).zip(c) {
                        *v = a * bj * x;
                        *total += *v * cij;
                    }
                } else {
                    for (&j, &x) in s.cols.iter().zip(&e) {
                        let v = a * b[j] * x;
                        plan[j] = v;
                        *total += v * c[j];
                    }
                }
            }
        });
    sol.cost
        .par_iter_mut()
        .zip(row_cost.par_chunks(n))
        .for_each(|(cost, rows)| *cost = rows.iter().sum());
    sol.g.par_chunks_mut(m).enumerate().for_each(|(p, g)| {
        let (s, _, big_g) = scaled(p);
        for (cj, &j) in s.cols.iter().enumerate() {
            g[j] = big_g[cj] as f64 * epsilon / LOG2E + s.beta[cj];
        }
    });
    sol
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn transpose_matches_the_definition_and_leaves_the_rest() {
        let mut rng = SplitMix64::new(7);
        for (rows, cols, src_stride, dst_stride) in [
            (1, 1, 1, 1),
            (31, 33, 33, 31),
            (33, 31, 40, 35),
            (64, 1, 1, 64),
            (1, 64, 64, 1),
            (600, 70, 70, 600),
            (70, 600, 601, 80),
        ] {
            let src = rng.normals_f32(rows * src_stride);
            let mut dst = vec![f32::NAN; cols.max(1) * dst_stride + 3];
            transpose_into(&src, rows, cols, src_stride, &mut dst, dst_stride);
            for (k, &v) in dst.iter().enumerate() {
                let (j, i) = (k / dst_stride, k % dst_stride);
                if j < cols && i < rows {
                    assert_eq!(v, src[i * src_stride + j], "{rows}x{cols}: ({i}, {j})");
                } else {
                    assert!(
                        v.is_nan(),
                        "{rows}x{cols}: entry {k} outside the range written"
                    );
                }
            }
        }
    }

    /// The serial definition: every pass over the pair in order.
    fn scaled_serially(
        problem: &Problem,
        p: usize,
        epsilon: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
        let (rows, cols) = problem.support(p);
        let c = problem.cost_of(p);
        let m = problem.m;
        let alpha: Vec<f64> = rows
            .iter()
            .map(|&i| {
                cols.iter()
                    .map(|&j| c[i * m + j])
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let mut beta = vec![f64::INFINITY; cols.len()];
        for (&i, &al) in rows.iter().zip(&alpha) {
            for (b, &j) in beta.iter_mut().zip(&cols) {
                *b = b.min(c[i * m + j] - al);
            }
        }
        let scale = -LOG2E / epsilon;
        let mut k = vec![];
        for (&i, &al) in rows.iter().zip(&alpha) {
            for (&bj, &j) in beta.iter().zip(&cols) {
                k.push(((c[i * m + j] - al - bj) * scale) as f32);
            }
        }
        (alpha, beta, k)
    }

    #[test]
    fn the_parallel_scaled_form_is_the_serial_one_bit_for_bit() {
        let mut rng = SplitMix64::new(11);
        // A pair far above MIN_TASK_ENTRIES with a prefix support (ragged lengths), and one
        // with zero weights inside (gathered columns).
        for (n, m, holes) in [(300, 200, false), (150, 170, true), (3, 2, true)] {
            let cost: Vec<f64> = rng.normals_f32(n * m).iter().map(|&v| v as f64).collect();
            let mut a = vec![1.0; n];
            let mut b = vec![1.0; m];
            if holes {
                a[n / 2] = 0.0;
                b[0] = 0.0;
            } else {
                a[n - 7..].iter_mut().for_each(|v| *v = 0.0);
                b[m - 3..].iter_mut().for_each(|v| *v = 0.0);
            }
            let problem = Problem::new(1, n, m, cost, Some(a), Some(b)).unwrap();
            let got = ScaledPair::new(&problem, 0, 0.05);
            let (alpha, beta, k) = scaled_serially(&problem, 0, 0.05);
            assert_eq!(got.support.alpha, alpha, "{n}x{m}");
            assert_eq!(got.support.beta, beta, "{n}x{m}");
            assert!(
                got.k
                    .iter()
                    .zip(&k)
                    .all(|(x, y)| x.to_bits() == y.to_bits())
                    && got.k.len() == k.len(),
                "{n}x{m}: K differs"
            );
        }
    }
}
