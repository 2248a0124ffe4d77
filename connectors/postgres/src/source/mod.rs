//! The `postgres-cdc` source: a consistent snapshot of the chosen tables, then every
//! committed change from a logical replication slot (`pgoutput`), exactly once into the
//! log, the slot acknowledged only behind what the log holds.
//!
//! - `config`: the settings; `catalog`: ordinary SQL (checks, tables, publication,
//!   slot); `snapshot`: parallel `COPY` reads in key order; `wal` and `stream`: the
//!   replication stream and its decoding into records; `spill`: large in-progress
//!   transactions on disk; `resnapshot`: tables read again while streaming, on
//!   request; `envelope`, `table`, `position`: what records and positions look like.

mod catalog;
mod config;
mod envelope;
mod position;
mod read_events;
mod resnapshot;
mod snapshot;
mod spill;
mod stream;
mod table;
mod wal;

use std::sync::Arc;

use plexus_connector::{
    ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, Poll, Position, Settings, Source, SourceBatch,
    SourceContext, async_trait,
};

use crate::client::{ClientError, ReplicationConnection};
use crate::replication::Lsn;
pub use config::{CdcConfig, SnapshotMode, TableName};
use position::{CdcPosition, ResnapshotState, SnapshotPosition};
use snapshot::Snapshot;
use stream::Streamer;
pub use table::{SCHEMA_HEADER, SCHEMAS_TOPIC};
use wal::WalStream;

/// `type = "postgres-cdc"`.
#[derive(Debug, Default)]
pub struct PostgresCdcFactory;

impl PostgresCdcFactory {
    pub fn new() -> Self {
        PostgresCdcFactory
    }
}

impl ConnectorFactory for PostgresCdcFactory {
    fn type_name(&self) -> &str {
        "postgres-cdc"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &config::SCHEMA
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        // Checked now, so bad settings fail before anything starts; the connector's name
        // (for default slot and publication names) is known at start.
        CdcConfig::from_settings("check", settings)?;
        Ok(Box::new(PostgresCdcSource {
            settings: settings.clone(),
            phase: Phase::Idle,
        }))
    }

    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        match CdcPosition::decode(position) {
            Ok(position) => position.to_json(),
            Err(_) => serde_json::json!({ "hex": position.to_string() }),
        }
    }

    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        CdcPosition::from_json(value).map(|p| p.encode())
    }
}

pub struct PostgresCdcSource {
    settings: Settings,
    phase: Phase,
}

enum Phase {
    Idle,
    Snapshot(Box<SnapshotPhase>),
    Streaming(Box<Streamer>),
}

struct SnapshotPhase {
    config: Arc<CdcConfig>,
    snapshot: Snapshot,
    /// Kept open and idle when it exported the snapshot: closing it would end the
    /// snapshot's life before every reader has imported it.
    replication: Option<ReplicationConnection>,
    stream_boundaries: Vec<(Lsn, u64)>,
}

impl std::fmt::Debug for PostgresCdcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource").finish_non_exhaustive()
    }
}

#[async_trait]
impl Source for PostgresCdcSource {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        let config = Arc::new(CdcConfig::from_settings(ctx.name(), &self.settings)?);
        let resume = resume
            .map(|p| CdcPosition::decode(&p))
            .transpose()
            .map_err(|e| ConnectorError::fatal(format!("{e}; reset the connector's offsets to start over")))?;
        let mut snapshot_boundaries = Vec::new();
        let mut stream_boundaries = Vec::new();
        for boundary in ctx.replay_boundaries() {
            match CdcPosition::decode(boundary) {
                Ok(CdcPosition::Snapshot(s)) => snapshot_boundaries.push(s),
                Ok(CdcPosition::Stream {
                    commit_lsn, ordinal, ..
                }) => stream_boundaries.push((commit_lsn, ordinal)),
                Err(e) => tracing::warn!(connector = %ctx.name(), error = %e, "Ignoring a replay boundary."),
            }
        }

