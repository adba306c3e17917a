//! A small deterministic generator (SplitMix64) for augmentation and the embedded dataset.
//!
//! Its output is fixed by its definition (unlike `rand`'s `StdRng`, whose algorithm may change
//! between versions), so generated images and crops stay the same across builds.

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator whose seed mixes several values (e.g. seed, epoch, index), so that streams
    /// for different tuples are unrelated.
    pub(crate) fn from_parts(parts: &[u64]) -> Self {
        let mut h = 0x243F_6A88_85A3_08D3u64;
        for &p in parts {
            h = mix(h ^ mix(p.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        Self::new(h)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// A uniform double in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift (bias < 2^-32 for the
    /// small `n` used here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// An index drawn with probability proportional to `weights` (not all zero).
    pub(crate) fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.next_f64() * total;
        for (i, &w) in weights.iter().enumerate() {
            if u < w {
                return i;
            }
            u -= w;
        }
        // Rounding: the last index with a positive weight.
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_and_ranges() {
        // First output of SplitMix64 seeded with 0 (published test vector).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = SplitMix64::from_parts(&[1, 2, 3]);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[r.below(3)] += 1;
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
        assert_ne!(
            SplitMix64::from_parts(&[1, 2]).next_u64(),
            SplitMix64::from_parts(&[2, 1]).next_u64()
        );
        let mut w = [0usize; 2];
        for _ in 0..1000 {
            w[r.weighted(&[0.0, 1.0])] += 1;
        }
        assert_eq!(w, [0, 1000]);
    }
}
