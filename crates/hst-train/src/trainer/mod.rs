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
//!
//! The parts: [`train`] here runs the epochs; `step` trains one epoch's batches, `prototypes` computes the
//! CST prototypes, `evaluation` evaluates on the test set, `model` builds the model and loads records, and
//! `run_folder` writes the run folder, saves checkpoints and resumes.

mod evaluation;
mod model;
mod prototypes;
mod run_folder;
mod step;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_data::batcher::epoch_batches;
use hst_data::{BatchMode, HstBatcher, MultiLabelSource};
use hst_transfer::Hst;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::RunData;
use crate::data_parallel::Peer;
use crate::error::TrainError;
use crate::host;
use crate::metrics::MultiLabelMetrics;
use crate::report::{write_report, EpochRecord};

pub use evaluation::{evaluate, pairs_to_matrix, statistical_cooccurrence, Evaluation};
pub use model::{adam, build_model, load_run_model, resolve_model_config, RunConstants};
pub use run_folder::read_logs;
pub(crate) use run_folder::write_run_description;

use run_folder::{Checkpoints, Position};
use step::{EpochInputs, EpochSums, EpochTraining};

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
    use hst_data::rng::{mix, PHI};
    parts
        .iter()
        .fold(PHI, |z, &p| mix(z.wrapping_add(p).wrapping_add(PHI)))
}

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
    session::<B>(
        config,
        data,
        out,
        options,
        &Peer::solo(device.clone()),
        observer,
    )
}

