//! Re-snapshots of tables while the stream goes on, with the watermarks of Netflix's
//! DBLog: the stream never pauses and never goes back in time.
//!
//! A signal asks for it, written into the WAL so that it travels with the stream:
//!
//! ```sql
//! SELECT pg_logical_emit_message(true, 'plexus.signal',
//!     '{"connector": "orders-cdc", "snapshot": ["public.orders"]}');
//! ```
//!
//! The table is then read in key order, a chunk at a time, on a connection of its own:
//!
//! 1. a *low* watermark is committed (a logical message);
//! 2. the next `resnapshot_chunk_rows` rows after the last key read are selected;
//! 3. a *high* watermark is committed.
//!
//! The stream meanwhile delivers every change in commit order. Changes between the two
//! watermarks may or may not be visible to the select, so the rows whose key they touch
//! are dropped from the chunk: the stream carries their newer state. At the high
//! watermark the rest of the chunk is emitted (`op` r, `source.snapshot` "incremental"),
//! before any later change of those rows. Positions carry how far the re-snapshot got,
//! so a restart continues after the last row the log holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use plexus_connector::ConnectorError;
use serde::Deserialize;
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;

use crate::source::catalog::{self, sql_error};
use crate::source::config::{CdcConfig, TableName};
use crate::source::position::ResnapshotState;
use crate::source::snapshot::chunk_sql;
use crate::source::table::TableInfo;

/// The prefix of the logical messages that ask for something.
pub const SIGNAL_PREFIX: &str = "plexus.signal";
/// The prefix of the watermarks around each chunk.
pub const WATERMARK_PREFIX: &str = "plexus.watermark";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signal {
    /// The connector it is meant for; every one capturing the tables when absent.
    connector: Option<String>,
    /// Tables to re-snapshot, as in `tables`.
    snapshot: Vec<String>,
}

