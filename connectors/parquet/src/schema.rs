//! Table schemas: the registered schema documents that records name in their
//! `plexus.schema` header, and the columns a configuration declares for topics without one.

use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use serde::Deserialize;

use crate::error::ParquetError;

/// The id under which the columns declared in the configuration are known (in dead-letter
/// reasons and file bookkeeping).
pub const DECLARED_SCHEMA_ID: &str = "declared";

/// The columns the sink adds to flattened rows (see the crate documentation).
pub const METADATA_COLUMNS: [&str; 6] = ["__op", "__ts_ms", "__lsn", "__seq", "__partition", "__offset"];

/// The columns of a table's rows, in order, as Arrow fields (all nullable: a delete's
/// key-only `before`, a `NULL`, must fit).
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// The schema's id (the `plexus.schema` header), or [`DECLARED_SCHEMA_ID`].
    pub id: String,
    /// The table, when the document names it (`public.orders`).
    pub table: Option<String>,
    /// The row's columns with the types they are decoded into.
    pub fields: Fields,
}

/// A schema document as sources register it (see `plexus_connector::Schemas`).
#[derive(Debug, Deserialize)]
struct Document {
    #[serde(default)]
    table: Option<String>,
    columns: Vec<DocumentColumn>,
}

#[derive(Debug, Deserialize)]
struct DocumentColumn {
    name: String,
    arrow: String,
}

impl TableSchema {
    /// Reads a registered document:
    /// `{"id": "..", "table": "public.orders", "columns": [{"name": "id", "arrow": "Int64", ...}]}`.
    pub fn from_document(id: &str, document: &[u8]) -> Result<TableSchema, ParquetError> {
        let problem = |problem: String| ParquetError::Schema {
            id: id.to_owned(),
            problem,
        };
        let document: Document =
            serde_json::from_slice(document).map_err(|e| problem(format!("not a schema document: {e}")))?;
        let columns = document
            .columns
            .iter()
            .map(|c| {
                Ok((
                    c.name.clone(),
                    parse_type(&c.arrow).map_err(|e| problem(format!("column `{}`: {e}", c.name)))?,
                ))
            })
            .collect::<Result<Vec<_>, ParquetError>>()?;
        TableSchema::new(id, document.table, columns).map_err(problem)
    }

    /// Reads the `columns` setting: each entry `"<name>: <Arrow type>"`, e.g.
    /// `"price: Decimal128(10, 2)"`.
    pub fn declared(entries: &[String]) -> Result<TableSchema, String> {
        let columns = entries
            .iter()
            .map(|entry| {
                let (name, ty) = entry
                    .split_once(':')
                    .ok_or_else(|| format!("`{entry}` must be written `<name>: <Arrow type>`, like `id: Int64`"))?;
                let name = name.trim();
                let ty = parse_type(ty.trim()).map_err(|e| format!("`{entry}`: {e}"))?;
                Ok((name.to_owned(), ty))
            })
            .collect::<Result<Vec<_>, String>>()?;
        TableSchema::new(DECLARED_SCHEMA_ID, None, columns)
    }

