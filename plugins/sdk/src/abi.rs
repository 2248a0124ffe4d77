//! The C ABI between the plexus host and a plugin library, version [`ABI_VERSION`].
//!
//! Only `#[repr(C)]` structs, integers, function pointers and byte buffers cross the
//! boundary; `ABI.md` beside this crate documents every symbol and byte format. Every
//! buffer that crosses is allocated by the plugin's allocator ([`BufferAllocFn`]) and
//! released by the plugin ([`BufferFreeFn`]), whichever side filled or read it.

use std::ffi::c_void;

/// The version of this ABI. The host refuses a library whose
/// [`ABI_VERSION_SYMBOL`] holds another number, before calling any of its code.
pub const ABI_VERSION: u32 = 1;

/// A `u32` static holding the library's ABI version.
pub const ABI_VERSION_SYMBOL: &str = "PLEXUS_PLUGIN_ABI_VERSION";

/// Every function a version-1 library exports, by name. The host resolves all of them
/// before calling any.
pub const FUNCTION_SYMBOLS: [&str; 19] = [
    "plexus_plugin_descriptor",
    "plexus_plugin_init",
    "plexus_buffer_alloc",
    "plexus_buffer_free",
    "plexus_position_to_json",
    "plexus_position_from_json",
    "plexus_source_new",
    "plexus_source_start",
    "plexus_source_poll",
    "plexus_source_commit",
    "plexus_source_stop",
    "plexus_source_free",
    "plexus_sink_new",
    "plexus_sink_start",
    "plexus_sink_write",
    "plexus_sink_flush",
    "plexus_sink_durable_offsets",
    "plexus_sink_stop",
    "plexus_sink_free",
];

/// What an entry point or a host callback returns.
pub type Status = i32;
/// Success.
pub const STATUS_OK: Status = 0;
/// A [retriable](plexus_connector::ErrorKind::Retriable) error; the message is in `out_error`.
pub const STATUS_RETRIABLE: Status = 1;
/// A [fatal](plexus_connector::ErrorKind::Fatal) error; the message is in `out_error`.
pub const STATUS_FATAL: Status = 2;
/// The plugin panicked; the panic message is in `out_error`.
pub const STATUS_PANIC: Status = 3;
/// A schema lookup found nothing (only from [`SchemaFn`]).
pub const STATUS_NOT_FOUND: Status = 4;

/// [`SourcePollFn`]'s outcome: a batch is in `out_batch`.
pub const POLL_BATCH: u32 = 0;
/// Nothing new right now.
pub const POLL_IDLE: u32 = 1;
/// The source has emitted everything.
pub const POLL_FINISHED: u32 = 2;

/// Bytes lent for the duration of one call. A null `ptr` means "none" where an
/// argument is optional.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PlexusBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl PlexusBytes {
    /// Lends `bytes` (never null, even when empty).
    pub fn of(bytes: &[u8]) -> PlexusBytes {
        PlexusBytes {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The "none" value of an optional argument.
    pub fn none() -> PlexusBytes {
        PlexusBytes {
            ptr: std::ptr::null(),
            len: 0,
        }
    }
}

/// A buffer owned by the plugin's allocator: `len` bytes initialised, `cap` allocated.
/// The receiver of one returned by the plugin releases it with [`BufferFreeFn`].
#[repr(C)]
#[derive(Debug)]
pub struct PlexusBuffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl PlexusBuffer {
    /// No buffer (what out-parameters hold before a call fills them).
    pub fn empty() -> PlexusBuffer {
        PlexusBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }
}

/// A task's counters as the plugin's connector sees them (absolute values). The host
/// adds what grew to the task's own counters and copies the gauges that changed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlexusMetrics {
    pub records: u64,
    pub bytes: u64,
    pub records_out: u64,
    pub bytes_out: u64,
    pub errors: u64,
    pub source_lag_bytes: i64,
    pub source_lag_ms: i64,
    pub snapshot_rows: i64,
    pub snapshot_rows_total: i64,
}

/// Log levels of [`LogFn`] and [`PlexusHost::max_level`].
pub const LEVEL_ERROR: u32 = 1;
pub const LEVEL_WARN: u32 = 2;
pub const LEVEL_INFO: u32 = 3;
pub const LEVEL_DEBUG: u32 = 4;
pub const LEVEL_TRACE: u32 = 5;

/// Forwards one log event of the plugin: its level, target and formatted message.
pub type LogFn = unsafe extern "C" fn(host_data: *const c_void, level: u32, target: PlexusBytes, message: PlexusBytes);

/// What the host gives the plugin once, at [`PluginInitFn`]; valid for the life of
/// the process.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PlexusHost {
    pub host_data: *const c_void,
    pub log: LogFn,
    /// The most verbose level the host records (`LEVEL_*`; 0: nothing).
    pub max_level: u32,
}

