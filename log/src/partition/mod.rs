//! A partition: an ordered list of segments with dense offsets from 0, appended to at
//! the end, read from anywhere between its start and end offsets.

mod cleanup;
mod durability;
mod recovery;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::batch::{BatchBuilder, BatchHeader, ProducerFields, Record, set_base_offset};
use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{LogError, Result};
use crate::fetch::Fetch;
use crate::position::{POSITION_HEADER, Position, ProducerEntry, ProducerId, ProducerStates};
use crate::segment::{self, BatchRead, Continuity, Segment};
use crate::stats::PartitionStats;

pub use cleanup::{CompactionReport, RetentionReport};
use durability::GroupCommit;

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was written with offsets `base_offset..=last_offset`.
    Appended { base_offset: i64, last_offset: i64 },
    /// The producer already wrote this position (or a later one); nothing was written.
    /// A source that restarts and re-emits records treats this as success.
    AlreadyWritten { last: ProducerEntry },
}

impl AppendOutcome {
    /// The base offset, if the batch was written.
    pub fn base_offset(&self) -> Option<i64> {
        match self {
            AppendOutcome::Appended { base_offset, .. } => Some(*base_offset),
            AppendOutcome::AlreadyWritten { .. } => None,
        }
    }
}

/// One partition of a topic. Cheap to share: use it through `Arc<Partition>`.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    id: u32,
    dir: PathBuf,
    config: TopicConfig,
    state: RwLock<State>,
    /// The end offset readers may see; long polls wait on it.
    visible: watch::Sender<i64>,
    group_commit: GroupCommit,
    /// Held by the one compaction pass that may run at a time.
    compacting: parking_lot::Mutex<()>,
    stats: PartitionStats,
}

