//! What the `sql` sink's tests share: the three targets (a PostgreSQL 15 cluster, a
//! MariaDB server, a SQLite file), read back with their own command-line clients, and
//! a harness that drives the sink as the runtime does (start, write, flush).

#![allow(dead_code)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use plexus_config::{Secret, Settings, Value as SettingValue};
use plexus_connector::{
    CollectDeadLetters, ConnectorError, ConnectorFactory, Header, MemoryRecords, MemorySchemas, SCHEMA_HEADER, Sink,
    SinkContext, SinkOffsets, SinkRecord, TaskMetrics, TopicPartition,
};
use plexus_connector_sql::SqlSinkFactory;
use plexus_tests::{TempMariaDb, TempPostgres};
use serde_json::{Value, json};

/// A target database for a test.
pub enum TestDb {
    Postgres(TempPostgres),
    MariaDb(TempMariaDb),
    Sqlite(tempfile::TempDir),
}

impl TestDb {
    pub fn postgres() -> TestDb {
        let pg = TempPostgres::start().unwrap();
        pg.psql("postgres", "CREATE DATABASE warehouse").unwrap();
        TestDb::Postgres(pg)
    }

    pub fn mariadb() -> TestDb {
        TestDb::MariaDb(TempMariaDb::start().unwrap())
    }

    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Postgres(pg) => pg.url("warehouse"),
            TestDb::MariaDb(db) => db.url(),
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("warehouse.db").display()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Postgres(_) => "postgres",
            TestDb::MariaDb(_) => "mariadb",
            TestDb::Sqlite(_) => "sqlite",
        }
    }

    /// Picks the value for this database.
    pub fn pick<'a>(&self, postgres: &'a str, mariadb: &'a str, sqlite: &'a str) -> &'a str {
        match self {
            TestDb::Postgres(_) => postgres,
            TestDb::MariaDb(_) => mariadb,
            TestDb::Sqlite(_) => sqlite,
        }
    }

    /// Runs a query with the database's own client; rows as lines, columns separated
    /// by `|`, NULL as the empty string.
    pub fn query(&self, sql: &str) -> String {
        match self {
            TestDb::Postgres(pg) => pg.psql("warehouse", sql).unwrap(),
            TestDb::MariaDb(db) => db
                .sql(sql)
                .unwrap()
                .lines()
                .map(|line| {
                    line.split('\t')
                        .map(|v| if v == "NULL" { "" } else { v })
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect::<Vec<_>>()
                .join("\n"),
            TestDb::Sqlite(dir) => {
                let out = Command::new("sqlite3")
                    .arg("-batch")
                    // A connection the test just dropped may still be checkpointing.
                    .args(["-cmd", ".timeout 10000"])
                    .arg(dir.path().join("warehouse.db"))
                    .arg(sql)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "sqlite3: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
            }
        }
    }

    /// Ends the server-side sessions of the sink (as a server restart would); `false`
    /// for SQLite, which has none.
    pub fn kill_sink_sessions(&self) -> bool {
        match self {
            TestDb::Postgres(pg) => {
                pg.psql(
                    "postgres",
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'plexus-sql-sink'",
                )
                .unwrap();
                true
            }
            TestDb::MariaDb(db) => {
                let ids = db
                    .root_sql(
                        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'plexus' AND ID <> CONNECTION_ID()",
                    )
                    .unwrap();
                for id in ids.lines().filter(|l| !l.trim().is_empty()) {
                    let _ = db.root_sql(&format!("KILL {id}"));
                }
                true
            }
            TestDb::Sqlite(_) => false,
        }
    }

    /// A table name quoted for this database.
    pub fn q(&self, name: &str) -> String {
        match self {
            TestDb::MariaDb(_) => format!("`{name}`"),
            _ => format!("\"{name}\""),
        }
    }
}

/// A schema document as the CDC sources register it; `columns` are `(name, SQL type)`,
/// the first is the key.
pub fn schema_doc(id: &str, columns: &[(&str, &str)]) -> String {
    let columns: Vec<Value> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| json!({"name": name, "type": ty, "key": i == 0}))
        .collect();
    json!({"id": id, "table": "public.t", "columns": columns}).to_string()
}

/// A change envelope.
pub fn change(op: &str, before: Value, after: Value) -> Value {
    json!({"before": before, "after": after, "source": {"connector": "postgres", "lsn": 100, "seq": 1}, "op": op, "ts_ms": 1_767_225_600_000i64})
}

