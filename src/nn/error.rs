//! Errors of the core: values, never panics. Each names what was wrong and what would be right.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum NnError {
    /// A number outside its range (a layer size of 0, a learning rate that is not > 0, ...).
    #[error("{0}")]
    InvalidValue(String),
    /// Shapes that do not fit: sample length, ragged samples, weights of the wrong shape.
    #[error("{0}")]
    ShapeMismatch(String),
    /// Class index out of range, a label row that is not a distribution, a mix of forms.
    #[error("{0}")]
    InvalidLabels(String),
    /// Over a size limit the caller set.
    #[error("{0}")]
    TooLarge(String),
    /// A forward or backward pass overflowed.
    #[error("{0}")]
    NonFinite(String),
}

pub type Result<T, E = NnError> = std::result::Result<T, E>;
