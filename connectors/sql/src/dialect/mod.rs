//! The three kinds of target, one module each: connecting, reading the catalog, the
//! offsets table, and staging and applying a group of rows with set-based statements.
//!
//! | | stage | apply |
//! |---|---|---|
//! | PostgreSQL | `COPY` (text format) into a temporary table of the target's column types, reused per batch (`ANALYZE`d for deletes) | `MERGE INTO t USING stage ON key = key WHEN MATCHED THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...` (servers reporting version 15 or later; otherwise `INSERT INTO t SELECT ... FROM stage ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c`), `DELETE FROM t USING stage WHERE key = key` |
//! | MySQL, MariaDB | multi-row `INSERT` | `... ON DUPLICATE KEY UPDATE c = VALUES(c)`, `DELETE FROM t WHERE (key) IN ((..),(..))` |
//! | SQLite | multi-row `INSERT` | `... ON CONFLICT (key) DO UPDATE SET c = excluded.c`, `DELETE FROM t WHERE (key) IN (VALUES (..),(..))` |
//!
//! MySQL and SQLite have no `COPY`: their staging is the multi-row `INSERT` itself, one
//! statement per chunk of rows.

/// The methods every target has alike, for a target struct holding `conn`: running
/// SQL, and reading and writing the offsets rows.
macro_rules! common_target_methods {
    ($dialect:expr) => {
        pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut self.conn)
                .await
                .map(|_| ())
        }

        pub async fn read_offsets(
            &mut self,
            table: &super::TableName,
            connector: &str,
        ) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
            use sqlx::Row as _;
            let rows = sqlx::query(sqlx::AssertSqlSafe(crate::offsets::select_sql($dialect, table)))
                .bind(connector)
                .fetch_all(&mut self.conn)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        }

        pub async fn write_offsets(
            &mut self,
            table: &super::TableName,
            connector: &str,
            offsets: &plexus_connector::SinkOffsets,
        ) -> Result<(), sqlx::Error> {
            let sql = crate::offsets::upsert_sql($dialect, table);
            let now = crate::offsets::now_text();
            for (tp, next) in offsets {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(connector)
                    .bind(&tp.topic)
                    .bind(i64::from(tp.partition))
                    .bind(*next)
                    .bind(&now)
                    .execute(&mut self.conn)
                    .await?;
            }
            Ok(())
        }
    };
}

/// `apply` for the targets that send rows as statement parameters (MySQL, SQLite):
/// one multi-row statement per chunk.
macro_rules! parameter_apply {
    ($dialect:expr, $arguments:ty) => {
        pub async fn apply(&mut self, group: &super::Group<'_>, batch_rows: usize) -> Result<(), sqlx::Error> {
            use sqlx::Arguments as _;
            let staged = group.staged();
            for chunk in super::chunks(&group.rows, &staged, batch_rows) {
                let sql = super::multi_row_sql($dialect, group, chunk.len());
                let mut args = <$arguments>::default();
                let mut cells = Vec::new();
                for row in chunk {
                    group.cells_into(row, &mut cells);
                    for &c in &staged {
                        let added = match cells[c] {
                            crate::values::CellRef::Null => args.add(None::<String>),
                            crate::values::CellRef::Bool(b) => args.add(b),
                            crate::values::CellRef::Int(n) => args.add(n),
                            crate::values::CellRef::Float(f) => args.add(f),
                            crate::values::CellRef::Text(t) => args.add(t),
                            crate::values::CellRef::Bytes(b) => args.add(b),
                        };
                        added.map_err(sqlx::Error::Encode)?;
                    }
                }
                sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
                    .execute(&mut self.conn)
                    .await?;
            }
            Ok(())
        }
    };
}

mod mysql;
mod postgres;
mod sqlite;

use plexus_connector::SinkOffsets;

use crate::batch::Row;
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;
use crate::schema::Column;
use crate::values::CellRef;

/// A table in the target: `orders`, or `analytics.orders` (a PostgreSQL schema, a MySQL
/// database, an attached SQLite database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn parse(text: &str) -> TableName {
        match text.split_once('.') {
            Some((schema, name)) => TableName {
                schema: Some(schema.to_owned()),
                name: name.to_owned(),
            },
            None => TableName {
                schema: None,
                name: text.to_owned(),
            },
        }
    }

    /// The quoted name for SQL.
    pub fn sql(&self, dialect: DialectKind) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(dialect, schema), quote(dialect, &self.name)),
            None => quote(dialect, &self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An identifier quoted for `dialect`.
pub fn quote(dialect: DialectKind, ident: &str) -> String {
    match dialect {
        DialectKind::MySql => format!("`{}`", ident.replace('`', "``")),
        _ => format!("\"{}\"", ident.replace('"', "\"\"")),
    }
}

/// A column as the target's catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    pub name: String,
    /// The type as the catalog writes it.
    pub ty: String,
    pub key: bool,
}

