//! End-to-end tests of the batch codec: builder -> bytes -> Batch -> records.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::header::seal_crc;
use super::*;

const CODECS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

fn decode_all(batch: &Batch) -> Vec<StoredRecord> {
    batch.records().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// A sealed batch from a hand-made header and records section.
fn craft(mut header: BatchHeader, section: &[u8]) -> Bytes {
    header.batch_length = (BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as i32;
    let mut out = header.encode().to_vec();
    out.extend_from_slice(section);
    seal_crc(&mut out);
    Bytes::from(out)
}

fn blank_header(record_count: i32, last_offset_delta: i32) -> BatchHeader {
    BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: 0,
        magic: MAGIC,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count,
    }
}

fn sample_batch(compression: Compression) -> BytesMut {
    let mut builder = BatchBuilder::new(compression);
    for i in 0..10u8 {
        builder.push(1_000 + i64::from(i), Some(&[i]), Some(b"value"), &[("h", Some(b"x"))]);
    }
    builder.finish(ProducerFields::NONE).unwrap()
}

#[test]
fn known_answer_single_record() {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(1000, Some(b"k"), Some(b"v"), &[("h", Some(b"x"))]);
    let producer = ProducerFields {
        producer_id: 0x0102_0304_0506_0708,
        producer_epoch: 9,
        base_sequence: 10,
    };
    let built = builder.finish(producer).unwrap();

    #[rustfmt::skip]
    let record: [u8; 13] = [
        0x18,       // length 12 (zig-zag)
        0x00,       // attributes
        0x00,       // timestampDelta 0
        0x00,       // offsetDelta 0
        0x02, b'k', // key
        0x02, b'v', // value
        0x02,       // one header
        0x02, b'h', 0x02, b'x',
    ];
    let mut expected = Vec::new();
    expected.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
    expected.extend_from_slice(&(49i32 + 13).to_be_bytes()); // batchLength
    expected.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    expected.push(2); // magic
    expected.extend_from_slice(&[0; 4]); // crc, filled below
    expected.extend_from_slice(&0i16.to_be_bytes()); // attributes
    expected.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    expected.extend_from_slice(&1000i64.to_be_bytes()); // baseTimestamp
    expected.extend_from_slice(&1000i64.to_be_bytes()); // maxTimestamp
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // producerId
    expected.extend_from_slice(&[0, 9]); // producerEpoch
    expected.extend_from_slice(&[0, 0, 0, 10]); // baseSequence
    expected.extend_from_slice(&1i32.to_be_bytes()); // recordCount
    expected.extend_from_slice(&record);
    let crc = crc32c::crc32c(&expected[21..]);
    expected[17..21].copy_from_slice(&crc.to_be_bytes());

    assert_eq!(&built[..], &expected[..]);
}

#[test]
fn decoded_values_are_slices_of_the_batch() {
    let bytes = sample_batch(Compression::None).freeze();
    let batch = Batch::new(bytes.clone()).unwrap();
    let range = bytes.as_ptr_range();
    for record in decode_all(&batch) {
        let value = record.value.unwrap();
        assert!(range.contains(&value.as_ptr()), "value was copied");
    }
}

#[test]
fn offsets_follow_the_patched_base_offset() {
    for codec in CODECS {
        let mut bytes = sample_batch(codec);
        set_base_offset(&mut bytes, 500);
        let batch = Batch::new(bytes.freeze()).unwrap();
        assert_eq!(batch.base_offset(), 500);
        assert_eq!(batch.last_offset(), 509);
        assert_eq!(batch.header().next_offset(), 510);
        assert_eq!(batch.record_count(), 10);
        assert_eq!(batch.max_timestamp(), 1009);
        assert_eq!(batch.header().compression().unwrap(), codec);
        let offsets: Vec<i64> = decode_all(&batch).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (500..510).collect::<Vec<_>>());
    }
}

