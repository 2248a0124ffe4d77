//! What can go wrong in the `parquet` sink.

use arrow_schema::ArrowError;
use parquet::errors::ParquetError as ParquetFormatError;
use plexus_connector::ConnectorError;

/// An error of the `parquet` sink.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// A setting that cannot work; the message names it.
    #[error("{0}")]
    Config(String),
    /// A schema document (registered, or declared in `columns`) that cannot be used.
    #[error("schema `{id}`: {problem}")]
    Schema { id: String, problem: String },
    /// Arrow refused data the sink built itself: a bug, not bad input (bad input goes
    /// to the dead letters).
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: ArrowError,
    },
    /// The Parquet encoder failed.
    #[error("{context}: {source}")]
    Encode {
        context: String,
        #[source]
        source: ParquetFormatError,
    },
    /// What the object store holds contradicts what this sink wrote before: a manifest
    /// with other content under the same name, a manifest that cannot be read. Trying
    /// again cannot help; someone must look.
    #[error("{0}")]
    Inconsistent(String),
    /// A bug: a decoding or encoding thread panicked.
    #[error("{0}")]
    Internal(String),
}

impl ParquetError {
    pub(crate) fn arrow(context: impl Into<String>) -> impl FnOnce(ArrowError) -> ParquetError {
        let context = context.into();
        move |source| ParquetError::Arrow { context, source }
    }

    pub(crate) fn encode(context: impl Into<String>) -> impl FnOnce(ParquetFormatError) -> ParquetError {
        let context = context.into();
        move |source| ParquetError::Encode { context, source }
    }
}

impl From<ParquetError> for ConnectorError {
    fn from(error: ParquetError) -> ConnectorError {
        let message = error.to_string();
        match error {
            ParquetError::Arrow { source, .. } => ConnectorError::fatal(message).with_source(source),
            ParquetError::Encode { source, .. } => ConnectorError::fatal(message).with_source(source),
            ParquetError::Config(_)
            | ParquetError::Schema { .. }
            | ParquetError::Inconsistent(_)
            | ParquetError::Internal(_) => ConnectorError::fatal(message),
        }
    }
}
