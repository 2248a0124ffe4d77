//! Rows of `COPY ... TO STDOUT (FORMAT binary)`, the snapshot's reads.
//!
//! PostgreSQL writes a binary row with less work than a text one (no number or date
//! formatting), and a binary value is read here without parsing text: the snapshot's
//! server CPU drops by about a quarter. Only the types whose binary form is simple and
//! fixed are read in binary ([`reads_binary`]); the query casts the others to `text`,
//! whose binary form is the text itself, so they take the text path of
//! [`super::write_json`]. Either way a value's JSON is byte for byte what the text
//! format gives (the tests compare the two on a real server).
//!
//! The stream is a header (`PGCOPY\n\xff\r\n\0`, flags, an extension), then one tuple per
//! row (a 16-bit field count, then each field as a 32-bit length, -1 for NULL, and its
//! bytes), then a trailer (a field count of -1). PostgreSQL sends each tuple in a
//! message of its own, the header at the start of the first one.

use super::datetime::{Date, Time};
use super::json::{restoring, write_string};
use super::{PgType, ValueError};

/// What starts a binary COPY stream.
pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds and days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const EPOCH_DAYS: i64 = 10_957;
const DAY_MICROS: i64 = 86_400_000_000;

/// Whether the snapshot reads a column of type `ty` in binary; the others are cast to
/// `text` in its query.
pub fn reads_binary(ty: &PgType) -> bool {
    matches!(
        ty,
        PgType::Bool
            | PgType::Int2
            | PgType::Int4
            | PgType::Int8
            | PgType::Numeric { .. }
            | PgType::Text
            | PgType::Char(_)
            | PgType::Uuid
            | PgType::Json
            | PgType::Jsonb
            | PgType::Enum(_)
            | PgType::Date
            | PgType::Timestamp
            | PgType::TimestampTz
    )
}

/// Whether a key column of type `ty` gives its text form (as `::text` writes it, and as
/// the next query's literal takes it) from its binary value, with [`key_text`]. When
/// every key column does, the snapshot does not ask the server for the key a second time
/// as text: formatting numbers and uuids costs the server about a fifth of a
/// snapshot's reading.
pub fn key_text_from_binary(ty: &PgType) -> bool {
    matches!(ty, PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Uuid)
}

/// The text form of a key value in binary, for a type [`key_text_from_binary`] accepts.
pub fn key_text(ty: &PgType, value: &[u8]) -> Result<String, BinaryCopyError> {
    let wrong = BinaryCopyError("has a key value of the wrong size");
    Ok(match ty {
        PgType::Int2 => i16::from_be_bytes(value.try_into().map_err(|_| wrong)?).to_string(),
        PgType::Int4 => i32::from_be_bytes(value.try_into().map_err(|_| wrong)?).to_string(),
        PgType::Int8 => i64::from_be_bytes(value.try_into().map_err(|_| wrong)?).to_string(),
        PgType::Uuid => {
            let mut quoted = Vec::with_capacity(38);
            write_uuid(&value.try_into().map_err(|_| wrong)?, &mut quoted);
            // Hex digits and dashes between the quotes.
            String::from_utf8_lossy(quoted.get(1..quoted.len() - 1).unwrap_or_default()).into_owned()
        }
        _ => return Err(BinaryCopyError("has a key column whose text is read from the server")),
    })
}

/// A message of a binary COPY that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binary COPY data {0}")]
pub struct BinaryCopyError(&'static str);

impl BinaryCopyError {
    /// A message that was expected to be a row and is not.
    pub const NOT_A_ROW: BinaryCopyError = BinaryCopyError("is not a row");
    /// A row whose key column is NULL (a key column is `NOT NULL`).
    pub const NULL_KEY: BinaryCopyError = BinaryCopyError("has a NULL key column");
}

/// One message of a binary COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A row's tuple (after the stream's header, when the message starts with it).
    Tuple(&'a [u8]),
    /// The header alone, or the trailer: no row.
    Nothing,
}

/// Takes the header off the message that starts the stream, and tells a tuple from the
/// trailer.
pub fn message(data: &[u8]) -> Result<Message<'_>, BinaryCopyError> {
    let mut rest = data;
    if let Some(after) = data.strip_prefix(SIGNATURE) {
        let flags = be_u32(after.get(..4)).ok_or(BinaryCopyError("ends inside its header"))?;
        if flags & 0xFFFF_0000 != 0 {
            return Err(BinaryCopyError("has a header flag this reader does not know"));
        }
        let extension = be_u32(after.get(4..8)).ok_or(BinaryCopyError("ends inside its header"))? as usize;
        rest = after
            .get(8 + extension..)
            .ok_or(BinaryCopyError("ends inside its header extension"))?;
    }
    Ok(match rest {
        [] | [0xFF, 0xFF] => Message::Nothing,
        tuple => Message::Tuple(tuple),
    })
}

