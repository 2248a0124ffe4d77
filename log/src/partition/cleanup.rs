//! Retention (delete old segments) and compaction (keep the latest record per key).
//!
//! Both work only on sealed segments whose data is on stable storage, never on the
//! active segment, and both hold the partition lock only to swap the segment list:
//! reading and rewriting files happens outside it, so appends and reads go on.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{Partition, active};
use crate::batch::{Batch, BatchBuilder, ProducerFields, StoredRecord, set_base_offset};
use crate::config::CleanupPolicy;
use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::segment::{self, Segment};

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A sealed segment as compaction sees it.
struct SealedView {
    base_offset: i64,
    next_offset: i64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
}

impl Partition {
    /// Deletes the oldest sealed segments past `retention_time` (their newest record is
    /// older) or while the partition is larger than `retention_bytes`. The active
    /// segment is never deleted. `now` is in ms since the epoch.
    pub fn enforce_retention(&self, now: i64) -> Result<RetentionReport> {
        if self.config.cleanup_policy != CleanupPolicy::Delete {
            return Ok(RetentionReport {
                log_start_offset: self.start_offset(),
                ..RetentionReport::default()
            });
        }
        let deleted: Vec<Segment> = {
            let mut state = self.state.write();
            let mut total: u64 = state.segments.iter().map(|s| s.size).sum();
            let mut count = 0;
            for segment in &state.segments[..state.segments.len() - 1] {
                let too_old = self.config.retention_time.is_some_and(|limit| {
                    segment.max_timestamp != i64::MIN && segment.max_timestamp < now - limit.as_millis() as i64
                });
                let too_big = self
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total - segment.size >= limit);
                if !(too_old || too_big) {
                    break;
                }
                total -= segment.size;
                count += 1;
            }
            let deleted: Vec<Segment> = state.segments.drain(..count).collect();
            let start = state.segments[0].base_offset;
            state.unsynced.retain(|(base, _, _)| *base >= start);
            deleted
        };
        let start = self.start_offset();
        let mut report = RetentionReport {
            deleted_segments: deleted.len(),
            deleted_bytes: deleted.iter().map(|s| s.size).sum(),
            log_start_offset: start,
        };
        for segment in &deleted {
            segment.delete_files()?;
            if segment.base_offset < start {
                fsutil::remove_if_exists(&segment::producers_path(&self.dir, segment.base_offset))?;
            }
        }
        if !deleted.is_empty() {
            report.log_start_offset = start;
            tracing::info!(
                topic = %self.topic, partition = self.id,
                segments = report.deleted_segments, bytes = report.deleted_bytes, log_start_offset = start,
                "Retention deleted old segments."
            );
        }
        Ok(report)
    }

    /// Rewrites sealed, durable segments keeping only the latest record of each key
    /// (records without a key are kept), and dropping tombstones older than
    /// `delete_retention`. Offsets never change. `now` is in ms since the epoch.
    pub fn compact(&self, now: i64) -> Result<CompactionReport> {
        let Some(_running) = self.compacting.try_lock() else {
            return Ok(CompactionReport::default());
        };
        let sealed: Vec<SealedView> = {
            let state = self.state.read();
            let active_base = active(&state).base_offset;
            state
                .segments
                .iter()
                .filter(|s| s.base_offset < active_base && !state.unsynced.iter().any(|(b, _, _)| *b == s.base_offset))
                .map(|s| SealedView {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    file: Arc::clone(&s.file),
                    path: s.path.clone(),
                    size: s.size,
                })
                .collect()
        };
        let mut report = CompactionReport::default();
        if sealed.is_empty() {
            return Ok(report);
        }
        // The latest offset of every key in the sealed segments.
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for view in &sealed {
            for_each_batch(view, |batch| {
                for record in batch.records()? {
                    let record = record?;
                    if let Some(key) = record.key {
                        latest.insert(key, record.offset);
                    }
                }
                Ok(())
            })?;
        }
        let horizon = now.saturating_sub(self.config.delete_retention.as_millis() as i64);
        let keep = |record: &StoredRecord| match &record.key {
            None => true,
            Some(key) => {
                latest.get(key) == Some(&record.offset) && (record.value.is_some() || record.timestamp >= horizon)
            }
        };
        for view in &sealed {
            report.bytes_before += view.size;
            match self.rewrite_segment(view, &keep)? {
                Some((removed, size)) => {
                    report.segments_rewritten += 1;
                    report.records_removed += removed;
                    report.bytes_after += size;
                }
                None => report.bytes_after += view.size,
            }
        }
        if report.segments_rewritten > 0 {
            tracing::info!(
                topic = %self.topic, partition = self.id,
                segments = report.segments_rewritten, removed = report.records_removed,
                bytes_before = report.bytes_before, bytes_after = report.bytes_after,
                "Compaction rewrote segments."
            );
        }
        Ok(report)
    }

    /// Writes a copy of the segment with only the kept records and swaps it in; `None`
    /// when every record is kept (nothing to do). Returns (records removed, new size).
    fn rewrite_segment(&self, view: &SealedView, keep: &dyn Fn(&StoredRecord) -> bool) -> Result<Option<(u64, u64)>> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut removed = 0u64;
        let mut builder: Option<BatchBuilder> = None;
        for_each_batch(view, |batch| {
            let records: Vec<StoredRecord> = batch.records()?.collect::<std::result::Result<_, _>>()?;
            let kept = records.iter().filter(|r| keep(r)).count();
            removed += (records.len() - kept) as u64;
            if kept == records.len() {
                out.push(batch.bytes().clone());
            } else if kept > 0 {
                let header = batch.header();
                let compression = header.compression()?;
                let b = builder.get_or_insert_with(|| BatchBuilder::new(compression));
                if b.compression() != compression {
                    *b = BatchBuilder::new(compression);
                }
                for record in records.iter().filter(|r| keep(r)) {
                    let headers: Vec<(&str, Option<&[u8]>)> = record
                        .headers
                        .iter()
                        .map(|h| (h.key.as_str(), h.value.as_deref()))
                        .collect();
                    b.push_with_offset_delta(
                        (record.offset - header.base_offset) as i32,
                        record.timestamp,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        &headers,
                    )?;
                }
                let producer = ProducerFields {
                    producer_id: header.producer_id,
                    producer_epoch: header.producer_epoch,
                    base_sequence: header.base_sequence,
                };
                // Keeping the last offset delta keeps the batch's offset range, as Kafka does.
                let mut bytes = b.finish_with_last_offset_delta(producer, header.last_offset_delta)?;
                set_base_offset(&mut bytes, header.base_offset);
                out.push(bytes.freeze());
            }
            Ok(())
        })?;
        if removed == 0 {
            return Ok(None);
        }
        let dir = &self.dir;
        let base = view.base_offset;
        let final_path = segment::log_path(dir, base);
        let cleaned = final_path.with_extension("log.cleaned");
        let swap = final_path.with_extension("log.swap");
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&cleaned)
                .ctx("create", &cleaned)?;
            for bytes in &out {
                file.write_all(bytes).ctx("write", &cleaned)?;
            }
            file.sync_all().ctx("fsync", &cleaned)?;
        }
        // From here on the result is complete: recovery finishes the swap if we crash.
        fs::rename(&cleaned, &swap).ctx("rename", &cleaned)?;
        fsutil::sync_dir(dir)?;
        let new_segment = Segment::scan_replacement(dir, base, &swap, self.config.index_interval_bytes)?;
        let new_size = new_segment.size;
        let mut state = self.state.write();
        let Some(slot) = state
            .segments
            .iter()
            .position(|s| s.base_offset == base && s.size == view.size)
        else {
            // Retention deleted it meanwhile.
            drop(state);
            fsutil::remove_if_exists(&swap)?;
            return Ok(None);
        };
        fsutil::remove_if_exists(&segment::index_path(dir, base))?;
        fsutil::remove_if_exists(&segment::time_index_path(dir, base))?;
        fs::rename(&swap, &final_path).ctx("replace", &final_path)?;
        fsutil::sync_dir(dir)?;
        let mut new_segment = new_segment;
        new_segment.write_indexes()?;
        state.segments[slot] = new_segment;
        Ok(Some((removed, new_size)))
    }
}

/// Calls `f` with every batch of a sealed segment, in order.
fn for_each_batch(view: &SealedView, f: impl FnMut(&Batch) -> Result<()>) -> Result<()> {
    segment::for_each_batch(
        &view.file,
        &view.path,
        (view.base_offset, view.next_offset, view.size),
        f,
    )
}
