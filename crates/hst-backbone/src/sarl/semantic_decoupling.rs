//! Semantic decoupling: word-vector-guided low-rank bilinear attention over the feature-map locations.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::kernels::tanh_bilinear_score;
use crate::linear::linear_rows;

/// Configuration of [`SemanticDecoupling`].
#[derive(Config, Debug)]
pub struct SemanticDecouplingConfig {
    /// Channels of the feature map (D). Reference: 1024.
    pub feature_dim: usize,
    /// Word-vector size. Reference: 300 (GloVe).
    pub embed_dim: usize,
    /// Size of the bilinear space (d). Default: 512.
    #[config(default = 512)]
    pub attention_dim: usize,
}

/// For every class `c` and location `hw`:
/// `z = tanh((W1 x_hw) ⊙ (W2 e_c))`, `a = w4ᵀ(W3 z + b3) + b4`, `α_c = softmax_hw(a)`,
/// and the category-specific feature `f_c = Σ_hw α_{c,hw} x_hw`.
///
/// Reference: `SemanticDecoupling` (fc1, fc2 without bias; fc3, fc4 with bias). Because there is no
/// nonlinearity between `W3` and `w4`, the forward folds them into one vector `W3 w4` and one bias
/// `b3·w4 + b4` (the same function and the same gradients up to float rounding), so the
/// `[batch, h·w, classes, d]` output of `W3` is never materialised.
#[derive(Module, Debug)]
pub struct SemanticDecoupling<B: Backend> {
    /// `W1`: feature_dim → attention_dim, no bias (reference `fc1`).
    pub image_projection: Linear<B>,
    /// `W2`: embed_dim → attention_dim, no bias (reference `fc2`).
    pub word_projection: Linear<B>,
    /// `W3`, `b3`: attention_dim → attention_dim (reference `fc3`).
    pub hidden: Linear<B>,
    /// `w4`, `b4`: attention_dim → 1 (reference `fc4`).
    pub score: Linear<B>,
}

impl SemanticDecouplingConfig {
    /// Build the module on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SemanticDecoupling<B> {
        SemanticDecoupling {
            image_projection: LinearConfig::new(self.feature_dim, self.attention_dim)
                .with_bias(false)
                .init(device),
            word_projection: LinearConfig::new(self.embed_dim, self.attention_dim)
                .with_bias(false)
                .init(device),
            hidden: LinearConfig::new(self.attention_dim, self.attention_dim).init(device),
            score: LinearConfig::new(self.attention_dim, 1).init(device),
        }
    }
}

impl<B: Backend> SemanticDecoupling<B> {
    /// Category-specific semantic features.
    ///
    /// # Shapes
    /// - feature_map: `[batch, dim, height, width]`
    /// - word_vectors: `[classes, embed_dim]`
    /// - output: `[batch, classes, dim]`
    pub fn forward(&self, feature_map: Tensor<B, 4>, word_vectors: Tensor<B, 2>) -> Tensor<B, 3> {
        self.forward_with_attention(feature_map, word_vectors).0
    }

