//! The worker: the embedded log plus one supervised task per connector, steered by
//! the files it was started with and by the REST API.
//!
//! Each connector runs under a supervisor. A task that fails with a retriable error is
//! restarted after an exponential backoff (`restart.initial_backoff` doubling up to
//! `restart.max_backoff`); after `restart.max_attempts` failures in a row, or on a
//! fatal error, it stays FAILED with its last error on the status board. One
//! connector's failure never touches the others.
//!
//! Operators pause, resume, stop and restart connectors, change their configuration
//! and move their offsets through [`Worker`]'s control methods (the REST API calls
//! them). What they change is stored in the data directory (see [`crate::store`]) and
//! survives restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use parking_lot::Mutex;
use plexus_config::{Config, ConnectorConfig, ConnectorKind, RestartPolicy, WorkerConfig};
use plexus_connector::{ConnectorError, TaskMetrics};
use plexus_log::{LatencyHistogram, Log, LogConfig};
use serde_json::{Map, Value as Json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backpressure::{Backpressure, SinkTopics};
use crate::dead_letter::DeadLetterQueue;
use crate::registry::Registry;
use crate::status::{StatusBoard, TaskState};
use crate::store::{self, ConnectorStore, Stored, TargetState};
use crate::task::{TaskEnd, TaskEnv};
use crate::{positions, sink_task, source_task};

/// Where a connector's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file given to `plexus run`.
    File(PathBuf),
    /// The REST API (stored under `<data_dir>/connectors/`).
    Api,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file:{}", path.display()),
            Origin::Api => f.write_str("api"),
        }
    }
}

/// A connector as seen from outside: for the REST API, metrics, the terminal.
#[derive(Debug, Clone)]
pub struct ConnectorView {
    pub name: String,
    pub type_name: String,
    pub kind: ConnectorKind,
    /// A source's topic (template), or the topics a sink reads.
    pub topics: Vec<String>,
    pub state: TaskState,
    pub target: TargetState,
    pub restarts: u32,
    pub last_error: Option<(String, SystemTime)>,
    pub metrics: Arc<TaskMetrics>,
    /// Time to append one polled batch (source) or to write one batch (sink).
    pub batch_latency: Arc<LatencyHistogram>,
    pub config: Arc<ConnectorConfig>,
    pub origin: Origin,
}

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connector `{0}` not found")]
    NotFound(String),
    /// The request conflicts with the connector's state (offsets of a running connector...).
    #[error("{0}")]
    Conflict(String),
    /// The configuration has problems; each is `file:line:col: error: ...`.
    #[error("{message}")]
    Invalid { message: String, problems: Vec<String> },
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    fn invalid(message: impl Into<String>) -> ControlError {
        let message = message.into();
        ControlError::Invalid {
            problems: vec![message.clone()],
            message,
        }
    }

    fn io(what: &str) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
        move |e| ControlError::Internal(format!("{what}: {e}"))
    }
}

/// A source's or a sink's offsets, as the REST API shows them (Kafka Connect's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetEntry {
    pub partition: Json,
    /// `None` removes the offset (sinks only).
    pub offset: Option<Json>,
}

/// A connector's counters, kept across restarts and replacements.
type Counters = (Arc<TaskMetrics>, Arc<LatencyHistogram>);

