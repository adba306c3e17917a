//! The CST prototypes of an epoch: a no-gradient pass over the training set with the training augmentations,
//! the semantic features of each known positive collected per class, then K-means per class.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use hst_data::batcher::epoch_batches;
use hst_data::{HstBatcher, LabelMatrix, MultiLabelSource};
use hst_transfer::{Hst, PrototypeCollector, Prototypes};

use crate::config::TrainConfig;
use crate::data_parallel::Peer;
use crate::error::TrainError;

use super::{derive_seed, Phase, TrainObserver};

/// The salt of the prototype pass's shuffle (`seed ^ SHUFFLE_SALT`), as earlier runs used it.
const SHUFFLE_SALT: u64 = 0x50;
/// The last word of the K-means seed `(seed, epoch, KMEANS_SALT)`.
const KMEANS_SALT: u64 = 0x4b4d;
/// Offset of the prototype pass's augmentation epoch, so that it never repeats a training epoch's draws.
const AUGMENTATION_EPOCH_OFFSET: usize = 1_000_000;

/// The prototypes of `epoch` from `model`'s semantic features on the training set (`partial` labels).
///
/// # Errors
/// A data error, or features and labels that do not fit each other.
#[allow(clippy::too_many_arguments)]
pub(super) fn compute<B: AutodiffBackend>(
    model: &Hst<B>,
    config: &TrainConfig,
    train_set: &dyn MultiLabelSource,
    partial: &LabelMatrix,
    batcher: &HstBatcher,
    epoch: usize,
    device: &B::Device,
    observer: &mut dyn TrainObserver,
) -> Result<Prototypes<B>, TrainError> {
    let inner = model.valid();
    let batches = epoch_batches(
        train_set.len(),
        config.batch_size,
        true,
        true,
        config.seed ^ SHUFFLE_SALT,
        epoch,
    );
    observer.phase_start(Phase::Prototypes, epoch, batches.len());
    let classes = train_set.classes().len();
    let dim = model.sarl.feature_dim();
    let mut collector = PrototypeCollector::<B::InnerBackend>::new(classes, dim, device);
    for indices in &batches {
        let batch = batcher.batch::<B::InnerBackend, _>(
            train_set,
            partial,
            indices,
            epoch + AUGMENTATION_EPOCH_OFFSET,
            device,
        )?;
        let semantic = inner.semantic_features(batch.images);
        collector
            .push(semantic, batch.partial)
            .map_err(|source| TrainError::Model {
                what: "prototypes",
                source,
            })?;
        observer.batch_done(Phase::Prototypes, None);
    }
    observer.phase_end(Phase::Prototypes);
    let kmeans = config
        .model
        .cst
        .kmeans
        .clone()
        .with_k(config.model.cst.prototypes)
        .with_seed(derive_seed(&[config.seed, epoch as u64, KMEANS_SALT]));
    let fitted = collector.fit(&kmeans);
    tracing::info!(epoch, counts = ?fitted.counts(), "prototypes recomputed");
    Ok(Prototypes {
        centers: Tensor::from_inner(fitted.centers),
        valid: Tensor::from_inner(fitted.valid),
    })
}

/// The main peer's prototypes on every peer: `computed` is `Some` on the main peer only (and on a peer that
/// is alone); `dims` is `[classes, k, dim]`, known to every peer from the configuration.
pub(super) fn share<B: AutodiffBackend>(
    peer: &Peer<B::InnerBackend>,
    computed: Option<Prototypes<B>>,
    dims: [usize; 3],
) -> Result<Prototypes<B>, TrainError> {
    if !peer.is_parallel() {
        return Ok(computed.expect("a peer alone computes its prototypes"));
    }
    let [classes, k, dim] = dims;
    let device = peer.device();
    let (centers, valid) = match computed {
        Some(p) => (p.centers.inner(), p.valid.inner()),
        None => (
            Tensor::zeros([classes, k, dim], device),
            Tensor::zeros([classes, k], device),
        ),
    };
    Ok(Prototypes {
        centers: Tensor::from_inner(peer.broadcast("prototype broadcast", centers)?),
        valid: Tensor::from_inner(peer.broadcast("prototype broadcast", valid)?),
    })
}
