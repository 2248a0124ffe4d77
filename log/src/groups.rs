//! Consumer groups: committed offsets per (group, topic, partition).
//!
//! Commits are records of the internal compacted topic `__consumer_offsets` (fsync on
//! every batch), keyed by (group, topic, partition), so compaction keeps only the latest
//! commit of each and a restart reads them back. The in-memory map is updated only after
//! the commit is durable.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::RwLock;

use crate::batch::{BatchBuilder, Compression, StoredRecord};
use crate::error::{LogError, Result};
use crate::partition::{Partition, now_ms};

/// The internal topic holding committed offsets.
pub const GROUPS_TOPIC: &str = "__consumer_offsets";

const FORMAT_VERSION: u16 = 1;

/// An offset a group committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Free text stored with the commit (Kafka's `metadata`).
    pub metadata: String,
    /// When the commit was made, ms since the epoch.
    pub commit_timestamp: i64,
}

type Key = (String, String, u32);

/// Committed offsets of all consumer groups.
#[derive(Debug)]
pub struct ConsumerGroups {
    partition: Arc<Partition>,
    offsets: RwLock<HashMap<Key, CommittedOffset>>,
    /// Serialises commits so the map follows the order of the log.
    writer: tokio::sync::Mutex<()>,
}

impl ConsumerGroups {
    /// Reads every commit back from the internal topic.
    pub(crate) fn load(partition: Arc<Partition>) -> Result<ConsumerGroups> {
        let mut offsets = HashMap::new();
        let mut offset = partition.start_offset();
        loop {
            let fetch = partition.read_blocking(offset, 4 << 20)?;
            if fetch.is_empty() {
                break;
            }
            for record in fetch.records() {
                let record = record?;
                apply(&mut offsets, &record);
            }
            offset = fetch.next_offset();
        }
        Ok(ConsumerGroups {
            partition,
            offsets: RwLock::new(offsets),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Commits one offset; durable when this returns.
    pub async fn commit(&self, group: &str, topic: &str, partition: u32, offset: i64, metadata: &str) -> Result<()> {
        self.commit_many(group, &[(topic, partition, offset)], metadata).await
    }

    /// Commits offsets of several partitions in one batch: all of them or none.
    pub async fn commit_many(&self, group: &str, offsets: &[(&str, u32, i64)], metadata: &str) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        check_name("group", group)?;
        check_name("metadata", metadata)?;
        let now = now_ms();
        let mut builder = BatchBuilder::new(Compression::None);
        for &(topic, partition, offset) in offsets {
            check_name("topic", topic)?;
            if offset < 0 {
                return Err(LogError::InvalidTopicConfig {
                    topic: topic.to_owned(),
                    reason: format!("cannot commit negative offset {offset} for group `{group}`"),
                });
            }
            let key = encode_key(group, topic, partition);
            let value = encode_value(offset, now, metadata);
            builder.push(now, Some(&key), Some(&value), &[]);
        }
        let _writer = self.writer.lock().await;
        self.partition.append(&mut builder).await?;
        let mut map = self.offsets.write();
        for &(topic, partition, offset) in offsets {
            map.insert(
                (group.to_owned(), topic.to_owned(), partition),
                CommittedOffset {
                    offset,
                    metadata: metadata.to_owned(),
                    commit_timestamp: now,
                },
            );
        }
        Ok(())
    }

    /// The offset `group` committed for `topic`/`partition`, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        self.offsets
            .read()
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .cloned()
    }

    /// Every committed offset of `group`, sorted by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        let mut out: Vec<_> = self
            .offsets
            .read()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Names of groups with at least one committed offset, sorted.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.offsets.read().keys().map(|(g, _, _)| g.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Forgets a group's offsets (tombstones, so compaction removes them too).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let keys: Vec<Key> = self
            .offsets
            .read()
            .keys()
            .filter(|(g, _, _)| g == group)
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut builder = BatchBuilder::new(Compression::None);
        for (g, t, p) in &keys {
            builder.push(now, Some(&encode_key(g, t, *p)), None, &[]);
        }
        let _writer = self.writer.lock().await;
        self.partition.append(&mut builder).await?;
        let mut map = self.offsets.write();
        for key in keys {
            map.remove(&key);
        }
        Ok(())
    }
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if value.len() > u16::MAX as usize || (what == "group" && value.is_empty()) {
        return Err(LogError::InvalidTopicConfig {
            topic: crate::groups::GROUPS_TOPIC.to_owned(),
            reason: format!("{what} must be 1 to {} bytes long", u16::MAX),
        });
    }
    Ok(())
}

/// Applies one record of the internal topic; records it cannot parse are skipped with a
/// warning (they cannot be user data: only this module writes the topic).
fn apply(map: &mut HashMap<Key, CommittedOffset>, record: &StoredRecord) {
    let Some(key) = record.key.as_ref().and_then(|k| decode_key(k)) else {
        tracing::warn!(offset = record.offset, "Skipping an unreadable key in {GROUPS_TOPIC}.");
        return;
    };
    match &record.value {
        None => {
            map.remove(&key);
        }
        Some(value) => match decode_value(value) {
            Some(committed) => {
                map.insert(key, committed);
            }
            None => tracing::warn!(
                offset = record.offset,
                "Skipping an unreadable value in {GROUPS_TOPIC}."
            ),
        },
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Bytes {
    let mut buf = BytesMut::with_capacity(10 + group.len() + topic.len());
    buf.put_u16(FORMAT_VERSION);
    put_str(&mut buf, group);
    put_str(&mut buf, topic);
    buf.put_u32(partition);
    buf.freeze()
}

fn encode_value(offset: i64, timestamp: i64, metadata: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(20 + metadata.len());
    buf.put_u16(FORMAT_VERSION);
    buf.put_i64(offset);
    buf.put_i64(timestamp);
    put_str(&mut buf, metadata);
    buf.freeze()
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take::<2>()?) as usize;
        if self.0.len() < len {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

fn decode_key(bytes: &[u8]) -> Option<Key> {
    let mut c = Cursor(bytes);
    if u16::from_be_bytes(c.take::<2>()?) != FORMAT_VERSION {
        return None;
    }
    let key = (c.string()?, c.string()?, u32::from_be_bytes(c.take::<4>()?));
    c.0.is_empty().then_some(key)
}

fn decode_value(bytes: &[u8]) -> Option<CommittedOffset> {
    let mut c = Cursor(bytes);
    if u16::from_be_bytes(c.take::<2>()?) != FORMAT_VERSION {
        return None;
    }
    let offset = i64::from_be_bytes(c.take::<8>()?);
    let commit_timestamp = i64::from_be_bytes(c.take::<8>()?);
    let metadata = c.string()?;
    c.0.is_empty().then_some(CommittedOffset {
        offset,
        metadata,
        commit_timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("billing", "orders", 7);
        assert_eq!(decode_key(&key), Some(("billing".into(), "orders".into(), 7)));
        let value = encode_value(42, 1_700_000_000_000, "from host a");
        assert_eq!(
            decode_value(&value),
            Some(CommittedOffset {
                offset: 42,
                metadata: "from host a".into(),
                commit_timestamp: 1_700_000_000_000
            })
        );
        // Truncated or extended encodings are refused, not misread.
        assert_eq!(decode_key(&key[..key.len() - 1]), None);
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(decode_value(&longer), None);
    }
}
