//! The host side of the plugin ABI: opening a library, checking it, and calling it.
//! With `callbacks.rs` (what the plugin calls back) and `buffer.rs` (its buffers), this
//! holds all of the runtime's `unsafe` for plugins; what it offers is safe.
//!
//! Libraries are never unloaded once any of their code ran: threads of the plugin's
//! runtime and thread-local destructors may still point into them.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use plexus_config::ConnectorKind;
use plexus_connector::{ConnectorError, Poll, Position, SinkContext, SinkOffsets, SinkRecord, SourceContext};
use plexus_plugin_sdk::abi::{self, PlexusBuffer, PlexusBytes, PlexusHost, Status};
use plexus_plugin_sdk::codec;
use plexus_plugin_sdk::descriptor::{Descriptor, OfferedType};

use super::PluginError;
use super::buffer::OwnedBuffer;
use super::callbacks::{self, HostTask, TaskCtx};

/// The entry points of a version-1 library.
#[derive(Clone, Copy)]
struct Functions {
    descriptor: abi::DescriptorFn,
    init: abi::PluginInitFn,
    alloc: abi::BufferAllocFn,
    free: abi::BufferFreeFn,
    position_to_json: abi::PositionToJsonFn,
    position_from_json: abi::PositionFromJsonFn,
    source_new: abi::NewFn,
    source_start: abi::SourceStartFn,
    source_poll: abi::SourcePollFn,
    source_commit: abi::SourceCommitFn,
    source_stop: abi::StopFn,
    source_free: abi::FreeFn,
    sink_new: abi::NewFn,
    sink_start: abi::SinkStartFn,
    sink_write: abi::SinkWriteFn,
    sink_flush: abi::SinkFlushFn,
    sink_durable: abi::SinkDurableFn,
    sink_stop: abi::StopFn,
    sink_free: abi::FreeFn,
}

/// A loaded plugin library whose descriptor was read.
pub(crate) struct PluginLibrary {
    pub path: PathBuf,
    pub descriptor: Descriptor,
    pub types: Vec<OfferedType>,
    fns: Functions,
    /// Kept open for the life of the process (see the module's documentation).
    _library: ManuallyDrop<libloading::Library>,
    /// The plugin's name for its log lines: the `host_data` of `callbacks::host_log`.
    log_name: &'static String,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("name", &self.descriptor.name)
            .finish_non_exhaustive()
    }
}

