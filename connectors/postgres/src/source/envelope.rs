//! Change events in the envelope of `connectors/datagen/ENVELOPE.md`, written by hand
//! (no value trees) because this runs for every column of every change.

use std::sync::Arc;

use bytes::Bytes;
use plexus_connector::json::{push_escaped, push_i64, push_u64};
use plexus_connector::{Header, SourceRecord};

use crate::source::table::{SCHEMA_HEADER, TableInfo};
use crate::types::{ValueError, write_json};

/// One column value as the server sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    /// A TOASTed value the update did not change: not sent, not NULL.
    Unchanged,
    Text(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn code(self) -> u8 {
        match self {
            Op::Read => b'r',
            Op::Create => b'c',
            Op::Update => b'u',
            Op::Delete => b'd',
            Op::Truncate => b't',
        }
    }

    pub fn from_code(code: u8) -> Option<Op> {
        Some(match code {
            b'r' => Op::Read,
            b'c' => Op::Create,
            b'u' => Op::Update,
            b'd' => Op::Delete,
            b't' => Op::Truncate,
            _ => return None,
        })
    }
}

/// A change before its transaction's commit is known: what the source needs to write the
/// record once it is.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: Arc<TableInfo>,
    pub op: Op,
    pub key: Option<Bytes>,
    /// `"before":...,"after":...` and, when some values were not sent,
    /// `,"unchanged":["column",...]`.
    pub body: Vec<u8>,
    /// The change's own WAL position (0 for snapshot reads).
    pub lsn: u64,
    /// The (sub)transaction that made it.
    pub xid: u32,
}

/// What a record's `source` says beyond the table.
#[derive(Debug, Clone, Copy)]
pub struct SourceInfo<'a> {
    pub connector: &'a str,
    /// `"true"`, `"last"` (the last row of a snapshot) or `"false"`.
    pub snapshot: &'static str,
    pub commit_lsn: u64,
    pub seq: u64,
    pub txid: Option<u32>,
    pub ts_ms: i64,
}

impl Change {
    /// The record for the log, in the table's topic, with its schema header.
    pub fn into_record(self, info: &SourceInfo<'_>, now_ms: i64) -> SourceRecord {
        let mut value = Vec::with_capacity(self.body.len() + 200 + self.table.source_fields.len());
        value.push(b'{');
        value.extend_from_slice(&self.body);
        value.push(b',');
        write_tail(&mut value, &self.table, info, self.lsn, self.op);
        push_i64(&mut value, now_ms);
        value.push(b'}');
        SourceRecord {
            timestamp: info.ts_ms,
            key: self.key,
            value: Some(Bytes::from(value)),
            headers: [schema_header(&self.table)].into_iter().collect(),
            topic: Some(self.table.qualified.clone()),
        }
    }

    /// The tombstone following a delete: the key, no value.
    pub fn tombstone(&self, ts_ms: i64) -> Option<SourceRecord> {
        let key = self.key.clone()?;
        Some(SourceRecord {
            timestamp: ts_ms,
            key: Some(key),
            value: None,
            headers: Default::default(),
            topic: Some(self.table.qualified.clone()),
        })
    }
}

/// `"source":{...},"op":"r","ts_ms":`: what follows the row images in a change's value,
/// up to the event time and the closing brace.
pub fn write_tail(out: &mut Vec<u8>, table: &TableInfo, info: &SourceInfo<'_>, lsn: u64, op: Op) {
    out.extend_from_slice(b"\"source\":{\"version\":\"plexus-");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"connector\":\"postgres\",\"name\":\"");
    push_escaped(out, info.connector);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&table.source_fields);
    out.extend_from_slice(b",\"snapshot\":\"");
    out.extend_from_slice(info.snapshot.as_bytes());
    out.extend_from_slice(b"\",\"txId\":");
    match info.txid {
        Some(xid) => push_u64(out, u64::from(xid)),
        None => out.extend_from_slice(b"null"),
    }
    for (name, number) in [("lsn", lsn), ("commit_lsn", info.commit_lsn), ("seq", info.seq)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_u64(out, number);
    }
    out.extend_from_slice(b",\"ts_ms\":");
    push_i64(out, info.ts_ms);
    out.extend_from_slice(b"},\"op\":\"");
    out.push(op.code());
    out.extend_from_slice(b"\",\"ts_ms\":");
}

/// The header naming the table's schema.
pub fn schema_header(table: &TableInfo) -> Header {
    Header {
        key: SCHEMA_HEADER.into(),
        value: Some(Bytes::copy_from_slice(table.schema_id.as_bytes())),
    }
}