#[test]
fn out_of_order_timestamps_rebase_to_the_minimum() {
    for codec in CODECS {
        let mut builder = BatchBuilder::new(codec);
        let timestamps = [5_000, 4_000, 9_000, -3, 4_500];
        for ts in timestamps {
            builder.push(ts, None, Some(b"v"), &[]);
        }
        let batch = Batch::new(builder.finish(ProducerFields::NONE).unwrap().freeze()).unwrap();
        assert_eq!(batch.header().base_timestamp, -3);
        assert_eq!(batch.max_timestamp(), 9_000);
        let decoded: Vec<i64> = decode_all(&batch).iter().map(|r| r.timestamp).collect();
        assert_eq!(decoded, timestamps);
    }
}

#[test]
fn add_header_to_last_changes_only_the_last_record() {
    let mut builder = BatchBuilder::new(Compression::None);
    assert!(matches!(builder.add_header_to_last("k", b"v"), Err(BatchError::Empty)));
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![i as u8; 10])),
            headers: [Header {
                key: "origin".into(),
                value: None,
            }]
            .into_iter()
            .collect(),
            timestamp: 100 + i,
        })
        .collect();
    for record in &records {
        builder.push_record(record);
    }
    builder.add_header_to_last("plexus.position", b"lsn/42").unwrap();
    builder.add_header_to_last("second", b"").unwrap();
    let batch = Batch::new(builder.finish(ProducerFields::NONE).unwrap().freeze()).unwrap();
    let decoded = decode_all(&batch);
    assert_eq!(decoded.len(), 3);
    for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
        let mut want_headers = want.headers.clone();
        if i == 2 {
            want_headers.push(Header {
                key: "plexus.position".into(),
                value: Some(Bytes::from_static(b"lsn/42")),
            });
            want_headers.push(Header {
                key: "second".into(),
                value: Some(Bytes::new()),
            });
        }
        assert_eq!(got.key, want.key);
        assert_eq!(got.value, want.value);
        assert_eq!(got.timestamp, want.timestamp);
        assert_eq!(got.headers, want_headers, "record {i}");
    }
}

#[test]
fn add_header_to_last_across_varint_size_boundaries() {
    // 63 -> 64 headers grows the count varint; growing values push the
    // record length across the 1- and 2-byte varint boundaries.
    for initial in [0usize, 62, 63, 64] {
        for value_len in [0usize, 40, 50, 60, 8_180, 8_200] {
            let headers: Vec<(String, Vec<u8>)> = (0..initial).map(|i| (format!("h{i}"), vec![1])).collect();
            let refs: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))).collect();
            let mut builder = BatchBuilder::new(Compression::None);
            builder.push(7, None, Some(b"first"), &[]);
            builder.push(8, Some(b"k"), None, &refs);
            builder.add_header_to_last("added", &vec![2; value_len]).unwrap();
            let batch = Batch::new(builder.finish(ProducerFields::NONE).unwrap().freeze()).unwrap();
            let decoded = decode_all(&batch);
            assert_eq!(decoded[0].value.as_deref(), Some(&b"first"[..]));
            assert!(decoded[0].headers.is_empty());
            let last = &decoded[1];
            assert_eq!(last.headers.len(), initial + 1);
            assert_eq!(last.headers[initial].key, "added");
            assert_eq!(last.headers[initial].value.as_deref().map(<[u8]>::len), Some(value_len));
            assert_eq!(last.key.as_deref(), Some(&b"k"[..]));
            assert_eq!(last.value, None);
        }
    }
}

