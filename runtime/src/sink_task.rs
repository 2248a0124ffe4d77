//! One sink task: read the connector's topics from the log, write to the sink, flush
//! and commit offsets.
//!
//! Offsets are committed to the consumer group named after the connector, only after
//! the sink's `flush` succeeded. A sink that keeps offsets in its destination returns
//! them from `start` and the task resumes from those instead (exactly once).
//!
//! Each partition's next records are read (and decompressed) by a task of their own
//! while the sink writes the previous ones, so reading the log and writing the
//! destination use two cores instead of taking turns on one. Each read takes half of
//! the task's share of the memory budget, so the records in hand and the ones read
//! ahead stay within the share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_connector::{ConnectorError, Sink, SinkContext, SinkOffsets, SinkRecord, TopicPartition};
use plexus_log::{LogError, Partition};

use crate::records::{LogRecords, sink_record};
use crate::schemas::LogSchemas;
use crate::task::{TaskEnd, TaskEnv, log_error};

/// How often written records are flushed and their offsets committed.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Flush sooner when this many records wait.
const FLUSH_RECORDS: u64 = 100_000;

struct Assigned {
    topic: Arc<str>,
    partition: Arc<Partition>,
    /// The offset after the records given to the sink.
    next: i64,
    /// Where the task started reading.
    first: i64,
    /// The read of the records from `next` on, under way.
    ahead: Option<ReadAhead>,
}

