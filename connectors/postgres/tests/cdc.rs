//! The `postgres-cdc` source against a real PostgreSQL 15: snapshot, then changes, in
//! commit order, with the envelope, keys, schemas and slot acknowledgements checked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Collector, changes, context, count_ops, is_change};
use plexus_config::{Settings, Value};
use plexus_connector::{ConnectorFactory, Poll, Position, SourceRecord};
use plexus_connector_postgres::PostgresCdcFactory;
use plexus_tests::TempPostgres;
use serde_json::Value as Json;

/// The shared settings, with snapshot chunks small enough that a table of a few
/// thousand rows takes several.
fn settings(pg: &TempPostgres, tables: &[&str]) -> Settings {
    let mut settings = common::settings(pg, tables);
    settings.insert("snapshot_chunk_rows", Value::Integer(1000));
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_changes_in_commit_order_and_resume_after_the_log() {
    let pg = TempPostgres::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), doc text);
         ALTER TABLE items ALTER COLUMN doc SET STORAGE EXTERNAL;
         INSERT INTO items SELECT g, 'item ' || g, g * 1.25, NULL FROM generate_series(1, 2500) g;",
    )
    .unwrap();
    let factory = PostgresCdcFactory::new();
    let settings = settings(&pg, &["items"]);
    let ctx = context();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();

    let mut collector = Collector::new(Vec::new());
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "r") >= 2500)
        .await;
    let records = &collector.log;
    let reads = changes(records);
    let ids: Vec<i64> = reads
        .iter()
        .map(|(_, v)| v.as_ref().unwrap()["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=2500).collect::<Vec<_>>(),
        "the snapshot reads every row once, in key order"
    );
    let first = reads[0].1.as_ref().unwrap();
    assert_eq!(reads[0].0.as_deref(), Some("{\"id\":1}"));
    assert_eq!(first["after"]["price"], "1.25");
    assert_eq!(first["source"]["table"], "items");
    assert_eq!(first["source"]["snapshot"], "true");
    let schemas: Vec<_> = records.iter().filter(|r| !is_change(r)).collect();
    assert_eq!(schemas.len(), 1, "the schema is registered once");
    let schema: Json = serde_json::from_slice(schemas[0].value.as_ref().unwrap()).unwrap();
    assert_eq!(schema["columns"][2]["type"], "numeric(12,2)");
    assert_eq!(
        records[1].headers[0].value.as_deref(),
        Some(schema["id"].as_str().unwrap().as_bytes()),
        "records name their schema"
    );

    // Changes after the snapshot, in commit order; a big value updated elsewhere stays
    // out of `after` and is named as unchanged.
    let big: String = (0..400).map(|i| format!("{i:x}-{}", i * 7919 % 1000)).collect();
    pg.psql(
        "postgres",
        &format!(
            "BEGIN; INSERT INTO items VALUES (3001, 'new', 9.99, '{big}'); UPDATE items SET name = 'renamed' WHERE id = 1; \
             DELETE FROM items WHERE id = 2; COMMIT;
             UPDATE items SET price = 1.5 WHERE id = 3001;"
        ),
    )
    .unwrap();
    collector.log.clear();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "u") >= 2)
        .await;
    let events = changes(&collector.log);
    let ops: Vec<String> = events
        .iter()
        .map(|(_, v)| {
            v.as_ref()
                .map_or("tombstone".into(), |v| v["op"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(ops, ["c", "u", "d", "tombstone", "u"]);
    assert_eq!(events[0].1.as_ref().unwrap()["after"]["doc"], big.as_str());
    assert_eq!(events[1].1.as_ref().unwrap()["after"]["name"], "renamed");
    assert_eq!(events[2].1.as_ref().unwrap()["before"]["id"], 2);
    assert_eq!(events[3].0.as_deref(), Some("{\"id\":2}"));
    let toast = events[4].1.as_ref().unwrap();
    assert_eq!(toast["after"]["price"], "1.50");
    assert!(
        toast["after"].get("doc").is_none(),
        "an unchanged TOAST value is not NULL: {toast}"
    );
    assert_eq!(toast["unchanged"], serde_json::json!(["doc"]));
    let (c, u) = (
        &events[0].1.as_ref().unwrap()["source"],
        &events[4].1.as_ref().unwrap()["source"],
    );
    assert_eq!(
        c["txId"],
        events[2].1.as_ref().unwrap()["source"]["txId"],
        "one transaction"
    );
    assert!(u["commit_lsn"].as_u64() > c["commit_lsn"].as_u64());

    // The slot is acknowledged up to what was committed.
    let deadline = Instant::now() + Duration::from_secs(15);
    let wanted = u["commit_lsn"].as_u64().unwrap();
    loop {
        let flushed = pg
            .psql(
                "postgres",
                "SELECT (confirmed_flush_lsn - '0/0')::int8 FROM pg_replication_slots",
            )
            .unwrap();
        if flushed.parse::<u64>().unwrap() > wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot stays at {flushed}, want past {wanted}"
        );
        let _ = source.poll(&ctx).await.unwrap();
    }
    source.stop().await.unwrap();

    // A new instance resumes after the log's position: only what is new arrives.
    pg.psql("postgres", "INSERT INTO items VALUES (4001, 'after restart', 1, NULL)")
        .unwrap();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, collector.last.clone()).await.unwrap();
    collector.log.clear();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "c") >= 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Poll::Batch(batch) = source.poll(&ctx).await.unwrap() {
        collector.log.extend(batch.records);
    }
    let events = changes(&collector.log);
    assert_eq!(events.len(), 1, "nothing replayed: {events:?}");
    assert_eq!(events[0].1.as_ref().unwrap()["after"]["id"], 4001);
    source.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_streams_in_order_through_the_spill() {
    let pg = TempPostgres::start_with(&["logical_decoding_work_mem = '64kB'"]).unwrap();
    pg.psql("postgres", "CREATE TABLE big (id bigint PRIMARY KEY, v text)")
        .unwrap();
    let factory = PostgresCdcFactory::new();
    let mut settings = settings(&pg, &["big"]);
    settings.insert("spill_threshold", Value::Size(plexus_config::ByteSize(1 << 20)));
    settings.insert("batch_size", Value::Integer(10_000));
    let ctx = context();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collector = Collector::new(Vec::new());
    // An empty snapshot; then one transaction of 100,000 rows and a rolled-back savepoint.
    pg.psql(
        "postgres",
        "BEGIN; INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 50000) g;
         SAVEPOINT s; INSERT INTO big SELECT g, 'gone' FROM generate_series(900001, 910000) g; ROLLBACK TO SAVEPOINT s;
         INSERT INTO big SELECT g, 'y' FROM generate_series(50001, 100000) g; COMMIT;",
    )
    .unwrap();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "c") >= 100_000)
        .await;
    let ids: Vec<i64> = changes(&collector.log)
        .iter()
        .filter_map(|(_, v)| v.as_ref()?["after"]["id"].as_i64())
        .collect();
    assert_eq!(
        ids,
        (1..=100_000).collect::<Vec<_>>(),
        "every row once, in order, none of the rolled-back ones"
    );
    source.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_key_is_refused_with_the_fix() {
    let pg = TempPostgres::start().unwrap();
    pg.psql("postgres", "CREATE TABLE loose (a int, b text)").unwrap();
    let mut source = PostgresCdcFactory::new()
        .create_source(&settings(&pg, &["loose"]))
        .unwrap();
    let error = source.start(&context(), None).await.unwrap_err().to_string();
    assert!(
        error.contains("public.loose") && error.contains("REPLICA IDENTITY FULL"),
        "{error}"
    );
    assert!(error.contains("ADD PRIMARY KEY"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_is_a_new_schema_and_truncate_an_event() {
    let pg = TempPostgres::start().unwrap();
    pg.psql("postgres", "CREATE TABLE s (id int PRIMARY KEY, a text)")
        .unwrap();
    let ctx = context();
    let mut source = PostgresCdcFactory::new().create_source(&settings(&pg, &["s"])).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collector = Collector::new(Vec::new());
    pg.psql(
        "postgres",
        "INSERT INTO s VALUES (1, 'x'); ALTER TABLE s ADD COLUMN b int; INSERT INTO s VALUES (2, 'y', 5); TRUNCATE s;",
    )
    .unwrap();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "t") >= 1)
        .await;
    let records = &collector.log;
    let schemas: Vec<Json> = records
        .iter()
        .filter(|r| !is_change(r))
        .map(|r| serde_json::from_slice(r.value.as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(schemas.len(), 2, "two versions: {schemas:?}");
    assert_eq!(schemas[1]["columns"][2]["name"], "b");
    let rows: Vec<&SourceRecord> = records
        .iter()
        .filter(|r| r.topic.as_deref() == Some("public.s"))
        .collect();
    let header = |r: &SourceRecord| String::from_utf8(r.headers[0].value.clone().unwrap().to_vec()).unwrap();
    assert_eq!(header(rows[0]), schemas[0]["id"].as_str().unwrap());
    assert_eq!(header(rows[1]), schemas[1]["id"].as_str().unwrap());
    let second: Json = serde_json::from_slice(rows[1].value.as_ref().unwrap()).unwrap();
    assert_eq!(second["after"], serde_json::json!({"id": 2, "a": "y", "b": 5}));
    let truncate: Json = serde_json::from_slice(rows[2].value.as_ref().unwrap()).unwrap();
    assert_eq!((truncate["op"].as_str(), rows[2].key.as_ref()), (Some("t"), None));
    source.stop().await.unwrap();
}

/// The log folded by key, as a sink applying it would hold the table.
fn fold(records: &[SourceRecord], into: &mut std::collections::BTreeMap<i64, Json>) {
    for (_, value) in changes(records) {
        let Some(value) = value else { continue };
        match value["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                into.insert(value["after"]["id"].as_i64().unwrap(), value["after"].clone());
            }
            "d" => {
                into.remove(&value["before"]["id"].as_i64().unwrap());
            }
            "t" => into.clear(),
            op => panic!("unexpected op {op}"),
        }
    }
}

fn resnapshot_state(factory: &PostgresCdcFactory, position: &Position) -> Option<Json> {
    factory.position_to_json(position).get("resnapshot").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_snapshotted_again_while_changes_stream_and_after_a_restart() {
    use sqlx::Connection;

    let pg = TempPostgres::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, note text);
         INSERT INTO acc SELECT g, g % 97, 'n' || g FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    let factory = PostgresCdcFactory::new();
    let mut settings = settings(&pg, &["acc"]);
    settings.insert("snapshot_mode", Value::String("never".into()));
    settings.insert("resnapshot_chunk_rows", Value::Integer(4000));
    settings.insert("batch_size", Value::Integer(700));
    let ctx = context();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collector = Collector::new(Vec::new());

    // A new key is a delete of the old one and a create of the new one.
    pg.psql("postgres", "UPDATE acc SET id = 100001 WHERE id = 1").unwrap();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "c") >= 1)
        .await;
    let events = changes(&collector.log);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].1.as_ref().unwrap()["op"], "d");
    assert_eq!(events[0].0.as_deref(), Some("{\"id\":1}"));
    assert_eq!(
        (events[1].0.as_deref(), events[1].1.as_ref()),
        (Some("{\"id\":1}"), None)
    );
    assert_eq!(events[2].1.as_ref().unwrap()["after"]["id"], 100_001);
    let mut table = std::collections::BTreeMap::new();

    // Changes keep coming while the table is read again in chunks.
    let url = pg.url("postgres");
    let progress = ctx.clone();
    let writer = tokio::spawn(async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        // Each row changes at most once, just ahead of where the re-snapshot reads, so
        // a chunk row left stale by a change between its watermarks stays in the fold.
        let mut touched = std::collections::HashSet::new();
        let mut seed: u64 = 7;
        for n in 0..3000u64 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let read = progress
                .metrics()
                .snapshot_rows
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(0) as u64;
            let id = (read + 1 + (seed >> 33) % 4000).clamp(2, 20_000);
            if !touched.insert(id) {
                continue;
            }
            let sql = match n % 20 {
                0 => format!("DELETE FROM acc WHERE id = {id}"),
                1 => format!("UPDATE acc SET id = {} WHERE id = {id}", 300_000 + n),
                2 => format!("INSERT INTO acc VALUES ({}, {n}, 'new')", 200_000 + n),
                _ => format!("UPDATE acc SET balance = -{n}, note = 'w' WHERE id = {id}"),
            };
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
    });
    // Chunks are read while the writer is busy, so some of its changes land between
    // a chunk's watermarks.
    tokio::time::sleep(Duration::from_millis(50)).await;
    pg.psql(
        "postgres",
        r#"SELECT pg_logical_emit_message(true, 'plexus.signal', '{"connector": "pgtest", "snapshot": ["public.acc"]}')"#,
    )
    .unwrap();

    // Stop half-way through and resume from the log's position, as after a crash.
    let resumed_at = {
        let factory = &factory;
        let state_past = |last: &Option<Position>, key: i64| {
            last.as_ref()
                .and_then(|p| resnapshot_state(factory, p))
                .and_then(|s| s["last_key"][0].as_str().and_then(|k| k.parse::<i64>().ok()))
                .is_some_and(|k| k >= key)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !state_past(&collector.last, 8000) {
            assert!(Instant::now() < deadline, "the re-snapshot did not get to key 8000");
            collector.poll_once(source.as_mut(), &ctx).await.unwrap();
        }
        resnapshot_state(factory, collector.last.as_ref().unwrap()).unwrap()
    };
    source.stop().await.unwrap();
    fold(&collector.log, &mut table);
    let reads_before = count_ops(&collector.log, "r");
    collector.log.clear();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, collector.last.clone()).await.unwrap();

    // Done when the re-snapshot finished and the writer's last change arrived.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let busy = collector.poll_once(source.as_mut(), &ctx).await.unwrap();
        let last = collector.last.as_ref();
        if !busy && writer.is_finished() && last.is_some_and(|p| resnapshot_state(&factory, p).is_none()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the re-snapshot did not finish: {:?}",
            last.map(|p| factory.position_to_json(p))
        );
    }
    writer.await.unwrap();
    pg.psql("postgres", "INSERT INTO acc VALUES (999999, 0, 'end')")
        .unwrap();
    collector
        .poll_until(source.as_mut(), &ctx, |c| {
            changes(&c.log)
                .iter()
                .any(|(_, v)| v.as_ref().is_some_and(|v| v["after"]["id"] == 999_999))
        })
        .await;
    source.stop().await.unwrap();
    fold(&collector.log, &mut table);

    let reads: Vec<Json> = changes(&collector.log)
        .into_iter()
        .filter_map(|(_, v)| v.filter(|v| v["op"] == "r"))
        .collect();
    assert!(reads.iter().all(|v| v["source"]["snapshot"] == "incremental"));
    let first_after_restart = reads[0]["after"]["id"].as_i64().unwrap();
    let resumed_key: i64 = resumed_at["last_key"][0].as_str().unwrap().parse().unwrap();
    assert!(
        first_after_restart > resumed_key,
        "the re-snapshot resumed after key {resumed_key}, not from the start ({first_after_restart})"
    );
    assert!(
        reads_before + reads.len() <= 20_000 + 4000,
        "rows read about once: {reads_before} + {}",
        reads.len()
    );
    let expected: Json = serde_json::from_str(
        &pg.psql("postgres", "SELECT json_agg(row_to_json(a) ORDER BY id) FROM acc a")
            .unwrap(),
    )
    .unwrap();
    let expected: Vec<Json> = expected.as_array().unwrap().clone();
    let folded: Vec<Json> = table.into_values().collect();
    assert_eq!(
        folded.len(),
        expected.len(),
        "the log folds into as many rows as the table has"
    );
    for (got, want) in folded.iter().zip(&expected) {
        assert_eq!(got, want, "the log folds into the table");
    }
}
