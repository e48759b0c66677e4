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

    /// Several rounds of [`iterate`](Self::iterate) then a check, with the stopping rule
    /// applied on the device, for backends whose every read-back costs a synchronisation
    /// (a GPU): round `k` runs `chunks[k]` iterations on the pairs still active, computes
    /// their marginal errors as [`marginal_errors`](Self::marginal_errors) does, and stops
    /// each pair whose error is at most `threshold` (converged) or not finite, exactly as
    /// [`solve`] does on the host after a check, comparing the error in the backend's
    /// precision as `solve` would after widening it to `f64`. The rounds run without a
    /// read-back; what they did is read back once at the end. The backend may run fewer
    /// rounds than asked (at least one): it returns how many it ran and, for every pair,
    /// what it did in them. `None` (the default): the backend checks on the host, one
    /// read-back per round, and `solve` calls the other primitives.
    fn iterate_checked(
        &self,
        _state: &mut Self::State,
        _active: &[bool],
        _chunks: &[usize],
        _threshold: f64,
    ) -> Result<Option<CheckedRounds>> {
        Ok(None)
    }
}

/// What [`SinkhornKernels::iterate_checked`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedRounds {
    /// Rounds run: the first `rounds` of the chunks asked for.
    pub rounds: usize,
    /// Per pair (every pair of the batch).
    pub pairs: Vec<Checked>,
}

/// What one pair did in the rounds of [`SinkhornKernels::iterate_checked`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Checked {
    /// Checks it took part in (0 for a pair inactive from the start): it was active in the
    /// first `checks` rounds.
    pub checks: usize,
    /// Its error at its last check (anything when `checks` is 0).
    pub error: f64,
    /// Why it stopped, if it did.
    pub stop: Stop,
}

impl Checked {
    /// A pair's `(checks, error bits, stop, -)`, as the devices' stopping-rule kernels
    /// write it (`shaders/sinkhorn_retire.wgsl`, `sinkhorn_retire_f32`; stop 0: running,
    /// 1: converged, 2: not finite). `s` holds at least 3 words.
    pub(crate) fn from_status(s: &[u32]) -> Checked {
        Checked {
            checks: s[0] as usize,
            error: f32::from_bits(s[1]) as f64,
            stop: match s[2] {
                0 => Stop::Running,
                1 => Stop::Converged,
                _ => Stop::NotFinite,
            },
        }
    }
}

/// Whether and why a pair stopped at a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Still active after the last round.
    Running,
    /// Its error fell to the threshold.
    Converged,
    /// Its error was NaN or infinite: it cannot recover (the solve then fails, naming the
    /// pair, in `check_finite`).
    NotFinite,
}

/// The stopping rule after a check: converged at or below the threshold, else stopped
/// when the error is not finite. The devices' kernels apply it to the error's `f32` bits
/// (see [`f32_floor`]).
pub fn stop_rule(error: f64, threshold: f64) -> Stop {
    if error <= threshold {
        Stop::Converged
    } else if !error.is_finite() {
        Stop::NotFinite
    } else {
        Stop::Running
    }
}

/// One round checked on the host: `iterations` iterations of the active pairs, their
/// errors read back, and [`stop_rule`] applied (what [`solve`] does when the backend's
/// [`SinkhornKernels::iterate_checked`] answers `None`).
fn check_on_host<K: SinkhornKernels>(
    kernels: &K,
    state: &mut K::State,
    active: &[bool],
    iterations: usize,
    threshold: f64,
) -> Result<Vec<Checked>> {
    let iterate = phases::phase("iterate");
    kernels.iterate(state, active, iterations)?;
    drop(iterate);
    let check = phases::phase("check");
    let errs = kernels.marginal_errors(state, active)?;
    drop(check);
    if errs.len() != active.len() {
        return Err(Error::Backend {
            backend: "solver",
            operation: "marginal_errors",
            what: format!("expected {} errors, found {}", active.len(), errs.len()),
        });
    }
    Ok(errs
        .iter()
        .zip(active)
        .map(|(&error, &a)| Checked {
            checks: a as usize,
            error,
            stop: if a {
                stop_rule(error, threshold)
            } else {
                Stop::Running
            },
        })
        .collect())
}

