//! One `[[connector]]` table: name, type, topics, typed settings and error policy.

use crate::check::{Checker, TableContext, check_table};
use crate::suggest::{closest, quoted_list};
use crate::tree::{Node, NodeValue, Table};
use crate::{ConfigSchema, ConnectorKind, ConnectorTypes, FieldKind, FieldSpec, Location, Settings};

/// A validated connector.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    /// Unique across all files.
    pub name: String,
    /// The connector type (`type = "..."`), known to the [`ConnectorTypes`] it was loaded with.
    pub type_name: String,
    pub kind: ConnectorKind,
    /// The topic a source writes (exactly one), or the topics a sink reads (at least one).
    pub topics: Vec<String>,
    /// The type's own settings, validated against its schema, defaults filled in.
    pub settings: Settings,
    pub errors: ErrorPolicy,
    /// Where its `[[connector]]` header is.
    pub location: Location,
}

/// What a connector does with a record it cannot process (`[connector.errors]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorTolerance {
    /// Stop the task (it is then restarted by the worker's restart policy). The default.
    #[default]
    Fail,
    /// Write the record to the dead-letter topic and go on.
    DeadLetter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPolicy {
    pub tolerance: ErrorTolerance,
    /// Where records go under [`ErrorTolerance::DeadLetter`]. Default `"dlq.<name>"`.
    pub dead_letter_topic: String,
}

impl ErrorPolicy {
    /// The default policy of a connector: fail, with `dlq.<name>` as dead-letter topic.
    pub fn for_connector(name: &str) -> Self {
        Self {
            tolerance: ErrorTolerance::Fail,
            dead_letter_topic: format!("dlq.{name}"),
        }
    }

    /// The settings of `[connector.errors]`.
    pub fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(
                FieldSpec::new("tolerance", FieldKind::one_of(["fail", "dead-letter"]))
                    .with_default("fail")
                    .doc("`fail` stops the task on a bad record; `dead-letter` sends it to the dead-letter topic."),
            )
            .field(
                FieldSpec::new("dead_letter_topic", FieldKind::String)
                    .doc("The dead-letter topic. Default: \"dlq.<connector name>\"."),
            )
    }
}

/// In a source's `topic`, replaced by each record's table: `shop.{table}`.
pub const TABLE_PLACEHOLDER: &str = "{table}";

/// Keys of a `[[connector]]` table.
const CONNECTOR_KEYS: [&str; 6] = ["name", "type", "topic", "topics", "settings", "errors"];

/// The outcome of checking one connector: the connector if it is entirely valid, and
/// its name with the name's offset whenever the name itself is valid (so that duplicate
/// names are found even among connectors with other problems).
#[derive(Debug)]
pub(crate) struct Checked {
    pub config: Option<ConnectorConfig>,
    pub name: Option<(String, usize)>,
}

