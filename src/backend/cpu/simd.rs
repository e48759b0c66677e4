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

/// `a < b ? a : b` — a single `minps`.
#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if a < b {
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

/// The exp2 probe's chains for one vector of [`LANES`] lanes
/// ([`crate::backend::peak`]): `CHAINS` chains `v ← 2^(−v)` per lane through
/// [`exp2_neg`], the exponential of the Sinkhorn passes, `rounds · STEPS` steps each; each
/// lane's sum of its chains' last values.
#[inline(always)]
pub fn exp2_chains<const FMA: bool>(rounds: u32) -> [f32; LANES] {
    use crate::backend::peak::{CHAINS, STEPS};
    // Chain c of lane l at c·LANES + l: one flat loop per step, which LLVM vectorises
    // whole (nested per-chain arrays were unrolled and regrouped across chains, with a
    // shuffle per vector).
    let mut v: [f32; CHAINS * LANES] = std::array::from_fn(|i| (i / LANES + 1) as f32 / 16.0);
    for _ in 0..rounds as usize * STEPS {
        for x in v.iter_mut() {
            *x = exp2_neg::<FMA>(-*x);
        }
    }
    std::array::from_fn(|l| (0..CHAINS).fold(0.0, |s, c| s + v[c * LANES + l]))
}

#[inline(always)]
fn madd64<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` in `f64` over the whole range (within 2 units in the last place where the result is
/// normal, 1 measured;
/// subnormal results, 0 below −1075 and ∞ above 1024 as `f64::exp2` gives them; NaN stays
/// NaN). Branch-free, so a loop over it vectorises, unlike libm's `exp2`.
///
/// `x = n + r` with `n = round(x)` (the 1.5·2^52 trick) and `r ∈ [−½, ½]`; `2^r` is the
/// Taylor series of `e^(r·ln 2)` to degree 13 (the next term is below 5e-18), and `2^n` is
/// applied as `2^n1 · 2^(n − n1)` with `n1 = round(n/2)`, each built in the exponent bits, so
/// that results in the subnormal range are rounded once, by the last product.
#[inline(always)]
pub fn exp2_f64<const FMA: bool>(x: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    const C: [f64; 14] = [
        1.0,
        std::f64::consts::LN_2,
        0.240_226_506_959_100_72,
        0.055_504_108_664_821_58,
        0.009_618_129_107_628_477,
        0.001_333_355_814_642_844_3,
        0.000_154_035_303_933_816_1,
        1.525_273_380_405_984_1e-5,
        1.321_548_679_014_431e-6,
        1.017_808_600_923_97e-7,
        7.054_911_620_801_123e-9,
        4.445_538_271_870_811_6e-10,
        2.567_843_599_348_820_6e-11,
        1.369_148_885_390_412_8e-12,
    ];
    // Selects, not f64::clamp: NaN passes through (and the comparisons are false for it).
    let x = if x > 1030.0 { 1030.0 } else { x };
    let x = if x < -1080.0 { -1080.0 } else { x };
    let t = x + SHIFT;
    let n = t - SHIFT;
    let r = x - n;
    let mut p = C[13];
    for &c in C[..13].iter().rev() {
        p = madd64::<FMA>(p, r, c);
    }
    let t1 = n * 0.5 + SHIFT;
    let n2 = n - (t1 - SHIFT);
    let t2 = n2 + SHIFT;
    // The low bits of t1 and t2 hold n1 and n2 (two's complement, |n_k| ≤ 541); (n_k + 1023)
    // << 52 is 2^n_k as an f64.
    let s1 = f64::from_bits(t1.to_bits().wrapping_add(1023) << 52);
    let s2 = f64::from_bits(t2.to_bits().wrapping_add(1023) << 52);
    p * s1 * s2
}

/// [`exp2_f64`] of every element, in place.
#[inline(always)]
pub fn exp2_f64_in_place<const FMA: bool>(xs: &mut [f64]) {
    for x in xs {
        *x = exp2_f64::<FMA>(*x);
    }
}

/// `log2 x` in `f32` for positive normal `x` (within 2 ulp; +∞ and NaN pass through).
/// Branch-free, so a loop over it vectorises, unlike libm's `log2f`.
///
/// `x = 2^e · m` with `m ∈ [√½, √2)` from the exponent and mantissa bits; `ln m =
/// 2·atanh(s)` with `s = (m − 1)/(m + 1)`, `|s| ≤ 0.172`, as the odd series to `s⁹` (the
/// next term is below 1e-9); `log2 x = e + ln m · log2(e)`.
#[inline(always)]
pub fn log2_pos<const FMA: bool>(x: f32) -> f32 {
    let bits = x.to_bits();
    // Subtract the bits of √½ so that the mantissa lands in [√½, √2).
    let shifted = bits.wrapping_sub(0x3F35_04F3);
    let e = ((shifted as i32) >> 23) as f32;
    let m = f32::from_bits((shifted & 0x007F_FFFF).wrapping_add(0x3F35_04F3));
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 2.0 / 9.0;
    p = madd::<FMA>(p, s2, 2.0 / 7.0);
    p = madd::<FMA>(p, s2, 2.0 / 5.0);
    p = madd::<FMA>(p, s2, 2.0 / 3.0);
    p = madd::<FMA>(p, s2, 2.0);
    let ln_m = p * s;
    let r = madd::<FMA>(ln_m, std::f32::consts::LOG2_E, e);
    // +∞ and NaN: themselves (the bit arithmetic above does not keep them).
    if x < f32::INFINITY {
        r
    } else {
        x
    }
}

