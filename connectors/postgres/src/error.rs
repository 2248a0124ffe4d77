//! What can go wrong while decoding replication bytes.

use std::fmt;
use std::str::Utf8Error;

/// Bytes from the server that do not form a valid replication or pgoutput message.
///
/// Every variant names the message and the field being decoded and the byte offset of
/// that field, counted from the first byte (the tag) of the message given to the decoder.
/// A decode error means the stream cannot be trusted from this point on: the replication
/// connection should be dropped and restarted from the last acknowledged LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ends before a field is complete.
    #[error("truncated {message} message: {field} at byte {offset} needs {needed} bytes, {available} left")]
    Truncated {
        message: &'static str,
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A tag byte (message type, tuple marker, column kind, replica identity) that the
    /// protocol does not define at this place.
    #[error("unknown {field} {} in {message} message at byte {offset}", Tag(*.tag))]
    UnknownTag {
        message: &'static str,
        field: &'static str,
        tag: u8,
        offset: usize,
    },
    /// A message that exists in the protocol but only in versions or modes that plexus does
    /// not request (two-phase commit messages of protocol version 3).
    #[error(
        "unsupported {message} message (tag {}): it is only sent with pgoutput protocol version 3 and \
         `two_phase` enabled, which plexus does not request; check the START_REPLICATION options",
        Tag(*.tag)
    )]
    Unsupported { message: &'static str, tag: u8 },
    /// A zero-terminated string without its terminating zero byte.
    #[error("unterminated {field} in {message} message: no zero byte after byte {offset}")]
    UnterminatedString {
        message: &'static str,
        field: &'static str,
        offset: usize,
    },
    /// A name or prefix that is not UTF-8 (a database whose server encoding is not UTF8).
    #[error("{field} in {message} message at byte {offset} is not UTF-8: {source}")]
    InvalidUtf8 {
        message: &'static str,
        field: &'static str,
        offset: usize,
        #[source]
        source: Utf8Error,
    },
    /// A length or count field with a value that cannot be right (negative, or more
    /// elements than the remaining bytes could hold).
    #[error("invalid {field} {value} in {message} message at byte {offset}")]
    InvalidLength {
        message: &'static str,
        field: &'static str,
        offset: usize,
        value: i64,
    },
    /// Bytes left over after a complete message: the message has a layout other than the
    /// one expected (most often a streamed-transaction id that was or was not expected).
    #[error("{count} unexpected bytes after the end of a {message} message at byte {offset}")]
    TrailingBytes {
        message: &'static str,
        offset: usize,
        count: usize,
    },
    /// A Stream Start inside a stream, or a Stream Stop outside one: the decoder's idea of
    /// whether it is inside a streamed block no longer matches the server's.
    #[error("{message} message while {}", if *.in_stream { "already inside a stream" } else { "not inside a stream" })]
    UnexpectedStreamBoundary { message: &'static str, in_stream: bool },
}

/// Shows a tag byte as PostgreSQL's documentation does (`'B'`), or in hex if not printable.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_show_as_characters_or_hex() {
        let error = DecodeError::UnknownTag {
            message: "pgoutput",
            field: "message tag",
            tag: b'Z',
            offset: 0,
        };
        assert_eq!(
            error.to_string(),
            "unknown message tag 'Z' in pgoutput message at byte 0"
        );
        let error = DecodeError::UnknownTag {
            message: "Insert",
            field: "tuple marker",
            tag: 0,
            offset: 5,
        };
        assert_eq!(
            error.to_string(),
            "unknown tuple marker 0x00 in Insert message at byte 5"
        );
    }
}
