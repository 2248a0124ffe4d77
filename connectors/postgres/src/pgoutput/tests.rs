//! Tests of the pgoutput decoder against byte vectors built field by field from the
//! documented layouts ("Logical Replication Message Formats").

mod encoder;
mod properties;

use encoder::{Wire, encode, in_stream, message_name, samples, text, users_relation};

use super::*;

#[test]
fn decodes_begin_field_by_field() {
    let bytes = Wire::tag(b'B')
        .u64(0x0000_0016_B374_D848)
        .i64(757_479_845_678_901)
        .u32(731)
        .bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::Begin(Begin {
            final_lsn: "16/B374D848".parse().unwrap(),
            commit_time: PgTimestamp(757_479_845_678_901),
            xid: 731,
        })
    );
}

#[test]
fn decodes_commit_ignoring_flags() {
    let bytes = Wire::tag(b'C').u8(0).u64(0x10).u64(0x40).i64(12).bytes();
    let expected = Message::Commit(Commit {
        commit_lsn: Lsn(0x10),
        end_lsn: Lsn(0x40),
        commit_time: PgTimestamp(12),
    });
    assert_eq!(decode(bytes, false).unwrap(), expected);
    let bytes = Wire::tag(b'C').u8(0x80).u64(0x10).u64(0x40).i64(12).bytes();
    assert_eq!(decode(bytes, false).unwrap(), expected);
}

#[test]
fn decodes_origin() {
    let bytes = Wire::tag(b'O').u64(7).string("pg_16390").bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::Origin(Origin {
            commit_lsn: Lsn(7),
            name: "pg_16390".to_owned()
        })
    );
}

#[test]
fn decodes_logical_message_outside_and_inside_a_stream() {
    let content = b"{\"ts\":1}";
    let bytes = Wire::tag(b'M')
        .u8(1)
        .u64(0x99)
        .string("plexus")
        .i32(8)
        .raw(content)
        .bytes();
    let Message::LogicalMessage(message) = decode(bytes.clone(), false).unwrap() else {
        panic!("not M")
    };
    assert_eq!(
        message,
        LogicalMessage {
            xid: None,
            transactional: true,
            lsn: Lsn(0x99),
            prefix: "plexus".to_owned(),
            content: Bytes::from_static(content),
        }
    );
    // The content shares the input buffer.
    assert_eq!(message.content.as_ptr(), bytes[bytes.len() - content.len()..].as_ptr());

    let bytes = Wire::tag(b'M').u32(900).u8(0).u64(0x99).string("p").i32(0).bytes();
    let Message::LogicalMessage(message) = decode(bytes, true).unwrap() else {
        panic!("not M")
    };
    assert_eq!(
        (message.xid, message.transactional, message.content.len()),
        (Some(900), false, 0)
    );
}

#[test]
fn decodes_relation_with_key_columns_and_type_modifiers() {
    let bytes = Wire::tag(b'R')
        .u32(16_385)
        .string("public")
        .string("users")
        .u8(b'd')
        .u16(3)
        .u8(1)
        .string("id")
        .u32(20)
        .i32(-1)
        .u8(0)
        .string("name")
        .u32(1043)
        .i32(104)
        .u8(0)
        .string("bio")
        .u32(25)
        .i32(-1)
        .bytes();
    assert_eq!(decode(bytes, false).unwrap(), Message::Relation(users_relation(None)));
}

#[test]
fn decodes_every_replica_identity() {
    for (byte, identity) in [
        (b'd', ReplicaIdentity::Default),
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let bytes = Wire::tag(b'R').u32(1).string("s").string("t").u8(byte).u16(0).bytes();
        let Message::Relation(relation) = decode(bytes, false).unwrap() else {
            panic!("not R")
        };
        assert_eq!(relation.replica_identity, identity);
    }
    let bytes = Wire::tag(b'R').u32(1).string("s").string("t").u8(b'x').u16(0).bytes();
    assert_eq!(
        decode(bytes, false).unwrap_err(),
        DecodeError::UnknownTag {
            message: "Relation",
            field: "replica identity",
            tag: b'x',
            offset: 9
        }
    );
}