#[derive(Debug)]
struct State {
    /// Sorted by base offset; the last one is active. Never empty.
    segments: Vec<Segment>,
    producers: ProducerStates,
    /// Where readers must stop: offset, and the segment and byte it corresponds to.
    visible: VisibleEnd,
    /// Everything before this offset is known to be on stable storage.
    recovery_point: i64,
    /// Sealed segments whose data may not be on stable storage yet.
    unsynced: Vec<(i64, Arc<std::fs::File>, PathBuf)>,
    /// Set after a write or fsync failed part-way: appends are refused.
    poisoned: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VisibleEnd {
    offset: i64,
    segment_base: i64,
    position: u64,
}

impl Partition {
    /// Opens (and recovers) the partition stored in `dir`, creating it if empty.
    pub(crate) fn open(topic: &str, id: u32, dir: &Path, config: TopicConfig) -> Result<Partition> {
        let recovered = recovery::recover(dir, &config)?;
        let stats = PartitionStats::default();
        stats
            .opened_scanned_bytes
            .store(recovered.scanned_bytes, std::sync::atomic::Ordering::Relaxed);
        let end = recovered.segments.last().map_or(0, |s| s.next_offset);
        let visible = recovered.segments.last().map_or(
            VisibleEnd {
                offset: 0,
                segment_base: 0,
                position: 0,
            },
            |s| VisibleEnd {
                offset: s.next_offset,
                segment_base: s.base_offset,
                position: s.size,
            },
        );
        let state = State {
            segments: recovered.segments,
            producers: recovered.producers,
            visible,
            recovery_point: end,
            unsynced: Vec::new(),
            poisoned: None,
        };
        Ok(Partition {
            topic: topic.to_owned(),
            id,
            dir: dir.to_owned(),
            config,
            state: RwLock::new(state),
            visible: watch::Sender::new(end),
            group_commit: GroupCommit::new(end),
            compacting: parking_lot::Mutex::new(()),
            stats,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// The first offset still in the log.
    pub fn start_offset(&self) -> i64 {
        self.state.read().segments.first().map_or(0, |s| s.base_offset)
    }

    /// One past the last offset readers can see (with `FsyncPolicy::Always`, the last
    /// durable one).
    pub fn end_offset(&self) -> i64 {
        *self.visible.borrow()
    }

    /// One past the last offset known to be on stable storage (fsynced).
    pub fn durable_offset(&self) -> i64 {
        self.group_commit.durable()
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.read().segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.state.read().segments.len()
    }

    /// What this partition has appended, served and synced since it was opened.
    pub fn stats(&self) -> &PartitionStats {
        &self.stats
    }

    /// Why this partition refuses writes (a failed fsync or write), if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.state.read().poisoned.clone()
    }

    /// The last position `producer` wrote to this partition (also after a restart).
    pub fn producer_position(&self, producer: ProducerId) -> Option<ProducerEntry> {
        self.state.read().producers.get(producer).cloned()
    }

    /// Appends the records pushed into `builder` (which is emptied and can be reused).
    pub async fn append(self: &Arc<Self>, builder: &mut BatchBuilder) -> Result<AppendOutcome> {
        let bytes = builder.finish(ProducerFields::NONE)?;
        self.append_encoded(bytes, None).await
    }

    /// Appends the batch together with the producer's position in its source. If the
    /// partition already holds this position or a later one from the same producer,
    /// nothing is written and [`AppendOutcome::AlreadyWritten`] is returned.
    pub async fn append_with_position(
        self: &Arc<Self>,
        builder: &mut BatchBuilder,
        producer: ProducerId,
        position: Position,
    ) -> Result<AppendOutcome> {
        let bytes = seal_with_position(builder, producer, &position)?;
        self.append_encoded(bytes, Some((producer, position))).await
    }

    /// Appends owned records (a convenience over [`Partition::append`]).
    pub async fn append_records(self: &Arc<Self>, records: &[Record]) -> Result<AppendOutcome> {
        let mut builder = BatchBuilder::new(crate::batch::Compression::None);
        for record in records {
            builder.push_record(record);
        }
        self.append(&mut builder).await
    }

    /// Appends a finished batch (from [`BatchBuilder::finish`]); the write runs on the
    /// blocking pool and, with `FsyncPolicy::Always`, returns once the batch is durable.
    pub async fn append_encoded(
        self: &Arc<Self>,
        bytes: BytesMut,
        producer: Option<(ProducerId, Position)>,
    ) -> Result<AppendOutcome> {
        let outcome = self.append_encoded_unsynced(bytes, producer)?;
        if let Some(offset) = self.durable_target(&outcome) {
            self.wait_durable(offset).await?;
        }
        Ok(outcome)
    }

    /// [`Partition::append_encoded`] without waiting for the batch to be durable: the
    /// write is done when this returns; with `FsyncPolicy::Always` the caller waits
    /// with [`Partition::wait_durable`] for [`Partition::durable_target`] before it
    /// tells anyone the batch is durable. A writer that does not wait for one batch
    /// before writing the next lets one fsync cover several batches.
    pub fn append_encoded_unsynced(
        self: &Arc<Self>,
        bytes: BytesMut,
        producer: Option<(ProducerId, Position)>,
    ) -> Result<AppendOutcome> {
        let (outcome, rolled) = self.append_blocking(bytes, producer)?;
        // A sealed segment is flushed in the background whatever the policy, so
        // recovery after a crash only has to scan the active segment (under `Always`
        // the wait for the append's durability flushes it).
        if rolled && self.durable_target(&outcome).is_none() {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(err) = this.flush().await {
                    tracing::error!(topic = %this.topic, partition = this.id, error = %err, "Flushing a sealed segment failed.");
                }
            });
        }
        Ok(outcome)
    }

    /// The offset to wait for until an append is as durable as the topic's fsync policy
    /// promises before it returns: `Some` for an append under `FsyncPolicy::Always`.
    pub fn durable_target(&self, outcome: &AppendOutcome) -> Option<i64> {
        match (self.config.fsync, outcome) {
            (FsyncPolicy::Always, AppendOutcome::Appended { last_offset, .. }) => Some(last_offset + 1),
            _ => None,
        }
    }