/// The running task of a connector.
struct RunningTask {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// A connector the worker knows, running or not.
struct Connector {
    config: Arc<ConnectorConfig>,
    origin: Origin,
    target: TargetState,
    metrics: Arc<TaskMetrics>,
    batch_latency: Arc<LatencyHistogram>,
    pause: watch::Sender<bool>,
    task: Option<RunningTask>,
}

/// A worker running connectors against an embedded log.
pub struct Worker {
    log: Log,
    /// Replaced on a reload that found new plugins.
    registry: parking_lot::RwLock<Registry>,
    worker: WorkerConfig,
    id: OnceLock<String>,
    host: String,
    status: StatusBoard,
    connectors: Mutex<BTreeMap<String, Connector>>,
    /// What the files define now, to tell whether they changed since an API change.
    files: Mutex<BTreeMap<String, ConnectorConfig>>,
    store: ConnectorStore,
    sinks: SinkTopics,
    /// Counters of removed connectors, for a successor of the same name.
    retired: Mutex<BTreeMap<String, Counters>>,
    /// One control operation at a time: two requests on one connector never interleave.
    control: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("data_dir", &self.worker.data_dir)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Opens the log in the configured data directory and starts every connector: those
    /// of the files, merged with what the REST API stored (see [`crate::store`]).
    pub async fn start(config: &Config, registry: Registry) -> anyhow::Result<Worker> {
        let mut log_config = LogConfig::new(&config.worker.data_dir);
        log_config.auto_create_topics = config.worker.auto_create_topics;
        log_config.default_topic.partitions = config.worker.default_partitions;
        let log = Log::open(log_config)
            .await
            .with_context(|| format!("open the log in `{}`", config.worker.data_dir.display()))?;
        let store = ConnectorStore::open(&config.worker.data_dir).with_context(|| {
            format!(
                "open the connector store in `{}`",
                config.worker.data_dir.join("connectors").display()
            )
        })?;
        let worker = Worker {
            log,
            registry: parking_lot::RwLock::new(registry),
            worker: config.worker.clone(),
            id: OnceLock::new(),
            host: hostname(),
            status: StatusBoard::default(),
            connectors: Mutex::new(BTreeMap::new()),
            files: Mutex::new(BTreeMap::new()),
            store,
            sinks: SinkTopics::default(),
            retired: Mutex::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
        };
        worker.reload(config).await;
        Ok(worker)
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.worker.data_dir
    }

    /// How long a connector gets to stop cleanly.
    pub fn shutdown_timeout(&self) -> Duration {
        self.worker.shutdown_timeout
    }

    /// The connector types it knows now.
    pub fn registry(&self) -> Registry {
        self.registry.read().clone()
    }

    /// Replaces the connector types (a reload that rescanned the plugins); connectors
    /// started from then on use the new ones.
    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write() = registry;
    }

    /// `host:port` of the REST API once it listens, the host name before.
    pub fn id(&self) -> &str {
        self.id.get().map_or(&self.host, String::as_str)
    }

    /// Names the worker after the address its REST API listens on (once).
    pub fn set_rest_port(&self, port: u16) {
        let _ = self.id.set(format!("{}:{port}", self.host));
    }

    /// Records processed so far per connector.
    pub fn metrics(&self) -> BTreeMap<String, Arc<TaskMetrics>> {
        self.connectors
            .lock()
            .iter()
            .map(|(name, c)| (name.clone(), Arc::clone(&c.metrics)))
            .collect()
    }

    /// Every connector, by name.
    pub fn connectors(&self) -> Vec<ConnectorView> {
        let connectors = self.connectors.lock();
        connectors.iter().map(|(name, c)| self.view(name, c)).collect()
    }

    pub fn connector(&self, name: &str) -> Option<ConnectorView> {
        let connectors = self.connectors.lock();
        connectors.get(name).map(|c| self.view(name, c))
    }

    fn view(&self, name: &str, c: &Connector) -> ConnectorView {
        let status = self.status.get(name);
        let board = status.as_ref().map_or(TaskState::Stopped, |s| s.state);
        let state = match (c.target, board) {
            (TargetState::Stopped, _) => TaskState::Stopped,
            (TargetState::Paused, TaskState::Running) => TaskState::Paused,
            (_, state) => state,
        };
        ConnectorView {
            name: name.to_owned(),
            type_name: c.config.type_name.clone(),
            kind: c.config.kind,
            topics: c.config.topics.clone(),
            state,
            target: c.target,
            restarts: status.as_ref().map_or(0, |s| s.restarts),
            last_error: status.and_then(|s| s.last_error),
            metrics: Arc::clone(&c.metrics),
            batch_latency: Arc::clone(&c.batch_latency),
            config: Arc::clone(&c.config),
            origin: c.origin.clone(),
        }
    }

