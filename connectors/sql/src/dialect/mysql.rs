//! MySQL and MariaDB: multi-row `INSERT ... ON DUPLICATE KEY UPDATE` and
//! `DELETE ... WHERE (key) IN (...)`, one statement per chunk.

use std::str::FromStr;

use sqlx::mysql::{MySqlArguments, MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Row as _};

use super::{CatalogColumn, TableName};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;

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
    common_target_methods!(MY);
    parameter_apply!(MY, MySqlArguments);

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
}
