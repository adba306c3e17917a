//! EfficientNet-Lite (Lite0…Lite4) in the lukemelas EfficientNet-PyTorch layout.
//!
//! Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, and the stem
//! (32) and head (1280) widths and the first and last stages' repeats are not scaled. BatchNorm:
//! eps 1e-3, momentum 0.01. Convolutions use TensorFlow "same" padding for any input size
//! (`pad_total = max((ceil(n / s) - 1) * s + k - n, 0)`, `pad_total / 2` before and the rest
//! after: for a stride-2 conv the extra row/column goes bottom/right), which burn's
//! [`PaddingConfig2d::Same`] computes per input and applies asymmetrically.
//!
//! Departures from the reference: drop-connect (stochastic depth, rate 0.2 in the reference's
//! training) and the head dropout are not implemented; both are identities in eval mode.

use crate::kernels::{depthwise_conv2d, pointwise_conv2d};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use super::freeze::set_trainable;
use super::norm::batch_norm;
use super::resnet::global_average_pool;
use super::TrunkFeatures;

/// One stage of the EfficientNet-B0 block table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageSpec {
    /// Blocks in the stage (before depth scaling).
    pub repeats: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Expansion ratio of the inverted bottleneck.
    pub expand_ratio: usize,
    /// Output channels (before width scaling).
    pub out_channels: usize,
    /// Freezing level of the stage (1…4: the stage's output stride is `2^(level + 1)`).
    pub level: usize,
}

/// The EfficientNet-B0 block table, shared by every Lite variant.
#[rustfmt::skip]
pub const B0_STAGES: [StageSpec; 7] = [
    StageSpec { repeats: 1, kernel: 3, stride: 1, expand_ratio: 1, out_channels: 16, level: 1 },
    StageSpec { repeats: 2, kernel: 3, stride: 2, expand_ratio: 6, out_channels: 24, level: 1 },
    StageSpec { repeats: 2, kernel: 5, stride: 2, expand_ratio: 6, out_channels: 40, level: 2 },
    StageSpec { repeats: 3, kernel: 3, stride: 2, expand_ratio: 6, out_channels: 80, level: 3 },
    StageSpec { repeats: 3, kernel: 5, stride: 1, expand_ratio: 6, out_channels: 112, level: 3 },
    StageSpec { repeats: 4, kernel: 5, stride: 2, expand_ratio: 6, out_channels: 192, level: 4 },
    StageSpec { repeats: 1, kernel: 3, stride: 1, expand_ratio: 6, out_channels: 320, level: 4 },
];

/// Stem width of every Lite variant.
pub const LITE_STEM_CHANNELS: usize = 32;
/// Head width of every Lite variant.
pub const LITE_HEAD_CHANNELS: usize = 1280;

/// (width multiplier, depth multiplier, native resolution) of Lite0…Lite4.
pub const LITE_SCALING: [(f64, f64, usize); 5] = [
    (1.0, 1.0, 224),
    (1.0, 1.1, 240),
    (1.1, 1.2, 260),
    (1.2, 1.4, 280),
    (1.4, 1.8, 300),
];

/// EfficientNet's `round_filters`: scale, round to a multiple of 8, never below 90 %.
pub fn round_filters(channels: usize, multiplier: f64) -> usize {
    const DIVISOR: usize = 8;
    let scaled = channels as f64 * multiplier;
    let rounded = ((scaled + DIVISOR as f64 / 2.0) as usize / DIVISOR * DIVISOR).max(DIVISOR);
    if (rounded as f64) < 0.9 * scaled {
        rounded + DIVISOR
    } else {
        rounded
    }
}

/// EfficientNet's `round_repeats`: `ceil(repeats * multiplier)`.
pub fn round_repeats(repeats: usize, multiplier: f64) -> usize {
    (repeats as f64 * multiplier).ceil() as usize
}

/// Configuration of an [`EfficientNetLite`].
#[derive(Config, Debug)]
pub struct EfficientNetLiteConfig {
    /// Width multiplier of the block channels (Lite0: 1.0).
    pub width_multiplier: f64,
    /// Depth multiplier of the middle stages' repeats (Lite0: 1.0).
    pub depth_multiplier: f64,
    /// Extra factor on every width, stem and head included, for small CPU models
    /// (1.0 = the published network). Default: 1.0
    #[config(default = 1.0)]
    pub channel_scale: f64,
    /// Classes of the `fc` head; `None` builds no head. Default: None
    #[config(default = "None")]
    pub num_classes: Option<usize>,
    /// Levels frozen (0 = none; 1 = stem + stages with output stride ≤ 4; 2: ≤ 8; 3: ≤ 16;
    /// 4 = everything including the head conv). Default: 3
    #[config(default = 3)]
    pub frozen_stages: usize,
}

