//! A hostile environment: writes that fail part-way, bad paths, damaged files. Every
//! failure is a clear error naming the path; nothing acknowledged is lost or corrupted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use plexus_log::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogError, TopicConfig};

const CHILD_DIR: &str = "PLEXUS_FSIZE_CHILD_DIR";

/// Child side of `a_write_that_fails_part_way_is_cut_back_and_reported`: appends until
/// the file-size limit set by the parent makes a write fail, printing each acknowledged
/// batch and then the error. Does nothing in a normal test run.
#[tokio::test]
async fn child_appends_until_the_disk_refuses() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let log = Log::open(LogConfig::new(dir)).await.unwrap();
    let config = TopicConfig {
        fsync: FsyncPolicy::Always,
        ..TopicConfig::default()
    };
    let partition = Arc::clone(log.create_topic("full", config).await.unwrap().partition(0).unwrap());
    let mut stdout = std::io::stdout().lock();
    for i in 0u32.. {
        let mut batch = BatchBuilder::new(Compression::None);
        for j in 0..10u32 {
            batch.push(i64::from(i), None, Some(&value(i, j)), &[]);
        }
        match partition.append(&mut batch).await {
            Ok(outcome) => writeln!(stdout, "ack {} {i}", outcome.base_offset().unwrap()).unwrap(),
            Err(err) => {
                writeln!(stdout, "error {err}").unwrap();
                // The partition stays usable: a smaller batch that fits still goes in,
                // right after the last good one.
                let mut small = BatchBuilder::new(Compression::None);
                small.push(0, None, Some(b"x"), &[]);
                match partition.append(&mut small).await {
                    Ok(outcome) => writeln!(stdout, "small {}", outcome.base_offset().unwrap()).unwrap(),
                    Err(err) => writeln!(stdout, "small-error {err}").unwrap(),
                }
                break;
            }
        }
    }
    stdout.flush().unwrap();
}

fn value(batch: u32, record: u32) -> Vec<u8> {
    let mut v = format!("batch {batch} record {record} ").into_bytes();
    v.resize(1000, b'.');
    v
}

#[tokio::test]
async fn a_write_that_fails_part_way_is_cut_back_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // `ulimit -f` caps file size (in KiB for bash): the segment write that crosses it
    // fails with EFBIG, which exercises the same path as a full disk. SIGXFSZ is ignored
    // so the write returns an error instead of killing the process.
    let script = r#"trap '' XFSZ; ulimit -f 200; exec "$0" --exact child_appends_until_the_disk_refuses --nocapture"#;
    let output = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(&exe)
        .env(CHILD_DIR, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let acked: Vec<(i64, u32)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|l| {
            let (offset, batch) = l.split_once(' ').unwrap();
            (offset.parse().unwrap(), batch.parse().unwrap())
        })
        .collect();
    let error = stdout
        .lines()
        .find_map(|l| l.strip_prefix("error "))
        .expect("the limit was hit");
    assert!(acked.len() > 5, "some batches fit before the limit: {stdout}");
    assert!(
        error.contains("00000000000000000000.log") && error.contains("append to segment"),
        "the error names the segment file: {error}"
    );
    let small = stdout
        .lines()
        .find_map(|l| l.strip_prefix("small "))
        .expect("a batch that fits still appends");
    let small_offset: i64 = small.parse().unwrap();
    assert_eq!(
        small_offset,
        acked.len() as i64 * 10,
        "no gap and no partial batch before it"
    );

    // Reopened without the limit: every acknowledged batch is there, intact.
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let partition = Arc::clone(log.topic("full").unwrap().partition(0).unwrap());
    assert_eq!(partition.end_offset(), small_offset + 1);
    let mut offset = 0;
    let mut records = Vec::new();
    while offset < partition.end_offset() {
        let fetch = partition.read(offset, 1 << 20).await.unwrap();
        records.extend(fetch.records().map(Result::unwrap));
        offset = fetch.next_offset();
    }
    for &(base, batch) in &acked {
        for j in 0..10u32 {
            let record = &records[(base + i64::from(j)) as usize];
            assert_eq!(record.value.as_deref(), Some(&value(batch, j)[..]));
        }
    }
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push(1, None, Some(b"after"), &[]);
    assert_eq!(
        partition.append(&mut batch).await.unwrap().base_offset(),
        Some(small_offset + 1)
    );
}

#[tokio::test]
async fn a_data_directory_that_is_a_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Log::open(LogConfig::new(&file)).await.unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test]
async fn damaged_topic_metadata_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    log.create_topic("meta", TopicConfig::default()).await.unwrap();
    log.close().await.unwrap();
    let path = dir.path().join("topics/meta/topic.json");
    std::fs::write(&path, b"{\"name\": \"meta\", \"config\": {\"partitions\": \"three\"}}").unwrap();
    let err = Log::open(LogConfig::new(dir.path())).await.unwrap_err();
    assert!(matches!(err, LogError::BadMetadata { .. }), "{err}");
    assert!(err.to_string().contains("topics/meta/topic.json"), "{err}");
}

#[tokio::test]
async fn a_corrupt_batch_in_a_sealed_segment_is_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let config = TopicConfig {
        segment_bytes: 4096,
        max_batch_bytes: 4096,
        ..TopicConfig::default()
    };
    let partition = Arc::clone(log.create_topic("rot", config).await.unwrap().partition(0).unwrap());
    for i in 0..40 {
        let mut batch = BatchBuilder::new(Compression::None);
        batch.push(i, None, Some(&[b'a' + (i % 26) as u8; 500]), &[]);
        partition.append(&mut batch).await.unwrap();
    }
    assert!(partition.segment_count() >= 3);
    drop(partition);
    log.close().await.unwrap();

    // Flip one bit in the value of the second batch of the first (sealed) segment.
    let segment = dir.path().join("topics/rot/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[first_len + 200] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
    let partition = Arc::clone(log.topic("rot").unwrap().partition(0).unwrap());
    assert_eq!(partition.end_offset(), 40, "sealed data is not truncated away");
    let first = partition.read(0, 1).await.unwrap();
    assert_eq!(first.records().count(), 1, "the batch before the damage reads fine");
    let err = partition.read(1, 1 << 20).await.unwrap_err();
    match &err {
        LogError::Corrupt { path, position, .. } => {
            assert_eq!(path, &segment);
            assert_eq!(*position, first_len as u64);
        }
        other => panic!("expected a corrupt-batch error, got {other}"),
    }
    assert!(err.to_string().contains("00000000000000000000.log"), "{err}");
    // Later segments are unaffected.
    let later = partition.read(30, 1 << 20).await.unwrap();
    assert_eq!(later.records().next().unwrap().unwrap().offset, 30);
}
