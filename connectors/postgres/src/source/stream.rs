//! Streaming: pgoutput messages become change records, in commit order, each exactly
//! once, with the slot acknowledged only behind what the log holds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus_connector::{ConnectorError, DeadLetter, Position, SourceContext, SourceRecord};
use sqlx::postgres::PgConnection;

use crate::pgoutput::{ColumnValue, Decoder, Message, Relation, Tuple};
use crate::replication::{Lsn, ReplicationMessage};
use crate::source::catalog::{self, TypeCache};
use crate::source::config::{CdcConfig, TableName};
use crate::source::envelope::{self, Cell, Change, Op, SourceInfo};
use crate::source::position::{CdcPosition, ResnapshotState};
use crate::source::resnapshot::{self, Resnapshot, SIGNAL_PREFIX, WATERMARK_PREFIX, Watermark};
use crate::source::snapshot::{key_text, row_record};
use crate::source::spill::{Changes, StreamedTx};
use crate::source::table::{Column, SCHEMAS_TOPIC, TableInfo};
use crate::source::wal::WalStream;
use crate::source::{client_error, now_ms};
use crate::types::copy::split_lines;

/// A stream position: the commit LSN and the record's ordinal in its transaction.
type StreamPos = (Lsn, u64);

/// How long an empty poll waits for a message before reporting idle.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// How often slot lag is measured (and a heartbeat written, if due).
const HOUSEKEEPING: Duration = Duration::from_secs(5);

pub struct Streamer {
    config: Arc<CdcConfig>,
    connector: String,
    wal: WalStream,
    decoder: Decoder,
    conn: PgConnection,
    types: TypeCache,
    relations: HashMap<u32, Arc<TableInfo>>,
    schemas: HashMap<Arc<str>, Arc<TableInfo>>,
    registered: HashSet<Arc<str>>,
    open: Option<OpenTx>,
    /// The top-level transaction of the streamed block being received.
    block: Option<u32>,
    streamed: HashMap<u32, StreamedTx>,
    draining: Option<Draining>,
    /// Records at or before this are in the log already.
    resume: Option<StreamPos>,
    boundaries: VecDeque<StreamPos>,
    batch: Vec<SourceRecord>,
    batch_changes: usize,
    batch_last: Option<StreamPos>,
    carry: VecDeque<Pending>,
    /// The end of the last transaction whose records are all in batches handed out.
    tx_done_end: Lsn,
    /// Batches handed out and the slot position that is safe once each is durable.
    acks: VecDeque<(Position, Lsn)>,
    /// The server's progress from keepalives and heartbeats: safe to acknowledge when
    /// nothing is in flight.
    quiet_end: Lsn,
    last_housekeeping: Instant,
    last_heartbeat: Instant,
    last_lag_warning: Option<Instant>,
    /// A re-snapshot being read, ahead of what the log holds.
    resnapshot: Option<Resnapshot>,
    /// The re-snapshot's progress as of the last record placed in a batch: what the
    /// batch's position says.
    placed_resnapshot: Option<ResnapshotState>,
}

struct OpenTx {
    xid: u32,
    commit_lsn: Lsn,
    commit_ms: i64,
    ordinal: u64,
    events: u64,
    tables: BTreeMap<String, u64>,
}

struct Draining {
    changes: Changes,
    tx: OpenTx,
    end_lsn: Lsn,
}

struct Pending {
    pos: StreamPos,
    /// `None`: only a new position (the re-snapshot's progress).
    record: Option<SourceRecord>,
    table: Option<Arc<TableInfo>>,
    resnapshot: Option<Progress>,
}

impl Pending {
    fn record(pos: StreamPos, record: SourceRecord, table: Option<Arc<TableInfo>>) -> Pending {
        Pending {
            pos,
            record: Some(record),
            table,
            resnapshot: None,
        }
    }
}

/// How a placed record moves the re-snapshot on.
enum Progress {
    /// A row of the table being read, with this key, is in the log.
    Row(Vec<String>),
    /// What is left to read, from here on.
    Left(Option<ResnapshotState>),
}

/// What placing a change did: added it to the batch (`full` when the batch is), skipped
/// it (the log holds it), or cut the batch before it, handing it back for the next one
/// (boxed: rare, and much larger than the others).
enum Placed {
    Added { full: bool },
    Skipped,
    Cut(Box<Pending>),
}

