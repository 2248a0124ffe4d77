//! JSON values of change events converted to what each database takes for a column
//! type (the encodings are in `connectors/postgres/TYPES.md`, the mapping in TYPES.md).

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value;

use crate::config::DialectKind;
use crate::schema::ColumnType;

/// One value, ready to be staged.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Text in the form the target parses for the column's type (numbers with their
    /// exact digits, times, JSON, PostgreSQL array literals).
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    /// Roughly how many bytes it takes on the wire.
    pub fn size(&self) -> usize {
        match self {
            Cell::Text(t) => t.len() + 4,
            Cell::Bytes(b) => b.len() + 4,
            _ => 8,
        }
    }
}

/// A cell as a buffered row keeps it: borrowed from the row's encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl Cell {
    pub fn as_cell_ref(&self) -> CellRef<'_> {
        match self {
            Cell::Null => CellRef::Null,
            Cell::Bool(b) => CellRef::Bool(*b),
            Cell::Int(n) => CellRef::Int(*n),
            Cell::Float(f) => CellRef::Float(*f),
            Cell::Text(t) => CellRef::Text(t),
            Cell::Bytes(b) => CellRef::Bytes(b),
        }
    }
}

impl CellRef<'_> {
    pub fn to_cell(self) -> Cell {
        match self {
            CellRef::Null => Cell::Null,
            CellRef::Bool(b) => Cell::Bool(b),
            CellRef::Int(n) => Cell::Int(n),
            CellRef::Float(f) => Cell::Float(f),
            CellRef::Text(t) => Cell::Text(t.to_owned()),
            CellRef::Bytes(b) => Cell::Bytes(b.to_vec()),
        }
    }

    /// Roughly how many bytes it takes on the wire.
    pub fn size(self) -> usize {
        match self {
            CellRef::Text(t) => t.len() + 4,
            CellRef::Bytes(b) => b.len() + 4,
            _ => 8,
        }
    }
}

/// Like [`to_cell`], taking the value: a string stored as it is moves into the cell
/// instead of being copied.
pub fn into_cell(ty: &ColumnType, value: Value, dialect: DialectKind) -> Result<Cell, String> {
    match value {
        Value::String(s) if stored_as_is(ty, &s, dialect) => Ok(Cell::Text(s)),
        other => to_cell(ty, &other, dialect),
    }
}

/// Whether [`to_cell`] stores the string `s` unchanged, as text.
fn stored_as_is(ty: &ColumnType, s: &str, dialect: DialectKind) -> bool {
    match ty {
        ColumnType::Json
        | ColumnType::Jsonb
        | ColumnType::Text
        | ColumnType::Char(_)
        | ColumnType::Uuid
        | ColumnType::Time
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => true,
        ColumnType::Decimal { .. } | ColumnType::Numeric => is_decimal(s),
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => match dialect {
            DialectKind::Sqlite => true,
            DialectKind::Postgres => !s.starts_with(['-', '+']),
            DialectKind::MySql => false,
        },
        _ => false,
    }
}

