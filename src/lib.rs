//! # HST — Heterogeneous Semantic Transfer on Burn
//!
//! Multi-label image recognition with **partial labels** (Chen et al., IJCV 2024): a semantic-aware
//! backbone (SARL) is trained on the known labels while two transfer modules — IST (image-specific label
//! co-occurrence) and CST (category prototypes across images) — fill the unknown labels with pseudo labels
//! selected by learnable thresholds (DTL).
//!
//! This facade re-exports the workspace crates:
//! - [`backbone`] (`hst-backbone`): CNN trunks, weight import, freezing, SARL.
//! - [`transfer`] (`hst-transfer`): IST, CST, DTL, losses and the composed [`transfer::hst::Hst`] model.
//! - [`data`] (`hst-data`): tri-state labels, the partial-label protocol, dataset readers, the embedded dataset.
//! - [`train`] (`hst-train`): training loop, metrics, checkpoints, run reports.
//!
//! [`backend`] maps a backend name chosen at run time to a concrete Burn backend; it is the only module that
//! names one. The `cli` feature (default) adds the command line's modules (`bench`, `warmup`, `profile`,
//! `progress`) and the `hst` binary; `default-features = false, features = ["flex"]` leaves them and their
//! crates out.

pub mod backend;
#[cfg(feature = "cli")]
pub mod bench;
pub mod gpu_runtime;
pub mod jobs;
#[cfg(feature = "cli")]
pub mod profile;
#[cfg(feature = "cli")]
pub mod progress;
#[cfg(feature = "cli")]
pub mod warmup;

pub use hst_backbone as backbone;
pub use hst_data as data;
pub use hst_train as train;
pub use hst_transfer as transfer;

pub use burn;
