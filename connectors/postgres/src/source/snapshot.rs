//! The snapshot: every row of the captured tables, read with `COPY` in primary-key
//! order, in chunks read in parallel and emitted in order, so a crash resumes after the
//! last row the log holds.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plexus_connector::{ConnectorError, Position, SourceContext, SourceRecord};
use tokio::sync::{Mutex, mpsc};

use crate::client::ReplicationConnection;
use crate::replication::Lsn;
use crate::source::client_error;
use crate::source::config::{CdcConfig, quote_identifier, quote_literal};
use crate::source::envelope::{self, Cell, Op, SourceInfo};
use crate::source::now_ms;
use crate::source::position::{CdcPosition, SnapshotPosition};
use crate::source::read_events::{ChunkBuffers, ReadEvents};
use crate::source::stream::schema_record;
use crate::source::table::TableInfo;
use crate::types::PgType;
use crate::types::binary::{key_text_from_binary, reads_binary};
use crate::types::copy::for_each_field;

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Snapshot {
    config: Arc<CdcConfig>,
    connector: String,
    tables: Vec<Arc<TableInfo>>,
    consistent_lsn: Lsn,
    started_ms: i64,
    pool: Arc<Pool>,
    /// The buffers the reading tasks write their chunks' records into.
    buffers: Arc<ChunkBuffers>,
    connections: usize,
    next_table: usize,
    scan: Option<TableScan>,
    resume: Option<SnapshotPosition>,
    boundaries: Vec<SnapshotPosition>,
    registered: HashSet<Arc<str>>,
    /// The planner's row estimate per table (`reltuples`, 0 when unknown).
    estimates: Vec<u64>,
    total_estimate: u64,
    rows_done: u64,
    started: Instant,
    last_progress: Instant,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

struct TableScan {
    table: Arc<TableInfo>,
    ordinal: u64,
    rows: u64,
    last_key: Vec<String>,
    pending: VecDeque<Segment>,
    running: VecDeque<Running>,
}

struct Segment {
    sql: String,
    /// A range the log partly holds from before a crash: emitted as one batch with
    /// exactly this position.
    fixed: Option<SnapshotPosition>,
}

struct Running {
    rx: mpsc::Receiver<Result<Chunk, ConnectorError>>,
    fixed: Option<SnapshotPosition>,
}

/// Rows of a segment, in key order, as records.
struct Chunk {
    records: Vec<SourceRecord>,
    /// The key of the last row.
    last_key: Vec<String>,
}

/// The connections reading the snapshot, all in the same snapshot transaction: ordinary
/// sessions of the crate's own client, which reads a COPY's rows in place (sqlx would
/// hand over every row as a message of its own).
struct Pool {
    tx: mpsc::Sender<ReplicationConnection>,
    rx: Mutex<mpsc::Receiver<ReplicationConnection>>,
}

impl Pool {
    async fn take(&self) -> Option<ReplicationConnection> {
        self.rx.lock().await.recv().await
    }

    async fn put(&self, conn: ReplicationConnection) {
        let _ = self.tx.send(conn).await;
    }
}

impl Snapshot {
    /// `connections` are each inside a transaction of the snapshot to read.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<CdcConfig>,
        connector: String,
        tables: Vec<Arc<TableInfo>>,
        estimates: &[u64],
        consistent_lsn: Lsn,
        connections: Vec<ReplicationConnection>,
        resume: Option<SnapshotPosition>,
        boundaries: Vec<SnapshotPosition>,
    ) -> Snapshot {
        let (tx, rx) = mpsc::channel(connections.len().max(1));
        let count = connections.len();
        for conn in connections {
            // The channel has room for all of them.
            let _ = tx.try_send(conn);
        }
        Snapshot {
            config,
            connector,
            tables,
            consistent_lsn,
            started_ms: now_ms(),
            pool: Arc::new(Pool { tx, rx: Mutex::new(rx) }),
            buffers: Arc::default(),
            connections: count,
            next_table: 0,
            scan: None,
            resume,
            boundaries,
            registered: HashSet::new(),
            estimates: estimates.to_vec(),
            total_estimate: estimates.iter().sum(),
            rows_done: 0,
            started: Instant::now(),
            last_progress: Instant::now(),
        }
    }

    pub fn consistent_lsn(&self) -> Lsn {
        self.consistent_lsn
    }

    /// The next batch, or `None` when every table has been read.
    pub async fn next_batch(
        &mut self,
        ctx: &SourceContext,
    ) -> Result<Option<(Vec<SourceRecord>, Position)>, ConnectorError> {
        let mut batch = Vec::with_capacity(self.config.batch_size + 1);
        let mut rows_in_batch = 0usize;
        loop {
            if self.scan.is_none() {
                if self.next_table >= self.tables.len() {
                    break;
                }
                let ordinal = self.next_table;
                self.next_table += 1;
                self.scan = self.plan(ordinal).await?;
                continue;
            }
            let Some(scan) = self.scan.as_mut() else { break };
            while scan.running.len() < self.connections
                && let Some(segment) = scan.pending.pop_front()
            {
                let info = SourceInfo {
                    connector: &self.connector,
                    snapshot: "true",
                    commit_lsn: self.consistent_lsn.0,
                    seq: 0,
                    txid: None,
                    ts_ms: self.started_ms,
                };
                let events = ReadEvents::new(Arc::clone(&scan.table), &info, Arc::clone(&self.buffers));
                scan.running
                    .push_back(start_segment(&self.pool, segment, events, self.config.batch_size));
            }
            let Some(running) = scan.running.front_mut() else {
                // The table is done.
                tracing::info!(connector = %self.connector, table = %scan.table.qualified, rows = scan.rows, "Snapshot of the table finished.");
                let position = position_of(scan, self.consistent_lsn);
                self.scan = None;
                if rows_in_batch > 0 {
                    self.progress(ctx, rows_in_batch as u64);
                    return Ok(Some((batch, position)));
                }
                continue;
            };
            if running.fixed.is_some() && rows_in_batch > 0 {
                // A fixed range is a batch of its own.
                break;
            }
            match running.rx.recv().await {
                Some(Ok(chunk)) => {
                    if chunk.records.is_empty() {
                        continue;
                    }
                    if !self.registered.contains(&scan.table.schema_id) {
                        self.registered.insert(Arc::clone(&scan.table.schema_id));
                        batch.push(schema_record(&scan.table));
                    }
                    let rows = chunk.records.len();
                    if batch.is_empty() {
                        batch = chunk.records;
                    } else {
                        batch.extend(chunk.records);
                    }
                    scan.rows += rows as u64;
                    rows_in_batch += rows;
                    scan.last_key = chunk.last_key;
                    let fixed = running.fixed.is_some();
                    if !fixed && rows_in_batch >= self.config.batch_size {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    let done = scan.running.pop_front();
                    if let Some(fixed) = done.and_then(|d| d.fixed) {
                        // Exactly the position the log holds, whatever was read again.
                        scan.rows = fixed.rows;
                        scan.last_key = fixed.last_key.clone();
                        let position = CdcPosition::Snapshot(fixed).encode();
                        self.rows_done += rows_in_batch as u64;
                        return Ok(Some((batch, position)));
                    }
                }
            }
        }
        self.progress(ctx, rows_in_batch as u64);
        let Some(last) = self.last_position() else {
            return Ok(None);
        };
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some((batch, last)))
    }

    /// Ends the snapshot transactions.
    pub async fn close(self) {
        drop(self.scan);
        let mut rx = self.pool.rx.lock().await;
        while let Ok(mut conn) = rx.try_recv() {
            let _ = conn.simple_query("COMMIT").await;
            let _ = conn.close().await;
        }
    }

    fn last_position(&self) -> Option<Position> {
        Some(position_of(self.scan.as_ref()?, self.consistent_lsn))
    }

    fn progress(&mut self, ctx: &SourceContext, rows: u64) {
        self.rows_done += rows;
        let metrics = ctx.metrics();
        metrics.snapshot_rows.store(self.rows_done as i64, Ordering::Relaxed);
        metrics
            .snapshot_rows_total
            .store(self.total_estimate.max(self.rows_done) as i64, Ordering::Relaxed);
        if self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_progress = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.rows_done as f64 / seconds;
        let total = self.total_estimate.max(self.rows_done);
        let percent = if total == 0 {
            100.0
        } else {
            100.0 * self.rows_done as f64 / total as f64
        };
        let eta = if rate > 0.0 {
            (total - self.rows_done) as f64 / rate
        } else {
            0.0
        };
        tracing::info!(
            connector = %self.connector,
            table = %self.scan.as_ref().map_or("", |s| &*s.table.qualified),
            rows = self.rows_done,
            estimated_total = total,
            percent = format!("{percent:.1}"),
            rows_per_s = rate.round() as u64,
            eta_s = eta.round() as u64,
            "Snapshot in progress."
        );
    }

    /// The segments of a table still to read, from where the log stands.
    async fn plan(&mut self, ordinal: usize) -> Result<Option<TableScan>, ConnectorError> {
        let table = Arc::clone(&self.tables[ordinal]);
        let mut rows = 0;
        let mut after: Option<Vec<String>> = None;
        if let Some(resume) = &self.resume {
            match resume.table.as_str().cmp(&*table.qualified) {
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Equal => {
                    rows = resume.rows;
                    after = Some(resume.last_key.clone());
                    if table.key.is_empty() {
                        tracing::warn!(table = %table.qualified, "The table has no key: its snapshot starts over and rows already read are read again.");
                        rows = 0;
                        after = None;
                    }
                }
                std::cmp::Ordering::Less => {}
            }
        }
        let mut pending = VecDeque::new();
        let mut boundaries: Vec<&SnapshotPosition> = self
            .boundaries
            .iter()
            .filter(|b| *b.table == *table.qualified && b.rows > rows)
            .collect();
        boundaries.sort_by_key(|b| b.rows);
        for boundary in boundaries {
            if table.key.is_empty() {
                break;
            }
            pending.push_back(Segment {
                sql: copy_sql(&table, after.as_deref(), Some(&boundary.last_key)),
                fixed: Some(boundary.clone()),
            });
            after = Some(boundary.last_key.clone());
            rows = boundary.rows;
        }
        let estimate = self.estimates.get(ordinal).copied().unwrap_or(0);
        pending.extend(self.chunks(&table, estimate, after.as_deref()).await?);
        let last_key = after.unwrap_or_default();
        Ok(Some(TableScan {
            table,
            ordinal: ordinal as u64,
            rows,
            last_key,
            pending,
            running: VecDeque::new(),
        }))
    }

    /// Integer keys split into ranges read in parallel; other keys are one ordered read.
    async fn chunks(
        &self,
        table: &TableInfo,
        estimate: u64,
        after: Option<&[String]>,
    ) -> Result<Vec<Segment>, ConnectorError> {
        let single_integer = match table.key.as_slice() {
            [k] => matches!(table.columns[*k].ty, PgType::Int2 | PgType::Int4 | PgType::Int8),
            _ => false,
        };
        if !single_integer || self.connections < 2 {
            return Ok(vec![Segment {
                sql: copy_sql(table, after, None),
                fixed: None,
            }]);
        }
        let key = quote_identifier(&table.columns[table.key[0]].name);
        let lower: Option<i64> = match after.and_then(|a| a.first()) {
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                ConnectorError::fatal(format!(
                    "the snapshot position's key `{text}` of {} is not an integer",
                    table.qualified
                ))
            })?),
            None => None,
        };
        let mut sql = format!("SELECT min({key})::int8, max({key})::int8 FROM {}", table.name.quoted());
        if let Some(lower) = lower {
            sql.push_str(&format!(" WHERE {key} > {lower}"));
        }
        let Some(mut conn) = self.pool.take().await else {
            return Err(ConnectorError::retriable("the snapshot connections are gone"));
        };
        let rows = conn.simple_query(&sql).await;
        self.pool.put(conn).await;
        let rows = rows.map_err(|e| client_error(&format!("planning the snapshot of {}", table.qualified), e))?;
        let bound = |i: usize| {
            rows.first()
                .and_then(|row| row.get(i).cloned().flatten())
                .and_then(|text| text.parse::<i64>().ok())
        };
        let (Some(min), Some(max)) = (bound(0), bound(1)) else {
            return Ok(Vec::new());
        };
        let span = (max as i128 - min as i128 + 1).max(1);
        let chunk_rows = self.config.snapshot_chunk_rows as i128;
        // Rows per key value, from the planner's estimate; dense keys when unknown.
        let width = if estimate > 0 {
            (span * chunk_rows / i128::from(estimate)).max(1)
        } else {
            chunk_rows
        };
        // Sparse keys must not make millions of empty chunks.
        let width = width.max(span / 10_000).max(1);
        let mut segments = Vec::new();
        let mut from = min as i128;
        while from <= max as i128 {
            let to = (from + width).min(max as i128 + 1);
            let bounds = format!("{key} >= {from} AND {key} < {to}");
            segments.push(Segment {
                sql: copy_sql_where(table, &bounds, None, Format::Binary),
                fixed: None,
            });
            from = to;
        }
        Ok(segments)
    }
}

