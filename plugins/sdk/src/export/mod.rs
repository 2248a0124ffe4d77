//! The plugin side of the ABI: what the functions [`crate::export_plugin!`] generates
//! call. Plugin authors never use this module directly.
//!
//! Every entry point runs inside [`guard`], which turns an error into its status and
//! message and a panic into [`STATUS_PANIC`] (the host fails the task, never the
//! worker). The connector's async methods run on the plugin's own tokio runtime: the
//! host calls each entry point from a blocking thread of its own, and the entry point
//! blocks on the future there (`Runtime::block_on`), while tasks the connector spawns
//! run on the plugin runtime's two worker threads.
#![allow(unsafe_code)]

mod context;
mod log;
mod pool;

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock, OnceLock};

use bytes::Bytes;
use plexus_connector::{
    ConnectorError, ConnectorFactory, ConnectorKind, Poll, Position, Sink, SinkContext, Source, SourceContext,
    TaskMetrics,
};

use crate::abi::{
    POLL_BATCH, POLL_FINISHED, POLL_IDLE, PlexusBuffer, PlexusBytes, PlexusHost, PlexusTaskContext, STATUS_FATAL,
    STATUS_OK, STATUS_PANIC, STATUS_RETRIABLE, Status,
};
use crate::codec;
use crate::descriptor::{Descriptor, TypeDescriptor, settings_from_json};
use context::HostLink;

/// A plugin: its name, version and connector types, and the runtime its connectors'
/// futures run on.
pub struct Plugin {
    name: &'static str,
    version: &'static str,
    factories: Vec<Box<dyn ConnectorFactory>>,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn new(name: &'static str, version: &'static str, factories: Vec<Box<dyn ConnectorFactory>>) -> Plugin {
        Plugin {
            name,
            version,
            factories,
            runtime: OnceLock::new(),
        }
    }

    fn factory(&self, type_name: &str) -> Result<&dyn ConnectorFactory, ConnectorError> {
        self.factories
            .iter()
            .find(|f| f.type_name() == type_name)
            .map(|f| f.as_ref())
            .ok_or_else(|| ConnectorError::fatal(format!("plugin `{}` has no connector type `{type_name}`", self.name)))
    }

    /// Runs a connector's future to its end on this thread.
    fn block_on<F: Future>(&self, future: F) -> Result<F::Output, ConnectorError> {
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(format!("plugin-{}", self.name))
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        });
        match runtime {
            Ok(runtime) => Ok(runtime.block_on(future)),
            Err(e) => Err(ConnectorError::fatal(format!(
                "plugin `{}` cannot start its async runtime: {e}",
                self.name
            ))),
        }
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            sdk_version: env!("CARGO_PKG_VERSION").to_owned(),
            types: self
                .factories
                .iter()
                .map(|f| TypeDescriptor::new(f.type_name(), f.kind(), f.schema()))
                .collect(),
        }
    }
}

/// One source instance, behind the handle the host holds.
struct SourceInstance {
    plugin: &'static Plugin,
    source: Box<dyn Source>,
    task: Option<(SourceContext, HostLink)>,
    metrics: Arc<TaskMetrics>,
}

/// One sink instance, behind the handle the host holds.
struct SinkInstance {
    plugin: &'static Plugin,
    sink: Box<dyn Sink>,
    task: Option<(SinkContext, HostLink)>,
    metrics: Arc<TaskMetrics>,
}

/// `plexus_plugin_descriptor`.
///
/// # Safety
/// `out` and `out_error` are null or valid for writes.
pub unsafe fn descriptor(
    plugin: &'static LazyLock<Plugin>,
    out: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        let json = serde_json::to_vec(&plugin.descriptor())
            .map_err(|e| ConnectorError::fatal(format!("encode the descriptor: {e}")))?;
        // SAFETY: the caller passes a null or writable `out`.
        unsafe { put_buffer(out, json) };
        Ok(())
    })
}

/// `plexus_plugin_init`: forwards logs and panics to the host.
///
/// # Safety
/// `host` is null or points to a valid [`PlexusHost`] whose function and data stay
/// valid for the life of the process.
pub unsafe fn init(plugin: &'static LazyLock<Plugin>, host: *const PlexusHost, out_error: *mut PlexusBuffer) -> Status {
    guard(out_error, || {
        // SAFETY: the caller passes a null or valid pointer.
        let Some(host) = (unsafe { host.as_ref() }) else {
            return Err(ConnectorError::fatal("plexus_plugin_init: no host given"));
        };
        log::install(*host, plugin.name);
        Ok(())
    })
}

