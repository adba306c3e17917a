//! Weight files that do not fit the model must fail with an error naming the file and the keys:
//! wrong shapes, missing keys, unexpected keys, unknown formats, missing files. Each case writes a
//! small safetensors file (made with the `safetensors` crate) for a tiny ResNet into a temp dir.

mod weights_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hst_backbone::trunk::{BlockKind, ResNetLayout, ResidualBlock, Trunk, TrunkConfig};
use hst_backbone::BackboneError;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use weights_support::TB;

/// A ResNet with one BasicBlock per stage and base width 4 (no head unless asked).
fn tiny(num_classes: Option<usize>) -> TrunkConfig {
    TrunkConfig::resnet_layout(ResNetLayout::new(BlockKind::Basic, [1, 1, 1, 1]))
        .with_base_width(4)
        .with_num_classes(num_classes)
}

/// The torchvision state dict of `tiny(num_classes)`: key → shape.
fn torchvision_keys(num_classes: Option<usize>) -> BTreeMap<String, Vec<usize>> {
    let mut keys = BTreeMap::new();
    let bn = |keys: &mut BTreeMap<String, Vec<usize>>, prefix: &str, c: usize| {
        for name in ["weight", "bias", "running_mean", "running_var"] {
            keys.insert(format!("{prefix}.{name}"), vec![c]);
        }
        keys.insert(format!("{prefix}.num_batches_tracked"), vec![]);
    };
    keys.insert("conv1.weight".into(), vec![4, 3, 7, 7]);
    bn(&mut keys, "bn1", 4);
    let mut inplanes = 4;
    for stage in 0..4 {
        let planes = 4 << stage;
        let p = format!("layer{}.0", stage + 1);
        keys.insert(format!("{p}.conv1.weight"), vec![planes, inplanes, 3, 3]);
        bn(&mut keys, &format!("{p}.bn1"), planes);
        keys.insert(format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]);
        bn(&mut keys, &format!("{p}.bn2"), planes);
        if stage > 0 {
            keys.insert(
                format!("{p}.downsample.0.weight"),
                vec![planes, inplanes, 1, 1],
            );
            bn(&mut keys, &format!("{p}.downsample.1"), planes);
        }
        inplanes = planes;
    }
    if let Some(classes) = num_classes {
        keys.insert("fc.weight".into(), vec![classes, 32]);
        keys.insert("fc.bias".into(), vec![classes]);
    }
    keys
}

