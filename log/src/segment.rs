//! One segment of a partition: a `{base_offset:020}.log` file of record batches with its
//! sparse offset and time indexes.
//!
//! Only the last segment of a partition (the active one) is appended to; the others are
//! sealed and never change, except when compaction replaces one as a whole.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use crate::batch::{BATCH_HEADER_LEN, Batch, BatchHeader, verify_crc};
use crate::error::{IoContext, LogError, Result};
use crate::fsutil;
use crate::index::{OffsetIndex, TimeIndex};

/// Largest batch the scanner accepts when rebuilding; anything claiming more is damage.
pub(crate) const MAX_SCANNED_BATCH: usize = 64 << 20;

/// The files of a segment, named after its base offset.
pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

pub(crate) fn producers_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.producers"))
}

/// Parses `00000000000000000042.log` (or another extension) into 42.
pub(crate) fn parse_base_offset(file_name: &str, extension: &str) -> Option<i64> {
    let stem = file_name.strip_suffix(extension)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub dir: PathBuf,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of whole, valid batches.
    pub size: u64,
    /// One past the last offset of the last batch (the base offset when empty).
    pub next_offset: i64,
    /// Largest record timestamp, `i64::MIN` when empty.
    pub max_timestamp: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: u64,
    /// When the segment was created, for rolling on age.
    pub created: SystemTime,
    /// Where a sealed segment is known to be damaged, and why: a read that finds no
    /// batch for its offset in such a segment fails instead of moving on.
    pub damage: Option<(u64, String)>,
}

/// How strictly a scan checks the offsets of consecutive batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continuity {
    /// Each batch starts exactly where the previous one ended (never-compacted data).
    Dense,
    /// Offsets only increase (compaction may leave gaps).
    Increasing,
}

/// What a scan found: the valid prefix and, if the file goes on past it, why it stopped.
#[derive(Debug)]
pub(crate) struct ScanReport {
    pub valid_bytes: u64,
    pub file_bytes: u64,
    pub damage: Option<String>,
}

