//! The project's one seeded generator: SplitMix64 from the maintained `rand_xoshiro` crate
//! (rust-random), with the few derived draws the project needs.
//!
//! SplitMix64's output is fixed by its definition (unlike `rand`'s `StdRng`, whose algorithm may
//! change between versions), so generated images, crops, K-means seeds and sampled negatives stay the
//! same across builds. The derived draws below are written out (rather than `rand`'s range sampling)
//! for the same reason.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;

/// The golden-ratio increment of SplitMix64 (2^64 / φ), which the seed folds add before each mix.
pub const PHI: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seeded SplitMix64 stream (Steele, Lea & Flood 2014) and the draws built on it.
#[derive(Clone, Debug)]
pub struct SeededRng {
    inner: SplitMix64,
}

impl SeededRng {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: SplitMix64::seed_from_u64(seed),
        }
    }

    /// A generator whose seed mixes several values (e.g. seed, epoch, index), so that streams
    /// for different tuples are unrelated.
    pub fn from_parts(parts: &[u64]) -> Self {
        let mut h = 0x243F_6A88_85A3_08D3u64;
        for &p in parts {
            h = mix(h ^ mix(p.wrapping_add(PHI)));
        }
        Self::new(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform double in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform float in `[0, 1)` (24 random bits).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A standard normal float (Box–Muller on two [`next_f32`](Self::next_f32) draws).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.next_f32() as f64).max(1e-12);
        let u2 = self.next_f32() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// `n` standard normal floats.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// A uniform integer in `0..n` (`n > 0`) by Lemire's multiply-shift on 32 bits: one draw, bias
    /// below 2^-32 · n (used for augmentation, shuffling and the embedded dataset's layouts).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A uniform integer in `0..n` (`n > 0`) by rejection: no bias (used by K-means seeding and
    /// negative sampling).
    pub fn below_unbiased(&mut self, n: usize) -> usize {
        assert!(n > 0, "SeededRng::below_unbiased needs n > 0");
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates over
    /// [`below_unbiased`](Self::below_unbiased)).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below_unbiased(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// An index drawn with probability proportional to `weights` (not all zero).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
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

/// SplitMix64's output function applied to `z` (a 64-bit mixer): the first draw of the stream
/// whose state is `z - PHI`.
pub fn mix(z: u64) -> u64 {
    SplitMix64::seed_from_u64(z.wrapping_sub(PHI)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's output function written out, to pin the crate's stream to the published one.
    fn mix_by_hand(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn reference_values_and_ranges() {
        // First output of SplitMix64 seeded with 0 (published test vector).
        assert_eq!(SeededRng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        for z in [0u64, 1, 0xDEAD_BEEF, u64::MAX] {
            assert_eq!(mix(z), mix_by_hand(z));
        }
        let mut r = SeededRng::from_parts(&[1, 2, 3]);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[r.below(3)] += 1;
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!((0.0..1.0).contains(&r.next_f32()));
            assert!(r.below_unbiased(7) < 7);
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
        assert_ne!(
            SeededRng::from_parts(&[1, 2]).next_u64(),
            SeededRng::from_parts(&[2, 1]).next_u64()
        );
        let mut w = [0usize; 2];
        for _ in 0..1000 {
            w[r.weighted(&[0.0, 1.0])] += 1;
        }
        assert_eq!(w, [0, 1000]);
        let mut p = r.permutation(10);
        p.sort_unstable();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
        let normals = r.normals(4000);
        let mean = normals.iter().sum::<f32>() / 4000.0;
        let var = normals.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / 4000.0;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    }
}
