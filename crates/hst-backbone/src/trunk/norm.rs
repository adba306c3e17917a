//! BatchNorm of frozen stages: always the eval-mode transform from the running statistics.
//!
//! burn's [`BatchNorm::forward`] chooses batch statistics (and updates the running ones) whenever
//! the backend has autodiff enabled. The reference keeps frozen stages in `eval()` even while
//! training, so frozen stages go through [`batch_norm_eval`] instead.

use burn::nn::BatchNorm;
use burn::prelude::*;

/// BatchNorm in the mode a stage asks for.
///
/// `frozen == true`: the eval-mode transform ([`batch_norm_eval`]) on every backend.
/// `frozen == false`: burn's [`BatchNorm::forward`] (batch statistics on an autodiff backend,
/// running statistics otherwise).
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn batch_norm<B: Backend>(
    bn: &BatchNorm<B>,
    input: Tensor<B, 4>,
    frozen: bool,
) -> Tensor<B, 4> {
    if frozen {
        batch_norm_eval(bn, input)
    } else {
        bn.forward(input)
    }
}

/// Eval-mode BatchNorm: `(x - running_mean) / sqrt(running_var + eps) * gamma + beta`, computed as
/// one scale and one shift per channel. The running statistics are never updated.
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub fn batch_norm_eval<B: Backend>(bn: &BatchNorm<B>, input: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_batch, channels, _height, _width] = input.dims();
    let device = input.device();
    // `value_sync` folds in an update still pending from an earlier training forward.
    let mean = bn.running_mean.value_sync().to_device(&device); // [channels]
    let var = bn.running_var.value_sync().to_device(&device); // [channels]
    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt()); // [channels]
    let shift = bn.beta.val().sub(mean.mul(scale.clone())); // [channels]
    input
        .mul(scale.reshape([1, channels, 1, 1]))
        .add(shift.reshape([1, channels, 1, 1])) // [batch, channels, height, width]
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
