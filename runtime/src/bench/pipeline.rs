//! The pipeline `plexus bench pipeline` and `plexus bench plugin` time: datagen change
//! events through the log into a sink that drops them, in this process.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_config::Config;
use plexus_runtime::{Registry, TaskState, Worker};

/// One run of the pipeline.
pub(super) struct Run {
    pub records: u64,
    /// The bytes of the records' values the sink read.
    pub bytes: u64,
    pub rec_s: f64,
    pub secs: f64,
    /// CPU seconds the process used: on a shared machine, a figure that other
    /// processes disturb less than the rate.
    pub cpu_s: f64,
    /// The load averages when it ended.
    pub load: String,
}

impl Run {
    pub fn line(&self) -> String {
        format!(
            "records={} rec_s={:.0} secs={:.2} cpu_s={:.2} cpu_us_per_record={:.3} load={}",
            self.records,
            self.rec_s,
            self.secs,
            self.cpu_s,
            self.cpu_s * 1e6 / self.records.max(1) as f64,
            self.load.replace(' ', "/")
        )
    }
}

/// datagen's `orders` change events -> the log -> a sink of type `sink` named `drop`,
/// timed from the worker's start until the sink has read every record; the log is
/// deleted afterwards.
pub(super) async fn pipeline(records: u64, dir: &Path, sink: &str, registry: Registry) -> anyhow::Result<Run> {
    std::fs::create_dir_all(dir).with_context(|| format!("create `{}`", dir.display()))?;
    // Start with nothing dirty in the page cache (as the log benchmark does).
    let _ = std::process::Command::new("sync").status();
    let text = format!(
        r#"
[worker]
data_dir = "{data}"

[[connector]]
name = "gen"
type = "datagen"
topic = "bench"
[connector.settings]
seed = 7
count = {records}
tables = ["orders"]

[[connector]]
name = "drop"
type = "{sink}"
topics = ["bench"]
"#,
        data = dir.join("data").display()
    );
    let config = Config::load_str(&[(PathBuf::from("plugin-bench.toml"), text)], &registry, &|_| None)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let started = Instant::now();
    let cpu = cpu_seconds();
    let worker = Worker::start(&config, registry).await?;
    let read = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let read = worker
            .metrics()
            .get("drop")
            .map_or(0, |m| m.records.load(Ordering::Relaxed));
        let finished = worker
            .status()
            .get("gen")
            .is_some_and(|s| s.state == TaskState::Finished);
        let end: i64 = worker
            .log()
            .topic("bench")
            .map_or(0, |t| t.partitions().iter().map(|p| p.end_offset()).sum());
        if finished && read >= end as u64 {
            break read;
        }
        if let Some(status) = worker.status().get("drop").filter(|s| s.state == TaskState::Failed) {
            bail!("sink `{sink}` failed: {:?}", status.last_error);
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the pipeline into `{sink}` did not finish within 10 minutes ({read} records read)");
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu;
    let bytes = worker
        .metrics()
        .get("drop")
        .map_or(0, |m| m.bytes.load(Ordering::Relaxed));
    worker.shutdown().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Run {
        records: read,
        bytes,
        rec_s: read as f64 / secs,
        secs,
        cpu_s,
        load: super::procfs::load_average(),
    })
}

/// CPU seconds (user and system) this process has used.
fn cpu_seconds() -> f64 {
    super::procfs::proc_stat("self").map_or(0.0, |s| s.cpu_seconds())
}
