//! The backend side of the wire protocol, without I/O: splitting the read buffer into
//! messages (tag, length, body) and reading the bodies this client needs.
//!
//! postgres-protocol's own backend parser does not know CopyBothResponse (`W`), which
//! replication needs, so frames are split here; messages to the server are written with
//! `postgres_protocol::message::frontend`.

use bytes::{Buf, Bytes, BytesMut};

use super::ClientError;

/// The largest message accepted: PostgreSQL itself sends nothing bigger than 1 GiB
/// (`MaxAllocSize`), so a larger length means the stream is out of step.
pub(crate) const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Tag and length.
const HEADER_LEN: usize = 5;

/// One message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub tag: u8,
    /// The bytes after the length, sharing the read buffer's allocation.
    pub body: Bytes,
}

/// Takes the first complete message off `buf`; leaves `buf` as it is when the message is
/// not complete yet (so that reading more and calling again continues where it left off).
pub(crate) fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ClientError> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let tag = buf[0];
    let mut frame = buf.split_to(total);
    frame.advance(HEADER_LEN);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

/// How many more bytes the first message in `buf` needs to be complete (at least the
/// header when it is not there yet); 0 when it is complete.
pub(crate) fn bytes_missing(buf: &[u8]) -> Result<usize, ClientError> {
    Ok(match frame_len(buf)? {
        Some(total) => total.saturating_sub(buf.len()),
        None => HEADER_LEN - buf.len(),
    })
}

/// The whole length (tag included) of the first message, once its header is there.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, ClientError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(ClientError::protocol(format!(
            "message {} has length {len}, outside 4 to {MAX_MESSAGE_LEN}",
            describe_tag(header[0])
        )));
    }
    Ok(Some(len + 1))
}

/// `'Z' (ReadyForQuery)` style names for error messages.
pub(crate) fn describe_tag(tag: u8) -> String {
    let name = match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'C' => "CommandComplete",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'D' => "DataRow",
        b'I' => "EmptyQueryResponse",
        b'E' => "ErrorResponse",
        b'v' => "NegotiateProtocolVersion",
        b'N' => "NoticeResponse",
        b'A' => "NotificationResponse",
        b'S' => "ParameterStatus",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        _ => "unknown",
    };
    if tag.is_ascii_graphic() {
        format!("'{}' ({name})", char::from(tag))
    } else {
        format!("0x{tag:02x} ({name})")
    }
}

/// An authentication request (`'R'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthRequest {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// The SASL mechanisms the server offers.
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// A method this client does not implement, by name.
    Unsupported(&'static str),
}

pub(crate) fn parse_auth_request(body: Bytes) -> Result<AuthRequest, ClientError> {
    let mut reader = BodyReader::new(body, "Authentication");
    let request = match reader.i32("method")? {
        0 => AuthRequest::Ok,
        2 => AuthRequest::Unsupported("Kerberos V5"),
        3 => AuthRequest::CleartextPassword,
        5 => {
            let salt = reader.take(4, "salt")?;
            AuthRequest::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        6 => AuthRequest::Unsupported("SCM credentials"),
        7 | 8 => AuthRequest::Unsupported("GSSAPI"),
        9 => AuthRequest::Unsupported("SSPI"),
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = reader.cstr("SASL mechanism")?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            AuthRequest::Sasl(mechanisms)
        }
        11 => AuthRequest::SaslContinue(reader.rest()),
        12 => AuthRequest::SaslFinal(reader.rest()),
        other => {
            return Err(ClientError::protocol(format!("unknown authentication request {other}")));
        }
    };
    reader.finish()?;
    Ok(request)
}

