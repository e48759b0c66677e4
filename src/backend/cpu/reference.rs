//! CPU reference kernels: plain loops, `f64` accumulation, one pair at a time. They are the
//! ground truth every other backend is tested against, so clarity wins over speed here.

use crate::error::Result;
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs, Problem};
use crate::ot::sinkhorn::{SinkhornKernels, Solution};

/// The reference backend (`--backend cpu-reference`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuReference;

/// Cosine similarity accumulated in `f64`, clamped to [−1, 1] as every backend's is (a
/// rounding of `x·x / (|x| |x|)` past 1 would make a cost of −2e-16); a zero vector has
/// similarity 0 with everything (so its cost is exactly 1, never NaN).
pub fn cosine_f64(x: &[f32], y: &[f32]) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for (&u, &v) in x.iter().zip(y) {
        let (u, v) = (u as f64, v as f64);
        xy += u * v;
        xx += u * u;
        yy += v * v;
    }
    if xx == 0.0 || yy == 0.0 {
        0.0
    } else {
        (xy / (xx.sqrt() * yy.sqrt())).clamp(-1.0, 1.0)
    }
}

impl CpuReference {
    /// The exp2 throughput probe ([`crate::backend::peak`]) of this single-threaded
    /// backend: one lane, the chains in `f64` through the standard library's `exp2`.
    pub fn exp2_peak(&self, min_exps: u64) -> Result<crate::backend::Exp2Peak> {
        let rounds = crate::backend::Exp2Peak::rounds_for(min_exps, 1)?;
        Ok(crate::backend::Exp2Peak {
            lanes: 1,
            rounds,
            sums: vec![crate::backend::peak::reference_lane(rounds) as f32],
        })
    }

    /// Pairwise cosine cost `C[p, i, j] = 1 − ⟨x_pi, y_pj⟩ / (‖x_pi‖ ‖y_pj‖)` for
    /// `i < x.lengths[p]`, `j < y.lengths[p]`; entries involving padding are 0.
    pub fn cosine_cost(&self, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
        super::check_pair_batch(x, y)?;
        let (b, n, m) = (x.b, x.n, y.n);
        let mut data = vec![0.0f32; b * n * m];
        for p in 0..b {
            for i in 0..x.lengths[p] {
                for j in 0..y.lengths[p] {
                    data[(p * n + i) * m + j] = (1.0 - cosine_f64(x.row(p, i), y.row(p, j))) as f32;
                }
            }
        }
        Ok(CostBatch { b, n, m, data })
    }

    /// MaxSim late-interaction scores `S[q, k] = Σ_{i < len_q} max_{j ∈ doc k} cos(q_i, d_kj)`,
    /// `(queries, documents)` row-major.
    pub fn maxsim(&self, queries: &Embeddings, docs: &PackedDocs) -> Result<Vec<f32>> {
        super::check_maxsim(queries, docs)?;
        let d = docs.d;
        let mut out = vec![0.0f32; queries.b * docs.len()];
        for q in 0..queries.b {
            for k in 0..docs.len() {
                let doc = docs.doc(k);
                let mut total = 0.0f64;
                for i in 0..queries.lengths[q] {
                    let qi = queries.row(q, i);
                    let best = doc
                        .chunks_exact(d)
                        .map(|dj| cosine_f64(qi, dj))
                        .fold(f64::NEG_INFINITY, f64::max);
                    total += best;
                }
                out[q * docs.len() + k] = total as f32;
            }
        }
        Ok(out)
    }
}

/// One pair, restricted to its support (rows/columns of positive weight).
pub struct RefPair {
    rows: Vec<usize>,
    cols: Vec<usize>,
    /// Compact cost `(rows, cols)`.
    cost: Vec<f64>,
    log_a: Vec<f64>,
    log_b: Vec<f64>,
    f: Vec<f64>,
    g: Vec<f64>,
    /// Each row's smallest cost, then each column's smallest of what is left, subtracted
    /// from `cost` (and added back to `f` and `g` at the end).
    row_shift: Vec<f64>,
    col_shift: Vec<f64>,
}

pub struct RefState {
    epsilon: f64,
    pairs: Vec<RefPair>,
}

/// `log Σ_k exp(v_k)`, max-subtracted.
fn logsumexp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

impl RefPair {
    fn update_f(&mut self, eps: f64) {
        let nc = self.cols.len();
        for i in 0..self.rows.len() {
            let row = &self.cost[i * nc..(i + 1) * nc];
            let g = &self.g;
            let lb = &self.log_b;
            self.f[i] = -eps * logsumexp((0..nc).map(|j| lb[j] + (g[j] - row[j]) / eps));
        }
    }

    fn update_g(&mut self, eps: f64) {
        let nc = self.cols.len();
        for j in 0..nc {
            let (f, la, c) = (&self.f, &self.log_a, &self.cost);
            self.g[j] = -eps
                * logsumexp((0..self.rows.len()).map(|i| la[i] + (f[i] - c[i * nc + j]) / eps));
        }
    }

    fn plan_entry(&self, eps: f64, i: usize, j: usize) -> f64 {
        let nc = self.cols.len();
        (self.log_a[i] + self.log_b[j] + (self.f[i] + self.g[j] - self.cost[i * nc + j]) / eps)
            .exp()
    }

