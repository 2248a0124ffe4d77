//! Backpressure from sinks to sources in the same worker.
//!
//! The log decouples sources from sinks: a slow sink only lets its topic grow on disk,
//! never memory. So that the disk does not fill either, a source pauses while a sink of
//! this worker that reads one of its topics has more than `max_sink_lag` records not
//! yet committed, and goes on when the sink catches up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use plexus_log::Log;

use crate::source_task::TABLE_PLACEHOLDER;
use crate::status::{StatusBoard, TaskState};

/// Sinks of the worker, by name, with the topics they read.
pub(crate) type SinkTopics = Arc<RwLock<BTreeMap<String, Vec<String>>>>;

#[derive(Clone)]
pub(crate) struct Backpressure {
    pub log: Log,
    pub sinks: SinkTopics,
    pub status: StatusBoard,
    pub max_lag: u64,
}

impl Backpressure {
    /// The largest number of uncommitted records of one sink, over the topics that a
    /// source with this `topic` template writes.
    pub fn lag(&self, template: &str) -> u64 {
        let sinks = self.sinks.read();
        let mut worst = 0u64;
        for (sink, topics) in sinks.iter() {
            // A failed sink does not hold up the pipeline: one connector's failure
            // never stops the others.
            if self.status.get(sink).is_some_and(|s| s.state == TaskState::Failed) {
                continue;
            }
            let lag = crate::lag::sink_lag(&self.log, sink, topics.iter().filter(|t| covers(template, t)));
            worst = worst.max(lag);
        }
        worst
    }

    /// Waits while a sink is too far behind, counting the records the source has
    /// polled but not yet appended (`unwritten`) as lag already; `false` if `stop`
    /// fired meanwhile.
    pub async fn wait(
        &self,
        connector: &str,
        template: &str,
        unwritten: impl Fn() -> u64,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        if self.max_lag == 0 {
            return true;
        }
        tokio::pin!(stop);
        let mut paused = false;
        loop {
            let lag = self.lag(template) + unwritten();
            if lag <= self.max_lag {
                if paused {
                    tracing::info!(connector, lag, "Source resumed: the sinks caught up.");
                }
                return true;
            }
            if !paused {
                tracing::info!(
                    connector,
                    lag,
                    max = self.max_lag,
                    "Source paused: a sink of its topics is behind."
                );
                paused = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut stop => return false,
            }
        }
    }
}

/// Whether a source `topic` (possibly with `{table}`) writes to `topic`.
fn covers(template: &str, topic: &str) -> bool {
    match template.split_once(TABLE_PLACEHOLDER) {
        None => template == topic,
        Some((prefix, suffix)) => {
            topic.len() > prefix.len() + suffix.len() && topic.starts_with(prefix) && topic.ends_with(suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_cover_their_topics() {
        assert!(covers("orders", "orders"));
        assert!(!covers("orders", "orders2"));
        assert!(covers("shop.{table}", "shop.orders"));
        assert!(!covers("shop.{table}", "shop."));
        assert!(!covers("shop.{table}", "other.orders"));
        assert!(covers("{table}.cdc", "orders.cdc"));
    }
}