impl PluginLibrary {
    /// Opens a library and reads, in this order, its ABI version (data: no code of
    /// the library runs for it), every entry point, and its descriptor.
    pub fn open(path: &Path) -> Result<PluginLibrary, PluginError> {
        let file = path.to_path_buf();
        // SAFETY: loading runs the library's initialisers. Whatever lies in a plugin
        // folder is trusted as code of the worker, as Kafka Connect trusts its
        // `plugin.path`; plexus plugins have no initialisers of their own.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotLoadable {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let symbol = format!("{}\0", abi::ABI_VERSION_SYMBOL);
        // SAFETY: the symbol of a plexus plugin is a `u32` static; reading it runs nothing.
        let version = unsafe { library.get::<*const u32>(symbol.as_bytes()) }
            .map(|s| *s)
            .map_err(|_| PluginError::NotAPlugin { file: file.clone() })?;
        if version.is_null() {
            return Err(PluginError::NotAPlugin { file });
        }
        // SAFETY: a non-null pointer to the library's `u32` static, mapped while
        // `library` is open.
        let version = unsafe { version.read_unaligned() };
        if version != abi::ABI_VERSION {
            return Err(PluginError::WrongAbi {
                file,
                found: version,
                expected: abi::ABI_VERSION,
            });
        }
        let fns = resolve(&library, &file)?;
        // From here on the library's code runs: never unload it.
        let library = ManuallyDrop::new(library);
        let mut out = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: an entry point of ABI version 1 with valid out-pointers.
        let status = unsafe { (fns.descriptor)(&mut out, &mut error) };
        let out = OwnedBuffer::new(out, fns.free);
        let error = OwnedBuffer::new(error, fns.free);
        if status != abi::STATUS_OK {
            return Err(PluginError::Descriptor {
                file,
                reason: format!("the descriptor function failed: {}", error.text()),
            });
        }
        let (descriptor, types) = Descriptor::parse(out.as_ref()).map_err(|e| PluginError::Descriptor {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let log_name: &'static String = Box::leak(Box::new(descriptor.name.clone()));
        Ok(PluginLibrary {
            path: file,
            descriptor,
            types,
            fns,
            _library: library,
            log_name,
        })
    }

    /// Starts forwarding the plugin's logs; called once, after the host accepted it.
    pub fn init(&self) -> Result<(), PluginError> {
        let host = PlexusHost {
            host_data: std::ptr::from_ref::<String>(self.log_name).cast(),
            log: callbacks::host_log,
            max_level: callbacks::max_level(),
        };
        let mut error = PlexusBuffer::empty();
        // SAFETY: `host` is valid for the call and its data (a leaked string) and
        // function for the life of the process.
        let status = unsafe { (self.fns.init)(&host, &mut error) };
        let error = OwnedBuffer::new(error, self.fns.free);
        if status != abi::STATUS_OK {
            return Err(PluginError::Init {
                file: self.path.clone(),
                reason: error.text(),
            });
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// A new source or sink of `type_name` with its settings (a JSON object).
    pub fn instance(
        self: &Arc<Self>,
        kind: ConnectorKind,
        type_name: &str,
        settings_json: &[u8],
    ) -> Result<Instance, ConnectorError> {
        let new = match kind {
            ConnectorKind::Source => self.fns.source_new,
            ConnectorKind::Sink => self.fns.sink_new,
        };
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let mut error = PlexusBuffer::empty();
        // SAFETY: lent bytes valid for the call, valid out-pointers.
        let status = unsafe {
            new(
                PlexusBytes::of(type_name.as_bytes()),
                PlexusBytes::of(settings_json),
                &mut ptr,
                &mut error,
            )
        };
        self.check(status, error, "create")?;
        if ptr.is_null() {
            return Err(ConnectorError::fatal(format!(
                "plugin `{}` created no `{type_name}` instance",
                self.name()
            )));
        }
        Ok(Instance {
            library: Arc::clone(self),
            kind,
            ptr,
            task: None,
        })
    }

    /// `position_to_json` of the plugin's factory.
    pub fn position_to_json(&self, type_name: &str, position: &Position) -> Result<serde_json::Value, ConnectorError> {
        let mut out = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: lent bytes valid for the call, valid out-pointers.
        let status = unsafe {
            (self.fns.position_to_json)(
                PlexusBytes::of(type_name.as_bytes()),
                PlexusBytes::of(position.as_bytes()),
                &mut out,
                &mut error,
            )
        };
        let out = OwnedBuffer::new(out, self.fns.free);
        self.check(status, error, "position_to_json")?;
        serde_json::from_slice(out.as_ref()).map_err(|e| {
            ConnectorError::fatal(format!(
                "plugin `{}` returned a position that is not JSON: {e}",
                self.name()
            ))
        })
    }

    /// `position_from_json` of the plugin's factory.
    pub fn position_from_json(&self, type_name: &str, value: &serde_json::Value) -> Result<Position, ConnectorError> {
        let json = value.to_string();
        let mut out = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: lent bytes valid for the call, valid out-pointers.
        let status = unsafe {
            (self.fns.position_from_json)(
                PlexusBytes::of(type_name.as_bytes()),
                PlexusBytes::of(json.as_bytes()),
                &mut out,
                &mut error,
            )
        };
        let out = OwnedBuffer::new(out, self.fns.free);
        self.check(status, error, "position_from_json")?;
        Ok(Position::from_bytes(Bytes::copy_from_slice(out.as_ref())))
    }

    /// An entry point's status as a result; a panic is a retriable error (the task restarts).
    fn check(&self, status: Status, error: PlexusBuffer, call: &str) -> Result<(), ConnectorError> {
        let error = OwnedBuffer::new(error, self.fns.free);
        match status {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_RETRIABLE => Err(ConnectorError::retriable(error.text())),
            abi::STATUS_FATAL => Err(ConnectorError::fatal(error.text())),
            abi::STATUS_PANIC => Err(ConnectorError::retriable(format!(
                "plugin `{}` {} (in `{call}`)",
                self.name(),
                error.text()
            ))),
            other => Err(ConnectorError::fatal(format!(
                "plugin `{}` returned the unknown status {other} from `{call}`: {}",
                self.name(),
                error.text()
            ))),
        }
    }

    /// Room for `len` bytes in the plugin's allocator, for the plugin to take.
    pub(super) fn alloc(&self, len: usize) -> OwnedBuffer {
        // SAFETY: an entry point of ABI version 1.
        let buffer = unsafe { (self.fns.alloc)(len) };
        OwnedBuffer::new(buffer, self.fns.free)
    }
}

/// Looks up every entry point; the first missing one refuses the library.
fn resolve(library: &libloading::Library, file: &Path) -> Result<Functions, PluginError> {
    macro_rules! get {
        ($name:literal) => {{
            // SAFETY: a version-1 library exports this name with the ABI's signature
            // (abi.rs); the pointer is used only while the library stays loaded.
            let symbol =
                unsafe { library.get(concat!($name, "\0").as_bytes()) }.map_err(|_| PluginError::MissingSymbol {
                    file: file.to_path_buf(),
                    symbol: $name,
                })?;
            *symbol
        }};
    }
    Ok(Functions {
        descriptor: get!("plexus_plugin_descriptor"),
        init: get!("plexus_plugin_init"),
        alloc: get!("plexus_buffer_alloc"),
        free: get!("plexus_buffer_free"),
        position_to_json: get!("plexus_position_to_json"),
        position_from_json: get!("plexus_position_from_json"),
        source_new: get!("plexus_source_new"),
        source_start: get!("plexus_source_start"),
        source_poll: get!("plexus_source_poll"),
        source_commit: get!("plexus_source_commit"),
        source_stop: get!("plexus_source_stop"),
        source_free: get!("plexus_source_free"),
        sink_new: get!("plexus_sink_new"),
        sink_start: get!("plexus_sink_start"),
        sink_write: get!("plexus_sink_write"),
        sink_flush: get!("plexus_sink_flush"),
        sink_durable: get!("plexus_sink_durable_offsets"),
        sink_stop: get!("plexus_sink_stop"),
        sink_free: get!("plexus_sink_free"),
    })
}

/// One connector instance inside a plugin. Its methods block (they run the plugin's
/// future to its end): call them from a blocking thread.
pub(crate) struct Instance {
    library: Arc<PluginLibrary>,
    kind: ConnectorKind,
    ptr: *mut c_void,
    /// The runtime's services for the instance, from its start on. Dropped after the
    /// instance is freed, since the plugin holds a pointer to it.
    task: Option<Box<HostTask>>,
}

// SAFETY: the plugin's connector is `Send` (the `Source`/`Sink` contract) and the
// host makes one call at a time on it (`&mut self`, behind a mutex).
unsafe impl Send for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        let free = match self.kind {
            ConnectorKind::Source => self.library.fns.source_free,
            ConnectorKind::Sink => self.library.fns.sink_free,
        };
        let release = Release {
            ptr: self.ptr,
            free,
            task: self.task.take(),
            _library: Arc::clone(&self.library),
        };
        // The connector's own drop may block (joining threads, flushing): not on the
        // worker's async threads. (At a runtime's shutdown the closure may never run:
        // the instance is then leaked, not freed twice.)
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || release.run())),
            Err(_) => release.run(),
        }
    }
}

