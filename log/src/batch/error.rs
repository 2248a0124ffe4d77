//! The one error type of the record batch codec.

use std::str::Utf8Error;

/// Why a record batch could not be built, parsed or decoded.
///
/// Decoding errors carry the numbers that did not add up, so a corrupt
/// segment can be diagnosed from the log line alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The input ends before a field or a whole batch does.
    #[error("record batch truncated: needed {needed} bytes, only {available} available")]
    Truncated {
        /// Bytes the field or batch needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },

    /// The magic byte is not 2; older message formats are not supported.
    #[error("unsupported record batch magic {0}: only magic 2 (Kafka record batch v2) is supported")]
    BadMagic(i8),

    /// The `batchLength` field is smaller than the rest of the fixed header.
    #[error("invalid record batch length {0}: must be at least 49 (the fixed header after the length field)")]
    BadLength(i32),

    /// The buffer holds more bytes than the `batchLength` field declares.
    #[error("record batch length mismatch: the header declares {declared} bytes in total, the buffer holds {actual}")]
    LengthMismatch {
        /// Total length derived from `batchLength`.
        declared: usize,
        /// Length of the buffer given.
        actual: usize,
    },

    /// The stored CRC-32C does not match the bytes: the batch is corrupt.
    #[error("record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}; the batch is corrupt")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes from `attributes` to the end of the batch.
        computed: u32,
    },

    /// The header's `recordCount` is negative.
    #[error("invalid record count {0} in record batch header: must not be negative")]
    BadRecordCount(i32),

    /// The header's `lastOffsetDelta` is negative.
    #[error("invalid last offset delta {0} in record batch header: must not be negative")]
    BadLastOffsetDelta(i32),

    /// The batch uses a codec this log cannot read.
    #[error(
        "unsupported compression codec {0} ({name}) in record batch attributes; supported codecs are none (0), lz4 (3) and zstd (4)",
        name = codec_name(*.0)
    )]
    UnsupportedCompression(u8),

    /// A configured compression name is not one of the known ones.
    #[error("unknown compression `{0}`; valid values are `none`, `lz4` and `zstd`")]
    UnknownCompression(String),

    /// The compressed records section could not be decompressed.
    #[error("decompressing the records section failed: {0}")]
    Decompress(#[source] std::io::Error),

    /// Compressing the records section failed.
    #[error("compressing the records section failed: {0}")]
    Compress(#[source] std::io::Error),

    /// The records section decompresses to more than the allowed bound.
    #[error("the records section decompresses to more than {limit} bytes; refusing it as a likely decompression bomb")]
    DecompressedTooLarge {
        /// The bound that was exceeded (see [`super::max_decompressed_len`]).
        limit: usize,
    },

    /// `recordCount` claims more records than the records section can hold.
    #[error(
        "record batch declares {record_count} records but its records section has only {section_len} bytes (at least 7 bytes per record)"
    )]
    TooManyRecords {
        /// The header's `recordCount`.
        record_count: i32,
        /// Length of the (decompressed) records section.
        section_len: usize,
    },

    /// A varint is longer than its type allows or overflows it.
    #[error("malformed varint: longer than {max_bytes} bytes or overflowing its type")]
    VarintTooLong {
        /// 5 for a varint (i32), 10 for a varlong (i64).
        max_bytes: usize,
    },

    /// A length field is negative where null is not allowed.
    #[error("invalid {field} length {length}: must not be negative")]
    NegativeLength {
        /// Which length field.
        field: &'static str,
        /// The value read.
        length: i32,
    },

    /// A record's fields do not consume exactly its declared length.
    #[error("record length mismatch: the record declares {declared} bytes but its fields take {consumed}")]
    RecordLengthMismatch {
        /// The record's length prefix.
        declared: usize,
        /// Bytes its fields actually use.
        consumed: usize,
    },

    /// A record's offset delta lies outside `0..=lastOffsetDelta`.
    #[error("record offset delta {offset_delta} lies outside the batch's range 0..={last_offset_delta}")]
    OffsetDeltaOutOfRange {
        /// The record's `offsetDelta`.
        offset_delta: i32,
        /// The header's `lastOffsetDelta`.
        last_offset_delta: i32,
    },

    /// `push_with_offset_delta` was given a delta not above the previous record's.
    #[error(
        "record offset delta {offset_delta} must be greater than the previous record's {previous} (and not negative)"
    )]
    OffsetDeltaNotIncreasing {
        /// The previous record's delta, -1 for the first record.
        previous: i32,
        /// The delta given.
        offset_delta: i32,
    },

    /// The base offset plus a record's offset delta overflows an i64.
    #[error("record offset overflows: base offset {base_offset} + delta {offset_delta}")]
    OffsetOverflow {
        /// The header's base offset.
        base_offset: i64,
        /// The record's offset delta.
        offset_delta: i32,
    },

    /// A record header key is not valid UTF-8.
    #[error("record header key is not valid UTF-8: {0}")]
    InvalidHeaderKey(#[source] Utf8Error),

    /// Bytes are left in the records section after the last declared record.
    #[error("{count} bytes left over after the last of the declared records; recordCount is wrong")]
    TrailingBytes {
        /// Bytes left over.
        count: usize,
    },

    /// A structural problem not covered by a more specific variant.
    #[error("malformed record batch: {0}")]
    Malformed(&'static str),

    /// `finish` or `add_header_to_last` was called on a builder with no records.
    #[error("the record batch has no records: push at least one record first")]
    Empty,

    /// A field or the whole batch does not fit the format's i32 lengths.
    #[error("{what} of {len} bytes exceeds the record batch format's limit of 2147483647 bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
    },
}

/// The Kafka name of a compression codec id, for error messages.
fn codec_name(id: u8) -> &'static str {
    match id {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown codec",
    }
}