/// Converts `value` for a column of type `ty` in `dialect`; the error says why it
/// cannot be stored (the record then goes to the dead letters).
pub fn to_cell(ty: &ColumnType, value: &Value, dialect: DialectKind) -> Result<Cell, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let wrong = |expected: &str| format!("expected {expected}, found {}", short(value));
    match ty {
        ColumnType::Bool => match value {
            Value::Bool(b) => Ok(Cell::Bool(*b)),
            _ => Err(wrong("true or false")),
        },
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => {
            let n = value.as_i64().ok_or_else(|| wrong("an integer"))?;
            let (min, max) = match ty {
                ColumnType::Int16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                ColumnType::Int32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => (i64::MIN, i64::MAX),
            };
            if n < min || n > max {
                return Err(format!("{n} is out of the column's range {min}..={max}"));
            }
            Ok(Cell::Int(n))
        }
        ColumnType::Float32 | ColumnType::Float64 => match value {
            Value::Number(n) => n.as_f64().map(Cell::Float).ok_or_else(|| wrong("a number")),
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => match dialect {
                DialectKind::MySql => Err(format!("MySQL cannot store the float {s}")),
                _ => Ok(Cell::Text(s.clone())),
            },
            _ => Err(wrong("a number")),
        },
        ColumnType::Decimal { .. } | ColumnType::Numeric => match value {
            Value::String(s) if is_decimal(s) => Ok(Cell::Text(s.clone())),
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => match dialect {
                DialectKind::MySql => Err(format!("MySQL's DECIMAL cannot store {s}")),
                _ => Ok(Cell::Text(s.clone())),
            },
            Value::Number(n) => Ok(Cell::Text(n.to_string())),
            _ => Err(wrong("a decimal number as a string")),
        },
        ColumnType::Bytes => match value {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Cell::Bytes)
                .map_err(|e| format!("expected base64 bytes: {e}")),
            _ => Err(wrong("base64 bytes as a string")),
        },
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => match value {
            Value::String(s) => date_time(s, dialect).map(Cell::Text),
            _ => Err(wrong("a date or time as a string")),
        },
        ColumnType::Array(element) => match value {
            Value::Array(items) => match dialect {
                DialectKind::Postgres => {
                    let mut out = String::new();
                    postgres_array(element, items, &mut out)?;
                    Ok(Cell::Text(out))
                }
                // JSON arrays: the elements as the envelope has them.
                _ => Ok(Cell::Text(value.to_string())),
            },
            _ => Err(wrong("an array")),
        },
        ColumnType::Json | ColumnType::Jsonb => match value {
            // The envelope carries JSON columns as strings holding the JSON text.
            Value::String(s) => Ok(Cell::Text(s.clone())),
            other => Ok(Cell::Text(other.to_string())),
        },
        ColumnType::Text
        | ColumnType::Char(_)
        | ColumnType::Uuid
        | ColumnType::Time
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Other(_) => match value {
            Value::String(s) => Ok(Cell::Text(s.clone())),
            other => Ok(Cell::Text(other.to_string())),
        },
    }
}

/// A date or timestamp in the form `dialect` reads.
fn date_time(text: &str, dialect: DialectKind) -> Result<String, String> {
    match dialect {
        DialectKind::Sqlite => Ok(text.to_owned()),
        DialectKind::Postgres => Ok(postgres_years(text)),
        DialectKind::MySql => {
            if text.starts_with(['-', '+']) || text.contains("infinity") {
                return Err(format!("MySQL's DATE and DATETIME cannot store `{text}`"));
            }
            Ok(text.trim_end_matches('Z').replacen('T', " ", 1))
        }
    }
}

/// ISO-8601's signed years in PostgreSQL's form: `-0043-03-15` is `0044-03-15 BC`,
/// `+12345-01-01` is `12345-01-01`.
fn postgres_years(text: &str) -> String {
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => return text.to_owned(),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(year) = rest[..digits].parse::<i64>() else {
        return text.to_owned();
    };
    if sign > 0 {
        return rest.to_owned();
    }
    // Astronomical year -n is (n + 1) BC.
    format!("{:04}{} BC", year + 1, &rest[digits..])
}

/// A PostgreSQL array literal: `{1,2,NULL}`, `{{"a","b"},{NULL,"NULL"}}`.
fn postgres_array(element: &ColumnType, items: &[Value], out: &mut String) -> Result<(), String> {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => postgres_array(element, inner, out)?,
            other => {
                let text = match to_cell(element, other, DialectKind::Postgres)? {
                    Cell::Null => {
                        out.push_str("NULL");
                        continue;
                    }
                    Cell::Bool(b) => (if b { "t" } else { "f" }).to_owned(),
                    Cell::Int(n) => n.to_string(),
                    Cell::Float(f) => float_text(f),
                    Cell::Text(t) => t,
                    Cell::Bytes(b) => hex_bytea(&b),
                };
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(())
}

/// A float's shortest text that reads back to the same value.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        // `{:e}` keeps 1e300 short; PostgreSQL and MySQL read both forms.
        let plain = format!("{f}");
        let exp = format!("{f:e}");
        if exp.len() < plain.len() { exp } else { plain }
    }
}

