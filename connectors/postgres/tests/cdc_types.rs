//! Every documented column type through the `postgres-cdc` source against a real
//! PostgreSQL 15, on both paths: the snapshot (`COPY`, op `r`) and the stream (pgoutput,
//! op `c`, `u`, `d`). Each value's JSON is checked against the representation TYPES.md
//! documents, computed by PostgreSQL itself (`to_jsonb`, the type's text output,
//! `encode(..., 'base64')`), not by the crate's converter; and a row streamed must have
//! exactly the `after` object its snapshot twin had.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// `context` goes unused: the test builds its own, to read its dead letters.
#[allow(dead_code)]
mod common;

use std::sync::Arc;

use common::{CONNECTOR, Collector, changes, count_ops, settings};
use plexus_connector::{CollectDeadLetters, ConnectorFactory, SourceContext};
use plexus_connector_postgres::PostgresCdcFactory;
use plexus_tests::TempPostgres;
use serde_json::{Map, Value as Json};

/// The session settings the source documents for both of its paths (TYPES.md), so that
/// the texts PostgreSQL computes the expectations from are the ones the source reads.
const SESSION: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = iso_8601; \
                       SET extra_float_digits = 3; SET bytea_output = hex;";

/// How PostgreSQL computes the documented JSON of a column `c`, and how to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `to_jsonb(c)`, equal as JSON: integers, booleans, strings, enums, domains, arrays.
    ToJsonb,
    /// `to_jsonb(c::text)`: the type's text output as a string (numeric, time, timetz,
    /// interval, json, jsonb).
    Text,
    /// The text output: `"NaN"`, `"Infinity"`, `"-Infinity"` as strings, otherwise a
    /// number that is the same double (so the shortest digits, not more, not fewer).
    Float,
    /// The bytes in base64, standard alphabet, padded.
    Base64,
    /// `to_jsonb(c)` (ISO-8601 with a `T`) with years made astronomical (`BC`).
    DateTime,
    /// The UTC wall time `to_jsonb(c AT TIME ZONE 'UTC')` with years made astronomical,
    /// and a `Z`.
    DateTimeUtc,
}

/// The typed columns (after `id int PRIMARY KEY`): name, SQL type, expectation.
const COLUMNS: &[(&str, &str, Expect)] = &[
    ("c_smallint", "smallint", Expect::ToJsonb),
    ("c_integer", "integer", Expect::ToJsonb),
    ("c_bigint", "bigint", Expect::ToJsonb),
    ("c_numeric", "numeric", Expect::Text),
    ("c_numeric_12_2", "numeric(12,2)", Expect::Text),
    ("c_real", "real", Expect::Float),
    ("c_double", "double precision", Expect::Float),
    ("c_text", "text", Expect::ToJsonb),
    ("c_varchar", "character varying(10)", Expect::ToJsonb),
    ("c_char", "character(4)", Expect::ToJsonb),
    ("c_boolean", "boolean", Expect::ToJsonb),
    ("c_bytea", "bytea", Expect::Base64),
    ("c_uuid", "uuid", Expect::ToJsonb),
    ("c_json", "json", Expect::Text),
    ("c_jsonb", "jsonb", Expect::Text),
    ("c_date", "date", Expect::DateTime),
    ("c_time", "time", Expect::Text),
    ("c_timetz", "time with time zone", Expect::Text),
    ("c_timestamp", "timestamp", Expect::DateTime),
    ("c_timestamptz", "timestamp with time zone", Expect::DateTimeUtc),
    ("c_interval", "interval", Expect::Text),
    ("c_int_array", "integer[]", Expect::ToJsonb),
    ("c_int_matrix", "integer[][]", Expect::ToJsonb),
    ("c_text_array", "text[]", Expect::ToJsonb),
    ("c_mood", "mood", Expect::ToJsonb),
    ("c_mood_array", "mood[]", Expect::ToJsonb),
    ("c_positive", "positive", Expect::ToJsonb),
];

const TYPES: &str = "CREATE TYPE mood AS ENUM ('sad', 'very \"happy\"', 'é'); \
                     CREATE DOMAIN positive AS integer CHECK (VALUE > 0);";

