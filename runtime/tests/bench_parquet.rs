#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `plexus bench parquet` at a small size runs to its end and prints its summary line
//! with every figure, for the rows asked. Not a timed test: the figures themselves are
//! not judged.

use std::process::Command;
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

const FIELDS: [&str; 7] = [
    "rows",
    "local_rows_s",
    "s3_rows_s",
    "pyarrow_rows_s",
    "duckdb_rows_s",
    "ratio_vs_best",
    "peak_rss_mb",
];

#[test]
fn small_parquet_bench_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let bench_dir = dir.path().join("parquet-bench");
    let mut command = Command::new(BIN);
    command
        .args(["bench", "parquet", "--rows", "30000", "--dir"])
        .arg(&bench_dir)
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr, _) = common::run_bounded(&mut command, "the benchmark", Duration::from_secs(120));
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("parquet-bench: "),
        "last line: {last}\nstderr:\n{stderr}"
    );
    let figures = common::summary_figures(last, "parquet-bench: ");
    let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, FIELDS, "last line: {last}");
    for (name, value) in &figures {
        assert!(value.is_finite() && *value > 0.0, "{name} is {value} in: {last}");
    }
    let figure = |name: &str| figures.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(figure("rows"), 30_000.0, "{last}");
    let best = figure("pyarrow_rows_s").max(figure("duckdb_rows_s"));
    let ratio = figure("local_rows_s") / best;
    assert!(
        (ratio - figure("ratio_vs_best")).abs() <= 0.01 + ratio * 0.01,
        "ratio_vs_best is not local_rows_s over the faster reference: {last}"
    );
    // The bench checked the rows of each export and reference; its progress says so.
    for part in ["local directory:", "SeaweedFS:", "pyarrow:", "duckdb:"] {
        assert!(
            stderr.contains(&format!("parquet-bench: {part}")),
            "no `{part}` line:\n{stderr}"
        );
    }
    assert!(!bench_dir.exists(), "the benchmark removes its directory");
}