impl EfficientNetLiteConfig {
    /// EfficientNet-Lite`n` (n in 0..=4).
    ///
    /// # Panics
    /// If `n > 4`.
    pub fn lite(n: usize) -> Self {
        assert!(n <= 4, "EfficientNet-Lite variant must be 0..=4, got n={n}");
        let (width, depth, _resolution) = LITE_SCALING[n];
        Self::new(width, depth)
    }

    /// Build the network on `device`, then freeze `frozen_stages` levels.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EfficientNetLite<B> {
        let stem = round_filters(LITE_STEM_CHANNELS, self.channel_scale);
        let head = round_filters(LITE_HEAD_CHANNELS, self.channel_scale);
        let width = self.width_multiplier * self.channel_scale;
        let mut blocks = Vec::new();
        let mut in_channels = stem;
        for (index, stage) in B0_STAGES.iter().enumerate() {
            let out = round_filters(stage.out_channels, width);
            // Lite keeps the first and last stages' repeats.
            let repeats = if index == 0 || index == B0_STAGES.len() - 1 {
                stage.repeats
            } else {
                round_repeats(stage.repeats, self.depth_multiplier)
            };
            for i in 0..repeats {
                let stride = if i == 0 { stage.stride } else { 1 };
                blocks.push(MbConvBlock::new(
                    in_channels,
                    out,
                    stage.expand_ratio,
                    stage.kernel,
                    stride,
                    stage.level,
                    device,
                ));
                in_channels = out;
            }
        }
        let model = EfficientNetLite {
            conv_stem: same_conv([3, stem], 3, 2, 1).init(device),
            bn0: lite_bn(stem, device),
            blocks,
            conv_head: same_conv([in_channels, head], 1, 1, 1).init(device),
            bn1: lite_bn(head, device),
            fc: self
                .num_classes
                .map(|classes| LinearConfig::new(head, classes).init(device)),
            out_channels: head,
            frozen_stages: 0,
        };
        model.freeze(self.frozen_stages)
    }
}

/// Conv with TF "same" padding, no bias.
fn same_conv(channels: [usize; 2], kernel: usize, stride: usize, groups: usize) -> Conv2dConfig {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Same)
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: core::f64::consts::SQRT_2,
            fan_out_only: true,
        })
}

/// Lite BatchNorm: eps 1e-3, momentum 0.01 (TF's decay 0.99).
fn lite_bn<B: Backend>(channels: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(channels)
        .with_epsilon(1e-3)
        .with_momentum(0.01)
        .init(device)
}

/// ReLU6: `min(max(x, 0), 6)`.
fn relu6<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clamp(0.0, 6.0)
}

/// Inverted-bottleneck block without squeeze-excitation: (1×1 expand → BN → ReLU6) →
/// k×k depthwise (stride) → BN → ReLU6 → 1×1 project → BN, plus the input when the stride is 1 and
/// the widths match. Field names are lukemelas' without the leading underscore.
#[derive(Module, Debug)]
pub struct MbConvBlock<B: Backend> {
    /// 1×1, `in → in * expand_ratio`; absent when `expand_ratio == 1`.
    pub expand_conv: Option<Conv2d<B>>,
    /// BatchNorm after `expand_conv`.
    pub bn0: Option<BatchNorm<B>>,
    /// k×k depthwise conv (groups = channels), carries the stride.
    pub depthwise_conv: Conv2d<B>,
    /// BatchNorm after `depthwise_conv`.
    pub bn1: BatchNorm<B>,
    /// 1×1, `hidden → out`.
    pub project_conv: Conv2d<B>,
    /// BatchNorm after `project_conv`.
    pub bn2: BatchNorm<B>,
    /// Whether the input is added back (stride 1 and `in == out`).
    pub skip: bool,
    /// Freezing level (1…4) of the block's stage.
    pub level: usize,
}

impl<B: Backend> MbConvBlock<B> {
    fn new(
        in_channels: usize,
        out_channels: usize,
        expand_ratio: usize,
        kernel: usize,
        stride: usize,
        level: usize,
        device: &B::Device,
    ) -> Self {
        let hidden = in_channels * expand_ratio;
        let (expand_conv, bn0) = if expand_ratio != 1 {
            (
                Some(same_conv([in_channels, hidden], 1, 1, 1).init(device)),
                Some(lite_bn(hidden, device)),
            )
        } else {
            (None, None)
        };
        Self {
            expand_conv,
            bn0,
            depthwise_conv: same_conv([hidden, hidden], kernel, stride, hidden).init(device),
            bn1: lite_bn(hidden, device),
            project_conv: same_conv([hidden, out_channels], 1, 1, 1).init(device),
            bn2: lite_bn(out_channels, device),
            skip: stride == 1 && in_channels == out_channels,
            level,
        }
    }

