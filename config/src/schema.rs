//! What a connector type accepts ([`ConfigSchema`], Kafka Connect's `ConfigDef` as data)
//! and what validation produces from it ([`Settings`] of typed [`Value`]s).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::{ByteSize, Duration, Secret};

/// The settings a connector type accepts. Used by validation, by `plexus validate`, by
/// the REST API and by plugins, which build theirs at run time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSchema {
    pub fields: Vec<FieldSpec>,
}

impl ConfigSchema {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (builder style).
    pub fn field(mut self, field: FieldSpec) -> Self {
        self.fields.push(field);
        self
    }

    pub fn get(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Field names in declaration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|field| field.name.as_ref())
    }
}

/// One setting of a [`ConfigSchema`].
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub name: Cow<'static, str>,
    pub kind: FieldKind,
    /// Must be written in the file (a default is then irrelevant).
    pub required: bool,
    /// The value when the setting is absent. `None` and not required: the setting is
    /// simply missing from [`Settings`].
    pub default: Option<Value>,
    /// Never shown: the value is kept as [`Value::Secret`] and redacted everywhere.
    pub secret: bool,
    /// User documentation of the setting.
    pub doc: String,
}

impl FieldSpec {
    /// An optional field without default, documentation or secrecy.
    pub fn new(name: impl Into<Cow<'static, str>>, kind: FieldKind) -> Self {
        Self {
            name: name.into(),
            kind,
            required: false,
            default: None,
            secret: false,
            doc: String::new(),
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn with_default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn doc(mut self, doc: impl Into<String>) -> Self {
        self.doc = doc.into();
        self
    }
}

/// The type of a setting, and the bounds of its values.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    String,
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    /// A number; integers are accepted too.
    Float,
    Bool,
    /// A [`Duration`] written as a string: `"30s"`.
    Duration,
    /// A [`ByteSize`] written as a string: `"64MiB"`.
    Size,
    /// One of these strings.
    Enum(Vec<String>),
    StringList,
    /// A file system path, kept as written (relative paths are relative to the working
    /// directory). Validated as a string, stored as [`Value::String`].
    Path,
}

impl FieldKind {
    /// An integer without bounds.
    pub const INTEGER: FieldKind = FieldKind::Integer { min: None, max: None };

    pub fn integer_between(min: Option<i64>, max: Option<i64>) -> Self {
        FieldKind::Integer { min, max }
    }

    pub fn one_of<S: Into<String>>(choices: impl IntoIterator<Item = S>) -> Self {
        FieldKind::Enum(choices.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for FieldKind {
    /// A short description for documentation: `integer (at least 0)`, `one of jsonl, csv`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldKind::String => f.write_str("string"),
            FieldKind::Integer { min: None, max: None } => f.write_str("integer"),
            FieldKind::Integer {
                min: Some(min),
                max: None,
            } => write!(f, "integer (at least {min})"),
            FieldKind::Integer {
                min: None,
                max: Some(max),
            } => write!(f, "integer (at most {max})"),
            FieldKind::Integer {
                min: Some(min),
                max: Some(max),
            } => write!(f, "integer ({min} to {max})"),
            FieldKind::Float => f.write_str("number"),
            FieldKind::Bool => f.write_str("boolean"),
            FieldKind::Duration => f.write_str("duration (\"30s\")"),
            FieldKind::Size => f.write_str("size (\"64MiB\")"),
            FieldKind::Enum(choices) => write!(f, "one of {}", choices.join(", ")),
            FieldKind::StringList => f.write_str("list of strings"),
            FieldKind::Path => f.write_str("path"),
        }
    }
}

/// A validated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Strings, enum choices and paths.
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Duration(Duration),
    Size(ByteSize),
    StringList(Vec<String>),
    /// The value of a field marked `secret`.
    Secret(Secret),
}

impl Value {
    /// JSON with secrets redacted (`"***"`). Durations and sizes are their strings
    /// (`"30s"`, `"64MiB"`), which [`Duration`] and [`ByteSize`] deserialize.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Secret(secret) => serde_json::Value::String(secret.to_string()),
            other => other.to_json_exposed(),
        }
    }

    /// JSON with secrets in clear, for handing settings to a connector or plugin.
    pub fn to_json_exposed(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match self {
            Value::String(text) => Json::String(text.clone()),
            Value::Integer(n) => Json::from(*n),
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
            Value::Bool(b) => Json::Bool(*b),
            Value::Duration(duration) => Json::String(duration.to_string()),
            Value::Size(size) => Json::String(size.to_string()),
            Value::StringList(items) => Json::Array(items.iter().cloned().map(Json::String).collect()),
            Value::Secret(secret) => Json::String(secret.expose().to_owned()),
        }
    }
}

