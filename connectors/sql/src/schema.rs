//! Column types: read from the registered schema documents (or inferred from JSON),
//! mapped to each database's types (see TYPES.md), and compared when a schema changes.

use serde::Deserialize;

use crate::config::DialectKind;

/// The type of a column, independent of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `numeric(p,s)`.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// `numeric` without precision: any number of digits, `NaN`, infinities.
    Numeric,
    Text,
    /// `character(n)`: blank-padded to `n` characters, trailing blanks insignificant.
    Char(u32),
    Bytes,
    Uuid,
    Json,
    Jsonb,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    Interval,
    Array(Box<ColumnType>),
    /// A type the target has that the sink does not map (seen in a catalog, or a
    /// source type such as `inet`, stored as text).
    Other(String),
}

/// A column of a table, as the records describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub key: bool,
}

/// The indexes of the key columns of `columns`.
pub fn key_indexes(columns: &[Column]) -> Vec<usize> {
    columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect()
}

/// A schema document as sources register it (see `plexus_connector::Schemas`).
#[derive(Debug, Deserialize)]
struct Document {
    columns: Vec<DocumentColumn>,
}

#[derive(Debug, Deserialize)]
struct DocumentColumn {
    name: String,
    #[serde(default, rename = "type")]
    sql: Option<String>,
    #[serde(default)]
    arrow: Option<String>,
    #[serde(default)]
    key: bool,
}

/// Reads a registered schema document into columns.
pub fn columns_from_document(document: &[u8]) -> Result<Vec<Column>, String> {
    let document: Document = serde_json::from_slice(document).map_err(|e| format!("not a schema document: {e}"))?;
    if document.columns.is_empty() {
        return Err("the schema document has no columns".into());
    }
    let mut columns: Vec<Column> = Vec::with_capacity(document.columns.len());
    for c in document.columns {
        if c.name.is_empty() || c.name.starts_with("__") {
            return Err(format!(
                "column `{}`: names starting with `__` are the sink's own",
                c.name
            ));
        }
        if columns.iter().any(|k| k.name == c.name) {
            return Err(format!("two columns named `{}`", c.name));
        }
        let ty = match (&c.sql, &c.arrow) {
            (Some(sql), _) => ColumnType::from_source_sql(sql),
            (None, Some(arrow)) => ColumnType::from_arrow(arrow),
            (None, None) => ColumnType::Text,
        };
        columns.push(Column {
            name: c.name,
            ty,
            key: c.key,
        });
    }
    Ok(columns)
}

/// The type of a column of a record that names no schema, from one of its values.
pub fn infer(value: &serde_json::Value) -> ColumnType {
    match value {
        serde_json::Value::Bool(_) => ColumnType::Bool,
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int64,
        serde_json::Value::Number(_) => ColumnType::Float64,
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => ColumnType::Jsonb,
        serde_json::Value::String(_) | serde_json::Value::Null => ColumnType::Text,
    }
}

impl ColumnType {
    /// From the SQL name a source registers (PostgreSQL's `format_type`, as
    /// `connectors/postgres/TYPES.md` lists them). Enums and types the sink does not
    /// know are text.
    pub fn from_source_sql(sql: &str) -> ColumnType {
        let sql = sql.trim().to_ascii_lowercase();
        if let Some(element) = sql.strip_suffix("[]") {
            return ColumnType::Array(Box::new(ColumnType::from_source_sql(element)));
        }
        if let Some(length) = ["character(", "char(", "bpchar("]
            .iter()
            .find_map(|prefix| sql.strip_prefix(prefix))
            .and_then(|r| r.strip_suffix(')'))
        {
            return length.trim().parse().map_or(ColumnType::Text, ColumnType::Char);
        }
        if let Some(args) = sql.strip_prefix("numeric(").and_then(|r| r.strip_suffix(')')) {
            let (p, s) = args.split_once(',').unwrap_or((args, "0"));
            return match (p.trim().parse::<u32>(), s.trim().parse::<i64>()) {
                (Ok(precision), Ok(scale)) if (0..=i64::from(precision)).contains(&scale) => ColumnType::Decimal {
                    precision,
                    scale: scale as u32,
                },
                // PostgreSQL 15's negative scales and scales above the precision.
                _ => ColumnType::Numeric,
            };
        }
        match sql.as_str() {
            "boolean" | "bool" => ColumnType::Bool,
            "smallint" | "int2" => ColumnType::Int16,
            "integer" | "int" | "int4" => ColumnType::Int32,
            "bigint" | "int8" | "oid" => ColumnType::Int64,
            "real" | "float4" => ColumnType::Float32,
            "double precision" | "float8" => ColumnType::Float64,
            "numeric" | "decimal" => ColumnType::Numeric,
            "character" | "char" | "bpchar" => ColumnType::Char(1),
            "text" | "character varying" | "varchar" | "name" | "\"char\"" | "citext" => ColumnType::Text,
            "bytea" => ColumnType::Bytes,
            "uuid" => ColumnType::Uuid,
            "json" => ColumnType::Json,
            "jsonb" => ColumnType::Jsonb,
            "date" => ColumnType::Date,
            "time" | "time without time zone" => ColumnType::Time,
            "time with time zone" | "timetz" => ColumnType::TimeTz,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamp with time zone" | "timestamptz" => ColumnType::TimestampTz,
            "interval" => ColumnType::Interval,
            // enums, domains' unknown bases, inet, money, xml, ranges ...: their text
            _ => ColumnType::Text,
        }
    }

