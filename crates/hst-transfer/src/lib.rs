//! HST's transfer modules on top of the SARL backbone: IST (image-specific co-occurrence), CST (class
//! prototypes), DTL (learnable thresholds), the losses, and the composed [`Hst`] model.
//!
//! Data flow: [`Hst::forward`] gives the logits `[batch, classes]`, the pair co-occurrence logits
//! `[batch, pairs]` of the [`IstHead`] and the semantic features `[batch, classes, dim]`. A
//! [`PrototypeCollector`] turns the known positives' features into [`Prototypes`] (at epochs 5, 10, 15).
//! [`Hst::losses`] builds the pseudo labels ([`pseudo_labels`]) with the [`Thresholds`] and sums the scheduled
//! losses ([`loss`]).

pub mod batch_labels;
pub mod cosine;
pub mod cst;
pub mod dtl;
pub mod error;
pub mod hst;
pub mod ist;
pub mod loss;
pub mod pairs;
pub mod pseudo_labels;
pub mod reference;

pub use batch_labels::BatchLabels;
pub use cst::{
    kmeans, prototype_similarity, CstConfig, KMeansConfig, KMeansFit, PrototypeCollector,
    Prototypes,
};
pub use dtl::{Thresholds, ThresholdsConfig};
pub use error::TransferError;
pub use hst::{
    AblationConfig, Hst, HstConfig, HstLosses, HstObjective, HstOutput, LossWeights,
    ScheduleConfig, ScheduleStep,
};
pub use ist::{cooccurrence_targets, IstConfig, IstHead, IstHeadConfig};
