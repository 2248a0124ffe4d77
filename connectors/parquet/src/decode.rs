//! Records to Arrow batches, columnar: each record's value is fed to arrow-json's
//! [`Decoder`] as it is (no `serde_json::Value` per record), a whole batch at a time.
//!
//! arrow-json reports syntax errors while it reads bytes and type errors only when a
//! batch is flushed, for the batch as a whole; and after an error the decoder holds a
//! partial state that cannot be cleared. So the fast path feeds every record and
//! flushes once; if anything fails, the slow path decodes the records one by one with a
//! fresh decoder to find the bad ones (they go to the dead letters with arrow-json's
//! reason), then decodes the good ones together again. Batches without bad records pay
//! nothing for this.
//!
//! Flattening happens on the tape (see `FlattenDecoder`): only the row image that is
//! written (`after`, or `before` for a delete) is decoded.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StructArray};
use arrow_json::reader::Decoder;
use arrow_json::{ArrayDecoder, DecoderContext, DecoderFactory, ReaderBuilder, Tape, TapeElement};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use base64::Engine;
use plexus_connector::SinkRecord;

use crate::config::Envelope;
use crate::error::ParquetError;
use crate::schema::{TableSchema, storage_type};

/// Decodes the records of one table schema into batches of the schema's file layout.
pub(crate) struct RowDecoder {
    envelope: Envelope,
    /// What arrow-json fills from a whole value.
    main_schema: SchemaRef,
    /// The columns written to files.
    output: SchemaRef,
    main: Decoder,
    capacity: usize,
}

/// The rows decoded from a slice of records.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Rows in the file layout ([`RowDecoder::output_schema`]), in record order.
    pub batch: RecordBatch,
    /// For each row, the index of its record in the slice given to [`RowDecoder::decode`].
    pub rows: Vec<usize>,
}

/// A record that does not fit, by its index in the slice, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub index: usize,
    pub reason: String,
}

impl std::fmt::Debug for RowDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowDecoder")
            .field("envelope", &self.envelope)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// Rows per decoder flush unless a caller passes more at once.
const DEFAULT_CAPACITY: usize = 8192;

impl RowDecoder {
    pub fn new(table: &TableSchema, envelope: Envelope) -> Result<RowDecoder, ParquetError> {
        let row = Arc::new(Field::new_struct("row", table.fields.clone(), true));
        let row_type = |name: &str| Field::new(name, row.data_type().clone(), true);
        let op = Field::new("op", DataType::Utf8, true);
        let ts_ms = Field::new(
            "ts_ms",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        );
        let main_schema = match envelope {
            Envelope::Flatten => {
                let source = Field::new_struct(
                    "source",
                    vec![
                        Field::new("lsn", DataType::Int64, true),
                        Field::new("seq", DataType::Int64, true),
                    ],
                    true,
                );
                // `row` is `after`, or `before` for a delete: see `FlattenDecoder`.
                Schema::new(vec![row_type(FLATTENED_ROW), op, ts_ms, source])
            }
            Envelope::Whole => Schema::new(vec![row_type("before"), row_type("after"), whole_source(), op, ts_ms]),
            Envelope::None => Schema::new(table.fields.clone()),
        };
        let main_schema = Arc::new(main_schema);
        let output = Arc::new(output_schema(&main_schema, envelope));
        Ok(RowDecoder {
            envelope,
            main: build(&main_schema, DEFAULT_CAPACITY)?,
            main_schema,
            output,
            capacity: DEFAULT_CAPACITY,
        })
    }

