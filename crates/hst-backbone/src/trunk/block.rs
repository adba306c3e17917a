//! ResNet residual blocks in torchvision's layout (`BasicBlock`, `Bottleneck` v1.5).
//!
//! Field names are torchvision's (`conv1..conv3`, `bn1..bn3`, `downsample`), so a torchvision
//! state dict maps onto them with the few rules in [`crate::weights::TORCHVISION_RESNET`].

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::norm::batch_norm;

/// torchvision's BatchNorm epsilon for ResNets.
pub(crate) const RESNET_BN_EPSILON: f64 = 1e-5;

/// torchvision's conv init (`kaiming_normal_(mode="fan_out", nonlinearity="relu")`).
pub(crate) fn kaiming_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: core::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// Config of a bias-free convolution with symmetric zero padding (torchvision's `conv3x3` with
/// `padding = kernel / 2`, `conv1x1` with none).
pub(crate) fn conv_config(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
) -> Conv2dConfig {
    let padding = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(kaiming_fan_out())
}

/// torchvision's ResNet BatchNorm (eps 1e-5, momentum 0.1).
pub(crate) fn resnet_bn<B: Backend>(channels: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(channels)
        .with_epsilon(RESNET_BN_EPSILON)
        .init(device)
}

/// The projection shortcut: 1×1 conv (with the block's stride) + BatchNorm.
/// torchvision stores it as `downsample.0` / `downsample.1`; here `downsample.conv` / `downsample.bn`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// `[out, in, 1, 1]`, no bias.
    pub conv: Conv2d<B>,
    /// BatchNorm over `out` channels.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> Downsample<B> {
    fn new(channels: [usize; 2], stride: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_config(channels, 1, stride, 1).init(device),
            bn: resnet_bn(channels[1], device),
        }
    }

    /// # Shapes
    /// - `input`: `[batch, in, height, width]`
    /// - output: `[batch, out, height / stride, width / stride]`
    pub fn forward(&self, input: Tensor<B, 4>, frozen: bool) -> Tensor<B, 4> {
        // A matmul on the subsampled input, not burn's strided 1×1 conv (see `pointwise_conv2d`).
        batch_norm(
            &self.bn,
            crate::kernels::pointwise_conv2d(&self.conv, input),
            frozen,
        )
    }
}

/// ResNet-18/34 block: 3×3 conv (stride) → BN → ReLU → 3×3 conv → BN, plus the shortcut, → ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// 3×3, `in → planes`, carries the stride.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3×3, `planes → planes`.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// Projection shortcut when the stride or the width changes.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> BasicBlock<B> {
    /// Output channels per `planes` (torchvision's `expansion`).
    pub const EXPANSION: usize = 1;

    /// A block from `in_channels` to `planes` channels.
    pub fn new(in_channels: usize, planes: usize, stride: usize, device: &B::Device) -> Self {
        let out = planes * Self::EXPANSION;
        let downsample = (stride != 1 || in_channels != out)
            .then(|| Downsample::new([in_channels, out], stride, device));
        Self {
            conv1: conv_config([in_channels, planes], 3, stride, 1).init(device),
            bn1: resnet_bn(planes, device),
            conv2: conv_config([planes, planes], 3, 1, 1).init(device),
            bn2: resnet_bn(planes, device),
            downsample,
        }
    }

    /// `frozen`: BatchNorm in eval mode whatever the backend (see `trunk::norm`).
    ///
    /// # Shapes
    /// - `input`: `[batch, in, height, width]`
    /// - output: `[batch, planes, height / stride, width / stride]`
    pub fn forward(&self, input: Tensor<B, 4>, frozen: bool) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(downsample) => downsample.forward(input.clone(), frozen),
            None => input.clone(),
        };
        let x = relu(batch_norm(
            &self.bn1,
            crate::kernels::dense_conv2d(&self.conv1, input),
            frozen,
        )); // [batch, planes, h/s, w/s]
        let x = batch_norm(
            &self.bn2,
            crate::kernels::dense_conv2d(&self.conv2, x),
            frozen,
        ); // [batch, planes, h/s, w/s]
        relu(x + identity)
    }
}

