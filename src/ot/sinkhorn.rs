//! Batched entropic Sinkhorn in the log domain: the control logic, written once.
//!
//! # The iteration
//!
//! With potentials `f (n)`, `g (m)` the plan of a pair is
//!
//! ```text
//! P_ij = a_i · b_j · exp((f_i + g_j − C_ij) / ε)
//! ```
//!
//! and one iteration is two soft-min (log-sum-exp) reductions, rows first:
//!
//! ```text
//! f_i ← −ε · LSE_j( log b_j + (g_j − C_ij) / ε )      (row marginals become exact)
//! g_j ← −ε · LSE_i( log a_i + (f_i − C_ij) / ε )      (column marginals become exact)
//! ```
//!
//! starting from `f = g = 0`. After the column update the column marginals are exact, so a
//! pair's error is the L1 error of its row marginal, `Σ_i |Σ_j P_ij − a_i|`. It is tested
//! every `check_every` iterations and at `max_iterations`; a pair whose error is below
//! `threshold` is marked converged and stops (other pairs go on). A pair that hits
//! `max_iterations` keeps its last iterate and is flagged `converged = false`: that is a
//! result, not an error.
//!
//! Rows and columns of zero weight are padding: they take no part in the iteration, their
//! potentials are reported as 0 and their plan entries are exactly 0, so a padded pair's
//! solution equals that of the unpadded problem.
//!
//! Backends supply the reductions through [`SinkhornKernels`]; this module owns everything
//! else (schedule, per-pair stopping, iteration counts, the output).

use crate::error::{Error, Result};
use crate::ot::problem::{Problem, SinkhornParams};
use crate::phases;

/// What a backend supplies to the solver. A backend keeps its per-batch working data
/// (compacted and rescaled costs, potentials, device buffers) in `State`.
pub trait SinkhornKernels {
    type State;

    /// Prepare the working data of a batch (for example: gather each pair's support,
    /// rescale the cost, upload it).
    fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<Self::State>;

    /// Run `iterations` full iterations (row update, then column update) on the pairs with
    /// `active[p] == true`; the others must not change.
    fn iterate(&self, state: &mut Self::State, active: &[bool], iterations: usize) -> Result<()>;

    /// The L1 row-marginal error of the current plan of every active pair (inactive pairs:
    /// any value). Must not change the current iterate.
    fn marginal_errors(&self, state: &mut Self::State, active: &[bool]) -> Result<Vec<f64>>;

    /// The plan `(b, n, m)`, potentials `f (b, n)`, `g (b, m)` and the transport cost
    /// `⟨P, C⟩ (b)` of the current iterate, padding included (zeros).
    fn finish(&self, state: Self::State, problem: &Problem) -> Result<Solution>;
}

/// The arrays a backend hands back from [`SinkhornKernels::finish`].
#[derive(Clone, Debug)]
pub struct Solution {
    pub plan: Vec<f64>,
    pub f: Vec<f64>,
    pub g: Vec<f64>,
    pub cost: Vec<f64>,
}

/// Output of a batched solve.
#[derive(Clone, Debug)]
pub struct SinkhornOutput {
    pub pairs: usize,
    pub n: usize,
    pub m: usize,
    /// Transport plans `(pairs, n, m)`.
    pub plan: Vec<f64>,
    /// Row potentials `(pairs, n)` (0 on padding).
    pub f: Vec<f64>,
    /// Column potentials `(pairs, m)` (0 on padding).
    pub g: Vec<f64>,
    /// Transport cost `⟨P, C⟩` per pair.
    pub cost: Vec<f64>,
    /// Iterations run per pair.
    pub iterations: Vec<u32>,
    /// Whether the pair's marginal error fell below the threshold at a check (in the
    /// backend's precision: see `marginal_error`).
    pub converged: Vec<bool>,
    /// L1 row-marginal error: the larger of the last check's and the returned plan's. They
    /// differ on the `f32` backends, whose potentials are `f32`: their rounding (about
    /// 2⁻²⁴ of cost range / ε in log units) caps how well the plan's rows can match, so a
    /// check that reads 0 in `f32` at ε = 1e-4 came with a plan whose rows were off by
    /// 1.7e-5. Such a pair is `converged` with an error above the threshold.
    pub marginal_error: Vec<f64>,
}

impl SinkhornOutput {
    pub fn converged_count(&self) -> usize {
        self.converged.iter().filter(|&&c| c).count()
    }