/// What one set-based apply does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Insert, or update the columns in `update` of rows whose key exists.
    Upsert,
    /// Delete the rows with these keys.
    Delete,
    /// Insert, skipping rows whose key (`__partition`, `__offset`) exists: history mode.
    Append,
}

/// Rows applied with one statement (per chunk): same kind, same columns to update.
#[derive(Debug)]
pub struct Group<'a> {
    pub table: &'a TableName,
    pub columns: &'a [Column],
    pub keys: &'a [usize],
    /// Columns set on update (the rest keep the target's values).
    pub update: Vec<usize>,
    pub rows: Vec<Row<'a>>,
    pub kind: GroupKind,
}

impl Group<'_> {
    /// A row's cells by column into `out`, with a not-provided value staged as NULL.
    pub fn cells_into<'r>(&self, row: &Row<'r>, out: &mut Vec<CellRef<'r>>) {
        out.clear();
        out.extend(row.cells().map(|c| c.unwrap_or(CellRef::Null)));
        out.resize(self.columns.len().max(out.len()), CellRef::Null);
    }

    /// The columns staged: all for upserts and appends, the key for deletes.
    pub fn staged(&self) -> Vec<usize> {
        match self.kind {
            GroupKind::Delete => self.keys.to_vec(),
            _ => (0..self.columns.len()).collect(),
        }
    }
}

/// A connection to the target.
#[derive(Debug)]
pub enum Target {
    Postgres(postgres::PostgresTarget),
    MySql(mysql::MySqlTarget),
    Sqlite(sqlite::SqliteTarget),
}

impl Target {
    /// Connects; a refused connection is retriable, refused credentials fatal.
    pub async fn connect(config: &SqlSinkConfig) -> Result<Target, SqlError> {
        let connect = async {
            match config.dialect {
                DialectKind::Postgres => postgres::PostgresTarget::connect(config).await.map(Target::Postgres),
                DialectKind::MySql => mysql::MySqlTarget::connect(config).await.map(Target::MySql),
                DialectKind::Sqlite => sqlite::SqliteTarget::connect(config).await.map(Target::Sqlite),
            }
        };
        match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(SqlError::Unavailable {
                context: format!(
                    "connect to {} within {:?}",
                    crate::config::redact_url(&config.url),
                    config.connect_timeout
                ),
                source: sqlx::Error::PoolTimedOut,
            }),
        }
    }

    pub fn dialect(&self) -> DialectKind {
        match self {
            Target::Postgres(_) => DialectKind::Postgres,
            Target::MySql(_) => DialectKind::MySql,
            Target::Sqlite(_) => DialectKind::Sqlite,
        }
    }

    /// Runs statements without results (DDL, transaction control).
    pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Target::Postgres(t) => t.execute(sql).await,
            Target::MySql(t) => t.execute(sql).await,
            Target::Sqlite(t) => t.execute(sql).await,
        }
    }

    pub async fn begin(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Target::Sqlite(t) => t.execute("BEGIN IMMEDIATE").await,
            other => other.execute("BEGIN").await,
        }
    }

    /// The columns of `table`, or `None` when it does not exist.
    pub async fn columns(&mut self, table: &TableName) -> Result<Option<Vec<CatalogColumn>>, sqlx::Error> {
        let columns = match self {
            Target::Postgres(t) => t.columns(table).await?,
            Target::MySql(t) => t.columns(table).await?,
            Target::Sqlite(t) => t.columns(table).await?,
        };
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// Creates the offsets table when missing and reads this connector's offsets.
    pub async fn read_offsets(&mut self, table: &TableName, connector: &str) -> Result<SinkOffsets, sqlx::Error> {
        let dialect = self.dialect();
        let (text, key) = match dialect {
            DialectKind::Postgres => ("text", "text"),
            DialectKind::MySql => ("varchar(255)", "varchar(255)"),
            DialectKind::Sqlite => ("TEXT", "TEXT"),
        };
        let int = if dialect == DialectKind::Sqlite {
            "INTEGER"
        } else {
            "bigint"
        };
        let q = |s: &str| quote(dialect, s);
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({} {key} NOT NULL, {} {key} NOT NULL, {} {int} NOT NULL, {} {int} NOT NULL, {} {text}, PRIMARY KEY ({}, {}, {}))",
            table.sql(dialect),
            q("connector"),
            q("topic"),
            q("partition"),
            q("next_offset"),
            q("updated_at"),
            q("connector"),
            q("topic"),
            q("partition"),
        );
        if let (DialectKind::Postgres, Some(schema)) = (dialect, &table.schema) {
            self.execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", q(schema)))
                .await?;
        }
        self.execute(&create).await?;
        let rows = match self {
            Target::Postgres(t) => t.read_offsets(table, connector).await?,
            Target::MySql(t) => t.read_offsets(table, connector).await?,
            Target::Sqlite(t) => t.read_offsets(table, connector).await?,
        };
        let mut offsets = SinkOffsets::new();
        for (topic, partition, next) in rows {
            if let Ok(partition) = u32::try_from(partition) {
                offsets.insert(plexus_connector::TopicPartition { topic, partition }, next);
            }
        }
        Ok(offsets)
    }

    /// Stores `offsets` (inside the caller's transaction).
    pub async fn write_offsets(
        &mut self,
        table: &TableName,
        connector: &str,
        offsets: &SinkOffsets,
    ) -> Result<(), sqlx::Error> {
        match self {
            Target::Postgres(t) => t.write_offsets(table, connector, offsets).await,
            Target::MySql(t) => t.write_offsets(table, connector, offsets).await,
            Target::Sqlite(t) => t.write_offsets(table, connector, offsets).await,
        }
    }

    /// Stages and applies one group of rows.
    pub async fn apply(&mut self, group: &Group<'_>, batch_rows: usize) -> Result<(), sqlx::Error> {
        if group.rows.is_empty() {
            return Ok(());
        }
        match self {
            Target::Postgres(t) => t.apply(group, batch_rows).await,
            Target::MySql(t) => t.apply(group, batch_rows).await,
            Target::Sqlite(t) => t.apply(group, batch_rows).await,
        }
    }

    /// Forgets per-connection state a rolled-back transaction may have undone (staging
    /// tables created in it).
    pub fn rolled_back(&mut self) {
        if let Target::Postgres(t) = self {
            t.rolled_back();
        }
    }
}

