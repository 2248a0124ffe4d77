//! `plexus-connector-parquet`: the `parquet` sink, which lands topics as Parquet files in
//! object storage (S3, an S3-compatible server, or a local directory), exactly once,
//! within a memory budget.
//!
//! ```toml
//! [[connector]]
//! name = "orders-lake"
//! type = "parquet"
//! topics = ["shop.orders"]
//! [connector.settings]
//! url = "s3://lake/raw"            # or "file:///data/lake"
//! endpoint = "http://127.0.0.1:8333"
//! path_style = true
//! partition_by = ["status"]
//! time_partition = "hour"          # dt=2026-11-22/hr=13/
//! time_zone = "Europe/Berlin"
//! rotate_interval = "10m"
//! ```
//!
//! # What the files hold
//!
//! Records are decoded columnar (arrow-json) with the schema their `plexus.schema`
//! header names (registered by the CDC sources and `datagen`), or the `columns` setting
//! for records without one. With the default `envelope = "flatten"`, each change event
//! is one row: the table's columns from `after` (from `before` for a delete), then
//!
//! | column | type | what |
//! |---|---|---|
//! | `__op` | string | `c`, `u`, `d`, `r` (snapshot read), `t` (truncate) |
//! | `__ts_ms` | timestamp (µs, UTC) | the event's `ts_ms` |
//! | `__lsn` | int64 | `source.lsn` (PostgreSQL), else null |
//! | `__seq` | int64 | `source.seq`, else null |
//! | `__partition` | int32 | the record's log partition |
//! | `__offset` | int64 | the record's log offset |
//!
//! `envelope = "whole"` keeps `before`, `after`, `source` (its known fields), `op` and
//! `ts_ms`; `envelope = "none"` takes values that are plain rows. Both end with
//! `__partition` and `__offset`. Tombstones are skipped. A record that does not fit (not
//! JSON, a value of the wrong type, no schema, a `NaN` in a decimal, `infinity` in a
//! date) goes to the dead letters with its origin `topic/partition@offset` and the
//! reason; the rest of its batch is written.
//!
//! Parquet: zstd (or snappy, none), dictionary encoding, page statistics, row groups of
//! up to `row_group_rows` rows and `row_group_size` bytes, timestamps in microseconds
//! (with `isAdjustedToUTC` for zoned ones), decimals as Parquet decimals, `bytea` (base64
//! in the envelope) as binary.
//!
//! # Where the files go
//!
//! `key_template` (default `{topic}/{path}/{topic}+{partition}+{first_offset}.parquet`)
//! with `{path}` the Hive-style directories of `partition_by` and `time_partition`:
//! `orders/status=paid/dt=2026-11-22/hr=13/orders+0+00000000000000001730.parquet`.
//! Manifests (see [`unit`]) go under `_plexus/<connector>/`.
//!
//! # Exactly once
//!
//! See [`unit`]: files of a topic-partition are committed together by a manifest, object
//! names are deterministic, and completions never overwrite.

mod config;
mod decode;
mod error;
mod keys;
mod parallel;
mod schema;
mod sink;
pub mod unit;
mod writer;

use std::sync::LazyLock;

use plexus_connector::{ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, Settings, Sink};
use plexus_connector_s3::StoreSettings;

pub use config::{Compression, Envelope, ParquetSinkConfig, TimePartitioning, TimeSource};
pub use error::ParquetError;
pub use keys::{DEFAULT_TEMPLATE, KeyParts, KeyTemplate, NULL_PARTITION, TimeFormat};
pub use schema::{DECLARED_SCHEMA_ID, METADATA_COLUMNS, TableSchema};
pub use sink::ParquetSink;
pub use unit::Written;

/// The settings `type = "parquet"` accepts: the object store's, then the sink's.
static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    plexus_connector_s3::fields()
        .into_iter()
        .chain(config::fields())
        .fold(ConfigSchema::new(), ConfigSchema::field)
});

/// Registers `type = "parquet"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ParquetSinkFactory;

impl ParquetSinkFactory {
    pub fn new() -> ParquetSinkFactory {
        ParquetSinkFactory
    }
}

impl ConnectorFactory for ParquetSinkFactory {
    fn type_name(&self) -> &str {
        "parquet"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &SCHEMA
    }

    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        let store = StoreSettings::from_settings(settings)?;
        let config = ParquetSinkConfig::from_settings(settings)?;
        Ok(Box::new(ParquetSink::with_store_settings(config, store)))
    }
}
