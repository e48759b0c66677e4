//! A small seeded generator (SplitMix64) for benchmarks and tests: reproducible problems
//! without a dependency.

/// SplitMix64 (Steele, Lea & Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `len` standard normals as `f32`.
    pub fn normals_f32(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.normal() as f32).collect()
    }

    /// Uniform integer in `lo..=hi` (the bounds in either order).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        match ((hi - lo) as u64).checked_add(1) {
            Some(span) => lo + (self.next_u64() % span) as usize,
            // lo..=hi is every u64.
            None => self.next_u64() as usize,
        }
    }
}

/// FNV-1a over `bytes`: a stable 64-bit hash (the same on every platform and release), for
/// deterministic selections such as data splits and subsets, and for content keys.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// [`fnv1a64`] followed by the SplitMix64 finaliser: a stable hash whose every bit depends
/// on every input byte. FNV-1a alone mixes its last bytes into the low bits only, so
/// strings that differ at the end (sequential ids) sort next to each other by it; use this
/// one to order or bucket by hash.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut z = fnv1a64(bytes);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_takes_any_bounds() {
        let mut r = SplitMix64::new(7);
        for _ in 0..100 {
            let v = r.range(3, 5);
            assert!((3..=5).contains(&v));
            assert!((3..=5).contains(&r.range(5, 3)));
        }
        assert_eq!(r.range(4, 4), 4);
        let _ = r.range(0, usize::MAX);
    }
}