    fn row_error(&self, eps: f64) -> f64 {
        (0..self.rows.len())
            .map(|i| {
                let r: f64 = (0..self.cols.len())
                    .map(|j| self.plan_entry(eps, i, j))
                    .sum();
                (r - self.log_a[i].exp()).abs()
            })
            .sum()
    }
}

impl SinkhornKernels for CpuReference {
    type State = RefState;

    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<RefState> {
        let pairs = (0..problem.pairs)
            .map(|p| {
                let (rows, cols) = problem.support(p);
                let c = problem.cost_of(p);
                let mut cost: Vec<f64> = rows
                    .iter()
                    .flat_map(|&i| cols.iter().map(move |&j| c[i * problem.m + j]))
                    .collect();
                // The plan does not change when a row's or a column's constant leaves the
                // cost (the potentials shift by it), but f64 does: with costs of 1e10 +
                // [0, 1) in some rows, `(g − C)/ε` would cancel 1e10-sized terms every update
                // and leave an error floor of ~1e-5 that no number of iterations gets under.
                // Each row's minimum goes, then each column's minimum of the rest (as the
                // fast path shifts), and both go back to the potentials once at the end.
                let nc = cols.len();
                let finite_min = |v: f64, m: f64| if v.is_finite() && v < m { v } else { m };
                let row_shift: Vec<f64> = cost
                    .chunks(nc.max(1))
                    .map(|r| r.iter().fold(f64::INFINITY, |m, &v| finite_min(v, m)))
                    .map(|m| if m.is_finite() { m } else { 0.0 })
                    .collect();
                for (r, &s) in cost.chunks_mut(nc.max(1)).zip(&row_shift) {
                    for v in r {
                        *v -= s;
                    }
                }
                let col_shift: Vec<f64> = (0..nc)
                    .map(|j| {
                        (0..rows.len()).fold(f64::INFINITY, |m, i| finite_min(cost[i * nc + j], m))
                    })
                    .map(|m| if m.is_finite() { m } else { 0.0 })
                    .collect();
                for r in cost.chunks_mut(nc.max(1)) {
                    for (v, &s) in r.iter_mut().zip(&col_shift) {
                        *v -= s;
                    }
                }
                let log_a = rows
                    .iter()
                    .map(|&i| problem.a[p * problem.n + i].ln())
                    .collect();
                let log_b = cols
                    .iter()
                    .map(|&j| problem.b[p * problem.m + j].ln())
                    .collect();
                RefPair {
                    f: vec![0.0; rows.len()],
                    // The unshifted iteration starts from g = 0: shifted, that is −β.
                    g: col_shift.iter().map(|&b| -b).collect(),
                    rows,
                    cols,
                    cost,
                    log_a,
                    log_b,
                    row_shift,
                    col_shift,
                }
            })
            .collect();
        Ok(RefState { epsilon, pairs })
    }

    fn iterate(&self, state: &mut RefState, active: &[bool], iterations: usize) -> Result<()> {
        let eps = state.epsilon;
        for (pair, _) in state.pairs.iter_mut().zip(active).filter(|(_, &a)| a) {
            for _ in 0..iterations {
                pair.update_f(eps);
                pair.update_g(eps);
            }
        }
        Ok(())
    }

    fn marginal_errors(&self, state: &mut RefState, active: &[bool]) -> Result<Vec<f64>> {
        let eps = state.epsilon;
        Ok(state
            .pairs
            .iter()
            .zip(active)
            .map(|(pair, &a)| if a { pair.row_error(eps) } else { 0.0 })
            .collect())
    }

    fn finish(&self, state: RefState, problem: &Problem) -> Result<Solution> {
        let (n, m, eps) = (problem.n, problem.m, state.epsilon);
        let mut sol = Solution {
            plan: vec![0.0; problem.pairs * n * m],
            f: vec![0.0; problem.pairs * n],
            g: vec![0.0; problem.pairs * m],
            cost: vec![0.0; problem.pairs],
        };
        for (p, pair) in state.pairs.iter().enumerate() {
            let c = problem.cost_of(p);
            let mut total = 0.0;
            for (ci, &i) in pair.rows.iter().enumerate() {
                sol.f[p * n + i] = pair.f[ci] + pair.row_shift[ci];
                for (cj, &j) in pair.cols.iter().enumerate() {
                    let v = pair.plan_entry(eps, ci, cj);
                    sol.plan[(p * n + i) * m + j] = v;
                    total += v * c[i * m + j];
                }
            }
            for (cj, &j) in pair.cols.iter().enumerate() {
                sol.g[p * m + j] = pair.g[cj] + pair.col_shift[cj];
            }
            sol.cost[p] = total;
        }
        Ok(sol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_with_itself_costs_zero_not_less() {
        let mut rng = crate::rng::SplitMix64::new(5);
        let mut rounded_past_one = 0;
        for _ in 0..2000 {
            let x: Vec<f32> = (0..7).map(|_| rng.uniform() as f32 - 0.5).collect();
            let (xy, xx) = x.iter().fold((0.0f64, 0.0f64), |(a, b), &v| {
                let v = v as f64;
                (a + v * v, b + v * v)
            });
            rounded_past_one += usize::from(xy / (xx.sqrt() * xx.sqrt()) > 1.0);
            let c = cosine_f64(&x, &x);
            assert!((-1.0..=1.0).contains(&c), "{c}");
        }
        // The case the clamp is for does occur.
        assert!(rounded_past_one > 0);
    }
}
