//! The schemas of the `datagen` tables, registered in the log's `__schemas` topic so
//! that columnar sinks (Parquet, warehouses) know each column's type, as they do for
//! the CDC sources' tables.

use bytes::Bytes;
use plexus_connector::{Header, SCHEMA_HEADER, SCHEMAS_TOPIC, SourceRecord};

use crate::generator::Table;

/// Columns as `(name, SQL type, JSON type, Arrow type)`; the first is the key.
type Columns = &'static [(&'static str, &'static str, &'static str, &'static str)];

const TIMESTAMPTZ: &str = r#"Timestamp(Microsecond, Some("UTC"))"#;

const ORDERS: Columns = &[
    ("id", "bigint", "integer", "Int64"),
    ("customer_id", "bigint", "integer", "Int64"),
    ("product_id", "bigint", "integer", "Int64"),
    ("quantity", "integer", "integer", "Int32"),
    ("unit_price", "numeric(10,2)", "string", "Decimal128(10, 2)"),
    ("status", "text", "string", "Utf8"),
    ("created_at", "timestamp with time zone", "string", TIMESTAMPTZ),
    ("note", "text", "string", "Utf8"),
];

const CUSTOMERS: Columns = &[
    ("id", "bigint", "integer", "Int64"),
    ("name", "text", "string", "Utf8"),
    ("email", "text", "string", "Utf8"),
    ("country", "text", "string", "Utf8"),
    ("created_at", "timestamp with time zone", "string", TIMESTAMPTZ),
];

const PRODUCTS: Columns = &[
    ("id", "bigint", "integer", "Int64"),
    ("sku", "text", "string", "Utf8"),
    ("name", "text", "string", "Utf8"),
    ("price", "numeric(10,2)", "string", "Decimal128(10, 2)"),
    ("in_stock", "boolean", "boolean", "Boolean"),
];

impl Table {
    /// The id its records name in the `plexus.schema` header. The tables' shapes never
    /// change, so the ids are fixed; a new shape would get a new version number.
    pub fn schema_id(self) -> &'static str {
        match self {
            Table::Orders => "datagen.orders.1",
            Table::Customers => "datagen.customers.1",
            Table::Products => "datagen.products.1",
        }
    }

    fn columns(self) -> Columns {
        match self {
            Table::Orders => ORDERS,
            Table::Customers => CUSTOMERS,
            Table::Products => PRODUCTS,
        }
    }

    /// The schema document, in the form every source registers (see
    /// `plexus_connector::Schemas`).
    pub fn schema_document(self) -> String {
        let columns: Vec<serde_json::Value> = self
            .columns()
            .iter()
            .enumerate()
            .map(|(i, (name, sql, json, arrow))| {
                serde_json::json!({ "name": name, "type": sql, "json": json, "arrow": arrow, "key": i == 0 })
            })
            .collect();
        serde_json::json!({ "id": self.schema_id(), "table": self.name(), "columns": columns }).to_string()
    }

    /// The header naming this table's schema.
    pub fn schema_header(self) -> Header {
        Header {
            key: SCHEMA_HEADER.into(),
            value: Some(Bytes::from_static(self.schema_id().as_bytes())),
        }
    }
}

/// The records registering the schemas of `tables` (written again on every start:
/// the same key and value, so compaction keeps one).
pub fn schema_records(tables: &[Table], timestamp: i64) -> Vec<SourceRecord> {
    tables
        .iter()
        .map(|table| SourceRecord {
            timestamp,
            key: Some(Bytes::from_static(table.schema_id().as_bytes())),
            value: Some(Bytes::from(table.schema_document())),
            headers: Default::default(),
            topic: Some(SCHEMAS_TOPIC.into()),
        })
        .collect()
}