    /// The columns of the files this decoder's rows go to.
    pub fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Decodes `records` (none of them a tombstone). Bad records are returned as
    /// [`Rejected`]; an error means the sink itself is broken.
    pub fn decode(&mut self, records: &[&SinkRecord]) -> Result<(Option<Decoded>, Vec<Rejected>), ParquetError> {
        if records.len() > self.capacity {
            self.capacity = records.len();
            self.main = build(&self.main_schema, self.capacity)?;
        }
        let flatten = self.envelope == Envelope::Flatten;
        let values: Vec<Input<'_>> = records
            .iter()
            .map(|r| {
                let value = r.value.as_deref().unwrap_or_default();
                if flatten { without_before(value) } else { whole(value) }
            })
            .collect();
        let fast = values.iter().try_for_each(|v| feed(&mut self.main, *v)).is_ok();
        let flushed = if fast { self.main.flush().ok().flatten() } else { None };
        let (raw, mut rows, mut rejected) = match flushed {
            Some(batch) => (batch, (0..records.len()).collect(), Vec::new()),
            None if fast && values.is_empty() => return Ok((None, Vec::new())),
            None => {
                // The decoder may hold a partial record or an unflushable tape.
                self.main = build(&self.main_schema, self.capacity)?;
                let each = decode_each(&self.main_schema, &values)?;
                match each.batch {
                    Some(batch) => (batch, each.good, each.rejected),
                    None => return Ok((None, each.rejected)),
                }
            }
        };
        let mut raw = raw;
        if self.envelope != Envelope::None {
            (raw, rows) = reject_non_envelopes(raw, rows, &mut rejected)?;
        }
        let columns = match self.envelope {
            Envelope::Flatten => {
                let mut columns = raw.column(0).as_struct().columns().to_vec();
                let source = raw.column(3).as_struct();
                columns.push(Arc::clone(raw.column(1)));
                columns.push(Arc::clone(raw.column(2)));
                columns.push(child(source, "lsn")?);
                columns.push(child(source, "seq")?);
                columns
            }
            Envelope::Whole | Envelope::None => raw.columns().to_vec(),
        };
        if rows.is_empty() {
            return Ok((None, rejected));
        }
        let mut columns = columns;
        columns.push(Arc::new(
            rows.iter()
                .map(|&i| records[i].partition as i32)
                .collect::<Int32Array>(),
        ));
        columns.push(Arc::new(
            rows.iter().map(|&i| records[i].offset).collect::<Int64Array>(),
        ));
        let columns = columns
            .into_iter()
            .zip(self.output.fields())
            .map(|(column, field)| to_storage(column, field.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        rejected.sort_by_key(|r| r.index);
        let batch = RecordBatch::try_new(Arc::clone(&self.output), columns)
            .map_err(ParquetError::arrow("assemble decoded rows"))?;
        Ok((Some(Decoded { batch, rows }), rejected))
    }
}

/// The fields of `source` kept by `envelope = "whole"`: those the plexus sources write
/// (see connectors/datagen/ENVELOPE.md); others are ignored.
fn whole_source() -> Field {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let number = |name: &str| Field::new(name, DataType::Int64, true);
    Field::new_struct(
        "source",
        vec![
            text("connector"),
            text("name"),
            text("db"),
            text("schema"),
            text("table"),
            text("snapshot"),
            number("txId"),
            number("lsn"),
            number("commit_lsn"),
            number("seq"),
            Field::new(
                "ts_ms",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ],
        true,
    )
}

/// The file layout: flatten gives the row's columns then `__op`, `__ts_ms`, `__lsn`,
/// `__seq`; whole keeps the envelope's fields; none the row's columns. Then
/// `__partition` and `__offset`. Types are the storage types.
fn output_schema(main: &Schema, envelope: Envelope) -> Schema {
    let stored = |f: &Field| f.clone().with_data_type(storage_type(f.data_type()));
    let mut fields: Vec<Field> = match envelope {
        Envelope::Flatten => {
            let row = match main.field(0).data_type() {
                DataType::Struct(fields) => fields.clone(),
                _ => Fields::empty(),
            };
            let mut fields: Vec<Field> = row.iter().map(|f| stored(f)).collect();
            fields.push(Field::new("__op", DataType::Utf8, true));
            fields.push(Field::new(
                "__ts_ms",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ));
            fields.push(Field::new("__lsn", DataType::Int64, true));
            fields.push(Field::new("__seq", DataType::Int64, true));
            fields
        }
        Envelope::Whole | Envelope::None => main.fields().iter().map(|f| stored(f)).collect(),
    };
    fields.push(Field::new("__partition", DataType::Int32, false));
    fields.push(Field::new("__offset", DataType::Int64, false));
    Schema::new(fields)
}

fn build(schema: &SchemaRef, capacity: usize) -> Result<Decoder, ParquetError> {
    ReaderBuilder::new(Arc::clone(schema))
        .with_batch_size(capacity.max(1))
        .with_coerce_primitive(true)
        .with_decoder_factory(Arc::new(Factory))
        .build_decoder()
        .map_err(ParquetError::arrow("build the JSON decoder"))
}

/// Feeds one record's value; an `Err` means the decoder is unusable now.
/// A value as the decoder is fed it: a prefix, then the rest of the value.
type Input<'a> = (&'static [u8], &'a [u8]);

/// A value fed as it is.
fn whole(value: &[u8]) -> Input<'_> {
    (&[], value)
}

/// A flattened row comes from `after` (but for deletes): an update's `before` image is
/// skipped before arrow-json tokenises it, which was a fifth of the sink's work. The
/// value is fed as `{` and what follows the image, without copying. Only where that is
/// certain: the value starts with a `before` object, a non-null `after` follows it, and
/// the value is not a delete; anything else is fed whole.
fn without_before(value: &[u8]) -> Input<'_> {
    const START: &[u8] = b"{\"before\":{";
    if !value.starts_with(START) {
        return whole(value);
    }
    let Some(end) = object_end(value, START.len() - 1) else {
        return whole(value);
    };
    match value.get(end..) {
        Some(rest) if rest.starts_with(b",\"after\":{") && !names_a_delete(rest) => (b"{", &rest[1..]),
        _ => whole(value),
    }
}

/// The index just after the JSON object that starts at `start` (a `{`), strings and
/// escapes respected; `None` if it does not end. Most of an image is inside strings
/// (names and text values), so those are skipped to their closing quote with `memchr`
/// rather than byte by byte.
fn object_end(value: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&byte) = value.get(i) {
        match byte {
            b'"' => i = string_end(value, i + 1)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the quote that ends the string whose text starts at `from`.
fn string_end(value: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', value.get(from..)?)?;
        if value.get(at) == Some(&b'"') {
            return Some(at);
        }
        // An escape: the next byte is part of it, whatever it is.
        from = at + 2;
    }
}

/// Whether `"op":"d"` is anywhere in what follows the image: one inside a string only
/// makes the value fed whole, which is always right.
fn names_a_delete(rest: &[u8]) -> bool {
    static DELETE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"op\":\"d\""));
    DELETE.find(rest).is_some()
}