/// [`train`] as one peer of a data-parallel run (or the only one): every peer trains its share of each
/// batch on its replica; the main peer alone computes the prototypes (then shared), evaluates, writes
/// the run folder and reports to `observer`.
pub(crate) fn session<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &RunData,
    out: &Path,
    options: &TrainOptions,
    peer: &Peer<B::InnerBackend>,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let device = peer.device();
    let main = peer.is_main();
    config.validate()?;
    check_data(config, data)?;
    if main && !options.resume && checkpoint::holds_a_run(out) && !options.overwrite {
        return Err(TrainError::RunExists {
            path: out.to_path_buf(),
        });
    }
    let checkpoints = Checkpoints::new(out, config);
    let classes = data.classes().len();
    let constants = RunConstants::of(config, data);
    let mut model = build_model::<B>(config, &constants, device)?;
    let mut optim = model::adam::<B>(config);
    let mut position = Position::start();
    if options.resume {
        (model, optim, position) = checkpoints.resume(out, model, optim, device)?;
    }
    if peer.is_parallel() {
        // One broadcast of the main peer's weights; a resumed run's peers each loaded the same checkpoint.
        model = peer.broadcast_module::<B, _>(model)?;
        check_same_position(peer, &position)?;
    }
    // The run folder is touched only now: a resume that does not fit has changed nothing.
    if main {
        run_folder::prepare(
            out,
            config,
            &constants,
            !options.resume && options.overwrite,
        )?;
    }

    let transform = config.data.transform.clone().with_seed(config.seed).init();
    let train_batcher = HstBatcher::new(transform.clone(), BatchMode::Train)
        .with_skip_unreadable(config.data.skip_unreadable_images);
    let test_batcher = HstBatcher::new(transform, BatchMode::Test)
        .with_skip_unreadable(config.data.skip_unreadable_images);
    let partial = data.partial.partial();
    let train_set: &dyn MultiLabelSource = data.train.as_ref();
    let stop = options.stop.clone().unwrap_or_default();
    let statistical = statistical_cooccurrence(data.test.full_labels());
    // (A NaN adjacency, the one known cause of a first-step NaN, is refused by `check_data`.)
    let failure_note = || checkpoints.failure_note();
    let Position {
        epoch: start_epoch,
        next_batch: start_batch,
        mut best,
        mut prototypes,
        mut logs,
    } = position;
    let mut interrupted = false;

    for epoch in start_epoch..config.epochs {
        let epoch_start = Instant::now();
        let lr = config.optimizer.lr_at(epoch);
        let first_batch = if epoch == start_epoch { start_batch } else { 0 };

        // Prototypes: a no-gradient pass with the training augmentations at the start of due epochs, on the
        // main peer; the other peers receive them.
        if config.model.ablation.cst_enabled()
            && config.model.schedule.prototypes_due(epoch)
            && first_batch == 0
        {
            let computed = if main {
                Some(prototypes::compute(
                    &model,
                    config,
                    train_set,
                    partial,
                    &train_batcher,
                    epoch,
                    device,
                    observer,
                )?)
            } else {
                None
            };
            prototypes = Some(prototypes::share(
                peer,
                computed,
                [
                    classes,
                    config.model.cst.prototypes,
                    model.sarl.feature_dim(),
                ],
            )?);
        }

        // Training.
        let inputs = EpochInputs {
            config,
            train_set,
            partial,
            batcher: &train_batcher,
            prototypes: prototypes.as_ref(),
            epoch,
            first_batch,
            lr,
            stop: &stop,
            failure_note: &failure_note,
            peer,
        };
        let trained = step::train_epoch(&inputs, &mut model, &mut optim, device, observer)?;
        if let Some(next_batch) = trained.stopped_at {
            if main {
                checkpoints.save(
                    false,
                    &model,
                    &optim,
                    epoch,
                    next_batch,
                    best,
                    prototypes.as_ref(),
                )?;
                tracing::info!(
                    epoch,
                    batch = next_batch,
                    "stopped on request; state saved to {}",
                    checkpoints.last().display()
                );
            }
            interrupted = true;
            break;
        }
        if !main {
            // Evaluation, logs and checkpoints are the main peer's.
            continue;
        }

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

        let log = epoch_log(
            &model,
            epoch,
            lr,
            trained,
            eval.metrics.clone(),
            epoch_start,
        );
        observer.epoch_done(&log);
        logs.push(log);
        run_folder::write_logs(out, &logs)?;
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
        let map = eval.metrics.map;
        let improved = best.is_none_or(|(b, _)| map > b);
        if improved {
            best = Some((map, epoch));
        }
        checkpoints.save(
            improved,
            &model,
            &optim,
            epoch + 1,
            0,
            best,
            prototypes.as_ref(),
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

/// Refuse peers that would start from different places (a resumed run whose nodes hold different
/// checkpoints): the sum over peers of `(epoch, next batch, 1)` must be `world ×` this peer's.
fn check_same_position<B: AutodiffBackend>(
    peer: &Peer<B::InnerBackend>,
    position: &Position<B>,
) -> Result<(), TrainError> {
    let own = [position.epoch as f32, position.next_batch as f32, 1.0];
    let summed = peer.all_reduce(
        "start position",
        Tensor::<B::InnerBackend, 1>::from_floats(own, peer.device()),
        burn_collective::ReduceOperation::Sum,
    )?;
    let summed = host::read_f64(summed);
    let world = peer.world as f64;
    if summed[2] != world
        || summed[0] != world * own[0] as f64
        || summed[1] != world * own[1] as f64
    {
        return Err(TrainError::Config(format!(
            "the {} peers do not start from the same place: this one (rank {}) starts at epoch {}, batch {}; a \
             resumed run needs the same checkpoints/last.ckpt on every node",
            peer.world, peer.rank, position.epoch, position.next_batch
        )));
    }
    Ok(())
}

/// The log of an epoch: the loss means and pseudo-label quality of its steps, the thresholds `model` ends
/// it with, and the test metrics.
fn epoch_log<B: AutodiffBackend>(
    model: &Hst<B>,
    epoch: usize,
    lr: f64,
    trained: EpochTraining,
    metrics: MultiLabelMetrics,
    epoch_start: Instant,
) -> EpochLog {
    let EpochSums {
        sums,
        counted,
        ist_quality,
        cst_quality,
        seen_ist,
        seen_cst,
    } = trained.sums;
    let scalar = |t: Tensor<B, 1>| host::read_f64(t)[0];
    let record = EpochRecord {
        epoch,
        losses: sums
            .into_iter()
            .map(|(k, v)| (k, v / counted.max(1) as f64))
            .collect(),
        map: metrics.map,
        of1: metrics.of1,
        cf1: metrics.cf1,
        tau_ist: scalar(model.thresholds.ist.val()),
        tau_cst: scalar(model.thresholds.cst.val()),
        ist_pseudo: seen_ist.then(|| ist_quality.finish()),
        cst_pseudo: seen_cst.then(|| cst_quality.finish()),
    };
    EpochLog {
        record,
        lr,
        metrics,
        seconds: epoch_start.elapsed().as_secs_f64(),
        train_images_per_second: trained.images as f64 / trained.seconds.max(1e-9),
    }
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
