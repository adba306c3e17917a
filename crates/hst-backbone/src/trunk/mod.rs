//! CNN trunks: torchvision-layout ResNet-18/34/50/101/152 and EfficientNet-Lite, with the
//! reference's freezing policy and weight import.
//!
//! A [`TrunkConfig`] names the network ([`TrunkKind`]), the stages to freeze (the reference
//! freezes conv1…layer3 and trains layer4), an optional classifier head and, for small CPU
//! models, a base width. [`Trunk::forward`] gives the last feature map
//! `[batch, out_channels, height/32, width/32]`; [`Trunk::load_weights`] imports a torchvision
//! (`.pth`/`.safetensors`) or lukemelas EfficientNet-Lite checkpoint.
//!
//! # Freezing
//! Stage `s` is the part of the network whose output has stride `2^(s+1)`: for a ResNet the stem
//! with `layer1` (s = 1) and `layer2..layer4`; for EfficientNet-Lite the stem and stages ending at
//! strides 4, 8, 16, and the rest with the head conv (s = 4). `frozen_stages = k` freezes stages
//! `1..=k`: their parameters stop requiring gradients and their BatchNorm always runs in eval mode
//! from the running statistics (which are never updated), also in an autodiff training forward.
//! Trainable stages use burn's BatchNorm, i.e. batch statistics on an autodiff backend.
//!
//! Freezing acts on the parameters of the backend the trunk lives on: build the trunk on the
//! autodiff backend you train with, or call [`Trunk::freeze`] again after moving it there (burn
//! moves initialised or loaded parameters from the inner backend without `require_grad`).

mod block;
mod efficientnet;
mod freeze;
mod norm;
mod resnet;

use std::path::Path;

use burn::prelude::*;

pub use block::{BasicBlock, Bottleneck, Downsample, ResidualBlock};
pub use efficientnet::{
    round_filters, round_repeats, EfficientNetLite, EfficientNetLiteConfig, MbConvBlock, StageSpec,
    B0_STAGES, LITE_HEAD_CHANNELS, LITE_SCALING, LITE_STEM_CHANNELS,
};
pub use norm::{batch_norm_eval, batch_norm_train};

/// burn's [`BatchNorm::forward`](burn::nn::BatchNorm::forward) semantics (batch statistics on an autodiff
/// backend, running statistics otherwise) through the row transforms of [`batch_norm_train`] /
/// [`batch_norm_eval`].
///
/// # Shapes
/// - `input`, output: `[batch, channels, height, width]`
pub(crate) fn norm_batch_or_running<B: Backend>(
    bn: &burn::nn::BatchNorm<B>,
    input: Tensor<B, 4>,
) -> Tensor<B, 4> {
    norm::batch_norm(bn, input, false)
}
pub use resnet::{BlockKind, ResNet, ResNetConfig, ResNetLayout};

use crate::error::BackboneError;
use crate::weights::{self, WeightLayout};

/// Which network a [`TrunkConfig`] builds.
#[derive(Config, Debug, PartialEq)]
pub enum TrunkKind {
    /// A torchvision ResNet of the given layout ([`ResNetLayout::depth`] for 18…152).
    ResNet(ResNetLayout),
    /// EfficientNet-Lite`n`, n in 0..=4 (only Lite0 has weights here).
    EfficientNetLite(usize),
}

/// Configuration of a [`Trunk`].
#[derive(Config, Debug)]
pub struct TrunkConfig {
    /// The network. Default: ResNet-101 (the reference's trunk)
    #[config(default = "TrunkKind::ResNet(ResNetLayout::depth(101))")]
    pub kind: TrunkKind,
    /// Stages frozen, 0 (none) … 4 (all); see the [module docs](self). The reference freezes
    /// conv1…layer3. Default: 3
    #[config(default = 3)]
    pub frozen_stages: usize,
    /// ResNet: stem width, stage `i` has `base_width * 2^i` planes (64 = torchvision; 16 makes a
    /// ResNet 16× cheaper for CPU runs). EfficientNet-Lite: every width is scaled by
    /// `base_width / 64` (64 = published). Non-default widths cannot load published weights.
    /// Default: 64
    #[config(default = 64)]
    pub base_width: usize,
    /// Classes of a classifier head (`fc`) after global average pooling; `None` builds a pure
    /// trunk, and weight import then ignores the checkpoint's head. Default: None
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}

