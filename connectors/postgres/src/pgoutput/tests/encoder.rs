//! A test-only encoder of pgoutput messages, written from the documented layouts, and one
//! sample message of every kind.

use bytes::Bytes;

use super::super::*;

/// Builds a message field by field, big-endian, as the server writes it.
#[derive(Debug, Default, Clone)]
pub(super) struct Wire(Vec<u8>);

impl Wire {
    pub(super) fn tag(tag: u8) -> Wire {
        Wire(vec![tag])
    }
    pub(super) fn u8(mut self, value: u8) -> Wire {
        self.0.push(value);
        self
    }
    pub(super) fn u16(mut self, value: u16) -> Wire {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn u32(mut self, value: u32) -> Wire {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn i32(mut self, value: i32) -> Wire {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn u64(mut self, value: u64) -> Wire {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn i64(mut self, value: i64) -> Wire {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub(super) fn string(mut self, value: &str) -> Wire {
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(0);
        self
    }
    pub(super) fn raw(mut self, bytes: &[u8]) -> Wire {
        self.0.extend_from_slice(bytes);
        self
    }
    pub(super) fn xid(self, xid: Option<Xid>) -> Wire {
        match xid {
            Some(xid) => self.u32(xid),
            None => self,
        }
    }
    pub(super) fn tuple(mut self, tuple: &Tuple) -> Wire {
        self = self.u16(u16::try_from(tuple.columns.len()).unwrap());
        for value in &tuple.columns {
            self = match value {
                ColumnValue::Null => self.u8(b'n'),
                ColumnValue::UnchangedToast => self.u8(b'u'),
                ColumnValue::Text(bytes) => self.u8(b't').i32(bytes.len().try_into().unwrap()).raw(bytes),
                ColumnValue::Binary(bytes) => self.u8(b'b').i32(bytes.len().try_into().unwrap()).raw(bytes),
            };
        }
        self
    }
    pub(super) fn old_tuple(self, old: &OldTuple) -> Wire {
        match old {
            OldTuple::Key(tuple) => self.u8(b'K').tuple(tuple),
            OldTuple::Full(tuple) => self.u8(b'O').tuple(tuple),
        }
    }
    pub(super) fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

/// Encodes a message as pgoutput would: the inverse of [`decode`]. Streamed
/// transaction ids are written where the message has one.
pub(super) fn encode(message: &Message) -> Bytes {
    let wire = match message {
        Message::Begin(m) => Wire::tag(b'B').u64(m.final_lsn.0).i64(m.commit_time.0).u32(m.xid),
        Message::LogicalMessage(m) => Wire::tag(b'M')
            .xid(m.xid)
            .u8(u8::from(m.transactional))
            .u64(m.lsn.0)
            .string(&m.prefix)
            .i32(m.content.len().try_into().unwrap())
            .raw(&m.content),
        Message::Commit(m) => Wire::tag(b'C')
            .u8(0)
            .u64(m.commit_lsn.0)
            .u64(m.end_lsn.0)
            .i64(m.commit_time.0),
        Message::Origin(m) => Wire::tag(b'O').u64(m.commit_lsn.0).string(&m.name),
        Message::Relation(m) => {
            let identity = match m.replica_identity {
                ReplicaIdentity::Default => b'd',
                ReplicaIdentity::Nothing => b'n',
                ReplicaIdentity::Full => b'f',
                ReplicaIdentity::Index => b'i',
            };
            let mut wire = Wire::tag(b'R')
                .xid(m.xid)
                .u32(m.id)
                .string(&m.namespace)
                .string(&m.name)
                .u8(identity)
                .u16(m.columns.len().try_into().unwrap());
            for column in &m.columns {
                wire = wire
                    .u8(u8::from(column.is_key))
                    .string(&column.name)
                    .u32(column.type_oid)
                    .i32(column.type_modifier);
            }
            wire
        }
        Message::Type(m) => Wire::tag(b'Y')
            .xid(m.xid)
            .u32(m.id)
            .string(&m.namespace)
            .string(&m.name),
        Message::Insert(m) => Wire::tag(b'I').xid(m.xid).u32(m.relation).u8(b'N').tuple(&m.new),
        Message::Update(m) => {
            let wire = Wire::tag(b'U').xid(m.xid).u32(m.relation);
            let wire = match &m.old {
                Some(old) => wire.old_tuple(old),
                None => wire,
            };
            wire.u8(b'N').tuple(&m.new)
        }
        Message::Delete(m) => Wire::tag(b'D').xid(m.xid).u32(m.relation).old_tuple(&m.old),
        Message::Truncate(m) => {
            let options = u8::from(m.cascade) | u8::from(m.restart_identity) << 1;
            let mut wire = Wire::tag(b'T')
                .xid(m.xid)
                .i32(m.relations.len().try_into().unwrap())
                .u8(options);
            for relation in &m.relations {
                wire = wire.u32(*relation);
            }
            wire
        }
        Message::StreamStart(m) => Wire::tag(b'S').u32(m.xid).u8(u8::from(m.first_segment)),
        Message::StreamStop => Wire::tag(b'E'),
        Message::StreamCommit(m) => Wire::tag(b'c')
            .u32(m.xid)
            .u8(0)
            .u64(m.commit_lsn.0)
            .u64(m.end_lsn.0)
            .i64(m.commit_time.0),
        Message::StreamAbort(m) => Wire::tag(b'A').u32(m.xid).u32(m.subxid),
    };
    wire.bytes()
}

/// Whether a message is decoded inside a streamed block: it carries a streamed xid, or it
/// is a Stream Stop.
pub(super) fn in_stream(message: &Message) -> bool {
    match message {
        Message::LogicalMessage(m) => m.xid.is_some(),
        Message::Relation(m) => m.xid.is_some(),
        Message::Type(m) => m.xid.is_some(),
        Message::Insert(m) => m.xid.is_some(),
        Message::Update(m) => m.xid.is_some(),
        Message::Delete(m) => m.xid.is_some(),
        Message::Truncate(m) => m.xid.is_some(),
        Message::StreamStop => true,
        _ => false,
    }
}

pub(super) fn text(value: &'static str) -> ColumnValue {
    ColumnValue::Text(Bytes::from_static(value.as_bytes()))
}

pub(super) fn users_relation(xid: Option<Xid>) -> Relation {
    Relation {
        xid,
        id: 16_385,
        namespace: "public".to_owned(),
        name: "users".to_owned(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            RelationColumn {
                is_key: true,
                name: "id".to_owned(),
                type_oid: 20,
                type_modifier: -1,
            },
            RelationColumn {
                is_key: false,
                name: "name".to_owned(),
                type_oid: 1043,
                type_modifier: 104,
            },
            RelationColumn {
                is_key: false,
                name: "bio".to_owned(),
                type_oid: 25,
                type_modifier: -1,
            },
        ],
    }
}

/// One message of every kind, outside and (where they differ) inside a streamed block.
pub(super) fn samples() -> Vec<Message> {
    let row = Tuple {
        columns: vec![text("1"), text("Ada"), ColumnValue::Null],
    };
    let key = Tuple {
        columns: vec![text("1"), ColumnValue::Null, ColumnValue::Null],
    };
    let mut samples = vec![
        Message::Begin(Begin {
            final_lsn: Lsn(0x16B3748),
            commit_time: PgTimestamp(757_479_845_678_901),
            xid: 731,
        }),
        Message::Commit(Commit {
            commit_lsn: Lsn(0x16B3748),
            end_lsn: Lsn(0x16B3778),
            commit_time: PgTimestamp(757_479_845_678_901),
        }),
        Message::Origin(Origin {
            commit_lsn: Lsn(0x1_0000_0000),
            name: "pg_16390".to_owned(),
        }),
        Message::StreamStart(StreamStart {
            xid: 900,
            first_segment: true,
        }),
        Message::StreamStop,
        Message::StreamCommit(StreamCommit {
            xid: 900,
            commit_lsn: Lsn(0x2000),
            end_lsn: Lsn(0x2030),
            commit_time: PgTimestamp(-5),
        }),
        Message::StreamAbort(StreamAbort { xid: 900, subxid: 901 }),
    ];
    for xid in [None, Some(900)] {
        samples.extend([
            Message::LogicalMessage(LogicalMessage {
                xid,
                transactional: false,
                lsn: Lsn(0x16B3800),
                prefix: "plexus.heartbeat".to_owned(),
                content: Bytes::from_static(b"{\"ts\":1}"),
            }),
            Message::Relation(users_relation(xid)),
            Message::Type(Type {
                xid,
                id: 16_400,
                namespace: "public".to_owned(),
                name: "mood".to_owned(),
            }),
            Message::Insert(Insert {
                xid,
                relation: 16_385,
                new: row.clone(),
            }),
            Message::Update(Update {
                xid,
                relation: 16_385,
                old: Some(OldTuple::Key(key.clone())),
                new: Tuple {
                    columns: vec![text("2"), text("Ada"), ColumnValue::UnchangedToast],
                },
            }),
            Message::Update(Update {
                xid,
                relation: 16_385,
                old: Some(OldTuple::Full(row.clone())),
                new: Tuple {
                    columns: vec![text("1"), ColumnValue::Binary(Bytes::from_static(&[0, 1])), text("")],
                },
            }),
            Message::Update(Update {
                xid,
                relation: 16_385,
                old: None,
                new: row.clone(),
            }),
            Message::Delete(Delete {
                xid,
                relation: 16_385,
                old: OldTuple::Key(key.clone()),
            }),
            Message::Delete(Delete {
                xid,
                relation: 16_385,
                old: OldTuple::Full(row.clone()),
            }),
            Message::Truncate(Truncate {
                xid,
                cascade: true,
                restart_identity: false,
                relations: vec![16_385, 16_390],
            }),
        ]);
    }
    samples
}

pub(super) fn message_name(message: &Message) -> &'static str {
    match message {
        Message::Begin(_) => "Begin",
        Message::LogicalMessage(_) => "Logical Decoding Message",
        Message::Commit(_) => "Commit",
        Message::Origin(_) => "Origin",
        Message::Relation(_) => "Relation",
        Message::Type(_) => "Type",
        Message::Insert(_) => "Insert",
        Message::Update(_) => "Update",
        Message::Delete(_) => "Delete",
        Message::Truncate(_) => "Truncate",
        Message::StreamStart(_) => "Stream Start",
        Message::StreamStop => "Stream Stop",
        Message::StreamCommit(_) => "Stream Commit",
        Message::StreamAbort(_) => "Stream Abort",
    }
}
