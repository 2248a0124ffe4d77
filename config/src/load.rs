//! Reading configuration files and validating them as a whole.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::check::{Checker, Ranked};
use crate::connector::check_connector;
use crate::interpolate::InterpolationError;
use crate::suggest::closest;
use crate::tree::{self, NodeValue, SourceFile};
use crate::worker::check_worker;
use crate::{ConnectorConfig, ConnectorKind, ConnectorTypes, Location, Problem, Problems, WorkerConfig};

/// A validated configuration: the worker's settings and every connector.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub worker: WorkerConfig,
    /// In file order.
    pub connectors: Vec<ConnectorConfig>,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
}

impl Config {
    /// Reads every file (a directory means its `*.toml` files, sorted by name),
    /// interpolates `${VAR}` with `env`, validates everything against `types`, and
    /// returns every problem at once, in file order.
    ///
    /// `env` is usually `&|name| std::env::var(name).ok()`.
    pub fn load(
        paths: &[PathBuf],
        types: &dyn ConnectorTypes,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        let mut sources = Vec::new();
        let mut unreadable = Vec::new();
        for path in paths {
            match files_of(path) {
                Ok(files) => {
                    for file in files {
                        match std::fs::read_to_string(&file) {
                            Ok(text) => sources.push((file, text)),
                            Err(error) => unreadable.push(Ranked {
                                file_index: sources.len(),
                                problem: Problem::new(None, format!("cannot read `{}`: {error}", file.display())),
                            }),
                        }
                    }
                }
                Err(problem) => unreadable.push(Ranked {
                    file_index: sources.len(),
                    problem,
                }),
            }
        }
        load_sources(&sources, types, env, unreadable)
    }

    /// Only the `[worker]` table of the files (every other table is left unchecked):
    /// the first of the two phases of a load, which tells where the connector plugins
    /// are before the connectors are validated against the types they offer. Files
    /// without a `[worker]` table give the defaults; problems of that table are
    /// reported again by the full [`Config::load`].
    pub fn load_worker(paths: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Result<WorkerConfig, Problems> {
        let mut problems = Vec::new();
        let mut worker = None;
        for path in paths {
            let files = files_of(path).map_err(|problem| Problems::from(vec![problem]))?;
            for (file_index, file) in files.into_iter().enumerate() {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    Problems::from(vec![Problem::new(
                        None,
                        format!("cannot read `{}`: {e}", file.display()),
                    )])
                })?;
                let source = SourceFile::new(file, text);
                let mut checker = Checker {
                    file: &source,
                    file_index,
                    problems: &mut problems,
                };
                let Ok((root, _)) = tree::parse(&source, env) else {
                    continue;
                };
                for entry in root.entries.iter().filter(|e| e.key == "worker") {
                    let config = check_worker(&mut checker, &entry.node);
                    worker = worker.or(config);
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|ranked| ranked.problem)
                .collect::<Vec<_>>()
                .into());
        }
        Ok(worker.unwrap_or_default())
    }

    /// Like [`Config::load`], from in-memory `(file name, text)` pairs: for the REST
    /// API's validate endpoint and for tests.
    pub fn load_str(
        sources: &[(PathBuf, String)],
        types: &dyn ConnectorTypes,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        load_sources(sources, types, env, Vec::new())
    }

    /// One line for logs and `plexus validate`:
    /// `2 connectors (orders-gen: datagen -> orders; orders-out: file-sink <- orders), data in ./data`.
    pub fn summary(&self) -> String {
        let count = self.connectors.len();
        let mut line = format!("{count} connector{}", if count == 1 { "" } else { "s" });
        if count > 0 {
            let parts: Vec<String> = self
                .connectors
                .iter()
                .map(|c| {
                    let arrow = match c.kind {
                        ConnectorKind::Source => "->",
                        ConnectorKind::Sink => "<-",
                    };
                    format!("{}: {} {arrow} {}", c.name, c.type_name, c.topics.join(", "))
                })
                .collect();
            let _ = write!(line, " ({})", parts.join("; "));
        }
        let _ = write!(line, ", data in {}", self.worker.data_dir.display());
        line
    }
}

/// The `*.toml` files a path stands for.
fn files_of(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    let cannot = |error: std::io::Error| Problem::new(None, format!("cannot read `{}`: {error}", path.display()));
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(cannot)? {
        let file = entry.map_err(cannot)?.path();
        if file.extension().is_some_and(|ext| ext == "toml") && !file.is_dir() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        let problem = Problem::new(None, format!("no *.toml files in directory `{}`", path.display()));
        return Err(problem.with_hint("put the worker and connector files there, or name the files themselves"));
    }
    Ok(files)
}

