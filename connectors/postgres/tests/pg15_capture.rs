//! Real bytes from PostgreSQL 15.18 (Debian), captured once by hand, decoded and checked
//! field by field, so that the decoder is checked against the server and not only against
//! our reading of the documentation. No server is needed to run these tests.
//!
//! How they were captured: a cluster with `wal_level = logical` and
//! `logical_decoding_work_mem = 64kB`; tables
//! `users (id bigint PRIMARY KEY, name varchar(100), bio text, feeling mood)` (with
//! `CREATE TYPE mood AS ENUM ('sad', 'happy')`), `full_t (a int, b text)` with
//! `REPLICA IDENTITY FULL` and `big (id int PRIMARY KEY, pad text)`, all in publication
//! `pub`. The pgoutput messages come from `pg_logical_slot_peek_binary_changes(...,
//! 'proto_version', '2', 'publication_names', 'pub', 'messages', 'true', 'streaming', 'on')`
//! (and `'binary', 'true'` for the binary values); the CopyData payloads from a raw
//! `START_REPLICATION SLOT ... LOGICAL 0/0 (proto_version '2', ...)` connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use plexus_connector_postgres::pgoutput::{
    Begin, ColumnValue, Commit, Decoder, Delete, Insert, LogicalMessage, Message, OldTuple, Origin, Relation,
    RelationColumn, ReplicaIdentity, StreamAbort, StreamCommit, StreamStart, Truncate, Tuple, Type, Update,
};
use plexus_connector_postgres::replication::{Lsn, PgTimestamp, PrimaryKeepalive, ReplicationMessage, XLogData};

fn hex(text: &str) -> Bytes {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    let digits = text
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16));
    Bytes::from(digits.collect::<Result<Vec<u8>, _>>().unwrap())
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap()
}

fn text(value: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(value.as_bytes()))
}

fn binary(value: &[u8]) -> ColumnValue {
    ColumnValue::Binary(Bytes::copy_from_slice(value))
}

fn tuple(columns: Vec<ColumnValue>) -> Tuple {
    Tuple { columns }
}

const USERS: u32 = 16_389;
const FULL_T: u32 = 16_396;
const BIG: u32 = 16_401;

/// `INSERT ... VALUES (5, 'from origin', 'b', 'sad')` from a session with replication
/// origin `upstream` and `pg_replication_origin_xact_setup('0/ABCDEF',
/// '2024-01-02 03:04:05.678901+00')`, then `INSERT ... VALUES (6, 'bin', 'b', 'happy')`,
/// as the walsender sent them.
const COPY_DATA: &[&str] = &[
    "6b00000000017d66e0000303d4e4c6383b00",
    "7700000000000000000000000000000000000303d4e4c639f84200000000017d6a400002b0ec85204f35000002e9",
    "7700000000017d694800000000017d6948000303d4e4c63a084f0000000000abcdef757073747265616d00",
    "7700000000000000000000000000000000000303d4e4c63a3359000040017075626c6963006d6f6f6400",
    "7700000000000000000000000000000000000303d4e4c63a8152000040057075626c6963007573657273006400040169640000000014ff\
     ffffff006e616d650000000413000000680062696f0000000019ffffffff006665656c696e670000004001ffffffff",
    "7700000000017d694800000000017d6948000303d4e4c63ab549000040054e0004740000000135740000000b66726f6d206f726967696e\
     7400000001627400000003736164",
    "7700000000017d6a8800000000017d6a88000303d4e4c63ac7430000000000017d6a4000000000017d6a880002b0ec85204f35",
    "7700000000017d6a8800000000017d6a88000303d4e4c63ad24200000000017d6b18000303d4e4140903000002ea",
    "7700000000017d6a8800000000017d6a88000303d4e4c63ad749000040054e0004740000000136740000000362696e7400000001627400\
     0000056861707079",
    "7700000000017d6b4800000000017d6b48000303d4e4c63ad9430000000000017d6b1800000000017d6b48000303d4e4140903",
    "6b0000000002000060000303d4e4c63be300",
];

