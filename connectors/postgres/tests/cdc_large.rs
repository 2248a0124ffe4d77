//! One transaction of a million rows through the `postgres-cdc` source against a real
//! PostgreSQL 15 with a tiny `logical_decoding_work_mem`: the server streams it while it
//! is in progress, the source spills it to disk, and after the commit every row arrives
//! exactly once, in order, before the next transaction's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// `count_ops` goes unused: the log here checks records and keeps none.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Collector, Log, context, is_change};
use plexus_config::{ByteSize, Settings, Value};
use plexus_connector::{ConnectorFactory, Poll, Source, SourceContext, SourceRecord};
use plexus_connector_postgres::PostgresCdcFactory;
use plexus_tests::TempPostgres;
use serde_json::Value as Json;

const ROWS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_in_order_through_the_spill() {
    let pg = Arc::new(TempPostgres::start_with(&["logical_decoding_work_mem = '64kB'"]).unwrap());
    create_tables(&pg);
    let spill = tempfile::tempdir().unwrap();
    let settings = settings(&pg, spill.path());
    let ctx = context();
    let mut source = PostgresCdcFactory::new().create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut order = Collector::new(Order::new(ROWS));
    until_idle(&mut order, source.as_mut(), &ctx).await;

    let watcher = SpillWatcher::start(spill.path().to_owned());
    let writer = write(&pg, ROWS);
    let started = Instant::now();
    order
        .poll_within(source.as_mut(), &ctx, Duration::from_secs(300), |o| {
            o.log.small.is_some()
        })
        .await
        .unwrap();
    let elapsed = started.elapsed();
    writer.await.unwrap();
    // Nothing more: no row twice.
    until_quiet(source.as_mut(), &ctx).await;
    source.stop().await.unwrap();

    // The server streamed the transaction in progress (rather than decoding it at its
    // commit), and the source spilled it: a file grew well past the threshold, and is
    // gone; the process never held the transaction in memory (about 100 MB of changes).
    let streamed = pg
        .psql(
            "postgres",
            "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'plexus_pgtest'",
        )
        .unwrap();
    assert!(streamed.parse::<u64>().unwrap() >= 1, "stream_txns = {streamed}");
    let spilled = watcher.stop();
    assert!(spilled > 64 << 20, "the largest spill seen: {spilled} bytes");
    let left: Vec<_> = std::fs::read_dir(spill.path()).unwrap().collect();
    assert!(left.is_empty(), "spill files left: {left:?}");
    let peak = peak_resident_bytes();
    assert!(peak < 64 << 20, "the test process peaked at {peak} bytes resident");
    eprintln!("{ROWS} rows in {elapsed:?}; largest spill {spilled} bytes; peak resident {peak} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_in_and_after_a_spilled_transaction_resume_after_the_last_row() {
    const ROWS: i64 = 200_000;
    let pg = Arc::new(TempPostgres::start_with(&["logical_decoding_work_mem = '64kB'"]).unwrap());
    create_tables(&pg);
    let spill = tempfile::tempdir().unwrap();
    let settings = settings(&pg, spill.path());
    let ctx = context();
    let factory = PostgresCdcFactory::new();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut order = Collector::new(Order::new(ROWS));
    until_idle(&mut order, source.as_mut(), &ctx).await;
    // A first change, so the log holds a streaming position.
    pg.psql("postgres", "INSERT INTO small VALUES (1)").unwrap();
    order.poll_until(source.as_mut(), &ctx, |o| o.log.first).await;

    // Stopped while the transaction is in progress and spilled, as the runtime stops a
    // source: the poll is dropped, then `stop`. The spill file goes with it.
    let writer = write(&pg, ROWS);
    let spilling = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while total_size(spill.path()) == 0 {
            assert!(Instant::now() < deadline, "nothing spilled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        result = order.poll_within(source.as_mut(), &ctx, Duration::from_secs(60), |o| o.log.small.is_some()) => {
            result.unwrap();
            panic!("the transaction arrived before it spilled")
        }
        () = spilling => {}
    }
    source.stop().await.unwrap();
    let left: Vec<_> = std::fs::read_dir(spill.path()).unwrap().collect();
    assert!(left.is_empty(), "spill files left by the stopped source: {left:?}");

    // Stopped a quarter into the committed transaction's rows: the log holds them up to
    // a position inside the transaction.
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, order.last.clone()).await.unwrap();
    order
        .poll_within(source.as_mut(), &ctx, Duration::from_secs(120), |o| {
            o.log.next_id > ROWS / 4
        })
        .await
        .unwrap();
    source.stop().await.unwrap();
    writer.await.unwrap();
    let stopped_at = order.log.next_id;
    assert!(stopped_at < ROWS, "stopped at {stopped_at}");

    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, order.last.clone()).await.unwrap();
    order
        .poll_within(source.as_mut(), &ctx, Duration::from_secs(120), |o| {
            o.log.small.is_some()
        })
        .await
        .unwrap();
    until_quiet(source.as_mut(), &ctx).await;
    source.stop().await.unwrap();
    let left: Vec<_> = std::fs::read_dir(spill.path()).unwrap().collect();
    assert!(left.is_empty(), "spill files left: {left:?}");
}

