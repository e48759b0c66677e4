//! Statistics of the study: mean and standard deviation over seeds, and a paired
//! randomisation (sign-flip) test over clusters of queries.
//!
//! The test: for two systems evaluated on the same queries, `d_q = a_q − b_q`; under the
//! null hypothesis that the two are exchangeable, each `d_q` is as likely to have the
//! opposite sign. The two-sided p-value is the share of `R` random sign assignments whose
//! |mean| is at least the observed |mean|, counting the observed assignment itself:
//! `p = (1 + #{|mean*| ≥ |mean|}) / (R + 1)` (Smucker, Allan & Carterette 2007 recommend
//! this test for IR evaluation). It needs no distribution assumption, and with `R` = 10,000
//! the smallest reportable p is ≈ 1e-4.
//!
//! Queries that are not independent share one sign: a cluster's differences are flipped
//! together ([`clustered_randomization`]). In the study a cluster is a LAReQA question with
//! its translations into every language, or a bitext pair in both directions; flipping
//! them one by one would treat 11 translations of one question as 11 pieces of evidence and
//! make the p-values too small.

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Sample mean and standard deviation (n − 1 in the denominator; 0 for a single value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// The outcome of a paired test.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct PairedTest {
    /// Queries compared.
    pub n: usize,
    /// Independent clusters the signs were flipped over (`n` for an unclustered test).
    #[serde(default)]
    pub clusters: usize,
    /// Mean of `a − b`.
    pub mean_difference: f64,
    /// Two-sided p-value.
    pub p: f64,
    pub resamples: usize,
}

