//! The training loop: the reference schedule on any autodiff backend, with per-epoch evaluation,
//! checkpoints, resume and a run folder of metrics and plots.
//!
//! Run folder layout:
//!
//! ```text
//! <out>/config.json        the full configuration of the run
//! <out>/metrics.jsonl      one EpochLog per line
//! <out>/metrics.csv        the same, flat
//! <out>/checkpoints/last.ckpt, best.ckpt
//! <out>/report/*.png       loss terms, mAP, thresholds, pseudo-label quality, co-occurrence (paper Fig. 4)
//! ```
//!
//! Every random stream is derived from `(seed, epoch, batch)`: initialisation from the seed, the shuffle and the
//! augmentation of a sample from (seed, epoch, index), the instance loss's sampling from (seed, epoch, batch) and
//! K-means from (seed, epoch). A checkpoint's position (epoch, next batch) is therefore the whole RNG state, and
//! a resumed run computes exactly what the uninterrupted run computes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{decay::WeightDecayConfig, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder as _};
use burn::store::ModuleSnapshot;
use burn::tensor::backend::AutodiffBackend;
use hst_data::batcher::epoch_batches;
use hst_data::cooccurrence::adjacency;
use hst_data::{BatchMode, HstBatcher, MultiLabelSource, NanPolicy};
use hst_transfer::{
    BatchLabels, Hst, HstConfig, HstLosses, PrototypeCollector, Prototypes, ScheduleStep,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointHeader, SavedPrototypes};
use crate::config::TrainConfig;
use crate::data::RunData;
use crate::error::TrainError;
use crate::host;
use crate::metrics::{MetricAccumulator, MultiLabelMetrics, PseudoLabelAccumulator};
use crate::report::{write_report, EpochRecord};
use crate::step_log::StepLog;

/// What the loop is doing, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The no-gradient pass over the training set that collects features for the prototypes.
    Prototypes,
    /// Training batches.
    Train,
    /// Evaluation on the test set.
    Eval,
}

/// Receives progress; the library itself never prints. The CLI draws progress bars from it.
pub trait TrainObserver {
    /// A phase of `epoch` starts with `batches` batches.
    fn phase_start(&mut self, _phase: Phase, _epoch: usize, _batches: usize) {}
    /// One more batch of the phase is done; `loss` is the training loss of that batch.
    fn batch_done(&mut self, _phase: Phase, _loss: Option<f64>) {}
    /// The phase ended.
    fn phase_end(&mut self, _phase: Phase) {}
    /// An epoch ended and was evaluated.
    fn epoch_done(&mut self, _log: &EpochLog) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {}

/// Everything logged for one epoch (one line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// Loss means, thresholds, mAP/OF1/CF1 and pseudo-label quality (what the plots show).
    #[serde(flatten)]
    pub record: EpochRecord,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// All test metrics.
    pub metrics: MultiLabelMetrics,
    /// Wall time of the epoch (prototypes + training + evaluation), seconds.
    pub seconds: f64,
    /// Training throughput, images per second (training batches only).
    pub train_images_per_second: f64,
}

/// The outcome of [`train`].
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Epochs completed (including those of earlier, resumed sessions).
    pub epochs_completed: usize,
    /// True if the run stopped early on request (Ctrl-C); its state is in `checkpoints/last.ckpt`.
    pub interrupted: bool,
    /// Metrics of the last evaluated epoch.
    pub last: Option<MultiLabelMetrics>,
    /// Best test mAP and its epoch (the reference's model selection).
    pub best: Option<(f64, usize)>,
    /// Wall time of this session, seconds.
    pub seconds: f64,
}

/// Options of a training session beyond the configuration.
#[derive(Clone, Default)]
pub struct TrainOptions {
    /// Continue from `<out>/checkpoints/last.ckpt`.
    pub resume: bool,
    /// Set to true (e.g. by a Ctrl-C handler) to save a checkpoint after the current batch and return.
    pub stop: Option<Arc<AtomicBool>>,
    /// Replace the run already in `out` (its checkpoints, metrics and report) instead of refusing.
    pub overwrite: bool,
}

