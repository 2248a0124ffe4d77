//! Behaviour of topics and partitions through the public API, on real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plexus_log::{
    AppendOutcome, BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogError, Partition, Position, ProducerId,
    TopicConfig,
};

fn small_segments() -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        max_batch_bytes: 4096,
        ..TopicConfig::default()
    }
}

async fn append_values(partition: &Arc<Partition>, values: &[&str], timestamp: i64) -> AppendOutcome {
    let mut batch = BatchBuilder::new(Compression::None);
    for value in values {
        batch.push(timestamp, Some(value.as_bytes()), Some(value.as_bytes()), &[]);
    }
    partition.append(&mut batch).await.unwrap()
}

async fn read_all(partition: &Arc<Partition>, from: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let fetch = partition.read(offset, 1000).await.unwrap();
        if fetch.is_empty() {
            return out;
        }
        for record in fetch.records() {
            let record = record.unwrap();
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            out.push((record.offset, value));
        }
        offset = fetch.next_offset();
    }
}

#[tokio::test]
async fn offsets_are_dense_and_survive_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 2,
                ..small_segments()
            },
        )
        .await
        .unwrap();
    let p0 = Arc::clone(topic.partition(0).unwrap());
    let mut expected = Vec::new();
    for i in 0..200 {
        let values: Vec<String> = (0..3)
            .map(|j| format!("value-{i}-{j}-{}", "x".repeat(i % 50)))
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let outcome = append_values(&p0, &refs, 1_000 + i as i64).await;
        assert_eq!(outcome.base_offset(), Some(3 * i as i64));
        for (j, v) in values.into_iter().enumerate() {
            expected.push((3 * i as i64 + j as i64, v));
        }
    }
    assert!(
        p0.segment_count() > 5,
        "segments rolled on size: {}",
        p0.segment_count()
    );
    assert_eq!(p0.end_offset(), 600);
    assert_eq!(read_all(&p0, 0).await, expected);
    // A read from the middle of a batch returns records from that offset on.
    assert_eq!(read_all(&p0, 301).await, expected[301..].to_vec());
    // The other partition is independent.
    assert_eq!(topic.partition(1).unwrap().end_offset(), 0);
    log.close().await.unwrap();

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.topic("orders").expect("topic metadata survives");
    assert_eq!(topic.partitions().len(), 2);
    assert_eq!(topic.config().segment_bytes, 4096);
    let p0 = Arc::clone(topic.partition(0).unwrap());
    assert_eq!(p0.end_offset(), 600);
    assert_eq!(read_all(&p0, 0).await, expected);
    let outcome = append_values(&p0, &["after-reopen"], 5_000).await;
    assert_eq!(outcome.base_offset(), Some(600));
}

#[tokio::test]
async fn reads_respect_the_byte_limit_but_return_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.create_topic("t", TopicConfig::default()).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());
    let big = "b".repeat(3000);
    for _ in 0..4 {
        append_values(&p, &[&big], 1).await;
    }
    let fetch = p.read(0, 10).await.unwrap();
    assert_eq!(fetch.batches().len(), 1, "one batch even if larger than the limit");
    // Each batch holds a 3000-byte key and a 3000-byte value.
    let fetch = p.read(0, 12_500).await.unwrap();
    assert_eq!(fetch.batches().len(), 2);
    assert!(fetch.bytes() <= 12_500 && fetch.bytes() > 12_000, "{}", fetch.bytes());
    assert_eq!(fetch.next_offset(), 2);
    // At the end: empty; past the end or before the start: an error naming the range.
    assert!(p.read(4, 100).await.unwrap().is_empty());
    let err = p.read(5, 100).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OffsetOutOfRange {
                offset: 5,
                start: 0,
                end: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn batches_larger_than_a_read_chunk_are_read_whole_with_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        max_batch_bytes: 1 << 20,
        ..TopicConfig::default()
    };
    let topic = log.create_topic("t", config).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());
    // Reads take the data in chunks of at least 64 KiB: batches of 150 KB, 10 B, 300 KB.
    let values = [
        "a".repeat(150_000),
        "small".to_owned(),
        "c".repeat(300_000),
        "end".to_owned(),
    ];
    for value in &values {
        append_values(&p, &[value], 1).await;
    }
    let expected: Vec<(i64, String)> = values.iter().enumerate().map(|(i, v)| (i as i64, v.clone())).collect();
    for max_bytes in [1, 1000, 64 << 10, 200_000, 1 << 20] {
        let mut got = Vec::new();
        let mut offset = 0;
        loop {
            let fetch = p.read(offset, max_bytes).await.unwrap();
            if fetch.is_empty() {
                break;
            }
            for record in fetch.records() {
                let record = record.unwrap();
                got.push((
                    record.offset,
                    String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
                ));
            }
            offset = fetch.next_offset();
        }
        assert_eq!(got, expected, "reading with max_bytes = {max_bytes}");
    }
}

