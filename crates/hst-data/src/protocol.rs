//! The reference's partial-label protocol, bit-identical to numpy.
//!
//! The reference calls `np.random.seed(0)` (the legacy global generator: MT19937 seeded with
//! `init_genrand(0)`), draws `u = np.random.random((N, C))` row-major (image by image, class by
//! class) and keeps entry `(n, c)` iff `u[n, c] < p`; a dropped entry becomes 0 (unknown). Each
//! uniform is made from two 32-bit outputs `a`, `b` as `((a >> 5) * 67108864 + (b >> 6)) / 2^53`.
//! Masks for different `p` with the same seed and shape are therefore nested.

use rand_mt::Mt;

use crate::labels::{LabelMatrix, PartialLabels};

/// The seed of the reference (`np.random.seed(0)`).
pub const REFERENCE_SEED: u32 = 0;

/// numpy's legacy `RandomState` uniform stream (`np.random.seed(s)` then `np.random.random`).
#[derive(Clone)]
pub struct NumpyRandom {
    mt: Mt,
}

impl NumpyRandom {
    /// MT19937 seeded with `init_genrand(seed)`, as `np.random.seed(seed)` does for an integer.
    pub fn new(seed: u32) -> Self {
        Self { mt: Mt::new(seed) }
    }

    /// The next double in [0, 1), as `np.random.random()` (53-bit resolution).
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.mt.next_u32() >> 5) as u64;
        let b = (self.mt.next_u32() >> 6) as u64;
        (a as f64 * 67_108_864.0 + b as f64) / 9_007_199_254_740_992.0
    }
}

/// `np.random.seed(seed); np.random.random((images, classes))`, row-major.
pub fn uniforms(seed: u32, images: usize, classes: usize) -> Vec<f64> {
    let mut rng = NumpyRandom::new(seed);
    (0..images * classes).map(|_| rng.random_sample()).collect()
}

/// The keep-mask of the protocol, row-major `[images, classes]`: `true` iff the uniform is
/// `< proportion`.
pub fn keep_mask(seed: u32, images: usize, classes: usize, proportion: f64) -> Vec<bool> {
    let mut rng = NumpyRandom::new(seed);
    (0..images * classes)
        .map(|_| rng.random_sample() < proportion)
        .collect()
}

/// The partial labels of `full` under the reference protocol with label proportion
/// `proportion` (in [0, 1]) and `seed` (the reference uses [`REFERENCE_SEED`]).
pub fn apply_protocol(full: &LabelMatrix, proportion: f64, seed: u32) -> LabelMatrix {
    let mask = keep_mask(seed, full.images(), full.classes(), proportion);
    let values = full
        .values()
        .iter()
        .zip(mask)
        .map(|(&v, keep)| if keep { v } else { 0 })
        .collect();
    LabelMatrix::new(full.images(), full.classes(), values).expect("same shape and values as full")
}

impl PartialLabels {
    /// The reference protocol: keep each entry of `full` iff its uniform is `< proportion`
    /// (see [`apply_protocol`]).
    pub fn from_protocol(full: LabelMatrix, proportion: f64, seed: u32) -> Self {
        let partial = apply_protocol(&full, proportion, seed);
        Self::derived(full, partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_draws_match_numpy() {
        // np.random.seed(0); np.random.random(3)
        let u = uniforms(0, 1, 3);
        assert_eq!(
            u,
            vec![0.5488135039273248, 0.7151893663724195, 0.6027633760716439]
        );
    }

    #[test]
    fn masks_are_nested() {
        let lo = keep_mask(0, 7, 5, 0.3);
        let hi = keep_mask(0, 7, 5, 0.6);
        assert!(lo.iter().zip(&hi).all(|(&l, &h)| !l || h));
        assert!(hi.iter().filter(|&&h| h).count() > lo.iter().filter(|&&l| l).count());
    }

    #[test]
    fn proportion_one_keeps_everything() {
        let full = LabelMatrix::new(2, 3, vec![1, -1, 1, -1, -1, 1]).unwrap();
        assert_eq!(apply_protocol(&full, 1.0, 0), full);
        assert!(apply_protocol(&full, 0.0, 0)
            .values()
            .iter()
            .all(|&v| v == 0));
    }
}