/// Mix words into a 64-bit seed (SplitMix64's output function folded over the sequence).
pub fn derive_seed(parts: &[u64]) -> u64 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    parts.iter().fold(PHI, |z, &p| {
        hst_data::rng::mix(z.wrapping_add(p).wrapping_add(PHI))
    })
}

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

/// Write a run folder's `config.json` and `constants.json` (atomically), what `eval`/`predict` rebuild the
/// model from.
pub(crate) fn write_run_description(
    out: &Path,
    config: &TrainConfig,
    constants: &RunConstants,
) -> Result<(), TrainError> {
    checkpoint::write_atomic(&out.join("config.json"), config.to_json().as_bytes())?;
    checkpoint::write_atomic(
        &out.join("constants.json"),
        serde_json::to_string(constants)
            .expect("constants serialise")
            .as_bytes(),
    )
}

/// Build the model of a run, importing the pretrained trunk weights when configured.
pub fn build_model<B: Backend>(
    config: &TrainConfig,
    constants: &RunConstants,
    device: &B::Device,
) -> Result<Hst<B>, TrainError> {
    let classes = constants.classes.len();
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
    if let Some(path) = &config.pretrained {
        let frozen = model.trunk.frozen_stages();
        model.trunk = model
            .trunk
            .load_weights(path)
            .map_err(|e| TrainError::Config(format!("pretrained weights: {e}")))?
            .freeze(frozen);
        tracing::info!(path = %path.display(), "loaded pretrained trunk weights");
    }
    Ok(model)
}

/// Load a record into `model`, check that every tensor keeps the shape the configuration gives it (Burn's
/// records load any shape), and re-apply the trunk's freezing policy: a loaded parameter takes the
/// `require_grad` flag of the lazily initialised parameter it replaces, which loses the freeze.
fn reload<B: Backend>(
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

/// The dotted keys under `prefix` whose values differ between two JSON values.
fn changed_keys(
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    prefix: &str,
) -> Vec<String> {
    use serde_json::Value;
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| changed_keys(x.get(k), y.get(k), &format!("{prefix}.{k}")))
                .collect()
        }
        (x, y) if x == y => Vec::new(),
        _ => vec![prefix.to_string()],
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    host::read_f64(t.clone())[0]
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    host::read_f32(t)
}

/// The losses of a step as values of the inner backend (no autodiff graph kept alive).
fn inner_losses<B: AutodiffBackend>(l: &HstLosses<B>) -> HstLosses<B::InnerBackend> {
    let one = |t: &Tensor<B, 1>| t.clone().inner();
    let opt1 = |t: &Option<Tensor<B, 1>>| t.as_ref().map(one);
    let opt2 = |t: &Option<Tensor<B, 2>>| t.as_ref().map(|t| t.clone().inner());
    HstLosses {
        total: one(&l.total),
        partial_bce: one(&l.partial_bce),
        ist_bce: opt1(&l.ist_bce),
        cst_bce: opt1(&l.cst_bce),
        ist_asl: opt1(&l.ist_asl),
        instance: opt1(&l.instance),
        prototype: opt1(&l.prototype),
        dtl_ist: opt1(&l.dtl_ist),
        dtl_cst: opt1(&l.dtl_cst),
        ramp: l.ramp,
        ist_soft: opt2(&l.ist_soft),
        ist_targets: opt2(&l.ist_targets),
        cst_soft: opt2(&l.cst_soft),
        cst_targets: opt2(&l.cst_targets),
    }
}

/// What an epoch's log records of its training steps, gathered window by window from [`StepLog`] reads.
struct EpochSums {
    sums: BTreeMap<String, f64>,
    counted: usize,
    ist_quality: PseudoLabelAccumulator,
    cst_quality: PseudoLabelAccumulator,
    seen_ist: bool,
    seen_cst: bool,
}

impl EpochSums {
    fn new(classes: usize) -> Self {
        Self {
            sums: BTreeMap::new(),
            counted: 0,
            ist_quality: PseudoLabelAccumulator::new(classes),
            cst_quality: PseudoLabelAccumulator::new(classes),
            seen_ist: false,
            seen_cst: false,
        }
    }

