//! The authors' HST checkpoints as run folders: [`import_reference`] turns a reference checkpoint
//! (`Checkpoint_Best.pth` of HCP-MLR-PL's `HST.py`: ResNet trunk + heads, optionally wrapped in its
//! `state_dict` and a `DataParallel` `module.` prefix) into a run folder that `eval`/`predict` use like one
//! this project trained.
//!
//! The parameters are mapped by [`hst_transfer::reference::HST_REFERENCE`]; the checkpoint's constants
//! (`wordFeatures`, `inMatrix`) become the run's word vectors and GGNN adjacency, so the model computes what
//! the authors' model computed. What the checkpoint lacks comes from the configured dataset, as for
//! training. The class names are the configured dataset's (the checkpoint has none): the configuration must
//! be the one the checkpoint was trained with (e.g. the `voc` or `coco` preset), and a class count or a
//! tensor shape that does not fit is an error naming the key.

use std::path::{Path, PathBuf};

use burn::optim::{AdamConfig, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder as _};
use burn::tensor::backend::AutodiffBackend;
use hst_transfer::reference::{apply_reference, read_reference};
use hst_transfer::Hst;

use crate::checkpoint::{self, holds_a_run, CheckpointHeader};
use crate::config::TrainConfig;
use crate::data::RunData;
use crate::error::TrainError;
use crate::trainer::{build_model, write_run_description, RunConstants};

/// What [`import_reference`] wrote.
#[derive(Debug, Clone)]
pub struct ImportedRun {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Classes of the model.
    pub classes: usize,
    /// Whether the word vectors came from the checkpoint (`wordFeatures`) rather than the dataset's source.
    pub word_vectors_from_checkpoint: bool,
    /// Whether the adjacency came from the checkpoint (`inMatrix`) rather than the training labels.
    pub adjacency_from_checkpoint: bool,
}

/// Import the reference checkpoint `checkpoint` with the architecture and dataset of `config` into the new
/// run folder `out` (`config.json`, `constants.json`, `checkpoints/{best,last}.ckpt`).
///
/// The written checkpoints hold the imported weights at epoch 0 with a fresh optimizer, so
/// `train --resume` fine-tunes them with the run's configuration.
///
/// # Errors
/// An invalid configuration, `out` already holding a run, an unreadable checkpoint, constants or parameters
/// that do not fit the configuration (naming the key), I/O errors of the run folder. Nothing is written
/// before the checkpoint has loaded.
pub fn import_reference<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &RunData,
    checkpoint: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<ImportedRun, TrainError> {
    let mut config = config.clone();
    // The trunk's weights are the checkpoint's.
    config.pretrained = None;
    config.validate()?;
    if holds_a_run(out) {
        return Err(TrainError::RunExists {
            path: out.to_path_buf(),
        });
    }
    let bad = |message: String| TrainError::Checkpoint {
        path: checkpoint.to_path_buf(),
        message,
    };

    let (snapshots, found) = read_reference(checkpoint)?;
    let mut constants = RunConstants::of(&config, data);
    let classes = constants.classes.len();
    let word_vectors_from_checkpoint = found.word_vectors.is_some();
    if let Some((values, shape)) = found.word_vectors {
        match shape[..] {
            [c, dim] if c == classes => {
                constants.embed_dim = dim;
                constants.word_vectors = values;
            }
            _ => {
                return Err(bad(format!(
                    "wordFeatures has shape {shape:?}, but the configured dataset has {classes} classes"
                )))
            }
        }
    }
    let adjacency_from_checkpoint = found.adjacency.is_some();
    if let Some((values, shape)) = found.adjacency {
        if shape[..] != [classes, classes] {
            return Err(bad(format!(
                "inMatrix has shape {shape:?}, but the configured dataset has {classes} classes"
            )));
        }
        constants.adjacency = values
            .into_iter()
            .map(|v| (!v.is_nan()).then_some(v))
            .collect();
    }

    let model: Hst<B> = build_model::<B>(&config, &constants, device)?;
    let model = apply_reference(model, snapshots, checkpoint, true)?;

    type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;
    let recorded = |what: &str, e: burn::record::RecorderError| {
        bad(format!("cannot record the imported {what}: {e:?}"))
    };
    let model_bytes = Bytes::default()
        .record(model.into_record(), ())
        .map_err(|e| recorded("model", e))?;
    let optim = AdamConfig::new().init::<B, Hst<B>>();
    let optim_bytes = Bytes::default()
        .record(optim.to_record(), ())
        .map_err(|e| recorded("optimizer", e))?;

    let config_json = serde_json::to_value(&config).expect("configs serialise");
    let header = CheckpointHeader {
        epoch: 0,
        next_batch: 0,
        seed: config.seed,
        best_map: None,
        prototypes: None,
        config: config_json,
    };
    write_run_description(out, &config, &constants)?;
    for name in ["best.ckpt", "last.ckpt"] {
        let path = out.join("checkpoints").join(name);
        checkpoint::save(&path, &header, &model_bytes, &optim_bytes)?;
    }
    tracing::info!(
        checkpoint = %checkpoint.display(),
        run = %out.display(),
        word_vectors_from_checkpoint,
        adjacency_from_checkpoint,
        "imported a reference checkpoint"
    );
    Ok(ImportedRun {
        run_dir: out.to_path_buf(),
        classes,
        word_vectors_from_checkpoint,
        adjacency_from_checkpoint,
    })
}