/// `plexus_buffer_alloc`: room for `len` bytes that the host fills and hands back
/// (not zeroed: the host writes what it then declares as `len`).
pub fn buffer_alloc(len: usize) -> PlexusBuffer {
    into_buffer(pool::take(len))
}

/// `plexus_buffer_free`.
///
/// # Safety
/// `buffer` was made by this library's allocator (a returned or allocated buffer,
/// unchanged `ptr` and `cap`, `len <= cap`) and is not used afterwards.
pub unsafe fn buffer_free(buffer: PlexusBuffer) {
    // SAFETY: the caller's contract.
    drop(unsafe { take_buffer(buffer) });
}

/// `plexus_position_to_json`.
///
/// # Safety
/// The byte arguments are valid for reads; the out-pointers null or writable.
pub unsafe fn position_to_json(
    plugin: &'static LazyLock<Plugin>,
    type_name: PlexusBytes,
    position: PlexusBytes,
    out: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: valid for reads during the call (the caller's contract).
        let (type_name, position) = unsafe { (text(type_name)?, bytes(position)) };
        let json = plugin
            .factory(&type_name)?
            .position_to_json(&Position::from_bytes(position));
        // SAFETY: as above.
        unsafe { put_buffer(out, json.to_string().into_bytes()) };
        Ok(())
    })
}

/// `plexus_position_from_json`.
///
/// # Safety
/// As [`position_to_json`].
pub unsafe fn position_from_json(
    plugin: &'static LazyLock<Plugin>,
    type_name: PlexusBytes,
    json: PlexusBytes,
    out: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: valid for reads during the call.
        let (type_name, json) = unsafe { (text(type_name)?, bytes(json)) };
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| ConnectorError::fatal(format!("not JSON: {e}")))?;
        let position = plugin
            .factory(&type_name)?
            .position_from_json(&value)
            .map_err(ConnectorError::fatal)?;
        // SAFETY: as above.
        unsafe { put_buffer(out, position.as_bytes().to_vec()) };
        Ok(())
    })
}

/// `plexus_source_new` and `plexus_sink_new`.
///
/// # Safety
/// The byte arguments are valid for reads; the out-pointers null or writable.
pub unsafe fn new_instance(
    plugin: &'static LazyLock<Plugin>,
    kind: ConnectorKind,
    type_name: PlexusBytes,
    settings: PlexusBytes,
    out_instance: *mut *mut c_void,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        let plugin: &'static Plugin = plugin;
        // SAFETY: valid for reads during the call.
        let (type_name, settings) = unsafe { (text(type_name)?, bytes(settings)) };
        let factory = plugin.factory(&type_name)?;
        let settings = settings_from_json(&settings, factory.schema()).map_err(ConnectorError::config)?;
        let instance: *mut c_void = match kind {
            ConnectorKind::Source => Box::into_raw(Box::new(SourceInstance {
                plugin,
                source: factory.create_source(&settings)?,
                task: None,
                metrics: Arc::new(TaskMetrics::default()),
            }))
            .cast(),
            ConnectorKind::Sink => Box::into_raw(Box::new(SinkInstance {
                plugin,
                sink: factory.create_sink(&settings)?,
                task: None,
                metrics: Arc::new(TaskMetrics::default()),
            }))
            .cast(),
        };
        // SAFETY: the caller passes a null or writable pointer.
        match unsafe { out_instance.as_mut() } {
            Some(out) => *out = instance,
            None => {
                // Nowhere to put it: release it rather than leak it.
                // SAFETY: made just above by `Box::into_raw` of this kind.
                unsafe { free_instance(kind, instance) };
                return Err(ConnectorError::fatal("plexus_*_new: no place for the instance"));
            }
        }
        Ok(())
    })
}

