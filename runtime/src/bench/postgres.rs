//! `plexus bench postgres-cdc`: the `postgres-cdc` source against PostgreSQL's own
//! readers of the same data, in the same run, on a throw-away cluster.
//!
//! 1. Streaming: a backlog of committed transactions, read from the source's slot into
//!    the durable log, against `pg_recvlogical` reading the same WAL through a second
//!    slot with the same plugin, publication and options (the practical ceiling of one
//!    slot: the walsender's decoding). The two run one after the other, each alone on
//!    the machine.
//! 2. Latency: from the return of `COMMIT` to the transaction's last row being durable
//!    in the log, at a steady rate.
//! 3. Snapshot: a large table read into the durable log, against one
//!    `COPY ... TO STDOUT` of the same table.
//!
//! "Durable" is the log's durable offset (fsynced). The table topics are created with
//! `fsync = always` before the worker starts: with the default (`never`) a record only
//! becomes durable when the source commits its position, once a second, which would
//! make the latency a measure of that interval rather than of the source.

mod capture;
mod cluster;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_log::Partition;
use plexus_tests::postgres::VERSION;
use sqlx::Connection;

use super::procfs::{load_average, peak_rss_mb};
use capture::{Capture, stop};
use cluster::{Cluster, insert_rows};

#[derive(Debug, clap::Args)]
pub struct CdcBenchArgs {
    /// Rows of the streaming part.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    stream_rows: u64,
    /// Rows per transaction in the streaming part.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    tx_rows: u64,
    /// Rows per second inserted during the latency part (in 100 transactions a second).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: u64,
    /// How long latency is measured, after a warm-up of 2 s.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    latency_seconds: u64,
    /// Rows of the snapshot table.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_rows: u64,
    /// Where the benchmark's logs live (emptied first, removed at the end).
    #[arg(long, default_value = "target/cdc-bench")]
    dir: PathBuf,
}

