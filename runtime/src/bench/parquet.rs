//! `plexus bench parquet`: the `parquet` sink exporting datagen change events from the
//! log, against the tools a data engineer would otherwise use on the same events.
//!
//! 1. Not timed: `--rows` change events of datagen's `orders` are generated into a log
//!    by a child `plexus run` (so that this process's memory is the export's alone),
//!    and their values are dumped as JSON lines.
//! 2. Timed: a worker in this process running only a `parquet` sink (flattened
//!    envelope, zstd) reads the topic from the log and writes it to a local directory,
//!    from `Worker::start` until its graceful shutdown has finished every file (the
//!    sink is done when it has read every record, polled every 10 ms); then the same to
//!    SeaweedFS (started here, on loopback).
//! 3. Timed inside Python subprocesses, conversion only: `pyarrow.json.read_json` +
//!    `pyarrow.parquet.write_table`, and DuckDB's `COPY (SELECT * FROM read_json(...))
//!    TO ... (FORMAT parquet)`, from the JSON lines, with zstd at the sink's level.
//!
//! Peak RSS is this process's VmHWM after the exports: before them it has only streamed
//! the log into the JSON lines file (1 MiB reads), so the peak is the exports'.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_config::Config;
use plexus_log::{Log, LogConfig};
use plexus_runtime::{Registry, TaskState, Worker};
use plexus_tests::seaweed::SeaweedFs;

use super::procfs::{load_average, peak_rss_mb};

#[derive(Debug, clap::Args)]
pub struct ParquetBenchArgs {
    /// Change events to export (deletes add a tombstone record each, not counted).
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    rows: u64,
    /// Where the benchmark's log, JSON lines and files live (emptied first, removed at
    /// the end).
    #[arg(long, default_value = "target/parquet-bench")]
    dir: PathBuf,
}

/// The sink's zstd level (`ZSTD_LEVEL` in connectors/parquet/src/writer.rs), given to
/// both references: pyarrow's default would be 1, DuckDB's 3.
const ZSTD_LEVEL: i32 = 3;

/// The topic the events are generated into.
const TOPIC: &str = "bench.orders";

/// An export that makes no progress for this long fails the benchmark.
const STALL: Duration = Duration::from_secs(120);