#[test]
fn walsender_copy_data_decodes() {
    let mut decoder = Decoder::new();
    let mut decoded = Vec::new();
    let mut keepalives = Vec::new();
    for payload in COPY_DATA {
        match ReplicationMessage::decode(hex(payload)).unwrap() {
            ReplicationMessage::XLogData(XLogData {
                wal_start,
                wal_end,
                send_time,
                data,
            }) => {
                // The walsender sends wal_start = wal_end, and 0/0 for the messages that
                // have no WAL position of their own (Begin, Type, Relation).
                assert_eq!(wal_start, wal_end);
                assert!(send_time > PgTimestamp(0));
                decoded.push((wal_start, decoder.decode(data).unwrap()));
            }
            ReplicationMessage::PrimaryKeepalive(keepalive) => keepalives.push(keepalive),
        }
    }
    assert_eq!(
        keepalives,
        vec![
            PrimaryKeepalive {
                wal_end: lsn("0/17D66E0"),
                send_time: PgTimestamp(0x0003_03d4_e4c6_383b),
                reply_requested: false
            },
            PrimaryKeepalive {
                wal_end: lsn("0/2000060"),
                send_time: PgTimestamp(0x0003_03d4_e4c6_3be3),
                reply_requested: false
            },
        ]
    );

    let origin_commit_time = PgTimestamp(0x0002_b0ec_8520_4f35);
    assert_eq!(origin_commit_time.to_unix_millis(), 1_704_164_645_678); // 2024-01-02T03:04:05.678Z
    let second_commit_time = PgTimestamp(0x0003_03d4_e414_0903);
    let messages: Vec<(Lsn, Message)> = vec![
        (
            Lsn(0),
            Message::Begin(Begin {
                final_lsn: lsn("0/17D6A40"),
                commit_time: origin_commit_time,
                xid: 745,
            }),
        ),
        (
            lsn("0/17D6948"),
            Message::Origin(Origin {
                commit_lsn: lsn("0/ABCDEF"),
                name: "upstream".to_owned(),
            }),
        ),
        (
            Lsn(0),
            Message::Type(Type {
                xid: None,
                id: 16_385,
                namespace: "public".to_owned(),
                name: "mood".to_owned(),
            }),
        ),
        (Lsn(0), decoded[3].1.clone()), // the Relation, checked below
        (
            lsn("0/17D6948"),
            Message::Insert(Insert {
                xid: None,
                relation: USERS,
                new: tuple(vec![text("5"), text("from origin"), text("b"), text("sad")]),
            }),
        ),
        (
            lsn("0/17D6A88"),
            Message::Commit(Commit {
                commit_lsn: lsn("0/17D6A40"),
                end_lsn: lsn("0/17D6A88"),
                commit_time: origin_commit_time,
            }),
        ),
        (
            lsn("0/17D6A88"),
            Message::Begin(Begin {
                final_lsn: lsn("0/17D6B18"),
                commit_time: second_commit_time,
                xid: 746,
            }),
        ),
        (
            lsn("0/17D6A88"),
            Message::Insert(Insert {
                xid: None,
                relation: USERS,
                new: tuple(vec![text("6"), text("bin"), text("b"), text("happy")]),
            }),
        ),
        (
            lsn("0/17D6B48"),
            Message::Commit(Commit {
                commit_lsn: lsn("0/17D6B18"),
                end_lsn: lsn("0/17D6B48"),
                commit_time: second_commit_time,
            }),
        ),
    ];
    assert_eq!(decoded, messages);

    let Message::Relation(users) = &decoded[3].1 else {
        panic!("not a Relation: {:?}", decoded[3])
    };
    assert_eq!(
        (users.xid, users.id, users.namespace.as_str(), users.name.as_str()),
        (None, USERS, "public", "users")
    );
    assert_eq!(users.replica_identity, ReplicaIdentity::Default);
    let columns: Vec<_> = users
        .columns
        .iter()
        .map(|c| (c.is_key, c.name.as_str(), c.type_oid, c.type_modifier))
        .collect();
    assert_eq!(
        columns,
        vec![
            (true, "id", 20, -1),
            (false, "name", 1043, 104),
            (false, "bio", 25, -1),
            (false, "feeling", 16_385, -1)
        ]
    );
}

