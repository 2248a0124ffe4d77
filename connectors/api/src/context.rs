//! What the runtime gives a running connector: its identity, metrics, dead letters.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ConnectorError;
use crate::record::{Position, SinkRecord};

/// A record that could not be processed, with why and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Bytes>,
    /// The raw input (a line of a file, a record's value).
    pub payload: Option<Bytes>,
    /// Why it was rejected: "invalid JSON at column 17: expected `,`".
    pub reason: String,
    /// Where it came from: "orders.jsonl:42", "orders/0@1730".
    pub origin: String,
}

/// Where dead letters go; the runtime provides it according to the connector's
/// `errors.tolerance`: to the dead-letter topic, or an error that fails the task.
pub trait DeadLetters: Send + Sync {
    fn send(&self, connector: &str, letter: DeadLetter) -> Result<(), ConnectorError>;
}

/// Keeps dead letters in memory: for testing connectors.
#[derive(Debug, Default)]
pub struct CollectDeadLetters {
    letters: Mutex<Vec<(String, DeadLetter)>>,
}

impl CollectDeadLetters {
    /// The letters so far, with the connector that sent each, oldest first.
    pub fn take(&self) -> Vec<(String, DeadLetter)> {
        std::mem::take(&mut *self.letters.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl DeadLetters for CollectDeadLetters {
    fn send(&self, connector: &str, letter: DeadLetter) -> Result<(), ConnectorError> {
        self.letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((connector.to_owned(), letter));
        Ok(())
    }
}

/// The internal, compacted topic holding every registered schema version, keyed by
/// schema id. Sources that know the shape of their records (the CDC sources, `datagen`)
/// write each version there once.
pub const SCHEMAS_TOPIC: &str = "__schemas";

/// The record header naming the schema (its id in [`SCHEMAS_TOPIC`]) of a record's value.
pub const SCHEMA_HEADER: &str = "plexus.schema";

/// How long a sink waits for a record's schema that is not readable yet (see
/// [`SinkContext::wait_for_schema`]) before the record goes to the dead letters.
pub const SCHEMA_WAIT: Duration = Duration::from_secs(10);

/// Where a sink looks up the schemas that records name in their [`SCHEMA_HEADER`].
///
/// A schema document is JSON: `{"id": "..", "table": "public.orders", "columns": [{"name":
/// "id", "type": "bigint", "json": "integer", "arrow": "Int64", "key": true}, ...]}`,
/// `arrow` written as `arrow_schema::DataType::from_str` reads it.
#[async_trait]
pub trait Schemas: Send + Sync {
    /// The document registered under `id`, or `None` if there is none (yet).
    async fn get(&self, id: &str) -> Result<Option<Bytes>, ConnectorError>;
}

/// Schemas held in memory: for testing connectors, and the default of a context built
/// without a registry (it knows none).
#[derive(Debug, Default)]
pub struct MemorySchemas {
    documents: Mutex<HashMap<String, Bytes>>,
}

impl MemorySchemas {
    /// Registers `document` under `id`, replacing what was there.
    pub fn insert(&self, id: impl Into<String>, document: impl Into<Bytes>) {
        self.documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), document.into());
    }
}

#[async_trait]
impl Schemas for MemorySchemas {
    async fn get(&self, id: &str) -> Result<Option<Bytes>, ConnectorError> {
        Ok(self
            .documents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned())
    }
}

/// Where a sink reads back a record it was given. A sink that holds many changes in
/// memory keeps where each came from rather than its bytes, and reads a record again
/// only to dead-letter it (the original bytes, as every dead letter carries them).
#[async_trait]
pub trait Records: Send + Sync {
    /// The record at `offset` of `topic`'s `partition`, or `None` when the log no longer
    /// holds it (retention deleted it).
    async fn get(&self, topic: &str, partition: u32, offset: i64) -> Result<Option<SinkRecord>, ConnectorError>;
}

/// Records held in memory: for testing sinks, and the default of a context built
/// without a log (it holds none).
#[derive(Debug, Default)]
pub struct MemoryRecords {
    records: Mutex<HashMap<(String, u32, i64), SinkRecord>>,
}

impl MemoryRecords {
    /// Keeps `record`, found by its topic, partition and offset.
    pub fn insert(&self, record: SinkRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((record.topic.to_string(), record.partition, record.offset), record);
    }
}

#[async_trait]
impl Records for MemoryRecords {
    async fn get(&self, topic: &str, partition: u32, offset: i64) -> Result<Option<SinkRecord>, ConnectorError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic.to_owned(), partition, offset))
            .cloned())
    }
}