    /// Applies the files' configuration without a restart: connectors that were removed
    /// or changed are stopped (gracefully), new and changed ones are started. Changes
    /// made through the API stay unless the file's definition changed since (the most
    /// recent change wins; see docs/rest-api.md).
    pub async fn reload(&self, config: &Config) {
        let _control = self.control.lock().await;
        *self.files.lock() = config.connectors.iter().map(|c| (c.name.clone(), c.clone())).collect();
        let wanted = self.wanted(&config.connectors);
        let states = self.store.states().unwrap_or_else(|e| {
            tracing::error!(error = %e, "Cannot read the stored connector states; running every connector.");
            BTreeMap::new()
        });
        let current: Vec<(String, Arc<ConnectorConfig>)> = self
            .connectors
            .lock()
            .iter()
            .map(|(n, c)| (n.clone(), Arc::clone(&c.config)))
            .collect();
        for (name, config) in &current {
            match wanted.get(name) {
                None => {
                    tracing::info!(connector = %name, "Removing connector: no longer configured.");
                    self.remove(name).await;
                }
                Some((new, _)) if !same_connector(new, config) => {
                    tracing::info!(connector = %name, "Restarting connector with its new configuration.");
                    self.remove(name).await;
                }
                Some(_) => {}
            }
        }
        for (name, (config, origin)) in wanted {
            if self.connectors.lock().contains_key(&name) {
                continue;
            }
            let target = states.get(&name).copied().unwrap_or(TargetState::Running);
            self.add(config, origin, target);
        }
    }

