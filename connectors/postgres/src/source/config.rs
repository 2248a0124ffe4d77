//! The settings of a `postgres-cdc` source.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use plexus_connector::{ConfigSchema, ConnectorError, FieldKind, FieldSpec, Settings};

use crate::client::{ConnectOptions, SslMode};

/// How the source starts when the log holds no position for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Read every row of the tables (consistent with the slot), then stream changes.
    Initial,
    /// Only stream changes made from now on.
    Never,
    /// Read every row of the tables, then finish: a bulk export. Needs no replication
    /// slot, publication, `wal_level` or `REPLICATION` privilege (it reads in one
    /// repeatable-read snapshot), so it also runs against a read replica.
    InitialOnly,
}

/// A table as `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `orders` (in `public`), `shop.orders`, `"Mixed Case".orders` are accepted.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts = split_identifier(text)?;
        match parts.as_slice() {
            [name] => Ok(TableName {
                schema: "public".into(),
                name: name.clone(),
            }),
            [schema, name] => Ok(TableName {
                schema: schema.clone(),
                name: name.clone(),
            }),
            _ => Err(format!("`{text}` is not a table name: write `table` or `schema.table`")),
        }
    }

    /// `"schema"."name"`, for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_identifier(&self.schema), quote_identifier(&self.name))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The validated settings of one `postgres-cdc` source.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    pub connect: ConnectOptions,
    /// Sorted by name, so snapshot positions order the same way whatever the file says.
    pub tables: Vec<TableName>,
    pub slot: String,
    pub publication: String,
    pub snapshot_mode: SnapshotMode,
    pub snapshot_parallelism: usize,
    pub snapshot_chunk_rows: u64,
    pub resnapshot_chunk_rows: u64,
    pub batch_size: usize,
    pub tombstones: bool,
    pub transaction_events: bool,
    pub heartbeat_interval: Duration,
    pub status_interval: Duration,
    pub lag_warn_bytes: u64,
    pub spill_dir: PathBuf,
    pub spill_threshold: u64,
}

/// Postgres identifiers for slots and publications: lower case, digits, underscores.
fn default_object_name(connector: &str) -> String {
    let mut name: String = connector
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.insert_str(0, "plexus_");
    name.truncate(63);
    name
}

pub(crate) static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(FieldSpec::new("host", FieldKind::String).with_default("127.0.0.1").doc("The server's host name or IP address."))
        .field(
            FieldSpec::new("port", FieldKind::integer_between(Some(1), Some(65535)))
                .with_default(5432)
                .doc("The server's port."),
        )
        .field(FieldSpec::new("user", FieldKind::String).required().doc("The user: it needs the REPLICATION attribute and SELECT on the tables."))
        .field(FieldSpec::new("password", FieldKind::String).secret().doc("The user's password (a secret: use `${ENV}` or `password_file`)."))
        .field(FieldSpec::new("password_file", FieldKind::Path).doc("A file holding the password (trailing newline ignored)."))
        .field(FieldSpec::new("database", FieldKind::String).required().doc("The database holding the tables."))
        .field(
            FieldSpec::new("sslmode", FieldKind::one_of(["disable", "prefer", "require", "verify-ca", "verify-full"]))
                .with_default("prefer")
                .doc("TLS, as libpq's sslmode: `verify-full` checks the certificate chain and the host name."),
        )
        .field(FieldSpec::new("sslrootcert", FieldKind::Path).doc("PEM file of the CA certificates to trust for `verify-ca` and `verify-full` (default: the public web roots)."))
        .field(
            FieldSpec::new("tables", FieldKind::StringList)
                .required()
                .doc("The tables to capture: `orders` (schema public) or `schema.table`. Each becomes one topic (`{table}` in `topic` is `schema.table`)."),
        )
        .field(FieldSpec::new("slot", FieldKind::String).doc("The replication slot (created if missing). Default: `plexus_<connector name>`."))
        .field(FieldSpec::new("publication", FieldKind::String).doc("The publication (created if missing, and kept to exactly `tables`). Default: `plexus_<connector name>`."))
        .field(
            FieldSpec::new("snapshot_mode", FieldKind::one_of(["initial", "never", "initial_only"]))
                .with_default("initial")
                .doc("`initial`: read every row first (consistent with the slot), then stream changes; `never`: only changes from now on; `initial_only`: read every row, then finish (a bulk export: no slot, no publication, no logical `wal_level` needed)."),
        )
        .field(
            FieldSpec::new("snapshot_parallelism", FieldKind::integer_between(Some(1), Some(16)))
                .with_default(2)
                .doc("Connections reading the snapshot in parallel (chunks of tables with an integer primary key)."),
        )
        .field(
            FieldSpec::new("snapshot_chunk_rows", FieldKind::integer_between(Some(1000), None))
                .with_default(200_000)
                .doc("About how many rows one snapshot chunk reads."),
        )
        .field(
            FieldSpec::new("resnapshot_chunk_rows", FieldKind::integer_between(Some(1), Some(1_000_000)))
                .with_default(8192)
                .doc("Rows per chunk of a re-snapshot asked for while streaming (a `plexus.signal` message): each chunk is held in memory until its high watermark."),
        )
        .field(
            FieldSpec::new("batch_size", FieldKind::integer_between(Some(1), Some(1_000_000)))
                .with_default(4096)
                .doc("The most records in one batch written to the log."),
        )
        .field(FieldSpec::new("tombstones", FieldKind::Bool).with_default(true).doc("Whether a delete is followed by a tombstone (the key with no value), so compaction can drop the key."))
        .field(
            FieldSpec::new("transaction_events", FieldKind::Bool)
                .with_default(false)
                .doc("Whether to write BEGIN and END events of each transaction to the `transaction` table's topic (`{table}` = `transaction`)."),
        )
        .field(
            FieldSpec::new("heartbeat_interval", FieldKind::Duration)
                .with_default("10s")
                .doc("How often to write a heartbeat into the WAL (`pg_logical_emit_message`), so the slot advances while the captured tables are idle; `0s` disables it."),
        )
        .field(
            FieldSpec::new("status_interval", FieldKind::Duration)
                .with_default("10s")
                .doc("How often to report the flushed position to the server when nothing else does."),
        )
        .field(
            FieldSpec::new("slot_lag_warn", FieldKind::Size)
                .with_default("1GiB")
                .doc("Log a warning when the slot holds more WAL than this for the source."),
        )
        .field(FieldSpec::new("spill_dir", FieldKind::Path).doc("Where large in-progress transactions wait for their commit. Default: the system's temporary directory."))
        .field(
            FieldSpec::new("spill_threshold", FieldKind::Size)
                .with_default("16MiB")
                .doc("How much of one in-progress transaction is kept in memory before it spills to `spill_dir`."),
        )
});

