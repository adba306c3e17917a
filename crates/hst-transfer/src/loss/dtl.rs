//! The DTL (differentiable threshold learning) loss.

use burn::prelude::*;

use super::partial_bce::PartialBceLoss;

/// `L_dtl`: partial BCE between a clamped soft pseudo score `ŷ = clamp(score − τ, 0, 1)` used **as a logit**
/// and the known labels (reference: `BCELoss(intraTarget, target)`). Known positives push the score above
/// the threshold (τ down, score up), known negatives below it.
///
/// Note that the score is a logit in `[0, 1]`: a known positive costs between `log(1 + e^{-1})` and
/// `log 2`, as in the reference.
#[derive(Debug, Clone, Copy, Default)]
pub struct DtlLoss {
    /// The underlying partial BCE.
    pub bce: PartialBceLoss,
}

impl DtlLoss {
    /// The loss, averaged over the known entries of `partial`.
    ///
    /// # Shapes
    /// - soft_scores: `[batch, classes]`, the clamped soft scores (with their gradient path)
    /// - partial: `[batch, classes]` in {−1, 0, 1}
    /// - output: `[1]`
    pub fn forward<B: Backend>(
        &self,
        soft_scores: Tensor<B, 2>,
        partial: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        self.bce.forward(soft_scores, partial)
    }
}