/// Calls `field` with each field of a tuple, in order: its index (from 0) and its bytes,
/// `None` for NULL. Returns the number of fields; stops at the first error of `field`.
pub fn for_each_binary_field<'a, E: From<BinaryCopyError>>(
    tuple: &'a [u8],
    mut field: impl FnMut(usize, Option<&'a [u8]>) -> Result<(), E>,
) -> Result<usize, E> {
    let count = tuple
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or(BinaryCopyError("has a row without its field count"))?;
    let mut rest = &tuple[2..];
    for index in 0..count {
        let len = be_u32(rest.get(..4)).ok_or(BinaryCopyError("ends inside a field's length"))?;
        rest = &rest[4..];
        if len == u32::MAX {
            field(index, None)?;
            continue;
        }
        let len = len as usize;
        let value = rest.get(..len).ok_or(BinaryCopyError("ends inside a field"))?;
        rest = &rest[len..];
        field(index, Some(value))?;
    }
    if !rest.is_empty() {
        return Err(BinaryCopyError("has bytes after a row's last field").into());
    }
    Ok(count)
}

fn be_u32(bytes: Option<&[u8]>) -> Option<u32> {
    let bytes: [u8; 4] = bytes?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Appends the JSON of a value in binary form, as [`super::write_json`] appends it for
/// the same value in text. `ty` must be one that [`reads_binary`]; `out` is left as it
/// was on errors.
pub fn write_json_binary(ty: &PgType, value: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    restoring(out, |out| write_value(ty, value, out))
}

fn write_value(ty: &PgType, value: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let wrong = |reason: &str| ValueError::new(ty, value, format!("binary form: {reason}"));
    match ty {
        PgType::Bool => match value {
            [0] => out.extend_from_slice(b"false"),
            [1] => out.extend_from_slice(b"true"),
            _ => return Err(wrong("not one byte 0 or 1")),
        },
        PgType::Int2 => {
            let bytes: [u8; 2] = value.try_into().map_err(|_| wrong("not 2 bytes"))?;
            plexus_connector::json::push_i64(out, i64::from(i16::from_be_bytes(bytes)));
        }
        PgType::Int4 => {
            let bytes: [u8; 4] = value.try_into().map_err(|_| wrong("not 4 bytes"))?;
            plexus_connector::json::push_i64(out, i64::from(i32::from_be_bytes(bytes)));
        }
        PgType::Int8 => {
            let bytes: [u8; 8] = value.try_into().map_err(|_| wrong("not 8 bytes"))?;
            plexus_connector::json::push_i64(out, i64::from_be_bytes(bytes));
        }
        PgType::Numeric { .. } => write_numeric(value, out).map_err(wrong)?,
        PgType::Text => match value {
            // Only `"char"` (also read as text) sends a lone byte that is not UTF-8, or a
            // zero byte: written as its text output writes it (`\ooo`, or nothing).
            [0] => out.extend_from_slice(b"\"\""),
            [byte] if *byte >= 0x80 => {
                let octal = [b'\\', b'0' + (byte >> 6), b'0' + ((byte >> 3) & 7), b'0' + (byte & 7)];
                write_string(&octal, out).map_err(|reason| ValueError::new(ty, value, reason))?;
            }
            _ => write_string(value, out).map_err(|reason| ValueError::new(ty, value, reason))?,
        },
        PgType::Char(_) | PgType::Json | PgType::Enum(_) => {
            write_string(value, out).map_err(|reason| ValueError::new(ty, value, reason))?;
        }
        PgType::Jsonb => {
            let text = match value {
                [1, text @ ..] => text,
                _ => return Err(wrong("not jsonb version 1")),
            };
            write_string(text, out).map_err(|reason| ValueError::new(ty, value, reason))?;
        }
        PgType::Uuid => {
            let bytes: [u8; 16] = value.try_into().map_err(|_| wrong("not 16 bytes"))?;
            write_uuid(&bytes, out);
        }
        PgType::Date => {
            let bytes: [u8; 4] = value.try_into().map_err(|_| wrong("not 4 bytes"))?;
            match i32::from_be_bytes(bytes) {
                i32::MIN => out.extend_from_slice(b"\"-infinity\""),
                i32::MAX => out.extend_from_slice(b"\"infinity\""),
                days => {
                    out.push(b'"');
                    Date::from_days_since_epoch(i64::from(days) + EPOCH_DAYS).write(out);
                    out.push(b'"');
                }
            }
        }
        PgType::Timestamp | PgType::TimestampTz => {
            let bytes: [u8; 8] = value.try_into().map_err(|_| wrong("not 8 bytes"))?;
            match i64::from_be_bytes(bytes) {
                i64::MIN => out.extend_from_slice(b"\"-infinity\""),
                i64::MAX => out.extend_from_slice(b"\"infinity\""),
                micros => write_timestamp(micros, matches!(ty, PgType::TimestampTz), out),
            }
        }
        _ => return Err(wrong("this type is read as text")),
    }
    Ok(())
}

/// `"8-4-4-4-12"` in lower-case hex, as PostgreSQL writes a `uuid`.
fn write_uuid(bytes: &[u8; 16], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 15)]);
    }
    out.push(b'"');
}

