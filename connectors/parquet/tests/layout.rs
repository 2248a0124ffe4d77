//! Where files go and when they end: partitioning, rotation, the memory budget, schema
//! changes, dead letters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use plexus_config::{ByteSize, Value};
use plexus_connector::{Sink, SinkOffsets, TopicPartition};

fn duration(ms: u64) -> Value {
    plexus_config::Duration(Duration::from_millis(ms)).into()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition {
        topic: topic.into(),
        partition,
    }
}

fn assert_exactly_once(dir: &std::path::Path, expected: &[(u32, i64)]) {
    let landed = landed(dir);
    let doubled: Vec<_> = landed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "landed more than once: {doubled:?}");
    let got: Vec<(u32, i64)> = landed.keys().copied().collect();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn partitions_by_field_and_local_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(
        &store,
        &[
            ("partition_by", vec!["country".to_owned()].into()),
            ("time_partition", "hour".into()),
            ("time_zone", "Asia/Kolkata".into()),
        ],
    );
    sink.start(&ctx).await.unwrap();
    // Ten minutes apart from 2026-01-01T00:00Z: 05:30 to 07:20 in Kolkata (+05:30).
    let mut records = orders("orders", 0, 0, 12);
    for r in &mut records {
        r.timestamp = 1_767_225_600_000 + r.offset * 600_000;
    }
    let expected = landing(&records);
    write_all(&mut sink, &ctx, records.clone()).await;
    sink.stop().await.unwrap();
    assert!(letters.take().is_empty());
    assert_exactly_once(dir.path(), &expected);

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let countries = ["DE", "FR", "US", "JP"];
    for key in parquet_files(dir.path()) {
        let segments: Vec<&str> = key.split('/').collect();
        assert_eq!(segments.len(), 5, "{key}");
        assert_eq!(segments[0], "orders");
        assert!(segments[4].starts_with("orders+0+"), "{key}");
        for batch in read_file(&dir.path().join(&key)) {
            let offsets = batch.column_by_name("__offset").unwrap().as_primitive::<Int64Type>();
            for offset in offsets.values() {
                let minutes = offset * 10 + 5 * 60 + 30;
                assert_eq!(
                    segments[1],
                    format!("country={}", countries[(offset % 4) as usize]),
                    "{key}"
                );
                assert_eq!(segments[2], "dt=2026-01-01", "{key}");
                assert_eq!(segments[3], format!("hr={:02}", minutes / 60), "{key}");
            }
        }
    }
    // Readers see the Hive columns.
    let out = python(
        "import sys, duckdb\n\
         print(duckdb.sql(f\"SELECT count(*), count(DISTINCT hr), min(dt) FROM read_parquet('{sys.argv[1]}/orders/**/*.parquet', hive_partitioning=true)\").fetchall())\n",
        &[dir.path()],
    );
    assert!(out.starts_with("[(11, 3, "), "{out}");
}

#[tokio::test]
async fn rotates_by_records_and_names_files_by_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, _, _) = context("lake");
    let mut sink = sink(&store, &[("rotate_records", 100.into())]);
    sink.start(&ctx).await.unwrap();
    let records = orders("orders", 3, 0, 1000);
    let expected = landing(&records);
    for chunk in records.chunks(250) {
        write_all(&mut sink, &ctx, chunk.to_vec()).await;
    }
    // The tenth unit was full at the last flush.
    assert_eq!(sink.durable_offsets().unwrap().get(&tp("orders", 3)), Some(&1000));
    write_all(&mut sink, &ctx, orders("orders", 3, 1000, 30)).await;
    assert_eq!(sink.durable_offsets().unwrap().get(&tp("orders", 3)), Some(&1000));
    sink.stop().await.unwrap();
    assert_eq!(sink.durable_offsets().unwrap().get(&tp("orders", 3)), Some(&1030));
    let mut expected = expected;
    expected.extend(landing(&orders("orders", 3, 1000, 30)));
    // Each unit's file is named after its first record (a tombstone lands nowhere).
    let files = parquet_files(dir.path());
    let names: Vec<String> = (0..11)
        .map(|i| {
            let first = expected.iter().map(|(_, o)| *o).find(|o| *o >= i * 100).unwrap();
            format!("orders/orders+3+{first:020}.parquet")
        })
        .collect();
    assert_eq!(files, names);
    assert_exactly_once(dir.path(), &expected);
}

