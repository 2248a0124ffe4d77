//! What the end-to-end tests of `plexus run` share: reading the log back, running the
//! binary to its end, and the test environment's Python (pyarrow, DuckDB).

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use plexus_log::{Log, LogConfig};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_plexus");

/// Every record of `topic` (partition 0), in log order, values parsed as JSON
/// (tombstones as `None`).
pub async fn records(data: &Path, topic: &str) -> Vec<(String, Option<Value>)> {
    log_records(data, topic)
        .await
        .into_iter()
        .map(|r| {
            (
                String::from_utf8(r.key.unwrap()).unwrap(),
                r.value.map(|v| serde_json::from_slice(&v).unwrap()),
            )
        })
        .collect()
}

/// One record of the log as stored.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl LogRecord {
    /// The value parsed as JSON; `None` for a tombstone.
    pub fn json(&self) -> Option<Value> {
        self.value.as_ref().map(|v| serde_json::from_slice(v).unwrap())
    }

    /// The value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of every partition of `topic`, partition by partition in log order;
/// empty if the topic does not exist.
pub async fn log_records(data: &Path, topic: &str) -> Vec<LogRecord> {
    let log = Log::open(LogConfig::new(data)).await.unwrap();
    let mut out = Vec::new();
    if let Some(topic) = log.topic(topic) {
        for p in topic.partitions() {
            let mut offset = p.start_offset();
            loop {
                let fetch = p.read(offset, 1 << 20).await.unwrap();
                if fetch.is_empty() {
                    break;
                }
                for r in fetch.records() {
                    let r = r.unwrap();
                    out.push(LogRecord {
                        partition: p.id(),
                        offset: r.offset,
                        key: r.key.map(|k| k.to_vec()),
                        value: r.value.map(|v| v.to_vec()),
                        headers: r
                            .headers
                            .into_iter()
                            .map(|h| (h.key, h.value.map(|v| v.to_vec())))
                            .collect(),
                    });
                }
                offset = fetch.next_offset();
            }
        }
    }
    log.close().await.unwrap();
    out
}

/// What a finished `plexus run` left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `plexus run --exit-when-done` on `config` (REST off) and waits for it to exit
/// on its own; kills it and fails if it takes longer than `timeout`.
pub fn run_until_done(config: &Path, timeout: Duration) -> Finished {
    let mut command = Command::new(BIN);
    command
        .args(["run", "--exit-when-done", "--rest-listen", "off"])
        .arg(config)
        .env("RUST_LOG", "info");
    let (status, _, stderr, elapsed) = run_bounded(&mut command, "`plexus run --exit-when-done`", timeout);
    Finished {
        status,
        stderr,
        elapsed,
    }
}

/// Runs `command` to its end, its standard output and error captured, and returns its
/// status, both outputs and how long it took; kills it and fails the test (with the
/// end of its standard error) if it takes longer than `timeout`.
pub fn run_bounded(command: &mut Command, what: &str, timeout: Duration) -> (ExitStatus, String, String, Duration) {
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().unwrap();
            child.wait().unwrap();
            let stderr = err.join().unwrap();
            panic!(
                "{what} did not finish within {timeout:?}; the end of its log:\n{}",
                tail(&stderr, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap(), started.elapsed())
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `script` with the test environment's Python (pyarrow, DuckDB) and `args`;
/// returns its standard output, failing the test with its output if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let python = plexus_tests::python::python().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(&path, script).unwrap();
    let output = Command::new(python).arg(&path).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The figures of a benchmark's summary line, `PREFIX: name=value ...`, in order; a
/// value that is not a number reads as NaN (the tests then assert every figure is
/// finite). Fails the test when the line does not start with `prefix`.
pub fn summary_figures<'a>(line: &'a str, prefix: &str) -> Vec<(&'a str, f64)> {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("the last line does not start with `{prefix}`: {line}"))
        .split(' ')
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("`{pair}` is not name=value in: {line}"));
            (name, value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}