/// The randomisation test of the module docs with `resamples` sign flips from `seed`, each
/// query its own cluster.
pub fn paired_randomization(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> Result<PairedTest> {
    let clusters: Vec<usize> = (0..a.len()).collect();
    clustered_randomization(a, b, &clusters, resamples, seed)
}

/// The randomisation test of the module docs, with one sign per cluster: `cluster[q]` is
/// query `q`'s cluster (any labels). `mean_difference` stays the mean over queries.
pub fn clustered_randomization<K: std::hash::Hash + Eq>(
    a: &[f64],
    b: &[f64],
    cluster: &[K],
    resamples: usize,
    seed: u64,
) -> Result<PairedTest> {
    if a.len() != b.len() || cluster.len() != a.len() {
        return Err(Error::shape(
            "paired test",
            format!(
                "{} values for each system and {0} cluster ids (the same queries)",
                a.len()
            ),
            format!("{} and {}", b.len(), cluster.len()),
        ));
    }
    if a.is_empty() || resamples == 0 {
        return Err(Error::value(
            "paired test",
            "expected at least one query and one resample",
        ));
    }
    // Each cluster's summed difference, clusters in first-seen order.
    let mut index: std::collections::HashMap<&K, usize> = std::collections::HashMap::new();
    let mut d: Vec<f64> = Vec::new();
    for ((x, y), c) in a.iter().zip(b).zip(cluster) {
        let k = *index.entry(c).or_insert_with(|| {
            d.push(0.0);
            d.len() - 1
        });
        d[k] += x - y;
    }
    let n = a.len();
    let observed = d.iter().sum::<f64>();
    // Compare sums (the mean scaled by n) with a little slack, so that ties in floating
    // point count as "at least as extreme".
    let threshold = observed.abs() * (1.0 - 1e-12) - 1e-12;
    let mut rng = SplitMix64::new(seed);
    let mut extreme = 0usize;
    for _ in 0..resamples {
        let mut sum = 0.0;
        let mut bits = 0u64;
        for (i, &x) in d.iter().enumerate() {
            if i % 64 == 0 {
                bits = rng.next_u64();
            }
            sum += if bits & 1 == 1 { x } else { -x };
            bits >>= 1;
        }
        if sum.abs() >= threshold {
            extreme += 1;
        }
    }
    Ok(PairedTest {
        n,
        clusters: d.len(),
        mean_difference: observed / n as f64,
        p: (1 + extreme) as f64 / (resamples + 1) as f64,
        resamples,
    })
}

impl PairedTest {
    /// The p-value for a sentence or a table: `≤ 1.0e-4` when no resample was as extreme as
    /// the observed difference (the test's resolution, not an estimate), else as
    /// [`format_p`] gives it, without the "n.s." mark.
    pub fn p_text(&self) -> String {
        let floor = 1.0 / (self.resamples + 1) as f64;
        if self.p <= floor * (1.0 + 1e-9) {
            format!("≤ {floor:.1e}")
        } else {
            p_number(self.p)
        }
    }
}

/// Three decimals, or one significant digit in exponent form below 0.001.
fn p_number(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// The significance level the report uses.
pub const ALPHA: f64 = 0.05;

/// A p-value for a table: three decimals (one significant digit in exponent form below
/// 0.001), and "n.s." when not below [`ALPHA`].
pub fn format_p(p: f64) -> String {
    if !p.is_finite() {
        return "–".into();
    }
    let v = p_number(p);
    if p < ALPHA {
        v
    } else {
        format!("{v} (n.s.)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
        assert!(mean_std(&[]).0.is_nan());
    }

    #[test]
    fn dependent_queries_flip_together() {
        // Ten questions, each asked in 11 languages with the same difference: 7 better, 3
        // worse. As 110 independent queries that is overwhelming; as ten it is not
        // (exactly: P(|2k − 10| ≥ 4) for k ~ Binomial(10, 1/2) = 352/1024).
        let sign = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0];
        let (mut a, mut cluster) = (Vec::new(), Vec::new());
        for (q, s) in sign.iter().enumerate() {
            for _ in 0..11 {
                a.push(0.5 + 0.1 * s);
                cluster.push(100 + q * 7);
            }
        }
        let b = vec![0.5; a.len()];
        let loose = paired_randomization(&a, &b, 20000, 4).unwrap();
        assert!(loose.p < 1e-3, "{loose:?}");
        assert_eq!((loose.n, loose.clusters), (110, 110));
        let t = clustered_randomization(&a, &b, &cluster, 20000, 4).unwrap();
        assert_eq!((t.n, t.clusters), (110, 10));
        assert!((t.mean_difference - 0.04).abs() < 1e-12, "{t:?}");
        assert!((t.p - 352.0 / 1024.0).abs() < 0.015, "{t:?}");
        assert!(clustered_randomization(&a, &b, &cluster[1..], 10, 0).is_err());
        // The p-value's text: the floor is a bound, not an estimate.
        assert_eq!(loose.p_text(), "≤ 5.0e-5");
        assert_eq!(t.p_text(), format!("{:.3}", t.p));
    }

    #[test]
    fn identical_systems_are_not_significant() {
        let a: Vec<f64> = (0..200).map(|i| (i % 7) as f64 / 7.0).collect();
        let t = paired_randomization(&a, &a, 2000, 1).unwrap();
        assert_eq!(t.mean_difference, 0.0);
        assert_eq!(t.p, 1.0);
    }

    #[test]
    fn a_consistent_shift_is_significant_and_noise_is_not() {
        let mut rng = SplitMix64::new(9);
        let b: Vec<f64> = (0..300).map(|_| rng.uniform()).collect();
        let shifted: Vec<f64> = b.iter().map(|v| v + 0.05 + 0.01 * rng.normal()).collect();
        let t = paired_randomization(&shifted, &b, 5000, 2).unwrap();
        println!("shift: {t:?}");
        assert!(t.p < 0.001 && t.mean_difference > 0.04);
        let noisy: Vec<f64> = b.iter().map(|v| v + 0.2 * rng.normal()).collect();
        let t = paired_randomization(&noisy, &b, 5000, 3).unwrap();
        println!("noise: {t:?}");
        assert!(t.p > 0.01, "pure noise came out significant: {t:?}");
        // The test is symmetric.
        let back = paired_randomization(&b, &shifted, 5000, 2).unwrap();
        assert!((back.mean_difference + 0.05).abs() < 0.01);
        assert!(back.p < 0.001);
    }

    #[test]
    fn exact_p_for_a_tiny_case() {
        // Two queries with differences (1, 1): of the four sign patterns, two reach |sum| 2,
        // so p → 1/2 as resamples grow.
        let t = paired_randomization(&[1.0, 1.0], &[0.0, 0.0], 20000, 5).unwrap();
        assert!((t.p - 0.5).abs() < 0.02, "{t:?}");
        assert!(paired_randomization(&[1.0], &[1.0, 2.0], 10, 0).is_err());
    }

    #[test]
    fn p_values_say_when_they_are_not_significant() {
        assert_eq!(format_p(0.2), "0.200 (n.s.)");
        assert_eq!(format_p(0.012), "0.012");
        assert_eq!(format_p(0.00012), "1.2e-4");
    }
}
