//! The asymmetric loss (ASL) of the IST co-occurrence head.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// Configuration of [`AsymmetricLoss`]. Defaults are the reference's `intraAsymmetricLoss(gamma_neg=2,
/// gamma_pos=1)` as HST.py builds it.
#[derive(Config, Debug)]
pub struct AsymmetricLossConfig {
    /// Focusing exponent γ+ of positive targets. Default: 1.
    #[config(default = 1.0)]
    pub gamma_pos: f64,
    /// Focusing exponent γ− of negative targets. Default: 2.
    #[config(default = 2.0)]
    pub gamma_neg: f64,
    /// Probability margin m of the negatives: `p⁻ = min(1 − p + m, 1)`. Default: 0.05.
    #[config(default = 0.05)]
    pub clip: f64,
    /// Lower clamp of the probabilities inside the logs. Default: 1e-8.
    #[config(default = 1e-8)]
    pub eps: f64,
}

impl AsymmetricLossConfig {
    /// Build the loss.
    pub fn init(&self) -> AsymmetricLoss {
        AsymmetricLoss {
            gamma_pos: self.gamma_pos,
            gamma_neg: self.gamma_neg,
            clip: self.clip,
            eps: self.eps,
        }
    }
}

/// `ℓ = −[ t (1−p)^{γ+} log p + (1−t) (1−p⁻)^{γ−} log p⁻ ]`, `p = σ(x)`, `p⁻ = min(1 − p + clip, 1)`,
/// averaged over all entries. As in the reference, the focusing weights are not detached.
#[derive(Debug, Clone, Copy)]
pub struct AsymmetricLoss {
    /// γ+.
    pub gamma_pos: f64,
    /// γ−.
    pub gamma_neg: f64,
    /// Probability margin of the negatives.
    pub clip: f64,
    /// Log clamp.
    pub eps: f64,
}

impl Default for AsymmetricLoss {
    fn default() -> Self {
        AsymmetricLossConfig::new().init()
    }
}

impl AsymmetricLoss {
    /// Mean loss over all entries.
    ///
    /// # Shapes
    /// - logits: `[batch, n]`
    /// - targets: `[batch, n]` in {0, 1}
    /// - output: `[1]`
    pub fn forward<B: Backend>(&self, logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
        self.elementwise(logits, targets).mean()
    }

    /// Per-entry loss.
    ///
    /// # Shapes
    /// - logits: `[batch, n]`
    /// - targets: `[batch, n]` in {0, 1}
    /// - output: `[batch, n]`
    pub fn elementwise<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let t = targets.detach();
        let not_t = t.clone().neg() + 1.0;
        let p = sigmoid(logits); // [batch, n]
        let mut p_neg = p.clone().neg() + 1.0;
        if self.clip > 0.0 {
            p_neg = (p_neg + self.clip).clamp_max(1.0);
        }
        let loss_pos = t.clone() * p.clone().clamp_min(self.eps).log();
        let loss_neg = not_t.clone() * p_neg.clone().clamp_min(self.eps).log();
        let loss = (loss_pos + loss_neg).neg();
        if self.gamma_pos > 0.0 || self.gamma_neg > 0.0 {
            // (1 − prob)^γ with prob = p for positives and p⁻ for negatives; t ∈ {0, 1}.
            let weight_pos = (p.neg() + 1.0).powf_scalar(self.gamma_pos);
            let weight_neg = (p_neg.neg() + 1.0).powf_scalar(self.gamma_neg);
            loss * (t * weight_pos + not_t * weight_neg)
        } else {
            loss
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    fn reference(x: f64, t: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        let p_neg = (1.0 - p + 0.05).min(1.0);
        if t > 0.5 {
            -(1.0 - p) * p.max(1e-8).ln()
        } else {
            -(1.0 - p_neg).powi(2) * p_neg.max(1e-8).ln()
        }
    }

    #[test]
    fn hand_computed() {
        let device = Default::default();
        let xs = [[2.0, -1.0, 0.3], [-4.0, 0.0, 5.0]];
        let ts = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let got = AsymmetricLoss::default()
            .elementwise(
                Tensor::<TB, 2>::from_data(xs, &device),
                Tensor::<TB, 2>::from_data(ts, &device),
            )
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (k, g) in got.iter().enumerate() {
            let e = reference(xs[k / 3][k % 3], ts[k / 3][k % 3]);
            assert!((*g as f64 - e).abs() < 1e-6, "entry {k}: {g} vs {e}");
        }
        // A very negative logit on a negative target is fully clipped: exactly zero loss.
        assert_eq!(got[3], 0.0);
    }
}
