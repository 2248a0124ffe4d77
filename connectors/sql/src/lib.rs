//! `plexus-connector-sql`: the `sql` sink, which applies change-event topics (from the
//! CDC sources or `datagen`) to tables of a SQL database, keeping each target table
//! equal to its source, exactly once.
//!
//! ```toml
//! [[connector]]
//! name = "orders-warehouse"
//! type = "sql"
//! topics = ["pg.public.orders", "pg.public.customers"]
//! [connector.settings]
//! url = "postgres://plexus@127.0.0.1:5432/warehouse"
//! password = "${WAREHOUSE_PASSWORD}"
//! table = "{table}"                                  # orders, customers
//! table_overrides = ["pg.public.orders=analytics.orders"]
//! mode = "upsert"                                    # or "history"
//! delete_mode = "hard"                               # or "soft"
//! on_type_change = "fail"                            # or "widen", "ignore"
//! ```
//!
//! # Applying a batch
//!
//! `write` decodes each change event (`connectors/datagen/ENVELOPE.md`) with the
//! columns of the schema its `plexus.schema` header names (or columns inferred from
//! JSON when it names none) into the row of its target table, keeping only the last
//! change per key (`batch.rs`). A commit takes everything gathered: missing tables and
//! columns are created first (`apply.rs`), then one transaction stages and applies the
//! rows with set-based statements ([`dialect`]) and stores the offsets after them
//! ([`offsets`]). Commits run in the background, one at a time, while the next changes
//! gather and merge by key (`sink.rs`): under a backlog each commit takes everything
//! decoded while the one before ran, so a key changed many times costs one row; a flush
//! while the task is caught up commits before it returns. `memory_budget` bounds what
//! is gathered.
//!
//! A record that cannot be converted goes to the dead letters from `write`. When the
//! target refuses a set-based statement for a row's data (a constraint, a value out of
//! range), the group is split in halves under savepoints until the refused rows are
//! found; they go to the dead letters, the others apply. Connection trouble is a
//! retriable error (the runtime restarts the task, which resumes from the target's
//! offsets); refused credentials or privileges are fatal, with a message naming what is
//! needed.
//!
//! The type mapping per database is in `connectors/sql/TYPES.md`.

mod apply;
mod batch;
mod config;
pub mod dialect;
mod error;
pub mod offsets;
mod schema;
mod sink;
mod values;

use std::sync::LazyLock;

use plexus_connector::{ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, Settings, Sink};

pub use batch::{HISTORY_COLUMNS, SOFT_DELETE_COLUMNS};
pub use config::{DeleteMode, DialectKind, DroppedColumnPolicy, Mode, SqlSinkConfig, TypeChangePolicy};
pub use error::SqlError;
pub use schema::{Column, ColumnType};
pub use sink::SqlSink;

static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    config::fields()
        .into_iter()
        .fold(ConfigSchema::new(), ConfigSchema::field)
});

/// Registers `type = "sql"`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SqlSinkFactory;

impl SqlSinkFactory {
    pub fn new() -> SqlSinkFactory {
        SqlSinkFactory
    }
}

impl ConnectorFactory for SqlSinkFactory {
    fn type_name(&self) -> &str {
        "sql"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &SCHEMA
    }

    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(SqlSink::new(SqlSinkConfig::from_settings(settings)?)))
    }
}
