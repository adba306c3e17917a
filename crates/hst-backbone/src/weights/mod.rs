//! Weight import (torchvision ResNet, EfficientNet-Lite) through burn-store.
//!
//! Each source layout is data: a [`KeyLayout`] holds the (regex, replacement) rules from file keys
//! to module paths (applied in order, each to the result of the previous), the inverse rules (to
//! name a missing key as the file would), the head's key prefix and the keys to ignore. [`load`]
//! reads every tensor of a `.pth`/`.pt` ([`PytorchStore`]) or `.safetensors`
//! ([`SafetensorsStore`]) file, drops the ignored keys, renames the rest with a [`KeyRemapper`],
//! applies them with the [`PyTorchToBurnAdapter`] (Linear weights transposed) and then checks the
//! `ApplyResult`: any missing, unexpected, wrong-shaped or unreadable tensor is an error that
//! names the file and the keys.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use burn::store::{
    ApplyError, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore, TensorSnapshot,
};
use burn::tensor::DType;
use regex::Regex;

use crate::error::{BackboneError, KeyMismatch};

/// The key layout of a checkpoint family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// torchvision ResNet state dicts ([`TORCHVISION_RESNET`]).
    TorchvisionResNet,
    /// lukemelas EfficientNet(-Lite) state dicts ([`EFFICIENTNET_LITE`]).
    EfficientNetLite,
}

impl WeightLayout {
    /// The layout's key table.
    pub fn keys(self) -> &'static KeyLayout {
        match self {
            Self::TorchvisionResNet => &TORCHVISION_RESNET,
            Self::EfficientNetLite => &EFFICIENTNET_LITE,
        }
    }
}

/// How a checkpoint family names its tensors, relative to our module paths.
#[derive(Debug)]
pub struct KeyLayout {
    /// Human-readable name for messages.
    pub name: &'static str,
    /// File key → module path, applied in order (each to the previous result).
    pub to_model: &'static [(&'static str, &'static str)],
    /// Module path → file key, applied in order (used to name missing keys).
    pub to_file: &'static [(&'static str, &'static str)],
    /// File keys of the classifier head, ignored when the model has no head.
    pub head: &'static str,
    /// File keys that are never loaded.
    pub ignored: &'static str,
}

/// torchvision ResNet.
///
/// File keys: `conv1.weight`, `bn1.{weight,bias,running_mean,running_var,num_batches_tracked}`,
/// `layer{1..4}.{i}.conv{1..3}.weight`, `layer{1..4}.{i}.bn{1..3}.*`,
/// `layer{1..4}.0.downsample.{0.weight, 1.*}`, `fc.{weight,bias}`.
/// Module paths are identical except `downsample.0` → `downsample.conv`, `downsample.1` →
/// `downsample.bn`, and BatchNorm `weight`/`bias` → `gamma`/`beta`.
pub const TORCHVISION_RESNET: KeyLayout = KeyLayout {
    name: "torchvision ResNet",
    to_model: &[
        (r"^(layer\d+\.\d+)\.downsample\.0\.", "$1.downsample.conv."),
        (r"^(layer\d+\.\d+)\.downsample\.1\.", "$1.downsample.bn."),
        (r"(^|\.)(bn\d*)\.weight$", "${1}${2}.gamma"),
        (r"(^|\.)(bn\d*)\.bias$", "${1}${2}.beta"),
    ],
    to_file: &[
        (r"(^|\.)(bn\d*)\.gamma$", "${1}${2}.weight"),
        (r"(^|\.)(bn\d*)\.beta$", "${1}${2}.bias"),
        (r"\.downsample\.conv\.", ".downsample.0."),
        (r"\.downsample\.bn\.", ".downsample.1."),
    ],
    head: r"^fc\.",
    ignored: r"\.num_batches_tracked$",
};

/// lukemelas EfficientNet-PyTorch (EfficientNet-Lite has the same keys, without `_se_*`).
///
/// File keys: `_conv_stem.weight`, `_bn0.*`,
/// `_blocks.{i}.{_expand_conv,_depthwise_conv,_project_conv}.weight`, `_blocks.{i}._bn{0,1,2}.*`
/// (block 0 has no `_expand_conv`/`_bn0`), `_conv_head.weight`, `_bn1.*`, `_fc.{weight,bias}`.
/// Module paths drop each segment's leading underscore and rename BatchNorm `weight`/`bias` →
/// `gamma`/`beta`.
pub const EFFICIENTNET_LITE: KeyLayout = KeyLayout {
    name: "EfficientNet-Lite (lukemelas)",
    to_model: &[
        (r"(^|\.)_", "$1"),
        (r"(^|\.)(bn\d)\.weight$", "${1}${2}.gamma"),
        (r"(^|\.)(bn\d)\.bias$", "${1}${2}.beta"),
    ],
    to_file: &[
        (r"(^|\.)(bn\d)\.gamma$", "${1}${2}.weight"),
        (r"(^|\.)(bn\d)\.beta$", "${1}${2}.bias"),
        (r"^blocks\.(\d+)\.([a-z]\w*)\.", "_blocks.$1._$2."),
        (r"^(conv_stem|bn0|conv_head|bn1|fc)\.", "_$1."),
    ],
    head: r"^_fc\.",
    ignored: r"\.num_batches_tracked$",
};

