//! Scenarios of the `sql` sink, written once and run against PostgreSQL 15, MariaDB and
//! SQLite: every change type, deduplication, unchanged TOASTed values, soft deletes,
//! history mode, table naming, dead letters, exactly-once resume, schema evolution and
//! refused credentials. Each test starts one server and runs several scenarios on it,
//! each with its own tables and connector name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, TestDb, change, list, run, schema_doc, secret};
use plexus_config::Value as SettingValue;
use serde_json::{Value, json};

const ORDERS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("name", "text"),
    ("qty", "integer"),
    ("price", "numeric(10,2)"),
];

fn row(id: i64, name: &str, qty: i64, price: &str) -> Value {
    json!({"id": id, "name": name, "qty": qty, "price": price})
}

/// c, r, u, d and tombstones; several changes of a key in one batch; a truncate.
async fn change_types(db: &TestDb) {
    let mut h = Harness::new(db, "changes", &[]);
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    assert!(h.start().await.unwrap().is_empty());
    let topic = "pg.public.orders";
    let s = Some("orders.1");
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "a", 1, "1.50"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, row(2, "b", 2, "2.50"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("r", Value::Null, row(3, "c", 3, "3.50"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("u", row(1, "a", 1, "1.50"), row(1, "a2", 10, "1.55"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("d", row(2, "b", 2, "2.50"), Value::Null)),
        s,
    );
    h.push(topic, json!({"id": 2}), None, None);
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("u", Value::Null, row(3, "c2", 30, "3.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("u", Value::Null, row(3, "c3", 31, "3.01"))),
        s,
    );
    // Deleted, then inserted again in the same batch.
    h.push(
        topic,
        json!({"id": 4}),
        Some(change("c", Value::Null, row(4, "d", 4, "4.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 4}),
        Some(change("d", json!({"id": 4}), Value::Null)),
        s,
    );
    h.push(
        topic,
        json!({"id": 4}),
        Some(change("c", Value::Null, row(4, "d2", 5, "4.50"))),
        s,
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, qty, price FROM orders ORDER BY id"),
        "1|a2|10|1.55\n3|c3|31|3.01\n4|d2|5|4.50",
        "{}",
        db.name()
    );
    assert_eq!(h.dead_letters(), vec![]);

    // A later batch: an insert of a deleted key, a delete, a tombstone.
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, row(2, "b2", 20, "0.01"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("d", json!({"id": 3}), Value::Null)),
        s,
    );
    h.push(topic, json!({"id": 3}), None, None);
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, qty, price FROM orders ORDER BY id"),
        "1|a2|10|1.55\n2|b2|20|0.01\n4|d2|5|4.50"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT topic, {}, next_offset FROM plexus_offsets WHERE connector = 'changes'",
            db.q("partition")
        )),
        "pg.public.orders|0|14"
    );

    // A truncate empties the table; changes after it in the batch apply.
    h.push(
        topic,
        json!({"id": 9}),
        Some(change("c", Value::Null, row(9, "gone", 9, "9.00"))),
        s,
    );
    h.push(
        topic,
        Value::Null,
        Some(json!({"before": null, "after": null, "op": "t", "ts_ms": 1})),
        None,
    );
    h.push(
        topic,
        json!({"id": 5}),
        Some(change("c", Value::Null, row(5, "e", 5, "5.00"))),
        s,
    );
    h.commit().await.unwrap();
    assert_eq!(db.query("SELECT id, name FROM orders ORDER BY id"), "5|e");
}

/// An update without its unchanged TOASTed values keeps the target's, in a later batch
/// and in the same batch; rows with and without unchanged values mix in one batch.
async fn unchanged_toast(db: &TestDb) {
    let mut h = Harness::new(db, "toast", &[]);
    let columns = &[("id", "bigint"), ("name", "text"), ("big", "text"), ("other", "text")];
    h.register("docs.1", &schema_doc("docs.1", columns));
    h.start().await.unwrap();
    let big: String = "x".repeat(20_000);
    let topic = "pg.public.docs";
    let s = Some("docs.1");
    for id in 1..=3 {
        let after = json!({"id": id, "name": "n", "big": format!("{big}{id}"), "other": "o"});
        h.push(topic, json!({"id": id}), Some(change("c", Value::Null, after)), s);
    }
    // Same batch: id 3's update leaves `big` out; the insert before it has it.
    let mut update = change("u", Value::Null, json!({"id": 3, "name": "n3", "other": "o3"}));
    update["unchanged"] = json!(["big"]);
    h.push(topic, json!({"id": 3}), Some(update), s);
    h.commit().await.unwrap();

    // Later batch: id 1 leaves `big` out, id 2 leaves `big` and `other` out, id 4 is new.
    let mut u1 = change("u", Value::Null, json!({"id": 1, "name": "n1", "other": "o1"}));
    u1["unchanged"] = json!(["big"]);
    let mut u2 = change("u", Value::Null, json!({"id": 2, "name": "n2"}));
    u2["unchanged"] = json!(["big", "other"]);
    h.push(topic, json!({"id": 1}), Some(u1), s);
    h.push(topic, json!({"id": 2}), Some(u2), s);
    h.push(
        topic,
        json!({"id": 4}),
        Some(change(
            "c",
            Value::Null,
            json!({"id": 4, "name": "n4", "big": "small", "other": "o4"}),
        )),
        s,
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, length(big), substr(big, 20000), other FROM docs ORDER BY id"),
        "1|n1|20001|x1|o1\n2|n2|20001|x2|o\n3|n3|20001|x3|o3\n4|n4|5||o4",
        "{}",
        db.name()
    );
}

/// `delete_mode = "soft"`: the row stays, flagged, and an insert clears the flag.
async fn soft_deletes(db: &TestDb) {
    let mut h = Harness::new(
        db,
        "soft",
        &[("delete_mode", "soft".into()), ("table", "soft_{table}".into())],
    );
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    h.start().await.unwrap();
    let topic = "pg.public.orders";
    let s = Some("orders.1");
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "a", 1, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, row(2, "b", 2, "2.00"))),
        s,
    );
    h.commit().await.unwrap();
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("d", json!({"id": 1}), Value::Null)),
        s,
    );
    h.push(topic, json!({"id": 1}), None, None);
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("c", Value::Null, row(3, "c", 3, "3.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 3}),
        Some(change("d", json!({"id": 3}), Value::Null)),
        s,
    );
    h.commit().await.unwrap();
    let t = db.pick("t", "1", "1");
    let f = db.pick("f", "0", "0");
    let deleted_at = db.pick(
        "to_char(__deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
        "DATE_FORMAT(__deleted_at, '%Y-%m-%d %H:%i:%s')",
        "replace(substr(__deleted_at, 1, 19), 'T', ' ')",
    );
    assert_eq!(
        db.query(&format!(
            "SELECT id, name, __deleted, {deleted_at} FROM soft_orders ORDER BY id"
        )),
        format!("1|a|{t}|2026-01-01 00:00:00\n2|b|{f}|\n3|c|{t}|2026-01-01 00:00:00"),
        "{}",
        db.name()
    );
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "again", 1, "1.00"))),
        s,
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, __deleted, __deleted_at FROM soft_orders WHERE id = 1"),
        format!("1|again|{f}|")
    );
}

