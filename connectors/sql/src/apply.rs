//! Applying buffered rows inside the sink's open transaction (grouped, set-based, with
//! bisection to dead-letter refused rows), and the DDL that prepares a table for them.

use std::collections::HashMap;

use plexus_connector::{ConnectorError, DeadLetter, SinkContext, SinkRecord};

use crate::batch::{Origin, Row, Rows};
use crate::config::{DialectKind, DroppedColumnPolicy, Mode, SqlSinkConfig, TypeChangePolicy};
use crate::dialect::{CatalogColumn, Group, GroupKind, TableName, Target, quote};
use crate::error::{Class, SqlError, classify};
use crate::schema::{Column, ColumnType};

/// Rows of one table taken out of the buffer, applied together.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub table: TableName,
    pub columns: Vec<Column>,
    pub rows: Rows,
    /// Empty the table before the rows (a `TRUNCATE` came before them).
    pub truncate: bool,
}

/// Applies `chunks` in order inside the open transaction; returns how many rows went
/// to the dead letters.
pub(crate) async fn apply_chunks(
    target: &mut Target,
    ctx: &SinkContext,
    chunks: &[Chunk],
    mode: Mode,
    batch_rows: usize,
) -> Result<u64, ConnectorError> {
    let mut dead = 0;
    for chunk in chunks {
        dead += apply_chunk(target, ctx, chunk, mode, batch_rows).await?;
    }
    Ok(dead)
}

