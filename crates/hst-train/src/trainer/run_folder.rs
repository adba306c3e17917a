//! The run folder: its description (`config.json`, `constants.json`), the epoch logs (`metrics.jsonl`,
//! `metrics.csv`) and the checkpoints — saving them, and resuming from `checkpoints/last.ckpt`.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder as _, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use hst_transfer::{Hst, Prototypes};

use crate::checkpoint::{self, CheckpointHeader, SavedPrototypes};
use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::host;

use super::model::{reload, RunConstants};
use super::EpochLog;

/// The recorder of model and optimizer records inside a checkpoint.
pub(super) type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

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

/// Make `out` ready for a session: with `replace`, remove an earlier run's checkpoints, report and metrics;
/// then create the folder and write its description.
pub(super) fn prepare(
    out: &Path,
    config: &TrainConfig,
    constants: &RunConstants,
    replace: bool,
) -> Result<(), TrainError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    if replace {
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
    write_run_description(out, config, constants)
}

/// Where a session starts: epoch and batch, the best mAP so far, the prototypes in use and the logs of the
/// epochs already done.
pub(super) struct Position<B: Backend> {
    /// The epoch to run next.
    pub epoch: usize,
    /// Its first batch (non-zero after an interrupted epoch).
    pub next_batch: usize,
    /// Best test mAP and its epoch.
    pub best: Option<(f64, usize)>,
    /// The CST prototypes of the current epoch.
    pub prototypes: Option<Prototypes<B>>,
    /// The logs of the completed epochs.
    pub logs: Vec<EpochLog>,
}

impl<B: Backend> Position<B> {
    /// A new run.
    pub fn start() -> Self {
        Self {
            epoch: 0,
            next_batch: 0,
            best: None,
            prototypes: None,
            logs: Vec::new(),
        }
    }
}

/// The checkpoints of a run folder (`checkpoints/last.ckpt`, `checkpoints/best.ckpt`).
pub(super) struct Checkpoints<'a> {
    config: &'a TrainConfig,
    config_json: serde_json::Value,
    last: PathBuf,
    best: PathBuf,
}

impl<'a> Checkpoints<'a> {
    /// The checkpoints of the run in `out` trained with `config`.
    pub fn new(out: &Path, config: &'a TrainConfig) -> Self {
        let dir = out.join("checkpoints");
        Self {
            config,
            config_json: serde_json::to_value(config).expect("configs serialise"),
            last: dir.join("last.ckpt"),
            best: dir.join("best.ckpt"),
        }
    }

    /// What a failure message says of the checkpoints: the last good one is kept, or none exists yet.
    pub fn failure_note(&self) -> String {
        if self.last.is_file() {
            format!(
                "The last good checkpoint is kept ({}).",
                self.last.display()
            )
        } else {
            "No checkpoint exists yet (the first is written at the end of the first epoch)."
                .to_string()
        }
    }

    /// The path of `last.ckpt`.
    pub fn last(&self) -> &Path {
        &self.last
    }

    /// Write the model, optimizer and position to `last.ckpt`, and to `best.ckpt` too with `also_best`
    /// (the records are serialised once; each file is written atomically).
    #[allow(clippy::too_many_arguments)]
    pub fn save<B: AutodiffBackend, O: Optimizer<Hst<B>, B>>(
        &self,
        also_best: bool,
        model: &Hst<B>,
        optim: &O,
        epoch: usize,
        next_batch: usize,
        best: Option<(f64, usize)>,
        prototypes: Option<&Prototypes<B>>,
    ) -> Result<(), TrainError> {
        let failed = |what: &str, e: RecorderError| TrainError::Checkpoint {
            path: self.last.clone(),
            message: format!("cannot record the {what}: {e:?}"),
        };
        let model_bytes = Bytes::default()
            .record(model.clone().into_record(), ())
            .map_err(|e| failed("model", e))?;
        let optim_bytes = Bytes::default()
            .record(optim.to_record(), ())
            .map_err(|e| failed("optimizer", e))?;
        let header = CheckpointHeader {
            epoch,
            next_batch,
            seed: self.config.seed,
            best_map: best,
            prototypes: prototypes.map(save_prototypes),
            config: self.config_json.clone(),
        };
        let paths: &[&Path] = if also_best {
            &[&self.best, &self.last]
        } else {
            &[&self.last]
        };
        paths
            .iter()
            .try_for_each(|path| checkpoint::save(path, &header, &model_bytes, &optim_bytes))
    }