/// Rows by id, one SQL literal per column of [`COLUMNS`]; row 2 is all NULLs.
const ROWS: &[(i32, &[&str])] = &[
    (
        1,
        &[
            "-32768",
            "2147483647",
            "9223372036854775807",
            "12345678901234567890.123456789",
            "12.5",
            "0.1",
            "1.5e300",
            r#"E'Café "Ô" \\ back\\slash\nnew line\ttab\r\x01 𝄞 中文'"#,
            r#"'é"\ab'"#,
            "'ab'",
            "true",
            r"'\x00ff0a'",
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
            r#"'{"b": [1, 2.5, null],  "a": "x\"y\\n"}'"#,
            r#"'{"b": [1, 2.5, null],  "a": "x\"y\\n"}'"#,
            "'2026-11-22'",
            "'13:04:05.123'",
            "'13:04:05+02'",
            "'2026-11-22 13:04:05.5'",
            "'2026-11-22 13:04:05.123456+05:30'",
            "'1 year 2 months 3 days 04:05:06.5'",
            "'{1,NULL,3}'",
            "'{{1,2},{3,NULL}}'",
            r#"ARRAY['a b', 'c"d', NULL, 'NULL', 'null', '', 'x\y', E'new\nline', '{}', ',', 'é']"#,
            r#"'very "happy"'"#,
            "'{sad,NULL,é}'",
            "42",
        ],
    ),
    (2, &[]),
    (
        3,
        &[
            "32767",
            "-2147483648",
            "-9223372036854775808",
            "'NaN'",
            "-0.5",
            "'NaN'",
            "'-Infinity'",
            "''",
            "''",
            "'abcd'",
            "false",
            r"'\x'",
            "'00000000-0000-0000-0000-000000000000'",
            r#"'"just a string"'"#,
            r#"'[1, "two", {"three": 3.0}]'"#,
            "'0044-03-15 BC'",
            "'24:00:00'",
            "'12:00:00.5-09:30'",
            "'infinity'",
            "'0044-03-15 10:00:00+00 BC'",
            "'-1 year -2 months +3 days -04:05:06'",
            "'{}'",
            "'[0:1]={7,8}'",
            r#"'{{"a","b"},{NULL,"NULL"}}'"#,
            "'é'",
            "'{}'",
            "1",
        ],
    ),
    (
        4,
        &[
            "0",
            "0",
            "0",
            "'-Infinity'",
            "'NaN'",
            "'Infinity'",
            "1::float8 / 3",
            r#"'\N'"#,
            "'NULL'",
            "''",
            "true",
            "decode(repeat('00ff7f80', 100), 'hex')",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "'null'",
            "'{}'",
            "'infinity'",
            "'00:00:00'",
            "'00:00:00+14'",
            "'0044-03-15 10:00:00.000001 BC'",
            "'-infinity'",
            "'0'",
            "'{NULL}'",
            "'{{1},{2}}'",
            "'{}'",
            "'sad'",
            "'{NULL}'",
            "2147483647",
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_reads_the_same_in_the_snapshot_and_the_stream() {
    // Server defaults unlike the source's session settings: a path that does not set them
    // would write other texts.
    let pg = TempPostgres::start_with(&[
        "DateStyle = 'SQL, DMY'",
        "TimeZone = 'Asia/Kolkata'",
        "IntervalStyle = 'postgres_verbose'",
        "extra_float_digits = 0",
        "bytea_output = 'escape'",
    ])
    .unwrap();
    let columns: Vec<String> = COLUMNS.iter().map(|(name, ty, _)| format!("{name} {ty}")).collect();
    let mut sql = format!(
        "{TYPES} CREATE TABLE typed (id int PRIMARY KEY, {}); ALTER TABLE typed REPLICA IDENTITY FULL;",
        columns.join(", ")
    );
    for (id, values) in ROWS {
        sql.push_str(&insert(*id, values));
    }
    pg.psql("postgres", &sql).unwrap();
    let expected = expected_rows(&pg, "id < 100");
    assert_eq!(expected.len(), ROWS.len());

    let letters = Arc::new(CollectDeadLetters::default());
    let ctx = SourceContext::new(CONNECTOR, 0, Arc::default(), letters.clone());
    let mut source = PostgresCdcFactory::new()
        .create_source(&settings(&pg, &["typed"]))
        .unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collector = Collector::new(Vec::new());

    // The snapshot.
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "r") == ROWS.len())
        .await;
    let reads = changes(&collector.log);
    assert_eq!(reads.len(), ROWS.len(), "{reads:?}");
    let mut snapshot_afters = Vec::new();
    for ((key, value), (id, row)) in reads.iter().zip(&expected) {
        let value = value.as_ref().unwrap();
        assert_eq!(key.as_deref(), Some(format!("{{\"id\":{id}}}").as_str()));
        assert_eq!(value["op"], "r");
        assert_eq!(value["before"], Json::Null);
        assert_eq!(value["source"]["snapshot"], "true");
        check_row(&value["after"], *id, row, "snapshot");
        snapshot_afters.push(value["after"].clone());
    }

    // The same values, inserted while streaming, under other ids.
    let names: Vec<&str> = COLUMNS.iter().map(|(name, _, _)| *name).collect();
    pg.psql(
        "postgres",
        &format!(
            "INSERT INTO typed (id, {0}) SELECT id + 100, {0} FROM typed ORDER BY id",
            names.join(", ")
        ),
    )
    .unwrap();
    collector.log.clear();
    collector
        .poll_until(source.as_mut(), &ctx, |c| count_ops(&c.log, "c") == ROWS.len())
        .await;
    let inserts = changes(&collector.log);
    assert_eq!(inserts.len(), ROWS.len(), "{inserts:?}");
    for (((key, value), (id, row)), snapshot_after) in inserts.iter().zip(&expected).zip(&snapshot_afters) {
        let value = value.as_ref().unwrap();
        let id = id + 100;
        assert_eq!(key.as_deref(), Some(format!("{{\"id\":{id}}}").as_str()));
        assert_eq!((value["op"].as_str(), &value["before"]), (Some("c"), &Json::Null));
        assert_eq!(value["source"]["snapshot"], "false");
        check_row(&value["after"], id, row, "stream");
        assert_eq!(
            without_id(&value["after"]),
            without_id(snapshot_after),
            "row {id}: the stream and the snapshot disagree"
        );
    }

    // An update of a typed row (the full old row as `before`, REPLICA IDENTITY FULL) and
    // a delete of another, in one transaction.
    pg.psql(
        "postgres",
        "BEGIN;
         UPDATE typed SET c_text = E'upd\\\\ \"ated\"\\n', c_numeric = 0.000001, c_real = '-0', c_bytea = '\\x0a',
                          c_timestamptz = '2024-02-29 23:59:59.999999-11', c_interval = '1 week',
                          c_int_array = '{{5,NULL},{6,7}}', c_text_array = NULL, c_mood = 'sad', c_jsonb = '[]'
          WHERE id = 101;
         DELETE FROM typed WHERE id = 103;
         COMMIT;",
    )
    .unwrap();
    let updated = expected_rows(&pg, "id = 101");
    collector.log.clear();
    collector
        .poll_until(source.as_mut(), &ctx, |c| changes(&c.log).len() >= 3)
        .await;
    let events = changes(&collector.log);
    assert_eq!(events.len(), 3, "update, delete, tombstone: {events:?}");
    let update = events[0].1.as_ref().unwrap();
    assert_eq!(events[0].0.as_deref(), Some("{\"id\":101}"));
    assert_eq!(update["op"], "u");
    check_row(&update["before"], 101, &expected[0].1, "update before");
    check_row(&update["after"], 101, &updated[0].1, "update after");
    let delete = events[1].1.as_ref().unwrap();
    assert_eq!(events[1].0.as_deref(), Some("{\"id\":103}"));
    assert_eq!((delete["op"].as_str(), &delete["after"]), (Some("d"), &Json::Null));
    check_row(&delete["before"], 103, &expected[2].1, "delete before");
    assert_eq!(
        (events[2].0.as_deref(), &events[2].1),
        (Some("{\"id\":103}"), &None),
        "the tombstone"
    );
    assert_eq!(delete["source"]["txId"], update["source"]["txId"]);

    assert!(letters.take().is_empty(), "no value was refused");
    source.stop().await.unwrap();
}

fn insert(id: i32, values: &[&str]) -> String {
    let values: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, ty, _))| format!("({})::{ty}", values.get(i).copied().unwrap_or("NULL")))
        .collect();
    format!(" INSERT INTO typed VALUES ({id}, {});", values.join(", "))
}

