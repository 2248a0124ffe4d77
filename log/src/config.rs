//! Settings of the log and of each topic.
//!
//! These are plain typed values; the TOML surface (with `"30s"` and `"64MiB"`) lives in
//! `plexus-config` and converts into them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// When appended data is forced to stable storage with `fsync`.
///
/// What each policy survives, for an append that has returned successfully:
///
/// | policy | process crash (kill -9, panic) | machine crash (power loss, kernel panic) |
/// |---|---|---|
/// | `Always` | kept | kept |
/// | `Interval(d)` | kept | loses at most the appends of the last `d` (plus one fsync) |
/// | `Never` | kept | loses whatever the kernel had not written back (typically up to 30 s) |
///
/// A process crash never loses an acknowledged append under any policy, because every
/// append reaches the kernel with `write` before it is acknowledged. With `Always`,
/// concurrent appends to a partition share one `fsync` (group commit), and readers see a
/// batch only once it is durable, so no consumer can observe data a machine crash would
/// take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "policy", rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before acknowledging each append (concurrent appends share one fsync).
    Always,
    /// fsync in the background every interval.
    Interval {
        #[serde(with = "millis")]
        interval: Duration,
    },
    /// Never fsync explicitly; rely on the kernel's write-back (sealed segments are still
    /// flushed in the background when they roll).
    #[default]
    Never,
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CleanupPolicy {
    /// Whole segments are deleted past `retention_time` or `retention_bytes`.
    #[default]
    Delete,
    /// Only the latest record per key is kept; tombstones go after `delete_retention`.
    Compact,
}

/// Per-topic settings; they survive restarts in the topic's metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Number of partitions, fixed at creation.
    pub partitions: u32,
    /// Segments whose newest record is older than this are deleted (`None`: keep forever).
    #[serde(with = "opt_millis")]
    pub retention_time: Option<Duration>,
    /// Oldest segments are deleted while a partition is larger than this (`None`: no limit).
    pub retention_bytes: Option<u64>,
    /// A segment rolls when the next batch would make it larger than this.
    pub segment_bytes: u64,
    /// A segment rolls when it is older than this.
    #[serde(with = "millis")]
    pub segment_time: Duration,
    pub cleanup_policy: CleanupPolicy,
    pub fsync: FsyncPolicy,
    /// How long compaction keeps a tombstone (a record with a key and no value), counted
    /// from the tombstone's timestamp, so that slow consumers still see the delete.
    #[serde(with = "millis")]
    pub delete_retention: Duration,
    /// Bytes of batches between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u32,
    /// Largest batch accepted, in bytes.
    pub max_batch_bytes: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_time: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_time: Duration::from_secs(7 * 24 * 3600),
            cleanup_policy: CleanupPolicy::Delete,
            fsync: FsyncPolicy::Never,
            delete_retention: Duration::from_secs(24 * 3600),
            index_interval_bytes: 4096,
            max_batch_bytes: 16 << 20,
        }
    }
}

impl TopicConfig {
    /// A compacted topic with durable appends, as used for internal state.
    pub fn compacted() -> Self {
        TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            retention_time: None,
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            ..TopicConfig::default()
        }
    }

    /// Checks values that cannot work, naming the topic and the setting.
    pub fn validate(&self, topic: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(LogError::InvalidTopicConfig {
                topic: topic.to_owned(),
                reason,
            })
        };
        if self.partitions == 0 || self.partitions > 10_000 {
            return bad(format!(
                "`partitions` is {}; it must be between 1 and 10000",
                self.partitions
            ));
        }
        // Offsets and positions inside a segment are 32-bit in the indexes.
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return bad(format!(
                "`segment_bytes` is {}; it must be between 1 KiB and 2 GiB",
                self.segment_bytes
            ));
        }
        if self.segment_time.is_zero() {
            return bad("`segment_time` must be greater than zero".into());
        }
        if let FsyncPolicy::Interval { interval } = self.fsync
            && interval.is_zero()
        {
            return bad("the fsync interval must be greater than zero; use `always` to fsync every batch".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("`index_interval_bytes` must be greater than zero".into());
        }
        if self.max_batch_bytes < 128 || self.max_batch_bytes as u64 > self.segment_bytes {
            return bad(format!(
                "`max_batch_bytes` is {}; it must be at least 128 and at most `segment_bytes` ({})",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        Ok(())
    }
}

/// Settings of an embedded log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Where topics live. Created if missing; locked while the log is open.
    pub data_dir: PathBuf,
    /// Create a topic (with `default_topic`) on its first append instead of failing.
    pub auto_create_topics: bool,
    /// Settings for automatically created topics.
    pub default_topic: TopicConfig,
    /// How often retention and compaction run in the background.
    pub cleanup_interval: Duration,
}

impl LogConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            data_dir: data_dir.into(),
            auto_create_topics: false,
            default_topic: TopicConfig::default(),
            cleanup_interval: Duration::from_secs(30),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u64::MAX as u128) as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_round_trips_through_json() {
        let config = TopicConfig {
            fsync: FsyncPolicy::Interval {
                interval: Duration::from_millis(250),
            },
            retention_time: None,
            ..TopicConfig::compacted()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(
            json.contains(r#""fsync":{"policy":"interval","interval":250}"#),
            "{json}"
        );
        let back: TopicConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn impossible_values_are_rejected_with_the_setting_named() {
        let config = TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        };
        let err = config.validate("orders").unwrap_err().to_string();
        assert!(err.contains("orders") && err.contains("partitions"), "{err}");

        let config = TopicConfig {
            segment_bytes: 10,
            ..TopicConfig::default()
        };
        assert!(config.validate("t").unwrap_err().to_string().contains("segment_bytes"));
    }
}
