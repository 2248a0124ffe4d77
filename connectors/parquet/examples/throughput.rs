//! Throughput of the sink on the path the runtime drives: `datagen` change events (the
//! real generator, schemas and headers; `topic = "shop.{table}"`, tombstones after
//! deletes) as `SinkRecord`s whose values are slices of one buffer per fetch, handed to
//! `write` in fetches of about 1 MiB per topic-partition, round robin, flushed every
//! 100,000 records, then `stop`; into a local directory, `envelope = "flatten"`, zstd.
//!
//! ```text
//! cargo run --release -p plexus-connector-parquet --example throughput -- \
//!     [--events N] [--dir D] [--live] [--fetch-bytes B] [--set name=value]...
//! ```
//!
//! By default every record is generated before the clock starts (the time is the sink's
//! alone; the process holds them all, so its peak RSS says nothing). `--live` generates
//! them on another thread while the sink runs, a few fetches ahead: the peak RSS of the
//! process (`/usr/bin/time -v`) is then the sink's, plus the generator's few fetches,
//! and the time includes the generator's share of the CPU. `--set` passes sink settings
//! (`--set compression=snappy`). `plexus bench parquet` is the end-to-end benchmark.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use bytes::BytesMut;
use plexus_connector::{
    CollectDeadLetters, MemorySchemas, Settings, Sink, SinkContext, SinkOffsets, SinkRecord, TaskMetrics,
    TopicPartition,
};
use plexus_connector_datagen::{Generator, Op, Table};
use plexus_connector_parquet::{ParquetSink, ParquetSinkConfig};
use plexus_connector_s3::LocalStore;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What the runtime's sink task does: flush after this many records.
const FLUSH_RECORDS: u64 = 100_000;

struct Args {
    events: u64,
    dir: std::path::PathBuf,
    live: bool,
    fetch_bytes: usize,
    settings: Vec<(String, String)>,
    /// Writes the values as newline-delimited JSON (the input of the DuckDB reference).
    ndjson: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        events: 5_000_000,
        dir: std::env::temp_dir().join("plexus-parquet-throughput"),
        live: false,
        fetch_bytes: 1 << 20,
        settings: Vec::new(),
        ndjson: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--events" => {
                let text = value()?;
                args.events = text
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--events `{text}`: {e}"))?;
            }
            "--dir" => args.dir = value()?.into(),
            "--live" => args.live = true,
            "--ndjson" => args.ndjson = Some(value()?.into()),
            "--fetch-bytes" => {
                let text = value()?;
                args.fetch_bytes = text.parse().map_err(|e| format!("--fetch-bytes `{text}`: {e}"))?;
            }
            "--set" => {
                let pair = value()?;
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--set `{pair}`: expected name=value"))?;
                args.settings.push((name.to_owned(), value.to_owned()));
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(args)
}

/// One fetch of one topic: what `Partition::read` gives the sink task.
type Fetch = Vec<SinkRecord>;

/// Generates the events of `tables` in fetches: each table's records are cut into
/// fetches of about `fetch_bytes`, sent in the order the generator completes them.
fn generate(events: u64, fetch_bytes: usize, mut send: impl FnMut(Fetch) -> bool) {
    let generator = Generator::new(42, &Table::ALL, "shop");
    let mut open: BTreeMap<Table, (BytesMut, Fetch, i64)> = BTreeMap::new();
    let mut key = BytesMut::new();
    for seq in 0..events {
        let event = generator.event(seq);
        let (buf, fetch, offset) = open
            .entry(event.table)
            .or_insert_with(|| (BytesMut::with_capacity(fetch_bytes + 4096), Vec::new(), 0));
        let topic: Arc<str> = Arc::from(format!("shop.{}", event.table.name()));
        generator.write_key(&event, &mut key);
        let key_bytes = key.split().freeze();
        generator.write_value(&event, buf);
        let value = buf.split().freeze();
        let timestamp = event.ts_ms as i64;
        fetch.push(SinkRecord {
            topic: Arc::clone(&topic),
            partition: 0,
            offset: *offset,
            timestamp,
            key: Some(key_bytes.clone()),
            value: Some(value),
            headers: [plexus_connector::Header {
                key: plexus_connector::SCHEMA_HEADER.into(),
                value: event.table.schema_header().value,
            }]
            .into_iter()
            .collect(),
        });
        *offset += 1;
        if event.op == Op::Delete {
            fetch.push(SinkRecord {
                topic,
                partition: 0,
                offset: *offset,
                timestamp,
                key: Some(key_bytes),
                value: None,
                headers: Default::default(),
            });
            *offset += 1;
        }
        if buf.capacity() < 1024 || fetch.len() * 415 >= fetch_bytes {
            let full = std::mem::take(fetch);
            *buf = BytesMut::with_capacity(fetch_bytes + 4096);
            if !send(full) {
                return;
            }
        }
    }
    for (_, (_, fetch, _)) in open {
        if !fetch.is_empty() && !send(fetch) {
            return;
        }
    }
}

