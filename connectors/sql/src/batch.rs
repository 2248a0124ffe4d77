//! Change events decoded into rows for one target table, deduplicated by key in memory:
//! the last change of a key in a batch wins (deletes included), and a later update that
//! left unchanged TOASTed values out takes them from the earlier change of the batch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{DeleteMode, DialectKind, Mode};
use crate::schema::{Column, ColumnType};
use crate::values::{Cell, to_cell};

/// The columns the sink adds in `history` mode, after the table's own.
pub const HISTORY_COLUMNS: [(&str, ColumnType); 8] = [
    ("__op", ColumnType::Text),
    ("__ts_ms", ColumnType::Int64),
    ("__lsn", ColumnType::Int64),
    ("__seq", ColumnType::Int64),
    ("__unchanged", ColumnType::Text),
    ("__topic", ColumnType::Text),
    ("__partition", ColumnType::Int32),
    ("__offset", ColumnType::Int64),
];

/// The columns the sink adds with `delete_mode = "soft"`.
pub const SOFT_DELETE_COLUMNS: [(&str, ColumnType); 2] = [
    ("__deleted", ColumnType::Bool),
    ("__deleted_at", ColumnType::TimestampTz),
];

/// Where a record came from, for dead letters: `topic/partition@offset`.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// The last change of one key (or, in history mode, one change).
#[derive(Debug, Clone)]
pub struct Row {
    /// By column of the batch; `None`: keep what the target has (an unchanged TOASTed
    /// value, a column the record's schema does not have).
    pub cells: Vec<Option<Cell>>,
    pub delete: bool,
    pub origin: Origin,
}

/// A change event's value as the sink reads it (see `connectors/datagen/ENVELOPE.md`).
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    before: Option<Map<String, Value>>,
    #[serde(default)]
    after: Option<Map<String, Value>>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    source: Option<SourceInfo>,
    #[serde(default)]
    unchanged: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SourceInfo {
    #[serde(default)]
    lsn: Option<i64>,
    #[serde(default)]
    seq: Option<i64>,
}

/// The changes for one target table since the last flush.
#[derive(Debug)]
pub struct TableBatch {
    pub table: String,
    /// The table's columns as the records describe them, then the sink's own.
    pub columns: Vec<Column>,
    by_name: HashMap<String, usize>,
    pub rows: Vec<Row>,
    by_key: HashMap<Vec<u8>, usize>,
    /// A `TRUNCATE` came before the rows: empty the table first.
    pub truncate: bool,
    /// Whether the columns came from a registered schema (otherwise they are inferred
    /// from the values, and new fields add columns).
    pub declared: bool,
    mode: Mode,
    delete_mode: DeleteMode,
    dialect: DialectKind,
    /// Records taken, tombstones included.
    pub records: u64,
}

impl TableBatch {
    pub fn new(table: String, mode: Mode, delete_mode: DeleteMode, dialect: DialectKind) -> TableBatch {
        TableBatch {
            table,
            columns: Vec::new(),
            by_name: HashMap::new(),
            rows: Vec::new(),
            by_key: HashMap::new(),
            truncate: false,
            declared: false,
            mode,
            delete_mode,
            dialect,
            records: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && !self.truncate
    }

    /// The indexes of the key columns.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect()
    }

    /// Takes the columns of a record's schema (`declared`), adding any not seen yet and
    /// taking the newest type of the others.
    pub fn use_columns(&mut self, columns: &[Column], declared: bool) {
        if self.columns.is_empty() {
            self.declared = declared;
        }
        for column in columns {
            match self.by_name.get(&column.name) {
                Some(&i) => {
                    self.columns[i].ty = column.ty.clone();
                    self.columns[i].key |= column.key && self.mode == Mode::Upsert;
                }
                None => self.add_column(Column {
                    key: column.key && self.mode == Mode::Upsert,
                    ..column.clone()
                }),
            }
        }
        let extra: &[(&str, ColumnType)] = match (self.mode, self.delete_mode) {
            (Mode::History, _) => &HISTORY_COLUMNS,
            (Mode::Upsert, DeleteMode::Soft) => &SOFT_DELETE_COLUMNS,
            (Mode::Upsert, DeleteMode::Hard) => &[],
        };
        for (name, ty) in extra {
            if !self.by_name.contains_key(*name) {
                self.add_column(Column {
                    name: (*name).to_owned(),
                    ty: ty.clone(),
                    key: self.mode == Mode::History && matches!(*name, "__topic" | "__partition" | "__offset"),
                });
            }
        }
    }

