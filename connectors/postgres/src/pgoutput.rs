//! The messages of PostgreSQL's built-in `pgoutput` logical decoding plugin, protocol
//! versions 1 and 2 (PostgreSQL documentation, "Logical Replication Message Formats").
//!
//! Each [`XLogData`](crate::replication::XLogData) of a logical replication stream carries
//! exactly one of these messages. A transaction arrives as Begin, then Relation and Type
//! messages describing the tables before their first change, then Insert, Update, Delete,
//! Truncate and logical decoding messages, then Commit.
//!
//! With protocol version 2 and `streaming 'on'`, a large transaction can also arrive
//! before it commits, in blocks between Stream Start and Stream Stop, followed much later
//! by Stream Commit or Stream Abort. Inside such a block, the messages that may belong to a
//! streamed transaction carry its id right after their tag: whether that field is there
//! depends on what came before, so decode with a [`Decoder`], which remembers whether it is
//! inside a block, or with [`decode`] when the caller tracks that itself.

use bytes::Bytes;

use crate::DecodeError;
use crate::reader::MessageReader;
use crate::replication::{Lsn, PgTimestamp};

/// A transaction id (`TransactionId`).
pub type Xid = u32;

/// A PostgreSQL object id: of a relation or of a type.
pub type Oid = u32;

/// Decodes a stream of pgoutput messages, following Stream Start and Stream Stop.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    /// A decoder outside any streamed block, as at the start of a replication connection.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Whether the last Stream Start has not yet been followed by its Stream Stop.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes one message (the data of one XLogData). Text and binary column values and
    /// logical message contents share `message`'s buffer. After an error the decoder's
    /// state is unchanged.
    pub fn decode(&mut self, message: Bytes) -> Result<Message, DecodeError> {
        let decoded = decode(message, self.in_stream)?;
        match decoded {
            Message::StreamStart(_) => self.in_stream = true,
            Message::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(decoded)
    }
}

/// Decodes one message; `in_stream` says whether it comes between a Stream Start and its
/// Stream Stop. Fails on a Stream Start inside a block and on a Stream Stop outside one.
pub fn decode(message: Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let mut reader = MessageReader::new(message, "pgoutput");
    let tag = reader.u8("message tag")?;
    let decoded = match tag {
        b'B' => Message::Begin(Begin::decode(&mut reader)?),
        b'M' => Message::LogicalMessage(LogicalMessage::decode(&mut reader, in_stream)?),
        b'C' => Message::Commit(Commit::decode(&mut reader)?),
        b'O' => Message::Origin(Origin::decode(&mut reader)?),
        b'R' => Message::Relation(Relation::decode(&mut reader, in_stream)?),
        b'Y' => Message::Type(Type::decode(&mut reader, in_stream)?),
        b'I' => Message::Insert(Insert::decode(&mut reader, in_stream)?),
        b'U' => Message::Update(Update::decode(&mut reader, in_stream)?),
        b'D' => Message::Delete(Delete::decode(&mut reader, in_stream)?),
        b'T' => Message::Truncate(Truncate::decode(&mut reader, in_stream)?),
        b'S' => Message::StreamStart(StreamStart::decode(&mut reader, in_stream)?),
        b'E' => {
            reader.set_message("Stream Stop");
            if !in_stream {
                return Err(DecodeError::UnexpectedStreamBoundary {
                    message: "Stream Stop",
                    in_stream,
                });
            }
            Message::StreamStop
        }
        b'c' => Message::StreamCommit(StreamCommit::decode(&mut reader)?),
        b'A' => Message::StreamAbort(StreamAbort::decode(&mut reader)?),
        b'b' | b'P' | b'K' | b'r' | b'p' => return Err(unsupported_two_phase(tag)),
        _ => return Err(reader.unknown_tag("message tag", tag, 0)),
    };
    reader.finish()?;
    Ok(decoded)
}

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `'B'`: a transaction starts.
    Begin(Begin),
    /// `'M'`: a logical decoding message (`pg_logical_emit_message`); only sent when the
    /// `messages` option is on.
    LogicalMessage(LogicalMessage),
    /// `'C'`: the transaction started by the last Begin commits.
    Commit(Commit),
    /// `'O'`: the transaction was replicated from another server.
    Origin(Origin),
    /// `'R'`: the description of a table, sent before its first change and again after
    /// the table's definition changes.
    Relation(Relation),
    /// `'Y'`: the name of a type that is not built in, sent before a Relation using it.
    Type(Type),
    /// `'I'`: a row inserted.
    Insert(Insert),
    /// `'U'`: a row updated.
    Update(Update),
    /// `'D'`: a row deleted.
    Delete(Delete),
    /// `'T'`: tables truncated.
    Truncate(Truncate),
    /// `'S'`: a block of a streamed (not yet committed) transaction starts.
    StreamStart(StreamStart),
    /// `'E'`: the current streamed block ends.
    StreamStop,
    /// `'c'`: a streamed transaction commits.
    StreamCommit(StreamCommit),
    /// `'A'`: a streamed transaction, or one of its subtransactions, aborts.
    StreamAbort(StreamAbort),
}

