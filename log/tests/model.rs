//! Property tests of a partition against a simple in-memory model (a `Vec` of records).
//!
//! - `log_agrees_with_the_model`: random appends, reads, rolls and reopens (clean and
//!   crash) never make the log disagree with the model.
//! - `tail_damage_loses_only_the_damaged_batch_and_after`: after a crash, a truncated,
//!   bit-flipped or garbage-extended active segment is cut back to the batches wholly
//!   before the damage; nothing else is lost and nothing wrong is ever returned.
//! - `damage_in_a_sealed_segment_is_reported_never_returned`: a bit flip inside a sealed
//!   segment makes the reads that touch it fail with an error naming the file; reads
//!   elsewhere still work.
//!
//! Batch spans are computed by walking the segment files' headers here, independently of
//! the library (Kafka record batch v2: `baseOffset` at bytes 0..8, `batchLength` at 8..12,
//! total size `12 + batchLength`, `recordCount` at 57..61).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use plexus_log::batch::ProducerFields;
use plexus_log::{
    BatchBuilder, Compression, FsyncPolicy, Header, Log, LogConfig, LogError, Partition, Record, StoredRecord,
    TopicConfig,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

const TOPIC: &str = "model";
const MAX_BATCH_BYTES: u32 = 4096;

proptest! {
    // No regression file: the shrunk failing input is in the failure message.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_the_model(ops in proptest::collection::vec(op_strategy(), 1..24)) {
        let dir = tempdir()?;
        runtime()?.block_on(check_model(dir.path(), &ops))?;
    }

    #[test]
    fn tail_damage_loses_only_the_damaged_batch_and_after(
        batches in proptest::collection::vec(batch_strategy(1..10, 200), 5..40),
        segment_bytes in prop_oneof![Just(8192u64), Just(16_384), Just(1 << 20)],
        index_interval_bytes in 64u32..2048,
        fsync_always in proptest::bool::weighted(0.2),
        damage in damage_strategy(),
        after in batch_strategy(1..5, 100),
        clean_close_at_end in any::<bool>(),
    ) {
        let config = TopicConfig {
            segment_bytes,
            index_interval_bytes,
            fsync: if fsync_always { FsyncPolicy::Always } else { FsyncPolicy::Never },
            ..small_segments()
        };
        let case = TailCase { batches, config, damage, after, clean_close_at_end };
        let dir = tempdir()?;
        runtime()?.block_on(check_tail_damage(dir.path(), &case))?;
    }

    #[test]
    fn damage_in_a_sealed_segment_is_reported_never_returned(
        batches in proptest::collection::vec((batch_strategy(1..10, 200), proptest::bool::weighted(0.2)), 3..30),
        roll_at_end in any::<bool>(),
        segment in any::<Index>(),
        spot in spot_strategy(),
        bit in 0u8..8,
        max_bytes in 1usize..8192,
    ) {
        let case = SealedCase { batches, roll_at_end, segment, spot, bit, max_bytes };
        let dir = tempdir()?;
        runtime()?.block_on(check_sealed_damage(dir.path(), &case))?;
    }
}

// ---------------------------------------------------------------------------------------
// Property 1: model agreement.

#[derive(Debug, Clone)]
enum Op {
    Append(Batch),
    Read { at: Index, max_bytes: usize },
    RollNow,
    Reopen { clean: bool },
}

/// One batch to append: records and their codec.
#[derive(Debug, Clone)]
struct Batch {
    records: Vec<Record>,
    compression: Compression,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => batch_strategy(1..20, 300).prop_map(Op::Append),
        4 => (any::<Index>(), 1usize..8192).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::RollNow),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

async fn check_model(dir: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut log, mut partition) = create(dir, small_segments()).await?;
    let mut model: Vec<Record> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step} ({})", op_name(op));
        match op {
            Op::Append(batch) => {
                if let Some(base) = append(&partition, batch, MAX_BATCH_BYTES as usize, &at).await? {
                    prop_assert_eq!(base, model.len() as i64, "{}: base offset of the append", at);
                    model.extend(batch.records.iter().cloned());
                }
            }
            Op::Read { at: index, max_bytes } => {
                let start = partition.start_offset();
                prop_assert_eq!(start, 0, "{}: nothing is ever deleted here", at);
                let offset = start + index.index(model.len() - start as usize + 1) as i64;
                check_read(&partition, &model, offset, *max_bytes, &at).await?;
            }
            Op::RollNow => partition.roll_now().map_err(|e| fail(&at, e))?,
            Op::Reopen { clean } => {
                drop(partition);
                if *clean {
                    log.close().await.map_err(|e| fail(&at, e))?;
                } else {
                    drop(log);
                }
                (log, partition) = reopen(dir, &at).await?;
                prop_assert_eq!(partition.start_offset(), 0, "{}: start offset after reopen", at);
                let all = read_everything(&partition, &at).await?;
                prop_assert_eq!(
                    all,
                    with_offsets(&model, 0),
                    "{}: everything read back after reopen",
                    at
                );
            }
        }
        prop_assert_eq!(partition.end_offset(), model.len() as i64, "{}: end offset", at);
    }
    log.close().await.map_err(|e| fail("final close", e))
}