/// Checks one `[[connector]]` table.
pub(crate) fn check_connector(checker: &mut Checker<'_>, node: &Node, types: &dyn ConnectorTypes) -> Checked {
    let header = node.offset;
    let NodeValue::Table(table) = &node.value else {
        let message = format!("each connector must be a table, found {}", node.value.describe());
        checker.report(
            header,
            message,
            Some("write a [[connector]] section for each connector".into()),
        );
        return Checked {
            config: None,
            name: None,
        };
    };
    let name = match table.get("name") {
        Some(entry) => checker
            .string("key", "name", &entry.node)
            .and_then(|name| check_name(checker, entry.node.offset, name, "connector name"))
            .map(|name| (name.to_owned(), entry.node.offset)),
        None => {
            let hint = "add `name = \"...\"`: a unique name, used in logs, metrics and the REST API";
            checker.report(header, "connector is missing required key `name`", Some(hint.into()));
            None
        }
    };
    let who = match &name {
        Some((name, _)) => format!("connector `{name}`"),
        None => "connector".to_owned(),
    };

    let type_entry = table.get("type");
    let type_name = match type_entry {
        Some(entry) => checker.string("key", "type", &entry.node),
        None => {
            let hint = format!("add `type = \"...\"`; known types are {}", known_types(types));
            checker.report(header, format!("{who} is missing required key `type`"), Some(hint));
            None
        }
    };
    let found = match (type_name, type_entry) {
        (Some(type_name), Some(entry)) => match types.lookup(type_name) {
            Some(found) => Some(found),
            None => {
                let names = types.type_names();
                let hint = match closest(type_name, names.iter().map(String::as_str)) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known types are {}", known_types(types)),
                };
                checker.report(
                    entry.node.offset,
                    format!("unknown connector type `{type_name}`"),
                    Some(hint),
                );
                None
            }
        },
        _ => None,
    };

    let schema = found.map(|(_, schema)| schema);
    for entry in &table.entries {
        if !CONNECTOR_KEYS.contains(&entry.key.as_str()) {
            let hint = match (
                closest(&entry.key, CONNECTOR_KEYS),
                schema.and_then(|s| s.get(&entry.key)),
            ) {
                (_, Some(_)) => format!(
                    "`{}` is a setting of connector type `{}`: move it under [connector.settings]",
                    entry.key,
                    type_name.unwrap_or_default()
                ),
                (Some(near), None) => format!("did you mean `{near}`?"),
                (None, None) => format!(
                    "valid keys are {}; the type's own settings go under [connector.settings]",
                    quoted_list(CONNECTOR_KEYS)
                ),
            };
            checker.report(
                entry.key_offset,
                format!("unknown key `{}` in [[connector]]", entry.key),
                Some(hint),
            );
        }
    }

    let topics = check_topics(checker, table, header, &who, found.map(|(kind, _)| kind));

    let settings = match found {
        Some((_, schema)) => {
            let type_name = type_name.unwrap_or_default();
            let context = TableContext {
                noun: "setting",
                place: format!("for connector type `{type_name}`"),
                owner: who.clone(),
                section: "[connector.settings]",
                extra_keys: &[],
            };
            match table.get("settings") {
                Some(entry) => match &entry.node.value {
                    NodeValue::Table(settings) => {
                        Some(check_table(checker, settings, schema, &context, header).settings)
                    }
                    other => {
                        let message = format!("key `settings` must be a table, found {}", other.describe());
                        checker.report(
                            entry.node.offset,
                            message,
                            Some("write a [connector.settings] section".into()),
                        );
                        None
                    }
                },
                None => Some(check_table(checker, &Table::default(), schema, &context, header).settings),
            }
        }
        None => None,
    };

    let errors = check_errors(checker, table, name.as_ref().map(|(name, _)| name.as_str()));

    let config = (|| {
        Some(ConnectorConfig {
            name: name.as_ref()?.0.clone(),
            type_name: type_name?.to_owned(),
            kind: found?.0,
            topics: topics?,
            settings: settings?,
            errors: errors?,
            location: checker.file.location(header),
        })
    })();
    Checked { config, name }
}

/// Sources write one `topic`; sinks read a non-empty list of `topics`. With an unknown
/// kind (unknown type), only the shapes are checked.
fn check_topics(
    checker: &mut Checker<'_>,
    table: &Table,
    header: usize,
    who: &str,
    kind: Option<ConnectorKind>,
) -> Option<Vec<String>> {
    let topic = table.get("topic");
    let topics = table.get("topics");
    let mut one = None;
    if let Some(entry) = topic {
        let misplaced = kind == Some(ConnectorKind::Sink);
        if misplaced {
            let hint = match &entry.node.value {
                NodeValue::String(name) => format!("write `topics = [{name:?}]`"),
                _ => "write `topics = [\"...\"]`".to_owned(),
            };
            let message = "a sink reads a list of topics: use `topics`, not `topic`";
            checker.report(entry.key_offset, message, Some(hint));
        } else if let Some(name) = checker.string("key", "topic", &entry.node) {
            // A source's topic may name one topic per table: `shop.{table}`.
            let probe = name.replace(TABLE_PLACEHOLDER, "table");
            if probe.contains(['{', '}']) {
                let hint = format!("the only placeholder is `{TABLE_PLACEHOLDER}`, as in `shop.{TABLE_PLACEHOLDER}`");
                checker.report(
                    entry.node.offset,
                    format!("topic name `{name}` has an unknown placeholder"),
                    Some(hint),
                );
            } else if check_name(checker, entry.node.offset, &probe, "topic name").is_some() {
                one = Some(vec![name.to_owned()]);
            }
        }
    }
    let mut many = None;
    if let Some(entry) = topics {
        if kind == Some(ConnectorKind::Source) {
            let hint = match &entry.node.value {
                NodeValue::Array(items) if items.len() == 1 => match &items[0].value {
                    NodeValue::String(name) => format!("write `topic = {name:?}`"),
                    _ => "write `topic = \"...\"`".to_owned(),
                },
                _ => "a source writes exactly one topic: write `topic = \"...\"`".to_owned(),
            };
            let message = "a source writes one topic: use `topic`, not `topics`";
            checker.report(entry.key_offset, message, Some(hint));
        } else {
            many = check_topic_list(checker, &entry.node);
        }
    }
    match kind {
        Some(ConnectorKind::Source) => {
            if topic.is_none() && topics.is_none() {
                let hint = "add `topic = \"...\"`: the topic it writes to";
                checker.report(
                    header,
                    format!("{who} is missing required key `topic`"),
                    Some(hint.into()),
                );
            }
            one
        }
        Some(ConnectorKind::Sink) => {
            if topic.is_none() && topics.is_none() {
                let hint = "add `topics = [\"...\"]`: the topics it reads";
                checker.report(
                    header,
                    format!("{who} is missing required key `topics`"),
                    Some(hint.into()),
                );
            }
            many
        }
        None => None,
    }
}