#[tokio::test]
async fn batches_on_disk_are_kafka_record_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.create_topic("raw", TopicConfig::default()).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());
    append_values(&p, &["a", "b"], 7).await;
    append_values(&p, &["c"], 8).await;
    let file = dir.path().join("topics/raw/0/00000000000000000000.log");
    let bytes = std::fs::read(&file).unwrap();
    // Second batch: base offset 2, magic 2, CRC-32C over attributes..end.
    let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let second = &bytes[first_len..];
    assert_eq!(i64::from_be_bytes(second[0..8].try_into().unwrap()), 2);
    assert_eq!(second[16] as i8, 2);
    let crc = u32::from_be_bytes(second[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&second[21..]));
    // The fetch hands out exactly those bytes.
    let fetch = p.read(2, 1 << 20).await.unwrap();
    assert_eq!(fetch.batches()[0].bytes().as_ref(), second);
}

#[tokio::test]
async fn compressed_batches_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.create_topic("z", TopicConfig::default()).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());
    for compression in [Compression::Zstd, Compression::Lz4, Compression::None] {
        let mut batch = BatchBuilder::new(compression);
        for i in 0..100 {
            let value = format!("{{\"id\":{i},\"name\":\"customer {i}\"}}");
            batch.push(i, None, Some(value.as_bytes()), &[("h", Some(b"v"))]);
        }
        p.append(&mut batch).await.unwrap();
    }
    let fetch = p.read(0, 1 << 20).await.unwrap();
    let records: Vec<_> = fetch.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 300);
    assert_eq!(records[150].offset, 150);
    assert_eq!(
        records[150].value.as_deref(),
        Some(&b"{\"id\":50,\"name\":\"customer 50\"}"[..])
    );
    assert_eq!(records[150].headers[0].key, "h");
    assert!(
        fetch.batches()[0].bytes().len() < fetch.batches()[2].bytes().len(),
        "zstd batch is smaller"
    );
}

#[tokio::test]
async fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.create_topic("ts", small_segments()).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());
    // Offsets 2i and 2i+1 carry timestamps 10i and 10i+5.
    for i in 0..300i64 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.push(10 * i, None, Some(b"0123456789"), &[]);
        batch.push(10 * i + 5, None, Some(b"0123456789"), &[]);
        p.append(&mut batch).await.unwrap();
    }
    assert!(p.segment_count() > 3);
    assert_eq!(p.offset_for_timestamp(-100).await.unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(0).await.unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(1).await.unwrap(), Some(1));
    assert_eq!(p.offset_for_timestamp(6).await.unwrap(), Some(2));
    assert_eq!(p.offset_for_timestamp(1_505).await.unwrap(), Some(301));
    assert_eq!(p.offset_for_timestamp(2_995).await.unwrap(), Some(599));
    assert_eq!(p.offset_for_timestamp(2_996).await.unwrap(), None);
    log.close().await.unwrap();
    // Same answers from indexes loaded from disk.
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("ts").unwrap().partition(0).unwrap());
    assert_eq!(p.offset_for_timestamp(1_505).await.unwrap(), Some(301));
    assert_eq!(p.offset_for_timestamp(12).await.unwrap(), Some(3));
}

#[tokio::test]
async fn long_poll_wakes_on_append_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let topic = log.create_topic("poll", TopicConfig::default()).await.unwrap();
    let p = Arc::clone(topic.partition(0).unwrap());

    let started = std::time::Instant::now();
    let fetch = p.read_wait(0, 1024, Duration::from_millis(100)).await.unwrap();
    assert!(fetch.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(90));

    let reader = {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.read_wait(0, 1024, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    append_values(&p, &["wake"], 1).await;
    let fetch = reader.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the append, not the timeout"
    );
    assert_eq!(fetch.records().count(), 1);
}

