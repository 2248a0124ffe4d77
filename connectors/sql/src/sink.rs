//! The running `sql` sink: records decoded and deduplicated by key in `write`, and
//! committed with their offsets, one transaction per batch, in the background.
//!
//! While records are left unread (a backlog), changes gather and merge by key until
//! they fill the memory budget (what the commit under way leaves of it) or for
//! `commit_interval` (5 s by default), then commit in the background while the next
//! ones gather. A key changed many times in a batch costs the target one row, so the
//! larger the batch, the less the target does per record: on two cores one large
//! commit after the decoding beats small ones beside it, which both the target and the
//! decoding slow down. A flush while the task is caught up with its topics commits
//! everything before it returns, so a sink that keeps up commits at every flush (every
//! second, and as soon as it catches up).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plexus_connector::{
    ConnectorError, SCHEMA_HEADER, SCHEMA_WAIT, Sink, SinkContext, SinkOffsets, SinkRecord, TopicPartition, async_trait,
};
use tokio::task::JoinHandle;

use crate::apply::{Chunk, apply_chunks, dead_letter_record, prepare_table};
use crate::batch::{At, Decoded, TableBatch, key_fields};
use crate::config::{Mode, SqlSinkConfig};
use crate::dialect::{CatalogColumn, TableName, Target};
use crate::error::SqlError;
use crate::offsets;
use crate::schema::{Column, columns_from_document};

/// The connection: idle, or lent to the commit under way, which gives it back with
/// the offsets it stored.
enum Link {
    Idle(Target),
    Busy(JoinHandle<(Target, Result<SinkOffsets, ConnectorError>)>),
    Closed,
}

/// Applies change events to a SQL database, exactly once.
pub struct SqlSink {
    config: SqlSinkConfig,
    connector: String,
    link: Link,
    offsets_table: TableName,
    /// What the target holds: records before these offsets were committed.
    stored: SinkOffsets,
    /// Registered schemas by id: the columns, or why they cannot be used.
    schemas: HashMap<String, Result<Arc<Vec<Column>>, String>>,
    /// Schema ids waited for in vain.
    missing_schemas: HashSet<String>,
    /// Changes gathered since the last commit began, by target table.
    batches: BTreeMap<String, TableBatch>,
    /// When the first of the gathered changes was taken.
    gathering_since: Option<Instant>,
    /// The schema each batch last took its columns from.
    batch_schema: HashMap<String, String>,
    /// The target table of each topic.
    tables: HashMap<Arc<str>, Arc<str>>,
    /// The target's columns of each table written, read once and after every change.
    catalog: HashMap<TableName, Vec<CatalogColumn>>,
    /// The offset after the last record taken, per topic-partition: a record before it
    /// is a redelivery and is dropped. What a commit begun now stores.
    taken: HashMap<(Arc<str>, u32), i64>,
    /// The context `start` was given, for the commit in `stop`.
    ctx: Option<SinkContext>,
    /// Threads that decode a run of records.
    decode_threads: usize,
    /// What the rows of the commit under way take in memory.
    committing: usize,
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

impl Drop for SqlSink {
    /// A commit under way is abandoned with its connection (the server rolls it back),
    /// so that it cannot land after a new task has read the stored offsets.
    fn drop(&mut self) {
        if let Link::Busy(handle) = &self.link {
            handle.abort();
        }
    }
}

impl SqlSink {
    pub fn new(config: SqlSinkConfig) -> SqlSink {
        SqlSink {
            offsets_table: TableName::parse(&config.offsets_table),
            config,
            connector: String::new(),
            link: Link::Closed,
            stored: SinkOffsets::new(),
            schemas: HashMap::new(),
            missing_schemas: HashSet::new(),
            batches: BTreeMap::new(),
            gathering_since: None,
            batch_schema: HashMap::new(),
            tables: HashMap::new(),
            catalog: HashMap::new(),
            taken: HashMap::new(),
            ctx: None,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            committing: 0,
        }
    }