/// The documented JSON of each typed column of the rows matching `filter`, by id,
/// computed by PostgreSQL in a session with the source's settings.
fn expected_rows(pg: &TempPostgres, filter: &str) -> Vec<(i64, Map<String, Json>)> {
    let fields: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _, expect)| {
            let c = name;
            let json = match expect {
                Expect::ToJsonb | Expect::DateTime => format!("to_jsonb({c})"),
                Expect::Text | Expect::Float => format!("to_jsonb({c}::text)"),
                Expect::Base64 => format!("to_jsonb(translate(encode({c}, 'base64'), E'\\n', ''))"),
                Expect::DateTimeUtc => format!("to_jsonb({c} AT TIME ZONE 'UTC')"),
            };
            format!("'{name}', {json}")
        })
        .collect();
    let rows = pg
        .psql(
            "postgres",
            &format!(
                "{SESSION} SELECT id, json_build_object({}) FROM typed WHERE {filter} ORDER BY id",
                fields.join(", ")
            ),
        )
        .unwrap();
    rows.lines()
        .map(|line| {
            let (id, json) = line.split_once('|').unwrap();
            let Json::Object(row) = serde_json::from_str(json).unwrap() else {
                panic!("{json}")
            };
            (id.parse().unwrap(), row)
        })
        .collect()
}

