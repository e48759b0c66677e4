//! Vectorisable `f32` building blocks of the CPU fast path.
//!
//! The loops work on 8-lane arrays so that LLVM emits full-width vector code without
//! reassociation flags; the exponential is a branch-free polynomial (no libm call) so it
//! vectorises too. Callers compile them twice: once for the baseline target and once with
//! AVX2 + FMA enabled (see `fast.rs`), chosen at run time.

pub const LANES: usize = 8;

/// `a > b ? a : b` — maps to a single `maxps`, unlike `f32::max` (which handles NaN).
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` for `x ≤ 0`, relative error ≤ 2e-7 (inputs below −126 are clamped, giving
/// ≤ 2^−126, which is negligible next to the 1 that a max-subtracted sum always contains).
///
/// `x = n + r` with `n = round(x)` (the 1.5·2^23 trick) and `r ∈ [−½, ½]`; `2^r` is the
/// Cephes `exp2f` minimax polynomial and `2^n` is built in the exponent bits.
#[inline(always)]
pub fn exp2_neg<const FMA: bool>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = fmax(x, -126.0);
    let t = x + SHIFT;
    let r = x - (t - SHIFT);
    let mut p = 1.535_336_2e-4_f32;
    p = madd::<FMA>(p, r, 1.339_887_4e-3);
    p = madd::<FMA>(p, r, 9.618_437e-3);
    p = madd::<FMA>(p, r, 5.550_332_5e-2);
    p = madd::<FMA>(p, r, 2.402_264_8e-1);
    p = madd::<FMA>(p, r, 6.931_472e-1);
    p = madd::<FMA>(p, r, 1.0);
    // The low bits of t hold n (two's complement); (n + 127) << 23 is 2^n as an f32.
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// `log2 Σ_j 2^(k_j + h_j)`, max-subtracted. `k` and `h` have the same length ≥ 1.
#[inline(always)]
pub fn log2_sum_exp2<const FMA: bool>(k: &[f32], h: &[f32]) -> f32 {
    debug_assert_eq!(k.len(), h.len());
    let (kc, kr) = k.as_chunks::<LANES>();
    let (hc, hr) = h.as_chunks::<LANES>();
    let mut mx = [f32::NEG_INFINITY; LANES];
    for (kk, hh) in kc.iter().zip(hc) {
        for l in 0..LANES {
            mx[l] = fmax(mx[l], kk[l] + hh[l]);
        }
    }
    let mut max = mx.iter().copied().fold(f32::NEG_INFINITY, fmax);
    for (&kk, &hh) in kr.iter().zip(hr) {
        max = fmax(max, kk + hh);
    }
    let mut acc = [0.0f32; LANES];
    for (kk, hh) in kc.iter().zip(hc) {
        for l in 0..LANES {
            acc[l] += exp2_neg::<FMA>(kk[l] + hh[l] - max);
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (&kk, &hh) in kr.iter().zip(hr) {
        sum += exp2_neg::<FMA>(kk + hh - max);
    }
    max + sum.log2()
}

/// Dot product with 8 independent accumulators.
#[inline(always)]
pub fn dot<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let (xc, xr) = x.as_chunks::<LANES>();
    let (yc, yr) = y.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (xx, yy) in xc.iter().zip(yc) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(xx[l], yy[l], acc[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (&a, &b) in xr.iter().zip(yr) {
        s = madd::<FMA>(a, b, s);
    }
    s
}

/// `1 / ‖x‖`, or 0 for a zero vector (so its cosine with anything is 0).
#[inline(always)]
pub fn inv_norm<const FMA: bool>(x: &[f32]) -> f32 {
    let n2 = dot::<FMA>(x, x);
    if n2 > 0.0 {
        1.0 / n2.sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_accurate_on_its_domain() {
        let mut worst = 0.0f64;
        let mut x = -125.0f32;
        while x <= 0.0 {
            let want = (x as f64).exp2();
            for got in [exp2_neg::<false>(x) as f64, exp2_neg::<true>(x) as f64] {
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.000_731;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp2_neg::<false>(-1.0e9) < 1.0e-37);
        assert_eq!(exp2_neg::<false>(0.0), 1.0);
    }

    #[test]
    fn log2_sum_exp2_matches_f64() {
        for len in [1usize, 7, 8, 9, 17, 64, 129] {
            let k: Vec<f32> = (0..len).map(|i| -((i * 37 % 11) as f32) * 0.7).collect();
            let h: Vec<f32> = (0..len)
                .map(|i| ((i * 13 % 5) as f32) * 0.3 + 500.0)
                .collect();
            let want = k
                .iter()
                .zip(&h)
                .map(|(&a, &b)| ((a + b) as f64).exp2())
                .sum::<f64>()
                .log2();
            let got = log2_sum_exp2::<false>(&k, &h) as f64;
            assert!((got - want).abs() < 1e-4, "len {len}: {got} vs {want}");
        }
    }
}
