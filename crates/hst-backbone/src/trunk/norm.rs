//! BatchNorm of the trunk stages.
//!
//! burn's [`BatchNorm::forward`] chooses batch statistics (and updates the running ones) whenever
//! the backend has autodiff enabled. The reference keeps frozen stages in `eval()` even while
//! training, so frozen stages go through [`batch_norm_eval`] instead.
//!
//! Both transforms are computed on `[batch · channels, height · width]` rows with one scale and one
//! shift per row (the per-channel vectors repeated over the batch). This is burn's arithmetic
//! regrouped — `(x − mean) · (γ / σ) + β` instead of `(x − mean) / σ · γ + β`, the batch mean as a
//! mean of per-image means — and it keeps every full-size operand contiguous: broadcasting a
//! `[1, channels, 1, 1]` operand over `[batch, channels, h, w]` sends burn-flex through its scalar
//! strided iterator, an order of magnitude slower than the per-row SIMD path used here.

use burn::nn::BatchNorm;
use burn::prelude::*;

/// BatchNorm in the mode a stage asks for.
///
/// `frozen == true`: the eval-mode transform ([`batch_norm_eval`]) on every backend.
/// `frozen == false`: batch statistics on an autodiff backend ([`batch_norm_train`], which updates
/// the running statistics as burn's [`BatchNorm::forward`] does), running statistics otherwise.
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn batch_norm<B: Backend>(
    bn: &BatchNorm<B>,
    input: Tensor<B, 4>,
    frozen: bool,
) -> Tensor<B, 4> {
    if frozen || !B::ad_enabled(&input.device()) {
        batch_norm_eval(bn, input)
    } else {
        batch_norm_train(bn, input)
    }
}

/// A per-channel vector as one value per `[batch · channels]` row.
///
/// # Shapes
/// - `values`: `[channels]`
/// - output: `[batch * channels, 1]`
fn per_row<B: Backend>(values: Tensor<B, 1>, batch: usize) -> Tensor<B, 2> {
    let [channels] = values.dims();
    values
        .reshape([1, channels])
        .repeat_dim(0, batch)
        .reshape([batch * channels, 1])
}

/// Eval-mode BatchNorm: `(x - running_mean) / sqrt(running_var + eps) * gamma + beta`, computed as
/// one scale and one shift per channel. The running statistics are never updated.
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub fn batch_norm_eval<B: Backend>(bn: &BatchNorm<B>, input: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, channels, height, width] = input.dims();
    let device = input.device();
    // `value_sync` folds in an update still pending from an earlier training forward.
    let mean = bn.running_mean.value_sync().to_device(&device); // [channels]
    let var = bn.running_var.value_sync().to_device(&device); // [channels]
    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt()); // [channels]
    let shift = bn.beta.val().sub(mean.mul(scale.clone())); // [channels]
    input
        .reshape([batch * channels, height * width])
        .mul(per_row(scale, batch))
        .add(per_row(shift, batch)) // [batch * channels, height * width]
        .reshape([batch, channels, height, width])
}

