//! How far a sink is behind the log, in records: one rule for backpressure, metrics,
//! the status page and the terminal.
//!
//! A sink reads as the consumer group named after it. Its lag in a partition is the
//! partition's end offset minus the group's committed offset, or minus the partition's
//! start offset when nothing is committed (that is where the sink starts), never below 0.

use plexus_log::{Log, Partition};

/// The lag of sink `group` in one partition of `topic`.
pub fn partition_lag(log: &Log, group: &str, topic: &str, partition: &Partition) -> u64 {
    let committed = log
        .groups()
        .committed(group, topic, partition.id())
        .map_or_else(|| partition.start_offset(), |c| c.offset);
    u64::try_from(partition.end_offset().saturating_sub(committed)).unwrap_or(0)
}

/// The lag of sink `group` over every partition of the topics it reads (topics that do
/// not exist yet count 0).
pub fn sink_lag<'t>(log: &Log, group: &str, topics: impl IntoIterator<Item = &'t String>) -> u64 {
    let mut lag = 0;
    for topic in topics.into_iter().filter_map(|name| log.topic(name)) {
        for partition in topic.partitions() {
            lag += partition_lag(log, group, topic.name(), partition);
        }
    }
    lag
}