impl Segment {
    /// Creates an empty segment file. An empty file left by an earlier failed roll is
    /// reused; a file with data is never overwritten.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("create segment", &path)?;
        if file.metadata().ctx("stat", &path)?.len() != 0 {
            return Err(LogError::io(
                "create segment",
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a segment with data already has this name",
                ),
            ));
        }
        // Stale indexes from an earlier life of this base offset must not be trusted.
        fsutil::remove_if_exists(&index_path(dir, base_offset))?;
        fsutil::remove_if_exists(&time_index_path(dir, base_offset))?;
        Ok(Segment::empty(dir, base_offset, path, file, SystemTime::now()))
    }

    /// Opens an existing segment and scans every batch (length, magic, epoch, offsets,
    /// CRC), rebuilding its indexes. The scan stops at the first bad batch; `on_batch`
    /// sees each valid one. The file is not modified: the caller decides whether the
    /// damage is a torn tail to truncate or corruption to report.
    pub fn open_scanned(
        dir: &Path,
        base_offset: i64,
        continuity: Continuity,
        index_interval: u32,
        on_batch: &mut dyn FnMut(&Batch),
    ) -> Result<(Segment, ScanReport)> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let created = file_created(&file);
        let mut segment = Segment::empty(dir, base_offset, path, file, created);
        let report = segment.scan(continuity, index_interval, on_batch)?;
        Ok((segment, report))
    }

    /// Opens the active segment of a partition that was closed cleanly, from the index
    /// files the close wrote, if they match the file and the segment ends at `end`;
    /// `None`: scan it instead.
    pub fn open_closed_cleanly(dir: &Path, base_offset: i64, end: i64) -> Result<Option<Segment>> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let size = file.metadata().ctx("stat", &path)?.len();
        let created = file_created(&file);
        Ok(Segment::from_index_files(dir, base_offset, &path, &file, size)?
            .filter(|segment| segment.next_offset == end)
            .map(|segment| Segment { created, ..segment }))
    }

    /// Opens a sealed segment from its index files, scanning it only when they are
    /// missing or do not match the log file. `next_base` is the base offset of the
    /// segment after it.
    ///
    /// A damaged batch found by that scan does not stop the partition from opening:
    /// the segment keeps its whole file, is indexed up to the damage, and every read
    /// that reaches the damage fails with an error naming the file and position. The
    /// damage is reported, never truncated away (this data was durable) and never
    /// skipped.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        next_base: i64,
        continuity: Continuity,
    ) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = open_rw(&path)?;
        let size = file.metadata().ctx("stat", &path)?.len();
        let created = file_created(&file);
        if let Some(segment) = Segment::from_index_files(dir, base_offset, &path, &file, size)? {
            // The last batch must end where the next segment begins (or before it, where
            // compaction removed records): a damaged header there must not shorten the
            // segment and hide offsets.
            let ends_right = match continuity {
                Continuity::Dense => segment.next_offset == next_base,
                Continuity::Increasing => segment.next_offset <= next_base,
            };
            if ends_right {
                return Ok(Segment { created, ..segment });
            }
        }
        tracing::info!(segment = %path.display(), "Rebuilding the indexes of a sealed segment.");
        let mut segment = Segment::empty(dir, base_offset, path.clone(), file, created);
        let mut report = segment.scan(continuity, index_interval, &mut |_| {})?;
        let ends_right = match continuity {
            Continuity::Dense => segment.next_offset == next_base,
            Continuity::Increasing => segment.next_offset <= next_base,
        };
        if report.damage.is_none() && !ends_right {
            report.damage = Some(format!(
                "the segment ends at offset {} but the next one starts at {next_base}",
                segment.next_offset
            ));
        }
        if let Some(reason) = report.damage {
            tracing::error!(
                segment = %path.display(),
                position = report.valid_bytes,
                reason = %reason,
                "A sealed segment holds a damaged batch: reads that reach it will fail. Restore the file from a replica or backup."
            );
            segment.size = report.file_bytes;
            segment.next_offset = segment.next_offset.max(next_base);
            segment.damage = Some((report.valid_bytes, reason));
            return Ok(segment);
        }
        segment.write_indexes()?;
        Ok(segment)
    }

    /// Opens a rewritten copy of segment `base_offset` (compaction's result, still under
    /// its temporary name) as the segment it will replace once renamed.
    pub fn scan_replacement(dir: &Path, base_offset: i64, file_path: &Path, index_interval: u32) -> Result<Segment> {
        let file = open_rw(file_path)?;
        let mut segment = Segment::empty(dir, base_offset, log_path(dir, base_offset), file, SystemTime::now());
        let report = segment.scan(Continuity::Increasing, index_interval, &mut |_| {})?;
        if let Some(reason) = report.damage {
            return Err(LogError::Corrupt {
                path: file_path.to_owned(),
                position: report.valid_bytes,
                reason,
            });
        }
        Ok(segment)
    }

    /// Appends one encoded batch (its base offset already set) at the end of the file.
    /// On failure the file is cut back to its previous size so no partial batch stays.
    pub fn append(&mut self, bytes: &[u8], header: &BatchHeader, index_interval: u32) -> Result<()> {
        let position = self.size;
        if let Err(err) = self.file.write_all_at(bytes, position) {
            let cut = self.file.set_len(position);
            return Err(match cut {
                Ok(()) => LogError::io("append to segment", &self.path, err),
                Err(cut_err) => LogError::Poisoned {
                    topic: String::new(),
                    partition: 0,
                    reason: format!(
                        "append to `{}` failed ({err}) and cutting the partial batch failed too ({cut_err})",
                        self.path.display()
                    ),
                },
            });
        }
        self.record_batch(header, position, index_interval);
        Ok(())
    }

    /// Cuts the file back to `valid_bytes` (a torn or corrupt tail) and syncs it.
    pub fn truncate(&mut self, valid_bytes: u64) -> Result<()> {
        self.file.set_len(valid_bytes).ctx("truncate", &self.path)?;
        self.file.sync_all().ctx("fsync", &self.path)?;
        self.size = valid_bytes;
        Ok(())
    }

    /// Writes the index files (after a final time-index entry for the largest timestamp).
    pub fn write_indexes(&mut self) -> Result<()> {
        if self.max_timestamp != i64::MIN && self.size > 0 {
            let last = self.index.lookup(self.next_offset - 1).0;
            self.time_index.push(self.max_timestamp, last);
        }
        write_file(&index_path(&self.dir, self.base_offset), &self.index.encode())?;
        write_file(&time_index_path(&self.dir, self.base_offset), &self.time_index.encode())
    }

    /// Deletes the segment's files (open readers keep their handle until they finish).
    pub fn delete_files(&self) -> Result<()> {
        fsutil::remove_if_exists(&self.path)?;
        fsutil::remove_if_exists(&index_path(&self.dir, self.base_offset))?;
        fsutil::remove_if_exists(&time_index_path(&self.dir, self.base_offset))
    }

    fn empty(dir: &Path, base_offset: i64, path: PathBuf, file: File, created: SystemTime) -> Segment {
        Segment {
            base_offset,
            dir: dir.to_owned(),
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            index: OffsetIndex::new(base_offset),
            time_index: TimeIndex::new(base_offset),
            bytes_since_index: 0,
            created,
            damage: None,
        }
    }

    fn record_batch(&mut self, header: &BatchHeader, position: u64, index_interval: u32) {
        let len = header.total_len() as u64;
        if position == 0 || self.bytes_since_index >= u64::from(index_interval) {
            self.index.push(header.base_offset, position as u32);
            if header.max_timestamp > self.max_timestamp {
                self.time_index.push(header.max_timestamp, header.base_offset);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        self.size = position + len;
        self.next_offset = header.next_offset();
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    fn from_index_files(dir: &Path, base_offset: i64, path: &Path, file: &File, size: u64) -> Result<Option<Segment>> {
        let (Some(index_bytes), Some(time_bytes)) = (
            read_optional(&index_path(dir, base_offset))?,
            read_optional(&time_index_path(dir, base_offset))?,
        ) else {
            return Ok(None);
        };
        let Some(index) = OffsetIndex::decode(&index_bytes, base_offset, size) else {
            return Ok(None);
        };
        // The last batch tells where the segment ends; check it lines up with the file.
        let (last_base, last_position) = index.lookup(i64::MAX);
        let Some(next_offset) = last_batch_end(file, last_position as u64, size)? else {
            return Ok(None);
        };
        if (size > 0 && last_base < base_offset) || next_offset < last_base {
            return Ok(None);
        }
        let next_offset = if size == 0 { base_offset } else { next_offset };
        let Some(time_index) = TimeIndex::decode(&time_bytes, base_offset, next_offset.max(base_offset + 1)) else {
            return Ok(None);
        };
        let max_timestamp = time_index.max_timestamp().unwrap_or(i64::MIN);
        Ok(Some(Segment {
            base_offset,
            dir: dir.to_owned(),
            path: path.to_owned(),
            file: Arc::new(file.try_clone().ctx("open", path)?),
            size,
            next_offset,
            max_timestamp,
            index,
            time_index,
            bytes_since_index: 0,
            created: SystemTime::UNIX_EPOCH,
            damage: None,
        }))
    }

    fn scan(
        &mut self,
        continuity: Continuity,
        index_interval: u32,
        on_batch: &mut dyn FnMut(&Batch),
    ) -> Result<ScanReport> {
        let file_bytes = self.file.metadata().ctx("stat", &self.path)?.len();
        let (file, path) = (Arc::clone(&self.file), self.path.clone());
        let mut reader = ChunkReader::new(&file, &path, file_bytes);
        let mut position = 0u64;
        let mut expected = self.base_offset;
        let damage = loop {
            if position == file_bytes {
                break None;
            }
            let head = match reader.bytes_at(position, BATCH_HEADER_LEN)? {
                Some(head) => head,
                None => {
                    break Some(format!(
                        "{} trailing bytes are too few for a batch header",
                        file_bytes - position
                    ));
                }
            };
            let header = match BatchHeader::parse(&head) {
                Ok(header) => header,
                Err(err) => break Some(err.to_string()),
            };
            let len = header.total_len();
            if len > MAX_SCANNED_BATCH {
                break Some(format!("batch claims {len} bytes"));
            }
            if header.partition_leader_epoch != 0 {
                break Some(format!(
                    "unexpected partition leader epoch {}",
                    header.partition_leader_epoch
                ));
            }
            let offsets_ok = match continuity {
                Continuity::Dense => header.base_offset == expected,
                Continuity::Increasing => header.base_offset >= expected,
            };
            if !offsets_ok {
                break Some(format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, expected
                ));
            }
            let Some(bytes) = reader.bytes_at(position, len)? else {
                break Some(format!(
                    "batch of {len} bytes is cut off after {} bytes",
                    file_bytes - position
                ));
            };
            if let Err(err) = verify_crc(&bytes) {
                break Some(err.to_string());
            }
            match Batch::new(bytes) {
                Ok(batch) => on_batch(&batch),
                Err(err) => break Some(err.to_string()),
            }
            self.record_batch(&header, position, index_interval);
            expected = header.next_offset();
            position += len as u64;
        };
        Ok(ScanReport {
            valid_bytes: position,
            file_bytes,
            damage,
        })
    }
}

/// Where and how to read batches from a segment file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchRead<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    /// Byte position of a batch start, and the base offset of that batch.
    pub start: u64,
    pub first_offset: i64,
    /// End of the valid (and visible) bytes.
    pub end: u64,
    pub continuity: Continuity,
    /// One past the segment's last offset: no batch may reach it.
    pub segment_next: i64,
}

