#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connector plugins end to end: the example plugins (`plugins/examples/`) and the
//! test fixtures (`plugins/fixtures/`) are built by cargo here, copied into plugin
//! folders, and loaded by a worker; broken libraries are built with rustc here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plexus_config::Config;
use plexus_log::{BatchBuilder, Compression, Log, LogConfig};
use plexus_runtime::{PluginHost, TaskState, Worker};
use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

/// The plugin crates, by package name, built once per test process.
fn built_plugins() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace)
            .args(["build", "--message-format=json-render-diagnostics"])
            .args(["-p", "plexus-plugin-sequence", "-p", "plexus-plugin-jsonl"])
            .args(["-p", "plexus-plugin-faulty", "-p", "plexus-plugin-clash"]);
        let (status, stdout, stderr, _) =
            common::run_bounded(&mut command, "cargo build of the plugins", Duration::from_secs(900));
        assert!(status.success(), "cargo build of the plugins failed:\n{stderr}");
        let mut built = BTreeMap::new();
        for line in stdout.lines() {
            let Ok(message) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let name = message["target"]["name"].as_str().unwrap_or_default().to_owned();
            let library = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".so") || f.ends_with(".dylib"));
            if let Some(library) = library {
                built.insert(name, PathBuf::from(library));
            }
        }
        for name in [
            "plexus_plugin_sequence",
            "plexus_plugin_jsonl",
            "plexus_plugin_faulty",
            "plexus_plugin_clash",
        ] {
            assert!(built.contains_key(name), "cargo built no `{name}`: {built:?}");
        }
        built
    })
}

/// A plugin folder holding copies of the named plugins.
fn plugin_dir(root: &Path, name: &str, plugins: &[&str]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for plugin in plugins {
        let built = &built_plugins()[*plugin];
        std::fs::copy(built, dir.join(built.file_name().unwrap())).unwrap();
    }
    dir
}

/// Builds a one-file cdylib with rustc (for libraries that are not proper plugins).
fn rustc_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.rs"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!("lib{name}.so"));
    let cargo = Path::new(env!("CARGO"));
    let rustc = cargo.with_file_name("rustc");
    let rustc = if rustc.exists() { rustc } else { PathBuf::from("rustc") };
    let output = Command::new(rustc)
        .args(["--crate-type", "cdylib", "--edition", "2024", "-C", "opt-level=0", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(&src).unwrap();
    out
}

fn load(text: &str, registry: &plexus_runtime::Registry) -> Config {
    Config::load_str(&[(PathBuf::from("plugins.toml"), text.to_owned())], registry, &|_| None)
        .unwrap_or_else(|p| panic!("{p}"))
}

/// Waits (at most `limit`) until `done` holds; fails with `what` otherwise.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Lines in every file under `dir`.
fn count_lines(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        count += if path.is_dir() {
            count_lines(&path)
        } else {
            std::fs::read_to_string(&path).unwrap().lines().count()
        };
    }
    count
}

fn caught_up(worker: &Worker, sink: &str, topics: &[&str]) -> bool {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    topics.iter().all(|t| worker.log().topic(t).is_some())
        && plexus_runtime::lag::sink_lag(worker.log(), sink, &topics) == 0
}

