#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `plexus run` with a `parquet` sink, end to end: a bulk export of datagen's tables that
//! exits on its own, read back with pyarrow and DuckDB, to a local directory and to
//! SeaweedFS; SIGKILLs at random points followed by a final run, after which the
//! objects hold every record exactly once; wrong credentials and a missing bucket; and
//! records without a schema.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, LogRecord, log_records, python, run_until_done, tail};
use plexus_tests::seaweed::SeaweedFs;
use serde_json::{Value, json};

const READ_BACK: &str = include_str!("parquet_export/read_back.py");

const TABLES: [&str; 3] = ["orders", "customers", "products"];

/// Where a sink writes.
enum Target<'a> {
    Local(PathBuf),
    S3 {
        server: &'a SeaweedFs,
        bucket: &'a str,
        prefix: String,
    },
}

impl Target<'_> {
    /// The same store, under `sub`.
    fn under(&self, sub: &str) -> Self {
        match self {
            Target::Local(dir) => Target::Local(dir.join(sub)),
            Target::S3 { server, bucket, prefix } => Target::S3 {
                server,
                bucket,
                prefix: format!("{prefix}/{sub}"),
            },
        }
    }

    /// The store's lines of `[connector.settings]`.
    fn settings(&self) -> String {
        match self {
            Target::Local(dir) => format!("url = \"file://{}\"\n", dir.display()),
            Target::S3 { server, bucket, prefix } => format!(
                "url = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\n\
                 secret_access_key = \"{}\"\n",
                server.endpoint(),
                server.access_key_id(),
                server.secret_access_key()
            ),
        }
    }

    /// What `read_back.py` needs to find the files.
    fn spec(&self) -> Value {
        match self {
            Target::Local(dir) => json!({ "kind": "local", "root": dir }),
            Target::S3 { server, bucket, prefix } => json!({
                "kind": "s3",
                "endpoint": server.endpoint().trim_start_matches("http://"),
                "access_key": server.access_key_id(),
                "secret_key": server.secret_access_key(),
                "bucket": bucket,
                "prefix": prefix,
            }),
        }
    }

    /// Multipart uploads started and never completed nor aborted.
    fn uploads_left(&self) -> Vec<String> {
        match self {
            Target::Local(dir) => match std::fs::read_dir(dir.join(".uploads")) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("{e}"),
            },
            Target::S3 { server, bucket, .. } => uploads_in_filer(server, bucket),
        }
    }
}

/// The uploads SeaweedFS keeps for a bucket, listed by its filer (which holds each
/// unfinished multipart upload as a directory under `/buckets/<bucket>/.uploads/`).
fn uploads_in_filer(server: &SeaweedFs, bucket: &str) -> Vec<String> {
    let url = format!("{}/buckets/{bucket}/.uploads/", server.filer_endpoint());
    let out = python(
        r#"
import json, sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1], headers={"Accept": "application/json"})
try:
    entries = json.loads(urllib.request.urlopen(request).read()).get("Entries") or []
except urllib.error.HTTPError as e:
    if e.code != 404:
        raise
    entries = []
print(json.dumps([e["FullPath"] for e in entries]))
"#,
        &[&url],
    );
    serde_json::from_str(&out).unwrap()
}