/// `'B'`: the start of a transaction (sent when it has committed, unless streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: Xid,
}

/// `'C'`: the end of the transaction started by the last Begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The LSN of the commit record (the Begin's `final_lsn`).
    pub commit_lsn: Lsn,
    /// The LSN just after the commit record: once the changes up to here are durable, the
    /// slot may be confirmed up to it.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// `'O'`: the origin of a transaction replicated from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The LSN of the commit on the origin server.
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `'M'`: a message written to the WAL with `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// Written inside a transaction and delivered with it; otherwise delivered at once,
    /// even if the writing transaction later aborts.
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// `'R'`: the description of a table as the following changes encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// The table's OID, used by the changes to refer to it.
    pub id: Oid,
    /// The schema; `pg_catalog` where the server sends an empty string for it.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    /// The columns in the order of the tuples' values (without dropped and, before
    /// PostgreSQL 18, generated columns).
    pub columns: Vec<RelationColumn>,
}

/// What a table's updates and deletes carry of the old row (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `'d'`: the primary key, if there is one.
    Default,
    /// `'n'`: nothing.
    Nothing,
    /// `'f'`: all columns.
    Full,
    /// `'i'`: the columns of a chosen unique index.
    Index,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key); every column with [`ReplicaIdentity::Full`].
    pub is_key: bool,
    pub name: String,
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), such as a varchar's length + 4; -1 if none.
    pub type_modifier: i32,
}

/// `'Y'`: the name of a data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    pub id: Oid,
    /// The schema; `pg_catalog` where the server sends an empty string for it.
    pub namespace: String,
    pub name: String,
}

/// `'I'`: a new row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// The [`Relation::id`] of the table.
    pub relation: Oid,
    pub new: Tuple,
}

/// `'U'`: a changed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// The [`Relation::id`] of the table.
    pub relation: Oid,
    /// The old key if the update changed it, or the whole old row with
    /// [`ReplicaIdentity::Full`]; `None` when the key did not change.
    pub old: Option<OldTuple>,
    /// The new row. With [`ReplicaIdentity::Full`] and an old row, unchanged TOASTed
    /// values can be taken from the old row.
    pub new: Tuple,
}

/// `'D'`: a removed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// The [`Relation::id`] of the table.
    pub relation: Oid,
    pub old: OldTuple,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: the replica identity columns, all other columns NULL.
    Key(Tuple),
    /// `'O'`: the whole old row ([`ReplicaIdentity::Full`]).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// `'T'`: tables emptied by one `TRUNCATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed transaction it belongs to (only inside a streamed block).
    pub xid: Option<Xid>,
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
    /// The [`Relation::id`]s of the tables.
    pub relations: Vec<Oid>,
}

/// `'S'`: a block of changes of a transaction still in progress follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: Xid,
    /// The first block of this transaction.
    pub first_segment: bool,
}

/// `'c'`: a streamed transaction commits; its blocks become a committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: Xid,
    pub commit_lsn: Lsn,
    /// The LSN just after the commit record.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// `'A'`: a streamed transaction aborts, or only one of its subtransactions (whose
/// changes were streamed with the top-level `xid`) rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: Xid,
    /// The aborted subtransaction; equal to `xid` when the whole transaction aborts.
    pub subxid: Xid,
}

/// The column values of a row, in the order of the [`Relation`]'s columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub columns: Vec<ColumnValue>,
}

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: a TOASTed value that the update did not change, so the server did not send
    /// it. Not NULL: the value is whatever it was before.
    UnchangedToast,
    /// `'t'`: the value in the type's text output form, in the server's encoding.
    Text(Bytes),
    /// `'b'`: the value in the type's binary send form (with the `binary` option).
    Binary(Bytes),
}

impl Begin {
    fn decode(reader: &mut MessageReader) -> Result<Begin, DecodeError> {
        reader.set_message("Begin");
        Ok(Begin {
            final_lsn: Lsn(reader.u64("final LSN")?),
            commit_time: PgTimestamp(reader.i64("commit time")?),
            xid: reader.u32("xid")?,
        })
    }
}

