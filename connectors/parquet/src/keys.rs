//! Object keys: the key template and the partition directories (`country=DE/`,
//! `dt=2026-11-22/hr=13/`) computed from each row.
//!
//! Everything here depends only on the records, never on the wall clock or on the order
//! in which files were opened: a replay after a crash must put every record in a file
//! of the same name.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Date64Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, TimeUnit};
use chrono::format::{Fixed, Item, Numeric, StrftimeItems};

use crate::config::{TimePartitioning, TimeSource};

/// The default key template.
pub const DEFAULT_TEMPLATE: &str = "{topic}/{path}/{topic}+{partition}+{first_offset}.parquet";

/// What Hive and its readers call a null partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A parsed `key_template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Topic,
    Partition,
    FirstOffset,
    Path,
    Schema,
}

/// The variables of one file's key.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub first_offset: i64,
    /// The partition directories, `country=DE/dt=2026-11-22`, or empty.
    pub path: &'a str,
    pub schema: &'a str,
}

impl Default for KeyTemplate {
    fn default() -> Self {
        DEFAULT_TEMPLATE.parse().unwrap_or(KeyTemplate { segments: Vec::new() })
    }
}

impl FromStr for KeyTemplate {
    type Err = String;

    fn from_str(text: &str) -> Result<KeyTemplate, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("has a `{{` without `}}` in `{text}`"))?;
            segments.push(match &rest[open + 1..close] {
                "topic" => Segment::Topic,
                "partition" => Segment::Partition,
                "first_offset" => Segment::FirstOffset,
                "path" => Segment::Path,
                "schema" => Segment::Schema,
                other => {
                    return Err(format!(
                        "has an unknown variable `{{{other}}}`; the variables are {{topic}}, {{partition}}, \
                         {{first_offset}}, {{path}} and {{schema}}"
                    ));
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        for (required, name) in [
            (Segment::Topic, "{topic}"),
            (Segment::Partition, "{partition}"),
            (Segment::FirstOffset, "{first_offset}"),
        ] {
            if !segments.contains(&required) {
                return Err(format!(
                    "must contain {name}: topic, partition and first offset make file names unique"
                ));
            }
        }
        if text.starts_with('/') || text.contains("..") {
            return Err(format!("`{text}` must be a relative key without `..`"));
        }
        Ok(KeyTemplate { segments })
    }
}

impl KeyTemplate {
    /// The key of one file. Empty path segments (`{path}` without partitioning) vanish.
    pub fn render(&self, parts: KeyParts<'_>) -> String {
        let mut key = String::with_capacity(96);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => key.push_str(text),
                Segment::Topic => key.push_str(parts.topic),
                Segment::Partition => {
                    let _ = write!(key, "{}", parts.partition);
                }
                Segment::FirstOffset => {
                    let _ = write!(key, "{:020}", parts.first_offset);
                }
                Segment::Path => key.push_str(parts.path),
                Segment::Schema => escape_into(parts.schema, &mut key),
            }
        }
        if key.contains("//") || key.starts_with('/') {
            key = key.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
        }
        key
    }

    /// The start that every key of `topic` shares (the template's text up to its first
    /// variable other than `{topic}`): where uploads a crashed run left can be aborted.
    pub fn fixed_prefix(&self, topic: &str) -> String {
        let mut prefix = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => prefix.push_str(text),
                Segment::Topic => prefix.push_str(topic),
                _ => break,
            }
        }
        prefix
    }
}

/// A strftime format for time directories, checked once.
#[derive(Debug, Clone)]
pub struct TimeFormat {
    text: String,
    items: Vec<Item<'static>>,
}

