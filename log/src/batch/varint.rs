//! Zig-zag varints as Kafka writes them in records (protobuf style, 7 bits a byte,
//! least significant group first).
//!
//! Readers check every byte against the end of the input and reject encodings
//! that are longer than the type (5 bytes for i32, 10 for i64) or whose last
//! byte carries bits beyond the type's width, so hostile input can neither read
//! out of bounds nor smuggle in a silently truncated value.

use bytes::BufMut;

use super::BatchError;

/// Longest encoding of a zig-zag i32.
pub(crate) const MAX_VARINT_LEN: usize = 5;
/// Longest encoding of a zig-zag i64.
pub(crate) const MAX_VARLONG_LEN: usize = 10;

/// Number of bytes `value` takes as a varint.
#[inline]
pub(crate) fn varint_len(value: i32) -> usize {
    let zigzag = zigzag32(value);
    (32 - (zigzag | 1).leading_zeros()).div_ceil(7) as usize
}

/// Number of bytes `value` takes as a varlong.
#[inline]
pub(crate) fn varlong_len(value: i64) -> usize {
    let zigzag = zigzag64(value);
    (64 - (zigzag | 1).leading_zeros()).div_ceil(7) as usize
}

/// Appends `value` as a zig-zag varint.
#[inline]
pub(crate) fn put_varint(out: &mut impl BufMut, value: i32) {
    let mut zigzag = zigzag32(value);
    if zigzag < 0x80 {
        out.put_u8(zigzag as u8);
        return;
    }
    let mut scratch = [0u8; MAX_VARINT_LEN];
    let mut len = 0;
    while zigzag >= 0x80 {
        scratch[len] = (zigzag as u8) | 0x80;
        zigzag >>= 7;
        len += 1;
    }
    scratch[len] = zigzag as u8;
    out.put_slice(&scratch[..=len]);
}

/// Appends `value` as a zig-zag varlong.
#[inline]
pub(crate) fn put_varlong(out: &mut impl BufMut, value: i64) {
    let mut zigzag = zigzag64(value);
    if zigzag < 0x80 {
        out.put_u8(zigzag as u8);
        return;
    }
    let mut scratch = [0u8; MAX_VARLONG_LEN];
    let mut len = 0;
    while zigzag >= 0x80 {
        scratch[len] = (zigzag as u8) | 0x80;
        zigzag >>= 7;
        len += 1;
    }
    scratch[len] = zigzag as u8;
    out.put_slice(&scratch[..=len]);
}

/// Reads a zig-zag varint at `*pos` and advances `*pos` past it.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, BatchError> {
    let start = *pos;
    if let Some(&first) = buf.get(start)
        && first < 0x80
    {
        *pos = start + 1;
        return Ok(unzigzag32(u32::from(first)));
    }
    let mut raw: u32 = 0;
    for i in 0..MAX_VARINT_LEN {
        let Some(&byte) = buf.get(start + i) else {
            return Err(truncated(buf, start, i));
        };
        // The fifth byte may only carry the top 4 bits of a u32 and no continuation.
        if i == MAX_VARINT_LEN - 1 && byte > 0x0f {
            return Err(BatchError::VarintTooLong {
                max_bytes: MAX_VARINT_LEN,
            });
        }
        raw |= u32::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *pos = start + i + 1;
            return Ok(unzigzag32(raw));
        }
    }
    Err(BatchError::VarintTooLong {
        max_bytes: MAX_VARINT_LEN,
    })
}

/// Reads a zig-zag varlong at `*pos` and advances `*pos` past it.
#[inline]
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let start = *pos;
    if let Some(&first) = buf.get(start)
        && first < 0x80
    {
        *pos = start + 1;
        return Ok(unzigzag64(u64::from(first)));
    }
    let mut raw: u64 = 0;
    for i in 0..MAX_VARLONG_LEN {
        let Some(&byte) = buf.get(start + i) else {
            return Err(truncated(buf, start, i));
        };
        // The tenth byte may only carry the top bit of a u64 and no continuation.
        if i == MAX_VARLONG_LEN - 1 && byte > 0x01 {
            return Err(BatchError::VarintTooLong {
                max_bytes: MAX_VARLONG_LEN,
            });
        }
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *pos = start + i + 1;
            return Ok(unzigzag64(raw));
        }
    }
    Err(BatchError::VarintTooLong {
        max_bytes: MAX_VARLONG_LEN,
    })
}

