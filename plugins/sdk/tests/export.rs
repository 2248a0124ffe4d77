#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]
//! The functions `export_plugin!` generates, called directly as the host calls them:
//! the descriptor, settings typed by the schema, errors and panics turned into statuses
//! with their messages, batches in the documented format, the host's callbacks.

use std::ffi::c_void;
use std::sync::LazyLock;
use std::sync::Mutex;

use bytes::Bytes;
use plexus_plugin_sdk::abi::{self, PlexusBuffer, PlexusBytes, PlexusMetrics, PlexusTaskContext, Status};
use plexus_plugin_sdk::codec;
use plexus_plugin_sdk::connector::{
    ConfigSchema, ConnectorError, ConnectorFactory, ConnectorKind, FieldKind, FieldSpec, Poll, Position, Settings,
    Source, SourceBatch, SourceContext, SourceRecord, async_trait,
};
use plexus_plugin_sdk::descriptor::Descriptor;

plexus_plugin_sdk::export_plugin! {
    name: "probe",
    version: "9.9.9",
    factories: [ProbeFactory],
}

static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(FieldSpec::new("every", FieldKind::Duration).required())
        .field(FieldSpec::new("mode", FieldKind::one_of(["ok", "error", "panic"])).with_default("ok"))
});

struct ProbeFactory;

impl ConnectorFactory for ProbeFactory {
    fn type_name(&self) -> &str {
        "probe"
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn schema(&self) -> &ConfigSchema {
        &SCHEMA
    }

    fn create_source(&self, settings: &Settings) -> Result<Box<dyn Source>, ConnectorError> {
        // Typed again by the schema on the plugin's side.
        let every = settings
            .duration("every")
            .ok_or_else(|| ConnectorError::config("`every` is not a duration"))?;
        Ok(Box::new(Probe {
            every_ms: every.as_millis() as i64,
            mode: settings.string("mode").unwrap_or("ok").to_owned(),
        }))
    }
}

struct Probe {
    every_ms: i64,
    mode: String,
}

#[async_trait]
impl Source for Probe {
    async fn start(&mut self, ctx: &SourceContext, resume: Option<Position>) -> Result<(), ConnectorError> {
        assert_eq!(ctx.name(), "p1");
        assert_eq!(resume, Some(Position::from_u64(41)));
        assert_eq!(ctx.replay_boundaries(), &[Position::from_u64(43)]);
        ctx.metrics().add_records(7, 70);
        // Goes to the host's dead-letter callback, which refuses it.
        let refused = ctx
            .dead_letter(plexus_plugin_sdk::connector::DeadLetter {
                key: None,
                payload: Some(Bytes::from_static(b"bad")),
                reason: "bad".into(),
                origin: "here".into(),
            })
            .unwrap_err();
        assert_eq!(refused.message(), "policy: fail");
        assert!(!refused.is_retriable());
        Ok(())
    }

    async fn poll(&mut self, _ctx: &SourceContext) -> Result<Poll, ConnectorError> {
        match self.mode.as_str() {
            "error" => Err(ConnectorError::retriable("the system is busy")),
            "panic" => panic!("probe panics in poll"),
            _ => {
                let mut record = SourceRecord::new(self.every_ms, Some(Bytes::from_static(b"k")), None);
                record.topic = Some("t".into());
                Ok(Poll::Batch(SourceBatch {
                    records: vec![record],
                    position: Position::from_u64(42),
                }))
            }
        }
    }
}

/// What the host callbacks saw.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn dead_letter(_: *const c_void, letter: PlexusBytes, out_error: *mut PlexusBuffer) -> Status {
    let letter = unsafe { std::slice::from_raw_parts(letter.ptr, letter.len) };
    let letter = codec::decode_dead_letter(&Bytes::copy_from_slice(letter)).unwrap();
    SEEN.lock().unwrap().push(format!("dead letter: {}", letter.reason));
    let message = b"policy: fail";
    let mut buffer = unsafe { plexus_buffer_alloc(message.len()) };
    assert!(buffer.cap >= message.len() && buffer.len == 0);
    unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), buffer.ptr, message.len()) };
    buffer.len = message.len();
    unsafe { out_error.write(buffer) };
    abi::STATUS_FATAL
}

unsafe extern "C" fn schema(_: *const c_void, _: PlexusBytes, _: *mut PlexusBuffer) -> Status {
    abi::STATUS_NOT_FOUND
}

unsafe extern "C" fn metrics(_: *const c_void, m: *const PlexusMetrics) {
    let m = unsafe { *m };
    SEEN.lock().unwrap().push(format!("metrics: {} {}", m.records, m.bytes));
}

fn text(buffer: PlexusBuffer) -> String {
    let text = String::from_utf8(unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec()).unwrap();
    unsafe { plexus_buffer_free(buffer) };
    text
}

fn new_source(settings: &str) -> Result<*mut c_void, (Status, String)> {
    let mut instance = std::ptr::null_mut();
    let mut error = PlexusBuffer::empty();
    let status = unsafe {
        plexus_source_new(
            PlexusBytes::of(b"probe"),
            PlexusBytes::of(settings.as_bytes()),
            &mut instance,
            &mut error,
        )
    };
    if status == abi::STATUS_OK {
        Ok(instance)
    } else {
        Err((status, text(error)))
    }
}