    /// Read the window of `log` (if any step is pending), stop on a non-finite loss, and add it. Returns the
    /// window's mean total loss.
    fn read<B: Backend>(
        &mut self,
        log: &mut StepLog<B>,
        epoch: usize,
        failure: impl FnOnce() -> String,
    ) -> Result<Option<f64>, TrainError> {
        let Some(window) = log.read() else {
            return Ok(None);
        };
        let total = window.total();
        if !total.is_finite() {
            let checkpoint = failure();
            return Err(TrainError::NonFiniteLoss {
                value: total,
                epoch,
                first_batch: window.first_batch,
                batch: window.last_batch,
                terms: window.describe(),
                checkpoint,
            });
        }
        for (k, v) in &window.terms {
            *self.sums.entry(k.to_string()).or_default() += v;
        }
        self.counted += window.steps;
        if let Some(q) = &window.ist {
            self.ist_quality.add(q);
            self.seen_ist = true;
        }
        if let Some(q) = &window.cst {
            self.cst_quality.add(q);
            self.seen_cst = true;
        }
        Ok(Some(total / window.steps.max(1) as f64))
    }
}

fn save_prototypes<B: Backend>(p: &Prototypes<B>) -> SavedPrototypes {
    let [c, k, d] = p.centers.dims();
    SavedPrototypes {
        shape: [c, k, d],
        centers: to_vec(p.centers.clone()),
        valid: to_vec(p.valid.clone()),
    }
}

fn load_prototypes<B: Backend>(p: &SavedPrototypes, device: &B::Device) -> Prototypes<B> {
    let [c, k, d] = p.shape;
    Prototypes {
        centers: Tensor::from_data(TensorData::new(p.centers.clone(), [c, k, d]), device),
        valid: Tensor::from_data(TensorData::new(p.valid.clone(), [c, k]), device),
    }
}

/// Evaluation result of one pass over the test set.
pub struct Evaluation {
    /// The metrics.
    pub metrics: MultiLabelMetrics,
    /// Mean predicted pair co-occurrence probability `[pairs]` (IST), if the model has the IST head.
    pub mean_cooccurrence: Option<Vec<f64>>,
}

/// Evaluate `model` (inference backend) on `test` with the test transform.
pub fn evaluate<B: Backend>(
    model: &Hst<B>,
    test: &dyn MultiLabelSource,
    batcher: &HstBatcher,
    batch_size: usize,
    drop_last: bool,
    device: &B::Device,
    mut on_batch: impl FnMut(),
) -> Result<Evaluation, TrainError> {
    let classes = test.classes().len();
    let labels = test.full_labels();
    let mut acc = MetricAccumulator::new(classes);
    let mut cooc: Option<Vec<f64>> = None;
    let batches = epoch_batches(test.len(), batch_size, false, drop_last, 0, 0);
    for indices in &batches {
        let batch = batcher.batch::<B, _>(test, labels, indices, 0, device)?;
        let out = model.forward(batch.images);
        acc.push(&to_vec(out.logits), &to_vec(batch.full))?;
        if let Some(pairs) = out.cooccurrence {
            let sums = to_vec(burn::tensor::activation::sigmoid(pairs).sum_dim(0));
            let total = cooc.get_or_insert_with(|| vec![0.0; sums.len()]);
            for (t, s) in total.iter_mut().zip(sums) {
                *t += s as f64;
            }
        }
        on_batch();
    }
    let metrics = acc.finish();
    let n = metrics.images.max(1) as f64;
    Ok(Evaluation {
        metrics,
        mean_cooccurrence: cooc.map(|v| v.into_iter().map(|s| s / n).collect()),
    })
}

/// The `[classes, classes]` matrix of a `[pairs]` vector in the order (0,1),(0,2),…,(1,2),…, diagonal 1.
pub fn pairs_to_matrix(pairs: &[f64], classes: usize) -> Vec<f32> {
    let mut m = vec![0f32; classes * classes];
    let mut p = 0;
    for i in 0..classes {
        m[i * classes + i] = 1.0;
        for j in i + 1..classes {
            let v = pairs.get(p).copied().unwrap_or(f64::NAN) as f32;
            m[i * classes + j] = v;
            m[j * classes + i] = v;
            p += 1;
        }
    }
    m
}