fn position_of(scan: &TableScan, consistent_lsn: Lsn) -> Position {
    CdcPosition::Snapshot(SnapshotPosition {
        table_ordinal: scan.ordinal,
        rows: scan.rows,
        table: scan.table.qualified.to_string(),
        last_key: scan.last_key.clone(),
        consistent_lsn: consistent_lsn.to_string(),
    })
    .encode()
}

/// Reads a segment on a connection of the pool in a task of its own, turning its rows
/// into records there (so segments are converted in parallel), `chunk_rows` at a time.
fn start_segment(pool: &Arc<Pool>, segment: Segment, events: ReadEvents, chunk_rows: usize) -> Running {
    let (tx, rx) = mpsc::channel(2);
    let pool = Arc::clone(pool);
    let sql = segment.sql;
    tokio::spawn(async move {
        let Some(mut conn) = pool.take().await else { return };
        if read_segment(&mut conn, &sql, events, chunk_rows.max(1), &tx).await {
            pool.put(conn).await;
        }
    });
    Running {
        rx,
        fixed: segment.fixed,
    }
}

/// Streams the COPY's rows into `tx` as chunks of records. False when the connection
/// cannot be reused (an error, or the reader went away mid-copy).
async fn read_segment(
    conn: &mut ReplicationConnection,
    sql: &str,
    mut events: ReadEvents,
    chunk_rows: usize,
    tx: &mpsc::Sender<Result<Chunk, ConnectorError>>,
) -> bool {
    let mut copy = match conn.copy_out(sql).await {
        Ok(copy) => copy,
        Err(e) => {
            let _ = tx.send(Err(client_error("starting a snapshot read", e))).await;
            return false;
        }
    };
    // The last row converted (its key is where the chunk ends).
    let mut last = Vec::new();
    loop {
        // The rows of one socket read, converted where they are.
        let now = now_ms();
        let mut failure = None;
        let more = copy
            .read(|row| {
                if failure.is_some() {
                    return;
                }
                match events.push(row, now) {
                    Ok(true) => {
                        last.clear();
                        last.extend_from_slice(row);
                    }
                    Ok(false) => {}
                    Err(e) => failure = Some(e),
                }
            })
            .await;
        let more = match more {
            Ok(more) => more,
            Err(e) => {
                let _ = tx.send(Err(client_error("reading the snapshot", e))).await;
                return false;
            }
        };
        let failure = match failure {
            None if !last.is_empty() => events.key_text(&last).map(|key| events.set_last_key(key)).err(),
            failure => failure,
        };
        last.clear();
        if let Some(e) = failure {
            let _ = tx.send(Err(e)).await;
            return false;
        }
        if (!more && events.len() > 0) || events.len() >= chunk_rows {
            let (records, last_key) = events.take();
            if tx.send(Ok(Chunk { records, last_key })).await.is_err() {
                return false;
            }
        }
        if !more {
            return true;
        }
    }
}