    /// The columns of schema `id`, looked up once found.
    ///
    /// A missing schema is waited for (up to [`SCHEMA_WAIT`], see
    /// [`SinkContext::wait_for_schema`]) before the record is dead-lettered; an id that
    /// was waited for in vain is only looked up again, not waited for.
    async fn schema(
        &mut self,
        ctx: &SinkContext,
        id: &str,
    ) -> Result<Result<Arc<Vec<Column>>, String>, ConnectorError> {
        if let Some(found) = self.schemas.get(id) {
            return Ok(found.clone());
        }
        let wait = if self.missing_schemas.contains(id) {
            Duration::ZERO
        } else {
            SCHEMA_WAIT
        };
        let Some(document) = ctx.wait_for_schema(id, wait).await? else {
            self.missing_schemas.insert(id.to_owned());
            return Ok(Err(format!(
                "schema `{id}` is not registered (waited {} s for it)",
                SCHEMA_WAIT.as_secs()
            )));
        };
        let found = columns_from_document(&document)
            .map(Arc::new)
            .map_err(|e| format!("schema `{id}`: {e}"));
        self.schemas.insert(id.to_owned(), found.clone());
        Ok(found)
    }

    /// Ends the commit under way, if any: waiting for it (`wait`), or only if it has
    /// ended. Returns whether one ended; its error, if any, is returned and the
    /// connection dropped (the server rolled the transaction back).
    async fn reap(&mut self, wait: bool) -> Result<bool, ConnectorError> {
        let Link::Busy(handle) = &self.link else {
            return Ok(false);
        };
        if !wait && !handle.is_finished() {
            return Ok(false);
        }
        let Link::Busy(handle) = std::mem::replace(&mut self.link, Link::Closed) else {
            return Ok(false);
        };
        self.committing = 0;
        match handle.await {
            Ok((target, Ok(committed))) => {
                self.stored.extend(committed);
                self.link = Link::Idle(target);
                Ok(true)
            }
            Ok((_, Err(e))) => {
                // The catalog may have changed under a failed statement.
                self.catalog.clear();
                Err(e)
            }
            Err(e) => Err(ConnectorError::fatal(format!("a commit to the target panicked: {e}"))),
        }
    }

    /// Whether the gathered changes fill what the commit under way leaves of the memory
    /// budget.
    fn full(&self) -> bool {
        self.batches.values().map(TableBatch::memory).sum::<usize>() + self.committing >= self.config.memory_budget
    }

    /// Whether the gathered changes have gathered long enough, under a backlog.
    fn ripe(&self) -> bool {
        self.full()
            || self
                .gathering_since
                .is_some_and(|since| since.elapsed() >= self.config.commit_interval)
    }

    /// The offsets after every record taken.
    fn taken_offsets(&self) -> SinkOffsets {
        self.taken
            .iter()
            .map(|((topic, partition), &next)| {
                (
                    TopicPartition {
                        topic: topic.to_string(),
                        partition: *partition,
                    },
                    next,
                )
            })
            .collect()
    }

    /// Decodes the records of `run` (all of `table`, with a registered schema), on two
    /// threads when there are enough of them, and takes their changes in order.
    fn take_run(
        &mut self,
        ctx: &SinkContext,
        table: Option<Arc<str>>,
        run: &mut Vec<SinkRecord>,
    ) -> Result<(), ConnectorError> {
        let Some(table) = table else {
            return Ok(());
        };
        if run.is_empty() {
            return Ok(());
        }
        let Some(batch) = self.batches.get_mut(&*table) else {
            return Err(ConnectorError::fatal(format!(
                "the sql sink lost its batch for `{table}`"
            )));
        };
        let mut records = run.iter();
        let mut took = false;
        for decoded in decode(batch, run, self.decode_threads) {
            for i in 0..decoded.len() {
                let Some(record) = records.next() else {
                    return Err(ConnectorError::fatal(
                        "the sql sink decoded more records than it was given",
                    ));
                };
                match batch.take_decoded(&decoded, i, at(record)) {
                    Ok(()) => took = true,
                    Err(reason) => dead_letter_record(ctx, record, &format!("table `{table}`: {reason}"))?,
                }
            }
        }
        if took {
            self.gathering_since.get_or_insert_with(Instant::now);
        }
        run.clear();
        Ok(())
    }