/// `mode = "history"`: every change is a row with its op and source position.
async fn history(db: &TestDb) {
    let mut h = Harness::new(
        db,
        "history",
        &[("mode", "history".into()), ("table", "{table}_history".into())],
    );
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    h.start().await.unwrap();
    let topic = "pg.public.orders";
    let s = Some("orders.1");
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "a", 1, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("u", Value::Null, row(1, "b", 1, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("u", Value::Null, row(1, "c", 1, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("d", json!({"id": 1}), Value::Null)),
        s,
    );
    h.push(topic, json!({"id": 1}), None, None);
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, __op, __lsn, __topic, __partition, __offset FROM orders_history ORDER BY __offset"),
        "1|a|c|100|pg.public.orders|0|0\n1|b|u|100|pg.public.orders|0|1\n1|c|u|100|pg.public.orders|0|2\n1||d|100|pg.public.orders|0|3"
    );
    if let TestDb::Postgres(_) = db {
        // Only tables updated in place leave room on their pages (`fillfactor`).
        let options = |table: &str| {
            db.query(&format!(
                "SELECT coalesce(array_to_string(reloptions, ','), '-') FROM pg_class WHERE relname = '{table}'"
            ))
        };
        assert_eq!(options("orders"), "fillfactor=70");
        assert_eq!(options("orders_history"), "-");
    }
}

/// The table template, per-topic overrides, records without a schema.
async fn naming_and_inference(db: &TestDb) {
    let mut h = Harness::new(
        db,
        "naming",
        &[
            ("table", "{schema}_{table}".into()),
            ("table_overrides", list(&["shop.public.items=renamed_items"])),
        ],
    );
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    h.start().await.unwrap();
    h.push(
        "shop.public.orders",
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "a", 1, "1.00"))),
        Some("orders.1"),
    );
    // No schema: plain rows, columns inferred, key from the record key.
    h.push(
        "shop.public.items",
        json!({"sku": "A-1"}),
        Some(json!({"sku": "A-1", "qty": 3, "tags": ["x"]})),
        None,
    );
    h.push(
        "shop.public.items",
        json!({"sku": "B-2"}),
        Some(json!({"sku": "B-2", "qty": 4, "weight": 1.5})),
        None,
    );
    h.push(
        "shop.public.items",
        json!({"sku": "A-1"}),
        Some(json!({"sku": "A-1", "qty": 5})),
        None,
    );
    h.commit().await.unwrap();
    assert_eq!(db.query("SELECT id, name FROM public_orders"), "1|a");
    assert_eq!(
        db.query("SELECT sku, qty, weight FROM renamed_items ORDER BY sku"),
        "A-1|5|\nB-2|4|1.5",
        "{}",
        db.name()
    );
}