/// `COPY (SELECT columns FROM table WHERE key > after AND key <= upto ORDER BY key) TO STDOUT`.
fn copy_sql(table: &TableInfo, after: Option<&[String]>, upto: Option<&[String]>) -> String {
    let keys = key_list(table);
    let mut conditions = Vec::new();
    if let Some(after) = after.filter(|a| !a.is_empty()) {
        conditions.push(format!("({keys}) > ({})", literals(after)));
    }
    if let Some(upto) = upto {
        conditions.push(format!("({keys}) <= ({})", literals(upto)));
    }
    copy_sql_where(table, &conditions.join(" AND "), None, Format::Binary)
}

/// The next `limit` rows in key order after `after` (all from the start when empty).
pub(super) fn chunk_sql(table: &TableInfo, after: &[String], limit: u64) -> String {
    let condition = if after.is_empty() {
        String::new()
    } else {
        format!("({}) > ({})", key_list(table), literals(after))
    };
    copy_sql_where(table, &condition, Some(limit), Format::Text)
}

/// How a COPY writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Lines of text, each column in its type's text output.
    Text,
    /// [`crate::types::binary`]: the columns [`reads_binary`] in binary and the others
    /// cast to text, then the key columns as text (where the next query starts) unless
    /// their binary values give it ([`appends_key_text`]).
    Binary,
}