/// `(max, Σ_j 2^(k_j + h_j − max))` with `max = max_j (k_j + h_j)`, so that
/// `log2 Σ_j 2^(k_j + h_j) = max + log2(sum)`; `k` and `h` have the same length ≥ 1.
#[inline(always)]
pub fn max_sum_exp2<const FMA: bool>(k: &[f32], h: &[f32]) -> (f32, f32) {
    let max = line_max(k, h);
    // `(k + h) + (−max)` is `(k + h) − max` bit for bit, and every exponent is ≤ 0, so the
    // shifted sum's upper clamp never acts.
    (max, shifted_sum_exp2::<FMA>(k, h, -max))
}

/// `Σ_j 2^(k_j + h_j + s)`, each exponent clamped to [−126, 126] (so every term is a
/// finite normal `f32`); `k` and `h` have the same length ≥ 1.
///
/// Each lane sums [`SUM_BLOCK`] terms in `f32`, then adds that partial sum into an `f64`
/// accumulator. Near the fixed point a long line's terms are nearly equal (a pair of one
/// row: every term is `b_j`), and a single `f32` accumulator per lane then rounds the same
/// way at every step: the error grew with the length (1.6e-6 at 1000 entries, 1.5e-5 at
/// 20 000, above the default threshold for good). Blocked, it stays that of a
/// [`SUM_BLOCK`]-term sum whatever the length, for one conversion and one `f64` addition
/// per lane every [`SUM_BLOCK`] terms.
#[inline(always)]
pub fn shifted_sum_exp2<const FMA: bool>(k: &[f32], h: &[f32], s: f32) -> f32 {
    debug_assert_eq!(k.len(), h.len());
    let (kc, kr) = k.as_chunks::<LANES>();
    let (hc, hr) = h.as_chunks::<LANES>();
    let mut total = [0.0f64; LANES];
    for (kb, hb) in kc.chunks(SUM_BLOCK).zip(hc.chunks(SUM_BLOCK)) {
        let mut acc = [0.0f32; LANES];
        for (kk, hh) in kb.iter().zip(hb) {
            for l in 0..LANES {
                acc[l] += exp2_neg::<FMA>(fmin(kk[l] + hh[l] + s, 126.0));
            }
        }
        for l in 0..LANES {
            total[l] += acc[l] as f64;
        }
    }
    let mut rest = 0.0f32;
    for (&kk, &hh) in kr.iter().zip(hr) {
        rest += exp2_neg::<FMA>(fmin(kk + hh + s, 126.0));
    }
    (total.iter().sum::<f64>() + rest as f64) as f32
}