enum Feed {
    Ready(VecDeque<Fetch>),
    Live(Receiver<Fetch>),
}

impl Feed {
    fn next(&mut self) -> Option<Fetch> {
        match self {
            Feed::Ready(fetches) => fetches.pop_front(),
            Feed::Live(rx) => rx.recv().ok(),
        }
    }
}

/// CPU seconds the process used so far (user and system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

fn vm_hwm_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber_init();
    let args = args()?;
    let _ = std::fs::remove_dir_all(&args.dir);
    if let Some(path) = &args.ndjson {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut written = Ok(());
        generate(args.events, args.fetch_bytes, |fetch| {
            written = fetch
                .iter()
                .filter_map(|r| r.value.as_ref())
                .try_for_each(|value| out.write_all(value).and_then(|()| out.write_all(b"\n")));
            written.is_ok()
        });
        written?;
        out.flush()?;
        return Ok(());
    }
    let mut feed = if args.live {
        let (tx, rx) = sync_channel(4);
        let (events, fetch_bytes) = (args.events, args.fetch_bytes);
        std::thread::spawn(move || generate(events, fetch_bytes, |f| tx.send(f).is_ok()));
        Feed::Live(rx)
    } else {
        let mut fetches = VecDeque::new();
        let started = Instant::now();
        generate(args.events, args.fetch_bytes, |f| {
            fetches.push_back(f);
            true
        });
        println!("generated in {:.2}s", started.elapsed().as_secs_f64());
        Feed::Ready(fetches)
    };
    let schemas = Arc::new(MemorySchemas::default());
    for table in Table::ALL {
        schemas.insert(table.schema_id(), table.schema_document());
    }
    let metrics = Arc::new(TaskMetrics::default());
    let dead = Arc::new(CollectDeadLetters::default());
    let ctx = SinkContext::new("bench", 0, Arc::clone(&metrics), dead.clone()).with_schemas(schemas);
    let mut settings = Settings::new();
    for (name, value) in &args.settings {
        let value = if let Ok(n) = value.parse::<i64>() {
            plexus_config::Value::Integer(n)
        } else if let Ok(size) = value.parse::<plexus_config::ByteSize>() {
            plexus_config::Value::Size(size)
        } else {
            plexus_config::Value::String(value.clone())
        };
        settings.insert(name.clone(), value);
    }
    let config = ParquetSinkConfig::from_settings(&settings)?;
    let store = Arc::new(LocalStore::open(&args.dir).await?);
    let mut sink = ParquetSink::new(config, store);
    sink.start(&ctx).await?;
    let before = vm_hwm_mib();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let (mut rows, mut bytes, mut pending) = (0u64, 0u64, 0u64);
    let mut offsets = SinkOffsets::new();
    while let Some(fetch) = feed.next() {
        rows += fetch.iter().filter(|r| r.value.is_some()).count() as u64;
        bytes += fetch
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum::<u64>();
        pending += fetch.len() as u64;
        if let Some(last) = fetch.last() {
            let tp = TopicPartition {
                topic: last.topic.to_string(),
                partition: last.partition,
            };
            offsets.insert(tp, last.offset + 1);
        }
        sink.write(&ctx, fetch).await?;
        if pending >= FLUSH_RECORDS {
            sink.flush(&ctx, &offsets).await?;
            pending = 0;
        }
    }
    sink.flush(&ctx, &offsets).await?;
    sink.stop().await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let written: u64 = walk(&args.dir);
    let summary: u64 = sink.written().values().map(|w| w.bytes).sum();
    assert_eq!(
        summary,
        written - walk(&args.dir.join("_plexus")),
        "the sink's summary counts every file"
    );
    println!(
        "{rows} rows ({:.0} MB of JSON) in {seconds:.2}s ({cpu:.2}s CPU, {:.2} cores): {:.0} rows/s, {:.0} MB/s; {:.1} MB of Parquet in {}; \
         dead letters {}; VmHWM {before:.0} MiB before the sink ran, {:.0} MiB after",
        bytes as f64 / 1e6,
        cpu / seconds,
        rows as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
        written as f64 / 1e6,
        args.dir.display(),
        dead.take().len(),
        vm_hwm_mib(),
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

/// `RUST_LOG=info` shows the sink's summaries.
fn tracing_subscriber_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).try_init();
    }
}
