//! The write side of a source task: batches are encoded (and compressed) on the blocking
//! pool, several at once, and appended strictly in poll order by one task of their own,
//! so that the source polls its next batch while earlier ones are sealed and written.
//!
//! Order is what exactly once rests on: a batch's appends, then its position marker,
//! then the next batch's. The appender alone writes, one job at a time, in the order
//! the jobs were queued; a flush waits for every job queued before it.
//!
//! The pipeline also counts the batches submitted and not yet durable, which a source
//! sees as `SourceContext::writing`: one that can keep adding records already arriving
//! grows its next batch until the count is back to zero, instead of handing over small
//! batches that would only queue behind the one being written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;
use plexus_connector::{ConnectorError, Position, SourceRecord, TaskMetrics};
use plexus_log::{AppendOutcome, BatchBuilder, Compression, LatencyHistogram, Partition, ProducerId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::task::log_error;

/// Batches queued for the appender beyond the one it is writing.
const QUEUED: usize = 2;

/// A polled batch with each record's partition decided.
pub(super) struct Routed {
    pub records: Vec<SourceRecord>,
    /// `(topic, partition, indexes into records)`, each group's records in poll order.
    pub groups: Vec<(Arc<str>, Arc<Partition>, Vec<usize>)>,
    pub position: Position,
}

/// A batch encoded for each of its partitions.
struct Sealed {
    groups: Vec<SealedGroup>,
    position: plexus_log::Position,
    /// The source's own position, for the marker.
    source_position: Position,
    records: u64,
    bytes: u64,
    polled: Instant,
    /// Every record of the polled batch, routed or not.
    polled_records: u64,
}

struct SealedGroup {
    topic: Arc<str>,
    partition: Arc<Partition>,
    batch: BytesMut,
    records: u64,
    bytes: u64,
}

enum Job {
    Batch(JoinHandle<Result<Sealed, ConnectorError>>),
    /// Make everything appended so far durable, then answer.
    Flush(oneshot::Sender<()>),
}

/// What the appender needs from the task.
pub(super) struct AppenderEnv {
    pub connector: String,
    pub producer: ProducerId,
    pub markers: Arc<Partition>,
    pub metrics: Arc<TaskMetrics>,
    pub batch_latency: Arc<LatencyHistogram>,
}

/// The source task's handle on its appender.
pub(super) struct Pipeline {
    tx: Option<mpsc::Sender<Job>>,
    task: Option<JoinHandle<Result<(), ConnectorError>>>,
    producer: ProducerId,
    builders: Arc<Mutex<Vec<BatchBuilder>>>,
    /// Records submitted and not yet appended.
    unwritten: Arc<AtomicU64>,
    /// Batches submitted and not yet durable (what the source sees as
    /// [`plexus_connector::SourceContext::writing`]).
    writing: Arc<watch::Sender<usize>>,
}

impl Pipeline {
    pub(super) fn start(env: AppenderEnv) -> Pipeline {
        let (tx, rx) = mpsc::channel(QUEUED);
        let builders = Arc::new(Mutex::new(Vec::new()));
        let producer = env.producer;
        let unwritten = Arc::new(AtomicU64::new(0));
        let writing = Arc::new(watch::Sender::new(0));
        let task = tokio::spawn({
            let (builders, unwritten, writing) = (Arc::clone(&builders), Arc::clone(&unwritten), Arc::clone(&writing));
            async move {
                let ended = append_loop(rx, env, builders, unwritten, Arc::clone(&writing)).await;
                // Nothing more will be written: a source holding its batch open for the
                // appender hands it over now (and learns of the failure, if any).
                writing.send_replace(0);
                ended
            }
        });
        Pipeline {
            tx: Some(tx),
            task: Some(task),
            producer,
            builders,
            unwritten,
            writing,
        }
    }

    /// Follows the count of batches submitted and not yet durable.
    pub(super) fn writing(&self) -> watch::Receiver<usize> {
        self.writing.subscribe()
    }

    /// Records submitted and not yet appended.
    pub(super) fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }

    /// Seals `routed` on the blocking pool and queues it for appending; waits while the
    /// queue is full.
    pub(super) async fn submit(&mut self, routed: Routed) -> Result<(), ConnectorError> {
        let builder = self
            .builders
            .lock()
            .pop()
            .unwrap_or_else(|| BatchBuilder::new(Compression::Lz4));
        let producer = self.producer;
        let builders = Arc::clone(&self.builders);
        let polled = Instant::now();
        self.unwritten.fetch_add(routed.records.len() as u64, Ordering::Relaxed);
        self.writing.send_modify(|batches| *batches += 1);
        let handle = tokio::task::spawn_blocking(move || {
            let mut builder = builder;
            let sealed = seal(routed, &mut builder, producer, polled);
            builders.lock().push(builder);
            sealed
        });
        self.send(Job::Batch(handle)).await
    }

    /// Returns once every batch submitted so far is appended and durable.
    pub(super) async fn flush(&mut self) -> Result<(), ConnectorError> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Flush(reply)).await?;
        match done.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure().await),
        }
    }

    /// Lets the appender write what is queued, then ends it.
    pub(super) async fn close(mut self) -> Result<(), ConnectorError> {
        drop(self.tx.take());
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| ConnectorError::fatal(format!("the appender of the source task failed: {e}")))?,
            None => Ok(()),
        }
    }

    async fn send(&mut self, job: Job) -> Result<(), ConnectorError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(job).await.is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.failure().await) }
    }

    /// Why the appender stopped (it only stops early on an error).
    async fn failure(&mut self) -> ConnectorError {
        drop(self.tx.take());
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => ConnectorError::fatal("the appender of the source task ended early"),
                Err(e) => ConnectorError::fatal(format!("the appender of the source task failed: {e}")),
            },
            None => ConnectorError::fatal("the appender of the source task is gone"),
        }
    }
}