    /// From an Arrow type name, for documents without SQL types.
    pub fn from_arrow(arrow: &str) -> ColumnType {
        let arrow = arrow.trim();
        if let Some(inner) = arrow.strip_prefix("List(").and_then(|r| r.strip_suffix(')')) {
            return ColumnType::Array(Box::new(ColumnType::from_arrow(inner)));
        }
        if let Some(args) = arrow.strip_prefix("Decimal128(").and_then(|r| r.strip_suffix(')'))
            && let Some((p, s)) = args.split_once(',')
            && let (Ok(precision), Ok(scale)) = (p.trim().parse(), s.trim().parse())
        {
            return ColumnType::Decimal { precision, scale };
        }
        if arrow.starts_with("Timestamp(") {
            return if arrow.contains("None") {
                ColumnType::Timestamp
            } else {
                ColumnType::TimestampTz
            };
        }
        match arrow {
            "Boolean" => ColumnType::Bool,
            "Int8" | "Int16" | "UInt8" => ColumnType::Int16,
            "Int32" | "UInt16" => ColumnType::Int32,
            "Int64" | "UInt32" | "UInt64" => ColumnType::Int64,
            "Float16" | "Float32" => ColumnType::Float32,
            "Float64" => ColumnType::Float64,
            "Binary" | "LargeBinary" => ColumnType::Bytes,
            "Date32" | "Date64" => ColumnType::Date,
            a if a.starts_with("Time32") || a.starts_with("Time64") => ColumnType::Time,
            _ => ColumnType::Text,
        }
    }

    /// The column type to create in `dialect`. `key`: the column is part of the
    /// primary key (MySQL cannot index `TEXT` and `BLOB` without a length).
    pub fn ddl(&self, dialect: DialectKind, key: bool) -> String {
        match dialect {
            DialectKind::Postgres => self.postgres_ddl(),
            DialectKind::MySql => self.mysql_ddl(key),
            DialectKind::Sqlite => self.sqlite_ddl().to_owned(),
        }
    }

    fn postgres_ddl(&self) -> String {
        match self {
            ColumnType::Bool => "boolean".into(),
            ColumnType::Int16 => "smallint".into(),
            ColumnType::Int32 => "integer".into(),
            ColumnType::Int64 => "bigint".into(),
            ColumnType::Float32 => "real".into(),
            ColumnType::Float64 => "double precision".into(),
            ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::Numeric => "numeric".into(),
            ColumnType::Text => "text".into(),
            ColumnType::Char(length) => format!("character({length})"),
            ColumnType::Bytes => "bytea".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Json => "json".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Time => "time without time zone".into(),
            ColumnType::TimeTz => "time with time zone".into(),
            ColumnType::Timestamp => "timestamp without time zone".into(),
            ColumnType::TimestampTz => "timestamp with time zone".into(),
            ColumnType::Interval => "interval".into(),
            ColumnType::Array(element) => format!("{}[]", element.postgres_ddl()),
            ColumnType::Other(name) => name.clone(),
        }
    }

