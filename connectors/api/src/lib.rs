//! `plexus-connector`: the one contract that built-in connectors and plugins implement.
//!
//! A **source** reads an outside system and hands the runtime batches of records, each
//! batch with the source [`Position`] reached after it. The runtime writes the batch and
//! the position to the log in one append, so a restarted source resumes exactly after
//! the last batch the log holds ([`Source::start`] receives that position) and nothing
//! it re-emits is written twice. Only once the batch is durable does the runtime call
//! [`Source::commit`], where the source may acknowledge its system (a Postgres slot's
//! flushed LSN, say).
//!
//! A **sink** receives records from the log and writes them to an outside system. If
//! it stores the log offsets it applied inside that system, atomically with the data,
//! it returns them from [`Sink::start`] and the runtime resumes from there (exactly
//! once); otherwise the runtime resumes from the offsets it committed after the last
//! successful [`Sink::flush`] (at least once).
//!
//! A connector type is registered with a [`ConnectorFactory`]: a name, a kind, a
//! [`ConfigSchema`] that `plexus validate` checks configurations against, and
//! constructors that receive the validated [`Settings`].
//!
//! ```
//! use plexus_connector::{async_trait, ConnectorError, Poll, Position, Source, SourceBatch, SourceContext, SourceRecord};
//!
//! /// Counts from where it left off, one record per poll.
//! struct Counter { next: u64 }
//!
//! #[async_trait]
//! impl Source for Counter {
//!     async fn start(&mut self, _ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
//!         // Resume after the last position the log holds.
//!         self.next = resume.and_then(|p| p.as_u64()).map_or(0, |n| n + 1);
//!         Ok(())
//!     }
//!
//!     async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
//!         let record = SourceRecord::new(0, None, Some(self.next.to_string().into()));
//!         let batch = SourceBatch { records: vec![record], position: Position::from_u64(self.next) };
//!         self.next += 1;
//!         Ok(Poll::Batch(batch))
//!     }
//! }
//! ```

mod context;
mod error;
pub mod json;
mod record;

pub use async_trait::async_trait;
pub use context::{
    CollectDeadLetters, DeadLetter, DeadLetters, MemoryRecords, MemorySchemas, Records, SCHEMA_HEADER, SCHEMA_WAIT,
    SCHEMAS_TOPIC, Schemas, SinkContext, SourceContext, TaskMetrics,
};
pub use error::{ConnectorError, ErrorKind};
pub use plexus_config::{ConfigSchema, ConnectorKind, FieldKind, FieldSpec, Settings};
pub use record::{Header, Headers, Position, SinkOffsets, SinkRecord, SourceBatch, SourceRecord, TopicPartition};

/// What a source's poll produced.
#[derive(Debug)]
pub enum Poll {
    /// Records to append, with the position after them.
    Batch(SourceBatch),
    /// Nothing new right now; the runtime polls again after a short pause (100 ms,
    /// counting from the call: a poll that itself waited that long for data is
    /// repeated at once).
    Idle,
    /// A bounded source has emitted everything; the task ends successfully.
    Finished,
}

/// Reads an outside system. One instance runs per task; calls never overlap.
#[async_trait]
pub trait Source: Send {
    /// Prepares to read. `resume` is the position of the last batch the log holds for
    /// this connector (`None` the first time): continue right after it.
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError>;

    /// Returns the next batch. Should return within about a second (with
    /// [`Poll::Idle`] when there is nothing), so shutdown and pauses stay prompt.
    async fn poll(&mut self, ctx: &SourceContext) -> Result<Poll, ConnectorError>;

    /// Everything up to `position` is durable in the log: the source may now release
    /// it in its system.
    async fn commit(&mut self, _position: &Position) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Stops reading and releases resources. Called after the last commit.
    async fn stop(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// Writes to an outside system. One instance runs per task; calls never overlap.
#[async_trait]
pub trait Sink: Send {
    /// Prepares to write. A sink that stores the offsets it applied in its destination
    /// returns them here (the next offset to read per partition) and the runtime
    /// resumes from them; `None` resumes from the runtime's committed offsets.
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError>;

    /// Takes records in log order. A record that cannot be written goes to
    /// [`SinkContext::dead_letter`]; the others are still written.
    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError>;

    /// Makes everything written so far durable in the destination. `offsets` are the
    /// next offsets to read after those records; a sink that stores offsets in its
    /// destination writes them atomically with the data here. After `Ok`, the runtime
    /// commits them.
    async fn flush(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError>;

    /// For a sink that holds records past a flush (files that rotate by size or time,
    /// completed as a whole): the next offsets whose records are durable in the
    /// destination now. The runtime commits these after a flush instead of all it
    /// has written, and asks again after [`Sink::stop`]. `None` (the default): a
    /// successful flush made everything durable.
    fn durable_offsets(&self) -> Option<SinkOffsets> {
        None
    }

    /// Stops and releases resources. Called after the last flush. A sink that holds
    /// records past a flush finishes them here (a stop is graceful), so that
    /// [`Sink::durable_offsets`] then covers everything it was given.
    async fn stop(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A connector type: how `type = "..."` in a configuration becomes a running connector.
pub trait ConnectorFactory: Send + Sync {
    /// The name used as `type` in configuration files.
    fn type_name(&self) -> &str;

    fn kind(&self) -> ConnectorKind;

    /// The settings this type accepts; configurations are validated against it before
    /// anything starts.
    fn schema(&self) -> &ConfigSchema;

    /// One task's source. Only called for [`ConnectorKind::Source`] types.
    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        let _ = settings;
        Err(ConnectorError::config(format!(
            "`{}` is not a source",
            self.type_name()
        )))
    }

    /// One task's sink. Only called for [`ConnectorKind::Sink`] types.
    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        let _ = settings;
        Err(ConnectorError::config(format!("`{}` is not a sink", self.type_name())))
    }

    /// A source position as people read it (the REST API's offsets): the default is
    /// its bytes in hex; a source type shows its own fields (`{"lsn": "0/16B3748"}`).
    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        serde_json::json!({ "hex": hex(position.as_bytes()) })
    }

    /// The inverse of [`ConnectorFactory::position_to_json`], for an operator who moves
    /// a source; the error says what is wrong with the value.
    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        let text = value
            .get("hex")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("expected {{\"hex\": \"...\"}}, found {value}"))?;
        unhex(text).map(Position::from_bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("`{text}` is not hex: odd length"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("`{text}` is not hex"))
        })
        .collect()
}