pub async fn run(args: ParquetBenchArgs) -> anyhow::Result<ExitCode> {
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(args: ParquetBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir).with_context(|| format!("resolve `{}`", args.dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create `{}`", dir.display()))?;
    let data = dir.join("data");
    eprintln!(
        "parquet-bench: generating {} change events into the log (machine load: {})",
        args.rows,
        load_average()
    );
    generate(&dir, &data, args.rows)?;
    let jsonl = dir.join("events.jsonl");
    let events = dump(&data, &jsonl).await?;
    if events != args.rows {
        bail!("the log holds {events} change events, not {}", args.rows);
    }
    let before = peak_rss_mb().unwrap_or(f64::NAN);
    eprintln!(
        "parquet-bench: {events} events, {:.0} MB of JSON lines; peak RSS so far {before:.1} MB",
        file_mb(&jsonl)
    );

    // Local directory.
    let local_dir = dir.join("local");
    let local = export(
        &data,
        "export-local",
        &format!("url = \"file://{}\"\n", local_dir.display()),
    )
    .await?;
    let local_rss = peak_rss_mb().unwrap_or(f64::NAN);
    let spec = serde_json::json!({ "kind": "local", "root": local_dir });
    check_rows(&dir, &spec, events)?;
    eprintln!(
        "parquet-bench: local directory: {:.2} s, {:.0} rows/s, {:.1} MB of Parquet; peak RSS {local_rss:.1} MB",
        local.as_secs_f64(),
        events as f64 / local.as_secs_f64(),
        dir_mb(&local_dir)
    );

    // SeaweedFS.
    eprintln!("parquet-bench: starting SeaweedFS");
    let server = tokio::task::spawn_blocking(|| -> anyhow::Result<SeaweedFs> {
        let server = SeaweedFs::start()?;
        server.create_bucket("bench")?;
        Ok(server)
    })
    .await??;
    let s3 = export(
        &data,
        "export-s3",
        &format!(
            "url = \"s3://bench/export\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\n\
             secret_access_key = \"{}\"\n",
            server.endpoint(),
            server.access_key_id(),
            server.secret_access_key()
        ),
    )
    .await?;
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    let spec = serde_json::json!({
        "kind": "s3",
        "endpoint": server.endpoint().trim_start_matches("http://"),
        "access_key": server.access_key_id(),
        "secret_key": server.secret_access_key(),
        "root": "bench/export",
    });
    check_rows(&dir, &spec, events)?;
    drop(server);
    eprintln!(
        "parquet-bench: SeaweedFS: {:.2} s, {:.0} rows/s; peak RSS {rss:.1} MB",
        s3.as_secs_f64(),
        events as f64 / s3.as_secs_f64()
    );

    // The references.
    let pyarrow = reference(&dir, "pyarrow", PYARROW, &jsonl, events)?;
    let duckdb = reference(&dir, "duckdb", DUCKDB, &jsonl, events)?;
    eprintln!("parquet-bench: done (machine load: {})", load_average());

    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let local_rows_s = rate(local);
    let best = rate(pyarrow).max(rate(duckdb));
    println!(
        "parquet-bench: rows={events} local_rows_s={local_rows_s:.0} s3_rows_s={:.0} pyarrow_rows_s={:.0} \
         duckdb_rows_s={:.0} ratio_vs_best={:.2} peak_rss_mb={rss:.1}",
        rate(s3),
        rate(pyarrow),
        rate(duckdb),
        local_rows_s / best
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// Generates `rows` change events of `orders` into `TOPIC` with a child `plexus run`.
fn generate(dir: &Path, data: &Path, rows: u64) -> anyhow::Result<()> {
    let config = dir.join("generate.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"{TOPIC}\"\n\
             [connector.settings]\nseed = 7\ncount = {rows}\ntables = [\"orders\"]\n",
            data.display()
        ),
    )?;
    let exe = std::env::current_exe().context("find the plexus binary")?;
    let started = Instant::now();
    let status = Command::new(exe)
        .args(["run", "--exit-when-done", "--rest-listen", "off"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .status()
        .context("run `plexus run` to generate the events")?;
    if !status.success() {
        bail!("generating the events failed: {status}");
    }
    eprintln!("parquet-bench: generated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the value of every change event of `TOPIC` as one JSON line; returns how many.
async fn dump(data: &Path, jsonl: &Path) -> anyhow::Result<u64> {
    let log = Log::open(LogConfig::new(data)).await?;
    let topic = log
        .topic(TOPIC)
        .with_context(|| format!("no topic `{TOPIC}` in the log"))?;
    let file = std::fs::File::create(jsonl).with_context(|| format!("create `{}`", jsonl.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut events = 0u64;
    for partition in topic.partitions() {
        let mut offset = partition.start_offset();
        loop {
            let fetch = partition.read(offset, 1 << 20).await?;
            if fetch.is_empty() {
                break;
            }
            for record in fetch.records() {
                if let Some(value) = record?.value {
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                    events += 1;
                }
            }
            offset = fetch.next_offset();
        }
    }
    out.flush()?;
    log.close().await?;
    Ok(events)
}

/// Exports `TOPIC` with a `parquet` sink named `name` (store settings `store`) in a
/// worker of this process; returns the time from its start to the end of its shutdown.
async fn export(data: &Path, name: &str, store: &str) -> anyhow::Result<Duration> {
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"{name}\"\ntype = \"parquet\"\ntopics = [\"{TOPIC}\"]\n\
         [connector.settings]\n{store}compression = \"zstd\"\nenvelope = \"flatten\"\n",
        data.display()
    );
    let registry = Registry::builtin();
    let config = Config::load_str(&[(PathBuf::from("parquet-bench.toml"), text)], &registry, &|_| None)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    eprintln!("parquet-bench: exporting with `{name}`");
    let started = Instant::now();
    let worker = Worker::start(&config, registry).await?;
    let mut last = (0u64, Instant::now());
    let mut progress = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let metrics = worker.metrics();
        let Some(m) = metrics.get(name) else {
            bail!("the worker runs no connector `{name}`");
        };
        if m.sink_unread.load(Ordering::Relaxed) == 0 {
            break;
        }
        if let Some(status) = worker.status().get(name)
            && status.state == TaskState::Failed
        {
            bail!(
                "the sink failed: {}",
                status.last_error.map(|e| e.0).unwrap_or_default()
            );
        }
        let read = m.records.load(Ordering::Relaxed);
        if read > last.0 {
            last = (read, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "the export made no progress for {} s ({read} records read)",
                STALL.as_secs()
            );
        }
        if progress.elapsed() >= Duration::from_secs(2) {
            progress = Instant::now();
            eprintln!(
                "parquet-bench:   {read} records read after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    worker.shutdown().await?;
    Ok(started.elapsed())
}

/// Checks, with pyarrow reading the files' footers, that the export holds `events` rows.
fn check_rows(dir: &Path, spec: &serde_json::Value, events: u64) -> anyhow::Result<()> {
    let out = python(dir, "count_rows.py", COUNT_ROWS, &[&spec.to_string()])?;
    let rows: u64 = out
        .trim()
        .parse()
        .with_context(|| format!("count_rows.py printed `{out}`"))?;
    if rows != events {
        bail!("the export holds {rows} rows, not {events}");
    }
    Ok(())
}

/// Runs a reference conversion; returns the time it measured for itself.
fn reference(dir: &Path, name: &str, script: &str, jsonl: &Path, events: u64) -> anyhow::Result<Duration> {
    eprintln!("parquet-bench: {name} converting the JSON lines");
    let output = dir.join(format!("{name}.parquet"));
    let out = python(
        dir,
        // Not `{name}.py`: the script's directory comes first on Python's path.
        &format!("reference_{name}.py"),
        script,
        &[
            &jsonl.display().to_string(),
            &output.display().to_string(),
            &ZSTD_LEVEL.to_string(),
        ],
    )?;
    let mut fields = out.split_whitespace();
    let rows: u64 = fields.next().and_then(|f| f.parse().ok()).context("no row count")?;
    let seconds: f64 = fields.next().and_then(|f| f.parse().ok()).context("no time")?;
    if rows != events {
        bail!("{name} wrote {rows} rows, not {events}");
    }
    eprintln!(
        "parquet-bench: {name}: {seconds:.2} s, {:.0} rows/s, {:.1} MB of Parquet",
        events as f64 / seconds,
        file_mb(&output)
    );
    let _ = std::fs::remove_file(&output);
    Ok(Duration::from_secs_f64(seconds))
}

fn python(dir: &Path, file: &str, script: &str, args: &[&str]) -> anyhow::Result<String> {
    let python = plexus_tests::python::python().map_err(anyhow::Error::msg)?;
    let path = dir.join(file);
    std::fs::write(&path, script)?;
    let output = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("run {file}"))?;
    if !output.status.success() {
        bail!("{file} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / 1e6)
}

/// The size of the Parquet files under `dir`, in MB.
fn dir_mb(dir: &Path) -> f64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path)
                    } else if path.extension().is_some_and(|x| x == "parquet") {
                        e.metadata().map_or(0, |m| m.len())
                    } else {
                        0
                    }
                })
                .sum()
        })
    }
    walk(dir) as f64 / 1e6
}

/// `count_rows.py SPEC`: the rows of every `.parquet` file under a local directory or
/// an S3 prefix, from their footers.
const COUNT_ROWS: &str = r#"
import json, sys
import pyarrow.fs as pafs, pyarrow.parquet as pq
spec = json.loads(sys.argv[1])
if spec["kind"] == "local":
    fs = pafs.LocalFileSystem()
else:
    fs = pafs.S3FileSystem(access_key=spec["access_key"], secret_key=spec["secret_key"],
                           endpoint_override=spec["endpoint"], scheme="http", region="us-east-1")
infos = fs.get_file_info(pafs.FileSelector(spec["root"], recursive=True))
rows = 0
for info in infos:
    if info.type == pafs.FileType.File and info.path.endswith(".parquet"):
        with fs.open_input_file(info.path) as f:
            rows += pq.ParquetFile(f).metadata.num_rows
print(rows)
"#;

/// `reference_pyarrow.py JSONL OUT LEVEL`: prints the rows and the seconds of the conversion.
const PYARROW: &str = r#"
import sys, time
import pyarrow.json, pyarrow.parquet
source, target, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
table = pyarrow.json.read_json(source)
pyarrow.parquet.write_table(table, target, compression="zstd", compression_level=level)
print(table.num_rows, time.perf_counter() - started)
"#;

/// `reference_duckdb.py JSONL OUT LEVEL`: prints the rows and the seconds of the conversion.
const DUCKDB: &str = r#"
import sys, time
import duckdb
source, target, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
started = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json('{source}')) TO '{target}' "
            f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {level})")
seconds = time.perf_counter() - started
rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
print(rows, seconds)
"#;
