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
//!
//! The task routes each polled batch to its partitions and hands it to its appender
//! (`appender.rs`): batches are encoded on the blocking pool, several at a time, and
//! written one after the other in poll order, while the source polls the next ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_connector::{ConnectorError, Poll, Position, Source, SourceBatch, SourceContext};
use plexus_log::{LogError, ProducerId, Topic};

use crate::task::{TaskEnd, TaskEnv, log_error};

mod appender;

use appender::{AppenderEnv, Pipeline, Routed};

pub use crate::positions::POSITIONS_TOPIC;

/// How often positions are made durable and committed to the source system.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) async fn run(env: &mut TaskEnv, source: &mut dyn Source) -> Result<TaskEnd, ConnectorError> {
    let markers = crate::positions::partition(&env.log).await?;
    let producer = crate::positions::producer(&markers, &env.connector.name);
    let resume = crate::positions::resume_position(&markers, &env.connector.name);
    let boundaries = replay_boundaries(&env.log, producer, resume.as_ref());
    tracing::info!(connector = %env.connector.name, resume = ?resume, replay_boundaries = boundaries.len(), "Source starting.");
    let mut pipeline = Pipeline::start(AppenderEnv {
        connector: env.connector.name.clone(),
        producer,
        markers,
        metrics: Arc::clone(&env.metrics),
        batch_latency: Arc::clone(&env.batch_latency),
    });
    let ctx = SourceContext::new(env.connector.name.clone(), 0, Arc::clone(&env.metrics), env.dlq.clone())
        .with_replay_boundaries(boundaries)
        .with_writing(pipeline.writing());
    if let Err(e) = source.start(&ctx, resume).await {
        let _ = pipeline.close().await;
        return Err(e);
    }

    let mut router = Router {
        topics: HashMap::new(),
        sticky: 0,
    };
    let mut uncommitted: Option<Position> = None;
    let polled = poll_loop(env, source, &ctx, &mut router, &mut pipeline, &mut uncommitted).await;
    // Whatever ended the loop, what was polled is written (in order) before the task
    // ends, so a restarted task never races its predecessor's appender.
    let end = match polled {
        Ok(end) => {
            env.dlq.drain(&env.log).await?;
            if let Some(position) = uncommitted.take() {
                pipeline.flush().await?;
                source.commit(&position).await?;
            }
            pipeline.close().await?;
            end
        }
        Err(e) => {
            let _ = pipeline.close().await;
            return Err(e);
        }
    };
    source.stop().await?;
    tracing::info!(connector = %env.connector.name, end = ?end, "Source stopped.");
    Ok(end)
}

