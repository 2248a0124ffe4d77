//! The product end to end: a PostgreSQL database under pgbench's write load (its four
//! standard tables, plus a table whose TOASTed values are updated around and deleted)
//! captured by `postgres-cdc` and applied by the `sql` sink to a second PostgreSQL, with
//! the worker SIGKILLed at random points, several times, while the load runs. Once the
//! load stops and plexus catches up, every target table equals its source table, row
//! for row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_tests::TempPostgres;
use plexus_tests::postgres::{PASSWORD, USER, VERSION};

/// The tables compared, with their columns (in the source's order) and key.
const TABLES: [(&str, &str, &str); 5] = [
    ("pgbench_accounts", "aid, bid, abalance, filler", "aid"),
    ("pgbench_branches", "bid, bbalance, filler", "bid"),
    ("pgbench_tellers", "tid, bid, tbalance, filler", "tid"),
    ("pgbench_history", "hid, tid, bid, aid, delta, mtime, filler", "hid"),
    ("docs", "id, n, body, note", "id"),
];

/// How long pgbench writes.
const LOAD_SECONDS: u64 = 24;

/// Updates that leave `body` (stored out of line, uncompressed) as it is, so the
/// stream carries it as unchanged; inserts of new and deleted rows; deletes.
const DOCS_SCRIPT: &str = r"\set id random(1, 400)
\set r random(1, 10)
\if :r = 1
DELETE FROM docs WHERE id = :id;
\elif :r = 2
INSERT INTO docs VALUES (:id, 0, repeat(md5((:id * 7)::text), 100), 'i') ON CONFLICT (id) DO UPDATE SET body = repeat(md5((docs.n + :id)::text), 100), n = docs.n + 1;
\else
UPDATE docs SET n = n + 1, note = 'u' || :r WHERE id = :id;
\endif
";

fn pgbench() -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{VERSION}/bin/pgbench"))
}

fn pgbench_command(pg: &TempPostgres) -> Command {
    let mut command = Command::new(pgbench());
    command
        .args(["-h", "127.0.0.1", "-U", USER])
        .arg("-p")
        .arg(pg.port().to_string())
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn spawn_worker(config: &Path) -> Child {
    Command::new(common::BIN)
        .arg("run")
        .args(["--rest-listen", "127.0.0.1:0"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One table's rows as text, in key order, each column through its type's output.
fn rows(pg: &TempPostgres, table: &str, columns: &str, key: &str) -> Vec<String> {
    let list = columns
        .split(", ")
        .map(|c| format!("coalesce({c}::text, 'NULL')"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT concat_ws('|', {list}) FROM {table} ORDER BY {key}");
    match pg.psql("postgres", &sql) {
        Ok(text) if text.is_empty() => Vec::new(),
        Ok(text) => text.lines().map(str::to_owned).collect(),
        // The sink has not created the table yet.
        Err(_) => Vec::new(),
    }
}

/// The first difference between two tables, for the failure message.
fn difference(source: &[String], target: &[String]) -> String {
    let first = source
        .iter()
        .zip(target)
        .position(|(s, t)| s != t)
        .unwrap_or(source.len().min(target.len()));
    let at = |rows: &[String]| {
        rows.get(first)
            .map_or("<none>".to_owned(), |r| r.chars().take(120).collect())
    };
    format!(
        "{} source rows, {} target rows; first difference at row {first}: source `{}`, target `{}`",
        source.len(),
        target.len(),
        at(source),
        at(target)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_stays_equal_to_its_source_across_kills_under_pgbench() {
    let source = TempPostgres::start().unwrap();
    let target = TempPostgres::start().unwrap();
    let init = pgbench_command(&source)
        .args(["-i", "-s", "1", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    source
        .psql(
            "postgres",
            "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY;
             CREATE TABLE docs (id int PRIMARY KEY, n int NOT NULL, body text NOT NULL, note text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 100), 'n' FROM generate_series(1, 300) g;",
        )
        .unwrap();
    let toasted = source
        .psql(
            "postgres",
            "SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE relname = 'docs'",
        )
        .unwrap();
    assert_eq!(toasted, "t", "docs.body is stored out of line");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let script = dir.path().join("docs.sql");
    std::fs::write(&script, DOCS_SCRIPT).unwrap();
    let tables = TABLES
        .iter()
        .map(|(t, _, _)| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let topics = TABLES
        .iter()
        .map(|(t, _, _)| format!("\"pg.public.{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"[worker]
data_dir = "{data}"

[[connector]]
name = "pg"
type = "postgres-cdc"
topic = "pg.{{table}}"
[connector.settings]
port = {source_port}
user = "{USER}"
password = "{PASSWORD}"
database = "postgres"
sslmode = "disable"
tables = [{tables}]
snapshot_chunk_rows = 20000

[[connector]]
name = "warehouse"
type = "sql"
topics = [{topics}]
[connector.settings]
url = "postgres://{USER}@127.0.0.1:{target_port}/postgres"
password = "{PASSWORD}"
"#,
            data = data.display(),
            source_port = source.port(),
            target_port = target.port(),
        ),
    )
    .unwrap();

    // The load: pgbench's TPC-B-like transactions on two connections, the docs script
    // on a third.
    let seconds = LOAD_SECONDS.to_string();
    let mut tpcb = pgbench_command(&source)
        .args(["-n", "-c", "2", "-j", "1", "-T", &seconds, "postgres"])
        .spawn()
        .unwrap();
    let mut docs = pgbench_command(&source)
        .args(["-n", "-c", "1", "-T", &seconds, "-f"])
        .arg(&script)
        .arg("postgres")
        .spawn()
        .unwrap();

    // The worker, killed at random points while the load runs.
    let started = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(LOAD_SECONDS) {
        let mut worker = spawn_worker(&config);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(1_500 + seed % 3_000)).await;
        worker.kill().unwrap();
        worker.wait().unwrap();
        kills += 1;
    }
    for (name, load) in [("tpcb-like", &mut tpcb), ("docs", &mut docs)] {
        let (status, stderr) = finish(load);
        assert!(status.success(), "pgbench {name} failed: {stderr}");
    }
    assert!(kills >= 5, "the worker was killed {kills} times");
    let committed = source.psql("postgres", "SELECT count(*) FROM pgbench_history").unwrap();
    assert!(
        committed.parse::<u64>().unwrap() > 1_000,
        "the load committed {committed} transactions"
    );

    // Catching up: the worker runs until every table is equal, then stops gracefully.
    let expected: Vec<Vec<String>> = TABLES
        .iter()
        .map(|(table, columns, key)| rows(&source, table, columns, key))
        .collect();
    assert!(
        expected[4].iter().any(|row| row.contains("|u")),
        "docs rows were updated"
    );
    let mut worker = spawn_worker(&config);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let unequal: Vec<String> = TABLES
            .iter()
            .zip(&expected)
            .filter_map(|((table, columns, key), expected)| {
                let actual = rows(&target, table, columns, key);
                (actual != *expected).then(|| format!("{table}: {}", difference(expected, &actual)))
            })
            .collect();
        if unequal.is_empty() {
            break;
        }
        if let Some(status) = worker.try_wait().unwrap() {
            panic!("the worker exited with {status} before catching up; unequal: {unequal:#?}");
        }
        if Instant::now() > deadline {
            worker.kill().unwrap();
            panic!("the target is not equal to the source after catching up: {unequal:#?}");
        }
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success(), "a graceful stop exits 0");
}

/// Waits for a child whose stderr is piped: its status and what it wrote there.
fn finish(child: &mut Child) -> (std::process::ExitStatus, String) {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    (child.wait().unwrap(), stderr)
}
