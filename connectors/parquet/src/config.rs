//! The settings of a `parquet` sink.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::timezone::Tz;
use plexus_config::ByteSize;
use plexus_connector::{FieldKind, FieldSpec, Settings};

use crate::error::ParquetError;
use crate::keys::{KeyTemplate, TimeFormat};
use crate::schema::TableSchema;

/// How record values become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// One row per change event: the table's columns from `after` (from `before` for a
    /// delete), then `__op`, `__ts_ms`, `__lsn`, `__seq`.
    Flatten,
    /// One row per change event with `before`, `after` and `source` as structs, `op` and
    /// `ts_ms`.
    Whole,
    /// The value is the row itself (a plain JSON object of the columns).
    None,
}

/// The compression codec of the Parquet pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
    None,
}

/// Where a record's time comes from, for time partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// The log record's timestamp (for change events: the envelope's `ts_ms`).
    RecordTimestamp,
    /// A column of the written row (`created_at`, `__ts_ms`; `after.created_at` with
    /// `envelope = "whole"`): a timestamp, a date, or an integer of milliseconds since
    /// the Unix epoch. Rows where it is null are placed by their record timestamp.
    Field(String),
}

/// Hive-style time directories from each record's own time, never the wall clock, so
/// that a replay puts every record under the same path again.
#[derive(Debug, Clone)]
pub struct TimePartitioning {
    pub format: TimeFormat,
    pub source: TimeSource,
    pub zone: Tz,
}

/// The validated settings of one `parquet` sink (the object store's settings are read
/// by `plexus-connector-s3`).
#[derive(Debug, Clone)]
pub struct ParquetSinkConfig {
    pub compression: Compression,
    /// A row group is closed once it holds this many rows.
    pub row_group_rows: usize,
    /// A row group is closed once its encoded size reaches about this many bytes.
    pub row_group_size: usize,
    /// Bytes per multipart-upload part (at least 5 MiB).
    pub part_size: usize,
    /// A partition's open files are finished once they hold this many records together.
    pub rotate_records: u64,
    /// ... once one of them reaches this many bytes.
    pub rotate_size: u64,
    /// ... once they have been open this long.
    pub rotate_interval: Duration,
    /// ... once no record has arrived for them for this long.
    pub rotate_idle: Duration,
    /// Bytes all open files may buffer together.
    pub memory_budget: u64,
    pub envelope: Envelope,
    /// Columns whose values name directories: `country=DE/`.
    pub partition_by: Vec<String>,
    pub time_partition: Option<TimePartitioning>,
    pub key_template: KeyTemplate,
    /// The columns of records that name no schema.
    pub columns: Option<Arc<TableSchema>>,
}

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        ParquetSinkConfig {
            compression: Compression::Zstd,
            row_group_rows: 1_000_000,
            row_group_size: 128 << 20,
            part_size: 8 << 20,
            rotate_records: 10_000_000,
            rotate_size: 512 << 20,
            rotate_interval: Duration::from_secs(600),
            rotate_idle: Duration::from_secs(60),
            memory_budget: 256 << 20,
            envelope: Envelope::Flatten,
            partition_by: Vec::new(),
            time_partition: None,
            key_template: KeyTemplate::default(),
            columns: None,
        }
    }
}

