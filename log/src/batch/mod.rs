//! Kafka record batches, format v2 (magic 2), exactly as Kafka writes them on
//! the wire and on disk, so a batch can go from a segment to a Kafka client
//! unchanged.
//!
//! Layout (big-endian fixed-width integers, 61-byte header):
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32
//! | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
//! | producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...
//! ```
//!
//! The CRC-32C covers `attributes` to the end of the batch; `baseOffset` and
//! `partitionLeaderEpoch` are outside it so the log can assign them in place.
//! Each record is zig-zag varint encoded; with compression the whole records
//! section is one LZ4 frame or zstd frame.
//!
//! This module does no I/O: [`BatchBuilder`] turns records into bytes,
//! [`Batch`] checks bytes and [`Records`] turns them back into records.
//! Decoding treats its input as hostile: it never panics, and every length
//! and count is checked against the bytes present before anything is
//! allocated for it.

mod builder;
mod compression;
mod error;
mod header;
mod records;
mod varint;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use builder::{BatchBuilder, ProducerFields};
pub use compression::{Compression, MAX_COMPRESSION_RATIO, MIN_DECOMPRESSED_LIMIT, max_decompressed_len};
pub use error::BatchError;
pub use header::{BatchHeader, set_base_offset, verify_crc};
pub use records::Records;

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// The record batch format version this module reads and writes.
pub const MAGIC: i8 = 2;
/// Offset of the batchLength field end: total batch size = LOG_OVERHEAD + batch_length.
pub const LOG_OVERHEAD: usize = 12;

/// One record header: a UTF-8 key and a nullable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name; Kafka requires UTF-8 and does not allow null.
    pub key: String,
    /// Header value; `None` is Kafka's null.
    pub value: Option<Bytes>,
}

/// An owned record to append (input side).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Record key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Record headers, in order.
    pub headers: Vec<Header>,
    /// Create time, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A record read back from the log (output side).
///
/// Key, value and header values are zero-copy slices of the batch bytes (or
/// of the records section, decompressed once per batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Create time, or the batch's log-append time if it uses that, in ms since the epoch.
    pub timestamp: i64,
    /// Record key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Record headers, in order; empty without allocation when there are none.
    pub headers: Vec<Header>,
}

/// One whole, CRC-verified batch, zero-copy.
#[derive(Debug, Clone)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Parses and verifies a batch: header checks, the length field must
    /// match `bytes.len()` exactly, and the CRC must match.
    pub fn new(bytes: Bytes) -> Result<Batch, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        let total_len = header.total_len();
        if bytes.len() < total_len {
            return Err(BatchError::Truncated {
                needed: total_len,
                available: bytes.len(),
            });
        }
        if bytes.len() > total_len {
            return Err(BatchError::LengthMismatch {
                declared: total_len,
                actual: bytes.len(),
            });
        }
        verify_crc(&bytes)?;
        Ok(Batch { header, bytes })
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The raw batch, suitable for sending to a Kafka client as it is.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// Number of records the header declares.
    pub fn record_count(&self) -> usize {
        // `BatchHeader::parse` rejects negative counts.
        usize::try_from(self.header.record_count).unwrap_or(0)
    }

    /// Largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp
    }

    /// Decodes the records, decompressing the records section once if needed.
    ///
    /// Errors here concern the whole batch (unsupported codec, failed or
    /// oversized decompression, impossible record count); errors in single
    /// records come out of the iterator.
    pub fn records(&self) -> Result<Records, BatchError> {
        let compression = self.header.compression()?;
        let section = self.bytes.slice(BATCH_HEADER_LEN..);
        let section = match compression {
            Compression::None => section,
            codec => Bytes::from(compression::decompress(codec, &section)?),
        };
        Records::new(&self.header, section)
    }
}