/// The fields of an ErrorResponse or NoticeResponse, as a [`ClientError::Server`].
pub(crate) fn parse_error_response(body: Bytes) -> Result<ClientError, ClientError> {
    let mut reader = BodyReader::new(body, "ErrorResponse");
    let mut localized_severity = None;
    let mut severity = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    loop {
        let field = reader.u8("field type")?;
        if field == 0 {
            break;
        }
        let value = reader.cstr("field value")?;
        match field {
            b'S' => localized_severity = Some(value),
            b'V' => severity = Some(value),
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            // Context (PL call stack), position, internal query, schema/table/column/
            // constraint names and the server's source location: not needed to report or
            // classify errors of replication commands, and each would make every
            // `Result` of this client bigger.
            _ => {}
        }
    }
    reader.finish()?;
    Ok(ClientError::Server {
        severity: severity.or(localized_severity).unwrap_or_else(|| "ERROR".to_owned()),
        // XX000 is internal_error: what PostgreSQL itself reports when no code is set.
        code: code.unwrap_or_else(|| "XX000".to_owned()),
        message: message.unwrap_or_default(),
        detail,
        hint,
    })
}

/// A DataRow's values as text (`None` for NULL).
pub(crate) fn parse_data_row(body: Bytes) -> Result<Vec<Option<String>>, ClientError> {
    let mut reader = BodyReader::new(body, "DataRow");
    let count = reader.i16("column count")?;
    let mut row = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        let len = reader.i32("value length")?;
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = reader.take(len as usize, "value")?;
        let text = String::from_utf8(value.to_vec())
            .map_err(|_| ClientError::protocol("a DataRow value is not UTF-8 although client_encoding is UTF8"))?;
        row.push(Some(text));
    }
    reader.finish()?;
    Ok(row)
}

/// A ParameterStatus: name and value.
pub(crate) fn parse_parameter_status(body: Bytes) -> Result<(String, String), ClientError> {
    let mut reader = BodyReader::new(body, "ParameterStatus");
    let name = reader.cstr("name")?;
    let value = reader.cstr("value")?;
    reader.finish()?;
    Ok((name, value))
}

/// A BackendKeyData: the backend's process id and the secret key to cancel its queries.
pub(crate) fn parse_backend_key_data(body: Bytes) -> Result<(i32, i32), ClientError> {
    let mut reader = BodyReader::new(body, "BackendKeyData");
    let pid = reader.i32("process id")?;
    let key = reader.i32("secret key")?;
    reader.finish()?;
    Ok((pid, key))
}

/// `server_version` as `server_version_num` does it: `15.18` → 150018, `9.6.24` →
/// 90624, `16beta1` → 160000, `15.18 (Debian 15.18-1)` → 150018; 0 when unreadable.
pub(crate) fn server_version_num(version: &str) -> u32 {
    let numeric_end = version
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(version.len());
    let mut parts = version[..numeric_end]
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let mut next = || parts.next().unwrap_or(0);
    let (major, minor) = (next(), next());
    // Before 10 the second number was part of the major version (9.6) and the third the minor.
    if major >= 10 {
        major.saturating_mul(10_000).saturating_add(minor)
    } else {
        (major * 10_000)
            .saturating_add(minor.saturating_mul(100))
            .saturating_add(next())
    }
}

/// Reads the fields of one message body, naming the message and field when it is short.
struct BodyReader {
    body: Bytes,
    message: &'static str,
}

impl BodyReader {
    fn new(body: Bytes, message: &'static str) -> BodyReader {
        BodyReader { body, message }
    }

    fn truncated(&self, field: &str) -> ClientError {
        ClientError::protocol(format!("{} message ends inside its {field}", self.message))
    }

    fn take(&mut self, len: usize, field: &str) -> Result<Bytes, ClientError> {
        if self.body.len() < len {
            return Err(self.truncated(field));
        }
        Ok(self.body.split_to(len))
    }

    fn u8(&mut self, field: &str) -> Result<u8, ClientError> {
        Ok(self.take(1, field)?[0])
    }

