//! PostgreSQL (and anything speaking its protocol): `COPY` into a temporary staging
//! table, then one `INSERT ... ON CONFLICT` or `DELETE ... USING` per group.

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row as _};

use super::{CatalogColumn, Group, GroupKind, TableName, column_list, quote};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::error::SqlError;
use crate::values::{CellRef, float_text, hex_bytea};

const PG: DialectKind = DialectKind::Postgres;

/// Bytes of `COPY` data sent per message.
const COPY_CHUNK: usize = 1 << 20;

pub struct PostgresTarget {
    conn: PgConnection,
    /// Staging tables of this session, by target table and staged columns.
    stages: HashMap<(TableName, Vec<String>), String>,
    next_stage: usize,
    /// The server has MERGE (PostgreSQL 15 and later).
    merge: bool,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl PostgresTarget {
    common_target_methods!(PG);

    pub async fn connect(config: &SqlSinkConfig) -> Result<PostgresTarget, SqlError> {
        let mut options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| SqlError::Config(format!("sql setting `url` is not a PostgreSQL URL: {e}")))?
            .application_name("plexus-sql-sink")
            .options([("TimeZone", "UTC"), ("DateStyle", "ISO"), ("IntervalStyle", "iso_8601")])
            .disable_statement_logging();
        if let Some(password) = &config.password {
            options = options.password(password);
        }
        let user = options.get_username().to_owned();
        let conn = options.connect().await.map_err(|e| {
            SqlError::from_sqlx(
                format!("connect to {} as `{user}`", crate::config::redact_url(&config.url)),
                e,
            )
        })?;
        let merge = conn.server_version_num().is_some_and(|v| v >= 150_000);
        Ok(PostgresTarget {
            conn,
            stages: HashMap::new(),
            next_stage: 0,
            merge,
        })
    }

    pub fn rolled_back(&mut self) {
        self.stages.clear();
    }