#[test]
fn pg_catalog_namespace_is_named() {
    let bytes = Wire::tag(b'Y').u32(16).string("").string("bool").bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::Type(Type {
            xid: None,
            id: 16,
            namespace: "pg_catalog".to_owned(),
            name: "bool".to_owned()
        })
    );
    let bytes = Wire::tag(b'R')
        .u32(1)
        .string("")
        .string("pg_class")
        .u8(b'n')
        .u16(0)
        .bytes();
    let Message::Relation(relation) = decode(bytes, false).unwrap() else {
        panic!("not R")
    };
    assert_eq!(relation.namespace, "pg_catalog");
}

#[test]
fn decodes_every_tuple_column_kind() {
    let bytes = Wire::tag(b'I')
        .u32(5)
        .u8(b'N')
        .u16(5)
        .u8(b'n')
        .u8(b'u')
        .u8(b't')
        .i32(3)
        .raw(b"abc")
        .u8(b'b')
        .i32(2)
        .raw(&[0, 0xff])
        .u8(b't')
        .i32(0)
        .bytes();
    let Message::Insert(insert) = decode(bytes.clone(), false).unwrap() else {
        panic!("not I")
    };
    assert_eq!((insert.xid, insert.relation), (None, 5));
    assert_eq!(
        insert.new.columns,
        vec![
            ColumnValue::Null,
            ColumnValue::UnchangedToast,
            ColumnValue::Text(Bytes::from_static(b"abc")),
            ColumnValue::Binary(Bytes::from_static(&[0, 0xff])),
            ColumnValue::Text(Bytes::new()),
        ]
    );
    // Unchanged TOAST stays distinguishable from NULL.
    assert_ne!(insert.new.columns[0], insert.new.columns[1]);
    // Values share the input buffer: no copy.
    let ColumnValue::Text(abc) = &insert.new.columns[2] else {
        panic!("not text")
    };
    assert_eq!(abc.as_ptr(), bytes[15..].as_ptr());
}

#[test]
fn decodes_update_with_key_full_or_no_old_tuple() {
    let new = Tuple {
        columns: vec![text("2"), ColumnValue::UnchangedToast],
    };
    let old = Tuple {
        columns: vec![text("1"), ColumnValue::Null],
    };
    let bytes = Wire::tag(b'U').u32(5).u8(b'N').tuple(&new).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::Update(Update {
            xid: None,
            relation: 5,
            old: None,
            new: new.clone()
        })
    );
    let bytes = Wire::tag(b'U').u32(5).u8(b'K').tuple(&old).u8(b'N').tuple(&new).bytes();
    let Message::Update(update) = decode(bytes, false).unwrap() else {
        panic!("not U")
    };
    assert_eq!(update.old, Some(OldTuple::Key(old.clone())));
    let bytes = Wire::tag(b'U')
        .u32(900)
        .u32(5)
        .u8(b'O')
        .tuple(&old)
        .u8(b'N')
        .tuple(&new)
        .bytes();
    let Message::Update(update) = decode(bytes, true).unwrap() else {
        panic!("not U")
    };
    assert_eq!(
        (update.xid, update.old.as_ref().map(OldTuple::tuple)),
        (Some(900), Some(&old))
    );

    // The old tuple must be followed by the new one.
    let bytes = Wire::tag(b'U').u32(5).u8(b'K').tuple(&old).u8(b'K').tuple(&new).bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::UnknownTag {
            message: "Update",
            field: "tuple marker",
            tag: b'K',
            ..
        }
    ));
}

#[test]
fn decodes_delete_with_key_or_full_old_tuple() {
    let old = Tuple {
        columns: vec![text("1")],
    };
    let bytes = Wire::tag(b'D').u32(5).u8(b'K').tuple(&old).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::Delete(Delete {
            xid: None,
            relation: 5,
            old: OldTuple::Key(old.clone())
        })
    );
    let bytes = Wire::tag(b'D').u32(5).u8(b'O').tuple(&old).bytes();
    let Message::Delete(delete) = decode(bytes, false).unwrap() else {
        panic!("not D")
    };
    assert_eq!(delete.old, OldTuple::Full(old.clone()));
    let bytes = Wire::tag(b'D').u32(5).u8(b'N').tuple(&old).bytes();
    assert_eq!(
        decode(bytes, false).unwrap_err(),
        DecodeError::UnknownTag {
            message: "Delete",
            field: "tuple marker",
            tag: b'N',
            offset: 5
        }
    );
}

