//! Validation of values and tables against a [`ConfigSchema`], shared by the worker,
//! connector and settings tables. Every problem is reported; nothing stops at the first.

use std::collections::BTreeMap;

use crate::secret::REDACTED;
use crate::suggest::{closest, quoted_list};
use crate::tree::{Node, NodeValue, SourceFile, Table};
use crate::{
    ByteSize, ConfigSchema, Duration, FieldKind, FieldSpec, ParseValueError, Problem, Secret, Settings, Value,
};

/// A problem with the index of its file, so that all problems can be sorted in file order.
#[derive(Debug)]
pub(crate) struct Ranked {
    pub file_index: usize,
    pub problem: Problem,
}

/// Reports problems found in one file.
#[derive(Debug)]
pub(crate) struct Checker<'a> {
    pub file: &'a SourceFile,
    pub file_index: usize,
    pub problems: &'a mut Vec<Ranked>,
}

impl Checker<'_> {
    pub fn report(&mut self, offset: usize, message: impl Into<String>, hint: Option<String>) {
        let problem = Problem {
            location: Some(self.file.location(offset)),
            message: message.into(),
            hint,
        };
        self.problems.push(Ranked {
            file_index: self.file_index,
            problem,
        });
    }

    /// A value that must be a string: reports it otherwise. `Broken` (already reported)
    /// gives `None` silently.
    pub fn string<'n>(&mut self, noun: &str, key: &str, node: &'n Node) -> Option<&'n str> {
        match &node.value {
            NodeValue::String(text) => Some(text),
            NodeValue::Broken => None,
            other => {
                self.report(
                    node.offset,
                    format!("{noun} `{key}` must be a string, found {}", other.describe()),
                    None,
                );
                None
            }
        }
    }
}

/// How to talk about a table in messages.
#[derive(Debug)]
pub(crate) struct TableContext<'a> {
    /// "setting" or "key".
    pub noun: &'static str,
    /// Where unknown keys were found: "for connector type `datagen`", "in [worker]".
    pub place: String,
    /// Who misses a required setting: "connector `orders-out`".
    pub owner: String,
    /// The section to add a missing setting to: "[connector.settings]".
    pub section: &'a str,
    /// Keys the caller validates itself; known, but not in the schema.
    pub extra_keys: &'a [&'a str],
}

/// The outcome of checking a table: its settings (defaults included) and where each
/// written value starts.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub settings: Settings,
    pub offsets: BTreeMap<String, usize>,
}

/// Checks a table against a schema: unknown keys (with suggestions), types, bounds and
/// required settings (reported at `header`). Absent settings get their defaults.
pub(crate) fn check_table(
    checker: &mut Checker<'_>,
    table: &Table,
    schema: &ConfigSchema,
    context: &TableContext<'_>,
    header: usize,
) -> Checked {
    let mut checked = Checked::default();
    let noun = context.noun;
    for entry in &table.entries {
        if context.extra_keys.contains(&entry.key.as_str()) {
            continue;
        }
        let Some(spec) = schema.get(&entry.key) else {
            let known = || schema.names().chain(context.extra_keys.iter().copied());
            let hint = match closest(&entry.key, known()) {
                Some(near) => format!("did you mean `{near}`?"),
                None if known().next().is_none() => format!("there are no {noun}s here: remove `{}`", entry.key),
                None => format!("valid {noun}s are {}", quoted_list(known())),
            };
            let message = format!("unknown {noun} `{}` {}", entry.key, context.place);
            checker.report(entry.key_offset, message, Some(hint));
            continue;
        };
        checked.offsets.insert(entry.key.clone(), entry.node.offset);
        if let Some(value) = check_value(checker, spec, &entry.node, noun) {
            checked.settings.insert(entry.key.clone(), value);
        }
    }
    for spec in &schema.fields {
        if table.get(&spec.name).is_some() {
            continue;
        }
        if spec.required {
            let message = format!("{} is missing required {noun} `{}`", context.owner, spec.name);
            let hint = format!("add `{} = ...` to {}", spec.name, context.section);
            checker.report(header, message, Some(hint));
        } else if let Some(default) = &spec.default {
            checked
                .settings
                .insert(spec.name.to_string(), seal(spec, default.clone()));
        }
    }
    checked
}