/// Training-mode BatchNorm, as burn's [`BatchNorm::forward`] on an autodiff backend: normalise with
/// the batch mean and biased variance over `(batch, height, width)`, then `· gamma + beta`, and move
/// the running statistics by `momentum` towards the batch statistics (the variance's unbiased estimate,
/// as PyTorch does).
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub fn batch_norm_train<B: Backend>(bn: &BatchNorm<B>, input: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, channels, height, width] = input.dims();
    let device = input.device();
    let x = input.reshape([batch * channels, height * width]);
    // Every image has height · width values per channel: the mean of the per-image means is the
    // batch mean.
    let channel_mean = |rows: Tensor<B, 2>| -> Tensor<B, 1> {
        rows.mean_dim(1) // [batch * channels, 1]
            .reshape([batch, channels])
            .mean_dim(0) // [1, channels]
            .reshape([channels])
    };
    let mean = channel_mean(x.clone()); // [channels]
    let centered = x.sub(per_row(mean.clone(), batch)); // [batch * channels, height * width]
    let var = channel_mean(centered.clone().square()); // [channels]

    // The running variance moves towards the *unbiased* batch variance, as PyTorch's BatchNorm (and so the
    // reference) does; burn's `BatchNorm::forward` uses the biased one. Normalisation uses the biased one.
    let count = (batch * height * width) as f64;
    let unbiased = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    let momentum = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean.update(
        running_mean
            .mul_scalar(1.0 - momentum)
            .add(mean.detach().mul_scalar(momentum))
            .detach(),
    );
    bn.running_var.update(
        running_var
            .mul_scalar(1.0 - momentum)
            .add(var.clone().detach().mul_scalar(momentum * unbiased))
            .detach(),
    );

    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt()); // [channels]
    centered
        .mul(per_row(scale, batch))
        .add(per_row(bn.beta.val(), batch)) // [batch * channels, height * width]
        .reshape([batch, channels, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Param, RunningState};
    use burn::nn::BatchNormConfig;

    type TB = Flex;
    type AB = Autodiff<Flex>;

    fn bn<Bk: Backend>(device: &Bk::Device) -> BatchNorm<Bk> {
        let mut bn = BatchNormConfig::new(2).with_epsilon(0.5).init::<Bk>(device);
        bn.gamma = Param::from_data([2.0, 3.0], device);
        bn.beta = Param::from_data([1.0, -1.0], device);
        bn.running_mean = RunningState::new(Tensor::from_data([1.0, 2.0], device));
        bn.running_var = RunningState::new(Tensor::from_data([3.5, 0.5], device));
        bn
    }

    /// `batch_norm_train` against burn's `BatchNorm::forward` on an autodiff backend: output, running
    /// statistics, input and parameter gradients. The running variance differs on purpose: ours moves
    /// towards the unbiased batch variance (PyTorch), burn's towards the biased one, so burn's update is
    /// rescaled by n / (n − 1) before the comparison.
    #[test]
    fn train_transform_matches_burn_batch_norm() {
        let device = Default::default();
        let data: Vec<f32> = (0..3 * 4 * 5 * 6)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1.0 + (i % 7) as f32))
            .collect();
        let run = |ours: bool| {
            let bn = BatchNormConfig::new(4)
                .with_momentum(0.3)
                .init::<AB>(&device);
            let bn = BatchNorm {
                gamma: Param::from_data([2.0, 0.5, -1.0, 1.5], &device),
                beta: Param::from_data([0.1, -0.2, 0.3, 0.0], &device),
                running_mean: RunningState::new(Tensor::from_data([1.0, 2.0, 0.0, -1.0], &device)),
                running_var: RunningState::new(Tensor::from_data([3.5, 0.5, 1.0, 2.0], &device)),
                ..bn
            };
            let x =
                Tensor::<AB, 4>::from_data(TensorData::new(data.clone(), [3, 4, 5, 6]), &device)
                    .require_grad();
            let y = if ours {
                batch_norm_train(&bn, x.clone())
            } else {
                bn.forward(x.clone())
            };
            let weights = Tensor::<AB, 4>::from_data(
                TensorData::new(
                    (0..360).map(|i| (i % 11) as f32 - 5.0).collect::<Vec<_>>(),
                    [3, 4, 5, 6],
                ),
                &device,
            );
            let grads = (y.clone() * weights).sum().backward();
            let host = |t: Tensor<Flex, 1>| t.into_data().to_vec::<f32>().unwrap();
            [
                y.inner()
                    .reshape([360])
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
                host(bn.running_mean.value_sync().inner()),
                host(bn.running_var.value_sync().inner()),
                x.grad(&grads)
                    .unwrap()
                    .reshape([360])
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap(),
                host(bn.gamma.val().grad(&grads).unwrap()),
                host(bn.beta.val().grad(&grads).unwrap()),
            ]
        };
        let (ours, mut burn) = (run(true), run(false));
        // burn: rv = (1 − m)·rv₀ + m·var_biased; PyTorch: (1 − m)·rv₀ + m·var_biased·n/(n − 1), n = 3·5·6.
        let n = 90.0f32;
        for (v, rv0) in burn[2].iter_mut().zip([3.5f32, 0.5, 1.0, 2.0]) {
            let kept = 0.7 * rv0;
            *v = kept + (*v - kept) * n / (n - 1.0);
        }
        for (name, (a, b)) in [
            "output",
            "running mean",
            "running var",
            "input grad",
            "gamma grad",
            "beta grad",
        ]
        .iter()
        .zip(ours.iter().zip(&burn))
        {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff / scale < 1e-5, "{name}: {diff} (scale {scale})");
        }
        // The running statistics moved towards the batch's.
        assert!((ours[1][0] - 1.0).abs() > 1e-3);
    }

    #[test]
    fn eval_transform_matches_hand_computation() {
        let device = Default::default();
        let bn = bn::<TB>(&device);
        // channel 0: (x - 1) / sqrt(4) * 2 + 1 = x; channel 1: (x - 2) / 1 * 3 - 1 = 3x - 7
        let x = Tensor::<TB, 4>::from_data([[[[5.0]], [[4.0]]]], &device);
        let y = batch_norm_eval(&bn, x).into_data().to_vec::<f32>().unwrap();
        assert!(
            (y[0] - 5.0).abs() < 1e-6 && (y[1] - 5.0).abs() < 1e-6,
            "{y:?}"
        );
    }

    #[test]
    fn frozen_bn_ignores_autodiff_and_keeps_running_stats() {
        let device = Default::default();
        let bn = bn::<AB>(&device);
        let x = Tensor::<AB, 4>::from_data([[[[5.0, 7.0]], [[4.0, 0.0]]]], &device);
        let frozen = batch_norm(&bn, x.clone(), true)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(frozen.len(), 4);
        assert!((frozen[0] - 5.0).abs() < 1e-6 && (frozen[3] + 7.0).abs() < 1e-6);
        let mean: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
        assert_eq!(
            mean,
            vec![1.0, 2.0],
            "frozen BN must not update running_mean"
        );
        // The trainable path on an autodiff backend uses batch statistics and moves the running mean.
        let _ = batch_norm(&bn, x, false);
        let mean: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
        assert!((mean[0] - (0.9 * 1.0 + 0.1 * 6.0)).abs() < 1e-6, "{mean:?}");
    }
}