    /// `frozen`: BatchNorm in eval mode whatever the backend.
    ///
    /// # Shapes
    /// - `input`: `[batch, in, height, width]`
    /// - output: `[batch, out, ceil(height / stride), ceil(width / stride)]`
    pub fn forward(&self, input: Tensor<B, 4>, frozen: bool) -> Tensor<B, 4> {
        let x = match (&self.expand_conv, &self.bn0) {
            (Some(conv), Some(bn)) => relu6(batch_norm(
                bn,
                pointwise_conv2d(conv, input.clone()),
                frozen,
            )), // [batch, hidden, h, w]
            _ => input.clone(),
        };
        let x = relu6(batch_norm(
            &self.bn1,
            depthwise_conv2d(&self.depthwise_conv, x),
            frozen,
        )); // [batch, hidden, h/s, w/s]
        let x = batch_norm(&self.bn2, pointwise_conv2d(&self.project_conv, x), frozen); // [batch, out, h/s, w/s]
        if self.skip {
            x + input
        } else {
            x
        }
    }
}

/// EfficientNet-Lite: stem (`conv_stem`, `bn0`, ReLU6), `blocks`, head (`conv_head`, `bn1`,
/// ReLU6), and an optional `fc` after global average pooling.
#[derive(Module, Debug)]
pub struct EfficientNetLite<B: Backend> {
    /// 3×3/2 stem conv, `3 → 32`.
    pub conv_stem: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn0: BatchNorm<B>,
    /// The MBConv blocks, stage after stage (16 in Lite0).
    pub blocks: Vec<MbConvBlock<B>>,
    /// 1×1 head conv, `320 → 1280`.
    pub conv_head: Conv2d<B>,
    /// Head BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Classifier `[1280 → classes]`; absent in a pure trunk.
    pub fc: Option<Linear<B>>,
    /// Channels of the head's output.
    pub out_channels: usize,
    /// Levels frozen (0 = none … 4 = all).
    pub frozen_stages: usize,
}

impl<B: Backend> EfficientNetLite<B> {
    /// Freeze the stem and every block of level ≤ `frozen_stages` (and the head conv at 4) and
    /// make everything else trainable: frozen parameters stop requiring gradients and their
    /// BatchNorm runs in eval mode; the rest, `fc` included, require gradients. Call it on the
    /// autodiff backend you train with.
    ///
    /// # Panics
    /// If `frozen_stages > 4`.
    pub fn freeze(mut self, frozen_stages: usize) -> Self {
        assert!(
            frozen_stages <= 4,
            "frozen_stages must be in 0..=4, got frozen_stages={frozen_stages}"
        );
        self.frozen_stages = frozen_stages;
        let trainable = |level: usize| level > frozen_stages;
        self.conv_stem = set_trainable(self.conv_stem, trainable(1));
        self.bn0 = set_trainable(self.bn0, trainable(1));
        self.blocks = self
            .blocks
            .into_iter()
            .map(|block| {
                let level = block.level;
                set_trainable(block, trainable(level))
            })
            .collect();
        self.conv_head = set_trainable(self.conv_head, trainable(4));
        self.bn1 = set_trainable(self.bn1, trainable(4));
        self.fc = self.fc.map(|fc| set_trainable(fc, true));
        self
    }

