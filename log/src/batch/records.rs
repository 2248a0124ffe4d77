//! Decoding the records of a batch.

use bytes::Bytes;

use super::varint::{read_varint, read_varlong};
use super::{BatchError, BatchHeader, Header, StoredRecord};

/// Smallest possible encoded record: seven one-byte fields (length,
/// attributes, timestamp delta, offset delta, null key, null value, no headers).
const MIN_RECORD_LEN: usize = 7;
/// Smallest possible encoded header: empty key, null value.
const MIN_HEADER_LEN: usize = 2;

/// Iterator over the records of one batch.
///
/// Keys, values and header values are [`Bytes`] slices of one shared buffer:
/// the batch itself, or the records section decompressed once. Malformed data
/// yields one `Err` item and then ends the iteration; it never panics.
#[derive(Debug, Clone)]
pub struct Records {
    /// The (decompressed) records section.
    section: Bytes,
    /// Where the next record starts in `section`.
    pos: usize,
    /// Records still to yield.
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
    last_offset_delta: i32,
    /// `Some(max_timestamp)` when the batch uses log-append time.
    log_append_time: Option<i64>,
}

impl Records {
    /// Iterates the records of `section`, the records section of the batch
    /// that `header` describes (already decompressed).
    ///
    /// Errors with [`BatchError::TooManyRecords`] if `record_count` records
    /// cannot fit in the section, which also bounds the work per batch.
    pub(crate) fn new(header: &BatchHeader, section: Bytes) -> Result<Records, BatchError> {
        let record_count =
            usize::try_from(header.record_count).map_err(|_| BatchError::BadRecordCount(header.record_count))?;
        if record_count.saturating_mul(MIN_RECORD_LEN) > section.len() {
            return Err(BatchError::TooManyRecords {
                record_count: header.record_count,
                section_len: section.len(),
            });
        }
        Ok(Records {
            section,
            pos: 0,
            remaining: record_count,
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            last_offset_delta: header.last_offset_delta,
            log_append_time: header.is_log_append_time().then_some(header.max_timestamp),
        })
    }

    /// Records not yet yielded (an error ends the iteration early).
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Decodes the record at `self.pos` and advances past it.
    fn decode_next(&mut self) -> Result<StoredRecord, BatchError> {
        let section = &self.section[..];
        let mut pos = self.pos;
        let declared = read_varint(section, &mut pos)?;
        let declared = usize::try_from(declared).map_err(|_| BatchError::NegativeLength {
            field: "record",
            length: declared,
        })?;
        let body_start = pos;
        let available = section.len() - body_start;
        if declared > available {
            return Err(BatchError::Truncated {
                needed: declared,
                available,
            });
        }
        let end = body_start + declared;
        // Every field below reads from `record`, so none can run past the declared end.
        let record = &section[..end];

        pos += 1; // attributes: unused in v2
        if pos > end {
            return Err(BatchError::RecordLengthMismatch {
                declared,
                consumed: pos - body_start,
            });
        }
        let timestamp_delta = read_varlong(record, &mut pos)?;
        let offset_delta = read_varint(record, &mut pos)?;
        if !(0..=self.last_offset_delta).contains(&offset_delta) {
            return Err(BatchError::OffsetDeltaOutOfRange {
                offset_delta,
                last_offset_delta: self.last_offset_delta,
            });
        }
        let offset = self
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or(BatchError::OffsetOverflow {
                base_offset: self.base_offset,
                offset_delta,
            })?;
        let key = self.read_bytes(record, &mut pos, "record key")?;
        let value = self.read_bytes(record, &mut pos, "record value")?;
        let headers = self.read_headers(record, &mut pos)?;
        if pos != end {
            return Err(BatchError::RecordLengthMismatch {
                declared,
                consumed: pos - body_start,
            });
        }
        self.pos = end;
        let timestamp = self
            .log_append_time
            .unwrap_or_else(|| self.base_timestamp.wrapping_add(timestamp_delta));
        Ok(StoredRecord {
            offset,
            timestamp,
            key,
            value,
            headers,
        })
    }

    /// Reads a nullable bytes field (length -1 is null) as a slice of the section.
    #[inline]
    fn read_bytes(&self, record: &[u8], pos: &mut usize, field: &'static str) -> Result<Option<Bytes>, BatchError> {
        let Some(range) = read_nullable(record, pos, field)? else {
            return Ok(None);
        };
        Ok(Some(self.section.slice(range)))
    }

    fn read_headers(&self, record: &[u8], pos: &mut usize) -> Result<Vec<Header>, BatchError> {
        let count = read_varint(record, pos)?;
        let count = usize::try_from(count).map_err(|_| BatchError::NegativeLength {
            field: "header count",
            length: count,
        })?;
        if count == 0 {
            return Ok(Vec::new());
        }
        // Caps the allocation by the bytes that can actually hold headers.
        let available = record.len() - *pos;
        if count.saturating_mul(MIN_HEADER_LEN) > available {
            return Err(BatchError::Truncated {
                needed: count.saturating_mul(MIN_HEADER_LEN),
                available,
            });
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let key_len = read_varint(record, pos)?;
            let key_len = usize::try_from(key_len).map_err(|_| BatchError::NegativeLength {
                field: "header key",
                length: key_len,
            })?;
            let key_bytes = take(record, pos, key_len)?;
            let key = std::str::from_utf8(key_bytes).map_err(BatchError::InvalidHeaderKey)?;
            let value = self.read_bytes(record, pos, "header value")?;
            headers.push(Header {
                key: key.to_owned(),
                value,
            });
        }
        Ok(headers)
    }
}

impl Iterator for Records {
    type Item = Result<StoredRecord, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let result = self.decode_next().and_then(|record| {
            // Kafka also rejects a batch whose last record leaves bytes behind.
            let trailing = self.section.len() - self.pos;
            if self.remaining == 1 && trailing != 0 {
                Err(BatchError::TrailingBytes { count: trailing })
            } else {
                Ok(record)
            }
        });
        match result {
            Ok(_) => self.remaining -= 1,
            Err(_) => self.remaining = 0,
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // An error ends the iteration early, so only one more item is certain.
        (usize::from(self.remaining > 0), Some(self.remaining))
    }
}

/// Reads a length varint (-1 for null) and returns the range of the bytes it covers.
#[inline]
fn read_nullable(
    record: &[u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<Option<std::ops::Range<usize>>, BatchError> {
    let len = read_varint(record, pos)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| BatchError::NegativeLength { field, length: len })?;
    let start = *pos;
    take(record, pos, len)?;
    Ok(Some(start..start + len))
}

/// The next `len` bytes of `record`, or [`BatchError::Truncated`].
#[inline]
fn take<'a>(record: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], BatchError> {
    let start = *pos;
    let available = record.len().saturating_sub(start);
    if len > available {
        return Err(BatchError::Truncated { needed: len, available });
    }
    *pos = start + len;
    Ok(&record[start..start + len])
}
