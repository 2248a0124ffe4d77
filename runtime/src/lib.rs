//! `plexus-runtime`: the worker that runs connectors against the embedded log.
//!
//! Sources reach the log exactly once (positions stored with the data, see
//! [`source_task`]); sinks read it from committed or destination-stored offsets (see
//! [`sink_task`]). Each connector is supervised: failures restart with exponential
//! backoff, bad records follow the connector's error policy (dead-letter topic or
//! failure), and a shutdown lets every task finish and commit its in-flight batch.

pub mod api;
mod backpressure;
mod dead_letter;
mod discard;
pub mod lag;
pub mod metrics;
pub mod plugins;
mod positions;
pub mod progress;
mod records;
mod registry;
mod schemas;
pub mod sink_task;
pub mod source_task;
mod status;
mod store;
mod task;
pub mod ui;
mod worker;

pub use api::RestServer;
pub use dead_letter::{HEADER_CONNECTOR, HEADER_ORIGIN, HEADER_REASON};
pub use discard::DiscardFactory;
pub use plugins::{PluginError, PluginHost, PluginScan};
pub use registry::Registry;
pub use source_task::{POSITIONS_TOPIC, TABLE_PLACEHOLDER};
pub use status::{ConnectorStatus, StatusBoard, TaskState};
pub use store::TargetState;
pub use task::TaskEnd;
pub use worker::{ConnectorView, ControlError, OffsetEntry, Origin, Worker};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