#[tokio::test]
async fn producer_positions_refuse_replays_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let producer = ProducerId::from_name("file-source");
    let config = TopicConfig {
        fsync: FsyncPolicy::Always,
        ..small_segments()
    };
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.create_topic("cdc", config).await.unwrap().partition(0).unwrap());
    for lsn in 1..=50u64 {
        let mut batch = BatchBuilder::new(Compression::Lz4);
        batch.push(1, Some(b"k"), Some(&[b'v'; 200]), &[]);
        let outcome = p
            .append_with_position(&mut batch, producer, Position::from_parts(&[lsn, 0]))
            .await
            .unwrap();
        assert_eq!(outcome.base_offset(), Some(lsn as i64 - 1));
    }
    assert!(p.segment_count() > 1, "positions must survive rolls too");
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(1, Some(b"k"), Some(b"again"), &[]);
    let outcome = p
        .append_with_position(&mut batch, producer, Position::from_parts(&[50, 0]))
        .await
        .unwrap();
    assert!(
        matches!(outcome, AppendOutcome::AlreadyWritten { ref last } if last.last_offset == 49),
        "{outcome:?}"
    );
    // Drop without close: recovery rebuilds positions from the snapshot and the tail.
    drop(p);
    drop(log);

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("cdc").unwrap().partition(0).unwrap());
    let last = p.producer_position(producer).expect("position after restart");
    assert_eq!(last.position, Position::from_parts(&[50, 0]));
    assert_eq!(last.last_offset, 49);
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(1, Some(b"k"), Some(b"replayed"), &[]);
    let outcome = p
        .append_with_position(&mut batch, producer, Position::from_parts(&[49, 9]))
        .await
        .unwrap();
    assert!(matches!(outcome, AppendOutcome::AlreadyWritten { .. }));
    assert_eq!(p.end_offset(), 50);
    // Another producer is independent; the records carry the position header.
    let other = ProducerId::from_name("other");
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(1, None, Some(b"x"), &[]);
    let outcome = p
        .append_with_position(&mut batch, other, Position::from_u64(1))
        .await
        .unwrap();
    assert_eq!(outcome.base_offset(), Some(50));
    let record = p.read(50, 1024).await.unwrap().records().next().unwrap().unwrap();
    let header = record
        .headers
        .iter()
        .find(|h| h.key == plexus_log::POSITION_HEADER)
        .unwrap();
    assert_eq!(header.value.as_deref(), Some(&1u64.to_be_bytes()[..]));
}

#[tokio::test]
async fn group_commit_makes_concurrent_appends_durable_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        fsync: FsyncPolicy::Always,
        ..TopicConfig::default()
    };
    let p = Arc::clone(log.create_topic("durable", config).await.unwrap().partition(0).unwrap());
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let mut batch = BatchBuilder::new(Compression::None);
                batch.push(1, None, Some(format!("{writer}-{i}").as_bytes()), &[]);
                let outcome = p.append(&mut batch).await.unwrap();
                // Acknowledged means visible to readers.
                assert!(p.end_offset() > outcome.base_offset().unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(p.end_offset(), 200);
    let values: std::collections::HashSet<_> = read_all(&p, 0).await.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.len(), 200);
}

