//! `plexus bench postgres-cdc` at a small size runs to its end and prints its summary
//! line with every figure. Not a timed test: the figures themselves are not judged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

const FIELDS: [&str; 8] = [
    "stream_rows_s",
    "recvlogical_rows_s",
    "stream_ratio",
    "p99_ms",
    "snapshot_rows_s",
    "copy_rows_s",
    "snapshot_ratio",
    "peak_rss_mb",
];

#[test]
fn small_cdc_bench_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let bench_dir = dir.path().join("cdc-bench");
    let mut command = Command::new(BIN);
    command
        .args(["bench", "postgres-cdc", "--stream-rows", "20000", "--tx-rows", "500"])
        .args(["--snapshot-rows", "50000", "--latency-seconds", "2", "--rate", "2000"])
        .arg("--dir")
        .arg(&bench_dir)
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr, _) = common::run_bounded(&mut command, "the benchmark", Duration::from_secs(300));
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("cdc-bench: "), "last line: {last}\nstderr:\n{stderr}");
    let figures = common::summary_figures(last, "cdc-bench: ");
    let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, FIELDS, "last line: {last}");
    for (name, value) in figures {
        assert!(value.is_finite() && value > 0.0, "{name} is {value} in: {last}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("cdc-bench latency:") && l.contains("p50_ms=")),
        "a p50 line before the summary:\n{stdout}"
    );
    assert!(!bench_dir.exists(), "the benchmark removes its directory");
}
