//! The settings of a `sql` sink.

use std::collections::BTreeMap;
use std::time::Duration;

use plexus_connector::{FieldKind, FieldSpec, Settings};

use crate::error::SqlError;

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectKind {
    /// PostgreSQL, and anything speaking its protocol.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
    /// SQLite: a file, no server.
    Sqlite,
}

/// How changes become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The target table mirrors the source: one row per key, inserted, updated or
    /// deleted as the source was.
    Upsert,
    /// Every change is a new row, with its op and source position.
    History,
}

/// What a delete does in `upsert` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    Hard,
    /// The row stays, `__deleted` set to true and `__deleted_at` to the change's time.
    Soft,
}

/// What to do when a column's new type does not fit the target column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeChangePolicy {
    Fail,
    /// Alter the column to the new type (when every old value fits it).
    Widen,
    /// Keep the column as it is; values that do not fit go to the dead letters.
    Ignore,
}

/// What to do when the records no longer have a column the target table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DroppedColumnPolicy {
    /// Keep the column: existing rows keep their values, new rows get NULL.
    Keep,
    Fail,
}

/// The validated settings of one `sql` sink.
#[derive(Clone)]
pub struct SqlSinkConfig {
    pub dialect: DialectKind,
    /// The connection URL, without the password when `password` is set.
    pub url: String,
    pub password: Option<String>,
    pub table_template: String,
    /// Target table by topic, overriding the template.
    pub table_overrides: BTreeMap<String, String>,
    pub mode: Mode,
    pub delete_mode: DeleteMode,
    pub on_type_change: TypeChangePolicy,
    pub on_dropped_column: DroppedColumnPolicy,
    pub offsets_table: String,
    /// Rows per staging chunk (a `COPY` stream, a multi-row `INSERT`).
    pub batch_rows: usize,
    /// What the changes gathered for the next commit and those of the commit under way
    /// may take in memory together, in bytes.
    pub memory_budget: usize,
    /// How long changes may gather under a backlog before a commit begins.
    pub commit_interval: Duration,
    /// PostgreSQL: the fill factor (percent) of the tables created in upsert mode.
    pub fillfactor: u8,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for SqlSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSinkConfig")
            .field("dialect", &self.dialect)
            .field("url", &redact_url(&self.url))
            .field("table_template", &self.table_template)
            .field("table_overrides", &self.table_overrides)
            .field("mode", &self.mode)
            .field("delete_mode", &self.delete_mode)
            .field("on_type_change", &self.on_type_change)
            .field("on_dropped_column", &self.on_dropped_column)
            .field("offsets_table", &self.offsets_table)
            .finish_non_exhaustive()
    }
}

impl SqlSinkConfig {
    /// A configuration with the defaults for `url`.
    pub fn new(url: &str) -> Result<SqlSinkConfig, SqlError> {
        Ok(SqlSinkConfig {
            dialect: dialect_of(url)?,
            url: url.to_owned(),
            password: None,
            table_template: "{table}".to_owned(),
            table_overrides: BTreeMap::new(),
            mode: Mode::Upsert,
            delete_mode: DeleteMode::Hard,
            on_type_change: TypeChangePolicy::Fail,
            on_dropped_column: DroppedColumnPolicy::Keep,
            offsets_table: "plexus_offsets".to_owned(),
            batch_rows: 10_000,
            memory_budget: 64 << 20,
            commit_interval: Duration::from_secs(5),
            fillfactor: 70,
            connect_timeout: Duration::from_secs(10),
        })
    }

