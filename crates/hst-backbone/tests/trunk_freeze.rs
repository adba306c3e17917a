//! Freezing policy (the reference trains only layer4): after one backward pass on an autodiff
//! backend, frozen parameters have no gradient and the trainable ones do; frozen BatchNorm keeps
//! its running statistics in a training forward while trainable BatchNorm updates them.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use hst_backbone::trunk::{BlockKind, ResNetLayout, ResidualBlock, Trunk, TrunkConfig};

mod weights_support;

type AB = Autodiff<Flex>;

/// Splits the float parameters (running statistics excluded) by whether they got a gradient.
struct GradientCensus<'a> {
    path: Vec<String>,
    grads: &'a <AB as AutodiffBackend>::Gradients,
    with_grad: Vec<String>,
    without_grad: Vec<String>,
}

impl ModuleVisitor<AB> for GradientCensus<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let path = self.path.join(".");
        if path.ends_with("running_mean") || path.ends_with("running_var") {
            return;
        }
        if param.val().grad(self.grads).is_some() {
            self.with_grad.push(path);
        } else {
            self.without_grad.push(path);
        }
    }
}

fn census(
    trunk: &Trunk<AB>,
    grads: &<AB as AutodiffBackend>::Gradients,
) -> (Vec<String>, Vec<String>) {
    let mut census = GradientCensus {
        path: Vec::new(),
        grads,
        with_grad: Vec::new(),
        without_grad: Vec::new(),
    };
    trunk.visit(&mut census);
    (census.with_grad, census.without_grad)
}

fn tiny_resnet(frozen_stages: usize) -> TrunkConfig {
    TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Bottleneck, [1, 1, 1, 1]))
        .with_base_width(8)
        .with_frozen_stages(frozen_stages)
}

fn images(device: &Device<AB>) -> Tensor<AB, 4> {
    Tensor::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), device)
}

fn running_mean(block: &ResidualBlock<AB>) -> Vec<f32> {
    let ResidualBlock::Bottleneck(block) = block else {
        panic!("expected a Bottleneck")
    };
    block
        .bn3
        .running_mean
        .value_sync()
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn reference_policy_trains_only_layer4() {
    let device = Default::default();
    let trunk: Trunk<AB> = tiny_resnet(3).init(&device);
    assert_eq!(trunk.frozen_stages(), 3);
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("expected a ResNet")
    };
    let layer3_before = running_mean(&resnet.layer3[0]);
    let layer4_before = running_mean(&resnet.layer4[0]);

    let output = trunk.forward(images(&device));
    assert_eq!(output.dims(), [2, 8 * 8 * 4, 2, 2]);
    let grads = output.sum().backward();
    let (with_grad, without_grad) = census(&trunk, &grads);

    assert!(!with_grad.is_empty() && !without_grad.is_empty());
    for path in &without_grad {
        assert!(
            ["conv1", "bn1", "layer1", "layer2", "layer3"]
                .iter()
                .any(|frozen| path.starts_with(frozen)),
            "trainable parameter {path} got no gradient"
        );
    }
    for path in &with_grad {
        assert!(
            path.starts_with("layer4"),
            "frozen parameter {path} got a gradient"
        );
    }
    assert!(
        without_grad.iter().any(|p| p == "conv1.weight"),
        "{without_grad:?}"
    );
    assert!(
        without_grad.iter().any(|p| p == "layer3.0.bn2.gamma"),
        "{without_grad:?}"
    );
    assert!(
        with_grad.iter().any(|p| p == "layer4.0.conv2.weight"),
        "{with_grad:?}"
    );
    assert!(
        with_grad.iter().any(|p| p == "layer4.0.downsample.bn.beta"),
        "{with_grad:?}"
    );

    assert_eq!(
        running_mean(&resnet.layer3[0]),
        layer3_before,
        "frozen layer3 BatchNorm updated its running mean in a training forward"
    );
    assert_ne!(
        running_mean(&resnet.layer4[0]),
        layer4_before,
        "trainable layer4 BatchNorm should update its running mean in a training forward"
    );
}

#[test]
fn nothing_frozen_trains_everything() {
    let device = Default::default();
    let trunk: Trunk<AB> = tiny_resnet(0).init(&device);
    let grads = trunk.forward(images(&device)).sum().backward();
    let (with_grad, without_grad) = census(&trunk, &grads);
    assert!(without_grad.is_empty(), "no gradient for {without_grad:?}");
    assert!(with_grad.iter().any(|p| p == "conv1.weight"));
}

fn conv1_requires_grad(block: &ResidualBlock<AB>) -> bool {
    match block {
        ResidualBlock::Bottleneck(b) => b.conv1.weight.val().is_require_grad(),
        ResidualBlock::Basic(b) => b.conv1.weight.val().is_require_grad(),
    }
}

