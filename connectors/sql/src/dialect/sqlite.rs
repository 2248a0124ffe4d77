//! SQLite: multi-row `INSERT ... ON CONFLICT` and `DELETE ... WHERE (key) IN (VALUES
//! ...)`, one statement per chunk.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments as _, AssertSqlSafe, ConnectOptions, Row as _};

use super::{CatalogColumn, Group, TableName, chunks, multi_row_sql};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;
use crate::values::Cell;

const LITE: DialectKind = DialectKind::Sqlite;

pub struct SqliteTarget {
    conn: SqliteConnection,
}

impl std::fmt::Debug for SqliteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTarget").finish_non_exhaustive()
    }
}

impl SqliteTarget {
    pub async fn connect(config: &SqlSinkConfig) -> Result<SqliteTarget, SqlError> {
        let options = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| SqlError::Config(format!("sql setting `url` is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Full: a commit (data and offsets) survives a power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let conn = options
            .connect()
            .await
            .map_err(|e| SqlError::from_sqlx(format!("open {}", config.url), e))?;
        Ok(SqliteTarget { conn })
    }

    pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    pub async fn columns(&mut self, table: &TableName) -> Result<Vec<CatalogColumn>, sqlx::Error> {
        let rows = sqlx::query("SELECT name, type, pk FROM pragma_table_info(?1, COALESCE(?2, 'main')) ORDER BY cid")
            .bind(&table.name)
            .bind(table.schema.as_deref())
            .fetch_all(&mut self.conn)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CatalogColumn {
                    name: row.try_get(0)?,
                    ty: row.try_get(1)?,
                    key: row.try_get::<i64, _>(2)? > 0,
                })
            })
            .collect()
    }

    pub async fn read_offsets(
        &mut self,
        table: &TableName,
        connector: &str,
    ) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
        let sql = format!(
            "SELECT topic, \"partition\", next_offset FROM {} WHERE connector = ?",
            table.sql(LITE)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(connector)
            .fetch_all(&mut self.conn)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub async fn write_offsets(
        &mut self,
        table: &TableName,
        connector: &str,
        offsets: &plexus_connector::SinkOffsets,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (connector, topic, \"partition\", next_offset, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (connector, topic, \"partition\") DO UPDATE \
             SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            table.sql(LITE)
        );
        let now = crate::offsets::now_text();
        for (tp, next) in offsets {
            sqlx::query(AssertSqlSafe(sql.clone()))
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

    pub async fn apply(&mut self, group: &Group<'_>, batch_rows: usize) -> Result<(), sqlx::Error> {
        let staged = group.staged();
        for chunk in chunks(&group.rows, &staged, batch_rows) {
            let sql = multi_row_sql(LITE, group, chunk.len());
            let mut args = SqliteArguments::default();
            for row in chunk {
                for &c in &staged {
                    bind(&mut args, group.cell(row, c)).map_err(sqlx::Error::Encode)?;
                }
            }
            sqlx::query_with(AssertSqlSafe(sql), args)
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }
}

fn bind(args: &mut SqliteArguments, cell: &Cell) -> Result<(), sqlx::error::BoxDynError> {
    match cell {
        Cell::Null => args.add(None::<String>),
        Cell::Bool(b) => args.add(*b),
        Cell::Int(n) => args.add(*n),
        Cell::Float(f) => args.add(*f),
        Cell::Text(t) => args.add(t.as_str()),
        Cell::Bytes(b) => args.add(b.as_slice()),
    }
}