    /// Reads validated settings; absent settings take their defaults.
    pub fn from_settings(settings: &Settings) -> Result<SqlSinkConfig, SqlError> {
        let url = settings
            .string("url")
            .ok_or_else(|| invalid("url", "is required, like \"postgres://user@host/db\""))?;
        let mut config = SqlSinkConfig::new(url)?;
        config.password = settings.secret("password").map(|s| s.expose().to_owned());
        if let Some(template) = settings.string("table") {
            check_template(template).map_err(|e| invalid("table", &e))?;
            config.table_template = template.to_owned();
        }
        if let Some(entries) = settings.string_list("table_overrides") {
            for entry in entries {
                let (topic, table) = entry
                    .split_once('=')
                    .map(|(t, n)| (t.trim(), n.trim()))
                    .filter(|(t, n)| !t.is_empty() && !n.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            "table_overrides",
                            &format!("entry `{entry}` must be written `<topic>=<table>`, like \"pg.public.orders=analytics.orders\""),
                        )
                    })?;
                check_table_name(table).map_err(|e| invalid("table_overrides", &format!("entry `{entry}`: {e}")))?;
                if config
                    .table_overrides
                    .insert(topic.to_owned(), table.to_owned())
                    .is_some()
                {
                    return Err(invalid("table_overrides", &format!("names topic `{topic}` twice")));
                }
            }
        }
        config.mode = match settings.string("mode") {
            None | Some("upsert") => Mode::Upsert,
            Some("history") => Mode::History,
            Some(other) => return Err(invalid("mode", &format!("must be upsert or history, not `{other}`"))),
        };
        config.delete_mode = match settings.string("delete_mode") {
            None | Some("hard") => DeleteMode::Hard,
            Some("soft") => DeleteMode::Soft,
            Some(other) => return Err(invalid("delete_mode", &format!("must be hard or soft, not `{other}`"))),
        };
        config.on_type_change = match settings.string("on_type_change") {
            None | Some("fail") => TypeChangePolicy::Fail,
            Some("widen") => TypeChangePolicy::Widen,
            Some("ignore") => TypeChangePolicy::Ignore,
            Some(other) => {
                return Err(invalid(
                    "on_type_change",
                    &format!("must be fail, widen or ignore, not `{other}`"),
                ));
            }
        };
        config.on_dropped_column = match settings.string("on_dropped_column") {
            None | Some("keep") => DroppedColumnPolicy::Keep,
            Some("fail") => DroppedColumnPolicy::Fail,
            Some(other) => {
                return Err(invalid(
                    "on_dropped_column",
                    &format!("must be keep or fail, not `{other}`"),
                ));
            }
        };
        if let Some(name) = settings.string("offsets_table") {
            check_table_name(name).map_err(|e| invalid("offsets_table", &e))?;
            config.offsets_table = name.to_owned();
        }
        if settings.get("batch_rows").is_some() {
            config.batch_rows = settings
                .integer("batch_rows")
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("batch_rows", "must be a whole number above 0"))?;
        }
        if settings.get("memory_budget").is_some() {
            config.memory_budget = settings
                .size("memory_budget")
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("memory_budget", "must be a size above 0, like \"64MiB\""))?;
        }
        if settings.get("commit_interval").is_some() {
            config.commit_interval = settings
                .duration("commit_interval")
                .ok_or_else(|| invalid("commit_interval", "must be a duration, like \"1s\""))?;
        }
        if settings.get("fillfactor").is_some() {
            config.fillfactor = settings
                .integer("fillfactor")
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| (10..=100).contains(n))
                .ok_or_else(|| invalid("fillfactor", "must be a whole number from 10 to 100"))?;
        }
        if settings.get("connect_timeout").is_some() {
            config.connect_timeout = settings
                .duration("connect_timeout")
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid("connect_timeout", "must be a duration above 0, like \"10s\""))?;
        }
        Ok(config)
    }

    /// The target table of `topic`: its override, or the template filled in.
    pub fn table_for(&self, topic: &str) -> String {
        if let Some(table) = self.table_overrides.get(topic) {
            return table.clone();
        }
        let mut segments = topic.rsplit('.');
        let table = segments.next().unwrap_or(topic);
        let schema = segments.next().unwrap_or("");
        let flat: String = topic
            .chars()
            .map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' })
            .collect();
        self.table_template
            .replace("{table}", table)
            .replace("{schema}", schema)
            .replace("{topic}", &flat)
    }
}

