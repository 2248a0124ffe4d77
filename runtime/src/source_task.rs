//! One source task: poll the source, append to the log exactly once, commit positions.
//!
//! Exactly once into the log rests on two things:
//!
//! * Every append carries the source position of its batch. A batch that spans several
//!   partitions becomes one append per partition, each with the batch's position, and
//!   the log refuses an append whose position a partition already holds. A batch
//!   replayed after a crash is therefore written only where it was missing.
//! * After all of a batch's appends, a marker with the position goes to the internal
//!   topic `__source_positions`. A restarted source resumes after the newest marker:
//!   every batch up to it is complete everywhere, and the ones after it are replayed
//!   and deduplicated per partition as above. (The marker needs no fsync of its own:
//!   losing one only makes the replay longer.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_connector::{ConnectorError, Poll, Position, Source, SourceBatch, SourceContext};
use plexus_log::{AppendOutcome, BatchBuilder, Compression, LogError, Partition, ProducerId, Topic};

use crate::task::{TaskEnd, TaskEnv, log_error};

pub use crate::positions::POSITIONS_TOPIC;

/// How often positions are made durable and committed to the source system.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) async fn run(env: &mut TaskEnv, source: &mut dyn Source) -> Result<TaskEnd, ConnectorError> {
    let markers = crate::positions::partition(&env.log).await?;
    let producer = crate::positions::producer(&markers, &env.connector.name);
    let resume = crate::positions::resume_position(&markers, &env.connector.name);
    let boundaries = replay_boundaries(&env.log, producer, resume.as_ref());
    tracing::info!(connector = %env.connector.name, resume = ?resume, replay_boundaries = boundaries.len(), "Source starting.");
    let ctx = SourceContext::new(env.connector.name.clone(), 0, Arc::clone(&env.metrics), env.dlq.clone())
        .with_replay_boundaries(boundaries);
    source.start(&ctx, resume).await?;

    let mut writer = BatchWriter {
        producer,
        markers,
        topics: HashMap::new(),
        touched: BTreeMap::new(),
        sticky: 0,
        builder: BatchBuilder::new(Compression::Lz4),
    };
    let mut uncommitted: Option<Position> = None;
    let mut last_commit = Instant::now();
    let end = loop {
        if env.stopping() {
            break TaskEnd::Stopped;
        }
        if env.paused() {
            // Make what was written durable and acknowledged before idling.
            if let Some(position) = uncommitted.take() {
                writer.commit(source, &position).await?;
            }
            if !env.wait_resumed().await {
                break TaskEnd::Stopped;
            }
            continue;
        }
        let template = env.connector.topics.first().map_or("", String::as_str);
        if !env
            .backpressure
            .wait(&env.connector.name, template, env.stop_requested())
            .await
        {
            break TaskEnd::Stopped;
        }
        let poll = tokio::select! {
            poll = source.poll(&ctx) => poll?,
            _ = env.stop_requested() => break TaskEnd::Stopped,
        };
        match poll {
            Poll::Batch(batch) => {
                env.dlq.drain(&env.log).await?;
                let position = batch.position.clone();
                let started = Instant::now();
                writer.write(env, batch).await?;
                env.batch_latency.observe(started.elapsed());
                uncommitted = Some(position);
            }
            Poll::Idle => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = env.stop_requested() => break TaskEnd::Stopped,
                }
            }
            Poll::Finished => break TaskEnd::Finished,
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL
            && let Some(position) = uncommitted.take()
        {
            writer.commit(source, &position).await?;
            last_commit = Instant::now();
        }
    };
    env.dlq.drain(&env.log).await?;
    if let Some(position) = uncommitted.take() {
        writer.commit(source, &position).await?;
    }
    source.stop().await?;
    tracing::info!(connector = %env.connector.name, end = ?end, "Source stopped.");
    Ok(end)
}

/// The positions after `resume` that some partition holds from `producer`: batches a
/// crash interrupted after some of their appends (see
/// [`SourceContext::replay_boundaries`]).
fn replay_boundaries(log: &plexus_log::Log, producer: ProducerId, resume: Option<&Position>) -> Vec<Position> {
    let mut boundaries = Vec::new();
    for name in log.topic_names() {
        let Some(topic) = log.topic(&name) else { continue };
        for partition in topic.partitions() {
            if let Some(entry) = partition.producer_position(producer) {
                let position = Position::from_bytes(entry.position.as_bytes().clone());
                if resume.is_none_or(|resume| position > *resume) {
                    boundaries.push(position);
                }
            }
        }
    }
    boundaries
}

/// Splits batches by partition and appends them with their position.
struct BatchWriter {
    producer: ProducerId,
    markers: Arc<Partition>,
    topics: HashMap<String, Arc<Topic>>,
    /// Partitions written since the last commit, to flush before committing.
    touched: BTreeMap<(String, u32), Arc<Partition>>,
    /// Partition for records without a key, rotated per batch (Kafka's sticky partitioner).
    sticky: usize,
    builder: BatchBuilder,
}