/// Builds a change from row images. `old` is the before image (a full row, or only the
/// key columns with the others NULL), `new` the after image.
pub fn change(
    table: &Arc<TableInfo>,
    op: Op,
    old: Option<&[Cell<'_>]>,
    new: Option<&[Cell<'_>]>,
    lsn: u64,
    xid: u32,
) -> Result<Change, ValueError> {
    let mut body = Vec::with_capacity(64 + 32 * table.columns.len());
    let mut unchanged = Vec::new();
    body.extend_from_slice(b"\"before\":");
    match old {
        Some(cells) => write_row(&mut body, table, cells, None, None)?,
        None => body.extend_from_slice(b"null"),
    }
    body.extend_from_slice(b",\"after\":");
    match new {
        Some(cells) => write_row(&mut body, table, cells, old, Some(&mut unchanged))?,
        None => body.extend_from_slice(b"null"),
    }
    if !unchanged.is_empty() {
        body.extend_from_slice(b",\"unchanged\":[");
        for (n, &i) in unchanged.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.push(b'"');
            push_escaped(&mut body, &table.columns[i].name);
            body.push(b'"');
        }
        body.push(b']');
    }
    // The key comes from the new row, or the old one for deletes.
    let key_source = new.or(old);
    let key = match key_source {
        Some(cells) if !table.key.is_empty() => Some(write_key(table, cells)?),
        _ => None,
    };
    Ok(Change {
        table: Arc::clone(table),
        op,
        key,
        body,
        lsn,
        xid,
    })
}

/// `{"id":42}`: the key columns of a row.
pub fn write_key(table: &TableInfo, cells: &[Cell<'_>]) -> Result<Bytes, ValueError> {
    let mut key = Vec::with_capacity(16 * table.key.len() + 8);
    key.push(b'{');
    for (n, &i) in table.key.iter().enumerate() {
        if n > 0 {
            key.push(b',');
        }
        key.push(b'"');
        push_escaped(&mut key, &table.columns[i].name);
        key.extend_from_slice(b"\":");
        match cells.get(i).copied().unwrap_or(Cell::Null) {
            Cell::Text(text) => write_json(&table.columns[i].ty, text, &mut key)?,
            Cell::Null | Cell::Unchanged => key.extend_from_slice(b"null"),
        }
    }
    key.push(b'}');
    Ok(Bytes::from(key))
}

/// `{"col":value,...}`. In an after image (`unchanged` given) an unchanged TOAST value is
/// taken from `fallback` (the old row, complete under REPLICA IDENTITY FULL) when it has
/// it, and otherwise left out and listed in `unchanged`: never written as NULL. In a
/// before image an unsent value is unknown and left out.
pub fn write_row(
    out: &mut Vec<u8>,
    table: &TableInfo,
    cells: &[Cell<'_>],
    fallback: Option<&[Cell<'_>]>,
    mut unchanged: Option<&mut Vec<usize>>,
) -> Result<(), ValueError> {
    out.push(b'{');
    let mut first = true;
    for (i, column) in table.columns.iter().enumerate() {
        let mut cell = cells.get(i).copied().unwrap_or(Cell::Null);
        if cell == Cell::Unchanged
            && let Some(Cell::Text(old)) = fallback.and_then(|f| f.get(i).copied())
        {
            cell = Cell::Text(old);
        }
        if cell == Cell::Unchanged {
            if let Some(unchanged) = unchanged.as_deref_mut() {
                unchanged.push(i);
            }
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        push_escaped(out, &column.name);
        out.extend_from_slice(b"\":");
        match cell {
            Cell::Text(text) => write_json(&column.ty, text, out)?,
            Cell::Null | Cell::Unchanged => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::TableName;
    use crate::source::table::Column;
    use crate::types::PgType;

    fn table() -> Arc<TableInfo> {
        let columns = vec![
            Column {
                name: "id".into(),
                ty: PgType::Int4,
            },
            Column {
                name: "doc".into(),
                ty: PgType::Text,
            },
            Column {
                name: "price".into(),
                ty: PgType::Numeric {
                    precision: Some(10),
                    scale: Some(2),
                },
            },
        ];
        Arc::new(TableInfo::new(
            TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            "shop",
            columns,
            vec![0],
        ))
    }

    fn json(record: &SourceRecord) -> serde_json::Value {
        serde_json::from_slice(record.value.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn an_update_keeps_unchanged_toast_out_of_after() {
        let t = table();
        let new = [Cell::Text(b"7"), Cell::Unchanged, Cell::Text(b"12.50")];
        let old = [Cell::Text(b"7"), Cell::Null, Cell::Null];
        let change = change(&t, Op::Update, Some(&old), Some(&new), 99, 5).unwrap();
        let info = SourceInfo {
            connector: "pg",
            snapshot: "false",
            commit_lsn: 100,
            seq: 3,
            txid: Some(5),
            ts_ms: 1000,
        };
        let record = change.into_record(&info, 2000);
        let v = json(&record);
        assert_eq!(v["after"], serde_json::json!({"id": 7, "price": "12.50"}));
        assert_eq!(v["unchanged"], serde_json::json!(["doc"]));
        assert_eq!(v["op"], "u");
        assert_eq!(v["source"]["table"], "t");
        assert_eq!(v["source"]["schema"], "public");
        assert_eq!(v["source"]["db"], "shop");
        assert_eq!(v["source"]["lsn"], 99);
        assert_eq!(v["source"]["seq"], 3);
        assert_eq!(record.key.as_deref(), Some(&b"{\"id\":7}"[..]));
        assert_eq!(record.topic.as_deref(), Some("public.t"));
        assert_eq!(record.headers[0].value.as_deref(), Some(t.schema_id.as_bytes()));
    }

    #[test]
    fn a_full_old_row_fills_unchanged_values() {
        let t = table();
        let new = [Cell::Text(b"7"), Cell::Unchanged, Cell::Null];
        let old = [Cell::Text(b"7"), Cell::Text(b"big"), Cell::Null];
        let change = change(&t, Op::Update, Some(&old), Some(&new), 1, 1).unwrap();
        let info = SourceInfo {
            connector: "pg",
            snapshot: "false",
            commit_lsn: 1,
            seq: 1,
            txid: None,
            ts_ms: 0,
        };
        let v = json(&change.into_record(&info, 0));
        assert_eq!(v["after"], serde_json::json!({"id": 7, "doc": "big", "price": null}));
        assert!(v.get("unchanged").is_none());
        assert_eq!(v["source"]["txId"], serde_json::Value::Null);
    }
}