/// Records the target refuses go to the dead letters; the rest of the batch applies.
async fn dead_letters(db: &TestDb) {
    db.query("CREATE TABLE checked (id bigint NOT NULL PRIMARY KEY, qty integer CHECK (qty > 0), note text)");
    let mut h = Harness::new(db, "dead", &[("table", "checked".into())]);
    let columns = &[("id", "bigint"), ("qty", "smallint"), ("note", "text")];
    h.register("c.1", &schema_doc("c.1", columns));
    h.start().await.unwrap();
    let topic = "pg.public.c";
    let s = Some("c.1");
    for id in 1..=20 {
        // id 7 breaks the table's CHECK; id 13 does not fit a smallint; id 17 is not JSON.
        let qty = match id {
            7 => -1,
            13 => 70_000,
            _ => id,
        };
        if id == 17 {
            h.push(topic, json!({"id": id}), Some(json!("placeholder")), s);
        } else {
            h.push(
                topic,
                json!({"id": id}),
                Some(change("c", Value::Null, json!({"id": id, "qty": qty, "note": "n"}))),
                s,
            );
        }
    }
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT count(*), sum(id) FROM checked"),
        format!("17|{}", 210 - 7 - 13 - 17)
    );
    let letters = h.dead.take();
    let dead: Vec<(&str, &str)> = letters
        .iter()
        .map(|(_, l)| (l.origin.as_str(), l.reason.as_str()))
        .collect();
    let origins: Vec<&str> = dead.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        origins,
        ["pg.public.c/0@12", "pg.public.c/0@16", "pg.public.c/0@6"],
        "{dead:?}"
    );
    assert!(dead[0].1.contains("`qty`") && dead[0].1.contains("out of"), "{dead:?}");
    assert!(dead[2].1.contains("refused"), "{dead:?}");
    // Each letter carries its record's bytes; the refused row's are read back from the
    // log (the sink keeps only where a buffered change came from).
    let refused = &letters[2].1;
    assert_eq!(refused.key.as_deref(), Some(json!({"id": 7}).to_string().as_bytes()));
    let payload: Value = serde_json::from_slice(refused.payload.as_deref().unwrap()).unwrap();
    assert_eq!(payload["after"]["qty"], -1, "{payload}");
    assert!(letters.iter().all(|(_, l)| l.payload.is_some()), "{letters:?}");
    assert_eq!(
        db.query("SELECT next_offset FROM plexus_offsets WHERE connector = 'dead'"),
        "20"
    );
}

