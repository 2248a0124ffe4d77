//! What the scenario tests share: records, contexts, stores, readers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use plexus_connector::{
    CollectDeadLetters, Header, MemorySchemas, SCHEMA_HEADER, Settings, Sink, SinkContext, SinkOffsets, SinkRecord,
    TaskMetrics, TopicPartition,
};
use plexus_connector_parquet::{ParquetSink, ParquetSinkConfig};
use plexus_connector_s3::{LocalStore, ObjectStore};

/// The `orders` table as the datagen source registers it.
pub const ORDERS: &str = r#"{"id":"orders-v1","table":"orders","columns":[
    {"name":"id","type":"bigint","json":"integer","arrow":"Int64","key":true},
    {"name":"customer_id","arrow":"Int64"},
    {"name":"quantity","arrow":"Int32"},
    {"name":"unit_price","arrow":"Decimal128(10, 2)"},
    {"name":"status","arrow":"Utf8"},
    {"name":"country","arrow":"Utf8"},
    {"name":"created_at","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"},
    {"name":"note","arrow":"Utf8"}]}"#;

/// A context with the `orders-v1` schema registered, and where its dead letters go.
pub fn context(name: &str) -> (SinkContext, Arc<CollectDeadLetters>, Arc<MemorySchemas>) {
    let letters = Arc::new(CollectDeadLetters::default());
    let schemas = Arc::new(MemorySchemas::default());
    schemas.insert("orders-v1", ORDERS);
    let ctx =
        SinkContext::new(name, 0, Arc::new(TaskMetrics::default()), letters.clone()).with_schemas(schemas.clone());
    (ctx, letters, schemas)
}

pub async fn local_store(dir: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalStore::open(dir).await.unwrap())
}

/// A sink on `store` with `settings` (the sink's own; no store settings).
pub fn sink(store: &Arc<dyn ObjectStore>, settings: &[(&str, plexus_config::Value)]) -> ParquetSink {
    let mut s = Settings::new();
    for (name, value) in settings {
        s.insert(*name, value.clone());
    }
    ParquetSink::new(ParquetSinkConfig::from_settings(&s).unwrap(), Arc::clone(store))
}

/// The change event of an order, as datagen writes it. Deletes carry `before`.
pub fn order_event(op: &str, id: i64, status: &str, country: &str, ts_ms: i64) -> String {
    let row = format!(
        r#"{{"id":{id},"customer_id":{c},"quantity":{q},"unit_price":"{p}.50","status":"{status}","country":"{country}","created_at":"2026-01-01T00:00:0{s}.123Z","note":null}}"#,
        c = id % 7,
        q = id % 5 + 1,
        p = id % 100,
        s = id % 10,
    );
    let (before, after) = match op {
        "d" => (row.as_str(), "null"),
        "c" | "r" => ("null", row.as_str()),
        _ => (row.as_str(), row.as_str()),
    };
    format!(
        r#"{{"before":{before},"after":{after},"source":{{"connector":"datagen","name":"shop","table":"orders","seq":{id},"ts_ms":{ts_ms}}},"op":"{op}","ts_ms":{ts_ms}}}"#
    )
}

pub fn record(
    topic: &str,
    partition: u32,
    offset: i64,
    timestamp: i64,
    value: Option<String>,
    schema: Option<&str>,
) -> SinkRecord {
    SinkRecord {
        topic: Arc::from(topic),
        partition,
        offset,
        timestamp,
        key: Some(Bytes::from(format!("{{\"id\":{offset}}}"))),
        value: value.map(Bytes::from),
        headers: schema
            .map(|s| {
                vec![Header {
                    key: SCHEMA_HEADER.into(),
                    value: Some(Bytes::copy_from_slice(s.as_bytes())),
                }]
            })
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// `count` order events of one partition from `first`, 1 ms apart, a country out of
/// four, every tenth a delete followed by its tombstone.
pub fn orders(topic: &str, partition: u32, first: i64, count: i64) -> Vec<SinkRecord> {
    let countries = ["DE", "FR", "US", "JP"];
    let mut out = Vec::new();
    let mut offset = first;
    while out.len() < count as usize {
        let ts = 1_767_225_600_000 + offset * 1000;
        let country = countries[(offset % 4) as usize];
        if offset % 10 == 9 {
            out.push(record(
                topic,
                partition,
                offset,
                ts,
                Some(order_event("d", offset, "paid", country, ts)),
                Some("orders-v1"),
            ));
            offset += 1;
            if out.len() < count as usize {
                out.push(record(topic, partition, offset, ts, None, Some("orders-v1")));
                offset += 1;
            }
        } else {
            let op = if offset % 3 == 0 { "c" } else { "u" };
            out.push(record(
                topic,
                partition,
                offset,
                ts,
                Some(order_event(op, offset, "paid", country, ts)),
                Some("orders-v1"),
            ));
            offset += 1;
        }
    }
    out
}

/// The offsets of `records` that must land (not tombstones).
pub fn landing(records: &[SinkRecord]) -> Vec<(u32, i64)> {
    records
        .iter()
        .filter(|r| r.value.is_some())
        .map(|r| (r.partition, r.offset))
        .collect()
}

/// Writes `records`, flushes with the offsets after them, and stops.
pub async fn write_all(sink: &mut ParquetSink, ctx: &SinkContext, records: Vec<SinkRecord>) -> SinkOffsets {
    let mut offsets = SinkOffsets::new();
    for r in &records {
        offsets.insert(
            TopicPartition {
                topic: r.topic.to_string(),
                partition: r.partition,
            },
            r.offset + 1,
        );
    }
    sink.write(ctx, records).await.unwrap();
    sink.flush(ctx, &offsets).await.unwrap();
    offsets
}

/// The Parquet files under `dir` (keys relative to it), in key order.
pub fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') || name == "_plexus" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else if name.ends_with(".parquet") {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every batch of a Parquet file, read with the parquet crate's Arrow reader.
pub fn read_file(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// How many times each (partition, offset) appears in the files under `dir`.
pub fn landed(dir: &Path) -> BTreeMap<(u32, i64), usize> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    let mut out = BTreeMap::new();
    for key in parquet_files(dir) {
        for batch in read_file(&dir.join(&key)) {
            let partitions = batch.column_by_name("__partition").unwrap().as_primitive::<Int32Type>();
            let offsets = batch.column_by_name("__offset").unwrap().as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                *out.entry((partitions.value(i) as u32, offsets.value(i))).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Runs `script` with the test environment's Python (pyarrow, DuckDB) and `args`;
/// returns its standard output.
pub fn python(script: &str, args: &[&Path]) -> String {
    let python = plexus_tests::python::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("check.py");
    std::fs::write(&path, script).unwrap();
    let output = std::process::Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