/// Counters a task keeps; the runtime exports them as metrics.
///
/// "In" is what the task received (a source: records polled from its system; a sink:
/// records read from the log), "out" what it delivered (a source: records appended to
/// the log, replays not counted; a sink: records flushed to its destination).
#[derive(Debug)]
pub struct TaskMetrics {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Errors that stopped the task (counted by the runtime), plus any the connector
    /// counts itself.
    pub errors: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// How far the source is behind its system, in bytes (a replication slot's WAL
    /// not yet confirmed, a file's unread tail); `-1` when the source cannot tell.
    pub source_lag_bytes: AtomicI64,
    /// How far behind, in milliseconds (commit time of the newest change seen versus
    /// now); `-1` when unknown.
    pub source_lag_ms: AtomicI64,
    /// Rows a snapshot has read so far; `-1` when the source takes no snapshot.
    pub snapshot_rows: AtomicI64,
    /// The rows the snapshot expects to read in all (an estimate); `-1` when unknown.
    pub snapshot_rows_total: AtomicI64,
    /// Records in a sink's topics that it has not read yet (set by the runtime after
    /// each read); `-1` for sources and before the first read.
    pub sink_unread: AtomicI64,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            source_lag_bytes: AtomicI64::new(-1),
            source_lag_ms: AtomicI64::new(-1),
            snapshot_rows: AtomicI64::new(-1),
            snapshot_rows_total: AtomicI64::new(-1),
            sink_unread: AtomicI64::new(-1),
        }
    }
}

