//! Output shapes of every ResNet depth and of EfficientNet-Lite, at small widths and sizes.

use burn::backend::Flex;
use burn::prelude::*;
use hst_backbone::trunk::{Trunk, TrunkConfig};

type TB = Flex;

#[test]
fn resnets_of_every_depth_downsample_by_32() {
    let device = Default::default();
    for (depth, expansion) in [(18, 1), (34, 1), (50, 4), (101, 4), (152, 4)] {
        let trunk: Trunk<TB> = TrunkConfig::resnet(depth).with_base_width(4).init(&device);
        let expected_channels = 4 * 8 * expansion;
        assert_eq!(trunk.out_channels(), expected_channels, "ResNet-{depth}");
        let features = trunk.forward_features(Tensor::zeros([1, 3, 64, 96], &device));
        assert_eq!(
            features.layer1.dims(),
            [1, 4 * expansion, 16, 24],
            "ResNet-{depth} layer1"
        );
        assert_eq!(
            features.layer2.dims(),
            [1, 8 * expansion, 8, 12],
            "ResNet-{depth} layer2"
        );
        assert_eq!(
            features.layer3.dims(),
            [1, 16 * expansion, 4, 6],
            "ResNet-{depth} layer3"
        );
        assert_eq!(
            features.layer4.dims(),
            [1, expected_channels, 2, 3],
            "ResNet-{depth} layer4"
        );
    }
}

#[test]
fn resnet101_has_torchvision_widths_and_block_counts() {
    let device = Default::default();
    let trunk: Trunk<TB> = TrunkConfig::new().init(&device);
    assert_eq!(trunk.out_channels(), 2048);
    let Trunk::ResNet(resnet) = &trunk else {
        panic!("default trunk must be a ResNet")
    };
    let blocks = [
        resnet.layer1.len(),
        resnet.layer2.len(),
        resnet.layer3.len(),
        resnet.layer4.len(),
    ];
    assert_eq!(blocks, [3, 4, 23, 3]);
    assert!(resnet.fc.is_none());
    assert_eq!(trunk.frozen_stages(), 3);
}

#[test]
fn efficientnet_lite_output_rounds_up_for_odd_sizes() {
    let device = Default::default();
    let trunk: Trunk<TB> = TrunkConfig::efficientnet_lite0()
        .with_base_width(16)
        .init(&device);
    let features = trunk.forward_features(Tensor::zeros([1, 3, 65, 33], &device));
    // TF "same" padding: each stride-2 layer gives ceil(n / 2).
    assert_eq!(features.layer1.dims()[2..], [17, 9]);
    assert_eq!(features.layer2.dims()[2..], [9, 5]);
    assert_eq!(features.layer3.dims()[2..], [5, 3]);
    assert_eq!(features.layer4.dims(), [1, trunk.out_channels(), 3, 2]);
}
