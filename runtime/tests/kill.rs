//! `plexus run` killed with SIGKILL at random points while a file source tails a
//! growing file: in the end the log holds every input line exactly once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_log::{Log, LogConfig};

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

fn append_lines(path: &Path, from: u64, count: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for n in from..from + count {
        text.push_str(&format!(
            "{{\"n\":{n},\"pad\":\"{}\"}}\n",
            "x".repeat((n % 50) as usize)
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
}

fn spawn(config: &Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .args(["--rest-listen", "127.0.0.1:0"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every `n` in the topic, in log order.
async fn numbers(data: &Path) -> Vec<u64> {
    let log = Log::open(LogConfig::new(data)).await.unwrap();
    let mut out = Vec::new();
    if let Some(topic) = log.topic("lines") {
        let p = topic.partition(0).unwrap();
        let mut offset = 0;
        loop {
            let fetch = p.read(offset, 1 << 20).await.unwrap();
            if fetch.is_empty() {
                break;
            }
            for r in fetch.records() {
                let value = r.unwrap().value.unwrap();
                let text = std::str::from_utf8(&value).unwrap();
                let n = text
                    .strip_prefix("{\"n\":")
                    .and_then(|rest| rest.split(',').next())
                    .unwrap_or_else(|| panic!("unexpected record {text}"));
                out.push(n.parse().unwrap());
            }
            offset = fetch.next_offset();
        }
    }
    log.close().await.unwrap();
    out
}

#[tokio::test]
async fn every_line_lands_exactly_once_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let data = dir.path().join("data");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"tail\"\ntype = \"file-source\"\ntopic = \"lines\"\n[connector.settings]\npath = \"{}\"\npoll_interval = \"50ms\"\nbatch_size = 100\n",
            data.display(),
            input.display()
        ),
    )
    .unwrap();
    let mut written = 0u64;
    append_lines(&input, written, 5_000);
    written += 5_000;

    // Kill at several points, growing the file in between.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..6 {
        let mut child = spawn(&config);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(150 + seed % 600);
        tokio::time::sleep(wait).await;
        child.kill().unwrap();
        child.wait().unwrap();
        append_lines(&input, written, 1_000 + round * 500);
        written += 1_000 + round * 500;
    }

    // Let it catch up, stopping gracefully, until every line is in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut child = spawn(&config);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "graceful stop exits 0: {status}");
        let got = numbers(&data).await;
        // Never a duplicate or a gap, at any point.
        let expected: Vec<u64> = (0..got.len() as u64).collect();
        assert_eq!(got, expected, "lines in order, exactly once");
        if got.len() as u64 == written {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caught up to {} of {written} lines only",
            got.len()
        );
    }
}
