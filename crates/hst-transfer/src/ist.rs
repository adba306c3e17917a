//! IST (intra-image semantic transfer): the image-specific co-occurrence head.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use hst_backbone::linear::{linear_rows, linear_rows_with};
use hst_backbone::sarl::{PerClassLinear, PerClassLinearConfig};

use crate::loss::asymmetric::AsymmetricLossConfig;
use crate::pairs::{pair_count, pair_index_tensors};

/// IST settings that do not depend on the dataset (part of [`crate::HstConfig`]).
#[derive(Config, Debug)]
pub struct IstConfig {
    /// Size of the per-class projection `g_c` (reference `intermediaDim`). Default: 512.
    #[config(default = 512)]
    pub hidden_dim: usize,
    /// Size of the pair features (reference `outputDim`). Default: 1024.
    #[config(default = 1024)]
    pub pair_dim: usize,
    /// Pairs per chunk of the factorised forward (see [`IstHeadConfig::pair_chunk`]). Default: 2048.
    #[config(default = 2048)]
    pub pair_chunk: usize,
    /// The co-occurrence loss `L_ist`. Default: γ+ = 1, γ− = 2, clip 0.05, eps 1e-8.
    #[config(default = "AsymmetricLossConfig::new()")]
    pub loss: AsymmetricLossConfig,
}

impl IstConfig {
    /// The head configuration for `classes` categories with `feature_dim`-sized semantic features.
    pub fn head(&self, classes: usize, feature_dim: usize) -> IstHeadConfig {
        IstHeadConfig::new(classes, feature_dim)
            .with_hidden_dim(self.hidden_dim)
            .with_pair_dim(self.pair_dim)
            .with_pair_chunk(self.pair_chunk)
    }
}

/// Configuration of [`IstHead`].
#[derive(Config, Debug)]
pub struct IstHeadConfig {
    /// Number of categories C (the head predicts `C(C−1)/2` pairs).
    pub classes: usize,
    /// Size of the semantic features `f_c` (D). Reference: 1024.
    pub feature_dim: usize,
    /// Size of `g_c` (reference `intermediaDim`). Default: 512.
    #[config(default = 512)]
    pub hidden_dim: usize,
    /// Size of the pair features (reference `outputDim`). Default: 1024.
    #[config(default = 1024)]
    pub pair_dim: usize,
    /// The factorised forward processes the pairs in chunks of this many, so that only one chunk's
    /// `[chunk, batch, pair_dim]` temporaries exist at a time (the ReLU outputs of all chunks are still kept
    /// for the backward pass). Does not change the result. Default: 2048.
    #[config(default = 2048)]
    pub pair_chunk: usize,
}

/// Image-specific co-occurrence prediction (reference `intra_fc_1/2/3` and `intra_classifiers`):
///
/// ```text
/// g_c  = W_a f_c + b_a
/// u_ij = W_c ReLU(W_b [g_i ; g_j] + b_b) + b_c
/// m_ij = v_ijᵀ u_ij + β_ij          for every pair i < j
/// ```
///
/// [`forward`](Self::forward) computes the same function factorised: `W_b [g_i ; g_j] = W_b1 g_i + W_b2 g_j`
/// is two per-class projections gathered per pair (no `[batch, pairs, 2·hidden]` concat), and `W_c`, `b_c`
/// are folded into the per-pair weights, `m_ij = (W_cᵀ v_ij)ᵀ ReLU(·) + (v_ij·b_c + β_ij)` (no
/// `[batch, pairs, pair_dim]` output of `W_c`). The ReLU output `[pairs, batch, pair_dim]` is the one
/// large tensor left; it is computed in chunks of `pair_chunk` pairs so that the temporaries of only one
/// chunk exist at a time. Folding costs `pairs × pair_dim²` multiply-adds once per forward, instead of
/// `batch × pairs × pair_dim²` for `W_c` in the naive order. [`forward_naive`](Self::forward_naive) is the reference's literal computation.
#[derive(Module, Debug)]
pub struct IstHead<B: Backend> {
    /// `W_a`, `b_a`: feature_dim → hidden_dim (reference `intra_fc_1`).
    pub projection: Linear<B>,
    /// `W_b`, `b_b`: 2·hidden_dim → pair_dim (reference `intra_fc_2`). Rows `0..hidden` act on `g_i`.
    pub pair_hidden: Linear<B>,
    /// `W_c`, `b_c`: pair_dim → pair_dim (reference `intra_fc_3`).
    pub pair_output: Linear<B>,
    /// `v_ij`, `β_ij`: one weight vector and bias per pair (reference `intra_classifiers`).
    pub pair_classifier: PerClassLinear<B>,
    /// First class of each pair, `[pairs]` (constant).
    pub first: Tensor<B, 1, Int>,
    /// Second class of each pair, `[pairs]` (constant).
    pub second: Tensor<B, 1, Int>,
    /// Pairs per chunk of the factorised forward.
    pub pair_chunk: usize,
}