    /// Raise each pair's `marginal_error` to its plan's L1 row-marginal error against `a`
    /// (`(pairs, n)`, 0 on padding rows), computed in `f64` from the returned plan.
    pub fn include_plan_errors(&mut self, a: &[f64]) {
        use rayon::prelude::*;
        let (n, m) = (self.n, self.m);
        self.marginal_error
            .par_iter_mut()
            .zip(self.plan.par_chunks(n * m))
            .zip(a.par_chunks(n))
            .for_each(|((err, plan), a)| {
                let plan_err: f64 = plan
                    .chunks(m)
                    .zip(a)
                    .map(|(row, &ai)| (row.iter().sum::<f64>() - ai).abs())
                    .sum();
                // NaN stays NaN (f64::max would drop it).
                if plan_err > *err || plan_err.is_nan() {
                    *err = plan_err;
                }
            });
    }

    /// The largest marginal error (NaN if any is NaN: `f64::max` would skip it).
    pub fn max_marginal_error(&self) -> f64 {
        self.marginal_error.iter().copied().fold(0.0, |acc, e| {
            if e.is_nan() || acc.is_nan() {
                f64::NAN
            } else {
                acc.max(e)
            }
        })
    }

    /// An error naming the first pair whose solution is not finite (potentials, marginal
    /// error, or the transport cost `⟨P, C⟩`, which is NaN or infinite when any entry of the
    /// plan is, so the plan needs no scan of its own). Inputs are checked finite, so this happens only when
    /// the iteration overflows: `ε` too small for the cost's range (Sinkhorn works with
    /// `C / ε`, and the `f32` backends overflow near 3.4e38).
    pub fn check_finite(&self, epsilon: f64) -> Result<()> {
        let (n, m) = (self.n, self.m);
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let bad = (0..self.pairs).find(|&p| {
            !(self.marginal_error[p].is_finite()
                && self.cost[p].is_finite()
                && finite(&self.f[p * n..(p + 1) * n])
                && finite(&self.g[p * m..(p + 1) * m]))
        });
        match bad {
            None => Ok(()),
            Some(p) => Err(Error::value(
                "sinkhorn",
                format!(
                    "pair {p}: expected a finite solution, found NaN or infinity after {} \
                     iterations (marginal error {}): ε = {epsilon:e} is too small for the \
                     cost's range (Sinkhorn divides the cost by ε); raise ε or rescale the cost",
                    self.iterations[p], self.marginal_error[p]
                ),
            )),
        }
    }

    /// Plan of pair `p`, `(n, m)` row-major.
    pub fn plan_of(&self, p: usize) -> &[f64] {
        &self.plan[p * self.n * self.m..(p + 1) * self.n * self.m]
    }
}

/// Solve every pair of `problem` with the backend's kernels.
pub fn solve<K: SinkhornKernels>(
    kernels: &K,
    problem: &Problem,
    params: &SinkhornParams,
) -> Result<SinkhornOutput> {
    params.validate()?;
    let pairs = problem.pairs;
    let prepare = phases::phase("prepare");
    let mut state = kernels.prepare(problem, params.epsilon)?;
    drop(prepare);
    let mut active = vec![true; pairs];
    let mut iterations = vec![0u32; pairs];
    let mut converged = vec![false; pairs];
    let mut errors = vec![f64::INFINITY; pairs];
    let mut done = 0usize;
    while done < params.max_iterations && active.iter().any(|&a| a) {
        let chunk = params.check_every.min(params.max_iterations - done);
        let iterate = phases::phase("iterate");
        kernels.iterate(&mut state, &active, chunk)?;
        drop(iterate);
        done += chunk;
        let check = phases::phase("check");
        let errs = kernels.marginal_errors(&mut state, &active)?;
        drop(check);
        if errs.len() != pairs {
            return Err(Error::Backend {
                backend: "solver",
                operation: "marginal_errors",
                what: format!("expected {pairs} errors, found {}", errs.len()),
            });
        }
        for p in 0..pairs {
            if !active[p] {
                continue;
            }
            iterations[p] = done as u32;
            errors[p] = errs[p];
            if errs[p] <= params.threshold {
                converged[p] = true;
                active[p] = false;
            } else if !errs[p].is_finite() {
                // A non-finite error cannot recover: stop the pair (the solve then fails,
                // naming it, in `check_finite`).
                active[p] = false;
            }
        }
    }
    let finish = phases::phase("finish");
    let sol = kernels.finish(state, problem)?;
    drop(finish);
    let mut out = SinkhornOutput {
        pairs,
        n: problem.n,
        m: problem.m,
        plan: sol.plan,
        f: sol.f,
        g: sol.g,
        cost: sol.cost,
        iterations,
        converged,
        marginal_error: errors,
    };
    out.include_plan_errors(&problem.a);
    out.check_finite(params.epsilon)?;
    Ok(out)
}