fn start(instance: *mut c_void) {
    let boundaries = codec::encode_positions(&[Position::from_u64(43)]).unwrap();
    let ctx = PlexusTaskContext {
        host_data: std::ptr::null(),
        connector: PlexusBytes::of(b"p1"),
        task: 0,
        replay_boundaries: PlexusBytes::of(&boundaries),
        dead_letter,
        schema,
        metrics,
    };
    let resume = Position::from_u64(41);
    let mut error = PlexusBuffer::empty();
    let status = unsafe { plexus_source_start(instance, &ctx, PlexusBytes::of(resume.as_bytes()), &mut error) };
    assert_eq!(
        status,
        abi::STATUS_OK,
        "{}",
        if error.is_null() { String::new() } else { text(error) }
    );
}

fn poll(instance: *mut c_void) -> Result<(u32, Option<SourceBatch>), (Status, String)> {
    let mut kind = 99;
    let mut batch = PlexusBuffer::empty();
    let mut error = PlexusBuffer::empty();
    let status = unsafe { plexus_source_poll(instance, &mut kind, &mut batch, &mut error) };
    if status != abi::STATUS_OK {
        return Err((status, text(error)));
    }
    let batch = (!batch.is_null()).then(|| {
        let bytes = unsafe { std::slice::from_raw_parts(batch.ptr, batch.len) }.to_vec();
        unsafe { plexus_buffer_free(batch) };
        codec::decode_source_batch(&Bytes::from(bytes)).unwrap()
    });
    Ok((kind, batch))
}

#[test]
fn the_descriptor_names_the_plugin_its_types_and_their_schemas() {
    assert_eq!(PLEXUS_PLUGIN_ABI_VERSION, abi::ABI_VERSION);
    let mut out = PlexusBuffer::empty();
    let mut error = PlexusBuffer::empty();
    assert_eq!(
        unsafe { plexus_plugin_descriptor(&mut out, &mut error) },
        abi::STATUS_OK
    );
    let (descriptor, types) = Descriptor::parse(text(out).as_bytes()).unwrap();
    assert_eq!(
        (descriptor.name.as_str(), descriptor.version.as_str()),
        ("probe", "9.9.9")
    );
    assert_eq!(types, vec![("probe".to_owned(), ConnectorKind::Source, SCHEMA.clone())]);
}

#[test]
fn calls_reach_the_connector_and_its_context_reaches_the_host() {
    let instance = new_source(r#"{"every": "1m30s"}"#).unwrap();
    start(instance);
    let seen = SEEN.lock().unwrap().clone();
    assert!(seen.contains(&"dead letter: bad".to_owned()), "{seen:?}");
    assert!(seen.contains(&"metrics: 7 70".to_owned()), "{seen:?}");
    let (kind, batch) = poll(instance).unwrap();
    assert_eq!(kind, abi::POLL_BATCH);
    let batch = batch.unwrap();
    assert_eq!(batch.position, Position::from_u64(42));
    assert_eq!(batch.records[0].timestamp, 90_000, "the duration came through typed");
    assert_eq!(batch.records[0].topic.as_deref(), Some("t"));
    assert_eq!(batch.records[0].value, None);
    unsafe { plexus_source_free(instance) };
}

#[test]
fn errors_and_panics_become_statuses_with_their_messages() {
    let (status, message) = new_source(r#"{"every": 5}"#).unwrap_err();
    assert_eq!(status, abi::STATUS_FATAL);
    assert_eq!(message, "setting `every`: expected a string, found 5");
    let (status, message) = new_source(r#"{"every": "1s"}"#.replace('}', r#", "kind": "x"}"#).as_str())
        .map(|i| unsafe { plexus_source_free(i) })
        .map_or_else(|e| e, |()| (0, String::new()));
    assert_eq!(
        (status, message.as_str()),
        (0, ""),
        "unknown settings keep their JSON type"
    );
    let (status, message) = unsafe {
        let mut instance = std::ptr::null_mut();
        let mut error = PlexusBuffer::empty();
        let status = plexus_source_new(
            PlexusBytes::of(b"nope"),
            PlexusBytes::of(b"{}"),
            &mut instance,
            &mut error,
        );
        (status, text(error))
    };
    assert_eq!(status, abi::STATUS_FATAL);
    assert_eq!(message, "plugin `probe` has no connector type `nope`");

    let busy = new_source(r#"{"every": "1s", "mode": "error"}"#).unwrap();
    start(busy);
    assert_eq!(
        poll(busy).unwrap_err(),
        (abi::STATUS_RETRIABLE, "the system is busy".to_owned())
    );
    unsafe { plexus_source_free(busy) };

    let panics = new_source(r#"{"every": "1s", "mode": "panic"}"#).unwrap();
    start(panics);
    let (status, message) = poll(panics).unwrap_err();
    assert_eq!(status, abi::STATUS_PANIC);
    assert!(
        message.starts_with("panicked") && message.ends_with("probe panics in poll"),
        "{message}"
    );
    // The instance is still usable afterwards (the host frees it and makes a new one).
    unsafe { plexus_source_free(panics) };

    // Calls before start are errors, not crashes.
    let early = new_source(r#"{"every": "1s"}"#).unwrap();
    assert_eq!(
        poll(early).unwrap_err(),
        (abi::STATUS_FATAL, "poll before start".to_owned())
    );
    unsafe { plexus_source_free(early) };
    let mut error = PlexusBuffer::empty();
    let status = unsafe {
        plexus_source_poll(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut error,
        )
    };
    assert_eq!(
        (status, text(error)),
        (abi::STATUS_FATAL, "no source instance".to_owned())
    );
}
