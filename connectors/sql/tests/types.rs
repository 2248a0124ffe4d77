//! Every column type of the PostgreSQL source (connectors/postgres/TYPES.md) through the
//! `sql` sink into PostgreSQL 15, MariaDB and SQLite: the column types created (the
//! mapping in connectors/sql/TYPES.md) and the values read back with each database's
//! own client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, TestDb, change, run, schema_doc};
use serde_json::{Value, json};

const COLUMNS: &[(&str, &str)] = &[
    ("id", "bigint"),
    ("b", "boolean"),
    ("i2", "smallint"),
    ("i4", "integer"),
    ("i8", "bigint"),
    ("f4", "real"),
    ("f8", "double precision"),
    ("n", "numeric(12,3)"),
    ("nu", "numeric"),
    ("t", "text"),
    ("esc", "text"),
    ("by", "bytea"),
    ("u", "uuid"),
    ("j", "json"),
    ("jb", "jsonb"),
    ("d", "date"),
    ("tm", "time without time zone"),
    ("ttz", "time with time zone"),
    ("ts", "timestamp without time zone"),
    ("tstz", "timestamp with time zone"),
    ("iv", "interval"),
    ("ai", "integer[]"),
    ("at", "text[]"),
    ("e", "mood"),
    ("ch", "character(5)"),
    ("vc", "character varying(10)"),
];

