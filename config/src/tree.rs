//! A TOML document as a plain tree whose every key and value knows its byte offset, with
//! `${VAR}` already interpolated. Inline tables and `[table]` sections, arrays of tables
//! and inline arrays look the same here, so validation handles them alike.

use std::path::PathBuf;

use toml_edit::{Item, Value as TomlValue};

use crate::Location;
use crate::interpolate::{InterpolationError, interpolate};

/// One configuration file's name and text, able to turn byte offsets into locations.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            path,
            text,
            line_starts,
        }
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |prefix| prefix.chars().count())
            + 1;
        Location {
            file: self.path.clone(),
            line,
            column,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub value: NodeValue,
    /// Where the value starts: the opening quote of a string, the `[` of a header.
    pub offset: usize,
}

#[derive(Debug)]
pub(crate) enum NodeValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Table),
    /// A string whose interpolation failed; already reported, so validation skips it.
    Broken,
}

impl NodeValue {
    /// "a string", "an integer", ... for "found ..." in messages.
    pub fn describe(&self) -> &'static str {
        match self {
            NodeValue::String(_) | NodeValue::Broken => "a string",
            NodeValue::Integer(_) => "an integer",
            NodeValue::Float(_) => "a float",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Datetime => "a date-time",
            NodeValue::Array(_) => "an array",
            NodeValue::Table(_) => "a table",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub key: String,
    pub key_offset: usize,
    pub node: Node,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }
}

/// A TOML syntax error: where and what.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

/// An interpolation problem in the string value starting at `offset`.
#[derive(Debug)]
pub(crate) struct InterpolationProblem {
    pub offset: usize,
    pub error: InterpolationError,
}

/// Parses a file into a tree, interpolating every string value.
pub(crate) fn parse(
    file: &SourceFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Table, Vec<InterpolationProblem>), SyntaxError> {
    let document = toml_edit::Document::parse(file.text.as_str()).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        let mut message = error.message().to_owned();
        if message == "duplicate key"
            && let Some(key) = error.span().and_then(|span| file.text.get(span))
        {
            message = format!("duplicate key `{}`", key.trim());
        }
        SyntaxError { offset, message }
    })?;
    let mut builder = Builder {
        env,
        problems: Vec::new(),
    };
    let root = builder.table(document.as_table().iter().map(|(key, item)| {
        let key_offset = document
            .as_table()
            .key(key)
            .and_then(|k| k.span())
            .map_or(0, |span| span.start);
        (key, key_offset, item)
    }));
    Ok((root, builder.problems))
}

struct Builder<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    problems: Vec<InterpolationProblem>,
}

