//! The descriptor a plugin hands the host before anything else, and the JSON forms
//! of schemas and settings that cross the boundary.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use plexus_connector::{ConfigSchema, ConnectorKind, FieldKind, FieldSpec, Settings};

/// What a plugin library offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// The plugin's name, shown in logs and refusals: `"sequence"`.
    pub name: String,
    /// The plugin's own version: `"0.1.0"`.
    pub version: String,
    /// The version of `plexus-plugin-sdk` it was built with.
    pub sdk_version: String,
    /// The connector types it offers.
    pub types: Vec<TypeDescriptor>,
}

/// One connector type of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDescriptor {
    /// The name used as `type` in configuration files.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `"source"` or `"sink"`.
    pub kind: String,
    /// The settings it accepts.
    pub schema: Vec<FieldDescriptor>,
}

/// One setting, as [`FieldSpec`] holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDescriptor {
    pub name: String,
    /// `string`, `integer`, `float`, `bool`, `duration`, `size`, `enum`, `string_list`, `path`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    #[serde(default)]
    pub required: bool,
    /// The default as JSON (durations and sizes as their strings: `"30s"`, `"64MiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub doc: String,
}

/// A connector type as the host registers it: name, kind and settings schema.
pub type OfferedType = (String, ConnectorKind, ConfigSchema);

/// A descriptor that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("the descriptor is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("connector type `{type_name}` has kind `{kind}`; expected `source` or `sink`")]
    Kind { type_name: String, kind: String },
    #[error("setting `{field}` of connector type `{type_name}` has unknown kind `{kind}`")]
    FieldKind {
        type_name: String,
        field: String,
        kind: String,
    },
    #[error("the default of setting `{field}` of connector type `{type_name}` does not fit its kind: {reason}")]
    Default {
        type_name: String,
        field: String,
        reason: String,
    },
    #[error("the plugin has no name")]
    NoName,
    #[error("connector type name `{0}` is not usable: use letters, digits, `-` and `_`")]
    TypeName(String),
    #[error("the plugin offers connector type `{0}` twice")]
    Duplicate(String),
}

impl Descriptor {
    /// Parses and checks a descriptor; the types' schemas are returned decoded.
    pub fn parse(json: &[u8]) -> Result<(Descriptor, Vec<OfferedType>), DescriptorError> {
        let descriptor: Descriptor = serde_json::from_slice(json)?;
        if descriptor.name.trim().is_empty() {
            return Err(DescriptorError::NoName);
        }
        let mut types: Vec<OfferedType> = Vec::new();
        for t in &descriptor.types {
            let usable = !t.type_name.is_empty()
                && t.type_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !usable {
                return Err(DescriptorError::TypeName(t.type_name.clone()));
            }
            if types.iter().any(|(name, _, _)| *name == t.type_name) {
                return Err(DescriptorError::Duplicate(t.type_name.clone()));
            }
            let kind = match t.kind.as_str() {
                "source" => ConnectorKind::Source,
                "sink" => ConnectorKind::Sink,
                other => {
                    return Err(DescriptorError::Kind {
                        type_name: t.type_name.clone(),
                        kind: other.to_owned(),
                    });
                }
            };
            let mut schema = ConfigSchema::new();
            for field in &t.schema {
                schema = schema.field(field.to_spec(&t.type_name)?);
            }
            types.push((t.type_name.clone(), kind, schema));
        }
        Ok((descriptor, types))
    }
}

impl TypeDescriptor {
    pub fn new(type_name: &str, kind: ConnectorKind, schema: &ConfigSchema) -> TypeDescriptor {
        TypeDescriptor {
            type_name: type_name.to_owned(),
            kind: kind.to_string(),
            schema: schema.fields.iter().map(FieldDescriptor::from_spec).collect(),
        }
    }
}

