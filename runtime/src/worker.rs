//! The worker: the embedded log plus one supervised task per connector.
//!
//! Each connector runs under a supervisor. A task that fails with a retriable error is
//! restarted after an exponential backoff (`restart.initial_backoff` doubling up to
//! `restart.max_backoff`); after `restart.max_attempts` failures in a row, or on a
//! fatal error, it stays FAILED with its last error on the status board. One
//! connector's failure never touches the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use plexus_config::{Config, ConnectorConfig, ConnectorKind, RestartPolicy, WorkerConfig};
use plexus_connector::{ConnectorError, TaskMetrics};
use plexus_log::{Log, LogConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backpressure::{Backpressure, SinkTopics};
use crate::dead_letter::DeadLetterQueue;
use crate::registry::Registry;
use crate::status::{StatusBoard, TaskState};
use crate::task::{TaskEnd, TaskEnv};
use crate::{sink_task, source_task};

/// A running connector: its configuration, its stop switch, its supervisor.
struct Running {
    config: Arc<ConnectorConfig>,
    metrics: Arc<TaskMetrics>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// A worker running connectors against an embedded log.
pub struct Worker {
    log: Log,
    registry: Registry,
    worker: WorkerConfig,
    status: StatusBoard,
    running: Mutex<BTreeMap<String, Running>>,
    sinks: SinkTopics,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("data_dir", &self.worker.data_dir)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Opens the log in the configured data directory and starts every connector.
    pub async fn start(config: &Config, registry: Registry) -> anyhow::Result<Worker> {
        let mut log_config = LogConfig::new(&config.worker.data_dir);
        log_config.auto_create_topics = config.worker.auto_create_topics;
        log_config.default_topic.partitions = config.worker.default_partitions;
        let log = Log::open(log_config)
            .await
            .with_context(|| format!("open the log in `{}`", config.worker.data_dir.display()))?;
        let worker = Worker {
            log,
            registry,
            worker: config.worker.clone(),
            status: StatusBoard::default(),
            running: Mutex::new(BTreeMap::new()),
            sinks: SinkTopics::default(),
        };
        for connector in &config.connectors {
            worker.start_connector(connector.clone());
        }
        Ok(worker)
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// Records processed so far per connector.
    pub fn metrics(&self) -> BTreeMap<String, Arc<TaskMetrics>> {
        self.running
            .lock()
            .iter()
            .map(|(name, r)| (name.clone(), Arc::clone(&r.metrics)))
            .collect()
    }

    /// Applies a new configuration without a restart: connectors that were removed or
    /// changed are stopped (gracefully), new and changed ones are started.
    pub async fn reload(&self, config: &Config) {
        let wanted: BTreeMap<&str, &ConnectorConfig> = config.connectors.iter().map(|c| (c.name.as_str(), c)).collect();
        let to_stop: Vec<String> = {
            let running = self.running.lock();
            running
                .iter()
                .filter(|(name, r)| wanted.get(name.as_str()).is_none_or(|c| !same_connector(c, &r.config)))
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in &to_stop {
            self.stop_connector(name).await;
        }
        for connector in &config.connectors {
            if !self.running.lock().contains_key(&connector.name) {
                tracing::info!(connector = %connector.name, "Starting connector after reload.");
                self.start_connector(connector.clone());
            }
        }
    }

    /// Waits until every connector has finished or failed (bounded sources), or the
    /// timeout passes; returns whether they all ended.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all_done = self
                .status
                .all()
                .values()
                .all(|s| matches!(s.state, TaskState::Finished | TaskState::Failed));
            if all_done {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every connector (each finishes and commits its in-flight batch), waiting
    /// at most `shutdown_timeout`, then closes the log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let names: Vec<String> = self.running.lock().keys().cloned().collect();
        let deadline = tokio::time::Instant::now() + self.worker.shutdown_timeout;
        for name in &names {
            if let Some(r) = self.running.lock().get(name) {
                let _ = r.stop.send(true);
            }
        }
        for name in names {
            let Some(r) = self.running.lock().remove(&name) else {
                continue;
            };
            let mut handle = r.handle;
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                tracing::warn!(connector = %name, "Connector did not stop in time; aborting it.");
                handle.abort();
            }
        }
        self.log.close().await.context("close the log")?;
        Ok(())
    }

    fn start_connector(&self, connector: ConnectorConfig) {
        let config = Arc::new(connector);
        if config.kind == ConnectorKind::Sink {
            self.sinks.write().insert(config.name.clone(), config.topics.clone());
        }
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(TaskMetrics::default());
        self.status.set(&config.name, &config.type_name, TaskState::Running);
        // Each connector's share of the memory budget bounds what its task holds at once.
        let connectors = self.running.lock().len() as u64 + 1;
        let share = (self.worker.memory_budget.0 / connectors).clamp(64 << 10, 1 << 20) as usize;
        let supervisor = Supervisor {
            fetch_bytes: share,
            backpressure: Backpressure {
                log: self.log.clone(),
                sinks: Arc::clone(&self.sinks),
                status: self.status.clone(),
                max_lag: self.worker.max_sink_lag,
            },
            log: self.log.clone(),
            registry: self.registry.clone(),
            restart: self.worker.restart.clone(),
            status: self.status.clone(),
            config: Arc::clone(&config),
            metrics: Arc::clone(&metrics),
            stop: stop_rx,
        };
        let handle = tokio::spawn(supervisor.run());
        self.running.lock().insert(
            config.name.clone(),
            Running {
                config,
                metrics,
                stop,
                handle,
            },
        );
    }

    async fn stop_connector(&self, name: &str) {
        let Some(r) = self.running.lock().remove(name) else {
            return;
        };
        tracing::info!(connector = name, "Stopping connector.");
        let _ = r.stop.send(true);
        let mut handle = r.handle;
        if tokio::time::timeout(self.worker.shutdown_timeout, &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
        self.status.remove(name);
    }
}

/// Whether a reload leaves a connector as it is.
fn same_connector(a: &ConnectorConfig, b: &ConnectorConfig) -> bool {
    a.type_name == b.type_name
        && a.topics == b.topics
        && a.settings.to_json_exposed() == b.settings.to_json_exposed()
        && a.errors.dead_letter_topic == b.errors.dead_letter_topic
        && std::mem::discriminant(&a.errors.tolerance) == std::mem::discriminant(&b.errors.tolerance)
}

/// Runs one connector's task, restarting it with backoff.
struct Supervisor {
    log: Log,
    registry: Registry,
    restart: RestartPolicy,
    status: StatusBoard,
    config: Arc<ConnectorConfig>,
    metrics: Arc<TaskMetrics>,
    stop: watch::Receiver<bool>,
    fetch_bytes: usize,
    backpressure: Backpressure,
}

impl Supervisor {
    async fn run(mut self) {
        let name = self.config.name.clone();
        let mut failures = 0u32;
        loop {
            self.status.set(&name, &self.config.type_name, TaskState::Running);
            let started = Instant::now();
            let result = self.run_once().await;
            // A task that ran well for longer than the longest backoff starts counting anew.
            if started.elapsed() > self.restart.max_backoff {
                failures = 0;
            }
            let err = match result {
                Ok(end) => {
                    self.status.set(&name, &self.config.type_name, TaskState::Finished);
                    tracing::info!(connector = %name, end = ?end, "Connector ended.");
                    return;
                }
                Err(err) => err,
            };
            let stopping = *self.stop.borrow();
            failures += 1;
            if stopping || !err.is_retriable() || failures > self.restart.max_attempts {
                tracing::error!(connector = %name, error = %err, failures, "Connector failed; not restarting it.");
                self.status.failed(&name, TaskState::Failed, err.to_string(), false);
                return;
            }
            let backoff = backoff(&self.restart, failures);
            tracing::warn!(connector = %name, error = %err, attempt = failures, backoff_ms = backoff.as_millis() as u64, "Connector failed; restarting after a backoff.");
            self.status.failed(&name, TaskState::Restarting, err.to_string(), true);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => {
                    self.status.set(&name, &self.config.type_name, TaskState::Finished);
                    return;
                }
            }
        }
    }

    async fn run_once(&mut self) -> Result<TaskEnd, ConnectorError> {
        let factory = self
            .registry
            .get(&self.config.type_name)
            .cloned()
            .ok_or_else(|| ConnectorError::fatal(format!("unknown connector type `{}`", self.config.type_name)))?;
        let mut env = TaskEnv {
            log: self.log.clone(),
            connector: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            dlq: DeadLetterQueue::new(self.config.errors.clone()),
            stop: self.stop.clone(),
            fetch_bytes: self.fetch_bytes,
            backpressure: self.backpressure.clone(),
        };
        match factory.kind() {
            ConnectorKind::Source => {
                let mut source = factory.create_source(&self.config.settings)?;
                source_task::run(&mut env, source.as_mut()).await
            }
            ConnectorKind::Sink => {
                let mut sink = factory.create_sink(&self.config.settings)?;
                sink_task::run(&mut env, sink.as_mut()).await
            }
        }
    }
}

/// `initial * 2^(attempt-1)`, at most `max`.
fn backoff(policy: &RestartPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    policy.initial_backoff.saturating_mul(factor).min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = RestartPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let steps: Vec<u128> = (1..=6).map(|a| backoff(&policy, a).as_millis()).collect();
        assert_eq!(steps, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