#[test]
fn freezing_one_stage_then_changing_the_policy() {
    let device = Default::default();
    let trunk: Trunk<AB> = tiny_resnet(1).init(&device);
    let grads = trunk.forward(images(&device)).sum().backward();
    let (with_grad, without_grad) = census(&trunk, &grads);
    assert!(without_grad
        .iter()
        .all(|p| ["conv1", "bn1", "layer1"].iter().any(|f| p.starts_with(f))));
    assert!(with_grad.iter().any(|p| p.starts_with("layer2")));

    // freeze(k) sets the policy: everything frozen, then back to the reference's.
    let trunk = trunk.freeze(4);
    assert_eq!(trunk.frozen_stages(), 4);
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("expected a ResNet")
    };
    assert!(!conv1_requires_grad(&resnet.layer4[0]));
    let trunk = trunk.freeze(3);
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("expected a ResNet")
    };
    assert!(conv1_requires_grad(&resnet.layer4[0]));
    assert!(!conv1_requires_grad(&resnet.layer3[0]));
    assert!(!conv1_requires_grad(&resnet.layer1[0]));
    assert!(!resnet.bn1.running_mean.value_sync().is_require_grad());
}

#[test]
fn loaded_on_the_inner_backend_then_moved_to_autodiff_and_frozen() {
    // The usual flow: build and load on the inner backend, move to autodiff, apply the policy.
    let Some(shared) = weights_support::shared_dir() else {
        return;
    };
    let path = shared.join("fixtures/torchvision/resnet-basic-1111.pth");
    let device = Default::default();
    let inner: Trunk<Flex> =
        TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Basic, [1, 1, 1, 1]))
            .with_num_classes(Some(10))
            .init(&device)
            .load_weights(&path)
            .unwrap();
    let trunk = <Trunk<AB> as AutodiffModule<AB>>::from_inner(inner).freeze(3);
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("expected a ResNet")
    };
    let layer3_before = match &resnet.layer3[0] {
        ResidualBlock::Basic(b) => b
            .bn2
            .running_mean
            .value_sync()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        ResidualBlock::Bottleneck(_) => panic!("expected a BasicBlock"),
    };
    let features = trunk.forward(images(&device));
    let logits = trunk.classify(features).unwrap();
    let grads = logits.sum().backward();
    let (with_grad, without_grad) = census(&trunk, &grads);
    assert!(
        with_grad.iter().any(|p| p == "layer4.0.conv1.weight"),
        "{with_grad:?}"
    );
    assert!(with_grad.iter().any(|p| p == "fc.weight"), "{with_grad:?}");
    assert!(
        without_grad.iter().any(|p| p == "layer3.0.conv2.weight"),
        "{without_grad:?}"
    );
    for path in &with_grad {
        assert!(
            path.starts_with("layer4") || path.starts_with("fc"),
            "frozen {path} got a gradient"
        );
    }
    let layer3_after = match &resnet.layer3[0] {
        ResidualBlock::Basic(b) => b
            .bn2
            .running_mean
            .value_sync()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        ResidualBlock::Bottleneck(_) => unreachable!(),
    };
    assert_eq!(
        layer3_before, layer3_after,
        "loaded running statistics of a frozen stage changed"
    );
}

#[test]
fn efficientnet_lite_freezes_by_stride() {
    let device = Default::default();
    // base width 16: every width ×1/4, a cheap Lite0 with the same block table.
    let trunk: Trunk<AB> = TrunkConfig::efficientnet_lite0()
        .with_base_width(16)
        .with_frozen_stages(3)
        .init(&device);
    let Trunk::EfficientNetLite(model) = &trunk else {
        panic!("expected EfficientNet-Lite")
    };
    let before = model.blocks[10]
        .bn2
        .running_mean
        .value_sync()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let output = trunk.forward(images(&device));
    assert_eq!(output.dims(), [2, trunk.out_channels(), 2, 2]);
    let grads = output.sum().backward();
    let (with_grad, without_grad) = census(&trunk, &grads);
    // Blocks 0..=10 are levels 1..=3 (strides ≤ 16); 11..=15 and the head are level 4.
    for path in &with_grad {
        let trainable = path.starts_with("conv_head")
            || path.starts_with("bn1")
            || (11..16).any(|i| path.starts_with(&format!("blocks.{i}.")));
        assert!(trainable, "frozen parameter {path} got a gradient");
    }
    assert!(without_grad.iter().any(|p| p == "conv_stem.weight"));
    assert!(without_grad
        .iter()
        .any(|p| p == "blocks.10.project_conv.weight"));
    assert!(with_grad
        .iter()
        .any(|p| p == "blocks.11.depthwise_conv.weight"));
    let after = model.blocks[10]
        .bn2
        .running_mean
        .value_sync()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(
        before, after,
        "frozen block 10 BatchNorm updated its running mean"
    );
}

#[test]
fn loading_on_the_autodiff_backend_keeps_the_policy() {
    let Some(shared) = weights_support::shared_dir() else {
        return;
    };
    let path = shared.join("fixtures/torchvision/resnet-bottleneck-1111-w4.safetensors");
    let device = Default::default();
    let trunk: Trunk<AB> = TrunkConfig::resnet_layout(
        ResNetLayout::new(BlockKind::Bottleneck, [1, 1, 1, 1]).with_width_per_group(4),
    )
    .init(&device)
    .load_weights(&path)
    .unwrap();
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("expected a ResNet")
    };
    assert!(!resnet.conv1.weight.val().is_require_grad());
    assert!(!conv1_requires_grad(&resnet.layer3[0]));
    assert!(conv1_requires_grad(&resnet.layer4[0]));
}