impl FieldDescriptor {
    pub fn from_spec(spec: &FieldSpec) -> FieldDescriptor {
        let (kind, min, max, choices) = match &spec.kind {
            FieldKind::String => ("string", None, None, Vec::new()),
            FieldKind::Integer { min, max } => ("integer", *min, *max, Vec::new()),
            FieldKind::Float => ("float", None, None, Vec::new()),
            FieldKind::Bool => ("bool", None, None, Vec::new()),
            FieldKind::Duration => ("duration", None, None, Vec::new()),
            FieldKind::Size => ("size", None, None, Vec::new()),
            FieldKind::Enum(choices) => ("enum", None, None, choices.clone()),
            FieldKind::StringList => ("string_list", None, None, Vec::new()),
            FieldKind::Path => ("path", None, None, Vec::new()),
        };
        FieldDescriptor {
            name: spec.name.to_string(),
            kind: kind.to_owned(),
            min,
            max,
            choices,
            required: spec.required,
            default: spec.default.as_ref().map(plexus_config::Value::to_json_exposed),
            secret: spec.secret,
            doc: spec.doc.clone(),
        }
    }

    fn to_spec(&self, type_name: &str) -> Result<FieldSpec, DescriptorError> {
        let kind = match self.kind.as_str() {
            "string" => FieldKind::String,
            "integer" => FieldKind::Integer {
                min: self.min,
                max: self.max,
            },
            "float" => FieldKind::Float,
            "bool" => FieldKind::Bool,
            "duration" => FieldKind::Duration,
            "size" => FieldKind::Size,
            "enum" => FieldKind::Enum(self.choices.clone()),
            "string_list" => FieldKind::StringList,
            "path" => FieldKind::Path,
            other => {
                return Err(DescriptorError::FieldKind {
                    type_name: type_name.to_owned(),
                    field: self.name.clone(),
                    kind: other.to_owned(),
                });
            }
        };
        let mut spec = FieldSpec::new(self.name.clone(), kind).doc(self.doc.clone());
        spec.required = self.required;
        spec.secret = self.secret;
        if let Some(default) = &self.default {
            let value = typed_value(&spec.kind, spec.secret, default).map_err(|reason| DescriptorError::Default {
                type_name: type_name.to_owned(),
                field: self.name.clone(),
                reason,
            })?;
            spec.default = Some(value);
        }
        Ok(spec)
    }
}

/// Settings as the JSON object the plugin receives (secrets in clear).
pub fn settings_to_json(settings: &Settings) -> Vec<u8> {
    settings.to_json_exposed().to_string().into_bytes()
}

/// The inverse of [`settings_to_json`]: each value typed by its field in `schema`, so
/// that the plugin's connector reads `settings.duration("poll")` as a built-in does.
/// Values of settings the schema does not name keep their JSON type.
pub fn settings_from_json(json: &[u8], schema: &ConfigSchema) -> Result<Settings, String> {
    let object: serde_json::Map<String, Json> =
        serde_json::from_slice(json).map_err(|e| format!("the settings are not a JSON object: {e}"))?;
    let mut settings = Settings::new();
    for (name, value) in object {
        let typed = match schema.get(&name) {
            Some(spec) => typed_value(&spec.kind, spec.secret, &value),
            None => untyped_value(&value),
        }
        .map_err(|reason| format!("setting `{name}`: {reason}"))?;
        settings.insert(name, typed);
    }
    Ok(settings)
}

