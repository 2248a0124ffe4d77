//! What every task gets: the log, its configuration, metrics, dead letters, and the
//! signal to stop.

use std::sync::Arc;

use plexus_config::ConnectorConfig;
use plexus_connector::{ConnectorError, TaskMetrics};
use plexus_log::{LatencyHistogram, Log, LogError};
use tokio::sync::watch;

use crate::dead_letter::DeadLetterQueue;

/// How a task ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// A bounded source emitted everything.
    Finished,
    /// The worker asked it to stop (shutdown, reload, removal).
    Stopped,
}

pub(crate) struct TaskEnv {
    pub log: Log,
    pub connector: Arc<ConnectorConfig>,
    pub metrics: Arc<TaskMetrics>,
    pub dlq: Arc<DeadLetterQueue>,
    pub stop: watch::Receiver<bool>,
    /// True while the operator has the connector paused.
    pub pause: watch::Receiver<bool>,
    /// Time to append one polled batch (source) or to write one batch (sink).
    pub batch_latency: Arc<LatencyHistogram>,
    /// Bytes a sink task reads from the log at a time: its share of the worker's
    /// `memory_budget`.
    pub fetch_bytes: usize,
    pub backpressure: crate::backpressure::Backpressure,
}

impl TaskEnv {
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn paused(&self) -> bool {
        *self.pause.borrow()
    }

    /// Waits while paused; false if the task was asked to stop meanwhile.
    pub async fn wait_resumed(&self) -> bool {
        let mut pause = self.pause.clone();
        tokio::select! {
            resumed = pause.wait_for(|p| !*p) => resumed.is_ok(),
            _ = self.stop_requested() => false,
        }
    }

    /// Resolves when the worker asks the task to stop.
    pub async fn stop_requested(&self) {
        let mut stop = self.stop.clone();
        // An error means the worker is gone: stop too.
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Log errors seen by a task: a full disk or a failed write may pass, so retry.
pub(crate) fn log_error(err: LogError) -> ConnectorError {
    let retriable = !matches!(
        err,
        LogError::InvalidTopicName { .. } | LogError::InvalidTopicConfig { .. } | LogError::BatchTooLarge { .. }
    );
    if retriable {
        ConnectorError::retriable(err.to_string())
    } else {
        ConnectorError::fatal(err.to_string())
    }
}
