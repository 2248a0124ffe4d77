//! Encoding records into a record batch.

use bytes::{BufMut, BytesMut};

use super::header::seal_crc;
use super::varint::{put_varint, put_varlong, read_varint, read_varlong, varint_len, varlong_len};
use super::{
    BATCH_HEADER_LEN, BatchError, BatchHeader, Compression, LOG_OVERHEAD, MAGIC, Record, compression::Compressors,
};

/// Fields below this size cannot overflow a record's i32 length in the fast path.
const PLAIN_FIELD_LIMIT: usize = 1 << 29;

/// Fields the log fills in when it seals a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
}

impl ProducerFields {
    /// No producer: all fields -1, as Kafka writes for non-idempotent producers.
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Builds one record batch at a time.
///
/// Records are encoded as they are pushed, straight into one reusable buffer
/// that already reserves room for the 61-byte header, so pushing allocates
/// nothing once the buffer has grown to the usual batch size. Timestamp deltas
/// are written relative to the first record; if a later record is older,
/// [`finish`](Self::finish) rebases them once so `baseTimestamp` is the
/// minimum, as the log's time index expects.
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    /// Header placeholder followed by the encoded records; empty until the first push.
    buf: Vec<u8>,
    /// Scratch space for rewriting records (last-record headers, timestamp rebase).
    scratch: Vec<u8>,
    /// Bytes to reserve when a batch starts: the caller's hint or the last batch's size.
    target_capacity: usize,
    count: usize,
    /// Offset delta of the last pushed record; -1 before the first.
    last_offset_delta: i32,
    first_timestamp: i64,
    min_timestamp: i64,
    max_timestamp: i64,
    last: Option<LastRecord>,
    /// Set when a pushed field did not fit the format; `finish` then fails.
    oversized: Option<(&'static str, usize)>,
    compressors: Compressors,
}

/// Where the last pushed record sits in the buffer, so headers can be added to it.
#[derive(Debug, Clone, Copy)]
struct LastRecord {
    /// Position of its length prefix.
    start: usize,
    /// Position of its headerCount varint, relative to the start of its body.
    header_count_at: usize,
    header_count: i32,
}

impl BatchBuilder {
    /// A builder that grows its buffer on demand.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 0)
    }

