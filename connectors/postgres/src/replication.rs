//! The messages of PostgreSQL's streaming replication protocol that travel inside
//! CopyData after `START_REPLICATION ... LOGICAL` (PostgreSQL documentation, "Streaming
//! Replication Protocol"): the server sends WAL data ([`XLogData`]) and keepalives
//! ([`PrimaryKeepalive`]); the client answers with [`StandbyStatusUpdate`]s that tell the
//! server how far the slot may advance.
//!
//! Only the CopyData payloads are handled here; the CopyData framing itself (`'d'`, length)
//! belongs to the connection.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reader::MessageReader;

/// A position in the write-ahead log (PostgreSQL's `pg_lsn`, `XLogRecPtr`).
///
/// Shown and parsed in PostgreSQL's form, two hexadecimal halves of 32 bits each:
/// `0/16B3748`, as `pg_current_wal_lsn()` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position (`0/0`), used by the server for "not known" or "not set".
    pub const INVALID: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Parses `X/X` where each half is 1 to 8 hexadecimal digits of either case, like
    /// PostgreSQL's `pg_lsn` input (which also accepts the zero-padded `0/016B3748`).
    fn from_str(text: &str) -> Result<Lsn, ParseLsnError> {
        let error = || ParseLsnError(text.to_owned());
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |digits: &str| {
            let valid = (1..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
            if valid {
                u32::from_str_radix(digits, 16).ok()
            } else {
                None
            }
        };
        let high = half(high).ok_or_else(error)?;
        let low = half(low).ok_or_else(error)?;
        Ok(Lsn(u64::from(high) << 32 | u64::from(low)))
    }
}

/// Text that is not an LSN in PostgreSQL's `X/X` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a PostgreSQL LSN: expected two hexadecimal numbers of at most 8 digits, like `0/16B3748`")]
pub struct ParseLsnError(String);

/// A PostgreSQL `TimestampTz` on the wire: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Milliseconds between the Unix epoch and PostgreSQL's (2000-01-01).
    const EPOCH_OFFSET_MILLIS: i64 = 946_684_800_000;

    /// Converts to milliseconds since the Unix epoch, rounding down (toward the past).
    pub fn to_unix_millis(self) -> i64 {
        // Cannot overflow: |i64::MIN / 1000| leaves room for the offset.
        self.0.div_euclid(1000) + Self::EPOCH_OFFSET_MILLIS
    }

    /// Converts from milliseconds since the Unix epoch, saturating at the ends of `i64`
    /// (which PostgreSQL reads as `-infinity` and `infinity`).
    pub fn from_unix_millis(millis: i64) -> PgTimestamp {
        PgTimestamp(millis.saturating_sub(Self::EPOCH_OFFSET_MILLIS).saturating_mul(1000))
    }
}

/// A message from the server inside CopyData during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `'w'`: a piece of the logical decoding output (one pgoutput message).
    XLogData(XLogData),
    /// `'k'`: the server's WAL end and whether it wants a status update now.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// `'w'`: WAL data; for logical replication, exactly one output-plugin message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// For logical replication, the LSN of the record that produced the message; `0/0`
    /// for messages that have none (PostgreSQL 15 sends `0/0` with Begin, Type and
    /// Relation). Not a position to acknowledge: that is a Commit's `end_lsn`.
    pub wal_start: Lsn,
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: PgTimestamp,
    /// The output plugin's message, sharing the buffer given to [`ReplicationMessage::decode`].
    pub data: Bytes,
}

/// `'k'`: a keepalive from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// The server's clock when it sent the message.
    pub send_time: PgTimestamp,
    /// The server disconnects the client unless it sends a [`StandbyStatusUpdate`] soon
    /// (within `wal_sender_timeout`).
    pub reply_requested: bool,
}

