//! `snapshot_mode = "initial_only"`: a bulk export that reads every row once and
//! finishes, needing neither a slot nor the `REPLICATION` privilege.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{Collector, changes, context, count_ops, settings};
use plexus_config::{Secret, Value};
use plexus_connector::{ConnectorFactory, SourceRecord};
use plexus_connector_postgres::PostgresCdcFactory;
use plexus_tests::TempPostgres;

const ROWS: i64 = 20_000;

#[tokio::test]
async fn an_export_reads_every_row_once_resumes_after_a_crash_and_finishes() {
    let pg = TempPostgres::start().unwrap();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE exporter LOGIN PASSWORD 'export-pw'; \
             CREATE TABLE items (id int PRIMARY KEY, v text, price numeric(8,2)); \
             CREATE TABLE lines (line text); \
             INSERT INTO items SELECT g, 'v' || g, g / 100.0 FROM generate_series(1, {ROWS}) g; \
             INSERT INTO lines SELECT 'line ' || g FROM generate_series(1, 300) g; \
             ANALYZE items; \
             GRANT SELECT ON items, lines TO exporter;"
        ),
    )
    .unwrap();
    let mut settings = settings(&pg, &["items", "lines"]);
    // A user that may read the tables and nothing more: no REPLICATION, no CREATE.
    settings.insert("user", Value::String("exporter".into()));
    settings.insert("password", Value::Secret(Secret::new("export-pw")));
    settings.insert("snapshot_mode", Value::String("initial_only".into()));
    settings.insert("batch_size", Value::Integer(1000));
    settings.insert("snapshot_chunk_rows", Value::Integer(3000));
    let factory = PostgresCdcFactory::new();
    let ctx = context();

    // Read part of the table, then "crash": the next run starts from the last position
    // the log holds.
    let mut collector = Collector::new(Vec::<SourceRecord>::new());
    collector.bounded = true;
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    collector
        .poll_until(source.as_mut(), &ctx, |c| changes(&c.log).len() >= 5000)
        .await;
    drop(source);

    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, collector.last.clone()).await.unwrap();
    collector.poll_until(source.as_mut(), &ctx, |c| c.finished).await;
    source.stop().await.unwrap();

    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    let mut lines = 0;
    for (key, value) in changes(&collector.log) {
        let value = value.unwrap();
        assert_eq!(value["op"], "r");
        assert_eq!(value["source"]["snapshot"], "true");
        if value["source"]["table"] == "items" {
            let id = value["after"]["id"].as_i64().unwrap();
            assert_eq!(key.unwrap(), format!("{{\"id\":{id}}}"));
            assert_eq!(value["after"]["v"], format!("v{id}"));
            assert_eq!(value["after"]["price"], format!("{:.2}", id as f64 / 100.0));
            *ids.entry(id).or_default() += 1;
        } else {
            assert_eq!(value["source"]["table"], "lines");
            assert!(key.is_none(), "a table without a key has records without one");
            lines += 1;
        }
    }
    assert_eq!(ids.len() as i64, ROWS, "every row of items");
    assert!(ids.values().all(|&n| n == 1), "rows read twice across the crash");
    assert_eq!(lines, 300);
    assert_eq!(count_ops(&collector.log, "r") as i64, ROWS + 300);
    // Nothing left behind on the server.
    let left = pg
        .psql(
            "postgres",
            "SELECT (SELECT count(*) FROM pg_replication_slots) || ' ' || (SELECT count(*) FROM pg_publication)",
        )
        .unwrap();
    assert_eq!(left.trim(), "0 0");
}