/// Terms per lane that [`shifted_sum_exp2`] sums in `f32` before it moves the partial sum
/// to `f64`.
pub const SUM_BLOCK: usize = 8;

/// The range in which a sum shifted by the line's current potential is accepted
/// ([`update_lines`]): a term clamped up to 2^−126 then errs by at most `len·2^−66` of the
/// sum, and no term came near the upper clamp.
const SHIFTED_SUM_MIN: f32 = 1.0 / (1u64 << 60) as f32;
const SHIFTED_SUM_MAX: f32 = (1u64 << 60) as f32;

/// Lines shorter than this keep the max-subtracted form. Their largest term is then exactly
/// 2⁰ and a large share of the sum, so the update reaches exact fixed points; shifted, the
/// rounding of `log2(2^x)` through the two approximations (≈ 1.6e-7) would be the whole
/// marginal error of a line of one or two entries, above a 1e-7 threshold for good.
const SHIFTED_MIN_LEN: usize = 16;

/// One Sinkhorn half-iteration on potentials in place: `p_l ← −log2 Σ_j 2^(line_lj + h_j)`
/// for each line `l` of `lines` (row-major, `h.len()` per line).
///
/// Near the fixed point the terms shifted by the line's current potential,
/// `2^(line_lj + h_j + p_l)`, sum to about 1, so one pass over the line gives
/// `p_l − log2 Σ_j 2^(line_lj + h_j + p_l)` without a maximum. A line whose shifted sum
/// leaves [2^−60, 2^60] (early iterations, small ε, a non-finite potential) is recomputed
/// with the maximum subtracted ([`max_sum_exp2`]), as are lines shorter than
/// `SHIFTED_MIN_LEN` (16). The logarithms go eight lines at a time
/// through [`log2_pos`]. Each line's result depends only on that line, not on its group of
/// eight, so a pair split over threads gives the same bits.
#[inline(always)]
pub fn update_lines<const FMA: bool>(pot: &mut [f32], lines: &[f32], h: &[f32]) {
    let len = h.len();
    for (p, block) in pot.chunks_mut(LANES).zip(lines.chunks(LANES * len)) {
        let mut base = [0.0f32; LANES];
        let mut sum = [1.0f32; LANES];
        for (l, line) in block.chunks_exact(len).enumerate() {
            let shifted = if len >= SHIFTED_MIN_LEN {
                shifted_sum_exp2::<FMA>(line, h, p[l])
            } else {
                f32::NAN
            };
            if (SHIFTED_SUM_MIN..=SHIFTED_SUM_MAX).contains(&shifted) {
                (base[l], sum[l]) = (p[l], shifted);
            } else {
                let (max, s) = max_sum_exp2::<FMA>(line, h);
                (base[l], sum[l]) = (-max, s);
            }
        }
        for v in sum.iter_mut() {
            *v = log2_pos::<FMA>(*v);
        }
        for (l, p) in p.iter_mut().enumerate() {
            *p = base[l] - sum[l];
        }
    }
}

/// `log2 Σ_j 2^(k_j + h_j)`, max-subtracted. `k` and `h` have the same length ≥ 1.
#[inline(always)]
pub fn log2_sum_exp2<const FMA: bool>(k: &[f32], h: &[f32]) -> f32 {
    let (max, sum) = max_sum_exp2::<FMA>(k, h);
    max + log2_pos::<FMA>(sum)
}