        let mut conn = catalog::connect(&config.connect).await?;
        let changes = config.snapshot_mode != SnapshotMode::InitialOnly;
        let version = catalog::check_server(&mut conn, &config.connect.user, changes).await?;
        let mut types = catalog::TypeCache::default();
        let tables =
            catalog::load_tables(&mut conn, &config.connect.database, &config.tables, &mut types, changes).await?;
        if !changes {
            let snapshot = bulk_snapshot(&config, ctx.name(), &mut conn, tables, resume, snapshot_boundaries).await?;
            self.phase = Phase::Snapshot(Box::new(SnapshotPhase {
                config,
                snapshot,
                replication: None,
                stream_boundaries,
            }));
            let _ = sqlx::Connection::close(conn).await;
            return Ok(());
        }
        catalog::ensure_publication(&mut conn, &config.publication, &config.tables).await?;
        let slot = catalog::slot_state(&mut conn, &config.slot).await?;
        if let Some(state) = &slot {
            if let Some(pid) = state.active_pid {
                return Err(ConnectorError::retriable(format!(
                    "replication slot `{}` is in use by another process (pid {pid}); stop the other consumer, or set \
                     `slot` to another name (retrying: after a crash the server takes a moment to notice)",
                    config.slot
                )));
            }
            if state.plugin.as_deref() != Some("pgoutput")
                || state.database.as_deref() != Some(&config.connect.database)
            {
                return Err(ConnectorError::config(format!(
                    "replication slot `{}` exists but is not a pgoutput slot of database `{}`; set `slot` to another name \
                     or drop it with `SELECT pg_drop_replication_slot('{}');`",
                    config.slot, config.connect.database, config.slot
                )));
            }
        }
        tracing::info!(connector = %ctx.name(), version, tables = tables.len(), resume = ?resume, "PostgreSQL source connected.");

