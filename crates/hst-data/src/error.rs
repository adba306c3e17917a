//! The error type of `hst-data`.
//!
//! Every variant that comes from a file names that file, and where it makes sense the line, the
//! JSON key or the XML element that is wrong.

use std::path::PathBuf;

/// Errors of the data crate: bad files, bad labels, bad images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file is malformed at a given place (`location` is e.g. `line 12`, `images[3].file_name`
    /// or `<object>`; it may be empty when the whole file is at fault).
    #[error("{}{}{location}: {message}", path.display(), if location.is_empty() { "" } else { ":" })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// A JSON file could not be parsed (the source names line and column).
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// An XML file could not be parsed (the source names line and column).
    #[error("{}: invalid XML: {source}", path.display())]
    Xml {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: roxmltree::Error,
    },

    /// A class name that is not among the dataset's classes.
    #[error("{}{}{location}: unknown class name {name:?}", path.display(), if location.is_empty() { "" } else { ":" })]
    UnknownClass {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        location: String,
        /// The unknown name.
        name: String,
    },

    /// A row with a number of labels different from the number of classes.
    #[error("{}:{location}: {found} labels, but there are {expected} classes", path.display())]
    LabelCount {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        location: String,
        /// Number of classes.
        expected: usize,
        /// Number of labels found.
        found: usize,
    },

    /// An image listed by an annotation file does not exist.
    #[error("image {} (listed in {}) does not exist", image.display(), listed_in.display())]
    MissingImage {
        /// The missing image.
        image: PathBuf,
        /// The file that lists it.
        listed_in: PathBuf,
    },

    /// An image could not be read or decoded.
    #[error("cannot decode image {}: {source}", path.display())]
    Image {
        /// The image file (or a description of an embedded image).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },

    /// Class names without a word vector.
    #[error("no word vector for {words:?} (needed by classes {classes:?})")]
    MissingWords {
        /// Missing words.
        words: Vec<String>,
        /// Class names that need them.
        classes: Vec<String>,
    },

    /// Arrays whose shapes do not fit together (e.g. partial and full labels of different sizes).
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// A label value outside {-1, 0, 1}.
    #[error("invalid label value {0} (expected -1, 0 or 1)")]
    LabelValue(i64),

    /// Every image of a batch was skipped.
    #[error("every image of the batch was skipped (indices {0:?})")]
    EmptyBatch(Vec<usize>),
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`DataError::Invalid`] for `path` at `location`.
    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            path: path.into(),
            location: location.into(),
            message: message.into(),
        }
    }

    /// The error of the `csv` crate reading or writing `path`: [`DataError::Io`] for an I/O failure, else
    /// [`DataError::Invalid`] at the record's line (when the reader knows it).
    pub(crate) fn csv(path: impl Into<PathBuf>, error: csv::Error) -> Self {
        let line = error.position().map(|p| format!("line {}", p.line()));
        let message = error.to_string();
        match error.into_kind() {
            csv::ErrorKind::Io(source) => Self::io(path, source),
            _ => Self::invalid(path, line.unwrap_or_default(), message),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