/// The changes of several transactions, in the order a v2 stream would bring them.
fn pgoutput_capture() -> Vec<(Bytes, Message)> {
    // The streamed insert's pad column is repeat('p', 100).
    let streamed_insert = format!("49000002e3000040114e00027400000001317400000064{}", "70".repeat(100));
    let captured: Vec<(&str, Message)> = vec![
        // UPDATE users SET name = 'Ada L' WHERE id = 1: the 12 kB bio is TOASTed and unchanged.
        (
            "55000040054e00047400000001317400000005416461204c7574000000056861707079",
            Message::Update(Update {
                xid: None,
                relation: USERS,
                old: None,
                new: tuple(vec![
                    text("1"),
                    text("Ada L"),
                    ColumnValue::UnchangedToast,
                    text("happy"),
                ]),
            }),
        ),
        // UPDATE users SET id = 3 WHERE id = 2: the key changed, so the old key comes first.
        (
            "55000040054b00047400000001326e6e6e4e00047400000001336e740000000573686f72746e",
            Message::Update(Update {
                xid: None,
                relation: USERS,
                old: Some(OldTuple::Key(tuple(vec![
                    text("2"),
                    ColumnValue::Null,
                    ColumnValue::Null,
                    ColumnValue::Null,
                ]))),
                new: tuple(vec![text("3"), ColumnValue::Null, text("short"), ColumnValue::Null]),
            }),
        ),
        (
            "44000040054b00047400000001336e6e6e",
            Message::Delete(Delete {
                xid: None,
                relation: USERS,
                old: OldTuple::Key(tuple(vec![
                    text("3"),
                    ColumnValue::Null,
                    ColumnValue::Null,
                    ColumnValue::Null,
                ])),
            }),
        ),
        (
            "550000400c4f00027400000001317400000001784e0002740000000131740000000179",
            Message::Update(Update {
                xid: None,
                relation: FULL_T,
                old: Some(OldTuple::Full(tuple(vec![text("1"), text("x")]))),
                new: tuple(vec![text("1"), text("y")]),
            }),
        ),
        (
            "440000400c4f0002740000000131740000000179",
            Message::Delete(Delete {
                xid: None,
                relation: FULL_T,
                old: OldTuple::Full(tuple(vec![text("1"), text("y")])),
            }),
        ),
        // TRUNCATE full_t, users RESTART IDENTITY CASCADE
        (
            "5400000002030000400c00004005",
            Message::Truncate(Truncate {
                xid: None,
                cascade: true,
                restart_identity: true,
                relations: vec![FULL_T, USERS],
            }),
        ),
        // pg_logical_emit_message(false, 'plexus.heartbeat', '{"ts":1}')
        (
            "4d00000000000153e120706c657875732e68656172746265617400000000087b227473223a317d",
            Message::LogicalMessage(LogicalMessage {
                xid: None,
                transactional: false,
                lsn: lsn("0/153E120"),
                prefix: "plexus.heartbeat".to_owned(),
                content: Bytes::from_static(b"{\"ts\":1}"),
            }),
        ),
        (
            "4d01000000000153e168706c657875732e74780000000005696e207478",
            Message::LogicalMessage(LogicalMessage {
                xid: None,
                transactional: true,
                lsn: lsn("0/153E168"),
                prefix: "plexus.tx".to_owned(),
                content: Bytes::from_static(b"in tx"),
            }),
        ),
        // With 'binary': int8 in its 8-byte send form, text and enums as their bytes.
        (
            "49000040054e000462000000080000000000000006620000000362696e62000000016262000000056861707079",
            Message::Insert(Insert {
                xid: None,
                relation: USERS,
                new: tuple(vec![
                    binary(&[0, 0, 0, 0, 0, 0, 0, 6]),
                    binary(b"bin"),
                    binary(b"b"),
                    binary(b"happy"),
                ]),
            }),
        ),
        // A 3000-row transaction larger than logical_decoding_work_mem, streamed.
        (
            "53000002e301",
            Message::StreamStart(StreamStart {
                xid: 739,
                first_segment: true,
            }),
        ),
        (
            "52000002e3000040117075626c696300626967006400020169640000000017ffffffff007061640000000019ffffffff",
            Message::Relation(Relation {
                xid: Some(739),
                id: BIG,
                namespace: "public".to_owned(),
                name: "big".to_owned(),
                replica_identity: ReplicaIdentity::Default,
                columns: vec![
                    RelationColumn {
                        is_key: true,
                        name: "id".to_owned(),
                        type_oid: 23,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        is_key: false,
                        name: "pad".to_owned(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                ],
            }),
        ),
        (
            &streamed_insert,
            Message::Insert(Insert {
                xid: Some(739),
                relation: BIG,
                new: tuple(vec![text("1"), text(&"p".repeat(100))]),
            }),
        ),
        ("45", Message::StreamStop),
        (
            "53000002e300",
            Message::StreamStart(StreamStart {
                xid: 739,
                first_segment: false,
            }),
        ),
        ("45", Message::StreamStop),
        (
            "63000002e30000000000015e43e800000000015e4418000303d4e2e9f8b2",
            Message::StreamCommit(StreamCommit {
                xid: 739,
                commit_lsn: lsn("0/15E43E8"),
                end_lsn: lsn("0/15E4418"),
                commit_time: PgTimestamp(0x0003_03d4_e2e9_f8b2),
            }),
        ),
        // ROLLBACK TO SAVEPOINT after streaming the subtransaction's rows, then a streamed
        // transaction rolled back as a whole.
        (
            "41000002e5000002e6",
            Message::StreamAbort(StreamAbort { xid: 741, subxid: 742 }),
        ),
        (
            "41000002e7000002e7",
            Message::StreamAbort(StreamAbort { xid: 743, subxid: 743 }),
        ),
    ];
    captured
        .into_iter()
        .map(|(bytes, message)| (hex(bytes), message))
        .collect()
}

#[test]
fn pgoutput_messages_decode() {
    let mut decoder = Decoder::new();
    for (bytes, expected) in pgoutput_capture() {
        let decoded = decoder
            .decode(bytes.clone())
            .unwrap_or_else(|error| panic!("{bytes:?}: {error}"));
        assert_eq!(decoded, expected);
    }
    assert!(!decoder.in_stream());
}

#[test]
fn every_truncation_of_real_messages_is_an_error() {
    let mut decoder = Decoder::new();
    for (bytes, _) in pgoutput_capture() {
        for len in 0..bytes.len() {
            let mut probe = decoder.clone();
            assert!(probe.decode(bytes.slice(..len)).is_err(), "{bytes:?} cut to {len}");
        }
        // Keep the stream state in step.
        decoder.decode(bytes).unwrap();
    }
}
