//! The byte formats of records, offsets, positions and dead letters at the boundary
//! (`ABI.md` documents them). Sans I/O: values in, bytes out, and back.
//!
//! Integers are little-endian. A `bytes` field is a `u32` length and the bytes; an
//! optional one uses the length `0xFFFF_FFFF` for "none". Decoding slices the input
//! [`Bytes`], so keys and values are not copied; bad input is an error, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use plexus_connector::{
    DeadLetter, Header, Headers, Position, SinkOffsets, SinkRecord, SourceBatch, SourceRecord, TopicPartition,
};

/// The length that marks an absent optional field.
const NONE: u32 = u32::MAX;

/// Bytes that do not follow the format.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("{what} is cut short at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{what} refers to topic {index}, but the batch names {topics} topic(s)")]
    BadTopic {
        what: &'static str,
        index: u32,
        topics: usize,
    },
    #[error("{what} is larger than 4 GiB and cannot cross the plugin boundary")]
    TooLarge { what: &'static str },
    #[error("{extra} unexpected byte(s) after the {what}")]
    Trailing { what: &'static str, extra: usize },
    #[error("the output buffer is {len} bytes, too small for the {what}")]
    Overflow { what: &'static str, len: usize },
}

/// Where encoded bytes go: a growing vector, a fixed slice, or nowhere (to count them).
pub trait Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError>;
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Counts the bytes an encoding takes.
#[derive(Debug, Default)]
pub struct Counter(pub usize);

impl Out for Counter {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.0 += bytes.len();
        Ok(())
    }
}

/// Fills a slice of exactly the right size (see [`Counter`]).
#[derive(Debug)]
pub struct SliceOut<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceOut<'a> {
    pub fn new(out: &'a mut [u8]) -> Self {
        SliceOut { out, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl Out for SliceOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let end = self.pos + bytes.len();
        let len = self.out.len();
        let target = self.out.get_mut(self.pos..end).ok_or(CodecError::Overflow {
            what: "encoded batch",
            len,
        })?;
        target.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Records for a sink: a table of topic names, then each record with its topic's index.
pub fn encode_sink_records(records: &[SinkRecord], out: &mut impl Out) -> Result<(), CodecError> {
    let mut topics: Vec<&Arc<str>> = Vec::new();
    let mut indexes: Vec<u32> = Vec::with_capacity(records.len());
    for record in records {
        // A batch holds one or a few topics: a linear search beats hashing.
        let index = match topics
            .iter()
            .position(|t| Arc::ptr_eq(t, &record.topic) || ***t == *record.topic)
        {
            Some(i) => i,
            None => {
                topics.push(&record.topic);
                topics.len() - 1
            }
        };
        indexes.push(index as u32);
    }
    put_u32(out, len_u32(topics.len(), "topic table")?)?;
    for topic in &topics {
        put_bytes(out, topic.as_bytes(), "topic name")?;
    }
    put_u32(out, len_u32(records.len(), "record count")?)?;
    for (record, index) in records.iter().zip(indexes) {
        put_u32(out, index)?;
        put_u32(out, record.partition)?;
        out.put(&record.offset.to_le_bytes())?;
        out.put(&record.timestamp.to_le_bytes())?;
        put_opt(out, record.key.as_deref(), "record key")?;
        put_opt(out, record.value.as_deref(), "record value")?;
        put_headers(out, &record.headers)?;
    }
    Ok(())
}

/// The bytes [`encode_sink_records`] takes for `records` (what [`Counter`] counts,
/// without walking every field through it).
pub fn sink_records_len(records: &[SinkRecord]) -> usize {
    let mut topics: Vec<&Arc<str>> = Vec::new();
    let mut len = 8;
    for record in records {
        if !topics
            .iter()
            .any(|t| Arc::ptr_eq(t, &record.topic) || ***t == *record.topic)
        {
            topics.push(&record.topic);
            len += 4 + record.topic.len();
        }
        len += 4 + 4 + 8 + 8 + 4 + 4 + 4;
        len += record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len());
        for header in &record.headers {
            len += 4 + header.key.len() + 4 + header.value.as_ref().map_or(0, |v| v.len());
        }
    }
    len
}

/// The inverse of [`encode_sink_records`].
pub fn decode_sink_records(buf: &Bytes) -> Result<Vec<SinkRecord>, CodecError> {
    let mut r = Reader::new(buf);
    let topic_count = r.u32("topic table")? as usize;
    let mut topics: Vec<Arc<str>> = Vec::with_capacity(topic_count.min(1024));
    for _ in 0..topic_count {
        topics.push(Arc::from(r.string("topic name")?.as_str()));
    }
    let count = r.u32("record count")? as usize;
    let mut records = Vec::with_capacity(count.min(buf.len() / 40 + 1));
    for _ in 0..count {
        let index = r.u32("record topic")?;
        let topic = topics.get(index as usize).cloned().ok_or(CodecError::BadTopic {
            what: "a record",
            index,
            topics: topics.len(),
        })?;
        records.push(SinkRecord {
            topic,
            partition: r.u32("record partition")?,
            offset: r.i64("record offset")?,
            timestamp: r.i64("record timestamp")?,
            key: r.opt("record key")?,
            value: r.opt("record value")?,
            headers: r.headers()?,
        });
    }
    r.finish("sink records")?;
    Ok(records)
}

/// A source's batch: its position, then each record.
pub fn encode_source_batch(batch: &SourceBatch, out: &mut impl Out) -> Result<(), CodecError> {
    put_bytes(out, batch.position.as_bytes(), "position")?;
    put_u32(out, len_u32(batch.records.len(), "record count")?)?;
    for record in &batch.records {
        out.put(&record.timestamp.to_le_bytes())?;
        put_opt(out, record.key.as_deref(), "record key")?;
        put_opt(out, record.value.as_deref(), "record value")?;
        put_headers(out, &record.headers)?;
        put_opt(out, record.topic.as_deref().map(str::as_bytes), "record topic")?;
    }
    Ok(())
}

/// The inverse of [`encode_source_batch`].
pub fn decode_source_batch(buf: &Bytes) -> Result<SourceBatch, CodecError> {
    let mut r = Reader::new(buf);
    let position = Position::from_bytes(r.bytes("position")?);
    let count = r.u32("record count")? as usize;
    let mut records = Vec::with_capacity(count.min(buf.len() / 20 + 1));
    for _ in 0..count {
        let timestamp = r.i64("record timestamp")?;
        let key = r.opt("record key")?;
        let value = r.opt("record value")?;
        let headers = r.headers()?;
        let topic = match r.opt("record topic")? {
            None => None,
            Some(bytes) => Some(utf8(bytes, "record topic")?.into()),
        };
        records.push(SourceRecord {
            timestamp,
            key,
            value,
            headers,
            topic,
        });
    }
    r.finish("source batch")?;
    Ok(SourceBatch { records, position })
}

/// A sink's offsets: the next offset to read per topic-partition.
pub fn encode_offsets(offsets: &SinkOffsets) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(4 + offsets.len() * 32);
    put_u32(&mut out, len_u32(offsets.len(), "offset count")?)?;
    for (tp, offset) in offsets {
        put_bytes(&mut out, tp.topic.as_bytes(), "offset topic")?;
        put_u32(&mut out, tp.partition)?;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    Ok(out)
}

/// The inverse of [`encode_offsets`].
pub fn decode_offsets(buf: &Bytes) -> Result<SinkOffsets, CodecError> {
    let mut r = Reader::new(buf);
    let count = r.u32("offset count")?;
    let mut offsets = BTreeMap::new();
    for _ in 0..count {
        let topic = r.string("offset topic")?;
        let partition = r.u32("offset partition")?;
        let offset = r.i64("offset")?;
        offsets.insert(TopicPartition { topic, partition }, offset);
    }
    r.finish("offsets")?;
    Ok(offsets)
}

/// A list of positions (a source's replay boundaries).
pub fn encode_positions(positions: &[Position]) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    put_u32(&mut out, len_u32(positions.len(), "position count")?)?;
    for position in positions {
        put_bytes(&mut out, position.as_bytes(), "position")?;
    }
    Ok(out)
}

/// The inverse of [`encode_positions`].
pub fn decode_positions(buf: &Bytes) -> Result<Vec<Position>, CodecError> {
    let mut r = Reader::new(buf);
    let count = r.u32("position count")?;
    let mut positions = Vec::new();
    for _ in 0..count {
        positions.push(Position::from_bytes(r.bytes("position")?));
    }
    r.finish("positions")?;
    Ok(positions)
}

/// A dead letter: key, payload, reason, origin.
pub fn encode_dead_letter(letter: &DeadLetter) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    put_opt(&mut out, letter.key.as_deref(), "dead letter key")?;
    put_opt(&mut out, letter.payload.as_deref(), "dead letter payload")?;
    put_bytes(&mut out, letter.reason.as_bytes(), "dead letter reason")?;
    put_bytes(&mut out, letter.origin.as_bytes(), "dead letter origin")?;
    Ok(out)
}

