//! Change events decoded into rows for one target table, deduplicated by key in memory:
//! the last change of a key in a batch wins (deletes included), and a later update that
//! left unchanged TOASTed values out takes them from the earlier change of the batch.
//!
//! Under a backlog a batch gathers the changes of hundreds of thousands of keys, so a
//! row is kept small: its cells encoded in one allocation, and of its record only where
//! it came from (a dead letter reads the record back from the log).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::{DeleteMode, DialectKind, Mode};
use crate::schema::{Column, ColumnType, key_indexes};
use crate::values::{Cell, CellRef, into_cell};

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
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Where a record is in the log.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub topic: &'a Arc<str>,
    pub partition: u32,
    pub offset: i64,
}

/// The last change of one key (or, in history mode, one change), as the batch holds
/// it: its cells in the batch's [`Rows::data`], and of its record only where it came
/// from.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where the cells start in the data, and their length.
    start: usize,
    len: u32,
    /// The index of the record's topic in [`Rows::topics`].
    topic: u32,
    partition: u32,
    offset: i64,
    delete: bool,
}

/// A row of a batch: the cells by column of the batch, encoded (see [`Row::cells`]). A
/// column added to the batch after the row has no cell in it: kept, like a `None`.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    data: &'a [u8],
    pub delete: bool,
    topic: &'a Arc<str>,
    partition: u32,
    offset: i64,
}

/// The tags of encoded cells; `KEPT`: keep what the target has (an unchanged TOASTed
/// value, a column the record's schema does not have).
const KEPT: u8 = 0;
const NULL: u8 = 1;
const FALSE: u8 = 2;
const TRUE: u8 = 3;
const INT: u8 = 4;
const FLOAT: u8 = 5;
const TEXT: u8 = 6;
const BYTES: u8 = 7;

impl<'a> Row<'a> {
    /// The cells in column order (`None`: keep the target's value), as far as the row
    /// has them.
    pub fn cells(&self) -> Cells<'a> {
        Cells { rest: self.data }
    }

    /// The cell of column `i` (`None`: keep the target's value).
    pub fn cell(&self, i: usize) -> Option<CellRef<'a>> {
        self.cells().nth(i).flatten()
    }

    /// Where the row's record came from.
    pub fn origin(&self) -> Origin {
        Origin {
            topic: Arc::clone(self.topic),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Rows in the order they were first taken: their cells encoded one after another in
/// one buffer, so that a row costs no allocation of its own. A row replaced by a later
/// change of its key leaves its old cells behind as garbage until the buffer is
/// compacted.
#[derive(Debug, Default)]
pub struct Rows {
    data: Vec<u8>,
    slots: Vec<Slot>,
    topics: Vec<Arc<str>>,
    /// Bytes of `data` no row uses any more.
    garbage: usize,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Row `i`.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> Row<'_> {
        self.row(&self.slots[i])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Row<'_>> {
        self.slots.iter().map(|slot| self.row(slot))
    }

    fn row<'a>(&'a self, slot: &Slot) -> Row<'a> {
        Row {
            data: &self.data[slot.start..slot.start + slot.len as usize],
            delete: slot.delete,
            topic: &self.topics[slot.topic as usize],
            partition: slot.partition,
            offset: slot.offset,
        }
    }

    /// What the rows take in memory, garbage included.
    pub fn memory(&self) -> usize {
        self.data.len() + self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// The index of `topic` in `topics` (records come from a few topics, the last one
    /// most often).
    fn topic_index(&mut self, topic: &Arc<str>) -> u32 {
        let found = match self.topics.last() {
            Some(last) if Arc::ptr_eq(last, topic) || last == topic => Some(self.topics.len() - 1),
            _ => self.topics.iter().position(|t| t == topic),
        };
        let i = found.unwrap_or_else(|| {
            self.topics.push(Arc::clone(topic));
            self.topics.len() - 1
        });
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    /// The slot of cells `data[start..start + len]` of the record `at`.
    fn slot(&mut self, start: usize, len: usize, delete: bool, at: At<'_>) -> Slot {
        Slot {
            start,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            topic: self.topic_index(at.topic),
            partition: at.partition,
            offset: at.offset,
            delete,
        }
    }

    /// Appends a row of `cells`.
    #[cfg(test)]
    fn push(&mut self, cells: &[Option<Cell>], delete: bool, at: At<'_>) {
        let mut encoded = Vec::new();
        encode_row(&mut encoded, cells);
        self.push_encoded(&encoded, delete, at);
    }

    /// Appends a row of encoded cells.
    fn push_encoded(&mut self, cells: &[u8], delete: bool, at: At<'_>) {
        let start = self.data.len();
        self.data.extend_from_slice(cells);
        let slot = self.slot(start, cells.len(), delete, at);
        self.slots.push(slot);
    }

    /// The slot of the cells appended from `start`, replacing those of `old`: in their
    /// place when they fit there (a key's changes are mostly alike in size).
    fn place(&mut self, old: Slot, start: usize, delete: bool, at: At<'_>) -> Slot {
        let len = self.data.len() - start;
        if len <= old.len as usize {
            self.data.copy_within(start.., old.start);
            self.data.truncate(start);
            self.garbage += old.len as usize - len;
            self.slot(old.start, len, delete, at)
        } else {
            self.garbage += old.len as usize;
            self.slot(start, len, delete, at)
        }
    }

    /// Whether the bytes no row uses are worth dropping: compacting copies the live
    /// rows, and once they are at most half of the buffer, it costs at most one more
    /// copy of every byte appended.
    fn wasteful(&self) -> bool {
        self.garbage > 1 << 20 && self.garbage > self.data.len() / 2
    }

    /// Copies the cells of `slots` (every live row) into a new buffer.
    fn compact<'s>(&mut self, slots: impl Iterator<Item = &'s mut Slot>) {
        let mut data = Vec::with_capacity((self.data.len() - self.garbage) * 5 / 4);
        for slot in slots {
            let start = data.len();
            data.extend_from_slice(&self.data[slot.start..slot.start + slot.len as usize]);
            slot.start = start;
        }
        self.data = data;
        self.garbage = 0;
    }
}