/// Dot product with 8 independent accumulators.
#[inline(always)]
pub fn dot<const FMA: bool>(x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let (xc, xr) = x.as_chunks::<LANES>();
    let (yc, yr) = y.as_chunks::<LANES>();
    // Blocked as in `shifted_sum_exp2`: a long row's sum near the fixed point is of nearly
    // equal terms, whose rounding in one `f32` accumulator grows with the length.
    let mut total = [0.0f64; LANES];
    for (xb, yb) in xc.chunks(SUM_BLOCK).zip(yc.chunks(SUM_BLOCK)) {
        let mut acc = [0.0f32; LANES];
        for (xx, yy) in xb.iter().zip(yb) {
            for l in 0..LANES {
                acc[l] = madd::<FMA>(xx[l], yy[l], acc[l]);
            }
        }
        for l in 0..LANES {
            total[l] += acc[l] as f64;
        }
    }
    let mut s = 0.0f32;
    for (&a, &b) in xr.iter().zip(yr) {
        s = madd::<FMA>(a, b, s);
    }
    (total.iter().sum::<f64>() + s as f64) as f32
}

/// `sums_l = Σ_j w_j · cross[j][first + l]` for `l < sums.len()`: the lines of a matrix
/// summed against `w` through the matrix's other orientation `cross` (`w.len()` rows of
/// `stride` floats), so that every step is a multiply-add of 64 (or 8) consecutive lines at
/// once and no sum needs a horizontal reduction. Each line's sum is the chain
/// `s ← w_j · x_j + s` over `j` in order from 0, restarted every [`CHAIN_BLOCK`] steps with
/// the chains' results added in `f64`, whichever group of lines it is computed in
/// ([`chain_dot`] gives the same bits for a line alone).
#[inline(always)]
pub fn cross_sums<const FMA: bool>(
    sums: &mut [f32],
    cross: &[f32],
    stride: usize,
    first: usize,
    w: &[f32],
) {
    let n = sums.len();
    let mut b = 0;
    while b + 8 * LANES <= n {
        cross_block::<FMA, { 8 * LANES }>(&mut sums[b..b + 8 * LANES], cross, stride, first + b, w);
        b += 8 * LANES;
    }
    while b + LANES <= n {
        cross_block::<FMA, LANES>(&mut sums[b..b + LANES], cross, stride, first + b, w);
        b += LANES;
    }
    for (l, s) in sums.iter_mut().enumerate().skip(b) {
        let mut total = 0.0f64;
        for (jb, wb) in w.chunks(CHAIN_BLOCK).enumerate() {
            let mut acc = 0.0f32;
            for (jj, &wj) in wb.iter().enumerate() {
                let j = jb * CHAIN_BLOCK + jj;
                acc = madd::<FMA>(wj, cross[j * stride + first + l], acc);
            }
            total += acc as f64;
        }
        *s = total as f32;
    }
}

/// Steps of a line's chain in [`cross_sums`] summed in `f32` before the partial sum moves
/// to an `f64` total (as in [`shifted_sum_exp2`]: one `f32` chain over a long line of
/// nearly equal terms rounds the same way at every step).
pub const CHAIN_BLOCK: usize = 32;

/// [`cross_sums`] for `B` consecutive lines at once: `B` accumulators (eight or one 8-lane
/// vectors), `w_j` broadcast.
#[inline(always)]
fn cross_block<const FMA: bool, const B: usize>(
    sums: &mut [f32],
    cross: &[f32],
    stride: usize,
    first: usize,
    w: &[f32],
) {
    let mut total = [0.0f64; B];
    for (jb, wb) in w.chunks(CHAIN_BLOCK).enumerate() {
        let mut acc = [0.0f32; B];
        for (jj, &wj) in wb.iter().enumerate() {
            let off = (jb * CHAIN_BLOCK + jj) * stride + first;
            let row = &cross[off..off + B];
            for l in 0..B {
                acc[l] = madd::<FMA>(wj, row[l], acc[l]);
            }
        }
        for l in 0..B {
            total[l] += acc[l] as f64;
        }
    }
    for (s, t) in sums.iter_mut().zip(total) {
        *s = t as f32;
    }
}