impl BatchRead<'_> {
    /// Reads whole batches, returning those that end at or after `min_offset` and
    /// start before `max_offset`, until `max_bytes` of them are collected (at least one
    /// batch when any qualifies, however large). Every batch is checked before it is
    /// returned: CRC, magic, leader epoch, and its offsets against the previous batch
    /// and the segment's range. A damaged one is an error naming the file and the byte
    /// position, never returned and never skipped. Also returns the bytes read.
    pub fn read(&self, min_offset: i64, max_offset: i64, max_bytes: usize) -> Result<(Vec<Batch>, usize)> {
        let (file, path, end) = (self.file, self.path, self.end);
        let mut batches = Vec::new();
        let mut collected = 0usize;
        let mut position = self.start;
        let mut expected = self.first_offset;
        let chunk = max_bytes.clamp(64 << 10, 16 << 20);
        while position < end && (batches.is_empty() || collected < max_bytes) {
            let want = ((end - position) as usize).min(chunk.max(max_bytes.saturating_sub(collected)));
            let buf = read_exact(file, path, position, want)?;
            let mut offset = 0usize;
            let mut progressed = false;
            // A batch larger than the chunk was read on its own: `offset` is then past `buf`.
            while buf.len().saturating_sub(offset) >= BATCH_HEADER_LEN {
                let corrupt = |reason: String| LogError::Corrupt {
                    path: path.to_owned(),
                    position: position + offset as u64,
                    reason,
                };
                let header = BatchHeader::parse(&buf[offset..]).map_err(|e| corrupt(e.to_string()))?;
                let len = header.total_len();
                if position + (offset + len) as u64 > end {
                    return Err(corrupt(format!(
                        "batch of {len} bytes runs past the end of the valid data"
                    )));
                }
                let offsets_ok = match self.continuity {
                    Continuity::Dense => header.base_offset == expected,
                    Continuity::Increasing => header.base_offset >= expected,
                } && header.last_offset() < self.segment_next;
                if !offsets_ok {
                    return Err(corrupt(format!(
                        "batch offsets {}..={} do not follow offset {expected} within a segment ending before {}",
                        header.base_offset,
                        header.last_offset(),
                        self.segment_next
                    )));
                }
                if header.partition_leader_epoch != 0 {
                    return Err(corrupt(format!(
                        "unexpected partition leader epoch {}",
                        header.partition_leader_epoch
                    )));
                }
                if header.base_offset >= max_offset {
                    return Ok((batches, collected));
                }
                let bytes = if offset + len <= buf.len() {
                    buf.slice(offset..offset + len)
                } else if offset == 0 {
                    // A batch larger than the chunk: read it whole.
                    read_exact(file, path, position, len)?
                } else {
                    break;
                };
                if header.last_offset() >= min_offset {
                    if !batches.is_empty() && collected + len > max_bytes {
                        return Ok((batches, collected));
                    }
                    let batch = Batch::new(bytes).map_err(|e| corrupt(e.to_string()))?;
                    collected += len;
                    batches.push(batch);
                } else {
                    verify_crc(&bytes).map_err(|e| corrupt(e.to_string()))?;
                }
                expected = header.next_offset();
                offset += len;
                progressed = true;
            }
            if !progressed {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    position,
                    reason: "no whole batch where one was expected".into(),
                });
            }
            position += offset as u64;
        }
        Ok((batches, collected))
    }
}

