//! Files written through the local-directory store, read back by pyarrow and DuckDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use plexus_connector::Sink;

/// Every PostgreSQL type whose Arrow type is not `Utf8` (connectors/postgres/TYPES.md),
/// plus text.
const ALL_TYPES: &str = r#"{"id":"all-v1","table":"public.all_types","columns":[
    {"name":"id","arrow":"Int64"},
    {"name":"b","arrow":"Boolean"},
    {"name":"i2","arrow":"Int16"},
    {"name":"i4","arrow":"Int32"},
    {"name":"i8","arrow":"Int64"},
    {"name":"oid","arrow":"UInt32"},
    {"name":"f4","arrow":"Float32"},
    {"name":"f8","arrow":"Float64"},
    {"name":"num","arrow":"Decimal128(10, 2)"},
    {"name":"big","arrow":"Decimal128(38, 0)"},
    {"name":"txt","arrow":"Utf8"},
    {"name":"bin","arrow":"Binary"},
    {"name":"d","arrow":"Date32"},
    {"name":"t","arrow":"Time64(Microsecond)"},
    {"name":"ts","arrow":"Timestamp(Microsecond, None)"},
    {"name":"tstz","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"},
    {"name":"ints","arrow":"List(Int32)"},
    {"name":"nums","arrow":"List(Decimal128(10, 2))"}]}"#;

const ROW_1: &str = r#"{"id":1,"b":true,"i2":-32768,"i4":42,"i8":9223372036854775807,"oid":4294967295,"f4":0.1,"f8":1.5e+300,"num":"12.50","big":"12345678901234567890123456789012345678","txt":"Café \"Ô\"\n","bin":"Cv8=","d":"2026-11-22","t":"13:04:05.123","ts":"2026-11-22T13:04:05.5","tstz":"2026-11-22T13:04:05.123456Z","ints":[1,2,null],"nums":["1.25",null]}"#;
const ROW_2: &str = r#"{"id":2,"b":null,"i2":null,"i4":null,"i8":null,"oid":null,"f4":null,"f8":null,"num":null,"big":null,"txt":null,"bin":null,"d":null,"t":null,"ts":null,"tstz":null,"ints":null,"nums":null}"#;
const ROW_3: &str = r#"{"id":3,"b":false,"i2":32767,"i4":-1,"i8":-9223372036854775808,"oid":0,"f4":"NaN","f8":"-Infinity","num":"-99999999.99","big":"-1","txt":"","bin":"","d":"-0043-03-15","t":"00:00:00","ts":"1970-01-01T00:00:00","tstz":"1999-12-31T23:59:59.999999Z","ints":[],"nums":[]}"#;

fn envelope(op: &str, before: &str, after: &str, offset: i64) -> String {
    format!(
        r#"{{"before":{before},"after":{after},"source":{{"connector":"postgres","lsn":{lsn},"seq":{offset},"ts_ms":1767225600000}},"op":"{op}","ts_ms":1767225600{offset:03}}}"#,
        lsn = 1000 + offset
    )
}

async fn write_all_types(dir: &std::path::Path, settings: &[(&str, plexus_config::Value)]) {
    let store = local_store(dir).await;
    let (ctx, letters, schemas) = context("types");
    schemas.insert("all-v1", ALL_TYPES);
    let mut sink = sink(&store, settings);
    assert_eq!(sink.start(&ctx).await.unwrap(), None);
    let records = vec![
        record("pg.all", 0, 0, 0, Some(envelope("c", "null", ROW_1, 0)), Some("all-v1")),
        record("pg.all", 0, 1, 0, Some(envelope("r", "null", ROW_2, 1)), Some("all-v1")),
        record("pg.all", 0, 2, 0, Some(envelope("u", ROW_2, ROW_3, 2)), Some("all-v1")),
        record("pg.all", 0, 3, 0, Some(envelope("d", ROW_1, "null", 3)), Some("all-v1")),
        record("pg.all", 0, 4, 0, None, Some("all-v1")),
    ];
    write_all(&mut sink, &ctx, records).await;
    sink.stop().await.unwrap();
    assert!(letters.take().is_empty());
}

