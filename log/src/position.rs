//! Producer positions: what makes "source to log" exactly once.
//!
//! A source appends each batch together with its position in the source system (a file
//! byte offset, a Postgres LSN plus an ordinal, ...). The position travels inside the
//! batch itself, as the `plexus.position` header of its last record, and the producer id
//! fills the batch's `producerId` field; so the position becomes durable in the same
//! write as the data, and a torn tail takes both or neither. The partition keeps the last
//! position per producer in memory, snapshots it to a `.producers` file whenever a
//! segment rolls, and rebuilds it on open from the newest snapshot plus the batches after.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use bytes::Bytes;

use crate::error::{LogError, Result};

/// Header carrying the producer position on the last record of a batch.
pub const POSITION_HEADER: &str = "plexus.position";

/// Identifies a producer (a source task). Stored in the batch's `producerId` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(i64);

impl ProducerId {
    /// A producer id chosen by the caller; must be non-negative (`-1` means "none" in Kafka's format).
    pub fn new(id: i64) -> Option<ProducerId> {
        (id >= 0).then_some(ProducerId(id))
    }

    /// A stable id derived from a name such as a connector's name (FNV-1a, 63 bits), so
    /// the same connector gets the same id after every restart without a registry.
    pub fn from_name(name: &str) -> ProducerId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ProducerId((hash >> 1) as i64)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A totally ordered position in a source system, compared as bytes.
///
/// Build it with [`Position::from_u64`] or [`Position::from_parts`] (big-endian, so byte
/// order is numeric order; an LSN plus an ordinal is `from_parts(&[lsn, ordinal])`), or
/// from any bytes whose lexicographic order is the source's order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(Bytes);

impl Position {
    pub fn from_u64(value: u64) -> Position {
        Position(Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    pub fn from_parts(parts: &[u64]) -> Position {
        let mut bytes = Vec::with_capacity(parts.len() * 8);
        for part in parts {
            bytes.extend_from_slice(&part.to_be_bytes());
        }
        Position(Bytes::from(bytes))
    }

    pub fn from_bytes(bytes: impl Into<Bytes>) -> Position {
        Position(bytes.into())
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The position as a `u64`, if it was built with [`Position::from_u64`].
    pub fn as_u64(&self) -> Option<u64> {
        Some(u64::from_be_bytes(self.0.as_ref().try_into().ok()?))
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

/// The last position and offset written by a producer in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub position: Position,
    pub last_offset: i64,
}

/// Last positions per producer in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerStates {
    entries: HashMap<ProducerId, ProducerEntry>,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"PXPS";
const SNAPSHOT_VERSION: u8 = 1;

impl ProducerStates {
    pub fn get(&self, producer: ProducerId) -> Option<&ProducerEntry> {
        self.entries.get(&producer)
    }

    /// Whether `position` is beyond what `producer` already wrote.
    pub fn is_new(&self, producer: ProducerId, position: &Position) -> bool {
        self.entries
            .get(&producer)
            .is_none_or(|entry| *position > entry.position)
    }

    pub fn update(&mut self, producer: ProducerId, position: Position, last_offset: i64) {
        let entry = self.entries.entry(producer).or_insert(ProducerEntry {
            position: position.clone(),
            last_offset,
        });
        if position >= entry.position {
            entry.position = position;
            entry.last_offset = last_offset;
        }
    }

    /// Serialises as: magic, version, count, then per entry (producer i64, last offset
    /// i64, position length u16, position), then a CRC-32C of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 32);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        let mut sorted: Vec<_> = self.entries.iter().collect();
        sorted.sort_by_key(|(id, _)| **id);
        for (id, entry) in sorted {
            let position = entry.position.as_bytes();
            out.extend_from_slice(&id.0.to_be_bytes());
            out.extend_from_slice(&entry.last_offset.to_be_bytes());
            out.extend_from_slice(&(position.len().min(u16::MAX as usize) as u16).to_be_bytes());
            out.extend_from_slice(&position[..position.len().min(u16::MAX as usize)]);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<ProducerStates> {
        let bad = |reason: &str| LogError::BadMetadata {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < 13 || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err(bad("not a producer-state snapshot"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        if body[4] != SNAPSHOT_VERSION {
            return Err(bad("unknown snapshot version"));
        }
        let mut cursor = &body[5..];
        let count = take_u32(&mut cursor).ok_or_else(|| bad("truncated"))?;
        let mut entries = HashMap::new();
        for _ in 0..count {
            let id = take_i64(&mut cursor).ok_or_else(|| bad("truncated"))?;
            let last_offset = take_i64(&mut cursor).ok_or_else(|| bad("truncated"))?;
            let len = take_u16(&mut cursor).ok_or_else(|| bad("truncated"))? as usize;
            if cursor.len() < len {
                return Err(bad("truncated"));
            }
            let (position, rest) = cursor.split_at(len);
            cursor = rest;
            entries.insert(
                ProducerId(id),
                ProducerEntry {
                    position: Position::from_bytes(Bytes::copy_from_slice(position)),
                    last_offset,
                },
            );
        }
        if !cursor.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(ProducerStates { entries })
    }
}

fn take_u16(cursor: &mut &[u8]) -> Option<u16> {
    let (head, rest) = cursor.split_first_chunk::<2>()?;
    *cursor = rest;
    Some(u16::from_be_bytes(*head))
}

fn take_u32(cursor: &mut &[u8]) -> Option<u32> {
    let (head, rest) = cursor.split_first_chunk::<4>()?;
    *cursor = rest;
    Some(u32::from_be_bytes(*head))
}

fn take_i64(cursor: &mut &[u8]) -> Option<i64> {
    let (head, rest) = cursor.split_first_chunk::<8>()?;
    *cursor = rest;
    Some(i64::from_be_bytes(*head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_numerically() {
        assert!(Position::from_u64(255) < Position::from_u64(256));
        assert!(Position::from_parts(&[7, u64::MAX]) < Position::from_parts(&[8, 0]));
        assert_eq!(Position::from_u64(42).as_u64(), Some(42));
    }

    #[test]
    fn producer_ids_from_names_are_stable_and_non_negative() {
        let a = ProducerId::from_name("postgres-orders");
        assert_eq!(a, ProducerId::from_name("postgres-orders"));
        assert_ne!(a, ProducerId::from_name("postgres-order"));
        assert!(a.get() >= 0);
        assert_eq!(ProducerId::new(-1), None);
    }

    #[test]
    fn only_newer_positions_are_new() {
        let mut states = ProducerStates::default();
        let p = ProducerId::from_name("p");
        assert!(states.is_new(p, &Position::from_u64(0)));
        states.update(p, Position::from_u64(10), 99);
        assert!(!states.is_new(p, &Position::from_u64(10)));
        assert!(!states.is_new(p, &Position::from_u64(9)));
        assert!(states.is_new(p, &Position::from_u64(11)));
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let mut states = ProducerStates::default();
        states.update(ProducerId::from_name("a"), Position::from_parts(&[1, 2]), 5);
        states.update(ProducerId::from_name("b"), Position::from_u64(9), 7);
        let bytes = states.encode();
        let path = Path::new("x.producers");
        assert_eq!(ProducerStates::decode(&bytes, path).unwrap(), states);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(ProducerStates::decode(&damaged, path).is_err(), "flip at {i}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 1], path).is_err());
    }
}
