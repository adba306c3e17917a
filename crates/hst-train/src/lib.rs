//! Training, evaluation and reporting for HST.
//!
//! - [`config`]: the run configuration ([`TrainConfig`]) with the reference recipe and presets;
//! - [`data`]: datasets, partial labels and word vectors of a run;
//! - [`data_parallel`]: data-parallel training on burn-collective (several devices, several machines);
//! - [`trainer`]: the training loop ([`trainer::train`]), evaluation, prototypes, checkpoints, resume;
//! - [`metrics`]: mAP and the F1 family exactly as the reference computes them, pseudo-label quality;
//! - [`step_log`]: loss terms and pseudo-label counts summed on the device, read every `log_every` steps;
//! - [`host`]: the counted device-to-host reads of the training loop;
//! - [`checkpoint`]: atomic single-file checkpoints;
//! - [`import`]: the authors' HST checkpoints as run folders;
//! - [`report`]: PNG plots of a run.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod data_parallel;
pub mod error;
pub mod host;
pub mod import;
pub mod metrics;
pub mod report;
pub mod step_log;
pub mod trainer;

pub use config::TrainConfig;
pub use data_parallel::{train_data_parallel, Cluster, DataParallel};
pub use error::TrainError;
pub use trainer::{train, EpochLog, Phase, RunSummary, TrainObserver, TrainOptions};