/// `plexus_source_free` and `plexus_sink_free`.
///
/// # Safety
/// `instance` came from [`new_instance`] with the same `kind` and is not used
/// afterwards (no call on it is running).
pub unsafe fn free_instance(kind: ConnectorKind, instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A connector that panics while dropped leaks the rest of itself, not the worker.
    let _ = catch_unwind(AssertUnwindSafe(|| match kind {
        // SAFETY: the caller's contract: a live instance of this kind.
        ConnectorKind::Source => drop(unsafe { Box::from_raw(instance.cast::<SourceInstance>()) }),
        // SAFETY: as above.
        ConnectorKind::Sink => drop(unsafe { Box::from_raw(instance.cast::<SinkInstance>()) }),
    }));
}

/// `plexus_source_start`.
///
/// # Safety
/// `instance` is a live source instance used by no other call; `ctx` points to a valid
/// context whose `host_data` and functions stay valid until the instance is freed;
/// `resume` is valid for reads (or null: none).
pub unsafe fn source_start(
    instance: *mut c_void,
    ctx: *const PlexusTaskContext,
    resume: PlexusBytes,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let (this, ctx) = unsafe { (source(instance)?, context(ctx)?) };
        // SAFETY: valid for reads during the call.
        let (name, boundaries) = unsafe { (text(ctx.connector)?, bytes(ctx.replay_boundaries)) };
        let boundaries = if boundaries.is_empty() {
            Vec::new()
        } else {
            codec::decode_positions(&boundaries).map_err(codec_error)?
        };
        // SAFETY: valid for reads during the call.
        let resume = (!resume.ptr.is_null()).then(|| Position::from_bytes(unsafe { bytes(resume) }));
        // SAFETY: the caller's contract on `host_data` and the functions.
        let link = unsafe { HostLink::new(ctx) };
        let task_ctx = SourceContext::new(name, ctx.task, Arc::clone(&this.metrics), link.dead_letters())
            .with_replay_boundaries(boundaries);
        let result = this.plugin.block_on(this.source.start(&task_ctx, resume));
        link.report(&this.metrics);
        this.task = Some((task_ctx, link));
        result?
    })
}

/// `plexus_source_poll`.
///
/// # Safety
/// `instance` is a live, started source instance used by no other call; the
/// out-pointers are null or writable.
pub unsafe fn source_poll(
    instance: *mut c_void,
    out_kind: *mut u32,
    out_batch: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let this = unsafe { source(instance)? };
        let (ctx, link) = this
            .task
            .as_ref()
            .ok_or_else(|| ConnectorError::fatal("poll before start"))?;
        let poll = this.plugin.block_on(this.source.poll(ctx));
        link.report(&this.metrics);
        let kind = match poll?? {
            Poll::Batch(batch) => {
                let mut buf = Vec::new();
                codec::encode_source_batch(&batch, &mut buf).map_err(codec_error)?;
                // SAFETY: the caller passes a null or writable pointer.
                unsafe { put_buffer(out_batch, buf) };
                POLL_BATCH
            }
            Poll::Idle => POLL_IDLE,
            Poll::Finished => POLL_FINISHED,
        };
        // SAFETY: as above.
        unsafe { put(out_kind, kind) };
        Ok(())
    })
}

/// `plexus_source_commit`.
///
/// # Safety
/// `instance` is a live source instance used by no other call; `position` valid for reads.
pub unsafe fn source_commit(instance: *mut c_void, position: PlexusBytes, out_error: *mut PlexusBuffer) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let (this, position) = unsafe { (source(instance)?, Position::from_bytes(bytes(position))) };
        let result = this.plugin.block_on(this.source.commit(&position));
        if let Some((_, link)) = &this.task {
            link.report(&this.metrics);
        }
        result?
    })
}

/// `plexus_source_stop`.
///
/// # Safety
/// `instance` is a live source instance used by no other call.
pub unsafe fn source_stop(instance: *mut c_void, out_error: *mut PlexusBuffer) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let this = unsafe { source(instance)? };
        let result = this.plugin.block_on(this.source.stop());
        if let Some((_, link)) = &this.task {
            link.report(&this.metrics);
        }
        result?
    })
}

