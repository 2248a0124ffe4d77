//! What a plugin calls back into: the host's log, and for each task the runtime's
//! services (dead letters, schema lookups, counters). Each callback catches panics:
//! none may unwind into the plugin.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use parking_lot::Mutex;
use plexus_connector::{ConnectorError, SinkContext, SourceContext, TaskMetrics};
use plexus_plugin_sdk::abi::{self, PlexusBuffer, PlexusBytes, PlexusMetrics, PlexusTaskContext, Status};
use plexus_plugin_sdk::codec::{self, Out as _};

use super::library::PluginLibrary;

/// The task context a plugin connector reaches back into.
pub(super) enum TaskCtx {
    Source(SourceContext),
    Sink(SinkContext),
}

/// What the plugin's `host_data` points to for one instance.
pub(super) struct HostTask {
    ctx: TaskCtx,
    /// The host runtime, for schema lookups (they read the log).
    handle: Option<tokio::runtime::Handle>,
    library: Arc<PluginLibrary>,
    /// The plugin's counters as last reported.
    last: Mutex<PlexusMetrics>,
}

impl HostTask {
    /// A task's services; built inside a call on the runtime's blocking pool.
    pub(super) fn new(ctx: TaskCtx, library: Arc<PluginLibrary>) -> HostTask {
        HostTask {
            ctx,
            handle: tokio::runtime::Handle::try_current().ok(),
            library,
            // What the plugin's counters start as.
            last: Mutex::new(PlexusMetrics {
                source_lag_bytes: -1,
                source_lag_ms: -1,
                snapshot_rows: -1,
                snapshot_rows_total: -1,
                ..PlexusMetrics::default()
            }),
        }
    }

    /// The context handed to the plugin's `start`; `connector` and `boundaries` must
    /// outlive that call, `self` the instance.
    pub(super) fn raw(&self, connector: &str, boundaries: &[u8]) -> PlexusTaskContext {
        PlexusTaskContext {
            host_data: std::ptr::from_ref(self).cast(),
            connector: PlexusBytes::of(connector.as_bytes()),
            task: match &self.ctx {
                TaskCtx::Source(ctx) => ctx.task(),
                TaskCtx::Sink(ctx) => ctx.task(),
            },
            replay_boundaries: PlexusBytes::of(boundaries),
            dead_letter: host_dead_letter,
            schema: host_schema,
            metrics: host_metrics,
        }
    }

    fn metrics(&self) -> &TaskMetrics {
        match &self.ctx {
            TaskCtx::Source(ctx) => ctx.metrics(),
            TaskCtx::Sink(ctx) => ctx.metrics(),
        }
    }

    /// A message for the plugin, in a buffer of its allocator.
    fn message(&self, text: &str, out: *mut PlexusBuffer) {
        let mut buffer = self.library.alloc(text.len());
        // A short message cannot overflow the room asked for it.
        let _ = buffer.fill(|out| out.put(text.as_bytes()));
        // SAFETY: the plugin passes a null or writable out-pointer (ABI.md).
        if let Some(slot) = unsafe { out.as_mut() } {
            *slot = buffer.into_raw();
        }
    }
}

/// The host's most verbose log level, as the ABI numbers it.
pub(super) fn max_level() -> u32 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => abi::LEVEL_TRACE,
        LevelFilter::DEBUG => abi::LEVEL_DEBUG,
        LevelFilter::INFO => abi::LEVEL_INFO,
        LevelFilter::WARN => abi::LEVEL_WARN,
        LevelFilter::ERROR => abi::LEVEL_ERROR,
        _ => 0,
    }
}

/// Lent bytes as a slice.
///
/// # Safety
/// `b.ptr` is null or valid for reads of `b.len` bytes for `'a`.
unsafe fn lent<'a>(b: PlexusBytes) -> &'a [u8] {
    if b.ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
}

/// [`abi::LogFn`]: one event of a plugin, into the host's log.
pub(super) unsafe extern "C" fn host_log(
    host_data: *const c_void,
    level: u32,
    target: PlexusBytes,
    message: PlexusBytes,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `host_data` is the leaked name given at init; the bytes are lent
        // for the call (ABI.md).
        let (plugin, target, message) = unsafe { (&*host_data.cast::<String>(), lent(target), lent(message)) };
        let target = String::from_utf8_lossy(target);
        let message = String::from_utf8_lossy(message);
        match level {
            abi::LEVEL_ERROR => tracing::error!(plugin = %plugin, target = %target, "{message}"),
            abi::LEVEL_WARN => tracing::warn!(plugin = %plugin, target = %target, "{message}"),
            abi::LEVEL_INFO => tracing::info!(plugin = %plugin, target = %target, "{message}"),
            abi::LEVEL_DEBUG => tracing::debug!(plugin = %plugin, target = %target, "{message}"),
            _ => tracing::trace!(plugin = %plugin, target = %target, "{message}"),
        }
    }));
}