    /// The connectors to run: the files' merged with the store's.
    fn wanted(&self, files: &[ConnectorConfig]) -> BTreeMap<String, (ConnectorConfig, Origin)> {
        let mut stored = self.store.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "Cannot read the connectors stored by the REST API; running the files' only.");
            BTreeMap::new()
        });
        let mut wanted = BTreeMap::new();
        for file in files {
            let origin = Origin::File(file.location.file.clone());
            let print = store::fingerprint(file);
            match stored.remove(&file.name) {
                None => {
                    wanted.insert(file.name.clone(), (file.clone(), origin));
                }
                Some(Stored::Deleted { base }) if base == print => {}
                Some(Stored::Config { path, text, base }) if base.as_deref() == Some(print.as_str()) => {
                    if let Some(config) = self.parse_stored(&file.name, &path, &text) {
                        wanted.insert(file.name.clone(), (config, Origin::Api));
                    }
                }
                Some(_) => {
                    tracing::warn!(connector = %file.name, file = %file.location.file.display(), "The file's definition changed after the REST API changed this connector; the file wins.");
                    if let Err(e) = self.store.forget_change(&file.name) {
                        tracing::error!(connector = %file.name, error = %e, "Cannot drop the stored API change.");
                    }
                    wanted.insert(file.name.clone(), (file.clone(), origin));
                }
            }
        }
        for (name, change) in stored {
            match change {
                Stored::Config { path, text, base: None } => {
                    if let Some(config) = self.parse_stored(&name, &path, &text) {
                        wanted.insert(name, (config, Origin::Api));
                    }
                }
                // It replaced a file definition that is gone: the file changed since.
                _ => {
                    tracing::warn!(connector = %name, "The files no longer define this connector, which the REST API had changed; dropping the stored change.");
                    if let Err(e) = self.store.forget_change(&name) {
                        tracing::error!(connector = %name, error = %e, "Cannot drop the stored API change.");
                    }
                }
            }
        }
        wanted
    }

    fn parse_stored(&self, name: &str, path: &std::path::Path, text: &str) -> Option<ConnectorConfig> {
        match Config::load_str(&[(path.to_owned(), text.to_owned())], &self.registry(), &env_var) {
            Ok(config) => config.connectors.into_iter().find(|c| c.name == name),
            Err(problems) => {
                tracing::error!(connector = name, problems = %problems, "A connector stored by the REST API is invalid; not starting it. Fix or delete the file.");
                None
            }
        }
    }

    /// Waits until every connector has finished, failed or been stopped (bounded
    /// sources), or the timeout passes; returns whether they all ended.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let all_done = self
                .connectors()
                .iter()
                .all(|c| matches!(c.state, TaskState::Finished | TaskState::Failed | TaskState::Stopped));
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
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let _control = self.control.lock().await;
        let tasks: Vec<(String, RunningTask)> = {
            let mut connectors = self.connectors.lock();
            connectors
                .iter_mut()
                .filter_map(|(name, c)| c.task.take().map(|t| (name.clone(), t)))
                .collect()
        };
        for (_, task) in &tasks {
            let _ = task.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + self.worker.shutdown_timeout;
        for (name, task) in tasks {
            let mut handle = task.handle;
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                tracing::warn!(connector = %name, "Connector did not stop in time; aborting it.");
                handle.abort();
            }
        }
        self.log.clone().close().await.context("close the log")?;
        Ok(())
    }

    // ---- Control: what the REST API calls. ----

    /// Checks a connector's JSON configuration as `plexus validate` checks a file,
    /// located in the file the API would store it in.
    pub fn validate(&self, name: &str, config: &Map<String, Json>) -> Result<ConnectorConfig, ControlError> {
        let text = store::json_to_toml(name, config).map_err(ControlError::invalid)?;
        let path = self.store.path(name);
        let loaded = Config::load_str(&[(path, text)], &self.registry(), &env_var).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ControlError::Invalid {
                message: format!(
                    "{} problem(s) in the configuration of `{name}`:\n{problems}",
                    list.len()
                ),
                problems: list,
            }
        })?;
        loaded
            .connectors
            .into_iter()
            .next()
            .ok_or_else(|| ControlError::invalid("the configuration defines no connector"))
    }

    /// Creates a connector; `Conflict` if one of that name exists.
    pub async fn create(&self, name: &str, config: &Map<String, Json>) -> Result<ConnectorView, ControlError> {
        let _control = self.control.lock().await;
        if self.connectors.lock().contains_key(name) {
            return Err(ControlError::Conflict(format!("connector `{name}` already exists")));
        }
        let checked = self.validate(name, config)?;
        self.persist(name, config)?;
        self.add(checked, Origin::Api, TargetState::Running);
        self.connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    /// Creates or replaces a connector's configuration; `true` when it was created.
    /// A secret given as `"***"` keeps its current value.
    pub async fn put_config(
        &self,
        name: &str,
        config: &Map<String, Json>,
    ) -> Result<(ConnectorView, bool), ControlError> {
        let _control = self.control.lock().await;
        let existing = self
            .connectors
            .lock()
            .get(name)
            .map(|c| (Arc::clone(&c.config), c.target));
        let mut config = config.clone();
        if let Some((old, _)) = &existing {
            keep_secrets(&mut config, old);
        }
        let checked = self.validate(name, &config)?;
        self.persist(name, &config)?;
        let created = match existing {
            Some((old, _)) if same_connector(&old, &checked) => {
                // Nothing that matters changed; the stored origin is the API now.
                if let Some(c) = self.connectors.lock().get_mut(name) {
                    c.origin = Origin::Api;
                }
                false
            }
            Some((_, target)) => {
                self.remove(name).await;
                self.add(checked, Origin::Api, target);
                false
            }
            None => {
                self.add(checked, Origin::Api, TargetState::Running);
                true
            }
        };
        let view = self
            .connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        Ok((view, created))
    }

    /// Applies a JSON merge patch (RFC 7386) to a connector's configuration.
    pub async fn patch_config(&self, name: &str, patch: &Json) -> Result<ConnectorView, ControlError> {
        let current = self
            .connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        let mut merged = store::config_to_json(&current.config, false);
        merge_patch(&mut merged, patch);
        let Json::Object(merged) = merged else {
            return Err(ControlError::invalid("the patched configuration is not an object"));
        };
        self.put_config(name, &merged).await.map(|(view, _)| view)
    }

    /// Stops and removes a connector. Its offsets stay in the log.
    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        let _control = self.control.lock().await;
        if !self.connectors.lock().contains_key(name) {
            return Err(ControlError::NotFound(name.to_owned()));
        }
        self.remove(name).await;
        let file = self.files.lock().get(name).map(store::fingerprint);
        match file {
            Some(print) => self.store.save_deleted(name, &print),
            None => self.store.forget(name),
        }
        .map_err(ControlError::io("store the deletion"))?;
        self.store
            .set_state(name, TargetState::Running)
            .map_err(ControlError::io("store the state"))
    }

    /// Pauses a connector: its task stays up but neither polls nor writes.
    pub async fn pause(&self, name: &str) -> Result<(), ControlError> {
        let _control = self.control.lock().await;
        let mut connectors = self.connectors.lock();
        let c = connectors
            .get_mut(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if c.target == TargetState::Stopped {
            return Err(ControlError::Conflict(format!(
                "connector `{name}` is STOPPED; resume it before pausing it"
            )));
        }
        c.target = TargetState::Paused;
        let _ = c.pause.send(true);
        // A paused sink does not hold up the sources: the log absorbs the difference.
        self.sinks.write().remove(name);
        drop(connectors);
        self.store
            .set_state(name, TargetState::Paused)
            .map_err(ControlError::io("store the state"))
    }

    /// Resumes a paused or stopped connector.
    pub async fn resume(&self, name: &str) -> Result<(), ControlError> {
        let _control = self.control.lock().await;
        let mut connectors = self.connectors.lock();
        let count = connectors.len();
        let c = connectors
            .get_mut(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        c.target = TargetState::Running;
        let _ = c.pause.send(false);
        if c.task.is_none() {
            let share = self.fetch_share(count);
            self.spawn_with(name, c, share);
        } else if c.config.kind == ConnectorKind::Sink {
            self.sinks.write().insert(name.to_owned(), c.config.topics.clone());
        }
        drop(connectors);
        self.store
            .set_state(name, TargetState::Running)
            .map_err(ControlError::io("store the state"))
    }

    /// Shuts a connector's task down (it commits its in-flight batch); its
    /// configuration stays, and its offsets can then be changed.
    pub async fn stop(&self, name: &str) -> Result<(), ControlError> {
        let _control = self.control.lock().await;
        let task = {
            let mut connectors = self.connectors.lock();
            let c = connectors
                .get_mut(name)
                .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
            c.target = TargetState::Stopped;
            c.task.take()
        };
        self.sinks.write().remove(name);
        if let Some(task) = task {
            self.stop_task(name, task).await;
        }
        self.store
            .set_state(name, TargetState::Stopped)
            .map_err(ControlError::io("store the state"))
    }

    /// Restarts a connector's task (only a FAILED one with `only_failed`); returns
    /// whether it was restarted.
    pub async fn restart(&self, name: &str, only_failed: bool) -> Result<bool, ControlError> {
        let _control = self.control.lock().await;
        let view = self
            .connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if view.target == TargetState::Stopped {
            return Err(ControlError::Conflict(format!(
                "connector `{name}` is STOPPED; resume it to start it again"
            )));
        }
        if only_failed && view.state != TaskState::Failed {
            return Ok(false);
        }
        let task = self.connectors.lock().get_mut(name).and_then(|c| c.task.take());
        if let Some(task) = task {
            self.stop_task(name, task).await;
        }
        let mut connectors = self.connectors.lock();
        let share = self.fetch_share(connectors.len());
        if let Some(c) = connectors.get_mut(name) {
            self.spawn_with(name, c, share);
        }
        Ok(true)
    }

    /// A connector's offsets: a sink's committed offsets per partition, or a source's
    /// position. Readable in any state (a running connector's move on as it works).
    pub async fn offsets(&self, name: &str) -> Result<Vec<OffsetEntry>, ControlError> {
        let view = self
            .connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        match view.kind {
            ConnectorKind::Sink => {
                let mut out = Vec::new();
                for topic in &view.topics {
                    let Some(t) = self.log.topic(topic) else { continue };
                    for p in t.partitions() {
                        if let Some(committed) = self.log.groups().committed(name, topic, p.id()) {
                            out.push(OffsetEntry {
                                partition: serde_json::json!({"kafka_topic": topic, "kafka_partition": p.id()}),
                                offset: Some(serde_json::json!({"kafka_offset": committed.offset})),
                            });
                        }
                    }
                }
                Ok(out)
            }
            ConnectorKind::Source => {
                let markers = positions::partition(&self.log).await.map_err(internal)?;
                let Some(position) = positions::resume_position(&markers, name) else {
                    return Ok(Vec::new());
                };
                let factory = self.factory(&view)?;
                Ok(vec![OffsetEntry {
                    partition: serde_json::json!({ "connector": name }),
                    offset: Some(factory.position_to_json(&position)),
                }])
            }
        }
    }

    /// Changes a STOPPED connector's offsets.
    pub async fn alter_offsets(&self, name: &str, entries: &[OffsetEntry]) -> Result<String, ControlError> {
        let _control = self.control.lock().await;
        let view = self.stopped(name, "change")?;
        match view.kind {
            ConnectorKind::Sink => {
                let mut commits = Vec::new();
                let mut removals = Vec::new();
                for entry in entries {
                    let (topic, partition) = sink_partition(&entry.partition)?;
                    if !view.topics.contains(&topic) {
                        return Err(ControlError::invalid(format!(
                            "connector `{name}` does not read topic `{topic}` (it reads {})",
                            view.topics.join(", ")
                        )));
                    }
                    let partitions = self.log.topic(&topic).map_or(0, |t| t.partitions().len() as u32);
                    if partition >= partitions {
                        return Err(ControlError::invalid(format!(
                            "topic `{topic}` has no partition {partition} (it has {partitions})"
                        )));
                    }
                    match &entry.offset {
                        None | Some(Json::Null) => removals.push((topic, partition)),
                        Some(offset) => {
                            let offset = offset
                                .get("kafka_offset")
                                .and_then(Json::as_i64)
                                .filter(|o| *o >= 0)
                                .ok_or_else(|| {
                                    ControlError::invalid(format!(
                                        "the offset of {topic}/{partition} must be {{\"kafka_offset\": N}} with N >= 0, found {offset}"
                                    ))
                                })?;
                            commits.push((topic, partition, offset));
                        }
                    }
                }
                let groups = self.log.groups();
                if !removals.is_empty() {
                    // Keep the others: rewrite the group without the removed partitions.
                    let kept: Vec<(String, u32, i64)> = groups
                        .group_offsets(name)
                        .into_iter()
                        .filter(|(t, p, _)| !removals.iter().any(|(rt, rp)| rt == t && rp == p))
                        .map(|(t, p, c)| (t, p, c.offset))
                        .collect();
                    groups.delete_group(name).await.map_err(internal)?;
                    let kept: Vec<(&str, u32, i64)> = kept.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
                    if !kept.is_empty() {
                        groups.commit_many(name, &kept, "").await.map_err(internal)?;
                    }
                }
                let commits: Vec<(&str, u32, i64)> = commits.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
                if !commits.is_empty() {
                    groups.commit_many(name, &commits, "").await.map_err(internal)?;
                }
                Ok("The offsets for this connector have been altered successfully".to_owned())
            }
            ConnectorKind::Source => {
                let [entry] = entries else {
                    return Err(ControlError::invalid(format!(
                        "a source has one offset, its position; found {} entries",
                        entries.len()
                    )));
                };
                let factory = self.factory(&view)?;
                let position = match &entry.offset {
                    None | Some(Json::Null) => None,
                    Some(offset) => Some(factory.position_from_json(offset).map_err(|e| {
                        ControlError::invalid(format!("not a position of a `{}` source: {e}", view.type_name))
                    })?),
                };
                positions::reset(&self.log, name, position.as_ref())
                    .await
                    .map_err(internal)?;
                Ok(match position {
                    Some(_) => "The offsets for this connector have been altered successfully; it resumes from the given position and writes what it reads again".to_owned(),
                    None => "The offsets for this connector have been reset successfully; it starts from the beginning".to_owned(),
                })
            }
        }
    }

    /// Removes a STOPPED connector's offsets: a sink starts again at the beginning of
    /// its topics, a source from the beginning of its system.
    pub async fn reset_offsets(&self, name: &str) -> Result<String, ControlError> {
        let _control = self.control.lock().await;
        let view = self.stopped(name, "reset")?;
        match view.kind {
            ConnectorKind::Sink => {
                self.log.groups().delete_group(name).await.map_err(internal)?;
            }
            ConnectorKind::Source => {
                positions::reset(&self.log, name, None).await.map_err(internal)?;
            }
        }
        Ok("The offsets for this connector have been reset successfully".to_owned())
    }

    fn stopped(&self, name: &str, verb: &str) -> Result<ConnectorView, ControlError> {
        let view = self
            .connector(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if view.state != TaskState::Stopped {
            return Err(ControlError::Conflict(format!(
                "cannot {verb} the offsets of connector `{name}` while it is {}; stop it first (`plexus connectors stop {name}` or PUT /connectors/{name}/stop)",
                view.state.as_str()
            )));
        }
        Ok(view)
    }

    fn factory(&self, view: &ConnectorView) -> Result<Arc<dyn plexus_connector::ConnectorFactory>, ControlError> {
        self.registry()
            .get(&view.type_name)
            .cloned()
            .ok_or_else(|| ControlError::Internal(format!("unknown connector type `{}`", view.type_name)))
    }

    fn persist(&self, name: &str, config: &Map<String, Json>) -> Result<(), ControlError> {
        let body = store::json_to_toml(name, config).map_err(ControlError::invalid)?;
        let base = self.files.lock().get(name).map(store::fingerprint);
        self.store
            .save_config(name, &body, base.as_deref())
            .map_err(ControlError::io("store the configuration"))
    }

    // ---- Tasks. ----

    fn add(&self, config: ConnectorConfig, origin: Origin, target: TargetState) {
        let name = config.name.clone();
        let (pause, _) = watch::channel(target == TargetState::Paused);
        let mut connector = Connector {
            config: Arc::new(config),
            origin,
            target,
            metrics: Arc::new(TaskMetrics::default()),
            batch_latency: Arc::new(LatencyHistogram::default()),
            pause,
            task: None,
        };
        // Counters carry over when a connector is replaced, so they never go backwards.
        if let Some((metrics, latency)) = self.retired.lock().remove(&name) {
            connector.metrics = metrics;
            connector.batch_latency = latency;
        }
        if target != TargetState::Stopped {
            let share = self.fetch_share(self.connectors.lock().len() + 1);
            self.spawn_with(&name, &mut connector, share);
        } else {
            self.status.set(&name, &connector.config.type_name, TaskState::Stopped);
        }
        self.connectors.lock().insert(name, connector);
    }

    /// Each connector's share of the memory budget bounds what its task holds at once.
    fn fetch_share(&self, connectors: usize) -> usize {
        (self.worker.memory_budget.0 / connectors.max(1) as u64).clamp(64 << 10, 1 << 20) as usize
    }

    fn spawn_with(&self, name: &str, c: &mut Connector, share: usize) {
        let config = Arc::clone(&c.config);
        if config.kind == ConnectorKind::Sink && c.target == TargetState::Running {
            self.sinks.write().insert(name.to_owned(), config.topics.clone());
        }
        let (stop, stop_rx) = watch::channel(false);
        self.status.set(name, &config.type_name, TaskState::Running);
        let supervisor = Supervisor {
            fetch_bytes: share,
            backpressure: Backpressure {
                log: self.log.clone(),
                sinks: Arc::clone(&self.sinks),
                status: self.status.clone(),
                max_lag: self.worker.max_sink_lag,
            },
            log: self.log.clone(),
            registry: self.registry(),
            restart: self.worker.restart.clone(),
            status: self.status.clone(),
            config,
            metrics: Arc::clone(&c.metrics),
            batch_latency: Arc::clone(&c.batch_latency),
            stop: stop_rx,
            pause: c.pause.subscribe(),
        };
        let handle = tokio::spawn(supervisor.run());
        c.task = Some(RunningTask { stop, handle });
    }

    async fn stop_task(&self, name: &str, task: RunningTask) {
        tracing::info!(connector = name, "Stopping connector.");
        let _ = task.stop.send(true);
        let mut handle = task.handle;
        if tokio::time::timeout(self.worker.shutdown_timeout, &mut handle)
            .await
            .is_err()
        {
            tracing::warn!(connector = name, "Connector did not stop in time; aborting it.");
            handle.abort();
        }
        self.status.set(name, "", TaskState::Stopped);
    }

    /// Stops a connector's task and forgets the connector (its counters are kept for
    /// a successor of the same name).
    async fn remove(&self, name: &str) {
        let Some(mut c) = self.connectors.lock().remove(name) else {
            return;
        };
        self.sinks.write().remove(name);
        if let Some(task) = c.task.take() {
            self.stop_task(name, task).await;
        }
        self.status.remove(name);
        self.retired
            .lock()
            .insert(name.to_owned(), (c.metrics, c.batch_latency));
    }
}

fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(e.to_string())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `{"kafka_topic": "t", "kafka_partition": 0}`.
fn sink_partition(partition: &Json) -> Result<(String, u32), ControlError> {
    let topic = partition.get("kafka_topic").and_then(Json::as_str);
    let number = partition
        .get("kafka_partition")
        .and_then(Json::as_u64)
        .and_then(|p| u32::try_from(p).ok());
    match (topic, number) {
        (Some(topic), Some(number)) => Ok((topic.to_owned(), number)),
        _ => Err(ControlError::invalid(format!(
            "a sink's partition must be {{\"kafka_topic\": \"...\", \"kafka_partition\": N}}, found {partition}"
        ))),
    }
}

/// Settings sent back as `"***"` keep the value of the secret they hide.
fn keep_secrets(config: &mut Map<String, Json>, old: &ConnectorConfig) {
    let Some(Json::Object(settings)) = config.get_mut("settings") else {
        return;
    };
    for (key, value) in settings.iter_mut() {
        if value.as_str() == Some(plexus_config::REDACTED)
            && let Some(plexus_config::Value::Secret(secret)) = old.settings.get(key)
        {
            *value = Json::String(secret.expose().to_owned());
        }
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(Map::new());
    }
    if let Json::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Json::Null), value);
            }
        }
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
    batch_latency: Arc<LatencyHistogram>,
    stop: watch::Receiver<bool>,
    pause: watch::Receiver<bool>,
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
                    let state = match end {
                        TaskEnd::Finished => TaskState::Finished,
                        TaskEnd::Stopped => TaskState::Stopped,
                    };
                    self.status.set(&name, &self.config.type_name, state);
                    tracing::info!(connector = %name, end = ?end, "Connector ended.");
                    return;
                }
                Err(err) => err,
            };
            let stopping = *self.stop.borrow();
            failures += 1;
            self.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                    self.status.set(&name, &self.config.type_name, TaskState::Stopped);
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
            pause: self.pause.clone(),
            batch_latency: Arc::clone(&self.batch_latency),
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
