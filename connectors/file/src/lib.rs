//! `plexus-connector-file`: local files in and out.
//!
//! - `type = "file-source"` ([`FileSource`]): JSON lines or CSV from a file or from the
//!   files matching a pattern (`logs/app-*.jsonl`, read in name order). It tails the
//!   file being read, follows rotation (the file at the path replaced by a new one: the
//!   old one is read to its end, then the new one from byte 0) and truncation (read
//!   again from byte 0, with a warning). Only complete lines are read: a last line
//!   without its `\n` waits for it, unless the file is finished (replaced, deleted, or
//!   followed by a later file). The position is the file, a generation counter and the
//!   byte offset after the last line consumed (see [`FilePosition`]), so a restart
//!   continues at exactly that byte: no line twice, none skipped. A line that is not
//!   valid JSON (or CSV that does not fit its header) goes to the dead letters with the
//!   reason and its origin `path:line`. Each record's value is the line's JSON, its key
//!   is empty, its timestamp the time it was read, and its header `file` the path.
//!   Unix only: files are identified by device and inode.
//! - `type = "file-sink"` ([`FileSink`]): each record's value as one line of JSON in
//!   files `<prefix>-<topic>-<partition>-<first offset>.jsonl`, rolled by size and age,
//!   fsynced on flush. At least once: after a crash the records since the last flush
//!   are written again (into a file of the same name when they start it).
//!
//! ```toml
//! [[connector]]
//! name = "events-in"
//! type = "file-source"
//! topic = "events"
//! settings = { path = "/var/log/app/events-*.jsonl" }
//!
//! [[connector]]
//! name = "events-out"
//! type = "file-sink"
//! topics = ["events"]
//! [connector.settings]
//! path = "/data/export"     # a directory
//! roll_size = "64MiB"
//! roll_interval = "1h"
//! ```

mod error;
mod file_sink;
mod file_source;
mod json;

use plexus_connector::{
    ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, Position, Settings, Sink, Source,
};

pub use error::FileError;
pub use file_sink::{FileSink, FileSinkConfig};
pub use file_source::{FileId, FilePosition, FileSource, FileSourceConfig, Format};

/// Registers `type = "file-source"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSourceFactory;

impl FileSourceFactory {
    pub fn new() -> FileSourceFactory {
        FileSourceFactory
    }
}

impl ConnectorFactory for FileSourceFactory {
    fn type_name(&self) -> &str {
        "file-source"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &file_source::SCHEMA
    }

    /// `{"path", "generation", "offset", "line", "dev", "inode"}`: `offset` is the byte
    /// after the last line consumed.
    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        match FilePosition::decode(position) {
            Ok(p) => serde_json::json!({
                "path": p.path.to_string_lossy(),
                "generation": p.generation,
                "offset": p.offset,
                "line": p.line,
                "dev": p.file.dev,
                "inode": p.file.inode,
            }),
            Err(e) => serde_json::json!({ "invalid": e.to_string() }),
        }
    }

    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        let number = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("`{key}` must be a number >= 0 in {value}"))
        };
        let path = value
            .get("path")
            .and_then(serde_json::Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("`path` must be a file path in {value}"))?;
        Ok(FilePosition {
            path: path.into(),
            generation: number("generation")?,
            offset: number("offset")?,
            line: number("line")?,
            file: FileId {
                dev: number("dev")?,
                inode: number("inode")?,
            },
        }
        .encode())
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(FileSource::new(FileSourceConfig::from_settings(settings)?)?))
    }
}

/// Registers `type = "file-sink"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSinkFactory;

impl FileSinkFactory {
    pub fn new() -> FileSinkFactory {
        FileSinkFactory
    }
}

impl ConnectorFactory for FileSinkFactory {
    fn type_name(&self) -> &str {
        "file-sink"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &file_sink::SCHEMA
    }

    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(FileSink::new(FileSinkConfig::from_settings(settings)?)))
    }
}
