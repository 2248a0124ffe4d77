//! Making appends durable: group commit, the recovery-point checkpoint, and flushes.
//!
//! All fsyncs of a partition go through one leader at a time. An append that needs its
//! batch durable either becomes the leader (and syncs everything written so far,
//! including the batches of appends that arrived meanwhile) or waits for the current
//! leader to finish; so concurrent appends share one fsync.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Mutex, watch};

use super::{Partition, VisibleEnd};
use crate::error::{LogError, Result};
use crate::fsutil;

const RECOVERY_POINT_FILE: &str = "recovery-point";

/// Written by a clean close, removed by the next open: the active segment's base
/// offset, size and end offset, which its index files and the producer snapshot at
/// its end were written for.
const CLEAN_CLOSE_FILE: &str = "clean-close";

/// What a clean close left for the next open (see [`CLEAN_CLOSE_FILE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CleanClose {
    pub base: i64,
    pub size: u64,
    pub end: i64,
}

#[derive(Debug)]
pub(super) struct GroupCommit {
    /// Everything before this offset is on stable storage.
    durable: watch::Sender<i64>,
    leader: Mutex<()>,
}

impl GroupCommit {
    pub fn new(durable: i64) -> Self {
        GroupCommit {
            durable: watch::Sender::new(durable),
            leader: Mutex::new(()),
        }
    }

    /// Everything before this offset is on stable storage.
    pub fn durable(&self) -> i64 {
        *self.durable.borrow()
    }

    /// Returns once every offset before `target` is durable, syncing if needed.
    pub async fn wait_durable(&self, partition: &Arc<Partition>, target: i64) -> Result<()> {
        let mut rx = self.durable.subscribe();
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            match self.leader.try_lock() {
                Ok(guard) => {
                    let _leader = Leader {
                        guard: Some(guard),
                        durable: &self.durable,
                    };
                    if *self.durable.borrow() >= target {
                        return Ok(());
                    }
                    self.sync_as_leader(partition).await?;
                }
                Err(_) => {
                    if rx.changed().await.is_err() {
                        return Err(LogError::Closed);
                    }
                }
            }
        }
    }

    /// Syncs now: everything written before this call is durable when it returns.
    pub async fn sync_now(&self, partition: &Arc<Partition>) -> Result<()> {
        // Waiting for the leader role (not just for the current leader's result) makes
        // sure the sync starts after this call, so it covers everything written so far.
        let _leader = Leader {
            guard: Some(self.leader.lock().await),
            durable: &self.durable,
        };
        if partition.needs_sync() {
            self.sync_as_leader(partition).await?;
        }
        Ok(())
    }

    /// Runs one sync on the blocking pool and publishes the new durable offset. Only
    /// the holder of the leader role calls this.
    async fn sync_as_leader(&self, partition: &Arc<Partition>) -> Result<()> {
        let this = Arc::clone(partition);
        let end = tokio::task::spawn_blocking(move || this.sync_blocking())
            .await
            .map_err(|e| {
                if e.is_cancelled() {
                    // The runtime is shutting down: nothing is known to have failed.
                    LogError::Closed
                } else {
                    partition.poison(format!("fsync task failed: {e}"))
                }
            })??;
        self.durable.send_if_modified(|d| {
            let advanced = end > *d;
            *d = (*d).max(end);
            advanced
        });
        Ok(())
    }
}

/// The leader role. Giving it up (also by cancellation or error) wakes every waiter,
/// even if the durable offset did not move: a waiter that found the role taken must get
/// the chance to take it, or it would sleep forever.
struct Leader<'a> {
    guard: Option<tokio::sync::MutexGuard<'a, ()>>,
    durable: &'a watch::Sender<i64>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Release first, then notify: a woken waiter must find the role free.
        self.guard.take();
        self.durable.send_modify(|_| {});
    }
}

impl Partition {
    /// Whether anything written is not known to be durable.
    fn needs_sync(&self) -> bool {
        let state = self.state.read();
        !state.unsynced.is_empty() || state.recovery_point < super::active(&state).next_offset
    }