impl TaskMetrics {
    /// Counts records received.
    pub fn add_records(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts records delivered.
    pub fn add_records_out(&self, records: u64, bytes: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets how far behind its system a source is (`None`: unknown).
    pub fn set_source_lag(&self, bytes: Option<u64>, millis: Option<u64>) {
        let to_gauge = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        self.source_lag_bytes.store(to_gauge(bytes), Ordering::Relaxed);
        self.source_lag_ms.store(to_gauge(millis), Ordering::Relaxed);
    }
}

/// The context of one task of a connector.
#[derive(Clone)]
struct TaskContext {
    name: Arc<str>,
    task: u32,
    metrics: Arc<TaskMetrics>,
    dead_letters: Arc<dyn DeadLetters>,
    replay_boundaries: Arc<[Position]>,
    schemas: Arc<dyn Schemas>,
    records: Arc<dyn Records>,
    /// A source's batches the runtime is still writing (see [`SourceContext::writing`]).
    writing: Option<tokio::sync::watch::Receiver<usize>>,
}

impl TaskContext {
    fn dead_letter(&self, letter: DeadLetter) -> Result<(), ConnectorError> {
        self.dead_letters.send(&self.name, letter)?;
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("name", &self.name)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

macro_rules! task_context {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(TaskContext);

        impl $name {
            /// Built by the runtime (and by tests, with [`CollectDeadLetters`] or a
            /// failing implementation).
            pub fn new(
                name: impl Into<Arc<str>>,
                task: u32,
                metrics: Arc<TaskMetrics>,
                dead_letters: Arc<dyn DeadLetters>,
            ) -> Self {
                $name(TaskContext {
                    name: name.into(),
                    task,
                    metrics,
                    dead_letters,
                    replay_boundaries: Arc::from([]),
                    schemas: Arc::new(MemorySchemas::default()),
                    records: Arc::new(MemoryRecords::default()),
                    writing: None,
                })
            }

            /// The connector's name.
            pub fn name(&self) -> &str {
                &self.0.name
            }

            /// The task's number within the connector.
            pub fn task(&self) -> u32 {
                self.0.task
            }

            pub fn metrics(&self) -> &TaskMetrics {
                &self.0.metrics
            }

            /// Hands over a record that cannot be processed. Returns an error when the
            /// connector's policy is to fail on bad records: return it from the call
            /// in progress.
            pub fn dead_letter(&self, letter: DeadLetter) -> Result<(), ConnectorError> {
                self.0.dead_letter(letter)
            }
        }
    };
}

task_context!(
    /// What a source task gets from the runtime.
    SourceContext
);

impl SourceContext {
    /// Sets the replay boundaries (see [`SourceContext::replay_boundaries`]).
    pub fn with_replay_boundaries(mut self, mut boundaries: Vec<Position>) -> Self {
        boundaries.sort();
        boundaries.dedup();
        self.0.replay_boundaries = boundaries.into();
        self
    }

    /// Positions after the resume position that parts of the log already hold: the
    /// ends of batches written before a crash to some partitions but not yet to all.
    ///
    /// A source that re-emits that range must not let a batch straddle a boundary:
    /// each batch's records must all be at or before it, or all after it, in the
    /// source's own order (a boundary is refused as a whole by the partitions that
    /// hold it and written whole by the others). Ending a batch exactly at a boundary,
    /// with that very position, is the simple way. Sources whose batches are cut the
    /// same way on every run (a byte offset per fixed-size block, say) can ignore
    /// this. Sorted, without duplicates; empty on a clean start.
    pub fn replay_boundaries(&self) -> &[Position] {
        &self.0.replay_boundaries
    }

    /// Lets [`SourceContext::writing`] follow the count the runtime keeps of the
    /// task's batches it has taken and not yet made durable.
    pub fn with_writing(mut self, writing: tokio::sync::watch::Receiver<usize>) -> Self {
        self.0.writing = Some(writing);
        self
    }

    /// Whether the runtime is still writing an earlier batch of this task.
    ///
    /// A batch handed over now would wait behind it, and every batch costs an
    /// append, a position marker and usually an fsync, whatever its size. A source
    /// that can keep adding records that are already arriving may hold its batch open
    /// until [`SourceContext::written`] resolves (Nagle's algorithm: send at once when
    /// nothing is outstanding, coalesce while something is). Handing over at once
    /// stays correct; it only costs more per record under load.
    pub fn writing(&self) -> bool {
        self.0.writing.as_ref().is_some_and(|count| *count.borrow() > 0)
    }

    /// Resolves once the runtime has no earlier batch of this task left to write
    /// (at once if it has none). Cancel-safe.
    pub async fn written(&self) {
        if let Some(count) = &self.0.writing {
            let mut count = count.clone();
            // An error means the runtime dropped its side: nothing is being written.
            let _ = count.wait_for(|batches| *batches == 0).await;
        }
    }
}
task_context!(
    /// What a sink task gets from the runtime.
    SinkContext
);

impl SinkContext {
    /// Sets where [`SinkContext::schema`] looks schemas up (the runtime reads
    /// [`SCHEMAS_TOPIC`]; tests use [`MemorySchemas`]).
    pub fn with_schemas(mut self, schemas: Arc<dyn Schemas>) -> Self {
        self.0.schemas = schemas;
        self
    }

    /// The schema document registered under `id` (see [`Schemas`]), or `None`.
    pub async fn schema(&self, id: &str) -> Result<Option<Bytes>, ConnectorError> {
        self.0.schemas.get(id).await
    }

    /// Like [`SinkContext::schema`], looking again for up to `wait` while it is missing.
    /// A source registers a schema in the same batch as the first record naming it, but
    /// [`SCHEMAS_TOPIC`] and the record's topic become readable independently: a record
    /// can be read before its schema.
    pub async fn wait_for_schema(&self, id: &str, wait: Duration) -> Result<Option<Bytes>, ConnectorError> {
        let started = Instant::now();
        loop {
            if let Some(document) = self.schema(id).await? {
                return Ok(Some(document));
            }
            if started.elapsed() >= wait {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets where [`SinkContext::record`] reads records back (the runtime reads the
    /// log; tests use [`MemoryRecords`]).
    pub fn with_records(mut self, records: Arc<dyn Records>) -> Self {
        self.0.records = records;
        self
    }

    /// The record at `offset` of `topic`'s `partition` (see [`Records`]), or `None`.
    pub async fn record(&self, topic: &str, partition: u32, offset: i64) -> Result<Option<SinkRecord>, ConnectorError> {
        self.0.records.get(topic, partition, offset).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn context() -> SourceContext {
        SourceContext::new("src", 0, Arc::default(), Arc::new(CollectDeadLetters::default()))
    }

    #[tokio::test]
    async fn without_a_runtime_count_nothing_is_being_written() {
        let ctx = context();
        assert!(!ctx.writing());
        ctx.written().await;
    }

    #[tokio::test]
    async fn written_waits_for_the_runtimes_count_to_reach_zero() {
        let (count, receiver) = tokio::sync::watch::channel(2usize);
        let ctx = context().with_writing(receiver);
        assert!(ctx.writing());

        let waiting = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.written().await }
        });
        count.send_replace(1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one batch is still being written");
        assert!(ctx.writing());
        count.send_replace(0);
        waiting.await.unwrap();
        assert!(!ctx.writing());

        // The runtime's side gone: nothing is being written any more.
        count.send_replace(3);
        drop(count);
        ctx.written().await;
    }
}
