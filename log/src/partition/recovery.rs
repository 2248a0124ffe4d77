//! Opening a partition after a clean or an unclean shutdown.
//!
//! Sealed segments before the recovery point are trusted with their index files (or
//! rebuilt if those do not match). Every segment that may hold data written after the
//! last known fsync, including the active one, is scanned batch by batch; the first
//! batch that fails a check ends the valid data, and the rest is cut off: a torn or
//! corrupt tail after a crash. Producer positions come from the snapshot at the first
//! scanned segment, plus the batches the scan sees.
//!
//! After a clean close nothing needs scanning: the close wrote the active segment's
//! indexes and the producer positions at its end, and a marker naming its size, which
//! the next open takes (and removes) when the files still match it.

use std::fs;
use std::path::Path;

use crate::batch::Batch;
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::fsutil;
use crate::position::{POSITION_HEADER, Position, ProducerId, ProducerStates};
use crate::segment::{self, Continuity, Segment};

use super::durability::{CleanClose, read_recovery_point, take_clean_close, write_recovery_point};

pub(super) struct Recovered {
    pub segments: Vec<Segment>,
    pub producers: ProducerStates,
    /// Bytes of segments read batch by batch.
    pub scanned_bytes: u64,
}

pub(super) fn recover(dir: &Path, config: &TopicConfig) -> Result<Recovered> {
    fs::create_dir_all(dir).ctx("create partition directory", dir)?;
    let bases = tidy_and_list(dir)?;
    let clean = take_clean_close(dir)?;
    if bases.is_empty() {
        return Ok(Recovered {
            segments: vec![Segment::create(dir, 0)?],
            producers: ProducerStates::default(),
            scanned_bytes: 0,
        });
    }
    let interval = config.index_interval_bytes;
    let recovery_point = read_recovery_point(dir);
    // The first segment that may hold data past the recovery point.
    let first_scanned = bases.partition_point(|&b| b <= recovery_point).saturating_sub(1);

    let mut segments = Vec::with_capacity(bases.len());
    let sealed_continuity = match config.cleanup_policy {
        CleanupPolicy::Compact => Continuity::Increasing,
        CleanupPolicy::Delete => Continuity::Dense,
    };
    for (i, &base) in bases[..first_scanned].iter().enumerate() {
        segments.push(Segment::open_sealed(
            dir,
            base,
            interval,
            bases[i + 1],
            sealed_continuity,
        )?);
    }
    let last = bases.len() - 1;
    if first_scanned == last
        && let Some(clean) = clean
        && clean.end == recovery_point
        && let Some((segment, states)) = open_clean(dir, bases[last], clean)?
    {
        segments.push(segment);
        return Ok(Recovered {
            segments,
            producers: states,
            scanned_bytes: 0,
        });
    }
    let mut producers = producer_snapshot_before(dir, &segments, bases[first_scanned])?;

    let mut damaged = false;
    let mut scanned_bytes = 0;
    for (i, &base) in bases.iter().enumerate().skip(first_scanned) {
        if damaged {
            // Everything after a torn tail was written after it, so it is not durable either.
            tracing::warn!(segment = %segment::log_path(dir, base).display(), "Deleting a segment written after a damaged one.");
            delete_segment_files(dir, base)?;
            continue;
        }
        let continuity = if i == last {
            Continuity::Dense
        } else {
            sealed_continuity
        };
        let (mut segment, report) = Segment::open_scanned(dir, base, continuity, interval, &mut |batch| {
            replay_position(&mut producers, batch)
        })?;
        scanned_bytes += report.valid_bytes;
        if let Some(reason) = report.damage {
            tracing::warn!(
                segment = %segment.path.display(),
                position = report.valid_bytes,
                dropped_bytes = report.file_bytes - report.valid_bytes,
                reason = %reason,
                "Truncating a torn or corrupt tail."
            );
            segment.truncate(report.valid_bytes)?;
            damaged = true;
        }
        if i < last && !damaged {
            segment.write_indexes()?;
        }
        segments.push(segment);
    }
    // Whatever the scan kept may still sit only in the page cache (a process crash
    // before the fsync of an unacknowledged batch, or of a freshly sealed segment);
    // make it durable before it is served as such.
    for segment in segments.iter().skip(first_scanned).filter(|s| s.size > 0) {
        segment.file.sync_data().ctx("fsync", &segment.path)?;
    }
    // Never leave a checkpoint beyond the end: offsets written again after a
    // truncation must be scanned by the next recovery too.
    let end = segments.last().map_or(0, |s| s.next_offset);
    if recovery_point > end {
        write_recovery_point(dir, end)?;
    }
    Ok(Recovered {
        segments,
        producers,
        scanned_bytes,
    })
}