    fn add_column(&mut self, column: Column) {
        self.by_name.insert(column.name.clone(), self.columns.len());
        self.columns.push(column);
        for row in &mut self.rows {
            row.cells.push(None);
        }
    }

    /// Decodes one record's value and adds its change. `key_fields`: the record key's
    /// field names, for tables whose schema marks no key. The error is the reason to
    /// dead-letter the record.
    pub fn add(&mut self, origin: Origin, value: &[u8], timestamp: i64, key_fields: &[String]) -> Result<(), String> {
        self.records += 1;
        // Change envelopes parse straight into their fields; anything else is a plain
        // row (an upsert of it).
        let envelope = match serde_json::from_slice::<Envelope>(value) {
            Ok(envelope) if envelope.op.is_some() => envelope,
            _ => {
                let row: Map<String, Value> =
                    serde_json::from_slice(value).map_err(|e| format!("the value is not a JSON object: {e}"))?;
                Envelope {
                    before: None,
                    after: Some(row),
                    op: Some("c".into()),
                    ts_ms: Some(timestamp),
                    source: None,
                    unchanged: Vec::new(),
                }
            }
        };
        let op = envelope.op.as_deref().unwrap_or("c");
        let delete = match op {
            "c" | "r" | "u" => false,
            "d" => true,
            "t" => {
                if self.mode == Mode::Upsert {
                    self.rows.clear();
                    self.by_key.clear();
                    self.truncate = true;
                    return Ok(());
                }
                false
            }
            other => return Err(format!("unknown op `{other}`")),
        };
        let ts_ms = envelope.ts_ms.unwrap_or(timestamp);
        let image = if delete {
            envelope.before.as_ref()
        } else {
            envelope.after.as_ref()
        };
        let empty = Map::new();
        let image = match image {
            Some(image) => image,
            None if op == "t" => &empty,
            None if delete => return Err("a delete without `before`: the key is unknown".into()),
            None => return Err(format!("op `{op}` without `after`")),
        };
        if !self.declared {
            self.infer_columns(image, key_fields);
        }
        let mut cells: Vec<Option<Cell>> = vec![None; self.columns.len()];
        for (name, value) in image {
            let Some(&i) = self.by_name.get(name) else {
                if self.declared {
                    return Err(format!("field `{name}` is not a column of the record's schema"));
                }
                continue;
            };
            let column = &self.columns[i];
            let cell = to_cell(&column.ty, value, self.dialect).map_err(|e| {
                format!(
                    "column `{}` ({}): {e}",
                    column.name,
                    column.ty.ddl(self.dialect, column.key)
                )
            })?;
            cells[i] = Some(cell);
        }
        for name in &envelope.unchanged {
            if let Some(&i) = self.by_name.get(name) {
                cells[i] = None;
            }
        }
        match self.mode {
            Mode::History => {
                let unchanged = (!envelope.unchanged.is_empty()).then(|| envelope.unchanged.join(","));
                let source = envelope.source.as_ref();
                let meta = [
                    ("__op", Some(Cell::Text(op.to_owned()))),
                    ("__ts_ms", Some(Cell::Int(ts_ms))),
                    ("__lsn", Some(source.and_then(|s| s.lsn).map_or(Cell::Null, Cell::Int))),
                    ("__seq", Some(source.and_then(|s| s.seq).map_or(Cell::Null, Cell::Int))),
                    ("__unchanged", Some(unchanged.map_or(Cell::Null, Cell::Text))),
                    ("__topic", Some(Cell::Text(origin.topic.to_string()))),
                    ("__partition", Some(Cell::Int(i64::from(origin.partition)))),
                    ("__offset", Some(Cell::Int(origin.offset))),
                ];
                for (name, cell) in meta {
                    if let Some(&i) = self.by_name.get(name) {
                        cells[i] = cell;
                    }
                }
                self.rows.push(Row {
                    cells,
                    delete: false,
                    origin,
                });
                Ok(())
            }
            Mode::Upsert => {
                let keys = self.key_indexes();
                if keys.is_empty() {
                    return Err(format!(
                        "table `{}` has no primary key (neither in its schema nor in the record key): use mode = \"history\"",
                        self.table
                    ));
                }
                let mut identity = Vec::with_capacity(16);
                for &k in &keys {
                    match &cells[k] {
                        Some(Cell::Null) | None => {
                            return Err(format!("key column `{}` is null or missing", self.columns[k].name));
                        }
                        Some(cell) => cell.push_identity(&mut identity),
                    }
                }
                if self.delete_mode == DeleteMode::Soft {
                    self.soft_delete_cells(&mut cells, delete, ts_ms, &keys);
                }
                let row = Row {
                    cells,
                    delete: delete && self.delete_mode == DeleteMode::Hard,
                    origin,
                };
                self.put(identity, row);
                Ok(())
            }
        }
    }

