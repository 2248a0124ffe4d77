//! Crash test: a child process appends with `FsyncPolicy::Always` until it is killed
//! with SIGKILL; the parent reopens the log and checks that every acknowledged batch is
//! present and intact, that offsets stay dense, and that producer positions survive.
//!
//! The test binary runs itself as the child: the main test starts
//! `current_exe() child_writer --exact --nocapture --test-threads=1` with
//! `PLEXUS_CRASH_CHILD_DIR` set. This works the same under `cargo test` and `cargo nextest`,
//! since both build a plain libtest binary and the child is started by the test itself,
//! not by the runner. Without the variable, `child_writer` returns at once and passes.
//!
//! The child prints one line per acknowledged append to stdout, after the append
//! returned `Ok`:
//!
//! ```text
//! ack <partition> <base_offset> <record_count> <checksum> <writer> <seq>
//! pos <partition> <seq>          (after the ack of a batch written with a position)
//! ```
//!
//! Record contents are a pure function of `(writer, seq, index)`, so the parent can
//! regenerate every acknowledged value. Set `PLEXUS_CRASH_SEED` to replay the kill times
//! of a failed run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plexus_log::{
    AppendOutcome, BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, POSITION_HEADER, Partition, Position,
    ProducerId, StoredRecord, TopicConfig,
};

const CHILD_DIR_ENV: &str = "PLEXUS_CRASH_CHILD_DIR";
const CHILD_RUN_ENV: &str = "PLEXUS_CRASH_CHILD_RUN";
const SEED_ENV: &str = "PLEXUS_CRASH_SEED";
const CHILD_TEST: &str = "child_writer";

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 2;
const WRITERS: u32 = 4;
/// Writer 0 appends with producer positions (its `seq`) to partition 0.
const POSITION_WRITER: u32 = 0;
const POSITION_PRODUCER: &str = "w0";
const ITERATIONS: u64 = 16;
/// How long the child keeps appending after its first acknowledgement, at most.
const MAX_KILL_DELAY_MS: u64 = 250;
/// Startup (exec plus recovery) must produce a first acknowledgement within this.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn topic_config() -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        fsync: FsyncPolicy::Always,
        // Small segments so that they roll (and producer snapshots are written) in every run.
        segment_bytes: 64 << 10,
        max_batch_bytes: 64 << 10,
        index_interval_bytes: 1024,
        ..TopicConfig::default()
    }
}

#[test]
fn kill_during_durable_appends_loses_no_acknowledged_batch() {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .map(|s| s.parse::<u64>().expect("PLEXUS_CRASH_SEED must be a number"))
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("crash test: {SEED_ENV}={seed}");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut total_acks = 0;
    let mut last_position: Option<u64> = None;
    let mut previous: Vec<Vec<BatchDigest>> = vec![Vec::new(); PARTITIONS as usize];
    for run in 0..ITERATIONS {
        let kill_delay = Duration::from_millis(splitmix(&mut rng) % (MAX_KILL_DELAY_MS + 1));
        let output = run_child_until_killed(dir.path(), run, kill_delay);
        let new_acks = output.acks.len();
        total_acks += new_acks;
        if let Some(seq) = output.last_position {
            last_position = Some(last_position.map_or(seq, |p| p.max(seq)));
        }
        let verify_started = Instant::now();
        let report = runtime.block_on(verify(dir.path(), &output.acks, last_position, &previous));
        let verify_time = verify_started.elapsed();
        eprintln!(
            "crash run {run}: killed {kill_delay:?} after the first ack; {new_acks} new acks ({total_acks} in all), \
             partial last line: {}, end offsets {:?}, segments {:?}, last acked position {last_position:?}, \
             recovered position {:?}; startup {:?}, verify {verify_time:?}",
            output.partial_line, report.end_offsets, report.segments, report.recovered_position, output.startup,
        );
        assert!(new_acks > 0, "run {run}: the child acknowledged nothing");
        previous = report.batches;
    }
    eprintln!("crash test: {ITERATIONS} runs in {:?}", started.elapsed());
}

/// The child: appends until killed. Does nothing (and passes) in a normal test run.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(append_until_killed(PathBuf::from(dir), run));
}

