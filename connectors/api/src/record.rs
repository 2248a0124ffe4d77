//! Records, positions and offsets as connectors see them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use smallvec::SmallVec;

/// A record header: a name and an optional value (Kafka's shape).
///
/// The name is usually a constant (`plexus.schema`): `"name".into()` borrows it, so
/// a header costs no allocation per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Cow<'static, str>,
    pub value: Option<Bytes>,
}

impl Header {
    pub fn new(key: impl Into<Cow<'static, str>>, value: Option<Bytes>) -> Header {
        Header { key: key.into(), value }
    }
}

/// A record's headers: one is held in the record itself, more take an allocation.
/// Build them with `[header].into_iter().collect()`, [`Headers::new`] and `push`.
pub type Headers = SmallVec<[Header; 1]>;

/// A record produced by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Decides the partition (records with the same key stay in order) and is what
    /// compaction keeps the latest value of.
    pub key: Option<Bytes>,
    /// `None` is a tombstone: the key was deleted.
    pub value: Option<Bytes>,
    pub headers: Headers,
    /// The table (or stream) the record belongs to, for sources that read several.
    /// The connector's `topic` is a template: `{table}` in it is replaced by this
    /// (`topic = "shop.{table}"` gives `shop.orders`, `shop.customers`, ...); a `topic`
    /// without `{table}` takes every record of the connector. A name starting with `__`
    /// is an internal topic (`__schemas`), written as named. Shared: the records of one
    /// table can hold the same name.
    pub topic: Option<Arc<str>>,
}

impl SourceRecord {
    /// A record for the connector's topic, without headers.
    pub fn new(timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Self {
        SourceRecord {
            timestamp,
            key,
            value,
            headers: Headers::new(),
            topic: None,
        }
    }
}

/// Records and the source position reached after the last of them.
///
/// The runtime appends the batch and its position to the log in one write, so either
/// both are durable or neither is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBatch {
    pub records: Vec<SourceRecord>,
    pub position: Position,
}

/// A record delivered to a sink, with where it sits in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Headers,
}

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// The next offset to read, per partition.
pub type SinkOffsets = BTreeMap<TopicPartition, i64>;

/// A totally ordered position in a source system, compared as bytes.
///
/// Build it with [`Position::from_u64`] or [`Position::from_parts`] (big-endian, so
/// byte order is numeric order: an LSN plus an ordinal is `from_parts(&[lsn, n])`), or
/// from any bytes whose lexicographic order is the source's order (a file name
/// followed by a byte offset, say).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(Bytes);

impl Position {
    pub fn from_u64(value: u64) -> Position {
        Position(Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    pub fn from_parts(parts: &[u64]) -> Position {
        Position(Bytes::from(
            parts.iter().flat_map(|p| p.to_be_bytes()).collect::<Vec<u8>>(),
        ))
    }

    pub fn from_bytes(bytes: impl Into<Bytes>) -> Position {
        Position(bytes.into())
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The value, if this position was built with [`Position::from_u64`].
    pub fn as_u64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.0.as_ref().try_into().ok()?))
    }

    /// The parts, if this position was built with [`Position::from_parts`].
    pub fn parts(&self) -> Option<Vec<u64>> {
        if !self.0.len().is_multiple_of(8) {
            return None;
        }
        self.0
            .chunks_exact(8)
            .map(|c| c.try_into().ok().map(u64::from_be_bytes))
            .collect()
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_like_their_numbers() {
        assert!(Position::from_u64(9) < Position::from_u64(10));
        assert!(Position::from_parts(&[1, u64::MAX]) < Position::from_parts(&[2, 0]));
        assert_eq!(Position::from_parts(&[3, 4]).parts(), Some(vec![3, 4]));
        assert_eq!(Position::from_u64(7).as_u64(), Some(7));
        assert_eq!(Position::from_bytes(&b"abc"[..]).parts(), None);
        assert_eq!(Position::from_u64(255).to_string(), "00000000000000ff");
    }
}
