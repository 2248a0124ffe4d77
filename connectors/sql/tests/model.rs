//! A random workload of inserts, updates and deletes (several writes per flush, flushes
//! of random sizes) applied to each database ends with exactly the rows a model of the
//! same changes holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{Harness, TestDb, change, run, schema_doc};
use serde_json::{Value, json};

struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

async fn random_workload(db: &TestDb, seed: u64) {
    // Small chunks, and batches of at most 8 KiB: full batches are committed from
    // `write`, in the background, and so are flushes while the harness says records
    // are left unread.
    let mut h = Harness::new(
        db,
        "model",
        &[
            ("batch_rows", 700.into()),
            ("memory_budget", plexus_config::ByteSize(16 << 10).into()),
        ],
    );
    let columns = &[("id", "bigint"), ("qty", "integer"), ("note", "text")];
    h.register("m.1", &schema_doc("m.1", columns));
    h.start().await.unwrap();
    let topic = "pg.public.model";
    let mut rng = Rng(seed);
    let mut model: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    for n in 0..12_000u64 {
        let id = rng.next(1_500);
        let roll = rng.next(100);
        if roll < 70 {
            let note = format!("n{n}");
            let value = change("c", Value::Null, json!({"id": id, "qty": n, "note": note}));
            model.insert(id, (n, note));
            h.push(topic, json!({"id": id}), Some(value), Some("m.1"));
        } else if roll < 90 {
            let value = change("u", Value::Null, json!({"id": id, "qty": n, "note": null}));
            model.insert(id, (n, String::new()));
            h.push(topic, json!({"id": id}), Some(value), Some("m.1"));
        } else {
            model.remove(&id);
            h.push(
                topic,
                json!({"id": id}),
                Some(change("d", json!({"id": id}), Value::Null)),
                Some("m.1"),
            );
            h.push(topic, json!({"id": id}), None, None);
        }
        if rng.next(400) == 0 {
            h.write().await.unwrap();
        }
        if rng.next(1_000) == 0 {
            h.set_behind(rng.next(3) > 0);
            h.commit().await.unwrap();
        }
    }
    h.set_behind(false);
    h.commit().await.unwrap();
    let want: Vec<String> = model
        .iter()
        .map(|(id, (qty, note))| format!("{id}|{qty}|{note}"))
        .collect();
    let got = db.query("SELECT id, qty, note FROM model ORDER BY id");
    assert_eq!(got.lines().count(), want.len(), "{}", db.name());
    assert_eq!(got, want.join("\n"), "{}", db.name());
    assert!(h.dead_letters().is_empty());
}

#[test]
fn postgres_random_workload_equals_the_model() {
    run(async { random_workload(&TestDb::postgres(), 0x5eed).await });
}

#[test]
fn mariadb_random_workload_equals_the_model() {
    run(async { random_workload(&TestDb::mariadb(), 0x5eed).await });
}

#[test]
fn sqlite_random_workload_equals_the_model() {
    run(async { random_workload(&TestDb::sqlite(), 0x5eed).await });
}