#[test]
fn decodes_truncate_options() {
    for (options, cascade, restart_identity) in [(0, false, false), (1, true, false), (2, false, true), (3, true, true)]
    {
        let bytes = Wire::tag(b'T').i32(2).u8(options).u32(10).u32(11).bytes();
        assert_eq!(
            decode(bytes, false).unwrap(),
            Message::Truncate(Truncate {
                xid: None,
                cascade,
                restart_identity,
                relations: vec![10, 11]
            })
        );
    }
}

#[test]
fn decodes_stream_messages() {
    let bytes = Wire::tag(b'S').u32(900).u8(1).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::StreamStart(StreamStart {
            xid: 900,
            first_segment: true
        })
    );
    let bytes = Wire::tag(b'S').u32(900).u8(0).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::StreamStart(StreamStart {
            xid: 900,
            first_segment: false
        })
    );
    assert_eq!(decode(Wire::tag(b'E').bytes(), true).unwrap(), Message::StreamStop);
    let bytes = Wire::tag(b'c').u32(900).u8(0).u64(0x2000).u64(0x2030).i64(77).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::StreamCommit(StreamCommit {
            xid: 900,
            commit_lsn: Lsn(0x2000),
            end_lsn: Lsn(0x2030),
            commit_time: PgTimestamp(77),
        })
    );
    let bytes = Wire::tag(b'A').u32(900).u32(900).bytes();
    assert_eq!(
        decode(bytes, false).unwrap(),
        Message::StreamAbort(StreamAbort { xid: 900, subxid: 900 })
    );
}

#[test]
fn decoder_follows_stream_blocks() {
    let relation = Message::Relation(users_relation(Some(900)));
    let insert = Message::Insert(Insert {
        xid: Some(900),
        relation: 16_385,
        new: Tuple { columns: vec![] },
    });
    let plain_insert = Message::Insert(Insert {
        xid: None,
        relation: 16_385,
        new: Tuple { columns: vec![] },
    });
    let start = Message::StreamStart(StreamStart {
        xid: 900,
        first_segment: true,
    });

    let mut decoder = Decoder::new();
    assert!(!decoder.in_stream());
    assert_eq!(decoder.decode(encode(&start)).unwrap(), start);
    assert!(decoder.in_stream());
    assert_eq!(decoder.decode(encode(&relation)).unwrap(), relation);
    assert_eq!(decoder.decode(encode(&insert)).unwrap(), insert);
    // A second Stream Start without a Stop: an error, and the state stays as it was.
    assert_eq!(
        decoder.decode(encode(&start)).unwrap_err(),
        DecodeError::UnexpectedStreamBoundary {
            message: "Stream Start",
            in_stream: true
        }
    );
    assert!(decoder.in_stream());
    assert_eq!(decoder.decode(Wire::tag(b'E').bytes()).unwrap(), Message::StreamStop);
    assert!(!decoder.in_stream());
    assert_eq!(decoder.decode(encode(&plain_insert)).unwrap(), plain_insert);
    assert_eq!(
        decoder.decode(Wire::tag(b'E').bytes()).unwrap_err(),
        DecodeError::UnexpectedStreamBoundary {
            message: "Stream Stop",
            in_stream: false
        }
    );
    // Stream Commit and Abort come outside the blocks.
    let commit = Message::StreamCommit(StreamCommit {
        xid: 900,
        commit_lsn: Lsn(1),
        end_lsn: Lsn(2),
        commit_time: PgTimestamp(3),
    });
    assert_eq!(decoder.decode(encode(&commit)).unwrap(), commit);
    assert!(!decoder.in_stream());
}

