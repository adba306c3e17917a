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

use burn_collective::ReduceOperation;

use crate::config::TrainConfig;
use crate::data_parallel::Peer;
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

    /// Read the window of `log` (if any step is pending) — summed over all peers when `peer` has others —,
    /// stop on a non-finite loss, and add it. Returns the window's mean total loss and whether a peer asked
    /// to stop (`stop` is this peer's request).
    fn read<B: Backend>(
        &mut self,
        log: &mut StepLog<B>,
        epoch: usize,
        peer: &Peer<B>,
        stop: bool,
        failure: impl FnOnce() -> String,
    ) -> Result<(Option<f64>, bool), TrainError> {
        let (window, stop) = if peer.is_parallel() {
            match log.read_across(stop, |v| {
                peer.all_reduce("log window", v, ReduceOperation::Sum)
            })? {
                Some(read) => read,
                None => return Ok((None, stop)),
            }
        } else {
            match log.read() {
                Some(window) => (window, stop),
                None => return Ok((None, stop)),
            }
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
        Ok((Some(total / window.steps.max(1) as f64), stop))
    }
}

/// The seed of a step's instance-loss sampling: `(seed, epoch, batch)`, and the peer's rank for the other
/// peers of a data-parallel run (their shares are other images).
fn step_seed<B: Backend>(seed: u64, epoch: usize, batch: usize, peer: &Peer<B>) -> u64 {
    if peer.rank == 0 {
        derive_seed(&[seed, epoch as u64, batch as u64])
    } else {
        derive_seed(&[seed, epoch as u64, batch as u64, peer.rank as u64])
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
    /// This peer (the only one when training is not data-parallel).
    pub peer: &'a Peer<B::InnerBackend>,
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
        peer,
    } = *inputs;
    let classes = train_set.classes().len();
    let mut batches = epoch_batches(
        train_set.len(),
        config.batch_size,
        true,
        true,
        config.seed,
        epoch,
    );
    // Data-parallel: every peer takes its share of each batch, in rank order.
    if peer.is_parallel() {
        let share = config.batch_size / peer.world;
        let range = peer.rank * share..(peer.rank + 1) * share;
        for batch in &mut batches {
            *batch = batch[range.clone()].to_vec();
        }
    }
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
                    step_seed(config.seed, epoch, b, peer),
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
            let grads = peer.mean_gradients::<B, _>(grads, &*model)?;
            *model = optim.step(lr, model.clone(), grads);
            images += n * peer.world;
            // Data-parallel peers learn of a stop request at a window read, so that all stop after the same
            // batch; a peer alone stops after any batch.
            let (loss, stop_read) = if step_log.pending() >= config.log_every {
                let requested = stop.load(Ordering::SeqCst);
                sums.read(&mut step_log, epoch, peer, requested, failure_note)?
            } else {
                (None, false)
            };
            observer.batch_done(Phase::Train, loss);
            b += 1;
            let stopping = if peer.is_parallel() {
                stop_read
            } else {
                stop.load(Ordering::SeqCst)
            };
            if stopping {
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
    sums.read(&mut step_log, epoch, peer, false, failure_note)?;
    Ok(EpochTraining {
        sums,
        images,
        seconds: clock.elapsed().as_secs_f64(),
        stopped_at,
    })
}