/// `Σ_j w_j · x_j` as the chains `s ← w_j · x_j + s` over blocks of [`CHAIN_BLOCK`]
/// consecutive `j` added in `f64`: one line's sum exactly as [`cross_sums`] computes it
/// among others.
#[inline(always)]
pub fn chain_dot<const FMA: bool>(x: &[f32], w: &[f32]) -> f32 {
    let mut total = 0.0f64;
    for (xb, wb) in x.chunks(CHAIN_BLOCK).zip(w.chunks(CHAIN_BLOCK)) {
        let mut acc = 0.0f32;
        for (&xj, &wj) in xb.iter().zip(wb) {
            acc = madd::<FMA>(wj, xj, acc);
        }
        total += acc as f64;
    }
    total as f32
}

/// Entries of the scaled Sinkhorn matrix `Q = 2^x` whose exponent lies below this are
/// stored as 0: no subnormal `f32` enters the passes' products.
pub const SCALED_FLUSH: f32 = -90.0;

/// `out_j = 2^(k_j + s + t_j)`, or 0 where the exponent is below [`SCALED_FLUSH`]
/// (exponents clamped above at 126); `k`, `t` and `out` have the same length.
#[inline(always)]
pub fn scaled_line<const FMA: bool>(out: &mut [f32], k: &[f32], s: f32, t: &[f32]) {
    debug_assert!(out.len() == k.len() && k.len() == t.len());
    for ((o, &kk), &tt) in out.iter_mut().zip(k).zip(t) {
        let x = fmin(kk + s + tt, 126.0);
        let e = exp2_neg::<FMA>(x);
        *o = if x < SCALED_FLUSH { 0.0 } else { e };
    }
}

/// `max_j (k_j + h_j)`; `k` and `h` have the same length ≥ 1.
#[inline(always)]
pub fn line_max(k: &[f32], h: &[f32]) -> f32 {
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
    max
}

/// `acc_j ← a · x_j + acc_j` for every `j`.
#[inline(always)]
pub fn axpy<const FMA: bool>(acc: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (s, &v) in acc.iter_mut().zip(x) {
        *s = madd::<FMA>(a, v, *s);
    }
}

/// `max_j x_j`, or −∞ for an empty slice (exact: the order of a maximum does not matter
/// without NaNs, which the kernels' inputs never hold).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let (xc, xr) = x.as_chunks::<LANES>();
    let mut mx = [f32::NEG_INFINITY; LANES];
    for xx in xc {
        for l in 0..LANES {
            mx[l] = fmax(mx[l], xx[l]);
        }
    }
    let mut max = mx.iter().copied().fold(f32::NEG_INFINITY, fmax);
    for &v in xr {
        max = fmax(max, v);
    }
    max
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

/// `x < lo ? lo : (x > hi ? hi : x)` as two selects (NaN passes through unchanged).
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x > hi { hi } else { x };
    if x < lo {
        lo
    } else {
        x
    }
}

