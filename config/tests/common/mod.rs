//! The connector types the integration tests validate against.

use plexus_config::{ByteSize, ConfigSchema, ConnectorKind, ConnectorTypeRegistry, FieldKind, FieldSpec};

/// A source `datagen` and a sink `file-sink`.
pub fn registry() -> ConnectorTypeRegistry {
    let datagen = ConfigSchema::new()
        .field(
            FieldSpec::new("seed", FieldKind::INTEGER)
                .with_default(0)
                .doc("Random seed."),
        )
        .field(FieldSpec::new("rate", FieldKind::integer_between(Some(0), None)).doc("Records per second."))
        .field(FieldSpec::new("count", FieldKind::INTEGER).doc("Records to generate, then stop."))
        .field(FieldSpec::new("tables", FieldKind::StringList).doc("Tables to generate."))
        .field(
            FieldSpec::new("password", FieldKind::String)
                .secret()
                .doc("A secret, for redaction tests."),
        );
    let file_sink = ConfigSchema::new()
        .field(
            FieldSpec::new("path", FieldKind::String)
                .required()
                .doc("The file to write."),
        )
        .field(
            FieldSpec::new("roll_size", FieldKind::Size)
                .with_default(ByteSize::mib(64))
                .doc("Roll at this size."),
        )
        .field(FieldSpec::new("roll_interval", FieldKind::Duration).doc("Roll at least this often."))
        .field(
            FieldSpec::new("format", FieldKind::one_of(["jsonl", "csv"]))
                .with_default("jsonl")
                .doc("File format."),
        );
    ConnectorTypeRegistry::new()
        .with("datagen", ConnectorKind::Source, datagen)
        .with("file-sink", ConnectorKind::Sink, file_sink)
}

/// A fixed environment: `OUT_DIR` and `PG_USER` are set, nothing else is.
pub fn env(name: &str) -> Option<String> {
    match name {
        "OUT_DIR" => Some("/tmp/plexus-out".to_owned()),
        "PG_USER" => Some("etl".to_owned()),
        _ => None,
    }
}