fn feed(decoder: &mut Decoder, (prefix, value): Input<'_>) -> Result<(), String> {
    let before = decoder.len();
    let mut consumed = 0;
    for part in [prefix, value] {
        if !part.is_empty() {
            consumed += decoder
                .decode(part)
                .map_err(|e| format!("invalid JSON: {}", strip(&e)))?;
        }
    }
    if decoder.has_partial_record() {
        return Err("invalid JSON: the value ends in the middle".into());
    }
    match decoder.len() - before {
        1 if consumed == prefix.len() + value.len() => Ok(()),
        0 => Err("the value is empty".into()),
        _ => Err("the value holds more than one JSON value".into()),
    }
}

/// What the slow path found.
struct Each {
    /// The good values decoded together, in order.
    batch: Option<RecordBatch>,
    /// Their indices.
    good: Vec<usize>,
    rejected: Vec<Rejected>,
}

/// The slow path: finds the values that decode on their own, then decodes those
/// together.
fn decode_each(schema: &SchemaRef, values: &[Input<'_>]) -> Result<Each, ParquetError> {
    let mut probe = build(schema, 1)?;
    let mut good = Vec::with_capacity(values.len());
    let mut rejected = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let outcome = feed(&mut probe, *value).and_then(|()| probe.flush().map_err(|e| strip(&e)).map(|_| ()));
        match outcome {
            Ok(()) => good.push(index),
            Err(reason) => {
                rejected.push(Rejected { index, reason });
                probe = build(schema, 1)?;
            }
        }
    }
    if good.is_empty() {
        return Ok(Each {
            batch: None,
            good,
            rejected,
        });
    }
    let mut decoder = build(schema, good.len())?;
    for &index in &good {
        feed(&mut decoder, values[index]).map_err(|reason| ParquetError::Arrow {
            context: format!("decode again a value that decoded alone ({reason})"),
            source: ArrowError::JsonError(reason.clone()),
        })?;
    }
    let batch = decoder
        .flush()
        .map_err(ParquetError::arrow("decode values that decoded alone"))?;
    Ok(Each { batch, good, rejected })
}

/// Rejects rows without an `op`: such a value is not a change event.
fn reject_non_envelopes(
    raw: RecordBatch,
    rows: Vec<usize>,
    rejected: &mut Vec<Rejected>,
) -> Result<(RecordBatch, Vec<usize>), ParquetError> {
    let Some(op) = raw.column_by_name("op") else {
        return Ok((raw, rows));
    };
    if op.null_count() == 0 {
        return Ok((raw, rows));
    }
    let keep = arrow_array::BooleanArray::from_iter((0..op.len()).map(|i| Some(op.is_valid(i))));
    for (i, &row) in rows.iter().enumerate() {
        if op.is_null(i) {
            rejected.push(Rejected {
                index: row,
                reason: "not a change event: no `op` (set `envelope = \"none\"` for plain rows)".into(),
            });
        }
    }
    let rows = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| op.is_valid(*i))
        .map(|(_, &r)| r)
        .collect();
    let raw = arrow_select::filter::filter_record_batch(&raw, &keep)
        .map_err(ParquetError::arrow("drop values that are not change events"))?;
    Ok((raw, rows))
}

