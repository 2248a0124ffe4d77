//! The running `file-source`: reads complete lines, tails, follows rotation.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use plexus_connector::{
    ConnectorError, DeadLetter, Header, Poll, Position, Source, SourceBatch, SourceContext, SourceRecord, async_trait,
};

use super::config::{FileSourceConfig, Format};
use super::csv;
use super::files::FileSet;
use super::position::{FileId, FilePosition};
use crate::error::FileError;
use crate::json;

/// The longest line kept; longer ones are dead-lettered (their first KiB) and skipped,
/// so a file without line ends cannot exhaust memory.
const MAX_LINE: usize = 16 << 20;
/// How much is read from a file at a time.
const CHUNK: usize = 64 << 10;
/// Files opened, finished or reopened in one poll at most, so a poll stays short.
const MAX_STEPS: usize = 64;

/// Reads lines from a file or a set of files; see the crate documentation.
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
    files: FileSet,
    /// The connector's name, for logs.
    name: String,
    /// The file being read.
    current: Option<LineReader>,
    /// The file read last, once finished: the next one is the same path replaced (a new
    /// generation) or the next name.
    finished: Option<Finished>,
}

/// A file read to its end and left.
#[derive(Debug, Clone)]
struct Finished {
    name: OsString,
    generation: u64,
    file: FileId,
    /// The path has been seen without a file since: whatever appears there next is a
    /// new file, even if the file system reuses the old one's inode number.
    gone: bool,
}

/// What to do at the end of the complete lines of the current file.
enum AtEnd {
    /// Wait for more data.
    Wait,
    /// Read the file again from the start: it was truncated.
    Truncated,
    /// The file is complete: it was replaced or deleted, or a later file exists.
    Finished,
}

impl FileSource {
    pub fn new(config: FileSourceConfig) -> Result<FileSource, FileError> {
        let files = FileSet::new(&config.path)?;
        Ok(FileSource {
            config,
            files,
            name: String::new(),
            current: None,
            finished: None,
        })
    }

    /// Opens the file to read after the finished one, if there is one yet.
    fn open_next(&mut self) -> Result<Option<LineReader>, FileError> {
        let names = self.files.list()?;
        let candidates: Vec<(OsString, u64)> = match &mut self.finished {
            None => names.into_iter().map(|n| (n, 0)).collect(),
            Some(finished) => {
                let mut candidates = Vec::new();
                finished.gone |= !names.contains(&finished.name);
                if names.contains(&finished.name) {
                    // Only if it is a new file; checked once opened.
                    candidates.push((finished.name.clone(), finished.generation + 1));
                }
                candidates.extend(names.into_iter().filter(|n| *n > finished.name).map(|n| (n, 0)));
                candidates
            }
        };
        for (name, generation) in candidates {
            let path = self.files.dir().join(&name);
            let file = match File::open(&path) {
                Ok(file) => file,
                // Gone between listing and opening.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FileError::io("open", path)(e)),
            };
            let id = FileId::of(&file.metadata().map_err(FileError::io("read", &path))?);
            if self
                .finished
                .as_ref()
                .is_some_and(|f| f.name == name && f.file == id && !f.gone)
            {
                continue;
            }
            tracing::info!(connector = %self.name, file = %path.display(), generation, "Reading file.");
            let reader = LineReader::new(&self.config, name, path.clone(), path, file, id, generation)?;
            return Ok(Some(reader));
        }
        Ok(None)
    }

