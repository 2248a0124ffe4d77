#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `plexus bench sql` at a small size runs to its end and prints its summary line with
//! every figure, for the events asked. Not a timed test: the figures themselves are not
//! judged (the benchmark itself checks the table holds what the events leave).

use std::process::Command;
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

const FIELDS: [&str; 5] = [
    "events",
    "apply_events_s",
    "copy_rows_s",
    "ratio_vs_copy",
    "peak_rss_mb",
];

#[test]
fn small_sql_bench_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let bench_dir = dir.path().join("sql-bench");
    let mut command = Command::new(BIN);
    command
        .args(["bench", "sql", "--events", "20000", "--keys", "3000", "--dir"])
        .arg(&bench_dir)
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr, _) = common::run_bounded(&mut command, "the benchmark", Duration::from_secs(180));
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}");

    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("sql-bench: "), "last line: {last}\nstderr:\n{stderr}");
    let figures = common::summary_figures(last, "sql-bench: ");
    let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, FIELDS, "last line: {last}");
    for (name, value) in &figures {
        assert!(value.is_finite() && *value > 0.0, "{name} is {value} in: {last}");
    }
    let figure = |name: &str| figures.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(figure("events"), 20_000.0, "{last}");
    let ratio = figure("apply_events_s") / figure("copy_rows_s");
    assert!(
        (ratio - figure("ratio_vs_copy")).abs() <= 0.01 + ratio * 0.01,
        "ratio_vs_copy is not apply_events_s over copy_rows_s: {last}"
    );
    // The bench checked the table against the events; its progress says so.
    assert!(stderr.contains("as the events say"), "{stderr}");
    assert!(!bench_dir.exists(), "the benchmark removes its directory");
}