async fn append_until_killed(dir: PathBuf, run: u64) {
    // Ends libtest's unterminated "test child_writer ... " so each protocol line stands alone.
    emit("\n");
    let log = Log::open(LogConfig::new(dir)).await.unwrap();
    let topic = match log.topic(TOPIC) {
        Some(topic) => topic,
        None => log.create_topic(TOPIC, topic_config()).await.unwrap(),
    };
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let partition = Arc::clone(topic.partition(writer % PARTITIONS).unwrap());
        writers.spawn(append_forever(partition, writer, run));
    }
    // Writers only stop by panicking; the parent sees the early exit.
    if let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    panic!("a writer stopped");
}

async fn append_forever(partition: Arc<Partition>, writer: u32, run: u64) {
    let producer = ProducerId::from_name(POSITION_PRODUCER);
    let mut seq = if writer == POSITION_WRITER {
        // Continue after the recovered position, as a restarted source would.
        partition
            .producer_position(producer)
            .map_or(1, |entry| entry.position.as_u64().unwrap() + 1)
    } else {
        // Unique per run, so that a batch found at the wrong offset cannot pass as another.
        (run << 32) + 1
    };
    loop {
        let count = record_count(writer, seq);
        let compression = compression_for(seq);
        let mut builder = BatchBuilder::new(compression);
        let mut checksum = 0;
        for index in 0..count {
            let value = record_value(writer, seq, index as u64);
            checksum = checksum_append(checksum, &value);
            builder.push(now_ms(), Some(writer_key(writer).as_bytes()), Some(&value), &[]);
        }
        let outcome = if writer == POSITION_WRITER {
            partition
                .append_with_position(&mut builder, producer, Position::from_u64(seq))
                .await
        } else {
            partition.append(&mut builder).await
        };
        let (base_offset, last_offset) = match outcome.unwrap() {
            AppendOutcome::Appended {
                base_offset,
                last_offset,
            } => (base_offset, last_offset),
            other => panic!("writer {writer} seq {seq}: {other:?}"),
        };
        assert_eq!(last_offset - base_offset + 1, count as i64);
        let mut lines = format!(
            "ack {} {base_offset} {count} {checksum:08x} {writer} {seq}\n",
            partition.id()
        );
        if writer == POSITION_WRITER {
            lines.push_str(&format!("pos {} {seq}\n", partition.id()));
        }
        emit(&lines);
        seq += 1;
    }
}

/// Writes whole lines to stdout in one locked write, bypassing libtest's capture.
fn emit(lines: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(lines.as_bytes()).and_then(|()| out.flush()).is_err() {
        // The parent is gone.
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Parent: running and killing the child.

struct ChildOutput {
    acks: Vec<Ack>,
    last_position: Option<u64>,
    partial_line: bool,
    /// From spawning the child to its first acknowledgement.
    startup: Duration,
}

/// Kills the child if the parent panics before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_child_until_killed(dir: &Path, run: u64, kill_delay: Duration) -> ChildOutput {
    let exe = std::env::current_exe().unwrap();
    let mut child = ChildGuard(
        Command::new(exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir)
            .env(CHILD_RUN_ENV, run.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || read_complete_lines(stdout, &lines_tx));

    let mut output = ChildOutput {
        acks: Vec::new(),
        last_position: None,
        partial_line: false,
        startup: Duration::ZERO,
    };
    let spawned = Instant::now();
    let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
    while output.acks.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(wait) {
            Ok(line) => output.take(&line),
            Err(err) => panic!(
                "run {run}: no acknowledgement from the child ({err}): {:?}",
                child.0.try_wait()
            ),
        }
    }
    output.startup = spawned.elapsed();
    let kill_at = Instant::now() + kill_delay;
    loop {
        let wait = kill_at.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(wait) {
            Ok(line) => output.take(&line),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("run {run}: the child exited on its own: {:?}", child.0.wait())
            }
        }
    }
    assert_eq!(
        child.0.try_wait().unwrap(),
        None,
        "run {run}: the child exited on its own"
    );
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "run {run}: {status:?}");
    }
    #[cfg(not(unix))]
    let _ = status;
    // Lines that reached the pipe before the kill were acknowledged too.
    output.partial_line = reader.join().unwrap();
    for line in lines_rx.try_iter() {
        output.take(&line);
    }
    output
}

