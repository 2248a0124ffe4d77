//! A bounds-checked reader of PostgreSQL's big-endian wire fields over one message.

use bytes::Bytes;

use crate::DecodeError;

/// Reads the fields of one message front to back. Every read checks the remaining length
/// and names the field in its error, so decoders never index out of bounds.
#[derive(Debug)]
pub(crate) struct MessageReader {
    buf: Bytes,
    pos: usize,
    message: &'static str,
}

impl MessageReader {
    pub(crate) fn new(buf: Bytes, message: &'static str) -> MessageReader {
        MessageReader { buf, pos: 0, message }
    }

    /// Names the message being decoded from here on (once its tag is known).
    pub(crate) fn set_message(&mut self, message: &'static str) {
        self.message = message;
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array(field).map(|[byte]| byte)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// The next `len` bytes, sharing the message's buffer.
    pub(crate) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(len, field)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// Everything up to the end of the message.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A length field of type Int32 that must not be negative.
    pub(crate) fn length(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| self.invalid_length(field, offset, value.into()))
    }

    /// A zero-terminated UTF-8 string (PostgreSQL's `String` field type).
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString {
                message: self.message,
                field,
                offset,
            });
        };
        let raw = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(raw).map_err(|source| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
            offset,
            source,
        })?;
        let text = text.to_owned();
        self.pos += len + 1;
        Ok(text)
    }

    /// Checks that a count of elements, each at least `min_element_len` bytes long, fits in
    /// the bytes left, so that a corrupt count cannot make the decoder reserve gigabytes.
    pub(crate) fn check_count(
        &self,
        count: usize,
        min_element_len: usize,
        field: &'static str,
        offset: usize,
    ) -> Result<(), DecodeError> {
        match count.checked_mul(min_element_len) {
            Some(needed) if needed <= self.remaining() => Ok(()),
            _ => Err(self.invalid_length(field, offset, i64::try_from(count).unwrap_or(i64::MAX))),
        }
    }

    /// Ends the message: any byte left means the layout was not the expected one.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                message: self.message,
                offset: self.pos,
                count,
            }),
        }
    }

    pub(crate) fn unknown_tag(&self, field: &'static str, tag: u8, offset: usize) -> DecodeError {
        DecodeError::UnknownTag {
            message: self.message,
            field,
            tag,
            offset,
        }
    }

    fn invalid_length(&self, field: &'static str, offset: usize, value: i64) -> DecodeError {
        DecodeError::InvalidLength {
            message: self.message,
            field,
            offset,
            value,
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Advances over the next `len` bytes and returns them.
    fn take(&mut self, len: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        let start = self.pos;
        let Some(taken) = start.checked_add(len).and_then(|end| self.buf.get(start..end)) else {
            return Err(DecodeError::Truncated {
                message: self.message,
                field,
                offset: start,
                needed: len,
                available: self.remaining(),
            });
        };
        self.pos += len;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_fields_in_order() {
        let mut bytes = vec![0x01, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x00];
        bytes.extend_from_slice(&0x0102_0304_0506_0708_u64.to_be_bytes());
        bytes.extend_from_slice(b"abc\0rest");
        let mut reader = MessageReader::new(Bytes::from(bytes), "test");
        assert_eq!(reader.u8("a").unwrap(), 1);
        assert_eq!(reader.u16("b").unwrap(), 0xfffe);
        assert_eq!(reader.u32("c").unwrap(), 256);
        assert_eq!(reader.u64("d").unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(reader.string("e").unwrap(), "abc");
        assert_eq!(reader.offset(), 19);
        assert_eq!(reader.rest(), Bytes::from_static(b"rest"));
        reader.finish().unwrap();
    }

    #[test]
    fn short_reads_name_the_field_and_offset() {
        let mut reader = MessageReader::new(Bytes::from_static(&[0, 0, 0]), "Begin");
        reader.u8("tag").unwrap();
        let error = reader.u32("xid").unwrap_err();
        assert_eq!(
            error,
            DecodeError::Truncated {
                message: "Begin",
                field: "xid",
                offset: 1,
                needed: 4,
                available: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "truncated Begin message: xid at byte 1 needs 4 bytes, 2 left"
        );
    }

    #[test]
    fn strings_must_be_terminated_and_utf8() {
        let mut reader = MessageReader::new(Bytes::from_static(b"abc"), "Relation");
        assert!(matches!(
            reader.string("name"),
            Err(DecodeError::UnterminatedString { offset: 0, .. })
        ));
        let mut reader = MessageReader::new(Bytes::from_static(b"\xff\0"), "Relation");
        assert!(matches!(
            reader.string("name"),
            Err(DecodeError::InvalidUtf8 { field: "name", .. })
        ));
    }

    #[test]
    fn negative_lengths_and_oversized_counts_are_rejected() {
        let mut reader = MessageReader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2]), "Insert");
        assert!(matches!(
            reader.length("value length"),
            Err(DecodeError::InvalidLength { value: -1, .. })
        ));
        assert!(reader.check_count(2, 1, "count", 0).is_ok());
        assert!(reader.check_count(3, 1, "count", 0).is_err());
        assert!(reader.check_count(usize::MAX, 2, "count", 0).is_err());
    }

    #[test]
    fn leftover_bytes_fail_finish() {
        let reader = MessageReader::new(Bytes::from_static(b"xy"), "Commit");
        assert_eq!(
            reader.finish(),
            Err(DecodeError::TrailingBytes {
                message: "Commit",
                offset: 0,
                count: 2
            })
        );
    }
}
