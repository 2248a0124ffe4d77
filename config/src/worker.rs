//! The `[worker]` table: settings of the process itself. Every setting has a default, so
//! the table (and a worker file) is optional.

use std::path::PathBuf;

use crate::check::{Checker, TableContext, check_table};
use crate::tree::{Node, NodeValue};
use crate::{ByteSize, ConfigSchema, Duration, FieldKind, FieldSpec, Secret, Settings, Value};

/// The worker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Where the embedded log and the worker's state live. Default `"./data"`.
    pub data_dir: PathBuf,
    /// Create a topic the first time a connector names it. Default `true`.
    pub auto_create_topics: bool,
    /// Partitions of automatically created topics. Default `1`.
    pub default_partitions: u32,
    /// How failed connector tasks are restarted (`[worker.restart]`).
    pub restart: RestartPolicy,
    /// Memory the worker may use for buffered records, across connectors. Default `"64MiB"`.
    pub memory_budget: ByteSize,
    /// How long connectors get to stop cleanly on shutdown. Default `"30s"`.
    pub shutdown_timeout: std::time::Duration,
    /// Folders searched for connector plugins (shared libraries). Default `[]`.
    pub plugin_dirs: Vec<PathBuf>,
    /// Backpressure: a source pauses while a sink of this worker that reads its topics
    /// has more than this many records not yet committed. `0` turns it off. Default
    /// `1000000`.
    pub max_sink_lag: u64,
    /// The REST API (`[worker.rest]`).
    pub rest: RestConfig,
}

/// The worker's REST API (`[worker.rest]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestConfig {
    /// Where it listens; `None` when `listen = "off"`. Default `127.0.0.1:8083`.
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token every request must carry. Required when `listen` is not a
    /// loopback address.
    pub token: Option<Secret>,
    /// A file whose first line is the token (instead of `token`).
    pub token_file: Option<PathBuf>,
    /// Larger request bodies are refused with 413. Default `"1MiB"`.
    pub max_body: ByteSize,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8083))),
            token: None,
            token_file: None,
            max_body: ByteSize::mib(1),
        }
    }
}

impl RestConfig {
    /// The settings of `[worker.rest]`, with their defaults and documentation.
    pub fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(
                FieldSpec::new("listen", FieldKind::String)
                    .with_default("127.0.0.1:8083")
                    .doc("Address and port of the REST API, or \"off\". Any address other than loopback requires a token."),
            )
            .field(
                FieldSpec::new("token", FieldKind::String)
                    .secret()
                    .doc("Bearer token that every request must carry (`Authorization: Bearer ...`)."),
            )
            .field(
                FieldSpec::new("token_file", FieldKind::Path).doc("A file whose first line is the token."),
            )
            .field(
                FieldSpec::new("max_body", FieldKind::Size)
                    .with_default(ByteSize::mib(1))
                    .doc("Largest request body accepted; larger ones get 413."),
            )
    }

    /// Whether requests must carry a token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }
}

/// Restarts of a failed task, with exponential backoff between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Attempts before the task is left failed; `0` never restarts. Default `5`.
    pub max_attempts: u32,
    /// Wait before the first restart; doubled after each failure. Default `"1s"`.
    pub initial_backoff: std::time::Duration,
    /// Longest wait between restarts. Default `"60s"`.
    pub max_backoff: std::time::Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            auto_create_topics: true,
            default_partitions: 1,
            restart: RestartPolicy::default(),
            memory_budget: ByteSize::mib(64),
            shutdown_timeout: std::time::Duration::from_secs(30),
            plugin_dirs: Vec::new(),
            max_sink_lag: 1_000_000,
            rest: RestConfig::default(),
        }
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: std::time::Duration::from_secs(1),
            max_backoff: std::time::Duration::from_secs(60),
        }
    }
}

const U32_MAX: i64 = u32::MAX as i64;