impl Commit {
    fn decode(reader: &mut MessageReader) -> Result<Commit, DecodeError> {
        reader.set_message("Commit");
        // Flags: unused so far (always 0); not checked so that a future flag does not stop
        // a stream whose fields are unchanged.
        reader.u8("flags")?;
        Ok(Commit {
            commit_lsn: Lsn(reader.u64("commit LSN")?),
            end_lsn: Lsn(reader.u64("end LSN")?),
            commit_time: PgTimestamp(reader.i64("commit time")?),
        })
    }
}

impl Origin {
    fn decode(reader: &mut MessageReader) -> Result<Origin, DecodeError> {
        reader.set_message("Origin");
        Ok(Origin {
            commit_lsn: Lsn(reader.u64("commit LSN")?),
            name: reader.string("origin name")?,
        })
    }
}

impl LogicalMessage {
    /// Bit 0 of the flags.
    const TRANSACTIONAL: u8 = 1;

    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<LogicalMessage, DecodeError> {
        reader.set_message("Logical Decoding Message");
        let xid = streamed_xid(reader, in_stream)?;
        let flags = reader.u8("flags")?;
        let lsn = Lsn(reader.u64("LSN")?);
        let prefix = reader.string("prefix")?;
        let len = reader.length("content length")?;
        let content = reader.bytes(len, "content")?;
        Ok(LogicalMessage {
            xid,
            transactional: flags & Self::TRANSACTIONAL != 0,
            lsn,
            prefix,
            content,
        })
    }
}

