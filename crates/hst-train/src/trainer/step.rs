//! The training steps of an epoch: batches prepared on a worker thread, forward, losses, backward and the
//! optimizer step, with everything logged kept on the device and read once per `log_every` window.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_data::batcher::epoch_batches;
use hst_data::{HstBatcher, LabelMatrix, MultiLabelSource};
use hst_transfer::{BatchLabels, Hst, HstLosses, Prototypes, ScheduleStep};

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::metrics::PseudoLabelAccumulator;
use crate::step_log::StepLog;

use super::{derive_seed, Phase, TrainObserver};

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
pub(super) struct EpochSums {
    /// Each loss term summed over the epoch's steps.
    pub sums: BTreeMap<String, f64>,
    /// Steps summed.
    pub counted: usize,
    /// IST pseudo-label quality.
    pub ist_quality: PseudoLabelAccumulator,
    /// CST pseudo-label quality.
    pub cst_quality: PseudoLabelAccumulator,
    /// Whether any step produced IST pseudo labels.
    pub seen_ist: bool,
    /// Whether any step produced CST pseudo labels.
    pub seen_cst: bool,
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

/// What is fixed during an epoch's training steps.
pub(super) struct EpochInputs<'a, B: AutodiffBackend> {
    /// The run configuration.
    pub config: &'a TrainConfig,
    /// The training set.
    pub train_set: &'a dyn MultiLabelSource,
    /// Its partial labels.
    pub partial: &'a LabelMatrix,
    /// The training batcher (augmentations on).
    pub batcher: &'a HstBatcher,
    /// The epoch's CST prototypes.
    pub prototypes: Option<&'a Prototypes<B>>,
    /// The epoch.
    pub epoch: usize,
    /// Its first batch (non-zero after an interrupted epoch).
    pub first_batch: usize,
    /// Its learning rate.
    pub lr: f64,
    /// Set to stop after the current batch.
    pub stop: &'a AtomicBool,
    /// What a failure says about the checkpoints.
    pub failure_note: &'a dyn Fn() -> String,
}

/// Why the batch loop ended early: a stop request after a batch (with the next batch), or a failure.
enum Interrupt {
    Stop(usize),
    Failed(TrainError),
}

impl From<TrainError> for Interrupt {
    fn from(e: TrainError) -> Self {
        Self::Failed(e)
    }
}

impl From<hst_data::DataError> for Interrupt {
    fn from(e: hst_data::DataError) -> Self {
        Self::Failed(e.into())
    }
}

/// The outcome of an epoch's training steps.
pub(super) struct EpochTraining {
    /// The logged sums (every window read).
    pub sums: EpochSums,
    /// Images trained on.
    pub images: usize,
    /// Wall time of the steps, seconds.
    pub seconds: f64,
    /// `Some(next batch)` if the epoch stopped early on request.
    pub stopped_at: Option<usize>,
}

/// Train `model` for one epoch (from `inputs.first_batch`), stopping early when `inputs.stop` is set.
///
/// # Errors
/// A data error, a non-finite loss in a window (nothing of the window is kept), a loss the model refuses.
pub(super) fn train_epoch<B: AutodiffBackend, O: Optimizer<Hst<B>, B>>(
    inputs: &EpochInputs<'_, B>,
    model: &mut Hst<B>,
    optim: &mut O,
    device: &B::Device,
    observer: &mut dyn TrainObserver,
) -> Result<EpochTraining, TrainError> {
    let EpochInputs {
        config,
        train_set,
        partial,
        batcher,
        prototypes,
        epoch,
        first_batch,
        lr,
        stop,
        failure_note,
    } = *inputs;
    let classes = train_set.classes().len();
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
    let mut sums = EpochSums::new(classes);
    let mut step_log = StepLog::<B::InnerBackend>::default();
    let mut images = 0usize;
    let clock = Instant::now();
    // The batcher decodes and augments the next batches on a worker thread while the model computes.
    let mut b = first_batch;
    let outcome = batcher.for_each_prepared(
        train_set,
        partial,
        &batches[first_batch.min(batches_per_epoch)..],
        epoch,
        2,
        |prepared| -> Result<(), Interrupt> {
            let partial_host = prepared.partial.clone();
            let full_host = prepared.full.clone();
            let batch = prepared.into_batch::<B>(device);
            let n = batch.indices.len();
            let labels = BatchLabels::new(batch.partial.clone(), partial_host.clone()).map_err(
                |source| TrainError::Model {
                    what: "batch labels",
                    source,
                },
            )?;
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
                    prototypes,
                    step,
                    derive_seed(&[config.seed, epoch as u64, b as u64]),
                )
                .map_err(|source| TrainError::Model {
                    what: "losses",
                    source,
                })?;
            // Everything this step logs stays on the device until the window's read.
            step_log.push(
                b,
                &inner_losses(&losses),
                (&partial_host, &batch.partial.inner()),
                (&full_host, &batch.full.inner()),
            );
            let grads = GradientsParams::from_grads(losses.total.backward(), &*model);
            *model = optim.step(lr, model.clone(), grads);
            images += n;
            let loss = if step_log.pending() >= config.log_every {
                sums.read(&mut step_log, epoch, failure_note)?
            } else {
                None
            };
            observer.batch_done(Phase::Train, loss);
            b += 1;
            if stop.load(Ordering::SeqCst) {
                return Err(Interrupt::Stop(b));
            }
            Ok(())
        },
    );
    observer.phase_end(Phase::Train);
    let stopped_at = match outcome {
        Ok(()) => None,
        Err(Interrupt::Stop(next_batch)) => Some(next_batch),
        Err(Interrupt::Failed(e)) => return Err(e),
    };
    // The pending window is read before anything is saved: a non-finite loss in it must not be kept.
    sums.read(&mut step_log, epoch, failure_note)?;
    Ok(EpochTraining {
        sums,
        images,
        seconds: clock.elapsed().as_secs_f64(),
        stopped_at,
    })
}
