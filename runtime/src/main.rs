//! `plexus`: run, validate and inspect pipelines on the embedded log.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use plexus_config::{Config, ConnectorKind};
use plexus_log::{BatchBuilder, Compression, Log, LogConfig, TopicConfig};
use plexus_runtime::progress::Progress;
use plexus_runtime::{PluginHost, PluginScan, Registry, RestServer, TaskState, Worker};

/// How often `plexus run` logs progress when stderr is not a terminal.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(10);

mod bench;
mod client;

#[derive(Parser)]
#[command(
    name = "plexus",
    version,
    about = "Data integration on one durable log: sources, sinks, exactly once."
)]
struct Cli {
    /// Log output: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connectors of the given files or directories on the embedded log.
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Exit once every source has finished and every sink has caught up.
        #[arg(long)]
        exit_when_done: bool,
        /// Where the REST API listens, overriding [worker.rest] listen ("127.0.0.1:0"
        /// picks a free port; "off" disables it).
        #[arg(long, value_name = "ADDR|off")]
        rest_listen: Option<String>,
    },
    /// Show the connectors of a running worker (through its REST API).
    Status {
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// List, pause, resume, stop or restart connectors of a running worker.
    Connectors {
        #[command(subcommand)]
        action: client::ConnectorsAction,
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Read a connector's offsets, or reset a stopped one's.
    Offsets {
        #[command(subcommand)]
        action: client::OffsetsAction,
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Check configuration files and print every problem, or what would run.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List, create or describe topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
        /// The log's data directory (the worker must not be running on it).
        #[arg(long, default_value = "./data", global = true)]
        data_dir: PathBuf,
    },
    /// Print a topic's records as JSON lines.
    Consume {
        topic: String,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Start at the first offset instead of the end (or the group's committed offsets).
        #[arg(long)]
        from_beginning: bool,
        /// Resume from, and commit to, this consumer group.
        #[arg(long)]
        group: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Stop when no record arrived for this long (default: after reaching the end).
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
    },
    /// Append lines from standard input to a topic, one record per line.
    Produce {
        topic: String,
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Print the version.
    Version,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    List,
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    Describe {
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("plexus: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("plexus: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Run {
            paths,
            exit_when_done,
            rest_listen,
        } => run(&paths, exit_when_done, rest_listen.as_deref()).await,
        Command::Status { api } => client::status(&api).await,
        Command::Connectors { action, api } => client::connectors(&api, action).await,
        Command::Offsets { action, api } => client::offsets(&api, action).await,
        Command::Validate { paths } => Ok(validate(&paths)),
        Command::Topics { action, data_dir } => topics(action, &data_dir).await,
        Command::Consume {
            topic,
            data_dir,
            from_beginning,
            group,
            max,
            wait,
        } => consume(&topic, &data_dir, from_beginning, group.as_deref(), max, wait).await,
        Command::Produce { topic, data_dir } => produce(&topic, &data_dir).await,
        Command::Version => {
            println!("plexus {}", env!("CARGO_PKG_VERSION"));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench { which } => bench::run(which).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(paths: &[PathBuf], registry: &Registry) -> Result<Config, plexus_config::Problems> {
    Config::load(paths, registry, &|name| std::env::var(name).ok())
}

/// The connector types `paths` may use: the built-ins and the plugins in the files'
/// `[worker] plugin_dirs`. The first phase of a load: the worker table is read before
/// the connectors are checked against the types the plugins offer.
fn connector_types(host: &PluginHost, paths: &[PathBuf]) -> (Registry, PluginScan) {
    let dirs = Config::load_worker(paths, &|name| std::env::var(name).ok())
        .map(|worker| worker.plugin_dirs)
        .unwrap_or_default();
    host.registry(&dirs)
}

fn validate(paths: &[PathBuf]) -> std::process::ExitCode {
    let host = PluginHost::new();
    let (registry, scan) = connector_types(&host, paths);
    for (name, version, file, types) in &scan.loaded {
        eprintln!("plugin `{name}` {version} ({}): {}", file.display(), types.join(", "));
    }
    for refusal in &scan.refused {
        eprintln!("warning: {refusal}");
    }
    match load(paths, &registry) {
        Ok(config) => {
            println!("{}", config.summary());
            std::process::ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.len());
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(
    paths: &[PathBuf],
    exit_when_done: bool,
    rest_listen: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    let plugins = PluginHost::new();
    let (registry, scan) = connector_types(&plugins, paths);
    scan.log();
    let config = match load(paths, &registry) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("{problems}");
            bail!("{} configuration problem(s); nothing was started", problems.len());
        }
    };
    let listen = match rest_listen {
        None => config.worker.rest.listen,
        Some("off") => None,
        Some(addr) => Some(
            addr.parse::<std::net::SocketAddr>()
                .with_context(|| format!("--rest-listen `{addr}` is not an address and port such as 127.0.0.1:8083"))?,
        ),
    };
    tracing::info!(summary = %config.summary(), "Starting.");
    let worker = Arc::new(Worker::start(&config, registry.clone()).await?);
    let rest = match listen {
        Some(addr) => match RestServer::start(Arc::clone(&worker), &config.worker.rest, addr).await {
            Ok(server) => {
                eprintln!("plexus: REST API at http://{}", server.addr);
                Some(server)
            }
            Err(e) => {
                worker.shutdown().await?;
                return Err(e);
            }
        },
        None => None,
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut sighup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("install the SIGHUP handler")?;
    let live = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last: Vec<(String, u64)> = Vec::new();
    let mut last_tick = Instant::now();
    let mut last_logged = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("Interrupted; stopping."); break; }
            _ = sigterm.recv() => { tracing::info!("Terminated; stopping."); break; }
            _ = sighup.recv() => {
                // Plugins added to the folders since are loaded (loaded ones stay as they are).
                let (registry, scan) = connector_types(&plugins, paths);
                scan.log();
                match load(paths, &registry) {
                    Ok(new) => { tracing::info!(summary = %new.summary(), "Reloading."); worker.set_registry(registry); worker.reload(&new).await; }
                    Err(problems) => tracing::error!(problems = %problems, "Reload refused: the configuration has problems; the running connectors are unchanged."),
                }
            }
            _ = ticker.tick() => {
                let metrics = worker.metrics();
                let now: Vec<(String, u64)> = metrics.iter().map(|(n, m)| (n.clone(), m.records.load(Ordering::Relaxed))).collect();
                let secs = last_tick.elapsed().as_secs_f64().max(1e-3);
                let lines: Vec<String> = metrics.iter().map(|(name, m)| {
                    let total = m.records.load(Ordering::Relaxed);
                    let before = last.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v);
                    let connector = worker.connector(name);
                    let lag = connector
                        .as_ref()
                        .filter(|c| c.kind == ConnectorKind::Sink)
                        .map(|c| plexus_runtime::lag::sink_lag(worker.log(), &c.name, &c.topics));
                    let snapshot_total = m.snapshot_rows_total.load(Ordering::Relaxed);
                    let snapshot = (snapshot_total > 0).then(|| {
                        (m.snapshot_rows.load(Ordering::Relaxed).max(0) as u64, snapshot_total as u64)
                    });
                    Progress {
                        name,
                        state: connector.as_ref().map_or("?", |c| c.state.as_str()),
                        rate: total.saturating_sub(before) as f64 / secs,
                        records: total,
                        bytes: m.bytes.load(Ordering::Relaxed),
                        lag,
                        snapshot,
                    }
                    .line()
                }).collect();
                if live {
                    eprint!("\r\x1b[2K{}", lines.join(" | "));
                } else if last_logged.elapsed() >= PROGRESS_LOG_EVERY {
                    last_logged = Instant::now();
                    for line in &lines {
                        tracing::info!(progress = %line, "Progress.");
                    }
                }
                last = now;
                last_tick = Instant::now();
                if exit_when_done && done(&worker) {
                    tracing::info!("Every source finished and every sink caught up; stopping.");
                    break;
                }
            }
        }
    }
    if live {
        eprintln!();
    }
    let failed: Vec<String> = worker
        .status()
        .all()
        .into_iter()
        .filter(|(_, s)| s.state == TaskState::Failed)
        .map(|(name, s)| format!("{name}: {}", s.last_error.map(|e| e.0).unwrap_or_default()))
        .collect();
    if let Some(rest) = rest {
        rest.stop();
    }
    worker.shutdown().await?;
    if failed.is_empty() {
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        eprintln!("failed connectors:\n  {}", failed.join("\n  "));
        Ok(std::process::ExitCode::FAILURE)
    }
}

/// Every source finished (or failed, or was stopped) and every running sink has read
/// to the end of its topics: committed up to it, or (a sink that holds records past
/// its flushes, such as files that rotate) read everything, which the graceful stop
/// that follows finishes and commits.
fn done(worker: &Worker) -> bool {
    let metrics = worker.metrics();
    worker.connectors().iter().all(|c| match c.kind {
        ConnectorKind::Source => matches!(c.state, TaskState::Finished | TaskState::Failed | TaskState::Stopped),
        ConnectorKind::Sink => {
            let read_all = || {
                metrics
                    .get(&c.name)
                    .is_some_and(|m| m.sink_unread.load(Ordering::Relaxed) == 0)
            };
            matches!(c.state, TaskState::Failed | TaskState::Stopped)
                || (c.topics.iter().all(|t| worker.log().topic(t).is_some())
                    && (plexus_runtime::lag::sink_lag(worker.log(), &c.name, &c.topics) == 0 || read_all()))
        }
    })
}

async fn open_log(data_dir: &Path) -> anyhow::Result<Log> {
    Log::open(LogConfig::new(data_dir))
        .await
        .with_context(|| format!("open the log in `{}`", data_dir.display()))
}

async fn topics(action: TopicsAction, data_dir: &Path) -> anyhow::Result<std::process::ExitCode> {
    let log = open_log(data_dir).await?;
    match action {
        TopicsAction::List => {
            for name in log.topic_names() {
                println!("{name}");
            }
        }
        TopicsAction::Create { name, partitions } => {
            log.create_topic(
                &name,
                TopicConfig {
                    partitions,
                    ..TopicConfig::default()
                },
            )
            .await?;
            println!("created topic `{name}` with {partitions} partition(s)");
        }
        TopicsAction::Describe { name } => {
            let topic = log
                .topic(&name)
                .with_context(|| format!("topic `{name}` does not exist"))?;
            let c = topic.config();
            println!(
                "topic {name}: partitions={} cleanup_policy={:?} fsync={:?} segment_bytes={} retention_time={:?} retention_bytes={:?}",
                topic.partitions().len(),
                c.cleanup_policy,
                c.fsync,
                c.segment_bytes,
                c.retention_time,
                c.retention_bytes
            );
            for p in topic.partitions() {
                println!(
                    "  partition {}: start_offset={} end_offset={} bytes={} segments={}",
                    p.id(),
                    p.start_offset(),
                    p.end_offset(),
                    p.size_bytes(),
                    p.segment_count()
                );
            }
        }
    }
    log.close().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn consume(
    topic_name: &str,
    data_dir: &Path,
    from_beginning: bool,
    group: Option<&str>,
    max: Option<u64>,
    wait: Option<Duration>,
) -> anyhow::Result<std::process::ExitCode> {
    let log = open_log(data_dir).await?;
    let topic = log
        .topic(topic_name)
        .with_context(|| format!("topic `{topic_name}` does not exist"))?;
    let mut next: Vec<i64> = topic
        .partitions()
        .iter()
        .map(|p| {
            let committed = group
                .and_then(|g| log.groups().committed(g, topic_name, p.id()))
                .map(|c| c.offset);
            match (from_beginning, committed) {
                (_, Some(offset)) if !from_beginning => offset,
                (true, _) => p.start_offset(),
                _ => p.end_offset(),
            }
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut idle_since = Instant::now();
    'outer: loop {
        let mut got = false;
        for (i, p) in topic.partitions().iter().enumerate() {
            let fetch = p.read(next[i], 1 << 20).await?;
            for record in fetch.records() {
                let record = record?;
                writeln!(out, "{}", json_line(topic_name, p.id(), &record))?;
                printed += 1;
                got = true;
                if max.is_some_and(|m| printed >= m) {
                    next[i] = record.offset + 1;
                    break 'outer;
                }
            }
            next[i] = fetch.next_offset();
        }
        if got {
            idle_since = Instant::now();
            continue;
        }
        match wait {
            Some(wait) if idle_since.elapsed() < wait => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => break,
        }
    }
    out.flush()?;
    drop(out);
    if let Some(group) = group {
        let commits: Vec<(&str, u32, i64)> = next
            .iter()
            .enumerate()
            .map(|(i, n)| (topic_name, i as u32, *n))
            .collect();
        log.groups().commit_many(group, &commits, "plexus consume").await?;
    }
    log.close().await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// One record as a JSON line; values that are JSON are embedded, others are strings.
fn json_line(topic: &str, partition: u32, record: &plexus_log::StoredRecord) -> String {
    let field = |bytes: &Option<bytes::Bytes>| -> serde_json::Value {
        match bytes {
            None => serde_json::Value::Null,
            Some(b) => serde_json::from_slice(b)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned())),
        }
    };
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|h| {
            let value = h.value.as_ref().map_or(serde_json::Value::Null, |v| {
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
            });
            (h.key.clone(), value)
        })
        .collect();
    serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": field(&record.key),
        "value": field(&record.value),
        "headers": headers,
    })
    .to_string()
}

async fn produce(topic_name: &str, data_dir: &Path) -> anyhow::Result<std::process::ExitCode> {
    let mut config = LogConfig::new(data_dir);
    config.auto_create_topics = true;
    let log = Log::open(config)
        .await
        .with_context(|| format!("open the log in `{}`", data_dir.display()))?;
    let partition = log.partition(topic_name, 0).await?;
    let stdin = std::io::stdin();
    let mut batch = BatchBuilder::new(Compression::Lz4);
    let mut total = 0u64;
    for line in stdin.lock().lines() {
        let line = line.context("read standard input")?;
        batch.push(now_ms(), None, Some(line.as_bytes()), &[]);
        total += 1;
        if batch.len() >= 1000 {
            partition.append(&mut batch).await?;
        }
    }
    if !batch.is_empty() {
        partition.append(&mut batch).await?;
    }
    let _ = Arc::clone(&partition);
    log.close().await?;
    eprintln!("appended {total} record(s) to `{topic_name}`");
    Ok(std::process::ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<plexus_config::Duration>()
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}
