//! torchvision fixtures: load `.pth` and `.safetensors` checkpoints of torchvision's own ResNet
//! class and reproduce its eval-mode `layer1`, `layer4` and `logits` within 1e-4 relative error
//! (max-normalised: `max|ours − torch| / max|torch|`).

mod weights_support;

use std::path::Path;

use burn::prelude::*;
use hst_backbone::trunk::{BlockKind, ResNetLayout, Trunk, TrunkConfig};
use weights_support::{assert_close, read_tensor, shared_dir, TB};

const TOLERANCE: f32 = 1e-4;

/// Load `checkpoint` into `config`'s trunk and compare with `expected` (fixture folder relative).
fn check(config: TrunkConfig, checkpoint: &str, expected: &str) {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("fixtures/torchvision");
    let device = Default::default();
    let trunk: Trunk<TB> = config
        .init(&device)
        .load_weights(&dir.join(checkpoint))
        .unwrap_or_else(|e| panic!("{checkpoint}: {e}"));
    let expected_path = dir.join(expected);
    let input = read_tensor::<4>(&expected_path, "input", &device);
    let features = trunk.forward_features(input);
    let logits = trunk
        .classify(features.layer4.clone())
        .expect("the fixture network has an fc head");
    assert_close(
        &format!("{checkpoint} layer1"),
        features.layer1,
        read_tensor(&expected_path, "layer1", &device),
        TOLERANCE,
    );
    assert_close(
        &format!("{checkpoint} layer4"),
        features.layer4,
        read_tensor(&expected_path, "layer4", &device),
        TOLERANCE,
    );
    assert_close(
        &format!("{checkpoint} logits"),
        logits,
        read_tensor(&expected_path, "logits", &device),
        TOLERANCE,
    );
}

fn basic_1111() -> TrunkConfig {
    TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Basic, [1, 1, 1, 1]))
        .with_num_classes(Some(10))
}

fn bottleneck_1111_w4() -> TrunkConfig {
    TrunkConfig::resnet_layout(
        ResNetLayout::new(BlockKind::Bottleneck, [1, 1, 1, 1]).with_width_per_group(4),
    )
    .with_num_classes(Some(10))
}

#[test]
fn basic_block_resnet_from_pth_matches_torchvision() {
    check(
        basic_1111(),
        "resnet-basic-1111.pth",
        "resnet-basic-1111.expected.safetensors",
    );
}

#[test]
fn bottleneck_resnet_from_pth_matches_torchvision() {
    check(
        bottleneck_1111_w4(),
        "resnet-bottleneck-1111-w4.pth",
        "resnet-bottleneck-1111-w4.expected.safetensors",
    );
}

#[test]
fn bottleneck_resnet_from_safetensors_matches_torchvision() {
    check(
        bottleneck_1111_w4(),
        "resnet-bottleneck-1111-w4.safetensors",
        "resnet-bottleneck-1111-w4.expected.safetensors",
    );
}

#[test]
fn frozen_trunk_gives_the_same_eval_outputs() {
    // Freezing switches BatchNorm to the hand-written eval path; on a non-autodiff backend it
    // must agree with burn's own inference BatchNorm (frozen_stages 0 vs 4).
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("fixtures/torchvision");
    let device = Default::default();
    let path = dir.join("resnet-basic-1111.pth");
    let input = read_tensor::<4>(
        &dir.join("resnet-basic-1111.expected.safetensors"),
        "input",
        &device,
    );
    let load = |frozen: usize| -> Trunk<TB> {
        basic_1111()
            .with_frozen_stages(frozen)
            .init(&device)
            .load_weights(Path::new(&path))
            .unwrap()
    };
    let free = load(0).forward(input.clone());
    let frozen = load(4).forward(input);
    assert_close("frozen vs unfrozen layer4", frozen, free, 1e-5);
}

#[test]
fn trunk_without_head_ignores_the_checkpoint_fc() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("fixtures/torchvision");
    let device = Default::default();
    let trunk: Trunk<TB> = basic_1111()
        .with_num_classes(None)
        .init(&device)
        .load_weights(&dir.join("resnet-basic-1111.pth"))
        .expect("fc.* must be skipped when the trunk has no head");
    assert!(trunk
        .classify(Tensor::zeros([1, 512, 1, 1], &device))
        .is_none());
    let expected = dir.join("resnet-basic-1111.expected.safetensors");
    let layer4 = trunk.forward(read_tensor(&expected, "input", &device));
    assert_close(
        "headless layer4",
        layer4,
        read_tensor(&expected, "layer4", &device),
        TOLERANCE,
    );
}