    /// Syncs sealed segments not yet synced and the active segment up to what is written
    /// now; returns the offset everything before which is durable. Only the group-commit
    /// leader calls this.
    pub(super) fn sync_blocking(&self) -> Result<i64> {
        let (sealed, active, point) = {
            let mut state = self.state.write();
            if let Some(reason) = &state.poisoned {
                return Err(self.poisoned_error(reason.clone()));
            }
            let sealed = std::mem::take(&mut state.unsynced);
            let segment = super::active(&state);
            let point = VisibleEnd {
                offset: segment.next_offset,
                segment_base: segment.base_offset,
                position: segment.size,
            };
            (sealed, (Arc::clone(&segment.file), segment.path.clone()), point)
        };
        for (_, file, path) in sealed.iter().chain(std::iter::once(&(0, active.0, active.1))) {
            let started = Instant::now();
            let synced = file.sync_data();
            self.stats.fsync.observe(started.elapsed());
            if let Err(err) = synced {
                // After a failed fsync the page cache no longer tells what is on disk
                // (PostgreSQL's "fsyncgate"): stop writing until recovery has looked.
                let reason = format!("fsync of `{}` failed: {err}", path.display());
                return Err(self.poison(reason));
            }
        }
        let mut state = self.state.write();
        state.recovery_point = state.recovery_point.max(point.offset);
        // Equal offsets in a later segment happen after a roll: move on to the new
        // segment so the sealed one is no longer where readers stop.
        if point.offset > state.visible.offset
            || (point.offset == state.visible.offset && point.segment_base > state.visible.segment_base)
        {
            state.visible = point;
            self.visible.send_replace(point.offset);
        }
        let checkpoint = state.recovery_point;
        drop(state);
        if !sealed.is_empty() {
            write_recovery_point(&self.dir, checkpoint)?;
        }
        Ok(point.offset)
    }

    /// Flushes everything and records the recovery point, for a clean close; then
    /// writes what lets the next open skip scanning the active segment: its indexes,
    /// the producer positions at its end, and the marker naming them.
    pub(crate) fn close_blocking(&self) -> Result<()> {
        let end = self.sync_blocking()?;
        write_recovery_point(&self.dir, end)?;
        let mut state = self.state.write();
        if state.poisoned.is_some() {
            return Ok(());
        }
        let producers = state.producers.encode();
        let segment = super::active_mut(&mut state);
        if segment.next_offset != end {
            // Appended to since the flush (a straggler): the next open scans.
            return Ok(());
        }
        segment.write_indexes()?;
        fsutil::write_atomic(&crate::segment::producers_path(&self.dir, end), &producers)?;
        let marker = format!("{} {} {end}\n", segment.base_offset, segment.size);
        fsutil::write_atomic(&self.dir.join(CLEAN_CLOSE_FILE), marker.as_bytes())
    }
}

/// Reads and removes the marker of a clean close: it describes the partition as that
/// close left it, and only the next open may use it.
pub(super) fn take_clean_close(dir: &Path) -> Result<Option<CleanClose>> {
    let path = dir.join(CLEAN_CLOSE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io("read the clean-close marker", path, e)),
    };
    fsutil::remove_if_exists(&path)?;
    let mut fields = text.split_whitespace().map(str::parse::<i64>);
    Ok(match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(base)), Some(Ok(size)), Some(Ok(end))) => {
            u64::try_from(size).ok().map(|size| CleanClose { base, size, end })
        }
        _ => None,
    })
}

/// Everything before the returned offset was on stable storage when it was written.
pub(super) fn read_recovery_point(dir: &Path) -> i64 {
    std::fs::read_to_string(dir.join(RECOVERY_POINT_FILE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn write_recovery_point(dir: &Path, offset: i64) -> Result<()> {
    fsutil::write_atomic(&dir.join(RECOVERY_POINT_FILE), format!("{offset}\n").as_bytes())
}