#[test]
fn a_wrong_stream_state_is_detected_not_misread() {
    // A streamed Insert read as if outside a stream: the xid is taken for the relation id,
    // the relation id's first byte for the tuple marker.
    let insert = Message::Insert(Insert {
        xid: Some(900),
        relation: 16_385,
        new: Tuple {
            columns: vec![text("1")],
        },
    });
    assert!(decode(encode(&insert), false).is_err());
    // And a plain Commit read inside a stream is still a Commit: it has no streamed xid.
    let commit = samples().into_iter().find(|m| matches!(m, Message::Commit(_))).unwrap();
    assert_eq!(decode(encode(&commit), true).unwrap(), commit);
}

#[test]
fn rejects_unknown_and_unsupported_tags() {
    assert_eq!(
        decode(Wire::tag(b'Z').bytes(), false).unwrap_err(),
        DecodeError::UnknownTag {
            message: "pgoutput",
            field: "message tag",
            tag: b'Z',
            offset: 0
        }
    );
    for tag in [b'b', b'P', b'K', b'r', b'p'] {
        let error = decode(Wire::tag(tag).u64(1).bytes(), false).unwrap_err();
        assert!(matches!(error, DecodeError::Unsupported { .. }), "{error}");
        assert!(error.to_string().contains("two_phase"), "{error}");
    }
    assert!(matches!(
        decode(Bytes::new(), false).unwrap_err(),
        DecodeError::Truncated {
            message: "pgoutput",
            field: "message tag",
            offset: 0,
            ..
        }
    ));
}

#[test]
fn rejects_unknown_tuple_column_kind() {
    let bytes = Wire::tag(b'I').u32(5).u8(b'N').u16(2).u8(b'n').u8(b'x').bytes();
    assert_eq!(
        decode(bytes, false).unwrap_err(),
        DecodeError::UnknownTag {
            message: "Insert",
            field: "tuple column kind",
            tag: b'x',
            offset: 9
        }
    );
}

#[test]
fn rejects_invalid_utf8_names() {
    let bytes = Wire::tag(b'R')
        .u32(1)
        .string("public")
        .raw(b"caf\xe9\0")
        .u8(b'd')
        .u16(0)
        .bytes();
    let error = decode(bytes, false).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::InvalidUtf8 {
                message: "Relation",
                field: "relation name",
                offset: 12,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn rejects_negative_lengths_and_impossible_counts() {
    let bytes = Wire::tag(b'I').u32(5).u8(b'N').u16(1).u8(b't').i32(-1).bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::InvalidLength {
            field: "text value length",
            value: -1,
            offset: 9,
            ..
        }
    ));
    // A count that the remaining bytes cannot hold is refused before anything is reserved.
    let bytes = Wire::tag(b'T').i32(i32::MAX).u8(0).u32(1).bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::InvalidLength {
            field: "relation count",
            offset: 1,
            ..
        }
    ));
    let bytes = Wire::tag(b'T').i32(-2).u8(0).bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::InvalidLength { value: -2, .. }
    ));
    let bytes = Wire::tag(b'R')
        .u32(1)
        .string("s")
        .string("t")
        .u8(b'd')
        .u16(u16::MAX)
        .bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::InvalidLength {
            field: "column count",
            ..
        }
    ));
    let bytes = Wire::tag(b'I').u32(5).u8(b'N').u16(3).u8(b'n').bytes();
    assert!(matches!(
        decode(bytes, false).unwrap_err(),
        DecodeError::InvalidLength {
            field: "tuple column count",
            ..
        }
    ));
}

#[test]
fn rejects_trailing_bytes() {
    for message in samples() {
        let mut bytes = encode(&message).to_vec();
        let end = bytes.len();
        bytes.push(0);
        assert_eq!(
            decode(Bytes::from(bytes), in_stream(&message)).unwrap_err(),
            DecodeError::TrailingBytes {
                message: message_name(&message),
                offset: end,
                count: 1
            },
        );
    }
}

#[test]
fn every_sample_round_trips() {
    for message in samples() {
        assert_eq!(decode(encode(&message), in_stream(&message)).as_ref(), Ok(&message));
    }
}

#[test]
fn every_truncation_of_every_sample_is_an_error() {
    for message in samples() {
        let bytes = encode(&message);
        for len in 0..bytes.len() {
            let result = decode(bytes.slice(..len), in_stream(&message));
            assert!(result.is_err(), "{message:?} cut to {len} bytes decoded as {result:?}");
        }
    }
}
