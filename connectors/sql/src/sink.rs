//! The running `sql` sink: records decoded and deduplicated in `write`, applied inside
//! one open transaction (in the background while more records are decoded, once
//! `apply_rows` rows wait), and committed with their offsets in `flush`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use plexus_connector::{ConnectorError, SCHEMA_HEADER, Sink, SinkContext, SinkOffsets, SinkRecord, async_trait};
use tokio::task::JoinHandle;

use crate::apply::{Chunk, apply_chunks, dead_letter, prepare_table};
use crate::batch::{Origin, TableBatch, key_fields};
use crate::config::{DialectKind, SqlSinkConfig};
use crate::dialect::{CatalogColumn, TableName, Target};
use crate::error::SqlError;
use crate::offsets;
use crate::schema::{Column, columns_from_document};

/// The connection, idle or lent to a background apply.
enum Link {
    Idle(Target),
    Busy(JoinHandle<(Target, Result<u64, ConnectorError>)>),
    Closed,
}

/// Applies change events to a SQL database, exactly once.
pub struct SqlSink {
    config: SqlSinkConfig,
    connector: String,
    link: Link,
    /// A transaction is open: rows were applied since the last commit.
    in_transaction: bool,
    offsets_table: TableName,
    /// What the target holds: records before these offsets were applied.
    stored: SinkOffsets,
    /// Registered schemas by id: the columns, or why they cannot be used.
    schemas: HashMap<String, Result<Arc<Vec<Column>>, String>>,
    /// Changes not applied yet, by target table.
    batches: BTreeMap<String, TableBatch>,
    /// The schema each batch last took its columns from.
    batch_schema: HashMap<String, String>,
    /// The target table of each topic.
    tables: HashMap<Arc<str>, String>,
    /// The target's columns of each table written, read once and after every change.
    catalog: HashMap<TableName, Vec<CatalogColumn>>,
    /// The offset after the last record taken, per topic-partition: a record before it
    /// is a redelivery and is dropped.
    taken: HashMap<(Arc<str>, u32), i64>,
}

impl std::fmt::Debug for SqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSink")
            .field("config", &self.config)
            .field("connector", &self.connector)
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

impl SqlSink {
    pub fn new(config: SqlSinkConfig) -> SqlSink {
        SqlSink {
            offsets_table: TableName::parse(&config.offsets_table),
            config,
            connector: String::new(),
            link: Link::Closed,
            in_transaction: false,
            stored: SinkOffsets::new(),
            schemas: HashMap::new(),
            batches: BTreeMap::new(),
            batch_schema: HashMap::new(),
            tables: HashMap::new(),
            catalog: HashMap::new(),
            taken: HashMap::new(),
        }
    }

    /// The columns of schema `id`, looked up once.
    async fn schema(
        &mut self,
        ctx: &SinkContext,
        id: &str,
    ) -> Result<Result<Arc<Vec<Column>>, String>, ConnectorError> {
        if let Some(found) = self.schemas.get(id) {
            return Ok(found.clone());
        }
        let found = match ctx.schema(id).await? {
            None => return Ok(Err(format!("schema `{id}` is not registered"))),
            Some(document) => columns_from_document(&document)
                .map(Arc::new)
                .map_err(|e| format!("schema `{id}`: {e}")),
        };
        self.schemas.insert(id.to_owned(), found.clone());
        Ok(found)
    }

    /// The connection, once a background apply has given it back (its error, if any,
    /// is returned and the connection dropped: the server rolls the transaction back).
    async fn idle(&mut self) -> Result<&mut Target, ConnectorError> {
        if let Link::Busy(_) = self.link {
            let Link::Busy(handle) = std::mem::replace(&mut self.link, Link::Closed) else {
                unreachable!("checked above");
            };
            match handle.await {
                Ok((target, Ok(_dead))) => self.link = Link::Idle(target),
                Ok((_, Err(e))) => return Err(e),
                Err(e) => return Err(ConnectorError::fatal(format!("a background apply panicked: {e}"))),
            }
        }
        match &mut self.link {
            Link::Idle(target) => Ok(target),
            _ => Err(ConnectorError::retriable(
                "the sql sink is not connected (start was not called, or the connection was lost)",
            )),
        }
    }

    /// Prepares the tables of the buffered rows (DDL), opens the transaction if needed,
    /// and takes the rows out of the buffer.
    async fn take_chunks(&mut self) -> Result<Vec<Chunk>, ConnectorError> {
        let config = self.config.clone();
        let pending: Vec<(TableName, Vec<Column>, bool)> = self
            .batches
            .values()
            .filter(|b| !b.is_empty() && !b.columns.is_empty())
            .map(|b| (TableName::parse(&b.table), b.columns.clone(), b.declared))
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        self.idle().await?;
        let Link::Idle(target) = &mut self.link else {
            return Err(ConnectorError::retriable("the sql sink lost its connection"));
        };
        for (table, columns, declared) in &pending {
            prepare_table(target, &mut self.catalog, &config, table, columns, *declared).await?;
        }
        if !self.in_transaction {
            target
                .begin()
                .await
                .map_err(|e| SqlError::from_sqlx("begin a transaction", e))?;
            self.in_transaction = true;
        }
        let mut chunks = Vec::new();
        for batch in self.batches.values_mut() {
            if batch.is_empty() || batch.columns.is_empty() {
                continue;
            }
            let (rows, truncate) = batch.take_rows();
            chunks.push(Chunk {
                table: TableName::parse(&batch.table),
                columns: batch.columns.clone(),
                rows,
                truncate,
            });
        }
        Ok(chunks)
    }