impl std::fmt::Debug for Streamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamer")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl Streamer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<CdcConfig>,
        connector: String,
        wal: WalStream,
        conn: PgConnection,
        resume: Option<StreamPos>,
        boundaries: Vec<StreamPos>,
        acknowledged: Lsn,
        resnapshot: Option<ResnapshotState>,
    ) -> Streamer {
        Streamer {
            config,
            connector,
            wal,
            decoder: Decoder::new(),
            conn,
            types: TypeCache::default(),
            relations: HashMap::new(),
            schemas: HashMap::new(),
            registered: HashSet::new(),
            open: None,
            block: None,
            streamed: HashMap::new(),
            draining: None,
            resume,
            boundaries: boundaries.into(),
            batch: Vec::new(),
            batch_changes: 0,
            batch_last: None,
            carry: VecDeque::new(),
            tx_done_end: acknowledged,
            acks: VecDeque::new(),
            quiet_end: acknowledged,
            last_housekeeping: Instant::now(),
            last_heartbeat: Instant::now(),
            last_lag_warning: None,
            resnapshot: resnapshot.clone().map(Resnapshot::new),
            placed_resnapshot: resnapshot,
        }
    }

    /// The next batch of records and its position, or `None` when nothing came.
    pub async fn next_batch(
        &mut self,
        ctx: &SourceContext,
    ) -> Result<Option<(Vec<SourceRecord>, Position)>, ConnectorError> {
        self.resnapshot_next_chunk().await?;
        let mut ready = false;
        while let Some(pending) = self.carry.pop_front() {
            match self.place(pending) {
                Placed::Cut(pending) => {
                    self.carry.push_front(*pending);
                    ready = true;
                    break;
                }
                Placed::Added { full } => ready |= full,
                Placed::Skipped => {}
            }
        }
        while !ready {
            if self.draining.is_some() {
                ready = self.drain_one(ctx)?;
                continue;
            }
            let message = if self.batch.is_empty() {
                match tokio::time::timeout(IDLE_WAIT, self.wal.recv()).await {
                    Ok(message) => message,
                    Err(_) => break,
                }
            } else {
                // Hand out what we have as soon as the server has nothing more ready,
                // except in two cases. Inside a transaction the rest is on its way
                // (the server sends a transaction once it is committed), so cutting
                // it would only make two batches of one. And while the runtime is
                // still writing the previous batch, this one would only wait behind
                // it, so it grows until then. Batches grow with the load; latency
                // stays low when the load is light.
                match self.wal.try_recv() {
                    Some(message) => Some(message),
                    None if self.open.is_some() => match tokio::time::timeout(IDLE_WAIT, self.wal.recv()).await {
                        Ok(message) => message,
                        Err(_) => break,
                    },
                    None if ctx.writing() => tokio::select! {
                        biased;
                        () = ctx.written() => break,
                        message = self.wal.recv() => message,
                    },
                    None => break,
                }
            };
            let payload = match message {
                Some(Ok(payload)) => payload,
                Some(Err(e)) => return Err(client_error("reading the replication stream", e)),
                None => return Err(ConnectorError::retriable("the replication stream ended")),
            };
            ready = self.handle(ctx, payload).await?;
        }
        self.housekeeping(ctx).await?;
        let Some(last) = self.batch_last else {
            self.acknowledge_if_idle();
            return Ok(None);
        };
        let position = CdcPosition::Stream {
            commit_lsn: last.0,
            ordinal: last.1,
            resnapshot: self.placed_resnapshot.clone(),
        }
        .encode();
        self.acks.push_back((position.clone(), self.tx_done_end));
        self.batch_changes = 0;
        self.batch_last = None;
        Ok(Some((std::mem::take(&mut self.batch), position)))
    }

    /// Everything up to `position` is durable in the log.
    pub fn commit(&mut self, position: &Position) {
        let mut safe = None;
        while let Some((p, lsn)) = self.acks.front() {
            if p > position {
                break;
            }
            safe = Some(*lsn);
            self.acks.pop_front();
        }
        if let Some(lsn) = safe {
            self.wal.acknowledge(lsn);
        }
    }

    pub async fn close(self) {
        let Streamer {
            wal, conn, streamed, ..
        } = self;
        for (_, tx) in streamed {
            tx.discard();
        }
        wal.close().await;
        let _ = sqlx::Connection::close(conn).await;
    }

    fn acknowledge_if_idle(&mut self) {
        if !self.acks.is_empty() || !self.carry.is_empty() {
            return;
        }
        let mut safe = self.tx_done_end;
        if self.open.is_none() && self.streamed.is_empty() && self.draining.is_none() {
            safe = safe.max(self.quiet_end);
        }
        self.wal.acknowledge(safe);
    }

    async fn housekeeping(&mut self, ctx: &SourceContext) -> Result<(), ConnectorError> {
        if self.last_housekeeping.elapsed() < HOUSEKEEPING {
            return Ok(());
        }
        self.last_housekeeping = Instant::now();
        let heartbeat = self.config.heartbeat_interval;
        if !heartbeat.is_zero() && self.last_heartbeat.elapsed() >= heartbeat {
            self.last_heartbeat = Instant::now();
            catalog::emit_heartbeat(&mut self.conn).await?;
        }
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.config.slot)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(|e| catalog::sql_error("measuring the slot's lag", e))?;
        let bytes = row.and_then(|r| r.0).map(|b| b.max(0) as u64);
        let metrics = ctx.metrics();
        metrics
            .source_lag_bytes
            .store(bytes.map_or(-1, |b| b as i64), std::sync::atomic::Ordering::Relaxed);
        // The time lag is set as transactions commit; with nothing in flight it is none.
        if self.acks.is_empty() && self.open.is_none() && self.draining.is_none() {
            metrics.source_lag_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(bytes) = bytes
            && bytes > self.config.lag_warn_bytes
            && self
                .last_lag_warning
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.last_lag_warning = Some(Instant::now());
            tracing::warn!(
                connector = %self.connector,
                slot = %self.config.slot,
                lag_bytes = bytes,
                threshold = self.config.lag_warn_bytes,
                "The replication slot holds more WAL than `slot_lag_warn`: the source is behind, or its log is stalled; the server keeps this WAL on disk until plexus catches up."
            );
        }
        Ok(())
    }

    async fn handle(&mut self, ctx: &SourceContext, payload: Bytes) -> Result<bool, ConnectorError> {
        let message = ReplicationMessage::decode(payload).map_err(decode_error)?;
        let data = match message {
            ReplicationMessage::PrimaryKeepalive(keepalive) => {
                self.quiet_end = self.quiet_end.max(keepalive.wal_end);
                return Ok(false);
            }
            ReplicationMessage::XLogData(data) => data,
        };
        let lsn = data.wal_start;
        match self.decoder.decode(data.data).map_err(decode_error)? {
            Message::Begin(begin) => {
                let mut tx = OpenTx {
                    xid: begin.xid,
                    commit_lsn: begin.final_lsn,
                    commit_ms: begin.commit_time.to_unix_millis(),
                    ordinal: 0,
                    events: 0,
                    tables: BTreeMap::new(),
                };
                let full = self.transaction_event(&mut tx, "BEGIN");
                self.open = Some(tx);
                Ok(full)
            }
            Message::Commit(commit) => {
                let Some(mut tx) = self.open.take() else {
                    return Err(protocol("a Commit without its Begin"));
                };
                let full = self.transaction_event(&mut tx, "END");
                self.tx_done_end = self.tx_done_end.max(commit.end_lsn);
                let lag = (now_ms() - tx.commit_ms).max(0) as u64;
                ctx.metrics()
                    .source_lag_ms
                    .store(lag as i64, std::sync::atomic::Ordering::Relaxed);
                Ok(full)
            }
            Message::Relation(relation) => {
                self.relation(relation).await?;
                Ok(false)
            }
            Message::Type(_) | Message::Origin(_) => Ok(false),
            Message::LogicalMessage(message) => {
                if !message.transactional {
                    self.quiet_end = self.quiet_end.max(message.lsn);
                }
                match message.prefix.as_str() {
                    SIGNAL_PREFIX if message.xid.is_some() => {
                        tracing::warn!(connector = %self.connector, lsn = %message.lsn, "Ignoring a plexus.signal message inside a large in-progress transaction: send signals in a transaction of their own.");
                        Ok(false)
                    }
                    SIGNAL_PREFIX => self.signal(message.lsn, &message.content).await,
                    WATERMARK_PREFIX => self.watermark(ctx, &message.content),
                    _ => Ok(false),
                }
            }
            Message::Insert(insert) => {
                let table = self.table(insert.relation)?;
                let new = cells(&insert.new);
                let change = envelope::change(&table, Op::Create, None, Some(&new), lsn.0, insert.xid.unwrap_or(0));
                self.change(ctx, change, insert.xid.is_some(), &table, lsn)
            }
            Message::Update(update) => {
                let table = self.table(update.relation)?;
                let new = cells(&update.new);
                let old = update.old.as_ref().map(|o| cells(o.tuple()));
                let streamed = update.xid.is_some();
                let xid = update.xid.unwrap_or(0);
                if let Some(old) = old.as_deref()
                    && key_changed(&table, old, &new)
                {
                    // As Debezium does: a delete of the old key and a create of the new
                    // one, so that a sink applying by key drops the old row.
                    let delete = envelope::change(&table, Op::Delete, Some(old), None, lsn.0, xid);
                    let full = self.change(ctx, delete, streamed, &table, lsn)?;
                    let new = fill_unchanged(&new, old);
                    let create = envelope::change(&table, Op::Create, None, Some(&new), lsn.0, xid);
                    return Ok(self.change(ctx, create, streamed, &table, lsn)? | full);
                }
                let change = envelope::change(
                    &table,
                    Op::Update,
                    old.as_deref(),
                    Some(&new),
                    lsn.0,
                    update.xid.unwrap_or(0),
                );
                self.change(ctx, change, update.xid.is_some(), &table, lsn)
            }
            Message::Delete(delete) => {
                let table = self.table(delete.relation)?;
                // Under REPLICA IDENTITY FULL the whole old row, otherwise its key.
                let old = cells(delete.old.tuple());
                let change = envelope::change(&table, Op::Delete, Some(&old), None, lsn.0, delete.xid.unwrap_or(0));
                self.change(ctx, change, delete.xid.is_some(), &table, lsn)
            }
            Message::Truncate(truncate) => {
                let mut full = false;
                for relation in &truncate.relations {
                    let table = self.table(*relation)?;
                    let change = envelope::change(&table, Op::Truncate, None, None, lsn.0, truncate.xid.unwrap_or(0));
                    full |= self.change(ctx, change, truncate.xid.is_some(), &table, lsn)?;
                }
                Ok(full)
            }
            Message::StreamStart(start) => {
                self.block = Some(start.xid);
                let dir = self.config.spill_dir.clone();
                let name = format!("{}-{}", sanitize(&self.connector), start.xid);
                let threshold = self.config.spill_threshold;
                self.streamed
                    .entry(start.xid)
                    .or_insert_with(|| StreamedTx::new(&dir, name, threshold));
                Ok(false)
            }
            Message::StreamStop => {
                self.block = None;
                Ok(false)
            }
            Message::StreamAbort(abort) => {
                if abort.xid == abort.subxid {
                    if let Some(tx) = self.streamed.remove(&abort.xid) {
                        tx.discard();
                    }
                } else if let Some(tx) = self.streamed.get_mut(&abort.xid) {
                    tx.abort_subtransaction(abort.subxid);
                }
                Ok(false)
            }
            Message::StreamCommit(commit) => {
                let Some(buffered) = self.streamed.remove(&commit.xid) else {
                    return Err(protocol("a Stream Commit of a transaction that was never streamed"));
                };
                let changes = buffered.into_changes(&self.schemas)?;
                let mut tx = OpenTx {
                    xid: commit.xid,
                    commit_lsn: commit.commit_lsn,
                    commit_ms: commit.commit_time.to_unix_millis(),
                    ordinal: 0,
                    events: 0,
                    tables: BTreeMap::new(),
                };
                let full = self.transaction_event(&mut tx, "BEGIN");
                self.draining = Some(Draining {
                    changes,
                    tx,
                    end_lsn: commit.end_lsn,
                });
                Ok(full)
            }
        }
    }

    /// A change: buffered if its transaction is still in progress (streamed), written
    /// otherwise. A value that cannot be converted goes to the dead letters.
    fn change(
        &mut self,
        ctx: &SourceContext,
        change: Result<Change, crate::types::ValueError>,
        streamed: bool,
        table: &Arc<TableInfo>,
        lsn: Lsn,
    ) -> Result<bool, ConnectorError> {
        let change = match change {
            Ok(change) => change,
            Err(e) => {
                ctx.dead_letter(DeadLetter {
                    key: None,
                    payload: None,
                    reason: format!("a change of {} could not be converted: {e}", table.qualified),
                    origin: format!("{}@{lsn}", table.qualified),
                })?;
                return Ok(false);
            }
        };
        if streamed {
            let xid = self
                .block
                .ok_or_else(|| protocol("a streamed change outside a stream block"))?;
            let tx = self
                .streamed
                .get_mut(&xid)
                .ok_or_else(|| protocol("a streamed change of an unknown transaction"))?;
            tx.push(change)?;
            return Ok(false);
        }
        let mut tx = self
            .open
            .take()
            .ok_or_else(|| protocol("a change outside a transaction"))?;
        let full = self.write(&mut tx, change);
        self.open = Some(tx);
        Ok(full)
    }

    /// Writes one committed change (and its tombstone) at the transaction's next
    /// ordinals.
    fn write(&mut self, tx: &mut OpenTx, change: Change) -> bool {
        tx.ordinal += 1;
        tx.events += 1;
        *tx.tables.entry(change.table.qualified.to_string()).or_default() += 1;
        if let Some(window) = self.resnapshot.as_mut().and_then(|r| r.window.as_mut()) {
            let key = if change.op == Op::Truncate {
                None
            } else {
                change.key.as_ref()
            };
            window.observe(&change.table.qualified, key);
        }
        let info = SourceInfo {
            connector: &self.connector,
            snapshot: "false",
            commit_lsn: tx.commit_lsn.0,
            seq: tx.ordinal,
            txid: Some(tx.xid),
            ts_ms: tx.commit_ms,
        };
        let tombstone = (change.op == Op::Delete && self.config.tombstones)
            .then(|| change.tombstone(tx.commit_ms))
            .flatten();
        let table = Arc::clone(&change.table);
        let record = change.into_record(&info, now_ms());
        let mut full = self.offer(Pending::record((tx.commit_lsn, tx.ordinal), record, Some(table)));
        if let Some(tombstone) = tombstone {
            tx.ordinal += 1;
            full |= self.offer(Pending::record((tx.commit_lsn, tx.ordinal), tombstone, None));
        }
        full
    }

    fn drain_one(&mut self, ctx: &SourceContext) -> Result<bool, ConnectorError> {
        let Some(mut draining) = self.draining.take() else {
            return Ok(false);
        };
        match draining.changes.next_change()? {
            Some(change) => {
                let full = self.write(&mut draining.tx, change);
                self.draining = Some(draining);
                Ok(full)
            }
            None => {
                let full = self.transaction_event(&mut draining.tx, "END");
                self.tx_done_end = self.tx_done_end.max(draining.end_lsn);
                let lag = (now_ms() - draining.tx.commit_ms).max(0);
                ctx.metrics()
                    .source_lag_ms
                    .store(lag, std::sync::atomic::Ordering::Relaxed);
                Ok(full)
            }
        }
    }

    /// BEGIN and END events on the `transaction` topic, when configured.
    fn transaction_event(&mut self, tx: &mut OpenTx, status: &str) -> bool {
        if !self.config.transaction_events {
            return false;
        }
        tx.ordinal += 1;
        let id = format!("{}:{}", tx.xid, tx.commit_lsn.0);
        let mut value = serde_json::json!({ "status": status, "id": id, "ts_ms": tx.commit_ms });
        if status == "END" {
            value["event_count"] = tx.events.into();
            value["data_collections"] = tx
                .tables
                .iter()
                .map(|(table, count)| serde_json::json!({ "data_collection": table, "event_count": count }))
                .collect();
        }
        let record = SourceRecord {
            timestamp: tx.commit_ms,
            key: Some(Bytes::from(format!("{{\"id\":\"{id}\"}}"))),
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
            topic: Some("transaction".into()),
        };
        self.offer(Pending::record((tx.commit_lsn, tx.ordinal), record, None))
    }

    /// Places a record, or carries it to the next batch. True when the batch must be
    /// handed out now.
    fn offer(&mut self, pending: Pending) -> bool {
        if !self.carry.is_empty() {
            self.carry.push_back(pending);
            return true;
        }
        match self.place(pending) {
            Placed::Added { full } => full,
            Placed::Skipped => false,
            Placed::Cut(pending) => {
                self.carry.push_back(*pending);
                true
            }
        }
    }

    fn place(&mut self, pending: Pending) -> Placed {
        let pos = pending.pos;
        if self.resume.is_some_and(|resume| pos <= resume) {
            return Placed::Skipped;
        }
        // A batch must not straddle a position that part of the log already holds.
        while let Some(&boundary) = self.boundaries.front() {
            if pos <= boundary {
                break;
            }
            if self.batch_last.is_some_and(|last| last <= boundary) {
                return Placed::Cut(Box::new(pending));
            }
            self.boundaries.pop_front();
        }
        if let Some(table) = &pending.table
            && !self.registered.contains(&table.schema_id)
        {
            self.registered.insert(Arc::clone(&table.schema_id));
            self.batch.push(schema_record(table));
        }
        if let Some(record) = pending.record {
            self.batch.push(record);
            self.batch_changes += 1;
        }
        match pending.resnapshot {
            Some(Progress::Row(key)) => {
                if let Some(state) = &mut self.placed_resnapshot {
                    state.last_key = key;
                }
            }
            Some(Progress::Left(state)) => self.placed_resnapshot = state,
            None => {}
        }
        self.batch_last = Some(pos);
        let at_boundary = self.boundaries.front() == Some(&pos);
        if at_boundary {
            self.boundaries.pop_front();
        }
        Placed::Added {
            full: at_boundary || self.batch_changes >= self.config.batch_size,
        }
    }

    /// A `plexus.signal` message: tables to re-snapshot, queued after any being read.
    async fn signal(&mut self, lsn: Lsn, content: &[u8]) -> Result<bool, ConnectorError> {
        let pos = self
            .open
            .as_ref()
            .map_or((lsn, 0), |tx| (tx.commit_lsn, tx.ordinal + 1));
        if self.resume.is_some_and(|resume| pos <= resume) {
            // Acted on before the restart: the resume position says how far it got.
            return Ok(false);
        }
        let tables = match resnapshot::parse_signal(content, &self.connector, &self.config) {
            Ok(tables) => tables,
            Err(e) => {
                tracing::warn!(connector = %self.connector, %lsn, "Ignoring a plexus.signal message: {e}");
                return Ok(false);
            }
        };
        let mut added = Vec::new();
        for name in tables {
            let qualified = name.to_string();
            let queued = self
                .resnapshot
                .as_ref()
                .is_some_and(|r| r.state.tables.contains(&qualified));
            if queued || added.contains(&qualified) {
                continue;
            }
            let table =
                catalog::load_table(&mut self.conn, &self.config.connect.database, &name, &mut self.types).await?;
            if table.key.is_empty() {
                tracing::warn!(connector = %self.connector, table = %qualified, "Cannot re-snapshot a table without a primary key while streaming: its rows cannot be told apart from the changes.");
                continue;
            }
            added.push(qualified);
        }
        if added.is_empty() {
            return Ok(false);
        }
        tracing::info!(connector = %self.connector, tables = ?added, "Re-snapshot asked for: reading the tables in chunks while streaming.");
        let resnapshot = self.resnapshot.get_or_insert_with(|| {
            Resnapshot::new(ResnapshotState {
                tables: Vec::new(),
                last_key: Vec::new(),
            })
        });
        resnapshot.state.tables.extend(added);
        let left = Some(resnapshot.state.clone());
        let pos = match self.open.as_mut() {
            Some(tx) => {
                tx.ordinal += 1;
                (tx.commit_lsn, tx.ordinal)
            }
            None => pos,
        };
        Ok(self.offer(Pending {
            pos,
            record: None,
            table: None,
            resnapshot: Some(Progress::Left(left)),
        }))
    }

    /// A re-snapshot watermark: the low one opens the chunk's window, the high one
    /// emits what the window's changes did not supersede.
    fn watermark(&mut self, ctx: &SourceContext, content: &[u8]) -> Result<bool, ConnectorError> {
        let Some(resnapshot) = &mut self.resnapshot else {
            return Ok(false);
        };
        let mark = resnapshot.watermark(content);
        let Some(window) = &mut resnapshot.window else {
            return Ok(false);
        };
        match mark {
            Some(Watermark::Low(id)) if id == window.id => {
                window.open = true;
                Ok(false)
            }
            Some(Watermark::High(id)) if id == window.id => self.emit_chunk(ctx),
            // An earlier process's, replayed after a restart, or another chunk's.
            _ => Ok(false),
        }
    }

    /// The chunk's rows not superseded by the window's changes, in the high watermark's
    /// transaction, each moving the re-snapshot's progress on.
    fn emit_chunk(&mut self, ctx: &SourceContext) -> Result<bool, ConnectorError> {
        let Some(mut resnapshot) = self.resnapshot.take() else {
            return Ok(false);
        };
        let Some(window) = resnapshot.window.take() else {
            return Ok(false);
        };
        let rows = resnapshot.take_rows()?;
        let mut tx = self
            .open
            .take()
            .ok_or_else(|| protocol("a re-snapshot watermark outside a transaction"))?;
        let table = &window.table;
        let (lines, consumed) = split_lines(&rows);
        if consumed != rows.len() {
            return Err(ConnectorError::retriable(format!(
                "a re-snapshot chunk of {} ended in the middle of a row",
                table.qualified
            )));
        }
        let (mut full, mut count, mut last) = (false, 0u64, None);
        for line in lines {
            count += 1;
            let key = key_text(table, line)?;
            let info = SourceInfo {
                connector: &self.connector,
                snapshot: "incremental",
                commit_lsn: tx.commit_lsn.0,
                seq: tx.ordinal + 1,
                txid: None,
                ts_ms: tx.commit_ms,
            };
            let record = row_record(table, line, &info)?;
            let superseded = window.truncated || record.key.as_ref().is_some_and(|k| window.seen.contains(k));
            if !superseded {
                tx.ordinal += 1;
                resnapshot.table_rows += 1;
                full |= self.offer(Pending {
                    pos: (tx.commit_lsn, tx.ordinal),
                    record: Some(record),
                    table: Some(Arc::clone(table)),
                    resnapshot: Some(Progress::Row(key.clone())),
                });
            }
            last = Some(key);
        }
        ctx.metrics()
            .snapshot_rows
            .fetch_add(count as i64, std::sync::atomic::Ordering::Relaxed);
        match last {
            Some(last) if count >= self.config.resnapshot_chunk_rows => resnapshot.state.last_key = last,
            _ => {
                // The table is done.
                tracing::info!(
                    connector = %self.connector,
                    table = %table.qualified,
                    rows = resnapshot.table_rows,
                    seconds = resnapshot.table_started.elapsed().as_secs(),
                    "Re-snapshot of the table finished."
                );
                if !resnapshot.state.tables.is_empty() {
                    resnapshot.state.tables.remove(0);
                }
                resnapshot.state.last_key.clear();
                resnapshot.table_rows = 0;
                resnapshot.table_started = Instant::now();
            }
        }
        let left = (!resnapshot.state.tables.is_empty()).then(|| resnapshot.state.clone());
        tx.ordinal += 1;
        full |= self.offer(Pending {
            pos: (tx.commit_lsn, tx.ordinal),
            record: None,
            table: None,
            resnapshot: Some(Progress::Left(left.clone())),
        });
        self.open = Some(tx);
        // When nothing is left the reader's task ends with it.
        self.resnapshot = left.is_some().then_some(resnapshot);
        Ok(full)
    }

    /// Asks for the next chunk of a re-snapshot when none is under way.
    async fn resnapshot_next_chunk(&mut self) -> Result<(), ConnectorError> {
        let Some(resnapshot) = &mut self.resnapshot else {
            return Ok(());
        };
        resnapshot.poll_reader()?;
        if resnapshot.window.is_some() {
            return Ok(());
        }
        while let Some(first) = self.resnapshot.as_ref().and_then(|r| r.state.tables.first().cloned()) {
            let name = self.config.tables.iter().find(|t| t.to_string() == first).cloned();
            let table = match name {
                Some(name) => Some(
                    catalog::load_table(&mut self.conn, &self.config.connect.database, &name, &mut self.types).await?,
                ),
                None => None,
            };
            match table {
                Some(table) if !table.key.is_empty() => {
                    let limit = self.config.resnapshot_chunk_rows;
                    if let Some(resnapshot) = &mut self.resnapshot {
                        resnapshot.request(&self.config, Arc::new(table), limit).await?;
                    }
                    return Ok(());
                }
                _ => {
                    tracing::warn!(connector = %self.connector, table = %first, "Dropping a table from the re-snapshot: it is no longer captured or has no primary key.");
                    for state in [
                        self.resnapshot.as_mut().map(|r| &mut r.state),
                        self.placed_resnapshot.as_mut(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if state.tables.first() == Some(&first) {
                            state.last_key.clear();
                        }
                        state.tables.retain(|t| *t != first);
                    }
                    if self.placed_resnapshot.as_ref().is_some_and(|s| s.tables.is_empty()) {
                        self.placed_resnapshot = None;
                    }
                }
            }
        }
        self.resnapshot = None;
        Ok(())
    }

    fn table(&self, relation: u32) -> Result<Arc<TableInfo>, ConnectorError> {
        self.relations
            .get(&relation)
            .cloned()
            .ok_or_else(|| protocol("a change of a table whose Relation message never came"))
    }

    /// A table's (new) shape: its types resolved, its key from the catalog.
    async fn relation(&mut self, relation: Relation) -> Result<(), ConnectorError> {
        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let ty = self
                .types
                .resolve(&mut self.conn, column.type_oid, column.type_modifier)
                .await?;
            columns.push(Column {
                name: column.name.clone(),
                ty,
            });
        }
        let key_names = catalog::key_columns(&mut self.conn, i64::from(relation.id), "reading a table's key").await?;
        let mut key: Vec<usize> = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        if key.is_empty() {
            // Dropped meanwhile: fall back on the server's replica identity flags.
            key = relation
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect();
            if key.len() == relation.columns.len() {
                key.clear();
            }
        }
        let name = TableName {
            schema: relation.namespace.clone(),
            name: relation.name.clone(),
        };
        let table = Arc::new(TableInfo::new(name, &self.config.connect.database, columns, key));
        if let Some(previous) = self.relations.get(&relation.id)
            && previous.schema_id != table.schema_id
        {
            tracing::info!(connector = %self.connector, table = %table.qualified, schema = %table.schema_id, "The table changed: new schema version.");
        }
        self.schemas.insert(Arc::clone(&table.schema_id), Arc::clone(&table));
        self.relations.insert(relation.id, table);
        Ok(())
    }
}

