//! torchvision-layout ResNet (18/34/50/101/152, ResNeXt-style `groups`/`width_per_group`, and a
//! configurable base width for small CPU models).

use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::block::{conv_config, resnet_bn, BasicBlock, Bottleneck, ResidualBlock};
use super::freeze::set_trainable;
use super::norm::batch_norm;
use super::TrunkFeatures;

/// Which residual block a ResNet stacks.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum BlockKind {
    /// Two 3×3 convs, expansion 1 (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1, expansion 4 (ResNet-50/101/152), stride on the 3×3 (v1.5).
    Bottleneck,
}

/// The shape of a ResNet: block kind, blocks per stage, and the ResNeXt knobs.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetLayout {
    /// The residual block.
    pub block: BlockKind,
    /// Blocks in `layer1..layer4`.
    pub layers: [usize; 4],
    /// Groups of the bottleneck 3×3 conv (torchvision `groups`). Default: 1
    #[config(default = 1)]
    pub groups: usize,
    /// torchvision `width_per_group`; the bottleneck inner width is
    /// `planes * width_per_group / 64 * groups`. Default: 64
    #[config(default = 64)]
    pub width_per_group: usize,
}

impl ResNetLayout {
    /// torchvision's ResNet of the given depth.
    ///
    /// # Panics
    /// If `depth` is not one of 18, 34, 50, 101, 152.
    pub fn depth(depth: usize) -> Self {
        match depth {
            18 => Self::new(BlockKind::Basic, [2, 2, 2, 2]),
            34 => Self::new(BlockKind::Basic, [3, 4, 6, 3]),
            50 => Self::new(BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => Self::new(BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => Self::new(BlockKind::Bottleneck, [3, 8, 36, 3]),
            _ => panic!("ResNet depth must be 18, 34, 50, 101 or 152, got depth={depth}"),
        }
    }

    /// Output channels per `planes` of the block.
    pub fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Blocks and their arrangement.
    pub layout: ResNetLayout,
    /// Stem width; stage `i` has `base_width * 2^i` planes. torchvision: 64. Default: 64
    #[config(default = 64)]
    pub base_width: usize,
    /// Classes of the `fc` head; `None` builds no head (a pure trunk). Default: None
    #[config(default = "None")]
    pub num_classes: Option<usize>,
    /// Stages frozen (0 = none, 1 = stem + layer1, …, 4 = everything up to layer4).
    /// The reference freezes conv1…layer3. Default: 3
    #[config(default = 3)]
    pub frozen_stages: usize,
}

impl ResNetConfig {
    /// Build the network on `device`, then freeze `frozen_stages` stages (see [`ResNet::freeze`]).
    ///
    /// # Panics
    /// On an invalid layout (`BasicBlock` with `groups != 1` or `width_per_group != 64`, as
    /// torchvision) or `frozen_stages > 4`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let layout = &self.layout;
        if layout.block == BlockKind::Basic {
            assert!(
                layout.groups == 1 && layout.width_per_group == 64,
                "BasicBlock only supports groups=1 and width_per_group=64, got groups={}, width_per_group={}",
                layout.groups,
                layout.width_per_group
            );
        }
        assert!(self.base_width > 0, "base_width must be positive");
        let expansion = layout.expansion();
        let mut in_channels = self.base_width;
        let mut make_layer = |stage: usize| -> Vec<ResidualBlock<B>> {
            let planes = self.base_width << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            (0..layout.layers[stage])
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let block = match layout.block {
                        BlockKind::Basic => ResidualBlock::Basic(BasicBlock::new(
                            in_channels,
                            planes,
                            stride,
                            device,
                        )),
                        BlockKind::Bottleneck => ResidualBlock::Bottleneck(Bottleneck::new(
                            in_channels,
                            planes,
                            stride,
                            layout.groups,
                            layout.width_per_group,
                            device,
                        )),
                    };
                    in_channels = planes * expansion;
                    block
                })
                .collect()
        };
        let layer1 = make_layer(0);
        let layer2 = make_layer(1);
        let layer3 = make_layer(2);
        let layer4 = make_layer(3);
        let out_channels = (self.base_width << 3) * expansion;
        let model = ResNet {
            conv1: conv_config([3, self.base_width], 7, 2, 1).init(device),
            bn1: resnet_bn(self.base_width, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: self
                .num_classes
                .map(|classes| LinearConfig::new(out_channels, classes).init(device)),
            out_channels,
            frozen_stages: 0,
        };
        model.freeze(self.frozen_stages)
    }
}

/// A torchvision-layout ResNet: stem (`conv1`, `bn1`, ReLU, 3×3/2 max pool), `layer1..layer4`, and
/// an optional `fc` head after global average pooling.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// 7×7/2 stem conv, `3 → base_width`, no bias.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// 3×3/2 max pool, padding 1.
    pub maxpool: MaxPool2d,
    /// Stage 1 (stride 4 overall).
    pub layer1: Vec<ResidualBlock<B>>,
    /// Stage 2 (stride 8).
    pub layer2: Vec<ResidualBlock<B>>,
    /// Stage 3 (stride 16).
    pub layer3: Vec<ResidualBlock<B>>,
    /// Stage 4 (stride 32).
    pub layer4: Vec<ResidualBlock<B>>,
    /// Classifier `[out_channels → classes]`; absent in a pure trunk.
    pub fc: Option<Linear<B>>,
    /// Channels of `layer4`'s output.
    pub out_channels: usize,
    /// Stages frozen (0 = none … 4 = all); frozen stages run BatchNorm in eval mode.
    pub frozen_stages: usize,
}