    fn mysql_ddl(&self, key: bool) -> String {
        match self {
            ColumnType::Bool => "tinyint(1)".into(),
            ColumnType::Int16 => "smallint".into(),
            ColumnType::Int32 => "int".into(),
            ColumnType::Int64 => "bigint".into(),
            ColumnType::Float32 => "float".into(),
            ColumnType::Float64 => "double".into(),
            ColumnType::Decimal { precision, scale } if *precision <= 65 && *scale <= 30 => {
                format!("decimal({precision},{scale})")
            }
            ColumnType::Decimal { .. } | ColumnType::Numeric => {
                if key {
                    "varchar(255)".into()
                } else {
                    "text".into()
                }
            }
            ColumnType::Char(length) if *length <= 255 => format!("char({length})"),
            ColumnType::Text | ColumnType::Char(_) | ColumnType::TimeTz | ColumnType::Interval => {
                if key {
                    "varchar(255)".into()
                } else {
                    "longtext".into()
                }
            }
            ColumnType::Bytes => {
                if key {
                    "varbinary(255)".into()
                } else {
                    "longblob".into()
                }
            }
            ColumnType::Uuid => "char(36)".into(),
            ColumnType::Json | ColumnType::Jsonb | ColumnType::Array(_) => "json".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Time => "time(6)".into(),
            ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)".into(),
            ColumnType::Other(name) => name.clone(),
        }
    }

    fn sqlite_ddl(&self) -> &str {
        match self {
            ColumnType::Bool | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => "INTEGER",
            ColumnType::Float32 | ColumnType::Float64 => "REAL",
            ColumnType::Bytes => "BLOB",
            ColumnType::Other(name) => name,
            // Text keeps exact digits, times as written, JSON as text.
            _ => "TEXT",
        }
    }

    /// Reads a type as the target's catalog names it (PostgreSQL's `format_type`,
    /// MySQL's `COLUMN_TYPE`, SQLite's declared type).
    pub fn from_catalog(dialect: DialectKind, text: &str) -> ColumnType {
        let lower = text.trim().to_ascii_lowercase();
        match dialect {
            DialectKind::Postgres => match ColumnType::from_source_sql(&lower) {
                ColumnType::Text if !is_postgres_text(&lower) => ColumnType::Other(lower),
                ty => ty,
            },
            DialectKind::MySql => {
                // Display widths (`bigint(20)`) and `unsigned` do not change what fits here.
                let base = lower.split('(').next().unwrap_or("").trim();
                match base {
                    "tinyint" if lower.starts_with("tinyint(1)") => ColumnType::Bool,
                    "tinyint" | "smallint" => ColumnType::Int16,
                    "mediumint" | "int" | "integer" => ColumnType::Int32,
                    "bigint" => ColumnType::Int64,
                    "float" => ColumnType::Float32,
                    "double" => ColumnType::Float64,
                    "decimal" => {
                        let args = lower
                            .split_once('(')
                            .and_then(|(_, r)| r.split_once(')'))
                            .map(|(a, _)| a)
                            .unwrap_or("10,0");
                        let (p, s) = args.split_once(',').unwrap_or((args, "0"));
                        ColumnType::Decimal {
                            precision: p.trim().parse().unwrap_or(10),
                            scale: s.trim().parse().unwrap_or(0),
                        }
                    }
                    "char" if lower != "char(36)" => lower
                        .strip_prefix("char(")
                        .and_then(|r| r.split(')').next())
                        .and_then(|n| n.trim().parse().ok())
                        .map_or(ColumnType::Text, ColumnType::Char),
                    "varchar" | "text" | "longtext" | "mediumtext" => ColumnType::Text,
                    "char" => ColumnType::Uuid,
                    "varbinary" | "longblob" | "blob" | "mediumblob" => ColumnType::Bytes,
                    "json" => ColumnType::Jsonb,
                    "date" => ColumnType::Date,
                    "time" => ColumnType::Time,
                    "datetime" | "timestamp" => ColumnType::TimestampTz,
                    _ => ColumnType::Other(lower),
                }
            }
            DialectKind::Sqlite => match lower.as_str() {
                "integer" | "int" | "bigint" => ColumnType::Int64,
                "real" | "double" => ColumnType::Float64,
                "blob" => ColumnType::Bytes,
                "text" | "" => ColumnType::Text,
                _ => ColumnType::Other(lower),
            },
        }
    }

    /// Whether every value of `new` can be stored in a column of this type as it is.
    pub fn holds(&self, new: &ColumnType, dialect: DialectKind) -> bool {
        if self.ddl(dialect, false) == new.ddl(dialect, false) {
            return true;
        }
        use ColumnType::*;
        match (self, new) {
            // Text holds the text of anything (MySQL's and SQLite's mappings rely on it).
            (Text, _) => !matches!(new, Bytes) || dialect == DialectKind::Sqlite,
            // A longer blank-padded column holds a shorter one's values, padded further.
            (Char(length), Char(new_length)) => length >= new_length,
            (Int32, Int16) | (Int64, Int16 | Int32) | (Float64, Float32 | Int16 | Int32) => true,
            (Numeric, Int16 | Int32 | Int64 | Decimal { .. }) => true,
            (Decimal { precision, scale }, Decimal { precision: p, scale: s }) => {
                scale >= s && precision - scale >= p - s
            }
            (Decimal { precision, scale }, Int16 | Int32 | Int64) => {
                let digits = match new {
                    Int16 => 5,
                    Int32 => 10,
                    _ => 19,
                };
                precision - scale >= digits
            }
            (Jsonb, Json) | (Json, Jsonb) => true,
            (TimestampTz, Timestamp) if dialect == DialectKind::MySql => true,
            (Array(a), Array(b)) => a.holds(b, dialect),
            _ => false,
        }
    }
}

