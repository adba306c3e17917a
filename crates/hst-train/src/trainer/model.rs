//! Building a run's model: the data-dependent configuration, the constants saved beside it, pretrained trunk
//! weights, the optimiser, and loading a checkpoint's record with every tensor's shape checked.

use std::collections::BTreeMap;
use std::path::Path;

use burn::optim::{decay::WeightDecayConfig, AdamConfig, Optimizer};
use burn::prelude::*;
use burn::record::Recorder as _;
use burn::store::ModuleSnapshot;
use burn::tensor::backend::AutodiffBackend;
use hst_data::cooccurrence::adjacency;
use hst_data::NanPolicy;
use hst_transfer::{Hst, HstConfig};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::RunData;
use crate::error::TrainError;

use super::run_folder::Bytes;

/// Fill the data-dependent sizes of the model config (classes, word-vector dim, trunk channels).
pub fn resolve_model_config<B: Backend>(
    config: &TrainConfig,
    classes: usize,
    embed_dim: usize,
    device: &B::Device,
) -> HstConfig {
    let mut model = config.model.clone();
    let channels = model.trunk.init::<B>(device).out_channels();
    model.sarl.classes = classes;
    model.sarl.embed_dim = embed_dim;
    model.sarl.in_channels = channels;
    model
}

/// The constants a model is built from besides its configuration: class names, word vectors and the GGNN
/// adjacency (Burn does not store constant tensors in records). Saved as `constants.json` in a run folder so
/// that `eval`/`predict` can rebuild the model without the training data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConstants {
    /// Class names, `[classes]`.
    pub classes: Vec<String>,
    /// Word-vector dimension.
    pub embed_dim: usize,
    /// Word vectors, row-major `[classes, embed_dim]`.
    pub word_vectors: Vec<f32>,
    /// GGNN adjacency, row-major `[classes, classes]` (`None` for a NaN entry, kept as the reference does).
    pub adjacency: Vec<Option<f32>>,
}

impl RunConstants {
    /// The constants of a run on `data` (adjacency from the partial training labels).
    pub fn of(config: &TrainConfig, data: &RunData) -> Self {
        let policy = if config.data.guard_adjacency_nan {
            NanPolicy::Zero
        } else {
            NanPolicy::Keep
        };
        let adj = adjacency(data.partial.partial(), policy);
        Self {
            classes: data.classes().to_vec(),
            embed_dim: data.word_vectors.dim(),
            word_vectors: data.word_vectors.values().to_vec(),
            adjacency: adj
                .into_iter()
                .map(|v| (!v.is_nan()).then_some(v))
                .collect(),
        }
    }

    /// Read `constants.json` of a run folder.
    pub fn load(run_dir: &Path) -> Result<Self, TrainError> {
        let path = run_dir.join("constants.json");
        let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path,
            message: format!("unreadable constants: {e}"),
        })
    }
}

/// The backend's random generator is one per process: a seeded initialisation holds this lock from the
/// seed to the last parameter drawn, so that models built at the same time on other threads (data-parallel
/// peers, a benchmark beside a training) neither change nor share its draws.
static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Draws every lazily initialised float parameter, in module order.
struct Materialize;

impl<B: Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Build the model of a run, importing the pretrained trunk weights when configured.
///
/// The initial weights depend on `config.seed` only: every parameter is drawn here, in module order,
/// under a process-wide lock (burn draws a lazily initialised parameter on its first use, which would
/// make the values depend on the order of the first forward pass and on other threads).
pub fn build_model<B: Backend>(
    config: &TrainConfig,
    constants: &RunConstants,
    device: &B::Device,
) -> Result<Hst<B>, TrainError> {
    let classes = constants.classes.len();
    let _seeded = SEEDED_INIT.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, config.seed);
    let model_config = resolve_model_config::<B>(config, classes, constants.embed_dim, device);
    let wv = Tensor::<B, 2>::from_data(
        TensorData::new(
            constants.word_vectors.clone(),
            [classes, constants.embed_dim],
        ),
        device,
    );
    let adj: Vec<f32> = constants
        .adjacency
        .iter()
        .map(|v| v.unwrap_or(f32::NAN))
        .collect();
    let adj = Tensor::<B, 2>::from_data(TensorData::new(adj, [classes, classes]), device);
    let mut model = model_config.init::<B>(wv, adj, device);
    model.visit(&mut Materialize);
    if let Some(path) = &config.pretrained {
        let frozen = model.trunk.frozen_stages();
        model.trunk = model.trunk.load_weights(path)?.freeze(frozen);
        tracing::info!(path = %path.display(), "loaded pretrained trunk weights");
    }
    Ok(model)
}

/// The reference's optimiser: Adam with the configured betas, epsilon and (L2) weight decay.
pub fn adam<B: AutodiffBackend>(config: &TrainConfig) -> impl Optimizer<Hst<B>, B> {
    let opt = &config.optimizer;
    AdamConfig::new()
        .with_beta_1(opt.beta1)
        .with_beta_2(opt.beta2)
        .with_epsilon(opt.epsilon)
        .with_weight_decay(Some(WeightDecayConfig::new(opt.weight_decay as f32)))
        .init::<B, Hst<B>>()
}

/// Load a record into `model`, check that every tensor keeps the shape the configuration gives it (Burn's
/// records load any shape), and re-apply the trunk's freezing policy: a loaded parameter takes the
/// `require_grad` flag of the lazily initialised parameter it replaces, which loses the freeze.
pub(super) fn reload<B: Backend>(
    model: Hst<B>,
    record: <Hst<B> as Module<B>>::Record,
    path: &Path,
) -> Result<Hst<B>, TrainError> {
    let shapes = |m: &Hst<B>| -> BTreeMap<String, Vec<usize>> {
        m.collect(None, None, false)
            .into_iter()
            .map(|s| (s.full_path(), s.shape.to_vec()))
            .collect()
    };
    let expected = shapes(&model);
    let frozen = model.trunk.frozen_stages();
    let loaded = model.load_record(record);
    let found = shapes(&loaded);
    let differ: Vec<String> = expected
        .iter()
        .filter_map(|(key, want)| match found.get(key) {
            Some(got) if got == want => None,
            Some(got) => Some(format!(
                "{key}: {got:?} in the checkpoint, {want:?} in the configuration"
            )),
            None => Some(format!("{key}: not in the checkpoint")),
        })
        .collect();
    if !differ.is_empty() {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!(
                "does not fit the run's configuration ({} tensor(s) differ; config.json edited?): {}",
                differ.len(),
                differ.iter().take(4).cloned().collect::<Vec<_>>().join("; ")
            ),
        });
    }
    Ok(loaded.map_trunk(|t| t.freeze(frozen)))
}

/// Load the model of a run folder (its `config.json`, `constants.json` and a checkpoint such as `best.ckpt`)
/// for evaluation or prediction.
pub fn load_run_model<B: Backend>(
    run_dir: &Path,
    checkpoint_name: &str,
    device: &B::Device,
) -> Result<(TrainConfig, RunConstants, Hst<B>), TrainError> {
    let config = TrainConfig::load(&run_dir.join("config.json"))?;
    let constants = RunConstants::load(run_dir)?;
    let mut no_pretrained = config.clone();
    no_pretrained.pretrained = None;
    let model = build_model::<B>(&no_pretrained, &constants, device)?;
    let path = run_dir.join("checkpoints").join(checkpoint_name);
    let file = checkpoint::load(&path)?;
    let record = Bytes::default()
        .load(file.model, device)
        .map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            message: format!("does not fit this model: {e:?}"),
        })?;
    Ok((config, constants, reload(model, record, &path)?))
}
