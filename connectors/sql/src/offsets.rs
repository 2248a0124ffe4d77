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

use crate::config::DialectKind;
use crate::dialect::{TableName, quote};

/// `SELECT topic, partition, next_offset` of one connector (bound as the only parameter).
pub fn select_sql(dialect: DialectKind, table: &TableName) -> String {
    format!(
        "SELECT topic, {}, next_offset FROM {} WHERE connector = {}",
        quote(dialect, "partition"),
        table.sql(dialect),
        placeholder(dialect, 1)
    )
}

/// Inserts or updates one row: connector, topic, partition, next offset, time.
pub fn upsert_sql(dialect: DialectKind, table: &TableName) -> String {
    let partition = quote(dialect, "partition");
    let values = (1..=5).map(|n| placeholder(dialect, n)).collect::<Vec<_>>().join(", ");
    let update = match dialect {
        DialectKind::MySql => {
            "ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)".to_owned()
        }
        DialectKind::Postgres | DialectKind::Sqlite => format!(
            "ON CONFLICT (connector, topic, {partition}) DO UPDATE \
             SET next_offset = excluded.next_offset, updated_at = excluded.updated_at"
        ),
    };
    format!(
        "INSERT INTO {} (connector, topic, {partition}, next_offset, updated_at) VALUES ({values}) {update}",
        table.sql(dialect)
    )
}

fn placeholder(dialect: DialectKind, n: usize) -> String {
    match dialect {
        DialectKind::Postgres => format!("${n}"),
        DialectKind::MySql | DialectKind::Sqlite => "?".to_owned(),
    }
}

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