/// The column list `a, b, c` of `indexes`.
pub(crate) fn column_list(dialect: DialectKind, columns: &[Column], indexes: &[usize]) -> String {
    indexes
        .iter()
        .map(|&i| quote(dialect, &columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row statement: within the placeholder limit (MySQL 65,535, SQLite
/// 32,766), `batch_rows`, and about 4 MiB of values.
pub(crate) fn chunks<'a, 'r>(rows: &'a [Row<'r>], staged: &[usize], batch_rows: usize) -> Vec<&'a [Row<'r>]> {
    let per_row = staged.len().max(1);
    let by_params = (30_000 / per_row).max(1);
    let limit = batch_rows.min(by_params).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, row) in rows.iter().enumerate() {
        bytes += row
            .cells()
            .enumerate()
            .filter(|(c, _)| staged.contains(c))
            .map(|(_, cell)| cell.map_or(1, CellRef::size))
            .sum::<usize>();
        if i + 1 - start >= limit || bytes >= 4 << 20 {
            out.push(&rows[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// The multi-row statement of MySQL and SQLite for `rows` rows of `group`, with `?`
/// placeholders in row order.
pub(crate) fn multi_row_sql(dialect: DialectKind, group: &Group<'_>, rows: usize) -> String {
    let staged = group.staged();
    let table = group.table.sql(dialect);
    let one = |n: usize| format!("({})", vec!["?"; n].join(", "));
    match group.kind {
        GroupKind::Delete => {
            let keys = column_list(dialect, group.columns, group.keys);
            let tuples = vec![one(group.keys.len()); rows].join(", ");
            if group.keys.len() == 1 {
                let marks = vec!["?"; rows].join(", ");
                format!("DELETE FROM {table} WHERE {keys} IN ({marks})")
            } else if dialect == DialectKind::Sqlite {
                format!("DELETE FROM {table} WHERE ({keys}) IN (VALUES {tuples})")
            } else {
                format!("DELETE FROM {table} WHERE ({keys}) IN ({tuples})")
            }
        }
        GroupKind::Upsert | GroupKind::Append => {
            let columns = column_list(dialect, group.columns, &staged);
            let values = vec![one(staged.len()); rows].join(", ");
            let insert = format!("INSERT INTO {table} ({columns}) VALUES {values}");
            let q = |i: usize| quote(dialect, &group.columns[i].name);
            let update: &[usize] = if group.kind == GroupKind::Append {
                &[]
            } else {
                &group.update
            };
            match dialect {
                DialectKind::MySql => {
                    let set = if update.is_empty() {
                        let k = q(group.keys[0]);
                        format!("{k} = {k}")
                    } else {
                        update
                            .iter()
                            .map(|&i| format!("{0} = VALUES({0})", q(i)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("{insert} ON DUPLICATE KEY UPDATE {set}")
                }
                _ => {
                    let keys = column_list(dialect, group.columns, group.keys);
                    if update.is_empty() {
                        format!("{insert} ON CONFLICT ({keys}) DO NOTHING")
                    } else {
                        let set = update
                            .iter()
                            .map(|&i| format!("{0} = excluded.{0}", q(i)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!("{insert} ON CONFLICT ({keys}) DO UPDATE SET {set}")
                    }
                }
            }
        }
    }
}
