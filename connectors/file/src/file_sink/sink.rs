//! The running `file-sink`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use plexus_connector::{ConnectorError, DeadLetter, Sink, SinkContext, SinkOffsets, SinkRecord, async_trait};

use super::config::FileSinkConfig;
use crate::error::FileError;
use crate::json;

/// Writes each record's value as a line of JSON.
///
/// - A value that is not valid JSON goes to the dead letters (origin
///   `topic/partition@offset`): writing it as a JSON string instead would make it
///   indistinguishable from a record that was a string.
/// - A tombstone (no value) is skipped: a line of `null` would say nothing about which
///   key was deleted.
/// - A value spread over several lines (pretty-printed JSON) is written on one: its line
///   ends can only be whitespace between tokens, since JSON strings cannot hold raw line
///   ends, so they become spaces.
///
/// Each (topic, partition) has its own current file, named after the offset of its
/// first record, so a rewrite after a restart lands in a file of the same name.
#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    prefix: String,
    files: BTreeMap<(Arc<str>, u32), OpenFile>,
    /// A file was created since the last flush: the directory must be synced too.
    created: bool,
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    writer: BufWriter<File>,
    size: u64,
    opened: Instant,
}

impl FileSink {
    pub fn new(config: FileSinkConfig) -> FileSink {
        FileSink {
            prefix: config.file_prefix.clone().unwrap_or_default(),
            config,
            files: BTreeMap::new(),
            created: false,
        }
    }

    /// The file a record at `offset` of the partition starts.
    pub fn file_name(prefix: &str, topic: &str, partition: u32, offset: i64) -> String {
        let topic: String = topic
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{prefix}-{topic}-{partition}-{offset:020}.jsonl")
    }

    /// The current file of the partition, rolled first if adding `len` bytes would pass
    /// the size limit or it is too old.
    fn file_for(&mut self, record: &SinkRecord, len: u64) -> Result<&mut OpenFile, FileError> {
        let key = (Arc::clone(&record.topic), record.partition);
        if let Some(file) = self.files.get(&key)
            && (file.size > 0 && file.size + len > self.config.roll_size
                || file.opened.elapsed() >= self.config.roll_interval)
            && let Some(file) = self.files.remove(&key)
        {
            close(file)?;
        }
        let file = match self.files.entry(key) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let name = FileSink::file_name(&self.prefix, &record.topic, record.partition, record.offset);
                let path = self.config.path.join(name);
                let file = File::create(&path).map_err(FileError::io("create", &path))?;
                self.created = true;
                tracing::debug!(file = %path.display(), "Started file.");
                entry.insert(OpenFile {
                    path,
                    writer: BufWriter::with_capacity(256 << 10, file),
                    size: 0,
                    opened: Instant::now(),
                })
            }
        };
        Ok(file)
    }

    /// Closes the files open longer than the roll interval.
    fn roll_old(&mut self) -> Result<(), FileError> {
        let interval = self.config.roll_interval;
        let old: Vec<_> = self
            .files
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= interval)
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            if let Some(file) = self.files.remove(&key) {
                close(file)?;
            }
        }
        Ok(())
    }

    fn sync_all(&mut self) -> Result<(), FileError> {
        for file in self.files.values_mut() {
            file.writer.flush().map_err(FileError::io("write", &file.path))?;
            file.writer
                .get_ref()
                .sync_data()
                .map_err(FileError::io("sync", &file.path))?;
        }
        if std::mem::take(&mut self.created) {
            sync_dir(&self.config.path)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        if self.config.file_prefix.is_none() {
            self.prefix = ctx.name().to_owned();
        }
        std::fs::create_dir_all(&self.config.path).map_err(FileError::io("create the directory", &self.config.path))?;
        // At least once: the runtime's committed offsets say where to resume.
        Ok(None)
    }

    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        for record in &records {
            let Some(value) = &record.value else { continue };
            if let Err(reason) = json::validate(value) {
                ctx.dead_letter(DeadLetter {
                    key: record.key.clone(),
                    payload: Some(value.clone()),
                    reason,
                    origin: format!("{}/{}@{}", record.topic, record.partition, record.offset),
                })?;
                continue;
            }
            let len = value.len() as u64 + 1;
            let file = self.file_for(record, len)?;
            let written = if value.iter().any(|b| matches!(b, b'\n' | b'\r')) {
                let line: Vec<u8> = value
                    .iter()
                    .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b })
                    .collect();
                file.writer.write_all(&line)
            } else {
                file.writer.write_all(value)
            };
            written
                .and_then(|()| file.writer.write_all(b"\n"))
                .map_err(FileError::io("write", &file.path))?;
            file.size += len;
        }
        Ok(())
    }

    async fn flush(&mut self, _ctx: &SinkContext, _offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        self.sync_all()?;
        self.roll_old()?;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        for (_, file) in std::mem::take(&mut self.files) {
            close(file)?;
        }
        if std::mem::take(&mut self.created) {
            sync_dir(&self.config.path)?;
        }
        Ok(())
    }
}

/// Writes out and syncs a file being rolled.
fn close(mut file: OpenFile) -> Result<(), FileError> {
    file.writer.flush().map_err(FileError::io("write", &file.path))?;
    file.writer
        .get_ref()
        .sync_all()
        .map_err(FileError::io("sync", &file.path))?;
    tracing::debug!(file = %file.path.display(), bytes = file.size, "Closed file.");
    Ok(())
}

/// Makes the names of new files durable.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FileError::io("sync the directory", dir))
}
