//! The one error type of `plexus-log`.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;

/// Everything that can go wrong in the log. Every variant names what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file-system operation failed; `path` is the file or directory involved.
    #[error("cannot {op} `{}`: {source}{}", path.display(), io_hint(source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Another process holds the data directory.
    #[error(
        "data directory `{}` is in use by another process (lock on `{}`); stop the other plexus worker or choose another data directory",
        path.display(),
        lock.display()
    )]
    DataDirLocked { path: PathBuf, lock: PathBuf },

    /// A batch failed its checks (length, magic, CRC, offsets) where damage cannot be a torn tail.
    #[error("corrupt batch in `{}` at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// A metadata file (topic settings, checkpoints, producer state) cannot be parsed.
    #[error("invalid metadata file `{}`: {reason}", path.display())]
    BadMetadata { path: PathBuf, reason: String },

    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),

    #[error("topic `{topic}` has {partitions} partition(s); partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error("topic `{0}` already exists")]
    TopicExists(String),

    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },

    #[error("invalid settings for topic `{topic}`: {reason}")]
    InvalidTopicConfig { topic: String, reason: String },

    #[error("offset {offset} is out of range for `{topic}/{partition}`: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        start: i64,
        end: i64,
    },

    #[error("batch of {size} bytes for `{topic}/{partition}` exceeds the limit of {max} bytes")]
    BatchTooLarge {
        topic: String,
        partition: u32,
        size: usize,
        max: usize,
    },

    /// A write or fsync failed part-way; the partition refuses writes until the log is reopened
    /// (reopening runs recovery, which finds out what actually reached the disk).
    #[error("partition `{topic}/{partition}` is read-only after a failed write: {reason}; reopen the log to recover")]
    Poisoned {
        topic: String,
        partition: u32,
        reason: String,
    },

    #[error(transparent)]
    Batch(#[from] BatchError),

    #[error("the log is closed")]
    Closed,
}

/// Shorthand used throughout the crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Adds what to do for the errors an operator can fix.
fn io_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(28) => " (the disk is full: free space or lower retention)",
        Some(122) => " (disk quota exceeded)",
        Some(13) | Some(1) => " (permission denied: check the owner and mode of the data directory)",
        Some(30) => " (read-only file system)",
        Some(27) => " (the file-size limit of this process was reached: check `ulimit -f`)",
        _ => "",
    }
}

/// Wraps an `io::Result` with the operation and path.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| LogError::io(op, path, e))
    }
}