/// `erf(x)`, absolute error ≤ 5e-7 (f32 arithmetic; libm's `erff` is within 1e-7).
///
/// A rational approximation `x·P(x²)/Q(x²)` (degrees 6 and 4 in `x²`) on `[−4, 4]`, the
/// form and coefficients of Eigen's `generic_fast_erf_float`; outside that interval `erf`
/// rounds to ±1 in f32, so the input is clamped (and the result is exactly ±1 beyond ±3.9).
/// Branch-free (selects only), so a loop over it vectorises; NaN stays NaN.
#[inline(always)]
pub fn erf<const FMA: bool>(x_in: f32) -> f32 {
    let x = clamp(x_in, -4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = madd::<FMA>(x2, p, 2.770_681_4e-8);
    p = madd::<FMA>(x2, p, -2.101_024e-6);
    p = madd::<FMA>(x2, p, -5.692_506_4e-5);
    p = madd::<FMA>(x2, p, -7.349_906_3e-4);
    p = madd::<FMA>(x2, p, -2.954_600_2e-3);
    p = madd::<FMA>(x2, p, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = madd::<FMA>(x2, q, -2.133_740_6e-4);
    q = madd::<FMA>(x2, q, -1.682_827e-3);
    q = madd::<FMA>(x2, q, -7.373_329_2e-3);
    q = madd::<FMA>(x2, q, -1.426_474e-2);
    let r = x * p / q;
    // Beyond ±3.9, erf is ±1 to f32 precision; the approximation is ~6e-8 short of it, which
    // would leave a spurious x·3e-8 tail in GELU for very negative x.
    if x_in >= 3.9 {
        1.0
    } else if x_in <= -3.9 {
        -1.0
    } else {
        r
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// The exact (erf) GELU, `x·Φ(x) = ½·x·(1 + erf(x/√2))`, in place.
#[inline(always)]
pub fn gelu_in_place<const FMA: bool>(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf::<FMA>(x * FRAC_1_SQRT_2));
    }
}

/// The exact GELU in place, and its derivative `Φ(x) + x·φ(x)` into `grad` (same length).
#[inline(always)]
pub fn gelu_with_grad<const FMA: bool>(values: &mut [f32], grad: &mut [f32]) {
    // φ(x) = e^(−x²/2) / √(2π) = 2^(−x²·log2(e)/2) / √(2π).
    const HALF_LOG2_E: f32 = 0.5 * std::f32::consts::LOG2_E;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    debug_assert_eq!(values.len(), grad.len());
    for (v, g) in values.iter_mut().zip(grad.iter_mut()) {
        let x = *v;
        let cdf = 0.5 * (1.0 + erf::<FMA>(x * FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * exp2_neg::<FMA>(-(x * x) * HALF_LOG2_E);
        *v = x * cdf;
        *g = madd::<FMA>(x, pdf, cdf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_is_the_maximum_at_every_length_and_position() {
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        for len in [1usize, 7, 8, 9, 16, 17, 48, 63] {
            for at in 0..len {
                let mut x: Vec<f32> = (0..len).map(|i| -1.0 - i as f32 * 0.25).collect();
                x[at] = 3.5;
                assert_eq!(max(&x), 3.5, "len {len}, maximum at {at}");
                x[at] = -0.1;
                assert_eq!(max(&x), -0.1, "len {len}, maximum at {at}");
            }
        }
    }

    fn erf_f64(x: f64) -> f64 {
        // Abramowitz & Stegun 7.1.5 series for |x| < 3, continued fraction beyond; both to
        // far below f32 precision, so the test does not lean on the code under test.
        if x.abs() < 3.0 {
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 * sum.abs().max(1e-300) {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(x) = e^(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))).
            let ax = x.abs();
            let mut f = ax;
            for k in (1..60).rev() {
                f = ax + (k as f64) / 2.0 / f;
            }
            let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f;
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        let (mut worst_erf, mut worst_gelu, mut worst_grad) = (0.0f64, 0.0f64, 0.0f64);
        let xs: Vec<f32> = (0..=240_000).map(|i| -12.0 + i as f32 * 1e-4).collect();
        for fma in [false, true] {
            let mut vals = xs.clone();
            let mut grad = vec![f32::NAN; xs.len()];
            let mut plain = xs.clone();
            if fma {
                gelu_with_grad::<true>(&mut vals, &mut grad);
                gelu_in_place::<true>(&mut plain);
            } else {
                gelu_with_grad::<false>(&mut vals, &mut grad);
                gelu_in_place::<false>(&mut plain);
            }
            for (i, &x) in xs.iter().enumerate() {
                let x64 = x as f64;
                let e = if fma { erf::<true>(x) } else { erf::<false>(x) };
                worst_erf = worst_erf.max((e as f64 - erf_f64(x64)).abs());
                let cdf = 0.5 * (1.0 + erf_f64(x64 / std::f64::consts::SQRT_2));
                let want = x64 * cdf;
                let want_grad =
                    cdf + x64 * (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
                // Relative to max(1, |x|): the error of x·Φ(x) scales with x.
                let scale = x64.abs().max(1.0);
                worst_gelu = worst_gelu.max((vals[i] as f64 - want).abs() / scale);
                worst_gelu = worst_gelu.max((plain[i] as f64 - want).abs() / scale);
                worst_grad = worst_grad.max((grad[i] as f64 - want_grad).abs());
            }
        }
        assert!(worst_erf < 5e-7, "erf: worst absolute error {worst_erf}");
        assert!(worst_gelu < 5e-7, "gelu: worst scaled error {worst_gelu}");
        assert!(
            worst_grad < 1e-6,
            "gelu': worst absolute error {worst_grad}"
        );
        let mut special = [f32::NAN, 0.0, -0.0, 1e30, -1e30];
        gelu_in_place::<false>(&mut special);
        assert!(special[0].is_nan());
        assert_eq!(special[1], 0.0);
        assert_eq!(special[3], 1e30);
        assert_eq!(special[4], 0.0);
    }

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
    fn exp2_f64_matches_libm_over_the_whole_range() {
        let mut worst = 0.0f64;
        let mut x = -1_100.0f64;
        while x <= 1_030.0 {
            let want = x.exp2();
            for got in [exp2_f64::<false>(x), exp2_f64::<true>(x)] {
                if want == 0.0 || want.is_infinite() {
                    assert_eq!(got, want, "2^{x}");
                } else if want < f64::MIN_POSITIVE {
                    // Subnormal: within one unit of the last place (2^-1074).
                    assert!((got - want).abs() <= 4.9e-324, "2^{x}: {got:e} vs {want:e}");
                } else {
                    worst = worst.max(((got - want) / want).abs());
                }
            }
            x += 0.000_317_3;
        }
        // One unit in the last place is 2.2e-16 (that is what it measures).
        assert!(worst < 4.5e-16, "worst relative error {worst:e}");
        for (x, want) in [
            (0.0, 1.0),
            (1.0, 2.0),
            (-1.0, 0.5),
            (1023.0, 2f64.powi(1023)),
            (-1022.0, f64::MIN_POSITIVE),
            (-1074.0, 4.9e-324),
            (-1076.0, 0.0),
            (1024.0, f64::INFINITY),
            (f64::NEG_INFINITY, 0.0),
            (f64::INFINITY, f64::INFINITY),
        ] {
            assert_eq!(exp2_f64::<true>(x), want, "2^{x}");
            assert_eq!(exp2_f64::<false>(x), want, "2^{x}");
        }
        assert!(exp2_f64::<true>(f64::NAN).is_nan() && exp2_f64::<false>(f64::NAN).is_nan());
    }

    #[test]
    fn log2_is_accurate_for_positive_normals() {
        let mut worst = 0.0f64;
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            let want = (x as f64).log2();
            for got in [log2_pos::<false>(x) as f64, log2_pos::<true>(x) as f64] {
                // 2 ulp of the result, or of 1 near x = 1 where the result is near 0.
                let ulp = (want.abs().max(1.0) as f32).to_bits();
                let ulp = f32::from_bits(ulp + 1) as f64 - f32::from_bits(ulp) as f64;
                worst = worst.max((got - want).abs() / ulp);
            }
            x *= 1.000_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        for x in [1.0f32, 2.0, 0.5, 1024.0] {
            assert_eq!(log2_pos::<true>(x), x.log2(), "log2 {x}");
        }
        assert_eq!(log2_pos::<false>(f32::INFINITY), f32::INFINITY);
        assert!(log2_pos::<true>(f32::NAN).is_nan());
    }

    /// Lines of `len` entries: a smooth part plus a per-line offset, so that some lines sit
    /// near their potential and others far from it.
    fn lines_and_potentials(lines: usize, len: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let k: Vec<f32> = (0..lines * len)
            .map(|i| -((i * 37 % 11) as f32) * 0.7 - (i / len) as f32 * 9.0)
            .collect();
        let h: Vec<f32> = (0..len)
            .map(|i| ((i * 13 % 5) as f32) * 0.3 - 2.0)
            .collect();
        // Line l's potential, by l mod 6: exact (0, 4) or 10 off (1), both in range for the
        // shifted sum; 200 off (2) or NaN (5), out of range, so the maximum path; 0 (3), in
        // or out of range depending on the line's offset. Lines under SHIFTED_MIN_LEN take
        // the maximum path whatever the potential.
        let p = (0..lines)
            .map(|l| {
                let exact = -log2_sum_exp2::<false>(&k[l * len..(l + 1) * len], &h);
                match l % 6 {
                    0 | 4 => exact,
                    1 => exact + 10.0,
                    2 => exact - 200.0,
                    3 => 0.0,
                    _ => f32::NAN,
                }
            })
            .collect();
        (k, h, p)
    }

    #[test]
    fn line_updates_match_the_max_subtracted_form() {
        for (lines, len) in [
            (1usize, 1usize),
            (7, 3),
            (8, 16),
            (9, 129),
            (17, 8),
            (12, 200),
        ] {
            let (k, h, mut p) = lines_and_potentials(lines, len);
            update_lines::<true>(&mut p, &k, &h);
            for (l, &got) in p.iter().enumerate() {
                let line = &k[l * len..(l + 1) * len];
                let want = -line
                    .iter()
                    .zip(&h)
                    .map(|(&a, &b)| ((a + b) as f64).exp2())
                    .sum::<f64>()
                    .log2();
                let tol = 4e-6 * want.abs().max(1.0);
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{lines}x{len}: line {l}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn cross_sums_give_each_line_the_bits_of_its_chain_alone() {
        // Lines past 64 (a block of 64), past 8 (blocks of 8) and a scalar rest, from any
        // first line: every sum as chain_dot gives it for the line alone.
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 40) as f32 / (1u64 << 24) as f32
        };
        for (n, len) in [(64usize + 8 + 3, 19usize), (7, 1), (130, 33), (1, 5)] {
            let lines: Vec<f32> = (0..n * len).map(|_| next() * 2.0 - 0.5).collect();
            let w: Vec<f32> = (0..len).map(|_| next()).collect();
            let mut cross = vec![0.0f32; n * len];
            for l in 0..n {
                for j in 0..len {
                    cross[j * n + l] = lines[l * len + j];
                }
            }
            for first in [0, 1, n / 2] {
                let mut sums = vec![f32::NAN; n - first];
                cross_sums::<true>(&mut sums, &cross, n, first, &w);
                for (l, s) in sums.iter().enumerate() {
                    let line = &lines[(first + l) * len..(first + l + 1) * len];
                    assert_eq!(s.to_bits(), chain_dot::<true>(line, &w).to_bits());
                    let want: f64 = line
                        .iter()
                        .zip(&w)
                        .map(|(&x, &y)| x as f64 * y as f64)
                        .sum();
                    assert!(
                        (*s as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{s} {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn scaled_lines_flush_below_2_to_the_minus_90() {
        let k = [0.0f32, -10.0, -89.5, -90.5, -500.0, 200.0, 3.0, -1.0, -2.0];
        let t = [0.0f32; 9];
        let mut out = [f32::NAN; 9];
        scaled_line::<true>(&mut out, &k, 0.5, &t);
        for (o, &kk) in out.iter().zip(&k) {
            let x = (kk + 0.5).min(126.0);
            if x < SCALED_FLUSH {
                assert_eq!(*o, 0.0);
            } else {
                let want = (x as f64).exp2();
                assert!(
                    ((*o as f64) - want).abs() <= 3e-7 * want,
                    "{kk}: {o} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_line_update_does_not_depend_on_its_group() {
        for (lines, len) in [(9usize, 129usize), (17, 8), (12, 3)] {
            let (k, h, p0) = lines_and_potentials(lines, len);
            let mut grouped = p0.clone();
            update_lines::<false>(&mut grouped, &k, &h);
            for l in 0..lines {
                let mut alone = [p0[l]];
                update_lines::<false>(&mut alone, &k[l * len..(l + 1) * len], &h);
                assert_eq!(
                    alone[0].to_bits(),
                    grouped[l].to_bits(),
                    "{lines}x{len}: {l}"
                );
            }
        }
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