impl CdcConfig {
    pub fn from_settings(connector: &str, settings: &Settings) -> Result<CdcConfig, ConnectorError> {
        let string = |name: &str| settings.string(name).map(str::to_owned);
        let user = string("user").ok_or_else(|| invalid("user", "is required"))?;
        let database = string("database").ok_or_else(|| invalid("database", "is required"))?;
        let password = match (settings.secret("password"), settings.path("password_file")) {
            (Some(secret), _) => Some(secret.expose().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| invalid("password_file", &format!("cannot be read ({}): {e}", path.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let sslmode: SslMode = string("sslmode")
            .unwrap_or_else(|| "prefer".into())
            .parse()
            .map_err(|e: crate::client::ParseSslModeError| invalid("sslmode", &e.to_string()))?;
        let port = settings.integer("port").unwrap_or(5432);
        let connect = ConnectOptions {
            host: string("host").unwrap_or_else(|| "127.0.0.1".into()),
            port: u16::try_from(port).map_err(|_| invalid("port", "must be 1 to 65535"))?,
            user,
            password,
            database,
            sslmode,
            sslrootcert: settings.path("sslrootcert").map(PathBuf::from),
            application_name: format!("plexus {connector}"),
            connect_timeout: Duration::from_secs(10),
            settings: SESSION_SETTINGS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let names = settings
            .string_list("tables")
            .ok_or_else(|| invalid("tables", "is required"))?;
        if names.is_empty() {
            return Err(invalid("tables", "is empty; name at least one table"));
        }
        let mut tables = names
            .iter()
            .map(|n| TableName::parse(n).map_err(|e| invalid("tables", &e)))
            .collect::<Result<Vec<_>, _>>()?;
        tables.sort();
        tables.dedup();
        let snapshot_mode = match settings.string("snapshot_mode").unwrap_or("initial") {
            "never" => SnapshotMode::Never,
            "initial_only" => SnapshotMode::InitialOnly,
            _ => SnapshotMode::Initial,
        };
        let count = |name: &str, default: i64| settings.integer(name).unwrap_or(default).max(1) as u64;
        Ok(CdcConfig {
            connect,
            tables,
            slot: string("slot").unwrap_or_else(|| default_object_name(connector)),
            publication: string("publication").unwrap_or_else(|| default_object_name(connector)),
            snapshot_mode,
            snapshot_parallelism: count("snapshot_parallelism", 2) as usize,
            snapshot_chunk_rows: count("snapshot_chunk_rows", 200_000),
            resnapshot_chunk_rows: count("resnapshot_chunk_rows", 8192),
            batch_size: count("batch_size", 4096) as usize,
            tombstones: settings.bool("tombstones").unwrap_or(true),
            transaction_events: settings.bool("transaction_events").unwrap_or(false),
            heartbeat_interval: settings
                .duration("heartbeat_interval")
                .unwrap_or(Duration::from_secs(10)),
            status_interval: settings
                .duration("status_interval")
                .unwrap_or(Duration::from_secs(10))
                .max(Duration::from_millis(100)),
            lag_warn_bytes: settings.size("slot_lag_warn").unwrap_or(1 << 30),
            spill_dir: settings
                .path("spill_dir")
                .map_or_else(std::env::temp_dir, PathBuf::from),
            spill_threshold: settings.size("spill_threshold").unwrap_or(16 << 20),
        })
    }
}

/// Session settings of every connection, so values arrive in one known text form
/// (see TYPES.md).
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// `"name"` with inner quotes doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Splits `a.b` and `"a.b".c` into identifiers; unquoted parts fold to lower case, as
/// PostgreSQL does.
fn split_identifier(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("`{text}` has an unterminated quoted name")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(format!("`{text}` has an empty name"));
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(c) => return Err(format!("`{text}`: unexpected `{c}` after a quoted name")),
        }
    }
}

fn invalid(name: &str, problem: &str) -> ConnectorError {
    ConnectorError::config(format!("setting `{name}` {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_like_postgres() {
        let t = |s| TableName::parse(s);
        assert_eq!(t("orders").map(|t| t.to_string()), Ok("public.orders".into()));
        assert_eq!(t("Shop.Orders").map(|t| t.to_string()), Ok("shop.orders".into()));
        assert_eq!(
            t("\"Mixed.Case\".x").map(|t| t.quoted()),
            Ok("\"Mixed.Case\".\"x\"".into())
        );
        assert!(t("a.b.c").is_err());
        assert!(t("a.").is_err());
        assert!(t("\"open").is_err());
    }

    #[test]
    fn default_names_are_identifiers() {
        assert_eq!(default_object_name("Shop-CDC"), "plexus_shop_cdc");
    }
}
