//! The error type connectors return.

use std::error::Error as StdError;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The outside system is unavailable or busy: the runtime restarts the task with
    /// exponential backoff.
    Retriable,
    /// Trying again cannot help (bad settings, missing privileges, a record the policy
    /// says must stop the connector): the task fails and stays failed.
    Fatal,
}

/// What went wrong in a connector, and whether to retry.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ConnectorError {
    /// A failure that may pass: the task is restarted with backoff.
    pub fn retriable(message: impl Into<String>) -> Self {
        ConnectorError {
            kind: ErrorKind::Retriable,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that will not pass by retrying.
    pub fn fatal(message: impl Into<String>) -> Self {
        ConnectorError {
            kind: ErrorKind::Fatal,
            message: message.into(),
            source: None,
        }
    }

    /// Settings that cannot work (a fatal error).
    pub fn config(message: impl Into<String>) -> Self {
        ConnectorError::fatal(message)
    }

    /// Keeps the underlying error as the source.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_retriable(&self) -> bool {
        self.kind == ErrorKind::Retriable
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = ConnectorError::retriable("connect to 127.0.0.1:5432").with_source(io);
        assert!(err.is_retriable());
        assert_eq!(err.to_string(), "connect to 127.0.0.1:5432");
        assert_eq!(err.source().map(ToString::to_string).as_deref(), Some("refused"));
        assert_eq!(ConnectorError::config("bad").kind(), ErrorKind::Fatal);
    }
}