/// Appends `cells` in the encoding of [`Row`].
fn encode_row(out: &mut Vec<u8>, cells: &[Option<Cell>]) {
    for cell in cells {
        encode_cell(out, cell.as_ref().map(Cell::as_cell_ref));
    }
}

/// A key of the index by key: the hash and the encoded cells of the key columns (its
/// identity), and its row: where the row is in the order of the batch, and its slot.
/// Identities of up to [`INLINE`] bytes (a numeric key, a short text) are kept in the
/// entry, so that looking a key up and replacing its row reads nothing else; longer
/// ones in the index's own buffer.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    slot: Slot,
    row: u32,
    /// The identity's length when inline; [`SPILLED`]: `inline` holds where it is in
    /// the buffer (start, length).
    len: u8,
    inline: [u8; INLINE],
}

const INLINE: usize = 19;
const SPILLED: u8 = u8::MAX;

impl Entry {
    fn new(hash: u64, slot: Slot, row: usize, identity: &[u8], spill: &mut Vec<u8>) -> Entry {
        let mut inline = [0u8; INLINE];
        let len = if identity.len() <= INLINE {
            inline[..identity.len()].copy_from_slice(identity);
            identity.len() as u8
        } else {
            inline[..8].copy_from_slice(&(spill.len() as u64).to_le_bytes());
            inline[8..12].copy_from_slice(&(identity.len() as u32).to_le_bytes());
            spill.extend_from_slice(identity);
            SPILLED
        };
        Entry {
            hash,
            slot,
            row: u32::try_from(row).unwrap_or(u32::MAX),
            len,
            inline,
        }
    }

    fn identity<'a>(&'a self, spill: &'a [u8]) -> &'a [u8] {
        if self.len == SPILLED {
            let mut start = [0u8; 8];
            start.copy_from_slice(&self.inline[..8]);
            let mut len = [0u8; 4];
            len.copy_from_slice(&self.inline[8..12]);
            let start = u64::from_le_bytes(start) as usize;
            &spill[start..start + u32::from_le_bytes(len) as usize]
        } else {
            &self.inline[..usize::from(self.len)]
        }
    }
}

/// The cells of a [`Row`], decoded as they are read.
#[derive(Debug, Clone)]
pub struct Cells<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Cells<'a> {
    type Item = Option<CellRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.rest.split_first()?;
        self.rest = rest;
        let fixed = |cells: &mut Self| -> Option<[u8; 8]> {
            let (bytes, rest) = cells.rest.split_first_chunk::<8>()?;
            cells.rest = rest;
            Some(*bytes)
        };
        let sized = |cells: &mut Self| -> Option<&'a [u8]> {
            let len = take_len(&mut cells.rest)?;
            let bytes = cells.rest.get(..len)?;
            cells.rest = &cells.rest[len..];
            Some(bytes)
        };
        // The bytes were encoded by `Row::new`; anything else ends the row (its other
        // cells are then kept).
        let cell = match tag {
            KEPT => None,
            NULL => Some(CellRef::Null),
            FALSE => Some(CellRef::Bool(false)),
            TRUE => Some(CellRef::Bool(true)),
            INT => Some(CellRef::Int(i64::from_le_bytes(fixed(self)?))),
            FLOAT => Some(CellRef::Float(f64::from_bits(u64::from_le_bytes(fixed(self)?)))),
            TEXT => Some(CellRef::Text(std::str::from_utf8(sized(self)?).ok()?)),
            BYTES => Some(CellRef::Bytes(sized(self)?)),
            _ => return None,
        };
        Some(cell)
    }
}

