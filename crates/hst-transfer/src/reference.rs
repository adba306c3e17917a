//! The authors' HST checkpoints (HCP-MLR-PL `HST.py`): their `state_dict` names mapped to this project's
//! modules, as data ([`HST_REFERENCE`]), and the loader ([`load_reference`]).
//!
//! | reference key | module path here |
//! | --- | --- |
//! | `backbone.*` (torchvision ResNet names) | `trunk.*` |
//! | `changeChannel.0.weight` (1×1 conv), `changeChannel.1.*` (BatchNorm) | `sarl.reduce_conv.weight`, `sarl.reduce_bn.*` |
//! | `SemanticDecoupling.fc1`, `fc2`, `fc3`, `fc4` | `sarl.decoupling.image_projection`, `word_projection`, `hidden`, `score` |
//! | `GraphNeuralNetwork.fc_1_w`, `fc_1_u`, `fc_2_w`, `fc_2_u`, `fc_3_w`, `fc_3_u` | `sarl.ggnn.update_message`, `update_state`, `reset_message`, `reset_state`, `candidate_message`, `candidate_state` |
//! | `fc`, `classifiers` | `sarl.classifier.projection`, `sarl.classifier.per_class` |
//! | `intra_fc_1`, `intra_fc_2`, `intra_fc_3`, `intra_classifiers` | `ist.projection`, `ist.pair_hidden`, `ist.pair_output`, `ist.pair_classifier` |
//! | `intraMargin`, `interMargin` (0-d) | `thresholds.ist`, `thresholds.cst` (`[1]`) |
//! | `wordFeatures`, `inMatrix`, `outMatrix`, `GraphNeuralNetwork.{inMatrix,outMatrix}` | constants ([`ReferenceConstants`]), not parameters |
//!
//! The reference saves `{'epoch', 'state_dict': model.state_dict(), 'best_mAP'}` (`utils/checkpoint.py`): a
//! `state_dict.` wrapper and a `module.` prefix (a `DataParallel` model) are dropped, the wrapper's
//! non-parameter entries and `num_batches_tracked` are ignored. Linear
//! weights are transposed (torch `[out, in]`, Burn `[in, out]`); the element-wise layers' `[classes, dim]`
//! weights are not. Missing, unexpected or wrong-shape keys are errors that name the key as the file does.

use std::path::Path;

use burn::prelude::*;
use burn::store::TensorSnapshot;
use hst_backbone::weights::{load_snapshots, read_snapshots, KeyLayout, LoadOptions};
use hst_backbone::BackboneError;

use crate::hst::Hst;

