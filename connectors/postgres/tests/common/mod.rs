//! The harness the `postgres-cdc` source's tests share: settings for a [`TempPostgres`],
//! a source context, and a [`Collector`] that polls a source and commits every batch as
//! the runtime does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_config::{Secret, Settings, Value};
use plexus_connector::{CollectDeadLetters, ConnectorError, Poll, Position, Source, SourceContext, SourceRecord};
use plexus_connector_postgres::SCHEMAS_TOPIC;
use plexus_tests::TempPostgres;
use plexus_tests::postgres::{PASSWORD, USER};
use serde_json::Value as Json;

/// The connector's name: the slot is `plexus_pgtest`, the connections' `application_name`
/// `plexus pgtest`.
pub const CONNECTOR: &str = "pgtest";

/// Settings reading `tables` of the `postgres` database over loopback, without TLS;
/// tests add or replace what they need with `insert`.
pub fn settings(pg: &TempPostgres, tables: &[&str]) -> Settings {
    let tables = tables.iter().map(|t| (*t).to_owned()).collect();
    let mut settings = Settings::new();
    for (name, value) in [
        ("host", Value::String("127.0.0.1".into())),
        ("port", Value::Integer(i64::from(pg.port()))),
        ("user", Value::String(USER.into())),
        ("password", Value::Secret(Secret::new(PASSWORD))),
        ("database", Value::String("postgres".into())),
        ("sslmode", Value::String("disable".into())),
        ("tables", Value::StringList(tables)),
    ] {
        settings.insert(name, value);
    }
    settings
}

/// Task 0 of [`CONNECTOR`], its dead letters kept in memory.
pub fn context() -> SourceContext {
    SourceContext::new(CONNECTOR, 0, Arc::default(), Arc::new(CollectDeadLetters::default()))
}

/// What a test keeps of the records a source hands out, checking them as they come if
/// it will.
pub trait Log {
    /// Takes one batch's records.
    fn append(&mut self, records: Vec<SourceRecord>);

    /// How far the log got, for a test that timed out.
    fn progress(&self) -> String;
}

/// Every record, as the runtime's log would hold them.
impl Log for Vec<SourceRecord> {
    fn append(&mut self, records: Vec<SourceRecord>) {
        self.extend(records);
    }

    fn progress(&self) -> String {
        format!("{} records: {:?}", self.len(), changes(self))
    }
}

/// Reads a source as the runtime does: each batch after the previous one, appended to
/// `log`, then committed.
#[derive(Debug)]
pub struct Collector<L> {
    pub log: L,
    /// The last batch's position, committed.
    pub last: Option<Position>,
    /// Whether the source may finish (a bulk export), and whether it did.
    pub bounded: bool,
    pub finished: bool,
}

impl<L: Log> Collector<L> {
    pub fn new(log: L) -> Collector<L> {
        Collector {
            log,
            last: None,
            bounded: false,
            finished: false,
        }
    }

    /// Polls until `done` (30 s at most); an error fails the test.
    pub async fn poll_until(&mut self, source: &mut dyn Source, ctx: &SourceContext, done: impl Fn(&Self) -> bool) {
        self.poll_within(source, ctx, Duration::from_secs(30), done)
            .await
            .unwrap();
    }

    /// Polls until `done`, within `limit`; a poll's or a commit's error is returned.
    pub async fn poll_within(
        &mut self,
        source: &mut dyn Source,
        ctx: &SourceContext,
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} with {}",
                self.log.progress()
            );
            if !self.poll_once(source, ctx).await? {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// One poll, its batch (if any) appended and committed; false when the source was
    /// idle.
    pub async fn poll_once(&mut self, source: &mut dyn Source, ctx: &SourceContext) -> Result<bool, ConnectorError> {
        match source.poll(ctx).await? {
            Poll::Batch(batch) => {
                assert!(
                    self.last.as_ref().is_none_or(|last| batch.position > *last),
                    "positions must increase"
                );
                self.log.append(batch.records);
                source.commit(&batch.position).await?;
                self.last = Some(batch.position);
                Ok(true)
            }
            Poll::Idle => Ok(false),
            Poll::Finished => {
                assert!(self.bounded, "a CDC source never finishes");
                self.finished = true;
                Ok(false)
            }
        }
    }
}

/// Whether a record is a table's change rather than a schema registration.
pub fn is_change(record: &SourceRecord) -> bool {
    record.topic.as_deref() != Some(SCHEMAS_TOPIC)
}

/// Keys and values of the tables' records (schema registrations left out).
pub fn changes(records: &[SourceRecord]) -> Vec<(Option<String>, Option<Json>)> {
    records
        .iter()
        .filter(|r| is_change(r))
        .map(|r| {
            (
                r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                r.value.as_ref().map(|v| serde_json::from_slice(v).unwrap()),
            )
        })
        .collect()
}

/// How many of the changes are of `op` (`r`, `c`, `u`, `d`, `t`).
pub fn count_ops(records: &[SourceRecord], op: &str) -> usize {
    changes(records)
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| v["op"] == op))
        .count()
}
