//! Errors of the backbone crate.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while building a trunk or importing weights.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The weight file's extension names no format we read.
    #[error("weight file {path}: unsupported extension (expected .pth, .pt or .safetensors)")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The weight file could not be opened or parsed.
    #[error("cannot read weight file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        message: String,
    },
    /// A floating-point tensor in the file is not float32 (the trunks hold float32 parameters).
    #[error("weight file {path}: tensor '{key}' has dtype {dtype}, expected F32")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's key in the file.
        key: String,
        /// Its dtype, as burn names it.
        dtype: String,
    },
    /// The file's tensors do not fit the model: keys missing from the file, keys the model does
    /// not have, or tensors of the wrong shape. Keys are named as the file names them.
    #[error("weight file {path} does not fit the {layout} model: {mismatch}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The key layout the file was read with (e.g. "torchvision ResNet").
        layout: &'static str,
        /// What does not fit.
        mismatch: Box<KeyMismatch>,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The keys of a weight file that do not fit a model (file-side names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyMismatch {
    /// Keys the model needs that the file lacks.
    pub missing: Vec<String>,
    /// Keys in the file the model has no place for.
    pub unexpected: Vec<String>,
    /// Tensors whose shape differs: key, shape in the model, shape in the file.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Other per-tensor failures (unreadable data, dtype), already formatted with their key.
    pub other: Vec<String>,
}

impl KeyMismatch {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.other.is_empty()
    }
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing key(s) [{}]",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected key(s) [{}]",
                self.unexpected.len(),
                self.unexpected.join(", ")
            ));
        }
        if !self.wrong_shape.is_empty() {
            let shapes: Vec<String> = self
                .wrong_shape
                .iter()
                .map(|(key, model, file)| format!("{key}: model {model:?}, file {file:?}"))
                .collect();
            parts.push(format!(
                "{} wrong shape(s) [{}]",
                shapes.len(),
                shapes.join("; ")
            ));
        }
        if !self.other.is_empty() {
            parts.push(format!(
                "{} other error(s) [{}]",
                self.other.len(),
                self.other.join("; ")
            ));
        }
        write!(f, "{}", parts.join("; "))
    }
}