    /// A builder that reserves `bytes` for each batch when its first record
    /// is pushed (or the previous batch's size, if larger).
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        BatchBuilder {
            compression,
            buf: Vec::new(),
            scratch: Vec::new(),
            target_capacity: bytes,
            count: 0,
            last_offset_delta: -1,
            first_timestamp: 0,
            min_timestamp: 0,
            max_timestamp: 0,
            last: None,
            oversized: None,
            compressors: Compressors::default(),
        }
    }

    /// The codec `finish` compresses with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Encodes one record. `headers` are (key, value) pairs.
    ///
    /// Its offset delta is the previous record's plus one. A key, value or
    /// header larger than 2 GiB cannot be encoded; the record is dropped and
    /// [`finish`](Self::finish) fails with [`BatchError::TooLarge`].
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let offset_delta = self.last_offset_delta.checked_add(1);
        // The common case (no headers, fields far from the 2 GiB limit, not the first
        // record) skips the general checks: this is the producer's hot path.
        if let Some(offset_delta) = offset_delta
            && headers.is_empty()
            && self.count > 0
            && self.oversized.is_none()
            && key.map_or(0, <[u8]>::len) < PLAIN_FIELD_LIMIT
            && value.map_or(0, <[u8]>::len) < PLAIN_FIELD_LIMIT
        {
            self.encode_plain(offset_delta, timestamp, key, value);
            return;
        }
        self.push_or_poison(offset_delta, timestamp, key, value, headers.iter().copied());
    }

    /// Encodes one owned record, like [`push`](Self::push).
    pub fn push_record(&mut self, record: &Record) {
        let offset_delta = self.last_offset_delta.checked_add(1);
        self.push_or_poison(
            offset_delta,
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            record
                .headers
                .iter()
                .map(|header| (header.key.as_str(), header.value.as_deref())),
        );
    }

    /// Encodes one record with an explicit offset delta, leaving gaps in the
    /// offsets as compaction does.
    ///
    /// Offset deltas must be non-negative and strictly increasing within a
    /// batch ([`BatchError::OffsetDeltaNotIncreasing`]); a record that does
    /// not fit the format fails with [`BatchError::TooLarge`]. On error
    /// nothing is added and the builder stays usable.
    pub fn push_with_offset_delta(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<(), BatchError> {
        if offset_delta <= self.last_offset_delta {
            return Err(BatchError::OffsetDeltaNotIncreasing {
                previous: self.last_offset_delta,
                offset_delta,
            });
        }
        self.encode(offset_delta, timestamp, key, value, headers.iter().copied())
    }

    /// Number of records pushed since the last `finish`.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record was pushed since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far: header plus uncompressed records.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_LEN + self.buf.len().saturating_sub(BATCH_HEADER_LEN)
    }

    /// Adds a header to the last pushed record, re-encoding only that record.
    ///
    /// The log uses this to attach the producer position to a batch
    /// atomically. Errors with [`BatchError::Empty`] if nothing was pushed.
    pub fn add_header_to_last(&mut self, key: &str, value: &[u8]) -> Result<(), BatchError> {
        let last = self.last.ok_or(BatchError::Empty)?;
        check_len("header key", key.len())?;
        check_len("header value", value.len())?;
        let mut pos = last.start;
        let body_len = read_varint(&self.buf, &mut pos)?;
        let body_start = pos;
        let header_count_pos = body_start + last.header_count_at;
        let headers_start = header_count_pos + varint_len(last.header_count);
        let new_count = last
            .header_count
            .checked_add(1)
            .ok_or(BatchError::Malformed("too many record headers"))?;
        let old_body_len =
            usize::try_from(body_len).map_err(|_| BatchError::Malformed("builder record length corrupt"))?;
        let new_body_len = check_len(
            "record",
            old_body_len - varint_len(last.header_count) + varint_len(new_count) + header_len(key, Some(value)),
        )?;

        // The length prefix may change size, so the body moves: stage it in scratch.
        self.scratch.clear();
        self.scratch.put_slice(&self.buf[body_start..header_count_pos]);
        put_varint(&mut self.scratch, new_count);
        self.scratch.put_slice(&self.buf[headers_start..]);
        put_header(&mut self.scratch, key, Some(value));
        self.buf.truncate(last.start);
        put_varint(&mut self.buf, new_body_len);
        self.buf.put_slice(&self.scratch);
        self.scratch.clear();
        self.last = Some(LastRecord {
            header_count: new_count,
            ..last
        });
        Ok(())
    }

    /// Finishes the batch and resets the builder, keeping its buffers.
    ///
    /// Compresses the records if configured and writes the header: base
    /// offset 0 (the log patches it with [`super::set_base_offset`], outside
    /// the CRC), partition leader epoch 0, the given producer fields, the
    /// smallest record timestamp as `baseTimestamp`, the largest as
    /// `maxTimestamp`, and the CRC-32C. Errors with [`BatchError::Empty`] if
    /// no record was pushed, and with [`BatchError::TooLarge`] if a record or
    /// the batch does not fit the format (its records are dropped).
    pub fn finish(&mut self, producer: ProducerFields) -> Result<BytesMut, BatchError> {
        let result = self.seal(producer, self.last_offset_delta);
        self.reset();
        result
    }

    /// Like [`finish`](Self::finish), but writes `last_offset_delta` into the
    /// header instead of the last record's delta, so a compacted batch keeps
    /// the offset range of the batch it replaces, as Kafka does.
    ///
    /// Errors with [`BatchError::OffsetDeltaOutOfRange`] if a pushed record's
    /// delta is larger (the builder is reset either way).
    pub fn finish_with_last_offset_delta(
        &mut self,
        producer: ProducerFields,
        last_offset_delta: i32,
    ) -> Result<BytesMut, BatchError> {
        let result = if self.count > 0 && last_offset_delta < self.last_offset_delta {
            Err(BatchError::OffsetDeltaOutOfRange {
                offset_delta: self.last_offset_delta,
                last_offset_delta,
            })
        } else {
            self.seal(producer, last_offset_delta)
        };
        self.reset();
        result
    }

    fn seal(&mut self, producer: ProducerFields, last_offset_delta: i32) -> Result<BytesMut, BatchError> {
        if let Some((what, len)) = self.oversized {
            return Err(BatchError::TooLarge { what, len });
        }
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        if self.min_timestamp != self.first_timestamp {
            self.rebase_timestamps()?;
        }
        self.target_capacity = self.target_capacity.max(self.buf.len());
        let mut batch = match self.compression {
            // The header room is already in place: hand over the buffer itself.
            Compression::None => BytesMut::from(bytes::Bytes::from(std::mem::take(&mut self.buf))),
            codec => self.compressors.compress(codec, &self.buf[BATCH_HEADER_LEN..])?,
        };
        let batch_length = check_len("record batch", batch.len() - LOG_OVERHEAD)?;
        let header = BatchHeader {
            base_offset: 0,
            batch_length,
            partition_leader_epoch: 0,
            magic: MAGIC,
            crc: 0,
            attributes: self.compression.attribute_bits(),
            last_offset_delta,
            base_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: producer.base_sequence,
            record_count: check_len("record count", self.count)?,
        };
        batch[..BATCH_HEADER_LEN].copy_from_slice(&header.encode());
        seal_crc(&mut batch);
        Ok(batch)
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.last_offset_delta = -1;
        self.last = None;
        self.oversized = None;
    }

    /// Encodes a record for `push`/`push_record`, which report errors at `finish`.
    #[inline]
    fn push_or_poison<'a, H>(
        &mut self,
        offset_delta: Option<i32>,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) where
        H: Iterator<Item = (&'a str, Option<&'a [u8]>)> + Clone,
    {
        if self.oversized.is_some() {
            return;
        }
        let Some(offset_delta) = offset_delta else {
            self.oversized = Some(("record count", self.count.saturating_add(1)));
            return;
        };
        if let Err(BatchError::TooLarge { what, len }) = self.encode(offset_delta, timestamp, key, value, headers) {
            self.oversized = Some((what, len));
        }
    }

    /// Encodes one record; checks everything before it touches the builder.
    /// The header iterator is walked twice (size, then bytes).
    #[inline]
    fn encode<'a, H>(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: H,
    ) -> Result<(), BatchError>
    where
        H: Iterator<Item = (&'a str, Option<&'a [u8]>)> + Clone,
    {
        let first_timestamp = if self.count == 0 {
            timestamp
        } else {
            self.first_timestamp
        };
        // Wrapping keeps any pair of i64 timestamps exact: the reader adds it back mod 2^64.
        let timestamp_delta = timestamp.wrapping_sub(first_timestamp);

        let mut header_count = 0usize;
        let mut headers_len = 0usize;
        for (header_key, header_value) in headers.clone() {
            header_count += 1;
            headers_len += header_len(header_key, header_value);
        }
        check_len("record key", key.map_or(0, <[u8]>::len))?;
        check_len("record value", value.map_or(0, <[u8]>::len))?;
        check_len("record headers", headers_len)?;
        // At least 2 bytes per header, so the count fits once the length does.
        let header_count = check_len("record headers", header_count)?;
        let header_count_at =
            1 + varlong_len(timestamp_delta) + varint_len(offset_delta) + bytes_field_len(key) + bytes_field_len(value);
        let body_len = header_count_at + varint_len(header_count) + headers_len;
        let body_len_i32 = check_len("record", body_len)?;

        if self.buf.is_empty() {
            self.buf.reserve(self.target_capacity.max(BATCH_HEADER_LEN));
            self.buf.put_bytes(0, BATCH_HEADER_LEN);
        }
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.min_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.min_timestamp = self.min_timestamp.min(timestamp);
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        let start = self.buf.len();
        self.buf.reserve(varint_len(body_len_i32) + body_len);
        // The small fields go through a stack buffer so a record costs a few copies,
        // not one bounds-checked `put` per field: this is the producer's hot path.
        let mut fields = Scratch::default();
        fields.varint(body_len_i32);
        fields.byte(0); // record attributes: unused in v2
        fields.varlong(timestamp_delta);
        fields.varint(offset_delta);
        fields.varint(key.map_or(-1, |k| k.len() as i32));
        if let Some(key) = key {
            self.buf.extend_from_slice(fields.take());
            self.buf.extend_from_slice(key);
        }
        fields.varint(value.map_or(-1, |v| v.len() as i32));
        self.buf.extend_from_slice(fields.take());
        if let Some(value) = value {
            self.buf.extend_from_slice(value);
        }
        if header_count == 0 {
            self.buf.put_u8(0);
        } else {
            put_varint(&mut self.buf, header_count);
            for (header_key, header_value) in headers {
                put_header(&mut self.buf, header_key, header_value);
            }
        }
        self.count += 1;
        self.last_offset_delta = offset_delta;
        self.last = Some(LastRecord {
            start,
            header_count_at,
            header_count,
        });
        Ok(())
    }

    /// `encode` for a record without headers whose sizes are known to fit, after the
    /// first record of the batch: the small fields are assembled once on the stack
    /// behind room for the length prefix, so a record is two or three copies.
    #[inline]
    fn encode_plain(&mut self, offset_delta: i32, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.min_timestamp = self.min_timestamp.min(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let key_len = key.map_or(0, <[u8]>::len);
        let value_len = value.map_or(0, <[u8]>::len);
        // The small fields are packed into registers, not a byte array: bytes stored
        // one by one and then loaded as a block stall the CPU (no store forwarding),
        // which cost more than the rest of the record.
        let mut head = Packed::default();
        head.byte(0); // record attributes: unused in v2
        head.varint(zigzag64(timestamp.wrapping_sub(self.first_timestamp)));
        head.varint(zigzag64(i64::from(offset_delta)));
        head.varint(zigzag64(key.map_or(-1, |_| key_len as i64)));
        let mut tail = Packed::default();
        tail.varint(zigzag64(value.map_or(-1, |_| value_len as i64)));
        let header_count_at = head.len + key_len + tail.len + value_len;
        let body_len = header_count_at + 1;
        let mut prefix = Packed::default();
        prefix.varint(zigzag64(body_len as i64));
        if prefix.len + head.len > Packed::CAPACITY || tail.len > Packed::CAPACITY {
            // Extreme timestamp deltas: the general path handles them.
            self.encode_fields_unpacked(offset_delta, timestamp, key, value);
            return;
        }
        let mut first = prefix.then(head);
        let start = self.buf.len();
        self.buf
            .reserve(first.len + key_len + tail.len + value_len + 1 + Packed::CAPACITY);
        if let Some(key) = key {
            first.write_to(&mut self.buf);
            self.buf.extend_from_slice(key);
            first = tail;
        } else if first.len + tail.len <= Packed::CAPACITY {
            first = first.then(tail);
        } else {
            first.write_to(&mut self.buf);
            first = tail;
        }
        first.write_to(&mut self.buf);
        if let Some(value) = value {
            self.buf.extend_from_slice(value);
        }
        self.buf.push(0); // header count
        self.count += 1;
        self.last_offset_delta = offset_delta;
        self.last = Some(LastRecord {
            start,
            header_count_at,
            header_count: 0,
        });
    }

    /// The fallback of `encode_plain` for fields too long to pack.
    fn encode_fields_unpacked(&mut self, offset_delta: i32, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if let Err(BatchError::TooLarge { what, len }) =
            self.encode(offset_delta, timestamp, key, value, std::iter::empty())
        {
            self.oversized = Some((what, len));
        }
    }

    /// Rewrites every record's timestamp delta relative to the minimum timestamp.
    fn rebase_timestamps(&mut self) -> Result<(), BatchError> {
        let shift = self.first_timestamp.wrapping_sub(self.min_timestamp);
        self.scratch.clear();
        self.scratch.reserve(self.buf.len() + self.count * 8);
        self.scratch.put_slice(&self.buf[..BATCH_HEADER_LEN]);
        let records = &self.buf[..];
        let mut pos = BATCH_HEADER_LEN;
        while pos < records.len() {
            let body_len = read_varint(records, &mut pos)?;
            let body_end = usize::try_from(body_len)
                .ok()
                .and_then(|len| pos.checked_add(len))
                .filter(|&end| end <= records.len())
                .ok_or(BatchError::Malformed("builder record length corrupt"))?;
            let attributes_at = pos;
            pos += 1;
            let old_delta = read_varlong(records, &mut pos)?;
            let new_delta = old_delta.wrapping_add(shift);
            let new_body_len = body_end - attributes_at - varlong_len(old_delta) + varlong_len(new_delta);
            put_varint(&mut self.scratch, check_len("record", new_body_len)?);
            self.scratch.put_u8(records[attributes_at]);
            put_varlong(&mut self.scratch, new_delta);
            self.scratch.put_slice(&records[pos..body_end]);
            pos = body_end;
        }
        std::mem::swap(&mut self.buf, &mut self.scratch);
        self.scratch.clear();
        Ok(())
    }
}

