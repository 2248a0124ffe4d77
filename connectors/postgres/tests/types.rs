//! The value mapping checked against a real PostgreSQL 15: the type OIDs against
//! `pg_type`, the JSON of tricky values of every type against PostgreSQL's own JSON
//! conversion (`to_jsonb`), adjusted only for the differences TYPES.md documents, and the
//! COPY text parser against `COPY ... TO STDOUT`.
//!
//! Values reach our code exactly as pgoutput and COPY would send them: the type's output
//! function (`format('%s', c)`) in a session with the settings plexus sets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use plexus_connector_postgres::types::copy::{for_each_field, split_lines};
use plexus_connector_postgres::types::{PgType, write_json};
use plexus_tests::TempPostgres;
use serde_json::Value;

/// The session settings plexus sets on every connection that produces value texts.
const SESSION: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = iso_8601; \
                       SET extra_float_digits = 3; SET bytea_output = hex;";

fn query(pg: &TempPostgres, sql: &str) -> String {
    pg.psql("postgres", &format!("{SESSION} {sql}"))
        .unwrap_or_else(|e| panic!("{e}\nin: {sql}"))
}

/// Every built-in type `from_builtin` maps, by `pg_type.typname`.
fn expected_builtins() -> Vec<(&'static str, PgType)> {
    let other = |oid, name: &str| PgType::Other {
        oid,
        name: name.to_owned(),
    };
    vec![
        ("bool", PgType::Bool),
        ("bytea", PgType::Bytea),
        ("char", PgType::Text),
        ("name", PgType::Text),
        ("int8", PgType::Int8),
        ("int2", PgType::Int2),
        ("int4", PgType::Int4),
        ("text", PgType::Text),
        ("oid", PgType::Oid),
        ("json", PgType::Json),
        ("xml", other(142, "xml")),
        ("float4", PgType::Float4),
        ("float8", PgType::Float8),
        ("money", other(790, "money")),
        ("bpchar", PgType::Text),
        ("varchar", PgType::Text),
        ("date", PgType::Date),
        ("time", PgType::Time),
        ("timestamp", PgType::Timestamp),
        ("timestamptz", PgType::TimestampTz),
        ("interval", PgType::Interval),
        ("timetz", PgType::TimeTz),
        (
            "numeric",
            PgType::Numeric {
                precision: None,
                scale: None,
            },
        ),
        ("uuid", PgType::Uuid),
        ("jsonb", PgType::Jsonb),
        ("box", other(603, "box")),
        ("cidr", other(650, "cidr")),
        ("inet", other(869, "inet")),
        ("macaddr", other(829, "macaddr")),
        ("macaddr8", other(774, "macaddr8")),
        ("bit", other(1560, "bit")),
        ("varbit", other(1562, "bit varying")),
    ]
}

#[test]
fn builtin_oids_match_pg_type() {
    let pg = TempPostgres::start().unwrap();
    let rows = query(
        &pg,
        "SELECT oid, typname, typarray, format_type(oid, NULL) FROM pg_type \
         WHERE typnamespace = 'pg_catalog'::regnamespace ORDER BY oid",
    );
    let expected = expected_builtins();
    let mut found = Vec::new();
    for row in rows.lines() {
        let [oid, name, array, format_type] = row.split('|').collect::<Vec<_>>()[..] else {
            panic!("unexpected row {row:?}");
        };
        let (oid, array): (u32, u32) = (oid.parse().unwrap(), array.parse().unwrap());
        let mapped = PgType::from_builtin(oid, -1);
        match expected.iter().find(|(typname, _)| *typname == name) {
            Some((_, ty)) => {
                assert_eq!(mapped.as_ref(), Some(ty), "{name} ({oid})");
                assert_eq!(
                    PgType::from_builtin(array, -1),
                    Some(PgType::Array(Box::new(ty.clone()))),
                    "_{name} ({array})"
                );
                if *ty != PgType::Text {
                    assert_eq!(ty.sql_name(), format_type, "{name}");
                    assert_eq!(
                        PgType::Array(Box::new(ty.clone())).sql_name(),
                        format!("{format_type}[]"),
                        "_{name}"
                    );
                }
                found.push(name.to_owned());
            }
            // Not mapped: must not be mistaken for a mapped type (arrays are checked above).
            None if !name.starts_with('_') => assert_eq!(mapped, None, "{name} ({oid}) is not mapped"),
            None => {}
        }
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(name, _)| !found.iter().any(|f| f == name))
        .collect();
    assert!(missing.is_empty(), "not in pg_type: {missing:?}");

    // Array elements are split on the element type's `typdelim`: only box (and its array
    // type, which copies it) has another one than `,`.
    let other_delimiters = query(
        &pg,
        "SELECT typname, typdelim FROM pg_type WHERE typdelim <> ',' ORDER BY typname",
    );
    assert_eq!(other_delimiters, "_box|;\nbox|;");
}