    /// Begins committing the gathered changes with `offsets` in the background: the
    /// tables are prepared (DDL) first, here. Nothing to commit leaves the link idle.
    async fn begin_commit(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        self.reap(true).await?;
        let changed = offsets::advanced(&self.stored, offsets);
        let pending: Vec<(TableName, Vec<Column>, bool)> = self
            .batches
            .values()
            .filter(|b| !b.is_empty() && !b.columns.is_empty())
            .map(|b| (TableName::parse(&b.table), b.columns.clone(), b.declared))
            .collect();
        if pending.is_empty() && changed.is_empty() {
            return Ok(());
        }
        let Link::Idle(target) = &mut self.link else {
            return Err(ConnectorError::retriable(
                "the sql sink is not connected (start was not called, or the connection was lost)",
            ));
        };
        for (table, columns, declared) in &pending {
            prepare_table(target, &mut self.catalog, &self.config, table, columns, *declared).await?;
        }
        self.gathering_since = None;
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
        let Link::Idle(mut target) = std::mem::replace(&mut self.link, Link::Closed) else {
            return Err(ConnectorError::retriable("the sql sink lost its connection"));
        };
        self.committing = chunks.iter().map(|c| c.rows.memory()).sum();
        let ctx = ctx.clone();
        let commit = Commit {
            chunks,
            mode: self.config.mode,
            batch_rows: self.config.batch_rows,
            offsets_table: self.offsets_table.clone(),
            connector: self.connector.clone(),
            offsets: changed,
        };
        self.link = Link::Busy(tokio::spawn(async move {
            let result = commit.run(&mut target, &ctx).await;
            if result.is_err() {
                let _ = target.execute("ROLLBACK").await;
                target.rolled_back();
            }
            (target, result)
        }));
        Ok(())
    }
}

/// One commit: the gathered rows, then the offsets after them, in one transaction.
struct Commit {
    chunks: Vec<Chunk>,
    mode: Mode,
    batch_rows: usize,
    offsets_table: TableName,
    connector: String,
    offsets: SinkOffsets,
}

impl Commit {
    /// Returns the offsets stored.
    async fn run(self, target: &mut Target, ctx: &SinkContext) -> Result<SinkOffsets, ConnectorError> {
        let started = std::time::Instant::now();
        let rows: usize = self.chunks.iter().map(|c| c.rows.len()).sum();
        target
            .begin()
            .await
            .map_err(|e| SqlError::from_sqlx("begin a transaction", e))?;
        apply_chunks(target, ctx, &self.chunks, self.mode, self.batch_rows).await?;
        // The rows go before the offsets are stored: free them first.
        drop(self.chunks);
        target
            .write_offsets(&self.offsets_table, &self.connector, &self.offsets)
            .await
            .map_err(|e| SqlError::from_sqlx(format!("store offsets in `{}`", self.offsets_table), e))?;
        target
            .execute("COMMIT")
            .await
            .map_err(|e| SqlError::from_sqlx("commit", e))?;
        tracing::debug!(
            rows,
            millis = started.elapsed().as_millis() as u64,
            "Committed a batch."
        );
        Ok(self.offsets)
    }
}

#[async_trait]
impl Sink for SqlSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        self.connector = ctx.name().to_owned();
        self.ctx = Some(ctx.clone());
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
        // Consecutive records of a table with a registered schema form a run, decoded on
        // several threads and then taken in order; a record of another table, or one
        // that changes its table's columns, ends the run.
        let mut run: Vec<SinkRecord> = Vec::new();
        let mut run_table: Option<Arc<str>> = None;
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
            let Some(value) = &record.value else {
                // A tombstone: the delete before it did the work.
                continue;
            };
            if !self.tables.contains_key(&record.topic) {
                let table = self.config.table_for(&record.topic);
                self.tables.insert(Arc::clone(&record.topic), table.into());
            }
            let table = Arc::clone(&self.tables[&record.topic]);
            let schema_id = record
                .headers
                .iter()
                .find(|h| h.key == SCHEMA_HEADER)
                .and_then(|h| h.value.as_ref())
                .and_then(|v| std::str::from_utf8(v).ok());
            let new_schema = schema_id.filter(|id| self.batch_schema.get(&*table).map(String::as_str) != Some(*id));
            if new_schema.is_some() || run_table.as_deref() != Some(&*table) {
                self.take_run(ctx, run_table.take(), &mut run)?;
            }
            let columns = match new_schema {
                Some(id) => match self.schema(ctx, id).await? {
                    Ok(columns) => Some((columns, id.to_owned())),
                    Err(reason) => {
                        dead_letter_record(ctx, &record, &reason)?;
                        continue;
                    }
                },
                None => None,
            };
            if !self.batches.contains_key(&*table) {
                let batch = TableBatch::new(table.to_string(), self.config.mode, self.config.delete_mode, dialect);
                self.batches.insert(table.to_string(), batch);
            }
            let Some(batch) = self.batches.get_mut(&*table) else {
                return Err(ConnectorError::fatal(format!(
                    "the sql sink lost its batch for `{table}`"
                )));
            };
            if let Some((columns, id)) = columns {
                batch.use_columns(&columns, true);
                self.batch_schema.insert(table.to_string(), id);
            }
            if batch.declared {
                run_table.get_or_insert(table);
                run.push(record);
                continue;
            }
            let keys = key_fields(record.key.as_deref());
            let at = At {
                topic: &record.topic,
                partition: record.partition,
                offset: record.offset,
            };
            match batch.add(at, value, record.timestamp, &keys) {
                Ok(()) => {
                    self.gathering_since.get_or_insert_with(Instant::now);
                }
                Err(reason) => {
                    let reason = format!("table `{table}`: {reason}");
                    dead_letter_record(ctx, &record, &reason)?;
                }
            }
        }
        self.take_run(ctx, run_table.take(), &mut run)?;
        // Changes that fill the budget wait for the commit under way, which frees its
        // share: if they fill it on their own, they commit next. Under a backlog, ripe
        // ones follow as soon as the target is free.
        if self.full() {
            self.reap(true).await?;
            if self.full() {
                self.begin_commit(ctx, &self.taken_offsets()).await?;
            }
        } else if ctx.metrics().sink_unread.load(Ordering::Relaxed) > 0 && self.ripe() {
            self.reap(false).await?;
            if matches!(self.link, Link::Idle(_)) {
                self.begin_commit(ctx, &self.taken_offsets()).await?;
            }
        }
        Ok(())
    }

    /// Commits everything when the task is caught up with its topics (or cannot tell);
    /// under a backlog, begins a commit if the changes are ripe and none is under way,
    /// and returns.
    async fn flush(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        for (tp, &next) in offsets {
            let taken = self
                .taken
                .entry((Arc::from(tp.topic.as_str()), tp.partition))
                .or_insert(next);
            *taken = (*taken).max(next);
        }
        let behind = ctx.metrics().sink_unread.load(Ordering::Relaxed) > 0;
        if behind {
            self.reap(false).await?;
            if matches!(self.link, Link::Idle(_)) && self.ripe() {
                self.begin_commit(ctx, &self.taken_offsets()).await?;
            }
            return Ok(());
        }
        self.begin_commit(ctx, &self.taken_offsets()).await?;
        self.reap(true).await?;
        Ok(())
    }

    fn durable_offsets(&self) -> Option<SinkOffsets> {
        Some(self.stored.clone())
    }

    /// Commits what is still gathered (a stop is graceful).
    async fn stop(&mut self) -> Result<(), ConnectorError> {
        let Some(ctx) = self.ctx.clone() else {
            return Ok(());
        };
        self.begin_commit(&ctx, &self.taken_offsets()).await?;
        self.reap(true).await?;
        Ok(())
    }
}

/// Where `record` is in the log.
fn at(record: &SinkRecord) -> At<'_> {
    At {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
    }
}

/// What [`TableBatch::decode`] reads of each record.
fn items(records: &[SinkRecord]) -> impl Iterator<Item = (At<'_>, &[u8], i64)> {
    records
        .iter()
        .map(|r| (at(r), r.value.as_deref().unwrap_or_default(), r.timestamp))
}

/// Records in a run below this many are decoded on the calling thread alone.
const PARALLEL_RUN: usize = 256;

/// Decodes `run` against `batch`'s columns: in two halves on two threads when `threads`
/// allows and the run is long enough; the parts in the order of the records.
fn decode(batch: &TableBatch, run: &[SinkRecord], threads: usize) -> Vec<Decoded> {
    if threads < 2 || run.len() < PARALLEL_RUN {
        return vec![batch.decode(items(run))];
    }
    let (first, second) = run.split_at(run.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| batch.decode(items(second)));
        let first = batch.decode(items(first));
        // Decoding does not panic; if it did, the half is decoded again here, where the
        // panic is the task's.
        let second = other.join().unwrap_or_else(|_| batch.decode(items(second)));
        vec![first, second]
    })
}