/// What freeing an instance takes, to do it on a blocking thread.
struct Release {
    ptr: *mut c_void,
    free: abi::FreeFn,
    task: Option<Box<HostTask>>,
    _library: Arc<PluginLibrary>,
}

// SAFETY: as for `Instance`: the instance is `Send`, and no call runs on it any more.
unsafe impl Send for Release {}

impl Release {
    fn run(self) {
        // SAFETY: a live instance of this kind with no call running (its `Instance`
        // is gone); the task it points to is dropped only after it.
        unsafe { (self.free)(self.ptr) };
        drop(self.task);
    }
}

impl Instance {
    pub fn source_start(&mut self, ctx: SourceContext, resume: Option<&Position>) -> Result<(), ConnectorError> {
        let boundaries = codec::encode_positions(ctx.replay_boundaries()).map_err(codec_error)?;
        let name = ctx.name().to_owned();
        let task = self.task(TaskCtx::Source(ctx));
        let raw = task.raw(&name, &boundaries);
        let resume = resume.map_or_else(PlexusBytes::none, |p| PlexusBytes::of(p.as_bytes()));
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live source instance used by this call alone; `raw`'s data (the
        // boxed task) lives until the instance is freed, its lent bytes for the call.
        let status = unsafe { (self.library.fns.source_start)(self.ptr, &raw, resume, &mut error) };
        self.library.check(status, error, "start")
    }