/// A source and a sink plugin in one pipeline, with positions, offsets, schemas, dead
/// letters, metrics and status as built-ins have them; a restarted worker resumes the
/// plugin source after its last position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugins_run_a_pipeline_with_the_runtime_services() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        root.path(),
        "plugins",
        &["plexus_plugin_sequence", "plexus_plugin_jsonl"],
    );
    let data = root.path().join("data");
    let out = root.path().join("out");

    // A topic with one record that is not JSON, for the dead-letter policy.
    {
        let mut config = LogConfig::new(&data);
        config.auto_create_topics = true;
        let log = Log::open(config).await.unwrap();
        let partition = log.partition("raw", 0).await.unwrap();
        let mut batch = BatchBuilder::new(Compression::None);
        for value in [&br#"{"a":1}"#[..], b"not json", br#"{"b":2}"#] {
            batch.push(1, Some(b"k"), Some(value), &[]);
        }
        partition.append(&mut batch).await.unwrap();
        log.close().await.unwrap();
    }

    let config_text = |count: u64| {
        format!(
            r#"
[worker]
data_dir = "{data}"
plugin_dirs = ["{plugins}"]

[[connector]]
name = "seq"
type = "sequence"
topic = "nums"
settings = {{ count = {count}, batch_size = 1000, payload_bytes = 4 }}

[[connector]]
name = "nums-out"
type = "jsonl-sink"
topics = ["nums"]
settings = {{ path = "{out}/nums.jsonl" }}

[[connector]]
name = "shop"
type = "datagen"
topic = "shop.{{table}}"
settings = {{ seed = 3, count = 200, tables = ["orders"] }}

[[connector]]
name = "orders-out"
type = "jsonl-sink"
topics = ["shop.orders"]
settings = {{ path = "{out}/orders.jsonl", schema_table = true }}

[[connector]]
name = "raw-out"
type = "jsonl-sink"
topics = ["raw"]
settings = {{ path = "{out}/raw.jsonl", require_json = true }}
errors = {{ tolerance = "dead-letter" }}
"#,
            data = data.display(),
            plugins = plugins.display(),
            out = out.display(),
        )
    };

    let host = PluginHost::new();
    let (registry, scan) = host.registry(std::slice::from_ref(&plugins));
    assert!(scan.refused.is_empty(), "{:?}", scan.refused);
    let loaded: Vec<(&str, &[String])> = scan
        .loaded
        .iter()
        .map(|(name, _, _, types)| (name.as_str(), types.as_slice()))
        .collect();
    assert_eq!(
        loaded,
        [
            ("jsonl", &["jsonl-sink".to_owned(), "blackhole".to_owned()][..]),
            ("sequence", &["sequence".to_owned()][..])
        ]
    );
    assert!(
        registry.origin("sequence").starts_with("sequence @ "),
        "{}",
        registry.origin("sequence")
    );

    let config = load(&config_text(2500), &registry);
    let worker = std::sync::Arc::new(Worker::start(&config, registry.clone()).await.unwrap());
    wait_until(Duration::from_secs(60), "every sink caught up", || {
        let finished = |name: &str| {
            worker
                .status()
                .get(name)
                .is_some_and(|s| s.state == TaskState::Finished)
        };
        finished("seq")
            && finished("shop")
            && caught_up(&worker, "nums-out", &["nums"])
            && caught_up(&worker, "orders-out", &["shop.orders"])
            && caught_up(&worker, "raw-out", &["raw"])
    })
    .await;

    // Status, positions (shown by the plugin's own position_to_json) and metrics.
    let seq = worker.connector("seq").unwrap();
    assert_eq!(
        (seq.type_name.as_str(), seq.state, seq.restarts),
        ("sequence", TaskState::Finished, 0)
    );
    let offsets = worker.offsets("seq").await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[0].offset, Some(serde_json::json!({ "last": 2499 })));
    assert_eq!(worker.metrics()["seq"].records_out.load(Ordering::Relaxed), 2500);
    assert_eq!(worker.metrics()["nums-out"].records.load(Ordering::Relaxed), 2500);
    assert_eq!(worker.metrics()["raw-out"].dead_lettered.load(Ordering::Relaxed), 1);
    let sink_offsets = worker.offsets("nums-out").await.unwrap();
    assert_eq!(
        sink_offsets[0].offset,
        Some(serde_json::json!({ "kafka_offset": 2500 }))
    );

    // The REST API shows plugin types and connectors, and validates plugin settings.
    let server = plexus_runtime::RestServer::start(
        std::sync::Arc::clone(&worker),
        &config.worker.rest,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let types: Value = http
        .get(format!("{base}/connector-plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sequence = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "sequence")
        .unwrap();
    assert_eq!(sequence["kind"], "source");
    assert!(
        sequence["origin"].as_str().unwrap().starts_with("sequence @ "),
        "{sequence}"
    );
    assert!(
        sequence["config"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "payload_bytes")
    );
    let status: Value = http
        .get(format!("{base}/connectors/seq/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["connector"]["state"], "FINISHED", "{status}");
    let checked: Value = http
        .put(format!("{base}/connector-plugins/sequence/config/validate"))
        .json(&serde_json::json!({ "name": "x", "topic": "t", "settings": { "batch_size": 0 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["valid"], false, "{checked}");
    assert!(
        checked["errors"][0].as_str().unwrap().contains("batch_size"),
        "{checked}"
    );
    server.stop();
    worker.shutdown().await.unwrap();

    // The data, read back from the files and the log.
    let nums = lines(&out.join("nums.jsonl"));
    assert_eq!(nums.len(), 2500);
    for (i, line) in nums.iter().enumerate() {
        assert_eq!(line["key"], format!("seq-{i}"), "{line}");
        assert_eq!(line["offset"], i as u64);
        assert_eq!(
            line["value"],
            serde_json::json!({ "n": i, "even": i % 2 == 0, "pad": "xxxx" })
        );
        assert_eq!(line["headers"]["plexus.plugin"], "sequence");
    }
    let orders = lines(&out.join("orders.jsonl"));
    let in_log = common::log_records(&data, "shop.orders").await;
    assert_eq!(orders.len(), in_log.len());
    assert!(orders.len() >= 200);
    for line in orders.iter().filter(|l| !l["value"].is_null()) {
        // Looked up by the plugin in the worker's schema registry (tombstones name none).
        assert_eq!(line["table"], "orders", "{line}");
    }
    let raw = lines(&out.join("raw.jsonl"));
    assert_eq!(
        raw.iter().map(|l| l["value"].clone()).collect::<Vec<_>>(),
        [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
    );
    let dead = common::log_records(&data, "dlq.raw-out").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(&b"not json"[..]));
    assert_eq!(dead[0].header("plexus.dlq.origin").as_deref(), Some("raw/0@1"));
    assert!(dead[0].header("plexus.dlq.reason").unwrap().contains("not JSON"));

    // A new worker resumes the plugin source after its last position: 500 more
    // records, none of the first 2500 again.
    let (registry, _) = host.registry(std::slice::from_ref(&plugins));
    let config = load(&config_text(3000), &registry);
    let worker = Worker::start(&config, registry).await.unwrap();
    wait_until(Duration::from_secs(60), "the resumed sequence is written", || {
        worker
            .status()
            .get("seq")
            .is_some_and(|s| s.state == TaskState::Finished)
            && caught_up(&worker, "nums-out", &["nums"])
    })
    .await;
    worker.shutdown().await.unwrap();
    let keys: Vec<String> = common::log_records(&data, "nums")
        .await
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(keys, (0..3000).map(|n| format!("seq-{n}")).collect::<Vec<_>>());
    assert_eq!(lines(&out.join("nums.jsonl")).len(), 3000);
}

/// A plugin sink that panics (or fails) on its N-th batch fails its task, which the
/// worker restarts with backoff and which then delivers everything; a built-in
/// pipeline beside it flows all along, and the worker never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_fails_and_restarts_its_task_while_a_builtin_pipeline_flows() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(root.path(), "plugins", &["plexus_plugin_faulty"]);
    let data = root.path().join("data");
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let text = format!(
        r#"
[worker]
data_dir = "{data}"
plugin_dirs = ["{plugins}"]
memory_budget = "256KiB"
[worker.restart]
initial_backoff = "100ms"
max_backoff = "1s"

[[connector]]
name = "gen-a"
type = "datagen"
topic = "a"
settings = {{ seed = 1, count = 3000, batch_size = 100, tables = ["orders"] }}

[[connector]]
name = "panicky"
type = "faulty-sink"
topics = ["a"]
settings = {{ path = "{out}/panicky.txt", panic_on_batch = 3 }}

[[connector]]
name = "failing"
type = "faulty-sink"
topics = ["a"]
settings = {{ path = "{out}/failing.txt", fail_on_batch = 2 }}

[[connector]]
name = "gen-b"
type = "datagen"
topic = "b"
settings = {{ seed = 2, count = 3000, batch_size = 100, tables = ["orders"] }}

[[connector]]
name = "b-out"
type = "file-sink"
topics = ["b"]
settings = {{ path = "{out}/b" }}
"#,
        data = data.display(),
        plugins = plugins.display(),
        out = out.display(),
    );
    let (registry, scan) = PluginHost::new().registry(&[plugins]);
    assert!(scan.refused.is_empty(), "{:?}", scan.refused);
    let config = load(&text, &registry);
    let worker = Worker::start(&config, registry).await.unwrap();
    wait_until(
        Duration::from_secs(90),
        "both faulty sinks restarted and caught up",
        || {
            let restarted = |name: &str| worker.status().get(name).is_some_and(|s| s.restarts >= 1);
            worker
                .status()
                .get("gen-a")
                .is_some_and(|s| s.state == TaskState::Finished)
                && worker
                    .status()
                    .get("gen-b")
                    .is_some_and(|s| s.state == TaskState::Finished)
                && restarted("panicky")
                && restarted("failing")
                && caught_up(&worker, "panicky", &["a"])
                && caught_up(&worker, "failing", &["a"])
                && caught_up(&worker, "b-out", &["b"])
        },
    )
    .await;

    let panicky = worker.status().get("panicky").unwrap();
    assert_eq!((panicky.state, panicky.restarts), (TaskState::Running, 1));
    let error = panicky.last_error.unwrap().0;
    assert!(
        error.contains("plugin `faulty` panicked at") && error.contains("faulty-sink was told to panic on batch 3"),
        "{error}"
    );
    let failing = worker.status().get("failing").unwrap();
    assert_eq!((failing.state, failing.restarts), (TaskState::Running, 1));
    assert_eq!(failing.last_error.unwrap().0, "faulty-sink was told to fail on batch 2");
    assert_eq!(worker.metrics()["panicky"].errors.load(Ordering::Relaxed), 1);
    let builtin = worker.status().get("b-out").unwrap();
    assert_eq!((builtin.state, builtin.restarts), (TaskState::Running, 0));
    worker.shutdown().await.unwrap();

    // The restarted tasks delivered every record of `a` (at least once).
    let expected: BTreeSet<String> = common::log_records(&data, "a")
        .await
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert!(expected.len() > 100);
    for file in ["panicky.txt", "failing.txt"] {
        let written: BTreeSet<String> = std::fs::read_to_string(out.join(file))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(written, expected, "{file}");
    }
    // And the built-in pipeline delivered all of `b`.
    // (file-sink skips tombstones.)
    let b_values = common::log_records(&data, "b")
        .await
        .iter()
        .filter(|r| r.value.is_some())
        .count();
    assert!(b_values >= 3000);
    assert_eq!(count_lines(&out.join("b")), b_values);
}

/// Libraries that are not plexus plugins, speak another ABI version, miss a symbol or
/// offer a type that is already taken are refused, each with its reason; the good
/// plugins beside them load, and `plexus validate` checks plugin settings against the
/// plugin's schema.
#[test]
fn broken_and_clashing_libraries_are_refused_with_their_reason() {
    let root = tempfile::tempdir().unwrap();
    let first = plugin_dir(
        root.path(),
        "first",
        &["plexus_plugin_sequence", "plexus_plugin_jsonl", "plexus_plugin_clash"],
    );
    let wrong_abi = rustc_library(
        &first,
        "wrong_abi",
        "#[unsafe(no_mangle)]\npub static PLEXUS_PLUGIN_ABI_VERSION: u32 = 999;\n",
    );
    let not_plugin = rustc_library(
        &first,
        "not_a_plugin",
        "#[unsafe(no_mangle)]\npub extern \"C\" fn hello() -> i32 { 42 }\n",
    );
    let missing = rustc_library(
        &first,
        "missing_symbol",
        "#[unsafe(no_mangle)]\npub static PLEXUS_PLUGIN_ABI_VERSION: u32 = 1;\n#[unsafe(no_mangle)]\npub extern \"C\" fn plexus_plugin_descriptor() -> i32 { 2 }\n",
    );
    let garbage = first.join("libgarbage.so");
    std::fs::write(&garbage, "this is not a shared library").unwrap();
    // The same plugin again, in a second folder: its types are taken by then.
    let second = plugin_dir(root.path(), "second", &["plexus_plugin_jsonl"]);
    let jsonl_first = first.join(built_plugins()["plexus_plugin_jsonl"].file_name().unwrap());
    let jsonl_second = second.join(built_plugins()["plexus_plugin_jsonl"].file_name().unwrap());
    let clash = first.join(built_plugins()["plexus_plugin_clash"].file_name().unwrap());

    let expected = [
        format!(
            "plugin `{}` refused: it is not a plexus plugin (no `PLEXUS_PLUGIN_ABI_VERSION` symbol); build plugins with plexus-plugin-sdk's `export_plugin!` or remove the file from the plugin folder",
            not_plugin.display()
        ),
        format!(
            "plugin `{}` refused: it was built for plugin ABI version 999, but this plexus speaks version 1; rebuild it against plexus-plugin-sdk 0.1.0",
            wrong_abi.display()
        ),
        format!(
            "plugin `{}` refused: it lacks the symbol `plexus_plugin_init` of plugin ABI version 1; rebuild it with plexus-plugin-sdk's `export_plugin!`",
            missing.display()
        ),
        format!(
            "plugin `{}` refused: its connector type `discard` clashes with the built-in type of that name; rename the plugin's type",
            clash.display()
        ),
        format!(
            "plugin `{}` refused: its connector type `jsonl-sink` is already offered by plugin `jsonl` ({}); remove one of the two libraries",
            jsonl_second.display(),
            jsonl_first.display()
        ),
    ];

    // In a worker.
    let host = PluginHost::new();
    let (registry, scan) = host.registry(&[first.clone(), second.clone()]);
    let refused: Vec<String> = scan.refused.iter().map(ToString::to_string).collect();
    for message in &expected {
        assert!(
            refused.contains(message),
            "missing refusal:\n{message}\namong:\n{}",
            refused.join("\n")
        );
    }
    let garbage_refusal = refused
        .iter()
        .find(|r| {
            r.starts_with(&format!(
                "plugin `{}` refused: it is not a loadable shared library (",
                garbage.display()
            ))
        })
        .unwrap_or_else(|| panic!("no refusal of the garbage file among:\n{}", refused.join("\n")));
    assert_eq!(refused.len(), 6, "{garbage_refusal}\n{}", refused.join("\n"));
    for type_name in ["sequence", "jsonl-sink", "blackhole", "datagen"] {
        assert!(registry.get(type_name).is_some(), "{type_name} is missing");
    }
    assert_eq!(registry.origin("discard"), "builtin");

    // In `plexus validate`: refusals are warnings, plugin types validate.
    let config = root.path().join("ok.toml");
    let head = format!(
        "[worker]\nplugin_dirs = [\"{}\", \"{}\"]\n\n[[connector]]\nname = \"seq\"\ntype = \"sequence\"\ntopic = \"nums\"\n",
        first.display(),
        second.display()
    );
    std::fs::write(&config, format!("{head}settings = {{ count = 10 }}\n")).unwrap();
    let output = Command::new(BIN).arg("validate").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("seq: sequence -> nums"));
    for message in &expected {
        assert!(
            stderr.contains(&format!("warning: {message}")),
            "{message}\nnot in:\n{stderr}"
        );
    }
    std::fs::write(&config, format!("{head}settings = {{ cuont = 10, batch_size = 0 }}\n")).unwrap();
    let output = Command::new(BIN).arg("validate").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown setting `cuont` for connector type `sequence`")
            && stderr.contains("did you mean `count`?"),
        "{stderr}"
    );
    assert!(stderr.contains("batch_size"), "{stderr}");
    assert!(stderr.contains("2 problem(s) found"), "{stderr}");
}

/// The example configurations of the plugins validate against the plugins' schemas.
#[test]
fn the_example_configurations_validate() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(
        root.path(),
        "plugins",
        &["plexus_plugin_sequence", "plexus_plugin_jsonl"],
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for example in [
        "plugins/examples/sequence/sequence.toml",
        "plugins/examples/jsonl/jsonl.toml",
    ] {
        let output = Command::new(BIN)
            .arg("validate")
            .arg(workspace.join(example))
            .env("PLEXUS_PLUGIN_DIR", &plugins)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{example}:\n{stderr}");
        assert!(!stderr.contains("warning"), "{example}:\n{stderr}");
    }
}

/// `plexus run` loads plugins added to a plugin folder when it reloads (SIGHUP), and
/// runs connectors of their types.
#[test]
fn a_reload_loads_plugins_added_since() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let configs = root.path().join("config");
    std::fs::create_dir_all(&configs).unwrap();
    let data = root.path().join("data");
    let out = root.path().join("out.jsonl");
    std::fs::write(
        configs.join("worker.toml"),
        format!(
            "[worker]\ndata_dir = \"{}\"\nplugin_dirs = [\"{}\"]\n[worker.rest]\nlisten = \"off\"\n\n[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\nsettings = {{ count = 10, tables = [\"orders\"] }}\n",
            data.display(),
            plugins.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run"])
        .arg(&configs)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(root.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(root.path().join("stderr")).unwrap_or_default();
    let wait = |what: &str, done: &dyn Fn() -> bool, child: &mut std::process::Child| {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("gave up waiting until {what}:\n{}", common::tail(&stderr(), 40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("the worker runs", &|| stderr().contains("Connector ended."), &mut child);

    // Add the plugins and a pipeline through them, then reload.
    plugin_dir(
        root.path(),
        "plugins",
        &["plexus_plugin_sequence", "plexus_plugin_jsonl"],
    );
    std::fs::write(
        configs.join("seq.toml"),
        format!(
            "[[connector]]\nname = \"seq\"\ntype = \"sequence\"\ntopic = \"nums\"\nsettings = {{ count = 300, batch_size = 100 }}\n\n[[connector]]\nname = \"out\"\ntype = \"jsonl-sink\"\ntopics = [\"nums\"]\nsettings = {{ path = \"{}\" }}\n",
            out.display()
        ),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait(
        "the plugin pipeline wrote its 300 records",
        &|| std::fs::read_to_string(&out).unwrap_or_default().lines().count() == 300,
        &mut child,
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("plexus did not stop:\n{}", common::tail(&stderr(), 40));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", common::tail(&stderr(), 40));
    let log = stderr();
    let loaded: Vec<&str> = log.lines().filter(|l| l.contains("Plugin loaded.")).collect();
    assert!(
        loaded.iter().any(|l| l.contains(r#""plugin":"sequence""#)),
        "{}",
        common::tail(&log, 40)
    );
    // Logs of the plugins reach the worker's log, with the plugin's and the connector's names.
    assert!(
        log.lines().any(|l| l.contains("Sequence starting.")
            && l.contains(r#""plugin":"sequence""#)
            && l.contains(r#""connector":"seq""#)),
        "{}",
        common::tail(&log, 40)
    );
    let keys: Vec<String> = lines(&out)
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, (0..300).map(|n| format!("seq-{n}")).collect::<Vec<_>>());
}

/// `plexus bench plugin` at a small size prints its summary line with every figure.
#[test]
fn small_plugin_bench_prints_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["bench", "plugin", "--records", "20000", "--dir"])
        .arg(dir.path().join("bench"))
        .arg("--plugin")
        .arg(&built_plugins()["plexus_plugin_jsonl"])
        .env("RUST_LOG", "warn");
    let (status, stdout, stderr, _) = common::run_bounded(&mut command, "the benchmark", Duration::from_secs(300));
    assert!(status.success(), "{status}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let figures = common::summary_figures(last, "plugin-bench: ");
    let names: Vec<&str> = figures.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["builtin_rec_s", "plugin_rec_s", "ratio"], "{last}");
    for (name, value) in &figures {
        assert!(value.is_finite() && *value > 0.0, "{name} is {value} in: {last}");
    }
    let ratio = figures[1].1 / figures[0].1;
    assert!((ratio - figures[2].1).abs() <= 0.002 + ratio * 0.01, "{last}");
    // Both runs read the same records: 20,000 events plus a tombstone per delete.
    let counts: Vec<&str> = stdout.lines().filter(|l| l.contains(" records=")).collect();
    assert_eq!(counts.len(), 2, "{stdout}");
    let records = |line: &str| {
        line.split(' ')
            .find_map(|p| p.strip_prefix("records="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(records(counts[0]), records(counts[1]), "{stdout}");
    assert!(records(counts[0]).parse::<u64>().unwrap() >= 20_000);
}
