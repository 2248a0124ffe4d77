//! The log benchmark: append and consume throughput against the machine's own disk.
//!
//! ```text
//! cargo run --release -p plexus-log --example log_bench -- [--records N] [--dir PATH]
//! ```
//!
//! In one run it writes N records of 100 bytes (the record size of Kafka's 2014
//! benchmark) from one producer with fsync never, reads them all back, and measures the
//! reference: the same number of bytes written with plain sequential `write` calls of the
//! same size to a file in the same directory, also without fsync. Each measurement is
//! repeated (`--rounds`, alternating log and reference) and the best round of each is
//! reported. Then 8 concurrent producers append with fsync on every batch (group
//! commit). The last line is the summary the issue asks for.

#![allow(clippy::print_stdout)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_log::batch::ProducerFields;
use plexus_log::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, Partition, TopicConfig};

struct Args {
    records: u64,
    record_bytes: usize,
    batch_records: usize,
    rounds: usize,
    dir: PathBuf,
    sync_producers: usize,
    sync_appends: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        records: 5_000_000,
        record_bytes: 100,
        batch_records: 10_000,
        rounds: 5,
        dir: PathBuf::from("target/log-bench"),
        sync_producers: 8,
        sync_appends: 250,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = |v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{v} is not a number")))
        };
        match flag.as_str() {
            "--records" => args.records = number(value()),
            "--record-bytes" => args.record_bytes = number(value()) as usize,
            "--batch-records" => args.batch_records = number(value()) as usize,
            "--rounds" => args.rounds = number(value()).max(1) as usize,
            "--dir" => args.dir = PathBuf::from(value()),
            "--sync-producers" => args.sync_producers = number(value()) as usize,
            "--sync-appends" => args.sync_appends = number(value()) as usize,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

type BenchError = Box<dyn std::error::Error + Send + Sync>;
type BenchResult<T> = Result<T, BenchError>;

/// An error saying which step of the benchmark failed.
fn fail(step: &str, err: impl std::fmt::Display) -> BenchError {
    format!("log_bench: {step}: {err}").into()
}

fn usage(problem: &str) -> ! {
    eprintln!("log_bench: {problem}");
    eprintln!(
        "usage: log_bench [--records N] [--record-bytes B] [--batch-records R] [--rounds K] [--dir PATH] [--sync-producers P] [--sync-appends A]"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir).map_err(|e| fail("create benchmark directory", e))?;
    let payload_bytes = args.records * args.record_bytes as u64;
    println!(
        "log-bench: {} records of {} bytes in batches of {}, {} rounds, in {}",
        args.records,
        args.record_bytes,
        args.batch_records,
        args.rounds,
        args.dir.display()
    );

    let mut best_append = f64::MAX;
    let mut best_disk = f64::MAX;
    let mut best_consume = f64::MAX;
    for round in 1..=args.rounds {
        let disk = disk_reference(&args.dir, payload_bytes, args.batch_records * args.record_bytes)?;
        let log_dir = args.dir.join("log");
        let _ = std::fs::remove_dir_all(&log_dir);
        let log = Log::open(LogConfig::new(&log_dir))
            .await
            .map_err(|e| fail("open log", e))?;
        let topic = log
            .create_topic(
                "bench",
                TopicConfig {
                    fsync: FsyncPolicy::Never,
                    ..TopicConfig::default()
                },
            )
            .await
            .map_err(|e| fail("create topic", e))?;
        let partition = Arc::clone(topic.partition(0).map_err(|e| fail("partition 0", e))?);
        settle();
        let append = append_all(&partition, &args).await?;
        let (consume, seen) = consume_all(&partition).await?;
        assert_eq!(seen, args.records, "every record read back");
        println!(
            "round {round}: append {:.0} rec/s, consume {:.0} rec/s, disk {:.0} MB/s",
            args.records as f64 / append,
            args.records as f64 / consume,
            payload_bytes as f64 / disk / 1e6
        );
        best_append = best_append.min(append);
        best_consume = best_consume.min(consume);
        best_disk = best_disk.min(disk);
        drop(partition);
        drop(topic);
        log.close().await.map_err(|e| fail("close log", e))?;
        let _ = std::fs::remove_dir_all(&log_dir);
    }

    group_commit(&args).await?;

    let mb = payload_bytes as f64 / 1e6;
    let append_rec_s = args.records as f64 / best_append;
    let append_mb_s = mb / best_append;
    let consume_rec_s = args.records as f64 / best_consume;
    let consume_mb_s = mb / best_consume;
    let disk_mb_s = mb / best_disk;
    println!(
        "log-bench: records={} record_bytes={} append_rec_s={:.0} append_mb_s={:.1} consume_rec_s={:.0} consume_mb_s={:.1} disk_mb_s={:.1} append_vs_disk={:.2}",
        args.records,
        args.record_bytes,
        append_rec_s,
        append_mb_s,
        consume_rec_s,
        consume_mb_s,
        disk_mb_s,
        append_mb_s / disk_mb_s
    );
    Ok(())
}

/// Seconds to write `total` bytes with `write` calls of `chunk` bytes, no fsync.
fn disk_reference(dir: &Path, total: u64, chunk: usize) -> BenchResult<f64> {
    let path = dir.join("reference.bin");
    let buf: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    settle();
    let started = Instant::now();
    let mut file = File::create(&path).map_err(|e| fail("create reference file", e))?;
    let mut written = 0u64;
    while written < total {
        let n = chunk.min((total - written) as usize);
        file.write_all(&buf[..n]).map_err(|e| fail("write reference file", e))?;
        written += n as u64;
    }
    drop(file);
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(elapsed)
}

/// Starts each measurement from the same state: no dirty pages of earlier rounds being
/// written back, which would slow whichever measurement comes next.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Seconds to append every record from one producer. Like a Kafka producer (its
/// accumulator and sender thread), the producer encodes batches into a small bounded
/// queue and one sender task appends them in order, so encoding the next batch overlaps
/// writing the previous one.
async fn append_all(partition: &Arc<Partition>, args: &Args) -> BenchResult<f64> {
    let (queue, mut batches) = tokio::sync::mpsc::channel::<bytes::BytesMut>(4);
    let p = Arc::clone(partition);
    let sender = tokio::spawn(async move {
        while let Some(bytes) = batches.recv().await {
            p.append_encoded(bytes, None).await?;
        }
        Ok::<_, plexus_log::LogError>(())
    });
    let mut value = vec![b'x'; args.record_bytes];
    let mut builder = BatchBuilder::with_capacity(Compression::None, args.batch_records * (args.record_bytes + 16));
    let started = Instant::now();
    let mut sent = 0u64;
    let timestamp = 1_700_000_000_000;
    while sent < args.records {
        let n = (args.records - sent).min(args.batch_records as u64);
        for i in 0..n {
            let id = sent + i;
            value[..8].copy_from_slice(&id.to_be_bytes());
            builder.push(timestamp, None, Some(&value), &[]);
        }
        let bytes = builder
            .finish(ProducerFields::NONE)
            .map_err(|e| fail("encode batch", e))?;
        queue
            .send(bytes)
            .await
            .map_err(|e| fail("hand a batch to the sender task", e))?;
        sent += n;
    }
    drop(queue);
    sender
        .await
        .map_err(|e| fail("sender task", e))?
        .map_err(|e| fail("append", e))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to read every record back (decoding each), and how many were seen.
async fn consume_all(partition: &Arc<Partition>) -> BenchResult<(f64, u64)> {
    let started = Instant::now();
    let mut offset = 0;
    let mut seen = 0u64;
    let mut value_bytes = 0usize;
    loop {
        let fetch = partition.read(offset, 4 << 20).await.map_err(|e| fail("read", e))?;
        if fetch.is_empty() {
            break;
        }
        for record in fetch.records() {
            let record = record.map_err(|e| fail("decode record", e))?;
            value_bytes += record.value.map_or(0, |v| v.len());
            seen += 1;
        }
        offset = fetch.next_offset();
    }
    std::hint::black_box(value_bytes);
    Ok((started.elapsed().as_secs_f64(), seen))
}

/// Concurrent producers with fsync on every batch: throughput and latency percentiles,
/// against the reference of one plain `write` + `fsync` per batch from one writer.
async fn group_commit(args: &Args) -> BenchResult<()> {
    let dir = args.dir.join("sync");
    let _ = std::fs::remove_dir_all(&dir);
    let log = Log::open(LogConfig::new(&dir)).await.map_err(|e| fail("open log", e))?;
    let topic = log
        .create_topic(
            "durable",
            TopicConfig {
                fsync: FsyncPolicy::Always,
                ..TopicConfig::default()
            },
        )
        .await
        .map_err(|e| fail("create topic", e))?;
    let partition = Arc::clone(topic.partition(0).map_err(|e| fail("partition 0", e))?);
    let records_per_batch = 100;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.sync_producers {
        let p = Arc::clone(&partition);
        let appends = args.sync_appends;
        let record_bytes = args.record_bytes;
        tasks.push(tokio::spawn(async move {
            let value = vec![b'y'; record_bytes];
            let mut builder = BatchBuilder::new(Compression::None);
            let mut latencies = Vec::with_capacity(appends);
            for _ in 0..appends {
                for _ in 0..records_per_batch {
                    builder.push(1, None, Some(&value), &[]);
                }
                let t = Instant::now();
                p.append(&mut builder).await.map_err(|e| fail("durable append", e))?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BenchError>(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| fail("producer task", e))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let batches = latencies.len() as f64;

    // Reference: the same batches, one writer, write + fsync each.
    let path = args.dir.join("sync-reference.bin");
    let chunk = vec![b'z'; records_per_batch * (args.record_bytes + 10)];
    let reference_batches = 200;
    let t = Instant::now();
    let mut file = File::create(&path).map_err(|e| fail("create reference file", e))?;
    for _ in 0..reference_batches {
        file.write_all(&chunk).map_err(|e| fail("write reference", e))?;
        file.sync_data().map_err(|e| fail("fsync reference", e))?;
    }
    let fsync_batches_s = reference_batches as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);

    println!(
        "fsync-always: producers={} batches={} records={} append_rec_s={:.0} batches_s={:.0} p50_ms={:.2} p99_ms={:.2} reference_write_fsync_batches_s={:.0} group_commit_gain={:.1}",
        args.sync_producers,
        batches,
        batches as usize * records_per_batch,
        batches * records_per_batch as f64 / elapsed,
        batches / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        fsync_batches_s,
        (batches / elapsed) / fsync_batches_s
    );
    drop(partition);
    drop(topic);
    log.close().await.map_err(|e| fail("close log", e))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