/// The tables a signal asks this connector to re-snapshot. Tables it does not capture
/// are an error only when the signal names this connector.
pub fn parse_signal(content: &[u8], connector: &str, config: &CdcConfig) -> Result<Vec<TableName>, String> {
    let signal: Signal = serde_json::from_slice(content).map_err(|e| {
        format!(
            "expected {{\"connector\": \"name\", \"snapshot\": [\"schema.table\", ...]}}, found `{}`: {e}",
            String::from_utf8_lossy(content)
        )
    })?;
    if signal.connector.as_deref().is_some_and(|c| c != connector) {
        return Ok(Vec::new());
    }
    let mut tables = Vec::new();
    for text in &signal.snapshot {
        let table = TableName::parse(text)?;
        if config.tables.contains(&table) {
            tables.push(table);
        } else if signal.connector.is_some() {
            return Err(format!(
                "table {table} is not captured by this connector (its `tables` are {})",
                config
                    .tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(tables)
}

/// A re-snapshot under way, as far as reading goes (ahead of what the log holds).
pub struct Resnapshot {
    pub state: ResnapshotState,
    reader: Option<ChunkReader>,
    /// Distinguishes this process's watermarks from those of an earlier one, which the
    /// stream replays after a restart.
    nonce: u64,
    next_id: u64,
    pub window: Option<Window>,
    /// The window's chunk, once read.
    rows: Option<Bytes>,
    /// Rows emitted for the table being read, and since when, for progress.
    pub table_rows: u64,
    pub table_started: Instant,
}

/// One chunk between its watermarks.
pub struct Window {
    pub id: u64,
    pub table: Arc<TableInfo>,
    /// The low watermark has come: changes of the table now hide chunk rows.
    pub open: bool,
    /// Keys of the table's changes since the low watermark.
    pub seen: HashSet<Bytes>,
    pub truncated: bool,
}

impl Window {
    /// A committed change of `table` with `key` (`None`: every row, as a truncate).
    pub fn observe(&mut self, table: &str, key: Option<&Bytes>) {
        if !self.open || table != &*self.table.qualified {
            return;
        }
        match key {
            Some(key) => {
                self.seen.insert(key.clone());
            }
            None => self.truncated = true,
        }
    }
}

/// What a watermark message says.
pub enum Watermark {
    Low(u64),
    High(u64),
}

impl Resnapshot {
    pub fn new(state: ResnapshotState) -> Resnapshot {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 40);
        Resnapshot {
            state,
            reader: None,
            nonce,
            next_id: 0,
            window: None,
            rows: None,
            table_rows: 0,
            table_started: Instant::now(),
        }
    }

    /// The watermark `content` if it is one of ours.
    pub fn watermark(&self, content: &[u8]) -> Option<Watermark> {
        let text = std::str::from_utf8(content).ok()?;
        let mut parts = text.split(':');
        let nonce: u64 = parts.next()?.parse().ok()?;
        let id: u64 = parts.next()?.parse().ok()?;
        if nonce != self.nonce {
            return None;
        }
        match parts.next()? {
            "low" => Some(Watermark::Low(id)),
            "high" => Some(Watermark::High(id)),
            _ => None,
        }
    }

    /// Asks for the next chunk of `table` after the state's last key.
    pub async fn request(
        &mut self,
        config: &CdcConfig,
        table: Arc<TableInfo>,
        limit: u64,
    ) -> Result<(), ConnectorError> {
        if self.reader.is_none() {
            let conn = catalog::connect(&config.connect).await?;
            self.reader = Some(ChunkReader::start(conn));
        }
        let Some(reader) = &self.reader else {
            return Ok(());
        };
        self.next_id += 1;
        let id = self.next_id;
        let request = ChunkRequest {
            low: format!("{}:{id}:low", self.nonce),
            high: format!("{}:{id}:high", self.nonce),
            sql: chunk_sql(&table, &self.state.last_key, limit),
        };
        reader
            .requests
            .send(request)
            .await
            .map_err(|_| ConnectorError::retriable("the re-snapshot reader stopped"))?;
        self.window = Some(Window {
            id,
            table,
            open: false,
            seen: HashSet::new(),
            truncated: false,
        });
        Ok(())
    }

    /// Takes what the reader reported: a failure is the source's error.
    pub fn poll_reader(&mut self) -> Result<(), ConnectorError> {
        let Some(reader) = &mut self.reader else {
            return Ok(());
        };
        while let Ok(event) = reader.events.try_recv() {
            match event {
                ChunkEvent::Rows(rows) => self.rows = Some(rows),
                ChunkEvent::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The window's chunk, which the reader sent before writing the high watermark.
    pub fn take_rows(&mut self) -> Result<Bytes, ConnectorError> {
        self.poll_reader()?;
        self.rows
            .take()
            .ok_or_else(|| ConnectorError::retriable("a re-snapshot's high watermark came before its rows"))
    }
}

struct ChunkRequest {
    low: String,
    high: String,
    sql: String,
}

enum ChunkEvent {
    Rows(Bytes),
    Failed(ConnectorError),
}

/// A task reading chunks on its own connection, so the stream goes on meanwhile.
struct ChunkReader {
    requests: mpsc::Sender<ChunkRequest>,
    events: mpsc::Receiver<ChunkEvent>,
}

impl ChunkReader {
    fn start(conn: PgConnection) -> ChunkReader {
        let (requests, requests_rx) = mpsc::channel(1);
        let (events_tx, events) = mpsc::channel(2);
        tokio::spawn(read_chunks(conn, requests_rx, events_tx));
        ChunkReader { requests, events }
    }
}

/// Ends when the re-snapshot is dropped (its request channel closes) or on an error.
async fn read_chunks(
    mut conn: PgConnection,
    mut requests: mpsc::Receiver<ChunkRequest>,
    events: mpsc::Sender<ChunkEvent>,
) {
    while let Some(request) = requests.recv().await {
        let rows = async {
            emit(&mut conn, &request.low).await?;
            copy_all(&mut conn, &request.sql).await
        }
        .await;
        let failed = match rows {
            Ok(rows) => {
                if events.send(ChunkEvent::Rows(rows)).await.is_err() {
                    break;
                }
                emit(&mut conn, &request.high).await.err()
            }
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            let _ = events.send(ChunkEvent::Failed(e)).await;
            return;
        }
    }
    let _ = sqlx::Connection::close(conn).await;
}

/// A committed watermark: its own transaction, so it comes in commit order.
async fn emit(conn: &mut PgConnection, content: &str) -> Result<(), ConnectorError> {
    sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
        .bind(WATERMARK_PREFIX)
        .bind(content)
        .execute(&mut *conn)
        .await
        .map(drop)
        .map_err(|e| sql_error("writing a re-snapshot watermark", e))
}

async fn copy_all(conn: &mut PgConnection, sql: &str) -> Result<Bytes, ConnectorError> {
    let mut stream = conn
        .copy_out_raw(sql)
        .await
        .map_err(|e| sql_error("starting a re-snapshot read", e))?;
    let mut rows = BytesMut::new();
    while let Some(data) = stream.next().await {
        rows.extend_from_slice(&data.map_err(|e| sql_error("reading a re-snapshot chunk", e))?);
    }
    Ok(rows.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CdcConfig {
        use plexus_config::{Settings, Value};
        let mut settings = Settings::new();
        settings.insert("user", Value::String("u".into()));
        settings.insert("database", Value::String("d".into()));
        settings.insert("tables", Value::StringList(vec!["orders".into(), "shop.items".into()]));
        CdcConfig::from_settings("cdc", &settings).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn signals_name_captured_tables_for_this_connector_or_all() {
        let config = config();
        let tables = |json: &str| parse_signal(json.as_bytes(), "cdc", &config);
        assert_eq!(
            tables(r#"{"snapshot": ["orders", "other"]}"#),
            Ok(vec![
                TableName::parse("public.orders").unwrap_or_else(|e| panic!("{e}"))
            ])
        );
        assert_eq!(
            tables(r#"{"connector": "else", "snapshot": ["orders"]}"#),
            Ok(Vec::new())
        );
        let wrong = tables(r#"{"connector": "cdc", "snapshot": ["other"]}"#).unwrap_err();
        assert!(wrong.contains("public.other is not captured"), "{wrong}");
        let bad = tables(r#"{"snapshots": ["orders"]}"#).unwrap_err();
        assert!(bad.contains("expected {\"connector\""), "{bad}");
    }

    #[test]
    fn only_this_process_watermarks_count() {
        let resnapshot = Resnapshot::new(ResnapshotState {
            tables: vec!["public.orders".into()],
            last_key: Vec::new(),
        });
        let nonce = resnapshot.nonce;
        assert!(matches!(
            resnapshot.watermark(format!("{nonce}:3:low").as_bytes()),
            Some(Watermark::Low(3))
        ));
        assert!(matches!(
            resnapshot.watermark(format!("{nonce}:4:high").as_bytes()),
            Some(Watermark::High(4))
        ));
        assert!(
            resnapshot
                .watermark(format!("{}:3:low", nonce ^ 1).as_bytes())
                .is_none()
        );
        assert!(resnapshot.watermark(b"garbage").is_none());
    }
}
