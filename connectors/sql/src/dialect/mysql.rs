//! MySQL and MariaDB: multi-row `INSERT ... ON DUPLICATE KEY UPDATE` and
//! `DELETE ... WHERE (key) IN (...)`, one statement per chunk.

use std::str::FromStr;

use sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlConnection};
use sqlx::{Arguments as _, AssertSqlSafe, ConnectOptions, Row as _};

use super::{CatalogColumn, Group, TableName, chunks, multi_row_sql};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;
use crate::values::Cell;

const MY: DialectKind = DialectKind::MySql;

pub struct MySqlTarget {
    conn: MySqlConnection,
}

impl std::fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlTarget").finish_non_exhaustive()
    }
}

impl MySqlTarget {
    pub async fn connect(config: &SqlSinkConfig) -> Result<MySqlTarget, SqlError> {
        let url = config.url.replacen("mariadb://", "mysql://", 1);
        let mut options = MySqlConnectOptions::from_str(&url)
            .map_err(|e| SqlError::Config(format!("sql setting `url` is not a MySQL URL: {e}")))?
            .disable_statement_logging();
        if let Some(password) = &config.password {
            options = options.password(password);
        }
        let user = options.get_username().to_owned();
        let context = format!("connect to {} as `{user}`", crate::config::redact_url(&config.url));
        let conn = options
            .connect()
            .await
            .map_err(|e| SqlError::from_sqlx(context.clone(), e))?;
        let mut target = MySqlTarget { conn };
        // Values that do not fit fail (and go to the dead letters) instead of being
        // truncated with a warning; times are UTC.
        target
            .execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), time_zone = '+00:00'")
            .await
            .map_err(|e| SqlError::from_sqlx(context, e))?;
        Ok(target)
    }

    pub async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    pub async fn columns(&mut self, table: &TableName) -> Result<Vec<CatalogColumn>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), CAST(COLUMN_KEY = 'PRI' AS SIGNED) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(table.schema.as_deref())
        .bind(&table.name)
        .fetch_all(&mut self.conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CatalogColumn {
                    name: row.try_get(0)?,
                    ty: row.try_get(1)?,
                    key: row.try_get::<i64, _>(2)? != 0,
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
            "SELECT topic, `partition`, next_offset FROM {} WHERE connector = ?",
            table.sql(MY)
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
            "INSERT INTO {} (connector, topic, `partition`, next_offset, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), updated_at = VALUES(updated_at)",
            table.sql(MY)
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
            let sql = multi_row_sql(MY, group, chunk.len());
            let mut args = MySqlArguments::default();
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

fn bind(args: &mut MySqlArguments, cell: &Cell) -> Result<(), sqlx::error::BoxDynError> {
    match cell {
        Cell::Null => args.add(None::<String>),
        Cell::Bool(b) => args.add(*b),
        Cell::Int(n) => args.add(*n),
        Cell::Float(f) => args.add(*f),
        Cell::Text(t) => args.add(t.as_str()),
        Cell::Bytes(b) => args.add(b.as_slice()),
    }
}
