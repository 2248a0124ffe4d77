//! The read events (`op` r) of snapshot rows, written in bulk: the rows of a chunk go
//! into one buffer that their records' keys and values then share, and everything of
//! the value that is the same for every row (the `source` block) is written once. The
//! snapshot's reading tasks run this in parallel, one per connection.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use plexus_connector::json::{push_escaped, push_i64};
use plexus_connector::{ConnectorError, Header, SCHEMA_HEADER, SourceRecord};

use crate::source::envelope::{Op, SourceInfo, write_tail};
use crate::source::table::TableInfo;
use crate::types::copy::for_each_field;
use crate::types::write_json;

/// Builds the read events of one table's rows, a chunk at a time.
#[derive(Debug)]
pub(super) struct ReadEvents {
    table: Arc<TableInfo>,
    /// `},"source":{...},"op":"r","ts_ms":`, the same for every row of the snapshot.
    tail: Vec<u8>,
    /// [`ReadEvents::tail`], then `now` and the value's closing brace: the end of every
    /// value written at the same millisecond.
    end: Vec<u8>,
    /// The event time [`ReadEvents::end`] was written for.
    end_ms: Option<i64>,
    /// What goes before each column's value: `{"before":null,"after":{"name":` for the
    /// first, `,"name":` for the others (names escaped once).
    prefixes: Vec<Vec<u8>>,
    /// `{"name":` or `,"name":` of each key column, in key order.
    key_prefixes: Vec<Vec<u8>>,
    /// Where each column's JSON value is in `buf`, for the key (the row being written).
    value_spans: Vec<Range<usize>>,
    timestamp: i64,
    schema_id: Bytes,
    topic: Arc<str>,
    buf: Vec<u8>,
    /// The size of the last chunk's buffer, reserved for the next one.
    chunk_bytes: usize,
    /// Each row's key and value in `buf`.
    spans: Vec<(Range<usize>, Range<usize>)>,
    /// The key columns of the chunk's last row, as PostgreSQL writes them.
    last_key: Vec<String>,
}

/// `{"name":` (`first`) or `,"name":`: what goes before a value in an object.
fn member_prefix(name: &str, first: bool) -> Vec<u8> {
    let mut prefix = vec![if first { b'{' } else { b',' }, b'"'];
    push_escaped(&mut prefix, name);
    prefix.extend_from_slice(b"\":");
    prefix
}

