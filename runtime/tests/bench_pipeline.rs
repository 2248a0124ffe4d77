#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `plexus bench pipeline` at a small size runs to its end and prints its summary line,
//! with the sink having read every generated event. Not a timed test: the rates are not
//! judged.

use std::process::Command;
use std::time::Duration;

mod common;

#[test]
fn small_pipeline_bench_reads_every_event_and_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(common::BIN);
    command
        .args(["bench", "pipeline", "--records", "20000", "--dir"])
        .arg(dir.path().join("bench"))
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr, _) = common::run_bounded(&mut command, "the benchmark", Duration::from_secs(180));
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let figures = common::summary_figures(last, "pipeline-bench: ");
    let names: Vec<&str> = figures.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["records", "rec_s", "mb_s", "peak_rss_mb"]);
    // 20,000 events, and a tombstone after each delete.
    assert!((20_000.0..25_000.0).contains(&figures[0].1), "{last}");
    assert!(figures[1..].iter().all(|(_, value)| *value > 0.0), "{last}");
    assert!(
        !dir.path().join("bench").join("data").exists(),
        "the log is deleted after the run"
    );
}
