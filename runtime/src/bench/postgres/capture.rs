//! The source under test: one `postgres-cdc` connector capturing one table, run in a
//! worker of this process, and how far it got into the durable log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_config::Config;
use plexus_log::{FsyncPolicy, Log, LogConfig, Partition, TopicConfig};
use plexus_runtime::{Registry, TaskState, Worker};
use plexus_tests::postgres::{PASSWORD, USER};

use super::STALL;
use super::cluster::DATABASE;

/// One connector, its table, slot, publication, topic and log.
pub struct Capture {
    pub connector: String,
    pub table: &'static str,
    pub topic: String,
    pub slot: String,
    pub publication: String,
    data: PathBuf,
    snapshot_mode: &'static str,
}

impl Capture {
    /// `snapshot_mode` is the source's setting: `initial` or `never`.
    pub fn new(dir: &Path, name: &str, table: &'static str, snapshot_mode: &'static str) -> Capture {
        Capture {
            connector: format!("cdc-{name}"),
            table,
            topic: format!("cdc.public.{table}"),
            slot: format!("plexus_bench_{name}"),
            publication: format!("plexus_bench_{name}"),
            data: dir.join(name),
            snapshot_mode,
        }
    }

    /// The table's topic, fsynced on every append (see the parent module's comment).
    /// Created before the worker starts, so the source finds it and does not create
    /// one with the default settings.
    pub async fn create_topic(&self) -> anyhow::Result<()> {
        let log = Log::open(LogConfig::new(&self.data))
            .await
            .with_context(|| format!("open the log in `{}`", self.data.display()))?;
        let config = TopicConfig {
            fsync: FsyncPolicy::Always,
            ..TopicConfig::default()
        };
        log.create_topic(&self.topic, config)
            .await
            .with_context(|| format!("create topic `{}`", self.topic))?;
        log.close().await.context("close the log")?;
        Ok(())
    }

    /// Starts a worker running the connector against the server on `port`.
    pub async fn start(&self, port: u16) -> anyhow::Result<Worker> {
        let spill = self.data.join("spill");
        std::fs::create_dir_all(&spill).with_context(|| format!("create `{}`", spill.display()))?;
        let text = format!(
            r#"
[worker]
data_dir = {data}

[[connector]]
name = "{connector}"
type = "postgres-cdc"
topic = "cdc.{{table}}"
[connector.settings]
host = "127.0.0.1"
port = {port}
user = "{USER}"
password = "${{PGPASSWORD}}"
database = "{DATABASE}"
sslmode = "disable"
tables = ["public.{table}"]
slot = "{slot}"
publication = "{publication}"
snapshot_mode = "{mode}"
spill_dir = {spill}
"#,
            data = toml_string(&self.data),
            connector = self.connector,
            table = self.table,
            slot = self.slot,
            publication = self.publication,
            mode = self.snapshot_mode,
            spill = toml_string(&spill),
        );
        let registry = Registry::builtin();
        let config = Config::load_str(&[(PathBuf::from("cdc-bench.toml"), text)], &registry, &|name| {
            (name == "PGPASSWORD").then(|| PASSWORD.to_owned())
        })
        .map_err(|p| anyhow::anyhow!("{p}"))?;
        Worker::start(&config, registry).await
    }

    /// The table topic's partition.
    pub fn partition(&self, worker: &Worker) -> anyhow::Result<Arc<Partition>> {
        worker
            .log()
            .topic(&self.topic)
            .and_then(|t| t.partitions().first().cloned())
            .with_context(|| format!("topic `{}` has no partition", self.topic))
    }

    /// Waits until `target` records of the topic are durable; fails when the connector
    /// fails, or nothing moves for [`STALL`].
    pub async fn wait_durable(&self, worker: &Worker, target: i64) -> anyhow::Result<()> {
        let mut seen = -1;
        let mut moved = Instant::now();
        loop {
            let durable = self.durable(worker);
            if durable >= target {
                return Ok(());
            }
            if durable > seen {
                seen = durable;
                moved = Instant::now();
            }
            let status = worker.status().get(&self.connector);
            let error = status
                .as_ref()
                .and_then(|s| s.last_error.as_ref())
                .map_or_else(String::new, |(e, _)| format!("; its last error: {e}"));
            if status.as_ref().is_some_and(|s| s.state == TaskState::Failed) {
                bail!(
                    "connector `{}` failed at {durable} of {target} records{error}",
                    self.connector
                );
            }
            if moved.elapsed() > STALL {
                bail!(
                    "connector `{}`: no progress for {} s at {durable} of {target} records durable{error}",
                    self.connector,
                    STALL.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// How the source wrote since the worker started, for the progress lines: how many
    /// batches, the time spent appending them, and the fsyncs of the table's topic and
    /// of the positions (flushed once a second, in the source's task).
    pub fn activity(&self, worker: &Worker) -> String {
        let partition = |topic: &str| worker.log().topic(topic).and_then(|t| t.partitions().first().cloned());
        let Some(table) = partition(&self.topic) else {
            return "no topic".to_owned();
        };
        let stats = table.stats();
        let batches = stats.appended_batches.load(Ordering::Relaxed);
        let records = stats.appended_records.load(Ordering::Relaxed);
        let appending = worker
            .connector(&self.connector)
            .map_or(0.0, |c| c.batch_latency.snapshot().sum_seconds);
        let mut text = format!(
            "{batches} batches of {:.0} records on average, {appending:.2} s appending them; fsyncs: {}",
            records as f64 / batches.max(1) as f64,
            fsyncs(&table)
        );
        if let Some(positions) = partition(plexus_runtime::POSITIONS_TOPIC) {
            text.push_str(&format!(", positions {}", fsyncs(&positions)));
        }
        text
    }

    /// Records of the table's topic durable in the log.
    fn durable(&self, worker: &Worker) -> i64 {
        worker
            .log()
            .topic(&self.topic)
            .map_or(0, |t| t.partitions().iter().map(|p| p.durable_offset()).sum())
    }
}

/// Stops a worker, bounded.
pub async fn stop(worker: Worker) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(90), worker.shutdown())
        .await
        .context("the worker did not stop within 90 s")?
}

/// "N taking X s, the slowest under Y ms" (from a histogram: upper bucket bounds).
fn fsyncs(partition: &Partition) -> String {
    let fsync = partition.stats().fsync.snapshot();
    let slowest = fsync
        .buckets
        .iter()
        .find(|(_, below)| *below >= fsync.count)
        .map_or(0.0, |(bound, _)| *bound);
    format!(
        "{} taking {:.2} s, the slowest under {:.1} ms",
        fsync.count,
        fsync.sum_seconds,
        slowest * 1e3
    )
}

/// A path as a TOML string value.
fn toml_string(path: &Path) -> String {
    toml_edit::Value::from(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_toml() {
        let path = Path::new("/tmp/a \"b\"\\c");
        let parsed: toml_edit::DocumentMut = format!("dir = {}", toml_string(path)).parse().unwrap();
        assert_eq!(parsed["dir"].as_str(), Some("/tmp/a \"b\"\\c"));
    }
}