/// Deletes find their rows by every kind of key: text (with characters an array
/// literal would quote), a timestamp, and a composite key. PostgreSQL binds a
/// single-column key's values as an array and stages a composite one.
async fn deletes_by_key_kinds(db: &TestDb) {
    let mut h = Harness::new(db, "delete-keys", &[("table", "dk_{table}".into())]);
    // (table, its columns as (name, type, key), the first column's four values)
    type Columns = &'static [(&'static str, &'static str, bool)];
    let tables: [(&str, Columns, [Value; 4]); 3] = [
        (
            "text",
            &[("code", "text", true), ("v", "integer", false)],
            [json!("a,b"), json!("{c} \"d\""), json!("e\tf\\"), json!("NULL")],
        ),
        (
            "time",
            &[("at", "timestamp with time zone", true), ("v", "integer", false)],
            [
                json!("2026-01-01T00:00:00Z"),
                json!("2026-01-01T00:00:00.5Z"),
                json!("2026-06-30T12:00:00Z"),
                json!("1999-12-31T23:59:59.999999Z"),
            ],
        ),
        (
            "pair",
            &[("code", "text", true), ("n", "integer", true), ("v", "integer", false)],
            [json!("x"), json!("x"), json!("y"), json!("y")],
        ),
    ];
    for (name, columns, keys) in &tables {
        let id = format!("dk.{name}");
        let document = json!({
            "id": id,
            "table": format!("public.{name}"),
            "columns": columns.iter().map(|(c, ty, key)| json!({"name": c, "type": ty, "key": key})).collect::<Vec<_>>(),
        });
        h.register(&id, &document.to_string());
        let image = |i: usize| {
            let mut image = json!({"v": i});
            image[columns[0].0] = keys[i].clone();
            if columns.len() == 3 {
                image["n"] = json!(i % 2);
            }
            image
        };
        let topic = format!("pg.public.{name}");
        if h.next.is_empty() {
            h.start().await.unwrap();
        }
        for i in 0..4 {
            h.push(&topic, json!({}), Some(change("c", Value::Null, image(i))), Some(&id));
        }
        h.commit().await.unwrap();
        for i in [1, 3] {
            h.push(&topic, json!({}), Some(change("d", image(i), Value::Null)), Some(&id));
        }
        h.commit().await.unwrap();
        let table = db.q(&format!("dk_{name}"));
        assert_eq!(
            db.query(&format!("SELECT v FROM {table} ORDER BY v")),
            "0\n2",
            "{name} in {}",
            db.name()
        );
    }
    assert_eq!(h.dead_letters(), vec![]);
}

/// A record read before its schema is readable (the source registers both in one
/// batch, but the topics become readable independently) waits for the schema instead
/// of going to the dead letters.
async fn schema_registered_after_its_record(db: &TestDb) {
    let mut h = Harness::new(db, "late-schema", &[("table", "late_{table}".into())]);
    h.start().await.unwrap();
    h.push(
        "pg.public.orders",
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "late", 1, "1.00"))),
        Some("late.1"),
    );
    let schemas = h.schemas.clone();
    let register = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        schemas.insert("late.1", schema_doc("late.1", ORDERS));
    });
    h.commit().await.unwrap();
    register.await.unwrap();
    assert_eq!(h.dead_letters(), vec![]);
    assert_eq!(db.query("SELECT name FROM late_orders"), "late");
}