        match resume {
            None => {
                if slot.is_some() {
                    tracing::warn!(connector = %ctx.name(), slot = %config.slot, "The log holds no position for this source: recreating its replication slot, so that the snapshot and the stream meet exactly.");
                    catalog::drop_slot(&mut conn, &config.slot).await?;
                }
                let mut replication = replicate(&config).await?;
                let export = config.snapshot_mode == SnapshotMode::Initial;
                let sql = format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {}",
                    config::quote_identifier(&config.slot),
                    if export { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" }
                );
                let rows = replication
                    .simple_query(&sql)
                    .await
                    .map_err(|e| client_error(&format!("creating replication slot `{}`", config.slot), e))?;
                let row = rows
                    .first()
                    .ok_or_else(|| ConnectorError::retriable("CREATE_REPLICATION_SLOT returned nothing"))?;
                let consistent: Lsn = row
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| ConnectorError::retriable("CREATE_REPLICATION_SLOT returned no consistent point"))?;
                tracing::info!(connector = %ctx.name(), slot = %config.slot, lsn = %consistent, "Replication slot created.");
                if export {
                    let name = row.get(2).cloned().flatten();
                    let start = SnapshotStart {
                        exported: name.as_deref(),
                        consistent,
                        resume: None,
                        boundaries: Vec::new(),
                    };
                    let snapshot = start.open(&config, ctx.name(), &mut conn, tables).await?;
                    self.phase = Phase::Snapshot(Box::new(SnapshotPhase {
                        config,
                        snapshot,
                        replication: Some(replication),
                        stream_boundaries,
                    }));
                } else {
                    let streamer = start_streaming(
                        &config,
                        ctx.name(),
                        replication,
                        None,
                        stream_boundaries,
                        consistent,
                        None,
                    )
                    .await?;
                    self.phase = Phase::Streaming(Box::new(streamer));
                }
            }
            Some(CdcPosition::Snapshot(position)) => {
                let Some(state) = slot else {
                    return Err(slot_gone(&config, ctx.name()));
                };
                let consistent = state.confirmed_flush.unwrap_or(Lsn::INVALID);
                tracing::info!(connector = %ctx.name(), table = %position.table, rows = position.rows, "Resuming the snapshot after the last row the log holds.");
                let start = SnapshotStart {
                    exported: None,
                    consistent,
                    resume: Some(position),
                    boundaries: snapshot_boundaries,
                };
                let snapshot = start.open(&config, ctx.name(), &mut conn, tables).await?;
                self.phase = Phase::Snapshot(Box::new(SnapshotPhase {
                    config,
                    snapshot,
                    replication: None,
                    stream_boundaries,
                }));
            }
            Some(CdcPosition::Stream {
                commit_lsn,
                ordinal,
                resnapshot,
            }) => {
                let Some(state) = slot else {
                    return Err(slot_gone(&config, ctx.name()));
                };
                let replication = replicate(&config).await?;
                let acknowledged = state.confirmed_flush.unwrap_or(Lsn::INVALID);
                let streamer = start_streaming(
                    &config,
                    ctx.name(),
                    replication,
                    Some((commit_lsn, ordinal)),
                    stream_boundaries,
                    acknowledged,
                    resnapshot,
                )
                .await?;
                self.phase = Phase::Streaming(Box::new(streamer));
            }
        }
        let _ = sqlx::Connection::close(conn).await;
        Ok(())
    }

    async fn poll(&mut self, ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        loop {
            match &mut self.phase {
                Phase::Idle => return Err(ConnectorError::retriable("the source was not started")),
                Phase::Snapshot(phase) => {
                    if let Some((records, position)) = phase.snapshot.next_batch(ctx).await? {
                        return Ok(Poll::Batch(SourceBatch { records, position }));
                    }
                    // Every table is read: stream from the slot's consistent point.
                    let Phase::Snapshot(phase) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                        continue;
                    };
                    let SnapshotPhase {
                        config,
                        snapshot,
                        replication,
                        stream_boundaries,
                    } = *phase;
                    let consistent = snapshot.consistent_lsn();
                    snapshot.close().await;
                    if config.snapshot_mode == SnapshotMode::InitialOnly {
                        tracing::info!(connector = %ctx.name(), "Snapshot finished; the source is done (`snapshot_mode = \"initial_only\"`).");
                        return Ok(Poll::Finished);
                    }
                    tracing::info!(connector = %ctx.name(), lsn = %consistent, "Snapshot finished; streaming changes.");
                    let replication = match replication {
                        Some(replication) => replication,
                        None => replicate(&config).await?,
                    };
                    let streamer = start_streaming(
                        &config,
                        ctx.name(),
                        replication,
                        None,
                        stream_boundaries,
                        consistent,
                        None,
                    )
                    .await?;
                    self.phase = Phase::Streaming(Box::new(streamer));
                    // The log must say that the snapshot is complete: a restart before
                    // the first change would otherwise read on past the consistent
                    // point, rows that the stream delivers too.
                    let position = CdcPosition::Stream {
                        commit_lsn: consistent,
                        ordinal: 0,
                        resnapshot: None,
                    };
                    return Ok(Poll::Batch(SourceBatch {
                        records: Vec::new(),
                        position: position.encode(),
                    }));
                }
                Phase::Streaming(streamer) => {
                    return Ok(match streamer.next_batch(ctx).await? {
                        Some((records, position)) => Poll::Batch(SourceBatch { records, position }),
                        None => Poll::Idle,
                    });
                }
            }
        }
    }

    async fn commit(&mut self, position: &Position) -> Result<(), ConnectorError> {
        if let Phase::Streaming(streamer) = &mut self.phase {
            streamer.commit(position);
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => {}
            Phase::Snapshot(phase) => phase.snapshot.close().await,
            Phase::Streaming(streamer) => streamer.close().await,
        }
        Ok(())
    }
}