fn compile(rules: &[(&str, &str)]) -> Vec<(Regex, String)> {
    rules
        .iter()
        .map(|(pattern, replacement)| {
            (
                Regex::new(pattern).expect("key-layout patterns are valid regexes"),
                (*replacement).to_string(),
            )
        })
        .collect()
}

fn rename(rules: &[(Regex, String)], key: &str) -> String {
    rules
        .iter()
        .fold(key.to_string(), |key, (pattern, replacement)| {
            pattern.replace_all(&key, replacement.as_str()).into_owned()
        })
}

impl KeyLayout {
    /// The module path a file key loads into.
    pub fn model_path(&self, file_key: &str) -> String {
        rename(&compile(self.to_model), file_key)
    }

    /// The file key a module path loads from.
    pub fn file_key(&self, model_path: &str) -> String {
        rename(&compile(self.to_file), model_path)
    }
}

/// Every tensor of a `.pth`/`.pt` or `.safetensors` file, keyed as in the file.
///
/// # Errors
/// [`BackboneError::Read`] / [`BackboneError::UnsupportedFormat`] when the file cannot be read.
pub fn read_snapshots(path: &Path) -> Result<Vec<TensorSnapshot>, BackboneError> {
    let read_error = |message: String| BackboneError::Read {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(read_error("no such file".to_string()));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let snapshots = match extension.as_deref() {
        Some("pth") | Some("pt") => PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_snapshots()
            .map_err(|e| read_error(e.to_string()))?
            .values()
            .cloned()
            .collect(),
        Some("safetensors") => SafetensorsStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_snapshots()
            .map_err(|e| read_error(e.to_string()))?
            .values()
            .cloned()
            .collect(),
        _ => {
            return Err(BackboneError::UnsupportedFormat {
                path: path.to_path_buf(),
            })
        }
    };
    Ok(snapshots)
}

/// Load a checkpoint into `module` (see the [module docs](self)).
///
/// `has_head`: whether the module has the layout's classifier head; without one, the file's head
/// keys are ignored.
///
/// # Errors
/// [`BackboneError::Read`] / [`BackboneError::UnsupportedFormat`] when the file cannot be read,
/// [`BackboneError::UnsupportedDtype`] for a non-f32 float tensor, [`BackboneError::Mismatch`]
/// naming every missing, unexpected or wrong-shaped key.
pub fn load<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    layout: WeightLayout,
    has_head: bool,
) -> Result<M, BackboneError> {
    let options = LoadOptions {
        has_head,
        may_be_missing: None,
    };
    load_snapshots(module, read_snapshots(path)?, path, layout.keys(), &options)
}

/// Options of [`load_snapshots`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Whether the module has the layout's classifier head; without one, the file's head keys are ignored.
    pub has_head: bool,
    /// Module paths (a regex) that the file may lack, e.g. a trunk the file does not contain; they keep
    /// the module's values. Every other missing path is an error.
    pub may_be_missing: Option<&'static str>,
}

