//! `plexus-plugin-sdk`: plexus connectors built as shared libraries.
//!
//! A plugin is a `cdylib` crate whose connectors implement the same
//! [`plexus_connector`] contract as the built-in ones ([`Source`](connector::Source),
//! [`Sink`](connector::Sink), [`ConnectorFactory`](connector::ConnectorFactory)), and
//! that ends with one [`export_plugin!`]:
//!
//! ```ignore
//! plexus_plugin_sdk::export_plugin! {
//!     name: "sequence",
//!     version: env!("CARGO_PKG_VERSION"),
//!     factories: [SequenceFactory::new()],
//! }
//! ```
//!
//! The macro exports the versioned C ABI of [`abi`] (documented byte for byte in
//! `plugins/sdk/ABI.md`): the ABI version as data, a descriptor (the plugin's name,
//! version, connector types, kinds and settings schemas) the host reads before it calls
//! anything else, and one function per connector method. All `unsafe` is inside this
//! crate; every entry point catches panics and reports them as errors, so that a
//! panicking plugin fails its task (which the worker restarts with backoff), never the
//! worker. The plugin's `tracing` events go to the host's log with the plugin's name.
//!
//! The connector's async methods run on a small tokio runtime of the plugin's own (two
//! worker threads): the host calls each entry point from a blocking thread of its
//! runtime and the plugin blocks on the connector's future there. The connector gets
//! everything a built-in one gets: its task context with dead letters, schemas
//! ([`SinkContext::schema`](connector::SinkContext::schema)) and counters, positions
//! and replay boundaries, `commit`, `flush`, `durable_offsets` and `stop`.

pub mod abi;
pub mod codec;
pub mod descriptor;
#[doc(hidden)]
pub mod export;

/// The connector contract, re-exported so that a plugin needs only this crate.
pub use plexus_connector as connector;
/// The async runtime the plugin's connectors run on.
pub use tokio;
/// The plugin's log: events of this `tracing` go to the host's log (another version
/// of `tracing` in a plugin would log nowhere).
pub use tracing;

/// Exports a plugin: its name, version and connector factories.
///
/// ```ignore
/// plexus_plugin_sdk::export_plugin! {
///     name: "jsonl",
///     version: env!("CARGO_PKG_VERSION"),
///     factories: [JsonlSinkFactory, BlackholeFactory],
/// }
/// ```
///
/// Use it once, in the root of a `cdylib` crate. Each factory is an expression of a
/// type implementing [`ConnectorFactory`](connector::ConnectorFactory); they are built
/// the first time the host asks for the descriptor.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, factories: [$($factory:expr),* $(,)?] $(,)?) => {
        static __PLEXUS_PLUGIN: ::std::sync::LazyLock<$crate::export::Plugin> = ::std::sync::LazyLock::new(|| {
            $crate::export::Plugin::new(
                $name,
                $version,
                ::std::vec![$(::std::boxed::Box::new($factory) as ::std::boxed::Box<dyn $crate::connector::ConnectorFactory>),*],
            )
        });

        /// The plexus plugin ABI version this library implements.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub static PLEXUS_PLUGIN_ABI_VERSION: u32 = $crate::abi::ABI_VERSION;

        $crate::__export_fns!();
    };
}

/// The exported functions; see [`export_plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_fns {
    () => {
        /// # Safety
        /// Called by the plexus host as `plugins/sdk/ABI.md` describes.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_plugin_descriptor(
            out: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: the host keeps the ABI's contract (ABI.md).
            unsafe { $crate::export::descriptor(&__PLEXUS_PLUGIN, out, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_plugin_init(
            host: *const $crate::abi::PlexusHost,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::init(&__PLEXUS_PLUGIN, host, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_buffer_alloc(len: usize) -> $crate::abi::PlexusBuffer {
            $crate::export::buffer_alloc(len)
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_buffer_free(buffer: $crate::abi::PlexusBuffer) {
            // SAFETY: as above.
            unsafe { $crate::export::buffer_free(buffer) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_position_to_json(
            type_name: $crate::abi::PlexusBytes,
            position: $crate::abi::PlexusBytes,
            out: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::position_to_json(&__PLEXUS_PLUGIN, type_name, position, out, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_position_from_json(
            type_name: $crate::abi::PlexusBytes,
            json: $crate::abi::PlexusBytes,
            out: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::position_from_json(&__PLEXUS_PLUGIN, type_name, json, out, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_new(
            type_name: $crate::abi::PlexusBytes,
            settings: $crate::abi::PlexusBytes,
            out_instance: *mut *mut ::std::ffi::c_void,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe {
                $crate::export::new_instance(
                    &__PLEXUS_PLUGIN,
                    $crate::connector::ConnectorKind::Source,
                    type_name,
                    settings,
                    out_instance,
                    out_error,
                )
            }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_start(
            instance: *mut ::std::ffi::c_void,
            ctx: *const $crate::abi::PlexusTaskContext,
            resume: $crate::abi::PlexusBytes,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::source_start(instance, ctx, resume, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_poll(
            instance: *mut ::std::ffi::c_void,
            out_kind: *mut u32,
            out_batch: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::source_poll(instance, out_kind, out_batch, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_commit(
            instance: *mut ::std::ffi::c_void,
            position: $crate::abi::PlexusBytes,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::source_commit(instance, position, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_stop(
            instance: *mut ::std::ffi::c_void,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::source_stop(instance, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_source_free(instance: *mut ::std::ffi::c_void) {
            // SAFETY: as above.
            unsafe { $crate::export::free_instance($crate::connector::ConnectorKind::Source, instance) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_new(
            type_name: $crate::abi::PlexusBytes,
            settings: $crate::abi::PlexusBytes,
            out_instance: *mut *mut ::std::ffi::c_void,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe {
                $crate::export::new_instance(
                    &__PLEXUS_PLUGIN,
                    $crate::connector::ConnectorKind::Sink,
                    type_name,
                    settings,
                    out_instance,
                    out_error,
                )
            }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_start(
            instance: *mut ::std::ffi::c_void,
            ctx: *const $crate::abi::PlexusTaskContext,
            out_has_offsets: *mut u8,
            out_offsets: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::sink_start(instance, ctx, out_has_offsets, out_offsets, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_write(
            instance: *mut ::std::ffi::c_void,
            records: $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::sink_write(instance, records, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_flush(
            instance: *mut ::std::ffi::c_void,
            offsets: $crate::abi::PlexusBytes,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::sink_flush(instance, offsets, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_durable_offsets(
            instance: *mut ::std::ffi::c_void,
            out_has_offsets: *mut u8,
            out_offsets: *mut $crate::abi::PlexusBuffer,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::sink_durable_offsets(instance, out_has_offsets, out_offsets, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_stop(
            instance: *mut ::std::ffi::c_void,
            out_error: *mut $crate::abi::PlexusBuffer,
        ) -> $crate::abi::Status {
            // SAFETY: as above.
            unsafe { $crate::export::sink_stop(instance, out_error) }
        }

        /// # Safety
        /// As above.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn plexus_sink_free(instance: *mut ::std::ffi::c_void) {
            // SAFETY: as above.
            unsafe { $crate::export::free_instance($crate::connector::ConnectorKind::Sink, instance) }
        }
    };
}
