#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The sink against a real S3 server (SeaweedFS on loopback, authentication on): files
//! read back by pyarrow through the server's filer (not through the store or an S3
//! client), files of several multipart parts, and a crash in the middle of a unit and
//! in the middle of its completions, followed by replays: every record exactly once,
//! no upload left on the server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use plexus_config::{ByteSize, Secret, Value};
use plexus_connector::{ConnectorError, Sink, SinkOffsets, SinkRecord, TopicPartition, async_trait};
use plexus_connector_s3::{ObjectMeta, ObjectStore, Put, StoreSettings, Upload};
use plexus_tests::seaweed::SeaweedFs;
use serde_json::json;

const BUCKET: &str = "lake";
const PREFIX: &str = "exports";

/// A server with the bucket, and a store on it under [`PREFIX`].
async fn s3() -> (SeaweedFs, Arc<dyn ObjectStore>) {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let mut settings = StoreSettings::new(format!("s3://{BUCKET}/{PREFIX}"));
    settings.endpoint = Some(server.endpoint());
    settings.path_style = true;
    settings.access_key_id = Some(server.access_key_id().to_owned());
    settings.secret_access_key = Some(Secret::new(server.secret_access_key()));
    let store = plexus_connector_s3::open(&settings).await.unwrap();
    (server, store)
}

/// Reads every `.parquet` object of the store through the filer's HTTP API with
/// pyarrow: rows, `(partition, offset)` pairs, the Arrow types, and values by offset.
const READ_THROUGH_FILER: &str = r#"
import json, sys, urllib.request
import pyarrow as pa, pyarrow.parquet as pq
base, keys = sys.argv[1], json.loads(sys.argv[2])
out = {"rows": 0, "offsets": [], "types": {}, "values": {}}
for key in keys:
    table = pq.read_table(pa.BufferReader(urllib.request.urlopen(base + "/" + key).read()))
    out["rows"] += table.num_rows
    out["types"] = {f.name: str(f.type) for f in table.schema}
    for row in table.select(["__partition", "__offset", "id", "unit_price", "country", "__op"]).to_pylist():
        out["offsets"].append([row["__partition"], row["__offset"]])
        out["values"][f'{row["__partition"]}@{row["__offset"]}'] = [row["id"], str(row["unit_price"]), row["country"], row["__op"]]
print(json.dumps(out))
"#;

/// Multipart uploads the server holds: its filer keeps each unfinished one as a
/// directory under `/buckets/<bucket>/.uploads/`.
const UPLOADS_IN_FILER: &str = r#"
import json, sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1], headers={"Accept": "application/json"})
try:
    entries = json.loads(urllib.request.urlopen(request).read()).get("Entries") or []
except urllib.error.HTTPError as e:
    if e.code != 404:
        raise
    entries = []
print(json.dumps([e["FullPath"] for e in entries]))
"#;

fn uploads_on_server(server: &SeaweedFs) -> Vec<String> {
    let url = format!("{}/buckets/{BUCKET}/.uploads/", server.filer_endpoint());
    serde_json::from_str(&python_args(UPLOADS_IN_FILER, &[&url])).unwrap()
}

fn python_args(script: &str, args: &[&str]) -> String {
    let paths: Vec<std::path::PathBuf> = args.iter().map(std::path::PathBuf::from).collect();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    python(script, &refs)
}

/// The `.parquet` objects of the store, and what pyarrow reads in them through the filer.
async fn read_back(server: &SeaweedFs, store: &Arc<dyn ObjectStore>) -> (Vec<ObjectMeta>, serde_json::Value) {
    let objects: Vec<ObjectMeta> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.ends_with(".parquet"))
        .collect();
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let base = format!("{}/buckets/{BUCKET}/{PREFIX}", server.filer_endpoint());
    let out = python_args(READ_THROUGH_FILER, &[&base, &json!(keys).to_string()]);
    (objects, serde_json::from_str(&out).unwrap())
}

