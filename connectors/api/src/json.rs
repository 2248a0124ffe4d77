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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut out = Vec::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é\t");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é\t""#);
    }
}