/// The active segment at `base` and the producer positions at its end, as the clean
/// close `clean` left them, if the files still match it (a write after the close
/// changes the size: then the segment is scanned).
fn open_clean(dir: &Path, base: i64, clean: CleanClose) -> Result<Option<(Segment, ProducerStates)>> {
    if clean.base != base {
        return Ok(None);
    }
    let Some(segment) = Segment::open_closed_cleanly(dir, base, clean.end)? else {
        return Ok(None);
    };
    if segment.size != clean.size {
        return Ok(None);
    }
    let Some(states) = read_snapshot(dir, clean.end)? else {
        return Ok(None);
    };
    // The snapshot at the end is the active segment's own when it is empty (written
    // when it was rolled); otherwise it served this open only.
    if clean.end != base {
        fsutil::remove_if_exists(&segment::producers_path(dir, clean.end))?;
    }
    Ok(Some((segment, states)))
}

/// Producer state as of the start of the segment at `base`: its snapshot if present,
/// otherwise the newest earlier snapshot (or nothing) replayed over the sealed segments.
fn producer_snapshot_before(dir: &Path, sealed: &[Segment], base: i64) -> Result<ProducerStates> {
    if let Some(states) = read_snapshot(dir, base)? {
        return Ok(states);
    }
    let mut from = None;
    for segment in sealed.iter().rev() {
        if let Some(states) = read_snapshot(dir, segment.base_offset)? {
            from = Some((segment.base_offset, states));
            break;
        }
    }
    let (from_base, mut states) = from.unwrap_or((i64::MIN, ProducerStates::default()));
    for segment in sealed.iter().filter(|s| s.base_offset >= from_base) {
        let range = (segment.base_offset, segment.next_offset, segment.size);
        segment::for_each_batch(&segment.file, &segment.path, range, |batch| {
            replay_position(&mut states, batch);
            Ok(())
        })?;
    }
    Ok(states)
}

fn read_snapshot(dir: &Path, base: i64) -> Result<Option<ProducerStates>> {
    let path = segment::producers_path(dir, base);
    match fs::read(&path) {
        Ok(bytes) => match ProducerStates::decode(&bytes, &path) {
            Ok(states) => Ok(Some(states)),
            Err(err) => {
                tracing::warn!(error = %err, "Ignoring a damaged producer snapshot; replaying batches instead.");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read producer snapshot", path, e)),
    }
}

/// Takes the producer position from a batch written with one.
pub(crate) fn replay_position(states: &mut ProducerStates, batch: &Batch) {
    let header = batch.header();
    let Some(producer) = ProducerId::new(header.producer_id) else {
        return;
    };
    let Ok(records) = batch.records() else { return };
    let Some(Ok(last)) = records.last() else { return };
    if let Some(position) = last
        .headers
        .iter()
        .rev()
        .find(|h| h.key == POSITION_HEADER)
        .and_then(|h| h.value.clone())
    {
        states.update(producer, Position::from_bytes(position), header.last_offset());
    }
}

/// Lists segment base offsets in order after finishing or discarding interrupted work:
/// temporary files are deleted, a compaction result marked complete (`.swap`) replaces
/// its segment, an incomplete one (`.cleaned`) is deleted.
fn tidy_and_list(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).ctx("list partition directory", dir)? {
        let entry = entry.ctx("list partition directory", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.ends_with(".tmp") || name.ends_with(".cleaned") {
            fsutil::remove_if_exists(&path)?;
        } else if let Some(base) = segment::parse_base_offset(name, "log.swap") {
            swaps.push(base);
        } else if let Some(base) = segment::parse_base_offset(name, "log") {
            bases.push(base);
        }
    }
    for base in swaps {
        let log = segment::log_path(dir, base);
        fsutil::remove_if_exists(&segment::index_path(dir, base))?;
        fsutil::remove_if_exists(&segment::time_index_path(dir, base))?;
        let swap = log.with_extension("log.swap");
        fs::rename(&swap, &log).ctx("finish compaction of", &log)?;
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn delete_segment_files(dir: &Path, base: i64) -> Result<()> {
    fsutil::remove_if_exists(&segment::log_path(dir, base))?;
    fsutil::remove_if_exists(&segment::index_path(dir, base))?;
    fsutil::remove_if_exists(&segment::time_index_path(dir, base))?;
    fsutil::remove_if_exists(&segment::producers_path(dir, base))
}
