//! Errors of the transfer crate.

/// Everything that can go wrong in the transfer modules with caller-supplied data.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A tensor passed in has the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A label tensor holds a value outside {-1, 0, 1}.
    #[error("{what}: label value {value} at row {row}, column {column} is not one of -1, 0, 1")]
    LabelValue {
        /// Which argument.
        what: &'static str,
        /// Row (image) index.
        row: usize,
        /// Column (class) index.
        column: usize,
        /// The offending value.
        value: f32,
    },
}