#[test]
fn numeric_type_modifiers_match_pg_attribute() {
    let pg = TempPostgres::start().unwrap();
    let rows = query(
        &pg,
        "CREATE TABLE n (a numeric(5,-2), b numeric(10,2), c numeric, d numeric(1000,1000), \
                         e numeric(3,5), f numeric(10,2)[], g numeric(38,0), h numeric(1,-1000)); \
         SELECT attname, atttypid, atttypmod, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'n'::regclass AND attnum > 0 ORDER BY attnum",
    );
    let numeric = |precision, scale| PgType::Numeric {
        precision: Some(precision),
        scale: Some(scale),
    };
    let expected = [
        ("a", numeric(5, -2), "Decimal128(7, 0)"),
        ("b", numeric(10, 2), "Decimal128(10, 2)"),
        (
            "c",
            PgType::Numeric {
                precision: None,
                scale: None,
            },
            "Utf8",
        ),
        ("d", numeric(1000, 1000), "Utf8"),
        ("e", numeric(3, 5), "Decimal128(5, 5)"),
        ("f", PgType::Array(Box::new(numeric(10, 2))), "List(Decimal128(10, 2))"),
        ("g", numeric(38, 0), "Decimal128(38, 0)"),
        ("h", numeric(1, -1000), "Utf8"),
    ];
    let rows: Vec<_> = rows.lines().collect();
    assert_eq!(rows.len(), expected.len());
    for (row, (column, ty, arrow)) in rows.iter().zip(expected) {
        let [name, oid, typmod, format_type] = row.split('|').collect::<Vec<_>>()[..] else {
            panic!("unexpected row {row:?}");
        };
        assert_eq!(name, column);
        let mapped = PgType::from_builtin(oid.parse().unwrap(), typmod.parse().unwrap());
        assert_eq!(mapped.as_ref(), Some(&ty), "{row}");
        assert_eq!(ty.sql_name(), format_type, "{row}");
        assert_eq!(ty.arrow_type(), arrow, "{row}");
    }
    // numeric(5,-2) rounds to hundreds: the Arrow type holds its largest value.
    assert_eq!(query(&pg, "SELECT 9999949::numeric(5,-2)"), "9999900");
}