/// Hands a dead letter (encoded with [`crate::codec::encode_dead_letter`]) to the
/// host. An error status means the connector's policy is to fail on bad records; the
/// message (allocated with the plugin's allocator) is in `out_error`.
pub type DeadLetterFn =
    unsafe extern "C" fn(host_data: *const c_void, letter: PlexusBytes, out_error: *mut PlexusBuffer) -> Status;

/// Looks up a schema document by id: [`STATUS_OK`] with the document in `out`
/// (allocated with the plugin's allocator), [`STATUS_NOT_FOUND`], or an error with
/// its message in `out`. May block while the host reads its log.
pub type SchemaFn = unsafe extern "C" fn(host_data: *const c_void, id: PlexusBytes, out: *mut PlexusBuffer) -> Status;

/// Reports the task's counters after a call.
pub type MetricsFn = unsafe extern "C" fn(host_data: *const c_void, metrics: *const PlexusMetrics);

/// What the host gives a connector instance at start: its identity and the runtime's
/// services. `host_data` and the functions stay valid until the instance is freed;
/// `connector` and `replay_boundaries` only during the start call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PlexusTaskContext {
    pub host_data: *const c_void,
    pub connector: PlexusBytes,
    pub task: u32,
    /// A source's replay boundaries, encoded with [`crate::codec::encode_positions`].
    pub replay_boundaries: PlexusBytes,
    pub dead_letter: DeadLetterFn,
    pub schema: SchemaFn,
    pub metrics: MetricsFn,
}

/// `plexus_plugin_descriptor`: the descriptor as JSON (see [`crate::descriptor`]).
pub type DescriptorFn = unsafe extern "C" fn(out: *mut PlexusBuffer, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_plugin_init`: called once after the host accepted the descriptor.
pub type PluginInitFn = unsafe extern "C" fn(host: *const PlexusHost, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_buffer_alloc`: an empty buffer (`len == 0`) with room for at least `len`
/// bytes; the host writes into it and sets `len` to the bytes it wrote.
pub type BufferAllocFn = unsafe extern "C" fn(len: usize) -> PlexusBuffer;
/// `plexus_buffer_free`: releases a buffer of the plugin's allocator.
pub type BufferFreeFn = unsafe extern "C" fn(buffer: PlexusBuffer);
/// `plexus_position_to_json`: a position of `type_name` as JSON text.
pub type PositionToJsonFn = unsafe extern "C" fn(
    type_name: PlexusBytes,
    position: PlexusBytes,
    out: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_position_from_json`: JSON text to position bytes.
pub type PositionFromJsonFn = unsafe extern "C" fn(
    type_name: PlexusBytes,
    json: PlexusBytes,
    out: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_source_new` / `plexus_sink_new`: an instance of `type_name` with its settings
/// as a JSON object (secrets in clear).
pub type NewFn = unsafe extern "C" fn(
    type_name: PlexusBytes,
    settings_json: PlexusBytes,
    out_instance: *mut *mut c_void,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_source_free` / `plexus_sink_free`: stops nothing, releases the instance.
pub type FreeFn = unsafe extern "C" fn(instance: *mut c_void);
/// `plexus_source_start`: `resume` is the position to continue after (null: none).
pub type SourceStartFn = unsafe extern "C" fn(
    instance: *mut c_void,
    ctx: *const PlexusTaskContext,
    resume: PlexusBytes,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_source_poll`: `out_kind` is a `POLL_*`; a batch goes to `out_batch`.
pub type SourcePollFn = unsafe extern "C" fn(
    instance: *mut c_void,
    out_kind: *mut u32,
    out_batch: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_source_commit`.
pub type SourceCommitFn =
    unsafe extern "C" fn(instance: *mut c_void, position: PlexusBytes, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_source_stop` / `plexus_sink_stop`.
pub type StopFn = unsafe extern "C" fn(instance: *mut c_void, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_sink_start`: `out_has_offsets` is 1 when the sink returned offsets (in `out_offsets`).
pub type SinkStartFn = unsafe extern "C" fn(
    instance: *mut c_void,
    ctx: *const PlexusTaskContext,
    out_has_offsets: *mut u8,
    out_offsets: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status;
/// `plexus_sink_write`: takes ownership of `records` (a buffer of the plugin's
/// allocator, filled by the host), in any outcome.
pub type SinkWriteFn =
    unsafe extern "C" fn(instance: *mut c_void, records: PlexusBuffer, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_sink_flush`.
pub type SinkFlushFn =
    unsafe extern "C" fn(instance: *mut c_void, offsets: PlexusBytes, out_error: *mut PlexusBuffer) -> Status;
/// `plexus_sink_durable_offsets`.
pub type SinkDurableFn = unsafe extern "C" fn(
    instance: *mut c_void,
    out_has_offsets: *mut u8,
    out_offsets: *mut PlexusBuffer,
    out_error: *mut PlexusBuffer,
) -> Status;
