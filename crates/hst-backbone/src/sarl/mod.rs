//! SARL (semantic-aware representation learning): channel reduction, semantic decoupling, GGNN and the
//! per-class classifier.
//!
//! ```text
//! trunk feature map [batch, in_channels, h, w]
//!   → AvgPool2d(2, 2) (optional)          [batch, in_channels, h/2, w/2]
//!   → 1×1 conv (no bias) + BatchNorm      [batch, dim, h', w']
//!   → SemanticDecoupling (word vectors)   [batch, classes, dim]   = semantic features f_c
//!   → Ggnn (adjacency)                    [batch, classes, dim]
//!   → SarlClassifier([h_c ; f_c])         [batch, classes]        = logits
//! ```

pub mod classifier;
pub mod ggnn;
pub mod semantic_decoupling;

pub use classifier::{PerClassLinear, PerClassLinearConfig, SarlClassifier, SarlClassifierConfig};
pub use ggnn::{Ggnn, GgnnConfig};
pub use semantic_decoupling::{SemanticDecoupling, SemanticDecouplingConfig};

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;

/// Configuration of [`Sarl`]. Defaults are the reference's (HCP-MLR-PL `model/HST.py`).
#[derive(Config, Debug)]
pub struct SarlConfig {
    /// Number of categories C.
    pub classes: usize,
    /// Channels of the trunk's feature map (2048 for ResNet-101).
    pub in_channels: usize,
    /// Word-vector size (300 for the GloVe vectors of the reference).
    pub embed_dim: usize,
    /// Feature size D after the 1×1 conv (reference `imageFeatureDim`). Default: 1024.
    ///
    /// As in the reference, the 1×1 conv + BatchNorm is skipped when `feature_dim == in_channels`.
    #[config(default = 1024)]
    pub feature_dim: usize,
    /// Bilinear attention size d (reference `intermediaDim`). Default: 512.
    #[config(default = 512)]
    pub attention_dim: usize,
    /// Classifier projection size D_o (reference `outputDim`). Default: 1024.
    #[config(default = 1024)]
    pub output_dim: usize,
    /// GGNN propagation steps T (reference `timeStep`). Default: 3.
    #[config(default = 3)]
    pub time_steps: usize,
    /// Apply `AvgPool2d(kernel 2, stride 2)` to the trunk's feature map first, as the reference does after
    /// `layer4` (14×14 → 7×7 at 448 px). Turn off if the trunk already pools. Default: true.
    #[config(default = true)]
    pub pool: bool,
}

/// The SARL head. Word vectors and adjacency are constants: plain `Tensor` fields follow the module's
/// device but are neither trained nor saved in records (burn 0.21 gives a bare `Tensor` field an
/// `EmptyRecord` and does not visit it), so they are rebuilt from the data when the model is built.
#[derive(Module, Debug)]
pub struct Sarl<B: Backend> {
    /// Optional 2×2 average pooling of the trunk output.
    pub pool: Option<AvgPool2d>,
    /// 1×1 conv in_channels → feature_dim without bias (reference `changeChannel.0`).
    pub reduce_conv: Option<Conv2d<B>>,
    /// BatchNorm after the 1×1 conv (reference `changeChannel.1`).
    pub reduce_bn: Option<BatchNorm<B>>,
    /// Semantic decoupling (reference `SemanticDecoupling`).
    pub decoupling: SemanticDecoupling<B>,
    /// Gated GNN (reference `GraphNeuralNetwork`).
    pub ggnn: Ggnn<B>,
    /// Classifier (reference `fc` + `classifiers`).
    pub classifier: SarlClassifier<B>,
    /// Class word vectors `[classes, embed_dim]` (constant).
    pub word_vectors: Tensor<B, 2>,
    /// Adjacency `A` `[classes, classes]` (constant); the out-matrix is `Aᵀ`.
    pub adjacency: Tensor<B, 2>,
}

/// The outputs of [`Sarl::forward`].
#[derive(Debug, Clone)]
pub struct SarlOutput<B: Backend> {
    /// Per-class logits, `[batch, classes]`.
    pub logits: Tensor<B, 2>,
    /// Category-specific semantic features `f_c` (before the GGNN), `[batch, classes, feature_dim]`.
    pub semantic: Tensor<B, 3>,
}

