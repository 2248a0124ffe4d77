//! The worker with real connectors and test connectors: restarts with backoff, dead
//! letters, reload, graceful shutdown, exactly-once resumption of sources.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use plexus_config::{ConfigSchema, ConnectorKind, Settings};
use plexus_connector::{
    ConnectorError, ConnectorFactory, DeadLetter, Poll, Position, Source, SourceBatch, SourceContext, SourceRecord,
    async_trait,
};
use plexus_log::{Log, LogConfig};
use plexus_runtime::{Registry, TaskState, Worker};

static EMPTY: LazyLock<ConfigSchema> = LazyLock::new(ConfigSchema::default);

/// A source that counts to `total`, failing with a retriable error on its first
/// `failures` starts, and dead-lettering every 10th number.
struct Flaky {
    starts: Arc<AtomicU32>,
    failures: u32,
    total: u64,
    next: u64,
}

#[async_trait]
impl Source for Flaky {
    async fn start(&mut self, _ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        let start = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if start <= self.failures {
            return Err(ConnectorError::retriable(format!("not yet (start {start})")));
        }
        self.next = resume.and_then(|p| p.as_u64()).map_or(0, |n| n + 1);
        Ok(())
    }

    async fn poll(&mut self, ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        if self.next >= self.total {
            return Ok(Poll::Finished);
        }
        let mut records = Vec::new();
        let first = self.next;
        while self.next < self.total && self.next < first + 7 {
            if self.next % 10 == 9 {
                ctx.dead_letter(DeadLetter {
                    key: None,
                    payload: Some(format!("bad {}", self.next).into()),
                    reason: "multiple of ten minus one".into(),
                    origin: format!("counter@{}", self.next),
                })?;
            } else {
                records.push(SourceRecord::new(1, None, Some(self.next.to_string().into())));
            }
            self.next += 1;
        }
        Ok(Poll::Batch(SourceBatch {
            records,
            position: Position::from_u64(self.next - 1),
        }))
    }
}

struct FlakyFactory {
    starts: Arc<AtomicU32>,
    failures: u32,
    total: u64,
}

impl ConnectorFactory for FlakyFactory {
    fn type_name(&self) -> &str {
        "flaky"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &EMPTY
    }

    fn create_source(&self, _settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(Flaky {
            starts: Arc::clone(&self.starts),
            failures: self.failures,
            total: self.total,
            next: 0,
        }))
    }
}

fn registry(failures: u32, total: u64) -> (Registry, Arc<AtomicU32>) {
    let starts = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::builtin();
    registry.register(Arc::new(FlakyFactory {
        starts: Arc::clone(&starts),
        failures,
        total,
    }));
    (registry, starts)
}

fn config(dir: &Path, body: &str, registry: &Registry) -> plexus_config::Config {
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\n[worker.restart]\nmax_attempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n{body}",
        dir.join("data").display()
    );
    plexus_config::Config::load_str(&[(PathBuf::from("test.toml"), text)], registry, &|_| None)
        .unwrap_or_else(|p| panic!("{p}"))
}

async fn values(log: &Log, topic: &str) -> Vec<String> {
    let Some(topic) = log.topic(topic) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in topic.partitions() {
        let mut offset = p.start_offset();
        loop {
            let fetch = p.read(offset, 1 << 20).await.unwrap();
            if fetch.is_empty() {
                break;
            }
            for r in fetch.records() {
                out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
            }
            offset = fetch.next_offset();
        }
    }
    out
}