fn is_postgres_text(name: &str) -> bool {
    name == "text"
        || name.starts_with("character varying")
        || name.starts_with("character")
        || name.starts_with("varchar")
        || name == "name"
        || name == "citext"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_types_the_postgres_source_registers() {
        let doc = br#"{"id":"x","table":"public.t","columns":[
            {"name":"id","type":"bigint","arrow":"Int64","key":true},
            {"name":"price","type":"numeric(10,2)","arrow":"Decimal128(10, 2)","key":false},
            {"name":"tags","type":"text[]","arrow":"List(Utf8)","key":false},
            {"name":"mood","type":"mood","arrow":"Utf8","key":false},
            {"name":"at","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"}]}"#;
        let columns = columns_from_document(doc).unwrap();
        assert!(columns[0].key);
        assert_eq!(
            columns[1].ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(columns[2].ty, ColumnType::Array(Box::new(ColumnType::Text)));
        assert_eq!(columns[3].ty, ColumnType::Text);
        assert_eq!(columns[4].ty, ColumnType::TimestampTz);
        assert!(columns_from_document(br#"{"columns":[{"name":"__op"}]}"#).is_err());
    }

    #[test]
    fn catalog_types_read_back_as_created() {
        let all = [
            ColumnType::Bool,
            ColumnType::Int16,
            ColumnType::Int32,
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Decimal {
                precision: 12,
                scale: 3,
            },
            ColumnType::Text,
            ColumnType::Bytes,
            ColumnType::Date,
            ColumnType::TimestampTz,
            ColumnType::Array(Box::new(ColumnType::Int32)),
        ];
        for dialect in [DialectKind::Postgres, DialectKind::MySql, DialectKind::Sqlite] {
            for ty in &all {
                let back = ColumnType::from_catalog(dialect, &ty.ddl(dialect, false));
                assert!(back.holds(ty, dialect), "{dialect:?} {ty:?} read back as {back:?}");
            }
        }
    }

    #[test]
    fn widening_is_one_way() {
        let pg = DialectKind::Postgres;
        assert!(ColumnType::Int64.holds(&ColumnType::Int32, pg));
        assert!(!ColumnType::Int32.holds(&ColumnType::Int64, pg));
        let d = |precision, scale| ColumnType::Decimal { precision, scale };
        assert!(d(12, 2).holds(&d(10, 2), pg));
        assert!(!d(10, 2).holds(&d(10, 3), pg));
        assert!(ColumnType::Text.holds(&ColumnType::Int32, pg));
        assert!(!ColumnType::Int32.holds(&ColumnType::Text, pg));
    }
}
