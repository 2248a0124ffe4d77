//! `plexus-connector-datagen`: a source of synthetic, reproducible change events.
//!
//! `type = "datagen"` emits inserts, updates and deletes of a small shop's `orders`,
//! `customers` and `products`, as the CDC sources do: key = the primary key as JSON
//! (`{"id":42}`), value = the change envelope documented in `ENVELOPE.md`, and the table
//! as the record's `topic` field, so that `topic = "shop.{table}"` sends each table to
//! its own topic (`shop.orders`, ...) and a `topic` without `{table}` takes them all.
//! Event `n` is a pure function of the seed and `n`, so
//! a fixed seed reproduces the stream byte for byte, and a restart resumes with the
//! very event an uninterrupted run would have produced. The source position is
//! [`Position::from_u64`](plexus_connector::Position::from_u64) of the last event's
//! number. It drives the quickstart and the benchmarks.
//!
//! ```toml
//! [[connector]]
//! name = "shop"
//! type = "datagen"
//! topic = "shop.{table}"
//! [connector.settings]
//! seed = 42
//! rate = 1000        # events per second; 0 = as fast as possible
//! count = 1_000_000  # then the source finishes
//! ```

mod config;
mod generator;
mod json;
mod schema;
mod source;

#[cfg(test)]
mod tests;

use plexus_connector::{ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, Position, Settings, Source};

pub use config::DatagenConfig;
pub use generator::{EPOCH_MS, Event, Generator, Op, Table};
pub use source::DatagenSource;

/// Registers `type = "datagen"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DatagenFactory;

impl DatagenFactory {
    pub fn new() -> DatagenFactory {
        DatagenFactory
    }
}

impl ConnectorFactory for DatagenFactory {
    fn type_name(&self) -> &str {
        "datagen"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &config::SCHEMA
    }

    /// `{"last_event": N}`: the number of the last event written; it resumes at N + 1.
    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        match position.as_u64() {
            Some(n) => serde_json::json!({ "last_event": n }),
            None => serde_json::json!({ "invalid": position.to_string() }),
        }
    }

    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        value
            .get("last_event")
            .and_then(serde_json::Value::as_u64)
            .map(Position::from_u64)
            .ok_or_else(|| format!("expected {{\"last_event\": N}} with N >= 0, found {value}"))
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(DatagenSource::new(DatagenConfig::from_settings(settings)?)))
    }
}