    /// Soft deletes: a delete keeps every column but the key and sets the flags; other
    /// changes clear them.
    fn soft_delete_cells(&self, cells: &mut [Option<Cell>], delete: bool, ts_ms: i64, keys: &[usize]) {
        for (i, column) in self.columns.iter().enumerate() {
            match column.name.as_str() {
                "__deleted" => cells[i] = Some(Cell::Bool(delete)),
                "__deleted_at" => {
                    cells[i] = Some(if delete {
                        Cell::Text(timestamp_text(ts_ms, self.dialect))
                    } else {
                        Cell::Null
                    })
                }
                _ if delete && !keys.contains(&i) => cells[i] = None,
                _ => {}
            }
        }
    }

    /// Keeps `row` as the last change of its key, merging what an update left out from
    /// the key's earlier change in this batch.
    fn put(&mut self, identity: Vec<u8>, mut row: Row) {
        match self.by_key.get(&identity) {
            Some(&i) => {
                let earlier = &self.rows[i];
                if !row.delete {
                    for (cell, old) in row.cells.iter_mut().zip(&earlier.cells) {
                        if cell.is_none() {
                            *cell = if earlier.delete { Some(Cell::Null) } else { old.clone() };
                        }
                    }
                }
                self.rows[i] = row;
            }
            None => {
                self.by_key.insert(identity, self.rows.len());
                self.rows.push(row);
            }
        }
    }

    /// Adds columns for fields of a record without a registered schema.
    fn infer_columns(&mut self, image: &Map<String, Value>, key_fields: &[String]) {
        let mut new = Vec::new();
        for (name, value) in image {
            if !self.by_name.contains_key(name) && !name.starts_with("__") {
                new.push(Column {
                    name: name.clone(),
                    ty: crate::schema::infer(value),
                    key: key_fields.contains(name),
                });
            }
        }
        if !new.is_empty() || self.columns.is_empty() {
            self.use_columns(&new, false);
        }
    }

    /// Takes the rows (and whether a truncate comes first), leaving the batch empty
    /// with its columns.
    pub fn take_rows(&mut self) -> (Vec<Row>, bool) {
        self.by_key.clear();
        self.records = 0;
        (
            std::mem::take(&mut self.rows),
            std::mem::replace(&mut self.truncate, false),
        )
    }
}

/// The record key's field names (`{"id": 42}` gives `id`), for records without a schema.
pub fn key_fields(key: Option<&[u8]>) -> Vec<String> {
    match key.and_then(|k| serde_json::from_slice::<Map<String, Value>>(k).ok()) {
        Some(map) => map.keys().cloned().collect(),
        None => Vec::new(),
    }
}