#[tokio::test]
async fn interval_policy_flushes_in_the_background_and_close_records_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let interval = TopicConfig {
        fsync: FsyncPolicy::Interval {
            interval: Duration::from_millis(20),
        },
        ..TopicConfig::default()
    };
    let p = Arc::clone(
        log.create_topic("interval", interval)
            .await
            .unwrap()
            .partition(0)
            .unwrap(),
    );
    let never = Arc::clone(
        log.create_topic("never", TopicConfig::default())
            .await
            .unwrap()
            .partition(0)
            .unwrap(),
    );
    append_values(&p, &["a", "b"], 1).await;
    append_values(&never, &["a", "b"], 1).await;
    // Readers see appends at once under both policies; durability follows the policy.
    assert_eq!((p.end_offset(), never.end_offset()), (2, 2));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.durable_offset() < 2 {
        assert!(std::time::Instant::now() < deadline, "the interval flusher never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(never.durable_offset(), 0, "`never` does not fsync on its own");
    never.flush().await.unwrap();
    assert_eq!(never.durable_offset(), 2);
    log.close().await.unwrap();
    for topic in ["interval", "never"] {
        let text = std::fs::read_to_string(dir.path().join(format!("topics/{topic}/0/recovery-point"))).unwrap();
        assert_eq!(text.trim(), "2");
    }
}

#[tokio::test]
async fn topics_are_created_on_first_write_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    assert!(matches!(
        log.partition("missing", 0).await,
        Err(LogError::UnknownTopic(_))
    ));
    log.close().await.unwrap();

    let mut config = LogConfig::new(dir.path());
    config.auto_create_topics = true;
    config.default_topic.partitions = 3;
    let log = Log::open(config).await.unwrap();
    let p = log.partition("auto", 2).await.unwrap();
    append_values(&p, &["x"], 1).await;
    assert_eq!(log.topic("auto").unwrap().partitions().len(), 3);
    let err = log.partition("auto", 3).await.unwrap_err();
    assert!(err.to_string().contains("partition 3 does not exist"), "{err}");
}

#[tokio::test]
async fn bad_names_settings_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    for name in ["", "..", "a/b", "spaces here", &"x".repeat(250)] {
        let err = log.create_topic(name, TopicConfig::default()).await.unwrap_err();
        assert!(matches!(err, LogError::InvalidTopicName { .. }), "{name}: {err}");
    }
    log.create_topic("ok", TopicConfig::default()).await.unwrap();
    assert!(matches!(
        log.create_topic("ok", TopicConfig::default()).await,
        Err(LogError::TopicExists(_))
    ));
    let err = log
        .create_topic(
            "bad",
            TopicConfig {
                segment_bytes: 0,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("segment_bytes"), "{err}");
    // A batch over the limit is refused with its size.
    let p = Arc::clone(
        log.create_topic(
            "small",
            TopicConfig {
                max_batch_bytes: 1024,
                ..TopicConfig::default()
            },
        )
        .await
        .unwrap()
        .partition(0)
        .unwrap(),
    );
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(1, None, Some(&[0u8; 2000]), &[]);
    let err = p.append(&mut batch).await.unwrap_err();
    assert!(matches!(err, LogError::BatchTooLarge { max: 1024, .. }), "{err}");
    assert_eq!(p.end_offset(), 0);
}

#[tokio::test]
async fn a_data_directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let err = Log::open(LogConfig::new(dir.path())).await.unwrap_err();
    assert!(matches!(err, LogError::DataDirLocked { .. }));
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    log.close().await.unwrap();
    Log::open(LogConfig::new(dir.path()))
        .await
        .expect("lock released on close");
}

#[tokio::test]
async fn consumer_group_offsets_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let groups = log.groups();
    groups.commit("billing", "orders", 0, 10, "").await.unwrap();
    groups.commit("billing", "orders", 0, 25, "second").await.unwrap();
    groups
        .commit_many("billing", &[("orders", 1, 7), ("customers", 0, 3)], "")
        .await
        .unwrap();
    groups.commit("audit", "orders", 0, 1, "").await.unwrap();
    groups.delete_group("audit").await.unwrap();
    drop(log);

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let groups = log.groups();
    let committed = groups.committed("billing", "orders", 0).unwrap();
    assert_eq!((committed.offset, committed.metadata.as_str()), (25, "second"));
    assert_eq!(groups.committed("billing", "orders", 1).unwrap().offset, 7);
    assert_eq!(groups.committed("billing", "customers", 0).unwrap().offset, 3);
    assert_eq!(groups.committed("audit", "orders", 0), None);
    assert_eq!(groups.group_names(), vec!["billing".to_string()]);
    assert_eq!(groups.group_offsets("billing").len(), 3);
    assert!(log.topic_names().contains(&plexus_log::GROUPS_TOPIC.to_string()));
}