/// A timestamp `micros` after 2000-01-01 00:00:00 as ISO-8601 (`Z` for UTC when `utc`),
/// the fraction of a second as PostgreSQL writes it: up to six digits, no trailing zeros.
fn write_timestamp(micros: i64, utc: bool, out: &mut Vec<u8>) {
    let days = micros.div_euclid(DAY_MICROS);
    let of_day = micros.rem_euclid(DAY_MICROS);
    let seconds = of_day / 1_000_000;
    let mut fraction = [0u8; 6];
    let mut digits = of_day % 1_000_000;
    for slot in fraction.iter_mut().rev() {
        *slot = b'0' + (digits % 10) as u8;
        digits /= 10;
    }
    let kept = fraction.iter().rposition(|&d| d != b'0').map_or(0, |last| last + 1);
    // In range by construction: below a day.
    let time = Time {
        hour: (seconds / 3600) as u8,
        minute: (seconds / 60 % 60) as u8,
        second: (seconds % 60) as u8,
        fraction: &fraction[..kept],
    };
    out.push(b'"');
    Date::from_days_since_epoch(days + EPOCH_DAYS).write(out);
    out.push(b'T');
    time.write(out);
    if utc {
        out.push(b'Z');
    }
    out.push(b'"');
}

/// A `numeric` in binary form (digit count, weight, sign, display scale, then base-10000
/// digits) as the decimal string PostgreSQL writes: `"-12.50"`, `"NaN"`, `"Infinity"`.
fn write_numeric(value: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let word = |i: usize| value.get(2 * i..2 * i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (Some(ndigits), Some(weight), Some(sign), Some(dscale)) = (word(0), word(1), word(2), word(3)) else {
        return Err("shorter than a numeric's header");
    };
    let (ndigits, weight, dscale) = (usize::from(ndigits), i64::from(weight as i16), i64::from(dscale));
    if value.len() != 8 + 2 * ndigits {
        return Err("its length does not match its digit count");
    }
    let special: &[u8] = match sign {
        0x0000 | 0x4000 => b"",
        0xC000 => b"\"NaN\"",
        0xD000 => b"\"Infinity\"",
        0xF000 => b"\"-Infinity\"",
        _ => return Err("an unknown sign"),
    };
    if !special.is_empty() {
        out.extend_from_slice(special);
        return Ok(());
    }
    // Base-10000 digit `i` counts 10000^(weight - i); missing ones are zero.
    let digit = |i: i64| -> Result<u16, &'static str> {
        let d = usize::try_from(i).ok().and_then(|i| word(4 + i)).unwrap_or(0);
        if d > 9999 { Err("a digit above 9999") } else { Ok(d) }
    };
    out.push(b'"');
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        for i in 0..=weight {
            let d = digit(i)?;
            if i == 0 {
                plexus_connector::json::push_u64(out, u64::from(d));
            } else {
                push_four(out, d, 4);
            }
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let mut left = dscale;
        let mut i = weight + 1;
        while left > 0 {
            let take = left.min(4);
            push_four(out, digit(i)?, take as usize);
            left -= take;
            i += 1;
        }
    }
    out.push(b'"');
    Ok(())
}