/// `plexus_sink_start`.
///
/// # Safety
/// As [`source_start`], for a sink instance; the out-pointers are null or writable.
pub unsafe fn sink_start(
    instance: *mut c_void,
    ctx: *const PlexusTaskContext,
    out_has_offsets: *mut u8,
    out_offsets: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let (this, ctx) = unsafe { (sink(instance)?, context(ctx)?) };
        // SAFETY: valid for reads during the call.
        let name = unsafe { text(ctx.connector)? };
        // SAFETY: the caller's contract on `host_data` and the functions.
        let link = unsafe { HostLink::new(ctx) };
        let task_ctx = SinkContext::new(name, ctx.task, Arc::clone(&this.metrics), link.dead_letters())
            .with_schemas(link.schemas());
        let result = this.plugin.block_on(this.sink.start(&task_ctx));
        link.report(&this.metrics);
        this.task = Some((task_ctx, link));
        let offsets = result??;
        // SAFETY: the caller passes null or writable pointers.
        unsafe { put_offsets(offsets.as_ref(), out_has_offsets, out_offsets) }
    })
}

/// `plexus_sink_write`: takes `records` in every outcome.
///
/// # Safety
/// `instance` is a live, started sink instance used by no other call; `records` is a
/// buffer of this library's allocator, handed over.
pub unsafe fn sink_write(instance: *mut c_void, records: PlexusBuffer, out_error: *mut PlexusBuffer) -> Status {
    // SAFETY: the caller hands the buffer over; taken first so that it is released
    // whatever happens next. The records slice it; it goes back to the pool when the
    // last of them is dropped.
    let records = Bytes::from_owner(pool::Recycled(unsafe { take_buffer(records) }));
    guard(out_error, move || {
        // SAFETY: the caller's contract.
        let this = unsafe { sink(instance)? };
        let records = codec::decode_sink_records(&records).map_err(codec_error)?;
        let (ctx, link) = this
            .task
            .as_ref()
            .ok_or_else(|| ConnectorError::fatal("write before start"))?;
        let result = this.plugin.block_on(this.sink.write(ctx, records));
        link.report(&this.metrics);
        result?
    })
}

/// `plexus_sink_flush`.
///
/// # Safety
/// `instance` is a live, started sink instance used by no other call; `offsets` valid
/// for reads.
pub unsafe fn sink_flush(instance: *mut c_void, offsets: PlexusBytes, out_error: *mut PlexusBuffer) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let (this, offsets) = unsafe { (sink(instance)?, bytes(offsets)) };
        let offsets = codec::decode_offsets(&offsets).map_err(codec_error)?;
        let (ctx, link) = this
            .task
            .as_ref()
            .ok_or_else(|| ConnectorError::fatal("flush before start"))?;
        let result = this.plugin.block_on(this.sink.flush(ctx, &offsets));
        link.report(&this.metrics);
        result?
    })
}

/// `plexus_sink_durable_offsets`.
///
/// # Safety
/// `instance` is a live sink instance used by no other call; the out-pointers are
/// null or writable.
pub unsafe fn sink_durable_offsets(
    instance: *mut c_void,
    out_has_offsets: *mut u8,
    out_offsets: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let this = unsafe { sink(instance)? };
        let offsets = this.sink.durable_offsets();
        // SAFETY: as above.
        unsafe { put_offsets(offsets.as_ref(), out_has_offsets, out_offsets) }
    })
}

/// `plexus_sink_stop`.
///
/// # Safety
/// `instance` is a live sink instance used by no other call.
pub unsafe fn sink_stop(instance: *mut c_void, out_error: *mut PlexusBuffer) -> Status {
    guard(out_error, || {
        // SAFETY: the caller's contract.
        let this = unsafe { sink(instance)? };
        let result = this.plugin.block_on(this.sink.stop());
        if let Some((_, link)) = &this.task {
            link.report(&this.metrics);
        }
        result?
    })
}

/// Runs an entry point: an error becomes its status and message, a panic
/// [`STATUS_PANIC`] with the panic's message and place.
fn guard(out_error: *mut PlexusBuffer, f: impl FnOnce() -> Result<(), ConnectorError>) -> Status {
    let (status, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return STATUS_OK,
        Ok(Err(e)) => {
            let status = if e.is_retriable() {
                STATUS_RETRIABLE
            } else {
                STATUS_FATAL
            };
            (status, error_text(&e))
        }
        Err(payload) => (STATUS_PANIC, log::panic_text(payload.as_ref())),
    };
    // SAFETY: every entry point's caller passes a null or writable `out_error`.
    unsafe { put_buffer(out_error, message.into_bytes()) };
    status
}