/// The dialect a URL names by its scheme.
pub fn dialect_of(url: &str) -> Result<DialectKind, SqlError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "postgres" | "postgresql" => Ok(DialectKind::Postgres),
        "mysql" | "mariadb" => Ok(DialectKind::MySql),
        "sqlite" => Ok(DialectKind::Sqlite),
        _ => Err(invalid(
            "url",
            &format!(
                "`{}` names no supported database: use postgres://, mysql:// (or mariadb://) or sqlite://",
                redact_url(url)
            ),
        )),
    }
}

/// `url` with the password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("`{template}` has a `{{` without `}}`"))?;
        let name = &after[..close];
        if !matches!(name, "table" | "schema" | "topic") {
            return Err(format!(
                "`{template}` uses `{{{name}}}`; the variables are {{table}}, {{schema}} and {{topic}}"
            ));
        }
        rest = &after[close + 1..];
    }
    if template.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

/// A table name: one or two dot-separated parts (`orders`, `analytics.orders`).
fn check_table_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{name}` is not a table name: write `table` or `schema.table`"));
    }
    Ok(())
}

fn invalid(name: &str, problem: &str) -> SqlError {
    SqlError::Config(format!("sql setting `{name}` {problem}"))
}

/// The settings `type = "sql"` accepts.
pub(crate) fn fields() -> Vec<FieldSpec> {
    vec![
        FieldSpec::new("url", FieldKind::String).required().doc(
            "The target database: `postgres://user:password@host:5432/db` (PostgreSQL or anything speaking its \
             protocol; `?sslmode=require` for TLS), `mysql://user:password@host:3306/db` (MySQL, MariaDB), or \
             `sqlite:///path/to/file.db` (created when missing).",
        ),
        FieldSpec::new("password", FieldKind::String)
            .secret()
            .doc("The password, instead of writing it in `url` (use `${ENV}` interpolation)."),
        FieldSpec::new("table", FieldKind::String).with_default("{table}").doc(
            "The target table of each topic: `{table}` is the topic's last dot-separated part (`orders` of \
             `pg.public.orders`), `{schema}` the part before it (`public`), `{topic}` the whole topic with \
             characters other than letters, digits and `_` replaced by `_`. `schema.table` names a table in another \
             schema (PostgreSQL) or database (MySQL).",
        ),
        FieldSpec::new("table_overrides", FieldKind::StringList).doc(
            "Target tables for particular topics, overriding `table`: `[\"pg.public.orders=analytics.orders\"]`.",
        ),
        FieldSpec::new("mode", FieldKind::one_of(["upsert", "history"]))
            .with_default("upsert")
            .doc(
                "`upsert`: the target mirrors the source, one row per key. `history`: every change is appended as a \
                 row with `__op`, `__ts_ms`, `__lsn`, `__seq`, `__unchanged`, `__partition` and `__offset`.",
            ),
        FieldSpec::new("delete_mode", FieldKind::one_of(["hard", "soft"]))
            .with_default("hard")
            .doc(
                "In `upsert` mode: `hard` deletes the row; `soft` keeps it with `__deleted = true` and \
                 `__deleted_at` set to the change's time (a later insert of the key clears them).",
            ),
        FieldSpec::new("on_type_change", FieldKind::one_of(["fail", "widen", "ignore"]))
            .with_default("fail")
            .doc(
                "When a column's type in the records no longer fits the target column: `fail` stops the sink with a \
                 message naming table, column and both types; `widen` alters the column to the new type; `ignore` \
                 keeps the column, and values it cannot hold go to the dead letters.",
            ),
        FieldSpec::new("on_dropped_column", FieldKind::one_of(["keep", "fail"]))
            .with_default("keep")
            .doc(
                "When the records no longer have a column the target table has: `keep` leaves the column (existing \
                 rows keep their values, new rows get NULL); `fail` stops the sink. Columns are never dropped.",
            ),
        FieldSpec::new("offsets_table", FieldKind::String)
            .with_default("plexus_offsets")
            .doc("The table in the target where the sink keeps the log offsets it applied, in the same transaction as the data."),
        FieldSpec::new("batch_rows", FieldKind::integer_between(Some(1), None))
            .with_default(10_000)
            .doc("Rows per staging chunk: one `COPY` stream (PostgreSQL) or multi-row `INSERT` (MySQL, SQLite)."),
        FieldSpec::new("memory_budget", FieldKind::Size)
            .with_default(plexus_config::ByteSize::mib(64))
            .doc(
                "What the changes gathered for the next commit and those of the commit under way may take in memory \
                 together. Under a backlog a commit begins when the gathered changes fill what the commit under way \
                 leaves of this (or after `commit_interval`), and the next changes gather while it runs.",
            ),
        FieldSpec::new("commit_interval", FieldKind::Duration)
            .with_default(plexus_config::Duration::from_secs(5))
            .doc(
                "While records are left unread (a backlog), how long changes may gather (merged by key) before a \
                 commit begins, if they do not fill the memory budget first: the longer, the more changes of a key \
                 merge into one row and the less the target has to do, at the cost of the backlog's latency. A sink \
                 that keeps up commits every second and as soon as it catches up, whatever this is.",
            ),
        FieldSpec::new("fillfactor", FieldKind::integer_between(Some(10), Some(100)))
            .with_default(70)
            .doc(
                "PostgreSQL: the fill factor (percent) of the tables the sink creates in upsert mode. The room left \
                 on each page lets an update stay on its row's page (a HOT update: no new index entry, and the old \
                 version is reclaimed on the page without VACUUM); with CDC's updates this makes applying them about \
                 a third faster and the table no larger than with 100. Tables that exist are left as they are.",
            ),
        FieldSpec::new("connect_timeout", FieldKind::Duration)
            .with_default(plexus_config::Duration::from_secs(10))
            .doc("How long connecting to the target may take before the attempt counts as failed (and is retried)."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_from_topics() {
        let mut settings = Settings::new();
        settings.insert("url", "postgres://u:secret@127.0.0.1/db");
        settings.insert("table", "raw_{schema}_{table}");
        settings.insert("table_overrides", vec!["pg.public.orders=analytics.orders".to_owned()]);
        let config = SqlSinkConfig::from_settings(&settings).unwrap();
        assert_eq!(config.dialect, DialectKind::Postgres);
        assert_eq!(config.table_for("pg.public.items"), "raw_public_items");
        assert_eq!(config.table_for("pg.public.orders"), "analytics.orders");
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn errors_name_the_setting() {
        let check = |name: &str, value: plexus_config::Value, expected: &str| {
            let mut settings = Settings::new();
            settings.insert("url", "sqlite:///tmp/x.db");
            settings.insert(name, value);
            let err = SqlSinkConfig::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains(&format!("`{name}`")) && err.contains(expected), "{err}");
        };
        check("url", "oracle://x".into(), "postgres://");
        check("table", "{nope}".into(), "{nope}");
        check(
            "table_overrides",
            plexus_config::Value::StringList(vec!["orders".into()]),
            "<topic>=<table>",
        );
        check(
            "table_overrides",
            plexus_config::Value::StringList(vec!["a=b".into(), "a=c".into()]),
            "twice",
        );
        check("mode", "merge".into(), "upsert or history");
        check("on_type_change", "cast".into(), "fail, widen or ignore");
        check("offsets_table", "a.b.c".into(), "schema.table");
        check("fillfactor", plexus_config::Value::Integer(5), "from 10 to 100");
    }
}