    fn new(id: &str, table: Option<String>, columns: Vec<(String, DataType)>) -> Result<TableSchema, String> {
        if columns.is_empty() {
            return Err("has no columns".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &columns {
            if name.is_empty() {
                return Err("has a column without a name".into());
            }
            if METADATA_COLUMNS.contains(&name.as_str()) {
                return Err(format!(
                    "column `{name}`: the name is reserved for the sink's own column"
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("has two columns named `{name}`"));
            }
        }
        let fields: Vec<Field> = columns
            .into_iter()
            .map(|(name, ty)| Field::new(name, ty, true))
            .collect();
        Ok(TableSchema {
            id: id.to_owned(),
            table,
            fields: Fields::from(fields),
        })
    }
}

/// An Arrow type as `DataType::from_str` reads it (`Int64`, `Decimal128(10, 2)`,
/// `Timestamp(Microsecond, Some("UTC"))`, `List(Utf8)`), limited to the types the sink
/// can decode from JSON and write to Parquet.
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let ty = DataType::from_str(text).map_err(|e| format!("`{text}` is not an Arrow type: {e}"))?;
    check_supported(&ty).map_err(|problem| format!("`{text}`: {problem}"))?;
    Ok(ty)
}

fn check_supported(ty: &DataType) -> Result<(), String> {
    use DataType::*;
    match ty {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32 | Float64
        | Utf8 | LargeUtf8 | Binary | LargeBinary | Date32 | Date64 | Decimal32(..) | Decimal64(..)
        | Decimal128(..) | Decimal256(..) | Null => Ok(()),
        Timestamp(_, _) => Ok(()),
        Time32(TimeUnit::Second | TimeUnit::Millisecond) | Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond) => {
            Ok(())
        }
        List(item) | LargeList(item) => check_supported(item.data_type()),
        Struct(fields) => fields.iter().try_for_each(|f| check_supported(f.data_type())),
        other => Err(format!("the sink does not decode {other} from JSON")),
    }
}

/// The type a column is written to Parquet as: timestamps in microseconds (Parquet's
/// common unit; readers disagree on nanoseconds and seconds), everything else as decoded.
pub(crate) fn storage_type(ty: &DataType) -> DataType {
    match ty {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::List(item) => DataType::List(Arc::new(
            item.as_ref().clone().with_data_type(storage_type(item.data_type())),
        )),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(
            item.as_ref().clone().with_data_type(storage_type(item.data_type())),
        )),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| f.as_ref().clone().with_data_type(storage_type(f.data_type())))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_types_the_postgres_source_writes() {
        let document = br#"{"id":"s1","table":"public.t","columns":[
            {"name":"id","type":"bigint","json":"integer","arrow":"Int64","key":true},
            {"name":"price","arrow":"Decimal128(10, 2)"},
            {"name":"at","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"},
            {"name":"tags","arrow":"List(Decimal128(10, 2))"},
            {"name":"t","arrow":"Time64(Microsecond)"},
            {"name":"b","arrow":"Binary"}]}"#;
        let schema = TableSchema::from_document("s1", document).unwrap();
        assert_eq!(schema.table.as_deref(), Some("public.t"));
        let types: Vec<String> = schema.fields.iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(
            types,
            [
                "Int64",
                "Decimal128(10, 2)",
                "Timestamp(µs, \"UTC\")",
                "List(Decimal128(10, 2))",
                "Time64(µs)",
                "Binary"
            ]
        );
    }

    #[test]
    fn declared_columns_name_their_mistakes() {
        let schema = TableSchema::declared(&["id: Int64".into(), "name : Utf8".into()]).unwrap();
        assert_eq!(schema.fields.len(), 2);
        assert_eq!(schema.fields[1].name(), "name");
        let err = TableSchema::declared(&["id Int64".into()]).unwrap_err();
        assert!(err.contains("`<name>: <Arrow type>`"), "{err}");
        let err = TableSchema::declared(&["id: Int65".into()]).unwrap_err();
        assert!(err.contains("Int65"), "{err}");
        let err = TableSchema::declared(&["__op: Utf8".into()]).unwrap_err();
        assert!(err.contains("reserved"), "{err}");
        let err = TableSchema::declared(&["a: Int64".into(), "a: Utf8".into()]).unwrap_err();
        assert!(err.contains("two columns"), "{err}");
        let err = TableSchema::declared(&["m: Map(Utf8, Int64)".into()]).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn timestamps_are_stored_in_microseconds() {
        let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        assert_eq!(
            storage_type(&ms),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let list = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Timestamp(TimeUnit::Second, None),
            true,
        )));
        assert_eq!(
            storage_type(&list),
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true
            )))
        );
    }
}