impl<B: Backend> ResNet<B> {
    /// Freeze the stem and `layer1..layer{frozen_stages}` and make everything else trainable:
    /// frozen parameters stop requiring gradients and their BatchNorm runs in eval mode from then
    /// on (even in an autodiff forward); the other stages and `fc` require gradients. Call it on
    /// the autodiff backend you train with (a module moved there from the inner backend comes
    /// without gradients).
    ///
    /// # Panics
    /// If `frozen_stages > 4`.
    pub fn freeze(mut self, frozen_stages: usize) -> Self {
        assert!(
            frozen_stages <= 4,
            "frozen_stages must be in 0..=4, got frozen_stages={frozen_stages}"
        );
        self.frozen_stages = frozen_stages;
        let trainable = |stage: usize| stage > frozen_stages;
        self.conv1 = set_trainable(self.conv1, trainable(1));
        self.bn1 = set_trainable(self.bn1, trainable(1));
        self.layer1 = set_trainable(self.layer1, trainable(1));
        self.layer2 = set_trainable(self.layer2, trainable(2));
        self.layer3 = set_trainable(self.layer3, trainable(3));
        self.layer4 = set_trainable(self.layer4, trainable(4));
        self.fc = self.fc.map(|fc| set_trainable(fc, true));
        self
    }

    /// The `layer4` feature map.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - output: `[batch, out_channels, height / 32, width / 32]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_features(images).layer4
    }

    /// Run stages `stages` (1…4, see the [freezing docs](super)) on `x`: stage 1 is the stem with
    /// `layer1`, stage `s > 1` is `layer{s}`.
    /// `forward(images) == forward_stages(forward_stages(images, 1..=k), k+1..=4)`.
    ///
    /// # Shapes
    /// - `x`: the input of the first stage (`[batch, 3, h, w]` for stage 1)
    /// - output: the output of the last stage
    pub fn forward_stages(
        &self,
        x: Tensor<B, 4>,
        stages: std::ops::RangeInclusive<usize>,
    ) -> Tensor<B, 4> {
        let frozen = |stage: usize| self.frozen_stages >= stage;
        let mut x = x;
        if stages.contains(&1) {
            x = crate::kernels::dense_conv2d(&self.conv1, x); // [batch, base, h/2, w/2]
            x = relu(batch_norm(&self.bn1, x, frozen(1)));
            x = self.maxpool.forward(x); // [batch, base, h/4, w/4]
        }
        for (stage, blocks) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .enumerate()
        {
            if stages.contains(&(stage + 1)) {
                x = blocks
                    .iter()
                    .fold(x, |x, block| block.forward(x, frozen(stage + 1)));
            }
        }
        x
    }

    /// The output of every stage.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - `layer1`: `[batch, base_width * e, height / 4, width / 4]` (`e` = block expansion)
    /// - `layer2` … `layer4`: channels ×2 and spatial size /2 per stage
    pub fn forward_features(&self, images: Tensor<B, 4>) -> TrunkFeatures<B> {
        let frozen = |stage: usize| self.frozen_stages >= stage;
        let x = crate::kernels::dense_conv2d(&self.conv1, images); // [batch, base, h/2, w/2]
        let x = relu(batch_norm(&self.bn1, x, frozen(1)));
        let x = self.maxpool.forward(x); // [batch, base, h/4, w/4]
        let run = |blocks: &[ResidualBlock<B>], x: Tensor<B, 4>, stage: usize| {
            blocks
                .iter()
                .fold(x, |x, block| block.forward(x, frozen(stage)))
        };
        let layer1 = run(&self.layer1, x, 1); // [batch, base*e, h/4, w/4]
        let layer2 = run(&self.layer2, layer1.clone(), 2); // [batch, 2*base*e, h/8, w/8]
        let layer3 = run(&self.layer3, layer2.clone(), 3); // [batch, 4*base*e, h/16, w/16]
        let layer4 = run(&self.layer4, layer3.clone(), 4); // [batch, 8*base*e, h/32, w/32]
        TrunkFeatures {
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// Global average pool then `fc`: torchvision's logits. `None` without an `fc` head.
    ///
    /// # Shapes
    /// - `layer4`: `[batch, out_channels, h, w]`
    /// - output: `[batch, classes]`
    pub fn classify(&self, layer4: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(global_average_pool(layer4)))
    }
}

/// Mean over the spatial dimensions.
///
/// # Shapes
/// - `input`: `[batch, channels, height, width]`
/// - output: `[batch, channels]`
pub(crate) fn global_average_pool<B: Backend>(input: Tensor<B, 4>) -> Tensor<B, 2> {
    let [batch, channels, height, width] = input.dims();
    input
        .reshape([batch, channels, height * width])
        .mean_dim(2) // [batch, channels, 1]
        .reshape([batch, channels])
}
