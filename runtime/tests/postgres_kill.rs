//! `plexus run` with a `postgres-cdc` source, killed with SIGKILL at random points during
//! the snapshot and the streaming while the test writes: in the end every change is in
//! the log exactly once in commit order, and folding the log by key gives the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_tests::TempPostgres;
use plexus_tests::postgres::{PASSWORD, USER};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

fn spawn(config: &Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .args(["--rest-listen", "127.0.0.1:0"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_lands_exactly_once_across_kills() {
    let pg = TempPostgres::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL, v text);
         INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, 30000) g;",
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
            "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"pg\"\ntype = \"postgres-cdc\"\ntopic = \"pg.{{table}}\"\n\
             [connector.settings]\nport = {}\nuser = \"{USER}\"\npassword_file = \"{}\"\ndatabase = \"postgres\"\n\
             sslmode = \"disable\"\ntables = [\"t\"]\nsnapshot_chunk_rows = 2000\nbatch_size = 300\n",
            data.display(),
            pg.port(),
            password.display()
        ),
    )
    .unwrap();

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_id = 30_001;
    for round in 0..7 {
        let mut child = spawn(&config);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(200 + seed % 900)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        // Inserts, updates of old and new rows, deletes; several transactions.
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO t SELECT g, 0, 'r{round}' FROM generate_series({next_id}, {}) g;
                 UPDATE t SET n = n + 1 WHERE id % 97 = {round};
                 BEGIN; UPDATE t SET n = n + 1, v = 'u{round}' WHERE id BETWEEN {} AND {}; DELETE FROM t WHERE id % 1013 = {round}; COMMIT;",
                next_id + 499,
                next_id - 300,
                next_id + 100
            ),
        )
        .unwrap();
        next_id += 500;
    }

    // Let it catch up, stopping gracefully, until the log folds into the table.
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
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut child = spawn(&config);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success(), "a graceful stop exits 0");
        let log = common::records(&data, "pg.public.t").await;

        // Changes: each exactly once, in commit order.
        let mut last = (0u64, 0u64);
        let mut read_ids = HashSet::new();
        let mut folded: BTreeMap<i64, (i64, String)> = BTreeMap::new();
        for (key, value) in &log {
            let id: i64 = serde_json::from_str::<Value>(key).unwrap()["id"].as_i64().unwrap();
            let Some(value) = value else {
                assert!(!folded.contains_key(&id), "a tombstone follows the delete of {id}");
                continue;
            };
            let op = value["op"].as_str().unwrap();
            if op == "r" {
                assert!(read_ids.insert(id), "row {id} read twice by the snapshot");
            } else {
                let source = &value["source"];
                let at = (source["commit_lsn"].as_u64().unwrap(), source["seq"].as_u64().unwrap());
                assert!(at > last, "change {at:?} after {last:?}: a duplicate or out of order");
                last = at;
            }
            match op {
                "d" => {
                    folded.remove(&id);
                }
                _ => {
                    let after = &value["after"];
                    folded.insert(
                        id,
                        (after["n"].as_i64().unwrap(), after["v"].as_str().unwrap().to_owned()),
                    );
                }
            }
        }
        assert!(
            read_ids.len() >= 30_000 - 30,
            "the snapshot read the table: {}",
            read_ids.len()
        );
        if folded == table {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log does not fold into the table: {} rows versus {}",
            folded.len(),
            table.len()
        );
    }
}
