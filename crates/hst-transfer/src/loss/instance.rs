//! The instance-level CST contrastive loss.

use burn::prelude::*;

use crate::batch_labels::BatchLabels;
use crate::cosine::normalize;
use crate::pairs::{index_tensor, pair_indices};
use hst_data::rng::SeededRng;

/// Configuration of [`InstanceContrastiveLoss`].
#[derive(Config, Debug)]
pub struct InstanceContrastiveLossConfig {
    /// Cosine-similarity eps (each norm is clamped to at least eps). Default: 1e-9.
    #[config(default = 1e-9)]
    pub eps: f64,
    /// Hard-negative subsampling as in the reference (see [`InstanceContrastiveLoss`]). Default: true.
    #[config(default = true)]
    pub subsample: bool,
    /// With `n` positive–positive terms, keep up to `random_factor · n` random terms of each negative
    /// kind (plus the `n` largest). Default: 2.
    #[config(default = 2)]
    pub random_factor: usize,
}

impl InstanceContrastiveLossConfig {
    /// Build the loss.
    pub fn init(&self) -> InstanceContrastiveLoss {
        InstanceContrastiveLoss {
            eps: self.eps,
            subsample: self.subsample,
            random_factor: self.random_factor,
        }
    }
}

/// `L_inst` (reference `InstanceContrastiveLoss`): for every image pair `a < b` of the batch and every
/// class `c`, with `d = cos(f_c^a, f_c^b)`:
///
/// - both known positive: `1 − d`
/// - one known positive, the other known negative: `1 + d`
/// - both known negative: `1 + d`
/// - any unknown: ignored.
///
/// When there are `n > 0` positive–positive terms, each negative kind (pos–neg, neg–neg) is subsampled to
/// a random subset of up to `2n` terms concatenated with its `n` largest terms (a term can appear twice,
/// as in the reference). The randomness comes from `seed` (the reference uses `torch.randperm`).
/// The result is the mean of the kept terms; with no term at all it is 0 (the reference returns NaN).
#[derive(Debug, Clone, Copy)]
pub struct InstanceContrastiveLoss {
    /// Cosine eps.
    pub eps: f64,
    /// Whether to subsample the negative terms.
    pub subsample: bool,
    /// Random subset size factor.
    pub random_factor: usize,
}

impl Default for InstanceContrastiveLoss {
    fn default() -> Self {
        InstanceContrastiveLossConfig::new().init()
    }
}