/// Encoded size of a nullable bytes field: length varint plus the bytes.
#[inline]
fn bytes_field_len(field: Option<&[u8]>) -> usize {
    match field {
        Some(bytes) => varint_len(bytes.len() as i32) + bytes.len(),
        None => 1,
    }
}

/// Encoded size of one record header.
#[inline]
fn header_len(key: &str, value: Option<&[u8]>) -> usize {
    varint_len(key.len() as i32) + key.len() + bytes_field_len(value)
}

#[inline]
fn put_bytes_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.put_slice(bytes);
        }
        None => put_varint(out, -1),
    }
}

#[inline]
fn put_header(out: &mut Vec<u8>, key: &str, value: Option<&[u8]>) {
    put_varint(out, key.len() as i32);
    out.put_slice(key.as_bytes());
    put_bytes_field(out, value);
}

/// A few varints assembled on the stack before one copy into the batch.
struct Scratch {
    bytes: [u8; 48],
    len: usize,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { bytes: [0; 48], len: 0 }
    }
}

impl Scratch {
    #[inline]
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline]
    fn varint(&mut self, value: i32) {
        self.varlong_bits(((value << 1) ^ (value >> 31)) as u32 as u64);
    }

    #[inline]
    fn varlong(&mut self, value: i64) {
        self.varlong_bits(((value << 1) ^ (value >> 63)) as u64);
    }

    #[inline]
    fn varlong_bits(&mut self, mut zigzag: u64) {
        while zigzag >= 0x80 {
            self.byte((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        self.byte(zigzag as u8);
    }

    /// The bytes assembled so far; the scratch is empty afterwards.
    #[inline]
    fn take(&mut self) -> &[u8] {
        let len = std::mem::take(&mut self.len);
        &self.bytes[..len]
    }
}

/// Up to 16 bytes of varints held in a register, written with one fixed-size copy.
#[derive(Debug, Default, Clone, Copy)]
struct Packed {
    bits: u128,
    len: usize,
}

impl Packed {
    const CAPACITY: usize = 16;

    #[inline]
    fn byte(&mut self, byte: u8) {
        if self.len < Self::CAPACITY {
            self.bits |= u128::from(byte) << (self.len * 8);
        }
        self.len += 1;
    }

    /// Appends a varint; the usual one-to-three-byte ones with one shift, not a loop.
    #[inline]
    fn varint(&mut self, zigzag: u64) {
        let (bits, len) = if zigzag < 1 << 7 {
            (zigzag, 1)
        } else if zigzag < 1 << 14 {
            ((zigzag & 0x7f) | 0x80 | ((zigzag >> 7) << 8), 2)
        } else if zigzag < 1 << 21 {
            (
                (zigzag & 0x7f) | 0x80 | (((zigzag >> 7) & 0x7f) | 0x80) << 8 | ((zigzag >> 14) << 16),
                3,
            )
        } else {
            let mut rest = zigzag;
            while rest >= 0x80 {
                self.byte((rest as u8) | 0x80);
                rest >>= 7;
            }
            self.byte(rest as u8);
            return;
        };
        if self.len + len <= Self::CAPACITY {
            self.bits |= u128::from(bits) << (self.len * 8);
        }
        self.len += len;
    }

    /// `self` followed by `next`; the caller checks that both fit.
    #[inline]
    fn then(self, next: Packed) -> Packed {
        Packed {
            bits: self.bits | next.bits.checked_shl((self.len * 8) as u32).unwrap_or(0),
            len: self.len + next.len,
        }
    }

    /// Appends the bytes: all 16 are copied (a fixed-size copy is a couple of moves,
    /// where a variable one is a `memmove` call) and the excess is cut off again.
    #[inline]
    fn write_to(self, buf: &mut Vec<u8>) {
        let keep = buf.len() + self.len;
        buf.extend_from_slice(&self.bits.to_le_bytes());
        buf.truncate(keep);
    }
}

#[inline]
fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// `len` as an i32 length field, or [`BatchError::TooLarge`].
fn check_len(what: &'static str, len: usize) -> Result<i32, BatchError> {
    i32::try_from(len).map_err(|_| BatchError::TooLarge { what, len })
}
