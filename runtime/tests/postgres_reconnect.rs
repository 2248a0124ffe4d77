//! `plexus run` with a `postgres-cdc` source whose replication connection the server
//! terminates, twice in a row, while the test writes: the worker restarts the source with
//! a growing backoff, and in the end the topic holds every change exactly once in commit
//! order, and folding it by key gives the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_tests::postgres::{PASSWORD, USER};
use plexus_tests::{TempPostgres, Writer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");
const APPLICATION: &str = "plexus pg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replication_connection_is_retried_with_backoff_and_nothing_is_lost() {
    let pg = Arc::new(TempPostgres::start().unwrap());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL, v text NOT NULL);
         INSERT INTO t SELECT g, 0, 'snapshot' FROM generate_series(1, 2000) g;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let password = dir.path().join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n[worker.restart]\nmax_attempts = 10\ninitial_backoff = \"300ms\"\n\
             max_backoff = \"20s\"\n\n[[connector]]\nname = \"pg\"\ntype = \"postgres-cdc\"\ntopic = \"pg.{{table}}\"\n\
             [connector.settings]\nport = {}\nuser = \"{USER}\"\npassword_file = \"{}\"\ndatabase = \"postgres\"\n\
             sslmode = \"disable\"\ntables = [\"t\"]\nbatch_size = 100\nstatus_interval = \"1s\"\n",
            data.display(),
            pg.port(),
            password.display()
        ),
    )
    .unwrap();
    let stderr = dir.path().join("stderr.log");
    let mut worker = spawn(&config, &stderr);

    // Streaming starts after the snapshot; once changes made since are acknowledged (the
    // slot is acknowledged behind what the log holds), the log holds the snapshot and a
    // position in the stream.
    let first = walsender(&pg, None, &stderr);
    let writer = Writer::start(Arc::clone(&pg), 2001, |id| {
        format!(
            "BEGIN; INSERT INTO t VALUES ({id}, 0, 'written'); UPDATE t SET n = 1, v = 'updated' WHERE id = {id}; COMMIT;"
        )
    });
    writer.wait_for(10).unwrap();
    wait_until_durable(&pg, &stderr);

    // The walsender is terminated; as soon as the worker has a new one, that is
    // terminated too: two failures in a row.
    terminate(&pg, first);
    let second = walsender(&pg, Some(first), &stderr);
    terminate(&pg, second);
    let third = walsender(&pg, Some(second), &stderr);
    assert_ne!(third, first);
    // More changes on the third connection.
    writer.wait_for(20).unwrap();
    wait_until_durable(&pg, &stderr);

    let written = writer.stop().unwrap();
    wait_until_durable(&pg, &stderr);
    Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success(), "a graceful stop exits 0");

    // A restart per lost connection (more if the server was slow to release the slot),
    // each after twice the previous one's backoff.
    let restarts: Vec<(u64, u64)> = std::fs::read_to_string(&stderr)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "Connector failed; restarting after a backoff.")
        .map(|line| {
            let fields = &line["fields"];
            let error = fields["error"].as_str().unwrap();
            assert!(error.contains("replication"), "{error}");
            (
                fields["attempt"].as_u64().unwrap(),
                fields["backoff_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(restarts.len() >= 2, "{restarts:?}\n{}", tail(&stderr));
    assert_eq!(restarts[0], (1, 300), "{restarts:?}");
    assert!(
        restarts.windows(2).all(|w| w[1] == (w[0].0 + 1, w[0].1 * 2)),
        "the backoff doubles: {restarts:?}"
    );

    // Every change once, in commit order: each writer transaction's insert, then its
    // update; and the log folds into the table.
    let log = common::records(&data, "pg.public.t").await;
    let mut reads = HashSet::new();
    let mut changes = Vec::new();
    let mut last = (0u64, 0u64);
    let mut folded: BTreeMap<i64, (i64, String)> = BTreeMap::new();
    for (key, value) in &log {
        let id = serde_json::from_str::<Value>(key).unwrap()["id"].as_i64().unwrap();
        let value = value.as_ref().expect("no deletes, no tombstones");
        let op = value["op"].as_str().unwrap();
        if op == "r" {
            assert!(reads.insert(id), "row {id} read twice");
        } else {
            let source = &value["source"];
            let at = (source["commit_lsn"].as_u64().unwrap(), source["seq"].as_u64().unwrap());
            assert!(at > last, "change {at:?} after {last:?}: a duplicate or out of order");
            last = at;
            changes.push((id, op.to_owned()));
        }
        let after = &value["after"];
        folded.insert(
            id,
            (after["n"].as_i64().unwrap(), after["v"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(reads, (1..=2000).collect::<HashSet<i64>>());
    let expected: Vec<(i64, String)> = (2001..=written as i64)
        .flat_map(|id| [(id, "c".to_owned()), (id, "u".to_owned())])
        .collect();
    if changes != expected {
        let diverge = changes
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(changes.len().min(expected.len()));
        panic!(
            "{} changes, {} expected; first difference at {diverge}: {:?} versus {:?}",
            changes.len(),
            expected.len(),
            &changes[diverge.saturating_sub(2)..(diverge + 3).min(changes.len())],
            &expected[diverge.saturating_sub(2)..(diverge + 3).min(expected.len())],
        );
    }
    let table: BTreeMap<i64, (i64, String)> = pg
        .psql("postgres", "SELECT id, n, v FROM t ORDER BY id")
        .unwrap()
        .lines()
        .map(|line| {
            let mut fields = line.split('|');
            let id = fields.next().unwrap().parse().unwrap();
            let n = fields.next().unwrap().parse().unwrap();
            (id, (n, fields.next().unwrap().to_owned()))
        })
        .collect();
    assert!(folded == table, "the log does not fold into the table");
}

fn spawn(config: &Path, stderr: &Path) -> Child {
    Command::new(BIN)
        .args(["--log-format", "json", "run", "--rest-listen", "off"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (60 s at most) until the slot is acknowledged past the server's current WAL
/// position: everything committed before now is in the log.
fn wait_until_durable(pg: &TempPostgres, stderr: &Path) {
    // The insert position, not `pg_current_wal_lsn()` (the write position): with
    // `synchronous_commit = off` the writer's last commit may not be written yet, and a
    // slot confirmed past the write position need not have received it.
    let now = pg.psql("postgres", "SELECT pg_current_wal_insert_lsn()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let durable = pg
            .psql(
                "postgres",
                &format!("SELECT coalesce(bool_or(confirmed_flush_lsn >= '{now}'), false) FROM pg_replication_slots"),
            )
            .unwrap();
        if durable == "t" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the slot is not acknowledged past {now}; the worker's log:\n{}",
            tail(stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the worker's walsender, once it is streaming and not `not`.
fn walsender(pg: &TempPostgres, not: Option<u32>, stderr: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT pid FROM pg_stat_replication WHERE application_name = '{APPLICATION}' \
                     AND state = 'streaming' AND pid <> {}",
                    not.unwrap_or(0)
                ),
            )
            .unwrap();
        if let Ok(pid) = pid.parse() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no new walsender; the worker's log:\n{}",
            tail(stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(pg: &TempPostgres, pid: u32) {
    let done = pg
        .psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    assert_eq!(done, "t");
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