impl SarlConfig {
    /// Build SARL on `device` with the given constants.
    ///
    /// - `word_vectors`: `[classes, embed_dim]`, one fixed embedding per class name.
    /// - `adjacency`: `[classes, classes]`, `A_ij = N_ij / N_ii` from the partial labels. The reference does
    ///   not guard it against NaN (a class with no known positive gives a 0/0 row): pass it through
    ///   [`adjacency_nan_to_zero`] first if it may contain NaN.
    ///
    /// # Panics
    /// If the constants' shapes do not match `classes` and `embed_dim` (a programming error: the data
    /// loaders check the files).
    pub fn init<B: Backend>(
        &self,
        word_vectors: Tensor<B, 2>,
        adjacency: Tensor<B, 2>,
        device: &B::Device,
    ) -> Sarl<B> {
        assert_eq!(
            word_vectors.dims(),
            [self.classes, self.embed_dim],
            "SARL word vectors must be [classes, embed_dim]. Got {:?}, classes={}, embed_dim={}",
            word_vectors.dims(),
            self.classes,
            self.embed_dim
        );
        assert_eq!(
            adjacency.dims(),
            [self.classes, self.classes],
            "SARL adjacency must be [classes, classes]. Got {:?}, classes={}",
            adjacency.dims(),
            self.classes
        );
        let reduce = self.in_channels != self.feature_dim;
        Sarl {
            pool: self
                .pool
                .then(|| AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init()),
            reduce_conv: reduce.then(|| {
                Conv2dConfig::new([self.in_channels, self.feature_dim], [1, 1])
                    .with_bias(false)
                    .init(device)
            }),
            reduce_bn: reduce.then(|| BatchNormConfig::new(self.feature_dim).init(device)),
            decoupling: SemanticDecouplingConfig::new(self.feature_dim, self.embed_dim)
                .with_attention_dim(self.attention_dim)
                .init(device),
            ggnn: GgnnConfig::new(self.feature_dim)
                .with_time_steps(self.time_steps)
                .init(device),
            classifier: SarlClassifierConfig::new(self.classes, self.feature_dim)
                .with_output_dim(self.output_dim)
                .init(device),
            word_vectors: word_vectors.to_device(device),
            adjacency: adjacency.to_device(device),
        }
    }
}

impl<B: Backend> Sarl<B> {
    /// Logits and semantic features.
    ///
    /// # Shapes
    /// - feature_map: `[batch, in_channels, height, width]`
    /// - output.logits: `[batch, classes]`
    /// - output.semantic: `[batch, classes, feature_dim]`
    pub fn forward(&self, feature_map: Tensor<B, 4>) -> SarlOutput<B> {
        let semantic = self.semantic_features(feature_map); // [batch, classes, dim]
        let state = self.ggnn.forward(semantic.clone(), self.adjacency.clone()); // [batch, classes, dim]
        let logits = self.classifier.forward(state, semantic.clone()); // [batch, classes]
        SarlOutput { logits, semantic }
    }

    /// Only the semantic features `f_c` (what the prototype pass needs; skips the GGNN and classifier).
    ///
    /// # Shapes
    /// - feature_map: `[batch, in_channels, height, width]`
    /// - output: `[batch, classes, feature_dim]`
    pub fn semantic_features(&self, feature_map: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.reduce(feature_map); // [batch, dim, h', w']
        self.decoupling.forward(x, self.word_vectors.clone()) // [batch, classes, dim]
    }

    /// Pooling and channel reduction.
    ///
    /// # Shapes
    /// - feature_map: `[batch, in_channels, height, width]`
    /// - output: `[batch, feature_dim, height / 2, width / 2]` (or unpooled when `pool` is off)
    pub fn reduce(&self, feature_map: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = feature_map;
        if let Some(pool) = &self.pool {
            x = pool.forward(x); // [batch, in_channels, h/2, w/2]
        }
        if let Some(conv) = &self.reduce_conv {
            x = crate::kernels::pointwise_conv2d(conv, x); // [batch, dim, h', w']
        }
        if let Some(bn) = &self.reduce_bn {
            // burn's `BatchNorm::forward` arithmetic on contiguous rows (`crate::trunk::batch_norm_train`,
            // tested against it): batch statistics with autodiff, running statistics without.
            x = crate::trunk::norm_batch_or_running(bn, x); // [batch, dim, h', w']
        }
        x
    }