/// The reference's `state_dict` names → this project's module paths (see the [module docs](self)).
pub const HST_REFERENCE: KeyLayout = KeyLayout {
    name: "HST reference (HCP-MLR-PL HST.py)",
    to_model: &[
        (r"^state_dict\.", ""),
        (r"^module\.", ""),
        // The trunk: torchvision names under `backbone.`.
        (r"^backbone\.", "trunk."),
        (
            r"^trunk\.(layer\d+\.\d+)\.downsample\.0\.",
            "trunk.$1.downsample.conv.",
        ),
        (
            r"^trunk\.(layer\d+\.\d+)\.downsample\.1\.",
            "trunk.$1.downsample.bn.",
        ),
        (r"^trunk\.(.*\.)?(bn\d*)\.weight$", "trunk.${1}${2}.gamma"),
        (r"^trunk\.(.*\.)?(bn\d*)\.bias$", "trunk.${1}${2}.beta"),
        // SARL.
        (r"^changeChannel\.0\.", "sarl.reduce_conv."),
        (r"^changeChannel\.1\.weight$", "sarl.reduce_bn.gamma"),
        (r"^changeChannel\.1\.bias$", "sarl.reduce_bn.beta"),
        (r"^changeChannel\.1\.", "sarl.reduce_bn."),
        (
            r"^SemanticDecoupling\.fc1\.",
            "sarl.decoupling.image_projection.",
        ),
        (
            r"^SemanticDecoupling\.fc2\.",
            "sarl.decoupling.word_projection.",
        ),
        (r"^SemanticDecoupling\.fc3\.", "sarl.decoupling.hidden."),
        (r"^SemanticDecoupling\.fc4\.", "sarl.decoupling.score."),
        (
            r"^GraphNeuralNetwork\.fc_1_w\.",
            "sarl.ggnn.update_message.",
        ),
        (r"^GraphNeuralNetwork\.fc_1_u\.", "sarl.ggnn.update_state."),
        (r"^GraphNeuralNetwork\.fc_2_w\.", "sarl.ggnn.reset_message."),
        (r"^GraphNeuralNetwork\.fc_2_u\.", "sarl.ggnn.reset_state."),
        (
            r"^GraphNeuralNetwork\.fc_3_w\.",
            "sarl.ggnn.candidate_message.",
        ),
        (
            r"^GraphNeuralNetwork\.fc_3_u\.",
            "sarl.ggnn.candidate_state.",
        ),
        (r"^fc\.", "sarl.classifier.projection."),
        (r"^classifiers\.", "sarl.classifier.per_class."),
        // IST.
        (r"^intra_fc_1\.", "ist.projection."),
        (r"^intra_fc_2\.", "ist.pair_hidden."),
        (r"^intra_fc_3\.", "ist.pair_output."),
        (r"^intra_classifiers\.", "ist.pair_classifier."),
        // DTL.
        (r"^intraMargin$", "thresholds.ist"),
        (r"^interMargin$", "thresholds.cst"),
    ],
    to_file: &[
        (r"^thresholds\.ist$", "intraMargin"),
        (r"^thresholds\.cst$", "interMargin"),
        (r"^ist\.projection\.", "intra_fc_1."),
        (r"^ist\.pair_hidden\.", "intra_fc_2."),
        (r"^ist\.pair_output\.", "intra_fc_3."),
        (r"^ist\.pair_classifier\.", "intra_classifiers."),
        (r"^sarl\.classifier\.projection\.", "fc."),
        (r"^sarl\.classifier\.per_class\.", "classifiers."),
        (
            r"^sarl\.ggnn\.update_message\.",
            "GraphNeuralNetwork.fc_1_w.",
        ),
        (r"^sarl\.ggnn\.update_state\.", "GraphNeuralNetwork.fc_1_u."),
        (
            r"^sarl\.ggnn\.reset_message\.",
            "GraphNeuralNetwork.fc_2_w.",
        ),
        (r"^sarl\.ggnn\.reset_state\.", "GraphNeuralNetwork.fc_2_u."),
        (
            r"^sarl\.ggnn\.candidate_message\.",
            "GraphNeuralNetwork.fc_3_w.",
        ),
        (
            r"^sarl\.ggnn\.candidate_state\.",
            "GraphNeuralNetwork.fc_3_u.",
        ),
        (
            r"^sarl\.decoupling\.image_projection\.",
            "SemanticDecoupling.fc1.",
        ),
        (
            r"^sarl\.decoupling\.word_projection\.",
            "SemanticDecoupling.fc2.",
        ),
        (r"^sarl\.decoupling\.hidden\.", "SemanticDecoupling.fc3."),
        (r"^sarl\.decoupling\.score\.", "SemanticDecoupling.fc4."),
        (r"^sarl\.reduce_bn\.gamma$", "changeChannel.1.weight"),
        (r"^sarl\.reduce_bn\.beta$", "changeChannel.1.bias"),
        (r"^sarl\.reduce_bn\.", "changeChannel.1."),
        (r"^sarl\.reduce_conv\.", "changeChannel.0."),
        (r"^trunk\.(.*\.)?(bn\d*)\.gamma$", "trunk.${1}${2}.weight"),
        (r"^trunk\.(.*\.)?(bn\d*)\.beta$", "trunk.${1}${2}.bias"),
        (r"\.downsample\.conv\.", ".downsample.0."),
        (r"\.downsample\.bn\.", ".downsample.1."),
        (r"^trunk\.", "backbone."),
    ],
    head: r"^(state_dict\.)?(module\.)?backbone\.fc\.",
    ignored: r"(^|\.)num_batches_tracked$|^(epoch|best_mAP)$|^(state_dict\.)?(module\.)?(wordFeatures|inMatrix|outMatrix|GraphNeuralNetwork\.inMatrix|GraphNeuralNetwork\.outMatrix)$",
};

/// The constant tensors a reference checkpoint carries besides its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceConstants {
    /// `wordFeatures`, row-major `[classes, embed_dim]`, with its shape.
    pub word_vectors: Option<(Vec<f32>, Vec<usize>)>,
    /// `inMatrix` (the GGNN adjacency), row-major `[classes, classes]`, with its shape.
    pub adjacency: Option<(Vec<f32>, Vec<usize>)>,
}