async fn poll_loop(
    env: &mut TaskEnv,
    source: &mut dyn Source,
    ctx: &SourceContext,
    router: &mut Router,
    pipeline: &mut Pipeline,
    uncommitted: &mut Option<Position>,
) -> Result<TaskEnd, ConnectorError> {
    let mut last_commit = Instant::now();
    loop {
        if env.stopping() {
            return Ok(TaskEnd::Stopped);
        }
        if env.paused() {
            // Make what was written durable and acknowledged before idling.
            if let Some(position) = uncommitted.take() {
                pipeline.flush().await?;
                source.commit(&position).await?;
            }
            if !env.wait_resumed().await {
                return Ok(TaskEnd::Stopped);
            }
            continue;
        }
        let template = env.connector.topics.first().map_or("", String::as_str);
        if !env
            .backpressure
            .wait(
                &env.connector.name,
                template,
                || pipeline.unwritten(),
                env.stop_requested(),
            )
            .await
        {
            return Ok(TaskEnd::Stopped);
        }
        let asked = Instant::now();
        let poll = tokio::select! {
            poll = source.poll(ctx) => poll?,
            _ = env.stop_requested() => return Ok(TaskEnd::Stopped),
        };
        match poll {
            Poll::Batch(batch) => {
                env.dlq.drain(&env.log).await?;
                let position = batch.position.clone();
                let routed = router.route(env, batch).await?;
                pipeline.submit(routed).await?;
                *uncommitted = Some(position);
            }
            Poll::Idle => {
                tokio::select! {
                    _ = tokio::time::sleep(idle_pause(asked.elapsed())) => {}
                    _ = env.stop_requested() => return Ok(TaskEnd::Stopped),
                }
            }
            Poll::Finished => return Ok(TaskEnd::Finished),
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL
            && let Some(position) = uncommitted.take()
        {
            pipeline.flush().await?;
            source.commit(&position).await?;
            last_commit = Instant::now();
        }
    }
}

/// An idle source is polled at most this often.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The pause after a poll that found nothing and took `waited`: a source that waited
/// for its data itself (a replication stream, say) is polled again at once, so what
/// arrives next is not held back by a pause on top of its own wait.
fn idle_pause(waited: Duration) -> Duration {
    IDLE_POLL.saturating_sub(waited)
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

/// A topic and one of its partitions.
type Group = (Arc<str>, u32);

/// The table of the records being routed, its topic and the topic's partition count.
type Current<'a> = (Option<&'a Arc<str>>, Arc<str>, usize);

/// Decides each record's topic and partition.
struct Router {
    topics: HashMap<String, Arc<Topic>>,
    /// Partition for records without a key, rotated per batch (Kafka's sticky partitioner).
    sticky: usize,
}

impl Router {
    async fn route(&mut self, env: &TaskEnv, batch: SourceBatch) -> Result<Routed, ConnectorError> {
        let SourceBatch { records, position } = batch;
        let template = env.connector.topics.first().map_or("", String::as_str);
        self.sticky = self.sticky.wrapping_add(1);

        // Group by (topic, partition), keeping each group's records in order. Records
        // of one table come in runs: the topic is looked up once per run.
        let mut groups: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
        let mut current: Option<Current<'_>> = None;
        // The run of records going to the same partition as the previous one, added to
        // its group in one go (a one-partition topic takes no map lookup per record).
        let mut run: Option<(Group, Vec<usize>)> = None;
        for (i, record) in records.iter().enumerate() {
            let named = record.topic.as_ref();
            // Records of a table usually share its name: a pointer comparison.
            let same = |name: &Option<&Arc<str>>| match (name, named) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == &b,
                (a, b) => a.is_none() && b.is_none(),
            };
            if !matches!(&current, Some((name, _, _)) if same(name)) {
                let topic_name: Arc<str> = topic_for(template, named.map(|n| &**n), &env.connector.name).into();
                let count = self.topic(env, &topic_name).await?.partitions().len().max(1);
                current = Some((named, topic_name, count));
            }
            let Some((_, topic_name, count)) = &current else {
                continue;
            };
            let partition = match &record.key {
                // One partition takes every key: no need to hash it.
                Some(_) if *count == 1 => 0,
                Some(key) => fnv1a(key) as usize % count,
                None => self.sticky % count,
            };
            let partition = partition as u32;
            match &mut run {
                Some(((name, p), indexes)) if *p == partition && Arc::ptr_eq(name, topic_name) => indexes.push(i),
                _ => {
                    let group = (Arc::clone(topic_name), partition);
                    if let Some((group, indexes)) = run.replace((group, vec![i])) {
                        groups.entry(group).or_default().extend(indexes);
                    }
                }
            }
        }
        if let Some((group, indexes)) = run {
            groups.entry(group).or_default().extend(indexes);
        }
        let mut routed = Vec::with_capacity(groups.len());
        for ((topic_name, partition), indexes) in groups {
            let topic = self.topic(env, &topic_name).await?;
            let partition = Arc::clone(topic.partition(partition).map_err(log_error)?);
            routed.push((topic_name, partition, indexes));
        }
        // Internal topics first: a schema goes in before the records that name it.
        routed.sort_by_key(|(topic, _, _)| !topic.starts_with("__"));
        Ok(Routed {
            records,
            groups: routed,
            position,
        })
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
    fn only_a_source_that_did_not_wait_itself_is_paused_when_idle() {
        assert_eq!(idle_pause(Duration::ZERO), IDLE_POLL);
        assert_eq!(idle_pause(Duration::from_millis(30)), Duration::from_millis(70));
        assert_eq!(idle_pause(Duration::from_millis(500)), Duration::ZERO);
    }

    #[test]
    fn keys_hash_stably() {
        assert_eq!(fnv1a(b"order-1"), fnv1a(b"order-1"));
        assert_ne!(fnv1a(b"order-1"), fnv1a(b"order-2"));
    }
}