impl Builder<'_> {
    fn table<'i>(&mut self, entries: impl Iterator<Item = (&'i str, usize, &'i Item)>) -> Table {
        let mut table = Table::default();
        for (key, key_offset, item) in entries {
            if let Some(node) = self.item(item, key_offset) {
                table.entries.push(Entry {
                    key: key.to_owned(),
                    key_offset,
                    node,
                });
            }
        }
        table
    }

    fn toml_table(&mut self, table: &toml_edit::Table, fallback: usize) -> Node {
        let offset = table.span().map_or(fallback, |span| span.start);
        let entries = table.iter().map(|(key, item)| {
            let key_offset = table.key(key).and_then(|k| k.span()).map_or(offset, |span| span.start);
            (key, key_offset, item)
        });
        let entries: Vec<_> = entries.collect();
        Node {
            value: NodeValue::Table(self.table(entries.into_iter())),
            offset,
        }
    }

    fn item(&mut self, item: &Item, fallback: usize) -> Option<Node> {
        match item {
            Item::None => None,
            Item::Value(value) => Some(self.value(value, fallback)),
            Item::Table(table) => Some(self.toml_table(table, fallback)),
            Item::ArrayOfTables(array) => {
                let offset = array.span().map_or(fallback, |span| span.start);
                let tables = array.iter().map(|table| self.toml_table(table, offset)).collect();
                Some(Node {
                    value: NodeValue::Array(tables),
                    offset,
                })
            }
        }
    }

    fn value(&mut self, value: &TomlValue, fallback: usize) -> Node {
        let offset = value.span().map_or(fallback, |span| span.start);
        let value = match value {
            TomlValue::String(text) => match interpolate(text.value(), self.env) {
                Ok(text) => NodeValue::String(text),
                Err(errors) => {
                    self.problems
                        .extend(errors.into_iter().map(|error| InterpolationProblem { offset, error }));
                    NodeValue::Broken
                }
            },
            TomlValue::Integer(n) => NodeValue::Integer(*n.value()),
            TomlValue::Float(x) => NodeValue::Float(*x.value()),
            TomlValue::Boolean(b) => NodeValue::Bool(*b.value()),
            TomlValue::Datetime(_) => NodeValue::Datetime,
            TomlValue::Array(array) => NodeValue::Array(array.iter().map(|v| self.value(v, offset)).collect()),
            TomlValue::InlineTable(table) => {
                let entries: Vec<_> = table
                    .iter()
                    .map(|(key, v)| {
                        let key_offset = table.key(key).and_then(|k| k.span()).map_or(offset, |span| span.start);
                        (key, key_offset, v)
                    })
                    .collect();
                let mut out = Table::default();
                for (key, key_offset, v) in entries {
                    out.entries.push(Entry {
                        key: key.to_owned(),
                        key_offset,
                        node: self.value(v, key_offset),
                    });
                }
                NodeValue::Table(out)
            }
        };
        Node { value, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile::new("t.toml".into(), text.into())
    }

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let f = file("a = 1\nné = \"x\"\n\nlast");
        let at = |offset| {
            let l = f.location(offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (1, 5));
        assert_eq!(at(6), (2, 1));
        // "né" is 3 bytes: `=` (byte 10) is the 4th character of line 2.
        assert_eq!(at(10), (2, 4));
        assert_eq!(at(17), (4, 1));
        assert_eq!(at(1_000), (4, 5));
    }

    #[test]
    fn tables_inline_tables_and_arrays_of_tables_keep_offsets() {
        let f = file("[[connector]]\nname = \"x\"\ns = { a = \"${HOME}\" }\n[connector.settings]\nseed = 1\n");
        let env = |name: &str| (name == "HOME").then(|| "/h".to_owned());
        let (root, problems) = parse(&f, &env).unwrap();
        assert!(problems.is_empty());
        let connectors = &root.get("connector").unwrap().node;
        let NodeValue::Array(items) = &connectors.value else {
            panic!("{connectors:?}")
        };
        let NodeValue::Table(first) = &items[0].value else {
            panic!()
        };
        assert_eq!(items[0].offset, 0);
        assert_eq!(first.get("name").unwrap().key_offset, 14);
        let NodeValue::Table(inline) = &first.get("s").unwrap().node.value else {
            panic!()
        };
        assert!(matches!(&inline.get("a").unwrap().node.value, NodeValue::String(s) if s == "/h"));
        let settings = first.get("settings").unwrap();
        assert_eq!(f.location(settings.node.offset).line, 4);
        assert_eq!(f.location(settings.node.offset).column, 1);
    }

    #[test]
    fn reports_syntax_and_interpolation_errors() {
        let error = parse(&file("a = 1\nb = \"open\n"), &|_| None).unwrap_err();
        assert_eq!(error.offset, 15);
        let error = parse(&file("a = 1\na = 2\n"), &|_| None).unwrap_err();
        assert_eq!(error.message, "duplicate key `a`");
        let (root, problems) = parse(&file("p = \"${NOPE}\"\n"), &|_| None).unwrap();
        assert!(matches!(root.get("p").unwrap().node.value, NodeValue::Broken));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].offset, 4);
    }
}
