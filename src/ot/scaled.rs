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

/// Map scaled potentials back: `f`, `g` in cost units (0 on padding), the `f64` plan
/// `P_ij = a_i b_j 2^(F_i + G_j + K_ij)` with `K` recomputed from the `f64` cost, and
/// `⟨P, C⟩`. `scaled(p)` gives pair `p`'s support and its `F`, `G` on that support.
pub fn solution<'a, S>(problem: &Problem, epsilon: f64, scaled: S) -> Solution
where
    S: Fn(usize) -> (&'a Support, &'a [f32], &'a [f32]) + Sync,
{
    let (n, m) = (problem.n, problem.m);
    let mut sol = Solution {
        plan: vec![0.0; problem.pairs * n * m],
        f: vec![0.0; problem.pairs * n],
        g: vec![0.0; problem.pairs * m],
        cost: vec![0.0; problem.pairs],
    };
    sol.plan
        .par_chunks_mut(n * m)
        .zip(sol.f.par_chunks_mut(n))
        .zip(sol.g.par_chunks_mut(m))
        .zip(sol.cost.par_iter_mut())
        .enumerate()
        .for_each(|(p, (((plan, f), g), total))| {
            let (s, big_f, big_g) = scaled(p);
            let c = problem.cost_of(p);
            for (ci, &i) in s.rows.iter().enumerate() {
                f[i] = big_f[ci] as f64 * epsilon / LOG2E + s.alpha[ci];
                let a = problem.a[p * n + i];
                for (cj, &j) in s.cols.iter().enumerate() {
                    let k = -(c[i * m + j] - s.alpha[ci] - s.beta[cj]) * LOG2E / epsilon;
                    let e = big_f[ci] as f64 + big_g[cj] as f64 + k;
                    let v = a * problem.b[p * m + j] * e.exp2();
                    plan[i * m + j] = v;
                    *total += v * c[i * m + j];
                }
            }
            for (cj, &j) in s.cols.iter().enumerate() {
                g[j] = big_g[cj] as f64 * epsilon / LOG2E + s.beta[cj];
            }
        });
    sol
}