/// A datagen source of `count` events (`rate` a second, 0 for as fast as it goes) over
/// the three tables into `shop.<table>`, and `parquet` sinks of the three topics:
/// `(name, where, settings besides the store's)`.
fn pipeline(data: &Path, count: u64, rate: u64, sinks: &[(&str, &Target<'_>, &str)]) -> String {
    let mut text = format!(
        "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"shop\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\n\
         [connector.settings]\nseed = 11\ncount = {count}\nrate = {rate}\n",
        data.display()
    );
    for (name, target, settings) in sinks {
        text.push_str(&format!(
            "\n[[connector]]\nname = \"{name}\"\ntype = \"parquet\"\n\
             topics = [\"shop.orders\", \"shop.customers\", \"shop.products\"]\n[connector.settings]\n{}{settings}",
            target.settings()
        ));
    }
    text
}

/// What `read_back.py` found.
struct ReadBack {
    json: Value,
}

impl ReadBack {
    fn topic(&self, topic: &str) -> &Value {
        let t = &self.json["topics"][topic];
        assert!(t.is_object(), "no files of `{topic}`: {}", self.json["topics"]);
        t
    }

    /// Every `(partition, offset)` in the files of `topic`, and how often.
    fn landed(&self, topic: &str) -> BTreeMap<(u32, i64), usize> {
        let mut out = BTreeMap::new();
        for pair in self.topic(topic)["offsets"].as_array().unwrap() {
            let key = (pair[0].as_u64().unwrap() as u32, pair[1].as_i64().unwrap());
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }
}

fn read_back(target: &Target<'_>, sample: &BTreeMap<String, Vec<i64>>, duckdb: bool) -> ReadBack {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    let mut spec = target.spec();
    spec["sample"] = json!(sample);
    spec["duckdb"] = json!(duckdb);
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = dir.path().join("read_back.py");
    std::fs::write(&script, READ_BACK).unwrap();
    let python = plexus_tests::python::python().unwrap();
    let output = Command::new(python).arg(&script).arg(&spec_path).output().unwrap();
    assert!(
        output.status.success(),
        "read_back.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ReadBack {
        json: serde_json::from_slice(&output.stdout).unwrap(),
    }
}

/// The change events of a topic (records with a value), by offset.
struct Events {
    records: Vec<LogRecord>,
}

impl Events {
    async fn of(data: &Path, topic: &str) -> Events {
        let records = log_records(data, topic).await;
        Events {
            records: records.into_iter().filter(|r| r.value.is_some()).collect(),
        }
    }

    fn positions(&self) -> Vec<(u32, i64)> {
        self.records.iter().map(|r| (r.partition, r.offset)).collect()
    }

    /// The row a flattened event lands as: `after`, or `before` for a delete.
    fn row(value: &Value) -> &Value {
        if value["op"] == "d" {
            &value["before"]
        } else {
            &value["after"]
        }
    }

    /// Offsets worth comparing: the first events, some of each op, the last.
    fn sample(&self) -> Vec<i64> {
        let mut out = BTreeSet::new();
        for r in self.records.iter().take(3) {
            out.insert(r.offset);
        }
        for op in ["c", "u", "d"] {
            for r in self
                .records
                .iter()
                .filter(|r| r.json().unwrap()["op"] == op)
                .step_by(997)
                .take(3)
            {
                out.insert(r.offset);
            }
        }
        out.insert(self.records.last().unwrap().offset);
        out.into_iter().collect()
    }

    /// The sum of a decimal column over every landed row, from the log's JSON text.
    fn decimal_sum(&self, column: &str) -> String {
        let mut cents: i128 = 0;
        for r in &self.records {
            let value = r.json().unwrap();
            let Some(text) = Events::row(&value)[column].as_str() else {
                continue;
            };
            let (units, fraction) = text.split_once('.').unwrap();
            assert_eq!(fraction.len(), 2, "{column} = {text}");
            cents += units.parse::<i128>().unwrap() * 100 + fraction.parse::<i128>().unwrap();
        }
        format!("{}.{:02}", cents / 100, cents % 100)
    }
}

/// Checks every table's files against the log: rows, positions exactly once, sampled
/// values, types, and (with DuckDB) counts and decimal sums.
async fn check_export(data: &Path, target: &Target<'_>, duckdb: bool) {
    let mut events = BTreeMap::new();
    let mut sample = BTreeMap::new();
    for table in TABLES {
        let topic = format!("shop.{table}");
        let e = Events::of(data, &topic).await;
        assert!(e.records.len() > 1000, "{topic}: {} events", e.records.len());
        sample.insert(topic.clone(), e.sample());
        events.insert(topic, e);
    }
    let back = read_back(target, &sample, duckdb);
    for (topic, e) in &events {
        let t = back.topic(topic);
        assert_eq!(
            t["rows"].as_u64().unwrap() as usize,
            e.records.len(),
            "{topic}: rows = change events in the log minus tombstones"
        );
        let landed = back.landed(topic);
        let doubled: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).take(10).collect();
        assert!(doubled.is_empty(), "{topic}: landed more than once: {doubled:?}");
        let got: Vec<(u32, i64)> = landed.keys().copied().collect();
        assert_eq!(got, e.positions(), "{topic}: every (partition, offset) once");
        assert!(t.get("other_types").is_none(), "{topic}: files of other schemas: {t}");

        let types = &t["types"];
        assert_eq!(types["__ts_ms"], "timestamp[us, tz=UTC]", "{topic}: {types}");
        assert_eq!(types["__op"], "string", "{topic}: {types}");
        assert_eq!(types["__offset"], "int64", "{topic}: {types}");
        assert_eq!(types["id"], "int64", "{topic}: {types}");
        match topic.as_str() {
            "shop.orders" => {
                assert_eq!(types["unit_price"], "decimal128(10, 2)", "{types}");
                assert_eq!(types["created_at"], "timestamp[us, tz=UTC]", "{types}");
            }
            "shop.products" => assert_eq!(types["price"], "decimal128(10, 2)", "{types}"),
            _ => assert_eq!(types["created_at"], "timestamp[us, tz=UTC]", "{types}"),
        }

        // Sampled rows equal the log's JSON: every column, decimals and timestamps as text.
        let by_offset: BTreeMap<i64, &LogRecord> = e.records.iter().map(|r| (r.offset, r)).collect();
        for offset in &sample[topic] {
            let value = by_offset[offset].json().unwrap();
            let row = &t["sample"][offset.to_string()];
            assert!(row.is_object(), "{topic}@{offset} not sampled: {}", t["sample"]);
            for (column, expected) in Events::row(&value).as_object().unwrap() {
                assert_eq!(
                    &row[column], expected,
                    "{topic}@{offset} column {column}: {row} vs {value}"
                );
            }
            assert_eq!(row["__op"], value["op"], "{topic}@{offset}");
            assert_eq!(row["__ts_ms_epoch"], value["ts_ms"], "{topic}@{offset}");
            assert_eq!(row["__offset"], json!(offset), "{topic}@{offset}");
        }

        if duckdb {
            let d = &back.json["duckdb"][topic];
            assert_eq!(d["count"].as_u64().unwrap() as usize, e.records.len(), "{topic}: {d}");
            let decimal = match topic.as_str() {
                "shop.orders" => Some("unit_price"),
                "shop.products" => Some("price"),
                _ => None,
            };
            if let Some(column) = decimal {
                assert_eq!(d["sums"][column], json!(e.decimal_sum(column)), "{topic}: {d}");
                assert_eq!(d["types"][column], "DECIMAL(10,2)", "{topic}: {d}");
            }
            assert_eq!(d["types"]["__ts_ms"], "TIMESTAMP WITH TIME ZONE", "{topic}: {d}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_to_a_local_directory_exits_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let target = Target::Local(dir.path().join("lake"));
    let config = dir.path().join("export.toml");
    std::fs::write(&config, pipeline(&data, 200_000, 0, &[("lake", &target, "")])).unwrap();

    let run = run_until_done(&config, Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.status, tail(&run.stderr, 30));
    eprintln!("exported in {:?}", run.elapsed);
    assert!(target.uploads_left().is_empty(), "{:?}", target.uploads_left());
    check_export(&data, &target, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_to_seaweedfs_exits_and_reads_back() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let target = Target::S3 {
        server: &server,
        bucket: "lake",
        prefix: "exports/shop".to_owned(),
    };
    let config = dir.path().join("export.toml");
    std::fs::write(&config, pipeline(&data, 100_000, 0, &[("lake", &target, "")])).unwrap();

    let run = run_until_done(&config, Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.status, tail(&run.stderr, 30));
    eprintln!("exported in {:?}", run.elapsed);
    assert!(target.uploads_left().is_empty(), "{:?}", target.uploads_left());
    check_export(&data, &target, true).await;
}

/// A small xorshift generator: the kill points of a run follow from its printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("PLEXUS_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("kill points from seed {seed} (set PLEXUS_KILL_SEED={seed} to repeat them)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sink settings that finish many small units of several files each: every 1500
/// records of a partition, split by op and by minute of the record time.
const SMALL_UNITS: &str =
    "rotate_records = 1500\npartition_by = [\"__op\"]\ntime_partition = \"dt=%Y-%m-%d/hr=%H/min=%M\"\n";

/// Sink settings that make files of several 5 MiB parts: large uncompressed units of
/// the whole envelope, written out in small row groups so parts upload as they fill.
const MULTIPART: &str = "envelope = \"whole\"\ncompression = \"none\"\nrow_group_rows = 2000\n\
                         rotate_records = 120000\npart_size = \"5MiB\"\n";

/// Runs the pipeline (a sink of small units, `small`, and one of multipart files,
/// `big`), kills it with SIGKILL `kills` times, restarting it each time on the same log
/// and store, then lets a last run finish: every record must be in the objects of each
/// sink exactly once, and no upload may be left. The kills come at random points, but
/// the first waits for a multipart upload to be open, so that one is interrupted.
async fn kill_and_restart(target: &Target<'_>, count: u64, rate: u64, kills: usize) {
    let mut rng = Rng::seeded();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("export.toml");
    let (small, big) = (target.under("small"), target.under("big"));
    std::fs::write(
        &config,
        pipeline(
            &data,
            count,
            rate,
            &[("small", &small, SMALL_UNITS), ("big", &big, MULTIPART)],
        ),
    )
    .unwrap();
    let started = Instant::now();
    let stderr = dir.path().join("stderr.log");
    for round in 0..kills {
        let mut child = Command::new(BIN)
            .args(["run", "--rest-listen", "off"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let run_started = Instant::now();
        // The first kill waits for a multipart upload to be open (later runs may have no
        // large unit left to write); the others come at random points.
        let first = round == 0;
        if first {
            while big.uploads_left().is_empty() {
                let exited = child.try_wait().unwrap();
                assert!(
                    exited.is_none() && run_started.elapsed() < Duration::from_secs(30),
                    "no multipart upload was started within {:?} ({exited:?}); objects: {:?}; the worker said:\n{}",
                    run_started.elapsed(),
                    read_back(&big, &BTreeMap::new(), false).json["topics"]
                        .as_object()
                        .map(|t| t
                            .iter()
                            .map(|(k, v)| (k.clone(), v["files"].clone()))
                            .collect::<Vec<_>>()),
                    tail(&std::fs::read_to_string(&stderr).unwrap(), 30)
                );
                // Listing S3 uploads starts a Python: not too often on 2 cores.
                let poll = if matches!(big, Target::Local(_)) { 20 } else { 250 };
                tokio::time::sleep(Duration::from_millis(poll)).await;
            }
        }
        // An upload may be open for a fraction of a second only (a restart catches up fast).
        tokio::time::sleep(Duration::from_millis(if first {
            rng.below(20)
        } else {
            400 + rng.below(2200)
        }))
        .await;
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "round {round}: the worker exited before its kill: {exited:?}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let left = big.uploads_left();
        eprintln!(
            "round {round}: killed after {:?}, {} multipart upload(s) open",
            run_started.elapsed(),
            left.len()
        );
        if first {
            assert!(!left.is_empty(), "the upload the kill interrupted is still there");
        }
    }
    let run = run_until_done(&config, Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.status, tail(&run.stderr, 30));
    eprintln!("final run took {:?}; {:?} in all", run.elapsed, started.elapsed());
    let mut events = BTreeMap::new();
    for table in TABLES {
        let topic = format!("shop.{table}");
        let e = Events::of(&data, &topic).await;
        events.insert(topic, e.positions());
    }
    for (name, target) in [("small", &small), ("big", &big)] {
        let back = read_back(target, &BTreeMap::new(), false);
        let mut files = 0;
        for (topic, expected) in &events {
            let landed = back.landed(topic);
            let doubled: Vec<_> = landed.iter().filter(|(_, n)| **n > 1).take(10).collect();
            assert!(
                doubled.is_empty(),
                "{name}, {topic}: landed more than once: {doubled:?}"
            );
            let missing: Vec<_> = expected.iter().filter(|p| !landed.contains_key(p)).take(10).collect();
            assert!(missing.is_empty(), "{name}, {topic}: never landed: {missing:?}");
            let got: Vec<(u32, i64)> = landed.keys().copied().collect();
            assert_eq!(
                &got, expected,
                "{name}, {topic}: every (partition, offset) exactly once"
            );
            files += back.topic(topic)["files"].as_array().unwrap().len();
        }
        eprintln!("{name}: {files} files");
        if name == "small" {
            // Units of 1500 records of several files each.
            let units = count as usize / 1500;
            assert!(files > units * 3 / 2, "{name}: only {files} files");
        }
    }
    for (name, t) in [("small", &small), ("big", &big)] {
        let left = t.uploads_left();
        let notable: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("bort"))
            .collect();
        assert!(
            left.is_empty(),
            "{name}: uploads left behind: {left:?}; what the final run said about them:\n{}",
            notable.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_every_record_once_in_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Local(dir.path().join("lake"));
    kill_and_restart(&target, 240_000, 30_000, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_then_every_record_once_in_seaweedfs() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket("lake").unwrap();
    let target = Target::S3 {
        server: &server,
        bucket: "lake",
        prefix: "killed".to_owned(),
    };
    kill_and_restart(&target, 200_000, 30_000, 3).await;
}

/// Runs a pipeline whose sink cannot start; returns its stderr.
fn failing_export(target_settings: &str) -> (String, common::Finished) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"shop\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\n\
             [connector.settings]\ncount = 500\n\n[[connector]]\nname = \"lake\"\ntype = \"parquet\"\n\
             topics = [\"shop.orders\"]\n[connector.settings]\n{target_settings}",
            data.display()
        ),
    )
    .unwrap();
    let run = run_until_done(&config, Duration::from_secs(60));
    let failed = run
        .stderr
        .split_once("failed connectors:")
        .map(|(_, rest)| rest.trim().to_owned())
        .unwrap_or_default();
    (failed, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_the_sink_naming_the_key_not_the_secret() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket("lake").unwrap();
    let wrong = "wrong0secret0d1e2a3d4b5e6e7f8";
    let (failed, run) = failing_export(&format!(
        "url = \"s3://lake/x\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{wrong}\"\n",
        server.endpoint(),
        server.access_key_id()
    ));
    eprintln!("{failed}");
    assert!(!run.status.success(), "exits non-zero: {}", tail(&run.stderr, 20));
    assert!(
        failed.starts_with("lake: "),
        "the sink is reported failed: {}",
        tail(&run.stderr, 20)
    );
    assert!(failed.contains(server.access_key_id()), "{failed}");
    assert!(failed.contains("secret_access_key"), "{failed}");
    assert!(!run.stderr.contains(wrong), "the secret is printed:\n{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_the_sink_naming_the_bucket() {
    let server = SeaweedFs::start().unwrap();
    let (failed, run) = failing_export(&format!(
        "url = \"s3://no-such-lake/x\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        server.endpoint(),
        server.access_key_id(),
        server.secret_access_key()
    ));
    eprintln!("{failed}");
    assert!(!run.status.success(), "exits non-zero: {}", tail(&run.stderr, 20));
    assert!(
        failed.starts_with("lake: "),
        "the sink is reported failed: {}",
        tail(&run.stderr, 20)
    );
    assert!(failed.contains("no-such-lake"), "{failed}");
    assert!(
        !run.stderr.contains(server.secret_access_key()),
        "the secret is printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_a_schema_are_dead_letters_unless_columns_are_declared() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Plain JSON lines, as `plexus produce` appends them: no schema header; one that is
    // not JSON at all.
    let mut lines: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"id":{i},"name":"item {i}","price":"{}.{:02}"}}"#, i * 3, i % 100))
        .collect();
    lines.insert(17, "not json at all".to_owned());
    let mut produce = Command::new(BIN)
        .args(["produce", "plain", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let produced = produce.wait_with_output().unwrap();
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let strict = dir.path().join("strict");
    let declared = dir.path().join("declared");
    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n\n\
             [[connector]]\nname = \"strict\"\ntype = \"parquet\"\ntopics = [\"plain\"]\n\
             [connector.settings]\nurl = \"file://{}\"\nenvelope = \"none\"\n\
             [connector.errors]\ntolerance = \"dead-letter\"\n\n\
             [[connector]]\nname = \"declared\"\ntype = \"parquet\"\ntopics = [\"plain\"]\n\
             [connector.settings]\nurl = \"file://{}\"\nenvelope = \"none\"\n\
             columns = [\"id: Int64\", \"name: Utf8\", \"price: Decimal128(10, 2)\"]\n\
             [connector.errors]\ntolerance = \"dead-letter\"\n",
            data.display(),
            strict.display(),
            declared.display()
        ),
    )
    .unwrap();
    let run = run_until_done(&config, Duration::from_secs(60));
    assert!(run.status.success(), "{}\n{}", run.status, tail(&run.stderr, 30));

    // Without `columns`: nothing exported, every record a dead letter with the reason.
    let letters = log_records(&data, "dlq.strict").await;
    assert_eq!(letters.len(), lines.len(), "every record is a dead letter");
    for (i, letter) in letters.iter().enumerate() {
        assert_eq!(
            letter.value.as_deref(),
            Some(lines[i].as_bytes()),
            "the payload is kept"
        );
        assert_eq!(letter.header("plexus.dlq.origin").unwrap(), format!("plain/0@{i}"));
        let reason = letter.header("plexus.dlq.reason").unwrap();
        assert!(
            reason.contains("no `plexus.schema` header") && reason.contains("columns"),
            "{reason}"
        );
    }
    let strict_back = read_back(&Target::Local(strict), &BTreeMap::new(), false);
    assert_eq!(strict_back.json["topics"], json!({}), "nothing exported");

    // With `columns`: every JSON line exported, the other one a dead letter.
    let letters = log_records(&data, "dlq.declared").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].value.as_deref(), Some(&b"not json at all"[..]));
    assert_eq!(letters[0].header("plexus.dlq.origin").unwrap(), "plain/0@17");
    eprintln!("reason: {}", letters[0].header("plexus.dlq.reason").unwrap());
    let offsets: Vec<i64> = (0..lines.len() as i64).filter(|&o| o != 17).collect();
    let back = read_back(
        &Target::Local(declared),
        &BTreeMap::from([("plain".to_owned(), offsets.clone())]),
        true,
    );
    let t = back.topic("plain");
    assert_eq!(t["rows"], 40);
    assert_eq!(t["types"]["price"], "decimal128(10, 2)", "{t}");
    for offset in offsets {
        let line = &lines[offset as usize];
        let expected: Value = serde_json::from_str(line).unwrap();
        let row = &t["sample"][offset.to_string()];
        for column in ["id", "name", "price"] {
            assert_eq!(row[column], expected[column], "@{offset}: {row} vs {line}");
        }
    }
    let sum: i64 = (0..40).map(|i| i * 300 + i % 100).sum();
    assert_eq!(
        back.json["duckdb"]["plain"]["sums"]["price"],
        json!(format!("{}.{:02}", sum / 100, sum % 100))
    );
}
