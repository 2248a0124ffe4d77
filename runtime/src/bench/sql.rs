//! `plexus bench sql`: the `sql` sink applying change events from the log to
//! PostgreSQL, against `COPY` of as many rows into an empty table of the same shape, in
//! the same run, on a throw-away cluster.
//!
//! 1. Not timed: `--events` change events of an `orders` table (70% inserts, 25% updates,
//!    5% deletes, keys drawn uniformly from `--keys`, a fixed seed) are appended to a
//!    topic of a log in this process, with their schema registered in `__schemas`, as
//!    the CDC source writes them. An update or insert of any key is an upsert of the
//!    row, a delete of an absent key deletes nothing.
//! 2. Timed: a worker in this process running only a `sql` sink (upsert mode, default
//!    settings) reads the topic and applies it, from `Worker::start` until the target
//!    has committed every event (the offset the sink stores in `plexus_offsets`, in the
//!    transaction of the rows, polled every 10 ms on a connection of its own). The table
//!    then holds exactly the rows the events leave (count and sum of a column checked
//!    with `psql`).
//! 3. Timed: one `COPY ... FROM STDIN` of `--events` rows of the same shape into an
//!    empty table with the same primary key.
//!
//! Peak RSS is this process's VmHWM at the end (the generation streams its records in
//! batches, so the peak is the worker's).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use plexus_config::Config;
use plexus_connector::{SCHEMA_HEADER, SCHEMAS_TOPIC};
use plexus_log::{Header, Log, LogConfig, Record, TopicConfig};
use plexus_runtime::{Registry, TaskState, Worker};
use plexus_tests::TempPostgres;
use sqlx::{ConnectOptions, Connection};

use super::procfs::{load_average, peak_rss_mb};

#[derive(Debug, clap::Args)]
pub struct SqlBenchArgs {
    /// Change events to apply.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// The keys the events are spread over.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Where the benchmark's log lives (emptied first, removed at the end).
    #[arg(long, default_value = "target/sql-bench")]
    dir: PathBuf,
    /// Sink settings other than the defaults, to explore them: `commit_interval="500ms"`
    /// (TOML, repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

const TOPIC: &str = "bench.public.orders";
const SCHEMA_ID: &str = "bench.orders.1";
const SCHEMA: &str = r#"{"id":"bench.orders.1","table":"public.orders","columns":[
{"name":"id","type":"bigint","json":"integer","arrow":"Int64","key":true},
{"name":"customer_id","type":"bigint","json":"integer","arrow":"Int64","key":false},
{"name":"product_id","type":"bigint","json":"integer","arrow":"Int64","key":false},
{"name":"quantity","type":"integer","json":"integer","arrow":"Int32","key":false},
{"name":"unit_price","type":"numeric(10,2)","json":"string","arrow":"Decimal128(10, 2)","key":false},
{"name":"status","type":"text","json":"string","arrow":"Utf8","key":false},
{"name":"created_at","type":"timestamp with time zone","json":"string","arrow":"Timestamp(Microsecond, Some(\"UTC\"))","key":false},
{"name":"note","type":"text","json":"string","arrow":"Utf8","key":false}]}"#;

/// The sink's progress is checked this often.
const POLL: Duration = Duration::from_millis(10);
/// An apply that makes no progress for this long fails the benchmark.
const STALL: Duration = Duration::from_secs(120);