#[tokio::test]
async fn retention_deletes_whole_old_segments_by_time_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        retention_time: Some(Duration::from_secs(3600)),
        retention_bytes: Some(3 * 4096),
        ..small_segments()
    };
    let p = Arc::clone(log.create_topic("ret", config).await.unwrap().partition(0).unwrap());
    let now = plexus_now();
    let value = "v".repeat(900);
    // 20 old batches, then 20 fresh ones; each segment holds 4 batches.
    for i in 0..40 {
        let ts = if i < 20 { now - 7_200_000 } else { now };
        append_values(&p, &[&value], ts).await;
    }
    let before = p.segment_count();
    let report = p.enforce_retention(now).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(p.segment_count(), before - report.deleted_segments);
    assert_eq!(p.start_offset(), report.log_start_offset);
    // Size limit: at most 3 segments' worth plus the active one remain, and everything
    // old by time is gone.
    assert!(p.size_bytes() <= 4 * 4096, "{}", p.size_bytes());
    assert!(p.start_offset() >= 20);
    let err = p.read(0, 100).await.unwrap_err();
    assert!(matches!(err, LogError::OffsetOutOfRange { .. }));
    let remaining = read_all(&p, p.start_offset()).await;
    assert_eq!(remaining.last().unwrap().0, 39);
    // Deleted files are gone from disk, and a reopen agrees.
    let files = std::fs::read_dir(dir.path().join("topics/ret/0")).unwrap().count();
    assert!(files < 3 * before, "{files} files left");
    let start = p.start_offset();
    drop(p);
    log.close().await.unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    assert_eq!(log.topic("ret").unwrap().partition(0).unwrap().start_offset(), start);
}

fn plexus_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn compaction_keeps_the_latest_value_per_key_without_changing_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        delete_retention: Duration::from_secs(60),
        ..TopicConfig {
            segment_bytes: 2048,
            index_interval_bytes: 128,
            max_batch_bytes: 2048,
            ..TopicConfig::compacted()
        }
    };
    let p = Arc::clone(log.create_topic("state", config).await.unwrap().partition(0).unwrap());
    let now = plexus_now();
    let mut latest = std::collections::BTreeMap::new();
    // 10 keys updated 30 times each; key 3 deleted recently, key 4 deleted long ago.
    for round in 0..30 {
        let mut batch = BatchBuilder::new(if round % 2 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        });
        for key in 0..10 {
            let k = format!("key-{key}");
            let v = format!("{key}@{round}");
            batch.push(now, Some(k.as_bytes()), Some(v.as_bytes()), &[]);
        }
        let base = p.append(&mut batch).await.unwrap().base_offset().unwrap();
        for key in 0..10 {
            latest.insert(format!("key-{key}"), (base + key, Some(format!("{key}@{round}"))));
        }
    }
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(now, Some(b"key-3"), None, &[]);
    batch.push(now - 3_600_000, Some(b"key-4"), None, &[]);
    let base = p.append(&mut batch).await.unwrap().base_offset().unwrap();
    latest.insert("key-3".into(), (base, None));
    latest.remove("key-4");
    p.roll_now().unwrap();
    p.flush().await.unwrap();
    let end = p.end_offset();

    let report = p.compact(now).unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before / 4, "{report:?}");
    assert_eq!(p.end_offset(), end, "offsets never change");
    assert_eq!(p.start_offset(), 0);

    let check = |records: Vec<plexus_log::StoredRecord>| {
        let got: std::collections::BTreeMap<String, (i64, Option<String>)> = records
            .into_iter()
            .map(|r| {
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                (key, (r.offset, r.value.map(|v| String::from_utf8(v.to_vec()).unwrap())))
            })
            .collect();
        got
    };
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let fetch = p.read(offset, 4096).await.unwrap();
        if fetch.is_empty() {
            break;
        }
        records.extend(fetch.records().map(Result::unwrap));
        offset = fetch.next_offset();
    }
    assert_eq!(
        records.len(),
        latest.len(),
        "one record per live key, the tombstone of key-3 kept"
    );
    assert_eq!(check(records), latest);
    // Reading from an offset that compaction removed moves on to the next record.
    let fetch = p.read(5, 4096).await.unwrap();
    assert!(fetch.records().next().unwrap().unwrap().offset > 5);

    // The compacted segments are what a reopen finds.
    drop(p);
    log.close().await.unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("state").unwrap().partition(0).unwrap());
    assert_eq!(p.end_offset(), end);
    let fetch = p.read(0, 1 << 20).await.unwrap();
    let mut records: Vec<_> = fetch.records().map(Result::unwrap).collect();
    let mut offset = fetch.next_offset();
    loop {
        let more = p.read(offset, 1 << 20).await.unwrap();
        if more.is_empty() {
            break;
        }
        records.extend(more.records().map(Result::unwrap));
        offset = more.next_offset();
    }
    assert_eq!(check(records), latest);
    // A second pass finds nothing more to remove.
    assert_eq!(p.compact(now).unwrap().records_removed, 0);
}

