//! The fixed 61-byte record batch header: parsing, checks, CRC and the base
//! offset patch.

use super::{BATCH_HEADER_LEN, BatchError, Compression, LOG_OVERHEAD, MAGIC};

/// Byte position where the CRC-covered part of a batch starts (`attributes`).
pub(crate) const CRC_START: usize = 21;
/// Byte range of the `crc` field.
const CRC_FIELD: std::ops::Range<usize> = 17..21;
/// Smallest valid `batchLength`: the fixed header after the length field.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

/// Attribute bits 0-2: the compression codec id.
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: the timestamps are log-append times, not create times.
pub(crate) const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
/// Attribute bit 4: the batch belongs to a transaction.
const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch holds a control record (commit/abort marker).
const CONTROL: i16 = 0x20;

/// The fixed 61-byte header of a record batch, parsed and checked.
///
/// [`BatchHeader::parse`] guarantees `magic == 2`, `batch_length >= 49`,
/// `record_count >= 0` and `last_offset_delta >= 0`. It does not check the CRC
/// (see [`verify_crc`]) because a segment scan reads headers before it has the
/// whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; patched by the log on append.
    pub base_offset: i64,
    /// Bytes after this field: the whole batch is `LOG_OVERHEAD + batch_length`.
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Format version; always 2.
    pub magic: i8,
    /// CRC-32C of the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp the record timestamp deltas are relative to.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses and checks the first 61 bytes of `bytes`.
    ///
    /// Errors with [`BatchError::Truncated`] if fewer than 61 bytes are given,
    /// and with [`BatchError::BadMagic`], [`BatchError::BadLength`],
    /// [`BatchError::BadRecordCount`] or [`BatchError::BadLastOffsetDelta`]
    /// if a field is out of range.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        let Some(raw) = bytes.first_chunk::<BATCH_HEADER_LEN>() else {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        };
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(field(raw, 0)),
            batch_length: i32::from_be_bytes(field(raw, 8)),
            partition_leader_epoch: i32::from_be_bytes(field(raw, 12)),
            magic: i8::from_be_bytes(field(raw, 16)),
            crc: u32::from_be_bytes(field(raw, 17)),
            attributes: i16::from_be_bytes(field(raw, 21)),
            last_offset_delta: i32::from_be_bytes(field(raw, 23)),
            base_timestamp: i64::from_be_bytes(field(raw, 27)),
            max_timestamp: i64::from_be_bytes(field(raw, 35)),
            producer_id: i64::from_be_bytes(field(raw, 43)),
            producer_epoch: i16::from_be_bytes(field(raw, 51)),
            base_sequence: i32::from_be_bytes(field(raw, 53)),
            record_count: i32::from_be_bytes(field(raw, 57)),
        };
        if header.magic != MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(header.batch_length));
        }
        if header.record_count < 0 {
            return Err(BatchError::BadRecordCount(header.record_count));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::BadLastOffsetDelta(header.last_offset_delta));
        }
        Ok(header)
    }

    /// Encodes the header, with its fields as they are (the CRC is not recomputed).
    pub fn encode(&self) -> [u8; BATCH_HEADER_LEN] {
        let mut out = [0u8; BATCH_HEADER_LEN];
        out[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        out[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[16..17].copy_from_slice(&self.magic.to_be_bytes());
        out[CRC_FIELD].copy_from_slice(&self.crc.to_be_bytes());
        out[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        out[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        out[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        out[57..61].copy_from_slice(&self.record_count.to_be_bytes());
        out
    }

    /// Size of the whole batch in bytes: `LOG_OVERHEAD + batch_length`.
    pub fn total_len(&self) -> usize {
        // `parse` guarantees batch_length >= 49, so the cast is lossless.
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `base_offset + last_offset_delta`
    /// (saturating, so a hostile base offset cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset the next batch starts at: `last_offset + 1` (saturating).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The compression codec from attribute bits 0-2.
    ///
    /// Errors with [`BatchError::UnsupportedCompression`] for gzip, snappy and
    /// unassigned codec ids.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        let id = (self.attributes & COMPRESSION_MASK) as u8;
        match id {
            0 => Ok(Compression::None),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(BatchError::UnsupportedCompression(id)),
        }
    }

    /// Whether the batch holds a control record (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether record timestamps are log-append times (then every record's
    /// timestamp is `max_timestamp`, as in Kafka).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
}

/// Checks the CRC-32C over `batch[21..total_len]` against the header's `crc`.
///
/// `batch` must start with a batch and hold all of it; `total_len` comes from
/// the batch's own length field, so bytes after the batch are not covered.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let Some(raw) = batch.first_chunk::<BATCH_HEADER_LEN>() else {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: batch.len(),
        });
    };
    let batch_length = i32::from_be_bytes(field(raw, 8));
    if batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::BadLength(batch_length));
    }
    let total_len = LOG_OVERHEAD + batch_length as usize;
    let Some(covered) = batch.get(CRC_START..total_len) else {
        return Err(BatchError::Truncated {
            needed: total_len,
            available: batch.len(),
        });
    };
    let stored = u32::from_be_bytes(field(raw, CRC_FIELD.start));
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Patches the base offset of an encoded batch in place.
///
/// The field is not covered by the CRC, so the batch stays valid. A slice
/// shorter than the 8-byte field is left untouched.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if let Some(field) = batch.first_chunk_mut::<8>() {
        *field = base_offset.to_be_bytes();
    }
}

