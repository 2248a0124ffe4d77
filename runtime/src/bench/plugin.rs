//! `plexus bench plugin`: what crossing the plugin boundary costs.
//!
//! The pipeline of `plexus bench pipeline` (datagen change events of `orders`, to the
//! log, to a sink that drops them) runs twice in this process: once into the built-in
//! `discard` sink, once into the `blackhole` sink of the `jsonl` example plugin, which
//! does exactly what `discard` does. Each run has a log of its own (a `sync` before it,
//! deleted after it, so neither pays for the other's write-back) and is timed from
//! the worker's start until the sink has read every record. The last line:
//!
//! ```text
//! plugin-bench: builtin_rec_s=X plugin_rec_s=X ratio=X
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_config::Config;
use plexus_runtime::{PluginHost, Registry, TaskState, Worker};

/// The library that offers `blackhole`, as cargo names it.
const PLUGIN_FILE: &str = if cfg!(target_os = "macos") {
    "libplexus_plugin_jsonl.dylib"
} else {
    "libplexus_plugin_jsonl.so"
};

#[derive(clap::Args)]
pub struct PluginBenchArgs {
    /// Change events to generate (deletes add a tombstone record each).
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Where the benchmark's logs live (emptied first).
    #[arg(long, default_value = "target/plugin-bench")]
    dir: PathBuf,
    /// The `jsonl` example plugin (default: `libplexus_plugin_jsonl.so` beside the
    /// plexus binary, where `cargo build --release -p plexus-plugin-jsonl` puts it).
    #[arg(long)]
    plugin: Option<PathBuf>,
}

pub async fn run(args: PluginBenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let plugin = match args.plugin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("find the plexus binary")?
            .with_file_name(PLUGIN_FILE),
    };
    if !plugin.is_file() {
        bail!(
            "plugin `{}` not found; build it with `cargo build --release -p plexus-plugin-jsonl` (beside a release plexus) or name it with --plugin",
            plugin.display()
        );
    }
    let host = PluginHost::new();
    let mut registry = Registry::builtin();
    let types = host
        .load_file(&plugin, &mut registry)
        .with_context(|| format!("load `{}`", plugin.display()))?;
    if !types.iter().any(|t| t == "blackhole") {
        bail!(
            "plugin `{}` offers no `blackhole` sink (it offers {})",
            plugin.display(),
            types.join(", ")
        );
    }
    eprintln!("plugin-bench: sink plugin {}", plugin.display());

    let _ = std::fs::remove_dir_all(&args.dir);
    // Each run's log is deleted right after it, so that the second run does not pay for
    // writing back the first one's pages.
    let builtin = pipeline(args.records, &args.dir.join("builtin"), "discard", registry.clone()).await?;
    println!("plugin-bench: sink=discard {}", builtin.line());
    let plugin = pipeline(args.records, &args.dir.join("plugin"), "blackhole", registry).await?;
    println!("plugin-bench: sink=blackhole(plugin) {}", plugin.line());
    if plugin.records != builtin.records {
        bail!(
            "the plugin sink read {} records, the built-in one {}",
            plugin.records,
            builtin.records
        );
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    println!(
        "plugin-bench: builtin_rec_s={:.0} plugin_rec_s={:.0} ratio={:.3}",
        builtin.rec_s,
        plugin.rec_s,
        plugin.rec_s / builtin.rec_s
    );
    Ok(std::process::ExitCode::SUCCESS)
}

struct Run {
    records: u64,
    rec_s: f64,
    secs: f64,
    /// CPU seconds the process used: on a shared machine, a figure that other
    /// processes disturb less than the rate.
    cpu_s: f64,
    /// The load averages when it ended.
    load: String,
}

impl Run {
    fn line(&self) -> String {
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

/// `plexus bench pipeline`'s pipeline into the sink type `sink`.
async fn pipeline(records: u64, dir: &Path, sink: &str, registry: Registry) -> anyhow::Result<Run> {
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
    worker.shutdown().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Run {
        records: read,
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