impl TimeFormat {
    pub fn new(text: &str) -> Result<TimeFormat, String> {
        let items = StrftimeItems::new(text)
            .parse_to_owned()
            .map_err(|e| format!("`{text}` is not a strftime format: {e}"))?;
        let sub_second = items.iter().any(|item| {
            matches!(
                item,
                Item::Fixed(
                    Fixed::Nanosecond
                        | Fixed::Nanosecond3
                        | Fixed::Nanosecond6
                        | Fixed::Nanosecond9
                        | Fixed::TimezoneName
                ) | Item::Numeric(Numeric::Nanosecond, _)
            )
        });
        if sub_second {
            return Err(format!(
                "`{text}` formats fractions of a second or a zone name; time directories go to the second at most"
            ));
        }
        if text.starts_with('/') || text.contains("..") {
            return Err(format!("`{text}` must be relative directories without `..`"));
        }
        Ok(TimeFormat {
            text: text.to_owned(),
            items,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Splits batches by partition directory.
#[derive(Debug)]
pub(crate) struct Partitioner {
    fields: Vec<String>,
    time: Option<TimePartitioning>,
    /// Rendered time directories by second.
    times: HashMap<i64, String>,
    warned: Vec<String>,
}

impl Partitioner {
    pub fn new(fields: Vec<String>, time: Option<TimePartitioning>) -> Partitioner {
        Partitioner {
            fields,
            time,
            times: HashMap::new(),
            warned: Vec::new(),
        }
    }

    /// Whether every row goes to the same (empty) path.
    pub fn is_trivial(&self) -> bool {
        self.fields.is_empty() && self.time.is_none()
    }

    /// The rows of `batch` by path, in order of first appearance. `record_ms(i)` is the
    /// record timestamp of row `i`.
    pub fn split(&mut self, batch: &RecordBatch, record_ms: impl Fn(usize) -> i64) -> Vec<(String, Vec<u32>)> {
        if self.is_trivial() {
            return vec![(String::new(), (0..batch.num_rows() as u32).collect())];
        }
        let options = FormatOptions::default().with_null(NULL_PARTITION);
        let columns: Vec<Option<ArrayRef>> = self.fields.iter().map(|f| column(batch, f, &mut self.warned)).collect();
        let formatters: Vec<Option<ArrayFormatter<'_>>> = columns
            .iter()
            .map(|c| {
                c.as_ref()
                    .and_then(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            })
            .collect();
        let time_column = match self.time.as_ref().map(|t| &t.source) {
            Some(TimeSource::Field(name)) => column(batch, name, &mut self.warned),
            _ => None,
        };
        let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut path = String::new();
        let mut value = String::new();
        for row in 0..batch.num_rows() {
            path.clear();
            for (name, formatter) in self.fields.iter().zip(&formatters) {
                value.clear();
                match formatter {
                    Some(f) => {
                        let _ = write!(value, "{}", f.value(row));
                    }
                    None => value.push_str(NULL_PARTITION),
                }
                if !path.is_empty() {
                    path.push('/');
                }
                escape_into(name.rsplit('.').next().unwrap_or(name), &mut path);
                path.push('=');
                if value == NULL_PARTITION {
                    path.push_str(NULL_PARTITION);
                } else {
                    escape_into(&value, &mut path);
                }
            }
            if let Some(time) = &self.time {
                let seconds = time_column
                    .as_ref()
                    .and_then(|c| seconds_of(c.as_ref(), row))
                    .unwrap_or_else(|| record_ms(row).div_euclid(1000));
                let rendered = self.times.entry(seconds).or_insert_with(|| render_time(time, seconds));
                if !path.is_empty() && !rendered.is_empty() {
                    path.push('/');
                }
                path.push_str(rendered);
            }
            match index.get(path.as_str()) {
                Some(&g) => groups[g].1.push(row as u32),
                None => {
                    index.insert(path.clone(), groups.len());
                    groups.push((path.clone(), vec![row as u32]));
                }
            }
        }
        if self.times.len() > 65_536 {
            self.times.clear();
        }
        groups
    }
}

/// A column by name; `a.b` looks into struct `a`. `None` (with a warning, once) when the
/// batch has no such column: its rows then count as null there.
fn column(batch: &RecordBatch, name: &str, warned: &mut Vec<String>) -> Option<ArrayRef> {
    let mut parts = name.split('.');
    let mut column = parts.next().and_then(|first| batch.column_by_name(first)).cloned();
    for part in parts {
        column = column.and_then(|c| c.as_struct_opt().and_then(|s| s.column_by_name(part)).cloned());
    }
    if column.is_none() && !warned.iter().any(|w| w == name) {
        tracing::warn!(
            column = name,
            "A partitioning column is missing from some records' schema; those rows count as null there."
        );
        warned.push(name.to_owned());
    }
    column
}

/// Seconds since the epoch of a time column's value, floored.
fn seconds_of(column: &dyn Array, row: usize) -> Option<i64> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Timestamp(unit, _) => {
            let value = timestamp_value(column, row, *unit)?;
            let per_second = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1_000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            value.div_euclid(per_second)
        }
        DataType::Date32 => i64::from(column.as_primitive::<Date32Type>().value(row)) * 86_400,
        DataType::Date64 => column.as_primitive::<Date64Type>().value(row).div_euclid(1000),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).div_euclid(1000),
        _ => return None,
    })
}

fn timestamp_value(column: &dyn Array, row: usize, unit: TimeUnit) -> Option<i64> {
    use arrow_array::types::*;
    Some(match unit {
        TimeUnit::Second => column.as_primitive_opt::<TimestampSecondType>()?.value(row),
        TimeUnit::Millisecond => column.as_primitive_opt::<TimestampMillisecondType>()?.value(row),
        TimeUnit::Microsecond => column.as_primitive_opt::<TimestampMicrosecondType>()?.value(row),
        TimeUnit::Nanosecond => column.as_primitive_opt::<TimestampNanosecondType>()?.value(row),
    })
}

fn render_time(time: &TimePartitioning, seconds: i64) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp(seconds, 0) else {
        return NULL_PARTITION.to_owned();
    };
    let local = utc.with_timezone(&time.zone);
    local.format_with_items(time.format.items.iter()).to_string()
}