impl fmt::Display for Value {
    /// TOML-like: `"orders"`, `42`, `"30s"`, `["a", "b"]`; secrets as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(text) => write!(f, "{text:?}"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Duration(duration) => write!(f, "\"{duration}\""),
            Value::Size(size) => write!(f, "\"{size}\""),
            Value::StringList(items) => write!(f, "{items:?}"),
            Value::Secret(secret) => write!(f, "{secret}"),
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::String(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Integer(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Integer(n.into())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Duration> for Value {
    fn from(duration: Duration) -> Self {
        Value::Duration(duration)
    }
}

impl From<ByteSize> for Value {
    fn from(size: ByteSize) -> Self {
        Value::Size(size)
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Value::StringList(items)
    }
}

impl From<Secret> for Value {
    fn from(secret: Secret) -> Self {
        Value::Secret(secret)
    }
}

/// The validated settings of one connector: every setting written in the file plus the
/// defaults of those that were not. Typed getters return `None` when the setting is
/// absent or of another type; secrets stay wrapped and are only reachable through
/// [`Settings::secret`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    values: BTreeMap<String, Value>,
}

impl Settings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value, returning the one it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.values.insert(name.into(), value.into())
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// A string, enum or path setting (not a secret: see [`Settings::secret`]).
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn path(&self, name: &str) -> Option<&Path> {
        self.string(name).map(Path::new)
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            Value::Float(x) => Some(*x),
            Value::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn duration(&self, name: &str) -> Option<std::time::Duration> {
        match self.get(name)? {
            Value::Duration(duration) => Some(duration.as_std()),
            _ => None,
        }
    }

    /// A size in bytes.
    pub fn size(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            Value::Size(size) => Some(size.as_u64()),
            _ => None,
        }
    }

    pub fn string_list(&self, name: &str) -> Option<&[String]> {
        match self.get(name)? {
            Value::StringList(items) => Some(items),
            _ => None,
        }
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        match self.get(name)? {
            Value::Secret(secret) => Some(secret),
            _ => None,
        }
    }

    /// Settings in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(name, value)| (name.as_str(), value))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A JSON object with secrets redacted: for logs, the REST API, `plexus validate`.
    pub fn to_json(&self) -> serde_json::Value {
        self.values
            .iter()
            .map(|(name, value)| (name.clone(), value.to_json()))
            .collect()
    }

    /// A JSON object with secrets in clear: only for handing to the connector itself
    /// (a plugin receives its settings this way).
    pub fn to_json_exposed(&self) -> serde_json::Value {
        self.values
            .iter()
            .map(|(name, value)| (name.clone(), value.to_json_exposed()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Settings {
        let mut settings = Settings::new();
        settings.insert("path", "./out/x.jsonl");
        settings.insert("rate", 1000);
        settings.insert("ratio", 0.5);
        settings.insert("on", true);
        settings.insert("every", Duration::from_secs(90));
        settings.insert("roll", ByteSize::mib(64));
        settings.insert("tables", vec!["a".to_owned(), "b".to_owned()]);
        settings.insert("password", Secret::new("hunter2"));
        settings
    }

    #[test]
    fn typed_getters_return_only_their_type() {
        let settings = sample();
        assert_eq!(settings.string("path"), Some("./out/x.jsonl"));
        assert_eq!(settings.path("path"), Some(Path::new("./out/x.jsonl")));
        assert_eq!(settings.integer("rate"), Some(1000));
        assert_eq!(settings.float("rate"), Some(1000.0));
        assert_eq!(settings.float("ratio"), Some(0.5));
        assert_eq!(settings.bool("on"), Some(true));
        assert_eq!(settings.duration("every"), Some(std::time::Duration::from_secs(90)));
        assert_eq!(settings.size("roll"), Some(64 << 20));
        assert_eq!(
            settings.string_list("tables"),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        assert_eq!(settings.secret("password").map(Secret::expose), Some("hunter2"));
        assert_eq!(settings.string("password"), None);
        assert_eq!(settings.integer("path"), None);
        assert_eq!(settings.get("missing"), None);
    }

    #[test]
    fn json_redacts_secrets_unless_exposed() {
        let settings = sample();
        let json = settings.to_json();
        assert_eq!(json["password"], "***");
        assert_eq!(json["every"], "1m30s");
        assert_eq!(json["roll"], "64MiB");
        assert_eq!(json["rate"], 1000);
        assert!(!json.to_string().contains("hunter2"));
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.to_json_exposed()["password"], "hunter2");
    }

    #[test]
    fn schema_builder_and_kind_descriptions() {
        let schema = ConfigSchema::new()
            .field(
                FieldSpec::new("path", FieldKind::Path)
                    .required()
                    .doc("Where to write."),
            )
            .field(FieldSpec::new("format", FieldKind::one_of(["jsonl", "csv"])).with_default("jsonl"));
        assert_eq!(schema.names().collect::<Vec<_>>(), ["path", "format"]);
        assert!(schema.get("path").is_some_and(|field| field.required));
        assert_eq!(
            schema.get("format").and_then(|f| f.default.clone()),
            Some(Value::from("jsonl"))
        );
        assert_eq!(
            FieldKind::integer_between(Some(0), None).to_string(),
            "integer (at least 0)"
        );
        assert_eq!(schema.fields[1].kind.to_string(), "one of jsonl, csv");
    }
}