#[test]
fn compacted_batches_keep_offset_gaps_and_range() {
    for codec in CODECS {
        let mut builder = BatchBuilder::new(codec);
        builder
            .push_with_offset_delta(2, 10, Some(b"a"), Some(b"1"), &[])
            .unwrap();
        builder
            .push_with_offset_delta(5, 11, Some(b"b"), None, &[("h", None)])
            .unwrap();
        assert!(matches!(
            builder.push_with_offset_delta(5, 12, None, None, &[]),
            Err(BatchError::OffsetDeltaNotIncreasing {
                previous: 5,
                offset_delta: 5
            })
        ));
        // `push` continues after the last explicit delta.
        builder.push(13, Some(b"c"), Some(b"3"), &[]);
        assert_eq!(builder.len(), 3);
        let mut bytes = builder.finish_with_last_offset_delta(ProducerFields::NONE, 9).unwrap();
        set_base_offset(&mut bytes, 100);
        let batch = Batch::new(bytes.freeze()).unwrap();
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.last_offset(), 109);
        let offsets: Vec<i64> = decode_all(&batch).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [102, 105, 106]);

        assert!(matches!(
            builder.push_with_offset_delta(-1, 0, None, None, &[]),
            Err(BatchError::OffsetDeltaNotIncreasing { previous: -1, .. })
        ));
        builder.push_with_offset_delta(4, 0, None, None, &[]).unwrap();
        assert!(matches!(
            builder.finish_with_last_offset_delta(ProducerFields::NONE, 3),
            Err(BatchError::OffsetDeltaOutOfRange {
                offset_delta: 4,
                last_offset_delta: 3
            })
        ));
        assert!(builder.is_empty(), "a failed finish still resets");
    }
}

#[test]
fn finish_resets_and_reuses_the_builder() {
    let mut builder = BatchBuilder::with_capacity(Compression::Lz4, 4096);
    assert!(matches!(builder.finish(ProducerFields::NONE), Err(BatchError::Empty)));
    for codec in CODECS {
        let mut reused = BatchBuilder::new(codec);
        for round in 0..4u8 {
            let mut fresh = BatchBuilder::new(codec);
            for builder in [&mut reused, &mut fresh] {
                for i in 0..200u8 {
                    builder.push(i64::from(round) * 10 - i64::from(i % 7), None, Some(&[i; 100]), &[]);
                }
                assert_eq!(builder.len(), 200);
                assert!(builder.size_bytes() > 200 * 100);
            }
            let a = reused.finish(ProducerFields::NONE).unwrap();
            let b = fresh.finish(ProducerFields::NONE).unwrap();
            assert_eq!(a, b, "{codec} round {round}");
            assert!(reused.is_empty());
            assert_eq!(reused.size_bytes(), BATCH_HEADER_LEN);
        }
    }
}

#[test]
fn corrupt_batches_are_rejected() {
    let good = sample_batch(Compression::None);

    let mut flipped = good.clone();
    flipped[70] ^= 0x10;
    assert!(matches!(
        Batch::new(flipped.freeze()),
        Err(BatchError::CrcMismatch { .. })
    ));

    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    assert!(matches!(Batch::new(bad_magic.freeze()), Err(BatchError::BadMagic(1))));

    let mut longer = good.clone();
    longer.extend_from_slice(&[0]);
    assert!(matches!(
        Batch::new(longer.freeze()),
        Err(BatchError::LengthMismatch { .. })
    ));

    let short = good.clone().freeze().slice(..good.len() - 1);
    assert!(matches!(Batch::new(short), Err(BatchError::Truncated { .. })));
}

#[test]
fn gzip_batches_are_reported_unsupported() {
    let good = sample_batch(Compression::None);
    let mut header = BatchHeader::parse(&good).unwrap();
    header.attributes = 1;
    let gzip = craft(header, &good[BATCH_HEADER_LEN..]);
    let batch = Batch::new(gzip).unwrap();
    let err = batch.records().unwrap_err();
    assert!(matches!(err, BatchError::UnsupportedCompression(1)));
    assert!(err.to_string().contains("gzip"));
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let good = sample_batch(Compression::None);
    let mut header = BatchHeader::parse(&good).unwrap();
    header.attributes |= 0x08;
    header.max_timestamp = 777;
    let batch = Batch::new(craft(header, &good[BATCH_HEADER_LEN..])).unwrap();
    assert!(decode_all(&batch).iter().all(|r| r.timestamp == 777));
}