/// The snapshot of a bulk export (`initial_only`): every table read in one
/// repeatable-read snapshot of its own, no slot. After a crash it resumes after the last
/// row the log holds, under a new snapshot.
async fn bulk_snapshot(
    config: &Arc<CdcConfig>,
    connector: &str,
    conn: &mut sqlx::postgres::PgConnection,
    tables: Vec<Arc<table::TableInfo>>,
    resume: Option<CdcPosition>,
    boundaries: Vec<SnapshotPosition>,
) -> Result<Snapshot, ConnectorError> {
    let resume = match resume {
        None => None,
        Some(CdcPosition::Snapshot(position)) => Some(position),
        Some(CdcPosition::Stream { .. }) => {
            return Err(ConnectorError::config(format!(
                "connector `{connector}` has `snapshot_mode = \"initial_only\"` but the log holds a streaming position \
                 of it (it ran with another mode before); give the export its own connector name"
            )));
        }
    };
    // The WAL position the rows are consistent with, for their `source.commit_lsn`
    // (a read replica replays the primary's WAL).
    let (lsn,): (String,) = sqlx::query_as(
        "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| catalog::sql_error("reading the current WAL position", e))?;
    let consistent: Lsn = lsn.parse().unwrap_or(Lsn::INVALID);
    if let Some(position) = &resume {
        tracing::info!(connector, table = %position.table, rows = position.rows, "Resuming the export after the last row the log holds.");
    }
    let start = SnapshotStart {
        exported: None,
        consistent,
        resume,
        boundaries,
    };
    start.open(config, connector, conn, tables).await
}

/// Opens the replication connection.
async fn replicate(config: &CdcConfig) -> Result<ReplicationConnection, ConnectorError> {
    ReplicationConnection::connect(&config.connect)
        .await
        .map_err(|e| client_error("opening the replication connection", e))
}

/// Where a snapshot starts: the snapshot to import (the slot's, or none: a new one),
/// the WAL position it is consistent with, and what the log already holds of it.
struct SnapshotStart<'a> {
    exported: Option<&'a str>,
    consistent: Lsn,
    resume: Option<SnapshotPosition>,
    boundaries: Vec<SnapshotPosition>,
}

impl SnapshotStart<'_> {
    /// Opens the reading connections and plans from the tables' size estimates.
    async fn open(
        self,
        config: &Arc<CdcConfig>,
        connector: &str,
        conn: &mut sqlx::postgres::PgConnection,
        tables: Vec<Arc<table::TableInfo>>,
    ) -> Result<Snapshot, ConnectorError> {
        let readers = snapshot_readers(config, self.exported).await?;
        let estimates = estimates(conn, &tables).await?;
        Ok(Snapshot::new(
            Arc::clone(config),
            connector.to_owned(),
            tables,
            &estimates,
            self.consistent,
            readers,
            self.resume,
            self.boundaries,
        ))
    }
}

/// Connections inside one snapshot transaction: the slot's exported snapshot, or (when
/// resuming) a new one exported by the first and imported by the others.
async fn snapshot_readers(
    config: &CdcConfig,
    exported: Option<&str>,
) -> Result<Vec<ReplicationConnection>, ConnectorError> {
    let mut readers = Vec::with_capacity(config.snapshot_parallelism);
    let mut name = exported.map(str::to_owned);
    for _ in 0..config.snapshot_parallelism {
        let mut conn = ReplicationConnection::connect_sql(&config.connect)
            .await
            .map_err(|e| client_error("connecting a snapshot reader", e))?;
        let mut sql = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;");
        if let Some(name) = &name {
            sql.push_str(&format!("SET TRANSACTION SNAPSHOT {};", config::quote_literal(name)));
        }
        conn.simple_query(&sql)
            .await
            .map_err(|e| client_error("starting the snapshot transaction", e))?;
        if name.is_none() {
            let rows = conn
                .simple_query("SELECT pg_export_snapshot()")
                .await
                .map_err(|e| client_error("exporting the snapshot", e))?;
            let exported = rows.into_iter().next().and_then(|row| row.into_iter().next().flatten());
            name = Some(exported.ok_or_else(|| ConnectorError::retriable("pg_export_snapshot() returned no name"))?);
        }
        readers.push(conn);
    }
    Ok(readers)
}