fn copy_sql_where(table: &TableInfo, condition: &str, limit: Option<u64>, format: Format) -> String {
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| match format {
            Format::Binary if !reads_binary(&c.ty) => format!("{}::text", quote_identifier(&c.name)),
            _ => quote_identifier(&c.name),
        })
        .collect();
    if format == Format::Binary && appends_key_text(table) {
        columns.extend(
            table
                .key
                .iter()
                .map(|&k| format!("{}::text", quote_identifier(&table.columns[k].name))),
        );
    }
    let columns = columns.join(", ");
    let mut sql = format!("COPY (SELECT {columns} FROM {}", table.name.quoted());
    if format == Format::Binary {
        // The output columns cast to text have the columns' names: the ordering names
        // the table's own columns, so that it is by their values, not their text.
        sql.push_str(" AS row");
    }
    if !condition.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(condition);
    }
    if !table.key.is_empty() {
        sql.push_str(" ORDER BY ");
        match format {
            Format::Text => sql.push_str(&key_list(table)),
            Format::Binary => {
                let keys: Vec<String> = table
                    .key
                    .iter()
                    .map(|&k| format!("row.{}", quote_identifier(&table.columns[k].name)))
                    .collect();
                sql.push_str(&keys.join(", "));
            }
        }
    }
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    sql.push_str(match format {
        Format::Text => ") TO STDOUT",
        Format::Binary => ") TO STDOUT (FORMAT binary)",
    });
    sql
}

