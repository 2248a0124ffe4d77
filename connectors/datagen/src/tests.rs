//! Tests of the source as the runtime drives it: start, poll, restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_connector::{
    CollectDeadLetters, ConnectorFactory, Poll, Position, SCHEMA_HEADER, SCHEMAS_TOPIC, Settings, Source,
    SourceContext, SourceRecord, TaskMetrics,
};
use serde_json::Value;

use crate::{DatagenConfig, DatagenFactory, DatagenSource, Table};

fn ctx() -> SourceContext {
    SourceContext::new(
        "shop",
        0,
        Arc::new(TaskMetrics::default()),
        Arc::new(CollectDeadLetters::default()),
    )
}

fn config(seed: u64, count: u64) -> DatagenConfig {
    DatagenConfig {
        seed,
        count: Some(count),
        ..DatagenConfig::default()
    }
}

/// Runs a source to its end, returning the records and each batch's position.
async fn run(config: DatagenConfig, resume: Option<Position>) -> (Vec<SourceRecord>, Vec<Position>) {
    let ctx = ctx();
    let mut source = DatagenSource::new(config);
    source.start(&ctx, resume).await.unwrap();
    let (mut records, mut positions) = (Vec::new(), Vec::new());
    let mut schemas: HashMap<String, Value> = HashMap::new();
    loop {
        match source.poll(&ctx).await.unwrap() {
            Poll::Batch(batch) => {
                for record in batch.records {
                    if record.topic.as_deref() == Some(SCHEMAS_TOPIC) {
                        let id = String::from_utf8(record.key.as_deref().unwrap().to_vec()).unwrap();
                        schemas.insert(id, json(&record.value));
                    } else {
                        records.push(record);
                    }
                }
                positions.push(batch.position);
            }
            Poll::Idle => continue,
            Poll::Finished => break,
        }
    }
    // Every change names a schema registered before it, of its own table, whose
    // columns are exactly the row's.
    for record in records.iter().filter(|r| r.value.is_some()) {
        let header = record.headers.iter().find(|h| h.key == SCHEMA_HEADER).unwrap();
        let id = std::str::from_utf8(header.value.as_deref().unwrap()).unwrap();
        let schema = &schemas[id];
        assert_eq!(schema["id"], id);
        assert_eq!(schema["table"].as_str(), record.topic.as_deref());
        let after = &json(&record.value)["after"];
        let row = if after.is_null() {
            &json(&record.value)["before"]
        } else {
            after
        };
        let mut names: Vec<&str> = schema["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let mut fields: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort();
        fields.sort();
        assert_eq!(names, fields, "{id}");
    }
    (records, positions)
}

fn json(bytes: &Option<bytes::Bytes>) -> Value {
    serde_json::from_slice(bytes.as_deref().unwrap()).unwrap()
}

/// The event number of a record (a tombstone has none).
fn seq(record: &SourceRecord) -> Option<u64> {
    record
        .value
        .as_ref()
        .map(|_| json(&record.value)["source"]["seq"].as_u64().unwrap())
}

#[tokio::test]
async fn a_seed_reproduces_the_stream_byte_for_byte() {
    let (first, _) = run(config(7, 5000), None).await;
    let (second, _) = run(
        DatagenConfig {
            batch_size: 333,
            ..config(7, 5000)
        },
        None,
    )
    .await;
    assert_eq!(first.len(), second.len());
    assert!(first == second, "same seed, different records");
    let (other, _) = run(config(8, 5000), None).await;
    let differing = first.iter().zip(&other).filter(|(a, b)| a != b).count();
    assert!(
        differing > first.len() / 2,
        "only {differing} records differ between seeds"
    );
}

#[tokio::test]
async fn a_restart_continues_with_the_same_events() {
    let (all, _) = run(config(42, 10_000), None).await;
    let (resumed, positions) = run(
        DatagenConfig {
            batch_size: 777,
            ..config(42, 10_000)
        },
        Some(Position::from_u64(6000)),
    )
    .await;
    let start = all.iter().position(|r| seq(r) == Some(6001)).unwrap();
    assert_eq!(seq(&resumed[0]), Some(6001));
    assert_eq!(resumed.len(), all.len() - start);
    assert!(
        resumed[..] == all[start..],
        "the resumed stream differs from the uninterrupted one"
    );
    assert_eq!(positions.last().and_then(Position::as_u64), Some(9999));
}

#[tokio::test]
async fn count_ends_the_stream_after_that_many_events() {
    let (records, positions) = run(
        DatagenConfig {
            tombstones: false,
            ..config(1, 2500)
        },
        None,
    )
    .await;
    assert_eq!(records.len(), 2500);
    let positions: Vec<u64> = positions.iter().filter_map(Position::as_u64).collect();
    assert_eq!(positions, vec![999, 1999, 2499]);
    assert_eq!(seq(&records[2499]), Some(2499));

    // Resuming after the last event finishes at once.
    let (records, _) = run(config(1, 2500), Some(Position::from_u64(2499))).await;
    assert!(records.is_empty());
}

#[tokio::test]
async fn envelopes_describe_consistent_changes() {
    let (records, _) = run(config(3, 20_000), None).await;
    // The latest `after` of every live row, by (table, id).
    let mut rows: HashMap<(String, u64), Value> = HashMap::new();
    let mut inserted: HashMap<String, u64> = HashMap::new();
    let (mut creates, mut updates, mut deletes, mut notes) = (0, 0, 0, 0);
    let mut last_ts = 0;
    let mut i = 0;
    while i < records.len() {
        let record = &records[i];
        let value = json(&record.value);
        let table = value["source"]["table"].as_str().unwrap().to_owned();
        let key = json(&record.key);
        let id = key["id"].as_u64().unwrap();
        assert_eq!(key, serde_json::json!({ "id": id }));
        assert_eq!(record.topic.as_deref(), Some(table.as_str()));
        assert_eq!(value["source"]["connector"], "datagen");
        assert_eq!(value["source"]["name"], "shop");
        let ts = value["ts_ms"].as_u64().unwrap();
        assert_eq!(value["source"]["ts_ms"].as_u64(), Some(ts));
        assert_eq!(record.timestamp, ts as i64);
        assert!(ts > last_ts, "event time must increase");
        last_ts = ts;
        let before = &value["before"];
        let after = &value["after"];
        match value["op"].as_str().unwrap() {
            "c" => {
                creates += 1;
                assert!(before.is_null());
                assert!(!rows.contains_key(&(table.clone(), id)));
                let count = inserted.entry(table.clone()).or_default();
                *count += 1;
                assert_eq!(id, *count, "ids are assigned in order");
                rows.insert((table.clone(), id), after.clone());
            }
            "u" => {
                updates += 1;
                assert_eq!(
                    Some(before),
                    rows.get(&(table.clone(), id)),
                    "before is the previous after"
                );
                assert_ne!(before, after, "an update changes something");
                rows.insert((table.clone(), id), after.clone());
            }
            "d" => {
                deletes += 1;
                assert!(after.is_null());
                assert_eq!(Some(before), rows.remove(&(table.clone(), id)).as_ref());
                let tombstone = &records[i + 1];
                assert_eq!(tombstone.value, None);
                assert_eq!(tombstone.key, record.key);
                assert_eq!(tombstone.topic, record.topic);
                i += 1;
            }
            op => panic!("unexpected op {op}"),
        }
        if !after.is_null() {
            assert_eq!(after["id"].as_u64(), Some(id));
            if table != "products" {
                let created = after["created_at"].as_str().unwrap();
                assert!(
                    created.len() == 24 && created.starts_with("2026-") && created.ends_with('Z'),
                    "{created}"
                );
            }
            match table.as_str() {
                "orders" => {
                    let price = after["unit_price"].as_str().unwrap();
                    let (units, cents) = price.split_once('.').unwrap();
                    assert!(units.parse::<u64>().is_ok() && cents.len() == 2 && cents.parse::<u64>().is_ok());
                    let customer = after["customer_id"].as_u64().unwrap();
                    assert!(customer >= 1 && customer <= inserted.get("customers").copied().unwrap_or(1));
                    let product = after["product_id"].as_u64().unwrap();
                    assert!(product >= 1 && product <= inserted.get("products").copied().unwrap_or(1));
                    assert!(matches!(
                        after["status"].as_str(),
                        Some("pending" | "paid" | "shipped" | "delivered")
                    ));
                    if after["note"].is_string() {
                        notes += 1;
                    } else {
                        assert!(after["note"].is_null());
                    }
                }
                "customers" => {
                    assert!(after["email"].as_str().unwrap().contains('@'));
                    assert_eq!(after["country"].as_str().unwrap().len(), 2);
                }
                "products" => {
                    assert!(after["sku"].as_str().unwrap().starts_with("SKU-"));
                    assert!(after["in_stock"].is_boolean());
                    assert!(after["price"].as_str().unwrap().contains('.'));
                }
                other => panic!("unexpected table {other}"),
            }
        }
        i += 1;
    }
    assert!(
        creates > 4000 && updates > 8000 && deletes > 500,
        "{creates} {updates} {deletes}"
    );
    assert!(notes > 100, "{notes} notes");
    assert_eq!(creates + updates + deletes, 20_000);
}

#[tokio::test]
async fn tables_can_be_chosen() {
    let config = DatagenConfig {
        tables: vec![Table::Products],
        tombstones: false,
        ..config(5, 3000)
    };
    let (records, _) = run(config, None).await;
    assert_eq!(records.len(), 3000);
    assert!(records.iter().all(|r| r.topic.as_deref() == Some("products")));
}

#[tokio::test]
async fn the_rate_limits_events_per_second() {
    let ctx = ctx();
    let mut source = DatagenSource::new(DatagenConfig {
        rate: 2000,
        ..DatagenConfig::default()
    });
    source.start(&ctx, None).await.unwrap();
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed() < Duration::from_millis(500) {
        if let Poll::Batch(batch) = source.poll(&ctx).await.unwrap() {
            events += batch.records.iter().filter(|r| r.value.is_some()).count();
        }
    }
    // Only an upper bound: a slow machine may produce fewer.
    let limit = 2000.0 * started.elapsed().as_secs_f64() + 50.0;
    assert!((events as f64) <= limit, "{events} events in {:?}", started.elapsed());
    assert!(events > 0);
}

#[tokio::test]
async fn the_factory_reads_settings() {
    let factory = DatagenFactory::new();
    assert_eq!(factory.type_name(), "datagen");
    for field in &factory.schema().fields {
        assert!(!field.doc.is_empty(), "{} is undocumented", field.name);
    }
    let mut settings = Settings::new();
    settings.insert("seed", 9);
    settings.insert("count", 10);
    settings.insert("tables", vec!["orders".to_owned()]);
    let ctx = ctx();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let Poll::Batch(batch) = source.poll(&ctx).await.unwrap() else {
        panic!("no batch")
    };
    // The orders schema, then the 10 events.
    assert_eq!(batch.records.len(), 11);
    assert_eq!(batch.records[0].topic.as_deref(), Some(SCHEMAS_TOPIC));
    assert!(batch.records[1..].iter().all(|r| r.topic.as_deref() == Some("orders")));
    assert!(matches!(source.poll(&ctx).await.unwrap(), Poll::Finished));

    settings.insert("tables", vec!["invoices".to_owned()]);
    let error = factory.create_source(&settings).err().unwrap();
    assert!(error.message().contains("invoices"), "{}", error.message());
    settings.insert("tables", vec!["orders".to_owned()]);
    settings.insert("rate", "fast");
    assert!(factory.create_source(&settings).is_err());

    let error = DatagenSource::new(DatagenConfig::default())
        .start(&ctx, Some(Position::from_bytes(&b"file\0"[..])))
        .await
        .err()
        .unwrap();
    assert!(!error.is_retriable());
}