/// Appends a cell in the encoding of [`Row`] (`None`: kept).
fn encode_cell(out: &mut Vec<u8>, cell: Option<CellRef<'_>>) {
    match cell {
        None => out.push(KEPT),
        Some(CellRef::Null) => out.push(NULL),
        Some(CellRef::Bool(b)) => out.push(if b { TRUE } else { FALSE }),
        Some(CellRef::Int(n)) => {
            out.push(INT);
            out.extend_from_slice(&n.to_le_bytes());
        }
        Some(CellRef::Float(f)) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Some(CellRef::Text(t)) => {
            out.push(TEXT);
            push_len(out, t.len());
            out.extend_from_slice(t.as_bytes());
        }
        Some(CellRef::Bytes(b)) => {
            out.push(BYTES);
            push_len(out, b.len());
            out.extend_from_slice(b);
        }
    }
}

/// Appends `len` in 7-bit groups, low first.
fn push_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len & 0x7f) as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

fn take_len(bytes: &mut &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        len |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(len);
        }
    }
    None
}

/// A change event's value as the sink reads it (see `connectors/datagen/ENVELOPE.md`),
/// `before` unparsed and `after` as `After`.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "After: Deserialize<'de>"))]
struct AnyEnvelope<'a, After> {
    #[serde(default, borrow)]
    before: Option<&'a RawValue>,
    #[serde(default = "Option::default")]
    after: Option<After>,
    #[serde(default, borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    source: Option<SourceInfo>,
    #[serde(default)]
    unchanged: Vec<String>,
}

/// An envelope read in one pass: `after` (what all but deletes need) is parsed with it,
/// `before` only once the op says it is a delete.
type Envelope<'a> = AnyEnvelope<'a, Image<'a>>;

/// An envelope with both images unparsed: read when [`Envelope`] cannot be, to tell
/// which part is wrong, or that the value is a plain row.
type RawEnvelope<'a> = AnyEnvelope<'a, &'a RawValue>;

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
    /// The indexes of the key columns.
    keys: Vec<usize>,
    /// The rows: in history mode, their slots too; in upsert mode the slots are in the
    /// index by key until the rows are taken.
    rows: Rows,
    /// The row of each key, by its identity (the key cells as rows encode them).
    by_key: HashTable<Entry>,
    /// Identities too long for their entry.
    spill: Vec<u8>,
    hasher: DefaultHashBuilder,
    /// A record's cells by column, and its change, while it is taken.
    cells: Vec<Option<Cell>>,
    decoded: Decoded,
    /// A `TRUNCATE` came before the rows: empty the table first.
    pub truncate: bool,
    /// Whether the columns came from a registered schema (otherwise they are inferred
    /// from the values, and new fields add columns).
    pub declared: bool,
    mode: Mode,
    delete_mode: DeleteMode,
    dialect: DialectKind,
}

impl TableBatch {
    pub fn new(table: String, mode: Mode, delete_mode: DeleteMode, dialect: DialectKind) -> TableBatch {
        TableBatch {
            table,
            columns: Vec::new(),
            by_name: HashMap::new(),
            keys: Vec::new(),
            rows: Rows::default(),
            by_key: HashTable::new(),
            spill: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            cells: Vec::new(),
            decoded: Decoded::default(),
            truncate: false,
            declared: false,
            mode,
            delete_mode,
            dialect,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.by_key.is_empty() && !self.truncate
    }

    /// What the buffered rows and the index by key take in memory.
    pub fn memory(&self) -> usize {
        self.rows.memory() + self.by_key.capacity() * (std::mem::size_of::<Entry>() + 1) + self.spill.capacity()
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
        self.keys = key_indexes(&self.columns);
    }

    fn add_column(&mut self, column: Column) {
        self.by_name.insert(column.name.clone(), self.columns.len());
        self.columns.push(column);
    }

    /// Decodes one record's value and adds its change. `key_fields`: the record key's
    /// field names, for tables whose schema marks no key. The error is the reason to
    /// dead-letter the record.
    pub fn add(&mut self, at: At<'_>, value: &[u8], timestamp: i64, key_fields: &[String]) -> Result<(), String> {
        let parsed = parse(value, timestamp)?;
        if !self.declared {
            self.infer_columns(&parsed.image, key_fields);
        }
        let mut cells = std::mem::take(&mut self.cells);
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.bytes.clear();
        let change = self.convert(parsed, at, &mut cells, &mut decoded.bytes);
        if let Ok(change) = &change {
            self.put_change(change, &decoded.bytes, at);
        }
        self.cells = cells;
        self.decoded = decoded;
        change.map(|_| ())
    }

    /// Decodes the values of records (where each is, its value, its timestamp) against
    /// the batch's columns, without taking them: records of a table with a registered
    /// schema can be decoded on several threads, then taken in order with
    /// [`TableBatch::take_decoded`].
    pub fn decode<'r>(&self, records: impl Iterator<Item = (At<'r>, &'r [u8], i64)>) -> Decoded {
        let mut decoded = Decoded::default();
        let mut cells = Vec::new();
        for (at, value, timestamp) in records {
            let change = parse(value, timestamp).and_then(|parsed| {
                if !self.declared {
                    return Err("the table's columns are inferred: take the record with `add`".to_owned());
                }
                self.convert(parsed, at, &mut cells, &mut decoded.bytes)
            });
            decoded.changes.push(change);
        }
        decoded
    }

