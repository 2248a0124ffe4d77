//! Hand-written JSON output into a reused buffer: numbers, escaped strings, decimals and
//! timestamps, without building a value tree per record.

use bytes::BytesMut;

pub(crate) use plexus_connector::json::push_u64;

/// Appends `value` with at least `width` digits, zero-padded.
pub(crate) fn push_u64_padded(buf: &mut BytesMut, value: u64, width: usize) {
    let digits = value.checked_ilog10().map_or(1, |log| log as usize + 1);
    for _ in digits..width {
        buf.extend_from_slice(b"0");
    }
    push_u64(buf, value);
}

/// Appends `text` as a JSON string, quotes included.
pub(crate) fn push_str(buf: &mut BytesMut, text: &str) {
    plexus_connector::json::push_string(buf, text);
}

/// Appends an amount of cents as a quoted decimal string with two places: `"12.50"`.
pub(crate) fn push_cents(buf: &mut BytesMut, cents: u64) {
    buf.extend_from_slice(b"\"");
    push_u64(buf, cents / 100);
    buf.extend_from_slice(b".");
    push_u64_padded(buf, cents % 100, 2);
    buf.extend_from_slice(b"\"");
}

/// Appends milliseconds since the Unix epoch as a quoted ISO-8601 UTC timestamp with
/// milliseconds: `"2026-11-22T13:04:05.123Z"`.
pub(crate) fn push_timestamp(buf: &mut BytesMut, unix_ms: u64) {
    buf.extend_from_slice(b"\"");
    plexus_connector::json::push_utc_millis(buf, unix_ms);
    buf.extend_from_slice(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut BytesMut)) -> String {
        let mut buf = BytesMut::new();
        write(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn numbers_decimals_and_timestamps() {
        assert_eq!(text(|b| push_u64(b, 0)), "0");
        assert_eq!(text(|b| push_u64(b, u64::MAX)), u64::MAX.to_string());
        assert_eq!(text(|b| push_cents(b, 1250)), "\"12.50\"");
        assert_eq!(text(|b| push_cents(b, 7)), "\"0.07\"");
        assert_eq!(text(|b| push_timestamp(b, 0)), "\"1970-01-01T00:00:00.000Z\"");
        // 2026-11-22T13:04:05.123Z
        assert_eq!(
            text(|b| push_timestamp(b, 1_795_352_645_123)),
            "\"2026-11-22T13:04:05.123Z\""
        );
        // A leap day.
        assert_eq!(
            text(|b| push_timestamp(b, 951_782_400_000)),
            "\"2000-02-29T00:00:00.000Z\""
        );
    }

    #[test]
    fn strings_are_escaped() {
        let s = text(|b| push_str(b, "a\"b\\c\nd\u{1}é"));
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&s).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