    pub fn source_poll(&mut self) -> Result<Poll, ConnectorError> {
        let mut kind = abi::POLL_IDLE;
        let mut batch = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live, started source instance used by this call alone.
        let status = unsafe { (self.library.fns.source_poll)(self.ptr, &mut kind, &mut batch, &mut error) };
        let batch = OwnedBuffer::new(batch, self.library.fns.free);
        self.library.check(status, error, "poll")?;
        match kind {
            abi::POLL_BATCH => {
                // The records keep the plugin's buffer (released through the plugin
                // when the last of them goes): no copy.
                let bytes = Bytes::from_owner(batch);
                let batch = codec::decode_source_batch(&bytes).map_err(|e| self.bad_bytes(e))?;
                Ok(Poll::Batch(batch))
            }
            abi::POLL_IDLE => Ok(Poll::Idle),
            abi::POLL_FINISHED => Ok(Poll::Finished),
            other => Err(ConnectorError::fatal(format!(
                "plugin `{}` returned the unknown poll outcome {other}",
                self.library.name()
            ))),
        }
    }

    pub fn source_commit(&mut self, position: &Position) -> Result<(), ConnectorError> {
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live source instance used by this call alone; lent bytes.
        let status =
            unsafe { (self.library.fns.source_commit)(self.ptr, PlexusBytes::of(position.as_bytes()), &mut error) };
        self.library.check(status, error, "commit")
    }

    pub fn stop(&mut self) -> Result<(), ConnectorError> {
        let stop = match self.kind {
            ConnectorKind::Source => self.library.fns.source_stop,
            ConnectorKind::Sink => self.library.fns.sink_stop,
        };
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live instance of this kind used by this call alone.
        let status = unsafe { stop(self.ptr, &mut error) };
        self.library.check(status, error, "stop")
    }

    pub fn sink_start(&mut self, ctx: SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        let name = ctx.name().to_owned();
        let task = self.task(TaskCtx::Sink(ctx));
        let raw = task.raw(&name, &[]);
        let mut has = 0u8;
        let mut offsets = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live sink instance used by this call alone; `raw` as in `source_start`.
        let status = unsafe { (self.library.fns.sink_start)(self.ptr, &raw, &mut has, &mut offsets, &mut error) };
        let offsets = OwnedBuffer::new(offsets, self.library.fns.free);
        self.library.check(status, error, "start")?;
        self.offsets(has, offsets)
    }

    pub fn sink_write(&mut self, records: &[SinkRecord]) -> Result<(), ConnectorError> {
        let mut buffer = self.library.alloc(codec::sink_records_len(records));
        buffer
            .fill(|out| codec::encode_sink_records(records, out))
            .map_err(codec_error)?;
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live, started sink instance used by this call alone; the buffer,
        // of the plugin's allocator, is handed over.
        let status = unsafe { (self.library.fns.sink_write)(self.ptr, buffer.into_raw(), &mut error) };
        self.library.check(status, error, "write")
    }

    pub fn sink_flush(&mut self, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        let encoded = codec::encode_offsets(offsets).map_err(codec_error)?;
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live sink instance used by this call alone; lent bytes.
        let status = unsafe { (self.library.fns.sink_flush)(self.ptr, PlexusBytes::of(&encoded), &mut error) };
        self.library.check(status, error, "flush")
    }

    pub fn sink_durable_offsets(&mut self) -> Result<Option<SinkOffsets>, ConnectorError> {
        let mut has = 0u8;
        let mut offsets = PlexusBuffer::empty();
        let mut error = PlexusBuffer::empty();
        // SAFETY: a live sink instance used by this call alone.
        let status = unsafe { (self.library.fns.sink_durable)(self.ptr, &mut has, &mut offsets, &mut error) };
        let offsets = OwnedBuffer::new(offsets, self.library.fns.free);
        self.library.check(status, error, "durable_offsets")?;
        self.offsets(has, offsets)
    }

    fn offsets(&self, has: u8, buffer: OwnedBuffer) -> Result<Option<SinkOffsets>, ConnectorError> {
        if has == 0 {
            return Ok(None);
        }
        let bytes = Bytes::copy_from_slice(buffer.as_ref());
        codec::decode_offsets(&bytes).map(Some).map_err(|e| self.bad_bytes(e))
    }

    /// Keeps the task's services for the instance's life (a restart makes a new instance).
    fn task(&mut self, ctx: TaskCtx) -> &HostTask {
        self.task
            .insert(Box::new(HostTask::new(ctx, Arc::clone(&self.library))))
    }

    fn bad_bytes(&self, e: codec::CodecError) -> ConnectorError {
        ConnectorError::fatal(format!(
            "plugin `{}` returned bytes that do not follow the plugin ABI: {e}",
            self.library.name()
        ))
    }
}

fn codec_error(e: codec::CodecError) -> ConnectorError {
    ConnectorError::fatal(format!("cannot encode for the plugin: {e}"))
}