fn full_row() -> Value {
    json!({
        "id": 1, "b": true, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
        "f4": 0.25, "f8": 1.5e300, "n": "12345.678", "nu": "123456789012345678901234567890.123456789",
        "t": "Café \"Ô\"", "esc": "a\tb\nc\\d", "by": "Cv8=", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": "{\"a\": [1, 2]}", "jb": "{\"a\": [1, 2]}", "d": "2026-11-22", "tm": "13:04:05.123",
        "ttz": "13:04:05+02", "ts": "2026-11-22T13:04:05.5", "tstz": "2026-11-22T13:04:05.123456Z",
        "iv": "P1Y2M3DT4H5M6.5S", "ai": [1, 2, null], "at": [["a", "b"], [null, "NULL"]], "e": "happy",
        "ch": "ab   ", "vc": "xyz"
    })
}

fn null_row(id: i64) -> Value {
    let mut row = serde_json::Map::new();
    for (name, _) in COLUMNS {
        row.insert((*name).to_owned(), Value::Null);
    }
    row.insert("id".into(), json!(id));
    Value::Object(row)
}

async fn every_type(db: &TestDb) {
    let mut h = Harness::new(db, "types", &[]);
    h.register("types.1", &schema_doc("types.1", COLUMNS));
    h.start().await.unwrap();
    let topic = "pg.public.types";
    let s = Some("types.1");
    h.push(topic, json!({"id": 1}), Some(change("r", Value::Null, full_row())), s);
    h.push(topic, json!({"id": 2}), Some(change("c", Value::Null, null_row(2))), s);
    // Values only some databases hold.
    let mut nan = null_row(3);
    nan["f8"] = json!("NaN");
    nan["d"] = json!("-0043-03-15");
    h.push(topic, json!({"id": 3}), Some(change("c", Value::Null, nan)), s);
    h.commit().await.unwrap();

    let types = db.query(db.pick(
        "SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = 'types'::regclass AND attnum > 0",
        "SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ':', COLUMN_TYPE) ORDER BY ORDINAL_POSITION) FROM \
         information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'types'",
        "SELECT group_concat(name || ':' || type, ',') FROM pragma_table_info('types')",
    ));
    let expected = db.pick(
        "id:bigint,b:boolean,i2:smallint,i4:integer,i8:bigint,f4:real,f8:double precision,n:numeric(12,3),\
         nu:numeric,t:text,esc:text,by:bytea,u:uuid,j:json,jb:jsonb,d:date,tm:time without time zone,\
         ttz:time with time zone,ts:timestamp without time zone,tstz:timestamp with time zone,iv:interval,\
         ai:integer[],at:text[],e:text,ch:character(5),vc:text",
        "id:bigint(20),b:tinyint(1),i2:smallint(6),i4:int(11),i8:bigint(20),f4:float,f8:double,n:decimal(12,3),\
         nu:text,t:longtext,esc:longtext,by:longblob,u:char(36),j:longtext,jb:longtext,d:date,tm:time(6),\
         ttz:longtext,ts:datetime(6),tstz:datetime(6),iv:longtext,ai:longtext,at:longtext,e:longtext,ch:char(5),vc:longtext",
        "id:INTEGER,b:INTEGER,i2:INTEGER,i4:INTEGER,i8:INTEGER,f4:REAL,f8:REAL,n:TEXT,nu:TEXT,t:TEXT,esc:TEXT,\
         by:BLOB,u:TEXT,j:TEXT,jb:TEXT,d:TEXT,tm:TEXT,ttz:TEXT,ts:TEXT,tstz:TEXT,iv:TEXT,ai:TEXT,at:TEXT,e:TEXT,ch:TEXT,vc:TEXT",
    );
    assert_eq!(types, expected, "{}", db.name());

    // (column expression, PostgreSQL, MariaDB, SQLite)
    let checks: &[(&str, &str, &str, &str)] = &[
        ("b", "t", "1", "1"),
        ("i2", "-32768", "-32768", "-32768"),
        ("i4", "2147483647", "2147483647", "2147483647"),
        (
            "i8",
            "9223372036854775807",
            "9223372036854775807",
            "9223372036854775807",
        ),
        ("f4", "0.25", "0.25", "0.25"),
        ("f8 = 1.5e300", "t", "1", "1"),
        ("n", "12345.678", "12345.678", "12345.678"),
        (
            "nu",
            "123456789012345678901234567890.123456789",
            "123456789012345678901234567890.123456789",
            "123456789012345678901234567890.123456789",
        ),
        ("t", "Café \"Ô\"", "Café \"Ô\"", "Café \"Ô\""),
        ("length(esc)", "7", "7", "7"),
        (
            "replace(replace(esc, char(9), '<t>'), char(10), '<n>')",
            "",
            "a<t>b<n>c\\d",
            "a<t>b<n>c\\d",
        ),
        (
            "u",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        ("j", "{\"a\": [1, 2]}", "{\"a\": [1, 2]}", "{\"a\": [1, 2]}"),
        ("jb", "{\"a\": [1, 2]}", "{\"a\": [1, 2]}", "{\"a\": [1, 2]}"),
        ("d", "2026-11-22", "2026-11-22", "2026-11-22"),
        ("tm", "13:04:05.123", "13:04:05.123000", "13:04:05.123"),
        ("ttz", "13:04:05+02", "13:04:05+02", "13:04:05+02"),
        (
            "ts",
            "2026-11-22 13:04:05.5",
            "2026-11-22 13:04:05.500000",
            "2026-11-22T13:04:05.5",
        ),
        (
            "iv",
            "1 year 2 mons 3 days 04:05:06.5",
            "P1Y2M3DT4H5M6.5S",
            "P1Y2M3DT4H5M6.5S",
        ),
        ("ai", "{1,2,NULL}", "[1,2,null]", "[1,2,null]"),
        (
            "at",
            "{{a,b},{NULL,\"NULL\"}}",
            "[[\"a\",\"b\"],[null,\"NULL\"]]",
            "[[\"a\",\"b\"],[null,\"NULL\"]]",
        ),
        ("e", "happy", "happy", "happy"),
        // Blank-padded: trailing blanks do not count where the type is `char(n)`.
        ("ch = 'ab'", "t", "1", "0"),
        ("rtrim(ch)", "ab", "ab", "ab"),
        ("vc", "xyz", "xyz", "xyz"),
    ];
    for (expression, pg, my, lite) in checks {
        let expected = db.pick(pg, my, lite);
        if expected.is_empty() {
            continue;
        }
        let got = db.query(&format!("SELECT {expression} FROM types WHERE id = 1"));
        assert_eq!(got, expected, "{} column {expression}", db.name());
    }
    let esc = db.pick("replace(replace(esc, chr(9), '<t>'), chr(10), '<n>')", "", "");
    if !esc.is_empty() {
        assert_eq!(
            db.query(&format!("SELECT {esc} FROM types WHERE id = 1")),
            "a<t>b<n>c\\d"
        );
    }
    let bytes = db.pick("encode(\"by\", 'hex')", "hex(`by`)", "hex(\"by\")");
    assert_eq!(
        db.query(&format!("SELECT lower({bytes}) FROM types WHERE id = 1")),
        "0aff"
    );
    let tstz = db.pick(
        "to_char(tstz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        "DATE_FORMAT(tstz, '%Y-%m-%d %H:%i:%s.%f')",
        "tstz",
    );
    assert_eq!(
        db.query(&format!("SELECT {tstz} FROM types WHERE id = 1")),
        db.pick(
            "2026-11-22 13:04:05.123456",
            "2026-11-22 13:04:05.123456",
            "2026-11-22T13:04:05.123456Z"
        )
    );

    // The row of NULLs.
    let nulls = COLUMNS[1..]
        .iter()
        .map(|(name, _)| format!("{} IS NULL", db.q(name)))
        .collect::<Vec<_>>()
        .join(" AND ");
    assert_eq!(
        db.query(&format!("SELECT count(*) FROM types WHERE id = 2 AND {nulls}")),
        "1"
    );

    // NaN and a BC date: PostgreSQL and SQLite keep them, MariaDB cannot.
    let dead = h.dead_letters();
    match db {
        TestDb::MariaDb(_) => {
            assert_eq!(dead.len(), 1, "{dead:?}");
            assert!(
                dead[0].0.ends_with("@2") && dead[0].1.contains("cannot store"),
                "{dead:?}"
            );
            assert_eq!(db.query("SELECT count(*) FROM types WHERE id = 3"), "0");
        }
        _ => {
            assert!(dead.is_empty(), "{dead:?}");
            assert_eq!(
                db.query("SELECT f8, d FROM types WHERE id = 3"),
                db.pick("NaN|0044-03-15 BC", "", "NaN|-0043-03-15")
            );
        }
    }
}

#[test]
fn postgres_every_type() {
    run(async { every_type(&TestDb::postgres()).await });
}

#[test]
fn mariadb_every_type() {
    run(async { every_type(&TestDb::mariadb()).await });
}

#[test]
fn sqlite_every_type() {
    run(async { every_type(&TestDb::sqlite()).await });
}