/// Calls `f` with every batch of a sealed segment's file, in order, each one checked
/// as [`BatchRead::read`] checks it.
pub(crate) fn for_each_batch(
    file: &File,
    path: &Path,
    (base_offset, next_offset, size): (i64, i64, u64),
    mut f: impl FnMut(&Batch) -> Result<()>,
) -> Result<()> {
    let mut read = BatchRead {
        file,
        path,
        start: 0,
        first_offset: base_offset,
        end: size,
        continuity: Continuity::Increasing,
        segment_next: next_offset,
    };
    while read.start < size {
        let (batches, bytes) = read.read(i64::MIN, i64::MAX, 8 << 20)?;
        let Some(last) = batches.last() else { break };
        read.first_offset = last.last_offset() + 1;
        read.start += bytes as u64;
        for batch in &batches {
            f(batch)?;
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes at `position`.
pub(crate) fn read_exact(file: &File, path: &Path, position: u64, len: usize) -> Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, position).ctx("read segment", path)?;
    Ok(buf.freeze())
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx("open segment", path)
}

fn file_created(file: &File) -> SystemTime {
    file.metadata()
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .unwrap_or_else(|_| SystemTime::now())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read index", path, e)),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).ctx("create index", path)?;
    std::io::Write::write_all(&mut file, bytes).ctx("write index", path)?;
    file.sync_all().ctx("fsync", path)
}

/// Walks the batches from `position` (a batch start) to `size` using headers only and
/// returns the next offset after the last one, or `None` if they do not end exactly at `size`.
fn last_batch_end(file: &File, mut position: u64, size: u64) -> Result<Option<i64>> {
    let mut next = None;
    let mut head = [0u8; BATCH_HEADER_LEN];
    while position < size {
        if size - position < BATCH_HEADER_LEN as u64 || file.read_exact_at(&mut head, position).is_err() {
            return Ok(None);
        }
        let Ok(header) = BatchHeader::parse(&head) else {
            return Ok(None);
        };
        position += header.total_len() as u64;
        next = Some(header.next_offset());
    }
    Ok(if position == size {
        next.or(Some(i64::MIN))
    } else {
        None
    })
}

/// Sequential reader over a segment file that hands out `Bytes` without re-reading.
struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    file_bytes: u64,
    buf: Bytes,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    const CHUNK: usize = 4 << 20;

    fn new(file: &'a File, path: &'a Path, file_bytes: u64) -> Self {
        ChunkReader {
            file,
            path,
            file_bytes,
            buf: Bytes::new(),
            buf_start: 0,
        }
    }

    /// `len` bytes at `position`, or `None` if the file ends first.
    fn bytes_at(&mut self, position: u64, len: usize) -> Result<Option<Bytes>> {
        if position + len as u64 > self.file_bytes {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if position < self.buf_start || position + len as u64 > buf_end {
            let want = len.max(Self::CHUNK).min((self.file_bytes - position) as usize);
            self.buf = read_exact(self.file, self.path, position, want)?;
            self.buf_start = position;
        }
        let from = (position - self.buf_start) as usize;
        Ok(Some(self.buf.slice(from..from + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, Compression, ProducerFields, set_base_offset};

    /// Appends `count` batches of 3 records each; returns the raw bytes written.
    fn fill(segment: &mut Segment, count: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut builder = BatchBuilder::new(Compression::None);
        for i in 0..count {
            for j in 0..3 {
                builder.push(
                    1_000 + i as i64,
                    None,
                    Some(format!("{i}-{j}-{}", "v".repeat(100)).as_bytes()),
                    &[],
                );
            }
            let mut bytes = builder.finish(ProducerFields::NONE).unwrap();
            set_base_offset(&mut bytes, segment.next_offset);
            let header = BatchHeader::parse(&bytes).unwrap();
            segment.append(&bytes, &header, 512).unwrap();
            raw.extend_from_slice(&bytes);
        }
        raw
    }

    #[test]
    fn appended_batches_are_the_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 100).unwrap();
        let raw = fill(&mut segment, 20);
        assert_eq!(fs::read(log_path(dir.path(), 100)).unwrap(), raw);
        assert_eq!(segment.size, raw.len() as u64);
        assert_eq!(segment.next_offset, 160);
        assert_eq!(segment.max_timestamp, 1_019);
        // Sparse: an entry about every 512 bytes, the first at position 0.
        assert_eq!(segment.index.lookup(100), (100, 0));
        let (base, position) = segment.index.lookup(159);
        assert!(base > 100 && base <= 159 && position > 0);
    }

    #[test]
    fn a_scan_stops_at_a_torn_tail_and_names_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        let raw = fill(&mut segment, 5);
        let batch_len = raw.len() / 5;
        // Cut the last batch in half.
        let file = OpenOptions::new().write(true).open(log_path(dir.path(), 0)).unwrap();
        file.set_len((raw.len() - batch_len / 2) as u64).unwrap();
        let mut seen = 0;
        let (scanned, report) =
            Segment::open_scanned(dir.path(), 0, Continuity::Dense, 512, &mut |_| seen += 1).unwrap();
        assert_eq!(seen, 4);
        assert_eq!(report.valid_bytes, (4 * batch_len) as u64);
        assert!(report.damage.unwrap().contains("cut off"));
        assert_eq!(scanned.next_offset, 12);
    }

    #[test]
    fn a_scan_refuses_an_offset_gap_in_dense_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        let raw = fill(&mut segment, 3);
        let batch_len = raw.len() / 3;
        // Rewrite the third batch's base offset (outside the CRC) to skip ahead.
        let mut bytes = raw.clone();
        bytes[2 * batch_len..2 * batch_len + 8].copy_from_slice(&100i64.to_be_bytes());
        fs::write(log_path(dir.path(), 0), &bytes).unwrap();
        let (_, report) = Segment::open_scanned(dir.path(), 0, Continuity::Dense, 512, &mut |_| {}).unwrap();
        assert_eq!(report.valid_bytes, (2 * batch_len) as u64);
        assert!(report.damage.unwrap().contains("base offset 100"));
        // Compacted data may have gaps, so the same file passes with increasing offsets.
        let (_, report) = Segment::open_scanned(dir.path(), 0, Continuity::Increasing, 512, &mut |_| {}).unwrap();
        assert_eq!(report.damage, None);
    }

    #[test]
    fn sealed_segments_load_their_index_files_and_rebuild_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 7).unwrap();
        fill(&mut segment, 30);
        segment.write_indexes().unwrap();
        let loaded = Segment::open_sealed(dir.path(), 7, 512, 97, Continuity::Dense).unwrap();
        assert_eq!(loaded.index, segment.index);
        assert_eq!(loaded.time_index, segment.time_index);
        assert_eq!(
            (loaded.size, loaded.next_offset, loaded.max_timestamp),
            (segment.size, 97, 1_029)
        );

        // An index pointing past the end of the log is not trusted: rebuilt by a scan.
        let mut bad = segment.index.encode();
        let last = bad.len() - 4;
        bad[last..].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(index_path(dir.path(), 7), bad).unwrap();
        let rebuilt = Segment::open_sealed(dir.path(), 7, 512, 97, Continuity::Dense).unwrap();
        assert_eq!(rebuilt.index, segment.index);
        assert_eq!(rebuilt.next_offset, 97);
    }

    #[test]
    fn read_batches_skips_earlier_batches_and_stops_at_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        let raw = fill(&mut segment, 10);
        let batch_len = raw.len() / 10;
        let path = log_path(dir.path(), 0);
        let read = BatchRead {
            file: &segment.file,
            path: &path,
            start: 0,
            first_offset: 0,
            end: segment.size,
            continuity: Continuity::Dense,
            segment_next: segment.next_offset,
        };
        // From offset 7 (inside the third batch), at most two batches' worth of bytes.
        let (batches, bytes) = read.read(7, i64::MAX, 2 * batch_len).unwrap();
        assert_eq!(batches.iter().map(Batch::base_offset).collect::<Vec<_>>(), vec![6, 9]);
        assert_eq!(bytes, 2 * batch_len);
        // Nothing at or beyond `max_offset`.
        let (batches, _) = read.read(0, 6, usize::MAX).unwrap();
        assert_eq!(batches.len(), 2);
        // A limit smaller than one batch still returns that batch.
        let (batches, _) = read.read(0, i64::MAX, 1).unwrap();
        assert_eq!(batches.len(), 1);
        // A base offset that does not follow is damage, reported with its position.
        let mut bytes = fs::read(&path).unwrap();
        bytes[batch_len..batch_len + 8].copy_from_slice(&99i64.to_be_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = read.read(0, i64::MAX, usize::MAX).unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { position, .. } if position == batch_len as u64),
            "{err}"
        );
    }

    #[test]
    fn base_offsets_parse_only_from_segment_names() {
        assert_eq!(parse_base_offset("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_base_offset("00000000000000000042.log.swap", "log.swap"), Some(42));
        assert_eq!(parse_base_offset("42.log", "log"), None);
        assert_eq!(parse_base_offset("0000000000000000004x.log", "log"), None);
        assert_eq!(parse_base_offset("00000000000000000042.index", "log"), None);
    }
}