#[tokio::test]
async fn producer_positions_are_kept_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        segment_bytes: 1024,
        max_batch_bytes: 1024,
        ..TopicConfig::compacted()
    };
    let p = Arc::clone(log.create_topic("cc", config).await.unwrap().partition(0).unwrap());
    let producer = ProducerId::from_name("src");
    for i in 0..40u64 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.push(1, Some(b"same-key"), Some(&[b'x'; 100]), &[]);
        p.append_with_position(&mut batch, producer, Position::from_u64(i))
            .await
            .unwrap();
    }
    p.roll_now().unwrap();
    p.flush().await.unwrap();
    p.compact(plexus_now()).unwrap();
    drop(p);
    drop(log);
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("cc").unwrap().partition(0).unwrap());
    assert_eq!(p.producer_position(producer).unwrap().position, Position::from_u64(39));
    let values: Vec<Bytes> = p
        .read(0, 1 << 20)
        .await
        .unwrap()
        .records()
        .map(|r| r.unwrap().value.unwrap())
        .collect();
    assert_eq!(values.len(), 1);
}

#[tokio::test]
async fn stats_count_appends_fetches_and_fsyncs_exactly() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        fsync: FsyncPolicy::Always,
        ..TopicConfig::default()
    };
    let p = Arc::clone(log.create_topic("counted", config).await.unwrap().partition(0).unwrap());
    let stats = p.stats();
    let fsyncs = || stats.fsync.snapshot().count;
    assert_eq!(stats.appended_records.load(Relaxed), 0);
    assert_eq!(fsyncs(), 0);

    // Every append path: append, append_records, append_with_position, append_encoded.
    append_values(&p, &["a", "b", "c"], 1).await;
    let after_first = fsyncs();
    assert!(after_first >= 1, "an acknowledged append under `Always` was synced");
    let records = [
        plexus_log::Record {
            timestamp: 2,
            key: None,
            value: Some(Bytes::from_static(b"d")),
            headers: Default::default(),
        },
        plexus_log::Record {
            timestamp: 2,
            key: None,
            value: Some(Bytes::from_static(b"e")),
            headers: Default::default(),
        },
    ];
    p.append_records(&records).await.unwrap();
    assert!(fsyncs() > after_first, "every append under `Always` syncs");
    let producer = ProducerId::from_name("stats");
    let mut batch = BatchBuilder::new(Compression::Zstd);
    batch.push(3, None, Some(b"f"), &[]);
    p.append_with_position(&mut batch, producer, Position::from_u64(7))
        .await
        .unwrap();
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(4, None, Some(b"g"), &[]);
    let encoded = builder.finish(plexus_log::batch::ProducerFields::NONE).unwrap();
    p.append_encoded(encoded, None).await.unwrap();
    let synced = fsyncs();
    // A replay writes nothing and is not counted.
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(5, None, Some(b"replayed"), &[]);
    let outcome = p
        .append_with_position(&mut batch, producer, Position::from_u64(7))
        .await
        .unwrap();
    assert!(matches!(outcome, AppendOutcome::AlreadyWritten { .. }));

    assert_eq!(p.end_offset(), 7);
    assert_eq!(stats.appended_records.load(Relaxed), 7);
    assert_eq!(stats.appended_batches.load(Relaxed), 4);
    assert_eq!(stats.appended_bytes.load(Relaxed), p.size_bytes());
    assert_eq!(fsyncs(), synced, "a replay does not sync");
    assert!(synced >= 4, "{synced} fsyncs for 4 appends");
    assert!(stats.fsync.snapshot().sum_seconds > 0.0);
    assert_eq!(stats.fetches.load(Relaxed), 0);

    // Whole batches are counted, also the records before the requested offset.
    let all = p.read(0, 1 << 20).await.unwrap();
    assert_eq!(all.batches().len(), 4);
    assert_eq!(all.bytes() as u64, p.size_bytes());
    let second = p.read(4, 1 << 20).await.unwrap();
    assert_eq!(second.batches().first().map(|b| b.base_offset()), Some(3));
    let empty = p.read_wait(7, 1 << 20, Duration::from_millis(10)).await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(stats.fetches.load(Relaxed), 3);
    assert_eq!(stats.fetched_records.load(Relaxed), 7 + 4);
    assert_eq!(stats.fetched_bytes.load(Relaxed), (all.bytes() + second.bytes()) as u64);
    assert_eq!(stats.appended_records.load(Relaxed), 7, "reads append nothing");
}