    pub async fn columns(&mut self, table: &TableName) -> Result<Vec<CatalogColumn>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    coalesce(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema()) \
               AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&table.name)
        .bind(table.schema.as_deref())
        .fetch_all(&mut self.conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CatalogColumn {
                    name: row.try_get(0)?,
                    ty: row.try_get(1)?,
                    key: row.try_get(2)?,
                })
            })
            .collect()
    }

    pub async fn apply(&mut self, group: &Group<'_>, _batch_rows: usize) -> Result<(), sqlx::Error> {
        if group.kind == GroupKind::Delete && group.keys.len() == 1 {
            return self.delete_keys(group).await;
        }
        let staged = group.staged();
        let stage = self.stage_for(group, &staged).await?;
        self.execute(&format!("DELETE FROM {stage}")).await?;
        let columns = column_list(PG, group.columns, &staged);
        let mut copy = self
            .conn
            .copy_in_raw(&format!("COPY {stage} ({columns}) FROM STDIN"))
            .await?;
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
        let mut cells = Vec::new();
        for row in &group.rows {
            group.cells_into(row, &mut cells);
            for (n, &c) in staged.iter().enumerate() {
                if n > 0 {
                    buf.push(b'\t');
                }
                push_copy_text(&mut buf, cells[c]);
            }
            buf.push(b'\n');
            if buf.len() >= COPY_CHUNK {
                if let Err(e) = copy.send(buf.as_slice()).await {
                    let _ = copy.abort("staging failed").await;
                    return Err(e);
                }
                buf.clear();
            }
        }
        if !buf.is_empty()
            && let Err(e) = copy.send(buf.as_slice()).await
        {
            let _ = copy.abort("staging failed").await;
            return Err(e);
        }
        copy.finish().await?;
        // Statistics of the staged keys let the planner look the few deleted keys up in
        // the index instead of hashing them against the whole table (60 ms for 4,000
        // keys against 200,000 rows). Upserts stage many rows, where either plan does.
        // (Only composite keys are staged for deletes; see `delete_keys`.)
        if group.kind == GroupKind::Delete {
            self.execute(&format!("ANALYZE {stage}")).await?;
        }
        let table = group.table.sql(PG);
        let keys = column_list(PG, group.columns, group.keys);
        // The target's row (`t`) of each staged row (`s`).
        let on = group
            .keys
            .iter()
            .map(|&k| {
                let c = quote(PG, &group.columns[k].name);
                format!("t.{c} = s.{c}")
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = match group.kind {
            GroupKind::Delete => {
                format!("DELETE FROM {table} AS t USING {stage} AS s WHERE {on}")
            }
            GroupKind::Append => {
                format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({keys}) DO NOTHING")
            }
            GroupKind::Upsert if group.update.is_empty() => {
                format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({keys}) DO NOTHING")
            }
            GroupKind::Upsert if self.merge => {
                // MERGE (PostgreSQL 15+) is about a fifth faster than ON CONFLICT here:
                // no speculative insertion per row.
                let set = group
                    .update
                    .iter()
                    .map(|&i| {
                        let c = quote(PG, &group.columns[i].name);
                        format!("{c} = s.{c}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let values = staged
                    .iter()
                    .map(|&i| format!("s.{}", quote(PG, &group.columns[i].name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "MERGE INTO {table} AS t USING {stage} AS s ON {on} WHEN MATCHED THEN UPDATE SET {set} \
                     WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
                )
            }
            GroupKind::Upsert => {
                let set = group
                    .update
                    .iter()
                    .map(|&i| {
                        let c = quote(PG, &group.columns[i].name);
                        format!("{c} = EXCLUDED.{c}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({keys}) DO UPDATE SET {set}"
                )
            }
        };
        self.execute(&sql).await
    }

    /// Deletes the rows of a single-column key with one statement that binds the keys
    /// as an array: the index finds each one, without a staging table or the
    /// statistics a staged join needs to choose the index.
    async fn delete_keys(&mut self, group: &Group<'_>) -> Result<(), sqlx::Error> {
        let k = group.keys[0];
        let column = &group.columns[k];
        let mut keys: Vec<Option<String>> = Vec::with_capacity(group.rows.len());
        let mut cells = Vec::new();
        for row in &group.rows {
            group.cells_into(row, &mut cells);
            keys.push(match cells[k] {
                CellRef::Null => None,
                CellRef::Bool(b) => Some((if b { "t" } else { "f" }).to_owned()),
                CellRef::Int(n) => Some(n.to_string()),
                CellRef::Float(f) => Some(float_text(f)),
                CellRef::Text(t) => Some(t.to_owned()),
                CellRef::Bytes(b) => Some(hex_bytea(b)),
            });
        }
        let sql = format!(
            "DELETE FROM {} WHERE {} = ANY($1::text[]::{}[])",
            group.table.sql(PG),
            quote(PG, &column.name),
            column.ty.ddl(PG, true)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(keys)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// The session's staging table for the group's target and columns: created once, of
    /// the target's column types, emptied at every commit.
    async fn stage_for(&mut self, group: &Group<'_>, staged: &[usize]) -> Result<String, sqlx::Error> {
        let names: Vec<String> = staged.iter().map(|&i| group.columns[i].name.clone()).collect();
        let id = (group.table.clone(), names);
        if let Some(stage) = self.stages.get(&id) {
            return Ok(stage.clone());
        }
        self.next_stage += 1;
        let stage = format!("plexus_stage_{}", self.next_stage);
        let columns = column_list(PG, group.columns, staged);
        self.execute(&format!(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {columns} FROM {} WITH NO DATA",
            group.table.sql(PG)
        ))
        .await?;
        self.stages.insert(id, stage.clone());
        Ok(stage)
    }
}

/// Appends a value in `COPY`'s text format.
fn push_copy_text(buf: &mut Vec<u8>, cell: CellRef<'_>) {
    match cell {
        CellRef::Null => buf.extend_from_slice(b"\\N"),
        CellRef::Bool(b) => buf.push(if b { b't' } else { b'f' }),
        CellRef::Int(n) => {
            plexus_connector::json::push_i64(buf, n);
        }
        CellRef::Float(f) => buf.extend_from_slice(float_text(f).as_bytes()),
        CellRef::Text(text) => push_copy_escaped(buf, text.as_bytes()),
        CellRef::Bytes(bytes) => push_copy_escaped(buf, hex_bytea(bytes).as_bytes()),
    }
}

fn push_copy_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escape);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut buf = Vec::new();
        push_copy_text(&mut buf, CellRef::Text("a\tb\\c\nd"));
        buf.push(b'|');
        push_copy_text(&mut buf, CellRef::Bytes(&[0x0a, 0xff]));
        buf.push(b'|');
        push_copy_text(&mut buf, CellRef::Null);
        assert_eq!(String::from_utf8(buf).unwrap(), "a\\tb\\\\c\\nd|\\\\x0aff|\\N");
    }
}
