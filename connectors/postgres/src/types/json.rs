//! One value in PostgreSQL's text format to its JSON encoding (TYPES.md has the rules).
//!
//! This runs for every column of every change, so it writes straight into the caller's
//! buffer and allocates nothing for scalar values; only errors allocate.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{PgType, array, datetime};

/// A value whose text is not what PostgreSQL writes for its type, with the settings plexus
/// sets on its sessions. It cannot happen with a correct server and those settings; when it
/// does, either a session setting is off (`DateStyle`, `IntervalStyle`, `bytea_output`) or
/// the column's type is not the one the value was read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read `{value}` as {type_name}: {reason}")]
pub struct ValueError {
    type_name: String,
    value: String,
    reason: String,
}

impl ValueError {
    /// The SQL name of the type the value was read as ([`PgType::sql_name`]).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The value as shown in the message: at most 80 characters, invalid UTF-8 replaced and
    /// control characters escaped.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why the value is not one of the type.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    #[cold]
    pub(super) fn new(ty: &PgType, text: &[u8], reason: impl Into<String>) -> ValueError {
        ValueError::with_type_name(ty.sql_name(), text, reason.into())
    }

    #[cold]
    fn with_type_name(type_name: String, text: &[u8], reason: String) -> ValueError {
        const SHOWN_CHARS: usize = 80;
        let lossy = String::from_utf8_lossy(text);
        let mut value = String::new();
        for (index, c) in lossy.chars().enumerate() {
            if index == SHOWN_CHARS {
                let _ = write!(value, "… ({} bytes)", text.len());
                break;
            }
            if c.is_control() {
                value.extend(c.escape_debug());
            } else {
                value.push(c);
            }
        }
        ValueError {
            type_name,
            value,
            reason,
        }
    }
}

/// Appends the JSON encoding of one non-NULL value in PostgreSQL text format to `out`.
///
/// A text that is not a value of the type gives a [`ValueError`] naming the type and
/// showing the value, and leaves `out` as it was.
pub fn write_json(ty: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    restoring(out, |out| write_value(ty, text, out))
}