/// The first `take` of the four decimal digits of `d` (zero-padded).
fn push_four(out: &mut Vec<u8>, d: u16, take: usize) {
    let digits = [
        b'0' + (d / 1000) as u8,
        b'0' + (d / 100 % 10) as u8,
        b'0' + (d / 10 % 10) as u8,
        b'0' + (d % 10) as u8,
    ];
    out.extend_from_slice(&digits[..take]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::write_json;

    fn binary(ty: &PgType, value: &[u8]) -> String {
        let mut out = Vec::new();
        write_json_binary(ty, value, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn text(ty: &PgType, value: &str) -> String {
        let mut out = Vec::new();
        write_json(ty, value.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// `numeric` in binary: digits in base 10000.
    fn numeric(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, dscale] {
            v.extend_from_slice(&word.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numbers_read_as_their_text_reads() {
        let num = PgType::Numeric {
            precision: None,
            scale: None,
        };
        let cases: &[(Vec<u8>, &str)] = &[
            (numeric(0, 0, 0, &[]), "0"),
            (numeric(0, 0, 2, &[]), "0.00"),
            (numeric(0, 0, 2, &[12, 5000]), "12.50"),
            (numeric(0, 0x4000, 2, &[12, 5000]), "-12.50"),
            (numeric(1, 0, 0, &[1, 0]), "10000"),
            (numeric(2, 0, 0, &[42]), "4200000000"),
            (numeric(-1, 0, 5, &[1200]), "0.12000"),
            (numeric(-2, 0, 8, &[5]), "0.00000005"),
            (numeric(0, 0, 3, &[7, 1234]), "7.123"),
            (numeric(0, 0xC000, 0, &[]), "NaN"),
            (numeric(0, 0xD000, 0, &[]), "Infinity"),
            (numeric(0, 0xF000, 0, &[]), "-Infinity"),
        ];
        for (value, want) in cases {
            assert_eq!(binary(&num, value), text(&num, want), "{want}");
        }
        assert_eq!(binary(&PgType::Int2, &(-32768i16).to_be_bytes()), "-32768");
        assert_eq!(binary(&PgType::Int4, &7i32.to_be_bytes()), text(&PgType::Int4, "7"));
        assert_eq!(
            binary(&PgType::Int8, &i64::MIN.to_be_bytes()),
            text(&PgType::Int8, &i64::MIN.to_string())
        );
        assert_eq!(binary(&PgType::Bool, &[1]), "true");
        assert_eq!(binary(&PgType::Bool, &[0]), "false");
    }

    #[test]
    fn dates_and_times_read_as_their_text_reads() {
        let day = |days: i32| binary(&PgType::Date, &days.to_be_bytes());
        assert_eq!(day(0), text(&PgType::Date, "2000-01-01"));
        assert_eq!(day(-1), text(&PgType::Date, "1999-12-31"));
        assert_eq!(day(9_001), text(&PgType::Date, "2024-08-23"));
        assert_eq!(day(-730_119), text(&PgType::Date, "0001-01-01"));
        assert_eq!(day(-730_120), text(&PgType::Date, "0001-12-31 BC"));
        assert_eq!(day(i32::MAX), text(&PgType::Date, "infinity"));
        assert_eq!(day(i32::MIN), text(&PgType::Date, "-infinity"));
        let ts = |ty: &PgType, micros: i64| binary(ty, &micros.to_be_bytes());
        let tz = PgType::TimestampTz;
        assert_eq!(ts(&tz, 0), text(&tz, "2000-01-01 00:00:00+00"));
        assert_eq!(ts(&tz, 500_000), text(&tz, "2000-01-01 00:00:00.5+00"));
        assert_eq!(ts(&tz, -1), text(&tz, "1999-12-31 23:59:59.999999+00"));
        assert_eq!(ts(&tz, 1_000_123_450), text(&tz, "2000-01-01 00:16:40.12345+00"));
        assert_eq!(ts(&tz, i64::MAX), text(&tz, "infinity"));
        let local = PgType::Timestamp;
        assert_eq!(ts(&local, 817_556_645_000_000), text(&local, "2025-11-27 11:04:05"));
        assert_eq!(
            ts(&local, -730_120 * 86_400_000_000),
            text(&local, "0001-12-31 00:00:00 BC")
        );
    }

    #[test]
    fn texts_uuids_and_json_read_as_their_text_reads() {
        assert_eq!(binary(&PgType::Text, b"a\"b\n"), text(&PgType::Text, "a\"b\n"));
        assert_eq!(binary(&PgType::Text, &[0xE9]), text(&PgType::Text, "\\351"));
        assert_eq!(binary(&PgType::Text, &[0]), text(&PgType::Text, ""));
        assert_eq!(
            binary(&PgType::Jsonb, b"\x01{\"a\": 1}"),
            text(&PgType::Jsonb, "{\"a\": 1}")
        );
        let uuid = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
        ];
        assert_eq!(
            binary(&PgType::Uuid, &uuid),
            text(&PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
    }

    #[test]
    fn bad_binary_values_are_refused_and_leave_nothing_behind() {
        let mut out = b"x".to_vec();
        for (ty, value) in [
            (PgType::Int4, &b"\x00\x01"[..]),
            (PgType::Bool, b"\x02"),
            (PgType::Jsonb, b"\x02{}"),
            (PgType::Text, b"\xff\xfe"),
            (
                PgType::Numeric {
                    precision: None,
                    scale: None,
                },
                b"\x00\x01\x00\x00",
            ),
            (PgType::Interval, b"\x00"),
        ] {
            let e = write_json_binary(&ty, value, &mut out).unwrap_err();
            assert_eq!(out, b"x", "{e}");
        }
    }

    #[test]
    fn a_stream_is_a_header_tuples_and_a_trailer() {
        let mut first = SIGNATURE.to_vec();
        first.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 9, 9]);
        let tuple = [0, 2, 0, 0, 0, 1, b'x', 0xFF, 0xFF, 0xFF, 0xFF];
        first.extend_from_slice(&tuple);
        assert_eq!(message(&first), Ok(Message::Tuple(&tuple[..])));
        assert_eq!(message(&first[..21]), Ok(Message::Nothing));
        assert_eq!(message(&[0xFF, 0xFF]), Ok(Message::Nothing));
        assert!(message(&first[..13]).is_err());
        let mut fields = Vec::new();
        let count = for_each_binary_field::<BinaryCopyError>(&tuple, |i, v| {
            fields.push((i, v));
            Ok(())
        });
        assert_eq!(count, Ok(2));
        assert_eq!(fields, [(0, Some(&b"x"[..])), (1, None)]);
        for cut in 1..tuple.len() {
            let read = for_each_binary_field::<BinaryCopyError>(&tuple[..cut], |_, _| Ok(()));
            assert!(read.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn key_text_is_what_the_server_writes_as_text() {
        assert_eq!(key_text(&PgType::Int2, &(-32768i16).to_be_bytes()).unwrap(), "-32768");
        assert_eq!(key_text(&PgType::Int4, &7i32.to_be_bytes()).unwrap(), "7");
        assert_eq!(
            key_text(&PgType::Int8, &i64::MIN.to_be_bytes()).unwrap(),
            "-9223372036854775808"
        );
        let uuid = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
        ];
        assert_eq!(
            key_text(&PgType::Uuid, &uuid).unwrap(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert!(
            key_text(&PgType::Int8, &7i32.to_be_bytes()).is_err(),
            "a wrong size is refused"
        );
        assert!(key_text(&PgType::Uuid, &uuid[..15]).is_err());
        assert!(
            key_text(&PgType::Text, b"abc").is_err(),
            "text keys are read from the server"
        );
        for ty in [PgType::Int2, PgType::Int4, PgType::Int8, PgType::Uuid] {
            assert!(key_text_from_binary(&ty));
        }
        assert!(!key_text_from_binary(&PgType::Text));
    }
}