    /// Continue from `last.ckpt`: the model's and the optimizer's records, the position and the logs of the
    /// completed epochs. Refuses a missing checkpoint and a changed model before anything is written.
    pub fn resume<B: AutodiffBackend, O: Optimizer<Hst<B>, B>>(
        &self,
        out: &Path,
        model: Hst<B>,
        optim: O,
        device: &B::Device,
    ) -> Result<(Hst<B>, O, Position<B>), TrainError> {
        let last = &self.last;
        if !last.is_file() {
            return Err(TrainError::Checkpoint {
                path: last.clone(),
                message: "no checkpoint to resume from: the run stopped before its first checkpoint (the end \
                          of the first epoch, or a Ctrl-C/SIGTERM save); start it again with --force"
                    .into(),
            });
        }
        let file = checkpoint::load(last)?;
        if file.header.config != self.config_json {
            tracing::warn!(
                "resuming {} with a configuration that differs from the checkpoint's",
                last.display()
            );
        }
        let bad = |e: RecorderError| TrainError::Checkpoint {
            path: last.clone(),
            message: format!("does not fit this model: {e:?}"),
        };
        if file.header.config.get("model") != self.config_json.get("model") {
            let changed = changed_keys(
                file.header.config.get("model"),
                self.config_json.get("model"),
                "model",
            );
            return Err(TrainError::Checkpoint {
                path: last.clone(),
                message: format!(
                    "--resume cannot change the model ({}); the run folder is unchanged. Start a new run \
                     (another --out) for another architecture",
                    changed.join(", ")
                ),
            });
        }
        let record = Bytes::default().load(file.model, device).map_err(bad)?;
        let model = reload(model, record, last)?;
        let record = Bytes::default().load(file.optimizer, device).map_err(bad)?;
        let optim = optim.load_record(record);
        let epoch = file.header.epoch;
        let mut logs = read_logs(out)?;
        logs.retain(|l: &EpochLog| l.record.epoch < epoch);
        let position = Position {
            epoch,
            next_batch: file.header.next_batch,
            best: file.header.best_map,
            prototypes: file
                .header
                .prototypes
                .as_ref()
                .map(|p| load_prototypes(p, device)),
            logs,
        };
        tracing::info!(
            epoch,
            batch = position.next_batch,
            "resumed from {}",
            last.display()
        );
        Ok((model, optim, position))
    }
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

fn save_prototypes<B: Backend>(p: &Prototypes<B>) -> SavedPrototypes {
    let [c, k, d] = p.centers.dims();
    SavedPrototypes {
        shape: [c, k, d],
        centers: host::read_f32(p.centers.clone()),
        valid: host::read_f32(p.valid.clone()),
    }
}

fn load_prototypes<B: Backend>(p: &SavedPrototypes, device: &B::Device) -> Prototypes<B> {
    let [c, k, d] = p.shape;
    Prototypes {
        centers: Tensor::from_data(TensorData::new(p.centers.clone(), [c, k, d]), device),
        valid: Tensor::from_data(TensorData::new(p.valid.clone(), [c, k]), device),
    }
}

/// Write `metrics.jsonl` (one [`EpochLog`] per line) and `metrics.csv` (the same, flat), atomically.
pub(super) fn write_logs(dir: &Path, logs: &[EpochLog]) -> Result<(), TrainError> {
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

/// The epoch logs of a run folder (`metrics.jsonl`, one [`EpochLog`] per line; none if the file does not
/// exist yet).
///
/// # Errors
/// An unreadable file, or a line that is not an epoch log (naming the file and line).
pub fn read_logs(dir: &Path) -> Result<Vec<EpochLog>, TrainError> {
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
