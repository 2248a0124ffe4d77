//! Crashes at every step of the commit protocol: a store that dies at its n-th write
//! (before or after doing it), the sink dropped there, a new sink on the same directory
//! resuming from what `start` returns (or what the runtime committed): every record must
//! land exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use plexus_config::{ByteSize, Value};
use plexus_connector::{ConnectorError, Sink, SinkOffsets, SinkRecord, TopicPartition, async_trait};
use plexus_connector_parquet::{Compression, ParquetSink, ParquetSinkConfig};
use plexus_connector_s3::{ObjectMeta, ObjectStore, Put, Upload};

/// Dies at its `crash_at`-th write: before doing it, or after doing it but before
/// answering. Everything fails after that, as in a dead process.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Faults>,
}

#[derive(Debug)]
struct Faults {
    writes: AtomicUsize,
    crash_at: usize,
    after: bool,
    dead: AtomicBool,
}

impl Faults {
    /// `Ok(true)`: do the write, then fail.
    fn write(&self) -> Result<bool, ConnectorError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(crashed());
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at {
            self.dead.store(true, Ordering::SeqCst);
            return if self.after { Ok(true) } else { Err(crashed()) };
        }
        Ok(false)
    }

    fn read(&self) -> Result<(), ConnectorError> {
        if self.dead.load(Ordering::SeqCst) {
            Err(crashed())
        } else {
            Ok(())
        }
    }
}

fn crashed() -> ConnectorError {
    ConnectorError::retriable("injected crash")
}

