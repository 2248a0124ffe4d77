//! `type = "file-sink"`: records as JSON lines in rolled files.

mod config;
mod sink;

#[cfg(test)]
mod tests;

pub use config::FileSinkConfig;
pub use sink::FileSink;

pub(crate) use config::SCHEMA;