#[tokio::test]
async fn rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, _, _) = context("lake");
    let mut sink = sink(
        &store,
        &[
            ("rotate_size", ByteSize(16 << 10).into()),
            ("row_group_rows", 200.into()),
        ],
    );
    sink.start(&ctx).await.unwrap();
    let records = orders("orders", 0, 0, 5000);
    let expected = landing(&records);
    for chunk in records.chunks(100) {
        write_all(&mut sink, &ctx, chunk.to_vec()).await;
    }
    sink.stop().await.unwrap();
    let files = parquet_files(dir.path());
    assert!(files.len() >= 4, "{files:?}");
    for key in &files {
        let size = std::fs::metadata(dir.path().join(key)).unwrap().len();
        assert!(size < 64 << 10, "{key} has {size} bytes");
    }
    assert_exactly_once(dir.path(), &expected);
}

#[tokio::test]
async fn rotates_idle_partitions_and_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, _, _) = context("lake");
    let mut sink = sink(
        &store,
        &[("rotate_idle", duration(200)), ("rotate_interval", duration(600))],
    );
    sink.start(&ctx).await.unwrap();
    // Idle: partition 1 gets nothing after its first records.
    let offsets = write_all(&mut sink, &ctx, orders("orders", 1, 0, 10)).await;
    assert_eq!(sink.durable_offsets().unwrap().get(&tp("orders", 1)), None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    sink.flush(&ctx, &offsets).await.unwrap();
    assert_eq!(sink.durable_offsets().unwrap().get(&tp("orders", 1)), Some(&10));
    assert_eq!(parquet_files(dir.path()).len(), 1);

    // Interval: partition 2 receives records every 100 ms and is never idle.
    let mut next = 0;
    let mut expected = landing(&orders("orders", 1, 0, 10));
    for _ in 0..8 {
        let records = orders("orders", 2, next, 5);
        next += 5;
        expected.extend(landing(&records));
        write_all(&mut sink, &ctx, records).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let durable = sink.durable_offsets().unwrap().get(&tp("orders", 2)).copied();
    assert!(durable.is_some_and(|d| d > 0 && d < 40), "{durable:?}");
    sink.stop().await.unwrap();
    assert!(parquet_files(dir.path()).len() >= 3);
    assert_exactly_once(dir.path(), &expected);
}

#[tokio::test]
async fn memory_budget_holds_with_200_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, _, _) = context("lake");
    let budget = 4u64 << 20;
    let mut sink = sink(&store, &[("memory_budget", ByteSize(budget).into())]);
    sink.start(&ctx).await.unwrap();
    let mut expected = Vec::new();
    let mut max_buffered = 0;
    let mut max_open = 0;
    for round in 0..4 {
        let mut offsets = SinkOffsets::new();
        for partition in 0..200 {
            let records = orders("orders", partition, round * 200, 200);
            expected.extend(landing(&records));
            offsets.insert(tp("orders", partition), (round + 1) * 200);
            sink.write(&ctx, records).await.unwrap();
            max_buffered = max_buffered.max(sink.buffered());
            max_open = max_open.max(sink.open_files());
            assert!(sink.buffered() <= budget, "{} buffered", sink.buffered());
        }
        sink.flush(&ctx, &offsets).await.unwrap();
    }
    sink.stop().await.unwrap();
    assert!(
        max_buffered > budget / 2,
        "the budget was never approached: {max_buffered}"
    );
    assert!(max_open < 200, "the budget never finished a file: {max_open} open");
    assert_exactly_once(dir.path(), &expected);
}

const ORDERS_V2: &str = r#"{"id":"orders-v2","table":"orders","columns":[
    {"name":"id","arrow":"Int64"},{"name":"status","arrow":"Utf8"},{"name":"quantity","arrow":"Int64"},
    {"name":"gift","arrow":"Boolean"}]}"#;

