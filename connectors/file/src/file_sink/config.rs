//! The settings of a `file-sink`.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use plexus_config::ByteSize;
use plexus_connector::{ConfigSchema, FieldKind, FieldSpec, Settings};

use crate::error::FileError;

/// The validated settings of one `file-sink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkConfig {
    /// The directory to write into; created if missing.
    pub path: PathBuf,
    /// Files are named `<file_prefix>-<topic>-<partition>-<first offset>.jsonl`, the
    /// offset zero-padded to 20 digits so names sort in log order. `None`: the
    /// connector's name.
    pub file_prefix: Option<String>,
    /// A file is closed and the next one started before it would grow past this size
    /// (a single larger record gets a file of its own).
    pub roll_size: u64,
    /// A file is closed and the next one started once it has been open this long
    /// (checked on each write and flush).
    pub roll_interval: Duration,
}

impl FileSinkConfig {
    /// A configuration writing into `path`, with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> FileSinkConfig {
        FileSinkConfig {
            path: path.into(),
            file_prefix: None,
            roll_size: 64 << 20,
            roll_interval: Duration::from_secs(3600),
        }
    }

    /// Reads validated settings; absent optional settings take their defaults.
    pub fn from_settings(settings: &Settings) -> Result<FileSinkConfig, FileError> {
        let path = settings
            .string("path")
            .ok_or_else(|| FileError::Config("file-sink needs `path`: the directory to write into".into()))?;
        let mut config = FileSinkConfig::new(path);
        if settings.get("file_prefix").is_some() {
            let prefix = settings
                .string("file_prefix")
                .ok_or_else(|| invalid("file_prefix", "must be a string"))?;
            if prefix.is_empty() || prefix.contains(['/', '\0']) {
                return Err(invalid("file_prefix", "must be a non-empty file name without `/`"));
            }
            config.file_prefix = Some(prefix.to_owned());
        }
        if settings.get("roll_size").is_some() {
            config.roll_size = settings
                .size("roll_size")
                .filter(|size| *size > 0)
                .ok_or_else(|| invalid("roll_size", "must be a size above 0, like \"64MiB\""))?;
        }
        if settings.get("roll_interval").is_some() {
            config.roll_interval = settings
                .duration("roll_interval")
                .filter(|interval| !interval.is_zero())
                .ok_or_else(|| invalid("roll_interval", "must be a duration above 0, like \"1h\""))?;
        }
        Ok(config)
    }
}

/// The settings `type = "file-sink"` accepts.
pub(crate) static SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(FieldSpec::new("path", FieldKind::Path).required().doc("The directory to write into; created if missing."))
        .field(FieldSpec::new("file_prefix", FieldKind::String).doc(
            "Files are named `<file_prefix>-<topic>-<partition>-<first offset>.jsonl`, the offset zero-padded to 20 \
             digits so that names sort in log order. Default: the connector's name.",
        ))
        .field(FieldSpec::new("roll_size", FieldKind::Size).with_default(ByteSize::mib(64)).doc(
            "A file is closed and the next one started before it would grow past this size (a single larger record \
             gets a file of its own).",
        ))
        .field(
            FieldSpec::new("roll_interval", FieldKind::Duration)
                .with_default(plexus_config::Duration::from_secs(3600))
                .doc("A file is closed and the next one started once it has been open this long (checked on each write and flush)."),
        )
});

fn invalid(name: &str, problem: &str) -> FileError {
    FileError::Config(format!("file-sink setting `{name}` {problem}"))
}