/// Milliseconds since the epoch as a UTC timestamp each dialect reads.
fn timestamp_text(ms: i64, dialect: DialectKind) -> String {
    let mut out = Vec::with_capacity(24);
    plexus_connector::json::push_utc_millis(&mut out, u64::try_from(ms).unwrap_or(0));
    let text = String::from_utf8_lossy(&out).into_owned();
    match dialect {
        DialectKind::MySql => text.trim_end_matches('Z').replacen('T', " ", 1),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            key: None,
            payload: None,
        }
    }

    fn batch(mode: Mode, delete_mode: DeleteMode) -> TableBatch {
        let mut b = TableBatch::new("t".into(), mode, delete_mode, DialectKind::Postgres);
        b.use_columns(
            &[
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int64,
                    key: true,
                },
                Column {
                    name: "a".into(),
                    ty: ColumnType::Text,
                    key: false,
                },
                Column {
                    name: "big".into(),
                    ty: ColumnType::Text,
                    key: false,
                },
            ],
            true,
        );
        b
    }

    #[test]
    fn the_last_change_of_a_key_wins_and_keeps_unchanged_values() {
        let mut b = batch(Mode::Upsert, DeleteMode::Hard);
        b.add(
            origin(0),
            br#"{"before":null,"after":{"id":1,"a":"x","big":"B"},"op":"c","ts_ms":1}"#,
            0,
            &[],
        )
        .unwrap();
        b.add(
            origin(1),
            br#"{"before":null,"after":{"id":1,"a":"y"},"unchanged":["big"],"op":"u","ts_ms":2}"#,
            0,
            &[],
        )
        .unwrap();
        b.add(
            origin(2),
            br#"{"before":null,"after":{"id":2,"a":"z"},"unchanged":["big"],"op":"u","ts_ms":2}"#,
            0,
            &[],
        )
        .unwrap();
        assert_eq!(b.rows.len(), 2);
        assert_eq!(b.rows[0].cells[1], Some(Cell::Text("y".into())));
        assert_eq!(b.rows[0].cells[2], Some(Cell::Text("B".into())));
        assert_eq!(b.rows[1].cells[2], None);
        b.add(
            origin(3),
            br#"{"before":{"id":1},"after":null,"op":"d","ts_ms":3}"#,
            0,
            &[],
        )
        .unwrap();
        assert!(b.rows[0].delete);
        assert_eq!(b.rows[0].origin.offset, 3);
        let err = b
            .add(origin(4), br#"{"after":{"id":"x"},"op":"c"}"#, 0, &[])
            .unwrap_err();
        assert!(err.contains("`id`") && err.contains("integer"), "{err}");
        b.add(origin(5), br#"{"op":"t","before":null,"after":null}"#, 0, &[])
            .unwrap();
        assert!(b.truncate && b.rows.is_empty());
    }

    #[test]
    fn history_keeps_every_change_and_soft_deletes_keep_the_row() {
        let mut h = batch(Mode::History, DeleteMode::Hard);
        for offset in 0..3 {
            h.add(
                origin(offset),
                br#"{"after":{"id":1,"a":"x","big":"b"},"op":"u","ts_ms":5,"source":{"lsn":77}}"#,
                0,
                &[],
            )
            .unwrap();
        }
        assert_eq!(h.rows.len(), 3);
        assert_eq!(h.columns.len(), 3 + HISTORY_COLUMNS.len());
        let lsn = h.columns.iter().position(|c| c.name == "__lsn").unwrap();
        assert_eq!(h.rows[0].cells[lsn], Some(Cell::Int(77)));

        let mut s = batch(Mode::Upsert, DeleteMode::Soft);
        s.add(
            origin(0),
            br#"{"before":{"id":1,"a":"x"},"after":null,"op":"d","ts_ms":1000}"#,
            0,
            &[],
        )
        .unwrap();
        assert!(!s.rows[0].delete);
        assert_eq!(s.rows[0].cells[1], None);
        assert_eq!(s.rows[0].cells[3], Some(Cell::Bool(true)));
        assert_eq!(s.rows[0].cells[4], Some(Cell::Text("1970-01-01T00:00:01.000Z".into())));
    }

    #[test]
    fn rows_without_schema_infer_columns() {
        let mut b = TableBatch::new("t".into(), Mode::Upsert, DeleteMode::Hard, DialectKind::Sqlite);
        let keys = key_fields(Some(br#"{"id":1}"#));
        b.add(origin(0), br#"{"id":1,"name":"a"}"#, 0, &keys).unwrap();
        b.add(origin(1), br#"{"id":2,"name":"b","score":1.5}"#, 0, &keys)
            .unwrap();
        assert_eq!(b.columns.len(), 3);
        assert!(b.columns[0].key);
        assert_eq!(b.columns[2].ty, ColumnType::Float64);
        assert_eq!(b.rows[0].cells[2], None);
    }
}