/// Writes the CRC-32C of `batch[21..]` into the header of a complete batch.
pub(crate) fn seal_crc(batch: &mut [u8]) {
    if batch.len() < BATCH_HEADER_LEN {
        return;
    }
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_FIELD].copy_from_slice(&crc.to_be_bytes());
}

/// The `N` bytes of the header starting at `at`.
#[inline]
fn field<const N: usize>(raw: &[u8; BATCH_HEADER_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&raw[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchHeader {
        BatchHeader {
            base_offset: 42,
            batch_length: 49,
            partition_leader_epoch: 7,
            magic: MAGIC,
            crc: 0xdead_beef,
            attributes: 0x13,
            last_offset_delta: 0,
            base_timestamp: -5,
            max_timestamp: 9,
            producer_id: 1234,
            producer_epoch: 3,
            base_sequence: 77,
            record_count: 0,
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let header = sample();
        let encoded = header.encode();
        assert_eq!(BatchHeader::parse(&encoded).unwrap(), header);
        assert_eq!(header.total_len(), 61);
        assert_eq!(header.last_offset(), 42);
        assert_eq!(header.next_offset(), 43);
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(header.compression().unwrap(), Compression::Lz4);
    }

    #[test]
    fn field_checks() {
        assert!(matches!(
            BatchHeader::parse(&[0u8; 60]),
            Err(BatchError::Truncated {
                needed: 61,
                available: 60
            })
        ));
        let mut bad_magic = sample();
        bad_magic.magic = 1;
        assert!(matches!(
            BatchHeader::parse(&bad_magic.encode()),
            Err(BatchError::BadMagic(1))
        ));
        let mut bad_length = sample();
        bad_length.batch_length = 48;
        assert!(matches!(
            BatchHeader::parse(&bad_length.encode()),
            Err(BatchError::BadLength(48))
        ));
        let mut bad_count = sample();
        bad_count.record_count = -1;
        assert!(matches!(
            BatchHeader::parse(&bad_count.encode()),
            Err(BatchError::BadRecordCount(-1))
        ));
        let mut bad_delta = sample();
        bad_delta.last_offset_delta = -1;
        assert!(matches!(
            BatchHeader::parse(&bad_delta.encode()),
            Err(BatchError::BadLastOffsetDelta(-1))
        ));
    }

    #[test]
    fn gzip_and_snappy_are_unsupported() {
        for (id, name) in [(1u8, "gzip"), (2, "snappy"), (7, "unknown")] {
            let mut header = sample();
            header.attributes = i16::from(id);
            let err = header.compression().unwrap_err();
            assert!(matches!(err, BatchError::UnsupportedCompression(got) if got == id));
            let message = err.to_string();
            assert!(message.contains(name), "{message}");
            assert!(message.contains("lz4"), "{message}");
        }
    }

    #[test]
    fn offsets_saturate_instead_of_overflowing() {
        let mut header = sample();
        header.base_offset = i64::MAX;
        header.last_offset_delta = 5;
        assert_eq!(header.last_offset(), i64::MAX);
        assert_eq!(header.next_offset(), i64::MAX);
    }

    #[test]
    fn crc_is_checked_and_base_offset_is_outside_it() {
        let mut batch = sample().encode().to_vec();
        seal_crc(&mut batch);
        verify_crc(&batch).unwrap();
        set_base_offset(&mut batch, 1_000_000);
        verify_crc(&batch).unwrap();
        assert_eq!(BatchHeader::parse(&batch).unwrap().base_offset, 1_000_000);
        batch[40] ^= 0x01;
        assert!(matches!(verify_crc(&batch), Err(BatchError::CrcMismatch { .. })));
        assert!(matches!(verify_crc(&batch[..30]), Err(BatchError::Truncated { .. })));
        let mut short = [1u8; 4];
        set_base_offset(&mut short, 9);
        assert_eq!(short, [1u8; 4]);
    }
}