/// Encodes each group of `routed` as one batch carrying the position.
fn seal(
    routed: Routed,
    builder: &mut BatchBuilder,
    producer: ProducerId,
    polled: Instant,
) -> Result<Sealed, ConnectorError> {
    let Routed {
        records,
        groups,
        position: source_position,
    } = routed;
    let position = plexus_log::Position::from_bytes(source_position.as_bytes().clone());
    let polled_records = records.len() as u64;
    let mut sealed = Vec::with_capacity(groups.len());
    let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let (mut total_records, mut total_bytes) = (0u64, 0u64);
    for (topic, partition, indexes) in groups {
        let mut bytes = 0u64;
        for &i in &indexes {
            let r = &records[i];
            headers.clear();
            headers.extend(r.headers.iter().map(|h| (&*h.key, h.value.as_deref())));
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64) + r.key.as_ref().map_or(0, |k| k.len() as u64);
            builder.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
        }
        let batch = plexus_log::seal_with_position(builder, producer, &position).map_err(log_error)?;
        total_records += indexes.len() as u64;
        total_bytes += bytes;
        sealed.push(SealedGroup {
            topic,
            partition,
            batch,
            records: indexes.len() as u64,
            bytes,
        });
    }
    Ok(Sealed {
        groups: sealed,
        position,
        source_position,
        records: total_records,
        bytes: total_bytes,
        polled,
        polled_records,
    })
}

/// Batches written and not yet known durable, at most: their fsyncs overlap, and one
/// covers several.
const UNSYNCED: usize = 4;

/// A batch written to its partitions, waiting to be durable before its marker.
struct Written {
    durable: JoinHandle<Result<(), plexus_log::LogError>>,
    position: plexus_log::Position,
    source_position: Position,
    records: u64,
    bytes: u64,
    written: u64,
    written_bytes: u64,
    polled: Instant,
    polled_records: u64,
}