/// `bytea`'s hex input form: `\x0aff`.
pub fn hex_bytea(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn is_decimal(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-' || b == b'+')
        && body.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
}

/// A value shortened for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        let cut = (0..=60).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn taking_a_value_converts_it_as_borrowing_does() {
        let types = [
            ColumnType::Bool,
            ColumnType::Int32,
            ColumnType::Float64,
            ColumnType::Decimal {
                precision: 10,
                scale: 2,
            },
            ColumnType::Numeric,
            ColumnType::Text,
            ColumnType::Char(3),
            ColumnType::Bytes,
            ColumnType::Uuid,
            ColumnType::Json,
            ColumnType::Jsonb,
            ColumnType::Date,
            ColumnType::Time,
            ColumnType::TimeTz,
            ColumnType::Timestamp,
            ColumnType::TimestampTz,
            ColumnType::Interval,
            ColumnType::Array(Box::new(ColumnType::Int32)),
            ColumnType::Other("inet".into()),
        ];
        let values = [
            json!(null),
            json!(true),
            json!(7),
            json!(1.5),
            json!("12.50"),
            json!("NaN"),
            json!("text"),
            json!("AAEC"),
            json!("2026-01-01T00:00:00Z"),
            json!("-0043-03-15"),
            json!("+12345-01-01"),
            json!("{\"a\":1}"),
            json!([1, 2]),
            json!({"a": 1}),
        ];
        for dialect in [DialectKind::Postgres, DialectKind::MySql, DialectKind::Sqlite] {
            for ty in &types {
                for value in &values {
                    assert_eq!(
                        into_cell(ty, value.clone(), dialect),
                        to_cell(ty, value, dialect),
                        "{ty:?} {value} {dialect:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn postgres_arrays_and_years() {
        let ints = ColumnType::Array(Box::new(ColumnType::Int32));
        assert_eq!(
            to_cell(&ints, &json!([[1, 2], [null, 4]]), DialectKind::Postgres).unwrap(),
            Cell::Text("{{\"1\",\"2\"},{NULL,\"4\"}}".into())
        );
        let texts = ColumnType::Array(Box::new(ColumnType::Text));
        assert_eq!(
            to_cell(&texts, &json!(["a\"b", "NULL", null]), DialectKind::Postgres).unwrap(),
            Cell::Text("{\"a\\\"b\",\"NULL\",NULL}".into())
        );
        assert_eq!(postgres_years("-0043-03-15"), "0044-03-15 BC");
        assert_eq!(postgres_years("+12345-01-01"), "12345-01-01");
        assert_eq!(postgres_years("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn values_that_do_not_fit_say_why() {
        let err = to_cell(&ColumnType::Int16, &json!(70000), DialectKind::Postgres).unwrap_err();
        assert!(err.contains("out of"), "{err}");
        let err = to_cell(&ColumnType::Int64, &json!("x"), DialectKind::Sqlite).unwrap_err();
        assert!(err.contains("integer"), "{err}");
        let err = to_cell(&ColumnType::Float64, &json!("NaN"), DialectKind::MySql).unwrap_err();
        assert!(err.contains("NaN"), "{err}");
        assert_eq!(
            to_cell(
                &ColumnType::TimestampTz,
                &json!("2026-01-01T00:00:00.5Z"),
                DialectKind::MySql
            )
            .unwrap(),
            Cell::Text("2026-01-01 00:00:00.5".into())
        );
        assert_eq!(
            to_cell(&ColumnType::Bytes, &json!("Cv8="), DialectKind::Sqlite).unwrap(),
            Cell::Bytes(vec![0x0a, 0xff])
        );
        assert_eq!(float_text(1.5e300), "1.5e300");
        assert_eq!(float_text(0.1), "0.1");
    }
}
