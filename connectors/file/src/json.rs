//! JSON helpers: escaping strings by hand, validating values.

/// Appends `text` as a JSON string, quotes included (RFC 8259 section 7).
pub(crate) fn push_str(out: &mut Vec<u8>, text: &str) {
    plexus_connector::json::push_string(out, text);
}

/// Checks that `bytes` hold exactly one JSON value (surrounding whitespace allowed);
/// the error says what is wrong and at which column.
pub(crate) fn validate(bytes: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "invalid JSON at column {}: {}",
                e.column(),
                strip_position(&e.to_string())
            )
        })
}

/// serde_json's message without its " at line 1 column 7" suffix (the caller says
/// where).
fn strip_position(message: &str) -> &str {
    message.find(" at line ").map_or(message, |at| &message[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_values_validated() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out.clone()).unwrap(), r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), "a\"b\\c\nd\u{1}é");

        assert_eq!(validate(br#" {"a": [1, 2.5, null]} "#), Ok(()));
        assert_eq!(
            validate(b"{\"a\" 1}"),
            Err("invalid JSON at column 6: expected `:`".to_owned())
        );
        assert!(validate(b"{} {}").is_err());
        assert!(validate(b"").is_err());
    }
}