#[tokio::test]
async fn interleaved_schema_versions_keep_one_file_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, _, schemas) = context("lake");
    schemas.insert("orders-v2", ORDERS_V2);
    let mut sink = sink(&store, &[]);
    sink.start(&ctx).await.unwrap();
    let mut records = orders("orders", 0, 0, 1000);
    for r in records.iter_mut().filter(|r| r.offset % 2 == 1) {
        r.headers[0].value = Some("orders-v2".into());
    }
    let expected = landing(&records);
    for chunk in records.chunks(10) {
        write_all(&mut sink, &ctx, chunk.to_vec()).await;
        assert!(sink.open_files() <= 2);
    }
    sink.stop().await.unwrap();
    let files = parquet_files(dir.path());
    assert_eq!(
        files,
        [
            "orders/orders+0+00000000000000000000.parquet",
            "orders/orders+0+00000000000000000001.parquet"
        ]
    );
    let v2 = read_file(&dir.path().join(&files[1]));
    assert!(v2[0].column_by_name("gift").is_some());
    assert!(v2[0].column_by_name("customer_id").is_none());
    assert_exactly_once(dir.path(), &expected);
}

#[tokio::test]
async fn bad_records_go_to_dead_letters_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(&store, &[]);
    sink.start(&ctx).await.unwrap();
    let mut records = orders("orders", 0, 0, 8);
    records[1].value = Some("{\"after\":{\"id\":\"seven\"},\"op\":\"c\"}".into());
    records[2].value = Some("{not json".into());
    records[3].headers[0].value = Some("orders-v9".into());
    records[4].headers.clear();
    records[5].value = Some(
        order_event("c", 5, "paid", "DE", 0)
            .replace("\"5.50\"", "\"NaN\"")
            .into(),
    );
    let expected: Vec<(u32, i64)> = landing(&records)
        .into_iter()
        .filter(|(_, o)| ![1, 2, 3, 4, 5].contains(o))
        .collect();
    write_all(&mut sink, &ctx, records).await;
    sink.stop().await.unwrap();
    let mut letters = letters.take();
    // Letters come schema by schema; order them by offset.
    letters.sort_by_key(|(_, l)| l.origin.rsplit('@').next().unwrap().parse::<i64>().unwrap());
    let reasons: Vec<&str> = letters.iter().map(|(_, l)| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 5, "{reasons:#?}");
    assert!(
        reasons[0].starts_with("orders/0@1: schema `orders-v1`:") && reasons[0].contains("seven"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].starts_with("orders/0@2: schema `orders-v1`: invalid JSON"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].starts_with("orders/0@3: schema `orders-v9` is not registered"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].starts_with("orders/0@4: no `plexus.schema` header"),
        "{}",
        reasons[3]
    );
    assert!(
        reasons[4].starts_with("orders/0@5: schema `orders-v1`:") && reasons[4].contains("NaN"),
        "{}",
        reasons[4]
    );
    assert_eq!(letters[0].1.origin, "orders/0@1");
    assert!(letters[1].1.payload.as_deref() == Some(&b"{not json"[..]));
    assert_exactly_once(dir.path(), &expected);
}

#[tokio::test]
async fn declared_columns_take_plain_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(
        &store,
        &[
            ("envelope", "none".into()),
            ("columns", vec!["id: Int64".to_owned(), "name: Utf8".to_owned()].into()),
        ],
    );
    sink.start(&ctx).await.unwrap();
    let records = vec![
        record(
            "events",
            0,
            0,
            0,
            Some(r#"{"id":1,"name":"a","other":true}"#.into()),
            None,
        ),
        record("events", 0, 1, 0, Some(r#"{"id":2}"#.into()), None),
    ];
    write_all(&mut sink, &ctx, records).await;
    sink.stop().await.unwrap();
    assert!(letters.take().is_empty());
    let files = parquet_files(dir.path());
    let batches = read_file(&dir.path().join(&files[0]));
    let names: Vec<String> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "name", "__partition", "__offset"]);
    assert_eq!(batches[0].num_rows(), 2);
}

/// A source registers a schema with the first record naming it, but the record's topic
/// can be read first: the sink waits for the schema instead of dead-lettering.
#[tokio::test]
async fn a_record_read_before_its_schema_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path()).await;
    let (ctx, letters, schemas) = context("lake");
    let mut sink = sink(&store, &[]);
    sink.start(&ctx).await.unwrap();
    let mut records = orders("orders", 0, 0, 6);
    for record in &mut records {
        record.headers[0].value = Some("orders-v2".into());
    }
    let expected = landing(&records);
    let register = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        schemas.insert("orders-v2", ORDERS.replace("orders-v1", "orders-v2"));
    });
    write_all(&mut sink, &ctx, records).await;
    sink.stop().await.unwrap();
    register.await.unwrap();
    let letters = letters.take();
    assert!(letters.is_empty(), "{letters:?}");
    assert_exactly_once(dir.path(), &expected);
}