/// A column type and SQL literals of tricky values for it; every table also gets a NULL.
struct Case {
    sql_type: &'static str,
    values: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        sql_type: "boolean",
        values: &["true", "false"],
    },
    Case {
        sql_type: "smallint",
        values: &["0", "-32768", "32767"],
    },
    Case {
        sql_type: "integer",
        values: &["-2147483648", "2147483647", "42"],
    },
    Case {
        sql_type: "bigint",
        values: &["-9223372036854775808", "9223372036854775807"],
    },
    Case {
        sql_type: "oid",
        values: &["0", "4294967295"],
    },
    Case {
        sql_type: "real",
        values: &[
            "0.1",
            "'-0'",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "3.4028235e38",
            "1e-45",
            "1e15",
        ],
    },
    Case {
        sql_type: "double precision",
        values: &[
            "0.1",
            "1.5e300",
            "-1e-300",
            "'NaN'",
            "'-Infinity'",
            "5e-324",
            "1e15",
            "123456789.123",
            "1e16",
        ],
    },
    Case {
        sql_type: "numeric",
        values: &[
            "123456789012345678901234567890.123456789",
            "-0.000001",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "0",
            "1e-20",
            "12.50",
        ],
    },
    Case {
        sql_type: "numeric(10,2)",
        values: &["12.5", "-99999999.99", "'NaN'"],
    },
    Case {
        sql_type: "numeric(5,-2)",
        values: &["12345", "-9999949"],
    },
    Case {
        sql_type: "numeric(3,5)",
        values: &["0.00123"],
    },
    Case {
        sql_type: "text",
        values: &[
            "''",
            "'plain'",
            r"E'tab\there'",
            r"E'new\nline'",
            r"E'cr\rx'",
            r#"'quote " and backslash \'"#,
            r"E'ctl\x01\x1f\x7f'",
            "'unicode é 𝄞 中文'",
            "'  padded  '",
            "'NULL'",
            r"E'\\N'",
            r#"repeat(E'x"\\\n', 3000)"#,
        ],
    },
    Case {
        sql_type: "character varying(5)",
        values: &["'abc'", r#"'é"\'"#],
    },
    Case {
        sql_type: "character(4)",
        values: &["'ab'", "'abcd'", "''"],
    },
    Case {
        sql_type: "\"char\"",
        values: &["'a'", "'\"'"],
    },
    Case {
        sql_type: "name",
        values: &["'a name'"],
    },
    Case {
        sql_type: "bytea",
        values: &[
            r"'\x'",
            r"'\x00ff00'",
            r"'\x0a'",
            "decode('0001020304', 'hex')",
            "decode(repeat('00ff7f80', 600), 'hex')",
        ],
    },
    Case {
        sql_type: "uuid",
        values: &[
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'00000000-0000-0000-0000-000000000000'",
        ],
    },
    Case {
        sql_type: "json",
        values: &[
            r#"'{"a": "x\"y", "b": [1, 2.5, null], "c": {"d": "é\\n\ttab"}}'"#,
            r#"'"just a string"'"#,
            "'123'",
            "'null'",
            "'[]'",
        ],
    },
    Case {
        sql_type: "jsonb",
        values: &[
            r#"'{"a": "x\"y", "b": [1, 2.5, null], "c": {"d": "é\\n"}}'"#,
            r#"'"just a string"'"#,
            "'true'",
        ],
    },
    Case {
        sql_type: "date",
        values: &[
            "'2026-11-22'",
            "'0044-03-15 BC'",
            "'0001-01-01 BC'",
            "'0005-02-29 BC'",
            "'4713-01-01 BC'",
            "'5874897-12-31'",
            "'2000-02-29'",
            "'infinity'",
            "'-infinity'",
        ],
    },
    Case {
        sql_type: "time",
        values: &["'13:04:05.123'", "'00:00:00'", "'24:00:00'", "'23:59:59.999999'"],
    },
    Case {
        sql_type: "time with time zone",
        values: &[
            "'13:04:05+02'",
            "'13:04:05.5-09:30'",
            "'00:00:00+14'",
            "'12:00:00+05:30:15'",
        ],
    },
    Case {
        sql_type: "timestamp",
        values: &[
            "'2026-11-22 13:04:05.5'",
            "'0044-03-15 10:00:00 BC'",
            "'4713-01-01 00:00:00 BC'",
            "'294276-12-31 23:59:59.999999'",
            "'1999-12-31 23:59:59.000001'",
            "'infinity'",
            "'-infinity'",
        ],
    },
    Case {
        sql_type: "timestamp with time zone",
        values: &[
            "'2026-11-22 13:04:05.123456+00'",
            "'2026-11-22 01:00:00+05:30'",
            "'2026-01-01 00:30:00+01'",
            "'2025-12-31 23:30:00-01'",
            "'2024-02-29 23:59:59.999999-11'",
            "'0044-03-15 10:00:00+00 BC'",
            "'0001-01-01 00:00:00+00'",
            "'0001-01-01 00:30:00+00 BC'",
            "'1800-01-01 00:00:00+00'",
            "'4713-01-01 00:00:00+00 BC'",
            "'9999-12-31 23:30:00+00'",
            "'infinity'",
            "'-infinity'",
        ],
    },
    Case {
        sql_type: "interval",
        values: &[
            "'1 year 2 months 3 days 04:05:06.5'",
            "'0'",
            "'-1 year -2 months +3 days -04:05:06'",
            "'1 week'",
            "'-0.000001 seconds'",
        ],
    },
    Case {
        sql_type: "mood",
        values: &["'sad'", r#"'very "happy"'"#, "'é'"],
    },
    Case {
        sql_type: "positive",
        values: &["42"],
    },
    Case {
        sql_type: "inet",
        values: &["'192.168.0.1/24'", "'::1'"],
    },
    Case {
        sql_type: "xml",
        values: &[r#"'<a b="c">x &amp; y</a>'"#],
    },
    Case {
        sql_type: "box",
        values: &["'((0,0),(1,1))'"],
    },
    Case {
        sql_type: "integer[]",
        values: &[
            "'{1,2,NULL}'",
            "'{{1,2},{3,4}}'",
            "'[0:1]={1,2}'",
            "'{}'",
            "'[-2:-1][3:4]={{1,NULL},{3,4}}'",
        ],
    },
    Case {
        sql_type: "text[]",
        values: &[
            r#"ARRAY['a b', 'c"d', NULL, 'NULL', 'null', '', 'x\y', ' s ', E'tab\t', 'é', '{}', ',', E'new\nline']"#,
            r#"'{{"a","b"},{NULL,"NULL"}}'"#,
        ],
    },
    Case {
        sql_type: "numeric(10,2)[]",
        values: &["'{1.5,NaN,NULL}'", "'{{1,2},{3,4}}'"],
    },
    Case {
        sql_type: "numeric[]",
        values: &["'{123456789012345678901234567890.123456789,Infinity,-0.5}'"],
    },
    Case {
        sql_type: "double precision[]",
        values: &["'{1.5e300,NaN,-Infinity,0.1,NULL}'"],
    },
    Case {
        sql_type: "bytea[]",
        values: &[r"ARRAY['\x00ff'::bytea, NULL, '\x']"],
    },
    Case {
        sql_type: "boolean[]",
        values: &["'{t,f,NULL}'"],
    },
    Case {
        sql_type: "date[]",
        values: &[r#"'{2026-11-22,"0044-03-15 BC",infinity}'"#],
    },
    Case {
        sql_type: "timestamp with time zone[]",
        values: &["ARRAY['2026-11-22 13:04:05.5+00'::timestamptz, '0044-03-15 10:00:00+00 BC', 'infinity', NULL]"],
    },
    Case {
        sql_type: "timestamp[]",
        values: &["ARRAY['2026-11-22 13:04:05.5'::timestamp, '0044-03-15 10:00:00 BC', '-infinity']"],
    },
    Case {
        sql_type: "json[]",
        values: &[r#"ARRAY['{"a": "x\"y"}'::json, '[1,2]', NULL]"#],
    },
    Case {
        sql_type: "jsonb[]",
        values: &[r#"ARRAY['{"a": "x\"y"}'::jsonb, '"s"']"#],
    },
    Case {
        sql_type: "uuid[]",
        values: &["ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]"],
    },
    Case {
        sql_type: "interval[]",
        values: &["ARRAY['1 day'::interval, '-1 year 2 seconds']"],
    },
    Case {
        sql_type: "mood[]",
        values: &[r#"'{sad,"very \"happy\"",NULL}'"#],
    },
    Case {
        sql_type: "box[]",
        values: &["ARRAY['((0,0),(1,1))'::box, '((2,2),(3,3))']"],
    },
    Case {
        sql_type: "character(4)[]",
        values: &["'{ab,abcd}'"],
    },
    Case {
        sql_type: "inet[]",
        values: &["'{192.168.0.1/24,::1}'"],
    },
    Case {
        sql_type: "time with time zone[]",
        values: &["ARRAY['13:04:05+02'::timetz]"],
    },
];

const TYPES: &str = "CREATE TYPE mood AS ENUM ('sad', 'very \"happy\"', 'é'); \
                     CREATE DOMAIN positive AS integer CHECK (VALUE > 0);";

/// Creates table `t<index>` with column `c` for each case, holding its values and a NULL.
fn create_tables(pg: &TempPostgres) {
    let mut sql = TYPES.to_owned();
    for (index, case) in CASES.iter().enumerate() {
        sql.push_str(&format!(
            " CREATE TABLE t{index} (id serial, c {}); INSERT INTO t{index} (c) VALUES",
            case.sql_type
        ));
        for value in case.values {
            sql.push_str(&format!(" (({value})::{}),", case.sql_type));
        }
        sql.push_str(" (NULL);");
    }
    query(pg, &sql);
}

/// The type of column `c` of `table`, as the connector builds it: built in, or read from
/// the catalog (enums, domains, arrays of enums).
fn column_type(pg: &TempPostgres, table: &str) -> PgType {
    let row = query(
        pg,
        &format!("SELECT atttypid, atttypmod FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = 'c'"),
    );
    let (oid, typmod) = row.split_once('|').unwrap();
    catalog_type(pg, oid.parse().unwrap(), typmod.parse().unwrap())
}

fn catalog_type(pg: &TempPostgres, oid: u32, typmod: i32) -> PgType {
    if let Some(ty) = PgType::from_builtin(oid, typmod) {
        return ty;
    }
    let row = query(
        pg,
        &format!("SELECT typname, typtype, typelem, typbasetype, typtypmod FROM pg_type WHERE oid = {oid}"),
    );
    let [name, kind, element, base, base_typmod] = row.split('|').collect::<Vec<_>>()[..] else {
        panic!("unexpected pg_type row {row:?}");
    };
    match (kind, element) {
        ("e", _) => PgType::Enum(name.to_owned()),
        ("d", _) => catalog_type(pg, base.parse().unwrap(), base_typmod.parse().unwrap()),
        (_, element) if element != "0" => PgType::Array(Box::new(catalog_type(pg, element.parse().unwrap(), typmod))),
        _ => PgType::Other {
            oid,
            name: name.to_owned(),
        },
    }
}

/// The value's text as pgoutput sends it and PostgreSQL's own JSON for it, by row.
fn texts_and_postgres_json(pg: &TempPostgres, table: &str, ty: &PgType) -> Vec<(Option<String>, Value)> {
    // Comparable forms of PostgreSQL's JSON: numeric digits as text (a JSON number would
    // lose them in serde_json), timestamptz as the UTC wall time PostgreSQL computes.
    let postgres_json = match ty {
        PgType::Numeric { .. } => "to_jsonb(to_jsonb(c)::text)",
        PgType::Array(element) if matches!(**element, PgType::Numeric { .. }) => "to_jsonb(to_jsonb(c)::text)",
        PgType::TimestampTz => "to_jsonb(c AT TIME ZONE 'UTC')",
        _ => "to_jsonb(c)",
    };
    let rows = query(
        pg,
        &format!(
            "SELECT json_build_array(CASE WHEN c IS NOT NULL THEN format('%s', c) END, {postgres_json}) \
             FROM {table} ORDER BY id"
        ),
    );
    rows.lines()
        .map(|row| {
            let Value::Array(pair) = serde_json::from_str(row).unwrap() else {
                panic!("{row}")
            };
            let [text, postgres] = <[Value; 2]>::try_from(pair).unwrap();
            let text = text.as_str().map(str::to_owned);
            let postgres = match (ty, postgres) {
                (PgType::Numeric { .. } | PgType::Array(_), Value::String(json))
                    if postgres_json.contains("::text") =>
                {
                    numbers_as_strings(&json)
                }
                (_, postgres) => postgres,
            };
            (text, postgres)
        })
        .collect()
}

#[test]
fn values_match_postgres_own_json() {
    let pg = TempPostgres::start().unwrap();
    create_tables(&pg);
    for (index, case) in CASES.iter().enumerate() {
        let table = format!("t{index}");
        let ty = column_type(&pg, &table);
        let rows = texts_and_postgres_json(&pg, &table, &ty);
        assert_eq!(rows.len(), case.values.len() + 1, "{}", case.sql_type);
        for (text, postgres) in rows {
            let Some(text) = text else {
                assert_eq!(postgres, Value::Null);
                continue;
            };
            let mut out = Vec::new();
            write_json(&ty, text.as_bytes(), &mut out).unwrap_or_else(|e| panic!("{} ({ty:?}): {e}", case.sql_type));
            let ours: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!(
                    "{}: invalid JSON {:?}: {e}",
                    case.sql_type,
                    String::from_utf8_lossy(&out)
                )
            });
            if let Err(difference) = same(&ty, &ours, &postgres) {
                panic!(
                    "{} value {text:?}: ours {ours}, PostgreSQL's {postgres}: {difference}",
                    case.sql_type
                );
            }
        }
    }
}

#[test]
fn timestamptz_in_other_zones_is_converted_to_utc() {
    let pg = TempPostgres::start().unwrap();
    let values = [
        "2026-11-22 13:04:05.123456+00",
        "2026-01-01 00:30:00+00",
        "2025-12-31 23:30:00+00",
        "2024-02-29 23:59:59.999999+00",
        "2024-03-01 00:00:00+00",
        "1800-01-01 00:00:00+00",
        "1900-06-30 12:00:00+00",
        "0001-01-01 00:00:00+00",
        "0044-03-15 10:00:00+00 BC",
        "0001-12-31 23:59:59+00 BC",
        "9999-12-31 23:30:00+00",
        "infinity",
    ];
    let rows: Vec<String> = values.iter().map(|v| format!("('{v}'::timestamptz)")).collect();
    query(
        &pg,
        &format!(
            "CREATE TABLE tz (id serial, c timestamptz); INSERT INTO tz (c) VALUES {};",
            rows.join(", ")
        ),
    );
    for zone in [
        "Asia/Kolkata",
        "America/St_Johns",
        "Europe/Amsterdam",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "Australia/Lord_Howe",
        "America/Los_Angeles",
    ] {
        let output = query(
            &pg,
            &format!(
                "SET TimeZone = '{zone}'; \
                 SELECT json_build_array(format('%s', c), to_jsonb(c AT TIME ZONE 'UTC')) FROM tz ORDER BY id"
            ),
        );
        let mut offsets = 0;
        for row in output.lines() {
            let pair: (String, String) = serde_json::from_str(row).unwrap();
            let (text, utc) = pair;
            offsets += usize::from(!text.contains("+00"));
            let mut out = Vec::new();
            write_json(&PgType::TimestampTz, text.as_bytes(), &mut out).unwrap();
            let ours: String = serde_json::from_slice(&out).unwrap();
            let expected = if utc == "infinity" {
                utc.clone()
            } else {
                format!("{}Z", iso_from_postgres(&utc))
            };
            assert_eq!(ours, expected, "{text} in {zone}");
        }
        assert!(
            offsets > values.len() / 2,
            "{zone}: the texts were not at other offsets"
        );
    }
}

#[test]
fn copy_text_reads_back_exactly() {
    let pg = TempPostgres::start().unwrap();
    query(
        &pg,
        r#"CREATE TABLE nasty (t text, b bytea, a text[], id int);
           INSERT INTO nasty VALUES
             (E'tab\there', '\x00ff', ARRAY['a b', NULL, 'NULL'], 1),
             (E'new\nline\r\nwindows', '\x', '{}', 2),
             (E'back\\slash \\N \\.', '\x5c4e', ARRAY[E'x\\y', 'c"d'], 3),
             ('\N', NULL, NULL, 4),
             ('', decode(repeat('0a09', 100), 'hex'), ARRAY[''], 5),
             (NULL, '\x0d0a', ARRAY[E'\t'], 6),
             (E'ctl \x01\x02\x08\x0b\x0c\x1b\x7f', '\x08', '{"{}"}', 7),
             ('unicode é 𝄞 中文 ' || repeat('ü', 1000), '\x', '{é}', 8);"#,
    );
    let copied = query(&pg, "COPY (SELECT t, b, a, id FROM nasty ORDER BY id) TO STDOUT");
    // psql's output is trimmed; each row ends in a digit, so only the last newline went.
    let data = format!("{copied}\n").into_bytes();
    let expected = query(
        &pg,
        "SELECT json_build_array(encode(convert_to(t, 'UTF8'), 'hex'), encode(b, 'hex'), to_jsonb(a), id) \
         FROM nasty ORDER BY id",
    );
    let expected: Vec<Value> = expected.lines().map(|row| serde_json::from_str(row).unwrap()).collect();

    // Feed the data in small chunks, as it arrives from the network.
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    for chunk in data.chunks(7) {
        pending.extend_from_slice(chunk);
        let (complete, consumed) = split_lines(&pending);
        lines.extend(complete.map(<[u8]>::to_vec));
        pending.drain(..consumed);
    }
    assert!(pending.is_empty());
    assert_eq!(lines.len(), expected.len());

    let text_array = PgType::Array(Box::new(PgType::Text));
    for (line, expected) in lines.iter().zip(&expected) {
        let mut fields: Vec<Option<Cow<'_, [u8]>>> = Vec::new();
        let count = for_each_field(line, |index, value| {
            assert_eq!(index, fields.len());
            fields.push(value);
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 4, "{:?}", String::from_utf8_lossy(line));
        let [t, b, a, id] = &fields[..] else { unreachable!() };

        assert_eq!(
            t.as_deref().map(hex),
            expected[0].as_str().map(str::to_owned),
            "text of {expected}"
        );

        let bytea = b.as_deref().map(|b| {
            let mut out = Vec::new();
            write_json(&PgType::Bytea, b, &mut out).unwrap();
            let base64: String = serde_json::from_slice(&out).unwrap();
            hex(&BASE64.decode(base64).unwrap())
        });
        assert_eq!(bytea, expected[1].as_str().map(str::to_owned), "bytea of {expected}");

        let array = a.as_deref().map(|a| {
            let mut out = Vec::new();
            write_json(&text_array, a, &mut out).unwrap();
            serde_json::from_slice::<Value>(&out).unwrap()
        });
        assert_eq!(array.unwrap_or(Value::Null), expected[2], "array of {expected}");

        let mut out = Vec::new();
        write_json(&PgType::Int4, id.as_deref().unwrap(), &mut out).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected[3]);
    }
}

/// Counts the allocations of the current thread, to check that the common types are
/// written without any.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: allocations during thread teardown, after the counter is gone, are fine.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// The only `unsafe` here: a test-only allocator that forwards to the system allocator.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `dealloc`, and `new_size` comes from the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn common_values_are_written_without_allocating() {
    let values: [(PgType, &[u8]); 10] = [
        (PgType::Int8, b"-1234567890"),
        (PgType::Int4, b"42"),
        (PgType::Bool, b"t"),
        (PgType::Float8, b"1.5e+300"),
        (PgType::Text, b"plain text without escapes"),
        (PgType::Text, b"text with \"quotes\" and \\ and \n"),
        (
            PgType::Numeric {
                precision: Some(10),
                scale: Some(2),
            },
            b"12.50",
        ),
        (PgType::TimestampTz, b"2026-11-22 13:04:05.123456+00"),
        (PgType::Timestamp, b"2026-11-22 13:04:05.5"),
        (PgType::Bytea, b"\\x0aff00"),
    ];
    let mut out = Vec::with_capacity(4096);
    let before = ALLOCATIONS.with(Cell::get);
    for (ty, text) in &values {
        write_json(ty, text, &mut out).unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "{}", String::from_utf8_lossy(&out));
    // And the counter counts: a value that must allocate (an escaped array element) does.
    write_json(&PgType::Array(Box::new(PgType::Text)), br#"{"a\"b"}"#, &mut out).unwrap();
    assert!(ALLOCATIONS.with(Cell::get) > before);
}

/// Whether our JSON `ours` for a value of `ty` is PostgreSQL's `postgres` but for the
/// documented differences.
fn same(ty: &PgType, ours: &Value, postgres: &Value) -> Result<(), String> {
    match (ty, ours, postgres) {
        (_, Value::Null, Value::Null) => Ok(()),
        (PgType::Array(element), Value::Array(ours), Value::Array(postgres)) => {
            if ours.len() != postgres.len() {
                return Err(format!("{} elements, PostgreSQL has {}", ours.len(), postgres.len()));
            }
            ours.iter().zip(postgres).try_for_each(|(o, p)| same(element, o, p))
        }
        (PgType::Float4 | PgType::Float8, Value::Number(ours), Value::Number(postgres)) => {
            // PostgreSQL's to_jsonb turns floats into numerics: compare the doubles.
            let (ours, postgres) = (ours.as_f64().unwrap(), postgres.as_f64().unwrap());
            let same = match ty {
                PgType::Float4 => ours as f32 == postgres as f32,
                _ => ours == postgres,
            };
            same.then_some(()).ok_or_else(|| "different numbers".to_owned())
        }
        // PostgreSQL's JSON has oids as strings; ours are numbers, as for the integers.
        (PgType::Oid, Value::Number(ours), Value::String(postgres)) => (ours.to_string() == *postgres)
            .then_some(())
            .ok_or_else(|| "different oid".to_owned()),
        (PgType::Bytea, Value::String(ours), Value::String(postgres)) => {
            let decoded = BASE64.decode(ours).map_err(|e| e.to_string())?;
            let postgres_hex = postgres.strip_prefix("\\x").ok_or("not hex")?;
            (hex(&decoded) == postgres_hex)
                .then_some(())
                .ok_or_else(|| "different bytes".to_owned())
        }
        (PgType::Json | PgType::Jsonb, Value::String(ours), postgres) => {
            let parsed: Value = serde_json::from_str(ours).map_err(|e| e.to_string())?;
            (&parsed == postgres)
                .then_some(())
                .ok_or_else(|| "different JSON".to_owned())
        }
        (PgType::Date | PgType::Timestamp | PgType::TimestampTz, Value::String(ours), Value::String(postgres)) => {
            let expected = match postgres.as_str() {
                "infinity" | "-infinity" => postgres.clone(),
                // Arrays come at +00:00 (the session is in UTC), columns as UTC wall times.
                _ if *ty == PgType::TimestampTz => {
                    format!("{}Z", iso_from_postgres(&postgres.replacen("+00:00", "", 1)))
                }
                _ => iso_from_postgres(postgres),
            };
            (*ours == expected)
                .then_some(())
                .ok_or_else(|| format!("expected {expected:?}"))
        }
        (_, ours, postgres) => (ours == postgres).then_some(()).ok_or_else(|| "different".to_owned()),
    }
}

/// PostgreSQL's JSON date or time (`0044-03-15T10:00:00 BC`, `12345-01-01`) in ISO-8601
/// with astronomical years (`-0043-03-15T10:00:00`, `+12345-01-01`), computed separately
/// from the code under test.
fn iso_from_postgres(text: &str) -> String {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (year, rest) = body.split_once('-').unwrap();
    let year: i64 = year.parse().unwrap();
    let year = if bc { 1 - year } else { year };
    let year = if year < 0 {
        format!("-{:04}", -year)
    } else if year > 9999 {
        format!("+{year}")
    } else {
        format!("{year:04}")
    };
    format!("{year}-{rest}")
}

/// PostgreSQL's JSON text with every bare number made a string of the same digits, for
/// comparing numerics digit by digit (the only strings in it are `NaN` and the infinities).
fn numbers_as_strings(json: &str) -> Value {
    let mut quoted = String::new();
    let mut in_number = false;
    let mut in_string = false;
    for c in json.chars() {
        let number_char = c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E');
        if !in_string && number_char && !in_number {
            quoted.push('"');
            in_number = true;
        } else if in_number && !number_char {
            quoted.push('"');
            in_number = false;
        }
        if c == '"' {
            in_string = !in_string;
        }
        quoted.push(c);
    }
    if in_number {
        quoted.push('"');
    }
    serde_json::from_str(&quoted).unwrap_or_else(|e| panic!("{quoted}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