/// Checks a `before` or `after` object: the id, then every column against PostgreSQL's
/// documented value, and no other field.
fn check_row(ours: &Json, id: i64, expected: &Map<String, Json>, path: &str) {
    let Json::Object(ours) = ours else {
        panic!("{path}: row {id} is not an object: {ours}")
    };
    assert_eq!(ours.get("id"), Some(&Json::from(id)), "{path}");
    assert_eq!(
        ours.len(),
        COLUMNS.len() + 1,
        "{path}: every column, no other: {ours:?}"
    );
    for (name, ty, expect) in COLUMNS {
        let (ours, postgres) = (&ours[*name], &expected[*name]);
        if let Err(why) = same(*expect, ours, postgres) {
            panic!("{path}: row {id} column {name} ({ty}): ours {ours}, PostgreSQL's {postgres}: {why}");
        }
    }
}

/// Whether our JSON is PostgreSQL's as TYPES.md documents it.
fn same(expect: Expect, ours: &Json, postgres: &Json) -> Result<(), String> {
    if postgres.is_null() {
        return if ours.is_null() {
            Ok(())
        } else {
            Err("NULL expected".into())
        };
    }
    let expected = match expect {
        Expect::ToJsonb | Expect::Text | Expect::Base64 => postgres.clone(),
        Expect::Float => {
            let text = postgres.as_str().ok_or("not a text")?;
            if matches!(text, "NaN" | "Infinity" | "-Infinity") {
                postgres.clone()
            } else {
                let number: f64 = text.parse().map_err(|e| format!("{text}: {e}"))?;
                return match ours.as_f64() {
                    // Equal doubles: the digits read back to PostgreSQL's float, exactly.
                    Some(ours) if ours == number => Ok(()),
                    _ => Err(format!("the number {text} expected")),
                };
            }
        }
        Expect::DateTime | Expect::DateTimeUtc => {
            let text = postgres.as_str().ok_or("not a text")?;
            Json::String(match text {
                "infinity" | "-infinity" => text.to_owned(),
                _ if expect == Expect::DateTimeUtc => format!("{}Z", astronomical(text)),
                _ => astronomical(text),
            })
        }
    };
    if *ours == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}"))
    }
}

/// PostgreSQL's JSON date or timestamp (`0044-03-15T10:00:00 BC`) with ISO-8601's
/// astronomical years (`-0043-03-15T10:00:00`), `+` for years after 9999.
fn astronomical(text: &str) -> String {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (year, rest) = body.split_once('-').unwrap();
    let year: i64 = year.parse().unwrap();
    let year = if bc { 1 - year } else { year };
    match year {
        ..0 => format!("-{:04}-{rest}", -year),
        10_000.. => format!("+{year}-{rest}"),
        _ => format!("{year:04}-{rest}"),
    }
}

fn without_id(row: &Json) -> Json {
    let mut row = row.clone();
    row.as_object_mut().unwrap().remove("id");
    row
}