impl TrunkConfig {
    /// torchvision ResNet-`depth` (18, 34, 50, 101 or 152).
    ///
    /// # Panics
    /// On any other depth.
    pub fn resnet(depth: usize) -> Self {
        Self::new().with_kind(TrunkKind::ResNet(ResNetLayout::depth(depth)))
    }

    /// A ResNet of any layout (e.g. `[1, 1, 1, 1]` blocks, or ResNeXt's groups).
    pub fn resnet_layout(layout: ResNetLayout) -> Self {
        Self::new().with_kind(TrunkKind::ResNet(layout))
    }

    /// EfficientNet-Lite0 (ImageNet weights in `/work/shared/weights`).
    pub fn efficientnet_lite0() -> Self {
        Self::efficientnet_lite(0)
    }

    /// EfficientNet-Lite`n`, n in 0..=4.
    ///
    /// # Panics
    /// If `n > 4`.
    pub fn efficientnet_lite(n: usize) -> Self {
        assert!(n <= 4, "EfficientNet-Lite variant must be 0..=4, got n={n}");
        Self::new().with_kind(TrunkKind::EfficientNetLite(n))
    }

    /// Build the trunk on `device`, with the configured stages frozen.
    ///
    /// # Panics
    /// On an invalid configuration (`frozen_stages > 4`, `base_width == 0`, a BasicBlock layout
    /// with groups, an unknown Lite variant).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Trunk<B> {
        match &self.kind {
            TrunkKind::ResNet(layout) => Trunk::ResNet(
                ResNetConfig::new(layout.clone())
                    .with_base_width(self.base_width)
                    .with_num_classes(self.num_classes)
                    .with_frozen_stages(self.frozen_stages)
                    .init(device),
            ),
            TrunkKind::EfficientNetLite(n) => {
                assert!(self.base_width > 0, "base_width must be positive");
                Trunk::EfficientNetLite(
                    EfficientNetLiteConfig::lite(*n)
                        .with_channel_scale(self.base_width as f64 / 64.0)
                        .with_num_classes(self.num_classes)
                        .with_frozen_stages(self.frozen_stages)
                        .init(device),
                )
            }
        }
    }
}

/// The feature map after each stage.
#[derive(Debug, Clone)]
pub struct TrunkFeatures<B: Backend> {
    /// Stride 4: ResNet `layer1`; EfficientNet-Lite the end of its stride-4 stages.
    /// `[batch, c1, height/4, width/4]`
    pub layer1: Tensor<B, 4>,
    /// Stride 8. `[batch, c2, height/8, width/8]`
    pub layer2: Tensor<B, 4>,
    /// Stride 16. `[batch, c3, height/16, width/16]`
    pub layer3: Tensor<B, 4>,
    /// Stride 32, the trunk's output (EfficientNet-Lite: after the head conv).
    /// `[batch, out_channels, height/32, width/32]`
    pub layer4: Tensor<B, 4>,
}

/// A CNN trunk: `[batch, 3, height, width]` → `[batch, out_channels, height/32, width/32]`.
// The variants differ in size; a trunk is built once and lives for the whole run.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Trunk<B: Backend> {
    /// torchvision-layout ResNet.
    ResNet(ResNet<B>),
    /// EfficientNet-Lite (lukemelas layout).
    EfficientNetLite(EfficientNetLite<B>),
}