async fn append_loop(
    mut rx: mpsc::Receiver<Job>,
    env: AppenderEnv,
    builders: Arc<Mutex<Vec<BatchBuilder>>>,
    unwritten: Arc<AtomicU64>,
    writing: Arc<watch::Sender<usize>>,
) -> Result<(), ConnectorError> {
    let mut appender = Appender {
        env,
        touched: Default::default(),
        marker: BatchBuilder::new(Compression::None),
        written: VecDeque::new(),
        unwritten,
        writing,
    };
    loop {
        tokio::select! {
            // The oldest written batch became durable: its marker goes next.
            durable = oldest(&mut appender.written), if !appender.written.is_empty() => {
                appender.finish_oldest(durable).await?;
            }
            job = rx.recv(), if appender.written.len() < UNSYNCED => match job {
                Some(Job::Batch(handle)) => {
                    let sealed = handle
                        .await
                        .map_err(|e| ConnectorError::fatal(format!("encoding a batch failed: {e}")))??;
                    appender.write(sealed).await?;
                }
                Some(Job::Flush(reply)) => {
                    appender.flush().await?;
                    let _ = reply.send(());
                }
                None => break,
            },
        }
    }
    appender.finish_all().await?;
    drop(builders);
    Ok(())
}

/// Awaits the durability of the oldest written batch.
async fn oldest(written: &mut VecDeque<Written>) -> Result<(), ConnectorError> {
    match written.front_mut() {
        Some(front) => match (&mut front.durable).await {
            Ok(result) => result.map_err(log_error),
            Err(e) => Err(ConnectorError::fatal(format!(
                "waiting for a batch to be durable failed: {e}"
            ))),
        },
        None => std::future::pending().await,
    }
}

struct Appender {
    env: AppenderEnv,
    /// Partitions written since the last flush.
    touched: std::collections::BTreeMap<(Arc<str>, u32), Arc<Partition>>,
    marker: BatchBuilder,
    written: VecDeque<Written>,
    unwritten: Arc<AtomicU64>,
    writing: Arc<watch::Sender<usize>>,
}

/// The shortest time between two batches of a source that waits for the previous one
/// to be written: at most 500 batches a second under load; when the load is light,
/// batches are further apart and no wait is added.
const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

fn done_writing(writing: &watch::Sender<usize>) {
    writing.send_modify(|batches| *batches = batches.saturating_sub(1));
}

impl Appender {
    /// Writes a sealed batch to its partitions; its durability is awaited in the
    /// background (under `fsync = always`), except for internal topics: readers see a
    /// record of an `fsync = always` topic once it is durable, and a schema registered
    /// in `__schemas` must be readable before the records that name it are.
    async fn write(&mut self, sealed: Sealed) -> Result<(), ConnectorError> {
        let (mut written, mut written_bytes) = (0u64, 0u64);
        let mut targets = Vec::new();
        for group in sealed.groups {
            let outcome = group
                .partition
                .append_encoded_unsynced(group.batch, Some((self.env.producer, sealed.position.clone())))
                .map_err(log_error)?;
            if let AppendOutcome::AlreadyWritten { .. } = outcome {
                tracing::debug!(connector = %self.env.connector, topic = %group.topic, "Replayed batch already in the log.");
            } else {
                written += group.records;
                written_bytes += group.bytes;
            }
            if let Some(offset) = group.partition.durable_target(&outcome) {
                if group.topic.starts_with("__") {
                    group.partition.wait_durable(offset).await.map_err(log_error)?;
                } else {
                    targets.push((Arc::clone(&group.partition), offset));
                }
            }
            self.touched
                .insert((group.topic, group.partition.id()), group.partition);
        }
        let durable = tokio::spawn(async move {
            for (partition, offset) in targets {
                partition.wait_durable(offset).await?;
            }
            Ok(())
        });
        self.written.push_back(Written {
            durable,
            position: sealed.position,
            source_position: sealed.source_position,
            records: sealed.records,
            bytes: sealed.bytes,
            written,
            written_bytes,
            polled: sealed.polled,
            polled_records: sealed.polled_records,
        });
        Ok(())
    }

