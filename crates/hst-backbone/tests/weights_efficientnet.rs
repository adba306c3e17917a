//! EfficientNet-Lite0 ImageNet weights (lukemelas layout): reproduce the reference's eval-mode
//! `features` (after the head conv, `[2, 1280, 7, 7]`) and `logits` (`[2, 1000]`) within 1e-4
//! relative error (max-normalised: `max|ours − reference| / max|reference|`).

mod weights_support;

use hst_backbone::trunk::{Trunk, TrunkConfig};
use weights_support::{assert_close, read_tensor, shared_dir, TB};

const TOLERANCE: f32 = 1e-4;

#[test]
fn efficientnet_lite0_matches_the_reference() {
    let Some(shared) = shared_dir() else { return };
    let dir = shared.join("weights");
    let device = Default::default();
    let trunk: Trunk<TB> = TrunkConfig::efficientnet_lite0()
        .with_num_classes(Some(1000))
        .init(&device)
        .load_weights(&dir.join("efficientnet-lite0-imagenet.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(trunk.out_channels(), 1280);
    let expected = dir.join("efficientnet-lite0-imagenet.expected.safetensors");
    let features = trunk.forward(read_tensor(&expected, "input", &device));
    assert_eq!(features.dims(), [2, 1280, 7, 7]);
    let logits = trunk.classify(features.clone()).expect("fc head");
    assert_close(
        "lite0 features",
        features,
        read_tensor(&expected, "features", &device),
        TOLERANCE,
    );
    assert_close(
        "lite0 logits",
        logits,
        read_tensor(&expected, "logits", &device),
        TOLERANCE,
    );
}
