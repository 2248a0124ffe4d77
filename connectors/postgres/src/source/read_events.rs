//! The read events (`op` r) of snapshot rows, written in bulk: the rows of a chunk go
//! into one buffer that their records' keys and values then share, and everything of
//! the value that is the same for every row (the `source` block) is written once. The
//! snapshot's reading tasks run this in parallel, one per connection.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use plexus_connector::json::{push_escaped, push_i64};
use plexus_connector::{ConnectorError, Header, SCHEMA_HEADER, SourceRecord};

use crate::source::envelope::{Op, SourceInfo, write_tail};
use crate::source::snapshot::appends_key_text;
use crate::source::table::TableInfo;
use crate::types::binary::{self, BinaryCopyError, Message, for_each_binary_field, reads_binary, write_json_binary};
use crate::types::write_json;

/// The chunk buffers of a snapshot, handed back when the last record of their chunk is
/// dropped (once the log has its copy), so that the next chunk is written into memory
/// already mapped and touched: a fresh multi-megabyte buffer per chunk costs a page
/// fault and a zeroed page every 4 KiB, which is a tenth of the snapshot's CPU.
#[derive(Debug, Default)]
pub(super) struct ChunkBuffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkBuffers {
    /// Buffers kept for reuse, at most: enough for the chunks in flight between the
    /// reading tasks and the log (one being written per reader, two queued each, one
    /// being appended).
    const KEEP: usize = 8;

    /// An empty buffer with room for at least `bytes`.
    fn get(&self, bytes: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = reused.unwrap_or_default();
        buf.reserve(bytes);
        buf
    }

    fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < Self::KEEP {
            free.push(buf);
        }
    }
}

/// A chunk's buffer while records point into it: back to its [`ChunkBuffers`] when
/// dropped.
struct ChunkBuffer {
    buf: Vec<u8>,
    home: Arc<ChunkBuffers>,
}