/// Runs `write` on `out`, and takes back what it appended if it fails.
pub(super) fn restoring(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    let start = out.len();
    let written = write(out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Appends a JSON string literal: `text` in quotes, escaped per RFC 8259. `text` must be
/// UTF-8; otherwise nothing is appended and the error says where the invalid bytes start.
pub fn write_json_string(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    write_string(text, out).map_err(|reason| ValueError::with_type_name("a JSON string".to_owned(), text, reason))
}

/// [`write_json`] without restoring `out` on errors.
fn write_value(ty: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let scalar = match ty {
        PgType::Bool => write_bool(text, out),
        PgType::Int2 | PgType::Int4 | PgType::Int8 => write_integer(text, true, out),
        PgType::Oid => write_integer(text, false, out),
        PgType::Float4 | PgType::Float8 => write_float(text, out),
        PgType::Numeric { .. } => write_numeric(text, out),
        PgType::Bytea => write_bytea(text, out),
        PgType::Uuid => write_uuid(text, out),
        PgType::Date => datetime::write_date(text, out),
        PgType::Time => datetime::write_time(text, out),
        PgType::TimeTz => datetime::write_timetz(text, out),
        PgType::Timestamp => datetime::write_timestamp(text, out),
        PgType::TimestampTz => datetime::write_timestamptz(text, out),
        PgType::Interval => datetime::write_interval(text, out),
        PgType::Text | PgType::Char(_) | PgType::Json | PgType::Jsonb | PgType::Enum(_) | PgType::Other { .. } => {
            return write_string(text, out).map_err(|reason| ValueError::new(ty, text, reason));
        }
        PgType::Array(element) => return array::write_array(ty, element, text, out),
    };
    scalar.map_err(|reason| ValueError::new(ty, text, reason))
}

/// Appends `text` as a JSON string if it is UTF-8.
pub(super) fn write_string(text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    // Printable ASCII without quotes or backslashes (most text) is its own JSON: one
    // pass instead of a UTF-8 check and then the escaping.
    if is_plain_ascii(text) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
        return Ok(());
    }
    let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8 ({e})"))?;
    plexus_connector::json::push_string(out, text);
    Ok(())
}

/// Whether every byte of `text` is printable ASCII other than `"` and `\\`, eight bytes
/// at a time.
fn is_plain_ascii(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero when `word` has a byte below `n` (a zero byte): exact for the word as a
    // whole when no byte has its high bit set, which is checked alongside.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let special = (word & HIGH)
            | below(word, 0x20)
            | zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            | zero_byte(word ^ (ONES * 0x7f));
        if special != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn write_bool(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let json: &[u8] = match text {
        b"t" => b"true",
        b"f" => b"false",
        _ => return Err("expected `t` or `f`"),
    };
    out.extend_from_slice(json);
    Ok(())
}

/// Appends an integer as PostgreSQL writes it (`-42`) as a JSON number.
fn write_integer(text: &[u8], signed: bool, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let digits = match text {
        [b'-', digits @ ..] if signed => digits,
        _ => text,
    };
    let valid = match digits {
        [] => false,
        [b'0'] => true,
        // A leading zero would make invalid JSON, and PostgreSQL never writes one.
        [b'0', ..] => false,
        _ => digits.iter().all(u8::is_ascii_digit),
    };
    if !valid {
        return Err(if signed {
            "not a decimal integer"
        } else {
            "not an unsigned decimal integer"
        });
    }
    out.extend_from_slice(text);
    Ok(())
}

/// Appends a `real` or `double precision` as the JSON number PostgreSQL's digits already
/// are (with `extra_float_digits=3`, the shortest text that reads back exactly), or as the
/// string `"NaN"`, `"Infinity"` or `"-Infinity"`, which JSON has no number for.
fn write_float(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    if matches!(text, b"NaN" | b"Infinity" | b"-Infinity") {
        out.push(b'"');
        out.extend_from_slice(text);
        out.push(b'"');
        return Ok(());
    }
    if !is_json_number(text) {
        return Err("not a floating-point number");
    }
    out.extend_from_slice(text);
    Ok(())
}

/// Appends a `numeric` as a JSON string of exactly PostgreSQL's digits (`"12.50"`), so
/// that no precision is lost in a double; also `"NaN"`, `"Infinity"` and `"-Infinity"`.
fn write_numeric(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let valid = match text {
        b"NaN" | b"Infinity" | b"-Infinity" => true,
        _ => {
            let unsigned = text.strip_prefix(b"-").unwrap_or(text);
            let (whole, fraction) = match unsigned.iter().position(|&b| b == b'.') {
                Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
                None => (unsigned, None),
            };
            let all_digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
            all_digits(whole) && fraction.is_none_or(all_digits)
        }
    };
    if !valid {
        return Err("not a decimal number");
    }
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
    Ok(())
}

/// Appends a `bytea` in hex output format (`\x0aff`) as a base64 string (standard
/// alphabet, padded), decoding the hex a chunk at a time.
fn write_bytea(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    // A multiple of 3 bytes, so that only the last chunk's base64 has padding.
    const CHUNK_BYTES: usize = 3 * 256;
    let hex = text
        .strip_prefix(b"\\x")
        .ok_or("does not start with `\\x` (is bytea_output hex?)")?;
    if hex.len() % 2 != 0 {
        return Err("odd number of hex digits");
    }
    let mut bytes = [0u8; CHUNK_BYTES];
    out.push(b'"');
    for hex_chunk in hex.chunks(2 * CHUNK_BYTES) {
        let len = hex_chunk.len() / 2;
        for (byte, pair) in bytes.iter_mut().zip(hex_chunk.chunks_exact(2)) {
            let (Some(high), Some(low)) = (hex_value(pair[0]), hex_value(pair[1])) else {
                return Err("not a hex digit");
            };
            *byte = (high << 4) | low;
        }
        let at = out.len();
        out.resize(at + len.div_ceil(3) * 4, 0);
        let written = BASE64
            .encode_slice(&bytes[..len], &mut out[at..])
            .map_err(|_| "internal error: base64 output buffer too small")?;
        out.truncate(at + written);
    }
    out.push(b'"');
    Ok(())
}

/// Appends a `uuid` (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`) as a JSON string.
fn write_uuid(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let valid = text.len() == 36
        && text.iter().enumerate().all(|(index, &b)| match index {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !valid {
        return Err("not a UUID in 8-4-4-4-12 hex form");
    }
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
    Ok(())
}

/// Whether `text` is a number in JSON's grammar (RFC 8259 section 6).
fn is_json_number(text: &[u8]) -> bool {
    fn digits(text: &[u8]) -> usize {
        text.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let mut rest = text.strip_prefix(b"-").unwrap_or(text);
    match rest {
        [b'0', after @ ..] => rest = after,
        [b'1'..=b'9', ..] => rest = &rest[digits(rest)..],
        _ => return false,
    }
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let count = digits(after_dot);
        if count == 0 {
            return false;
        }
        rest = &after_dot[count..];
    }
    if let [b'e' | b'E', after @ ..] = rest {
        let after = match after {
            [b'+' | b'-', after @ ..] => after,
            _ => after,
        };
        let count = digits(after);
        if count == 0 {
            return false;
        }
        rest = &after[count..];
    }
    rest.is_empty()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json(ty: &PgType, text: &[u8]) -> Result<String, ValueError> {
        let mut out = b"prefix ".to_vec();
        let written = write_json(ty, text, &mut out);
        let out = String::from_utf8(out).unwrap();
        match written {
            Ok(()) => Ok(out.strip_prefix("prefix ").unwrap().to_owned()),
            Err(e) => {
                assert_eq!(out, "prefix ", "output left after an error");
                Err(e)
            }
        }
    }

    fn ok(ty: &PgType, text: &str) -> String {
        json(ty, text.as_bytes()).unwrap()
    }

    fn reject(ty: &PgType, text: &str) {
        assert!(json(ty, text.as_bytes()).is_err(), "{text:?} accepted as {ty:?}");
    }

    #[test]
    fn integers_are_numbers() {
        assert_eq!(ok(&PgType::Int4, "42"), "42");
        assert_eq!(ok(&PgType::Int8, "-9223372036854775808"), "-9223372036854775808");
        assert_eq!(ok(&PgType::Int2, "0"), "0");
        assert_eq!(ok(&PgType::Oid, "4294967295"), "4294967295");
        for text in ["", "-", "+1", "1.0", "007", "1e3", " 1", "abc"] {
            reject(&PgType::Int4, text);
        }
        reject(&PgType::Oid, "-1");
    }

    #[test]
    fn floats_are_numbers_except_nan_and_infinity() {
        assert_eq!(ok(&PgType::Float8, "1.5e+300"), "1.5e+300");
        assert_eq!(ok(&PgType::Float8, "1e-05"), "1e-05");
        assert_eq!(ok(&PgType::Float8, "-0"), "-0");
        assert_eq!(ok(&PgType::Float4, "0.1"), "0.1");
        assert_eq!(ok(&PgType::Float8, "NaN"), r#""NaN""#);
        assert_eq!(ok(&PgType::Float8, "Infinity"), r#""Infinity""#);
        assert_eq!(ok(&PgType::Float4, "-Infinity"), r#""-Infinity""#);
        for text in ["", "nan", "inf", "1.", ".5", "1e", "1e+", "01", "--1", "1.5e+300x"] {
            reject(&PgType::Float8, text);
        }
    }

    #[test]
    fn numerics_are_strings_of_the_exact_digits() {
        let ty = PgType::Numeric {
            precision: None,
            scale: None,
        };
        assert_eq!(ok(&ty, "12.50"), r#""12.50""#);
        assert_eq!(
            ok(&ty, "-123456789012345678901234567890.123456789"),
            r#""-123456789012345678901234567890.123456789""#
        );
        assert_eq!(ok(&ty, "NaN"), r#""NaN""#);
        assert_eq!(ok(&ty, "-Infinity"), r#""-Infinity""#);
        for text in ["", "1.", ".5", "1e5", "+1", "1.2.3", "-"] {
            reject(&ty, text);
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(ok(&PgType::Bool, "t"), "true");
        assert_eq!(ok(&PgType::Bool, "f"), "false");
        reject(&PgType::Bool, "true");
    }

    #[test]
    fn strings_are_escaped_and_must_be_utf8() {
        assert_eq!(ok(&PgType::Text, "a\"b\\c\n\t\u{1}é"), r#""a\"b\\c\n\t\u0001é""#);
        assert_eq!(ok(&PgType::Text, "ab  "), r#""ab  ""#);
        assert_eq!(ok(&PgType::Enum("mood".to_owned()), "happy"), r#""happy""#);
        assert_eq!(ok(&PgType::Jsonb, r#"{"a": "\"x\""}"#), r#""{\"a\": \"\\\"x\\\"\"}""#);
        let error = json(&PgType::Text, b"ok\xff").unwrap_err();
        assert_eq!(error.type_name(), "text");
        assert!(error.reason().starts_with("not UTF-8"), "{error}");

        let mut out = Vec::new();
        write_json_string(b"x\x7f\"", &mut out).unwrap();
        assert_eq!(out, b"\"x\x7f\\\"\"");
        assert!(write_json_string(b"\xc3", &mut out).is_err());
        assert_eq!(out, b"\"x\x7f\\\"\"");
    }

    #[test]
    fn bytea_is_base64() {
        assert_eq!(ok(&PgType::Bytea, "\\x"), r#""""#);
        assert_eq!(ok(&PgType::Bytea, "\\x0aff"), r#""Cv8=""#);
        assert_eq!(ok(&PgType::Bytea, "\\x000102"), r#""AAEC""#);
        assert_eq!(ok(&PgType::Bytea, "\\x0A"), r#""Cg==""#);
        for text in ["", "0aff", "\\x0", "\\x0g", "\\000"] {
            reject(&PgType::Bytea, text);
        }
    }

    #[test]
    fn long_bytea_is_encoded_across_chunks() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        for len in [767, 768, 769, 1536, 1537, 5000] {
            let mut text = b"\\x".to_vec();
            for byte in &bytes[..len] {
                text.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            let expected = format!("\"{}\"", BASE64.encode(&bytes[..len]));
            assert_eq!(json(&PgType::Bytea, &text).unwrap(), expected, "{len} bytes");
        }
    }

    #[test]
    fn uuids_are_checked() {
        let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(ok(&PgType::Uuid, uuid), format!("\"{uuid}\""));
        reject(&PgType::Uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11");
        reject(&PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g");
    }

    #[test]
    fn errors_name_the_type_and_show_the_value() {
        let error = json(&PgType::Int4, b"abc").unwrap_err();
        assert_eq!(error.to_string(), "cannot read `abc` as integer: not a decimal integer");
        let numeric = PgType::Numeric {
            precision: Some(10),
            scale: Some(2),
        };
        let error = json(&numeric, b"1,5").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read `1,5` as numeric(10,2): not a decimal number"
        );
        let error = json(&PgType::TimestampTz, b"2026-11-22\n13:04").unwrap_err();
        assert_eq!(error.value(), "2026-11-22\\n13:04");
        let long = "x".repeat(200);
        let error = json(&PgType::Bool, long.as_bytes()).unwrap_err();
        assert_eq!(error.value(), format!("{}… (200 bytes)", "x".repeat(80)));
    }

    /// Strings as the general path (a UTF-8 check, then RFC 8259 escaping) writes them,
    /// whether or not they take the shortcut for plain ASCII.
    fn string_oracle(text: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8 ({e})"))?;
        let mut out = Vec::new();
        plexus_connector::json::push_string(&mut out, text);
        Ok(out)
    }

    proptest! {
        #[test]
        fn strings_are_written_as_the_general_path_writes_them(
            text in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(0x1fu8..0x81, 0..40),
                "[ -~]{0,40}".prop_map(String::into_bytes),
                "\\PC{0,20}".prop_map(String::into_bytes),
            ]
        ) {
            let mut out = b"x".to_vec();
            let written = write_string(&text, &mut out).map(|()| out[1..].to_vec());
            prop_assert_eq!(written, string_oracle(&text));
        }

        #[test]
        fn plain_ascii_is_recognised_eight_bytes_at_a_time(
            text in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(0x1eu8..0x81, 0..40),
                "[ -~]{0,40}".prop_map(String::into_bytes),
            ]
        ) {
            let expected = text.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            prop_assert_eq!(is_plain_ascii(&text), expected);
        }
    }
}
