//! A captured table as the source sees it: columns, key, and its registered schema.

use std::sync::Arc;

use bytes::Bytes;
use plexus_connector::json::push_escaped;

use crate::source::config::TableName;
use crate::types::PgType;

pub use plexus_connector::{SCHEMA_HEADER, SCHEMAS_TOPIC};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: PgType,
}

/// One version of a table's shape.
#[derive(Debug)]
pub struct TableInfo {
    pub name: TableName,
    /// `schema.table`: the record's `{table}`.
    pub qualified: Arc<str>,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the record key (the primary key, or else the replica
    /// identity index); empty when the table has neither (REPLICA IDENTITY FULL).
    pub key: Vec<usize>,
    /// A digest of the schema document: equal shapes share an id, so registering the
    /// same version again (after a restart) is a no-op under compaction.
    pub schema_id: Arc<str>,
    /// The schema document written to [`SCHEMAS_TOPIC`].
    pub schema_json: Bytes,
    /// `source` fields that do not change per event: `"db":..,"schema":..,"table":..`.
    pub source_fields: Vec<u8>,
}

impl TableInfo {
    pub fn new(name: TableName, database: &str, columns: Vec<Column>, key: Vec<usize>) -> TableInfo {
        let qualified = name.to_string();
        let mut doc = Vec::with_capacity(256);
        doc.extend_from_slice(b"{\"table\":\"");
        push_escaped(&mut doc, &qualified);
        doc.extend_from_slice(b"\",\"columns\":[");
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                doc.push(b',');
            }
            doc.extend_from_slice(b"{\"name\":\"");
            push_escaped(&mut doc, &column.name);
            doc.extend_from_slice(b"\",\"type\":\"");
            push_escaped(&mut doc, &column.ty.sql_name());
            doc.extend_from_slice(b"\",\"json\":\"");
            doc.extend_from_slice(column.ty.json_type().as_bytes());
            doc.extend_from_slice(b"\",\"arrow\":\"");
            push_escaped(&mut doc, &column.ty.arrow_type());
            doc.extend_from_slice(b"\",\"key\":");
            doc.extend_from_slice(if key.contains(&i) { b"true" } else { b"false" });
            doc.push(b'}');
        }
        doc.extend_from_slice(b"]}");
        let schema_id: Arc<str> = format!("{:016x}", fnv1a(&doc)).into();
        // The stored document also names its id, so a reader of the topic has both.
        let mut stored = Vec::with_capacity(doc.len() + 32);
        stored.extend_from_slice(b"{\"id\":\"");
        stored.extend_from_slice(schema_id.as_bytes());
        stored.extend_from_slice(b"\",");
        stored.extend_from_slice(&doc[1..]);

        let mut source_fields = Vec::new();
        source_fields.extend_from_slice(b"\"db\":\"");
        push_escaped(&mut source_fields, database);
        source_fields.extend_from_slice(b"\",\"schema\":\"");
        push_escaped(&mut source_fields, &name.schema);
        source_fields.extend_from_slice(b"\",\"table\":\"");
        push_escaped(&mut source_fields, &name.name);
        source_fields.push(b'"');
        TableInfo {
            name,
            qualified: qualified.into(),
            columns,
            key,
            schema_id,
            schema_json: Bytes::from(stored),
            source_fields,
        }
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[(&str, PgType)]) -> TableInfo {
        let columns = columns
            .iter()
            .map(|(name, ty)| Column {
                name: (*name).into(),
                ty: ty.clone(),
            })
            .collect();
        TableInfo::new(
            TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            "db",
            columns,
            vec![0],
        )
    }

    #[test]
    fn schema_ids_follow_the_shape() {
        let a = table(&[("id", PgType::Int4), ("note", PgType::Text)]);
        let b = table(&[("id", PgType::Int4), ("note", PgType::Text)]);
        let c = table(&[("id", PgType::Int4), ("note", PgType::Text), ("more", PgType::Bool)]);
        assert_eq!(a.schema_id, b.schema_id);
        assert_ne!(a.schema_id, c.schema_id);
        let doc: serde_json::Value = serde_json::from_slice(&c.schema_json).unwrap();
        assert_eq!(doc["id"], c.schema_id.as_ref());
        assert_eq!(doc["columns"][0]["key"], true);
        assert_eq!(doc["columns"][2]["name"], "more");
    }
}