/// The inverse of [`encode_dead_letter`].
pub fn decode_dead_letter(buf: &Bytes) -> Result<DeadLetter, CodecError> {
    let mut r = Reader::new(buf);
    let letter = DeadLetter {
        key: r.opt("dead letter key")?,
        payload: r.opt("dead letter payload")?,
        reason: r.string("dead letter reason")?,
        origin: r.string("dead letter origin")?,
    };
    r.finish("dead letter")?;
    Ok(letter)
}

#[inline]
fn len_u32(len: usize, what: &'static str) -> Result<u32, CodecError> {
    u32::try_from(len)
        .ok()
        .filter(|&n| n != NONE)
        .ok_or(CodecError::TooLarge { what })
}

#[inline]
fn put_u32(out: &mut impl Out, value: u32) -> Result<(), CodecError> {
    out.put(&value.to_le_bytes())
}

#[inline]
fn put_bytes(out: &mut impl Out, bytes: &[u8], what: &'static str) -> Result<(), CodecError> {
    put_u32(out, len_u32(bytes.len(), what)?)?;
    out.put(bytes)
}

#[inline]
fn put_opt(out: &mut impl Out, bytes: Option<&[u8]>, what: &'static str) -> Result<(), CodecError> {
    match bytes {
        None => put_u32(out, NONE),
        Some(bytes) => put_bytes(out, bytes, what),
    }
}

