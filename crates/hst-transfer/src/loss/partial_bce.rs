//! Partial binary cross-entropy: BCE with logits over the known labels only.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;

/// Configuration of [`PartialBceLoss`].
#[derive(Config, Debug)]
pub struct PartialBceLossConfig {
    /// An entry is positive if its target is `> margin` and negative if `< −margin`; the rest are
    /// unknown and ignored (reference `BCELoss(margin)`). Default: 0.
    #[config(default = 0.0)]
    pub margin: f64,
}

impl PartialBceLossConfig {
    /// Build the loss.
    pub fn init(&self) -> PartialBceLoss {
        PartialBceLoss {
            margin: self.margin,
        }
    }
}

/// `BCE_p(s, y)`: the mean over the known entries (`y ≠ 0`) of `log(1 + e^{−s})` for positives and
/// `log(1 + e^{s})` for negatives (the reference's `BCEWithLogits(−s, 1)` for a known negative).
/// Averaged over the known entries of the whole batch, with no per-image normalisation.
///
/// When nothing is known the result is 0: the sum of the masked terms divided by `max(#known, 1)`, so the
/// graph still reaches the logits (with a zero gradient). The reference returns `mean(0 · loss) = 0` too.
#[derive(Debug, Clone, Copy)]
pub struct PartialBceLoss {
    /// See [`PartialBceLossConfig::margin`].
    pub margin: f64,
}

impl Default for PartialBceLoss {
    fn default() -> Self {
        PartialBceLossConfig::new().init()
    }
}

impl PartialBceLoss {
    /// The mean loss over the known entries.
    ///
    /// # Shapes
    /// - logits: `[batch, classes]`
    /// - targets: `[batch, classes]` in {−1, 0, 1} (any value: sign against `margin`)
    /// - output: `[1]`
    pub fn forward<B: Backend>(&self, logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
        let targets = targets.detach();
        let positive = targets.clone().greater_elem(self.margin).float(); // [batch, classes]
        let negative = targets.lower_elem(-self.margin).float(); // [batch, classes]
        let positive_loss = log_sigmoid(logits.clone()).neg(); // log(1 + e^{-s})
        let negative_loss = log_sigmoid(logits.neg()).neg(); // log(1 + e^{s})
        let known = (positive.clone() + negative.clone()).sum(); // [1]
        let total = (positive * positive_loss + negative * negative_loss).sum(); // [1]
        total / known.clamp_min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;
    type AB = burn::backend::Autodiff<TB>;

    fn softplus(x: f64) -> f64 {
        (1.0 + x.exp()).ln()
    }

    #[test]
    fn hand_computed() {
        let device = Default::default();
        let logits = Tensor::<TB, 2>::from_data([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], &device);
        let targets = Tensor::<TB, 2>::from_data([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]], &device);
        let got = PartialBceLoss::default()
            .forward(logits, targets)
            .into_scalar() as f64;
        let expected = (softplus(-2.0) + softplus(-1.0) + softplus(2.0)) / 3.0;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn large_logits_are_finite() {
        let device = Default::default();
        let logits = Tensor::<TB, 2>::from_data([[100.0, -100.0]], &device);
        let targets = Tensor::<TB, 2>::from_data([[-1.0, 1.0]], &device);
        let got = PartialBceLoss::default()
            .forward(logits, targets)
            .into_scalar();
        assert!((got - 100.0).abs() < 1e-3, "{got}");
    }

    #[test]
    fn nothing_known_is_zero_with_a_gradient_path() {
        let device = Default::default();
        let logits = Tensor::<AB, 2>::from_data([[2.0, -1.0]], &device).require_grad();
        let targets = Tensor::<AB, 2>::zeros([1, 2], &device);
        let loss = PartialBceLoss::default().forward(logits.clone(), targets);
        assert_eq!(loss.clone().into_scalar(), 0.0);
        let grads = loss.backward();
        let g = logits.grad(&grads).expect("the logits stay in the graph");
        assert_eq!(g.into_data().to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    }

    #[test]
    fn margin_ignores_small_targets() {
        let device = Default::default();
        let logits = Tensor::<TB, 2>::from_data([[1.0, 1.0]], &device);
        let targets = Tensor::<TB, 2>::from_data([[0.5, 1.0]], &device);
        let got = PartialBceLossConfig::new()
            .with_margin(0.75)
            .init()
            .forward(logits, targets)
            .into_scalar() as f64;
        assert!((got - softplus(-1.0)).abs() < 1e-6);
    }
}