/// Offsets live in the target, written with the data: a sink dropped without a flush
/// loses its batch, the next resumes from the target's offsets, records before them are
/// skipped, and nothing is applied twice.
async fn exactly_once(db: &TestDb) {
    let settings = [("mode", SettingValue::from("history")), ("table", "eo_{table}".into())];
    let topic = "pg.public.orders";
    let s = Some("orders.1");
    let mut first = Harness::new(db, "eo", &settings);
    first.register("orders.1", &schema_doc("orders.1", ORDERS));
    first.start().await.unwrap();
    for id in 0..5 {
        first.push(
            topic,
            json!({"id": id}),
            Some(change("c", Value::Null, row(id, "first", 1, "1.00"))),
            s,
        );
    }
    first.commit().await.unwrap();
    for id in 5..8 {
        first.push(
            topic,
            json!({"id": id}),
            Some(change("c", Value::Null, row(id, "lost", 1, "1.00"))),
            s,
        );
    }
    first.write().await.unwrap();
    drop(first);
    assert_eq!(db.query("SELECT count(*) FROM eo_orders"), "5");

    let mut second = Harness::new(db, "eo", &settings);
    second.register("orders.1", &schema_doc("orders.1", ORDERS));
    let resumed = second.start().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed.values().copied().collect::<Vec<_>>(), [5]);
    // The log delivers from offset 5, and (as after a redelivery) offset 4 again.
    second.next.insert(topic.to_owned(), 4);
    second.push(
        topic,
        json!({"id": 4}),
        Some(change("c", Value::Null, row(4, "replayed", 1, "1.00"))),
        s,
    );
    for id in 5..8 {
        second.push(
            topic,
            json!({"id": id}),
            Some(change("c", Value::Null, row(id, "second", 1, "1.00"))),
            s,
        );
    }
    second.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT __offset, name FROM eo_orders ORDER BY __offset"),
        "0|first\n1|first\n2|first\n3|first\n4|first\n5|second\n6|second\n7|second"
    );
    assert_eq!(
        db.query("SELECT next_offset FROM plexus_offsets WHERE connector = 'eo'"),
        "8"
    );
    // Another connector's offsets are its own.
    let mut other = Harness::new(db, "eo-other", &settings);
    assert!(other.start().await.unwrap().is_empty());
}

/// The target drops the sink's connection (a restart): the flush fails with a retriable
/// error, and a new sink (as the runtime restarts the task) resumes from the offsets in
/// the target, losing and duplicating nothing.
async fn connection_lost(db: &TestDb) {
    let topic = "pg.public.orders";
    let s = Some("orders.1");
    let settings = [("table", SettingValue::from("lost_{table}"))];
    let mut h = Harness::new(db, "lost", &settings);
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, row(1, "a", 1, "1.00"))),
        s,
    );
    h.commit().await.unwrap();
    if !db.kill_sink_sessions() {
        return;
    }
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("u", Value::Null, row(1, "b", 2, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, row(2, "c", 3, "1.00"))),
        s,
    );
    let err = h.commit().await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    drop(h);
    assert_eq!(db.query("SELECT id, name FROM lost_orders ORDER BY id"), "1|a");

    let mut h = Harness::new(db, "lost", &settings);
    h.register("orders.1", &schema_doc("orders.1", ORDERS));
    let resumed = h.start().await.unwrap();
    assert_eq!(resumed.values().copied().collect::<Vec<_>>(), [1]);
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("u", Value::Null, row(1, "b", 2, "1.00"))),
        s,
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, row(2, "c", 3, "1.00"))),
        s,
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, name, qty FROM lost_orders ORDER BY id"),
        "1|b|2\n2|c|3"
    );
    assert_eq!(
        db.query("SELECT next_offset FROM plexus_offsets WHERE connector = 'lost'"),
        "3"
    );
}