impl ReadEvents {
    /// `info` is the same for every row: a snapshot read is not part of a transaction,
    /// so its `seq` does not count rows.
    pub(super) fn new(table: Arc<TableInfo>, info: &SourceInfo<'_>) -> ReadEvents {
        let mut tail = b"},".to_vec();
        write_tail(&mut tail, &table, info, 0, Op::Read);
        let prefixes = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let mut prefix = if i == 0 {
                    b"{\"before\":null,\"after\":".to_vec()
                } else {
                    Vec::new()
                };
                prefix.extend_from_slice(&member_prefix(&column.name, i == 0));
                prefix
            })
            .collect();
        let key_prefixes = table
            .key
            .iter()
            .enumerate()
            .map(|(n, &k)| member_prefix(&table.columns[k].name, n == 0))
            .collect();
        ReadEvents {
            prefixes,
            key_prefixes,
            value_spans: vec![0..0; table.columns.len()],
            schema_id: Bytes::copy_from_slice(table.schema_id.as_bytes()),
            topic: table.qualified.clone(),
            table,
            tail,
            end: Vec::new(),
            end_ms: None,
            timestamp: info.ts_ms,
            buf: Vec::new(),
            chunk_bytes: 0,
            spans: Vec::new(),
            last_key: Vec::new(),
        }
    }

    pub(super) fn table(&self) -> &TableInfo {
        &self.table
    }

    /// Rows written since the last [`ReadEvents::take`].
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Writes the event of one line of `COPY ... TO STDOUT` (without its newline).
    pub(super) fn push(&mut self, line: &[u8], now_ms: i64) -> Result<(), ConnectorError> {
        if self.end_ms != Some(now_ms) {
            self.end.clear();
            self.end.extend_from_slice(&self.tail);
            push_i64(&mut self.end, now_ms);
            self.end.push(b'}');
            self.end_ms = Some(now_ms);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.chunk_bytes);
        }
        let table = &self.table;
        let prefixes = &self.prefixes;
        let value_spans = &mut self.value_spans;
        let start = self.buf.len();
        let out = &mut self.buf;
        let mut failure = None;
        let count = for_each_field(line, |index, value| {
            let (Some(column), Some(prefix), Some(span)) = (
                table.columns.get(index),
                prefixes.get(index),
                value_spans.get_mut(index),
            ) else {
                return Ok(());
            };
            out.extend_from_slice(prefix);
            let at = out.len();
            match &value {
                Some(text) => {
                    if let Err(e) = write_json(&column.ty, text, out) {
                        failure.get_or_insert(e);
                        out.extend_from_slice(b"null");
                    }
                }
                None => out.extend_from_slice(b"null"),
            }
            *span = at..out.len();
            Ok(())
        });
        let count = match count {
            Ok(count) => count,
            Err(e) => {
                self.buf.truncate(start);
                return Err(ConnectorError::fatal(format!(
                    "a snapshot row of {} is unreadable: {e}",
                    table.qualified
                )));
            }
        };
        if count != table.columns.len() {
            self.buf.truncate(start);
            return Err(ConnectorError::retriable(format!(
                "a snapshot row of {} has {count} columns instead of {}: the table changed during the snapshot",
                table.qualified,
                table.columns.len()
            )));
        }
        if let Some(e) = failure {
            self.buf.truncate(start);
            return Err(ConnectorError::fatal(format!(
                "a snapshot row of {} could not be converted: {e}",
                table.qualified
            )));
        }
        out.extend_from_slice(&self.end);
        let value = start..out.len();

        // The key, in key order: each column's JSON is the one just written in the value.
        let key_start = out.len();
        if !table.key.is_empty() {
            for (&k, prefix) in table.key.iter().zip(&self.key_prefixes) {
                out.extend_from_slice(prefix);
                let span = self.value_spans[k].clone();
                out.extend_from_within(span);
            }
            out.push(b'}');
        }
        let key = key_start..out.len();
        self.spans.push((key, value));
        Ok(())
    }

    /// Notes the key of the last row pushed (from its line): the resume point of the
    /// records [`ReadEvents::take`] returns next.
    pub(super) fn set_last_key(&mut self, key: Vec<String>) {
        self.last_key = key;
    }

    /// The records written since the last call, and the key of the last of them.
    pub(super) fn take(&mut self) -> (Vec<SourceRecord>, Vec<String>) {
        self.chunk_bytes = self.chunk_bytes.max(self.buf.len());
        let buf = Bytes::from(std::mem::take(&mut self.buf));
        let records = self
            .spans
            .drain(..)
            .map(|(key, value)| SourceRecord {
                timestamp: self.timestamp,
                key: (!key.is_empty()).then(|| buf.slice(key)),
                value: Some(buf.slice(value)),
                headers: [Header {
                    key: SCHEMA_HEADER.into(),
                    value: Some(self.schema_id.clone()),
                }]
                .into_iter()
                .collect(),
                topic: Some(self.topic.clone()),
            })
            .collect();
        (records, std::mem::take(&mut self.last_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::TableName;
    use crate::source::snapshot::row_record;
    use crate::source::table::Column;
    use crate::types::PgType;

    fn table(key: Vec<usize>) -> Arc<TableInfo> {
        let column = |name: &str, ty: PgType| Column { name: name.into(), ty };
        Arc::new(TableInfo::new(
            TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            "db",
            vec![
                column("region", PgType::Text),
                column("note", PgType::Text),
                column("id", PgType::Int8),
                column(
                    "price",
                    PgType::Numeric {
                        precision: Some(10),
                        scale: Some(2),
                    },
                ),
                column("tags", PgType::Array(Box::new(PgType::Text))),
                column("at", PgType::TimestampTz),
            ],
            key,
        ))
    }

    const LINES: [&[u8]; 4] = [
        b"eu\ttab\\there\t1\t12.50\t{a,\"b c\"}\t2026-11-22 13:04:05.123456+00",
        b"us\t\\N\t-2\t0.00\t\\N\t\\N",
        b"\xc3\xa9t\xc3\xa9\t\"quoted\" back\\\\slash\t3\t-1.25\t{}\t2026-01-01 01:00:00+02",
        b"\\N\tctl\\001\t\\N\tNaN\t{NULL}\t0044-03-15 10:00:00+00 BC",
    ];

    fn info() -> SourceInfo<'static> {
        SourceInfo {
            connector: "pg",
            snapshot: "true",
            commit_lsn: 77,
            seq: 0,
            txid: None,
            ts_ms: 1000,
        }
    }

    /// The bulk writer gives each row the record the general change path gives it
    /// (bar the event time, which differs by when each is written).
    fn same_as_row_record(key: Vec<usize>) {
        let table = table(key);
        let mut events = ReadEvents::new(Arc::clone(&table), &info());
        for line in LINES {
            events.push(line, 5).unwrap();
        }
        events.set_last_key(vec!["x".into()]);
        assert_eq!(events.len(), LINES.len());
        let (records, last_key) = events.take();
        assert_eq!(last_key, vec!["x".to_owned()]);
        assert_eq!(events.len(), 0);
        assert_eq!(records.len(), LINES.len());
        for (line, record) in LINES.iter().zip(&records) {
            let expected = row_record(&table, line, &info()).unwrap();
            // Byte for byte, up to the event time at the end.
            let value = record.value.as_deref().unwrap();
            let want = expected.value.as_deref().unwrap();
            let cut = |v: &[u8]| {
                let at = v.windows(8).rposition(|w| w == b"\"ts_ms\":").unwrap();
                v[..at].to_vec()
            };
            assert_eq!(
                String::from_utf8(cut(value)).unwrap(),
                String::from_utf8(cut(want)).unwrap()
            );
            assert!(value.ends_with(b",\"ts_ms\":5}"));
            serde_json::from_slice::<serde_json::Value>(value).unwrap();
            assert_eq!(record.key, expected.key);
            assert_eq!(record.topic, expected.topic);
            assert_eq!(record.timestamp, expected.timestamp);
            assert_eq!(record.headers, expected.headers);
        }
    }

    #[test]
    fn rows_are_written_as_the_change_path_writes_them() {
        same_as_row_record(vec![2]);
        // A composite key whose order is not the columns' order.
        same_as_row_record(vec![2, 0]);
        same_as_row_record(Vec::new());
    }

    #[test]
    fn each_row_has_the_time_it_was_written() {
        let mut events = ReadEvents::new(table(vec![2]), &info());
        events.push(LINES[0], 5).unwrap();
        events.push(LINES[1], 1_795_355_129_014).unwrap();
        events.push(LINES[2], 5).unwrap();
        let (records, _) = events.take();
        let times: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref().unwrap()).unwrap()["ts_ms"].clone())
            .collect();
        assert_eq!(times, [5, 1_795_355_129_014_i64, 5]);
    }

    #[test]
    fn bad_rows_are_refused_and_leave_nothing_behind() {
        let mut events = ReadEvents::new(table(vec![2]), &info());
        events.push(LINES[0], 1).unwrap();
        let short = events.push(b"eu\tx\t1", 1).unwrap_err();
        assert!(short.is_retriable(), "{short}");
        assert!(short.message().contains("3 columns instead of 6"), "{short}");
        let bad = events.push(b"eu\tx\tnot-a-number\t1.00\t{}\t\\N", 1).unwrap_err();
        assert!(!bad.is_retriable());
        assert!(bad.message().contains("public.t"), "{bad}");
        events.push(LINES[1], 1).unwrap();
        let (records, _) = events.take();
        assert_eq!(records.len(), 2);
        for record in records {
            serde_json::from_slice::<serde_json::Value>(record.value.as_deref().unwrap()).unwrap();
        }
    }
}