impl WorkerConfig {
    /// The settings of `[worker]`, with their defaults and documentation.
    pub fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(
                FieldSpec::new("data_dir", FieldKind::Path)
                    .with_default("./data")
                    .doc("Where the embedded log and the worker's state live."),
            )
            .field(
                FieldSpec::new("auto_create_topics", FieldKind::Bool)
                    .with_default(true)
                    .doc("Create a topic the first time a connector names it."),
            )
            .field(
                FieldSpec::new("default_partitions", FieldKind::integer_between(Some(1), Some(U32_MAX)))
                    .with_default(1)
                    .doc("Partitions of automatically created topics."),
            )
            .field(
                FieldSpec::new("memory_budget", FieldKind::Size)
                    .with_default(ByteSize::mib(64))
                    .doc("Memory the worker may use for buffered records, across connectors."),
            )
            .field(
                FieldSpec::new("shutdown_timeout", FieldKind::Duration)
                    .with_default(Duration::from_secs(30))
                    .doc("How long connectors get to stop cleanly on shutdown."),
            )
            .field(
                FieldSpec::new("plugin_dirs", FieldKind::StringList)
                    .with_default(Vec::<String>::new())
                    .doc("Folders searched for connector plugins (shared libraries)."),
            )
            .field(
                FieldSpec::new("max_sink_lag", FieldKind::integer_between(Some(0), None))
                    .with_default(1_000_000)
                    .doc("A source pauses while a sink of this worker reading its topics lags by more records than this; 0 turns it off."),
            )
    }
}

impl RestartPolicy {
    /// The settings of `[worker.restart]`, with their defaults and documentation.
    pub fn schema() -> ConfigSchema {
        ConfigSchema::new()
            .field(
                FieldSpec::new("max_attempts", FieldKind::integer_between(Some(0), Some(U32_MAX)))
                    .with_default(5)
                    .doc("Attempts before a failed task is left failed; 0 never restarts."),
            )
            .field(
                FieldSpec::new("initial_backoff", FieldKind::Duration)
                    .with_default(Duration::from_secs(1))
                    .doc("Wait before the first restart; doubled after each failure."),
            )
            .field(
                FieldSpec::new("max_backoff", FieldKind::Duration)
                    .with_default(Duration::from_secs(60))
                    .doc("Longest wait between restarts."),
            )
    }
}

/// Checks a `[worker]` table (its node) and builds the worker's settings from it.
pub(crate) fn check_worker(checker: &mut Checker<'_>, node: &Node) -> Option<WorkerConfig> {
    let NodeValue::Table(table) = &node.value else {
        let message = format!("`worker` must be a table, found {}", node.value.describe());
        checker.report(node.offset, message, Some("write a [worker] section".into()));
        return None;
    };
    let context = TableContext {
        noun: "setting",
        place: "in [worker]".into(),
        owner: "[worker]".into(),
        section: "[worker]",
        extra_keys: &["restart", "rest"],
    };
    let checked = check_table(checker, table, &WorkerConfig::schema(), &context, node.offset);
    let restart = match table.get("restart") {
        None => Some(RestartPolicy::default()),
        Some(entry) => check_restart(checker, &entry.node),
    };
    let rest = match table.get("rest") {
        None => Some(RestConfig::default()),
        Some(entry) => check_rest(checker, &entry.node),
    };
    let settings = &checked.settings;
    let memory_budget = settings.size("memory_budget").map(ByteSize);
    if memory_budget == Some(ByteSize(0))
        && let Some(&offset) = checked.offsets.get("memory_budget")
    {
        checker.report(
            offset,
            "setting `memory_budget` must be larger than 0",
            Some("the default is \"64MiB\"".into()),
        );
        return None;
    }
    Some(WorkerConfig {
        data_dir: settings.path("data_dir")?.to_path_buf(),
        auto_create_topics: settings.bool("auto_create_topics")?,
        default_partitions: u32_setting(settings, "default_partitions")?,
        restart: restart?,
        memory_budget: memory_budget?,
        shutdown_timeout: settings.duration("shutdown_timeout")?,
        plugin_dirs: settings.string_list("plugin_dirs")?.iter().map(PathBuf::from).collect(),
        max_sink_lag: settings.integer("max_sink_lag")?.max(0) as u64,
        rest: rest?,
    })
}

