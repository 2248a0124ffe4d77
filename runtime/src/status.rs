//! What every connector is doing, for the terminal, logs, and later the REST API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

/// The state of a connector's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// Failed and waiting for its backoff before the next attempt.
    Restarting,
    /// Gave up: the error was not retriable or the attempts ran out.
    Failed,
    /// A bounded source emitted everything, or the worker stopped it.
    Finished,
    /// Up, but neither polling nor writing until resumed (`PUT .../pause`).
    Paused,
    /// Shut down on request (`PUT .../stop`); its configuration stays.
    Stopped,
}

impl TaskState {
    /// The name the REST API and the terminal show, as in Kafka Connect.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "RUNNING",
            TaskState::Restarting => "RESTARTING",
            TaskState::Failed => "FAILED",
            TaskState::Finished => "FINISHED",
            TaskState::Paused => "PAUSED",
            TaskState::Stopped => "STOPPED",
        }
    }

    /// Every state, for metrics that export one series per state.
    pub const ALL: [TaskState; 6] = [
        TaskState::Running,
        TaskState::Paused,
        TaskState::Stopped,
        TaskState::Restarting,
        TaskState::Failed,
        TaskState::Finished,
    ];
}

/// A connector's state and its last error.
#[derive(Debug, Clone)]
pub struct ConnectorStatus {
    pub type_name: String,
    pub state: TaskState,
    pub restarts: u32,
    pub last_error: Option<(String, SystemTime)>,
}

/// Statuses of all connectors, shared by the tasks and whoever reports them.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<String, ConnectorStatus>>>,
}

impl StatusBoard {
    pub fn get(&self, connector: &str) -> Option<ConnectorStatus> {
        self.inner.read().get(connector).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, ConnectorStatus> {
        self.inner.read().clone()
    }

    pub(crate) fn set(&self, connector: &str, type_name: &str, state: TaskState) {
        let mut map = self.inner.write();
        let entry = map.entry(connector.to_owned()).or_insert_with(|| ConnectorStatus {
            type_name: type_name.to_owned(),
            state,
            restarts: 0,
            last_error: None,
        });
        entry.state = state;
    }

    pub(crate) fn failed(&self, connector: &str, state: TaskState, error: String, restart: bool) {
        let mut map = self.inner.write();
        if let Some(entry) = map.get_mut(connector) {
            entry.state = state;
            entry.last_error = Some((error, SystemTime::now()));
            if restart {
                entry.restarts += 1;
            }
        }
    }

    pub(crate) fn remove(&self, connector: &str) {
        self.inner.write().remove(connector);
    }
}