/// Whether the snapshot's binary query appends the key columns as text, for the resume
/// point: unless every key column's text comes from its binary value
/// ([`key_text_from_binary`]).
pub(super) fn appends_key_text(table: &TableInfo) -> bool {
    !table.key.iter().all(|&k| key_text_from_binary(&table.columns[k].ty))
}

fn key_list(table: &TableInfo) -> String {
    table
        .key
        .iter()
        .map(|&i| quote_identifier(&table.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Untyped literals: PostgreSQL gives them the key columns' types in the comparison.
fn literals(values: &[String]) -> String {
    values.iter().map(|v| quote_literal(v)).collect::<Vec<_>>().join(", ")
}

fn fields<'a>(table: &TableInfo, line: &'a [u8]) -> Result<Vec<Option<Cow<'a, [u8]>>>, ConnectorError> {
    let mut fields = Vec::with_capacity(table.columns.len());
    for_each_field(line, |_, value| {
        fields.push(value);
        Ok(())
    })
    .map_err(|e| ConnectorError::fatal(format!("a snapshot row of {} is unreadable: {e}", table.qualified)))?;
    if fields.len() != table.columns.len() {
        return Err(ConnectorError::retriable(format!(
            "a snapshot row of {} has {} columns instead of {}: the table changed during the snapshot",
            table.qualified,
            fields.len(),
            table.columns.len()
        )));
    }
    Ok(fields)
}

/// A row of `COPY ... TO STDOUT` as a read event (`op` r).
pub(super) fn row_record(
    table: &Arc<TableInfo>,
    line: &[u8],
    info: &SourceInfo<'_>,
) -> Result<SourceRecord, ConnectorError> {
    let fields = fields(table, line)?;
    let cells: Vec<Cell<'_>> = fields
        .iter()
        .map(|f| match f {
            Some(value) => Cell::Text(value),
            None => Cell::Null,
        })
        .collect();
    let change = envelope::change(table, Op::Read, None, Some(&cells), 0, 0).map_err(|e| {
        ConnectorError::fatal(format!(
            "a snapshot row of {} could not be converted: {e}",
            table.qualified
        ))
    })?;
    Ok(change.into_record(info, now_ms()))
}

/// The key columns of a row, in PostgreSQL's text form.
pub(super) fn key_text(table: &TableInfo, line: &[u8]) -> Result<Vec<String>, ConnectorError> {
    let fields = fields(table, line)?;
    Ok(table
        .key
        .iter()
        .map(|&i| {
            fields[i]
                .as_deref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::config::TableName;
    use crate::source::table::Column;

    #[test]
    fn copy_statements_read_in_key_order_from_the_last_key() {
        let table = TableInfo::new(
            TableName {
                schema: "public".into(),
                name: "Order".into(),
            },
            "db",
            vec![
                Column {
                    name: "a".into(),
                    ty: PgType::Text,
                },
                Column {
                    name: "b".into(),
                    ty: PgType::Int4,
                },
                Column {
                    name: "v".into(),
                    ty: PgType::Interval,
                },
            ],
            vec![0, 1],
        );
        assert_eq!(
            copy_sql(
                &table,
                Some(&["x'y".into(), "3".into()]),
                Some(&["z".into(), "1".into()])
            ),
            "COPY (SELECT \"a\", \"b\", \"v\"::text, \"a\"::text, \"b\"::text FROM \"public\".\"Order\" AS row \
             WHERE (\"a\", \"b\") > ('x''y', '3') AND (\"a\", \"b\") <= ('z', '1') ORDER BY row.\"a\", row.\"b\") \
             TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            chunk_sql(&table, &["k".into(), "7".into()], 100),
            "COPY (SELECT \"a\", \"b\", \"v\" FROM \"public\".\"Order\" WHERE (\"a\", \"b\") > ('k', '7') \
             ORDER BY \"a\", \"b\" LIMIT 100) TO STDOUT"
        );
        assert_eq!(
            copy_sql(&table, None, None),
            "COPY (SELECT \"a\", \"b\", \"v\"::text, \"a\"::text, \"b\"::text FROM \"public\".\"Order\" AS row \
             ORDER BY row.\"a\", row.\"b\") TO STDOUT (FORMAT binary)"
        );
    }
}