/// The record registering a schema version in [`SCHEMAS_TOPIC`].
pub fn schema_record(table: &TableInfo) -> SourceRecord {
    SourceRecord {
        timestamp: now_ms(),
        key: Some(Bytes::copy_from_slice(table.schema_id.as_bytes())),
        value: Some(table.schema_json.clone()),
        headers: Default::default(),
        topic: Some(SCHEMAS_TOPIC.into()),
    }
}

fn cells(tuple: &Tuple) -> Vec<Cell<'_>> {
    tuple
        .columns
        .iter()
        .map(|c| match c {
            ColumnValue::Null => Cell::Null,
            ColumnValue::UnchangedToast => Cell::Unchanged,
            ColumnValue::Text(text) | ColumnValue::Binary(text) => Cell::Text(text),
        })
        .collect()
}

/// Whether an update gave the row another key (the old image has the key columns).
fn key_changed(table: &TableInfo, old: &[Cell<'_>], new: &[Cell<'_>]) -> bool {
    !table.key.is_empty()
        && table.key.iter().any(|&i| match (old.get(i), new.get(i)) {
            (Some(Cell::Text(a)), Some(Cell::Text(b))) => a != b,
            _ => false,
        })
}

/// The new row with unchanged TOASTed values taken from the old image where it has them.
fn fill_unchanged<'a>(new: &[Cell<'a>], old: &[Cell<'a>]) -> Vec<Cell<'a>> {
    new.iter()
        .zip(old.iter().chain(std::iter::repeat(&Cell::Unchanged)))
        .map(|(&n, &o)| match (n, o) {
            (Cell::Unchanged, Cell::Text(_)) => o,
            _ => n,
        })
        .collect()
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn decode_error(error: crate::DecodeError) -> ConnectorError {
    ConnectorError::retriable(format!(
        "the replication stream could not be decoded ({error}); reconnecting from the last durable position"
    ))
    .with_source(error)
}

fn protocol(what: &str) -> ConnectorError {
    ConnectorError::retriable(format!(
        "the replication stream sent {what}; reconnecting from the last durable position"
    ))
}