/// Appends `text` with the characters that are not safe in a key segment %-escaped.
fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        let safe = c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ' | '+' | ',' | '@');
        if safe && !c.is_control() && !(c == '.' && text.chars().all(|c| c == '.')) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn parts<'a>(path: &'a str) -> KeyParts<'a> {
        KeyParts {
            topic: "orders",
            partition: 2,
            first_offset: 1234,
            path,
            schema: "s/1",
        }
    }

    #[test]
    fn renders_the_default_and_custom_templates() {
        let default = KeyTemplate::default();
        assert_eq!(
            default.render(parts("")),
            "orders/orders+2+00000000000000001234.parquet"
        );
        assert_eq!(
            default.render(parts("country=DE/dt=2026-11-22")),
            "orders/country=DE/dt=2026-11-22/orders+2+00000000000000001234.parquet"
        );
        let custom: KeyTemplate = "lake/{topic}/{schema}/{partition}-{first_offset}.parquet"
            .parse()
            .unwrap();
        assert_eq!(
            custom.render(parts("")),
            "lake/orders/s%2F1/2-00000000000000001234.parquet"
        );
        assert_eq!(custom.fixed_prefix("orders"), "lake/orders/");
        assert_eq!(default.fixed_prefix("orders"), "orders/");
        assert!("{topic}/{first_offset}".parse::<KeyTemplate>().is_err());
        assert!(
            "{topic}/{partition}/{first_offset}/{what}"
                .parse::<KeyTemplate>()
                .is_err()
        );
        assert!("/{topic}/{partition}/{first_offset}".parse::<KeyTemplate>().is_err());
        assert!("{topic}/{partition}/{first_offset".parse::<KeyTemplate>().is_err());
    }

    #[test]
    fn partitions_by_fields_and_local_time() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("country", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        // 2026-11-22T23:30:00Z is 00:30 on the 23rd in Berlin.
        let at = 1_795_390_200_000_000i64;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("DE"), None, Some("a/b"), Some("DE")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 1])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(at), Some(at), None, Some(at)]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let time = TimePartitioning {
            format: TimeFormat::new("dt=%Y-%m-%d/hr=%H").unwrap(),
            source: TimeSource::Field("at".into()),
            zone: "Europe/Berlin".parse().unwrap(),
        };
        let mut partitioner = Partitioner::new(vec!["country".into(), "n".into()], Some(time));
        let groups = partitioner.split(&batch, |_| 0);
        let paths: Vec<(&str, &[u32])> = groups.iter().map(|(p, r)| (p.as_str(), r.as_slice())).collect();
        assert_eq!(
            paths,
            [
                ("country=DE/n=1/dt=2026-11-23/hr=00", &[0, 3][..]),
                ("country=__HIVE_DEFAULT_PARTITION__/n=2/dt=2026-11-23/hr=00", &[1][..]),
                // A null time falls back to the record timestamp (0 here).
                ("country=a%2Fb/n=3/dt=1970-01-01/hr=01", &[2][..]),
            ]
        );
    }

    #[test]
    fn time_formats_stop_at_seconds() {
        assert!(TimeFormat::new("dt=%Y-%m-%d").is_ok());
        assert!(TimeFormat::new("t=%H%M%S").is_ok());
        assert!(TimeFormat::new("%.f").is_err());
        assert!(TimeFormat::new("%Z").is_err());
        assert!(TimeFormat::new("../%Y").is_err());
    }
}