/// Load `snapshots` (read from `path`, named as `keys` says) into `module`: see the [module docs](self).
/// A scalar (0-d) tensor of the file loads into a one-element parameter (`[1]`).
///
/// # Errors
/// [`BackboneError::UnsupportedDtype`] for a non-f32 float tensor, [`BackboneError::Mismatch`] naming every
/// missing, unexpected or wrong-shaped key (with the file's names).
pub fn load_snapshots<B: Backend, M: Module<B>>(
    mut module: M,
    snapshots: Vec<TensorSnapshot>,
    path: &Path,
    keys: &KeyLayout,
    options: &LoadOptions,
) -> Result<M, BackboneError> {
    let has_head = options.has_head;
    let ignored = Regex::new(keys.ignored).expect("valid regex");
    let head = Regex::new(keys.head).expect("valid regex");
    let may_be_missing = options
        .may_be_missing
        .map(|r| Regex::new(r).expect("valid regex"));

    let mut kept = Vec::new();
    let mut dropped = 0usize;
    for snapshot in snapshots {
        let key = snapshot.full_path();
        if ignored.is_match(&key) || (!has_head && head.is_match(&key)) {
            dropped += 1;
            continue;
        }
        if snapshot.dtype.is_float() && snapshot.dtype != DType::F32 {
            return Err(BackboneError::UnsupportedDtype {
                path: path.to_path_buf(),
                key,
                dtype: format!("{:?}", snapshot.dtype),
            });
        }
        kept.push(if snapshot.shape.num_dims() == 0 {
            scalar_as_vector(snapshot)
        } else {
            snapshot
        });
    }

    let remapper = KeyRemapper::from_patterns(keys.to_model.to_vec())
        .expect("key-layout patterns are valid regexes");
    let (snapshots, renamed) = remapper.remap(kept);
    // Module path → file key, for the keys that came from the file.
    let file_key: HashMap<String, String> = renamed.into_iter().collect();
    let name = |model_path: &str| {
        file_key
            .get(model_path)
            .cloned()
            .unwrap_or_else(|| keys.file_key(model_path))
    };

    let result = module.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), true);

    let mut mismatch = KeyMismatch {
        missing: result
            .missing
            .iter()
            .filter(|(p, _)| !may_be_missing.as_ref().is_some_and(|r| r.is_match(p)))
            .map(|(p, _)| name(p))
            .collect(),
        unexpected: result.unused.iter().map(|p| name(p)).collect(),
        ..KeyMismatch::default()
    };
    for error in &result.errors {
        match error {
            ApplyError::ShapeMismatch {
                path: p,
                expected,
                found,
            } => mismatch
                .wrong_shape
                .push((name(p), expected.to_vec(), found.to_vec())),
            ApplyError::DTypeMismatch { path: p, .. }
            | ApplyError::AdapterError { path: p, .. }
            | ApplyError::LoadError { path: p, .. } => {
                mismatch.other.push(format!("{}: {error}", name(p)))
            }
        }
    }
    if !mismatch.is_empty() {
        return Err(BackboneError::Mismatch {
            path: path.to_path_buf(),
            layout: keys.name,
            mismatch: Box::new(mismatch),
        });
    }
    tracing::debug!(
        path = %path.display(),
        layout = keys.name,
        applied = result.applied.len(),
        ignored = dropped,
        "loaded weights"
    );
    Ok(module)
}

/// A 0-d snapshot as a `[1]` one (PyTorch stores scalar parameters as 0-d tensors; Burn's are `[1]`).
fn scalar_as_vector(snapshot: TensorSnapshot) -> TensorSnapshot {
    let data = snapshot.clone_data_fn();
    TensorSnapshot::from_closure(
        std::rc::Rc::new(move || {
            let d = data()?;
            let dtype = d.dtype;
            Ok(TensorData::from_bytes_vec(
                d.into_bytes().to_vec(),
                [1],
                dtype,
            ))
        }),
        snapshot.dtype,
        burn::tensor::Shape::new([1]),
        snapshot.path_stack.clone().unwrap_or_default(),
        snapshot.container_stack.clone().unwrap_or_default(),
        snapshot.tensor_id.unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_keys_round_trip() {
        let cases = [
            ("conv1.weight", "conv1.weight"),
            ("bn1.weight", "bn1.gamma"),
            ("bn1.running_var", "bn1.running_var"),
            ("layer1.0.bn3.bias", "layer1.0.bn3.beta"),
            (
                "layer3.0.downsample.0.weight",
                "layer3.0.downsample.conv.weight",
            ),
            (
                "layer3.0.downsample.1.weight",
                "layer3.0.downsample.bn.gamma",
            ),
            (
                "layer3.0.downsample.1.running_mean",
                "layer3.0.downsample.bn.running_mean",
            ),
            ("fc.weight", "fc.weight"),
        ];
        for (file, model) in cases {
            assert_eq!(TORCHVISION_RESNET.model_path(file), model, "{file}");
            assert_eq!(TORCHVISION_RESNET.file_key(model), file, "{model}");
        }
    }

    #[test]
    fn efficientnet_keys_round_trip() {
        let cases = [
            ("_conv_stem.weight", "conv_stem.weight"),
            ("_bn0.weight", "bn0.gamma"),
            (
                "_blocks.0._depthwise_conv.weight",
                "blocks.0.depthwise_conv.weight",
            ),
            ("_blocks.12._bn2.bias", "blocks.12.bn2.beta"),
            ("_blocks.3._bn0.running_var", "blocks.3.bn0.running_var"),
            ("_conv_head.weight", "conv_head.weight"),
            ("_bn1.running_mean", "bn1.running_mean"),
            ("_fc.weight", "fc.weight"),
        ];
        for (file, model) in cases {
            assert_eq!(EFFICIENTNET_LITE.model_path(file), model, "{file}");
            assert_eq!(EFFICIENTNET_LITE.file_key(model), file, "{model}");
        }
    }
}
