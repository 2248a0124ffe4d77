//! `plexus status`, `plexus connectors ...` and `plexus offsets ...` against a real
//! `plexus run` serving its REST API on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

#[test]
fn the_commands_drive_a_running_worker() {
    let worker = Worker::start("");
    let url = worker.url.as_str();
    wait_for_state(url, "shop", "RUNNING");
    wait_for_state(url, "orders-out", "RUNNING");

    // The status table: the worker on top, then one row per connector, sorted.
    let status = plexus(&["status", "--url", url]);
    assert!(status.ok(), "{status}");
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert!(lines[0].starts_with("worker "), "{status}");
    assert!(
        lines[0].contains(&format!("plexus {}", env!("CARGO_PKG_VERSION"))),
        "{status}"
    );
    assert_eq!(
        words(lines[1]),
        ["NAME", "TYPE", "KIND", "STATE", "RESTARTS", "LAST", "ERROR"],
        "{status}"
    );
    assert_eq!(
        words(lines[2]),
        ["orders-out", "discard", "sink", "RUNNING", "0", "-"],
        "{status}"
    );
    assert_eq!(
        words(lines[3]),
        ["shop", "datagen", "source", "RUNNING", "0", "-"],
        "{status}"
    );
    assert_eq!(lines.len(), 4, "{status}");

    // `--json` is the API's JSON.
    let list = plexus(&["connectors", "list", "--url", url, "--json"]);
    assert!(list.ok(), "{list}");
    let json: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let names: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(names, ["orders-out", "shop"], "{list}");
    assert_eq!(json["orders-out"]["status"]["connector"]["state"], "RUNNING", "{list}");
    assert_eq!(
        json["orders-out"]["info"]["config"]["topics"],
        serde_json::json!(["shop.orders"]),
        "{list}"
    );
    assert_eq!(json["shop"]["status"]["type"], "source", "{list}");
    let list = plexus(&["connectors", "list", "--url", url]);
    assert!(list.ok(), "{list}");
    let out_row = row(&list.stdout, "orders-out").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        out_row[..5],
        ["orders-out", "discard", "sink", "shop.orders", "RUNNING"],
        "{list}"
    );
    assert!(out_row[5].starts_with("file:"), "{list}");

    // Pause and resume, with the URL from the environment.
    let pause = plexus_at(url, &["connectors", "pause", "orders-out"]);
    assert!(pause.ok(), "{pause}");
    assert_eq!(pause.stdout.trim(), "paused `orders-out`", "{pause}");
    wait_for_state(url, "orders-out", "PAUSED");
    let resume = plexus_at(url, &["connectors", "resume", "orders-out"]);
    assert_eq!(resume.stdout.trim(), "resumed `orders-out`", "{resume}");
    wait_for_state(url, "orders-out", "RUNNING");

    // Offsets can be read at any time, but changed only while the connector is stopped.
    let running = plexus_at(url, &["offsets", "get", "orders-out", "--json"]);
    assert_eq!(running.code, Some(0), "{running}");
    let refused = plexus_at(url, &["offsets", "reset", "orders-out"]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.starts_with("plexus: "), "{refused}");
    // It says why (the state it is in) and what to do.
    assert!(refused.stderr.contains("RUNNING"), "{refused}");
    assert!(refused.stderr.to_lowercase().contains("stop"), "{refused}");
    assert!(refused.stderr.contains("(HTTP 409)"), "{refused}");
    assert!(refused.stdout.is_empty(), "{refused}");

    // Give the sink time to commit some of what the source writes at 500 events/s.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(worker.started.elapsed()));
    let stop = plexus_at(url, &["connectors", "stop", "orders-out"]);
    assert_eq!(stop.stdout.trim(), "stopped `orders-out`", "{stop}");
    wait_for_state(url, "orders-out", "STOPPED");

    let offsets = plexus_at(url, &["offsets", "get", "orders-out"]);
    assert!(offsets.ok(), "{offsets}");
    let lines: Vec<&str> = offsets.stdout.lines().collect();
    assert_eq!(words(lines[0]), ["TOPIC", "PARTITION", "OFFSET"], "{offsets}");
    let orders = row(&offsets.stdout, "shop.orders").unwrap_or_else(|| panic!("{offsets}"));
    assert_eq!(orders[1], "0", "{offsets}");
    let committed: i64 = orders[2].parse().unwrap();
    assert!(committed > 0, "{offsets}");
    let json = plexus_at(url, &["offsets", "get", "orders-out", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(json["offsets"][0]["partition"]["kafka_topic"], "shop.orders");
    assert_eq!(json["offsets"][0]["offset"]["kafka_offset"], committed);

    let reset = plexus_at(url, &["offsets", "reset", "orders-out"]);
    assert!(reset.ok(), "{reset}");
    assert!(!reset.stdout.trim().is_empty(), "the API's message: {reset}");
    let none = plexus_at(url, &["offsets", "get", "orders-out"]);
    assert!(none.ok(), "{none}");
    assert_eq!(none.stdout.trim(), "`orders-out` has no offsets", "{none}");
    let json = plexus_at(url, &["offsets", "get", "orders-out", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(json["offsets"], serde_json::json!([]), "{json}");

    // A stopped sink resumes.
    let resume = plexus_at(url, &["connectors", "resume", "orders-out"]);
    assert_eq!(resume.stdout.trim(), "resumed `orders-out`", "{resume}");
    wait_for_state(url, "orders-out", "RUNNING");

    // Restarting with its tasks prints the status after the restart.
    let restart = plexus_at(url, &["connectors", "restart", "shop", "--include-tasks"]);
    assert!(restart.ok(), "{restart}");
    let lines: Vec<&str> = restart.stdout.lines().collect();
    assert_eq!(lines[0], "restarted `shop`", "{restart}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("shop: ")), "{restart}");
    wait_for_state(url, "shop", "RUNNING");

    // A source's offset is its own position, shown as JSON.
    let stop = plexus_at(url, &["connectors", "stop", "shop"]);
    assert_eq!(stop.stdout.trim(), "stopped `shop`", "{stop}");
    wait_for_state(url, "shop", "STOPPED");
    let offsets = plexus_at(url, &["offsets", "get", "shop"]);
    assert!(offsets.ok(), "{offsets}");
    let lines: Vec<&str> = offsets.stdout.lines().collect();
    assert_eq!(words(lines[0]), ["PARTITION", "OFFSET"], "{offsets}");
    assert!(lines[1].starts_with(r#"{"connector":"shop"}"#), "{offsets}");
    let json = plexus_at(url, &["offsets", "get", "shop", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json}"));
    let position = &json["offsets"][0]["offset"];
    // datagen's position is one count of events (`{"last_event": N}`).
    let counts: Vec<u64> = position
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(counts.len() == 1 && counts[0] > 0, "{json}");
    assert_eq!(words(lines[1])[1], position.to_string(), "{offsets}");

    // Unknown connectors are named in the error.
    let unknown = plexus_at(url, &["connectors", "pause", "no-such-connector"]);
    assert_eq!(unknown.code, Some(1), "{unknown}");
    assert!(unknown.stderr.contains("not found"), "{unknown}");
    assert!(unknown.stderr.contains("(HTTP 404)"), "{unknown}");
    let unknown = plexus_at(url, &["offsets", "get", "no-such-connector"]);
    assert_eq!(unknown.code, Some(1), "{unknown}");
    assert!(unknown.stderr.contains("not found"), "{unknown}");

    drop(worker);
}

#[test]
fn a_worker_that_is_not_there_is_reported_with_what_to_do() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let expected =
        format!("plexus: cannot reach the plexus worker at {url}: is `plexus run` running? (set --url or PLEXUS_URL)");
    let by_flag = plexus(&["status", "--url", &url]);
    assert_eq!(by_flag.code, Some(1), "{by_flag}");
    assert_eq!(by_flag.stderr.trim(), expected, "{by_flag}");
    let by_env = plexus_at(&url, &["offsets", "get", "x"]);
    assert_eq!(by_env.code, Some(1), "{by_env}");
    assert_eq!(by_env.stderr.trim(), expected, "{by_env}");
}

#[test]
fn a_worker_with_a_token_wants_it() {
    let worker = Worker::start("token = \"s3cret\"");
    let url = worker.url.as_str();
    let without = plexus(&["status", "--url", url]);
    assert_eq!(without.code, Some(1), "{without}");
    assert_eq!(
        without.stderr.trim(),
        "plexus: the worker requires a token: set --token or PLEXUS_TOKEN",
        "{without}"
    );
    let wrong = plexus(&["status", "--url", url, "--token", "guess"]);
    assert_eq!(wrong.code, Some(1), "{wrong}");
    assert!(wrong.stderr.contains("refused the token"), "{wrong}");
    let by_flag = plexus(&["connectors", "list", "--url", url, "--token", "s3cret"]);
    assert!(by_flag.ok(), "{by_flag}");
    assert!(row(&by_flag.stdout, "shop").is_some(), "{by_flag}");
    let mut by_env = Command::new(BIN);
    by_env.args(["status", "--url", url]).env("PLEXUS_TOKEN", "s3cret");
    let out = by_env.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders-out"));
}

#[test]
fn help_documents_the_flags() {
    let help = plexus(&["connectors", "restart", "--help"]);
    assert!(help.ok(), "{help}");
    for expected in [
        "--include-tasks",
        "--only-failed",
        "--url",
        "PLEXUS_URL",
        "--token",
        "--json",
    ] {
        assert!(help.stdout.contains(expected), "{expected} missing: {help}");
    }
    let help = plexus(&["offsets", "reset", "--help"]);
    assert!(help.stdout.contains("--to <JSON>"), "{help}");
}

/// A `plexus run` child with its REST API on a free port, killed when dropped.
struct Worker {
    child: Child,
    url: String,
    started: Instant,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `plexus run` on a datagen source and a discard sink; `rest` is the body of
    /// a `[worker.rest]` table.
    fn start(rest: &str) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shop.toml");
        std::fs::write(
            &config,
            format!(
                "[worker]\ndata_dir = \"{}\"\n\n[worker.rest]\n{rest}\n\n\
                 [[connector]]\nname = \"shop\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\nsettings = {{ rate = 500 }}\n\n\
                 [[connector]]\nname = \"orders-out\"\ntype = \"discard\"\ntopics = [\"shop.orders\"]\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .arg("run")
            .arg(&config)
            .args(["--rest-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (found, url) = mpsc::channel();
        let log = Arc::clone(&stderr);
        // Keeps draining after the URL line, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = rest_url(&line) {
                    let _ = found.send(url);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut worker = Worker {
            child,
            url: String::new(),
            started: Instant::now(),
            stderr,
            _dir: dir,
        };
        match url.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => worker.url = url,
            Err(err) => panic!(
                "no `plexus: REST API at` line ({err}); stderr:\n{}",
                worker.stderr.lock().unwrap()
            ),
        }
        worker
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URL in `plexus: REST API at http://127.0.0.1:PORT`, whether printed plainly or logged.
fn rest_url(line: &str) -> Option<String> {
    let rest = &line[line.find("REST API at ")? + "REST API at ".len()..];
    let url: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '`' | '\x1b'))
        .collect();
    url.starts_with("http://").then_some(url)
}

/// One run of the `plexus` command.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `plexus ARGS` with no PLEXUS_URL or PLEXUS_TOKEN in its environment.
fn plexus(args: &[&str]) -> Run {
    run(Command::new(BIN).args(args).env_remove("PLEXUS_URL"))
}

/// `plexus ARGS` with `PLEXUS_URL=url`.
fn plexus_at(url: &str, args: &[&str]) -> Run {
    run(Command::new(BIN).args(args).env("PLEXUS_URL", url))
}

fn run(command: &mut Command) -> Run {
    let out = command
        .env_remove("PLEXUS_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `plexus status` until `name`'s STATE column reads `state` (at most 30 s).
fn wait_for_state(url: &str, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = plexus(&["status", "--url", url]);
        if row(&status.stdout, name).is_some_and(|r| r.get(3).is_some_and(|s| s == state)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{name}` did not reach {state} within 30 s: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The words of the table row whose first column is `first`.
fn row(table: &str, first: &str) -> Option<Vec<String>> {
    table.lines().map(words).find(|w| w.first().is_some_and(|f| f == first))
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}
