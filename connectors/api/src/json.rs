//! Writing JSON by hand, for connectors that produce records on a hot path without a
//! per-record value tree.

use bytes::BufMut;

/// Appends `text` escaped for the inside of a JSON string (RFC 8259 section 7): quotes,
/// backslashes and control characters; everything else is copied as UTF-8.
pub fn push_escaped(out: &mut impl BufMut, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            out.put_slice(escape);
        }
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
}

/// Appends `text` as a JSON string, quotes included.
pub fn push_string(out: &mut impl BufMut, text: &str) {
    out.put_u8(b'"');
    push_escaped(out, text);
    out.put_u8(b'"');
}

/// Appends `value` in decimal, as JSON writes a number.
pub fn push_u64(out: &mut impl BufMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// Appends `value` in decimal, with its sign.
pub fn push_i64(out: &mut impl BufMut, value: i64) {
    if value < 0 {
        out.put_u8(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

/// Appends milliseconds since the Unix epoch as an ISO-8601 / RFC 3339 UTC time with
/// milliseconds, without quotes: `2026-11-22T13:04:05.123Z`.
pub fn push_utc_millis(out: &mut impl BufMut, unix_ms: u64) {
    let (year, month, day) = civil_from_days(unix_ms / 86_400_000);
    let ms_of_day = unix_ms % 86_400_000;
    push_padded(out, year, 4);
    out.put_u8(b'-');
    push_padded(out, month, 2);
    out.put_u8(b'-');
    push_padded(out, day, 2);
    out.put_u8(b'T');
    push_padded(out, ms_of_day / 3_600_000, 2);
    out.put_u8(b':');
    push_padded(out, ms_of_day / 60_000 % 60, 2);
    out.put_u8(b':');
    push_padded(out, ms_of_day / 1000 % 60, 2);
    out.put_u8(b'.');
    push_padded(out, ms_of_day % 1000, 3);
    out.put_u8(b'Z');
}

/// Appends `value` in decimal with at least `width` digits, zero-padded.
fn push_padded(out: &mut impl BufMut, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in digits.len() - at..width {
        out.put_u8(b'0');
    }
    out.put_slice(&digits[at..]);
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_decimal() {
        let mut out = Vec::new();
        for (value, text) in [
            (0i64, "0"),
            (7, "7"),
            (-42, "-42"),
            (i64::MIN, "-9223372036854775808"),
            (i64::MAX, "9223372036854775807"),
        ] {
            out.clear();
            push_i64(&mut out, value);
            assert_eq!(std::str::from_utf8(&out).unwrap(), text);
        }
        out.clear();
        push_u64(&mut out, u64::MAX);
        assert_eq!(std::str::from_utf8(&out).unwrap(), "18446744073709551615");
    }

    #[test]
    fn utc_times_have_milliseconds() {
        let text = |ms| {
            let mut out = Vec::new();
            push_utc_millis(&mut out, ms);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(1_795_352_645_123), "2026-11-22T13:04:05.123Z");
        assert_eq!(text(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut out = Vec::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é\t");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é\t""#);
    }
}