    fn i16(&mut self, field: &str) -> Result<i16, ClientError> {
        let bytes = self.take(2, field)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self, field: &str) -> Result<i32, ClientError> {
        let bytes = self.take(4, field)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A NUL-terminated string (the server's encoding is UTF8 with our client_encoding;
    /// anything else is replaced rather than refused, as these are names and messages).
    fn cstr(&mut self, field: &str) -> Result<String, ClientError> {
        let end = self
            .body
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(field))?;
        let text = String::from_utf8_lossy(&self.body[..end]).into_owned();
        self.body.advance(end + 1);
        Ok(text)
    }

    fn rest(&mut self) -> Bytes {
        self.body.split_off(0)
    }

    fn finish(self) -> Result<(), ClientError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(ClientError::protocol(format!(
                "{} message has {} bytes after its last field",
                self.message,
                self.body.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn split_waits_for_a_complete_message() {
        let bytes = frame(b'd', b"hello");
        let mut buf = BytesMut::new();
        for (i, byte) in bytes.iter().enumerate() {
            assert_eq!(split_frame(&mut buf).unwrap(), None);
            // Until the header is complete, only the header is known to be missing.
            let expected = if i < HEADER_LEN {
                HEADER_LEN - i
            } else {
                bytes.len() - i
            };
            assert_eq!(bytes_missing(&buf).unwrap(), expected);
            buf.put_u8(*byte);
        }
        assert_eq!(bytes_missing(&buf).unwrap(), 0);
        let frame = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!((frame.tag, &frame.body[..]), (b'd', &b"hello"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn absurd_lengths_are_refused() {
        let mut short = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        let error = split_frame(&mut short).unwrap_err().to_string();
        assert!(error.contains("'d' (CopyData) has length 3"), "{error}");
        let mut huge = BytesMut::from(&[b'D', 0x40, 0, 0, 1][..]);
        assert!(matches!(split_frame(&mut huge), Err(ClientError::Protocol(_))));
        assert!(bytes_missing(&huge).is_err());
    }

    #[test]
    fn error_response_keeps_its_fields() {
        let body = b"SERROR\0VERROR\0C42704\0Mreplication slot \"x\" does not exist\0Hcreate it\0Fslot.c\0\0";
        let error = parse_error_response(Bytes::from_static(body)).unwrap();
        assert_eq!(error.sqlstate(), Some("42704"));
        assert_eq!(
            error.to_string(),
            "ERROR 42704: replication slot \"x\" does not exist (hint: create it)"
        );
        assert!(parse_error_response(Bytes::from_static(b"SERROR")).is_err());
    }

    #[test]
    fn data_row_with_null() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&2_i32.to_be_bytes());
        body.extend_from_slice(b"ab");
        body.extend_from_slice(&(-1_i32).to_be_bytes());
        let row = parse_data_row(Bytes::from(body.clone())).unwrap();
        assert_eq!(row, vec![Some("ab".to_owned()), None]);
        body.truncate(5);
        assert!(parse_data_row(Bytes::from(body)).is_err());
    }

    #[test]
    fn auth_requests() {
        let sasl = b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        assert_eq!(
            parse_auth_request(Bytes::from_static(sasl)).unwrap(),
            AuthRequest::Sasl(vec!["SCRAM-SHA-256-PLUS".to_owned(), "SCRAM-SHA-256".to_owned()])
        );
        assert_eq!(
            parse_auth_request(Bytes::from_static(b"\0\0\0\x05abcd")).unwrap(),
            AuthRequest::Md5Password { salt: *b"abcd" }
        );
        assert_eq!(
            parse_auth_request(Bytes::from_static(b"\0\0\0\x07")).unwrap(),
            AuthRequest::Unsupported("GSSAPI")
        );
        assert!(parse_auth_request(Bytes::from_static(b"\0\0\0\x05ab")).is_err());
    }

    #[test]
    fn server_versions() {
        assert_eq!(server_version_num("15.18"), 150_018);
        assert_eq!(server_version_num("15.18 (Debian 15.18-1.pgdg120+1)"), 150_018);
        assert_eq!(server_version_num("16beta1"), 160_000);
        assert_eq!(server_version_num("9.6.24"), 90_624);
        assert_eq!(server_version_num("17devel"), 170_000);
        assert_eq!(server_version_num("nonsense"), 0);
    }

    proptest! {
        /// Messages split back out whatever the chunks the bytes arrive in.
        #[test]
        fn frames_survive_any_chunking(
            messages in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
            chunk in 1_usize..64,
        ) {
            let wire: Vec<u8> = messages.iter().flat_map(|(tag, body)| frame(*tag, body)).collect();
            let mut buf = BytesMut::new();
            let mut seen = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = split_frame(&mut buf).unwrap() {
                    seen.push((frame.tag, frame.body.to_vec()));
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(seen, messages);
        }
    }
}