/// Drives a sink as the runtime does.
pub struct Harness {
    pub sink: Box<dyn Sink>,
    pub ctx: SinkContext,
    pub dead: Arc<CollectDeadLetters>,
    pub schemas: Arc<MemorySchemas>,
    /// Every record pushed, as the log would hold it (dead letters read them back).
    pub records: Arc<MemoryRecords>,
    pub metrics: Arc<TaskMetrics>,
    /// The next offset per topic (one partition, 0).
    pub next: HashMap<String, i64>,
    pending: Vec<SinkRecord>,
}

impl Harness {
    /// A sink named `name` for `db` with extra settings.
    pub fn new(db: &TestDb, name: &str, extra: &[(&str, SettingValue)]) -> Harness {
        let mut settings = Settings::new();
        settings.insert("url", db.url());
        for (k, v) in extra {
            settings.insert(*k, v.clone());
        }
        Harness::with_settings(name, &settings).unwrap()
    }

    pub fn with_settings(name: &str, settings: &Settings) -> Result<Harness, ConnectorError> {
        let sink = SqlSinkFactory.create_sink(settings)?;
        let dead = Arc::new(CollectDeadLetters::default());
        let schemas = Arc::new(MemorySchemas::default());
        let records = Arc::new(MemoryRecords::default());
        let metrics = Arc::new(TaskMetrics::default());
        let ctx = SinkContext::new(name, 0, Arc::clone(&metrics), dead.clone())
            .with_schemas(schemas.clone())
            .with_records(records.clone());
        Ok(Harness {
            sink,
            ctx,
            dead,
            schemas,
            records,
            metrics,
            next: HashMap::new(),
            pending: Vec::new(),
        })
    }

    /// Starts the sink; the next offsets come from what it returns.
    pub async fn start(&mut self) -> Result<SinkOffsets, ConnectorError> {
        let stored = self.sink.start(&self.ctx).await?.unwrap_or_default();
        for (tp, next) in &stored {
            self.next.insert(tp.topic.clone(), *next);
        }
        Ok(stored)
    }

    pub fn register(&self, id: &str, document: &str) {
        self.schemas.insert(id.to_owned(), Bytes::from(document.to_owned()));
    }

    /// Queues a record for `topic` at its next offset.
    pub fn push(&mut self, topic: &str, key: Value, value: Option<Value>, schema: Option<&str>) {
        let next = self.next.entry(topic.to_owned()).or_insert(0);
        let record = SinkRecord {
            topic: Arc::from(topic),
            partition: 0,
            offset: *next,
            timestamp: 1_767_225_600_000,
            key: Some(Bytes::from(key.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            headers: schema
                .map(|id| Header {
                    key: SCHEMA_HEADER.into(),
                    value: Some(Bytes::from(id.to_owned())),
                })
                .into_iter()
                .collect(),
        };
        *next += 1;
        self.records.insert(record.clone());
        self.pending.push(record);
    }

    /// Tells the sink, as the runtime does after each read, whether records are left
    /// unread: with a backlog, flushes commit in the background.
    pub fn set_behind(&self, behind: bool) {
        self.metrics
            .sink_unread
            .store(if behind { 1_000 } else { 0 }, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes the queued records (in one `write`).
    pub async fn write(&mut self) -> Result<(), ConnectorError> {
        let records = std::mem::take(&mut self.pending);
        self.sink.write(&self.ctx, records).await
    }

    /// The offsets after everything queued so far.
    pub fn offsets(&self) -> SinkOffsets {
        self.next
            .iter()
            .map(|(topic, next)| {
                (
                    TopicPartition {
                        topic: topic.clone(),
                        partition: 0,
                    },
                    *next,
                )
            })
            .collect()
    }

    /// Writes the queued records and flushes.
    pub async fn commit(&mut self) -> Result<(), ConnectorError> {
        self.write().await?;
        let offsets = self.offsets();
        self.sink.flush(&self.ctx, &offsets).await
    }

    /// The dead letters so far, as (origin, reason).
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        self.dead
            .take()
            .into_iter()
            .map(|(_, l)| (l.origin, l.reason))
            .collect()
    }
}

pub fn secret(value: &str) -> SettingValue {
    SettingValue::Secret(Secret::new(value))
}

pub fn list(items: &[&str]) -> SettingValue {
    SettingValue::StringList(items.iter().map(|s| (*s).to_owned()).collect())
}

/// Runs an async test body on a runtime of its own.
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}