    /// Number of categories.
    pub fn classes(&self) -> usize {
        self.word_vectors.dims()[0]
    }

    /// Size of the semantic features (D).
    pub fn feature_dim(&self) -> usize {
        self.ggnn.update_state.weight.dims()[0]
    }

    /// Replace the adjacency constant (e.g. after recomputing it for another label proportion).
    ///
    /// # Panics
    /// If the shape is not `[classes, classes]`.
    pub fn with_adjacency(mut self, adjacency: Tensor<B, 2>) -> Self {
        let c = self.classes();
        assert_eq!(
            adjacency.dims(),
            [c, c],
            "adjacency must be [classes, classes]"
        );
        self.adjacency = adjacency.to_device(&self.word_vectors.device());
        self
    }
}

/// Replace NaN entries of an adjacency matrix with 0.
///
/// `A_ij = N_ij / N_ii` is 0/0 = NaN for every class without a known positive. The reference computes
/// `nan_to_num` but discards the result, so its GGNN would propagate NaN; this project's callers pass
/// the matrix through this helper.
pub fn adjacency_nan_to_zero<B: Backend>(adjacency: Tensor<B, 2>) -> Tensor<B, 2> {
    let nan = adjacency.clone().is_nan();
    adjacency.mask_fill(nan, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    type TB = burn::backend::Flex;
    type AB = burn::backend::Autodiff<TB>;

    fn tiny(pool: bool) -> SarlConfig {
        SarlConfig::new(3, 8, 5)
            .with_feature_dim(6)
            .with_attention_dim(4)
            .with_output_dim(7)
            .with_pool(pool)
    }

    #[test]
    fn forward_shapes_with_and_without_pool() {
        let device = Default::default();
        for (pool, hw) in [(true, 4), (false, 2)] {
            let sarl = tiny(pool).init::<TB>(
                Tensor::ones([3, 5], &device),
                Tensor::eye(3, &device),
                &device,
            );
            let out = sarl.forward(Tensor::ones([2, 8, hw, hw], &device));
            assert_eq!(out.logits.dims(), [2, 3]);
            assert_eq!(out.semantic.dims(), [2, 3, 6]);
        }
    }

    #[test]
    fn constants_are_neither_parameters_nor_trained() {
        let device = Default::default();
        let sarl = tiny(true).init::<AB>(
            Tensor::ones([3, 5], &device),
            Tensor::eye(3, &device),
            &device,
        );
        // Parameters: conv 8*6, bn 2*6 (+ 2*6 running stats, which num_params counts), decoupling 6*4 + 5*4 + 4*4+4 + 4+1, ggnn 3*(12*6+6 + 6*6+6),
        // classifier 12*7+7 + 3*7+3. The constants (15 + 9 values) must not be counted.
        let expected = 48 + 12 + 12 + (24 + 20 + 20 + 5) + 3 * (78 + 42) + (91 + 24);
        assert_eq!(sarl.num_params(), expected);
        let out = sarl.forward(Tensor::ones([2, 8, 4, 4], &device));
        let grads = out.logits.sum().backward();
        assert!(sarl.word_vectors.grad(&grads).is_none());
        assert!(sarl.adjacency.grad(&grads).is_none());
        assert!(sarl.ggnn.update_state.weight.grad(&grads).is_some());
    }

    #[test]
    fn nan_adjacency_is_zeroed() {
        let device = Default::default();
        let a = Tensor::<TB, 2>::from_data([[1.0, f32::NAN], [0.5, 1.0]], &device);
        let out = adjacency_nan_to_zero(a)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(out, vec![1.0, 0.0, 0.5, 1.0]);
    }
}
