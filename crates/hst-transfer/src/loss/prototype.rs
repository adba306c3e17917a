//! The prototype-level CST loss.

use burn::prelude::*;

/// Which sign the prototype loss uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PrototypeLossSign {
    /// The reference code: `s·y + 1`, so a known positive costs `1 + s` (it is pushed **away** from its own
    /// prototypes) and a known negative `1 − s`. Reproduces the published numbers. The default.
    Reference,
    /// The presumed intent: `1 − y·s`, pulling known positives towards their prototypes and pushing known
    /// negatives away, consistent with the instance loss.
    Corrected,
}

/// Configuration of [`PrototypeLoss`].
#[derive(Config, Debug)]
pub struct PrototypeLossConfig {
    /// The sign convention. Default: [`PrototypeLossSign::Reference`].
    #[config(default = "PrototypeLossSign::Reference")]
    pub sign: PrototypeLossSign,
}

impl PrototypeLossConfig {
    /// Build the loss.
    pub fn init(&self) -> PrototypeLoss {
        PrototypeLoss { sign: self.sign }
    }
}

/// `L_proto`: the mean over all `batch × classes` entries (unknowns included, each a constant 1) of
/// `s·y + 1` ([`PrototypeLossSign::Reference`]) or `1 − y·s` ([`PrototypeLossSign::Corrected`]),
/// where `s` is the mean cosine similarity of the class feature to the class's prototypes.
#[derive(Debug, Clone, Copy)]
pub struct PrototypeLoss {
    /// The sign convention.
    pub sign: PrototypeLossSign,
}

impl Default for PrototypeLoss {
    fn default() -> Self {
        PrototypeLossConfig::new().init()
    }
}

impl PrototypeLoss {
    /// The loss.
    ///
    /// # Shapes
    /// - similarity: `[batch, classes]`, mean cosine to the class's prototypes (see
    ///   [`crate::cst::prototype_similarity`])
    /// - partial: `[batch, classes]` in {−1, 0, 1}
    /// - output: `[1]`
    pub fn forward<B: Backend>(
        &self,
        similarity: Tensor<B, 2>,
        partial: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let signed = similarity * partial.detach(); // [batch, classes]
        match self.sign {
            PrototypeLossSign::Reference => (signed + 1.0).mean(),
            PrototypeLossSign::Corrected => (signed.neg() + 1.0).mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TB = burn::backend::Flex;

    #[test]
    fn both_signs() {
        let device = Default::default();
        let s = Tensor::<TB, 2>::from_data([[0.5, 0.2], [-0.4, 0.9]], &device);
        let y = Tensor::<TB, 2>::from_data([[1.0, -1.0], [0.0, 1.0]], &device);
        let r = PrototypeLoss::default()
            .forward(s.clone(), y.clone())
            .into_scalar();
        assert!((r - (1.5 + 0.8 + 1.0 + 1.9) / 4.0).abs() < 1e-6);
        let c = PrototypeLossConfig::new()
            .with_sign(PrototypeLossSign::Corrected)
            .init()
            .forward(s, y)
            .into_scalar();
        assert!((c - (0.5 + 1.2 + 1.0 + 0.1) / 4.0).abs() < 1e-6);
    }
}