/// [`abi::DeadLetterFn`]: a bad record, to the connector's error policy.
unsafe extern "C" fn host_dead_letter(
    host_data: *const c_void,
    letter: PlexusBytes,
    out_error: *mut PlexusBuffer,
) -> Status {
    // SAFETY: `host_data` is the boxed task of a live instance (it outlives the
    // instance); the letter is lent for the call.
    let (task, letter) = unsafe { (&*host_data.cast::<HostTask>(), lent(letter)) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let letter = codec::decode_dead_letter(&Bytes::copy_from_slice(letter))
            .map_err(|e| ConnectorError::fatal(format!("a dead letter does not follow the plugin ABI: {e}")))?;
        match &task.ctx {
            TaskCtx::Source(ctx) => ctx.dead_letter(letter),
            TaskCtx::Sink(ctx) => ctx.dead_letter(letter),
        }
    }));
    match result {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(e)) => {
            task.message(&e.to_string(), out_error);
            if e.is_retriable() {
                abi::STATUS_RETRIABLE
            } else {
                abi::STATUS_FATAL
            }
        }
        Err(_) => {
            task.message("the host failed to take a dead letter", out_error);
            abi::STATUS_RETRIABLE
        }
    }
}

/// [`abi::SchemaFn`]: a schema document from the worker's registry.
unsafe extern "C" fn host_schema(host_data: *const c_void, id: PlexusBytes, out: *mut PlexusBuffer) -> Status {
    // SAFETY: as in `host_dead_letter`.
    let (task, id) = unsafe { (&*host_data.cast::<HostTask>(), lent(id)) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let id = String::from_utf8_lossy(id);
        let (TaskCtx::Sink(ctx), Some(handle)) = (&task.ctx, &task.handle) else {
            return Ok(None);
        };
        // Plugin calls run on blocking threads, where blocking on the runtime is allowed.
        handle.block_on(ctx.schema(&id))
    }));
    match result {
        Ok(Ok(Some(document))) => {
            task.message_bytes(&document, out);
            abi::STATUS_OK
        }
        Ok(Ok(None)) => abi::STATUS_NOT_FOUND,
        Ok(Err(e)) => {
            task.message(&e.to_string(), out);
            if e.is_retriable() {
                abi::STATUS_RETRIABLE
            } else {
                abi::STATUS_FATAL
            }
        }
        Err(_) => {
            task.message(
                "the schema lookup failed in the host (called from a runtime thread?)",
                out,
            );
            abi::STATUS_RETRIABLE
        }
    }
}

impl HostTask {
    fn message_bytes(&self, bytes: &[u8], out: *mut PlexusBuffer) {
        let mut buffer = self.library.alloc(bytes.len());
        let _ = buffer.fill(|out| out.put(bytes));
        // SAFETY: the plugin passes a null or writable out-pointer (ABI.md).
        if let Some(slot) = unsafe { out.as_mut() } {
            *slot = buffer.into_raw();
        }
    }
}

/// [`abi::MetricsFn`]: what the plugin's counters gained goes to the task's.
unsafe extern "C" fn host_metrics(host_data: *const c_void, metrics: *const abi::PlexusMetrics) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `host_dead_letter`; the snapshot is lent for the call.
        let (task, Some(now)) = (unsafe { &*host_data.cast::<HostTask>() }, unsafe { metrics.as_ref() }) else {
            return;
        };
        let mut last = task.last.lock();
        let m = task.metrics();
        let grow = |counter: &std::sync::atomic::AtomicU64, now: u64, before: u64| {
            if now > before {
                counter.fetch_add(now - before, Ordering::Relaxed);
            }
        };
        grow(&m.records, now.records, last.records);
        grow(&m.bytes, now.bytes, last.bytes);
        grow(&m.records_out, now.records_out, last.records_out);
        grow(&m.bytes_out, now.bytes_out, last.bytes_out);
        grow(&m.errors, now.errors, last.errors);
        let gauge = |gauge: &std::sync::atomic::AtomicI64, now: i64, before: i64| {
            if now != before {
                gauge.store(now, Ordering::Relaxed);
            }
        };
        gauge(&m.source_lag_bytes, now.source_lag_bytes, last.source_lag_bytes);
        gauge(&m.source_lag_ms, now.source_lag_ms, last.source_lag_ms);
        gauge(&m.snapshot_rows, now.snapshot_rows, last.snapshot_rows);
        gauge(
            &m.snapshot_rows_total,
            now.snapshot_rows_total,
            last.snapshot_rows_total,
        );
        *last = *now;
    }));
}