/// New columns are added; a type change follows `on_type_change`; a dropped column
/// `on_dropped_column`.
async fn evolution(db: &TestDb) {
    let topic = "pg.public.evo";
    let v1 = schema_doc("evo.1", &[("id", "bigint"), ("a", "integer")]);
    let v2 = schema_doc("evo.2", &[("id", "bigint"), ("a", "integer"), ("b", "text")]);
    let v3 = schema_doc("evo.3", &[("id", "bigint"), ("a", "bigint"), ("b", "text")]);
    let v4 = schema_doc("evo.4", &[("id", "bigint"), ("a", "text"), ("b", "text")]);
    let v5 = schema_doc("evo.5", &[("id", "bigint"), ("a", "bigint")]);
    let register = |h: &Harness| {
        for (id, doc) in [
            ("evo.1", &v1),
            ("evo.2", &v2),
            ("evo.3", &v3),
            ("evo.4", &v4),
            ("evo.5", &v5),
        ] {
            h.register(id, doc);
        }
    };
    let mut h = Harness::new(db, "evo", &[]);
    register(&h);
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 1}),
        Some(change("c", Value::Null, json!({"id": 1, "a": 1}))),
        Some("evo.1"),
    );
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("c", Value::Null, json!({"id": 2, "a": 2, "b": "two"}))),
        Some("evo.2"),
    );
    h.commit().await.unwrap();
    assert_eq!(db.query("SELECT id, a, b FROM evo ORDER BY id"), "1|1|\n2|2|two");

    // bigint -> text, which the column cannot hold: the default policy fails.
    h.push(
        topic,
        json!({"id": 4}),
        Some(change("c", Value::Null, json!({"id": 4, "a": "abc", "b": "four"}))),
        Some("evo.4"),
    );
    let err = h.commit().await.unwrap_err();
    let message = err.to_string();
    assert!(!err.is_retriable());
    for part in ["`evo`", "`a`", "on_type_change = \"widen\""] {
        assert!(message.contains(part), "{message}");
    }
    drop(h);

    // widen: integer -> bigint, the column is altered and the value stored (SQLite's
    // INTEGER holds both).
    let mut h = Harness::new(db, "evo", &[("on_type_change", "widen".into())]);
    register(&h);
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 3}),
        Some(change(
            "c",
            Value::Null,
            json!({"id": 3, "a": 5_000_000_000i64, "b": "three"}),
        )),
        Some("evo.3"),
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, a, b FROM evo ORDER BY id"),
        "1|1|\n2|2|two\n3|5000000000|three"
    );
    assert_eq!(
        db.query(db.pick(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'evo'::regclass AND attname = 'a'",
            "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'evo' AND COLUMN_NAME = 'a'",
            "SELECT 'bigint'",
        )),
        "bigint"
    );
    drop(h);

    // ignore: the column stays bigint; text that does not fit is dead-lettered (SQLite
    // columns take any value).
    let mut h = Harness::new(db, "evo", &[("on_type_change", "ignore".into())]);
    register(&h);
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 4}),
        Some(change("c", Value::Null, json!({"id": 4, "a": "abc", "b": "four"}))),
        Some("evo.4"),
    );
    h.push(
        topic,
        json!({"id": 5}),
        Some(change("c", Value::Null, json!({"id": 5, "a": "55", "b": "five"}))),
        Some("evo.4"),
    );
    h.commit().await.unwrap();
    let dead = h.dead_letters();
    match db {
        TestDb::Sqlite(_) => {
            assert!(dead.is_empty(), "{dead:?}");
            assert_eq!(db.query("SELECT a FROM evo WHERE id >= 4 ORDER BY id"), "abc\n55");
        }
        _ => {
            assert_eq!(dead.len(), 1, "{dead:?}");
            assert_eq!(dead[0].0, "pg.public.evo/0@3");
            assert_eq!(db.query("SELECT id, a FROM evo WHERE id >= 4 ORDER BY id"), "5|55");
        }
    }
    drop(h);

    // A dropped column: kept by default (updates leave it alone), fatal with "fail".
    let mut h = Harness::new(db, "evo", &[]);
    register(&h);
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 2}),
        Some(change("u", Value::Null, json!({"id": 2, "a": 22}))),
        Some("evo.5"),
    );
    h.push(
        topic,
        json!({"id": 6}),
        Some(change("c", Value::Null, json!({"id": 6, "a": 6}))),
        Some("evo.5"),
    );
    h.commit().await.unwrap();
    assert_eq!(
        db.query("SELECT id, a, b FROM evo WHERE id IN (2, 6) ORDER BY id"),
        "2|22|two\n6|6|"
    );
    drop(h);
    let mut h = Harness::new(db, "evo", &[("on_dropped_column", "fail".into())]);
    register(&h);
    h.start().await.unwrap();
    h.push(
        topic,
        json!({"id": 7}),
        Some(change("c", Value::Null, json!({"id": 7, "a": 7}))),
        Some("evo.5"),
    );
    let message = h.commit().await.unwrap_err().to_string();
    assert!(
        message.contains("`b`") && message.contains("on_dropped_column"),
        "{message}"
    );
}