/// The largest `f32` whose value is at most `threshold` (≥ 0, finite, or +∞): for a
/// non-negative `f32` error `e`, `e as f64 <= threshold` exactly when `e <= f32_floor(threshold)`,
/// and for non-negative `f32`s that order is the order of their bits. So a device compares
/// an error's bits with this value's and decides as the host would.
pub fn f32_floor(threshold: f64) -> f32 {
    let t = threshold as f32;
    if (t as f64) <= threshold || t <= 0.0 {
        t
    } else {
        f32::from_bits(t.to_bits() - 1)
    }
}

/// Rounds in the first device-side batch, and the most in one: each batch doubles the
/// last, so a solve of `k` checks reads back ≈ log₂ k times, and a batch runs at most as
/// many rounds past the last pair's convergence as the batch before it had (rounds with
/// nothing active cost a dispatch that returns at once).
const FIRST_ROUNDS: usize = 1;
const MAX_ROUNDS: usize = 32;

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
    /// Whether the pair's marginal error was at most the threshold at a check (in the
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

/// Solve every pair of `problem` with the backend's kernels. This is the solver alone:
/// [`crate::backend::Backend::sinkhorn`] also refuses costs too large for ε to resolve
/// ([`crate::ot::problem::check_cost_resolution`]) and problems too large for the memory.
pub fn solve<K: SinkhornKernels>(
    kernels: &K,
    problem: &Problem,
    params: &SinkhornParams,
) -> Result<SinkhornOutput> {
    params.validate()?;
    let prepare = phases::phase("prepare");
    let mut state = kernels.prepare(problem, params.epsilon)?;
    drop(prepare);
    let Stopped {
        iterations,
        converged,
        errors,
    } = iterate_to_stop(kernels, &mut state, problem.pairs, params)?;
    let finish = phases::phase("finish");
    let sol = kernels.finish(state, problem)?;
    drop(finish);
    let (pairs, n, m) = (problem.pairs, problem.n, problem.m);
    for (what, len, want) in [
        ("plan", sol.plan.len(), pairs * n * m),
        ("f", sol.f.len(), pairs * n),
        ("g", sol.g.len(), pairs * m),
        ("cost", sol.cost.len(), pairs),
    ] {
        if len != want {
            return Err(Error::Backend {
                backend: "solver",
                operation: "finish",
                what: format!(
                    "expected {want} values of {what} for ({pairs}, {n}, {m}), found {len}"
                ),
            });
        }
    }
    let mut out = SinkhornOutput {
        pairs: problem.pairs,
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

/// Where [`iterate_to_stop`] left each pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Stopped {
    /// Iterations run, per pair.
    pub iterations: Vec<u32>,
    /// Whether the pair met the threshold.
    pub converged: Vec<bool>,
    /// The pair's marginal error at its last check.
    pub errors: Vec<f64>,
}

/// The solver's loop over a prepared state of `pairs` pairs: chunks of `check_every`
/// iterations, each followed by the stopping rule, until every pair stopped or
/// `max_iterations` ran. [`solve`] is this between `prepare` and `finish`; a device bench
/// runs it alone to time a checked solve from inputs already on the device.
pub fn iterate_to_stop<K: SinkhornKernels>(
    kernels: &K,
    state: &mut K::State,
    pairs: usize,
    params: &SinkhornParams,
) -> Result<Stopped> {
    params.validate()?;
    let mut active = vec![true; pairs];
    let mut iterations = vec![0u32; pairs];
    let mut converged = vec![false; pairs];
    let mut errors = vec![f64::INFINITY; pairs];
    let mut done = 0usize;
    let mut rounds = FIRST_ROUNDS;
    while done < params.max_iterations && active.iter().any(|&a| a) {
        // The next rounds' iterations: check_every each, the last one cut at max_iterations.
        let mut chunks = Vec::with_capacity(rounds);
        let mut end = done;
        while chunks.len() < rounds && end < params.max_iterations {
            let chunk = params.check_every.min(params.max_iterations - end);
            chunks.push(chunk);
            end += chunk;
        }
        let (ran, checked) =
            match kernels.iterate_checked(state, &active, &chunks, params.threshold)? {
                Some(c) if c.rounds == 0 || c.rounds > chunks.len() || c.pairs.len() != pairs => {
                    return Err(Error::Backend {
                        backend: "solver",
                        operation: "iterate_checked",
                        what: format!(
                            "expected 1 to {} rounds and {pairs} pairs, found {} and {}",
                            chunks.len(),
                            c.rounds,
                            c.pairs.len()
                        ),
                    });
                }
                Some(c) => {
                    rounds = (rounds * 2).min(MAX_ROUNDS);
                    (c.rounds, c.pairs)
                }
                None => (
                    1,
                    check_on_host(kernels, state, &active, chunks[0], params.threshold)?,
                ),
            };
        for (p, c) in checked.iter().enumerate() {
            if !active[p] || c.checks == 0 {
                continue;
            }
            let checks = c.checks.min(ran);
            iterations[p] = (done + chunks[..checks].iter().sum::<usize>()) as u32;
            errors[p] = c.error;
            match c.stop {
                Stop::Running => {}
                Stop::Converged => {
                    converged[p] = true;
                    active[p] = false;
                }
                Stop::NotFinite => active[p] = false,
            }
        }
        done += chunks[..ran].iter().sum::<usize>();
    }
    Ok(Stopped {
        iterations,
        converged,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuFast;
    use crate::rng::SplitMix64;

    #[test]
    fn f32_floor_decides_as_the_f64_comparison() {
        let mut rng = SplitMix64::new(5);
        let mut thresholds = vec![0.0, 1e-300, 1e-45, 1e-6, 0.1, 1.0, 3.4e38, 1e300, f64::MAX];
        thresholds.extend((0..200).map(|_| 10f64.powf(-12.0 * rng.uniform())));
        for t in thresholds {
            let floor = f32_floor(t);
            assert!(floor as f64 <= t, "{t:e} -> {floor:e}");
            let up = f32::from_bits(floor.to_bits() + 1);
            assert!(
                up as f64 > t || floor == f32::MAX,
                "{t:e} -> {floor:e}, not the largest"
            );
            // Errors around it: the bit comparison is the host's.
            for bits in floor.to_bits().saturating_sub(2)..=floor.to_bits() + 2 {
                let e = f32::from_bits(bits);
                assert_eq!(
                    e.to_bits() <= floor.to_bits(),
                    e as f64 <= t,
                    "threshold {t:e}, error {e:e}"
                );
            }
        }
        assert_eq!(f32_floor(f64::INFINITY), f32::INFINITY);
    }

    /// The CPU fast path with the stopping rule applied "on the device": several rounds per
    /// call, the last call cut short of the rounds asked, as a backend may.
    struct Rounds(CpuFast);

    impl SinkhornKernels for Rounds {
        type State = <CpuFast as SinkhornKernels>::State;

        fn prepare(&self, problem: &Problem, epsilon: f64) -> Result<Self::State> {
            self.0.prepare(problem, epsilon)
        }

        fn iterate(&self, state: &mut Self::State, active: &[bool], n: usize) -> Result<()> {
            self.0.iterate(state, active, n)
        }

        fn marginal_errors(&self, state: &mut Self::State, active: &[bool]) -> Result<Vec<f64>> {
            self.0.marginal_errors(state, active)
        }

        fn finish(&self, state: Self::State, problem: &Problem) -> Result<Solution> {
            self.0.finish(state, problem)
        }

        fn iterate_checked(
            &self,
            state: &mut Self::State,
            active: &[bool],
            chunks: &[usize],
            threshold: f64,
        ) -> Result<Option<CheckedRounds>> {
            let mut active = active.to_vec();
            let mut pairs = vec![
                Checked {
                    checks: 0,
                    error: 0.0,
                    stop: Stop::Running,
                };
                active.len()
            ];
            // At most 5 rounds per call, so that the solver resumes mid-schedule.
            let rounds = chunks.len().min(5);
            for &chunk in &chunks[..rounds] {
                self.0.iterate(state, &active, chunk)?;
                let errs = self.0.marginal_errors(state, &active)?;
                for (p, c) in pairs.iter_mut().enumerate() {
                    if !active[p] {
                        continue;
                    }
                    c.checks += 1;
                    c.error = errs[p];
                    c.stop = stop_rule(errs[p], threshold);
                    active[p] = c.stop == Stop::Running;
                }
            }
            Ok(Some(CheckedRounds { rounds, pairs }))
        }
    }

    fn random_problem(seed: u64, b: usize, n: usize, m: usize) -> Problem {
        let mut rng = SplitMix64::new(seed);
        let cost: Vec<f64> = (0..b * n * m).map(|_| rng.uniform()).collect();
        let a: Vec<f64> = (0..b * n).map(|_| 0.2 + rng.uniform()).collect();
        Problem::new(b, n, m, cost, Some(a), None).unwrap()
    }

    #[test]
    fn checks_in_rounds_give_what_checks_one_by_one_give() {
        // Pairs that converge at different checks, some never (max_iterations not a
        // multiple of check_every, so the last round is shorter), over schedules of up to
        // 32 rounds that the backend cuts at 5.
        for (seed, epsilon, threshold, check_every, max_iterations) in [
            (1, 0.05, 1e-4, 3, 400),
            (2, 0.01, 1e-6, 1, 250),
            (3, 0.05, 1e-7, 7, 100),
            (4, 0.005, 1e-9, 10, 95),
        ] {
            let problem = random_problem(seed, 6, 9, 13);
            let params = SinkhornParams {
                epsilon,
                max_iterations,
                threshold,
                check_every,
            };
            let one = solve(&CpuFast, &problem, &params).unwrap();
            let rounds = solve(&Rounds(CpuFast), &problem, &params).unwrap();
            assert_eq!(one.iterations, rounds.iterations, "seed {seed}");
            assert_eq!(one.converged, rounds.converged, "seed {seed}");
            assert_eq!(one.marginal_error, rounds.marginal_error, "seed {seed}");
            assert_eq!(one.plan, rounds.plan, "seed {seed}");
            assert_eq!((one.f, one.g), (rounds.f, rounds.g), "seed {seed}");
            let distinct: std::collections::BTreeSet<_> = one.iterations.iter().collect();
            println!("seed {seed}: iterations {:?}", one.iterations);
            assert!(
                seed == 4 || distinct.len() > 1,
                "pairs stop at different checks"
            );
        }
    }

    /// A backend that claims more rounds than it was asked for is an error, not a count
    /// of iterations nobody ran.
    #[test]
    fn a_backend_that_claims_too_many_rounds_is_an_error() {
        struct Liar;
        impl SinkhornKernels for Liar {
            type State = ();
            fn prepare(&self, _: &Problem, _: f64) -> Result<()> {
                Ok(())
            }
            fn iterate(&self, _: &mut (), _: &[bool], _: usize) -> Result<()> {
                Ok(())
            }
            fn marginal_errors(&self, _: &mut (), a: &[bool]) -> Result<Vec<f64>> {
                Ok(vec![1.0; a.len()])
            }
            fn finish(&self, _: (), _: &Problem) -> Result<Solution> {
                unreachable!()
            }
            fn iterate_checked(
                &self,
                _: &mut (),
                active: &[bool],
                chunks: &[usize],
                _: f64,
            ) -> Result<Option<CheckedRounds>> {
                Ok(Some(CheckedRounds {
                    rounds: chunks.len() + 1,
                    pairs: vec![
                        Checked {
                            checks: 1,
                            error: 1.0,
                            stop: Stop::Running
                        };
                        active.len()
                    ],
                }))
            }
        }
        let problem = random_problem(9, 2, 3, 3);
        let err = solve(&Liar, &problem, &SinkhornParams::default()).unwrap_err();
        assert!(err.to_string().contains("expected 1 to 1 rounds"), "{err}");
    }

    /// A backend whose output is not of the problem's shape is an error naming the part,
    /// never a solution whose plan is read past its end.
    #[test]
    fn a_backend_output_of_the_wrong_shape_is_an_error() {
        struct Short(usize);
        impl SinkhornKernels for Short {
            type State = ();
            fn prepare(&self, _: &Problem, _: f64) -> Result<()> {
                Ok(())
            }
            fn iterate(&self, _: &mut (), _: &[bool], _: usize) -> Result<()> {
                Ok(())
            }
            fn marginal_errors(&self, _: &mut (), a: &[bool]) -> Result<Vec<f64>> {
                Ok(vec![0.0; a.len()])
            }
            fn finish(&self, _: (), p: &Problem) -> Result<Solution> {
                let mut sol = Solution {
                    plan: vec![0.0; p.pairs * p.n * p.m],
                    f: vec![0.0; p.pairs * p.n],
                    g: vec![0.0; p.pairs * p.m],
                    cost: vec![0.0; p.pairs],
                };
                [&mut sol.plan, &mut sol.f, &mut sol.g, &mut sol.cost][self.0].pop();
                Ok(sol)
            }
        }
        let problem = random_problem(3, 2, 3, 4);
        for (part, want) in [
            (0, "expected 24 values of plan for (2, 3, 4), found 23"),
            (1, "expected 6 values of f for (2, 3, 4), found 5"),
            (2, "expected 8 values of g for (2, 3, 4), found 7"),
            (3, "expected 2 values of cost for (2, 3, 4), found 1"),
        ] {
            let err = solve(&Short(part), &problem, &SinkhornParams::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "expected {want:?} in {err}");
        }
    }
}