impl ParquetSinkConfig {
    /// Reads validated settings; absent settings take their defaults.
    pub fn from_settings(settings: &Settings) -> Result<ParquetSinkConfig, ParquetError> {
        let mut config = ParquetSinkConfig::default();
        if let Some(text) = settings.string("compression") {
            config.compression = match text {
                "zstd" => Compression::Zstd,
                "snappy" => Compression::Snappy,
                "none" => Compression::None,
                other => {
                    return Err(invalid(
                        "compression",
                        &format!("must be zstd, snappy or none, not `{other}`"),
                    ));
                }
            };
        }
        if let Some(text) = settings.string("envelope") {
            config.envelope = match text {
                "flatten" => Envelope::Flatten,
                "whole" => Envelope::Whole,
                "none" => Envelope::None,
                other => {
                    return Err(invalid(
                        "envelope",
                        &format!("must be flatten, whole or none, not `{other}`"),
                    ));
                }
            };
        }
        config.row_group_rows = positive(settings, "row_group_rows", config.row_group_rows as u64)? as usize;
        config.row_group_size = size(settings, "row_group_size", config.row_group_size as u64, 1)? as usize;
        config.part_size = size(
            settings,
            "part_size",
            config.part_size as u64,
            plexus_connector_s3::MIN_PART_SIZE as u64,
        )? as usize;
        config.rotate_records = positive(settings, "rotate_records", config.rotate_records)?;
        config.rotate_size = size(settings, "rotate_size", config.rotate_size, 1)?;
        config.rotate_interval = duration(settings, "rotate_interval", config.rotate_interval)?;
        config.rotate_idle = duration(settings, "rotate_idle", config.rotate_idle)?;
        config.memory_budget = size(settings, "memory_budget", config.memory_budget, 1 << 20)?;
        if settings.get("partition_by").is_some() {
            let fields = settings
                .string_list("partition_by")
                .ok_or_else(|| invalid("partition_by", "must be a list of column names"))?;
            if let Some(empty) = fields.iter().find(|f| f.trim().is_empty()) {
                return Err(invalid(
                    "partition_by",
                    &format!("holds an empty column name `{empty}`"),
                ));
            }
            config.partition_by = fields.to_vec();
        }
        config.time_partition = time_partitioning(settings)?;
        if let Some(text) = settings.string("key_template") {
            config.key_template = text.parse().map_err(|e: String| invalid("key_template", &e))?;
        }
        if settings.get("columns").is_some() {
            let entries = settings
                .string_list("columns")
                .ok_or_else(|| invalid("columns", "must be a list like [\"id: Int64\", \"name: Utf8\"]"))?;
            let table = TableSchema::declared(entries).map_err(|e| invalid("columns", &e))?;
            config.columns = Some(Arc::new(table));
        }
        Ok(config)
    }
}

fn time_partitioning(settings: &Settings) -> Result<Option<TimePartitioning>, ParquetError> {
    let zone_name = settings.string("time_zone").unwrap_or("UTC");
    let zone: Tz = zone_name.parse().map_err(|e| {
        invalid(
            "time_zone",
            &format!("`{zone_name}` is not a time zone (an IANA name like \"Europe/Berlin\", or \"+02:00\"): {e}"),
        )
    })?;
    let format = match settings.string("time_partition") {
        None | Some("none") => return Ok(None),
        Some("day") => "dt=%Y-%m-%d",
        Some("hour") => "dt=%Y-%m-%d/hr=%H",
        Some(format) => format,
    };
    let format = TimeFormat::new(format).map_err(|e| invalid("time_partition", &e))?;
    let source = match settings.string("time_field") {
        None => TimeSource::RecordTimestamp,
        Some(field) if field.trim().is_empty() => return Err(invalid("time_field", "must name a column")),
        Some(field) => TimeSource::Field(field.to_owned()),
    };
    Ok(Some(TimePartitioning { format, source, zone }))
}

fn positive(settings: &Settings, name: &str, default: u64) -> Result<u64, ParquetError> {
    match settings.get(name) {
        None => Ok(default),
        Some(_) => settings
            .integer(name)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid(name, "must be a whole number above 0")),
    }
}

fn size(settings: &Settings, name: &str, default: u64, min: u64) -> Result<u64, ParquetError> {
    match settings.get(name) {
        None => Ok(default),
        Some(_) => settings.size(name).filter(|n| *n >= min).ok_or_else(|| {
            invalid(
                name,
                &format!("must be a size of at least {}, like \"64MiB\"", ByteSize(min)),
            )
        }),
    }
}

