//! The settings of a `file-source`.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use plexus_connector::{ConfigSchema, FieldKind, FieldSpec, Settings};

use crate::error::FileError;

/// How each line of the files is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per line, taken as is.
    Jsonl,
    /// Comma-separated values, each row turned into a JSON object (or array).
    Csv,
}

/// The validated settings of one `file-source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceConfig {
    /// The file to read, or a pattern with `*` (any characters) and `?` (one character)
    /// in its file name, like `logs/app-*.jsonl`. Matching files are read one at a
    /// time, in name order; the last one is tailed until a file with a later name
    /// appears. Wildcards in directory names are not supported.
    pub path: PathBuf,
    /// `jsonl`: each line is one JSON value, passed on unchanged (blank lines are
    /// skipped). `csv`: each line is a row of comma-separated values (RFC 4180 quoting;
    /// a quoted field cannot span lines), passed on as a JSON object of strings.
    pub format: Format,
    /// CSV only: the first line of each file names the columns, and rows become JSON
    /// objects `{"column": "value"}`. When false, rows become JSON arrays of strings.
    pub csv_header: bool,
    /// How often to look for appended data, new files, rotation and truncation once
    /// everything has been read.
    pub poll_interval: Duration,
    /// The most records in one batch.
    pub batch_size: usize,
}

impl FileSourceConfig {
    /// A configuration of `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> FileSourceConfig {
        FileSourceConfig {
            path: path.into(),
            format: Format::Jsonl,
            csv_header: true,
            poll_interval: Duration::from_secs(1),
            batch_size: 1000,
        }
    }

    /// Reads validated settings; absent optional settings take their defaults.
    pub fn from_settings(settings: &Settings) -> Result<FileSourceConfig, FileError> {
        let path = settings.string("path").ok_or_else(|| {
            FileError::Config("file-source needs `path`: a file or a pattern like `logs/*.jsonl`".into())
        })?;
        let mut config = FileSourceConfig::new(path);
        if settings.get("format").is_some() {
            config.format = match settings.string("format") {
                Some("jsonl") => Format::Jsonl,
                Some("csv") => Format::Csv,
                _ => return Err(invalid("format", "must be `jsonl` or `csv`")),
            };
        }
        if settings.get("csv_header").is_some() {
            config.csv_header = settings
                .bool("csv_header")
                .ok_or_else(|| invalid("csv_header", "must be true or false"))?;
        }
        if settings.get("poll_interval").is_some() {
            config.poll_interval = settings
                .duration("poll_interval")
                .ok_or_else(|| invalid("poll_interval", "must be a duration like \"1s\""))?;
        }
        if settings.get("batch_size").is_some() {
            config.batch_size = settings
                .integer("batch_size")
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("batch_size", "must be an integer of at least 1"))?;
        }
        Ok(config)
    }
}

/// The settings `type = "file-source"` accepts.
pub(crate) static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(FieldSpec::new("path", FieldKind::Path).required().doc(
            "The file to read, or a pattern with `*` (any characters) and `?` (one character) in its file name, \
             like `logs/app-*.jsonl`. Matching files are read one at a time, in name order; the last one is tailed \
             until a file with a later name appears. Wildcards in directory names are not supported.",
        ))
        .field(FieldSpec::new("format", FieldKind::one_of(["jsonl", "csv"])).with_default("jsonl").doc(
            "`jsonl`: each line is one JSON value, passed on unchanged (blank lines are skipped). `csv`: each line is \
             a row of comma-separated values (RFC 4180 quoting; a quoted field cannot span lines), passed on as JSON.",
        ))
        .field(FieldSpec::new("csv_header", FieldKind::Bool).with_default(true).doc(
            "CSV only: the first line of each file names the columns, and rows become JSON objects \
             `{\"column\": \"value\"}`. When false, rows become JSON arrays of strings.",
        ))
        .field(
            FieldSpec::new("poll_interval", FieldKind::Duration)
                .with_default(plexus_config::Duration::from_secs(1))
                .doc("How often to look for appended data, new files, rotation and truncation once everything has been read."),
        )
        .field(
            FieldSpec::new("batch_size", FieldKind::integer_between(Some(1), None))
                .with_default(1000)
                .doc("The most records in one batch."),
        )
});

fn invalid(name: &str, problem: &str) -> FileError {
    FileError::Config(format!("file-source setting `{name}` {problem}"))
}