const PYARROW_TYPES: &str = r#"
import sys, pyarrow.parquet as pq, pyarrow.dataset as ds
files = sorted(str(p) for p in __import__('pathlib').Path(sys.argv[1]).rglob('*.parquet') if '_plexus' not in str(p))
assert len(files) == 1, files
table = pq.read_table(files[0])
meta = pq.ParquetFile(files[0]).metadata
print("rows", table.num_rows, "row_groups", meta.num_row_groups, "codec", meta.row_group(0).column(0).compression)
print("stats", meta.row_group(0).column(0).statistics.has_min_max)
schema = pq.ParquetFile(files[0]).schema
for field in table.schema:
    column = table.column(field.name)
    try:
        values = column.to_pylist()
    except OverflowError:  # dates before year 1: their day numbers
        values = column.cast("int32").to_pylist()
    print(field.name, "|", field.type, "|", " | ".join(repr(v) for v in values))
print("physical num", schema.column(schema.names.index("num")).logical_type)
"#;

const DUCKDB_VALUES: &str = r#"
import sys, duckdb
glob = sys.argv[1] + "/**/*.parquet"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
rows = con.execute(f"""
    SELECT id, typeof(num), CAST(num AS VARCHAR), CAST(big AS VARCHAR), typeof(tstz), CAST(tstz AS VARCHAR),
           typeof(ts), CAST(ts AS VARCHAR), CAST(d AS VARCHAR), CAST(t AS VARCHAR), hex(bin), CAST(ints AS VARCHAR),
           CAST(nums AS VARCHAR), oid, typeof(oid), f4, f8, __op, CAST(__ts_ms AS VARCHAR), __lsn, __offset
    FROM read_parquet('{glob}') ORDER BY __offset""").fetchall()
for row in rows:
    print(" | ".join(str(v) for v in row))
"#;

