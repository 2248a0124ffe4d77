//! Commit units: how the sink makes files visible exactly once.
//!
//! # The protocol
//!
//! All open files of one topic-partition (TP) form one **commit unit**, covering the log
//! offsets `[start, end)`: every record of the TP in that range is in exactly one of
//! its files (tombstones and dead letters in none). A file's key is a function of its
//! partition path, topic, partition and first offset only, so the same records always
//! give the same file names. When any rotation is due for a TP, its whole unit is
//! finished, in three steps:
//!
//! - **(a)** every file is finished: last row group, footer, remaining parts uploaded.
//!   Nothing is visible yet (a multipart upload shows nothing before completion; a
//!   small file is held in memory).
//! - **(b)** the unit's **manifest**, `_plexus/<connector>/<topic>/<partition>/<start:020>.json`
//!   = `{"start", "end", "files": [keys, sorted]}`, is written with `put_if_absent`.
//!   This is the commit point.
//! - **(c)** every file is completed, conditionally: a completion that finds an object
//!   under its key ([`Put::Exists`]) leaves it as it is. Then the TP's durable offset
//!   (what the runtime commits) becomes `end`.
//!
//! Units of a TP are finished strictly in order, so when the manifest of a unit exists,
//! every earlier unit is complete. On start, the sink aborts the multipart uploads a
//! crashed run left, and reads each TP's latest manifest M:
//!
//! - all of M's files exist: the TP resumes at `M.end`;
//! - otherwise it resumes at `M.start`, and the first unit is **forced to end at exactly
//!   `M.end`** (no rotation, idle timer or memory budget ends it sooner or later). The
//!   same records then form the same files with the same names; completing those that
//!   exist returns `Exists` and keeps them, the missing ones are created. (Its manifest
//!   write finds M: same content, or a fatal error naming both.)
//!
//! # Why exactly once
//!
//! - Crash before (b): no object of the unit is visible (uploads are aborted on start,
//!   small files were only in memory), no manifest: the runtime's committed offset is at
//!   most `start` (offsets are committed only after (c)), so the records are written
//!   again, into new files of a unit that may be cut differently. Nothing is doubled.
//! - Crash after (b), before or during (c): some files of the unit are visible, others
//!   not. The replay recreates exactly M's files from exactly M's records; those that
//!   exist are kept (their content is what the same records encode to), those missing are
//!   created. Each record is in one file of M, and each file of M ends up existing once.
//! - Crash after (c): M's files all exist; the TP resumes at `M.end`.
//!
//! Completions never overwrite, so no replay can change a file a reader has seen.

use std::collections::HashMap;
use std::time::Instant;

use plexus_connector::{ConnectorError, TopicPartition};
use plexus_connector_s3::{ObjectStore, Put};
use serde::{Deserialize, Serialize};

use crate::config::ParquetSinkConfig;
use crate::error::ParquetError;
use crate::writer::ParquetFile;

/// What a unit's manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The first offset the unit covers.
    pub start: i64,
    /// The offset after the last one it covers.
    pub end: i64,
    /// The keys of its files, sorted.
    pub files: Vec<String>,
}

/// What finished units wrote: counted when their files are complete.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Files made visible (or found complete, on a replay).
    pub files: u64,
    /// Rows in them.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Written {
    pub fn add(&mut self, other: Written) {
        self.files += other.files;
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// Where the manifests of a connector live.
pub(crate) fn manifest_prefix(connector: &str) -> String {
    format!("_plexus/{connector}/")
}

/// The manifest of the unit of `tp` starting at `start`.
pub(crate) fn manifest_key(connector: &str, tp: &TopicPartition, start: i64) -> String {
    format!(
        "{}{}/{}/{start:020}.json",
        manifest_prefix(connector),
        tp.topic,
        tp.partition
    )
}

/// The TP and start of a manifest key under `prefix`.
pub(crate) fn parse_manifest_key(prefix: &str, key: &str) -> Option<(TopicPartition, i64)> {
    let rest = key.strip_prefix(prefix)?;
    let (rest, file) = rest.rsplit_once('/')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    let start = file.strip_suffix(".json")?.parse().ok()?;
    Some((
        TopicPartition {
            topic: topic.to_owned(),
            partition: partition.parse().ok()?,
        },
        start,
    ))
}

/// A unit that a crash interrupted after its manifest: the replay must end exactly here
/// and make exactly these files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    pub manifest: Manifest,
}

/// The open files of one TP.
#[derive(Debug)]
pub(crate) struct CommitUnit {
    pub start: i64,
    pub replay: Option<Replay>,
    /// By (partition path, schema id).
    files: HashMap<(String, String), ParquetFile>,
    /// Records given to the unit (tombstones and dead letters included).
    pub records: u64,
    opened: Instant,
    pub last_record: Instant,
}

/// Why a unit is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rotation {
    Records,
    Size,
    Interval,
    Idle,
}

impl CommitUnit {
    pub fn new(start: i64, replay: Option<Replay>) -> CommitUnit {
        let now = Instant::now();
        CommitUnit {
            start,
            replay,
            files: HashMap::new(),
            records: 0,
            opened: now,
            last_record: now,
        }
    }

