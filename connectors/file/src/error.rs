//! What can go wrong in the file connectors.

use std::io;
use std::path::PathBuf;

use plexus_connector::ConnectorError;

/// An error of the file source or sink.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file system operation failed; retried with backoff (a full disk, a missing
    /// permission fixed by hand).
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// The stored source position cannot be used with these settings.
    #[error("cannot resume from position {position}: {problem}")]
    Position { position: String, problem: String },
}

impl FileError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> FileError {
        let path = path.into();
        move |source| FileError::Io { action, path, source }
    }
}

impl From<FileError> for ConnectorError {
    fn from(error: FileError) -> ConnectorError {
        let message = error.to_string();
        match error {
            FileError::Io { source, .. } => ConnectorError::retriable(message).with_source(source),
            FileError::Config(_) | FileError::Position { .. } => ConnectorError::fatal(message),
        }
    }
}