/// The message and its sources: "write `x`: permission denied".
fn error_text(e: &ConnectorError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn codec_error(e: codec::CodecError) -> ConnectorError {
    ConnectorError::fatal(format!("bytes from the host do not follow the plugin ABI: {e}"))
}

/// A vector as a buffer the host can hold and hand back to [`buffer_free`].
fn into_buffer(vec: Vec<u8>) -> PlexusBuffer {
    let mut vec = std::mem::ManuallyDrop::new(vec);
    PlexusBuffer {
        ptr: vec.as_mut_ptr(),
        len: vec.len(),
        cap: vec.capacity(),
    }
}

/// The vector behind a buffer of this library's allocator (empty for a null one).
///
/// # Safety
/// `buffer` came from [`into_buffer`] (or [`buffer_alloc`]) with `ptr` and `cap`
/// unchanged and `len <= cap`, and is not used afterwards.
unsafe fn take_buffer(buffer: PlexusBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() || buffer.len > buffer.cap {
        return Vec::new();
    }
    // SAFETY: the caller's contract: a vector's parts, handed back.
    unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) }
}

/// Writes `value` to an out-pointer, if there is one.
///
/// # Safety
/// `ptr` is null or valid for writes.
unsafe fn put<T>(ptr: *mut T, value: T) {
    // SAFETY: the caller's contract.
    if let Some(slot) = unsafe { ptr.as_mut() } {
        *slot = value;
    }
}

/// Hands `bytes` over through an out-pointer; dropped if there is none.
///
/// # Safety
/// `ptr` is null or valid for writes.
unsafe fn put_buffer(ptr: *mut PlexusBuffer, bytes: Vec<u8>) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller's contract; writing does not drop the old (plain) value.
    unsafe { ptr.write(into_buffer(bytes)) };
}

/// # Safety
/// The out-pointers are null or valid for writes.
unsafe fn put_offsets(
    offsets: Option<&plexus_connector::SinkOffsets>,
    out_has: *mut u8,
    out_offsets: *mut PlexusBuffer,
) -> Result<(), ConnectorError> {
    match offsets {
        None => {
            // SAFETY: the caller's contract.
            unsafe { put(out_has, 0) };
        }
        Some(offsets) => {
            let buf = codec::encode_offsets(offsets).map_err(codec_error)?;
            // SAFETY: the caller's contract.
            unsafe {
                put_buffer(out_offsets, buf);
                put(out_has, 1);
            }
        }
    }
    Ok(())
}

/// Lent bytes, copied (they are valid only during the call).
///
/// # Safety
/// `b.ptr` is null or valid for reads of `b.len` bytes.
unsafe fn bytes(b: PlexusBytes) -> Bytes {
    if b.ptr.is_null() || b.len == 0 {
        return Bytes::new();
    }
    // SAFETY: the caller's contract.
    Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(b.ptr, b.len) })
}

/// # Safety
/// As [`bytes`].
unsafe fn text(b: PlexusBytes) -> Result<String, ConnectorError> {
    // SAFETY: the caller's contract.
    let bytes = unsafe { bytes(b) };
    String::from_utf8(bytes.to_vec()).map_err(|_| ConnectorError::fatal("a name from the host is not UTF-8"))
}

/// # Safety
/// `instance` is null or a live source instance used by no other call.
unsafe fn source<'a>(instance: *mut c_void) -> Result<&'a mut SourceInstance, ConnectorError> {
    // SAFETY: the caller's contract.
    unsafe { instance.cast::<SourceInstance>().as_mut() }.ok_or_else(|| ConnectorError::fatal("no source instance"))
}

/// # Safety
/// `instance` is null or a live sink instance used by no other call.
unsafe fn sink<'a>(instance: *mut c_void) -> Result<&'a mut SinkInstance, ConnectorError> {
    // SAFETY: the caller's contract.
    unsafe { instance.cast::<SinkInstance>().as_mut() }.ok_or_else(|| ConnectorError::fatal("no sink instance"))
}

/// # Safety
/// `ctx` is null or valid for reads.
unsafe fn context(ctx: *const PlexusTaskContext) -> Result<PlexusTaskContext, ConnectorError> {
    // SAFETY: the caller's contract.
    unsafe { ctx.as_ref() }
        .copied()
        .ok_or_else(|| ConnectorError::fatal("start without a task context"))
}