    /// Takes the `i`-th change of `decoded` (the record `at`); its error is the reason
    /// to dead-letter the record.
    pub fn take_decoded(&mut self, decoded: &Decoded, i: usize, at: At<'_>) -> Result<(), String> {
        match decoded.changes.get(i) {
            Some(Ok(change)) => {
                self.put_change(change, &decoded.bytes, at);
                Ok(())
            }
            Some(Err(reason)) => Err(reason.clone()),
            None => Err(format!("no decoded change {i}")),
        }
    }

    fn put_change(&mut self, change: &Change, bytes: &[u8], at: At<'_>) {
        match change {
            Change::Truncate => {
                self.clear_rows();
                self.truncate = true;
            }
            Change::Row {
                delete,
                identity,
                cells,
            } => {
                let cells = &bytes[cells.clone()];
                match self.mode {
                    Mode::History => self.rows.push_encoded(cells, *delete, at),
                    Mode::Upsert => self.put(&bytes[identity.clone()], cells, *delete, at),
                }
            }
        }
    }

    /// The change of `parsed`: its cells by column and (in upsert mode) its identity,
    /// appended to `bytes`. `cells`: a buffer for the cells.
    fn convert(
        &self,
        parsed: Parsed<'_>,
        at: At<'_>,
        cells: &mut Vec<Option<Cell>>,
        bytes: &mut Vec<u8>,
    ) -> Result<Change, String> {
        let Parsed {
            envelope,
            op,
            delete,
            ts_ms,
            image,
        } = parsed;
        if op == "t" && self.mode == Mode::Upsert {
            return Ok(Change::Truncate);
        }
        cells.clear();
        cells.resize(self.columns.len(), None);
        for (position, (name, value)) in image.into_iter().enumerate() {
            // Images list their fields in the schema's order: try the column at the
            // same position before looking the name up.
            let found = match self.columns.get(position) {
                Some(column) if column.name == name => Some(position),
                _ => self.by_name.get(name.as_ref()).copied(),
            };
            let Some(i) = found else {
                if self.declared {
                    return Err(format!("field `{name}` is not a column of the record's schema"));
                }
                continue;
            };
            let column = &self.columns[i];
            let cell = into_cell(&column.ty, value, self.dialect).map_err(|e| {
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
        let identity_start = bytes.len();
        match self.mode {
            Mode::History => {
                let unchanged = (!envelope.unchanged.is_empty()).then(|| envelope.unchanged.join(","));
                let source = envelope.source.as_ref();
                let meta = [
                    ("__op", Some(Cell::Text(op.to_string()))),
                    ("__ts_ms", Some(Cell::Int(ts_ms))),
                    ("__lsn", Some(source.and_then(|s| s.lsn).map_or(Cell::Null, Cell::Int))),
                    ("__seq", Some(source.and_then(|s| s.seq).map_or(Cell::Null, Cell::Int))),
                    ("__unchanged", Some(unchanged.map_or(Cell::Null, Cell::Text))),
                    ("__topic", Some(Cell::Text(at.topic.to_string()))),
                    ("__partition", Some(Cell::Int(i64::from(at.partition)))),
                    ("__offset", Some(Cell::Int(at.offset))),
                ];
                for (name, cell) in meta {
                    if let Some(&i) = self.by_name.get(name) {
                        cells[i] = cell;
                    }
                }
            }
            Mode::Upsert => {
                if self.keys.is_empty() {
                    return Err(format!(
                        "table `{}` has no primary key (neither in its schema nor in the record key): use mode = \"history\"",
                        self.table
                    ));
                }
                for &k in &self.keys {
                    match &cells[k] {
                        Some(Cell::Null) | None => {
                            bytes.truncate(identity_start);
                            return Err(format!("key column `{}` is null or missing", self.columns[k].name));
                        }
                        Some(cell) => encode_cell(bytes, Some(cell.as_cell_ref())),
                    }
                }
                if self.delete_mode == DeleteMode::Soft {
                    self.soft_delete_cells(cells, delete, ts_ms);
                }
            }
        }
        let cells_start = bytes.len();
        encode_row(bytes, cells);
        Ok(Change::Row {
            delete: delete && self.mode == Mode::Upsert && self.delete_mode == DeleteMode::Hard,
            identity: identity_start..cells_start,
            cells: cells_start..bytes.len(),
        })
    }

    /// Soft deletes: a delete keeps every column but the key and sets the flags; other
    /// changes clear them.
    fn soft_delete_cells(&self, cells: &mut [Option<Cell>], delete: bool, ts_ms: i64) {
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
                _ if delete && !self.keys.contains(&i) => cells[i] = None,
                _ => {}
            }
        }
    }

    /// Keeps the change as the last of its key (`identity`: the cells of the key
    /// columns, encoded), merging what an update left out from the key's earlier change
    /// in this batch.
    fn put(&mut self, identity: &[u8], cells: &[u8], delete: bool, at: At<'_>) {
        let hash = self.hasher.hash_one(identity);
        let rows = &mut self.rows;
        let spill = &self.spill;
        let start = rows.data.len();
        match self
            .by_key
            .find_mut(hash, |e| e.hash == hash && e.identity(spill) == identity)
        {
            Some(entry) => {
                let new = Cells { rest: cells };
                if !delete && new.clone().any(|c| c.is_none()) {
                    // The earlier change's cells are read from the buffer the merged
                    // row is appended to: encode into a copy of them.
                    let earlier = rows.row(&entry.slot);
                    let mut merged = Vec::with_capacity(earlier.data.len() + cells.len());
                    let mut old = earlier.cells();
                    for cell in new {
                        let before = old.next().flatten();
                        let cell = match cell {
                            Some(cell) => Some(cell),
                            None if earlier.delete => Some(CellRef::Null),
                            None => before,
                        };
                        encode_cell(&mut merged, cell);
                    }
                    rows.data.extend_from_slice(&merged);
                } else {
                    rows.data.extend_from_slice(cells);
                }
                entry.slot = rows.place(entry.slot, start, delete, at);
            }
            None => {
                rows.data.extend_from_slice(cells);
                let slot = rows.slot(start, cells.len(), delete, at);
                let entry = Entry::new(hash, slot, self.by_key.len(), identity, &mut self.spill);
                self.by_key.insert_unique(hash, entry, |e| e.hash);
            }
        }
        if self.rows.wasteful() {
            self.rows.compact(self.by_key.iter_mut().map(|e| &mut e.slot));
        }
    }

    /// A copy of the rows, in the order their keys were first taken.
    #[cfg(test)]
    fn rows(&self) -> Rows {
        let mut rows = Rows {
            data: self.rows.data.clone(),
            slots: self.rows.slots.clone(),
            topics: self.rows.topics.clone(),
            garbage: self.rows.garbage,
        };
        rows.slots.extend(self.keyed_slots());
        rows
    }

    /// The slots of the rows in the index by key, in the order their keys were first
    /// taken.
    fn keyed_slots(&self) -> Vec<Slot> {
        let mut slots = vec![
            Slot {
                start: 0,
                len: 0,
                topic: 0,
                partition: 0,
                offset: 0,
                delete: false,
            };
            self.by_key.len()
        ];
        for entry in &self.by_key {
            if let Some(slot) = slots.get_mut(entry.row as usize) {
                *slot = entry.slot;
            }
        }
        slots
    }

    /// Adds columns for fields of a record without a registered schema.
    fn infer_columns(&mut self, image: &[(Cow<'_, str>, Value)], key_fields: &[String]) {
        let mut new = Vec::new();
        for (name, value) in image {
            if !self.by_name.contains_key(name.as_ref()) && !name.starts_with("__") {
                new.push(Column {
                    name: name.to_string(),
                    ty: crate::schema::infer(value),
                    key: key_fields.iter().any(|k| k == name),
                });
            }
        }
        if !new.is_empty() || self.columns.is_empty() {
            self.use_columns(&new, false);
        }
    }

    /// Takes the rows (and whether a truncate comes first), leaving the batch empty
    /// with its columns.
    pub fn take_rows(&mut self) -> (Rows, bool) {
        let keyed = self.keyed_slots();
        let mut rows = std::mem::take(&mut self.rows);
        rows.slots.extend(keyed);
        // A new index rather than a cleared one: the old one's table would stay as large
        // as the largest batch, and count against the memory budget.
        self.by_key = HashTable::new();
        self.spill = Vec::new();
        (rows, std::mem::replace(&mut self.truncate, false))
    }

    fn clear_rows(&mut self) {
        self.rows = Rows::default();
        self.by_key = HashTable::new();
        self.spill = Vec::new();
    }
}

/// The envelope of a value [`Envelope`] could not read: one with an image that is not
/// an object (the error says which), or a plain row (an upsert of it).
fn slow_envelope(text: &str, timestamp: i64) -> Result<Envelope<'_>, String> {
    match serde_json::from_str::<RawEnvelope<'_>>(text) {
        Ok(raw) if raw.op.is_some() => {
            let after = match raw.after {
                Some(after) if raw.op.as_deref() != Some("d") => Some(
                    serde_json::from_str::<Image<'_>>(after.get())
                        .map_err(|e| format!("`after` is not a JSON object: {e}"))?,
                ),
                _ => None,
            };
            Ok(Envelope {
                before: raw.before,
                after,
                op: raw.op,
                ts_ms: raw.ts_ms,
                source: raw.source,
                unchanged: raw.unchanged,
            })
        }
        _ => Ok(Envelope {
            before: None,
            after: Some(
                serde_json::from_str::<Image<'_>>(text).map_err(|e| format!("the value is not a JSON object: {e}"))?,
            ),
            op: Some("c".into()),
            ts_ms: Some(timestamp),
            source: None,
            unchanged: Vec::new(),
        }),
    }
}

/// A record's value, parsed: the change envelope, and the image its op needs.
struct Parsed<'v> {
    envelope: Envelope<'v>,
    op: Cow<'v, str>,
    delete: bool,
    ts_ms: i64,
    image: Vec<(Cow<'v, str>, Value)>,
}

/// Parses a record's value: a change envelope, or a plain row (an upsert of it).
fn parse(value: &[u8], timestamp: i64) -> Result<Parsed<'_>, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("the value is not UTF-8 JSON: {e}"))?;
    let mut envelope = match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(envelope) if envelope.op.is_some() => envelope,
        _ => slow_envelope(text, timestamp)?,
    };
    let op = envelope.op.take().unwrap_or(Cow::Borrowed("c"));
    let delete = match op.as_ref() {
        "c" | "r" | "u" | "t" => false,
        "d" => true,
        other => return Err(format!("unknown op `{other}`")),
    };
    let image = if delete {
        let before = envelope.before.ok_or("a delete without `before`: the key is unknown")?;
        serde_json::from_str::<Image<'_>>(before.get())
            .map_err(|e| format!("`before` is not a JSON object: {e}"))?
            .0
    } else {
        match envelope.after.take() {
            Some(image) => image.0,
            None if op == "t" => Vec::new(),
            None => return Err(format!("op `{op}` without `after`")),
        }
    };
    Ok(Parsed {
        ts_ms: envelope.ts_ms.unwrap_or(timestamp),
        envelope,
        op,
        delete,
        image,
    })
}