fn child(parent: &StructArray, name: &str) -> Result<ArrayRef, ParquetError> {
    parent.column_by_name(name).cloned().ok_or_else(|| ParquetError::Arrow {
        context: format!("find `source.{name}`"),
        source: ArrowError::SchemaError(name.to_owned()),
    })
}

fn to_storage(column: ArrayRef, ty: &DataType) -> Result<ArrayRef, ParquetError> {
    if column.data_type() == ty {
        return Ok(column);
    }
    arrow_cast::cast(&column, ty).map_err(ParquetError::arrow(format!("convert {} to {ty}", column.data_type())))
}

/// arrow-json's message without Arrow's `Json error: ` prefix.
fn strip(error: &ArrowError) -> String {
    match error {
        ArrowError::JsonError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// The name of the flattened row in the decode schema of `envelope = "flatten"`.
const FLATTENED_ROW: &str = "__plexus_flattened_row";

/// Decodes `Binary` columns from base64 strings (how the sources write `bytea`), where
/// arrow-json would read hex; and the root of flattened change events.
#[derive(Debug)]
struct Factory;

impl DecoderFactory for Factory {
    fn make_default_decoder(
        &self,
        ctx: &DecoderContext,
        field: &FieldRef,
        _is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        Ok(match field.data_type() {
            DataType::Binary => Some(Box::new(Base64Decoder)),
            DataType::Struct(fields)
                if field.name().is_empty() && fields.first().is_some_and(|f| f.name() == FLATTENED_ROW) =>
            {
                Some(Box::new(FlattenDecoder::new(ctx, fields)?))
            }
            _ => None,
        })
    }
}

/// The root of a flattened change event: `row` is decoded from `after`, or from
/// `before` when `op` is `d`, choosing on the tape, so that no row image is decoded for
/// nothing and no column is copied to merge them. The other fields (`op`, `ts_ms`,
/// `source`) are decoded as named.
struct FlattenDecoder {
    fields: Fields,
    /// The names of the fields after the row, by their index in `fields`.
    named: Vec<(String, usize)>,
    children: Vec<Box<dyn ArrayDecoder>>,
}

impl FlattenDecoder {
    fn new(ctx: &DecoderContext, fields: &Fields) -> Result<FlattenDecoder, ArrowError> {
        let children = fields
            .iter()
            .map(|f| ctx.make_decoder(f, true))
            .collect::<Result<Vec<_>, _>>()?;
        let named = fields
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        Ok(FlattenDecoder {
            fields: fields.clone(),
            named,
            children,
        })
    }
}

impl ArrayDecoder for FlattenDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        // Tape index 0 is null: where a field is missing, its children read null.
        let mut positions = vec![vec![0u32; pos.len()]; self.fields.len()];
        for (row, &p) in pos.iter().enumerate() {
            let end = match tape.get(p) {
                TapeElement::StartObject(end) => end,
                _ => return Err(tape.error(p, "a change event object")),
            };
            let (mut after, mut before, mut op) = (0, 0, 0);
            let mut cur = p + 1;
            while cur < end {
                let TapeElement::String(name) = tape.get(cur) else {
                    return Err(tape.error(cur, "a field name"));
                };
                let value = cur + 1;
                match tape.get_string(name) {
                    "after" => after = value,
                    "before" => before = value,
                    name => {
                        if name == "op" {
                            op = value;
                        }
                        if let Some((_, i)) = self.named.iter().find(|(n, _)| n == name) {
                            positions[*i][row] = value;
                        }
                    }
                }
                cur = tape.next(value, "a field value")?;
            }
            let delete = matches!(tape.get(op), TapeElement::String(s) if tape.get_string(s) == "d");
            positions[0][row] = if delete { before } else { after };
        }
        let columns = self
            .children
            .iter_mut()
            .zip(&positions)
            .map(|(child, positions)| child.decode(tape, positions))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(StructArray::try_new(self.fields.clone(), columns, None)?))
    }
}

struct Base64Decoder;

