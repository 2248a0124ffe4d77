//! The runtime's services as a plugin connector sees them: its dead letters, schema
//! lookups and counters go through the host's callbacks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use plexus_connector::{ConnectorError, DeadLetter, DeadLetters, Schemas, TaskMetrics, async_trait};

use super::take_buffer;
use crate::abi::{
    PlexusBuffer, PlexusBytes, PlexusMetrics, PlexusTaskContext, STATUS_NOT_FOUND, STATUS_OK, STATUS_RETRIABLE,
};
use crate::codec;

/// The host's side of one task.
#[derive(Clone, Copy)]
pub(super) struct HostLink {
    ctx: PlexusTaskContext,
}

// SAFETY: the host guarantees that `host_data` and its functions may be used from any
// thread until the instance is freed (ABI.md, "Threads"); the struct is only plain
// pointers otherwise.
unsafe impl Send for HostLink {}
// SAFETY: as above; the callbacks are thread-safe on the host's side.
unsafe impl Sync for HostLink {}

impl HostLink {
    /// # Safety
    /// `ctx.host_data` and the functions stay valid until the instance is freed, and
    /// the instance (which owns this link) is freed before they go.
    pub(super) unsafe fn new(ctx: PlexusTaskContext) -> HostLink {
        HostLink {
            ctx: PlexusTaskContext {
                connector: PlexusBytes::none(),
                replay_boundaries: PlexusBytes::none(),
                ..ctx
            },
        }
    }

    pub(super) fn dead_letters(self) -> Arc<dyn DeadLetters> {
        Arc::new(HostDeadLetters { link: self })
    }

    pub(super) fn schemas(self) -> Arc<dyn Schemas> {
        Arc::new(HostSchemas { link: self })
    }

    /// Tells the host the task's counters.
    pub(super) fn report(&self, metrics: &TaskMetrics) {
        let snapshot = PlexusMetrics {
            records: metrics.records.load(Ordering::Relaxed),
            bytes: metrics.bytes.load(Ordering::Relaxed),
            records_out: metrics.records_out.load(Ordering::Relaxed),
            bytes_out: metrics.bytes_out.load(Ordering::Relaxed),
            errors: metrics.errors.load(Ordering::Relaxed),
            source_lag_bytes: metrics.source_lag_bytes.load(Ordering::Relaxed),
            source_lag_ms: metrics.source_lag_ms.load(Ordering::Relaxed),
            snapshot_rows: metrics.snapshot_rows.load(Ordering::Relaxed),
            snapshot_rows_total: metrics.snapshot_rows_total.load(Ordering::Relaxed),
        };
        // SAFETY: `host_data` and the function are valid while the instance lives
        // (`new`'s contract); the snapshot outlives the call.
        unsafe { (self.ctx.metrics)(self.ctx.host_data, &snapshot) };
    }

    /// The message a callback left in `buf` (a buffer of this library's allocator).
    fn message(buf: PlexusBuffer, default: &str) -> String {
        // SAFETY: the host fills out-buffers only with buffers of this library's
        // allocator (ABI.md), handed over to us.
        let bytes = unsafe { take_buffer(buf) };
        if bytes.is_empty() {
            default.to_owned()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

struct HostDeadLetters {
    link: HostLink,
}

impl DeadLetters for HostDeadLetters {
    fn send(&self, _connector: &str, letter: DeadLetter) -> Result<(), ConnectorError> {
        let encoded = codec::encode_dead_letter(&letter)
            .map_err(|e| ConnectorError::fatal(format!("encode a dead letter: {e}")))?;
        let mut error = PlexusBuffer::empty();
        let ctx = &self.link.ctx;
        // SAFETY: valid while the instance lives (`HostLink::new`); `encoded` and
        // `error` outlive the call.
        let status = unsafe { (ctx.dead_letter)(ctx.host_data, PlexusBytes::of(&encoded), &mut error) };
        let message = HostLink::message(error, "the host refused a dead letter");
        match status {
            STATUS_OK => Ok(()),
            STATUS_RETRIABLE => Err(ConnectorError::retriable(message)),
            _ => Err(ConnectorError::fatal(message)),
        }
    }
}

struct HostSchemas {
    link: HostLink,
}

#[async_trait]
impl Schemas for HostSchemas {
    async fn get(&self, id: &str) -> Result<Option<Bytes>, ConnectorError> {
        // The host answers synchronously (it may read its log meanwhile): this blocks
        // the thread running the connector's call, which is the host's to block.
        let mut out = PlexusBuffer::empty();
        let ctx = &self.link.ctx;
        // SAFETY: valid while the instance lives; `id` and `out` outlive the call.
        let status = unsafe { (ctx.schema)(ctx.host_data, PlexusBytes::of(id.as_bytes()), &mut out) };
        match status {
            STATUS_OK => {
                // SAFETY: a buffer of this library's allocator, handed over (ABI.md).
                Ok(Some(Bytes::from(unsafe { take_buffer(out) })))
            }
            STATUS_NOT_FOUND => {
                let _ = HostLink::message(out, "");
                Ok(None)
            }
            STATUS_RETRIABLE => Err(ConnectorError::retriable(HostLink::message(
                out,
                "schema lookup failed",
            ))),
            _ => Err(ConnectorError::fatal(HostLink::message(out, "schema lookup failed"))),
        }
    }
}