/// Runs `op` under the fault plan.
async fn faulty<T>(
    faults: &Faults,
    op: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    let fail_after = faults.write()?;
    let result = op.await?;
    if fail_after { Err(crashed()) } else { Ok(result) }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Put, ConnectorError> {
        faulty(&self.state, self.inner.put_if_absent(key, body)).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, ConnectorError> {
        let inner = faulty(&self.state, self.inner.start_upload(key)).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            state: Arc::clone(&self.state),
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        self.state.read()?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError> {
        self.state.read()?;
        self.inner.list(prefix).await
    }

    async fn abort_uploads(&self, prefix: &str) -> Result<usize, ConnectorError> {
        faulty(&self.state, self.inner.abort_uploads(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), ConnectorError> {
        faulty(&self.state, self.inner.delete(key)).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn Upload>,
    state: Arc<Faults>,
}

#[async_trait]
impl Upload for FaultyUpload {
    async fn put_part(&mut self, part: Bytes) -> Result<(), ConnectorError> {
        faulty(&self.state, self.inner.put_part(part)).await
    }

    async fn complete(self: Box<Self>) -> Result<Put, ConnectorError> {
        let state = Arc::clone(&self.state);
        faulty(&state, self.inner.complete()).await
    }

    async fn abort(self: Box<Self>) -> Result<(), ConnectorError> {
        let state = Arc::clone(&self.state);
        faulty(&state, self.inner.abort()).await
    }

    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }
}

/// One run of a worker: resumes like the runtime (the sink's offsets first, then the
/// committed ones), writes the rest of `records` a chunk per TP at a time, flushing and
/// committing after each, and stops unless the store crashed. Returns the writes the
/// store saw, and whether it ran to the end.
async fn run(
    store: Arc<dyn ObjectStore>,
    config: &ParquetSinkConfig,
    records: &[SinkRecord],
    committed: &mut SinkOffsets,
    chunk: usize,
) -> Result<(), ConnectorError> {
    let (ctx, letters, _) = context("crashy");
    let mut sink = ParquetSink::new(config.clone(), store);
    let stored = sink.start(&ctx).await?;
    let mut by_tp: BTreeMap<TopicPartition, Vec<SinkRecord>> = BTreeMap::new();
    for r in records {
        let tp = TopicPartition {
            topic: r.topic.to_string(),
            partition: r.partition,
        };
        let from = stored
            .as_ref()
            .and_then(|s| s.get(&tp).copied())
            .or_else(|| committed.get(&tp).copied())
            .unwrap_or(0);
        if r.offset >= from {
            by_tp.entry(tp).or_default().push(r.clone());
        }
    }
    let mut offsets = SinkOffsets::new();
    loop {
        let mut any = false;
        for (tp, records) in &mut by_tp {
            if records.is_empty() {
                continue;
            }
            any = true;
            let batch: Vec<SinkRecord> = records.drain(..chunk.min(records.len())).collect();
            offsets.insert(tp.clone(), batch.last().unwrap().offset + 1);
            sink.write(&ctx, batch).await?;
            sink.flush(&ctx, &offsets).await?;
            for (tp, offset) in sink.durable_offsets().unwrap() {
                committed.insert(tp, offset);
            }
        }
        if !any {
            break;
        }
    }
    sink.stop().await?;
    for (tp, offset) in sink.durable_offsets().unwrap() {
        committed.insert(tp, offset);
    }
    assert!(letters.take().is_empty());
    Ok(())
}

fn config(settings: &[(&str, Value)]) -> ParquetSinkConfig {
    let mut s = plexus_connector::Settings::new();
    for (name, value) in settings {
        s.insert(*name, value.clone());
    }
    ParquetSinkConfig::from_settings(&s).unwrap()
}

fn faulty_store(inner: &Arc<dyn ObjectStore>, crash_at: usize, after: bool) -> (Arc<dyn ObjectStore>, Arc<Faults>) {
    let state = Arc::new(Faults {
        writes: AtomicUsize::new(0),
        crash_at,
        after,
        dead: AtomicBool::new(false),
    });
    let store = Arc::new(FaultyStore {
        inner: Arc::clone(inner),
        state: Arc::clone(&state),
    });
    (store, state)
}

fn assert_exactly_once(dir: &std::path::Path, records: &[SinkRecord], context: &str) {
    let landed = landed(dir);
    let doubled: Vec<_> = landed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "{context}: landed more than once: {doubled:?}");
    let got: Vec<(u32, i64)> = landed.keys().copied().collect();
    let mut expected = landing(records);
    expected.sort();
    assert_eq!(got, expected, "{context}");
    let uploads = dir.join(".uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(left.is_empty(), "{context}: uploads left: {left:?}");
}

/// Crashes at each write of a first run, and (for crashes after a write) at a write of
/// the recovering run too, then a clean run: exactly once every time.
/// Returns the writes of a clean run and the size of its largest file.
async fn crash_everywhere(config: ParquetSinkConfig, records: Vec<SinkRecord>, chunk: usize) -> (usize, u64) {
    // A clean run counts the writes.
    let dir = tempfile::tempdir().unwrap();
    let local = local_store(dir.path()).await;
    let (store, faults) = faulty_store(&local, usize::MAX, false);
    run(store, &config, &records, &mut SinkOffsets::new(), chunk)
        .await
        .unwrap();
    assert_exactly_once(dir.path(), &records, "clean run");
    let writes = faults.writes.load(Ordering::SeqCst);
    let largest = parquet_files(dir.path())
        .iter()
        .map(|key| std::fs::metadata(dir.path().join(key)).unwrap().len())
        .max()
        .unwrap();

    for crash_at in 1..=writes {
        for after in [false, true] {
            let context = format!(
                "crash at write {crash_at} of {writes} ({})",
                if after { "after" } else { "before" }
            );
            let dir = tempfile::tempdir().unwrap();
            let local = local_store(dir.path()).await;
            let mut committed = SinkOffsets::new();
            let (store, _) = faulty_store(&local, crash_at, after);
            let first = run(store, &config, &records, &mut committed, chunk).await;
            assert!(first.is_err(), "{context}: the first run did not crash");
            if after {
                // The recovery crashes too, somewhere.
                let (store, _) = faulty_store(&local, 1 + (crash_at * 7) % 13, false);
                let _ = run(store, &config, &records, &mut committed, chunk).await;
            }
            run(Arc::clone(&local), &config, &records, &mut committed, chunk)
                .await
                .unwrap_or_else(|e| panic!("{context}: the last run failed: {e}"));
            assert_exactly_once(dir.path(), &records, &context);
        }
    }
    (writes, largest)
}

#[tokio::test]
async fn crash_at_every_step_with_small_files() {
    let config = config(&[
        ("rotate_records", 60.into()),
        ("partition_by", vec!["country".to_owned()].into()),
    ]);
    let mut records = orders("orders", 0, 0, 150);
    records.extend(orders("orders", 1, 0, 130));
    let (writes, _) = crash_everywhere(config, records, 40).await;
    assert!(writes > 30, "{writes} writes");
}

#[tokio::test]
async fn crash_at_every_step_with_multipart_uploads() {
    let mut config = config(&[("rotate_records", 3000.into()), ("part_size", ByteSize::mib(5).into())]);
    config.compression = Compression::None;
    // About 2 KiB of distinct text per record: 3000 records make a file of two parts.
    let mut records = orders("orders", 0, 0, 6000);
    for r in &mut records {
        if let Some(value) = &r.value {
            let text = String::from_utf8(value.to_vec()).unwrap();
            let note: String = (0..128)
                .map(|i| format!("{:016x}", (r.offset as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i))
                .collect();
            r.value = Some(text.replace("\"note\":null", &format!("\"note\":\"{note}\"")).into());
        }
    }
    let (writes, largest) = crash_everywhere(config, records, 1000).await;
    assert!(writes >= 8, "{writes} writes");
    assert!(
        largest > 5 << 20,
        "no file took two parts: the largest has {largest} bytes"
    );
}