#[inline]
fn zigzag32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

#[inline]
fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
fn unzigzag32(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

#[inline]
fn unzigzag64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[cold]
fn truncated(buf: &[u8], start: usize, read: usize) -> BatchError {
    BatchError::Truncated {
        needed: read + 1,
        available: buf.len().saturating_sub(start),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn varint_bytes(value: i32) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        out
    }

    fn varlong_bytes(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varlong(&mut out, value);
        out
    }

    #[test]
    fn known_answers() {
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(-1), [0x01]);
        assert_eq!(varint_bytes(1), [0x02]);
        assert_eq!(varint_bytes(-2), [0x03]);
        assert_eq!(varint_bytes(63), [0x7e]);
        assert_eq!(varint_bytes(-64), [0x7f]);
        assert_eq!(varint_bytes(64), [0x80, 0x01]);
        assert_eq!(varint_bytes(300), [0xd8, 0x04]);
        assert_eq!(varint_bytes(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint_bytes(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varlong_bytes(300), [0xd8, 0x04]);
        assert_eq!(
            varlong_bytes(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn extremes_round_trip() {
        for value in [0, 1, -1, 300, i32::MIN, i32::MAX] {
            let bytes = varint_bytes(value);
            assert_eq!(bytes.len(), varint_len(value));
            let mut pos = 0;
            assert_eq!(read_varint(&bytes, &mut pos).unwrap(), value);
            assert_eq!(pos, bytes.len());
        }
        for value in [0, 1, -1, 300, i64::MIN, i64::MAX] {
            let bytes = varlong_bytes(value);
            assert_eq!(bytes.len(), varlong_len(value));
            let mut pos = 0;
            assert_eq!(read_varlong(&bytes, &mut pos).unwrap(), value);
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn overlong_and_overflowing_encodings_are_rejected() {
        let six = [0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert!(matches!(
            read_varint(&six, &mut 0),
            Err(BatchError::VarintTooLong { max_bytes: 5 })
        ));
        // Five bytes whose last one carries bits beyond 32.
        let wide = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(matches!(
            read_varint(&wide, &mut 0),
            Err(BatchError::VarintTooLong { max_bytes: 5 })
        ));
        let eleven = [0x80; 11];
        assert!(matches!(
            read_varlong(&eleven, &mut 0),
            Err(BatchError::VarintTooLong { max_bytes: 10 })
        ));
        let wide_long = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            read_varlong(&wide_long, &mut 0),
            Err(BatchError::VarintTooLong { max_bytes: 10 })
        ));
    }

    #[test]
    fn truncated_varint_is_an_error() {
        let mut pos = 1;
        assert!(matches!(
            read_varint(&[0x00, 0x80, 0x80], &mut pos),
            Err(BatchError::Truncated {
                needed: 3,
                available: 2
            })
        ));
        assert_eq!(pos, 1, "position must not move on error");
        assert!(matches!(
            read_varlong(&[], &mut 0),
            Err(BatchError::Truncated {
                needed: 1,
                available: 0
            })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn varint_round_trips(value: i32) {
            let bytes = varint_bytes(value);
            prop_assert_eq!(bytes.len(), varint_len(value));
            let mut pos = 0;
            prop_assert_eq!(read_varint(&bytes, &mut pos).unwrap(), value);
            prop_assert_eq!(pos, bytes.len());
        }

        #[test]
        fn varlong_round_trips(value: i64) {
            let bytes = varlong_bytes(value);
            prop_assert_eq!(bytes.len(), varlong_len(value));
            let mut pos = 0;
            prop_assert_eq!(read_varlong(&bytes, &mut pos).unwrap(), value);
            prop_assert_eq!(pos, bytes.len());
        }

        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12), start in 0usize..14) {
            let mut pos = start;
            let _ = read_varint(&bytes, &mut pos);
            let mut pos = start;
            let _ = read_varlong(&bytes, &mut pos);
        }
    }
}
