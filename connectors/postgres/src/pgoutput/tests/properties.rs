//! Property tests: any message round-trips, and no input (random, truncated, mutated)
//! makes the decoder panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::*;
use super::encoder::{encode, in_stream};

fn name() -> impl Strategy<Value = String> {
    // Any non-empty string without NUL (an empty namespace means pg_catalog).
    "[^\\x00]{1,12}"
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let value = prop_oneof![
        Just(ColumnValue::Null),
        Just(ColumnValue::UnchangedToast),
        bytes(16).prop_map(ColumnValue::Text),
        bytes(16).prop_map(ColumnValue::Binary),
    ];
    proptest::collection::vec(value, 0..6).prop_map(|columns| Tuple { columns })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![tuple().prop_map(OldTuple::Key), tuple().prop_map(OldTuple::Full)]
}

/// Any message, with streamed xids either on all the messages that can have one or on none.
fn message() -> impl Strategy<Value = Message> {
    let identity = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index)
    ];
    let column =
        (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(|(is_key, name, type_oid, type_modifier)| {
            RelationColumn {
                is_key,
                name,
                type_oid,
                type_modifier,
            }
        });
    let xid = proptest::option::of(any::<u32>());
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(lsn, time, xid)| Message::Begin(Begin {
            final_lsn: Lsn(lsn),
            commit_time: PgTimestamp(time),
            xid
        })),
        (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(commit, end, time)| Message::Commit(Commit {
            commit_lsn: Lsn(commit),
            end_lsn: Lsn(end),
            commit_time: PgTimestamp(time)
        })),
        (any::<u64>(), name()).prop_map(|(lsn, name)| Message::Origin(Origin {
            commit_lsn: Lsn(lsn),
            name
        })),
        (xid.clone(), any::<bool>(), any::<u64>(), "[^\\x00]{0,12}", bytes(32)).prop_map(
            |(xid, transactional, lsn, prefix, content)| Message::LogicalMessage(LogicalMessage {
                xid,
                transactional,
                lsn: Lsn(lsn),
                prefix,
                content
            })
        ),
        (
            xid.clone(),
            any::<u32>(),
            name(),
            name(),
            identity,
            proptest::collection::vec(column, 0..5)
        )
            .prop_map(
                |(xid, id, namespace, name, replica_identity, columns)| Message::Relation(Relation {
                    xid,
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns
                })
            ),
        (xid.clone(), any::<u32>(), name(), name()).prop_map(|(xid, id, namespace, name)| Message::Type(Type {
            xid,
            id,
            namespace,
            name
        })),
        (xid.clone(), any::<u32>(), tuple()).prop_map(|(xid, relation, new)| Message::Insert(Insert {
            xid,
            relation,
            new
        })),
        (xid.clone(), any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(xid, relation, old, new)| Message::Update(Update {
                xid,
                relation,
                old,
                new
            })
        ),
        (xid.clone(), any::<u32>(), old_tuple()).prop_map(|(xid, relation, old)| Message::Delete(Delete {
            xid,
            relation,
            old
        })),
        (
            xid,
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..6)
        )
            .prop_map(
                |(xid, cascade, restart_identity, relations)| Message::Truncate(Truncate {
                    xid,
                    cascade,
                    restart_identity,
                    relations
                })
            ),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| Message::StreamStart(StreamStart { xid, first_segment })),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(xid, commit, end, time)| {
            Message::StreamCommit(StreamCommit {
                xid,
                commit_lsn: Lsn(commit),
                end_lsn: Lsn(end),
                commit_time: PgTimestamp(time),
            })
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(xid, subxid)| Message::StreamAbort(StreamAbort { xid, subxid })),
    ]
}

/// A change to a valid message's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1..=u8::MAX).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    if bytes.is_empty() && !matches!(mutation, Mutation::Insert(..)) {
        return bytes;
    }
    match mutation {
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Mutation::Flip(at, bits) => {
            let at = at.index(bytes.len());
            bytes[at] ^= bits;
        }
        Mutation::Insert(at, byte) => {
            let at = at.index(bytes.len() + 1);
            bytes.insert(at, *byte);
        }
        Mutation::Remove(at) => {
            let at = at.index(bytes.len());
            bytes.remove(at);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_message_round_trips(message in message()) {
        prop_assert_eq!(decode(encode(&message), in_stream(&message)), Ok(message));
    }

    #[test]
    fn truncated_messages_are_errors(message in message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&message);
        let len = cut.index(bytes.len());
        prop_assert!(decode(bytes.slice(..len), in_stream(&message)).is_err());
    }

    #[test]
    fn mutated_messages_never_panic(
        message in message(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        in_stream in any::<bool>(),
    ) {
        let bytes = mutations.iter().fold(encode(&message).to_vec(), mutate);
        // Ok or Err, but no panic and no runaway allocation.
        let _ = decode(Bytes::from(bytes), in_stream);
    }

    #[test]
    fn random_bytes_never_panic(
        tag in prop::sample::select(b"BMCORYIUDTSEcAbPKrpZ".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        in_stream in any::<bool>(),
    ) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&body);
        let _ = decode(Bytes::from(bytes), in_stream);
    }

    #[test]
    fn decoder_never_panics_on_a_sequence(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 0..16),
    ) {
        let mut decoder = Decoder::new();
        for message in messages {
            let _ = decoder.decode(Bytes::from(message));
        }
    }
}