/// Sends each complete line; returns whether a partial last line was left over.
fn read_complete_lines(stdout: impl std::io::Read, lines: &mpsc::Sender<String>) -> bool {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).unwrap();
        if read == 0 {
            return false;
        }
        if buf.last() != Some(&b'\n') {
            return true;
        }
        let line = String::from_utf8(buf.clone()).unwrap();
        if lines.send(line).is_err() {
            return false;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: u32,
    base_offset: i64,
    count: usize,
    checksum: u32,
    writer: u32,
    seq: u64,
}

impl ChildOutput {
    /// Takes one complete line; libtest's own lines ("running 1 test", ...) are skipped.
    fn take(&mut self, line: &str) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first() {
            Some(&"ack") => {
                assert_eq!(fields.len(), 7, "malformed line {line:?}");
                let ack = Ack {
                    partition: fields[1].parse().unwrap(),
                    base_offset: fields[2].parse().unwrap(),
                    count: fields[3].parse().unwrap(),
                    checksum: u32::from_str_radix(fields[4], 16).unwrap(),
                    writer: fields[5].parse().unwrap(),
                    seq: fields[6].parse().unwrap(),
                };
                self.acks.push(ack);
            }
            Some(&"pos") => {
                assert_eq!(fields.len(), 3, "malformed line {line:?}");
                assert_eq!(fields[1], (POSITION_WRITER % PARTITIONS).to_string(), "{line:?}");
                let seq: u64 = fields[2].parse().unwrap();
                self.last_position = Some(self.last_position.map_or(seq, |p| p.max(seq)));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent: checking the recovered log.

struct Report {
    end_offsets: Vec<i64>,
    segments: Vec<usize>,
    recovered_position: Option<u64>,
    /// Per partition, every batch, for the next run.
    batches: Vec<Vec<BatchDigest>>,
}

/// A batch as the next run compares it. The CRC-32C in its header covers everything
/// after it (attributes, timestamps, producer fields, records), and reads verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchDigest {
    base_offset: i64,
    last_offset: i64,
    crc: u32,
}

/// A batch read back: its header facts and, if decoded, its records.
struct ReadBatch {
    digest: BatchDigest,
    compression: Compression,
    producer_id: i64,
    /// Empty for batches that were already checked after an earlier run.
    records: Vec<StoredRecord>,
}

/// Checks the log after a crash. `new_acks` are the acknowledgements of the last run;
/// earlier ones were checked after their run, and `previous` (every batch recovered
/// then) must still be there unchanged, so they are covered too.
async fn verify(dir: &Path, new_acks: &[Ack], last_position: Option<u64>, previous: &[Vec<BatchDigest>]) -> Report {
    let log = Log::open(LogConfig::new(dir)).await.unwrap();
    let topic = log.topic(TOPIC).expect("the topic survives the crash");
    assert_eq!(topic.config(), &topic_config());
    let mut report = Report {
        end_offsets: Vec::new(),
        segments: Vec::new(),
        recovered_position: None,
        batches: Vec::new(),
    };
    let producer = ProducerId::from_name(POSITION_PRODUCER);
    for partition in topic.partitions() {
        let id = partition.id();
        let before = &previous[id as usize];
        let checked_end = before.last().map_or(0, |b| b.last_offset + 1);
        let batches = read_partition(partition, checked_end, producer).await;

        // Dense: batches follow each other, records inside them too, from 0 to the end.
        let mut next = 0;
        for (&base, batch) in &batches {
            assert_eq!(base, next, "partition {id}: gap or overlap before the batch at {base}");
            for (i, record) in batch.records.iter().enumerate() {
                assert_eq!(
                    record.offset,
                    base + i as i64,
                    "partition {id}: offsets in batch {base}"
                );
            }
            next = batch.digest.last_offset + 1;
        }
        assert_eq!(partition.start_offset(), 0, "partition {id}");
        assert_eq!(
            partition.end_offset(),
            next,
            "partition {id}: end offset vs. what is readable"
        );

        // What an earlier run saw after recovery is still there, byte for byte: a later
        // crash and recovery must not take back or change data already recovered.
        let digests: Vec<BatchDigest> = batches.values().map(|b| b.digest).collect();
        assert!(
            digests.len() >= before.len() && digests[..before.len()] == before[..],
            "partition {id}: batches recovered earlier changed or vanished ({} before, {} now, first difference {:?})",
            before.len(),
            digests.len(),
            before.iter().zip(&digests).find(|(a, b)| a != b),
        );

        // Every acknowledged batch, at its offset, with its exact records.
        for ack in new_acks.iter().filter(|a| a.partition == id) {
            let batch = batches
                .get(&ack.base_offset)
                .unwrap_or_else(|| panic!("partition {id}: acknowledged batch {ack:?} is missing; end offset {next}"));
            check_acknowledged(batch, ack);
        }

        // Producer positions: strictly increasing along the log, so no position was
        // written twice across the crashes.
        let mut seen: Option<u64> = None;
        for (&base, batch) in batches.iter().filter(|(_, b)| b.producer_id == producer.get()) {
            let position = batch_position(batch).unwrap_or_else(|| panic!("batch {base} has no position"));
            assert!(
                seen < Some(position),
                "partition {id}: position {position} at {base} after {seen:?}"
            );
            seen = Some(position);
        }
        if id == POSITION_WRITER % PARTITIONS {
            report.recovered_position = check_positions(partition, &batches, last_position, seen).await;
        } else {
            assert_eq!(
                seen, None,
                "partition {id}: positions from a writer that does not write here"
            );
        }

        report.end_offsets.push(partition.end_offset());
        report.segments.push(partition.segment_count());
        report.batches.push(digests);
    }
    log.close().await.unwrap();
    report
}

/// Reads every batch; decodes the records of those from `decode_from` on and of those
/// written by `producer` (decoding the whole log every run would make the test slow).
async fn read_partition(
    partition: &Arc<Partition>,
    decode_from: i64,
    producer: ProducerId,
) -> BTreeMap<i64, ReadBatch> {
    let mut batches = BTreeMap::new();
    let mut offset = partition.start_offset();
    let end = partition.end_offset();
    while offset < end {
        let fetch = partition.read(offset, 4 << 20).await.unwrap();
        assert!(
            !fetch.is_empty(),
            "partition {}: nothing readable at {offset} before the end {end}",
            partition.id()
        );
        for batch in fetch.batches() {
            let header = batch.header();
            let records: Vec<StoredRecord> =
                if batch.base_offset() >= decode_from || header.producer_id == producer.get() {
                    let records: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
                    assert_eq!(records.len(), batch.record_count(), "batch {}", batch.base_offset());
                    records
                } else {
                    Vec::new()
                };
            let read = ReadBatch {
                digest: BatchDigest {
                    base_offset: batch.base_offset(),
                    last_offset: batch.last_offset(),
                    crc: header.crc,
                },
                compression: header.compression().unwrap(),
                producer_id: header.producer_id,
                records,
            };
            assert!(
                batches.insert(batch.base_offset(), read).is_none(),
                "batch {} twice",
                batch.base_offset()
            );
        }
        offset = fetch.next_offset();
    }
    batches
}

fn check_acknowledged(batch: &ReadBatch, ack: &Ack) {
    assert_eq!(
        ack.count,
        record_count(ack.writer, ack.seq),
        "{ack:?}: the child's record count"
    );
    assert_eq!(batch.records.len(), ack.count, "{ack:?}: record count");
    assert_eq!(
        batch.digest.last_offset,
        ack.base_offset + ack.count as i64 - 1,
        "{ack:?}: last offset"
    );
    assert_eq!(batch.compression, compression_for(ack.seq), "{ack:?}: compression");
    let mut checksum = 0;
    for (index, record) in batch.records.iter().enumerate() {
        let value = record.value.as_deref().unwrap_or_default();
        checksum = checksum_append(checksum, value);
        assert_eq!(
            record.key.as_deref(),
            Some(writer_key(ack.writer).as_bytes()),
            "{ack:?}: key of record {index}"
        );
        assert_eq!(
            value,
            &record_value(ack.writer, ack.seq, index as u64)[..],
            "{ack:?}: value of record {index}"
        );
    }
    assert_eq!(checksum, ack.checksum, "{ack:?}: checksum of the values read back");
    if ack.writer == POSITION_WRITER {
        assert_eq!(batch_position(batch), Some(ack.seq), "{ack:?}: position header");
    }
}

/// Checks the recovered position of the position writer and that replaying the last
/// acknowledged position writes nothing. Returns the recovered position.
async fn check_positions(
    partition: &Arc<Partition>,
    batches: &BTreeMap<i64, ReadBatch>,
    last_acked: Option<u64>,
    last_in_log: Option<u64>,
) -> Option<u64> {
    let producer = ProducerId::from_name(POSITION_PRODUCER);
    let Some(entry) = partition.producer_position(producer) else {
        assert_eq!(last_acked, None, "the acknowledged position was lost");
        assert_eq!(
            last_in_log, None,
            "the log holds positions but the partition does not know them"
        );
        return None;
    };
    let recovered = entry.position.as_u64().expect("positions are u64");
    assert!(
        Some(recovered) >= last_acked,
        "recovered position {recovered} < acknowledged {last_acked:?}"
    );
    assert_eq!(
        Some(recovered),
        last_in_log,
        "recovered position vs. the last one in the log"
    );
    // The entry points at the batch that carried the position.
    let (_, carrier) = batches
        .range(..=entry.last_offset)
        .next_back()
        .expect("the position's batch");
    assert_eq!(
        carrier.digest.last_offset, entry.last_offset,
        "{entry:?}: not the last offset of a batch"
    );
    assert_eq!(batch_position(carrier), Some(recovered), "{entry:?}");

    let end = partition.end_offset();
    for replay in last_acked.into_iter().chain([recovered]) {
        let mut builder = BatchBuilder::new(Compression::None);
        builder.push(now_ms(), None, Some(b"replayed"), &[]);
        let outcome = partition
            .append_with_position(&mut builder, producer, Position::from_u64(replay))
            .await
            .unwrap();
        assert_eq!(
            outcome,
            AppendOutcome::AlreadyWritten { last: entry.clone() },
            "replaying position {replay}"
        );
    }
    assert_eq!(partition.end_offset(), end, "a replay wrote something");
    Some(recovered)
}

/// The position in the last record's `plexus.position` header, as a `u64`.
fn batch_position(batch: &ReadBatch) -> Option<u64> {
    let last = batch.records.last()?;
    let header = last.headers.iter().rev().find(|h| h.key == POSITION_HEADER)?;
    Position::from_bytes(header.value.clone()?).as_u64()
}

// ---------------------------------------------------------------------------------------
// Deterministic content, shared by child and parent.

fn writer_key(writer: u32) -> String {
    format!("w{writer}")
}

fn record_count(writer: u32, seq: u64) -> usize {
    1 + (mix(writer, seq, u64::MAX) % 50) as usize
}

fn compression_for(seq: u64) -> Compression {
    match seq % 3 {
        0 => Compression::None,
        1 => Compression::Lz4,
        _ => Compression::Zstd,
    }
}

/// A readable prefix naming the record, then 8..248 pseudo-random letters.
fn record_value(writer: u32, seq: u64, index: u64) -> Vec<u8> {
    let mut state = mix(writer, seq, index);
    let letters = 8 + (splitmix(&mut state) % 241) as usize;
    let mut value = format!("w{writer}/s{seq}/r{index}/").into_bytes();
    value.extend((0..letters).map(|_| b'a' + (splitmix(&mut state) % 26) as u8));
    value
}

/// CRC-32C over length-prefixed values, so that moving bytes between records shows.
fn checksum_append(crc: u32, value: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(crc, &(value.len() as u32).to_be_bytes());
    crc32c::crc32c_append(crc, value)
}

fn mix(writer: u32, seq: u64, index: u64) -> u64 {
    let mut state = (u64::from(writer) << 56) ^ seq.rotate_left(17) ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    splitmix(&mut state)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}