impl InstanceContrastiveLoss {
    /// The loss. The term lists are built from the labels' host copy (see [`BatchLabels`]): given labels
    /// with one (as the trainer passes them), the loss reads nothing back from the device; given a bare
    /// tensor, it reads the (small) label tensor once.
    ///
    /// # Shapes
    /// - features: `[batch, classes, dim]` (semantic features)
    /// - partial: `[batch, classes]` in {−1, 0, 1}
    /// - output: `[1]`
    pub fn forward<B: Backend>(
        &self,
        features: Tensor<B, 3>,
        partial: impl Into<BatchLabels<B>>,
        seed: u64,
    ) -> Tensor<B, 1> {
        let [batch, classes, _dim] = features.dims();
        let device = features.device();
        let partial = partial.into();
        let labels = partial.host();
        let (first, second) = pair_indices(batch);

        // Term lists in the reference's order (row-major over [pairs, classes]).
        let (mut pos_pos, mut pos_neg, mut neg_neg) = (Vec::new(), Vec::new(), Vec::new());
        let label = |i: usize| -> i8 {
            match labels[i] {
                1.0 => 1,
                -1.0 => -1,
                _ => 0,
            }
        };
        for (&a, &b) in first.iter().zip(&second) {
            for c in 0..classes {
                // Flat index into the [classes, batch, batch] cosine table.
                let flat = c * batch * batch + a * batch + b;
                match (label(a * classes + c), label(b * classes + c)) {
                    (1, 1) => pos_pos.push(flat),
                    (1, -1) | (-1, 1) => pos_neg.push(flat),
                    (-1, -1) => neg_neg.push(flat),
                    _ => {}
                }
            }
        }

        let normalized = normalize(features, 2, self.eps).swap_dims(0, 1); // [classes, batch, dim]
        let cosine = normalized
            .clone()
            .matmul(normalized.transpose()) // [classes, batch, batch]
            .reshape([classes * batch * batch]);

        if pos_pos.is_empty() && pos_neg.is_empty() && neg_neg.is_empty() {
            return cosine.sum() * 0.0;
        }

        let gather = |idx: &[usize]| cosine.clone().select(0, index_tensor::<B>(idx, &device));
        let mut terms = Vec::new();
        let n = pos_pos.len();
        if n > 0 {
            terms.push(gather(&pos_pos).neg() + 1.0);
        }
        let mut rng = SeededRng::new(seed);
        for list in [&pos_neg, &neg_neg] {
            if list.is_empty() {
                continue;
            }
            let values = gather(list) + 1.0; // [len]
            if self.subsample && n > 0 {
                let keep = (self.random_factor * n).min(list.len());
                let chosen: Vec<usize> =
                    rng.permutation(list.len()).into_iter().take(keep).collect();
                terms.push(
                    values
                        .clone()
                        .select(0, index_tensor::<B>(&chosen, &device)),
                );
                let top = n.min(list.len());
                // The `top` largest terms. Burn has no device sort on the GPU backends (its default sort
                // reads the tensor back); a device-side bisection for this selection (no read) crashed
                // burn-cubecl-fusion 0.21 on WGPU, so the sort stays: on CubeCL backends this is the one
                // device read of a training step (only when a batch has positive–positive terms).
                terms.push(values.sort_descending(0).slice(0..top));
            } else {
                terms.push(values);
            }
        }
        Tensor::cat(terms, 0).mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn no_pos_pos_is_plain_mean() {
        let device = Default::default();
        // 3 images, 1 class, dim 2. Labels: +1, -1, -1 → pos-neg (0,1), (0,2); neg-neg (1,2).
        let f = [[1.0f32, 0.0], [0.6, 0.8], [0.0, 1.0]];
        let features = Tensor::<TB, 3>::from_data([[f[0]], [f[1]], [f[2]]], &device);
        let y = Tensor::<TB, 2>::from_data([[1.0], [-1.0], [-1.0]], &device);
        let got = InstanceContrastiveLoss::default()
            .forward(features, y, 0)
            .into_scalar();
        let expected =
            ((1.0 + cos(&f[0], &f[1])) + (1.0 + cos(&f[0], &f[2])) + (1.0 + cos(&f[1], &f[2])))
                / 3.0;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn subsampling_is_seeded_and_counts_terms() {
        let device = Default::default();
        // 6 images, 1 class: 2 positives (1 pos-pos pair), 4 negatives (8 pos-neg, 6 neg-neg pairs).
        let features = Tensor::<TB, 3>::random(
            [6, 1, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let y = Tensor::<TB, 2>::from_data([[1.0], [1.0], [-1.0], [-1.0], [-1.0], [-1.0]], &device);
        let loss = InstanceContrastiveLoss::default();
        let a = loss.forward(features.clone(), y.clone(), 7).into_scalar();
        let b = loss.forward(features.clone(), y.clone(), 7).into_scalar();
        assert_eq!(a, b);
        // With the hand-rolled selection: 1 pos-pos + (2 random + 1 top) pos-neg + (2 random + 1 top) neg-neg.
        let host: Vec<f32> = features.into_data().to_vec().unwrap();
        let fv = |i: usize| &host[i * 4..i * 4 + 4];
        let mut pn = Vec::new();
        let mut nn = Vec::new();
        for i in 0..6 {
            for j in i + 1..6 {
                let d = 1.0 + cos(fv(i), fv(j));
                match (i < 2, j < 2) {
                    (true, true) => {}
                    (true, false) => pn.push(d),
                    _ => nn.push(d),
                }
            }
        }
        let mut rng = SeededRng::new(7);
        let mut terms = vec![1.0 - cos(fv(0), fv(1))];
        for list in [&pn, &nn] {
            let perm = rng.permutation(list.len());
            terms.extend(perm.iter().take(2).map(|&k| list[k]));
            terms.push(list.iter().cloned().fold(f32::MIN, f32::max));
        }
        let expected = terms.iter().sum::<f32>() / terms.len() as f32;
        assert!((a - expected).abs() < 1e-5, "{a} vs {expected}");
    }

    #[test]
    fn all_unknown_is_zero() {
        let device = Default::default();
        let features = Tensor::<TB, 3>::ones([3, 2, 4], &device);
        let y = Tensor::<TB, 2>::zeros([3, 2], &device);
        assert_eq!(
            InstanceContrastiveLoss::default()
                .forward(features, y, 1)
                .into_scalar(),
            0.0
        );
    }
}