fn check_topic_list(checker: &mut Checker<'_>, node: &Node) -> Option<Vec<String>> {
    let NodeValue::Array(items) = &node.value else {
        let message = format!(
            "key `topics` must be a list of strings, found {}",
            node.value.describe()
        );
        let hint = match &node.value {
            NodeValue::String(name) => format!("write `topics = [{name:?}]`"),
            _ => "write `topics = [\"...\"]`".to_owned(),
        };
        checker.report(node.offset, message, Some(hint));
        return None;
    };
    if items.is_empty() {
        checker.report(
            node.offset,
            "key `topics` must not be empty",
            Some("list the topics the sink reads".into()),
        );
        return None;
    }
    let mut names = Some(Vec::with_capacity(items.len()));
    for item in items {
        let name = checker
            .string("key", "topics", item)
            .and_then(|name| check_name(checker, item.offset, name, "topic name"));
        match (name, &mut names) {
            (Some(name), Some(names)) => names.push(name.to_owned()),
            _ => names = None,
        }
    }
    names
}

fn check_errors(checker: &mut Checker<'_>, table: &Table, name: Option<&str>) -> Option<ErrorPolicy> {
    let Some(entry) = table.get("errors") else {
        return name.map(ErrorPolicy::for_connector);
    };
    let NodeValue::Table(errors) = &entry.node.value else {
        let message = format!("key `errors` must be a table, found {}", entry.node.value.describe());
        checker.report(
            entry.node.offset,
            message,
            Some("write a [connector.errors] section".into()),
        );
        return None;
    };
    let context = TableContext {
        noun: "key",
        place: "in [connector.errors]".into(),
        owner: "[connector.errors]".into(),
        section: "[connector.errors]",
        extra_keys: &[],
    };
    let checked = check_table(checker, errors, &ErrorPolicy::schema(), &context, entry.node.offset);
    let tolerance = match checked.settings.string("tolerance")? {
        "dead-letter" => ErrorTolerance::DeadLetter,
        _ => ErrorTolerance::Fail,
    };
    let dead_letter_topic = match (
        checked.settings.string("dead_letter_topic"),
        checked.offsets.get("dead_letter_topic"),
    ) {
        (Some(topic), Some(&offset)) => check_name(checker, offset, topic, "topic name")?.to_owned(),
        _ => format!("dlq.{}", name?),
    };
    Some(ErrorPolicy {
        tolerance,
        dead_letter_topic,
    })
}

/// Connector and topic names: Kafka's legal topic characters, so that a connector name
/// can be part of a topic name (`dlq.<name>`).
fn check_name<'n>(checker: &mut Checker<'_>, offset: usize, name: &'n str, what: &str) -> Option<&'n str> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let problem = if name.is_empty() {
        format!("{what} must not be empty")
    } else if !name.chars().all(legal) {
        format!("{what} `{name}` may only contain letters, digits, `.`, `_` and `-`")
    } else if name.len() > 249 {
        format!("{what} is longer than 249 characters")
    } else if name == "." || name == ".." {
        format!("{what} cannot be `{name}`")
    } else {
        return Some(name);
    };
    checker.report(offset, problem, None);
    None
}

fn known_types(types: &dyn ConnectorTypes) -> String {
    let names = types.type_names();
    if names.is_empty() {
        "none (no connector types are registered)".to_owned()
    } else {
        quoted_list(names.iter().map(String::as_str))
    }
}
