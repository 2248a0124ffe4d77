//! The running `datagen` source: batches of generated events, at a rate or flat out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use plexus_connector::{ConnectorError, Poll, Position, Source, SourceBatch, SourceContext, SourceRecord, async_trait};

use crate::config::DatagenConfig;
use crate::generator::{Generator, Op, Table};
use crate::schema::schema_records;

/// Generates the change events of a synthetic shop; see the crate documentation.
#[derive(Debug)]
pub struct DatagenSource {
    config: DatagenConfig,
    /// Built in `start`, when the connector's name is known.
    generator: Option<Generator>,
    /// The number of the next event.
    next: u64,
    clock: Option<RateClock>,
    /// Where values and keys are written; records share its allocation.
    buf: BytesMut,
    /// The tables' schemas go out with the first batch after a start.
    register_schemas: bool,
    /// Each table's name, shared by its records.
    names: [Arc<str>; 3],
}

impl DatagenSource {
    pub fn new(config: DatagenConfig) -> DatagenSource {
        DatagenSource {
            config,
            generator: None,
            next: 0,
            clock: None,
            buf: BytesMut::new(),
            register_schemas: true,
            names: Table::ALL.map(|t| Arc::from(t.name())),
        }
    }

    /// How many events may go out now, waiting (a little) when the rate says none.
    async fn allowance(&mut self, wanted: u64) -> u64 {
        let rate = self.config.rate;
        if rate == 0 {
            return wanted;
        }
        let clock = self.clock.get_or_insert_with(|| RateClock::new(rate));
        // Wait for a batch worth about 20 ms, so high rates still make real batches.
        let target = wanted.min((rate / 50).max(1));
        let wait = clock.until(target);
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
        }
        let allowed = clock.allowed().min(wanted);
        clock.emitted += allowed;
        allowed
    }
}

#[async_trait]
impl Source for DatagenSource {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        self.next = match resume {
            None => 0,
            Some(position) => {
                let last = position.as_u64().ok_or_else(|| {
                    ConnectorError::fatal(format!(
                        "datagen cannot resume from position {position}: it is not an event number (8 bytes); \
                         the positions of this connector were written by another connector type"
                    ))
                })?;
                last.saturating_add(1)
            }
        };
        self.generator = Some(Generator::new(self.config.seed, &self.config.tables, ctx.name()));
        self.clock = None;
        self.register_schemas = true;
        tracing::info!(connector = %ctx.name(), next = self.next, seed = self.config.seed, "Datagen started.");
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        let remaining = self
            .config
            .count
            .map_or(u64::MAX, |count| count.saturating_sub(self.next));
        if remaining == 0 {
            return Ok(Poll::Finished);
        }
        let wanted = remaining.min(self.config.batch_size as u64);
        let events = self.allowance(wanted).await;
        if events == 0 {
            return Ok(Poll::Idle);
        }
        let generator = self
            .generator
            .as_ref()
            .ok_or_else(|| ConnectorError::fatal("datagen polled before it was started"))?;
        let mut records = Vec::with_capacity(events as usize + events as usize / 16);
        if std::mem::take(&mut self.register_schemas) {
            records.extend(schema_records(
                &self.config.tables,
                generator.event(self.next).ts_ms as i64,
            ));
        }
        // One allocation for the batch's bytes; each record's key and value are slices.
        self.buf.reserve(events as usize * 512);
        for seq in self.next..self.next + events {
            let event = generator.event(seq);
            generator.write_key(&event, &mut self.buf);
            let key = self.buf.split().freeze();
            generator.write_value(&event, &mut self.buf);
            let value = self.buf.split().freeze();
            // The table: the runtime puts it in place of `{table}` in the topic.
            let table = &self.names[event.table as usize];
            let timestamp = event.ts_ms as i64;
            let tombstone = (event.op == Op::Delete && self.config.tombstones).then(|| SourceRecord {
                timestamp,
                key: Some(key.clone()),
                value: None,
                headers: Default::default(),
                topic: Some(Arc::clone(table)),
            });
            records.push(SourceRecord {
                timestamp,
                key: Some(key),
                value: Some(value),
                headers: [event.table.schema_header()].into_iter().collect(),
                topic: Some(Arc::clone(table)),
            });
            records.extend(tombstone);
        }
        let last = self.next + events - 1;
        self.next += events;
        Ok(Poll::Batch(SourceBatch {
            records,
            position: Position::from_u64(last),
        }))
    }
}

/// Keeps the average rate: after `t` seconds at most `rate * t` events have gone out.
#[derive(Debug)]
struct RateClock {
    rate: u64,
    started: Instant,
    emitted: u64,
}

impl RateClock {
    fn new(rate: u64) -> RateClock {
        RateClock {
            rate,
            started: Instant::now(),
            emitted: 0,
        }
    }

    /// Events due now and not yet emitted. A backlog longer than a second (the pipeline
    /// stalled) is forgiven rather than sent as a burst.
    fn allowed(&mut self) -> u64 {
        let elapsed = self.started.elapsed().as_nanos();
        let due = (elapsed * u128::from(self.rate) / 1_000_000_000) as u64;
        let backlog = due.saturating_sub(self.emitted);
        if backlog > self.rate {
            self.emitted = due - self.rate;
            return self.rate;
        }
        backlog
    }

    /// How long until `events` more are due.
    fn until(&mut self, events: u64) -> Duration {
        if self.allowed() >= events {
            return Duration::ZERO;
        }
        let due_at = u128::from(self.emitted + events) * 1_000_000_000 / u128::from(self.rate);
        let due_at = Duration::from_nanos(u64::try_from(due_at).unwrap_or(u64::MAX));
        due_at.saturating_sub(self.started.elapsed())
    }
}
