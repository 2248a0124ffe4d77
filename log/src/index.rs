//! Sparse indexes of a segment: offset to file position, and timestamp to offset.
//!
//! Both hold one entry per `index_interval_bytes` of batches. They live in memory; a
//! segment writes them to `.index` and `.timeindex` files when it is sealed or closed,
//! and loads them back on open after checking them against the log file. An index that
//! is missing or inconsistent is rebuilt by scanning the segment, so the files are a
//! cache, never the source of truth.

/// Offset index: the base offset of a batch (relative to the segment) and its byte
/// position, 8 bytes per entry on disk (two big-endian `u32`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    base_offset: i64,
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub const ENTRY_LEN: usize = 8;

    pub fn new(base_offset: i64) -> Self {
        OffsetIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Records that the batch starting at `offset` begins at byte `position`.
    pub fn push(&mut self, offset: i64, position: u32) {
        let relative = (offset - self.base_offset) as u32;
        if self.entries.last().is_none_or(|&(o, p)| relative > o && position > p) {
            self.entries.push((relative, position));
        }
    }

    /// The indexed batch at or before `offset`: `(batch base offset, byte position)`;
    /// the segment start when no entry is at or before it.
    pub fn lookup(&self, offset: i64) -> (i64, u32) {
        let relative = offset - self.base_offset;
        if relative < 0 {
            return (self.base_offset, 0);
        }
        let idx = self.entries.partition_point(|&(o, _)| i64::from(o) <= relative);
        match idx.checked_sub(1).map(|i| self.entries[i]) {
            Some((o, p)) => (self.base_offset + i64::from(o), p),
            None => (self.base_offset, 0),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * Self::ENTRY_LEN);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Loads an index file's bytes; `None` when they cannot belong to a log file of
    /// `log_size` bytes (wrong length, not strictly increasing, or pointing past the end).
    pub fn decode(bytes: &[u8], base_offset: i64, log_size: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(Self::ENTRY_LEN) {
            return None;
        }
        let mut index = OffsetIndex::new(base_offset);
        for chunk in bytes.chunks_exact(Self::ENTRY_LEN) {
            let o = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let p = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if u64::from(p) >= log_size {
                return None;
            }
            if let Some(&(lo, lp)) = index.entries.last()
                && (o <= lo || p <= lp)
            {
                return None;
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

/// Time index: the largest timestamp seen so far in the segment and the base offset of
/// the batch that brought it, 12 bytes per entry on disk (`i64` then `u32`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    base_offset: i64,
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub const ENTRY_LEN: usize = 12;

    pub fn new(base_offset: i64) -> Self {
        TimeIndex {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Records that the batch at `offset` raised the segment's largest timestamp to `timestamp`.
    pub fn push(&mut self, timestamp: i64, offset: i64) {
        let relative = (offset - self.base_offset) as u32;
        if self.entries.last().is_none_or(|&(t, o)| timestamp > t && relative >= o) {
            self.entries.push((timestamp, relative));
        }
    }

    /// Where a search for the first record at or after `timestamp` may start: every
    /// batch before the returned offset holds only older records.
    pub fn lookup(&self, timestamp: i64) -> i64 {
        let idx = self.entries.partition_point(|&(t, _)| t < timestamp);
        match idx.checked_sub(1).map(|i| self.entries[i]) {
            // Batches up to and including the one at `o` are all older than `timestamp`,
            // but batches are indexed by base offset, so restart from that batch.
            Some((_, o)) => self.base_offset + i64::from(o),
            None => self.base_offset,
        }
    }

    /// The largest timestamp recorded, if any.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * Self::ENTRY_LEN);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Loads a time index file's bytes; `None` when they are not strictly increasing or
    /// point at offsets beyond `next_offset`.
    pub fn decode(bytes: &[u8], base_offset: i64, next_offset: i64) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(Self::ENTRY_LEN) {
            return None;
        }
        let mut index = TimeIndex::new(base_offset);
        for chunk in bytes.chunks_exact(Self::ENTRY_LEN) {
            let (t, o) = chunk.split_at(8);
            let t = i64::from_be_bytes(t.try_into().ok()?);
            let o = u32::from_be_bytes(o.try_into().ok()?);
            if base_offset + i64::from(o) >= next_offset {
                return None;
            }
            if let Some(&(lt, lo)) = index.entries.last()
                && (t <= lt || o < lo)
            {
                return None;
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_entry_at_or_before() {
        let mut index = OffsetIndex::new(100);
        index.push(100, 0);
        index.push(150, 4096);
        index.push(200, 8200);
        assert_eq!(index.lookup(99), (100, 0));
        assert_eq!(index.lookup(100), (100, 0));
        assert_eq!(index.lookup(149), (100, 0));
        assert_eq!(index.lookup(150), (150, 4096));
        assert_eq!(index.lookup(10_000), (200, 8200));
        assert_eq!(OffsetIndex::new(5).lookup(7), (5, 0));
    }

    #[test]
    fn offset_index_file_round_trips_and_rejects_nonsense() {
        let mut index = OffsetIndex::new(1000);
        index.push(1000, 0);
        index.push(1010, 5000);
        let bytes = index.encode();
        assert_eq!(bytes.len(), 16);
        assert_eq!(OffsetIndex::decode(&bytes, 1000, 6000), Some(index));
        // Points past the end of a shorter log file.
        assert_eq!(OffsetIndex::decode(&bytes, 1000, 4000), None);
        // Not a whole number of entries.
        assert_eq!(OffsetIndex::decode(&bytes[..15], 1000, 6000), None);
        // Not increasing.
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(OffsetIndex::decode(&swapped, 1000, 6000), None);
    }

    #[test]
    fn time_lookup_skips_batches_that_are_all_older() {
        let mut index = TimeIndex::new(0);
        index.push(1_000, 0);
        index.push(2_000, 10);
        index.push(3_000, 20);
        assert_eq!(index.lookup(500), 0);
        assert_eq!(index.lookup(1_000), 0);
        assert_eq!(index.lookup(1_500), 0);
        assert_eq!(index.lookup(2_500), 10);
        assert_eq!(index.lookup(9_999), 20);
        assert_eq!(index.max_timestamp(), Some(3_000));
        // A timestamp going backwards adds nothing.
        index.push(2_500, 30);
        assert_eq!(index.max_timestamp(), Some(3_000));
    }

    #[test]
    fn time_index_file_round_trips_and_rejects_offsets_past_the_end() {
        let mut index = TimeIndex::new(50);
        index.push(10, 50);
        index.push(20, 60);
        let bytes = index.encode();
        assert_eq!(TimeIndex::decode(&bytes, 50, 70), Some(index));
        assert_eq!(TimeIndex::decode(&bytes, 50, 55), None);
    }
}
