//! Rows of `COPY ... TO STDOUT` in text format (the initial snapshot) split into fields.
//!
//! Each row is one line ending in `\n`; fields are separated by tabs; `\N` alone is NULL;
//! a backslash escapes the byte after it: `\b \f \n \r \t \v` are the control characters,
//! `\` and one to three octal digits or `x` and one or two hex digits give a byte, and any
//! other escaped byte stands for itself (PostgreSQL writes `\\` and escapes the control
//! characters it must). Raw newlines and carriage returns therefore never occur inside a
//! row. The field values are the types' text format, for [`super::write_json`].
//!
//! ```
//! use std::borrow::Cow;
//! use plexus_connector_postgres::types::copy::{for_each_field, split_lines};
//!
//! let chunk = b"1\tA\\tB\t\\N\n2\tx\t";
//! let (lines, consumed) = split_lines(chunk);
//! assert_eq!(consumed, 10); // the caller keeps "2\tx\t" for the next chunk
//! for line in lines {
//!     let mut fields = Vec::new();
//!     let count = for_each_field(line, |_, value| {
//!         fields.push(value);
//!         Ok(())
//!     })?;
//!     assert_eq!(count, 3);
//!     assert_eq!(fields, [Some(Cow::Borrowed(&b"1"[..])), Some(Cow::Owned(b"A\tB".to_vec())), None]);
//! }
//! # Ok::<(), plexus_connector_postgres::types::copy::CopyError>(())
//! ```

use std::borrow::Cow;

use super::ValueError;

/// A row of COPY text that cannot be read, or a field value that the caller could not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A backslash with nothing after it at the end of a row, which PostgreSQL does not
    /// write (it would write `\\`): the data is not COPY text format, or was cut.
    #[error("COPY row ends in a lone backslash in field {} (counting from 1): the row is not COPY text format or was cut", .field + 1)]
    TrailingBackslash {
        /// The field's index, from 0.
        field: usize,
    },
    /// A row with another number of fields than the table has columns.
    #[error("COPY row has {found} fields but the table has {expected} columns")]
    FieldCount { expected: usize, found: usize },
    /// A field whose value is not one of its column's type.
    #[error("COPY field {} (counting from 1): {source}", .field + 1)]
    Value {
        /// The field's index, from 0.
        field: usize,
        #[source]
        source: ValueError,
    },
}

/// Splits one line of COPY text format (no trailing newline) into fields and calls `field`
/// with each one's index (from 0) and value, in order: `None` for NULL (`\N`), the bytes
/// otherwise, borrowed from `line` when the field has no backslash and unescaped into an
/// owned buffer when it has. Returns the number of fields; stops at the first error, from
/// the line or from `field`.
///
/// An empty line is one empty field.
pub fn for_each_field<'a>(
    line: &'a [u8],
    mut field: impl FnMut(usize, Option<Cow<'a, [u8]>>) -> Result<(), CopyError>,
) -> Result<usize, CopyError> {
    let mut index = 0;
    let mut start = 0;
    loop {
        let (value, next) = read_field(line, start, index)?;
        field(index, value)?;
        index += 1;
        match next {
            Some(next) => start = next,
            None => return Ok(index),
        }
    }
}

/// The complete lines at the start of a chunk of COPY data that may end in the middle of
/// a line, and the number of bytes they take with their newlines. The caller keeps the
/// bytes after those, an incomplete line, and puts them before the next chunk.
pub fn split_lines(chunk: &[u8]) -> (CopyLines<'_>, usize) {
    let consumed = memchr::memrchr(b'\n', chunk).map_or(0, |last| last + 1);
    let lines = CopyLines {
        rest: &chunk[..consumed],
    };
    (lines, consumed)
}

/// The complete lines of a chunk, without their newlines (from [`split_lines`]).
#[derive(Debug, Clone)]
pub struct CopyLines<'a> {
    /// Complete lines, each ending in `\n`.
    rest: &'a [u8],
}

impl<'a> Iterator for CopyLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = memchr::memchr(b'\n', self.rest)?;
        let line = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(line)
    }
}

/// A field's value: `None` for NULL.
type FieldValue<'a> = Option<Cow<'a, [u8]>>;