impl ReplicationMessage {
    /// Decodes the payload of one CopyData message received after `START_REPLICATION`.
    pub fn decode(payload: Bytes) -> Result<ReplicationMessage, DecodeError> {
        let mut reader = MessageReader::new(payload, "replication");
        let offset = reader.offset();
        let message = match reader.u8("message tag")? {
            b'w' => {
                reader.set_message("XLogData");
                ReplicationMessage::XLogData(XLogData {
                    wal_start: Lsn(reader.u64("WAL start")?),
                    wal_end: Lsn(reader.u64("WAL end")?),
                    send_time: PgTimestamp(reader.i64("send time")?),
                    data: reader.rest(),
                })
            }
            b'k' => {
                reader.set_message("PrimaryKeepalive");
                ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn(reader.u64("WAL end")?),
                    send_time: PgTimestamp(reader.i64("send time")?),
                    reply_requested: reader.u8("reply requested")? != 0,
                })
            }
            tag => return Err(reader.unknown_tag("message tag", tag, offset)),
        };
        reader.finish()?;
        Ok(message)
    }
}

/// `'r'`: the client's progress, sent in CopyData to the server.
///
/// The server may recycle WAL and advance the slot's `confirmed_flush_lsn` up to
/// `flushed`: it must only cover changes that are durable on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// The last WAL byte + 1 received and written.
    pub written: Lsn,
    /// The last WAL byte + 1 durably stored.
    pub flushed: Lsn,
    /// The last WAL byte + 1 applied.
    pub applied: Lsn,
    /// The client's clock when it sends the message.
    pub client_time: PgTimestamp,
    /// Asks the server to answer at once with a keepalive (a ping).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// The length of the encoded message: a tag, four 8-byte fields and a flag.
    pub const ENCODED_LEN: usize = 1 + 8 * 4 + 1;

    /// Appends the CopyData payload (without the CopyData framing) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(Self::ENCODED_LEN);
        out.put_u8(b'r');
        out.put_u64(self.written.0);
        out.put_u64(self.flushed.0);
        out.put_u64(self.applied.0);
        out.put_i64(self.client_time.0);
        out.put_u8(u8::from(self.reply_requested));
    }

    /// The CopyData payload as its own buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(Self::ENCODED_LEN);
        self.encode(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lsn_formats_like_postgres() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(0x16B3748).to_string(), "0/16B3748");
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn lsn_parses_postgres_forms() {
        assert_eq!("0/0".parse(), Ok(Lsn(0)));
        assert_eq!("0/16B3748".parse(), Ok(Lsn(0x16B3748)));
        assert_eq!("16/B374D848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("16/b374d848".parse(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!("0/016B3748".parse(), Ok(Lsn(0x16B3748)));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse(), Ok(Lsn(u64::MAX)));
    }

    #[test]
    fn lsn_rejects_malformed_text() {
        for text in [
            "",
            "/",
            "0",
            "x/1",
            "1/",
            "/1",
            "1/123456789",
            "123456789/1",
            "1/2/3",
            "+1/2",
            "1/-2",
            " 1/2",
            "1/2 ",
            "0x1/2",
            "1/g",
        ] {
            let error = text.parse::<Lsn>().unwrap_err();
            assert!(error.to_string().contains("is not a PostgreSQL LSN"), "{text}: {error}");
        }
    }

    #[test]
    fn timestamps_convert_to_and_from_unix_millis() {
        assert_eq!(PgTimestamp(0).to_unix_millis(), 946_684_800_000);
        // 2024-01-02 03:04:05.678901 UTC, as PostgreSQL stores it.
        let pg = PgTimestamp(757_479_845_678_901);
        assert_eq!(pg.to_unix_millis(), 1_704_164_645_678);
        assert_eq!(
            PgTimestamp::from_unix_millis(1_704_164_645_678),
            PgTimestamp(757_479_845_678_000)
        );
        // Before 2000: rounds toward the past, not toward zero.
        assert_eq!(PgTimestamp(-1).to_unix_millis(), 946_684_799_999);
        assert_eq!(PgTimestamp::from_unix_millis(0), PgTimestamp(-946_684_800_000_000));
        assert_eq!(
            PgTimestamp(i64::MIN).to_unix_millis(),
            i64::MIN.div_euclid(1000) + 946_684_800_000
        );
        assert_eq!(PgTimestamp::from_unix_millis(i64::MAX), PgTimestamp(i64::MAX));
        assert_eq!(PgTimestamp::from_unix_millis(i64::MIN), PgTimestamp(i64::MIN));
    }

    #[test]
    fn decodes_xlog_data() {
        let mut bytes = vec![b'w'];
        bytes.extend_from_slice(&0x0000_0001_0000_0010_u64.to_be_bytes());
        bytes.extend_from_slice(&0x0000_0001_0000_0020_u64.to_be_bytes());
        bytes.extend_from_slice(&757_479_845_678_901_i64.to_be_bytes());
        bytes.extend_from_slice(b"B...");
        let message = ReplicationMessage::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(
            message,
            ReplicationMessage::XLogData(XLogData {
                wal_start: "1/10".parse().unwrap(),
                wal_end: "1/20".parse().unwrap(),
                send_time: PgTimestamp(757_479_845_678_901),
                data: Bytes::from_static(b"B..."),
            })
        );
    }

    #[test]
    fn decodes_xlog_data_without_data() {
        let mut bytes = vec![b'w'];
        bytes.extend_from_slice(&[0; 24]);
        let ReplicationMessage::XLogData(data) = ReplicationMessage::decode(Bytes::from(bytes)).unwrap() else {
            panic!("not XLogData");
        };
        assert!(data.data.is_empty());
    }

    #[test]
    fn decodes_keepalive() {
        let mut bytes = vec![b'k'];
        bytes.extend_from_slice(&0x16_B374_D848_u64.to_be_bytes());
        bytes.extend_from_slice(&42_i64.to_be_bytes());
        bytes.push(1);
        let message = ReplicationMessage::decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(
            message,
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(0x16_B374_D848),
                send_time: PgTimestamp(42),
                reply_requested: true,
            })
        );
        for len in 0..bytes.len() {
            let error = ReplicationMessage::decode(Bytes::copy_from_slice(&bytes[..len])).unwrap_err();
            assert!(matches!(error, DecodeError::Truncated { .. }), "{len}: {error}");
        }
        bytes.push(0);
        let error = ReplicationMessage::decode(Bytes::from(bytes)).unwrap_err();
        assert_eq!(
            error,
            DecodeError::TrailingBytes {
                message: "PrimaryKeepalive",
                offset: 18,
                count: 1
            }
        );
    }

    #[test]
    fn rejects_unknown_and_truncated_messages() {
        let error = ReplicationMessage::decode(Bytes::from_static(b"r")).unwrap_err();
        assert_eq!(
            error,
            DecodeError::UnknownTag {
                message: "replication",
                field: "message tag",
                tag: b'r',
                offset: 0
            }
        );
        let error = ReplicationMessage::decode(Bytes::new()).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Truncated {
                field: "message tag",
                ..
            }
        ));
        let error = ReplicationMessage::decode(Bytes::from_static(b"w\0\0")).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Truncated {
                message: "XLogData",
                field: "WAL start",
                offset: 1,
                ..
            }
        ));
    }

    #[test]
    fn encodes_standby_status_update() {
        let update = StandbyStatusUpdate {
            written: Lsn(0x0102_0304_0506_0708),
            flushed: Lsn(0x1112_1314_1516_1718),
            applied: Lsn(0x2122_2324_2526_2728),
            client_time: PgTimestamp(-2),
            reply_requested: true,
        };
        let bytes = update.to_bytes();
        let mut expected = vec![b'r'];
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        expected.extend_from_slice(&[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.push(1);
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(bytes.len(), StandbyStatusUpdate::ENCODED_LEN);
    }

    proptest! {
        #[test]
        fn lsn_text_round_trips(value: u64) {
            let lsn = Lsn(value);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ReplicationMessage::decode(Bytes::from(bytes));
        }
    }
}
