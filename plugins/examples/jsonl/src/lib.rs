//! `jsonl`: sink plugins.
//!
//! - `jsonl-sink` writes every record as one JSON line to a file (or to standard
//!   output with `path = "-"`): topic, partition, offset, timestamp, key, value and
//!   headers. Values that are JSON are embedded, others are strings; with
//!   `require_json` they go to the dead-letter policy instead. With `schema_table`
//!   the table named by the record's schema (its `plexus.schema` header, looked up in
//!   the worker's schema registry) is added as `table`. A flush syncs the file.
//! - `blackhole` reads and drops everything, exactly as the built-in `discard` sink
//!   does: `plexus bench plugin` measures the cost of the plugin boundary with it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::LazyLock;

use plexus_plugin_sdk::connector::{
    ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, DeadLetter, FieldKind, FieldSpec, SCHEMA_HEADER,
    Settings, Sink, SinkContext, SinkOffsets, SinkRecord, async_trait,
};
use plexus_plugin_sdk::tracing;
use serde_json::{Value as Json, json};

plexus_plugin_sdk::export_plugin! {
    name: "jsonl",
    version: env!("CARGO_PKG_VERSION"),
    factories: [JsonlSinkFactory, BlackholeFactory],
}

static JSONL_SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(
            FieldSpec::new("path", FieldKind::Path)
                .required()
                .doc("The file to append to (created with its folder); \"-\" is standard output."),
        )
        .field(
            FieldSpec::new("require_json", FieldKind::Bool)
                .with_default(false)
                .doc("Values that are not JSON are bad records (dead-lettered or failing, per `errors.tolerance`)."),
        )
        .field(
            FieldSpec::new("schema_table", FieldKind::Bool)
                .with_default(false)
                .doc("Add the `table` of each record's registered schema."),
        )
});

static BLACKHOLE_SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(ConfigSchema::new);

/// Makes `jsonl-sink` sinks.
#[derive(Debug, Default)]
pub struct JsonlSinkFactory;

impl ConnectorFactory for JsonlSinkFactory {
    fn type_name(&self) -> &str {
        "jsonl-sink"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &JSONL_SCHEMA
    }

    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        let path = settings
            .string("path")
            .ok_or_else(|| ConnectorError::config("setting `path` is missing"))?;
        Ok(Box::new(JsonlSink {
            path: path.to_owned(),
            require_json: settings.bool("require_json").unwrap_or(false),
            schema_table: settings.bool("schema_table").unwrap_or(false),
            out: None,
        }))
    }
}

struct JsonlSink {
    path: String,
    require_json: bool,
    schema_table: bool,
    out: Option<BufWriter<Output>>,
}

enum Output {
    File(File),
    Stdout(std::io::Stdout),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Stdout(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Stdout(s) => s.flush(),
        }
    }
}

impl JsonlSink {
    async fn table_of(&self, ctx: &SinkContext, record: &SinkRecord) -> Result<Option<Json>, ConnectorError> {
        let Some(id) = record
            .headers
            .iter()
            .find(|h| h.key == SCHEMA_HEADER)
            .and_then(|h| h.value.as_ref())
        else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(id);
        let Some(document) = ctx.schema(&id).await? else {
            return Ok(None);
        };
        let document: Json = serde_json::from_slice(&document)
            .map_err(|e| ConnectorError::fatal(format!("schema `{id}` is not JSON: {e}")))?;
        Ok(document.get("table").cloned())
    }
}

#[async_trait]
impl Sink for JsonlSink {
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        let output = if self.path == "-" {
            Output::Stdout(std::io::stdout())
        } else {
            let path = std::path::Path::new(&self.path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io_error("create the folder of", &self.path))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io_error("open", &self.path))?;
            Output::File(file)
        };
        self.out = Some(BufWriter::with_capacity(1 << 16, output));
        tracing::info!(connector = ctx.name(), path = %self.path, "JSON lines sink starting.");
        Ok(None)
    }

    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        let mut lines = Vec::with_capacity(records.len() * 128);
        for record in &records {
            let value = match &record.value {
                None => Json::Null,
                Some(bytes) => match serde_json::from_slice::<Json>(bytes) {
                    Ok(json) => json,
                    Err(e) if self.require_json => {
                        ctx.dead_letter(DeadLetter {
                            key: record.key.clone(),
                            payload: record.value.clone(),
                            reason: format!("the value is not JSON: {e}"),
                            origin: format!("{}/{}@{}", record.topic, record.partition, record.offset),
                        })?;
                        continue;
                    }
                    Err(_) => Json::String(String::from_utf8_lossy(bytes).into_owned()),
                },
            };
            let headers: serde_json::Map<String, Json> = record
                .headers
                .iter()
                .map(|h| {
                    let value = h
                        .value
                        .as_ref()
                        .map_or(Json::Null, |v| Json::String(String::from_utf8_lossy(v).into_owned()));
                    (h.key.to_string(), value)
                })
                .collect();
            let mut line = json!({
                "topic": &*record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                "value": value,
                "headers": headers,
            });
            if self.schema_table
                && let Some(table) = self.table_of(ctx, record).await?
            {
                line["table"] = table;
            }
            serde_json::to_writer(&mut lines, &line)
                .map_err(|e| ConnectorError::fatal(format!("encode a line: {e}")))?;
            lines.push(b'\n');
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| ConnectorError::fatal("write before start"))?;
        out.write_all(&lines).map_err(io_error("write to", &self.path))
    }

    async fn flush(&mut self, _ctx: &SinkContext, _offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        out.flush().map_err(io_error("flush", &self.path))?;
        if let Output::File(file) = out.get_ref() {
            file.sync_data().map_err(io_error("sync", &self.path))?;
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ConnectorError> {
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(io_error("flush", &self.path))?;
        }
        Ok(())
    }
}

/// An I/O error on the sink's file, which may pass: retried.
fn io_error(what: &str, path: &str) -> impl FnOnce(std::io::Error) -> ConnectorError {
    let message = format!("{what} `{path}`");
    move |e| ConnectorError::retriable(message).with_source(e)
}

/// Makes `blackhole` sinks.
#[derive(Debug, Default)]
pub struct BlackholeFactory;

impl ConnectorFactory for BlackholeFactory {
    fn type_name(&self) -> &str {
        "blackhole"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn schema(&self) -> &ConfigSchema {
        &BLACKHOLE_SCHEMA
    }

    fn create_sink(&self, _settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(Blackhole))
    }
}

/// What the built-in `discard` sink does, as a plugin.
struct Blackhole;

#[async_trait]
impl Sink for Blackhole {
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