async fn apply_chunk(
    target: &mut Target,
    ctx: &SinkContext,
    chunk: &Chunk,
    mode: Mode,
    batch_rows: usize,
) -> Result<u64, ConnectorError> {
    let table = &chunk.table;
    let dialect = target.dialect();
    if chunk.truncate {
        target
            .execute(&format!("DELETE FROM {}", table.sql(dialect)))
            .await
            .map_err(|e| SqlError::from_sqlx(format!("truncate `{table}`"), e))?;
    }
    let keys = crate::schema::key_indexes(&chunk.columns);
    // Rows that update the same columns go together; almost always one group, the
    // one of the row before.
    struct RowGroup<'a> {
        delete: bool,
        mask: Vec<bool>,
        rows: Vec<Row<'a>>,
    }
    let mut groups: Vec<RowGroup<'_>> = Vec::new();
    let mut mask = Vec::with_capacity(chunk.columns.len());
    let mut last = 0;
    for row in chunk.rows.iter() {
        mask.clear();
        if !row.delete && mode != Mode::History {
            mask.extend(row.cells().map(|c| c.is_some()));
            mask.resize(chunk.columns.len(), false);
        }
        let same = |g: &RowGroup<'_>| g.delete == row.delete && g.mask == mask;
        if !groups.get(last).is_some_and(same) {
            last = match groups.iter().position(same) {
                Some(i) => i,
                None => {
                    groups.push(RowGroup {
                        delete: row.delete,
                        mask: mask.clone(),
                        rows: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
        }
        groups[last].rows.push(row);
    }
    groups.sort_by(|a, b| (a.delete, &a.mask).cmp(&(b.delete, &b.mask)));
    let mut dead = 0;
    for RowGroup { delete, mask, rows } in groups {
        let kind = match (mode, delete) {
            (Mode::History, _) => GroupKind::Append,
            (Mode::Upsert, true) => GroupKind::Delete,
            (Mode::Upsert, false) => GroupKind::Upsert,
        };
        let update = (0..chunk.columns.len())
            .filter(|i| !chunk.columns[*i].key && mask.get(*i).copied().unwrap_or(false))
            .collect();
        let group = Group {
            table,
            columns: &chunk.columns,
            keys: &keys,
            update,
            rows,
            kind,
        };
        dead += apply_bisecting(target, ctx, &group, batch_rows).await?;
    }
    Ok(dead)
}

/// Creates `table` when missing, adds new columns, and applies the type-change and
/// dropped-column policies; `catalog` caches what the target has. `declared`: the
/// columns come from a registered schema (so a missing one was dropped).
pub(crate) async fn prepare_table(
    target: &mut Target,
    catalog_cache: &mut HashMap<TableName, Vec<CatalogColumn>>,
    config: &SqlSinkConfig,
    table: &TableName,
    columns: &[Column],
    declared: bool,
) -> Result<(), ConnectorError> {
    let dialect = target.dialect();
    let catalog = match catalog_cache.get(table) {
        Some(c) => c.clone(),
        None => {
            let found = target
                .columns(table)
                .await
                .map_err(|e| SqlError::from_sqlx(format!("read the columns of `{table}`"), e))?;
            match found {
                Some(found) => found,
                None => {
                    create_table(target, table, columns, config.mode, config.fillfactor).await?;
                    read_catalog(target, table).await?
                }
            }
        }
    };
    let mut changed = false;
    for column in columns {
        match catalog.iter().find(|c| c.name == column.name) {
            None => {
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    table.sql(dialect),
                    quote(dialect, &column.name),
                    column.ty.ddl(dialect, false)
                );
                target
                    .execute(&sql)
                    .await
                    .map_err(|e| SqlError::from_sqlx(format!("add column `{}` to `{table}`", column.name), e))?;
                tracing::info!(table = %table, column = %column.name, "Added a column.");
                changed = true;
            }
            Some(existing) => {
                let old = ColumnType::from_catalog(dialect, &existing.ty);
                if old.holds(&column.ty, dialect) {
                    continue;
                }
                let new_ddl = column.ty.ddl(dialect, existing.key);
                match config.on_type_change {
                    TypeChangePolicy::Fail => {
                        return Err(SqlError::Schema(format!(
                            "table `{table}`, column `{}`: the target column is `{}` but the records now have \
                             `{new_ddl}`, which it cannot hold; set `on_type_change = \"widen\"` to alter the \
                             column, or `\"ignore\"` to keep it (values that do not fit then go to the dead \
                             letters)",
                            column.name, existing.ty
                        ))
                        .into());
                    }
                    TypeChangePolicy::Widen => {
                        widen(target, table, &column.name, &existing.ty, &new_ddl).await?;
                        changed = true;
                    }
                    TypeChangePolicy::Ignore => {
                        tracing::warn!(table = %table, column = %column.name, target_type = %existing.ty, new_type = %new_ddl, "Column type changed; keeping the target's type (on_type_change = \"ignore\").");
                    }
                }
            }
        }
    }
    if declared && config.on_dropped_column == DroppedColumnPolicy::Fail {
        let dropped: Vec<&str> = catalog
            .iter()
            .filter(|c| !c.name.starts_with("__") && !columns.iter().any(|k| k.name == c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !dropped.is_empty() {
            return Err(SqlError::Schema(format!(
                "table `{table}`: the records no longer have column(s) {}; set `on_dropped_column = \"keep\"` to \
                 keep them (new rows get NULL), or drop them from the target yourself",
                dropped.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
    }
    let catalog = if changed {
        read_catalog(target, table).await?
    } else {
        catalog
    };
    if let Some(missing) = columns
        .iter()
        .filter(|c| c.key)
        .find(|k| !catalog.iter().any(|c| c.key && c.name == k.name))
    {
        return Err(SqlError::Schema(format!(
            "table `{table}` exists without a primary key on the records' key (`{}` is not part of it); the sink \
             applies changes by key: give the table that primary key, or point `table`/`table_overrides` at \
             another table",
            missing.name
        ))
        .into());
    }
    catalog_cache.insert(table.clone(), catalog);
    Ok(())
}

/// Applies `group` with one set-based statement; when the target refuses it for a row's
/// data (a constraint, a value the column cannot hold), splits it in halves under
/// savepoints until the refused rows are alone, dead-letters those and applies the rest.
/// Returns how many rows were dead-lettered.
pub(crate) async fn apply_bisecting(
    target: &mut Target,
    ctx: &SinkContext,
    group: &Group<'_>,
    batch_rows: usize,
) -> Result<u64, ConnectorError> {
    let mut dead = 0;
    let mut pending: Vec<Vec<Row<'_>>> = vec![group.rows.clone()];
    let mut depth = 0usize;
    while let Some(rows) = pending.pop() {
        let part = Group {
            table: group.table,
            columns: group.columns,
            keys: group.keys,
            update: group.update.clone(),
            rows,
            kind: group.kind,
        };
        savepoint(target, "SAVEPOINT plexus_apply").await?;
        match target.apply(&part, batch_rows).await {
            Ok(()) => savepoint(target, "RELEASE SAVEPOINT plexus_apply").await?,
            Err(e) if classify(&e) == Class::Data => {
                savepoint(target, "ROLLBACK TO SAVEPOINT plexus_apply").await?;
                savepoint(target, "RELEASE SAVEPOINT plexus_apply").await?;
                target.rolled_back();
                depth += 1;
                if part.rows.len() == 1 {
                    let row = part.rows[0];
                    dead_letter(
                        ctx,
                        &row.origin(),
                        &format!(
                            "table `{}`: the target refused the row: {}",
                            group.table,
                            db_message(&e)
                        ),
                    )
                    .await?;
                    dead += 1;
                } else {
                    if depth == 1 {
                        tracing::warn!(table = %group.table, rows = part.rows.len(), error = %e, "A set-based apply failed on a row's data; bisecting to find the rows.");
                    }
                    let mid = part.rows.len() / 2;
                    pending.push(part.rows[mid..].to_vec());
                    pending.push(part.rows[..mid].to_vec());
                }
            }
            Err(e) => return Err(SqlError::from_sqlx(format!("apply changes to `{}`", group.table), e).into()),
        }
    }
    Ok(dead)
}

async fn savepoint(target: &mut Target, sql: &str) -> Result<(), ConnectorError> {
    target
        .execute(sql)
        .await
        .map_err(|e| SqlError::from_sqlx(sql.to_owned(), e).into())
}

fn db_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Dead-letters the record a buffered row came from, read back from the log for its
/// bytes (without them if the log no longer holds it).
pub(crate) async fn dead_letter(ctx: &SinkContext, origin: &Origin, reason: &str) -> Result<(), ConnectorError> {
    let record = ctx.record(&origin.topic, origin.partition, origin.offset).await?;
    ctx.dead_letter(DeadLetter {
        key: record.as_ref().and_then(|r| r.key.clone()),
        payload: record.and_then(|r| r.value),
        reason: reason.to_owned(),
        origin: origin.to_string(),
    })
}

/// Dead-letters a record in hand.
pub(crate) fn dead_letter_record(ctx: &SinkContext, record: &SinkRecord, reason: &str) -> Result<(), ConnectorError> {
    ctx.dead_letter(DeadLetter {
        key: record.key.clone(),
        payload: record.value.clone(),
        reason: reason.to_owned(),
        origin: format!("{}/{}@{}", record.topic, record.partition, record.offset),
    })
}

pub(crate) async fn read_catalog(target: &mut Target, table: &TableName) -> Result<Vec<CatalogColumn>, ConnectorError> {
    target
        .columns(table)
        .await
        .map_err(|e| SqlError::from_sqlx(format!("read the columns of `{table}`"), e))?
        .ok_or_else(|| SqlError::Inconsistent(format!("table `{table}` vanished right after it was created")).into())
}

pub(crate) async fn create_table(
    target: &mut Target,
    table: &TableName,
    columns: &[Column],
    mode: Mode,
    fillfactor: u8,
) -> Result<(), ConnectorError> {
    let dialect = target.dialect();
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if c.key { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(dialect, &c.name), c.ty.ddl(dialect, c.key))
        })
        .collect();
    let keys: Vec<String> = columns
        .iter()
        .filter(|c| c.key)
        .map(|c| quote(dialect, &c.name))
        .collect();
    if !keys.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    if let (DialectKind::Postgres, Some(schema)) = (dialect, &table.schema) {
        target
            .execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(dialect, schema)))
            .await
            .map_err(|e| SqlError::from_sqlx(format!("create schema `{schema}`"), e))?;
    }
    let suffix = match (dialect, mode) {
        (DialectKind::MySql, _) => " DEFAULT CHARSET = utf8mb4".to_owned(),
        // Room on each page, so that most updates stay on it (HOT: no new index entry).
        (DialectKind::Postgres, Mode::Upsert) if fillfactor < 100 => format!(" WITH (fillfactor = {fillfactor})"),
        _ => String::new(),
    };
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} ({}){suffix}",
        table.sql(dialect),
        parts.join(", ")
    );
    target
        .execute(&sql)
        .await
        .map_err(|e| SqlError::from_sqlx(format!("create table `{table}`"), e))?;
    tracing::info!(table = %table, columns = columns.len(), mode = ?mode, "Created a table.");
    Ok(())
}

pub(crate) async fn widen(
    target: &mut Target,
    table: &TableName,
    column: &str,
    old: &str,
    new: &str,
) -> Result<(), ConnectorError> {
    let dialect = target.dialect();
    let c = quote(dialect, column);
    let sql = match dialect {
        DialectKind::Postgres => format!(
            "ALTER TABLE {} ALTER COLUMN {c} TYPE {new} USING {c}::{new}",
            table.sql(dialect)
        ),
        DialectKind::MySql => format!("ALTER TABLE {} MODIFY COLUMN {c} {new}", table.sql(dialect)),
        DialectKind::Sqlite => {
            // SQLite's columns take values of any type: nothing to alter.
            tracing::info!(table = %table, column, old, new, "SQLite keeps values of any type; nothing to widen.");
            return Ok(());
        }
    };
    target.execute(&sql).await.map_err(|e| {
        SqlError::from_sqlx(
            format!("widen column `{column}` of `{table}` from `{old}` to `{new}` (on_type_change = \"widen\")"),
            e,
        )
    })?;
    tracing::info!(table = %table, column, old, new, "Widened a column.");
    Ok(())
}