fn typed_value(kind: &FieldKind, secret: bool, json: &Json) -> Result<plexus_config::Value, String> {
    use plexus_config::Value;
    let text = || json.as_str().ok_or_else(|| format!("expected a string, found {json}"));
    Ok(match kind {
        _ if secret => Value::Secret(plexus_config::Secret::new(text()?)),
        FieldKind::String | FieldKind::Path | FieldKind::Enum(_) => Value::String(text()?.to_owned()),
        FieldKind::Integer { .. } => Value::Integer(
            json.as_i64()
                .ok_or_else(|| format!("expected an integer, found {json}"))?,
        ),
        FieldKind::Float => Value::Float(
            json.as_f64()
                .ok_or_else(|| format!("expected a number, found {json}"))?,
        ),
        FieldKind::Bool => Value::Bool(
            json.as_bool()
                .ok_or_else(|| format!("expected true or false, found {json}"))?,
        ),
        FieldKind::Duration => Value::Duration(text()?.parse().map_err(|e| format!("{e}"))?),
        FieldKind::Size => Value::Size(text()?.parse().map_err(|e| format!("{e}"))?),
        FieldKind::StringList => Value::StringList(
            json.as_array()
                .ok_or_else(|| format!("expected a list of strings, found {json}"))?
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("expected a string in the list, found {item}"))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn untyped_value(json: &Json) -> Result<plexus_config::Value, String> {
    use plexus_config::Value;
    match json {
        Json::String(text) => Ok(Value::String(text.clone())),
        Json::Bool(b) => Ok(Value::Bool(*b)),
        Json::Number(n) => Ok(n
            .as_i64()
            .map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Integer)),
        Json::Array(_) => typed_value(&FieldKind::StringList, false, json),
        other => Err(format!("unsupported value {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use plexus_config::{ByteSize, Duration, Secret, Value};

    use super::*;

    fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(FieldSpec::new("path", FieldKind::Path).required().doc("Where."))
            .field(FieldSpec::new("count", FieldKind::integer_between(Some(0), None)).with_default(10))
            .field(FieldSpec::new("every", FieldKind::Duration).with_default(Duration::from_secs(90)))
            .field(FieldSpec::new("roll", FieldKind::Size).with_default(ByteSize::mib(64)))
            .field(FieldSpec::new("format", FieldKind::one_of(["jsonl", "csv"])).with_default("jsonl"))
            .field(FieldSpec::new("tables", FieldKind::StringList))
            .field(FieldSpec::new("ratio", FieldKind::Float))
            .field(FieldSpec::new("on", FieldKind::Bool))
            .field(FieldSpec::new("password", FieldKind::String).secret())
    }

    #[test]
    fn schemas_survive_the_descriptor() {
        let descriptor = Descriptor {
            name: "p".into(),
            version: "1.0.0".into(),
            sdk_version: "0.1.0".into(),
            types: vec![TypeDescriptor::new("thing", ConnectorKind::Sink, &schema())],
        };
        let json = serde_json::to_vec(&descriptor).unwrap();
        let (parsed, types) = Descriptor::parse(&json).unwrap();
        assert_eq!(parsed, descriptor);
        assert_eq!(types, vec![("thing".to_owned(), ConnectorKind::Sink, schema())]);
    }

    #[test]
    fn settings_come_back_typed_by_the_schema() {
        let mut settings = Settings::new();
        settings.insert("path", "/tmp/x");
        settings.insert("count", 5);
        settings.insert("every", Duration::from_secs(90));
        settings.insert("roll", ByteSize::mib(64));
        settings.insert("tables", vec!["a".to_owned()]);
        settings.insert("ratio", 0.5);
        settings.insert("on", true);
        settings.insert("password", Secret::new("hunter2"));
        let back = settings_from_json(&settings_to_json(&settings), &schema()).unwrap();
        assert_eq!(back, settings);
        assert_eq!(back.secret("password").map(Secret::expose), Some("hunter2"));
        assert_eq!(back.get("count"), Some(&Value::Integer(5)));
    }

    #[test]
    fn bad_descriptors_say_what_is_wrong() {
        let bad_kind =
            br#"{"name":"p","version":"1","sdk_version":"0.1.0","types":[{"type":"x","kind":"both","schema":[]}]}"#;
        assert_eq!(
            Descriptor::parse(bad_kind).unwrap_err().to_string(),
            "connector type `x` has kind `both`; expected `source` or `sink`"
        );
        let twice = br#"{"name":"p","version":"1","sdk_version":"0.1.0","types":[{"type":"x","kind":"sink","schema":[]},{"type":"x","kind":"sink","schema":[]}]}"#;
        assert_eq!(
            Descriptor::parse(twice).unwrap_err().to_string(),
            "the plugin offers connector type `x` twice"
        );
        assert!(
            Descriptor::parse(b"not json")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