#[tokio::test]
async fn every_type_reads_back_in_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    write_all_types(dir.path(), &[]).await;
    assert_eq!(landed(dir.path()).len(), 4);

    let out = python(PYARROW_TYPES, &[dir.path()]);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name} |")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    assert!(out.contains("rows 4 row_groups 1 codec ZSTD"), "{out}");
    assert!(out.contains("stats True"), "{out}");
    assert_eq!(line("id"), "id | int64 | 1 | 2 | 3 | 1");
    assert_eq!(line("b"), "b | bool | True | None | False | True");
    assert_eq!(line("i2"), "i2 | int16 | -32768 | None | 32767 | -32768");
    assert_eq!(
        line("i8"),
        "i8 | int64 | 9223372036854775807 | None | -9223372036854775808 | 9223372036854775807"
    );
    assert_eq!(line("oid"), "oid | uint32 | 4294967295 | None | 0 | 4294967295");
    assert!(
        line("f4").starts_with("f4 | float | 0.10000000149011612 | None | nan |"),
        "{}",
        line("f4")
    );
    assert_eq!(line("f8"), "f8 | double | 1.5e+300 | None | -inf | 1.5e+300");
    assert_eq!(
        line("num"),
        "num | decimal128(10, 2) | Decimal('12.50') | None | Decimal('-99999999.99') | Decimal('12.50')"
    );
    assert!(
        line("big").contains("Decimal('12345678901234567890123456789012345678')"),
        "{}",
        line("big")
    );
    assert_eq!(line("txt"), r#"txt | string | 'Café "Ô"\n' | None | '' | 'Café "Ô"\n'"#);
    assert_eq!(line("bin"), r"bin | binary | b'\n\xff' | None | b'' | b'\n\xff'");
    // 2026-11-22 and -0043-03-15 (44 BC) as days since 1970-01-01.
    assert_eq!(line("d"), "d | date32[day] | 20779 | None | -735160 | 20779");
    assert_eq!(
        line("t"),
        "t | time64[us] | datetime.time(13, 4, 5, 123000) | None | datetime.time(0, 0) | datetime.time(13, 4, 5, 123000)"
    );
    assert_eq!(
        line("ts"),
        "ts | timestamp[us] | datetime.datetime(2026, 11, 22, 13, 4, 5, 500000) | None | datetime.datetime(1970, 1, 1, 0, 0) | datetime.datetime(2026, 11, 22, 13, 4, 5, 500000)"
    );
    assert!(
        line("tstz").starts_with("tstz | timestamp[us, tz=UTC] | datetime.datetime(2026, 11, 22, 13, 4, 5, 123456, tzinfo=zoneinfo.ZoneInfo(key='UTC')) |"),
        "{}",
        line("tstz")
    );
    assert!(line("ints").starts_with("ints | list<"), "{}", line("ints"));
    assert!(
        line("ints").ends_with("| [1, 2, None] | None | [] | [1, 2, None]"),
        "{}",
        line("ints")
    );
    assert!(line("nums").contains("[Decimal('1.25'), None]"), "{}", line("nums"));
    assert_eq!(line("__op"), "__op | string | 'c' | 'r' | 'u' | 'd'");
    assert!(line("__ts_ms").starts_with("__ts_ms | timestamp[us, tz=UTC] | datetime.datetime(2026, 1, 1, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')) |"), "{}", line("__ts_ms"));
    assert_eq!(line("__lsn"), "__lsn | int64 | 1000 | 1001 | 1002 | 1003");
    assert_eq!(line("__seq"), "__seq | int64 | 0 | 1 | 2 | 3");
    assert_eq!(line("__partition"), "__partition | int32 | 0 | 0 | 0 | 0");
    assert_eq!(line("__offset"), "__offset | int64 | 0 | 1 | 2 | 3");
    assert!(out.contains("physical num Decimal(precision=10, scale=2)"), "{out}");

    let out = python(DUCKDB_VALUES, &[dir.path()]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(
        rows[0],
        "1 | DECIMAL(10,2) | 12.50 | 12345678901234567890123456789012345678 | TIMESTAMP WITH TIME ZONE | \
         2026-11-22 13:04:05.123456+00 | TIMESTAMP | 2026-11-22 13:04:05.5 | 2026-11-22 | 13:04:05.123 | 0AFF | \
         [1, 2, NULL] | [1.25, NULL] | 4294967295 | UINTEGER | 0.10000000149011612 | 1.5e+300 | c | \
         2026-01-01 00:00:00+00 | 1000 | 0"
    );
    assert!(
        rows[1].starts_with("2 | DECIMAL(10,2) | None | None | TIMESTAMP WITH TIME ZONE | None |"),
        "{}",
        rows[1]
    );
    assert!(rows[2].contains("| -99999999.99 | -1 |"), "{}", rows[2]);
    assert!(rows[2].contains("| 1999-12-31 23:59:59.999999+00 |"), "{}", rows[2]);
    assert!(rows[2].contains("| nan | -inf | u |"), "{}", rows[2]);
    // A delete lands its `before` image.
    assert!(rows[3].starts_with("1 | DECIMAL(10,2) | 12.50 |"), "{}", rows[3]);
    assert!(rows[3].contains("| d |"), "{}", rows[3]);
}

const DUCKDB_WHOLE: &str = r#"
import sys, duckdb
glob = sys.argv[1] + "/**/*.parquet"
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for row in con.execute(f"""
    SELECT op, before.id, after.id, CAST(after.num AS VARCHAR), source.connector, source.lsn, source.seq,
           CAST(source.ts_ms AS VARCHAR), CAST(ts_ms AS VARCHAR), __offset
    FROM read_parquet('{glob}') ORDER BY __offset""").fetchall():
    print(" | ".join(str(v) for v in row))
"#;

#[tokio::test]
async fn whole_envelope_keeps_nested_structs() {
    let dir = tempfile::tempdir().unwrap();
    write_all_types(
        dir.path(),
        &[("envelope", "whole".into()), ("compression", "snappy".into())],
    )
    .await;
    let out = python(DUCKDB_WHOLE, &[dir.path()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "c | None | 1 | 12.50 | postgres | 1000 | 0 | 2026-01-01 00:00:00+00 | 2026-01-01 00:00:00+00 | 0",
            "r | None | 2 | None | postgres | 1001 | 1 | 2026-01-01 00:00:00+00 | 2026-01-01 00:00:00.001+00 | 1",
            "u | 2 | 3 | -99999999.99 | postgres | 1002 | 2 | 2026-01-01 00:00:00+00 | 2026-01-01 00:00:00.002+00 | 2",
            "d | 1 | None | None | postgres | 1003 | 3 | 2026-01-01 00:00:00+00 | 2026-01-01 00:00:00.003+00 | 3",
        ],
        "{out}"
    );
    let codec = python(
        "import sys, pathlib, pyarrow.parquet as pq\n\
         f = [p for p in pathlib.Path(sys.argv[1]).rglob('*.parquet')][0]\n\
         print(pq.ParquetFile(f).metadata.row_group(0).column(0).compression)\n",
        &[dir.path()],
    );
    assert_eq!(codec.trim(), "SNAPPY");
}