/// A partition's next read, running beside the sink's write; dropped with its records
/// if the task ends first.
struct ReadAhead(tokio::task::JoinHandle<Result<Fetched, ConnectorError>>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records read from one partition, and the offset to read from next.
struct Fetched {
    records: Vec<SinkRecord>,
    next: i64,
}

pub(crate) async fn run(env: &mut TaskEnv, sink: &mut dyn Sink) -> Result<TaskEnd, ConnectorError> {
    let ctx = SinkContext::new(env.connector.name.clone(), 0, Arc::clone(&env.metrics), env.dlq.clone())
        .with_schemas(Arc::new(LogSchemas::new(env.log.clone())))
        .with_records(Arc::new(LogRecords::new(env.log.clone())));
    let group = env.connector.name.clone();
    let stored = sink.start(&ctx).await?;
    let mut assigned = Vec::new();
    for topic_name in &env.connector.topics {
        env.log.partition(topic_name, 0).await.map_err(|e| match e {
            LogError::UnknownTopic(_) => ConnectorError::retriable(format!(
                "topic `{topic_name}` does not exist yet (the worker does not create topics)"
            )),
            other => log_error(other),
        })?;
        let topic = env
            .log
            .topic(topic_name)
            .ok_or_else(|| ConnectorError::retriable(format!("topic `{topic_name}` vanished")))?;
        for partition in topic.partitions() {
            let tp = TopicPartition {
                topic: topic_name.clone(),
                partition: partition.id(),
            };
            let from_sink = stored.as_ref().and_then(|offsets| offsets.get(&tp).copied());
            let committed = env
                .log
                .groups()
                .committed(&group, topic_name, partition.id())
                .map(|c| c.offset);
            let next = from_sink.or(committed).unwrap_or_else(|| partition.start_offset());
            assigned.push(Assigned {
                topic: Arc::from(topic_name.as_str()),
                partition: Arc::clone(partition),
                next,
                first: next,
                ahead: None,
            });
        }
    }
    tracing::info!(connector = %env.connector.name, partitions = assigned.len(), "Sink starting.");

    let mut pending = Pending::new(&env.metrics);
    let mut last_flush = Instant::now();
    // Records were left unread after a read since the task last caught up.
    let mut behind = false;
    // The offsets last committed to the group, not committed again unchanged.
    let mut committed = SinkOffsets::new();
    let end = loop {
        if env.stopping() {
            break TaskEnd::Stopped;
        }
        if env.paused() {
            if pending.records > 0 {
                commit(env, sink, &ctx, &assigned, &mut pending, &mut committed).await?;
            }
            if !env.wait_resumed().await {
                break TaskEnd::Stopped;
            }
            continue;
        }
        let mut got = 0usize;
        for a in &mut assigned {
            let records = fetch(a, &env.connector.name, (env.fetch_bytes / 2).max(1)).await?;
            if records.is_empty() {
                continue;
            }
            got += records.len();
            let bytes: u64 = records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                .sum();
            env.metrics.add_records(records.len() as u64, bytes);
            pending.records += records.len() as u64;
            pending.bytes += bytes;
            let started = Instant::now();
            sink.write(&ctx, records).await?;
            env.batch_latency.observe(started.elapsed());
            env.dlq.drain(&env.log).await?;
        }
        let unread: i64 = assigned
            .iter()
            .map(|a| (a.partition.end_offset() - a.next).max(0))
            .sum();
        env.metrics
            .sink_unread
            .store(unread, std::sync::atomic::Ordering::Relaxed);
        // A sink that holds records past its flushes (files rotating on a timer, changes
        // committed in the background) is flushed on the interval even while nothing new
        // arrives, so it can finish them; and as soon as the task has caught up with a
        // backlog, so that its end is not left waiting for the interval.
        let due = last_flush.elapsed() >= FLUSH_INTERVAL || (got == 0 && behind);
        behind = if got == 0 { false } else { behind || unread > 0 };
        let holding = due && holds_records(&*sink, &assigned);
        if (pending.records > 0 && (pending.records >= FLUSH_RECORDS || due)) || holding {
            commit(env, sink, &ctx, &assigned, &mut pending, &mut committed).await?;
            last_flush = Instant::now();
        }
        if got == 0 {
            // Nothing anywhere: wait for the first partition (or a timeout) rather than spin.
            let wait = async {
                if let Some(a) = assigned.first() {
                    let _ = a.partition.read_wait(a.next, 1, Duration::from_millis(200)).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = env.stop_requested() => break TaskEnd::Stopped,
            }
        }
    };
    if pending.records > 0 {
        commit(env, sink, &ctx, &assigned, &mut pending, &mut committed).await?;
    }
    sink.stop().await?;
    // A sink that held records past its flushes finished them in `stop`.
    if let Some(durable) = sink.durable_offsets() {
        commit_offsets(env, &durable, &mut committed).await?;
    }
    tracing::info!(connector = %env.connector.name, "Sink stopped.");
    Ok(end)
}

/// Whether the sink holds records it was given that are not durable yet.
fn holds_records(sink: &dyn Sink, assigned: &[Assigned]) -> bool {
    sink.durable_offsets().is_some_and(|durable| {
        assigned.iter().any(|a| {
            let tp = TopicPartition {
                topic: a.topic.to_string(),
                partition: a.partition.id(),
            };
            durable.get(&tp).map_or(a.first, |&offset| offset) < a.next
        })
    })
}

/// Commits the consumer group's offsets to what the sink made durable, those that
/// changed since the last commit (`committed`).
async fn commit_offsets(
    env: &TaskEnv,
    offsets: &SinkOffsets,
    committed: &mut SinkOffsets,
) -> Result<(), ConnectorError> {
    let commits: Vec<(&str, u32, i64)> = offsets
        .iter()
        .filter(|(tp, offset)| committed.get(*tp) != Some(*offset))
        .map(|(tp, offset)| (tp.topic.as_str(), tp.partition, *offset))
        .collect();
    if commits.is_empty() {
        return Ok(());
    }
    env.log
        .groups()
        .commit_many(&env.connector.name, &commits, "")
        .await
        .map_err(log_error)?;
    committed.extend(offsets.iter().map(|(tp, offset)| (tp.clone(), *offset)));
    Ok(())
}

/// The records read ahead from one partition (reading them now if no read is under
/// way), advancing its next offset past them; and starts the read of the records after.
async fn fetch(a: &mut Assigned, connector: &str, max_bytes: usize) -> Result<Vec<SinkRecord>, ConnectorError> {
    let fetched = match a.ahead.take() {
        Some(mut ahead) => (&mut ahead.0)
            .await
            .map_err(|e| ConnectorError::retriable(format!("reading `{}` ahead failed: {e}", a.topic)))??,
        None => {
            read(
                Arc::clone(&a.partition),
                Arc::clone(&a.topic),
                a.next,
                max_bytes,
                connector.into(),
            )
            .await?
        }
    };
    a.next = fetched.next;
    // On a thread of its own: a task spawned here would wait in this worker's LIFO slot
    // (which other workers do not steal from) until the sink's write yields, so records
    // would be read and decoded between writes rather than beside them.
    let read = read(
        Arc::clone(&a.partition),
        Arc::clone(&a.topic),
        a.next,
        max_bytes,
        connector.into(),
    );
    let runtime = tokio::runtime::Handle::current();
    a.ahead = Some(ReadAhead(tokio::task::spawn_blocking(move || runtime.block_on(read))));
    Ok(fetched.records)
}

/// Reads what is available from `from` on.
async fn read(
    partition: Arc<Partition>,
    topic: Arc<str>,
    from: i64,
    max_bytes: usize,
    connector: Arc<str>,
) -> Result<Fetched, ConnectorError> {
    let fetch = match partition.read(from, max_bytes).await {
        Ok(fetch) => fetch,
        Err(LogError::OffsetOutOfRange { start, end, .. }) => {
            // Retention deleted what the group had not read, or the log was reset.
            let next = if from < start { start } else { end };
            tracing::warn!(connector = %connector, topic = %topic, partition = partition.id(), from, to = next, "Committed offset out of range; moving to the nearest valid offset.");
            return Ok(Fetched {
                records: Vec::new(),
                next,
            });
        }
        Err(e) => return Err(log_error(e)),
    };
    let mut records = Vec::new();
    for record in fetch.records() {
        let record = record.map_err(|e| ConnectorError::fatal(format!("decode a record of `{topic}`: {e}")))?;
        records.push(sink_record(Arc::clone(&topic), partition.id(), record));
    }
    Ok(Fetched {
        records,
        next: fetch.next_offset(),
    })
}

/// Records written to the sink since its last flush.
struct Pending {
    records: u64,
    bytes: u64,
    /// The task's dead-letter count at the last flush.
    dead_before: u64,
}

impl Pending {
    fn new(metrics: &plexus_connector::TaskMetrics) -> Pending {
        Pending {
            records: 0,
            bytes: 0,
            dead_before: metrics.dead_lettered.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Flushes the sink, then commits the offsets after what it wrote.
async fn commit(
    env: &TaskEnv,
    sink: &mut dyn Sink,
    ctx: &SinkContext,
    assigned: &[Assigned],
    pending: &mut Pending,
    committed: &mut SinkOffsets,
) -> Result<(), ConnectorError> {
    let offsets: SinkOffsets = assigned
        .iter()
        .map(|a| {
            (
                TopicPartition {
                    topic: a.topic.to_string(),
                    partition: a.partition.id(),
                },
                a.next,
            )
        })
        .collect();
    sink.flush(ctx, &offsets).await?;
    env.dlq.drain(&env.log).await?;
    commit_offsets(env, &sink.durable_offsets().unwrap_or(offsets), committed).await?;
    // Records dead-lettered since the last flush were not delivered.
    let dead_now = env.metrics.dead_lettered.load(std::sync::atomic::Ordering::Relaxed);
    let dead = dead_now.saturating_sub(pending.dead_before).min(pending.records);
    env.metrics.add_records_out(pending.records - dead, pending.bytes);
    *pending = Pending::new(&env.metrics);
    Ok(())
}
