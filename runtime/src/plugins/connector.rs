//! Plugin connector types as the runtime sees them: a [`ConnectorFactory`] whose
//! sources and sinks forward each call to the library.
//!
//! Every call runs on the runtime's blocking pool (`spawn_blocking`), where the plugin
//! blocks on the connector's future on its own runtime; the worker's async threads
//! never wait for a plugin. A call whose future the task drops (a shutdown) still runs
//! to its end there, and the instance is released only after it.

use std::sync::Arc;

use parking_lot::Mutex;
use plexus_config::{ConfigSchema, ConnectorKind, Settings};
use plexus_connector::{
    ConnectorError, ConnectorFactory, Poll, Position, Sink, SinkContext, SinkOffsets, SinkRecord, Source,
    SourceContext, async_trait,
};
use plexus_plugin_sdk::descriptor::settings_to_json;

use super::library::{Instance, PluginLibrary};

/// A connector type offered by a plugin.
pub(crate) struct PluginFactory {
    pub library: Arc<PluginLibrary>,
    pub type_name: String,
    pub kind: ConnectorKind,
    pub schema: ConfigSchema,
}

impl ConnectorFactory for PluginFactory {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn kind(&self) -> ConnectorKind {
        self.kind
    }

    fn schema(&self) -> &ConfigSchema {
        &self.schema
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        let instance = self.instance(ConnectorKind::Source, settings)?;
        Ok(Box::new(PluginSource {
            instance,
            name: String::new(),
        }))
    }

    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        let instance = self.instance(ConnectorKind::Sink, settings)?;
        Ok(Box::new(PluginSink {
            instance,
            name: String::new(),
        }))
    }

    fn position_to_json(&self, position: &Position) -> serde_json::Value {
        self.library
            .position_to_json(&self.type_name, position)
            .unwrap_or_else(|e| {
                tracing::warn!(plugin = self.library.name(), error = %e, "The plugin cannot show a position; showing its bytes.");
                serde_json::json!({ "hex": position.to_string() })
            })
    }

    fn position_from_json(&self, value: &serde_json::Value) -> Result<Position, String> {
        self.library
            .position_from_json(&self.type_name, value)
            .map_err(|e| e.to_string())
    }
}

impl PluginFactory {
    fn instance(&self, kind: ConnectorKind, settings: &Settings) -> Result<Shared, ConnectorError> {
        if kind != self.kind {
            return Err(ConnectorError::config(format!("`{}` is not a {kind}", self.type_name)));
        }
        let instance = self
            .library
            .instance(kind, &self.type_name, &settings_to_json(settings))?;
        Ok(Arc::new(Mutex::new(instance)))
    }
}

/// An instance, shared with the blocking call running on it.
type Shared = Arc<Mutex<Instance>>;

/// Runs `call` on the instance on a blocking thread, inside a span naming the
/// connector (the plugin's log lines carry it).
async fn blocking<T: Send + 'static>(
    instance: &Shared,
    connector: &str,
    call: impl FnOnce(&mut Instance) -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    let instance = Arc::clone(instance);
    let span = tracing::info_span!("plugin", connector = %connector);
    tokio::task::spawn_blocking(move || span.in_scope(|| call(&mut instance.lock())))
        .await
        .map_err(|e| ConnectorError::retriable(format!("a call into the plugin did not complete: {e}")))?
}

struct PluginSource {
    instance: Shared,
    /// The connector's, from `start` on.
    name: String,
}

#[async_trait]
impl Source for PluginSource {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        let ctx = ctx.clone();
        self.name = ctx.name().to_owned();
        blocking(&self.instance, &self.name, move |i| {
            i.source_start(ctx, resume.as_ref())
        })
        .await
    }

    async fn poll(&mut self, ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        blocking(&self.instance, ctx.name(), Instance::source_poll).await
    }

    async fn commit(&mut self, position: &Position) -> Result<(), ConnectorError> {
        let position = position.clone();
        blocking(&self.instance, &self.name, move |i| i.source_commit(&position)).await
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        blocking(&self.instance, &self.name, Instance::stop).await
    }
}

struct PluginSink {
    instance: Shared,
    /// The connector's, from `start` on.
    name: String,
}

#[async_trait]
impl Sink for PluginSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        let ctx = ctx.clone();
        self.name = ctx.name().to_owned();
        blocking(&self.instance, &self.name, move |i| i.sink_start(ctx)).await
    }

    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        blocking(&self.instance, ctx.name(), move |i| i.sink_write(&records)).await
    }

    async fn flush(&mut self, ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        let offsets = offsets.clone();
        blocking(&self.instance, ctx.name(), move |i| i.sink_flush(&offsets)).await
    }

    fn durable_offsets(&self) -> Option<SinkOffsets> {
        // Quick and synchronous in the contract: called in place.
        match self.instance.lock().sink_durable_offsets() {
            Ok(offsets) => offsets,
            Err(e) => {
                // Claim nothing durable rather than everything.
                tracing::error!(error = %e, "The plugin sink cannot tell its durable offsets; committing none.");
                Some(SinkOffsets::new())
            }
        }
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        blocking(&self.instance, &self.name, Instance::stop).await
    }
}