impl BatchWriter {
    async fn write(&mut self, env: &TaskEnv, batch: SourceBatch) -> Result<(), ConnectorError> {
        let SourceBatch { records, position } = batch;
        let log_position = plexus_log::Position::from_bytes(position.as_bytes().clone());
        let template = env.connector.topics.first().map_or("", String::as_str);
        self.sticky = self.sticky.wrapping_add(1);

        // Group by (topic, partition), keeping each group's records in order.
        let mut groups: BTreeMap<(String, u32), Vec<usize>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            let topic_name = topic_for(template, record.topic.as_deref(), &env.connector.name);
            let topic_name = topic_name.as_str();
            let topic = self.topic(env, topic_name).await?;
            let count = topic.partitions().len().max(1);
            let partition = match &record.key {
                Some(key) => fnv1a(key) as usize % count,
                None => self.sticky % count,
            };
            groups
                .entry((topic_name.to_owned(), partition as u32))
                .or_default()
                .push(i);
        }
        let mut bytes = 0u64;
        let (mut written, mut written_bytes) = (0u64, 0u64);
        for ((topic_name, partition), indexes) in groups {
            let topic = self.topic(env, &topic_name).await?;
            let partition = Arc::clone(topic.partition(partition).map_err(log_error)?);
            let mut group_bytes = 0u64;
            for &i in &indexes {
                let r = &records[i];
                let headers: Vec<(&str, Option<&[u8]>)> =
                    r.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())).collect();
                group_bytes +=
                    r.value.as_ref().map_or(0, |v| v.len() as u64) + r.key.as_ref().map_or(0, |k| k.len() as u64);
                self.builder
                    .push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
            }
            bytes += group_bytes;
            let outcome = partition
                .append_with_position(&mut self.builder, self.producer, log_position.clone())
                .await
                .map_err(log_error)?;
            if let AppendOutcome::AlreadyWritten { .. } = outcome {
                tracing::debug!(connector = %env.connector.name, topic = %topic_name, "Replayed batch already in the log.");
            } else {
                written += indexes.len() as u64;
                written_bytes += group_bytes;
            }
            self.touched.insert((topic_name, partition.id()), partition);
        }
        // The marker: this batch is complete in every partition.
        self.builder.push(
            crate::now_ms(),
            Some(env.connector.name.as_bytes()),
            Some(position.as_bytes()),
            &[],
        );
        self.markers
            .append_with_position(&mut self.builder, self.producer, log_position)
            .await
            .map_err(log_error)?;
        env.metrics.add_records(records.len() as u64, bytes);
        env.metrics.add_records_out(written, written_bytes);
        Ok(())
    }

    /// Makes the written batches durable, then lets the source acknowledge its system.
    async fn commit(&mut self, source: &mut dyn Source, position: &Position) -> Result<(), ConnectorError> {
        for partition in std::mem::take(&mut self.touched).into_values() {
            partition.flush().await.map_err(log_error)?;
        }
        self.markers.flush().await.map_err(log_error)?;
        source.commit(position).await
    }

    async fn topic(&mut self, env: &TaskEnv, name: &str) -> Result<Arc<Topic>, ConnectorError> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(Arc::clone(topic));
        }
        // Internal topics (`__schemas`) keep the newest record per key, whatever the
        // default topic settings say.
        if name.starts_with("__") && env.log.topic(name).is_none() {
            match env.log.create_topic(name, plexus_log::TopicConfig::compacted()).await {
                Ok(_) | Err(LogError::TopicExists(_)) => {}
                Err(e) => return Err(log_error(e)),
            }
        }
        env.log.partition(name, 0).await.map_err(|e| match e {
            LogError::UnknownTopic(_) => ConnectorError::fatal(format!(
                "topic `{name}` does not exist and the worker does not create topics (`auto_create_topics = false`); create it with `plexus topics create {name}`"
            )),
            other => log_error(other),
        })?;
        let topic = env
            .log
            .topic(name)
            .ok_or_else(|| ConnectorError::retriable(format!("topic `{name}` vanished")))?;
        self.topics.insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }
}

/// The topic of a record: the connector's `topic` with `{table}` replaced by the
/// record's table (or, for a record without one, by the connector's name). A `topic`
/// without `{table}` takes every record. A record naming an internal topic (`__schemas`)
/// goes there as named.
fn topic_for(template: &str, table: Option<&str>, connector: &str) -> String {
    if let Some(internal) = table.filter(|t| t.starts_with("__")) {
        internal.to_owned()
    } else if template.contains(TABLE_PLACEHOLDER) {
        template.replace(TABLE_PLACEHOLDER, table.unwrap_or(connector))
    } else {
        template.to_owned()
    }
}

pub use plexus_config::TABLE_PLACEHOLDER;

/// FNV-1a: a stable hash, so a key always lands in the same partition.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_come_from_the_template() {
        assert_eq!(topic_for("shop.{table}", Some("orders"), "gen"), "shop.orders");
        assert_eq!(topic_for("shop.{table}", None, "gen"), "shop.gen");
        assert_eq!(topic_for("everything", Some("orders"), "gen"), "everything");
        assert_eq!(topic_for("shop.{table}", Some("__schemas"), "gen"), "__schemas");
    }

    #[test]
    fn keys_hash_stably() {
        assert_eq!(fnv1a(b"order-1"), fnv1a(b"order-1"));
        assert_ne!(fnv1a(b"order-1"), fnv1a(b"order-2"));
    }
}