/// The statistical co-occurrence of the labels: the fraction of images in which both i and j are present,
/// diagonal 1 (comparable with the mean image-specific matrix of IST).
pub fn statistical_cooccurrence(labels: &hst_data::LabelMatrix) -> Vec<f32> {
    let (n, c) = (labels.images(), labels.classes());
    let mut m = vec![0f32; c * c];
    for r in 0..n {
        let row = labels.row(r);
        for i in 0..c {
            if row[i] == 1 {
                for j in 0..c {
                    if row[j] == 1 && i != j {
                        m[i * c + j] += 1.0;
                    }
                }
            }
        }
    }
    for i in 0..c {
        for j in 0..c {
            m[i * c + j] = if i == j {
                1.0
            } else {
                m[i * c + j] / n.max(1) as f32
            };
        }
    }
    m
}

fn write_logs(dir: &Path, logs: &[EpochLog]) -> Result<(), TrainError> {
    let mut jsonl = String::new();
    for log in logs {
        jsonl.push_str(&serde_json::to_string(log).expect("logs serialise"));
        jsonl.push('\n');
    }
    checkpoint::write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    let mut names: Vec<String> = Vec::new();
    for log in logs {
        for k in log.record.losses.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    const COLUMNS: [&str; 20] = [
        "epoch",
        "lr",
        "map",
        "average_ap",
        "op",
        "or",
        "of1",
        "cp",
        "cr",
        "cf1",
        "top3_of1",
        "top3_cf1",
        "tau_ist",
        "tau_cst",
        "ist_pseudo_precision",
        "ist_pseudo_recall",
        "cst_pseudo_precision",
        "cst_pseudo_recall",
        "seconds",
        "train_images_per_second",
    ];
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(names.iter().map(|n| format!("loss_{n}")));
    csv.write_record(header).expect("writes to memory");
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for l in logs {
        let m = &l.metrics;
        let r = &l.record;
        let fields = [
            r.epoch.to_string(),
            l.lr.to_string(),
            m.map.to_string(),
            m.average_ap.to_string(),
            m.op.to_string(),
            m.or.to_string(),
            m.of1.to_string(),
            m.cp.to_string(),
            m.cr.to_string(),
            m.cf1.to_string(),
            m.top3.of1.to_string(),
            m.top3.cf1.to_string(),
            r.tau_ist.to_string(),
            r.tau_cst.to_string(),
            opt(r.ist_pseudo.as_ref().map(|q| q.precision)),
            opt(r.ist_pseudo.as_ref().map(|q| q.recall)),
            opt(r.cst_pseudo.as_ref().map(|q| q.precision)),
            opt(r.cst_pseudo.as_ref().map(|q| q.recall)),
            format!("{:.2}", l.seconds),
            format!("{:.2}", l.train_images_per_second),
        ];
        let losses = names.iter().map(|n| opt(r.losses.get(n).copied()));
        csv.write_record(fields.into_iter().chain(losses))
            .expect("writes to memory");
    }
    let csv = csv.into_inner().expect("writes to memory");
    checkpoint::write_atomic(&dir.join("metrics.csv"), &csv)
}

fn read_logs(dir: &Path) -> Result<Vec<EpochLog>, TrainError> {
    let path = dir.join("metrics.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// What `config` cannot train on `data`, found before any work or any file is written: a model with
/// fewer classes than it needs, an epoch of no step, an empty test set, a GGNN adjacency that would make
/// the first step NaN.
pub fn check_data(config: &TrainConfig, data: &RunData) -> Result<(), TrainError> {
    let classes = data.classes().len();
    let needed = if config.model.ablation.ist_enabled() {
        2
    } else {
        1
    };
    if classes < needed {
        return Err(TrainError::Config(format!(
            "the dataset has {classes} class(es); HST needs at least {needed} (IST learns class pairs; \
             model.ablation.ist=false trains a single class)"
        )));
    }
    let train = data.train.len();
    if train < config.batch_size {
        return Err(TrainError::Config(format!(
            "an epoch would have no training step: {train} training image(s), batch_size {} (the last \
             incomplete batch is dropped, as in the reference); lower batch_size or add images",
            config.batch_size
        )));
    }
    if data.test.is_empty() {
        return Err(TrainError::Config(
            "the test set is empty: evaluation (and the best checkpoint) needs test images".into(),
        ));
    }
    if !config.data.guard_adjacency_nan {
        let partial = data.partial.partial();
        let without: Vec<&str> = (0..classes)
            .filter(|&c| (0..partial.images()).all(|r| partial.row(r)[c] != 1))
            .map(|c| data.classes()[c].as_str())
            .collect();
        if !without.is_empty() {
            return Err(TrainError::Config(format!(
                "no training image has a known positive of {} class(es) ({}): their rows of the GGNN \
                 adjacency are 0/0 = NaN, which makes the first step's loss NaN (the reference does the \
                 same); set data.guard_adjacency_nan=true to use 0 for them",
                without.len(),
                without.join(", ")
            )));
        }
    }
    Ok(())
}

/// Train HST as `config` says on `data`, writing the run folder `out`.
///
/// # Errors
/// Data errors (naming the file), a checkpoint that does not fit, a non-finite loss (the last good checkpoint
/// is kept), I/O errors of the run folder.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &RunData,
    out: &Path,
    options: &TrainOptions,
    device: &B::Device,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    config.validate()?;
    check_data(config, data)?;
    if !options.resume && checkpoint::holds_a_run(out) && !options.overwrite {
        return Err(TrainError::RunExists {
            path: out.to_path_buf(),
        });
    }
    let config_json = serde_json::to_value(config).expect("configs serialise");
    let ckpt_dir = out.join("checkpoints");
    let last_path = ckpt_dir.join("last.ckpt");
    let best_path = ckpt_dir.join("best.ckpt");

    let classes = data.classes().len();
    let constants = RunConstants::of(config, data);
    let mut model = build_model::<B>(config, &constants, device)?;
    let opt = &config.optimizer;
    let mut optim = AdamConfig::new()
        .with_beta_1(opt.beta1)
        .with_beta_2(opt.beta2)
        .with_epsilon(opt.epsilon)
        .with_weight_decay(Some(WeightDecayConfig::new(opt.weight_decay as f32)))
        .init::<B, Hst<B>>();

    let mut start_epoch = 0;
    let mut start_batch = 0;
    let mut best: Option<(f64, usize)> = None;
    let mut prototypes: Option<Prototypes<B>> = None;
    let mut logs = Vec::new();
    if options.resume {
        if !last_path.is_file() {
            return Err(TrainError::Checkpoint {
                path: last_path.clone(),
                message: "no checkpoint to resume from: the run stopped before its first checkpoint (the end \
                          of the first epoch, or a Ctrl-C/SIGTERM save); start it again with --force"
                    .into(),
            });
        }
        let file = checkpoint::load(&last_path)?;
        if file.header.config != config_json {
            tracing::warn!(
                "resuming {} with a configuration that differs from the checkpoint's",
                last_path.display()
            );
        }
        let bad = |e: burn::record::RecorderError| TrainError::Checkpoint {
            path: last_path.clone(),
            message: format!("does not fit this model: {e:?}"),
        };
        if file.header.config.get("model") != config_json.get("model") {
            let changed = changed_keys(
                file.header.config.get("model"),
                config_json.get("model"),
                "model",
            );
            return Err(TrainError::Checkpoint {
                path: last_path.clone(),
                message: format!(
                    "--resume cannot change the model ({}); the run folder is unchanged. Start a new run \
                     (another --out) for another architecture",
                    changed.join(", ")
                ),
            });
        }
        let record = Bytes::default().load(file.model, device).map_err(bad)?;
        model = reload(model, record, &last_path)?;
        let record = Bytes::default().load(file.optimizer, device).map_err(bad)?;
        optim = optim.load_record(record);
        start_epoch = file.header.epoch;
        start_batch = file.header.next_batch;
        best = file.header.best_map;
        prototypes = file
            .header
            .prototypes
            .as_ref()
            .map(|p| load_prototypes(p, device));
        logs = read_logs(out)?;
        logs.retain(|l: &EpochLog| l.record.epoch < start_epoch);
        tracing::info!(
            epoch = start_epoch,
            batch = start_batch,
            "resumed from {}",
            last_path.display()
        );
    }

    // The run folder is touched only now: a resume that does not fit has changed nothing.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    if !options.resume && options.overwrite {
        for stale in ["checkpoints", "report"] {
            let dir = out.join(stale);
            if dir.is_dir() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        for stale in ["metrics.jsonl", "metrics.csv"] {
            let file = out.join(stale);
            if file.is_file() {
                std::fs::remove_file(&file).map_err(io(&file))?;
            }
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_run_description(out, config, &constants)?;

    // Write the model, optimizer and position to each of `paths` (the records are serialised once).
    let save = |paths: &[&Path],
                model: &Hst<B>,
                optim: &dyn Fn() -> Result<Vec<u8>, burn::record::RecorderError>,
                epoch: usize,
                next_batch: usize,
                best: Option<(f64, usize)>,
                prototypes: &Option<Prototypes<B>>|
     -> Result<(), TrainError> {
        let failed = |what: &str, e: burn::record::RecorderError| TrainError::Checkpoint {
            path: paths[0].to_path_buf(),
            message: format!("cannot record the {what}: {e:?}"),
        };
        let model_bytes = Bytes::default()
            .record(model.clone().into_record(), ())
            .map_err(|e| failed("model", e))?;
        let optim_bytes = optim().map_err(|e| failed("optimizer", e))?;
        let header = CheckpointHeader {
            epoch,
            next_batch,
            seed: config.seed,
            best_map: best,
            prototypes: prototypes.as_ref().map(save_prototypes),
            config: config_json.clone(),
        };
        paths
            .iter()
            .try_for_each(|path| checkpoint::save(path, &header, &model_bytes, &optim_bytes))
    };

    let transform = config.data.transform.clone().with_seed(config.seed).init();
    let train_batcher = HstBatcher::new(transform.clone(), BatchMode::Train)
        .with_skip_unreadable(config.data.skip_unreadable_images);
    let test_batcher = HstBatcher::new(transform, BatchMode::Test)
        .with_skip_unreadable(config.data.skip_unreadable_images);
    let partial = data.partial.partial();
    let train_set: &dyn MultiLabelSource = data.train.as_ref();
    let schedule = &config.model.schedule;
    let cst_on = config.model.ablation.cst_enabled();
    let stop = options.stop.clone().unwrap_or_default();
    let mut interrupted = false;
    let statistical = statistical_cooccurrence(data.test.full_labels());
    // (A NaN adjacency, the one known cause of a first-step NaN, is refused by `check_data`.)
    let failure_notes = || {
        if last_path.is_file() {
            format!(
                "The last good checkpoint is kept ({}).",
                last_path.display()
            )
        } else {
            "No checkpoint exists yet (the first is written at the end of the first epoch)."
                .to_string()
        }
    };

    for epoch in start_epoch..config.epochs {
        let epoch_start = Instant::now();
        let lr = opt.lr_at(epoch);
        let first_batch = if epoch == start_epoch { start_batch } else { 0 };

        // Prototypes: a no-gradient pass with the training augmentations at the start of due epochs.
        if cst_on && schedule.prototypes_due(epoch) && first_batch == 0 {
            let inner = model.valid();
            let batches = epoch_batches(
                train_set.len(),
                config.batch_size,
                true,
                true,
                config.seed ^ 0x50,
                epoch,
            );
            observer.phase_start(Phase::Prototypes, epoch, batches.len());
            let dim = model.sarl.feature_dim();
            let mut collector = PrototypeCollector::<B::InnerBackend>::new(classes, dim, device);
            for indices in &batches {
                let batch = train_batcher.batch::<B::InnerBackend, _>(
                    train_set,
                    partial,
                    indices,
                    epoch + 1_000_000,
                    device,
                )?;
                let semantic = inner.semantic_features(batch.images);
                collector
                    .push(semantic, batch.partial)
                    .map_err(|e| TrainError::Config(format!("prototypes: {e}")))?;
                observer.batch_done(Phase::Prototypes, None);
            }
            observer.phase_end(Phase::Prototypes);
            let kmeans = config
                .model
                .cst
                .kmeans
                .clone()
                .with_k(config.model.cst.prototypes)
                .with_seed(derive_seed(&[config.seed, epoch as u64, 0x4b4d]));
            let fitted = collector.fit(&kmeans);
            tracing::info!(epoch, counts = ?fitted.counts(), "prototypes recomputed");
            prototypes = Some(Prototypes {
                centers: Tensor::from_inner(fitted.centers),
                valid: Tensor::from_inner(fitted.valid),
            });
        }

        // Training.
        let batches = epoch_batches(
            train_set.len(),
            config.batch_size,
            true,
            true,
            config.seed,
            epoch,
        );
        let batches_per_epoch = batches.len();
        observer.phase_start(
            Phase::Train,
            epoch,
            batches_per_epoch - first_batch.min(batches_per_epoch),
        );
        let mut epoch_sums = EpochSums::new(classes);
        let mut step_log = StepLog::<B::InnerBackend>::default();
        let mut images_seen = 0usize;
        let train_clock = Instant::now();
        let mut failure: Option<TrainError> = None;
        std::thread::scope(|scope| {
            // Decode and augment the next batches on a worker thread while the model computes.
            let (tx, rx) = sync_channel(2);
            let batcher = &train_batcher;
            let batches = &batches;
            scope.spawn(move || {
                for (b, indices) in batches.iter().enumerate().skip(first_batch) {
                    let prepared = batcher.prepare(train_set, partial, indices, epoch);
                    if tx.send((b, prepared)).is_err() {
                        break;
                    }
                }
            });
            for (b, prepared) in rx {
                let result = (|| -> Result<(), TrainError> {
                    let prepared = prepared?;
                    let partial_host = prepared.partial.clone();
                    let full_host = prepared.full.clone();
                    let batch = prepared.into_batch::<B>(device);
                    let n = batch.indices.len();
                    let labels = BatchLabels::new(batch.partial.clone(), partial_host.clone())
                        .map_err(|e| TrainError::Config(format!("losses: {e}")))?;
                    let out = model.forward_train(batch.images);
                    let step = ScheduleStep {
                        epoch,
                        batch_index: b,
                        batches_per_epoch,
                    };
                    let losses = model
                        .losses(
                            &out,
                            labels,
                            prototypes.as_ref(),
                            step,
                            derive_seed(&[config.seed, epoch as u64, b as u64]),
                        )
                        .map_err(|e| TrainError::Config(format!("losses: {e}")))?;
                    // Everything this step logs stays on the device until the window's read.
                    step_log.push(
                        b,
                        &inner_losses(&losses),
                        (&partial_host, &batch.partial.inner()),
                        (&full_host, &batch.full.inner()),
                    );
                    let grads = GradientsParams::from_grads(losses.total.backward(), &model);
                    model = optim.step(lr, model.clone(), grads);
                    images_seen += n;
                    let loss = if step_log.pending() >= config.log_every {
                        epoch_sums.read(&mut step_log, epoch, failure_notes)?
                    } else {
                        None
                    };
                    observer.batch_done(Phase::Train, loss);
                    Ok(())
                })();
                if let Err(e) = result {
                    failure = Some(e);
                    break;
                }
                if stop.load(Ordering::SeqCst) {
                    // The pending window is read first: a non-finite loss in it must not be saved.
                    if let Err(e) = epoch_sums.read(&mut step_log, epoch, failure_notes) {
                        failure = Some(e);
                        break;
                    }
                    let optim_bytes = || Bytes::default().record(optim.to_record(), ());
                    if let Err(e) = save(
                        &[&last_path],
                        &model,
                        &optim_bytes,
                        epoch,
                        b + 1,
                        best,
                        &prototypes,
                    ) {
                        failure = Some(e);
                    }
                    interrupted = true;
                    tracing::info!(
                        epoch,
                        batch = b + 1,
                        "stopped on request; state saved to {}",
                        last_path.display()
                    );
                    break;
                }
            }
        });
        observer.phase_end(Phase::Train);
        if let Some(e) = failure {
            return Err(e);
        }
        if interrupted {
            break;
        }
        epoch_sums.read(&mut step_log, epoch, failure_notes)?;
        let train_seconds = train_clock.elapsed().as_secs_f64();

        // Evaluation on the whole test set.
        let inner = model.valid();
        let eval_batches = epoch_batches(
            data.test.len(),
            config.eval_batch_size,
            false,
            config.drop_last_test_batch,
            0,
            0,
        );
        observer.phase_start(Phase::Eval, epoch, eval_batches.len());
        let eval = evaluate(
            &inner,
            data.test.as_ref(),
            &test_batcher,
            config.eval_batch_size,
            config.drop_last_test_batch,
            device,
            || observer.batch_done(Phase::Eval, None),
        )?;
        observer.phase_end(Phase::Eval);

        let EpochSums {
            sums,
            counted,
            ist_quality,
            cst_quality,
            seen_ist,
            seen_cst,
        } = epoch_sums;
        let losses = sums
            .into_iter()
            .map(|(k, v)| (k, v / counted.max(1) as f64))
            .collect();
        let record = EpochRecord {
            epoch,
            losses,
            map: eval.metrics.map,
            of1: eval.metrics.of1,
            cf1: eval.metrics.cf1,
            tau_ist: scalar(&model.thresholds.ist.val()),
            tau_cst: scalar(&model.thresholds.cst.val()),
            ist_pseudo: seen_ist.then(|| ist_quality.finish()),
            cst_pseudo: seen_cst.then(|| cst_quality.finish()),
        };
        let log = EpochLog {
            record,
            lr,
            metrics: eval.metrics.clone(),
            seconds: epoch_start.elapsed().as_secs_f64(),
            train_images_per_second: images_seen as f64 / train_seconds.max(1e-9),
        };
        observer.epoch_done(&log);
        logs.push(log);
        write_logs(out, &logs)?;
        let records: Vec<EpochRecord> = logs.iter().map(|l| l.record.clone()).collect();
        let image_specific = eval
            .mean_cooccurrence
            .as_ref()
            .map(|pairs| pairs_to_matrix(pairs, classes));
        write_report(
            &out.join("report"),
            &records,
            image_specific
                .as_ref()
                .map(|m| (&statistical[..], &m[..], data.classes())),
        )?;

        // Checkpoints: best by test mAP (as the reference), then last.
        let optim_bytes = || Bytes::default().record(optim.to_record(), ());
        let map = eval.metrics.map;
        let improved = best.is_none_or(|(b, _)| map > b);
        if improved {
            best = Some((map, epoch));
        }
        let targets: &[&Path] = if improved {
            &[&best_path, &last_path]
        } else {
            &[&last_path]
        };
        save(
            targets,
            &model,
            &optim_bytes,
            epoch + 1,
            0,
            best,
            &prototypes,
        )?;
    }

    Ok(RunSummary {
        run_dir: out.to_path_buf(),
        epochs_completed: logs.len(),
        interrupted,
        last: logs.last().map(|l| l.metrics.clone()),
        best,
        seconds: started.elapsed().as_secs_f64(),
    })
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

#[cfg(test)]
mod tests {
    use super::derive_seed;

    /// The seed fold written out by hand (the form earlier runs used): the crate-backed
    /// [`derive_seed`] must give the same seeds, or every run's shuffles and prototypes change.
    fn derive_seed_by_hand(parts: &[u64]) -> u64 {
        let mut z: u64 = 0x9E37_79B9_7F4A_7C15;
        for &p in parts {
            z = z.wrapping_add(p).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
        }
        z
    }

    #[test]
    fn derive_seed_keeps_its_values() {
        for parts in [&[][..], &[0], &[42, 3, 0x4b4d], &[u64::MAX, 1, 2, 3]] {
            assert_eq!(derive_seed(parts), derive_seed_by_hand(parts), "{parts:?}");
        }
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
    }
}
