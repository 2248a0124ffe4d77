//! `type = "file-source"`: JSON lines or CSV from a file or a glob, tailed.

mod config;
mod csv;
mod files;
mod position;
mod source;

#[cfg(test)]
mod tests;

pub use config::{FileSourceConfig, Format};
pub use position::{FileId, FilePosition};
pub use source::FileSource;

pub(crate) use config::SCHEMA;