    /// Applies what is buffered in the background, inside the open transaction, while
    /// `write` decodes more. MySQL commits around DDL, so there everything is applied
    /// in `flush`, after the DDL.
    async fn apply_in_background(&mut self, ctx: &SinkContext) -> Result<(), ConnectorError> {
        if self.config.dialect == DialectKind::MySql {
            return Ok(());
        }
        let buffered: usize = self.batches.values().map(|b| b.rows.len()).sum();
        if buffered < self.config.apply_rows {
            return Ok(());
        }
        let chunks = self.take_chunks().await?;
        let Link::Idle(mut target) = std::mem::replace(&mut self.link, Link::Closed) else {
            return Err(ConnectorError::retriable("the sql sink lost its connection"));
        };
        let ctx = ctx.clone();
        let (mode, batch_rows) = (self.config.mode, self.config.batch_rows);
        self.link = Link::Busy(tokio::spawn(async move {
            let result = apply_chunks(&mut target, &ctx, &chunks, mode, batch_rows).await;
            (target, result)
        }));
        Ok(())
    }

    async fn flush_inner(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        let chunks = self.take_chunks().await?;
        let changed = offsets::advanced(&self.stored, offsets);
        let (mode, batch_rows) = (self.config.mode, self.config.batch_rows);
        let in_transaction = self.in_transaction;
        let target = self.idle().await?;
        if !in_transaction {
            target
                .begin()
                .await
                .map_err(|e| SqlError::from_sqlx("begin a transaction", e))?;
        }
        self.in_transaction = true;
        let Link::Idle(target) = &mut self.link else {
            return Err(ConnectorError::retriable("the sql sink lost its connection"));
        };
        apply_chunks(target, ctx, &chunks, mode, batch_rows).await?;
        target
            .write_offsets(&self.offsets_table, &self.connector, &changed)
            .await
            .map_err(|e| SqlError::from_sqlx(format!("store offsets in `{}`", self.offsets_table), e))?;
        target
            .execute("COMMIT")
            .await
            .map_err(|e| SqlError::from_sqlx("commit", e))?;
        self.in_transaction = false;
        for (tp, next) in changed {
            self.stored.insert(tp, next);
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for SqlSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        self.connector = ctx.name().to_owned();
        let mut target = Target::connect(&self.config).await?;
        let stored = target
            .read_offsets(&self.offsets_table, &self.connector)
            .await
            .map_err(|e| SqlError::from_sqlx(format!("read the offsets table `{}`", self.offsets_table), e))?;
        tracing::info!(connector = %self.connector, partitions = stored.len(), "SQL sink resuming from the offsets in the target.");
        self.link = Link::Idle(target);
        self.stored = stored.clone();
        Ok(Some(stored))
    }

    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        let dialect = self.config.dialect;
        for record in records {
            if offsets::applied(&self.stored, &record.topic, record.partition, record.offset) {
                continue;
            }
            let taken = self
                .taken
                .entry((Arc::clone(&record.topic), record.partition))
                .or_insert(i64::MIN);
            if record.offset < *taken {
                continue;
            }
            *taken = record.offset + 1;
            let Some(value) = record.value.clone() else {
                // A tombstone: the delete before it did the work.
                continue;
            };
            let table = match self.tables.get(&record.topic) {
                Some(table) => table.clone(),
                None => {
                    let table = self.config.table_for(&record.topic);
                    self.tables.insert(Arc::clone(&record.topic), table.clone());
                    table
                }
            };
            let origin = Origin {
                topic: Arc::clone(&record.topic),
                partition: record.partition,
                offset: record.offset,
                key: record.key.clone(),
                payload: Some(value.clone()),
            };
            let schema_id = record
                .headers
                .iter()
                .find(|h| h.key == SCHEMA_HEADER)
                .and_then(|h| h.value.as_ref())
                .and_then(|v| std::str::from_utf8(v).ok());
            let columns = match schema_id {
                Some(id) if self.batch_schema.get(&table).map(String::as_str) != Some(id) => {
                    match self.schema(ctx, id).await? {
                        Ok(columns) => Some((columns, id.to_owned())),
                        Err(reason) => {
                            dead_letter(ctx, &origin, &reason)?;
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let batch = self
                .batches
                .entry(table.clone())
                .or_insert_with(|| TableBatch::new(table.clone(), self.config.mode, self.config.delete_mode, dialect));
            if let Some((columns, id)) = columns {
                batch.use_columns(&columns, true);
                self.batch_schema.insert(table.clone(), id);
            }
            let keys = if batch.declared {
                Vec::new()
            } else {
                key_fields(record.key.as_deref())
            };
            if let Err(reason) = batch.add(origin.clone(), &value, record.timestamp, &keys) {
                dead_letter(ctx, &origin, &format!("table `{table}`: {reason}"))?;
            }
        }
        self.apply_in_background(ctx).await
    }

    async fn flush(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        let result = self.flush_inner(ctx, offsets).await;
        if let Err(e) = &result {
            if let Link::Idle(target) = &mut self.link {
                let _ = target.execute("ROLLBACK").await;
                target.rolled_back();
            }
            self.in_transaction = false;
            // The catalog may have changed under a failed statement.
            self.catalog.clear();
            if e.is_retriable() {
                self.link = Link::Closed;
            }
        }
        result
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        // Anything applied since the last flush is rolled back with the connection.
        if let Link::Busy(handle) = std::mem::replace(&mut self.link, Link::Closed) {
            handle.abort();
        }
        Ok(())
    }
}