    /// Like [`forward`](Self::forward), also returning the attention weights.
    ///
    /// # Shapes
    /// - feature_map: `[batch, dim, height, width]`
    /// - word_vectors: `[classes, embed_dim]`
    /// - output: (`[batch, classes, dim]`, attention `[batch, classes, height * width]`)
    pub fn forward_with_attention(
        &self,
        feature_map: Tensor<B, 4>,
        word_vectors: Tensor<B, 2>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [batch, dim, height, width] = feature_map.dims();
        let [classes, _embed] = word_vectors.dims();
        let locations = height * width;

        let x = crate::kernels::swap_dims_1_2(feature_map.reshape([batch, dim, locations])); // [batch, hw, dim]
        let image = linear_rows(&self.image_projection, x.clone()); // [batch, hw, d]
        let word = self.word_projection.forward(word_vectors); // [classes, d]
        let attention_dim = word.dims()[1];

        // Fold w4ᵀ(W3 z + b3) + b4 = z·(W3 w4) + (b3·w4 + b4), z = tanh(image ⊙ word): the logits are
        // Σ_k v_k tanh(image_k · word_k) + b, one fused kernel where the backend has it
        // (`crate::kernels`), never materialising z `[batch, hw, classes, d]`.
        let w3 = self.hidden.weight.val(); // [d, d]
        let w4 = self.score.weight.val(); // [d, 1]
        let folded_weight = w3.matmul(w4.clone()).reshape([attention_dim]); // [d]
        let mut folded_bias = self
            .score
            .bias
            .as_ref()
            .map(|b| b.val())
            .unwrap_or_else(|| Tensor::zeros([1], &x.device())); // [1]
        if let Some(b3) = &self.hidden.bias {
            folded_bias = folded_bias + b3.val().unsqueeze::<2>().matmul(w4).reshape([1]);
        }
        let logits = tanh_bilinear_score(
            image.reshape([batch * locations, attention_dim]),
            word,
            folded_weight,
        ) + folded_bias.unsqueeze::<2>(); // [batch * hw, classes]
        let logits = crate::kernels::swap_dims_1_2(logits.reshape([batch, locations, classes])); // [batch, classes, hw]
        let attention = softmax(logits, 2); // [batch, classes, hw]
        let features = attention.clone().matmul(x); // [batch, classes, dim]
        (features, attention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    type TB = burn::backend::Flex;

    /// The unfolded reference computation, for comparison.
    fn unfolded(
        m: &SemanticDecoupling<TB>,
        feature_map: Tensor<TB, 4>,
        words: Tensor<TB, 2>,
    ) -> Tensor<TB, 3> {
        let [batch, dim, h, w] = feature_map.dims();
        let classes = words.dims()[0];
        let x = feature_map.reshape([batch, dim, h * w]).swap_dims(1, 2);
        let image = m.image_projection.forward(x.clone()).unsqueeze_dim::<4>(2);
        let word = m.word_projection.forward(words).unsqueeze::<4>();
        let z = (image * word).tanh();
        let a = m.score.forward(m.hidden.forward(z)); // [batch, hw, classes, 1]
        let a = a.reshape([batch, h * w, classes]).swap_dims(1, 2);
        softmax(a, 2).matmul(x)
    }

    #[test]
    fn folded_equals_unfolded() {
        let device = Default::default();
        TB::seed(&device, 7);
        let m = SemanticDecouplingConfig::new(6, 5)
            .with_attention_dim(4)
            .init::<TB>(&device);
        let fm = Tensor::<TB, 4>::random(
            [2, 6, 3, 3],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let words = Tensor::<TB, 2>::random(
            [3, 5],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let (f, att) = m.forward_with_attention(fm.clone(), words.clone());
        assert_eq!(f.dims(), [2, 3, 6]);
        assert_eq!(att.dims(), [2, 3, 9]);
        let sums = att.sum_dim(2).into_data().to_vec::<f32>().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        f.into_data().assert_approx_eq::<f32>(
            &unfolded(&m, fm, words).into_data(),
            Tolerance::rel_abs(1e-5, 1e-6),
        );
    }

    #[test]
    fn uniform_feature_map_gives_that_feature() {
        // If every location carries the same vector, any attention returns that vector.
        let device = Default::default();
        let m = SemanticDecouplingConfig::new(2, 3)
            .with_attention_dim(4)
            .init::<TB>(&device);
        let fm = Tensor::<TB, 1>::from_data([1.5, -2.0], &device)
            .reshape([1, 2, 1, 1])
            .expand([1, 2, 2, 2]);
        let words = Tensor::<TB, 2>::ones([3, 3], &device);
        let f = m.forward(fm, words).into_data().to_vec::<f32>().unwrap();
        for c in 0..3 {
            assert!((f[2 * c] - 1.5).abs() < 1e-5 && (f[2 * c + 1] + 2.0).abs() < 1e-5);
        }
    }
}
