//! Linear layers applied to the rows of a tensor of any rank.
//!
//! Burn 0.21 applies a [`Linear`] to a `[batch, n, in]` input as a batched matmul with the weight
//! broadcast to `[1, in, out]`. Its backward then computes the weight gradient once per batch entry, a
//! `[batch, in, out]` temporary that is summed afterwards (`linear_weight_backward` in burn-backend):
//! for the GGNN of the paper's setting (`[32, 80, 2048] → 1024`) that is 256 MiB written and read per
//! layer and step instead of one `[in, out]` GEMM. Flattening the leading dimensions first gives the
//! same values (every row is an independent sample of the layer) with one GEMM forward and one per
//! gradient.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::module::linear;

/// Apply `layer` to the last dimension of `input`, as one `[rows, in] × [in, out]` GEMM.
///
/// # Shapes
/// - input: `[..., in]`
/// - output: `[..., out]`
pub fn linear_rows<B: Backend, const D: usize>(
    layer: &Linear<B>,
    input: Tensor<B, D>,
) -> Tensor<B, D> {
    linear_rows_with(
        input,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
    )
}

/// [`linear_rows`] with an explicit weight `[in, out]` (burn's layout) and optional bias `[out]`.
///
/// # Shapes
/// - input: `[..., in]`
/// - weight: `[in, out]`
/// - output: `[..., out]`
pub fn linear_rows_with<B: Backend, const D: usize>(
    input: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dims = input.dims();
    let [d_in, d_out] = weight.dims();
    if D <= 2 {
        return linear(input, weight, bias);
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let out = linear(input.reshape([rows, d_in]), weight, bias); // [rows, out]
    let mut shape = dims;
    shape[D - 1] = d_out;
    out.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    type AB = burn::backend::Autodiff<burn::backend::Flex>;

    /// Same output and gradients as burn's `Linear::forward` on a rank-3 input.
    #[test]
    fn rows_match_burn_linear_with_gradients() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 4).init::<AB>(&device);
        let x = Tensor::<AB, 3>::random([3, 5, 6], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let w = Tensor::<AB, 3>::random([3, 5, 4], Distribution::Normal(0.0, 1.0), &device);
        let ours = linear_rows(&layer, x.clone());
        let theirs = layer.forward(x.clone());
        ours.clone()
            .into_data()
            .assert_approx_eq::<f32>(&theirs.clone().into_data(), Tolerance::default());
        let g1 = (ours * w.clone()).sum().backward();
        let g2 = (theirs * w).sum().backward();
        x.grad(&g1)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), Tolerance::default());
        layer
            .weight
            .grad(&g1)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(
                &layer.weight.grad(&g2).unwrap().into_data(),
                Tolerance::default(),
            );
        layer
            .bias
            .as_ref()
            .unwrap()
            .grad(&g1)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(
                &layer.bias.as_ref().unwrap().grad(&g2).unwrap().into_data(),
                Tolerance::default(),
            );
    }
}