fn create_tables(pg: &TempPostgres) {
    pg.psql(
        "postgres",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL); CREATE TABLE small (id int PRIMARY KEY);",
    )
    .unwrap();
}

/// Inserts `rows` rows into `big` in one statement, then row 7 into `small`.
fn write(pg: &Arc<TempPostgres>, rows: i64) -> tokio::task::JoinHandle<()> {
    let pg = Arc::clone(pg);
    tokio::task::spawn_blocking(move || {
        pg.psql(
            "postgres",
            &format!("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, {rows}) g"),
        )
        .unwrap();
        pg.psql("postgres", "INSERT INTO small VALUES (7)").unwrap();
    })
}

/// The shared settings for `big` and `small`, spilling past 1 MiB into `spill_dir`.
fn settings(pg: &TempPostgres, spill_dir: &Path) -> Settings {
    let mut settings = common::settings(pg, &["big", "small"]);
    settings.insert("batch_size", Value::Integer(10_000));
    settings.insert("spill_threshold", Value::Size(ByteSize(1 << 20)));
    settings.insert("spill_dir", Value::String(spill_dir.display().to_string()));
    settings
}

/// Checks records as they come, without keeping them: maybe row 1 of `small`, the rows
/// of `big` with ids 1, 2, ... in order, each the next ordinal of one transaction, then
/// row 7 of `small`.
#[derive(Debug)]
struct Order {
    /// The size of the big transaction.
    rows: i64,
    next_id: i64,
    big_commit: Option<u64>,
    /// `(commit_lsn, seq)` of the last change.
    previous: (u64, u64),
    /// Whether row 1 of `small` (written before the big transaction) came.
    first: bool,
    /// Where row 7 of `small` (written after it) came.
    small: Option<(u64, u64)>,
}

impl Order {
    fn new(rows: i64) -> Order {
        Order {
            rows,
            next_id: 1,
            big_commit: None,
            previous: (0, 0),
            first: false,
            small: None,
        }
    }

    fn check(&mut self, record: &SourceRecord) {
        if !is_change(record) {
            return;
        }
        let value: Json = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
        let at = (
            value["source"]["commit_lsn"].as_u64().unwrap(),
            value["source"]["seq"].as_u64().unwrap(),
        );
        assert!(at > self.previous, "{at:?} after {:?}", self.previous);
        self.previous = at;
        assert_eq!(value["op"], "c");
        let id = value["after"]["id"].as_i64().unwrap();
        match record.topic.as_deref() {
            Some("public.big") => {
                assert_eq!(id, self.next_id, "rows in order, each once");
                assert_eq!(value["after"]["v"], format!("row {id}").as_str());
                assert_eq!(at.1, id as u64, "the transaction's ordinal");
                assert_eq!(*self.big_commit.get_or_insert(at.0), at.0, "one transaction");
                self.next_id += 1;
            }
            Some("public.small") if id == 1 => {
                assert_eq!(self.next_id, 1, "the first row before the big transaction");
                assert!(!std::mem::replace(&mut self.first, true), "the first row twice");
            }
            Some("public.small") => {
                assert_eq!(
                    self.next_id,
                    self.rows + 1,
                    "the small transaction after all of the big one"
                );
                assert_eq!(id, 7);
                assert!(at.0 > self.big_commit.unwrap(), "committed after");
                assert!(self.small.replace(at).is_none(), "the small row twice");
            }
            other => panic!("a record for {other:?}"),
        }
    }
}

impl Log for Order {
    fn append(&mut self, records: Vec<SourceRecord>) {
        for record in &records {
            self.check(record);
        }
    }

    fn progress(&self) -> String {
        format!("id {}", self.next_id)
    }
}

/// Polls (committing) until the source, streaming, has nothing to hand out (an empty
/// snapshot registers nothing).
async fn until_idle(order: &mut Collector<Order>, source: &mut dyn Source, ctx: &SourceContext) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the source did not become idle");
        if !order.poll_once(source, ctx).await.unwrap() {
            return;
        }
    }
}

/// Polls for two seconds: no change may come any more.
async fn until_quiet(source: &mut dyn Source, ctx: &SourceContext) {
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        if let Poll::Batch(batch) = source.poll(ctx).await.unwrap() {
            let changes = batch.records.iter().filter(|r| is_change(r)).count();
            assert_eq!(changes, 0, "changes after the end");
        }
    }
}

/// The process's peak resident memory (`VmHWM`).
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// Watches a directory from a thread of its own, every 10 ms, for the largest total size
/// of its files.
struct SpillWatcher {
    stop: Arc<AtomicBool>,
    largest: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl SpillWatcher {
    fn start(dir: PathBuf) -> SpillWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn({
            let (stop, largest) = (Arc::clone(&stop), Arc::clone(&largest));
            move || {
                while !stop.load(Ordering::SeqCst) {
                    largest.fetch_max(total_size(&dir), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        SpillWatcher { stop, largest, thread }
    }

    /// The largest size seen.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        self.largest.load(Ordering::SeqCst)
    }
}

fn total_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}