    /// The head's feature map (after `conv_head` → `bn1` → ReLU6).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - output: `[batch, out_channels, ceil(height / 32), ceil(width / 32)]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_stages(images, 1..=4)
    }

    /// Run stages `stages` (1…4, see the [freezing docs](super)) on `x`: stage 1 includes the stem,
    /// stage 4 the head. `forward(images) == forward_stages(forward_stages(images, 1..=k), k+1..=4)`.
    ///
    /// # Shapes
    /// - `x`: the input of the first stage (`[batch, 3, h, w]` for stage 1)
    /// - output: the output of the last stage
    pub fn forward_stages(
        &self,
        x: Tensor<B, 4>,
        stages: std::ops::RangeInclusive<usize>,
    ) -> Tensor<B, 4> {
        let frozen = |level: usize| self.frozen_stages >= level;
        let mut x = x;
        if stages.contains(&1) {
            x = self.conv_stem.forward(x); // [batch, 32, h/2, w/2]
            x = relu6(batch_norm(&self.bn0, x, frozen(1)));
        }
        for block in self.blocks.iter().filter(|b| stages.contains(&b.level)) {
            x = block.forward(x, frozen(block.level));
        }
        if stages.contains(&4) {
            x = pointwise_conv2d(&self.conv_head, x); // [batch, 1280, h/32, w/32]
            x = relu6(batch_norm(&self.bn1, x, frozen(4)));
        }
        x
    }

    /// The output at each stride: `layer1` (stride 4, end of level 1), `layer2` (8), `layer3`
    /// (16), `layer4` (32, after the head).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - `layer1`: `[batch, 24, h/4, w/4]`, `layer2`: `[batch, 40, h/8, w/8]`,
    ///   `layer3`: `[batch, 112, h/16, w/16]`, `layer4`: `[batch, 1280, h/32, w/32]` (Lite0)
    pub fn forward_features(&self, images: Tensor<B, 4>) -> TrunkFeatures<B> {
        let frozen = |level: usize| self.frozen_stages >= level;
        let x = self.conv_stem.forward(images); // [batch, 32, h/2, w/2]
        let mut x = relu6(batch_norm(&self.bn0, x, frozen(1)));
        let mut levels: [Option<Tensor<B, 4>>; 3] = [None, None, None];
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, frozen(block.level));
            let last_of_level = self
                .blocks
                .get(i + 1)
                .is_none_or(|next| next.level != block.level);
            if last_of_level && block.level < 4 {
                levels[block.level - 1] = Some(x.clone());
            }
        }
        let x = pointwise_conv2d(&self.conv_head, x); // [batch, 1280, h/32, w/32]
        let layer4 = relu6(batch_norm(&self.bn1, x, frozen(4)));
        let [layer1, layer2, layer3] =
            levels.map(|level| level.expect("every level 1..=3 has at least one block"));
        TrunkFeatures {
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// Global average pool then `fc` (the reference's dropout is an identity in eval mode).
    /// `None` without an `fc` head.
    ///
    /// # Shapes
    /// - `features`: `[batch, out_channels, h, w]`
    /// - output: `[batch, classes]`
    pub fn classify(&self, features: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(global_average_pool(features)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_filters_matches_efficientnet() {
        assert_eq!(round_filters(32, 1.0), 32);
        assert_eq!(round_filters(16, 1.1), 16); // 17.6 → 16 (≥ 90 %)
        assert_eq!(round_filters(24, 1.1), 24); // 26.4 → 24 (≥ 90 %)
        assert_eq!(round_filters(40, 1.2), 48);
        assert_eq!(round_filters(320, 1.4), 448);
        assert_eq!(round_repeats(3, 1.1), 4);
        assert_eq!(round_repeats(4, 1.8), 8);
    }

    #[test]
    fn same_padding_puts_the_extra_row_and_column_bottom_right() {
        use burn::tensor::ops::PadMode;
        use burn::tensor::Distribution;
        type TB = burn::backend::Flex;
        let device = Default::default();
        // (size, kernel): TF "same" totals 1 → (0, 1), 3 → (1, 2), 2 → (1, 1).
        for (size, kernel, before, after) in [(8usize, 3, 0, 1), (8, 5, 1, 2), (7, 3, 1, 1)] {
            let same = same_conv([2, 3], kernel, 2, 1).init::<TB>(&device);
            // Materialise the lazy weights: a clone of an uninitialised Param re-initialises.
            let _ = same.weight.val();
            let mut valid = same.clone();
            valid.padding = PaddingConfig2d::Valid;
            let x = Tensor::<TB, 4>::random([1, 2, size, size], Distribution::Default, &device);
            let expected = valid.forward(
                x.clone()
                    .pad((before, after, before, after), PadMode::Constant(0.0)),
            );
            let actual = same.forward(x);
            assert_eq!(actual.dims(), [1, 3, size.div_ceil(2), size.div_ceil(2)]);
            let diff: f32 = (actual - expected).abs().max().into_scalar();
            assert!(diff < 1e-6, "size {size}, kernel {kernel}: diff {diff}");
        }
    }

    #[test]
    fn lite0_has_sixteen_blocks_with_the_published_widths() {
        type TB = burn::backend::Flex;
        let device = Default::default();
        let model = EfficientNetLiteConfig::lite(0)
            .with_frozen_stages(0)
            .init::<TB>(&device);
        assert_eq!(model.blocks.len(), 16);
        assert!(model.blocks[0].expand_conv.is_none());
        let [out, hidden, _, _] = model.blocks[15].project_conv.weight.dims();
        assert_eq!((out, hidden), (320, 1152));
        assert_eq!(model.out_channels, 1280);
        let levels: Vec<usize> = model.blocks.iter().map(|b| b.level).collect();
        assert_eq!(levels, [1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4]);
    }
}
