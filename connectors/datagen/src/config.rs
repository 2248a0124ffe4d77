//! The settings of a `datagen` source.

use std::sync::LazyLock;

use plexus_connector::{ConfigSchema, ConnectorError, FieldKind, FieldSpec, Settings};

use crate::generator::Table;

/// The validated settings of one `datagen` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagenConfig {
    /// The seed of the stream: the same seed (and tables) always produce the same events,
    /// byte for byte, whatever the restarts.
    pub seed: u64,
    /// Events per second; 0 generates as fast as the pipeline takes them.
    pub rate: u64,
    /// The total number of events, after which the source finishes; absent: unbounded.
    pub count: Option<u64>,
    /// The most events in one batch (a delete's tombstone does not count).
    pub batch_size: usize,
    /// The tables to generate changes of, among `orders`, `customers` and `products`.
    pub tables: Vec<Table>,
    /// Whether a delete is followed by a tombstone (same key, no value) so that
    /// compaction can drop the key.
    pub tombstones: bool,
}

impl Default for DatagenConfig {
    fn default() -> Self {
        DatagenConfig {
            seed: 1,
            rate: 0,
            count: None,
            batch_size: 1000,
            tables: Table::ALL.to_vec(),
            tombstones: true,
        }
    }
}

/// The settings `type = "datagen"` accepts.
pub(crate) static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    let defaults = DatagenConfig::default();
    let positive = FieldKind::integer_between(Some(1), None);
    ConfigSchema::new()
        .field(
            FieldSpec::new("seed", FieldKind::INTEGER)
                .with_default(1)
                .doc("The seed of the stream: the same seed and tables always produce the same events, byte for byte, whatever the restarts."),
        )
        .field(
            FieldSpec::new("rate", FieldKind::integer_between(Some(0), None))
                .with_default(0)
                .doc("Events per second; 0 generates as fast as the pipeline takes them."),
        )
        .field(
            FieldSpec::new("count", positive.clone())
                .doc("The total number of events, after which the source finishes. Absent: the stream never ends."),
        )
        .field(
            FieldSpec::new("batch_size", positive)
                .with_default(defaults.batch_size as i64)
                .doc("The most events in one batch (a delete's tombstone does not count)."),
        )
        .field(
            FieldSpec::new("tables", FieldKind::StringList)
                .with_default(Table::ALL.iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
                .doc("The tables to generate changes of: any of `orders`, `customers`, `products`."),
        )
        .field(
            FieldSpec::new("tombstones", FieldKind::Bool)
                .with_default(defaults.tombstones)
                .doc("Whether a delete is followed by a tombstone (same key, no value) so that compaction can drop the key."),
        )
});

impl DatagenConfig {
    /// Reads validated settings; absent settings take their defaults.
    pub fn from_settings(settings: &Settings) -> Result<DatagenConfig, ConnectorError> {
        let defaults = DatagenConfig::default();
        let seed = match integer(settings, "seed")? {
            // Negative seeds are as good as any: keep their bits.
            Some(seed) => seed as u64,
            None => defaults.seed,
        };
        let rate = match integer(settings, "rate")? {
            Some(rate) => u64::try_from(rate).map_err(|_| invalid("rate", "must be 0 or more"))?,
            None => defaults.rate,
        };
        let count = match integer(settings, "count")? {
            Some(count) => Some(u64::try_from(count).map_err(|_| invalid("count", "must be 1 or more"))?),
            None => None,
        };
        let batch_size = match integer(settings, "batch_size")? {
            Some(size) if size >= 1 => usize::try_from(size).map_err(|_| invalid("batch_size", "is too large"))?,
            Some(_) => return Err(invalid("batch_size", "must be 1 or more")),
            None => defaults.batch_size,
        };
        let tables = match settings.get("tables") {
            None => defaults.tables,
            Some(_) => {
                let names = settings
                    .string_list("tables")
                    .ok_or_else(|| invalid("tables", "must be a list of table names"))?;
                let mut tables = Vec::new();
                for name in names {
                    let table = Table::from_name(name).ok_or_else(|| {
                        invalid(
                            "tables",
                            &format!("has unknown table `{name}`; choose among orders, customers, products"),
                        )
                    })?;
                    if !tables.contains(&table) {
                        tables.push(table);
                    }
                }
                if tables.is_empty() {
                    return Err(invalid(
                        "tables",
                        "is empty; name at least one of orders, customers, products",
                    ));
                }
                tables
            }
        };
        let tombstones = match settings.get("tombstones") {
            None => defaults.tombstones,
            Some(_) => settings
                .bool("tombstones")
                .ok_or_else(|| invalid("tombstones", "must be true or false"))?,
        };
        Ok(DatagenConfig {
            seed,
            rate,
            count,
            batch_size,
            tables,
            tombstones,
        })
    }
}

fn integer(settings: &Settings, name: &str) -> Result<Option<i64>, ConnectorError> {
    match settings.get(name) {
        None => Ok(None),
        Some(_) => settings
            .integer(name)
            .map(Some)
            .ok_or_else(|| invalid(name, "must be an integer")),
    }
}

fn invalid(name: &str, problem: &str) -> ConnectorError {
    ConnectorError::config(format!("datagen setting `{name}` {problem}"))
}
