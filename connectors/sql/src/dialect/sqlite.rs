//! SQLite: multi-row `INSERT ... ON CONFLICT` and `DELETE ... WHERE (key) IN (VALUES
//! ...)`, one statement per chunk.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Row as _};

use super::{CatalogColumn, TableName};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;

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
    common_target_methods!(LITE);
    parameter_apply!(LITE, SqliteArguments);

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
}