/// A record's change, decoded against the columns of its batch; its bytes are in a
/// [`Decoded`].
#[derive(Debug, Clone)]
enum Change {
    /// A `TRUNCATE` in upsert mode: the batch's rows go, and the table is emptied first.
    Truncate,
    /// A row: the encoded cells of its key columns (upsert mode), and of every column.
    Row {
        delete: bool,
        identity: Range<usize>,
        cells: Range<usize>,
    },
}

/// Records decoded together ([`TableBatch::decode`]): their changes, or why one cannot
/// be taken, in order.
#[derive(Debug, Default)]
pub struct Decoded {
    bytes: Vec<u8>,
    changes: Vec<Result<Change, String>>,
}

impl Decoded {
    /// The records decoded.
    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

/// A row image: its fields in order, the names borrowed from the record where they
/// have no escapes (a `Map` would allocate every name and sort them).
#[derive(Debug)]
struct Image<'a>(Vec<(Cow<'a, str>, Value)>);

impl<'de: 'a, 'a> Deserialize<'de> for Image<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = Image<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image<'a>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Name(name), value)) = map.next_entry::<Name<'a>, Value>()? {
                    fields.push((name, value));
                }
                Ok(Image(fields))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData))
    }
}

/// A field name, borrowed where it can be.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Text<'a> {
            type Value = Name<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Text(std::marker::PhantomData))
    }
}