    /// Decides what follows the last complete line of the current file.
    fn at_end(&self, reader: &LineReader) -> Result<AtEnd, FileError> {
        let size = reader
            .file
            .metadata()
            .map_err(FileError::io("read", &reader.display))?
            .len();
        if size < reader.read_offset() {
            return Ok(AtEnd::Truncated);
        }
        if reader.detached {
            return Ok(AtEnd::Finished);
        }
        match std::fs::metadata(&reader.path) {
            Ok(metadata) if FileId::of(&metadata) != reader.id => return Ok(AtEnd::Finished),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AtEnd::Finished),
            Err(e) => return Err(FileError::io("read", &reader.path)(e)),
        }
        if self.files.is_pattern() && self.files.list()?.iter().any(|name| *name > reader.name) {
            return Ok(AtEnd::Finished);
        }
        Ok(AtEnd::Wait)
    }

    /// Positions the source after `position`, as read from the log.
    fn resume(&mut self, position: &Position) -> Result<(), FileError> {
        let at = FilePosition::decode(position)?;
        let name = at.path.file_name().map(OsString::from).unwrap_or_default();
        if !self.files.matches(&name) {
            return Err(FileError::Position {
                position: format!("{} at byte {}", at.path.display(), at.offset),
                problem: format!(
                    "the file is not one of `path` = {:?}; the connector's `path` changed since it last ran: \
                     reset its positions or give it a new name",
                    self.config.path
                ),
            });
        }
        let path = self.files.dir().join(&name);
        let finished = Finished {
            name: name.clone(),
            generation: at.generation,
            file: at.file,
            gone: false,
        };
        let same_file = match File::open(&path) {
            Ok(file) => {
                let metadata = file.metadata().map_err(FileError::io("read", &path))?;
                (FileId::of(&metadata) == at.file).then_some((file, metadata.len()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(FileError::io("open", path)(e)),
        };
        if let Some((file, size)) = same_file {
            if size < at.offset {
                tracing::warn!(connector = %self.name, file = %path.display(), size, offset = at.offset,
                    "File truncated while the connector was stopped; reading it again from the start.");
                let reader = LineReader::new(&self.config, name, path.clone(), path, file, at.file, at.generation + 1)?;
                self.current = Some(reader);
            } else {
                let mut reader = LineReader::new(&self.config, name, path.clone(), path, file, at.file, at.generation)?;
                reader.seek(at.offset, at.line)?;
                self.current = Some(reader);
            }
            return Ok(());
        }
        // The file at the path was replaced while stopped: finish the old one if it is
        // still in the directory under another name (rotated to `app.log.1`, say).
        if let Some((old_path, file)) = find_file(self.files.dir(), at.file)? {
            let size = file.metadata().map_err(FileError::io("read", &old_path))?.len();
            if size >= at.offset {
                tracing::info!(connector = %self.name, file = %path.display(), moved_to = %old_path.display(),
                    "File rotated while the connector was stopped; finishing it.");
                let mut reader = LineReader::new(&self.config, name, path, old_path, file, at.file, at.generation)?;
                reader.detached = true;
                reader.seek(at.offset, at.line)?;
                self.current = Some(reader);
                return Ok(());
            }
        }
        tracing::warn!(connector = %self.name, file = %path.display(), offset = at.offset,
            "File replaced while the connector was stopped and the old one is gone; lines after that offset are lost.");
        self.finished = Some(finished);
        Ok(())
    }
}

#[async_trait]
impl Source for FileSource {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        self.name = ctx.name().to_owned();
        self.current = None;
        self.finished = None;
        if let Some(position) = resume {
            self.resume(&position)?;
        }
        Ok(())
    }

    async fn poll(&mut self, ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        let max = self.config.batch_size;
        let mut records = Vec::new();
        let mut position = None;
        for _ in 0..MAX_STEPS {
            // Taken out while in use; on an error it stays out and the restarted task
            // resumes from the log's position.
            let mut reader = match self.current.take() {
                Some(reader) => reader,
                None => match self.open_next()? {
                    Some(reader) => reader,
                    None => break,
                },
            };
            if reader.read_lines(ctx, &mut records, max)? {
                position = Some(reader.position());
            }
            if records.len() >= max {
                self.current = Some(reader);
                break;
            }
            match self.at_end(&reader)? {
                AtEnd::Wait => {
                    self.current = Some(reader);
                    break;
                }
                AtEnd::Truncated => {
                    tracing::warn!(connector = %self.name, file = %reader.display.display(), offset = reader.offset,
                        "File truncated; reading it again from the start.");
                    reader.restart()?;
                    self.current = Some(reader);
                }
                AtEnd::Finished => {
                    if reader.finish(ctx, &mut records)? {
                        position = Some(reader.position());
                    }
                    tracing::info!(connector = %self.name, file = %reader.display.display(), lines = reader.line,
                        "Finished file.");
                    let gone = matches!(std::fs::metadata(&reader.path), Err(e) if e.kind() == io::ErrorKind::NotFound);
                    self.finished = Some(Finished {
                        name: reader.name.clone(),
                        generation: reader.generation,
                        file: reader.id,
                        gone,
                    });
                }
            }
        }
        match position {
            // Also without records (only dead letters, blank lines, a CSV header): the
            // position moves on so they are not read again.
            Some(position) => Ok(Poll::Batch(SourceBatch {
                records,
                position: position.encode(),
            })),
            None => {
                tokio::time::sleep(self.config.poll_interval.min(Duration::from_secs(1))).await;
                Ok(Poll::Idle)
            }
        }
    }
}

/// Reads complete lines of one file from a byte offset.
#[derive(Debug)]
struct LineReader {
    format: Format,
    csv_header: bool,
    /// The file's name in the set.
    name: OsString,
    /// Its configured path (directory and name): what the position records.
    path: PathBuf,
    /// Where it is now: the path, or the name it was rotated to.
    display: PathBuf,
    /// `display` as a record header.
    header: Bytes,
    file: File,
    id: FileId,
    generation: u64,
    /// The byte after the last line consumed.
    offset: u64,
    /// Lines consumed.
    line: u64,
    /// Bytes read from `offset` on; `buf[head..]` are not consumed yet.
    buf: Vec<u8>,
    head: usize,
    /// Where to look for the next line end in `buf`.
    scan: usize,
    /// Discarding the rest of an overlong line.
    skipping: bool,
    /// The CSV header of the file, once read.
    columns: Option<Vec<String>>,
    /// The file is no longer at `path` (found by its identity after a restart): finish
    /// it at its end.
    detached: bool,
    /// JSON of a CSV row.
    scratch: Vec<u8>,
}

impl LineReader {
    fn new(
        config: &FileSourceConfig,
        name: OsString,
        path: PathBuf,
        display: PathBuf,
        file: File,
        id: FileId,
        generation: u64,
    ) -> Result<LineReader, FileError> {
        let header = Bytes::copy_from_slice(display.as_os_str().as_bytes());
        Ok(LineReader {
            format: config.format,
            csv_header: config.csv_header,
            name,
            path,
            display,
            header,
            file,
            id,
            generation,
            offset: 0,
            line: 0,
            buf: Vec::new(),
            head: 0,
            scan: 0,
            skipping: false,
            columns: None,
            detached: false,
            scratch: Vec::new(),
        })
    }

    /// Continues after `offset` bytes and `line` lines.
    fn seek(&mut self, offset: u64, line: u64) -> Result<(), FileError> {
        self.offset = offset;
        self.line = line;
        self.clear();
        if self.format == Format::Csv && self.csv_header && offset > 0 {
            self.columns = Some(self.read_csv_header()?);
        }
        Ok(())
    }

    /// Reads the file again from the start (after a truncation), as a new generation.
    fn restart(&mut self) -> Result<(), FileError> {
        self.generation += 1;
        self.columns = None;
        self.seek(0, 0)
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.scan = 0;
        self.skipping = false;
    }

    /// The offset up to which the file has been read.
    fn read_offset(&self) -> u64 {
        self.offset + (self.buf.len() - self.head) as u64
    }

    fn position(&self) -> FilePosition {
        FilePosition {
            path: self.path.clone(),
            generation: self.generation,
            offset: self.offset,
            line: self.line,
            file: self.id,
        }
    }

    /// Consumes complete lines into `out` until it holds `max` records or the file has
    /// no more complete lines. Returns whether anything was consumed.
    fn read_lines(
        &mut self,
        ctx: &SourceContext,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        let start = self.offset;
        while out.len() < max {
            if let Some(at) = self.buf[self.scan..].iter().position(|b| *b == b'\n') {
                let end = self.scan + at;
                let (head, skipping) = (self.head, self.skipping);
                self.head = end + 1;
                self.scan = end + 1;
                self.offset += (end + 1 - head) as u64;
                self.line += 1;
                self.skipping = false;
                if !skipping {
                    let line = std::mem::take(&mut self.buf);
                    let result = self.take_line(ctx, &line[head..end], out);
                    self.buf = line;
                    result?;
                }
                continue;
            }
            self.scan = self.buf.len();
            if self.buf.len() - self.head > MAX_LINE {
                self.skip_overlong(ctx)?;
            }
            if self.fill()? == 0 {
                break;
            }
        }
        Ok(self.offset != start)
    }

    /// Reads the rest of a finished file, its last line even without a line end.
    /// Returns whether anything was consumed.
    fn finish(&mut self, ctx: &SourceContext, out: &mut Vec<SourceRecord>) -> Result<bool, ConnectorError> {
        let mut consumed = self.read_lines(ctx, out, usize::MAX)?;
        let rest = self.buf.len() - self.head;
        if rest > 0 {
            self.offset += rest as u64;
            self.line += 1;
            if !std::mem::take(&mut self.skipping) {
                let (line, head) = (std::mem::take(&mut self.buf), self.head);
                self.take_line(ctx, &line[head..], out)?;
            }
            self.clear();
            consumed = true;
        }
        Ok(consumed)
    }

    /// Reads more of the file into the buffer; 0 at its end.
    fn fill(&mut self) -> Result<usize, FileError> {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.scan -= self.head;
            self.head = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let read = self.file.read_at(&mut self.buf[len..], self.offset + len as u64);
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                self.buf.truncate(len);
                return Err(FileError::io("read", &self.display)(e));
            }
        };
        self.buf.truncate(len + read);
        Ok(read)
    }

    /// Dead-letters the start of a line longer than [`MAX_LINE`] and discards the rest.
    fn skip_overlong(&mut self, ctx: &SourceContext) -> Result<(), ConnectorError> {
        let pending = &self.buf[self.head..];
        if !self.skipping {
            ctx.dead_letter(DeadLetter {
                key: None,
                payload: Some(Bytes::copy_from_slice(&pending[..pending.len().min(1024)])),
                reason: format!(
                    "line longer than {} MiB (its first KiB is kept here); skipped",
                    MAX_LINE >> 20
                ),
                origin: self.origin(),
            })?;
        }
        self.offset += pending.len() as u64;
        self.clear();
        self.skipping = true;
        Ok(())
    }

    /// Where the line being read comes from: `path:line`.
    fn origin(&self) -> String {
        format!("{}:{}", self.display.display(), self.line + 1)
    }

    /// Turns one line (without its `\n`; `self.line` already counts it) into a record,
    /// or a dead letter.
    fn take_line(
        &mut self,
        ctx: &SourceContext,
        line: &[u8],
        out: &mut Vec<SourceRecord>,
    ) -> Result<(), ConnectorError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value = match self.format {
            Format::Jsonl if line.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            Format::Jsonl => json::validate(line).map(|()| Some(Bytes::copy_from_slice(line))),
            Format::Csv => self.csv_value(line),
        };
        match value {
            Ok(Some(value)) => {
                out.push(SourceRecord {
                    timestamp: now_ms(),
                    key: None,
                    value: Some(value),
                    headers: [Header {
                        key: "file".into(),
                        value: Some(self.header.clone()),
                    }]
                    .into_iter()
                    .collect(),
                    topic: None,
                });
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(reason) => ctx.dead_letter(DeadLetter {
                key: None,
                payload: Some(Bytes::copy_from_slice(line)),
                reason,
                origin: format!("{}:{}", self.display.display(), self.line),
            }),
        }
    }

    /// The JSON of a CSV row, or `None` for the header line.
    fn csv_value(&mut self, line: &[u8]) -> Result<Option<Bytes>, String> {
        let text = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8 at column {}", e.valid_up_to() + 1))?;
        let row = csv::parse_row(text)?;
        self.scratch.clear();
        if !self.csv_header {
            csv::row_array(&row, &mut self.scratch);
        } else if let Some(columns) = &self.columns {
            csv::row_object(columns, &row, &mut self.scratch)?;
        } else if self.line == 1 {
            self.columns = Some(row);
            return Ok(None);
        } else {
            return Err("no CSV header: the first line of the file could not be read".to_owned());
        }
        Ok(Some(Bytes::copy_from_slice(&self.scratch)))
    }

    /// The column names, from the first line of the file.
    fn read_csv_header(&self) -> Result<Vec<String>, FileError> {
        let mut first = Vec::new();
        let mut chunk = vec![0u8; 4096];
        while first.len() <= MAX_LINE {
            let read = self
                .file
                .read_at(&mut chunk, first.len() as u64)
                .map_err(FileError::io("read the CSV header of", &self.display))?;
            if read == 0 {
                break;
            }
            match chunk[..read].iter().position(|b| *b == b'\n') {
                Some(end) => {
                    first.extend_from_slice(&chunk[..end]);
                    break;
                }
                None => first.extend_from_slice(&chunk[..read]),
            }
        }
        let first = first.strip_suffix(b"\r").unwrap_or(&first);
        let bad =
            |problem: String| FileError::Config(format!("the CSV header of {}: {problem}", self.display.display()));
        let text = std::str::from_utf8(first).map_err(|e| bad(e.to_string()))?;
        csv::parse_row(text).map_err(bad)
    }
}

/// The file of the directory with this identity, if any (a rotated file under its new
/// name).
fn find_file(dir: &Path, id: FileId) -> Result<Option<(PathBuf, File)>, FileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io("list the directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(FileError::io("list the directory", dir))?;
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && FileId::of(&m) == id)
            && let Ok(file) = File::open(&path)
        {
            return Ok(Some((path, file)));
        }
    }
    Ok(None)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
