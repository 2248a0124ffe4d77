//! `sequence`: a source plugin that emits numbered records of a configurable shape.
//!
//! Record `n` has the key `"{key_prefix}{n}"` and the value
//! `{"n": n, "even": true|false, "pad": "xxx..."}` (the pad `payload_bytes` long), a
//! header `plexus.plugin = sequence`, and the position `n`: a restarted task resumes
//! right after the last record the log holds. With `count` it stops after that many
//! records; `rate` limits it to so many records a second.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use plexus_plugin_sdk::connector::{
    ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, FieldKind, FieldSpec, Header, Poll, Position,
    Settings, Source, SourceBatch, SourceContext, SourceRecord, async_trait,
};
use plexus_plugin_sdk::{tokio, tracing};

plexus_plugin_sdk::export_plugin! {
    name: "sequence",
    version: env!("CARGO_PKG_VERSION"),
    factories: [SequenceFactory],
}

static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(
            FieldSpec::new("count", FieldKind::integer_between(Some(0), None))
                .doc("Records to emit in all (counting from `start`); without it the sequence never ends."),
        )
        .field(
            FieldSpec::new("start", FieldKind::integer_between(Some(0), None))
                .with_default(0)
                .doc("The number of the first record."),
        )
        .field(
            FieldSpec::new("batch_size", FieldKind::integer_between(Some(1), Some(100_000)))
                .with_default(1000)
                .doc("Records per batch."),
        )
        .field(
            FieldSpec::new("rate", FieldKind::integer_between(Some(0), None))
                .with_default(0)
                .doc("Records a second at most; 0 is as fast as the log takes them."),
        )
        .field(
            FieldSpec::new("payload_bytes", FieldKind::integer_between(Some(0), Some(1 << 20)))
                .with_default(0)
                .doc("Length of the `pad` field of each value."),
        )
        .field(
            FieldSpec::new("key_prefix", FieldKind::String)
                .with_default("seq-")
                .doc("Put before the number in each key."),
        )
        .field(
            FieldSpec::new("table", FieldKind::String)
                .doc("The table the records belong to (fills `{table}` in the connector's topic)."),
        )
});

/// Makes `sequence` sources.
#[derive(Debug, Default)]
pub struct SequenceFactory;

impl ConnectorFactory for SequenceFactory {
    fn type_name(&self) -> &str {
        "sequence"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &SCHEMA
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        let number = |name: &str| settings.integer(name).map(|n| n.max(0) as u64);
        Ok(Box::new(Sequence {
            end: number("count").map(|count| number("start").unwrap_or(0).saturating_add(count)),
            start: number("start").unwrap_or(0),
            batch_size: number("batch_size").unwrap_or(1000).max(1),
            rate: number("rate").unwrap_or(0),
            pad: "x".repeat(number("payload_bytes").unwrap_or(0) as usize),
            key_prefix: settings.string("key_prefix").unwrap_or("seq-").to_owned(),
            table: settings.string("table").map(Into::into),
            next: 0,
            started: Instant::now(),
            emitted: 0,
        }))
    }

    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        serde_json::json!({ "last": position.as_u64() })
    }

    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        value
            .get("last")
            .and_then(serde_json::Value::as_u64)
            .map(Position::from_u64)
            .ok_or_else(|| format!("expected {{\"last\": N}}, found {value}"))
    }
}

struct Sequence {
    start: u64,
    /// One past the last number, for a bounded sequence.
    end: Option<u64>,
    batch_size: u64,
    rate: u64,
    pad: String,
    key_prefix: String,
    table: Option<std::sync::Arc<str>>,
    next: u64,
    started: Instant,
    emitted: u64,
}

#[async_trait]
impl Source for Sequence {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        self.next = match resume {
            None => self.start,
            Some(position) => position
                .as_u64()
                .ok_or_else(|| ConnectorError::fatal(format!("position {position} is not a sequence number")))?
                .saturating_add(1),
        };
        self.started = Instant::now();
        tracing::info!(connector = ctx.name(), next = self.next, end = ?self.end, "Sequence starting.");
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        let last = match self.end {
            Some(end) if self.next >= end => return Ok(Poll::Finished),
            Some(end) => end.min(self.next.saturating_add(self.batch_size)),
            None => self.next.saturating_add(self.batch_size),
        };
        if self.rate > 0 {
            // Hold the pace: `emitted` records should have taken emitted / rate seconds.
            let due = Duration::from_secs_f64(self.emitted as f64 / self.rate as f64);
            let ahead = due.saturating_sub(self.started.elapsed());
            if ahead > Duration::ZERO {
                tokio::time::sleep(ahead.min(Duration::from_secs(1))).await;
                return Ok(Poll::Idle);
            }
        }
        let now = now_ms();
        let records: Vec<SourceRecord> = (self.next..last)
            .map(|n| {
                let value = serde_json::json!({ "n": n, "even": n % 2 == 0, "pad": self.pad });
                SourceRecord {
                    timestamp: now,
                    key: Some(format!("{}{n}", self.key_prefix).into()),
                    value: Some(value.to_string().into()),
                    headers: [Header {
                        key: "plexus.plugin".into(),
                        value: Some("sequence".into()),
                    }]
                    .into_iter()
                    .collect(),
                    topic: self.table.clone(),
                }
            })
            .collect();
        self.emitted += last - self.next;
        self.next = last;
        Ok(Poll::Batch(SourceBatch {
            records,
            position: Position::from_u64(last - 1),
        }))
    }

    async fn commit(&mut self, position: &Position) -> Result<(), ConnectorError> {
        tracing::debug!(last = ?position.as_u64(), "Sequence committed.");
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        tracing::info!(next = self.next, "Sequence stopped.");
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