impl IstHeadConfig {
    /// Build the head on `device`.
    ///
    /// # Panics
    /// If `classes < 2` (there is no pair to predict).
    pub fn init<B: Backend>(&self, device: &B::Device) -> IstHead<B> {
        assert!(
            self.classes >= 2,
            "IstHead needs at least 2 classes. Got classes={}",
            self.classes
        );
        let (first, second) = pair_index_tensors::<B>(self.classes, device);
        IstHead {
            projection: LinearConfig::new(self.feature_dim, self.hidden_dim).init(device),
            pair_hidden: LinearConfig::new(2 * self.hidden_dim, self.pair_dim).init(device),
            pair_output: LinearConfig::new(self.pair_dim, self.pair_dim).init(device),
            pair_classifier: PerClassLinearConfig::new(pair_count(self.classes), self.pair_dim)
                .init(device),
            first,
            second,
            pair_chunk: self.pair_chunk.max(1),
        }
    }
}

impl<B: Backend> IstHead<B> {
    /// Pair logits `m_ij`, factorised (see the type's doc).
    ///
    /// # Shapes
    /// - semantic: `[batch, classes, feature_dim]`
    /// - output: `[batch, pairs]`, pairs in the order `(0,1), (0,2), …, (1,2), …`
    pub fn forward(&self, semantic: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, classes, _dim] = semantic.dims();
        let pairs = self.pairs();
        let hidden = self.hidden_dim();
        let pair_dim = self.pair_dim();

        let g = linear_rows(&self.projection, semantic); // [batch, classes, hidden]
        let w_b = self.pair_hidden.weight.val(); // [2 * hidden, pair_dim]
        let w_b1 = w_b.clone().slice([0..hidden, 0..pair_dim]); // [hidden, pair_dim]
        let w_b2 = w_b.slice([hidden..2 * hidden, 0..pair_dim]); // [hidden, pair_dim]
        let b_b = self.pair_hidden.bias.as_ref().map(|b| b.val());
        // Class-major rows `[classes, batch · pair_dim]`: the per-pair gathers below are 2-D row selects,
        // which Burn's CPU backend runs (and scatters back in the backward pass) as row copies; its N-D
        // select computes every element's index.
        // (With one image the swap is a reshape: burn 0.21's WGPU loses values in a swap of a unit dimension
        // followed by a reshape, see `hst_backbone::kernels::swap_dims_1_2`.)
        let rows = |x: Tensor<B, 3>| {
            if batch == 1 {
                x.reshape([classes, pair_dim])
            } else {
                x.swap_dims(0, 1).reshape([classes, batch * pair_dim])
            }
        };
        let left = rows(linear_rows_with(g.clone(), w_b1, None)); // [classes, batch * pair_dim]
        let right = rows(linear_rows_with(g, w_b2, b_b)); // [classes, batch * pair_dim]

        // Fold W_c, b_c into the per-pair weights: v·(W_c r + b_c) = (W_c v)·r + v·b_c
        // (burn stores W_c as [in, out], so the folded weights are v W_cᵀ).
        let v = self.pair_classifier.weight.val(); // [pairs, pair_dim]
        let w_c = self.pair_output.weight.val(); // [pair_dim, pair_dim]
        let folded_weight = v.clone().matmul(w_c.transpose()); // [pairs, pair_dim]
        let mut folded_bias = match &self.pair_classifier.bias {
            Some(beta) => beta.val(),
            None => Tensor::zeros([pairs], &v.device()),
        }; // [pairs]
        if let Some(b_c) = &self.pair_output.bias {
            folded_bias = folded_bias + v.matmul(b_c.val().unsqueeze_dim::<2>(1)).reshape([pairs]);
        }