fn duration(settings: &Settings, name: &str, default: Duration) -> Result<Duration, ParquetError> {
    match settings.get(name) {
        None => Ok(default),
        Some(_) => settings
            .duration(name)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| invalid(name, "must be a duration above 0, like \"10m\"")),
    }
}

fn invalid(name: &str, problem: &str) -> ParquetError {
    ParquetError::Config(format!("parquet setting `{name}` {problem}"))
}

/// The settings `type = "parquet"` accepts, besides the object store's.
pub(crate) fn fields() -> Vec<FieldSpec> {
    let mib = ByteSize::mib;
    let duration = plexus_config::Duration::from_secs;
    vec![
        FieldSpec::new("compression", FieldKind::one_of(["zstd", "snappy", "none"]))
            .with_default("zstd")
            .doc("The codec of the Parquet pages: `zstd` (smallest files, fast to read), `snappy`, or `none`."),
        FieldSpec::new("envelope", FieldKind::one_of(["flatten", "whole", "none"]))
            .with_default("flatten")
            .doc(
                "How change events become rows. `flatten`: the table's columns from `after` (from `before` for a \
                 delete), then `__op` (c, u, d, r, t), `__ts_ms` (the event's `ts_ms` as a UTC timestamp), `__lsn` and \
                 `__seq` (the source position: `source.lsn`, `source.seq`; null when the source has none). `whole`: \
                 `before`, `after` and `source` as structs, `op`, `ts_ms`. `none`: the value is the row itself. Every \
                 layout ends with `__partition` and `__offset`, the record's place in the log.",
            ),
        FieldSpec::new("row_group_rows", FieldKind::integer_between(Some(1), None))
            .with_default(1_000_000)
            .doc("A row group is closed once it holds this many rows."),
        FieldSpec::new("row_group_size", FieldKind::Size)
            .with_default(mib(128))
            .doc("A row group is closed once its encoded size reaches about this much."),
        FieldSpec::new("part_size", FieldKind::Size).with_default(mib(8)).doc(
            "Files are uploaded in parts of at least this size as they are written (at least 5MiB, the S3 minimum), \
             so a large file never sits whole in memory. A file smaller than one part is written in one request.",
        ),
        FieldSpec::new("rotate_records", FieldKind::integer_between(Some(1), None))
            .with_default(10_000_000)
            .doc("A partition's open files are finished (and new ones started) once they hold this many records together."),
        FieldSpec::new("rotate_size", FieldKind::Size)
            .with_default(mib(512))
            .doc("A partition's open files are finished once one of them reaches about this size."),
        FieldSpec::new("rotate_interval", FieldKind::Duration)
            .with_default(duration(600))
            .doc("A partition's open files are finished once they have been open this long."),
        FieldSpec::new("rotate_idle", FieldKind::Duration)
            .with_default(duration(60))
            .doc("A partition's open files are finished once no record has arrived for them for this long."),
        FieldSpec::new("memory_budget", FieldKind::Size).with_default(mib(256)).doc(
            "What all open files may buffer together (row groups being built, parts not yet uploaded). Past it, the \
             partition buffering the most has its files finished first.",
        ),
        FieldSpec::new("partition_by", FieldKind::StringList).doc(
            "Columns whose values name directories, in order: `[\"country\"]` gives `country=DE/`. Null is \
             `__HIVE_DEFAULT_PARTITION__`; characters other than letters, digits and `._-` are %-escaped. With \
             `envelope = \"whole\"`, name fields inside the structs: `after.country`.",
        ),
        FieldSpec::new("time_partition", FieldKind::String).with_default("none").doc(
            "Directories from each record's own time (never the wall clock, so a replay writes the same paths): \
             `day` (`dt=2026-11-22`), `hour` (`dt=2026-11-22/hr=13`), `none`, or a strftime format such as \
             `\"year=%Y/month=%m\"` (to the second at most).",
        ),
        FieldSpec::new("time_field", FieldKind::String).doc(
            "The column giving a row's time for `time_partition` (a timestamp, a date, or milliseconds since the \
             epoch), e.g. `created_at` or `__ts_ms`. Default: the log record's timestamp. Rows where it is null are \
             placed by their record timestamp.",
        ),
        FieldSpec::new("time_zone", FieldKind::String)
            .with_default("UTC")
            .doc("The time zone of `time_partition`'s dates and hours: an IANA name (\"Europe/Berlin\") or an offset (\"+02:00\")."),
        FieldSpec::new("key_template", FieldKind::String).with_default(crate::keys::DEFAULT_TEMPLATE).doc(
            "The object key of each file, relative to the store's location. Variables: `{topic}`, `{partition}`, \
             `{first_offset}` (the offset of the file's first record, 20 digits, so names sort in log order), \
             `{path}` (the `partition_by` and `time_partition` directories, empty without them), `{schema}` (the \
             schema id). `{topic}`, `{partition}` and `{first_offset}` are required: they make names unique. Empty \
             path segments are dropped.",
        ),
        FieldSpec::new("columns", FieldKind::StringList).doc(
            "The columns of records that name no registered schema (no `plexus.schema` header), as \
             `[\"id: Int64\", \"name: Utf8\", \"price: Decimal128(10, 2)\", \"at: Timestamp(Microsecond, Some(\\\"UTC\\\"))\"]`, \
             types as Arrow writes them. Without it, such records go to the dead letters.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_setting() {
        let config = ParquetSinkConfig::from_settings(&Settings::new()).unwrap();
        assert_eq!(config.compression, Compression::Zstd);
        assert_eq!(config.part_size, 8 << 20);
        assert!(config.time_partition.is_none());

        let mut settings = Settings::new();
        settings.insert("compression", "snappy");
        settings.insert("envelope", "whole");
        settings.insert("row_group_rows", 1000);
        settings.insert("part_size", plexus_config::ByteSize::mib(6));
        settings.insert("rotate_interval", plexus_config::Duration::from_secs(5));
        settings.insert("partition_by", vec!["after.country".to_owned()]);
        settings.insert("time_partition", "hour");
        settings.insert("time_zone", "Europe/Berlin");
        settings.insert("columns", vec!["id: Int64".to_owned()]);
        let config = ParquetSinkConfig::from_settings(&settings).unwrap();
        assert_eq!(config.envelope, Envelope::Whole);
        assert_eq!(config.row_group_rows, 1000);
        assert_eq!(config.rotate_interval, Duration::from_secs(5));
        assert_eq!(config.partition_by, ["after.country"]);
        let time = config.time_partition.unwrap();
        assert_eq!(time.source, TimeSource::RecordTimestamp);
        assert_eq!(config.columns.unwrap().fields.len(), 1);
    }

    #[test]
    fn errors_name_the_setting() {
        let check = |name: &str, value: plexus_config::Value, expected: &str| {
            let mut settings = Settings::new();
            settings.insert(name, value);
            let err = ParquetSinkConfig::from_settings(&settings).unwrap_err().to_string();
            assert!(err.contains(&format!("`{name}`")) && err.contains(expected), "{err}");
        };
        check("part_size", ByteSize::mib(1).into(), "at least 5MiB");
        check("time_zone", "Mars/Olympus".into(), "Mars/Olympus");
        check("key_template", "{topic}/{first_offset}.parquet".into(), "{partition}");
        check(
            "key_template",
            "{topic}/{partition}/{first_offset}/{nope}".into(),
            "{nope}",
        );
        check(
            "columns",
            plexus_config::Value::StringList(vec!["id".into()]),
            "<name>: <Arrow type>",
        );
        check("time_partition", "dt=%Y/%.f".into(), "second");
    }
}