pub async fn run(args: SqlBenchArgs) -> anyhow::Result<ExitCode> {
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bench(args: SqlBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir).with_context(|| format!("resolve `{}`", args.dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create `{}`", dir.display()))?;
    let data = dir.join("data");
    eprintln!("sql-bench: starting PostgreSQL (machine load: {})", load_average());
    let pg = tokio::task::spawn_blocking(|| -> anyhow::Result<TempPostgres> {
        let pg = TempPostgres::start()?;
        pg.psql("postgres", "CREATE DATABASE bench")?;
        Ok(pg)
    })
    .await??;

    eprintln!(
        "sql-bench: generating {} change events over {} keys",
        args.events, args.keys
    );
    let expected = generate(&data, args.events, args.keys).await?;

    eprintln!("sql-bench: applying with the sql sink");
    let apply = apply(&data, &pg.url("bench"), args.events, &args.settings).await?;
    let stored = pg.psql(
        "bench",
        "SELECT next_offset FROM plexus_offsets WHERE connector = 'warehouse'",
    )?;
    if stored != args.events.to_string() {
        bail!("the sink stored offset {stored}, not {}", args.events);
    }
    let got = pg.psql(
        "bench",
        "SELECT count(*) || ' ' || coalesce(sum(quantity), 0) FROM orders",
    )?;
    let want = format!("{} {}", expected.rows, expected.quantity);
    if got != want {
        bail!("the table holds (rows, sum of quantity) {got}, the events leave {want}");
    }
    eprintln!(
        "sql-bench: sql sink: {:.2} s, {:.0} events/s; {} rows left, as the events say",
        apply.as_secs_f64(),
        args.events as f64 / apply.as_secs_f64(),
        expected.rows
    );

    eprintln!("sql-bench: COPY of {} rows into an empty table", args.events);
    let copy = copy_reference(&pg.url("bench"), args.events).await?;
    let copied = pg.psql("bench", "SELECT count(*) FROM orders_copy")?;
    if copied != args.events.to_string() {
        bail!("COPY loaded {copied} rows, not {}", args.events);
    }
    eprintln!(
        "sql-bench: COPY: {:.2} s, {:.0} rows/s (machine load: {})",
        copy.as_secs_f64(),
        args.events as f64 / copy.as_secs_f64(),
        load_average()
    );
    drop(pg);
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    let apply_s = args.events as f64 / apply.as_secs_f64();
    let copy_s = args.events as f64 / copy.as_secs_f64();
    println!(
        "sql-bench: events={} apply_events_s={apply_s:.0} copy_rows_s={copy_s:.0} ratio_vs_copy={:.2} peak_rss_mb={rss:.1}",
        args.events,
        apply_s / copy_s
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// What the events leave in the table.
struct Expected {
    rows: u64,
    quantity: u64,
}

/// A small deterministic generator (xorshift64*), so every run applies the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The row of key `id` as the `n`-th event writes it.
fn row_json(id: u64, n: u64, quantity: u64) -> String {
    let status = ["pending", "paid", "shipped", "delivered"][(n % 4) as usize];
    let note = if n.is_multiple_of(3) {
        "null".to_owned()
    } else {
        format!("\"note {n}\"")
    };
    format!(
        "{{\"id\":{id},\"customer_id\":{},\"product_id\":{},\"quantity\":{quantity},\"unit_price\":\"{}.{:02}\",\
         \"status\":\"{status}\",\"created_at\":\"2026-01-01T00:00:{:02}.{:03}Z\",\"note\":{note}}}",
        id % 5000,
        n % 700,
        n % 90 + 1,
        n % 100,
        n % 60,
        n % 1000
    )
}

/// Appends the events to `TOPIC` and the schema to `__schemas`; returns what they leave.
async fn generate(data: &Path, events: u64, keys: u64) -> anyhow::Result<Expected> {
    let log = Log::open(LogConfig::new(data)).await?;
    log.create_topic(SCHEMAS_TOPIC, TopicConfig::compacted()).await?;
    log.partition(SCHEMAS_TOPIC, 0)
        .await?
        .append_records(&[Record {
            key: Some(Bytes::from_static(SCHEMA_ID.as_bytes())),
            value: Some(Bytes::from_static(SCHEMA.as_bytes())),
            headers: Default::default(),
            timestamp: 0,
        }])
        .await?;
    // The events' timestamps are in 2026-01: without this, retention would delete them
    // under the sink.
    let config = TopicConfig {
        retention_time: None,
        ..TopicConfig::default()
    };
    log.create_topic(TOPIC, config).await?;
    let partition = log.partition(TOPIC, 0).await?;
    let mut state: Vec<Option<u64>> = vec![None; usize::try_from(keys)?];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Batches well under 1 MiB, as sources write them: plexus-log reads a stored batch larger
    // than its read chunk wrongly (segment.rs, to be fixed there).
    let mut batch = Vec::with_capacity(1_000);
    let header = Header {
        key: SCHEMA_HEADER.into(),
        value: Some(Bytes::from_static(SCHEMA_ID.as_bytes())),
    };
    for n in 0..events {
        let id = rng.next() % keys;
        let roll = rng.next() % 100;
        let ts = 1_767_225_600_000 + n as i64;
        let quantity = n % 5 + 1;
        let slot = &mut state[id as usize];
        let value = if roll < 70 {
            *slot = Some(quantity);
            format!(
                "{{\"before\":null,\"after\":{},\"source\":{{\"connector\":\"bench\",\"seq\":{n},\"ts_ms\":{ts}}},\"op\":\"c\",\"ts_ms\":{ts}}}",
                row_json(id, n, quantity)
            )
        } else if roll < 95 {
            *slot = Some(quantity);
            format!(
                "{{\"before\":null,\"after\":{},\"source\":{{\"connector\":\"bench\",\"seq\":{n},\"ts_ms\":{ts}}},\"op\":\"u\",\"ts_ms\":{ts}}}",
                row_json(id, n, quantity)
            )
        } else {
            *slot = None;
            format!(
                "{{\"before\":{{\"id\":{id}}},\"after\":null,\"source\":{{\"connector\":\"bench\",\"seq\":{n},\"ts_ms\":{ts}}},\"op\":\"d\",\"ts_ms\":{ts}}}"
            )
        };
        batch.push(Record {
            key: Some(Bytes::from(format!("{{\"id\":{id}}}"))),
            value: Some(Bytes::from(value)),
            headers: [header.clone()].into_iter().collect(),
            timestamp: ts,
        });
        if batch.len() == batch.capacity() {
            partition.append_records(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        partition.append_records(&batch).await?;
    }
    drop(partition);
    log.close().await?;
    Ok(Expected {
        rows: state.iter().flatten().count() as u64,
        quantity: state.iter().flatten().sum(),
    })
}

/// Runs a worker with only the `sql` sink until it has applied `events` events.
async fn apply(data: &Path, url: &str, events: u64, settings: &[String]) -> anyhow::Result<Duration> {
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"warehouse\"\ntype = \"sql\"\ntopics = [\"{TOPIC}\"]\n\
         [connector.settings]\nurl = \"{url}\"\ntable = \"{{table}}\"\n{}",
        data.display(),
        settings.iter().map(|s| format!("{s}\n")).collect::<String>()
    );
    let registry = Registry::builtin();
    let config = Config::load_str(&[(PathBuf::from("sql-bench.toml"), text)], &registry, &|_| None)
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let mut conn = options.disable_statement_logging().connect().await?;
    let started = Instant::now();
    let worker = Worker::start(&config, registry).await?;
    let mut last = (0u64, Instant::now());
    let mut progress = Instant::now();
    let elapsed = loop {
        tokio::time::sleep(POLL).await;
        let metrics = worker.metrics();
        let Some(m) = metrics.get("warehouse") else {
            bail!("the worker runs no connector `warehouse`");
        };
        let applied = committed(&mut conn).await?;
        if applied >= events {
            break started.elapsed();
        }
        if let Some(status) = worker.status().get("warehouse")
            && status.state == TaskState::Failed
        {
            bail!(
                "the sink failed: {}",
                status.last_error.map(|e| e.0).unwrap_or_default()
            );
        }
        let dead = m.dead_lettered.load(Ordering::Relaxed);
        if dead > 0 {
            bail!("the sink dead-lettered {dead} events");
        }
        if applied > last.0 {
            last = (applied, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "the sink made no progress for {} s ({applied} events applied)",
                STALL.as_secs()
            );
        }
        if progress.elapsed() >= Duration::from_secs(2) {
            progress = Instant::now();
            eprintln!(
                "sql-bench:   {applied} events applied after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    worker.shutdown().await?;
    conn.close().await?;
    Ok(elapsed)
}

/// The events the sink has committed to the target: the offset it stored (none before
/// its first commit, or before it created the offsets table).
async fn committed(conn: &mut sqlx::PgConnection) -> anyhow::Result<u64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('plexus_offsets') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let next: Option<i64> =
        sqlx::query_scalar("SELECT max(next_offset) FROM plexus_offsets WHERE connector = 'warehouse'")
            .fetch_one(&mut *conn)
            .await?;
    Ok(next.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// `COPY` of `rows` rows shaped like the events' into an empty table with the same
/// primary key; returns the time of the `COPY` alone.
async fn copy_reference(url: &str, rows: u64) -> anyhow::Result<Duration> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let mut conn = options.disable_statement_logging().connect().await?;
    sqlx::raw_sql(
        "CREATE TABLE orders_copy (id bigint NOT NULL PRIMARY KEY, customer_id bigint, product_id bigint, \
         quantity integer, unit_price numeric(10,2), status text, created_at timestamp with time zone, note text)",
    )
    .execute(&mut conn)
    .await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY orders_copy (id, customer_id, product_id, quantity, unit_price, status, created_at, note) FROM STDIN",
        )
        .await?;
    let mut buf: Vec<u8> = Vec::with_capacity((1 << 20) + 4096);
    for n in 0..rows {
        use std::io::Write as _;
        let status = ["pending", "paid", "shipped", "delivered"][(n % 4) as usize];
        let note = if n.is_multiple_of(3) {
            "\\N".to_owned()
        } else {
            format!("note {n}")
        };
        writeln!(
            buf,
            "{n}\t{}\t{}\t{}\t{}.{:02}\t{status}\t2026-01-01T00:00:{:02}.{:03}Z\t{note}",
            n % 5000,
            n % 700,
            n % 5 + 1,
            n % 90 + 1,
            n % 100,
            n % 60,
            n % 1000
        )?;
        if buf.len() >= 1 << 20 {
            copy.send(buf.as_slice()).await?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_slice()).await?;
    }
    copy.finish().await?;
    let elapsed = started.elapsed();
    conn.close().await?;
    Ok(elapsed)
}