        let mut chunks = Vec::with_capacity(pairs.div_ceil(self.pair_chunk));
        for start in (0..pairs).step_by(self.pair_chunk) {
            let end = (start + self.pair_chunk).min(pairs);
            let size = end - start;
            let first = self.first.clone().slice(start..end);
            let second = self.second.clone().slice(start..end);
            let activated = relu(left.clone().select(0, first) + right.clone().select(0, second))
                .reshape([size, batch, pair_dim]); // [chunk, batch, pair_dim]
            let weight = folded_weight
                .clone()
                .slice([start..end, 0..pair_dim])
                .unsqueeze_dim::<3>(2); // [chunk, pair_dim, 1]
            chunks.push(activated.matmul(weight).reshape([size, batch])); // [chunk, batch]
        }
        let logits = Tensor::cat(chunks, 0).transpose(); // [batch, pairs]
        logits + folded_bias.unsqueeze::<2>() // [batch, pairs]
    }

    /// Pair logits computed literally as the reference does (concat, `W_b`, ReLU, `W_c`, per-pair layer).
    /// Same function as [`forward`](Self::forward); kept for tests and benchmarks.
    ///
    /// # Shapes
    /// - semantic: `[batch, classes, feature_dim]`
    /// - output: `[batch, pairs]`
    pub fn forward_naive(&self, semantic: Tensor<B, 3>) -> Tensor<B, 2> {
        let g = self.projection.forward(semantic); // [batch, classes, hidden]
        let joint = Tensor::cat(
            vec![
                g.clone().select(1, self.first.clone()),
                g.select(1, self.second.clone()),
            ],
            2,
        ); // [batch, pairs, 2 * hidden]
        let hidden = relu(self.pair_hidden.forward(joint)); // [batch, pairs, pair_dim]
        let u = self.pair_output.forward(hidden); // [batch, pairs, pair_dim]
        self.pair_classifier.forward(u) // [batch, pairs]
    }

    /// Number of class pairs `C(C−1)/2`.
    pub fn pairs(&self) -> usize {
        self.first.dims()[0]
    }

    /// Size of `g_c`.
    pub fn hidden_dim(&self) -> usize {
        self.projection.weight.dims()[1]
    }

    /// Size of the pair features.
    pub fn pair_dim(&self) -> usize {
        self.pair_output.weight.dims()[0]
    }
}

/// Pair targets for `L_ist`: `t_ij = 1` iff classes `i` and `j` are both known positive, else 0 (pairs with
/// an unknown member count as "not co-occurring", as in the reference).
///
/// # Shapes
/// - partial: `[batch, classes]` in {−1, 0, 1}
/// - output: `[batch, pairs]` in {0, 1}
pub fn cooccurrence_targets<B: Backend>(partial: Tensor<B, 2>) -> Tensor<B, 2> {
    let [_batch, classes] = partial.dims();
    let (first, second) = pair_index_tensors::<B>(classes, &partial.device());
    let positive = partial.detach().equal_elem(1.0).float(); // [batch, classes]
    positive.clone().select(1, first) * positive.select(1, second) // [batch, pairs]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type TB = burn::backend::Flex;
    type AB = burn::backend::Autodiff<TB>;

    #[test]
    fn factorised_equals_naive_on_random_weights() {
        let device = Default::default();
        TB::seed(&device, 11);
        let head = IstHeadConfig::new(5, 8)
            .with_hidden_dim(6)
            .with_pair_dim(7)
            .with_pair_chunk(3)
            .init::<TB>(&device);
        // Three images, and one (the batch-of-one layout path).
        for batch in [3, 1] {
            let f = Tensor::<TB, 3>::random([batch, 5, 8], Distribution::Normal(0.0, 1.0), &device);
            let fast = head.forward(f.clone());
            let slow = head.forward_naive(f);
            assert_eq!(fast.dims(), [batch, 10]);
            fast.into_data()
                .assert_approx_eq::<f32>(&slow.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
        }
    }

    #[test]
    fn factorised_gradients_equal_naive() {
        let device = Default::default();
        AB::seed(&device, 5);
        let head = IstHeadConfig::new(4, 6)
            .with_hidden_dim(3)
            .with_pair_dim(5)
            .with_pair_chunk(4)
            .init::<AB>(&device);
        let f = Tensor::<AB, 3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<AB, 2>::random([2, 6], Distribution::Normal(0.0, 1.0), &device);
        let g_fast = (head.forward(f.clone()) * w.clone()).sum().backward();
        let g_slow = (head.forward_naive(f) * w).sum().backward();
        let params = [
            (
                head.pair_hidden.weight.grad(&g_fast),
                head.pair_hidden.weight.grad(&g_slow),
            ),
            (
                head.pair_output.weight.grad(&g_fast),
                head.pair_output.weight.grad(&g_slow),
            ),
            (
                head.projection.weight.grad(&g_fast),
                head.projection.weight.grad(&g_slow),
            ),
        ];
        for (a, b) in params {
            a.unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&b.unwrap().into_data(), Tolerance::rel_abs(1e-4, 1e-5));
        }
        let (a, b) = (
            head.pair_output
                .bias
                .as_ref()
                .unwrap()
                .grad(&g_fast)
                .unwrap(),
            head.pair_output
                .bias
                .as_ref()
                .unwrap()
                .grad(&g_slow)
                .unwrap(),
        );
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-4, 1e-5));
    }

    #[test]
    fn pair_targets() {
        let device = Default::default();
        let y = Tensor::<TB, 2>::from_data([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0]], &device);
        let t = cooccurrence_targets(y).into_data().to_vec::<f32>().unwrap();
        // pairs (0,1), (0,2), (1,2)
        assert_eq!(t, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }
}
