//! The `discard` sink: reads and drops everything (benchmarks, smoke tests).

use std::sync::LazyLock;

use plexus_config::{ConfigSchema, ConnectorKind, Settings};
use plexus_connector::{ConnectorError, ConnectorFactory, Sink, SinkContext, SinkOffsets, SinkRecord, async_trait};

static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| ConfigSchema { fields: Vec::new() });

/// Makes `discard` sinks.
#[derive(Debug, Default)]
pub struct DiscardFactory;

impl ConnectorFactory for DiscardFactory {
    fn type_name(&self) -> &str {
        "discard"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &SCHEMA
    }

    fn create_sink(&self, _settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(Discard))
    }
}

struct Discard;

#[async_trait]
impl Sink for Discard {
    async fn start(&mut self, _ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        Ok(None)
    }

    async fn write(&mut self, _ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        std::hint::black_box(records);
        Ok(())
    }

    async fn flush(&mut self, _ctx: &SinkContext, _offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        Ok(())
    }
}