#[test]
fn malformed_sections_give_specific_errors() {
    // One record, seven bytes, all minimal.
    let minimal = [0x0c, 0, 0, 0, 0x01, 0x01, 0];
    let batch = Batch::new(craft(blank_header(1, 0), &minimal)).unwrap();
    let record = decode_all(&batch).remove(0);
    assert_eq!((record.key, record.value), (None, None));

    /// Records section, recordCount, expected error.
    type Case<'a> = (&'a [u8], i32, fn(&BatchError) -> bool);
    let cases: [Case<'_>; 7] = [
        // recordCount 2 cannot fit in 7 bytes.
        (&minimal, 2, |e| {
            matches!(
                e,
                BatchError::TooManyRecords {
                    record_count: 2,
                    section_len: 7
                }
            )
        }),
        // Declared length 7, but the fields take 6.
        (&[0x0e, 0, 0, 0, 0x01, 0x01, 0, 0], 1, |e| {
            matches!(
                e,
                BatchError::RecordLengthMismatch {
                    declared: 7,
                    consumed: 6
                }
            )
        }),
        // A byte after the last record.
        (&[0x0c, 0, 0, 0, 0x01, 0x01, 0, 0], 1, |e| {
            matches!(e, BatchError::TrailingBytes { count: 1 })
        }),
        // Key length 5 with one byte left in the record.
        (&[0x0c, 0, 0, 0, 0x0a, 0x01, 0], 1, |e| {
            matches!(e, BatchError::Truncated { .. })
        }),
        // Offset delta 1 beyond lastOffsetDelta 0.
        (&[0x0c, 0, 0, 0x02, 0x01, 0x01, 0], 1, |e| {
            matches!(e, BatchError::OffsetDeltaOutOfRange { offset_delta: 1, .. })
        }),
        // Header key 0xff is not UTF-8.
        (&[0x12, 0, 0, 0, 0x01, 0x01, 0x02, 0x02, 0xff, 0x01], 1, |e| {
            matches!(e, BatchError::InvalidHeaderKey(_))
        }),
        // Negative record length.
        (&[0x03, 0, 0, 0, 0x01, 0x01, 0], 1, |e| {
            matches!(
                e,
                BatchError::NegativeLength {
                    field: "record",
                    length: -2
                }
            )
        }),
    ];
    for (i, (section, count, check)) in cases.into_iter().enumerate() {
        let batch = Batch::new(craft(blank_header(count, 0), section)).unwrap();
        let err = match batch.records() {
            Err(err) => err,
            Ok(mut records) => {
                let item = records.next().expect("one item");
                assert!(records.next().is_none(), "case {i}: iteration must end after an error");
                assert_eq!(records.remaining(), 0);
                item.unwrap_err()
            }
        };
        assert!(check(&err), "case {i}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

fn record_strategy() -> impl Strategy<Value = Record> {
    let bytes = |max: usize| proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from));
    let header = ("[a-z.é]{0,12}", bytes(64)).prop_map(|(key, value)| Header { key, value });
    let timestamp = prop_oneof![any::<i64>(), -1_000_000i64..2_000_000_000_000];
    (
        bytes(64),
        bytes(3000),
        proptest::collection::vec(header, 0..4),
        timestamp,
    )
        .prop_map(|(key, value, headers, timestamp)| Record {
            key,
            value,
            headers,
            timestamp,
        })
}