impl ArrayDecoder for Base64Decoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = arrow_array::builder::BinaryBuilder::with_capacity(pos.len(), pos.len() * 16);
        let mut scratch = Vec::new();
        for &p in pos {
            match tape.get(p) {
                TapeElement::Null => builder.append_null(),
                TapeElement::String(idx) => {
                    let text = tape.get_string(idx);
                    scratch.clear();
                    base64::engine::general_purpose::STANDARD
                        .decode_vec(text, &mut scratch)
                        .map_err(|e| ArrowError::JsonError(format!("`{text}` is not base64: {e}")))?;
                    builder.append_value(&scratch);
                }
                _ => return Err(tape.error(p, "a base64 string")),
            }
        }
        Ok(Arc::new(builder.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use bytes::Bytes;

    fn table() -> TableSchema {
        TableSchema::from_document(
            "t1",
            br#"{"columns":[{"name":"id","arrow":"Int64"},{"name":"name","arrow":"Utf8"},{"name":"b","arrow":"Binary"}]}"#,
        )
        .unwrap()
    }

    fn record(offset: i64, value: &str) -> SinkRecord {
        SinkRecord {
            topic: Arc::from("t"),
            partition: 3,
            offset,
            timestamp: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
        }
    }

    fn decode(envelope: Envelope, values: &[&str]) -> (Option<Decoded>, Vec<Rejected>) {
        let records: Vec<SinkRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(i as i64 + 10, v))
            .collect();
        let refs: Vec<&SinkRecord> = records.iter().collect();
        RowDecoder::new(&table(), envelope).unwrap().decode(&refs).unwrap()
    }

    #[test]
    fn flattens_after_and_before_for_deletes() {
        let (decoded, rejected) = decode(
            Envelope::Flatten,
            &[
                r#"{"before":null,"after":{"id":1,"name":"a","b":"Cv8="},"source":{"seq":7},"op":"c","ts_ms":1767225603702}"#,
                r#"{"before":{"id":2,"name":"b","b":null},"after":null,"source":{"lsn":99,"seq":8},"op":"d","ts_ms":1}"#,
                r#"{"before":{"id":3},"after":{"id":3,"name":"c","b":null},"source":{},"op":"u","ts_ms":2}"#,
            ],
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        let decoded = decoded.unwrap();
        let batch = &decoded.batch;
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "name",
                "b",
                "__op",
                "__ts_ms",
                "__lsn",
                "__seq",
                "__partition",
                "__offset"
            ]
        );
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values(), &[1, 2, 3]);
        assert_eq!(batch.column(1).as_string::<i32>().value(1), "b");
        assert_eq!(batch.column(2).as_binary::<i32>().value(0), &[0x0a, 0xff]);
        assert_eq!(batch.column(3).as_string::<i32>().value(1), "d");
        let ts = batch.column(4).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_767_225_603_702_000);
        assert_eq!(batch.column(5).as_primitive::<Int64Type>().value(1), 99);
        assert!(batch.column(5).is_null(0));
        assert_eq!(batch.column(6).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batch.column(8).as_primitive::<Int64Type>().values(), &[10, 11, 12]);
        assert_eq!(decoded.rows, [0, 1, 2]);
    }

    #[test]
    fn an_updates_before_image_is_skipped_only_where_that_is_certain() {
        let fed = |value: &str| {
            let (prefix, rest) = without_before(value.as_bytes());
            String::from_utf8([prefix, rest].concat()).unwrap()
        };
        // Braces, brackets and escaped quotes inside strings do not end the image.
        let update = r#"{"before":{"id":1,"name":"a}\"{[","b":null},"after":{"id":1,"name":"x"},"op":"u"}"#;
        assert_eq!(fed(update), r#"{"after":{"id":1,"name":"x"},"op":"u"}"#);
        for whole in [
            // A delete's row is its `before`.
            r#"{"before":{"id":2},"after":null,"op":"d"}"#,
            r#"{"before":{"id":2},"after":{"id":2},"op":"d"}"#,
            r#"{"before":null,"after":{"id":3},"op":"c"}"#,
            r#"{"after":{"id":3},"before":{"id":3},"op":"u"}"#,
            // An image that does not end, or is not followed by `after`, is the
            // decoder's to judge.
            r#"{"before":{"id":4,"name":"}"#,
            r#"{"before":{"id":4}}"#,
            r#"{"before":{"id":4},"source":{},"after":{"id":4},"op":"u"}"#,
        ] {
            assert_eq!(fed(whole), whole);
        }
        // Decoded, an update whose image is skipped is the row `after` holds, and a
        // broken value is still rejected.
        let (decoded, rejected) = decode(
            Envelope::Flatten,
            &[
                update,
                r#"{"before":{"id":5},"after":{"id":"five"},"op":"u","ts_ms":1}"#,
            ],
        );
        let batch = decoded.unwrap().batch;
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().values(), &[1]);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "x");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].index, 1);
    }

    #[test]
    fn object_ends_agree_with_a_byte_by_byte_scan() {
        // The scan `object_end` replaced: one byte at a time, strings and escapes kept.
        fn reference(value: &[u8], start: usize) -> Option<usize> {
            let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
            for (i, &byte) in value.iter().enumerate().skip(start) {
                if in_string {
                    match byte {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
        let pieces: [&[u8]; 10] = [b"{", b"}", b"[", b"]", b"\"", b"\\", b"a", b":", b",", b"\\\""];
        // Every sequence of up to 6 pieces, after a `{`: all ways strings, escapes and
        // brackets can meet, including values that end inside a string or an escape.
        let mut values: Vec<Vec<u8>> = vec![b"{".to_vec()];
        let mut last = values.clone();
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|v| pieces.iter().map(move |p| [v.as_slice(), p].concat()))
                .collect();
            values.extend(last.iter().cloned());
        }
        for value in &values {
            assert_eq!(
                object_end(value, 0),
                reference(value, 0),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn bad_records_are_rejected_and_the_rest_decoded() {
        let ok = |id: i64| format!(r#"{{"after":{{"id":{id}}},"op":"c","ts_ms":1}}"#);
        let values = [
            ok(1),
            r#"{"after":{"id":"x"},"op":"c"}"#.to_owned(),
            ok(2),
            r#"{"after":{"id":3"#.to_owned(),
            ok(4),
            "not json".to_owned(),
            r#"{"after":{"id":5},"op":"c"}{"op":"c"}"#.to_owned(),
            String::new(),
            r#"{"after":{"id":6}}"#.to_owned(),
            r#"{"before":{"id":"y"},"op":"d"}"#.to_owned(),
            r#"{"after":{"b":"!!"},"op":"c"}"#.to_owned(),
            ok(7),
        ];
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let (decoded, rejected) = decode(Envelope::Flatten, &refs);
        let decoded = decoded.unwrap();
        assert_eq!(
            decoded.batch.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2, 4, 7]
        );
        assert_eq!(decoded.rows, [0, 2, 4, 11]);
        let indices: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(indices, [1, 3, 5, 6, 7, 8, 9, 10]);
        assert!(rejected[0].reason.contains("\"x\""), "{}", rejected[0].reason);
        assert!(
            rejected[1].reason.contains("ends in the middle"),
            "{}",
            rejected[1].reason
        );
        assert!(rejected[2].reason.contains("invalid JSON"), "{}", rejected[2].reason);
        assert!(rejected[3].reason.contains("more than one"), "{}", rejected[3].reason);
        assert!(rejected[4].reason.contains("empty"), "{}", rejected[4].reason);
        assert!(rejected[5].reason.contains("no `op`"), "{}", rejected[5].reason);
        assert!(rejected[6].reason.contains("\"y\""), "{}", rejected[6].reason);
        assert!(rejected[7].reason.contains("base64"), "{}", rejected[7].reason);
    }

    #[test]
    fn whole_keeps_the_envelope_and_none_takes_plain_rows() {
        let (decoded, rejected) = decode(
            Envelope::Whole,
            &[
                r#"{"before":null,"after":{"id":1},"source":{"connector":"datagen","seq":3,"ts_ms":5},"op":"c","ts_ms":5}"#,
            ],
        );
        assert!(rejected.is_empty());
        let batch = decoded.unwrap().batch;
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["before", "after", "source", "op", "ts_ms", "__partition", "__offset"]
        );
        let source = batch.column(2).as_struct();
        assert_eq!(
            source.column_by_name("connector").unwrap().as_string::<i32>().value(0),
            "datagen"
        );
        assert_eq!(
            source.column_by_name("ts_ms").unwrap().data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );

        let (decoded, rejected) = decode(Envelope::None, &[r#"{"id":4,"name":"n","extra":[1]}"#]);
        assert!(rejected.is_empty());
        let batch = decoded.unwrap().batch;
        assert_eq!(batch.num_columns(), 5);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 4);
    }

    #[test]
    fn all_bad_gives_no_batch() {
        let (decoded, rejected) = decode(Envelope::None, &["[", "{\"id\":\"z\"}"]);
        assert!(decoded.is_none());
        assert_eq!(rejected.len(), 2);
    }
}