/// Checks one value against its field: type, format and bounds. Messages never show the
/// value of a secret field.
pub(crate) fn check_value(checker: &mut Checker<'_>, spec: &FieldSpec, node: &Node, noun: &str) -> Option<Value> {
    let name = &spec.name;
    let shown = |text: &str| {
        if spec.secret {
            REDACTED.to_owned()
        } else {
            format!("{text:?}")
        }
    };
    let value = match (&spec.kind, &node.value) {
        (_, NodeValue::Broken) => return None,
        (FieldKind::String, NodeValue::String(text)) => Value::String(text.clone()),
        (FieldKind::Path, NodeValue::String(text)) => {
            if text.is_empty() {
                checker.report(
                    node.offset,
                    format!("{noun} `{name}` must not be empty"),
                    Some("write a path".into()),
                );
                return None;
            }
            Value::String(text.clone())
        }
        (FieldKind::Integer { min, max }, NodeValue::Integer(n)) => {
            let n = *n;
            let shown_n = if spec.secret {
                REDACTED.to_owned()
            } else {
                n.to_string()
            };
            let bound = match (min, max) {
                (Some(min), _) if n < *min => Some(format!("at least {min}")),
                (_, Some(max)) if n > *max => Some(format!("at most {max}")),
                _ => None,
            };
            if let Some(bound) = bound {
                let hint = match (min, max) {
                    (Some(min), Some(max)) => Some(format!("allowed values are {min} to {max}")),
                    _ => None,
                };
                checker.report(
                    node.offset,
                    format!("{noun} `{name}` must be {bound}, found {shown_n}"),
                    hint,
                );
                return None;
            }
            Value::Integer(n)
        }
        (FieldKind::Float, NodeValue::Float(x)) => Value::Float(*x),
        (FieldKind::Float, NodeValue::Integer(n)) => Value::Float(*n as f64),
        (FieldKind::Bool, NodeValue::Bool(b)) => Value::Bool(*b),
        (FieldKind::Duration, NodeValue::String(text)) => match text.parse::<Duration>() {
            Ok(duration) => Value::Duration(duration),
            Err(error) => {
                let (message, hint) = match error {
                    ParseValueError::NegativeDuration(_) => (
                        format!("{noun} `{name}`: a duration cannot be negative, found {}", shown(text)),
                        None,
                    ),
                    ParseValueError::DurationTooLarge(_) => {
                        (format!("{noun} `{name}`: duration {} is too large", shown(text)), None)
                    }
                    _ => (
                        format!("{noun} `{name}`: cannot parse {} as a duration", shown(text)),
                        Some(DURATION_HINT.to_owned()),
                    ),
                };
                checker.report(node.offset, message, hint);
                return None;
            }
        },
        (FieldKind::Size, NodeValue::String(text)) => match text.parse::<ByteSize>() {
            Ok(size) => Value::Size(size),
            Err(error) => {
                let (message, hint) = match error {
                    ParseValueError::NegativeSize(_) => (
                        format!("{noun} `{name}`: a size cannot be negative, found {}", shown(text)),
                        None,
                    ),
                    ParseValueError::SizeTooLarge(_) => (
                        format!("{noun} `{name}`: size {} is too large", shown(text)),
                        Some("sizes are at most 16EiB".to_owned()),
                    ),
                    _ => (
                        format!("{noun} `{name}`: cannot parse {} as a size", shown(text)),
                        Some(SIZE_HINT.to_owned()),
                    ),
                };
                checker.report(node.offset, message, hint);
                return None;
            }
        },
        (FieldKind::Enum(choices), NodeValue::String(text)) => {
            if !choices.contains(text) {
                let choice_list = quoted_list(choices.iter().map(String::as_str));
                let message = format!("{noun} `{name}` must be one of {choice_list}, found {}", shown(text));
                let hint = if spec.secret {
                    None
                } else {
                    closest(text, choices.iter().map(String::as_str))
                }
                .map(|near| format!("did you mean `{near}`?"));
                checker.report(node.offset, message, hint);
                return None;
            }
            Value::String(text.clone())
        }
        (FieldKind::StringList, NodeValue::Array(items)) => {
            let mut strings = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                match &item.value {
                    NodeValue::String(text) => strings.push(text.clone()),
                    NodeValue::Broken => ok = false,
                    other => {
                        let message = format!(
                            "{noun} `{name}` must be a list of strings, found {} in it",
                            other.describe()
                        );
                        checker.report(item.offset, message, None);
                        ok = false;
                    }
                }
            }
            if !ok {
                return None;
            }
            Value::StringList(strings)
        }
        (kind, found) => {
            let message = format!("{noun} `{name}` must be {}, found {}", expected(kind), found.describe());
            checker.report(node.offset, message, type_hint(name, kind, found));
            return None;
        }
    };
    Some(seal(spec, value))
}

pub(crate) const DURATION_HINT: &str =
    "write a number and a unit, like \"500ms\", \"30s\", \"5m\", \"1h30m\" or \"2d\"";
pub(crate) const SIZE_HINT: &str =
    "write a number of bytes with an optional unit, like \"100\", \"512KiB\", \"64MiB\" or \"1GB\"";

/// Wraps the string value of a secret field.
fn seal(spec: &FieldSpec, value: Value) -> Value {
    match value {
        Value::String(text) if spec.secret => Value::Secret(Secret::new(text)),
        other => other,
    }
}

fn expected(kind: &FieldKind) -> String {
    match kind {
        FieldKind::String => "a string".into(),
        FieldKind::Path => "a path (a string)".into(),
        FieldKind::Integer { .. } => "an integer".into(),
        FieldKind::Float => "a number".into(),
        FieldKind::Bool => "true or false".into(),
        FieldKind::Duration => "a duration string like \"30s\"".into(),
        FieldKind::Size => "a size string like \"64MiB\"".into(),
        FieldKind::Enum(choices) => format!("one of {}", quoted_list(choices.iter().map(String::as_str))),
        FieldKind::StringList => "a list of strings".into(),
    }
}

fn type_hint(name: &str, kind: &FieldKind, found: &NodeValue) -> Option<String> {
    let hint = match (kind, found) {
        (FieldKind::Integer { .. } | FieldKind::Float, NodeValue::String(_)) => {
            "write the number without quotes".into()
        }
        (FieldKind::Integer { .. }, NodeValue::Float(_)) => "write a whole number".into(),
        (FieldKind::Bool, NodeValue::String(_)) => "write true or false without quotes".into(),
        (FieldKind::Duration, NodeValue::Integer(_) | NodeValue::Float(_)) => {
            format!("write it as a string with a unit, like `{name} = \"30s\"`")
        }
        (FieldKind::Size, NodeValue::Integer(_) | NodeValue::Float(_)) => {
            format!("write it as a string, like `{name} = \"64MiB\"`")
        }
        (FieldKind::StringList, NodeValue::String(_)) => format!("write a list: `{name} = [\"...\"]`"),
        (FieldKind::String | FieldKind::Path | FieldKind::Enum(_), NodeValue::Integer(_) | NodeValue::Float(_)) => {
            "write it in quotes".into()
        }
        _ => return None,
    };
    Some(hint)
}
