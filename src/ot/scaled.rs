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
    pub fn new(problem: &Problem, p: usize, epsilon: f64) -> ScaledPair {
        let (rows, cols) = problem.support(p);
        let (nc, m) = (cols.len(), problem.m);
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
        let k = cs
            .chunks_exact(nc)
            .flat_map(|r| {
                r.iter()
                    .zip(&beta)
                    .map(|(&v, &bj)| ((v - bj) * scale) as f32)
            })
            .collect();
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
    let mut sol = Solution {
        plan: vec![0.0; pairs * n * m],
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
