//! Exactly once: the sink keeps the next log offset to read per (connector, topic,
//! partition) in a table of the target (`offsets_table`, default `plexus_offsets`),
//! written in the same transaction as the rows of the batch it covers.
//!
//! ```text
//! connector | topic            | partition | next_offset | updated_at
//! orders-wh | pg.public.orders | 0         | 1730        | 2026-11-22T13:04:05.123Z
//! ```
//!
//! `start` creates the table when missing and returns this connector's rows; the runtime
//! resumes reading there. A crash before the commit loses the transaction, rows and
//! offsets together, and the batch is read again; a crash after it finds both. Records
//! before the stored offsets that are delivered anyway are skipped.

use plexus_connector::{SinkOffsets, TopicPartition};

/// The wall-clock time for `updated_at` (informational only).
pub fn now_text() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::with_capacity(24);
    plexus_connector::json::push_utc_millis(&mut out, ms);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the record at `offset` of `tp` was applied before (its offset is below what
/// the target stored).
pub fn applied(stored: &SinkOffsets, topic: &str, partition: u32, offset: i64) -> bool {
    // Looking up by a borrowed key would need a second key type; partitions are few.
    stored
        .iter()
        .any(|(tp, &next)| tp.partition == partition && tp.topic == topic && offset < next)
}

/// The offsets of `offsets` that moved past what `stored` holds.
pub fn advanced(stored: &SinkOffsets, offsets: &SinkOffsets) -> SinkOffsets {
    offsets
        .iter()
        .filter(|(tp, next)| stored.get(*tp).is_none_or(|s| s < *next))
        .map(|(tp, next)| {
            (
                TopicPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                },
                *next,
            )
        })
        .collect()
}