async fn estimates(
    conn: &mut sqlx::postgres::PgConnection,
    tables: &[Arc<table::TableInfo>],
) -> Result<Vec<u64>, ConnectorError> {
    let mut estimates = Vec::with_capacity(tables.len());
    for table in tables {
        let row: (Option<i64>,) = sqlx::query_as("SELECT reltuples::int8 FROM pg_class WHERE oid = $1::regclass")
            .bind(table.name.quoted())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| catalog::sql_error("estimating table sizes", e))?;
        estimates.push(row.0.unwrap_or(0).max(0) as u64);
    }
    Ok(estimates)
}

async fn start_streaming(
    config: &Arc<CdcConfig>,
    connector: &str,
    replication: ReplicationConnection,
    resume: Option<(Lsn, u64)>,
    boundaries: Vec<(Lsn, u64)>,
    acknowledged: Lsn,
    resnapshot: Option<ResnapshotState>,
) -> Result<Streamer, ConnectorError> {
    // Protocol 2 streams large in-progress transactions (PostgreSQL 14 and later), so
    // the server neither spills them nor sends them whole at commit.
    let options = if replication.server_version_num() >= 140_000 {
        "\"proto_version\" '2', \"streaming\" 'true'"
    } else {
        "\"proto_version\" '1'"
    };
    let publications = config::quote_literal(&config::quote_identifier(&config.publication));
    let sql = format!(
        "START_REPLICATION SLOT {} LOGICAL 0/0 ({options}, \"publication_names\" {publications}, \"messages\" 'true')",
        config::quote_identifier(&config.slot)
    );
    let stream = replication.start_replication(&sql).await.map_err(|e| {
        if e.sqlstate() == Some("55006") {
            ConnectorError::retriable(format!(
                "replication slot `{}` is in use by another process: {e}; stop the other consumer or set `slot` to another name",
                config.slot
            ))
        } else {
            client_error("starting replication", e)
        }
    })?;
    let wal = WalStream::start(stream, acknowledged, config.status_interval);
    let conn = catalog::connect(&config.connect).await?;
    // A table no longer captured is not read again.
    let resnapshot = resnapshot
        .map(|mut state| {
            if state
                .tables
                .first()
                .is_some_and(|t| !config.tables.iter().any(|c| c.to_string() == *t))
            {
                state.last_key.clear();
            }
            state
                .tables
                .retain(|t| config.tables.iter().any(|c| c.to_string() == *t));
            state
        })
        .filter(|state| !state.tables.is_empty());
    if let Some(state) = &resnapshot {
        tracing::info!(connector, tables = ?state.tables, last_key = ?state.last_key, "Resuming the re-snapshot after the last row the log holds.");
    }
    tracing::info!(connector, slot = %config.slot, from = %acknowledged, "Streaming changes.");
    Ok(Streamer::new(
        Arc::clone(config),
        connector.to_owned(),
        wal,
        conn,
        resume,
        boundaries,
        acknowledged,
        resnapshot,
    ))
}

fn slot_gone(config: &CdcConfig, connector: &str) -> ConnectorError {
    ConnectorError::fatal(format!(
        "replication slot `{}` is gone, so the changes made since the position in the log cannot be read; to take a new \
         snapshot, stop the connector and reset its offsets: `plexus offsets reset {connector}`",
        config.slot
    ))
}

/// A replication client error as a connector error: transient failures are retried.
pub(crate) fn client_error(doing: &str, error: ClientError) -> ConnectorError {
    let message = format!("{doing}: {error}");
    if error.is_transient() {
        ConnectorError::retriable(message)
    } else if matches!(
        error,
        ClientError::Auth { .. } | ClientError::TlsUnavailable { .. } | ClientError::Tls { .. }
    ) || error
        .sqlstate()
        .is_some_and(|s| s.starts_with("28") || s == "42501" || s == "3D000")
    {
        ConnectorError::config(message)
    } else {
        ConnectorError::retriable(message)
    }
    .with_source(error)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