fn load_sources(
    sources: &[(PathBuf, String)],
    types: &dyn ConnectorTypes,
    env: &dyn Fn(&str) -> Option<String>,
    mut problems: Vec<Ranked>,
) -> Result<Config, Problems> {
    let mut worker: Option<(WorkerConfig, Location)> = None;
    let mut connectors = Vec::new();
    let mut names: HashMap<String, Location> = HashMap::new();

    for (file_index, (path, text)) in sources.iter().enumerate() {
        let file = SourceFile::new(path.clone(), text.clone());
        let mut checker = Checker {
            file: &file,
            file_index,
            problems: &mut problems,
        };
        let (root, interpolation) = match tree::parse(&file, env) {
            Ok(parsed) => parsed,
            Err(error) => {
                checker.report(error.offset, format!("invalid TOML: {}", error.message), None);
                continue;
            }
        };
        for problem in interpolation {
            let (message, hint) = describe_interpolation(problem.error);
            checker.report(problem.offset, message, Some(hint));
        }

        for entry in &root.entries {
            match entry.key.as_str() {
                "worker" => {
                    if let Some((_, first)) = &worker {
                        let message = "a second [worker] table: the worker is configured once";
                        let hint = format!("the first [worker] table is at {first}; merge the two");
                        checker.report(entry.node.offset, message, Some(hint));
                    }
                    // Checked even when it is a second one, so that all its problems show;
                    // one with problems still counts as the first.
                    let config = check_worker(&mut checker, &entry.node).unwrap_or_default();
                    if worker.is_none() {
                        worker = Some((config, file.location(entry.node.offset)));
                    }
                }
                "connector" => {
                    let NodeValue::Array(items) = &entry.node.value else {
                        let message = format!(
                            "`connector` must be an array of tables, found {}",
                            entry.node.value.describe()
                        );
                        let hint = "write each connector as a [[connector]] section (two brackets)";
                        checker.report(entry.node.offset, message, Some(hint.into()));
                        continue;
                    };
                    for item in items {
                        let checked = check_connector(&mut checker, item, types);
                        if let Some((name, offset)) = &checked.name {
                            if let Some(first) = names.get(name) {
                                let message = format!("duplicate connector name `{name}`");
                                let hint =
                                    format!("the first connector named `{name}` is at {first}; names must be unique");
                                checker.report(*offset, message, Some(hint));
                                continue;
                            }
                            names.insert(name.clone(), file.location(*offset));
                        }
                        connectors.extend(checked.config);
                    }
                }
                other => {
                    let hint = match closest(other, ["worker", "connector"]) {
                        Some(near) => format!("did you mean `{near}`?"),
                        None => "a file holds a [worker] table and [[connector]] tables".to_owned(),
                    };
                    checker.report(entry.key_offset, format!("unknown top-level key `{other}`"), Some(hint));
                }
            }
        }
    }

    if !problems.is_empty() {
        // Stable: problems at the same place keep the order they were found in.
        problems.sort_by_key(|ranked| {
            let at = ranked.problem.location.as_ref().map_or((0, 0), |l| (l.line, l.column));
            (ranked.file_index, at)
        });
        return Err(problems
            .into_iter()
            .map(|ranked| ranked.problem)
            .collect::<Vec<_>>()
            .into());
    }
    Ok(Config {
        worker: worker.map(|(config, _)| config).unwrap_or_default(),
        connectors,
        files: sources.iter().map(|(path, _)| path.clone()).collect(),
    })
}

fn describe_interpolation(error: InterpolationError) -> (String, String) {
    match error {
        InterpolationError::Missing(name) => (
            format!("environment variable `{name}` is not set"),
            format!("set it, or write ${{{name}:-default}}"),
        ),
        InterpolationError::Unterminated => (
            "unterminated `${` in string".to_owned(),
            "close it with `}`, or write `$$` for a literal `$`".to_owned(),
        ),
        InterpolationError::BadName(_) => (
            "invalid environment variable reference in string".to_owned(),
            "write ${NAME} or ${NAME:-default} with a name of letters, digits and `_`; `$$` is a literal `$`"
                .to_owned(),
        ),
    }
}