    /// The oldest written batch is durable: its marker says it is complete everywhere.
    async fn finish_oldest(&mut self, durable: Result<(), ConnectorError>) -> Result<(), ConnectorError> {
        durable?;
        let Some(batch) = self.written.pop_front() else {
            return Ok(());
        };
        self.marker.push(
            crate::now_ms(),
            Some(self.env.connector.as_bytes()),
            Some(batch.source_position.as_bytes()),
            &[],
        );
        self.env
            .markers
            .append_with_position(&mut self.marker, self.env.producer, batch.position)
            .await
            .map_err(log_error)?;
        self.env.metrics.add_records(batch.records, batch.bytes);
        self.env.metrics.add_records_out(batch.written, batch.written_bytes);
        self.env.batch_latency.observe(batch.polled.elapsed());
        self.unwritten.fetch_sub(batch.polled_records, Ordering::Relaxed);
        // A source that waits for its previous batch to be written (see
        // `SourceContext::writing`) waits at least `BATCH_INTERVAL` after handing it
        // over: with fast fsyncs, a batch per fsync would be small batches at a rate
        // set by the disk rather than by the load, each costing its fixed share
        // (an fsync, a marker, wake-ups) of the CPU the source's own system needs.
        let left = BATCH_INTERVAL.saturating_sub(batch.polled.elapsed());
        if left.is_zero() {
            done_writing(&self.writing);
        } else {
            let writing = Arc::clone(&self.writing);
            tokio::spawn(async move {
                tokio::time::sleep(left).await;
                done_writing(&writing);
            });
        }
        Ok(())
    }

    async fn finish_all(&mut self) -> Result<(), ConnectorError> {
        while !self.written.is_empty() {
            let durable = oldest(&mut self.written).await;
            self.finish_oldest(durable).await?;
        }
        Ok(())
    }

    /// Everything written so far, durable and marked.
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.finish_all().await?;
        for partition in std::mem::take(&mut self.touched).into_values() {
            partition.flush().await.map_err(log_error)?;
        }
        self.env.markers.flush().await.map_err(log_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use plexus_connector::SourceRecord;
    use plexus_log::{FsyncPolicy, Log, LogConfig, TopicConfig};

    use super::*;

    #[tokio::test]
    async fn a_batch_counts_as_being_written_until_it_is_durable_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
        let durable = TopicConfig {
            fsync: FsyncPolicy::Always,
            ..TopicConfig::default()
        };
        let topic = log.create_topic("numbers", durable).await.unwrap();
        let partition = Arc::clone(topic.partition(0).unwrap());
        let markers = crate::positions::partition(&log).await.unwrap();
        let mut pipeline = Pipeline::start(AppenderEnv {
            connector: "count".into(),
            producer: ProducerId::from_name("count"),
            markers: Arc::clone(&markers),
            metrics: Arc::default(),
            batch_latency: Arc::default(),
        });
        let mut writing = pipeline.writing();
        assert_eq!(*writing.borrow(), 0, "nothing submitted yet");

        for round in 0..3u64 {
            let records: Vec<SourceRecord> = (0..10)
                .map(|i| SourceRecord::new(1, None, Some(format!("{round}-{i}").into())))
                .collect();
            let submitted = Instant::now();
            pipeline
                .submit(Routed {
                    groups: vec![("numbers".into(), Arc::clone(&partition), (0..records.len()).collect())],
                    records,
                    position: Position::from_u64(round),
                })
                .await
                .unwrap();
            assert_eq!(*writing.borrow_and_update(), 1, "round {round}: counted at once");

            writing.wait_for(|batches| *batches == 0).await.unwrap();
            assert!(
                submitted.elapsed() >= BATCH_INTERVAL,
                "round {round}: a batch counts for at least the batch interval"
            );
            let end = (round as i64 + 1) * 10;
            assert_eq!(partition.durable_offset(), end, "round {round}: the batch is durable");
            assert_eq!(partition.end_offset(), end);
            let marked = markers.producer_position(ProducerId::from_name("count")).unwrap();
            assert_eq!(
                marked.position.as_bytes(),
                Position::from_u64(round).as_bytes(),
                "round {round}: its marker is written"
            );
        }
        pipeline.close().await.unwrap();
    }
}