    /// Waits until every record before `offset` is durable, syncing if no one else is
    /// (group commit: one sync covers every waiter it reaches).
    pub async fn wait_durable(self: &Arc<Self>, offset: i64) -> Result<()> {
        self.group_commit.wait_durable(self, offset).await
    }

    /// The synchronous core of an append: checks, rolls, writes, indexes. Also says
    /// whether the active segment rolled.
    pub(crate) fn append_blocking(
        &self,
        mut bytes: BytesMut,
        producer: Option<(ProducerId, Position)>,
    ) -> Result<(AppendOutcome, bool)> {
        if bytes.len() > self.config.max_batch_bytes as usize {
            return Err(LogError::BatchTooLarge {
                topic: self.topic.clone(),
                partition: self.id,
                size: bytes.len(),
                max: self.config.max_batch_bytes as usize,
            });
        }
        let mut state = self.state.write();
        if let Some(reason) = &state.poisoned {
            return Err(self.poisoned_error(reason.clone()));
        }
        if let Some((id, position)) = &producer
            && !state.producers.is_new(*id, position)
        {
            let last = state.producers.get(*id).cloned().unwrap_or(ProducerEntry {
                position: position.clone(),
                last_offset: -1,
            });
            return Ok((AppendOutcome::AlreadyWritten { last }, false));
        }
        let rolled = self.maybe_roll(&mut state, bytes.len() as u64)?;
        let base_offset = active(&state).next_offset;
        set_base_offset(&mut bytes, base_offset);
        let header = BatchHeader::parse(&bytes)?;
        let interval = self.config.index_interval_bytes;
        let segment = active_mut(&mut state);
        if let Err(err) = segment.append(&bytes, &header, interval) {
            return Err(match err {
                LogError::Poisoned { reason, .. } => {
                    state.poisoned = Some(reason.clone());
                    self.poisoned_error(reason)
                }
                other => other,
            });
        }
        let last_offset = header.last_offset();
        self.stats
            .appended(u64::try_from(header.record_count).unwrap_or(0), bytes.len() as u64);
        if let Some((id, position)) = producer {
            state.producers.update(id, position, last_offset);
        }
        if self.config.fsync != FsyncPolicy::Always {
            let segment = active(&state);
            let end = VisibleEnd {
                offset: segment.next_offset,
                segment_base: segment.base_offset,
                position: segment.size,
            };
            state.visible = end;
            self.visible.send_replace(end.offset);
        }
        Ok((
            AppendOutcome::Appended {
                base_offset,
                last_offset,
            },
            rolled,
        ))
    }