impl AsRef<[u8]> for ChunkBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for ChunkBuffer {
    fn drop(&mut self) {
        self.home.put(std::mem::take(&mut self.buf));
    }
}

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
    buffers: Arc<ChunkBuffers>,
    /// The size of the last chunk's buffer, reserved for the next one.
    chunk_bytes: usize,
    /// Each row's key and value in `buf`.
    spans: Vec<(Range<usize>, Range<usize>)>,
    /// Key columns the query appends as text after the table's columns
    /// ([`appends_key_text`]): all of them, or none.
    appended_keys: usize,
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
    pub(super) fn new(table: Arc<TableInfo>, info: &SourceInfo<'_>, buffers: Arc<ChunkBuffers>) -> ReadEvents {
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
        let appended_keys = if appends_key_text(&table) { table.key.len() } else { 0 };
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
            buffers,
            chunk_bytes: 0,
            spans: Vec::new(),
            appended_keys,
            last_key: Vec::new(),
        }
    }

    /// Rows written since the last [`ReadEvents::take`].
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Writes the event of one message of `COPY ... TO STDOUT (FORMAT binary)` from the
    /// snapshot's query ([`crate::source::snapshot`]): the table's columns, each in binary
    /// or cast to text as [`reads_binary`] says, then the key columns as text if
    /// [`appends_key_text`]. Returns
    /// whether the message was a row (not the stream's header or trailer).
    pub(super) fn push(&mut self, message: &[u8], now_ms: i64) -> Result<bool, ConnectorError> {
        let tuple = match binary::message(message) {
            Ok(Message::Tuple(tuple)) => tuple,
            Ok(Message::Nothing) => return Ok(false),
            Err(e) => return Err(self.unreadable(e)),
        };
        if self.end_ms != Some(now_ms) {
            self.end.clear();
            self.end.extend_from_slice(&self.tail);
            push_i64(&mut self.end, now_ms);
            self.end.push(b'}');
            self.end_ms = Some(now_ms);
        }
        if self.buf.capacity() == 0 {
            self.buf = self.buffers.get(self.chunk_bytes);
        }
        let table = &self.table;
        let prefixes = &self.prefixes;
        let value_spans = &mut self.value_spans;
        let start = self.buf.len();
        let out = &mut self.buf;
        let mut failure = None;
        let count = for_each_binary_field(tuple, |index, value| {
            let (Some(column), Some(prefix), Some(span)) = (
                table.columns.get(index),
                prefixes.get(index),
                value_spans.get_mut(index),
            ) else {
                return Ok::<(), BinaryCopyError>(());
            };
            out.extend_from_slice(prefix);
            let at = out.len();
            match value {
                Some(value) => {
                    let written = if reads_binary(&column.ty) {
                        write_json_binary(&column.ty, value, out)
                    } else {
                        write_json(&column.ty, value, out)
                    };
                    if let Err(e) = written {
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
                return Err(self.unreadable(e));
            }
        };
        // The key columns again, as text, may follow the table's columns.
        let count = count.saturating_sub(self.appended_keys);
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
        Ok(true)
    }

    #[cold]
    fn unreadable(&self, e: BinaryCopyError) -> ConnectorError {
        ConnectorError::fatal(format!("a snapshot row of {} is unreadable: {e}", self.table.qualified))
    }

    /// The key of a row [`ReadEvents::push`] wrote, from the same message: the key
    /// columns' text, which the next query of the table starts after.
    pub(super) fn key_text(&self, message: &[u8]) -> Result<Vec<String>, ConnectorError> {
        let Ok(Message::Tuple(tuple)) = binary::message(message) else {
            return Err(self.unreadable(BinaryCopyError::NOT_A_ROW));
        };
        let columns = &self.table.columns;
        let mut values = vec![None; columns.len() + self.appended_keys];
        for_each_binary_field(tuple, |index, value| {
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
            Ok::<(), BinaryCopyError>(())
        })
        .map_err(|e| self.unreadable(e))?;
        let value = |index: usize| values.get(index).copied().flatten();
        self.table
            .key
            .iter()
            .enumerate()
            .map(|(n, &k)| {
                if self.appended_keys > 0 {
                    // The server's text, appended after the table's columns.
                    return Ok(String::from_utf8_lossy(value(columns.len() + n).unwrap_or_default()).into_owned());
                }
                let binary = value(k).ok_or_else(|| self.unreadable(BinaryCopyError::NULL_KEY))?;
                binary::key_text(&columns[k].ty, binary).map_err(|e| self.unreadable(e))
            })
            .collect()
    }

    /// Notes the key of the last row pushed (from its line): the resume point of the
    /// records [`ReadEvents::take`] returns next.
    pub(super) fn set_last_key(&mut self, key: Vec<String>) {
        self.last_key = key;
    }

    /// The records written since the last call, and the key of the last of them.
    pub(super) fn take(&mut self) -> (Vec<SourceRecord>, Vec<String>) {
        self.chunk_bytes = self.chunk_bytes.max(self.buf.len());
        let buf = Bytes::from_owner(ChunkBuffer {
            buf: std::mem::take(&mut self.buf),
            home: Arc::clone(&self.buffers),
        });
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
    use crate::source::snapshot::{key_text, row_record};
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

    /// A line of [`LINES`] as the snapshot's binary query returns it: the columns in
    /// binary (the array cast to text), then the key columns as text if the query
    /// appends them.
    fn binary_row(table: &TableInfo, line: &[u8]) -> Vec<u8> {
        let mut fields: Vec<Option<Vec<u8>>> = Vec::new();
        crate::types::copy::for_each_field(line, |_, value| {
            fields.push(value.map(|v| v.into_owned()));
            Ok(())
        })
        .unwrap();
        let mut texts = fields.clone();
        for (field, column) in fields.iter_mut().zip(&table.columns) {
            let Some(text) = field.as_mut() else { continue };
            let text_str = String::from_utf8(text.clone()).unwrap();
            *text = match column.ty {
                PgType::Int8 => text_str.parse::<i64>().unwrap().to_be_bytes().to_vec(),
                PgType::Numeric { .. } => numeric(&text_str),
                PgType::TimestampTz => match text_str.as_str() {
                    "2026-11-22 13:04:05.123456+00" => 848_667_845_123_456_i64,
                    "2026-01-01 01:00:00+02" => 820_537_200_000_000,
                    "0044-03-15 10:00:00+00 BC" => -64_464_472_800_000_000,
                    other => panic!("no binary form for {other}"),
                }
                .to_be_bytes()
                .to_vec(),
                _ => continue,
            };
        }
        if appends_key_text(table) {
            fields.extend(table.key.iter().map(|&k| texts[k].take()));
        }
        let mut tuple = (fields.len() as u16).to_be_bytes().to_vec();
        for field in fields {
            match field {
                Some(bytes) => {
                    tuple.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    tuple.extend_from_slice(&bytes);
                }
                None => tuple.extend_from_slice(&u32::MAX.to_be_bytes()),
            }
        }
        tuple
    }

    /// The few `numeric` values of [`LINES`] in binary.
    fn numeric(text: &str) -> Vec<u8> {
        let (digits, weight, sign, dscale): (&[u16], i16, u16, u16) = match text {
            "12.50" => (&[12, 5000], 0, 0, 2),
            "0.00" => (&[], 0, 0, 2),
            "-1.25" => (&[1, 2500], 0, 0x4000, 2),
            "NaN" => (&[], 0, 0xC000, 0),
            other => panic!("no binary form for {other}"),
        };
        let mut v = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, dscale]
            .into_iter()
            .chain(digits.iter().copied())
        {
            v.extend_from_slice(&word.to_be_bytes());
        }
        v
    }

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
        let mut events = ReadEvents::new(Arc::clone(&table), &info(), Default::default());
        let mut header = binary::SIGNATURE.to_vec();
        header.extend_from_slice(&[0; 8]);
        assert!(!events.push(&header, 5).unwrap());
        for line in LINES {
            let row = binary_row(&table, line);
            assert!(events.push(&row, 5).unwrap());
            let null_key = table
                .key
                .iter()
                .any(|&k| line.split(|b| *b == b'\t').nth(k) == Some(b"\\N"));
            if null_key && !appends_key_text(&table) {
                // Not a row PostgreSQL sends (key columns are NOT NULL): refused.
                assert!(events.key_text(&row).unwrap_err().to_string().contains("NULL key"));
            } else {
                assert_eq!(events.key_text(&row).unwrap(), key_text(&table, line).unwrap());
            }
        }
        assert!(!events.push(&[0xFF, 0xFF], 5).unwrap());
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
        // An integer key: its text comes from the binary value.
        same_as_row_record(vec![2]);
        // A composite key whose order is not the columns' order, with a text column:
        // the query appends the key as text.
        same_as_row_record(vec![2, 0]);
        same_as_row_record(Vec::new());
    }

    #[test]
    fn each_row_has_the_time_it_was_written() {
        let table = table(vec![2]);
        let mut events = ReadEvents::new(Arc::clone(&table), &info(), Default::default());
        events.push(&binary_row(&table, LINES[0]), 5).unwrap();
        events.push(&binary_row(&table, LINES[1]), 1_795_355_129_014).unwrap();
        events.push(&binary_row(&table, LINES[2]), 5).unwrap();
        let (records, _) = events.take();
        let times: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref().unwrap()).unwrap()["ts_ms"].clone())
            .collect();
        assert_eq!(times, [5, 1_795_355_129_014_i64, 5]);
    }

    #[test]
    fn bad_rows_are_refused_and_leave_nothing_behind() {
        let table = table(vec![2]);
        let mut events = ReadEvents::new(Arc::clone(&table), &info(), Default::default());
        events.push(&binary_row(&table, LINES[0]), 1).unwrap();
        let tuple = |fields: &[&[u8]]| {
            let mut tuple = (fields.len() as u16).to_be_bytes().to_vec();
            for field in fields {
                tuple.extend_from_slice(&(field.len() as u32).to_be_bytes());
                tuple.extend_from_slice(field);
            }
            tuple
        };
        let short = events
            .push(&tuple(&[b"eu", b"x", &1i64.to_be_bytes(), b"1"]), 1)
            .unwrap_err();
        assert!(short.is_retriable(), "{short}");
        assert!(short.message().contains("4 columns instead of 6"), "{short}");
        let good = binary_row(&table, LINES[1]);
        let cut = events.push(&good[..good.len() - 1], 1).unwrap_err();
        assert!(!cut.is_retriable());
        assert!(
            cut.message().contains("public.t") && cut.message().contains("ends inside"),
            "{cut}"
        );
        let bad = events
            .push(&tuple(&[b"eu", b"x", b"123", b"", b"{}", b""]), 1)
            .unwrap_err();
        assert!(!bad.is_retriable());
        assert!(
            bad.message().contains("public.t") && bad.message().contains("bigint"),
            "{bad}"
        );
        events.push(&good, 1).unwrap();
        let (records, _) = events.take();
        assert_eq!(records.len(), 2);
        for record in records {
            serde_json::from_slice::<serde_json::Value>(record.value.as_deref().unwrap()).unwrap();
        }
    }

    #[test]
    fn a_chunks_buffer_is_reused_once_its_last_record_is_dropped() {
        let buffers = Arc::new(ChunkBuffers::default());
        let table = table(vec![2]);
        let rows: Vec<Vec<u8>> = LINES.iter().map(|line| binary_row(&table, line)).collect();
        let mut events = ReadEvents::new(Arc::clone(&table), &info(), Arc::clone(&buffers));
        events.push(&rows[0], 1).unwrap();
        events.push(&rows[1], 1).unwrap();
        let (mut first, _) = events.take();
        let first_start = first[0].key.as_ref().unwrap().as_ptr();
        let kept = first.pop().unwrap();
        drop(first);
        // A record of the chunk is still alive: its bytes are untouched by the next one.
        let kept_value = kept.value.clone().unwrap().to_vec();
        events.push(&rows[2], 1).unwrap();
        let (second, _) = events.take();
        let second_start = second[0].key.as_ref().unwrap().as_ptr();
        assert_ne!(second_start, first_start);
        assert_eq!(kept.value.as_deref().unwrap(), &kept_value[..]);
        drop(kept);
        drop(second);
        // Both buffers are back; the next chunk writes into one of them.
        assert_eq!(buffers.free.lock().unwrap().len(), 2);
        events.push(&rows[0], 1).unwrap();
        assert_eq!(buffers.free.lock().unwrap().len(), 1);
        let (third, _) = events.take();
        let third_start = third[0].key.as_ref().unwrap().as_ptr();
        assert!(third_start == first_start || third_start == second_start);
        serde_json::from_slice::<serde_json::Value>(third[0].value.as_deref().unwrap()).unwrap();
    }
}