impl<B: Backend> Trunk<B> {
    /// The last feature map (ResNet `layer4`; EfficientNet-Lite after the head conv).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    /// - output: `[batch, out_channels, height/32, width/32]` (EfficientNet-Lite rounds up)
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::ResNet(model) => model.forward(images),
            Self::EfficientNetLite(model) => model.forward(images),
        }
    }

    /// Run stages `stages` (1…4, see the [module docs](self)) on `x`; stage 1 starts from the images.
    /// `forward(images) == forward_stages(forward_stages(images, 1..=k), k+1..=4)` for any `k`.
    ///
    /// # Shapes
    /// - `x`: the input of the first stage (`[batch, 3, height, width]` for stage 1)
    /// - output: the output of the last stage
    pub fn forward_stages(
        &self,
        x: Tensor<B, 4>,
        stages: std::ops::RangeInclusive<usize>,
    ) -> Tensor<B, 4> {
        match self {
            Self::ResNet(model) => model.forward_stages(x, stages),
            Self::EfficientNetLite(model) => model.forward_stages(x, stages),
        }
    }

    /// The feature map after each stage (see [`TrunkFeatures`]).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> TrunkFeatures<B> {
        match self {
            Self::ResNet(model) => model.forward_features(images),
            Self::EfficientNetLite(model) => model.forward_features(images),
        }
    }

    /// Global average pool then the `fc` head: the logits of the source network.
    /// `None` when the trunk was built without a head.
    ///
    /// # Shapes
    /// - `layer4`: `[batch, out_channels, h, w]` (the output of [`Self::forward`])
    /// - output: `[batch, classes]`
    pub fn classify(&self, layer4: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        match self {
            Self::ResNet(model) => model.classify(layer4),
            Self::EfficientNetLite(model) => model.classify(layer4),
        }
    }

    /// Channels of the output feature map.
    pub fn out_channels(&self) -> usize {
        match self {
            Self::ResNet(model) => model.out_channels,
            Self::EfficientNetLite(model) => model.out_channels,
        }
    }

    /// Stages frozen (0 … 4).
    pub fn frozen_stages(&self) -> usize {
        match self {
            Self::ResNet(model) => model.frozen_stages,
            Self::EfficientNetLite(model) => model.frozen_stages,
        }
    }

    /// Freeze stages `1..=frozen_stages` and make every other parameter trainable (see the
    /// [module docs](self)). Call it on the autodiff backend you train with.
    ///
    /// # Panics
    /// If `frozen_stages > 4`.
    pub fn freeze(self, frozen_stages: usize) -> Self {
        match self {
            Self::ResNet(model) => Self::ResNet(model.freeze(frozen_stages)),
            Self::EfficientNetLite(model) => Self::EfficientNetLite(model.freeze(frozen_stages)),
        }
    }

    /// The key layout of this trunk's checkpoints.
    pub fn weight_layout(&self) -> WeightLayout {
        match self {
            Self::ResNet(_) => WeightLayout::TorchvisionResNet,
            Self::EfficientNetLite(_) => WeightLayout::EfficientNetLite,
        }
    }

    /// Import a checkpoint: `.pth`/`.pt` (PyTorch, zip or legacy) or `.safetensors`, in the
    /// torchvision layout for a ResNet and the lukemelas layout for EfficientNet-Lite. Every
    /// tensor of the model must be in the file with its shape; the file may hold only the model's
    /// keys, plus `num_batches_tracked` and (for a trunk without head) the `fc` keys, which are
    /// ignored. Frozen parameters stay frozen.
    ///
    /// # Errors
    /// [`BackboneError`] naming the file and the offending keys when the file cannot be read, a
    /// key is missing or unexpected, or a shape differs.
    pub fn load_weights(self, path: &Path) -> Result<Self, BackboneError> {
        let layout = self.weight_layout();
        match self {
            Self::ResNet(model) => {
                let has_head = model.fc.is_some();
                weights::load(model, path, layout, has_head).map(Self::ResNet)
            }
            Self::EfficientNetLite(model) => {
                let has_head = model.fc.is_some();
                weights::load(model, path, layout, has_head).map(Self::EfficientNetLite)
            }
        }
    }
}
