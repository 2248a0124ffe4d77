//! Rough throughput of the sink: datagen-like order events (mostly updates, with
//! `before`) to a local directory. `cargo run --release -p plexus-connector-parquet
//! --example throughput -- [events] [dir]`. `plexus bench parquet` is the real benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use plexus_connector::{
    CollectDeadLetters, Header, MemorySchemas, SCHEMA_HEADER, Sink, SinkContext, SinkOffsets, SinkRecord, TaskMetrics,
    TopicPartition,
};
use plexus_connector_parquet::{ParquetSink, ParquetSinkConfig};
use plexus_connector_s3::LocalStore;

const ORDERS: &str = r#"{"id":"orders-v1","table":"orders","columns":[
    {"name":"id","arrow":"Int64"},{"name":"customer_id","arrow":"Int64"},{"name":"product_id","arrow":"Int64"},
    {"name":"quantity","arrow":"Int32"},{"name":"unit_price","arrow":"Decimal128(10, 2)"},
    {"name":"status","arrow":"Utf8"},{"name":"created_at","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"},
    {"name":"note","arrow":"Utf8"}]}"#;

fn event(n: i64) -> String {
    let id = n / 4 + 1;
    let row = |status: &str| {
        format!(
            r#"{{"id":{id},"customer_id":{},"product_id":{},"quantity":{},"unit_price":"{}.{:02}","status":"{status}","created_at":"2026-01-01T00:{:02}:{:02}.{:03}Z","note":{}}}"#,
            id * 7 % 1000,
            id * 13 % 500,
            id % 5 + 1,
            id % 200,
            id % 100,
            (id / 60) % 60,
            id % 60,
            id % 1000,
            if id % 3 == 0 {
                format!("\"gift wrap {id}\"")
            } else {
                "null".to_owned()
            }
        )
    };
    let ts = 1_767_225_600_000 + n * 3;
    let (op, before, after) = match n % 4 {
        0 => ("c", "null".to_owned(), row("pending")),
        1 => ("u", row("pending"), row("paid")),
        2 => ("u", row("paid"), row("shipped")),
        _ if id % 4 == 0 => ("d", row("shipped"), "null".to_owned()),
        _ => ("u", row("shipped"), row("delivered")),
    };
    format!(
        r#"{{"before":{before},"after":{after},"source":{{"connector":"datagen","name":"shop","table":"orders","seq":{n},"ts_ms":{ts}}},"op":"{op}","ts_ms":{ts}}}"#
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: i64 = args.get(1).map_or(1_000_000, |a| a.parse().unwrap());
    let dir = args
        .get(2)
        .map_or_else(|| std::env::temp_dir().join("plexus-parquet-throughput"), Into::into);
    let _ = std::fs::remove_dir_all(&dir);
    let records: Vec<SinkRecord> = (0..events)
        .map(|n| SinkRecord {
            topic: Arc::from("orders"),
            partition: 0,
            offset: n,
            timestamp: 1_767_225_600_000 + n * 3,
            key: None,
            value: Some(Bytes::from(event(n))),
            headers: vec![Header {
                key: SCHEMA_HEADER.into(),
                value: Some(Bytes::from_static(b"orders-v1")),
            }],
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Bytes::len)).sum();
    let schemas = Arc::new(MemorySchemas::default());
    schemas.insert("orders-v1", ORDERS);
    let ctx = SinkContext::new(
        "bench",
        0,
        Arc::new(TaskMetrics::default()),
        Arc::new(CollectDeadLetters::default()),
    )
    .with_schemas(schemas);
    let store = Arc::new(LocalStore::open(&dir).await.unwrap());
    let mut sink = ParquetSink::new(ParquetSinkConfig::default(), store);
    sink.start(&ctx).await.unwrap();
    let started = Instant::now();
    let mut offsets = SinkOffsets::new();
    let mut batch = Vec::new();
    for record in records {
        let offset = record.offset;
        batch.push(record);
        if batch.len() == 2000 {
            sink.write(&ctx, std::mem::take(&mut batch)).await.unwrap();
            offsets.insert(
                TopicPartition {
                    topic: "orders".into(),
                    partition: 0,
                },
                offset + 1,
            );
            sink.flush(&ctx, &offsets).await.unwrap();
        }
    }
    sink.write(&ctx, batch).await.unwrap();
    sink.stop().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{events} events ({:.0} MB of JSON) in {seconds:.2}s: {:.0} rows/s, {:.0} MB/s into {}",
        bytes as f64 / 1e6,
        events as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
        dir.display()
    );
}