impl Relation {
    /// The shortest encoded column: flags, an empty name, type OID and modifier.
    const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;
    /// Bit 0 of a column's flags.
    const KEY_COLUMN: u8 = 1;

    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Relation, DecodeError> {
        reader.set_message("Relation");
        let xid = streamed_xid(reader, in_stream)?;
        let id = reader.u32("relation id")?;
        let namespace = namespace(reader)?;
        let name = reader.string("relation name")?;
        let offset = reader.offset();
        let replica_identity = match reader.u8("replica identity")? {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            other => return Err(reader.unknown_tag("replica identity", other, offset)),
        };
        let offset = reader.offset();
        let count = usize::from(reader.u16("column count")?);
        reader.check_count(count, Self::MIN_COLUMN_LEN, "column count", offset)?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            columns.push(RelationColumn {
                is_key: reader.u8("column flags")? & Self::KEY_COLUMN != 0,
                name: reader.string("column name")?,
                type_oid: reader.u32("column type OID")?,
                type_modifier: reader.i32("column type modifier")?,
            });
        }
        Ok(Relation {
            xid,
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }
}

impl Type {
    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Type, DecodeError> {
        reader.set_message("Type");
        Ok(Type {
            xid: streamed_xid(reader, in_stream)?,
            id: reader.u32("type OID")?,
            namespace: namespace(reader)?,
            name: reader.string("type name")?,
        })
    }
}

impl Insert {
    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Insert, DecodeError> {
        reader.set_message("Insert");
        let xid = streamed_xid(reader, in_stream)?;
        let relation = reader.u32("relation id")?;
        expect_new_tuple_marker(reader)?;
        Ok(Insert {
            xid,
            relation,
            new: Tuple::decode(reader)?,
        })
    }
}

impl Update {
    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Update, DecodeError> {
        reader.set_message("Update");
        let xid = streamed_xid(reader, in_stream)?;
        let relation = reader.u32("relation id")?;
        let offset = reader.offset();
        let old = match reader.u8("tuple marker")? {
            b'K' => Some(OldTuple::Key(Tuple::decode(reader)?)),
            b'O' => Some(OldTuple::Full(Tuple::decode(reader)?)),
            b'N' => None,
            other => return Err(reader.unknown_tag("tuple marker", other, offset)),
        };
        if old.is_some() {
            expect_new_tuple_marker(reader)?;
        }
        Ok(Update {
            xid,
            relation,
            old,
            new: Tuple::decode(reader)?,
        })
    }
}

impl Delete {
    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Delete, DecodeError> {
        reader.set_message("Delete");
        let xid = streamed_xid(reader, in_stream)?;
        let relation = reader.u32("relation id")?;
        let offset = reader.offset();
        let old = match reader.u8("tuple marker")? {
            b'K' => OldTuple::Key(Tuple::decode(reader)?),
            b'O' => OldTuple::Full(Tuple::decode(reader)?),
            other => return Err(reader.unknown_tag("tuple marker", other, offset)),
        };
        Ok(Delete { xid, relation, old })
    }
}

impl Truncate {
    const CASCADE: u8 = 1;
    const RESTART_IDENTITY: u8 = 2;

    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<Truncate, DecodeError> {
        reader.set_message("Truncate");
        let xid = streamed_xid(reader, in_stream)?;
        let offset = reader.offset();
        let count = reader.length("relation count")?;
        let options = reader.u8("options")?;
        reader.check_count(count, 4, "relation count", offset)?;
        let mut relations = Vec::with_capacity(count);
        for _ in 0..count {
            relations.push(reader.u32("relation id")?);
        }
        Ok(Truncate {
            xid,
            cascade: options & Self::CASCADE != 0,
            restart_identity: options & Self::RESTART_IDENTITY != 0,
            relations,
        })
    }
}

impl StreamStart {
    fn decode(reader: &mut MessageReader, in_stream: bool) -> Result<StreamStart, DecodeError> {
        reader.set_message("Stream Start");
        if in_stream {
            return Err(DecodeError::UnexpectedStreamBoundary {
                message: "Stream Start",
                in_stream,
            });
        }
        Ok(StreamStart {
            xid: reader.u32("xid")?,
            first_segment: reader.u8("first segment")? == 1,
        })
    }
}

impl StreamCommit {
    fn decode(reader: &mut MessageReader) -> Result<StreamCommit, DecodeError> {
        reader.set_message("Stream Commit");
        let xid = reader.u32("xid")?;
        // Flags: unused so far, as in Commit.
        reader.u8("flags")?;
        Ok(StreamCommit {
            xid,
            commit_lsn: Lsn(reader.u64("commit LSN")?),
            end_lsn: Lsn(reader.u64("end LSN")?),
            commit_time: PgTimestamp(reader.i64("commit time")?),
        })
    }
}

impl StreamAbort {
    fn decode(reader: &mut MessageReader) -> Result<StreamAbort, DecodeError> {
        reader.set_message("Stream Abort");
        // Protocol version 4 (parallel streaming) adds the abort LSN and time; plexus asks
        // for version 2 at most, so more bytes are an error like in every other message.
        Ok(StreamAbort {
            xid: reader.u32("xid")?,
            subxid: reader.u32("subtransaction xid")?,
        })
    }
}

impl Tuple {
    fn decode(reader: &mut MessageReader) -> Result<Tuple, DecodeError> {
        let offset = reader.offset();
        let count = usize::from(reader.u16("tuple column count")?);
        // Every column takes at least its kind byte.
        reader.check_count(count, 1, "tuple column count", offset)?;
        let mut columns = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = reader.offset();
            let value = match reader.u8("tuple column kind")? {
                b'n' => ColumnValue::Null,
                b'u' => ColumnValue::UnchangedToast,
                b't' => {
                    let len = reader.length("text value length")?;
                    ColumnValue::Text(reader.bytes(len, "text value")?)
                }
                b'b' => {
                    let len = reader.length("binary value length")?;
                    ColumnValue::Binary(reader.bytes(len, "binary value")?)
                }
                other => return Err(reader.unknown_tag("tuple column kind", other, offset)),
            };
            columns.push(value);
        }
        Ok(Tuple { columns })
    }
}

/// The two-phase commit messages of protocol version 3, which plexus does not request.
fn unsupported_two_phase(tag: u8) -> DecodeError {
    let message = match tag {
        b'b' => "Begin Prepare",
        b'P' => "Prepare",
        b'K' => "Commit Prepared",
        b'r' => "Rollback Prepared",
        _ => "Stream Prepare",
    };
    DecodeError::Unsupported { message, tag }
}

/// The transaction id that follows the tag of a change inside a streamed block.
fn streamed_xid(reader: &mut MessageReader, in_stream: bool) -> Result<Option<Xid>, DecodeError> {
    if in_stream {
        reader.u32("streamed transaction xid").map(Some)
    } else {
        Ok(None)
    }
}

/// A schema name, which the server abbreviates to an empty string for `pg_catalog`.
fn namespace(reader: &mut MessageReader) -> Result<String, DecodeError> {
    let namespace = reader.string("namespace")?;
    Ok(if namespace.is_empty() {
        "pg_catalog".to_owned()
    } else {
        namespace
    })
}

fn expect_new_tuple_marker(reader: &mut MessageReader) -> Result<(), DecodeError> {
    let offset = reader.offset();
    match reader.u8("tuple marker")? {
        b'N' => Ok(()),
        other => Err(reader.unknown_tag("tuple marker", other, offset)),
    }
}

#[cfg(test)]
mod tests;