/// The record key's field names (`{"id": 42}` gives `id`), for records without a schema.
pub fn key_fields(key: Option<&[u8]>) -> Vec<String> {
    match key.and_then(|k| serde_json::from_slice::<serde_json::Map<String, Value>>(k).ok()) {
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

    static TOPIC: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("t"));

    fn origin(offset: i64) -> At<'static> {
        At {
            topic: &TOPIC,
            partition: 0,
            offset,
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
        assert_eq!(b.rows().len(), 2);
        assert_eq!(b.rows().get(0).cell(1), Some(CellRef::Text("y")));
        assert_eq!(b.rows().get(0).cell(2), Some(CellRef::Text("B")));
        assert_eq!(b.rows().get(1).cell(2), None);
        b.add(
            origin(3),
            br#"{"before":{"id":1},"after":null,"op":"d","ts_ms":3}"#,
            0,
            &[],
        )
        .unwrap();
        assert!(b.rows().get(0).delete);
        assert_eq!(b.rows().get(0).origin().offset, 3);
        let err = b
            .add(origin(4), br#"{"after":{"id":"x"},"op":"c"}"#, 0, &[])
            .unwrap_err();
        assert!(err.contains("`id`") && err.contains("integer"), "{err}");
        b.add(origin(5), br#"{"op":"t","before":null,"after":null}"#, 0, &[])
            .unwrap();
        assert!(b.truncate && b.rows().is_empty());
    }

    #[test]
    fn values_that_are_not_changes_say_which_part_is_wrong() {
        let mut b = batch(Mode::Upsert, DeleteMode::Hard);
        let mut err = |value: &str| b.add(origin(0), value.as_bytes(), 0, &[]).unwrap_err();
        assert!(err(r#"{"after":5,"op":"c"}"#).starts_with("`after` is not a JSON object"));
        assert!(err(r#"{"before":[1],"after":null,"op":"d"}"#).starts_with("`before` is not a JSON object"));
        assert!(err(r#"{"before":null,"after":null,"op":"d"}"#).contains("without `before`"));
        assert!(err(r#"{"after":null,"op":"u"}"#).contains("op `u` without `after`"));
        assert!(err("42").starts_with("the value is not a JSON object"));
        assert!(err(r#"{"after":{"id":1},"op":"x"}"#).contains("unknown op `x`"));
        // A delete's `after` is not read.
        b.add(origin(1), br#"{"before":{"id":3},"after":7,"op":"d"}"#, 0, &[])
            .unwrap();
        assert!(b.rows().get(0).delete);
    }

    #[test]
    fn decoding_apart_then_taking_in_order_is_adding() {
        let values: Vec<String> = (0..400)
            .map(|n| match n % 9 {
                0 => format!(r#"{{"before":{{"id":{}}},"after":null,"op":"d"}}"#, n % 13),
                1 => format!(
                    r#"{{"after":{{"id":{},"a":"p{n}"}},"unchanged":["big"],"op":"u"}}"#,
                    n % 13
                ),
                2 => r#"{"after":{"id":"x"},"op":"c"}"#.to_owned(),
                3 if n == 201 => r#"{"op":"t","before":null,"after":null}"#.to_owned(),
                4 => "not json".to_owned(),
                _ => format!(r#"{{"after":{{"id":{},"a":"a{n}","big":"B{n}"}},"op":"c"}}"#, n % 13),
            })
            .collect();
        let at = |n: usize| origin(n as i64);
        for (mode, delete_mode) in [
            (Mode::Upsert, DeleteMode::Hard),
            (Mode::Upsert, DeleteMode::Soft),
            (Mode::History, DeleteMode::Hard),
        ] {
            let mut added = batch(mode, delete_mode);
            let added_errors: Vec<Result<(), String>> = values
                .iter()
                .enumerate()
                .map(|(n, v)| added.add(at(n), v.as_bytes(), 0, &[]))
                .collect();
            let mut taken = batch(mode, delete_mode);
            let mut taken_errors = Vec::new();
            for part in values.chunks(150).enumerate().collect::<Vec<_>>().chunks(2) {
                let decoded: Vec<(usize, Decoded)> = part
                    .iter()
                    .map(|(p, values)| {
                        let items = values
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (at(p * 150 + i), v.as_bytes(), 0));
                        (*p, taken.decode(items))
                    })
                    .collect();
                for (p, decoded) in &decoded {
                    for i in 0..decoded.len() {
                        taken_errors.push(taken.take_decoded(decoded, i, at(p * 150 + i)));
                    }
                }
            }
            assert_eq!(added_errors, taken_errors, "{mode:?}");
            assert!(added_errors.iter().filter(|e| e.is_err()).count() > 50);
            let (a, b) = (added.rows(), taken.rows());
            assert_eq!(a.len(), b.len());
            assert!(a.len() > 5, "{mode:?}");
            for (x, y) in a.iter().zip(b.iter()) {
                let cells = |r: Row<'_>| r.cells().map(|c| c.map(CellRef::to_cell)).collect::<Vec<_>>();
                assert_eq!(cells(x), cells(y));
                assert_eq!((x.delete, x.origin().offset), (y.delete, y.origin().offset));
            }
            assert_eq!(added.truncate, taken.truncate);
        }
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
        assert_eq!(h.rows().len(), 3);
        assert_eq!(h.columns.len(), 3 + HISTORY_COLUMNS.len());
        let lsn = h.columns.iter().position(|c| c.name == "__lsn").unwrap();
        assert_eq!(h.rows().get(0).cell(lsn), Some(CellRef::Int(77)));

        let mut s = batch(Mode::Upsert, DeleteMode::Soft);
        s.add(
            origin(0),
            br#"{"before":{"id":1,"a":"x"},"after":null,"op":"d","ts_ms":1000}"#,
            0,
            &[],
        )
        .unwrap();
        assert!(!s.rows().get(0).delete);
        assert_eq!(s.rows().get(0).cell(1), None);
        assert_eq!(s.rows().get(0).cell(3), Some(CellRef::Bool(true)));
        assert_eq!(s.rows().get(0).cell(4), Some(CellRef::Text("1970-01-01T00:00:01.000Z")));
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
        assert_eq!(b.rows().get(0).cell(2), None);
    }

    #[test]
    fn composite_keys_anywhere_in_the_row_find_their_earlier_change() {
        let mut b = TableBatch::new("t".into(), Mode::Upsert, DeleteMode::Hard, DialectKind::Postgres);
        let column = |name: &str, ty: ColumnType, key: bool| Column {
            name: name.into(),
            ty,
            key,
        };
        b.use_columns(
            &[
                column("a", ColumnType::Text, false),
                column("k1", ColumnType::Int64, true),
                column("b", ColumnType::Text, false),
                column("k2", ColumnType::Text, true),
            ],
            true,
        );
        let changes = [
            (r#"{"a":"1","k1":1,"b":"x","k2":"p"}"#, 1),
            (r#"{"a":"2","k1":1,"b":"y","k2":"q"}"#, 2),
            (r#"{"a":"3","k1":2,"b":"z","k2":"p"}"#, 3),
            (r#"{"a":"4","k1":1,"b":"w","k2":"p"}"#, 3),
            (r#"{"a":"5","k1":1,"k2":"pp"}"#, 4),
        ];
        for (offset, (after, rows)) in changes.iter().enumerate() {
            let value = format!(r#"{{"after":{after},"op":"u"}}"#);
            b.add(origin(offset as i64), value.as_bytes(), 0, &[]).unwrap();
            assert_eq!(b.rows().len(), *rows, "after {after}");
        }
        assert_eq!(b.rows().get(0).cell(0), Some(CellRef::Text("4")));
        assert_eq!(b.rows().get(0).cell(2), Some(CellRef::Text("w")));
        assert_eq!(b.rows().get(3).cell(2), None, "a new key merges nothing");
    }

    #[test]
    fn many_changes_of_long_keys_find_their_row_and_the_garbage_is_compacted() {
        let mut b = TableBatch::new("t".into(), Mode::Upsert, DeleteMode::Hard, DialectKind::Postgres);
        b.use_columns(
            &[
                Column {
                    name: "k".into(),
                    ty: ColumnType::Text,
                    key: true,
                },
                Column {
                    name: "v".into(),
                    ty: ColumnType::Text,
                    key: false,
                },
            ],
            true,
        );
        // Values of changing length: a change longer than the one before is appended,
        // a shorter one leaves bytes unused.
        let v = |n: i64| format!("{n}{}", "x".repeat((n % 7) as usize * 3));
        let other: Arc<str> = Arc::from("other");
        let long = "k".repeat(30);
        for n in 0..100_000i64 {
            let value = format!(r#"{{"after":{{"k":"{long}-{}","v":"{}"}},"op":"u"}}"#, n % 100, v(n));
            let topic = if n % 2 == 0 { &*TOPIC } else { &other };
            let at = At {
                topic,
                partition: 1,
                offset: n,
            };
            b.add(at, value.as_bytes(), 0, &[]).unwrap();
        }
        assert_eq!(b.rows().len(), 100);
        let rows = b.rows();
        for (i, row) in rows.iter().enumerate() {
            let last = 99_900 + i as i64;
            assert_eq!(row.cell(0), Some(CellRef::Text(&format!("{long}-{i}"))));
            assert_eq!(row.cell(1), Some(CellRef::Text(&v(last))));
            let origin = row.origin();
            assert_eq!((origin.offset, origin.partition), (last, 1));
            assert_eq!(&*origin.topic, if last % 2 == 0 { "t" } else { "other" });
        }
        // Over 100,000 changes of about 60 bytes, most appended; the bytes no row uses
        // are dropped once they are more than half of the buffer (and 1 MiB).
        assert!(b.rows.data.len() < 3 << 19, "{} bytes", b.rows.data.len());
        assert!(b.rows.data.len() >= b.rows.garbage + 100 * 45);
        let (rows, truncate) = b.take_rows();
        assert_eq!((rows.len(), truncate), (100, false));
        assert!(b.rows().is_empty() && b.is_empty());
    }

    #[test]
    fn rows_encode_every_kind_of_cell() {
        let long = "é".repeat(200);
        let cells = [
            None,
            Some(Cell::Null),
            Some(Cell::Bool(true)),
            Some(Cell::Bool(false)),
            Some(Cell::Int(i64::MIN)),
            Some(Cell::Float(-0.5)),
            Some(Cell::Text(String::new())),
            Some(Cell::Text(long.clone())),
            Some(Cell::Bytes(vec![0, 0x80, 0xff])),
            None,
        ];
        let mut rows = Rows::default();
        rows.push(&cells, false, origin(0));
        let row = rows.get(0);
        let back: Vec<Option<Cell>> = row.cells().map(|c| c.map(CellRef::to_cell)).collect();
        assert_eq!(back, cells);
        assert_eq!(row.cell(7), Some(CellRef::Text(&long)));
        assert_eq!(row.cell(10), None, "a column added after the row is kept");
        assert!(rows.memory() > long.len());
    }
}