pub async fn run(args: CdcBenchArgs) -> anyhow::Result<ExitCode> {
    // On Ctrl-C the cluster is still stopped: dropping the benchmark drops it.
    tokio::select! {
        result = bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// Transactions per second of the latency part (fewer when `--rate` is below 100).
const LATENCY_TX_PER_SECOND: u64 = 100;

/// Transactions of the first seconds of the latency part are not counted.
const WARM_UP: Duration = Duration::from_secs(2);

/// A wait fails when what it waits for made no progress for this long.
const STALL: Duration = Duration::from_secs(60);

/// The slot `pg_recvlogical` reads.
const RECVLOGICAL_SLOT: &str = "bench_recvlogical";

/// Rows per statement when loading the snapshot table.
const LOAD_CHUNK_ROWS: u64 = 500_000;

async fn bench(args: CdcBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir).with_context(|| format!("resolve `{}`", args.dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("create `{}`", dir.display()))?;
    eprintln!(
        "cdc-bench: starting a throw-away PostgreSQL {VERSION} cluster (machine load: {})",
        load_average()
    );
    let mut cluster = Cluster::start().await?;

    let stream = streaming(&mut cluster, &args, &dir).await?;
    let latency = latency(&mut cluster, &args, &dir).await?;
    let snapshot = snapshot(&mut cluster, &args, &dir).await?;
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    eprintln!("cdc-bench: done (machine load: {})", load_average());

    let stream_rows_s = args.stream_rows as f64 / stream.plexus.as_secs_f64();
    let recvlogical_rows_s = args.stream_rows as f64 / stream.recvlogical.as_secs_f64();
    let snapshot_rows_s = args.snapshot_rows as f64 / snapshot.plexus.as_secs_f64();
    let copy_rows_s = args.snapshot_rows as f64 / snapshot.copy.as_secs_f64();
    println!(
        "cdc-bench streaming: rows={} tx_rows={} plexus_s={:.2} recvlogical_s={:.2}",
        args.stream_rows,
        args.tx_rows,
        stream.plexus.as_secs_f64(),
        stream.recvlogical.as_secs_f64()
    );
    println!(
        "cdc-bench latency: rate_rows_s={:.0} transactions={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        latency.rows_s, latency.transactions, latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    println!(
        "cdc-bench snapshot: rows={} plexus_s={:.2} copy_s={:.2} copy_mb={:.1}",
        args.snapshot_rows,
        snapshot.plexus.as_secs_f64(),
        snapshot.copy.as_secs_f64(),
        snapshot.copy_bytes as f64 / 1e6
    );
    println!(
        "cdc-bench: stream_rows_s={stream_rows_s:.0} recvlogical_rows_s={recvlogical_rows_s:.0} stream_ratio={:.2} \
         p99_ms={:.2} snapshot_rows_s={snapshot_rows_s:.0} copy_rows_s={copy_rows_s:.0} snapshot_ratio={:.2} \
         peak_rss_mb={rss:.1}",
        stream_rows_s / recvlogical_rows_s,
        latency.p99_ms,
        snapshot_rows_s / copy_rows_s
    );

    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

struct Streaming {
    plexus: Duration,
    recvlogical: Duration,
}

/// Part 1: a backlog of `stream_rows` committed rows, read by `pg_recvlogical`, then
/// by the source.
async fn streaming(cluster: &mut Cluster, args: &CdcBenchArgs, dir: &Path) -> anyhow::Result<Streaming> {
    let capture = Capture::new(dir, "stream", "bench_stream", "never");
    cluster.create_table(capture.table).await?;
    capture.create_topic().await?;

    // The source's slot is created at its first start; one row through it puts a
    // position in the log, so that the restart below resumes from the slot.
    eprintln!("streaming: creating the source's slot and passing one row through it");
    let worker = capture.start(cluster.port()).await?;
    cluster.wait_slot(&capture.slot).await?;
    cluster.insert(capture.table, 0, 0).await?;
    capture.wait_durable(&worker, 1).await?;
    cluster
        .execute(&format!(
            "SELECT pg_create_logical_replication_slot('{RECVLOGICAL_SLOT}', 'pgoutput')"
        ))
        .await?;
    stop(worker).await?;

    eprintln!(
        "streaming: inserting {} rows in transactions of {}",
        args.stream_rows, args.tx_rows
    );
    let started = Instant::now();
    let mut first = 1;
    while first <= args.stream_rows {
        let last = (first + args.tx_rows - 1).min(args.stream_rows);
        cluster.insert(capture.table, first, last).await?;
        first = last + 1;
    }
    eprintln!(
        "streaming: inserted in {:.1} s ({:.0} rows/s)",
        started.elapsed().as_secs_f64(),
        args.stream_rows as f64 / started.elapsed().as_secs_f64()
    );
    cluster.execute("CHECKPOINT").await?;
    let end = cluster.wal_lsn().await?;
    // WAL past the end, so pg_recvlogical sees a record beyond it whatever the end
    // position points at, and stops.
    cluster
        .execute("SELECT pg_logical_emit_message(false, 'plexus-bench', 'end')")
        .await?;

    eprintln!("streaming: pg_recvlogical reading the backlog up to {}", end);
    let before = cluster.cpu();
    let started = Instant::now();
    cluster
        .recvlogical(RECVLOGICAL_SLOT, &capture.publication, &end, args.stream_rows)
        .await?;
    let recvlogical_time = started.elapsed();
    eprintln!(
        "streaming: pg_recvlogical: {:.2} s, {:.0} rows/s; {}",
        recvlogical_time.as_secs_f64(),
        args.stream_rows as f64 / recvlogical_time.as_secs_f64(),
        cluster
            .cpu_settled()
            .await
            .since(&before, recvlogical_time, "pg_recvlogical")
    );

    eprintln!("streaming: plexus reading the same backlog into the log");
    let before = cluster.cpu();
    let started = Instant::now();
    let worker = capture.start(cluster.port()).await?;
    capture.wait_durable(&worker, 1 + args.stream_rows as i64).await?;
    let plexus_time = started.elapsed();
    eprintln!(
        "streaming: plexus: {:.2} s, {:.0} rows/s; {}",
        plexus_time.as_secs_f64(),
        args.stream_rows as f64 / plexus_time.as_secs_f64(),
        cluster.cpu().since(&before, plexus_time, "")
    );
    eprintln!("streaming: plexus: {}", capture.activity(&worker));
    stop(worker).await?;
    // Neither slot is read again: let the server recycle their WAL.
    cluster
        .execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('{RECVLOGICAL_SLOT}', '{}')",
            capture.slot
        ))
        .await?;
    Ok(Streaming {
        plexus: plexus_time,
        recvlogical: recvlogical_time,
    })
}

struct Latency {
    rows_s: f64,
    transactions: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The five slowest transactions: "latency at time into the run".
    slowest: Vec<String>,
}

impl Latency {
    /// `commits[k]` is when transaction `k` (rows `1 + k * tx_rows ..`, after the one
    /// warm-up row) returned; `events` when the durable offset reached each value.
    /// Transactions before `first` are the warm-up.
    fn measure(commits: &[Instant], events: &[(i64, Instant)], first: usize, tx_rows: u64) -> anyhow::Result<Latency> {
        let mut measured: Vec<(Duration, usize)> = Vec::with_capacity(commits.len());
        for (k, committed) in commits.iter().enumerate().skip(first) {
            let end = 1 + (k as u64 + 1) * tx_rows;
            let seen = events.partition_point(|(durable, _)| *durable < end as i64);
            let (_, at) = events
                .get(seen)
                .with_context(|| format!("transaction {k} was never seen durable"))?;
            measured.push((at.saturating_duration_since(*committed), k));
        }
        if measured.is_empty() {
            bail!("no transaction was measured after the warm-up");
        }
        let span = match (commits.get(first), commits.last()) {
            (Some(first), Some(last)) if last > first => last.duration_since(*first).as_secs_f64(),
            _ => f64::NAN,
        };
        let start = commits.first().copied();
        measured.sort_by_key(|&(latency, _)| std::cmp::Reverse(latency));
        let slowest = measured
            .iter()
            .take(5)
            .filter_map(|&(latency, k)| {
                let at = commits.get(k)?.saturating_duration_since(start?);
                Some(format!("{:.1} ms at {:.2} s", ms(latency), at.as_secs_f64()))
            })
            .collect();
        let mut sorted: Vec<Duration> = measured.iter().map(|(latency, _)| *latency).collect();
        sorted.sort();
        Ok(Latency {
            rows_s: ((sorted.len() - 1) as u64 * tx_rows) as f64 / span,
            transactions: sorted.len(),
            p50_ms: ms(percentile(&sorted, 0.50)),
            p99_ms: ms(percentile(&sorted, 0.99)),
            max_ms: ms(percentile(&sorted, 1.0)),
            slowest,
        })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Part 2: transactions at a steady rate; for each, the time from the return of its
/// `COMMIT` to its last row being durable in the log.
async fn latency(cluster: &mut Cluster, args: &CdcBenchArgs, dir: &Path) -> anyhow::Result<Latency> {
    let capture = Capture::new(dir, "latency", "bench_latency", "never");
    cluster.create_table(capture.table).await?;
    capture.create_topic().await?;
    let worker = capture.start(cluster.port()).await?;
    cluster.wait_slot(&capture.slot).await?;
    cluster.insert(capture.table, 0, 0).await?;
    capture.wait_durable(&worker, 1).await?;
    let partition = capture.partition(&worker)?;

    // Inserts and COMMIT in one statement: each transaction is one round trip, so the
    // instant it returns is the commit's.
    let tx_rows = (args.rate / LATENCY_TX_PER_SECOND).max(1);
    let period = Duration::from_secs_f64(tx_rows as f64 / args.rate as f64);
    let total = WARM_UP + Duration::from_secs(args.latency_seconds);
    let transactions = (total.as_secs_f64() / period.as_secs_f64()).ceil() as u64;
    let warm_up = (WARM_UP.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
    eprintln!(
        "latency: {} rows/s in transactions of {tx_rows} every {:.1} ms for {} s ({} s of warm-up)",
        args.rate,
        period.as_secs_f64() * 1e3,
        total.as_secs(),
        WARM_UP.as_secs()
    );

    let stop_at = Arc::new(AtomicI64::new(i64::MAX));
    let observer = tokio::spawn(observe(Arc::clone(&partition), Arc::clone(&stop_at)));
    let mut conn = cluster.session().await?;
    let mut commits = Vec::with_capacity(transactions as usize);
    // Burst: a transaction delayed by a hiccup (of the producer or the server) is
    // followed by the ones due meanwhile, so the rate over the run is the one asked
    // for and no late commit is left out of the figures.
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for k in 0..transactions {
        tick.tick().await;
        let first = 1 + k * tx_rows;
        insert_rows(&mut conn, capture.table, first, first + tx_rows - 1).await?;
        commits.push(Instant::now());
    }
    let _ = conn.close().await;
    let target = 1 + (transactions * tx_rows) as i64;
    if let Err(e) = capture.wait_durable(&worker, target).await {
        observer.abort();
        let _ = stop(worker).await;
        return Err(e);
    }
    stop_at.store(target, Ordering::Relaxed);
    let observed = tokio::time::timeout(Duration::from_secs(10), observer).await;
    let activity = capture.activity(&worker);
    stop(worker).await?;
    let events = match observed {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => bail!("the latency observer failed: {e}"),
        Err(_) => bail!("the latency observer did not finish within 10 s of the last row being durable"),
    };

    let result = Latency::measure(&commits, &events, warm_up, tx_rows)?;
    eprintln!(
        "latency: {} transactions measured at {:.0} rows/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        result.transactions, result.rows_s, result.p50_ms, result.p99_ms, result.max_ms
    );
    eprintln!("latency: the slowest: {}", result.slowest.join(", "));
    eprintln!("latency: plexus: {activity}");
    Ok(result)
}

/// Every change of the partition's durable offset and when it was seen, until it
/// reaches `stop_at`. With `fsync = always` readers see a batch once it is durable, so
/// waiting for new data wakes as soon as it is.
async fn observe(partition: Arc<Partition>, stop_at: Arc<AtomicI64>) -> Vec<(i64, Instant)> {
    let mut events = Vec::new();
    let mut seen = -1;
    loop {
        let durable = partition.durable_offset();
        if durable > seen {
            events.push((durable, Instant::now()));
            seen = durable;
        }
        if durable >= stop_at.load(Ordering::Relaxed) {
            return events;
        }
        let _ = partition.read_wait(durable, 1, Duration::from_millis(50)).await;
    }
}

/// The `p` quantile of sorted values (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

struct Snapshot {
    plexus: Duration,
    copy: Duration,
    copy_bytes: u64,
}

/// Part 3: a table of `snapshot_rows` rows, read by one `COPY ... TO STDOUT`, then
/// snapshotted by the source.
async fn snapshot(cluster: &mut Cluster, args: &CdcBenchArgs, dir: &Path) -> anyhow::Result<Snapshot> {
    let capture = Capture::new(dir, "snapshot", "bench_snap", "initial");
    cluster.create_table(capture.table).await?;
    eprintln!("snapshot: loading {} rows", args.snapshot_rows);
    let started = Instant::now();
    let mut first = 1;
    while first <= args.snapshot_rows {
        let last = (first + LOAD_CHUNK_ROWS - 1).min(args.snapshot_rows);
        cluster.insert(capture.table, first, last).await?;
        first = last + 1;
    }
    // Hint bits set and reltuples known (the source plans its chunks from it) before
    // either reader runs, so neither pays for the load.
    cluster.execute(&format!("VACUUM (ANALYZE) {}", capture.table)).await?;
    cluster.execute("CHECKPOINT").await?;
    eprintln!("snapshot: loaded in {:.1} s", started.elapsed().as_secs_f64());

    eprintln!("snapshot: COPY {} TO STDOUT", capture.table);
    let before = cluster.cpu();
    let started = Instant::now();
    let (rows, bytes) = cluster.copy_out(capture.table).await?;
    let copy_time = started.elapsed();
    if rows != args.snapshot_rows {
        bail!("COPY returned {rows} rows, not {}", args.snapshot_rows);
    }
    eprintln!(
        "snapshot: COPY: {:.2} s, {:.0} rows/s, {:.1} MB; {}",
        copy_time.as_secs_f64(),
        rows as f64 / copy_time.as_secs_f64(),
        bytes as f64 / 1e6,
        cluster.cpu_settled().await.since(&before, copy_time, "")
    );

    eprintln!("snapshot: plexus reading the table into the log");
    capture.create_topic().await?;
    let before = cluster.cpu();
    let started = Instant::now();
    let worker = capture.start(cluster.port()).await?;
    capture.wait_durable(&worker, args.snapshot_rows as i64).await?;
    let plexus_time = started.elapsed();
    eprintln!(
        "snapshot: plexus: {:.2} s, {:.0} rows/s; {}",
        plexus_time.as_secs_f64(),
        args.snapshot_rows as f64 / plexus_time.as_secs_f64(),
        cluster.cpu().since(&before, plexus_time, "")
    );
    eprintln!("snapshot: plexus: {}", capture.activity(&worker));
    stop(worker).await?;
    Ok(Snapshot {
        plexus: plexus_time,
        copy: copy_time,
        copy_bytes: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&values[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn each_transaction_is_durable_with_its_last_row() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Transactions of 10 rows after the warm-up row (offset 0), the first one a
        // warm-up: rows 1-10, 11-20, 21-30. The log held 25 rows at 15 ms (all of
        // transaction 1, half of 2) and 31 at 40 ms.
        let commits = [at(0), at(10), at(20)];
        let events = [(1, at(0)), (11, at(5)), (25, at(15)), (31, at(40))];
        let latency = Latency::measure(&commits, &events, 1, 10).unwrap();
        assert_eq!(latency.transactions, 2);
        assert_eq!(latency.p50_ms, 5.0);
        assert_eq!(latency.p99_ms, 20.0);
        assert_eq!(latency.slowest, ["20.0 ms at 0.02 s", "5.0 ms at 0.01 s"]);
        assert!((latency.rows_s - 1000.0).abs() < 1e-6, "{}", latency.rows_s);
        let missing = Latency::measure(&commits, &events[..3], 1, 10);
        assert!(missing.is_err(), "transaction 2 is never durable");
    }
}