/// The value of the field starting at `start`, and where the next field starts (`None`
/// after the last field).
fn read_field(line: &[u8], start: usize, index: usize) -> Result<(FieldValue<'_>, Option<usize>), CopyError> {
    let rest = &line[start..];
    let Some(offset) = memchr::memchr2(b'\t', b'\\', rest) else {
        return Ok((Some(Cow::Borrowed(rest)), None));
    };
    if rest[offset] == b'\t' {
        return Ok((Some(Cow::Borrowed(&rest[..offset])), Some(start + offset + 1)));
    }
    // PostgreSQL compares the raw field with the NULL marker before unescaping.
    if offset == 0 && rest.starts_with(b"\\N") && matches!(rest.get(2), None | Some(b'\t')) {
        let next = (rest.len() > 2).then_some(start + 3);
        return Ok((None, next));
    }
    let mut value = rest[..offset].to_vec();
    let mut at = offset;
    while let Some(&b) = rest.get(at) {
        at += 1;
        match b {
            b'\t' => return Ok((Some(Cow::Owned(value)), Some(start + at))),
            b'\\' => {
                let Some(&escaped) = rest.get(at) else {
                    return Err(CopyError::TrailingBackslash { field: index });
                };
                at += 1;
                let byte = match escaped {
                    b'0'..=b'7' => {
                        let mut byte = u32::from(escaped - b'0');
                        for _ in 0..2 {
                            match rest.get(at) {
                                Some(&digit @ b'0'..=b'7') => {
                                    byte = byte * 8 + u32::from(digit - b'0');
                                    at += 1;
                                }
                                _ => break,
                            }
                        }
                        // `\777` is 511: PostgreSQL keeps the low byte.
                        (byte & 0xff) as u8
                    }
                    b'x' => match rest.get(at).copied().and_then(hex_value) {
                        Some(high) => {
                            at += 1;
                            match rest.get(at).copied().and_then(hex_value) {
                                Some(low) => {
                                    at += 1;
                                    high * 16 + low
                                }
                                None => high,
                            }
                        }
                        // `\x` without a hex digit is an `x`.
                        None => b'x',
                    },
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    other => other,
                };
                value.push(byte);
            }
            _ => value.push(b),
        }
    }
    Ok((Some(Cow::Owned(value)), None))
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

    fn fields(line: &[u8]) -> Result<Vec<Option<Vec<u8>>>, CopyError> {
        let mut fields = Vec::new();
        let count = for_each_field(line, |index, value| {
            assert_eq!(index, fields.len());
            fields.push(value.map(Cow::into_owned));
            Ok(())
        })?;
        assert_eq!(count, fields.len());
        Ok(fields)
    }

    fn some(value: &[u8]) -> Option<Vec<u8>> {
        Some(value.to_vec())
    }

    #[test]
    fn fields_are_split_on_tabs() {
        assert_eq!(fields(b"1\tabc\t").unwrap(), [some(b"1"), some(b"abc"), some(b"")]);
        assert_eq!(fields(b"").unwrap(), [some(b"")]);
        assert_eq!(fields(b"\\N\t\\N").unwrap(), [None, None]);
        assert_eq!(fields(b"\\N").unwrap(), [None]);
        assert_eq!(fields(b"\\Nx\t\\\\N").unwrap(), [some(b"Nx"), some(b"\\N")]);
    }

    #[test]
    fn unescaped_fields_are_borrowed() {
        let mut kinds = Vec::new();
        for_each_field(b"plain\ta\\tb\t\\N", |_, value| {
            kinds.push(match value {
                Some(Cow::Borrowed(_)) => "borrowed",
                Some(Cow::Owned(_)) => "owned",
                None => "null",
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(kinds, ["borrowed", "owned", "null"]);
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            fields(b"\\b\\f\\n\\r\\t\\v\\\\").unwrap(),
            [some(b"\x08\x0c\n\r\t\x0b\\")]
        );
        assert_eq!(fields(b"\\0\\101\\1012\\777").unwrap(), [some(b"\0AA2\xff")]);
        assert_eq!(fields(b"\\x41\\x4\\xg\\x").unwrap(), [some(b"A\x04xgx")]);
        assert_eq!(fields(b"\\a\\.\\\t").unwrap(), [some(b"a.\t")]);
        assert_eq!(fields(b"a\\tb\tc").unwrap(), [some(b"a\tb"), some(b"c")]);
    }

    #[test]
    fn a_lone_backslash_at_the_end_is_an_error() {
        let error = fields(b"a\tb\\").unwrap_err();
        assert!(matches!(error, CopyError::TrailingBackslash { field: 1 }), "{error:?}");
        assert!(error.to_string().contains("field 2"), "{error}");
    }

    #[test]
    fn errors_from_the_callback_stop_the_row() {
        let mut seen = 0;
        let error = for_each_field(b"a\tb\tc", |index, _| {
            seen += 1;
            if index == 1 {
                Err(CopyError::FieldCount { expected: 1, found: 3 })
            } else {
                Ok(())
            }
        });
        assert!(matches!(error, Err(CopyError::FieldCount { .. })));
        assert_eq!(seen, 2);
    }

    #[test]
    fn chunks_split_into_complete_lines() {
        let (lines, consumed) = split_lines(b"a\tb\n\nc\td\ne");
        assert_eq!(lines.collect::<Vec<_>>(), [&b"a\tb"[..], b"", b"c\td"]);
        assert_eq!(consumed, 9);
        let (mut lines, consumed) = split_lines(b"no newline yet");
        assert_eq!((lines.next(), consumed), (None, 0));
        let (lines, consumed) = split_lines(b"");
        assert_eq!((lines.count(), consumed), (0, 0));
    }

    /// A field as `CopyAttributeOutText` writes it: the control characters it must escape
    /// as letters, backslash and the delimiter escaped, everything else raw.
    fn escape_like_postgres(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in value {
            match b {
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x0b => out.extend_from_slice(b"\\v"),
                b'\\' => out.extend_from_slice(b"\\\\"),
                _ => out.push(b),
            }
        }
        out
    }

    /// A field with every byte escaped in one of the other ways the format allows. Each
    /// escape is followed by the next one's backslash, so short forms cannot run on.
    fn escape_every_byte(value: &[u8], styles: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, &b) in value.iter().enumerate() {
            let escaped = match styles[index % styles.len()] % 4 {
                0 => format!("\\{b:o}"),
                1 => format!("\\{b:03o}"),
                2 => format!("\\x{b:x}"),
                _ => format!("\\x{b:02X}"),
            };
            out.extend_from_slice(escaped.as_bytes());
        }
        out
    }

    fn any_row() -> impl Strategy<Value = Vec<Option<Vec<u8>>>> {
        let value = prop_oneof![
            1 => Just(None),
            1 => Just(Some(b"\\N".to_vec())),
            8 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Some),
        ];
        prop::collection::vec(value, 1..6)
    }

    proptest! {
        #[test]
        fn rows_escaped_like_postgres_read_back(row in any_row()) {
            let mut line = Vec::new();
            for (index, value) in row.iter().enumerate() {
                if index > 0 {
                    line.push(b'\t');
                }
                match value {
                    None => line.extend_from_slice(b"\\N"),
                    Some(value) => line.extend(escape_like_postgres(value)),
                }
            }
            prop_assert!(!line.contains(&b'\n'));
            prop_assert_eq!(fields(&line).unwrap(), row);
        }

        #[test]
        fn octal_and_hex_escapes_read_back(
            value in prop::collection::vec(any::<u8>(), 1..12),
            styles in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            let line = escape_every_byte(&value, &styles);
            prop_assert_eq!(fields(&line).unwrap(), vec![Some(value)]);
        }

        #[test]
        fn chunks_cut_anywhere_give_the_same_lines(
            lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("newline", |b| *b != b'\n'), 0..8), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut data = Vec::new();
            for line in &lines {
                data.extend_from_slice(line);
                data.push(b'\n');
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(data.len());
            let mut seen = Vec::new();
            let mut pending = Vec::new();
            let mut from = 0;
            for cut in cuts {
                pending.extend_from_slice(&data[from..cut]);
                from = cut;
                let (chunk_lines, consumed) = split_lines(&pending);
                seen.extend(chunk_lines.map(<[u8]>::to_vec));
                pending.drain(..consumed);
            }
            prop_assert!(pending.is_empty());
            prop_assert_eq!(seen, lines);
        }
    }
}