/// A wrong password is a fatal error that says what to check.
async fn wrong_password(db: &TestDb) {
    let mut h = Harness::new(db, "password", &[("password", secret("not-the-password"))]);
    let err = h.start().await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("credentials") && message.contains("password"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
}

macro_rules! scenarios {
    ($($dialect:ident => $make:expr),* $(,)?) => {
        $(
            mod $dialect {
                use super::*;

                #[test]
                fn changes_toast_soft_deletes_history_naming() {
                    run(async {
                        let db = $make;
                        change_types(&db).await;
                        unchanged_toast(&db).await;
                        soft_deletes(&db).await;
                        history(&db).await;
                        naming_and_inference(&db).await;
                    });
                }

                #[test]
                fn dead_letters_exactly_once_and_evolution() {
                    run(async {
                        let db = $make;
                        dead_letters(&db).await;
                        deletes_by_key_kinds(&db).await;
                        schema_registered_after_its_record(&db).await;
                        exactly_once(&db).await;
                        connection_lost(&db).await;
                        evolution(&db).await;
                    });
                }
            }
        )*
    };
}

scenarios! {
    postgres => TestDb::postgres(),
    mariadb => TestDb::mariadb(),
    sqlite => TestDb::sqlite(),
}

#[test]
fn postgres_wrong_password() {
    run(async { wrong_password(&TestDb::postgres()).await });
}

#[test]
fn mariadb_wrong_password() {
    run(async { wrong_password(&TestDb::mariadb()).await });
}

#[test]
fn postgres_missing_privilege_names_what_is_needed() {
    run(async {
        let db = TestDb::postgres();
        let TestDb::Postgres(pg) = &db else { unreachable!() };
        pg.psql(
            "warehouse",
            "CREATE ROLE reader LOGIN PASSWORD 'reader-pw'; REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        )
        .unwrap();
        let url = format!("postgres://reader:reader-pw@127.0.0.1:{}/warehouse", pg.port());
        let mut settings = plexus_config::Settings::new();
        settings.insert("url", url);
        let mut h = Harness::with_settings("reader", &settings).unwrap();
        let err = h.start().await.unwrap_err();
        assert!(!err.is_retriable(), "{err}");
        let message = err.to_string();
        assert!(message.contains("privilege") && message.contains("CREATE"), "{message}");
    });
}

#[test]
fn postgres_down_is_retriable() {
    run(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut settings = plexus_config::Settings::new();
        settings.insert("url", format!("postgres://u:p@127.0.0.1:{port}/db"));
        settings.insert("connect_timeout", plexus_config::Duration::from_secs(5));
        let mut h = Harness::with_settings("down", &settings).unwrap();
        let err = h.start().await.unwrap_err();
        assert!(err.is_retriable(), "{err}");
        assert!(!err.to_string().contains(":p@"), "{err}");
    });
}