/// Asserts that the files hold each landing record of `records` exactly once.
fn assert_exactly_once(back: &serde_json::Value, records: &[SinkRecord], context: &str) {
    let mut landed: BTreeMap<(u32, i64), usize> = BTreeMap::new();
    for pair in back["offsets"].as_array().unwrap() {
        *landed
            .entry((pair[0].as_u64().unwrap() as u32, pair[1].as_i64().unwrap()))
            .or_insert(0) += 1;
    }
    let doubled: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(doubled.is_empty(), "{context}: landed more than once: {doubled:?}");
    let mut expected = landing(records);
    expected.sort();
    let got: Vec<(u32, i64)> = landed.keys().copied().collect();
    assert_eq!(got.len(), expected.len(), "{context}: rows");
    assert_eq!(got, expected, "{context}: every record once");
}

/// Orders with about 2 KiB of distinct text each, so that a few thousand make a file of
/// several 5 MiB parts even compressed.
fn fat_orders(topic: &str, partition: u32, count: i64) -> Vec<SinkRecord> {
    let mut records = orders(topic, partition, 0, count);
    for r in &mut records {
        if let Some(value) = &r.value {
            let text = String::from_utf8(value.to_vec()).unwrap();
            let note: String = (0..128)
                .map(|i| {
                    format!(
                        "{:016x}",
                        (r.offset as u64 + 1 + (u64::from(partition) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i
                    )
                })
                .collect();
            r.value = Some(text.replace("\"note\":null", &format!("\"note\":\"{note}\"")).into());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_s3_reads_back_with_pyarrow() {
    let (server, store) = s3().await;
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(&store, &[("partition_by", vec!["country".to_owned()].into())]);
    assert_eq!(sink.start(&ctx).await.unwrap(), None);
    let mut records = orders("shop.orders", 0, 0, 3000);
    records.extend(orders("shop.orders", 1, 0, 2000));
    write_all(&mut sink, &ctx, records.clone()).await;
    sink.stop().await.unwrap();
    assert!(letters.take().is_empty());

    let (objects, back) = read_back(&server, &store).await;
    // Two partitions, four countries: eight files, under Hive-style directories.
    assert_eq!(objects.len(), 8, "{objects:?}");
    assert!(
        objects
            .iter()
            .any(|o| o.key == "shop.orders/country=DE/shop.orders+0+00000000000000000000.parquet"),
        "{objects:?}"
    );
    assert_exactly_once(&back, &records, "round trip");
    assert_eq!(back["types"]["unit_price"], "decimal128(10, 2)");
    assert_eq!(back["types"]["created_at"], "timestamp[us, tz=UTC]");
    // Values as written: offset 4 of partition 1 is an update of order 4, in DE
    // (countries go by offset), at 4.50; offset 9 a delete, in FR.
    assert_eq!(back["values"]["1@4"], json!([4, "4.50", "DE", "u"]));
    assert_eq!(back["values"]["0@9"], json!([9, "9.50", "FR", "d"]));
    assert!(uploads_on_server(&server).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_larger_than_a_part_are_multipart_uploads_that_read_back() {
    let (server, store) = s3().await;
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(
        &store,
        &[
            ("part_size", ByteSize::mib(5).into()),
            ("row_group_rows", 500.into()),
            ("compression", "none".into()),
            ("rotate_records", 6000.into()),
        ],
    );
    sink.start(&ctx).await.unwrap();
    let records = fat_orders("shop.orders", 0, 9000);
    // In chunks, as the runtime hands them over: parts upload while records arrive.
    let mut saw_upload = false;
    for chunk in records.chunks(1000) {
        sink.write(&ctx, chunk.to_vec()).await.unwrap();
        saw_upload |= !uploads_on_server(&server).is_empty();
    }
    assert!(saw_upload, "no multipart upload was open while records arrived");
    let offsets = SinkOffsets::from([(
        TopicPartition {
            topic: "shop.orders".into(),
            partition: 0,
        },
        9000,
    )]);
    sink.flush(&ctx, &offsets).await.unwrap();
    sink.stop().await.unwrap();
    assert!(letters.take().is_empty());

    let (objects, back) = read_back(&server, &store).await;
    assert_eq!(objects.len(), 2, "{objects:?}");
    let largest = objects.iter().map(|o| o.size).max().unwrap();
    assert!(
        largest > 2 * (5 << 20),
        "the first file is {largest} bytes: less than three parts"
    );
    assert_exactly_once(&back, &records, "multipart");
    assert!(
        uploads_on_server(&server).is_empty(),
        "{:?}",
        uploads_on_server(&server)
    );
    assert_eq!(store.abort_uploads("").await.unwrap(), 0);
}

/// A store that dies at its `crash_at`-th completion (a small object written, or a
/// multipart upload completed), before doing it; everything fails after that, as in a
/// dead process.
#[derive(Debug)]
struct DiesAtCompletion {
    inner: Arc<dyn ObjectStore>,
    completions: Arc<AtomicUsize>,
    crash_at: usize,
    dead: Arc<AtomicBool>,
}

impl DiesAtCompletion {
    fn complete(&self) -> Result<(), ConnectorError> {
        self.alive()?;
        if self.completions.fetch_add(1, Ordering::SeqCst) + 1 == self.crash_at {
            self.dead.store(true, Ordering::SeqCst);
            return Err(ConnectorError::retriable("injected crash"));
        }
        Ok(())
    }

    fn alive(&self) -> Result<(), ConnectorError> {
        if self.dead.load(Ordering::SeqCst) {
            Err(ConnectorError::retriable("injected crash"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ObjectStore for DiesAtCompletion {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Put, ConnectorError> {
        self.complete()?;
        self.inner.put_if_absent(key, body).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, ConnectorError> {
        self.alive()?;
        Ok(Box::new(DyingUpload {
            inner: self.inner.start_upload(key).await?,
            store: DiesAtCompletion {
                inner: Arc::clone(&self.inner),
                completions: Arc::clone(&self.completions),
                crash_at: self.crash_at,
                dead: Arc::clone(&self.dead),
            },
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        self.alive()?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError> {
        self.alive()?;
        self.inner.list(prefix).await
    }

    async fn abort_uploads(&self, prefix: &str) -> Result<usize, ConnectorError> {
        self.alive()?;
        self.inner.abort_uploads(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), ConnectorError> {
        self.alive()?;
        self.inner.delete(key).await
    }
}

#[derive(Debug)]
struct DyingUpload {
    inner: Box<dyn Upload>,
    store: DiesAtCompletion,
}

#[async_trait]
impl Upload for DyingUpload {
    async fn put_part(&mut self, part: Bytes) -> Result<(), ConnectorError> {
        self.store.alive()?;
        self.inner.put_part(part).await
    }

    async fn complete(self: Box<Self>) -> Result<Put, ConnectorError> {
        self.store.complete()?;
        self.inner.complete().await
    }

    async fn abort(self: Box<Self>) -> Result<(), ConnectorError> {
        self.store.alive()?;
        self.inner.abort().await
    }

    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }
}

/// One run of a worker: resumes like the runtime (the sink's offsets, else the
/// committed ones), writes the records from there in chunks, flushing and committing
/// after each; stops at the end unless `stop_after` chunks were written first (a
/// process killed with its files open) or the store died.
async fn run(
    store: Arc<dyn ObjectStore>,
    settings: &[(&str, Value)],
    records: &[SinkRecord],
    committed: &mut SinkOffsets,
    stop_after: Option<usize>,
) -> Result<(), ConnectorError> {
    let (ctx, letters, _) = context("lake");
    let mut sink = sink(&store, settings);
    let stored = sink.start(&ctx).await?;
    let from = |tp: &TopicPartition| {
        stored
            .as_ref()
            .and_then(|s| s.get(tp).copied())
            .or_else(|| committed.get(tp).copied())
            .unwrap_or(0)
    };
    let pending: Vec<SinkRecord> = records
        .iter()
        .filter(|r| {
            r.offset
                >= from(&TopicPartition {
                    topic: r.topic.to_string(),
                    partition: r.partition,
                })
        })
        .cloned()
        .collect();
    let mut offsets = SinkOffsets::new();
    for (n, chunk) in pending.chunks(1000).enumerate() {
        if stop_after == Some(n) {
            return Ok(()); // Killed: nothing finished, nothing committed.
        }
        for r in chunk {
            offsets.insert(
                TopicPartition {
                    topic: r.topic.to_string(),
                    partition: r.partition,
                },
                r.offset + 1,
            );
        }
        sink.write(&ctx, chunk.to_vec()).await?;
        sink.flush(&ctx, &offsets).await?;
        committed.extend(sink.durable_offsets().unwrap());
    }
    sink.stop().await?;
    committed.extend(sink.durable_offsets().unwrap());
    assert!(letters.take().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_unit_and_mid_completion_then_replays_land_every_record_once() {
    let (server, store) = s3().await;
    // Units of 16000 records of a partition in four files (one per country) of about
    // 7 MiB, two parts each; the later units are smaller.
    let settings: Vec<(&str, Value)> = vec![
        ("part_size", ByteSize::mib(5).into()),
        ("row_group_rows", 500.into()),
        ("compression", "none".into()),
        ("rotate_records", 16_000.into()),
        ("partition_by", vec!["country".to_owned()].into()),
    ];
    let mut records = fat_orders("shop.orders", 0, 20_000);
    records.extend(fat_orders("shop.orders", 1, 3000));
    let mut committed = SinkOffsets::new();

    // 1. Killed in the middle of the first unit: files open, parts on the server.
    run(Arc::clone(&store), &settings, &records, &mut committed, Some(14))
        .await
        .unwrap();
    assert!(committed.is_empty(), "{committed:?}");
    // Dropping a sink without stopping it leaves its uploads (as a killed process does).
    let left = uploads_on_server(&server);
    assert!(!left.is_empty(), "parts of the unit's files are on the server");
    eprintln!("after the kill: {} upload(s) open", left.len());
    let (objects, _) = read_back(&server, &store).await;
    assert!(
        objects.is_empty(),
        "nothing is visible before its unit is complete: {objects:?}"
    );

    // 2. Dies at its third completion: the first unit's manifest is written, one file
    //    is complete, three are not.
    let dying: Arc<dyn ObjectStore> = Arc::new(DiesAtCompletion {
        inner: Arc::clone(&store),
        completions: Arc::new(AtomicUsize::new(0)),
        crash_at: 3,
        dead: Arc::new(AtomicBool::new(false)),
    });
    let error = run(dying, &settings, &records, &mut committed, None).await.unwrap_err();
    assert!(error.message().contains("injected crash"), "{error}");
    let manifests = store.list("_plexus/").await.unwrap();
    assert_eq!(manifests.len(), 1, "the unit's manifest is written: {manifests:?}");
    let (objects, _) = read_back(&server, &store).await;
    assert_eq!(objects.len(), 1, "one file of the unit is complete: {objects:?}");
    assert!(
        !uploads_on_server(&server).is_empty(),
        "the other files' uploads are open"
    );

    // 3. The replay completes the interrupted unit and goes on to the end.
    run(Arc::clone(&store), &settings, &records, &mut committed, None)
        .await
        .unwrap();
    let (objects, back) = read_back(&server, &store).await;
    assert_exactly_once(&back, &records, "after the replay");
    // Partition 0: two units of four countries and a last one; partition 1: one.
    assert!(objects.len() >= 12, "{} files", objects.len());
    assert!(
        objects.iter().any(|o| o.size > 5 << 20),
        "no file of several parts: {objects:?}"
    );
    let left = uploads_on_server(&server);
    assert!(left.is_empty(), "uploads left on the server: {left:?}");
    assert_eq!(store.abort_uploads("").await.unwrap(), 0);
    let tp0 = TopicPartition {
        topic: "shop.orders".into(),
        partition: 0,
    };
    assert_eq!(committed.get(&tp0), Some(&20_000));
}