    /// The file for rows of `schema` under `path`, created by `create` the first time.
    pub fn file(
        &mut self,
        path: &str,
        schema: &str,
        create: impl FnOnce() -> Result<ParquetFile, ParquetError>,
    ) -> Result<&mut ParquetFile, ParquetError> {
        let key = (path.to_owned(), schema.to_owned());
        match self.files.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => Ok(entry.insert(create()?)),
        }
    }

    /// The file for rows of `schema` under `path`, if it was created.
    pub fn file_mut(&mut self, path: &str, schema: &str) -> Option<&mut ParquetFile> {
        self.files.get_mut(&(path.to_owned(), schema.to_owned()))
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes the unit holds in memory.
    pub fn buffered(&self) -> u64 {
        self.files.values().map(ParquetFile::buffered).sum()
    }

    /// Whether a rotation is due by count or size (checked between records).
    pub fn full(&self, config: &ParquetSinkConfig) -> Option<Rotation> {
        if self.replay.is_some() {
            return None;
        }
        if self.records >= config.rotate_records {
            return Some(Rotation::Records);
        }
        if self.files.values().any(|f| f.size() >= config.rotate_size) {
            return Some(Rotation::Size);
        }
        None
    }

    /// Whether any rotation is due now.
    pub fn due(&self, config: &ParquetSinkConfig, now: Instant) -> Option<Rotation> {
        if self.replay.is_some() {
            return None;
        }
        self.full(config).or_else(|| {
            if now.duration_since(self.opened) >= config.rotate_interval {
                Some(Rotation::Interval)
            } else if now.duration_since(self.last_record) >= config.rotate_idle {
                Some(Rotation::Idle)
            } else {
                None
            }
        })
    }

    /// Runs the protocol (see the module documentation) for the unit ending at `end`.
    /// Returns the manifest written and what its files hold, or `None` for a unit
    /// without files.
    pub async fn finish(
        self,
        store: &dyn ObjectStore,
        manifest_key: &str,
        end: i64,
    ) -> Result<Option<(Manifest, Written)>, ConnectorError> {
        let mut files: Vec<ParquetFile> = self.files.into_values().collect();
        files.sort_by(|a, b| a.key().cmp(b.key()));
        if files.is_empty() {
            if let Some(replay) = &self.replay {
                return Err(mismatch(
                    manifest_key,
                    &replay.manifest,
                    &Manifest {
                        start: self.start,
                        end,
                        files: Vec::new(),
                    },
                ));
            }
            return Ok(None);
        }
        // (a)
        for file in &mut files {
            file.finish(store).await?;
        }
        let manifest = Manifest {
            start: self.start,
            end,
            files: files.iter().map(|f| f.key().to_owned()).collect(),
        };
        if let Some(replay) = &self.replay
            && replay.manifest != manifest
        {
            return Err(mismatch(manifest_key, &replay.manifest, &manifest));
        }
        // (b)
        let body = serde_json::to_vec(&manifest)
            .map_err(|e| ConnectorError::fatal(format!("encode manifest `{manifest_key}`: {e}")))?;
        if store.put_if_absent(manifest_key, body.into()).await? == Put::Exists {
            let existing = store.get(manifest_key).await?.unwrap_or_default();
            match serde_json::from_slice::<Manifest>(&existing) {
                Ok(existing) if existing == manifest => {}
                Ok(existing) => return Err(mismatch(manifest_key, &existing, &manifest)),
                Err(e) => {
                    return Err(ParquetError::Inconsistent(format!(
                        "manifest `{manifest_key}` exists but cannot be read ({e}): {}",
                        String::from_utf8_lossy(&existing)
                    ))
                    .into());
                }
            }
        }
        // (c)
        let replaying = self.replay.is_some();
        let mut written = Written::default();
        for file in files {
            let key = file.key().to_owned();
            let records = file.records();
            written.add(Written {
                files: 1,
                rows: records,
                bytes: file.bytes(),
            });
            match file.complete(store).await? {
                Put::Created => tracing::debug!(key = %key, records, "File complete."),
                Put::Exists if replaying => tracing::info!(key = %key, "File already complete before a restart; kept."),
                Put::Exists => tracing::warn!(
                    key = %key,
                    "An object already existed under this key and was kept; another run (a reset connector?) wrote it."
                ),
            }
        }
        Ok(Some((manifest, written)))
    }

    /// Drops the unit's files; nothing of it becomes visible.
    pub async fn abort(self) -> Result<(), ConnectorError> {
        for file in self.files.into_values() {
            file.abort().await?;
        }
        Ok(())
    }
}

fn mismatch(key: &str, expected: &Manifest, actual: &Manifest) -> ConnectorError {
    ParquetError::Inconsistent(format!(
        "manifest `{key}` differs from what the records give now (a bug, or records that changed in the log): \
         stored {}, now {}",
        serde_json::to_string(expected).unwrap_or_default(),
        serde_json::to_string(actual).unwrap_or_default()
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip_and_sort_by_start() {
        let tp = TopicPartition {
            topic: "shop.orders".into(),
            partition: 7,
        };
        let key = manifest_key("export", &tp, 42);
        assert_eq!(key, "_plexus/export/shop.orders/7/00000000000000000042.json");
        assert_eq!(
            parse_manifest_key(&manifest_prefix("export"), &key),
            Some((tp.clone(), 42))
        );
        assert!(manifest_key("export", &tp, 9) < manifest_key("export", &tp, 10));
        assert_eq!(parse_manifest_key("_plexus/export/", "_plexus/export/x.json"), None);
    }
}