fn codec_strategy() -> impl Strategy<Value = Compression> {
    prop_oneof![Just(Compression::None), Just(Compression::Lz4), Just(Compression::Zstd)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn records_round_trip(
        records in proptest::collection::vec(record_strategy(), 1..40),
        codec in codec_strategy(),
        base_offset in 0i64..i64::MAX / 2,
        producer_id in any::<i64>(),
    ) {
        let mut builder = BatchBuilder::new(codec);
        for (i, record) in records.iter().enumerate() {
            if i % 2 == 0 {
                builder.push_record(record);
            } else {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    record.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())).collect();
                builder.push(record.timestamp, record.key.as_deref(), record.value.as_deref(), &headers);
            }
        }
        let producer = ProducerFields { producer_id, producer_epoch: 3, base_sequence: 17 };
        let mut bytes = builder.finish(producer).unwrap();
        set_base_offset(&mut bytes, base_offset);
        let batch = Batch::new(bytes.freeze()).unwrap();
        let header = *batch.header();
        prop_assert_eq!(header.compression().unwrap(), codec);
        prop_assert_eq!(header.base_timestamp, records.iter().map(|r| r.timestamp).min().unwrap());
        prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (producer_id, 3, 17));
        prop_assert_eq!(batch.record_count(), records.len());
        prop_assert_eq!(batch.last_offset(), base_offset + records.len() as i64 - 1);

        let decoded = decode_all(&batch);
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (got, want)) in decoded.into_iter().zip(&records).enumerate() {
            let want = StoredRecord {
                offset: base_offset + i as i64,
                timestamp: want.timestamp,
                key: want.key.clone(),
                value: want.value.clone(),
                headers: want.headers.clone(),
            };
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = BatchHeader::parse(&bytes);
        let _ = verify_crc(&bytes);
        if let Ok(batch) = Batch::new(Bytes::from(bytes))
            && let Ok(records) = batch.records()
        {
            records.for_each(drop);
        }
    }

    #[test]
    fn bit_flips_are_caught_by_the_crc(codec in codec_strategy(), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let good = sample_batch(codec);
        let at = position.index(good.len());
        let mut flipped = good.clone();
        flipped[at] ^= 1 << bit;
        let outside_crc = at < 8 || (12..16).contains(&at);
        match Batch::new(flipped.freeze()) {
            Ok(batch) => {
                prop_assert!(outside_crc, "flip at {} went unnoticed", at);
                if let Ok(records) = batch.records() {
                    records.for_each(drop);
                }
            }
            Err(_) => prop_assert!(!outside_crc, "flip at {} outside the CRC was rejected", at),
        }
    }

    #[test]
    fn truncations_are_rejected(codec in codec_strategy(), cut in any::<prop::sample::Index>()) {
        let good = sample_batch(codec).freeze();
        let len = cut.index(good.len());
        prop_assert!(Batch::new(good.slice(..len)).is_err());
    }

    #[test]
    fn garbage_behind_a_valid_header_never_panics(
        codec_bits in 0i16..8,
        timestamp_type in any::<bool>(),
        record_count in prop_oneof![0i32..20, any::<i32>()],
        last_offset_delta in prop_oneof![0i32..20, any::<i32>()],
        base_offset in any::<i64>(),
        section in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut header = blank_header(record_count.max(0), last_offset_delta.max(0));
        header.attributes = codec_bits | if timestamp_type { 0x08 } else { 0 };
        header.base_offset = base_offset;
        let batch = Batch::new(craft(header, &section)).unwrap();
        if let Ok(records) = batch.records() {
            let remaining = records.remaining();
            prop_assert!(records.count() <= remaining);
        }
    }

    #[test]
    fn mutated_records_sections_never_panic(
        codec in codec_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let good = sample_batch(codec);
        let header = BatchHeader::parse(&good).unwrap();
        let mut section = good[BATCH_HEADER_LEN..].to_vec();
        for (at, byte) in edits {
            let at = at.index(section.len());
            section[at] = byte;
        }
        let batch = Batch::new(craft(header, &section)).unwrap();
        if let Ok(records) = batch.records() {
            for record in records.flatten() {
                prop_assert!((0..=header.last_offset_delta as i64).contains(&record.offset));
            }
        }
    }
}