fn check_rest(checker: &mut Checker<'_>, node: &Node) -> Option<RestConfig> {
    let NodeValue::Table(table) = &node.value else {
        let message = format!("setting `rest` must be a table, found {}", node.value.describe());
        checker.report(node.offset, message, Some("write a [worker.rest] section".into()));
        return None;
    };
    let context = TableContext {
        noun: "setting",
        place: "in [worker.rest]".into(),
        owner: "[worker.rest]".into(),
        section: "[worker.rest]",
        extra_keys: &[],
    };
    let checked = check_table(checker, table, &RestConfig::schema(), &context, node.offset);
    let settings = &checked.settings;
    let listen_text = settings.string("listen")?;
    let listen_offset = checked.offsets.get("listen").copied().unwrap_or(node.offset);
    let listen = if listen_text == "off" {
        None
    } else {
        match listen_text.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                checker.report(
                    listen_offset,
                    format!("setting `listen` must be an address and port such as \"127.0.0.1:8083\", or \"off\"; found \"{listen_text}\""),
                    Some("use \"0.0.0.0:8083\" to listen on every interface (a token is then required)".into()),
                );
                return None;
            }
        }
    };
    let config = RestConfig {
        listen,
        token: settings.secret("token").cloned(),
        token_file: settings.path("token_file").map(PathBuf::from),
        max_body: settings.size("max_body").map(ByteSize)?,
    };
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && !config.requires_token()
    {
        checker.report(
            listen_offset,
            format!("the REST API would listen on {addr}, which is not a loopback address, without a token"),
            Some("set `token` (e.g. token = \"${PLEXUS_TOKEN}\") or `token_file` in [worker.rest], or listen on 127.0.0.1".into()),
        );
        return None;
    }
    Some(config)
}

fn check_restart(checker: &mut Checker<'_>, node: &Node) -> Option<RestartPolicy> {
    let NodeValue::Table(table) = &node.value else {
        let message = format!("setting `restart` must be a table, found {}", node.value.describe());
        checker.report(node.offset, message, Some("write a [worker.restart] section".into()));
        return None;
    };
    let context = TableContext {
        noun: "setting",
        place: "in [worker.restart]".into(),
        owner: "[worker.restart]".into(),
        section: "[worker.restart]",
        extra_keys: &[],
    };
    let checked = check_table(checker, table, &RestartPolicy::schema(), &context, node.offset);
    let settings = &checked.settings;
    let policy = RestartPolicy {
        max_attempts: u32_setting(settings, "max_attempts")?,
        initial_backoff: settings.duration("initial_backoff")?,
        max_backoff: settings.duration("max_backoff")?,
    };
    if policy.initial_backoff.is_zero()
        && let Some(&offset) = checked.offsets.get("initial_backoff")
    {
        let hint = "a restart loop without a pause would spin; the default is \"1s\"";
        checker.report(
            offset,
            "setting `initial_backoff` must be longer than 0s",
            Some(hint.into()),
        );
        return None;
    }
    if policy.max_backoff < policy.initial_backoff {
        let offset = checked
            .offsets
            .get("max_backoff")
            .or(checked.offsets.get("initial_backoff"))
            .copied();
        let message = format!(
            "setting `max_backoff` ({}) must not be shorter than `initial_backoff` ({})",
            Duration(policy.max_backoff),
            Duration(policy.initial_backoff)
        );
        checker.report(offset.unwrap_or(node.offset), message, None);
        return None;
    }
    Some(policy)
}

/// An integer setting whose schema bounds it to `u32`.
fn u32_setting(settings: &Settings, name: &str) -> Option<u32> {
    match settings.get(name)? {
        Value::Integer(n) => u32::try_from(*n).ok(),
        _ => None,
    }
}