/// A read at `offset` returns a non-empty prefix of the model from there (empty at the end).
async fn check_read(
    partition: &Arc<Partition>,
    model: &[Record],
    offset: i64,
    max_bytes: usize,
    at: &str,
) -> Result<(), TestCaseError> {
    let at = format!("{at}: read({offset}, {max_bytes})");
    let fetch = partition.read(offset, max_bytes).await.map_err(|e| fail(&at, e))?;
    let got = fetch
        .records()
        .map(|r| r.map(to_model).map_err(|e| fail(&at, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let expected = with_offsets(model, offset);
    if offset < model.len() as i64 {
        prop_assert!(!got.is_empty(), "{}: empty before the end ({})", at, model.len());
    } else {
        prop_assert!(fetch.is_empty(), "{}: batches at the end offset", at);
    }
    prop_assert!(
        got.len() <= expected.len(),
        "{}: {} records, only {} exist",
        at,
        got.len(),
        expected.len()
    );
    prop_assert_eq!(&got[..], &expected[..got.len()], "{}: records", at);
    prop_assert_eq!(fetch.next_offset(), offset + got.len() as i64, "{}: next offset", at);
    prop_assert_eq!(
        fetch.end_offset(),
        model.len() as i64,
        "{}: end offset of the fetch",
        at
    );
    prop_assert!(
        fetch.batches().len() <= 1 || fetch.bytes() <= max_bytes,
        "{}: {} batches of {} bytes",
        at,
        fetch.batches().len(),
        fetch.bytes()
    );
    Ok(())
}

fn op_name(op: &Op) -> String {
    match op {
        Op::Append(batch) => format!("append {} records, {:?}", batch.records.len(), batch.compression),
        Op::Read { max_bytes, .. } => format!("read up to {max_bytes} bytes"),
        Op::RollNow => "roll now".into(),
        Op::Reopen { clean: true } => "close and reopen".into(),
        Op::Reopen { clean: false } => "crash and reopen".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Property 2: damage to the tail of the active segment after a crash.

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the file to this fraction of its length.
    Truncate(Index),
    /// Flip one bit of this byte.
    Flip(Spot, u8),
    /// Append these bytes.
    Garbage(Vec<u8>),
}

#[derive(Debug)]
struct TailCase {
    batches: Vec<Batch>,
    config: TopicConfig,
    damage: Damage,
    after: Batch,
    clean_close_at_end: bool,
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (spot_strategy(), 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Damage::Garbage),
    ]
}

async fn check_tail_damage(dir: &Path, case: &TailCase) -> Result<(), TestCaseError> {
    let (log, partition) = create(dir, case.config.clone()).await?;
    let mut model: Vec<Record> = Vec::new();
    for (i, batch) in case.batches.iter().enumerate() {
        let at = format!("append {i}");
        let base = append(&partition, batch, MAX_BATCH_BYTES as usize, &at).await?;
        prop_assert_eq!(base, Some(model.len() as i64), "{}: base offset", at);
        model.extend(batch.records.iter().cloned());
    }
    // Dropping the log does not stop a flush spawned by a roll, as a real crash would; a
    // flush now makes sure none is still running when the files are damaged and reopened.
    partition.flush().await.map_err(|e| fail("flush before the crash", e))?;
    drop(partition);
    drop(log);

    let segments = segment_files(dir)?;
    let mut originals = BTreeMap::new();
    for (base, path) in &segments {
        let bytes = read_file(path)?;
        for span in layout(&bytes, *base, path)? {
            originals.insert(span.base_offset, span.bytes(&bytes));
        }
    }
    prop_assert_eq!(
        originals.values().map(|b| record_count(b) as usize).sum::<usize>(),
        model.len(),
        "the segment files hold every record"
    );
    let (last_base, last_path) = segments
        .last()
        .cloned()
        .ok_or_else(|| TestCaseError::fail("no segment file"))?;
    let file = read_file(&last_path)?;
    let spans = layout(&file, last_base, &last_path)?;
    let (damaged, damage_at) = apply(&file, &spans, &case.damage);
    std::fs::write(&last_path, &damaged).map_err(|e| fail("damage the last segment", e))?;
    let kept: Vec<&Span> = spans.iter().filter(|s| s.position + s.len <= damage_at).collect();
    let expected_end = last_base + kept.iter().map(|s| s.records).sum::<i64>();
    let kept_bytes = kept.last().map_or(0, |s| s.position + s.len);
    let what = format!(
        "{:?} at byte {damage_at} of {} ({} batches, {} kept) in `{}`",
        case.damage,
        file.len(),
        spans.len(),
        kept.len(),
        last_path.display()
    );

    let (log, partition) = reopen(dir, &what).await?;
    prop_assert_eq!(partition.end_offset(), expected_end, "end offset after {}", what);
    let (all, batches) = read_everything_with_batches(&partition, &what).await?;
    for batch in &batches {
        let original = originals.get(&batch.base_offset());
        prop_assert!(
            original == Some(batch.bytes()),
            "after {}: batch at {} differs from the one written",
            what,
            batch.base_offset()
        );
    }
    prop_assert_eq!(
        all,
        with_offsets(&model[..expected_end as usize], 0),
        "records after {}",
        what
    );
    let size = std::fs::metadata(&last_path).map_err(|e| fail(&what, e))?.len();
    prop_assert_eq!(size, kept_bytes, "segment size after recovery from {}", what);
    let recovery_point = read_recovery_point(dir)?;

    // Appends go on where the valid data ends, and survive another reopen.
    let at = format!("append after {what}");
    let base = append(&partition, &case.after, MAX_BATCH_BYTES as usize, &at).await?;
    prop_assert_eq!(base, Some(expected_end), "{}: base offset", at);
    model.truncate(expected_end as usize);
    model.extend(case.after.records.iter().cloned());
    drop(partition);
    if case.clean_close_at_end {
        log.close().await.map_err(|e| fail(&at, e))?;
    } else {
        drop(log);
    }
    let (log, partition) = reopen(dir, &at).await?;
    prop_assert_eq!(
        partition.end_offset(),
        model.len() as i64,
        "end offset after the second reopen ({})",
        what
    );
    let all = read_everything(&partition, &at).await?;
    prop_assert_eq!(
        all,
        with_offsets(&model, 0),
        "records after the second reopen ({})",
        what
    );
    drop(partition);
    log.close().await.map_err(|e| fail("final close", e))?;
    // Checked last so the data checks above run first. The file promises that everything
    // before it is on stable storage; once recovery has cut the log back, offsets past the
    // new end get new data that is not yet durable, so the promise must shrink with it.
    prop_assert!(
        recovery_point.is_none_or(|point| point <= expected_end),
        "after recovery from {}, `recovery-point` says {:?} but the log ends at {}",
        what,
        recovery_point,
        expected_end
    );
    Ok(())
}

/// The damaged file and the byte position where the damage starts.
fn apply(file: &[u8], spans: &[Span], damage: &Damage) -> (Vec<u8>, u64) {
    match damage {
        Damage::Truncate(at) => {
            let len = at.index(file.len() + 1);
            (file[..len].to_vec(), len as u64)
        }
        Damage::Flip(at, bit) => {
            let mut out = file.to_vec();
            if out.is_empty() {
                return (out, 0);
            }
            let position = at.position(out.len(), spans);
            out[position] ^= 1 << bit;
            (out, position as u64)
        }
        Damage::Garbage(bytes) => {
            let mut out = file.to_vec();
            out.extend_from_slice(bytes);
            (out, file.len() as u64)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Property 3: a bit flip inside a sealed segment.

#[derive(Debug)]
struct SealedCase {
    /// Batches, each followed by a roll when its flag is set.
    batches: Vec<(Batch, bool)>,
    roll_at_end: bool,
    segment: Index,
    spot: Spot,
    bit: u8,
    max_bytes: usize,
}

async fn check_sealed_damage(dir: &Path, case: &SealedCase) -> Result<(), TestCaseError> {
    let (log, partition) = create(dir, small_segments()).await?;
    let mut model: Vec<Record> = Vec::new();
    for (i, (batch, roll)) in case.batches.iter().enumerate() {
        let at = format!("append {i}");
        let base = append(&partition, batch, MAX_BATCH_BYTES as usize, &at).await?;
        prop_assert_eq!(base, Some(model.len() as i64), "{}: base offset", at);
        model.extend(batch.records.iter().cloned());
        if *roll {
            partition.roll_now().map_err(|e| fail(&at, e))?;
        }
    }
    if case.roll_at_end || partition.segment_count() == 1 {
        partition.roll_now().map_err(|e| fail("roll at the end", e))?;
    }
    drop(partition);
    // A clean close: every sealed segment is below the recovery point, so it is trusted.
    log.close().await.map_err(|e| fail("close", e))?;

    let segments = segment_files(dir)?;
    let mut originals = BTreeMap::new();
    let mut sealed = Vec::new();
    for (i, (base, path)) in segments.iter().enumerate() {
        let bytes = read_file(path)?;
        let spans = layout(&bytes, *base, path)?;
        for span in &spans {
            originals.insert(span.base_offset, span.bytes(&bytes));
        }
        if i + 1 < segments.len() && !bytes.is_empty() {
            let next_base = segments[i + 1].0;
            sealed.push((*base, next_base, path.clone(), bytes, spans));
        }
    }
    prop_assert!(!sealed.is_empty(), "no sealed segment with data among {:?}", segments);
    let (base, next_base, path, file, spans) = &sealed[case.segment.index(sealed.len())];
    let position = case.spot.position(file.len(), spans);
    let mut damaged = file.clone();
    damaged[position] ^= 1 << case.bit;
    std::fs::write(path, &damaged).map_err(|e| fail("damage a sealed segment", e))?;
    let hit = spans
        .iter()
        .find(|s| s.position <= position as u64 && (position as u64) < s.position + s.len)
        .ok_or_else(|| TestCaseError::fail("the flipped byte is in no batch"))?;
    let field = field_name(position as u64 - hit.position);
    let what = format!(
        "bit {} of byte {position} ({field} of the batch at offset {}, byte {}) in `{}`",
        case.bit,
        hit.base_offset,
        hit.position,
        path.display()
    );

    let (log, partition) = reopen(dir, &what).await?;
    prop_assert_eq!(
        partition.end_offset(),
        model.len() as i64,
        "end offset after flipping {}",
        what
    );
    for offset in 0..model.len() as i64 {
        let at = format!("read({offset}, {}) after flipping {what}", case.max_bytes);
        let in_segment = *base <= offset && offset < *next_base;
        let in_batch = hit.base_offset <= offset && offset < hit.base_offset + hit.records;
        match partition.read(offset, case.max_bytes).await {
            Ok(fetch) => {
                prop_assert!(!in_batch, "{}: no error for a read of the damaged batch", at);
                for batch in fetch.batches() {
                    let original = originals.get(&batch.base_offset());
                    prop_assert!(
                        original == Some(batch.bytes()),
                        "{}: batch at {} differs from the one written",
                        at,
                        batch.base_offset()
                    );
                }
                let got = fetch
                    .records()
                    .map(|r| r.map(to_model).map_err(|e| fail(&at, e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let expected = with_offsets(&model, offset);
                prop_assert!(!got.is_empty(), "{}: empty before the end", at);
                prop_assert!(got.len() <= expected.len(), "{}: too many records", at);
                prop_assert_eq!(&got[..], &expected[..got.len()], "{}: records", at);
            }
            Err(err) => {
                prop_assert!(in_segment, "{}: error outside the damaged segment: {}", at, err);
                let message = err.to_string();
                prop_assert!(
                    matches!(&err, LogError::Corrupt { path: p, position, .. } if p == path && *position < file.len() as u64),
                    "{}: not a corruption error naming the segment and a byte in it: {}",
                    at,
                    message
                );
                prop_assert!(
                    message.contains(&path.display().to_string()),
                    "{}: path not in `{}`",
                    at,
                    message
                );
            }
        }
    }
    drop(partition);
    log.close().await.map_err(|e| fail("final close", e))
}

/// A byte of a segment file to damage.
#[derive(Debug, Clone)]
enum Spot {
    /// Any byte, at this fraction of the file.
    Anywhere(Index),
    /// Byte `byte` of the 61-byte header of one of the batches: most header fields are
    /// small targets, and two of them (`baseOffset`, `partitionLeaderEpoch`) are outside
    /// the CRC.
    InHeader { batch: Index, byte: usize },
}

impl Spot {
    /// The byte position in a non-empty file made of `spans`.
    fn position(&self, file_len: usize, spans: &[Span]) -> usize {
        match self {
            Spot::InHeader { batch, byte } if !spans.is_empty() => {
                spans[batch.index(spans.len())].position as usize + byte
            }
            Spot::Anywhere(at) | Spot::InHeader { batch: at, .. } => at.index(file_len),
        }
    }
}

fn spot_strategy() -> impl Strategy<Value = Spot> {
    prop_oneof![
        any::<Index>().prop_map(Spot::Anywhere),
        (any::<Index>(), 0usize..61).prop_map(|(batch, byte)| Spot::InHeader { batch, byte }),
    ]
}

/// Which header field of a batch holds byte `at` (relative to the batch start).
fn field_name(at: u64) -> &'static str {
    match at {
        0..8 => "baseOffset",
        8..12 => "batchLength",
        12..16 => "partitionLeaderEpoch",
        16 => "magic",
        17..21 => "crc",
        21..61 => "CRC-covered header",
        _ => "records",
    }
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn batch_strategy(records: std::ops::Range<usize>, max_value: usize) -> impl Strategy<Value = Batch> {
    let codec = prop_oneof![Just(Compression::None), Just(Compression::Lz4), Just(Compression::Zstd)];
    (proptest::collection::vec(record_strategy(max_value), records), codec)
        .prop_map(|(records, compression)| Batch { records, compression })
}

fn record_strategy(max_value: usize) -> impl Strategy<Value = Record> {
    let bytes = |max: usize| {
        // Random bytes do not compress; a small alphabet does.
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..max),
            proptest::collection::vec(0u8..3, 0..max),
        ]
        .prop_map(Bytes::from)
    };
    let header = ("[a-z]{1,6}", proptest::option::of(bytes(10))).prop_map(|(key, value)| Header { key, value });
    let timestamp = prop_oneof![4 => 0i64..4_000_000_000_000, 1 => any::<i64>()];
    (
        proptest::option::of(bytes(16)),
        proptest::option::weighted(0.9, bytes(max_value)),
        proptest::collection::vec(header, 0..3),
        timestamp,
    )
        .prop_map(|(key, value, headers, timestamp)| Record {
            key,
            value,
            headers,
            timestamp,
        })
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn small_segments() -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        max_batch_bytes: MAX_BATCH_BYTES,
        // Random timestamps must not make background retention delete anything.
        retention_time: None,
        ..TopicConfig::default()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, TestCaseError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail("build a runtime", e))
}

fn tempdir() -> Result<tempfile::TempDir, TestCaseError> {
    tempfile::tempdir().map_err(|e| fail("create a temporary directory", e))
}

fn fail(what: &str, err: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {err}"))
}

async fn create(dir: &Path, config: TopicConfig) -> Result<(Log, Arc<Partition>), TestCaseError> {
    let log = Log::open(LogConfig::new(dir)).await.map_err(|e| fail("open", e))?;
    let topic = log
        .create_topic(TOPIC, config)
        .await
        .map_err(|e| fail("create topic", e))?;
    let partition = Arc::clone(topic.partition(0).map_err(|e| fail("partition 0", e))?);
    Ok((log, partition))
}

async fn reopen(dir: &Path, at: &str) -> Result<(Log, Arc<Partition>), TestCaseError> {
    let log = Log::open(LogConfig::new(dir))
        .await
        .map_err(|e| fail(&format!("reopen after {at}"), e))?;
    let partition = log
        .partition(TOPIC, 0)
        .await
        .map_err(|e| fail(&format!("partition 0 after {at}"), e))?;
    Ok((log, partition))
}

/// Appends `batch`; `None` if it was (rightly) refused as too large. The encoded size is
/// computed with a second builder so the refusal can be checked, not just accepted.
async fn append(
    partition: &Arc<Partition>,
    batch: &Batch,
    max_batch_bytes: usize,
    at: &str,
) -> Result<Option<i64>, TestCaseError> {
    let encoded = builder(batch)
        .finish(ProducerFields::NONE)
        .map_err(|e| fail(at, e))?
        .len();
    match partition.append(&mut builder(batch)).await {
        Ok(outcome) => {
            prop_assert!(
                encoded <= max_batch_bytes,
                "{}: a {}-byte batch was accepted",
                at,
                encoded
            );
            Ok(outcome.base_offset())
        }
        Err(LogError::BatchTooLarge { size, max, .. }) => {
            prop_assert!(
                size > max && size == encoded,
                "{}: refused as {} > {} bytes ({})",
                at,
                size,
                max,
                encoded
            );
            Ok(None)
        }
        Err(err) => Err(fail(at, err)),
    }
}

fn builder(batch: &Batch) -> BatchBuilder {
    let mut builder = BatchBuilder::new(batch.compression);
    for record in &batch.records {
        builder.push_record(record);
    }
    builder
}

async fn read_everything(partition: &Arc<Partition>, at: &str) -> Result<Vec<(i64, Record)>, TestCaseError> {
    Ok(read_everything_with_batches(partition, at).await?.0)
}

/// Every record from the start offset on, and the batches they came in.
async fn read_everything_with_batches(
    partition: &Arc<Partition>,
    at: &str,
) -> Result<(Vec<(i64, Record)>, Vec<plexus_log::Batch>), TestCaseError> {
    let mut records = Vec::new();
    let mut batches = Vec::new();
    let mut offset = partition.start_offset();
    loop {
        let at = format!("{at}: read({offset})");
        let fetch = partition.read(offset, 8192).await.map_err(|e| fail(&at, e))?;
        if fetch.is_empty() {
            return Ok((records, batches));
        }
        for record in fetch.records() {
            records.push(to_model(record.map_err(|e| fail(&at, e))?));
        }
        prop_assert!(fetch.next_offset() > offset, "{}: no progress", at);
        offset = fetch.next_offset();
        batches.extend(fetch.into_batches());
    }
}

fn to_model(record: StoredRecord) -> (i64, Record) {
    (
        record.offset,
        Record {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp: record.timestamp,
        },
    )
}

fn with_offsets(model: &[Record], from: i64) -> Vec<(i64, Record)> {
    model
        .iter()
        .enumerate()
        .skip(from as usize)
        .map(|(offset, record)| (offset as i64, record.clone()))
        .collect()
}

/// The partition's segment files, by base offset.
fn segment_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>, TestCaseError> {
    let partition_dir = dir.join("topics").join(TOPIC).join("0");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&partition_dir).map_err(|e| fail("list the partition directory", e))? {
        let path = entry.map_err(|e| fail("list the partition directory", e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<i64>()
        {
            out.push((base, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The partition's `recovery-point` file, if there is one.
fn read_recovery_point(dir: &Path) -> Result<Option<i64>, TestCaseError> {
    let path = dir.join("topics").join(TOPIC).join("0").join("recovery-point");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| fail(&format!("`{}`", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(&format!("read `{}`", path.display()), e)),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TestCaseError> {
    std::fs::read(path).map_err(|e| fail(&format!("read `{}`", path.display()), e))
}

/// Where one batch lies in a segment file.
#[derive(Debug, Clone)]
struct Span {
    position: u64,
    len: u64,
    base_offset: i64,
    records: i64,
}

impl Span {
    fn bytes(&self, file: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&file[self.position as usize..(self.position + self.len) as usize])
    }
}

/// Walks the batch headers of an undamaged segment file; the batches must tile it and
/// have dense offsets from `base`.
fn layout(file: &[u8], base: i64, path: &Path) -> Result<Vec<Span>, TestCaseError> {
    let mut spans = Vec::new();
    let mut position = 0usize;
    let mut expected = base;
    while position < file.len() {
        let rest = &file[position..];
        prop_assert!(
            rest.len() >= 61,
            "`{}`: {} bytes after the last batch",
            path.display(),
            rest.len()
        );
        let base_offset = i64::from_be_bytes(be(rest, 0));
        let len = 12 + i32::from_be_bytes(be(rest, 8)) as usize;
        let records = i64::from(record_count(rest));
        prop_assert_eq!(
            base_offset,
            expected,
            "`{}` at byte {}: base offset",
            path.display(),
            position
        );
        prop_assert!(
            len <= rest.len(),
            "`{}` at byte {}: batch runs past the end",
            path.display(),
            position
        );
        spans.push(Span {
            position: position as u64,
            len: len as u64,
            base_offset,
            records,
        });
        expected += records;
        position += len;
    }
    Ok(spans)
}

fn record_count(batch: &[u8]) -> i32 {
    i32::from_be_bytes(be(batch, 57))
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}
