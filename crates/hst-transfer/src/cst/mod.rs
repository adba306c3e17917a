//! CST (cross-image semantic transfer): class prototypes by K-means over the known positives' semantic
//! features, and the similarity of a feature to its class's prototypes.

pub mod kmeans;
pub mod prototypes;
pub mod similarity;

pub use kmeans::{kmeans, KMeansConfig, KMeansFit};
pub use prototypes::{PrototypeCollector, Prototypes};
pub use similarity::prototype_similarity;

use burn::prelude::*;

use crate::loss::instance::InstanceContrastiveLossConfig;
use crate::loss::prototype::PrototypeLossSign;

/// CST settings (part of [`crate::HstConfig`]).
#[derive(Config, Debug)]
pub struct CstConfig {
    /// Prototypes per class (K-means K; reference `prototypeNumber`, set to 10 by scripts/HST.sh). Default: 10.
    #[config(default = 10)]
    pub prototypes: usize,
    /// K-means settings other than K (max_iter 300, tol 1e-4, seed 0).
    #[config(default = "KMeansConfig::new()")]
    pub kmeans: KMeansConfig,
    /// Cosine-similarity eps of the prototype similarity. Default: 1e-9.
    #[config(default = 1e-9)]
    pub eps: f64,
    /// Sign convention of the prototype loss. Default: the reference's.
    #[config(default = "PrototypeLossSign::Reference")]
    pub prototype_loss_sign: PrototypeLossSign,
    /// The instance contrastive loss.
    #[config(default = "InstanceContrastiveLossConfig::new()")]
    pub instance: InstanceContrastiveLossConfig,
}

impl CstConfig {
    /// The K-means settings with `k = self.prototypes`.
    pub fn kmeans_config(&self) -> KMeansConfig {
        self.kmeans.clone().with_k(self.prototypes)
    }
}
