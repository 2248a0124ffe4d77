//! Source positions in the internal topic `__source_positions`, and their generations.
//!
//! A source task appends every batch under a producer id derived from the connector's
//! name, and after it a marker with the batch's position; the newest marker is where
//! the source resumes (see [`crate::source_task`]). The log refuses an append at or
//! before a producer's last position, which is what makes replays after a crash
//! harmless, and also what would silently drop everything if an operator moved a
//! source *back* (`PATCH .../offsets`): its records would look like replays.
//!
//! So moving or deleting a source's position starts a new *generation*: a new producer
//! id (`NAME#GENERATION`), which no partition has seen. The generation itself is kept
//! as the position of one more producer (`generation:NAME`), so reading it costs one
//! lookup, and compaction keeps it (its key is its own).

use std::sync::Arc;

use plexus_connector::{ConnectorError, Position};
use plexus_log::{BatchBuilder, Compression, Log, LogError, Partition, ProducerId, TopicConfig};

use crate::task::log_error;

/// The internal topic of source positions.
pub const POSITIONS_TOPIC: &str = "__source_positions";

/// The partition of `__source_positions`, created on first use.
pub(crate) async fn partition(log: &Log) -> Result<Arc<Partition>, ConnectorError> {
    if log.topic(POSITIONS_TOPIC).is_none() {
        let config = TopicConfig {
            fsync: plexus_log::FsyncPolicy::Never,
            ..TopicConfig::compacted()
        };
        match log.create_topic(POSITIONS_TOPIC, config).await {
            Ok(_) | Err(LogError::TopicExists(_)) => {}
            Err(e) => return Err(log_error(e)),
        }
    }
    let topic = log
        .topic(POSITIONS_TOPIC)
        .ok_or_else(|| ConnectorError::retriable("the positions topic vanished"))?;
    topic.partition(0).cloned().map_err(log_error)
}

/// The producer id a connector's source task writes with now.
pub(crate) fn producer(markers: &Partition, connector: &str) -> ProducerId {
    match generation(markers, connector) {
        0 => ProducerId::from_name(connector),
        n => ProducerId::from_name(&format!("{connector}#{n}")),
    }
}

/// Where a connector's source resumes: the position of its newest marker.
pub(crate) fn resume_position(markers: &Partition, connector: &str) -> Option<Position> {
    markers
        .producer_position(producer(markers, connector))
        .map(|entry| Position::from_bytes(entry.position.as_bytes().clone()))
}

/// Moves a source to `position` (or, with `None`, back to its beginning), starting a
/// new generation so the records it emits again are written again. The source must
/// not be running.
pub(crate) async fn reset(log: &Log, connector: &str, position: Option<&Position>) -> Result<(), ConnectorError> {
    let markers = partition(log).await?;
    let next = generation(&markers, connector) + 1;
    let mut builder = BatchBuilder::new(Compression::None);
    let key = generation_producer_name(connector);
    builder.push(crate::now_ms(), Some(key.as_bytes()), Some(&next.to_be_bytes()), &[]);
    markers
        .append_with_position(
            &mut builder,
            ProducerId::from_name(&key),
            plexus_log::Position::from_u64(next),
        )
        .await
        .map_err(log_error)?;
    if let Some(position) = position {
        let producer = producer(&markers, connector);
        builder.push(
            crate::now_ms(),
            Some(connector.as_bytes()),
            Some(position.as_bytes()),
            &[],
        );
        markers
            .append_with_position(
                &mut builder,
                producer,
                plexus_log::Position::from_bytes(position.as_bytes().clone()),
            )
            .await
            .map_err(log_error)?;
    }
    markers.flush().await.map_err(log_error)
}

fn generation_producer_name(connector: &str) -> String {
    format!("generation:{connector}")
}

fn generation(markers: &Partition, connector: &str) -> u64 {
    markers
        .producer_position(ProducerId::from_name(&generation_producer_name(connector)))
        .and_then(|entry| <[u8; 8]>::try_from(entry.position.as_bytes().as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}