/// A checkpoint key without the reference's wrappers (`state_dict.`, `module.`).
fn unwrapped(key: &str) -> &str {
    let key = key.strip_prefix("state_dict.").unwrap_or(key);
    key.strip_prefix("module.").unwrap_or(key)
}

fn constants_of(snapshots: &[TensorSnapshot]) -> ReferenceConstants {
    let constant = |names: &[&str]| {
        snapshots
            .iter()
            .find(|s| names.contains(&unwrapped(&s.full_path())))
            .and_then(|s| s.to_data().ok())
            .map(|d| {
                let shape = d.shape.to_vec();
                (d.iter::<f32>().collect::<Vec<f32>>(), shape)
            })
    };
    ReferenceConstants {
        word_vectors: constant(&["wordFeatures"]),
        adjacency: constant(&["inMatrix", "GraphNeuralNetwork.inMatrix"]),
    }
}

/// Read a reference checkpoint once: its tensors (lazy, for [`apply_reference`]) and its constants (word
/// vectors, adjacency), which a model must be built from before the parameters are applied.
///
/// # Errors
/// The file cannot be read ([`BackboneError::Read`] / [`BackboneError::UnsupportedFormat`]).
pub fn read_reference(
    path: &Path,
) -> Result<(Vec<TensorSnapshot>, ReferenceConstants), BackboneError> {
    let snapshots = read_snapshots(path)?;
    let constants = constants_of(&snapshots);
    Ok((snapshots, constants))
}

/// Apply the tensors of a reference checkpoint (from [`read_reference`] of `path`) to `model`.
///
/// `with_trunk`: whether the file holds the trunk (`backbone.*`); without it the trunk keeps its values.
///
/// # Errors
/// A key is missing, unexpected or of the wrong shape ([`BackboneError`] names the file and the keys as
/// the file names them).
pub fn apply_reference<B: Backend>(
    model: Hst<B>,
    snapshots: Vec<TensorSnapshot>,
    path: &Path,
    with_trunk: bool,
) -> Result<Hst<B>, BackboneError> {
    let options = LoadOptions {
        has_head: false,
        may_be_missing: (!with_trunk).then_some(r"^trunk\."),
    };
    load_snapshots(model, snapshots, path, &HST_REFERENCE, &options)
}

/// Load a reference HST checkpoint (`.pth` as the reference saves it, or `.safetensors`) into `model`:
/// [`read_reference`] then [`apply_reference`].
///
/// Returns the model and the checkpoint's constants (word vectors, adjacency), which the caller checks
/// against or uses for its data.
///
/// # Errors
/// The file cannot be read, or a key is missing, unexpected or of the wrong shape ([`BackboneError`] names
/// the file and the keys as the file names them).
pub fn load_reference<B: Backend>(
    model: Hst<B>,
    path: &Path,
    with_trunk: bool,
) -> Result<(Hst<B>, ReferenceConstants), BackboneError> {
    let (snapshots, constants) = read_reference(path)?;
    let model = apply_reference(model, snapshots, path, with_trunk)?;
    Ok((model, constants))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_key_round_trips() {
        for key in [
            "changeChannel.0.weight",
            "changeChannel.1.weight",
            "changeChannel.1.running_var",
            "SemanticDecoupling.fc3.bias",
            "GraphNeuralNetwork.fc_2_u.weight",
            "fc.weight",
            "classifiers.bias",
            "intra_fc_3.weight",
            "intra_classifiers.weight",
            "intraMargin",
            "interMargin",
            "backbone.layer4.2.bn3.weight",
            "backbone.layer1.0.downsample.1.running_mean",
            "backbone.conv1.weight",
            "backbone.bn1.bias",
        ] {
            let path = HST_REFERENCE.model_path(key);
            assert_eq!(HST_REFERENCE.file_key(&path), key, "{key} → {path}");
        }
        assert_eq!(
            HST_REFERENCE.model_path("state_dict.module.backbone.layer3.0.bn2.weight"),
            "trunk.layer3.0.bn2.gamma"
        );
        assert_eq!(
            HST_REFERENCE.model_path("module.GraphNeuralNetwork.fc_1_w.bias"),
            "sarl.ggnn.update_message.bias"
        );
        assert_eq!(
            HST_REFERENCE.model_path("backbone.layer2.0.downsample.0.weight"),
            "trunk.layer2.0.downsample.conv.weight"
        );
    }
}
