//! The error of parsing a typed value (duration, size) from its text.

/// Why a duration or size could not be parsed. The loader turns these into
/// [`Problem`](crate::Problem)s with a location; on their own they name the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseValueError {
    #[error(
        "cannot parse {0:?} as a duration (write a number and a unit, like \"500ms\", \"30s\", \"1h30m\" or \"2d\")"
    )]
    InvalidDuration(String),
    #[error("a duration cannot be negative, found {0:?}")]
    NegativeDuration(String),
    #[error("duration {0:?} is too large")]
    DurationTooLarge(String),
    #[error(
        "cannot parse {0:?} as a size (write a number of bytes with an optional unit, like \"100\", \"512KiB\", \"64MiB\" or \"1GB\")"
    )]
    InvalidSize(String),
    #[error("a size cannot be negative, found {0:?}")]
    NegativeSize(String),
    #[error("size {0:?} is too large (at most 16EiB)")]
    SizeTooLarge(String),
}
