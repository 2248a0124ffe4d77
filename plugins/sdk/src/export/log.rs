//! The plugin's `tracing` events and panics, forwarded to the host's log.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::RwLock;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::{LEVEL_DEBUG, LEVEL_ERROR, LEVEL_INFO, LEVEL_TRACE, LEVEL_WARN, PlexusBytes, PlexusHost};

/// The host's log function, once `plexus_plugin_init` gave it.
static HOST: RwLock<Option<Host>> = RwLock::new(None);

#[derive(Clone, Copy)]
struct Host(PlexusHost);

// SAFETY: the host guarantees its log function and data are valid for the life of the
// process and callable from any thread (ABI.md).
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

thread_local! {
    /// Where the last panic on this thread happened, for the error the host gets.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sends this library's `tracing` events and panic messages to the host.
pub(super) fn install(host: PlexusHost, plugin: &'static str) {
    if let Ok(mut slot) = HOST.write() {
        *slot = Some(Host(host));
    }
    let max = match host.max_level {
        LEVEL_ERROR => LevelFilter::ERROR,
        LEVEL_WARN => LevelFilter::WARN,
        LEVEL_INFO => LevelFilter::INFO,
        LEVEL_DEBUG => LevelFilter::DEBUG,
        LEVEL_TRACE => LevelFilter::TRACE,
        _ => LevelFilter::OFF,
    };
    // Fails when a second host in the same process initialises the library again:
    // the first subscriber forwards to whichever host was given last.
    let _ = tracing::subscriber::set_global_default(Forward { max });
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".to_owned());
        let message = payload_text(info.payload());
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(place.clone()));
        tracing::error!(target: "panic", "plugin `{plugin}` panicked at {place}: {message}");
    }));
}

/// The text of a caught panic, with where it happened when the hook saw it.
pub(super) fn panic_text(payload: &(dyn Any + Send)) -> String {
    let message = payload_text(payload);
    match LAST_PANIC.with(|last| last.borrow_mut().take()) {
        Some(place) => format!("panicked at {place}: {message}"),
        None => format!("panicked: {message}"),
    }
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}

/// A subscriber that formats each event and hands it to the host.
struct Forward {
    max: LevelFilter,
}

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Spans are not forwarded: the host's own span around each call (the
        // connector's name) frames the events.
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Ok(slot) = HOST.read() else { return };
        let Some(Host(host)) = *slot else { return };
        let mut text = Text::default();
        event.record(&mut text);
        let level = match *event.metadata().level() {
            Level::ERROR => LEVEL_ERROR,
            Level::WARN => LEVEL_WARN,
            Level::INFO => LEVEL_INFO,
            Level::DEBUG => LEVEL_DEBUG,
            _ => LEVEL_TRACE,
        };
        let target = event.metadata().target();
        let message = text.finish();
        // SAFETY: valid for the life of the process (`install`'s host contract); the
        // lent bytes outlive the call.
        unsafe {
            (host.log)(
                host.host_data,
                level,
                PlexusBytes::of(target.as_bytes()),
                PlexusBytes::of(message.as_bytes()),
            )
        };
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// The message, then ` field=value` for every other field.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            self.message + &self.fields
        }
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