/// Write `keys` as a safetensors file (float32 0.5 everywhere; int64 for `num_batches_tracked`).
fn write(dir: &Path, name: &str, keys: &BTreeMap<String, Vec<usize>>) -> PathBuf {
    let buffers: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = keys
        .iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            if key.ends_with("num_batches_tracked") {
                (
                    key.clone(),
                    shape.clone(),
                    Dtype::I64,
                    7i64.to_le_bytes().repeat(n),
                )
            } else {
                (
                    key.clone(),
                    shape.clone(),
                    Dtype::F32,
                    0.5f32.to_le_bytes().repeat(n),
                )
            }
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(key, shape, dtype, bytes)| {
            (
                key.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hst-backbone-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(config: TrunkConfig, path: &Path) -> Result<Trunk<TB>, BackboneError> {
    config.init::<TB>(&Default::default()).load_weights(path)
}

#[test]
fn a_complete_file_loads_and_sets_the_values() {
    let dir = temp_dir("complete");
    let path = write(&dir, "ok.safetensors", &torchvision_keys(Some(3)));
    let trunk = load(tiny(Some(3)), &path).expect("a complete file must load");
    let Trunk::ResNet(resnet) = trunk else {
        panic!("expected a ResNet")
    };
    let conv: Vec<f32> = resnet.conv1.weight.val().into_data().to_vec().unwrap();
    assert!(
        conv.iter().all(|&v| v == 0.5),
        "conv1.weight was not loaded"
    );
    let ResidualBlock::Basic(block) = &resnet.layer2[0] else {
        panic!("expected BasicBlock")
    };
    let bn = &block.downsample.as_ref().expect("layer2 projects").bn;
    let mean: Vec<f32> = bn.running_mean.value_sync().into_data().to_vec().unwrap();
    let gamma: Vec<f32> = bn.gamma.val().into_data().to_vec().unwrap();
    assert!(
        mean.iter().chain(&gamma).all(|&v| v == 0.5),
        "downsample.1.{{running_mean,weight}} were not loaded"
    );
    let fc: Vec<f32> = resnet
        .fc
        .as_ref()
        .unwrap()
        .weight
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(fc.len(), 32 * 3);
}

#[test]
fn wrong_shape_is_an_error_naming_the_key() {
    let dir = temp_dir("shape");
    let mut keys = torchvision_keys(None);
    keys.insert("layer2.0.conv1.weight".into(), vec![8, 4, 5, 5]);
    let path = write(&dir, "shape.safetensors", &keys);
    let error = load(tiny(None), &path).expect_err("a wrong shape must fail");
    let message = error.to_string();
    assert!(
        matches!(&error, BackboneError::Mismatch { mismatch, .. }
            if mismatch.wrong_shape.len() == 1 && mismatch.wrong_shape[0].0 == "layer2.0.conv1.weight"),
        "{message}"
    );
    assert!(message.contains("layer2.0.conv1.weight"), "{message}");
    assert!(message.contains("shape.safetensors"), "{message}");
}

#[test]
fn missing_key_is_an_error_naming_it_as_the_file_would() {
    let dir = temp_dir("missing");
    let mut keys = torchvision_keys(None);
    keys.remove("layer3.0.downsample.1.weight");
    let path = write(&dir, "missing.safetensors", &keys);
    let error = load(tiny(None), &path).expect_err("a missing key must fail");
    let message = error.to_string();
    assert!(
        matches!(&error, BackboneError::Mismatch { mismatch, .. }
            if mismatch.missing == ["layer3.0.downsample.1.weight"]),
        "{message}"
    );
    assert!(message.contains("missing.safetensors"), "{message}");
}

#[test]
fn unexpected_key_is_an_error_naming_it() {
    let dir = temp_dir("unexpected");
    let mut keys = torchvision_keys(None);
    keys.insert("layer4.0.conv3.weight".into(), vec![32, 32, 1, 1]);
    let path = write(&dir, "unexpected.safetensors", &keys);
    let error = load(tiny(None), &path).expect_err("an unexpected key must fail");
    let message = error.to_string();
    assert!(
        matches!(&error, BackboneError::Mismatch { mismatch, .. }
            if mismatch.unexpected == ["layer4.0.conv3.weight"]),
        "{message}"
    );
}

#[test]
fn head_keys_are_required_when_the_model_has_a_head() {
    let dir = temp_dir("head");
    let path = write(&dir, "headless.safetensors", &torchvision_keys(None));
    let error = load(tiny(Some(3)), &path).expect_err("fc.* missing must fail");
    let message = error.to_string();
    assert!(
        message.contains("fc.weight") && message.contains("fc.bias"),
        "{message}"
    );
    // …and a head of the wrong size is a shape error.
    let path = write(&dir, "head5.safetensors", &torchvision_keys(Some(5)));
    let error = load(tiny(Some(3)), &path).expect_err("fc of 5 classes must fail");
    assert!(error.to_string().contains("fc.weight"), "{error}");
}

#[test]
fn unknown_extension_and_missing_file_are_errors() {
    let dir = temp_dir("format");
    let path = dir.join("weights.bin");
    std::fs::write(&path, b"not weights").unwrap();
    let error = load(tiny(None), &path).err().unwrap();
    assert!(
        matches!(error, BackboneError::UnsupportedFormat { .. }),
        "{error}"
    );
    let error = load(tiny(None), &dir.join("absent.safetensors"))
        .err()
        .unwrap();
    assert!(
        matches!(&error, BackboneError::Read { .. })
            && error.to_string().contains("absent.safetensors"),
        "{error}"
    );
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops").unwrap();
    let error = load(tiny(None), &garbage).err().unwrap();
    assert!(matches!(error, BackboneError::Read { .. }), "{error}");
}
