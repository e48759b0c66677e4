//! The exp2 throughput probe: the rate at which a backend evaluates `2^x` with nothing else
//! to do, measured the same way on every backend ([`super::Backend::exp2_peak`]).
//!
//! The Sinkhorn kernels' floors in `docs/PERFORMANCE.md` are stated against an
//! exponential rate (16 `ex2` per clock and SM on NVIDIA's Ampere and Hopper; the CPU's
//! vector polynomial from its µop count). This probe measures that rate on the machine at
//! hand, as the HBM copy bandwidth is measured for the cost kernels: `optical bench
//! --kernels exp2-peak`.
//!
//! Every lane runs [`CHAINS`] independent chains `v ← 2^(−v)`, chain `c` from
//! `(c + 1) / 16`, [`STEPS`] steps per round, and reports the sum of its chains' last
//! values. The map takes `[0, 1]` into `[½, 1]`, where it contracts (slope at most
//! `ln 2 / √2`), so every chain converges to the fixed point `v* = 2^(−v*)`
//! ([`FIXED_POINT`]) and the approximations of `2^x` that the backends use (a few ulps)
//! cannot drift: after two rounds every sum is within [`SUM_TOLERANCE`] of `8 v*`, which
//! [`Exp2Peak::check`] tests, so a probe that did not run its chains is caught.

use crate::error::{Error, Result};

/// Independent chains per lane (enough to cover the exponential's latency).
pub const CHAINS: usize = 8;
/// Steps of every chain per round.
pub const STEPS: usize = 8;
/// `v* = 2^(−v*)`, the chains' limit.
pub const FIXED_POINT: f64 = 0.641_185_744_504_985_9;
/// How far a lane's sum may lie from `CHAINS · v*` after at least [`MIN_ROUNDS`] rounds:
/// the iteration's own distance after 16 steps is below 2e-6 per chain; the rest is room
/// for `f32` rounding and approximate `2^x`.
pub const SUM_TOLERANCE: f32 = 1e-4;
/// The fewest rounds a probe runs, so that its result can be checked.
pub const MIN_ROUNDS: u32 = 2;

/// What one probe ran and returned.
#[derive(Clone, Debug)]
pub struct Exp2Peak {
    /// Lanes (GPU threads, or CPU vector lanes across all threads).
    pub lanes: usize,
    /// Rounds of [`STEPS`] steps of every chain.
    pub rounds: u32,
    /// Each lane's sum of its chains' last values.
    pub sums: Vec<f32>,
}

impl Exp2Peak {
    /// Rounds that make `lanes` lanes evaluate at least `min_exps` exponentials (at least
    /// [`MIN_ROUNDS`]).
    pub fn rounds_for(min_exps: u64, lanes: usize) -> Result<u32> {
        let per_round = (lanes * CHAINS * STEPS) as u64;
        if per_round == 0 {
            return Err(Error::parameter("exp2 probe lanes", "at least 1", lanes));
        }
        u32::try_from(min_exps.div_ceil(per_round).max(MIN_ROUNDS as u64)).map_err(|_| {
            Error::parameter(
                "exp2 probe size",
                format!("at most {} exponentials", per_round * u32::MAX as u64),
                min_exps,
            )
        })
    }

    /// Exponentials evaluated.
    pub fn exps(&self) -> f64 {
        (self.lanes * CHAINS * STEPS) as f64 * self.rounds as f64
    }

    /// The largest distance of a lane's sum from the `f64` reference's
    /// ([`reference_lane`] of the same rounds): the accuracy of the backend's `2^x`.
    pub fn max_error(&self) -> f64 {
        let want = reference_lane(self.rounds);
        self.sums
            .iter()
            .map(|&s| (s as f64 - want).abs())
            .fold(0.0, f64::max)
    }