fn put_headers(out: &mut impl Out, headers: &[Header]) -> Result<(), CodecError> {
    put_u32(out, len_u32(headers.len(), "header count")?)?;
    for header in headers {
        put_bytes(out, header.key.as_bytes(), "header name")?;
        put_opt(out, header.value.as_deref(), "header value")?;
    }
    Ok(())
}

fn utf8(bytes: Bytes, what: &'static str) -> Result<String, CodecError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::NotUtf8 { what })
}

/// Reads fields from a buffer, slicing it for byte fields.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<std::ops::Range<usize>, CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(CodecError::Truncated { what, at: self.pos })?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    #[inline]
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let range = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[range]);
        Ok(out)
    }

    #[inline]
    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    #[inline]
    fn i64(&mut self, what: &'static str) -> Result<i64, CodecError> {
        self.array::<8>(what).map(i64::from_le_bytes)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Bytes, CodecError> {
        let len = self.u32(what)? as usize;
        let range = self.take(len, what)?;
        Ok(self.buf.slice(range))
    }

    #[inline]
    fn opt(&mut self, what: &'static str) -> Result<Option<Bytes>, CodecError> {
        let len = self.u32(what)?;
        if len == NONE {
            return Ok(None);
        }
        let range = self.take(len as usize, what)?;
        Ok(Some(self.buf.slice(range)))
    }

    /// Copied out (a name is owned by its record), without slicing the buffer.
    fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let len = self.u32(what)? as usize;
        let range = self.take(len, what)?;
        std::str::from_utf8(&self.buf[range])
            .map(str::to_owned)
            .map_err(|_| CodecError::NotUtf8 { what })
    }

    fn headers(&mut self) -> Result<Headers, CodecError> {
        let count = self.u32("header count")? as usize;
        let mut headers = Headers::with_capacity(count.min(64));
        for _ in 0..count {
            headers.push(Header {
                key: self.string("header name")?.into(),
                value: self.opt("header value")?,
            });
        }
        Ok(headers)
    }

    fn finish(&self, what: &'static str) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(CodecError::Trailing { what, extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    fn opt_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
    }

    fn headers() -> impl Strategy<Value = Headers> {
        proptest::collection::vec(
            ("[a-z.]{0,12}", opt_bytes()).prop_map(|(key, value)| Header { key: key.into(), value }),
            0..3,
        )
        .prop_map(Headers::from_vec)
    }

    fn sink_record() -> impl Strategy<Value = SinkRecord> {
        (
            prop::sample::select(vec!["orders", "customers", "ünïcode"]),
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            opt_bytes(),
            opt_bytes(),
            headers(),
        )
            .prop_map(
                |(topic, partition, offset, timestamp, key, value, headers)| SinkRecord {
                    topic: Arc::from(topic),
                    partition,
                    offset,
                    timestamp,
                    key,
                    value,
                    headers,
                },
            )
    }

    fn source_record() -> impl Strategy<Value = SourceRecord> {
        (
            any::<i64>(),
            opt_bytes(),
            opt_bytes(),
            headers(),
            proptest::option::of("[a-z_]{0,10}"),
        )
            .prop_map(|(timestamp, key, value, headers, topic)| SourceRecord {
                timestamp,
                key,
                value,
                headers,
                topic: topic.map(Arc::from),
            })
    }

    fn encode_exact(records: &[SinkRecord]) -> Vec<u8> {
        let mut counter = Counter::default();
        encode_sink_records(records, &mut counter).unwrap();
        assert_eq!(sink_records_len(records), counter.0);
        let mut buf = vec![0u8; counter.0];
        let mut out = SliceOut::new(&mut buf);
        encode_sink_records(records, &mut out).unwrap();
        assert_eq!(out.written(), counter.0);
        buf
    }

    proptest! {
        #[test]
        fn sink_records_round_trip(records in proptest::collection::vec(sink_record(), 0..20)) {
            let buf = Bytes::from(encode_exact(&records));
            prop_assert_eq!(decode_sink_records(&buf).unwrap(), records);
        }

        #[test]
        fn source_batches_round_trip(
            records in proptest::collection::vec(source_record(), 0..20),
            position in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let batch = SourceBatch { records, position: Position::from_bytes(position) };
            let mut buf = Vec::new();
            encode_source_batch(&batch, &mut buf).unwrap();
            prop_assert_eq!(decode_source_batch(&Bytes::from(buf)).unwrap(), batch);
        }

        #[test]
        fn offsets_positions_and_letters_round_trip(
            offsets in proptest::collection::btree_map(("[a-z]{1,8}", any::<u32>()), any::<i64>(), 0..6),
            positions in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..5),
            key in opt_bytes(),
            payload in opt_bytes(),
            reason in ".{0,20}",
        ) {
            let offsets: SinkOffsets = offsets
                .into_iter()
                .map(|((topic, partition), offset)| (TopicPartition { topic, partition }, offset))
                .collect();
            prop_assert_eq!(decode_offsets(&Bytes::from(encode_offsets(&offsets).unwrap())).unwrap(), offsets);
            let positions: Vec<Position> = positions.into_iter().map(Position::from_bytes).collect();
            prop_assert_eq!(decode_positions(&Bytes::from(encode_positions(&positions).unwrap())).unwrap(), positions);
            let letter = DeadLetter { key, payload, reason, origin: "t/0@7".into() };
            prop_assert_eq!(decode_dead_letter(&Bytes::from(encode_dead_letter(&letter).unwrap())).unwrap(), letter);
        }

        /// Cut or corrupted input is an error, never a panic.
        #[test]
        fn damaged_input_is_an_error_not_a_panic(
            records in proptest::collection::vec(sink_record(), 1..5),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let buf = encode_exact(&records);
            let short = Bytes::from(buf[..cut.index(buf.len())].to_vec());
            prop_assert!(decode_sink_records(&short).is_err());
            let mut flipped = buf.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= 0xFF;
            let _ = decode_sink_records(&Bytes::from(flipped.clone()));
            let _ = decode_source_batch(&Bytes::from(flipped.clone()));
            let _ = decode_offsets(&Bytes::from(flipped));
        }
    }

    #[test]
    fn sink_records_name_each_topic_once() {
        let topic: Arc<str> = Arc::from("orders");
        let record = |offset| SinkRecord {
            topic: Arc::clone(&topic),
            partition: 0,
            offset,
            timestamp: 1,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        };
        let buf = encode_exact(&[record(1), record(2)]);
        // u32 count + "orders", then two records that refer to topic 0.
        assert_eq!(&buf[..4], &1u32.to_le_bytes());
        assert_eq!(&buf[4..8], &6u32.to_le_bytes());
        assert_eq!(&buf[8..14], b"orders");
        let decoded = decode_sink_records(&Bytes::from(buf)).unwrap();
        assert!(Arc::ptr_eq(&decoded[0].topic, &decoded[1].topic));
    }

    #[test]
    fn a_too_small_slice_is_an_error() {
        let records = [SinkRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: Default::default(),
        }];
        let mut buf = vec![0u8; 10];
        let err = encode_sink_records(&records, &mut SliceOut::new(&mut buf)).unwrap_err();
        assert!(matches!(err, CodecError::Overflow { .. }), "{err}");
    }
}
