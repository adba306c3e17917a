//! Errors of the training crate.

use std::path::PathBuf;

/// Everything that can go wrong while training, evaluating or reporting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A flat `[rows, classes]` buffer whose length does not fit the stated shape.
    #[error("{what}: expected a row-major [rows, {classes}] buffer, got {len} values")]
    BadShape {
        /// Which input (`"scores"`, `"targets"`, …).
        what: &'static str,
        /// Length of the buffer.
        len: usize,
        /// Stated number of classes.
        classes: usize,
    },
    /// Two buffers that must describe the same matrix disagree in size.
    #[error("{what}: {left_name} has {left} values but {right_name} has {right}")]
    LengthMismatch {
        /// Which computation.
        what: &'static str,
        /// Name of the first buffer.
        left_name: &'static str,
        /// Its length.
        left: usize,
        /// Name of the second buffer.
        right_name: &'static str,
        /// Its length.
        right: usize,
    },
    /// A file or directory of the run report could not be created or written.
    #[error("report: cannot write {path}: {source}")]
    ReportIo {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Drawing or encoding a plot failed.
    #[error("report: cannot draw {path}: {message}")]
    Plot {
        /// The plot that failed.
        path: PathBuf,
        /// What the plotting or encoding library said.
        message: String,
    },
    /// Inputs of the run report are inconsistent (e.g. a co-occurrence matrix that is not `[C, C]`).
    #[error("report: {0}")]
    ReportInput(String),
    /// Reading or writing a file of the run failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is unreadable or does not fit the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A configuration file or override is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The loss became NaN or infinite in a window of steps (found at the window's read); nothing of the
    /// failed window is saved.
    #[error("the loss became {value} in epoch {epoch}, batches {first_batch}..={batch} (window means: {terms}); stopped. {checkpoint}")]
    NonFiniteLoss {
        /// The offending summed total loss of the window.
        value: f64,
        /// Epoch of the failure.
        epoch: usize,
        /// First batch of the window in which it happened.
        first_batch: usize,
        /// Last batch of that window.
        batch: usize,
        /// The separate loss terms' window means, for diagnosis.
        terms: String,
        /// Where the last good checkpoint is, or that there is none yet.
        checkpoint: String,
    },
    /// A run folder already holds a run, which is never overwritten unasked.
    #[error("{path} already holds a run (config.json or checkpoints/); choose another folder, continue it (--resume) or replace it (--force)")]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },
    /// A weight or reference checkpoint could not be read or does not fit the model.
    #[error(transparent)]
    Weights(#[from] hst_backbone::BackboneError),
    /// The model refused what the loop passed it (a shape or label value the transfer modules check).
    #[error("{what}: {source}")]
    Model {
        /// The computation (`"losses"`, `"prototypes"`, `"batch labels"`).
        what: &'static str,
        /// What the transfer crate reported.
        #[source]
        source: hst_transfer::TransferError,
    },
    /// A collective operation of data-parallel training failed: a peer stopped, crashed or cannot be
    /// reached, or the peers do not run the same thing.
    #[error("data-parallel peer {peer}, {what}: {message}")]
    Collective {
        /// The operation (`"gradient all-reduce"`, `"joining the collective"`, …).
        what: &'static str,
        /// The rank of the peer that reports it.
        peer: usize,
        /// What happened.
        message: String,
    },
    /// A data error (reading a dataset or image).
    #[error(transparent)]
    Data(#[from] hst_data::DataError),
}
