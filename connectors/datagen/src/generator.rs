//! The event stream as a pure function of (seed, event number).
//!
//! Events are spread over the enabled tables by a fixed pattern (orders three times as
//! often as customers or products). Within a table, the row inserted in the table's
//! `g`-th *group* has id `g + 1` and a fixed life: inserted in group `g`, updated in
//! groups `g + 2` and `g + 7`, and in group `g + 23` either deleted (a quarter of the
//! rows, chosen by the seed) or updated a third time. A row's columns are a function of
//! (seed, table, row, version), so an update's `before` is the previous version's row
//! and nothing has to be remembered: event `n` can be generated without the `n - 1`
//! before it, which makes resuming instant and the stream identical whatever the
//! restarts.

use bytes::BytesMut;

use crate::json::{push_cents, push_str, push_timestamp, push_u64, push_u64_padded};
use plexus_connector::json::push_escaped;

/// A table of the synthetic shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Orders,
    Customers,
    Products,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Orders, Table::Customers, Table::Products];

    pub fn name(self) -> &'static str {
        match self {
            Table::Orders => "orders",
            Table::Customers => "customers",
            Table::Products => "products",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    /// The envelope's `op` code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
        }
    }
}

/// One change event, before it is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event's number in the stream, from 0.
    pub seq: u64,
    pub table: Table,
    pub op: Op,
    /// The row's index in its table (its id is `row + 1`).
    pub row: u64,
    /// The row's version after the change (0 when inserted); for a delete, the version
    /// deleted.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

impl Event {
    /// The row's primary key.
    pub fn id(&self) -> u64 {
        self.row + 1
    }
}

/// 2026-01-01T00:00:00Z: event time starts here and advances about 3 ms per event.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// In which group after its insert each slot of a row's life falls: insert, first
/// update, second update, final change (delete or third update).
const DELAYS: [u64; 4] = [0, 2, 7, 23];
const SLOTS: u64 = DELAYS.len() as u64;
/// From this group on every group holds all four slots.
const FULL_FROM: u64 = DELAYS[3];
/// The table order within one turn of the pattern, before dropping disabled tables.
const PATTERN: [Table; 5] = [
    Table::Customers,
    Table::Orders,
    Table::Products,
    Table::Orders,
    Table::Orders,
];

/// Generates events and writes them as keys and envelope values.
#[derive(Debug, Clone)]
pub struct Generator {
    seed: u64,
    /// Table seeds, by [`Table::index`].
    table_seeds: [u64; 3],
    enabled: [bool; 3],
    pattern: Vec<Table>,
    /// For each position of the pattern, its rank among the positions of its table.
    rank: Vec<u64>,
    /// For each table, the pattern positions it occupies.
    positions: [Vec<u64>; 3],
    /// (group, slot) of a table's first events, before groups are full.
    early: Vec<(u64, u64)>,
    /// `,"source":{"connector":"datagen","name":"<name>","table":"`
    source_prefix: Vec<u8>,
}