/// ResNet-50/101/152 block (torchvision "v1.5": the stride sits on the 3×3 conv, not the first
/// 1×1 as in the original paper): 1×1 → BN → ReLU → 3×3 (stride, groups) → BN → ReLU → 1×1 → BN,
/// plus the shortcut, → ReLU. Inner width `planes * width_per_group / 64 * groups`.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1×1, `in → width`.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3×3, `width → width`, carries the stride and the groups.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1×1, `width → planes * 4`.
    pub conv3: Conv2d<B>,
    /// BatchNorm after `conv3`.
    pub bn3: BatchNorm<B>,
    /// Projection shortcut when the stride or the width changes.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> Bottleneck<B> {
    /// Output channels per `planes` (torchvision's `expansion`).
    pub const EXPANSION: usize = 4;

    /// A block from `in_channels` to `planes * 4` channels.
    pub fn new(
        in_channels: usize,
        planes: usize,
        stride: usize,
        groups: usize,
        width_per_group: usize,
        device: &B::Device,
    ) -> Self {
        let width = planes * width_per_group / 64 * groups;
        assert!(
            width > 0,
            "Bottleneck inner width is 0: planes={planes}, width_per_group={width_per_group}, groups={groups}"
        );
        let out = planes * Self::EXPANSION;
        let downsample = (stride != 1 || in_channels != out)
            .then(|| Downsample::new([in_channels, out], stride, device));
        Self {
            conv1: conv_config([in_channels, width], 1, 1, 1).init(device),
            bn1: resnet_bn(width, device),
            conv2: conv_config([width, width], 3, stride, groups).init(device),
            bn2: resnet_bn(width, device),
            conv3: conv_config([width, out], 1, 1, 1).init(device),
            bn3: resnet_bn(out, device),
            downsample,
        }
    }

    /// `frozen`: BatchNorm in eval mode whatever the backend (see `trunk::norm`).
    ///
    /// # Shapes
    /// - `input`: `[batch, in, height, width]`
    /// - output: `[batch, planes * 4, height / stride, width / stride]`
    pub fn forward(&self, input: Tensor<B, 4>, frozen: bool) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(downsample) => downsample.forward(input.clone(), frozen),
            None => input.clone(),
        };
        let x = relu(batch_norm(
            &self.bn1,
            crate::kernels::dense_conv2d(&self.conv1, input),
            frozen,
        )); // [batch, width, h, w]
        let x = relu(batch_norm(
            &self.bn2,
            crate::kernels::dense_conv2d(&self.conv2, x),
            frozen,
        )); // [batch, width, h/s, w/s]
        let x = batch_norm(
            &self.bn3,
            crate::kernels::dense_conv2d(&self.conv3, x),
            frozen,
        ); // [batch, planes*4, h/s, w/s]
        relu(x + identity)
    }
}

/// One residual block of either kind (a stage holds blocks of one kind).
// A Bottleneck holds one conv and BatchNorm more than a BasicBlock; blocks are few and long-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResidualBlock<B: Backend> {
    /// ResNet-18/34 block.
    Basic(BasicBlock<B>),
    /// ResNet-50/101/152 block.
    Bottleneck(Bottleneck<B>),
}

impl<B: Backend> ResidualBlock<B> {
    /// # Shapes
    /// - `input`: `[batch, in, height, width]`
    /// - output: `[batch, out, height / stride, width / stride]`
    pub fn forward(&self, input: Tensor<B, 4>, frozen: bool) -> Tensor<B, 4> {
        match self {
            Self::Basic(block) => block.forward(input, frozen),
            Self::Bottleneck(block) => block.forward(input, frozen),
        }
    }
}