    /// Every lane's sum near `CHAINS · v*` (and one sum per lane): the chains ran.
    pub fn check(&self, backend: &'static str) -> Result<()> {
        let expected = (CHAINS as f64 * FIXED_POINT) as f32;
        let bad = self
            .sums
            .iter()
            .position(|s| (s - expected).abs() > SUM_TOLERANCE || s.is_nan());
        if self.sums.len() != self.lanes || self.rounds < MIN_ROUNDS {
            return Err(Error::Backend {
                backend,
                operation: "exp2 probe",
                what: format!(
                    "expected {} lane sums after at least {MIN_ROUNDS} rounds, found {} after {}",
                    self.lanes,
                    self.sums.len(),
                    self.rounds
                ),
            });
        }
        match bad {
            None => Ok(()),
            Some(i) => Err(Error::Backend {
                backend,
                operation: "exp2 probe",
                what: format!(
                    "lane {i} of {} returned {} where the chains converge to {expected} (± {SUM_TOLERANCE})",
                    self.lanes, self.sums[i]
                ),
            }),
        }
    }
}

/// One lane's chains in `f64` with the standard library's `exp2`: the reference every
/// backend's probe is checked against, and the `cpu-reference` backend's probe.
pub fn reference_lane(rounds: u32) -> f64 {
    let mut v: [f64; CHAINS] = std::array::from_fn(|c| (c + 1) as f64 / 16.0);
    for _ in 0..rounds as usize * STEPS {
        for x in v.iter_mut() {
            *x = (-*x).exp2();
        }
    }
    v.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chains_converge_to_the_fixed_point() {
        assert!((FIXED_POINT - (-FIXED_POINT).exp2()).abs() < 1e-15);
        assert_eq!(reference_lane(0), 2.25);
        let after = reference_lane(MIN_ROUNDS);
        assert!((after - 8.0 * FIXED_POINT).abs() < 2e-5, "{after}");
        assert!((reference_lane(1) - 8.0 * FIXED_POINT).abs() > SUM_TOLERANCE as f64);
    }

    #[test]
    fn rounds_cover_the_requested_work() {
        assert_eq!(Exp2Peak::rounds_for(0, 4).unwrap(), MIN_ROUNDS);
        assert_eq!(Exp2Peak::rounds_for(1 << 20, 256).unwrap(), 64);
        assert_eq!(Exp2Peak::rounds_for((1 << 20) + 1, 256).unwrap(), 65);
        assert!(Exp2Peak::rounds_for(1, 0).is_err());
        assert!(Exp2Peak::rounds_for(u64::MAX, 1).is_err());
    }

    /// The CPU probes run their chains: every lane's sum is the `f64` reference's to the
    /// accuracy of their `2^x`, from the starting values (no round) to convergence.
    #[test]
    fn cpu_probes_match_the_reference() {
        use crate::backend::{Backend, CpuFast, CpuReference};
        for backend in [Backend::Cpu(CpuFast), Backend::CpuReference(CpuReference)] {
            let name = backend.kind().name();
            let peak = backend.exp2_peak(1 << 16).unwrap();
            let per_round = (peak.lanes * CHAINS * STEPS) as u64;
            assert_eq!(
                peak.rounds as u64,
                (1u64 << 16).div_ceil(per_round).max(2),
                "{name}"
            );
            assert_eq!(
                peak.exps(),
                (per_round * peak.rounds as u64) as f64,
                "{name}"
            );
            let want = reference_lane(peak.rounds);
            for (l, &s) in peak.sums.iter().enumerate() {
                assert!(
                    (s as f64 - want).abs() < 2e-6,
                    "{name} lane {l}: {s} vs {want}"
                );
            }
        }
        let lanes = rayon::current_num_threads() * crate::backend::cpu::simd::LANES;
        let fast = CpuFast.exp2_peak(0).unwrap();
        assert_eq!(
            (fast.lanes, fast.rounds, fast.sums.len()),
            (lanes, MIN_ROUNDS, lanes)
        );
    }

    #[test]
    fn check_catches_chains_that_did_not_run() {
        let good = (8.0 * FIXED_POINT) as f32;
        let peak = |sums: Vec<f32>, rounds| Exp2Peak {
            lanes: 3,
            rounds,
            sums,
        };
        assert!(peak(vec![good; 3], 2).check("cpu").is_ok());
        for bad in [
            peak(vec![good, 2.25, good], 2),
            peak(vec![good, f32::NAN, good], 2),
            peak(vec![good; 2], 2),
            peak(vec![good; 3], 1),
        ] {
            assert!(bad.check("cpu").is_err(), "{bad:?}");
        }
    }
}