/// A clean close leaves what the next open needs: nothing is scanned, and the partition
/// goes on where it was (end, producer positions, reads, appends, offsets by time).
/// That is used once: after more appends and a crash, the open scans and loses nothing;
/// and a write after a clean close (the files no longer match what the close recorded)
/// is scanned too.
#[tokio::test]
async fn a_cleanly_closed_partition_opens_without_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let producer = ProducerId::from_name("cdc");
    let config = TopicConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 1 << 16,
        index_interval_bytes: 256,
        ..TopicConfig::default()
    };
    let append = |p: Arc<Partition>, lsn: u64| async move {
        let mut batch = BatchBuilder::new(Compression::Lz4);
        batch.push(lsn as i64, Some(b"k"), Some(format!("v{lsn}").as_bytes()), &[]);
        p.append_with_position(&mut batch, producer, Position::from_u64(lsn))
            .await
            .unwrap()
    };
    let topic_dir = dir.path().join("topics/t/0");
    let opened_scanned = |p: &Partition| {
        p.stats()
            .opened_scanned_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.create_topic("t", config).await.unwrap().partition(0).unwrap());
    for lsn in 1..=40 {
        append(Arc::clone(&p), lsn).await;
    }
    drop(p);
    log.close().await.unwrap();

    // Clean: nothing scanned, everything as before.
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("t").unwrap().partition(0).unwrap());
    assert_eq!(opened_scanned(&p), 0);
    assert_eq!(p.end_offset(), 40);
    assert_eq!(p.producer_position(producer).unwrap().last_offset, 39);
    assert!(matches!(
        append(Arc::clone(&p), 40).await,
        AppendOutcome::AlreadyWritten { .. }
    ));
    assert_eq!(p.offset_for_timestamp(20).await.unwrap(), Some(19));
    let values: Vec<String> = read_all(&p, 0).await.into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, (1..=40).map(|n| format!("v{n}")).collect::<Vec<_>>());
    assert!(!topic_dir.join("clean-close").exists(), "the marker is used once");
    for lsn in 41..=60 {
        assert_eq!(append(Arc::clone(&p), lsn).await.base_offset(), Some(lsn as i64 - 1));
    }
    // A crash: the indexes written at the close no longer cover the segment.
    drop(p);
    drop(log);

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("t").unwrap().partition(0).unwrap());
    assert!(opened_scanned(&p) > 0);
    assert_eq!(p.end_offset(), 60);
    assert_eq!(p.producer_position(producer).unwrap().last_offset, 59);
    assert_eq!(read_all(&p, 0).await.len(), 60);
    drop(p);
    log.close().await.unwrap();

    // Written to after the close (here, a torn batch): the size no longer matches, so
    // the open scans and cuts the tail off.
    let segment = topic_dir.join("00000000000000000000.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).unwrap();
    std::io::Write::write_all(&mut file, &[0u8; 30]).unwrap();
    drop(file);
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let p = Arc::clone(log.topic("t").unwrap().partition(0).unwrap());
    assert!(opened_scanned(&p) > 0);
    assert_eq!(p.end_offset(), 60);
    assert_eq!(read_all(&p, 0).await.len(), 60);
    assert_eq!(append(Arc::clone(&p), 61).await.base_offset(), Some(60));
}