impl Generator {
    /// A generator over `tables` (at least one; duplicates are ignored), with the
    /// connector's `name` in each envelope's `source`.
    pub fn new(seed: u64, tables: &[Table], name: &str) -> Generator {
        let mut enabled = [false; 3];
        for table in tables {
            enabled[table.index()] = true;
        }
        if !enabled.iter().any(|e| *e) {
            enabled = [true; 3];
        }
        let pattern: Vec<Table> = PATTERN.into_iter().filter(|t| enabled[t.index()]).collect();
        let mut positions: [Vec<u64>; 3] = Default::default();
        let mut rank = Vec::with_capacity(pattern.len());
        for (pos, table) in pattern.iter().enumerate() {
            rank.push(positions[table.index()].len() as u64);
            positions[table.index()].push(pos as u64);
        }
        let mut early = Vec::new();
        for group in 0..FULL_FROM {
            for (slot, delay) in DELAYS.iter().enumerate() {
                if group >= *delay {
                    early.push((group, slot as u64));
                }
            }
        }
        let mut source_prefix = BytesMut::new();
        source_prefix.extend_from_slice(br#","source":{"connector":"datagen","name":"#);
        push_str(&mut source_prefix, name);
        source_prefix.extend_from_slice(br#","table":""#);
        Generator {
            seed,
            table_seeds: Table::ALL.map(|t| mix(seed ^ mix(t.index() as u64 + 0x7ab1e))),
            enabled,
            pattern,
            rank,
            positions,
            early,
            source_prefix: source_prefix.to_vec(),
        }
    }

    /// Event number `seq`.
    pub fn event(&self, seq: u64) -> Event {
        let len = self.pattern.len() as u64;
        let pos = (seq % len) as usize;
        let table = self.pattern[pos];
        let weight = self.positions[table.index()].len() as u64;
        let local = seq / len * weight + self.rank[pos];
        let (group, slot) = self.group_slot(local);
        let row = group - DELAYS[slot as usize];
        let (op, version) = match slot {
            0 => (Op::Create, 0),
            3 if self.doomed(table, row) => (Op::Delete, 2),
            _ => (Op::Update, slot),
        };
        Event {
            seq,
            table,
            op,
            row,
            version,
            ts_ms: self.ts_ms(seq),
        }
    }

    /// Appends the event's key: `{"id":42}`.
    pub fn write_key(&self, event: &Event, buf: &mut BytesMut) {
        buf.extend_from_slice(br#"{"id":"#);
        push_u64(buf, event.id());
        buf.extend_from_slice(b"}");
    }

    /// Appends the event's change envelope (see `ENVELOPE.md`).
    pub fn write_value(&self, event: &Event, buf: &mut BytesMut) {
        buf.extend_from_slice(br#"{"before":"#);
        match event.op {
            Op::Create => buf.extend_from_slice(b"null"),
            Op::Update => self.write_row(event.table, event.row, event.version - 1, buf),
            Op::Delete => self.write_row(event.table, event.row, event.version, buf),
        }
        buf.extend_from_slice(br#","after":"#);
        match event.op {
            Op::Create | Op::Update => self.write_row(event.table, event.row, event.version, buf),
            Op::Delete => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(&self.source_prefix);
        buf.extend_from_slice(event.table.name().as_bytes());
        buf.extend_from_slice(br#"","seq":"#);
        push_u64(buf, event.seq);
        buf.extend_from_slice(br#","ts_ms":"#);
        push_u64(buf, event.ts_ms);
        buf.extend_from_slice(br#"},"op":""#);
        buf.extend_from_slice(event.op.code().as_bytes());
        buf.extend_from_slice(br#"","ts_ms":"#);
        push_u64(buf, event.ts_ms);
        buf.extend_from_slice(b"}");
    }

    /// The event time of event `seq`: strictly increasing, 3 ms apart on average.
    fn ts_ms(&self, seq: u64) -> u64 {
        EPOCH_MS + seq * 3 + mix(self.seed ^ seq) % 3
    }

    /// Whether the row's final change is a delete (a quarter of the rows).
    fn doomed(&self, table: Table, row: u64) -> bool {
        mix(self.row_seed(table, row) ^ 0xde1e7e).is_multiple_of(4)
    }

    fn row_seed(&self, table: Table, row: u64) -> u64 {
        mix(self.table_seeds[table.index()] ^ row.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// The (group, slot) of a table's `local`-th event.
    fn group_slot(&self, local: u64) -> (u64, u64) {
        match self.early.get(local as usize) {
            Some(early) => *early,
            None => {
                let full = local - self.early.len() as u64;
                (FULL_FROM + full / SLOTS, full % SLOTS)
            }
        }
    }

    /// The table-local number of the event of (group, slot); the inverse of
    /// [`Generator::group_slot`].
    fn local_index(&self, group: u64, slot: u64) -> u64 {
        if group >= FULL_FROM {
            return self.early.len() as u64 + (group - FULL_FROM) * SLOTS + slot;
        }
        let before: u64 = DELAYS.iter().map(|d| group.saturating_sub(*d)).sum();
        before + DELAYS[..slot as usize].iter().filter(|d| group >= **d).count() as u64
    }

    /// The stream number of a table's `local`-th event.
    fn global_index(&self, table: Table, local: u64) -> u64 {
        let positions = &self.positions[table.index()];
        let weight = positions.len() as u64;
        local / weight * self.pattern.len() as u64 + positions[(local % weight) as usize]
    }

    /// How many rows of `table` were inserted before event `seq`.
    fn inserted_before(&self, table: Table, seq: u64) -> u64 {
        let positions = &self.positions[table.index()];
        let len = self.pattern.len() as u64;
        let local_count =
            seq / len * positions.len() as u64 + positions.iter().filter(|p| **p < seq % len).count() as u64;
        match local_count {
            0 => 0,
            // Every group starts with its insert, so the groups begun are the rows inserted.
            count => self.group_slot(count - 1).0 + 1,
        }
    }

    /// The stream number of the row's insert.
    fn inserted_at(&self, table: Table, row: u64) -> u64 {
        self.global_index(table, self.local_index(row, 0))
    }

    /// An id of `table` inserted before event `seq` (any of 1..=1000 when the table is
    /// not generated).
    fn reference(&self, table: Table, seq: u64, hash: u64) -> u64 {
        let rows = if self.enabled[table.index()] {
            self.inserted_before(table, seq)
        } else {
            1000
        };
        1 + hash % rows.max(1)
    }

    fn write_row(&self, table: Table, row: u64, version: u64, buf: &mut BytesMut) {
        let hash = self.row_seed(table, row);
        let inserted = self.inserted_at(table, row);
        let created_at = self.ts_ms(inserted);
        buf.extend_from_slice(br#"{"id":"#);
        push_u64(buf, row + 1);
        match table {
            Table::Orders => {
                buf.extend_from_slice(br#","customer_id":"#);
                push_u64(buf, self.reference(Table::Customers, inserted, mix(hash ^ 1)));
                buf.extend_from_slice(br#","product_id":"#);
                push_u64(buf, self.reference(Table::Products, inserted, mix(hash ^ 2)));
                buf.extend_from_slice(br#","quantity":"#);
                push_u64(buf, 1 + mix(hash ^ 3) % 5);
                buf.extend_from_slice(br#","unit_price":"#);
                push_cents(buf, 99 + mix(hash ^ 4) % 49_900);
                buf.extend_from_slice(br#","status":""#);
                buf.extend_from_slice(ORDER_STATUS[version as usize % ORDER_STATUS.len()].as_bytes());
                buf.extend_from_slice(br#"","created_at":"#);
                push_timestamp(buf, created_at);
                buf.extend_from_slice(br#","note":"#);
                let note = mix(hash ^ 5);
                if note.is_multiple_of(3) {
                    push_str(buf, pick(NOTES, note >> 8));
                } else {
                    buf.extend_from_slice(b"null");
                }
            }
            Table::Customers => {
                let (first, first_ascii) = pick(FIRST_NAMES, mix(hash ^ 1));
                // The third update is a change of last name; the e-mail address keeps
                // the first one.
                let (last, last_ascii) = pick(LAST_NAMES, mix(hash ^ 2));
                let (new_last, _) = pick_changed(LAST_NAMES, mix(hash ^ 2), mix(hash ^ 3), true);
                buf.extend_from_slice(br#","name":""#);
                push_escaped(buf, first);
                buf.extend_from_slice(b" ");
                push_escaped(buf, if version >= 3 { new_last } else { last });
                // The first update changes the e-mail address, the second the country.
                buf.extend_from_slice(br#"","email":""#);
                push_escaped(buf, first_ascii);
                buf.extend_from_slice(b".");
                push_escaped(buf, last_ascii);
                push_u64(buf, row + 1);
                buf.extend_from_slice(b"@");
                push_escaped(buf, pick_changed(DOMAINS, mix(hash ^ 4), mix(hash ^ 6), version >= 1));
                buf.extend_from_slice(br#"","country":""#);
                push_escaped(buf, pick_changed(COUNTRIES, mix(hash ^ 5), mix(hash ^ 7), version >= 2));
                buf.extend_from_slice(br#"","created_at":"#);
                push_timestamp(buf, created_at);
            }
            Table::Products => {
                buf.extend_from_slice(br#","sku":"SKU-"#);
                push_u64_padded(buf, row + 1, 6);
                buf.extend_from_slice(br#"","name":""#);
                push_escaped(buf, pick(ADJECTIVES, mix(hash ^ 1)));
                buf.extend_from_slice(b" ");
                push_escaped(buf, pick(NOUNS, mix(hash ^ 2)));
                // Each update changes the price by 5 % and may change the stock.
                let base = 199 + mix(hash ^ 3) % 99_800;
                buf.extend_from_slice(br#"","price":"#);
                push_cents(buf, base * (100 + 5 * version) / 100);
                buf.extend_from_slice(br#","in_stock":"#);
                let in_stock = version == 0 || !mix(hash ^ 4 ^ (version << 32)).is_multiple_of(4);
                buf.extend_from_slice(if in_stock { b"true" } else { b"false" });
            }
        }
        buf.extend_from_slice(b"}");
    }
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pick<T: Copy>(items: &[T], hash: u64) -> T {
    items[(hash % items.len() as u64) as usize]
}

/// The item `pick(items, hash)` chose, or when `changed`, another one (chosen by
/// `change`), so that an update always changes the value.
fn pick_changed<T: Copy>(items: &[T], hash: u64, change: u64, changed: bool) -> T {
    let len = items.len() as u64;
    let mut index = hash % len;
    if changed && len > 1 {
        index = (index + 1 + change % (len - 1)) % len;
    }
    items[index as usize]
}

const ORDER_STATUS: [&str; 4] = ["pending", "paid", "shipped", "delivered"];

/// Free text with the characters JSON writers get wrong: quotes, backslashes, newlines,
/// non-ASCII.
const NOTES: &[&str] = &[
    "Leave at the door",
    "Please ring twice",
    "Gift wrap, \"Happy Birthday!\"",
    "Deliver after 18:00",
    "Fragile \u{2014} handle with care",
    "Call on arrival\nGate code 4711",
    "Path: C:\\Users\\orders",
    "Café au lait stains on box \u{2615}",
    "",
];

/// Display names and their ASCII forms for e-mail addresses.
const FIRST_NAMES: &[(&str, &str)] = &[
    ("Ada", "ada"),
    ("Grace", "grace"),
    ("Linus", "linus"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Mei", "mei"),
    ("Olu", "olu"),
    ("Søren", "soren"),
    ("Priya", "priya"),
    ("Émile", "emile"),
    ("Hiro", "hiro"),
    ("Fatima", "fatima"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("Lovelace", "lovelace"),
    ("Hopper", "hopper"),
    ("O'Brien", "obrien"),
    ("Müller", "mueller"),
    ("García", "garcia"),
    ("Nakamura", "nakamura"),
    ("Okafor", "okafor"),
    ("Kowalski", "kowalski"),
    ("Singh", "singh"),
    ("Dubois", "dubois"),
    ("Larsen", "larsen"),
    ("Chen", "chen"),
];

const DOMAINS: &[&str] = &["example.com", "example.org", "mail.example.net", "shop.example"];

const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "JP", "BR", "IN", "NG", "CA", "ES", "DK", "KR"];

const ADJECTIVES: &[&str] = &[
    "Red",
    "Compact",
    "Wireless",
    "Organic",
    "Ergonomic",
    "Vintage",
    "Smart",
    "Heavy-duty",
];

const NOUNS: &[&str] = &[
    "Kettle",
    "Backpack",
    "Headphones",
    "Desk Lamp",
    "Notebook",
    "Blender",
    "Chair",
    "Teapot",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_slot_and_local_index_are_inverse() {
        let generator = Generator::new(1, &Table::ALL, "t");
        for local in 0..10_000 {
            let (group, slot) = generator.group_slot(local);
            assert!(group >= DELAYS[slot as usize]);
            assert_eq!(generator.local_index(group, slot), local, "local {local}");
        }
    }

    #[test]
    fn global_index_inverts_the_pattern() {
        for tables in [&Table::ALL[..], &[Table::Orders], &[Table::Customers, Table::Products]] {
            let generator = Generator::new(1, tables, "t");
            let mut seen = [0u64; 3];
            for seq in 0..1000 {
                let event = generator.event(seq);
                assert!(tables.contains(&event.table));
                let local = seen[event.table.index()];
                seen[event.table.index()] += 1;
                assert_eq!(generator.global_index(event.table, local), seq);
            }
        }
    }

    #[test]
    fn inserted_before_counts_inserts() {
        let generator = Generator::new(3, &Table::ALL, "t");
        let mut inserted = [0u64; 3];
        for seq in 0..5000 {
            for table in Table::ALL {
                assert_eq!(generator.inserted_before(table, seq), inserted[table.index()]);
            }
            let event = generator.event(seq);
            if event.op == Op::Create {
                assert_eq!(event.row, inserted[event.table.index()]);
                inserted[event.table.index()] += 1;
            }
        }
    }
}
