//! The read events (`op` r) of snapshot rows, written in bulk: the rows of a chunk go
//! into one buffer that their records' keys and values then share, and everything of
//! the value that is the same for every row (the `source` block) is written once. The
//! snapshot's reading tasks run this in parallel, one per connection.

use std::borrow::Cow;
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
    /// `,"source":{...},"op":"r","ts_ms":`, the same for every row of the snapshot.
    tail: Vec<u8>,
    /// `"name":` of each column, escaped once.
    names: Vec<Vec<u8>>,
    timestamp: i64,
    schema_id: Bytes,
    topic: String,
    buf: Vec<u8>,
    /// Each row's key and value in `buf`.
    spans: Vec<(Range<usize>, Range<usize>)>,
    /// The key columns of the chunk's last row, as PostgreSQL writes them.
    last_key: Vec<String>,
}

/// `{"id":` or `,"id":` then the value: one column of a key.
fn write_key_field(
    out: &mut Vec<u8>,
    table: &TableInfo,
    column: usize,
    text: Option<&[u8]>,
    first: bool,
) -> Result<(), ConnectorError> {
    out.push(if first { b'{' } else { b',' });
    out.push(b'"');
    push_escaped(out, &table.columns[column].name);
    out.extend_from_slice(b"\":");
    match text {
        Some(text) => write_json(&table.columns[column].ty, text, out).map_err(|e| {
            ConnectorError::fatal(format!(
                "a snapshot row of {} has an unreadable key: {e}",
                table.qualified
            ))
        }),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

impl ReadEvents {
    /// `info` is the same for every row: a snapshot read is not part of a transaction,
    /// so its `seq` does not count rows.
    pub(super) fn new(table: Arc<TableInfo>, info: &SourceInfo<'_>) -> ReadEvents {
        let mut tail = vec![b','];
        write_tail(&mut tail, &table, info, 0, Op::Read);
        let names = table
            .columns
            .iter()
            .map(|column| {
                let mut name = vec![b'"'];
                push_escaped(&mut name, &column.name);
                name.extend_from_slice(b"\":");
                name
            })
            .collect();
        ReadEvents {
            names,
            schema_id: Bytes::copy_from_slice(table.schema_id.as_bytes()),
            topic: table.qualified.clone(),
            table,
            tail,
            timestamp: info.ts_ms,
            buf: Vec::new(),
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
        let table = &self.table;
        let names = &self.names;
        let start = self.buf.len();
        let out = &mut self.buf;
        out.extend_from_slice(b"{\"before\":null,\"after\":{");
        let mut key_fields: Vec<Option<Cow<'_, [u8]>>> = Vec::new();
        let single_key = match table.key.as_slice() {
            [k] => Some(*k),
            _ => None,
        };
        let mut single: Option<Option<Cow<'_, [u8]>>> = None;
        let mut failure = None;
        let count = for_each_field(line, |index, value| {
            let (Some(column), Some(name)) = (table.columns.get(index), names.get(index)) else {
                return Ok(());
            };
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
            match &value {
                Some(text) => {
                    if let Err(e) = write_json(&column.ty, text, out) {
                        failure.get_or_insert(e);
                        out.extend_from_slice(b"null");
                    }
                }
                None => out.extend_from_slice(b"null"),
            }
            if single_key == Some(index) {
                single = Some(value);
            } else if single_key.is_none() && table.key.contains(&index) {
                key_fields.push(value);
            }
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
        out.push(b'}');
        out.extend_from_slice(&self.tail);
        push_i64(out, now_ms);
        out.push(b'}');
        let value = start..out.len();

        // The key, in key order (a composite key's columns were met in column order).
        let key_start = out.len();
        if let Some(k) = single_key {
            write_key_field(out, table, k, single.flatten().as_deref(), true)?;
            out.push(b'}');
        } else if !table.key.is_empty() {
            let mut in_column_order: Vec<usize> = table.key.clone();
            in_column_order.sort_unstable();
            for (n, &k) in table.key.iter().enumerate() {
                let text = in_column_order
                    .iter()
                    .position(|&i| i == k)
                    .and_then(|p| key_fields.get(p))
                    .and_then(|v| v.as_deref());
                write_key_field(out, table, k, text, n == 0)?;
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
        let buf = Bytes::from(std::mem::take(&mut self.buf));
        let records = self
            .spans
            .drain(..)
            .map(|(key, value)| SourceRecord {
                timestamp: self.timestamp,
                key: (!key.is_empty()).then(|| buf.slice(key)),
                value: Some(buf.slice(value)),
                headers: vec![Header {
                    key: SCHEMA_HEADER.to_owned(),
                    value: Some(self.schema_id.clone()),
                }],
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
            ],
            key,
        ))
    }

    const LINES: [&[u8]; 3] = [
        b"eu\ttab\\there\t1\t12.50\t{a,\"b c\"}",
        b"us\t\\N\t-2\t0.00\t\\N",
        b"\xc3\xa9t\xc3\xa9\t\"quoted\"\t3\t-1.25\t{}",
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
        assert_eq!(events.len(), 3);
        let (records, last_key) = events.take();
        assert_eq!(last_key, vec!["x".to_owned()]);
        assert_eq!(events.len(), 0);
        for (line, record) in LINES.iter().zip(&records) {
            let expected = row_record(&table, line, &info()).unwrap();
            let value: serde_json::Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
            let mut want: serde_json::Value = serde_json::from_slice(expected.value.as_deref().unwrap()).unwrap();
            want["ts_ms"] = value["ts_ms"].clone();
            assert_eq!(value, want);
            assert_eq!(value["ts_ms"], 5);
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
    fn bad_rows_are_refused_and_leave_nothing_behind() {
        let mut events = ReadEvents::new(table(vec![2]), &info());
        events.push(LINES[0], 1).unwrap();
        let short = events.push(b"eu\tx\t1", 1).unwrap_err();
        assert!(short.is_retriable(), "{short}");
        assert!(short.message().contains("3 columns instead of 5"), "{short}");
        let bad = events.push(b"eu\tx\tnot-a-number\t1.00\t{}", 1).unwrap_err();
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