#[tokio::test]
async fn a_failing_task_restarts_with_backoff_and_dead_letters_go_to_their_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, starts) = registry(2, 100);
    let body = "[[connector]]\nname = \"count\"\ntype = \"flaky\"\ntopic = \"numbers\"\n[connector.errors]\ntolerance = \"dead-letter\"\n";
    let config = config(dir.path(), body, &registry);
    let worker = Worker::start(&config, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    let status = worker.status().get("count").unwrap();
    assert_eq!(status.state, TaskState::Finished);
    assert_eq!(status.restarts, 2, "two failed starts, then success");
    assert!(status.last_error.unwrap().0.contains("not yet"));
    assert_eq!(starts.load(Ordering::SeqCst), 3);

    let log = worker.log().clone();
    let mut got = values(&log, "numbers").await;
    got.sort_by_key(|v| v.parse::<u64>().unwrap());
    let expected: Vec<String> = (0..100u64).filter(|n| n % 10 != 9).map(|n| n.to_string()).collect();
    assert_eq!(got, expected, "every number exactly once");

    let dlq = log.topic("dlq.count").expect("dead-letter topic");
    let fetch = dlq.partition(0).unwrap().read(0, 1 << 20).await.unwrap();
    let letters: Vec<_> = fetch.records().map(Result::unwrap).collect();
    assert_eq!(letters.len(), 10);
    let header = |r: &plexus_log::StoredRecord, name: &str| {
        r.headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(
        header(&letters[0], plexus_runtime::HEADER_CONNECTOR).as_deref(),
        Some("count")
    );
    assert_eq!(
        header(&letters[0], plexus_runtime::HEADER_ORIGIN).as_deref(),
        Some("counter@9")
    );
    assert_eq!(
        header(&letters[0], plexus_runtime::HEADER_REASON).as_deref(),
        Some("multiple of ten minus one")
    );
    drop(log);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_task_that_keeps_failing_stays_failed_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, starts) = registry(100, 10);
    let body = "[[connector]]\nname = \"broken\"\ntype = \"flaky\"\ntopic = \"a\"\n\n[[connector]]\nname = \"fine\"\ntype = \"datagen\"\ntopic = \"b\"\n[connector.settings]\ncount = 500\n";
    let config = config(dir.path(), body, &registry);
    let worker = Worker::start(&config, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    let broken = worker.status().get("broken").unwrap();
    assert_eq!(broken.state, TaskState::Failed);
    assert_eq!(starts.load(Ordering::SeqCst), 4, "the first start and three restarts");
    assert_eq!(worker.status().get("fine").unwrap().state, TaskState::Finished);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_records_fail_the_connector_when_the_policy_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry(0, 100);
    let body = "[[connector]]\nname = \"strict\"\ntype = \"flaky\"\ntopic = \"n\"\n";
    let config = config(dir.path(), body, &registry);
    let worker = Worker::start(&config, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    let status = worker.status().get("strict").unwrap();
    assert_eq!(status.state, TaskState::Failed);
    let error = status.last_error.unwrap().0;
    assert!(
        error.contains("counter@9") && error.contains("errors.tolerance"),
        "{error}"
    );
    assert_eq!(status.restarts, 0, "a fatal error is not retried");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_source_resumes_after_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry(0, 50);
    let body = "[[connector]]\nname = \"count\"\ntype = \"flaky\"\ntopic = \"numbers\"\n[connector.errors]\ntolerance = \"dead-letter\"\n";
    let config1 = config(dir.path(), body, &registry);
    let worker = Worker::start(&config1, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    worker.shutdown().await.unwrap();

    // Same connector, more numbers: only the new ones are added.
    let (registry, _) = registry_with_total(120);
    let config2 = config(dir.path(), body, &registry);
    let worker = Worker::start(&config2, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    let got = values(worker.log(), "numbers").await;
    let expected = (0..120u64).filter(|n| n % 10 != 9).count();
    assert_eq!(got.len(), expected, "no duplicates after the restart");
    worker.shutdown().await.unwrap();
}

fn registry_with_total(total: u64) -> (Registry, Arc<AtomicU32>) {
    registry(0, total)
}

#[tokio::test]
async fn reload_stops_removed_connectors_and_starts_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry(0, 10);
    let first = config(
        dir.path(),
        "[[connector]]\nname = \"slow\"\ntype = \"datagen\"\ntopic = \"s\"\n[connector.settings]\nrate = 100\n",
        &registry,
    );
    let worker = Worker::start(&first, registry.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(worker.status().get("slow").unwrap().state, TaskState::Running);

    let second = config(
        dir.path(),
        "[[connector]]\nname = \"count\"\ntype = \"flaky\"\ntopic = \"numbers\"\n[connector.errors]\ntolerance = \"dead-letter\"\n",
        &registry,
    );
    worker.reload(&second).await;
    assert!(worker.status().get("slow").is_none(), "removed connector stopped");
    assert!(worker.wait_idle(Duration::from_secs(20)).await);
    assert_eq!(worker.status().get("count").unwrap().state, TaskState::Finished);
    assert_eq!(values(worker.log(), "numbers").await.len(), 9);
    let written = values(worker.log(), "datagen.orders").await.len() + values(worker.log(), "s").await.len();
    assert!(written > 0, "the first connector ran before the reload");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_an_endless_source_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = registry(0, 10);
    let config = config(
        dir.path(),
        "[[connector]]\nname = \"endless\"\ntype = \"datagen\"\ntopic = \"e\"\n",
        &registry,
    );
    let worker = Worker::start(&config, registry).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    worker.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // The log was closed cleanly: it opens again.
    let log = Log::open(LogConfig::new(dir.path().join("data"))).await.unwrap();
    assert!(!log.topic_names().is_empty());
}

/// A sink that takes 200 µs per record.
struct Slow;

#[async_trait]
impl plexus_connector::Sink for Slow {
    async fn start(
        &mut self,
        _ctx: &plexus_connector::SinkContext,
    ) -> Result<Option<plexus_connector::SinkOffsets>, ConnectorError> {
        Ok(None)
    }

    async fn write(
        &mut self,
        _ctx: &plexus_connector::SinkContext,
        records: Vec<plexus_connector::SinkRecord>,
    ) -> Result<(), ConnectorError> {
        tokio::time::sleep(Duration::from_micros(200) * records.len() as u32).await;
        Ok(())
    }

    async fn flush(
        &mut self,
        _ctx: &plexus_connector::SinkContext,
        _offsets: &plexus_connector::SinkOffsets,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }
}

struct SlowFactory;

impl ConnectorFactory for SlowFactory {
    fn type_name(&self) -> &str {
        "slow"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &EMPTY
    }

    fn create_sink(&self, _settings: &Settings) -> Result<Box<dyn plexus_connector::Sink>, ConnectorError> {
        Ok(Box::new(Slow))
    }
}

#[tokio::test]
async fn a_slow_sink_holds_back_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, _) = registry(0, 10);
    registry.register(Arc::new(SlowFactory));
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\nmax_sink_lag = 300\n\n[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"t\"\nsettings = {{ count = 3000, batch_size = 50, tables = [\"orders\"] }}\n\n[[connector]]\nname = \"slow\"\ntype = \"slow\"\ntopics = [\"t\"]\n",
        dir.path().join("data").display()
    );
    let config = plexus_config::Config::load_str(&[(PathBuf::from("bp.toml"), text)], &registry, &|_| None)
        .unwrap_or_else(|p| panic!("{p}"));
    let worker = Worker::start(&config, registry).await.unwrap();
    let mut worst = 0;
    let mut samples = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let Some(topic) = worker.log().topic("t") else { continue };
        let end = topic.partition(0).unwrap().end_offset();
        let committed = worker.log().groups().committed("slow", "t", 0).map_or(0, |c| c.offset);
        worst = worst.max(end - committed);
        samples += 1;
        let finished = worker.status().get("gen").unwrap().state == TaskState::Finished;
        if finished && committed == end {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline stalled at {committed}/{end}"
        );
    }
    assert!(samples > 10);
    // At most the limit plus one batch (50 events and their tombstones) ahead.
    assert!(worst <= 300 + 100, "the source ran {worst} records ahead of the sink");
    assert!(worst > 150, "the source did run ahead up to about the limit: {worst}");
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn keyed_records_go_to_their_key_partition_in_source_order() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\ndefault_partitions = 3\n\n[[connector]]\nname = \"gen\"\ntype = \"datagen\"\n\
         topic = \"shop.{{table}}\"\n[connector.settings]\nseed = 3\ncount = 3000\ntables = [\"orders\", \"customers\"]\n",
        dir.path().join("data").display()
    );
    let registry = Registry::builtin();
    let config = plexus_config::Config::load_str(&[(PathBuf::from("test.toml"), text)], &registry, &|_| None)
        .unwrap_or_else(|p| panic!("{p}"));
    let worker = Worker::start(&config, registry).await.unwrap();
    assert!(worker.wait_idle(Duration::from_secs(30)).await);

    let mut seqs = Vec::new();
    for name in ["shop.orders", "shop.customers"] {
        let topic = worker.log().topic(name).unwrap();
        assert_eq!(topic.partitions().len(), 3);
        let mut partition_of = std::collections::HashMap::new();
        for p in topic.partitions() {
            let mut offset = p.start_offset();
            let mut last_seq = -1i64;
            let mut count = 0;
            loop {
                let fetch = p.read(offset, 1 << 20).await.unwrap();
                if fetch.is_empty() {
                    break;
                }
                for r in fetch.records() {
                    let r = r.unwrap();
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    let other = partition_of.insert(key.clone(), p.id());
                    assert!(
                        other.is_none_or(|o| o == p.id()),
                        "{name}: key {key} in partitions {other:?} and {}",
                        p.id()
                    );
                    let Some(value) = r.value else { continue };
                    let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
                    let seq = value["source"]["seq"].as_i64().unwrap();
                    assert!(seq > last_seq, "{name}/{}: seq {seq} after {last_seq}", p.id());
                    last_seq = seq;
                    seqs.push(seq);
                    count += 1;
                }
                offset = fetch.next_offset();
            }
            assert!(count > 0, "{name}/{} holds records", p.id());
        }
    }
    seqs.sort_unstable();
    let expected: Vec<i64> = (seqs[0]..seqs[0] + 3000).collect();
    assert_eq!(seqs, expected, "every event once");
    worker.shutdown().await.unwrap();
}