    /// Reads whole batches from `offset` up to about `max_bytes` (at least one batch if
    /// any is available). An offset equal to the end offset returns an empty fetch.
    pub async fn read(self: &Arc<Self>, offset: i64, max_bytes: usize) -> Result<Fetch> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.read_blocking(offset, max_bytes))
            .await
            .map_err(|e| LogError::io("read", &self.dir, std::io::Error::other(e.to_string())))?
    }

    /// Like [`Partition::read`], but waits up to `timeout` for data when `offset` is at
    /// the end (a long poll: the task sleeps until an append or the timeout).
    pub async fn read_wait(self: &Arc<Self>, offset: i64, max_bytes: usize, timeout: Duration) -> Result<Fetch> {
        let mut rx = self.visible.subscribe();
        if *rx.borrow_and_update() <= offset {
            // Errors mean the sender is gone (partition dropped): just read what is there.
            let _ = tokio::time::timeout(timeout, rx.wait_for(|end| *end > offset)).await;
        }
        self.read(offset, max_bytes).await
    }

    /// The synchronous core of a read.
    pub(crate) fn read_blocking(&self, offset: i64, max_bytes: usize) -> Result<Fetch> {
        let mut from = offset;
        loop {
            let (file, path, start, first_offset, end, segment_next, start_offset, visible, next_segment, damage) = {
                let state = self.state.read();
                let start_offset = state.segments.first().map_or(0, |s| s.base_offset);
                let visible = state.visible;
                if offset < start_offset || offset > visible.offset {
                    return Err(LogError::OffsetOutOfRange {
                        topic: self.topic.clone(),
                        partition: self.id,
                        offset,
                        start: start_offset,
                        end: visible.offset,
                    });
                }
                // The segment holding `from`: the last one starting at or before it,
                // moving on past segments that end before it (compaction leaves gaps).
                let from_checked = from.max(start_offset);
                let mut idx = state
                    .segments
                    .partition_point(|s| s.base_offset <= from_checked)
                    .saturating_sub(1);
                while idx + 1 < state.segments.len() && state.segments[idx].next_offset <= from_checked {
                    idx += 1;
                }
                let segment = &state.segments[idx];
                let end = match segment.base_offset.cmp(&visible.segment_base) {
                    std::cmp::Ordering::Less => segment.size,
                    std::cmp::Ordering::Equal => visible.position.min(segment.size),
                    std::cmp::Ordering::Greater => 0,
                };
                let (first_offset, start) = segment.index.lookup(from_checked);
                let next_segment = state.segments.get(idx + 1).map(|s| s.base_offset);
                (
                    Arc::clone(&segment.file),
                    segment.path.clone(),
                    u64::from(start),
                    first_offset,
                    end,
                    segment.next_offset,
                    start_offset,
                    visible.offset,
                    next_segment,
                    segment.damage.clone(),
                )
            };
            let (batches, bytes) = if start < end && from < visible {
                let read = BatchRead {
                    file: &file,
                    path: &path,
                    start,
                    first_offset,
                    end,
                    continuity: self.continuity(),
                    segment_next,
                };
                read.read(from, visible, max_bytes)?
            } else {
                (Vec::new(), 0)
            };
            let reached = batches
                .first()
                .is_some_and(|b| b.base_offset() <= from.max(start_offset));
            if let Some((position, reason)) = damage
                && !reached
            {
                // The offset lies in or past the damaged part of a sealed segment.
                return Err(LogError::Corrupt { path, position, reason });
            }
            match next_segment {
                // Nothing at or after `from` in this segment (compaction removed its
                // tail): go on with the next one.
                Some(next) if batches.is_empty() && next < visible => from = next,
                _ => {
                    let records = batches.iter().map(|b| b.record_count() as u64).sum();
                    self.stats.fetched(records, bytes as u64);
                    return Ok(Fetch::new(offset, batches, bytes, start_offset, visible));
                }
            }
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp` (ms), or
    /// `None` if every record is older.
    pub async fn offset_for_timestamp(self: &Arc<Self>, timestamp: i64) -> Result<Option<i64>> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.offset_for_timestamp_blocking(timestamp))
            .await
            .map_err(|e| LogError::io("search", &self.dir, std::io::Error::other(e.to_string())))?
    }

    pub(crate) fn offset_for_timestamp_blocking(&self, timestamp: i64) -> Result<Option<i64>> {
        let mut from = {
            let state = self.state.read();
            let Some(segment) = state
                .segments
                .iter()
                .find(|s| s.max_timestamp >= timestamp && s.base_offset < state.visible.offset)
            else {
                return Ok(None);
            };
            segment.time_index.lookup(timestamp).max(segment.base_offset)
        };
        loop {
            let fetch = self.read_blocking(from, 1 << 20)?;
            if fetch.batches().is_empty() {
                return Ok(None);
            }
            for batch in fetch.batches() {
                if batch.max_timestamp() < timestamp {
                    continue;
                }
                for record in batch.records()? {
                    let record = record?;
                    if record.offset >= from && record.timestamp >= timestamp {
                        return Ok(Some(record.offset));
                    }
                }
            }
            from = fetch.next_offset();
        }
    }

    /// Forces everything appended so far, including sealed segments, to stable storage.
    pub async fn flush(self: &Arc<Self>) -> Result<()> {
        self.group_commit.sync_now(self).await
    }

    /// Rolls the active segment when the next batch would overflow it or it is too old.
    fn maybe_roll(&self, state: &mut State, incoming: u64) -> Result<bool> {
        let segment = active(state);
        if segment.size == 0 {
            return Ok(false);
        }
        let too_big = segment.size + incoming > self.config.segment_bytes;
        let too_old = SystemTime::now()
            .duration_since(segment.created)
            .is_ok_and(|age| age >= self.config.segment_time);
        if too_big || too_old {
            self.roll(state)?;
        }
        Ok(too_big || too_old)
    }

    /// Seals the active segment and starts a new one at the end offset.
    fn roll(&self, state: &mut State) -> Result<()> {
        let base = active(state).next_offset;
        // The producer state as of the new segment's start, so recovery only has to
        // replay the active segment.
        crate::fsutil::write_atomic(&segment::producers_path(&self.dir, base), &state.producers.encode())?;
        // Everything that can fail comes before the new segment joins the list, so a
        // failed roll leaves the old segment active and the next append retries.
        let old = active_mut(state);
        old.write_indexes()?;
        let new = Segment::create(&self.dir, base)?;
        let old = active_mut(state);
        let unsynced = (old.base_offset, Arc::clone(&old.file), old.path.clone());
        state.unsynced.push(unsynced);
        state.segments.push(new);
        crate::fsutil::sync_dir(&self.dir)?;
        tracing::debug!(topic = %self.topic, partition = self.id, base_offset = base, "Rolled a new segment.");
        Ok(())
    }

    /// Seals the active segment now, if it holds anything, and starts a new one.
    pub fn roll_now(&self) -> Result<()> {
        let mut state = self.state.write();
        if active(&state).size > 0 {
            self.roll(&mut state)?;
        }
        Ok(())
    }

    /// How the offsets of consecutive batches relate in this partition's segments.
    pub(crate) fn continuity(&self) -> Continuity {
        match self.config.cleanup_policy {
            crate::config::CleanupPolicy::Delete => Continuity::Dense,
            crate::config::CleanupPolicy::Compact => Continuity::Increasing,
        }
    }

    /// Marks the partition read-only and returns the error to report.
    fn poison(&self, reason: String) -> LogError {
        self.state.write().poisoned = Some(reason.clone());
        self.poisoned_error(reason)
    }

    fn poisoned_error(&self, reason: String) -> LogError {
        LogError::Poisoned {
            topic: self.topic.clone(),
            partition: self.id,
            reason,
        }
    }
}

fn active(state: &State) -> &Segment {
    // `segments` is never empty: recovery creates a segment for an empty partition.
    &state.segments[state.segments.len() - 1]
}

fn active_mut(state: &mut State) -> &mut Segment {
    let last = state.segments.len() - 1;
    &mut state.segments[last]
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encodes `builder`'s records as one batch of `producer` carrying `position`, as
/// [`Partition::append_with_position`] does before writing, for
/// [`Partition::append_encoded`] with `Some((producer, position))`. The encoding and
/// compression are the costly part of an append and touch no partition, so a writer
/// may run them on another thread while an earlier batch is written.
pub fn seal_with_position(builder: &mut BatchBuilder, producer: ProducerId, position: &Position) -> Result<BytesMut> {
    builder.add_header_to_last(POSITION_HEADER, position.as_bytes())?;
    let fields = ProducerFields {
        producer_id: producer.get(),
        producer_epoch: 0,
        base_sequence: -1,
    };
    Ok(builder.finish(fields)?)
}
