//! `Config::load` and `Config::load_str` through the public API: the example, files and
//! folders on disk, defaults, and secrets that never show.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_config::{
    ByteSize, Config, ConfigSchema, ConnectorKind, ConnectorTypeRegistry, ErrorTolerance, FieldKind, FieldSpec,
    RestConfig, RestartPolicy, Value, WorkerConfig,
};

fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, plexus_config::Problems> {
    Config::load_str(&[("test.toml".into(), text.into())], &common::registry(), env)
}

#[test]
fn quickstart_example_loads_cleanly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    assert!(
        std::fs::read_to_string(&path).unwrap().lines().count() <= 20,
        "the quickstart must stay short"
    );
    let config = Config::load(std::slice::from_ref(&path), &common::registry(), &|_| None).unwrap();

    assert_eq!(config.files, std::slice::from_ref(&path));
    assert_eq!(config.worker, WorkerConfig::default());
    assert_eq!(
        config.summary(),
        "2 connectors (shop: datagen -> shop.{table}; orders-out: file-sink <- shop.orders), data in ./data"
    );
    let [generator, sink] = &config.connectors[..] else {
        panic!("{:?}", config.connectors)
    };
    assert_eq!(
        (generator.kind, generator.topics.as_slice()),
        (ConnectorKind::Source, &["shop.{table}".to_owned()][..])
    );
    assert_eq!(generator.settings.integer("seed"), Some(42));
    assert_eq!(generator.settings.integer("count"), Some(20_000));
    assert_eq!(generator.errors.tolerance, ErrorTolerance::Fail);
    assert_eq!(generator.errors.dead_letter_topic, "dlq.shop");
    assert_eq!((generator.location.line, generator.location.column), (5, 1));
    assert_eq!(sink.kind, ConnectorKind::Sink);
    assert_eq!(sink.settings.string("path"), Some("./out"));
    assert_eq!(sink.settings.size("roll_size"), Some(64 << 20));
    assert_eq!(
        sink.settings.duration("roll_interval"),
        Some(Duration::from_secs(3_600))
    );
    assert_eq!(sink.settings.string("format"), Some("jsonl"), "defaults are filled in");

    let with_env = Config::load(&[path], &common::registry(), &common::env).unwrap();
    assert_eq!(with_env.connectors[1].settings.string("path"), Some("/tmp/plexus-out"));
}

#[test]
fn worker_settings_are_typed_and_defaulted() {
    let text = r#"
[worker]
data_dir = "/var/lib/plexus"
auto_create_topics = false
default_partitions = 3
memory_budget = "1GiB"
shutdown_timeout = "1m"
plugin_dirs = ["/opt/plugins"]
max_sink_lag = 0
restart = { max_attempts = 0, max_backoff = "2m" }
rest = { listen = "0.0.0.0:9000", token = "${TOKEN}", max_body = "64KiB" }
"#;
    let worker = load_text(text, &|name| (name == "TOKEN").then(|| "s3cret".to_owned()))
        .unwrap()
        .worker;
    assert_eq!(worker.rest.token.as_ref().map(|t| t.expose()), Some("s3cret"));
    assert!(
        !format!("{worker:?}").contains("s3cret"),
        "the token is redacted in Debug"
    );
    assert_eq!(
        worker,
        WorkerConfig {
            data_dir: "/var/lib/plexus".into(),
            auto_create_topics: false,
            default_partitions: 3,
            restart: RestartPolicy {
                max_attempts: 0,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(120)
            },
            memory_budget: ByteSize::gib(1),
            shutdown_timeout: Duration::from_secs(60),
            plugin_dirs: vec![PathBuf::from("/opt/plugins")],
            max_sink_lag: 0,
            rest: RestConfig {
                listen: Some("0.0.0.0:9000".parse().unwrap()),
                token: worker.rest.token.clone(),
                token_file: None,
                max_body: ByteSize::kib(64),
            },
        }
    );
    let empty = load_text("", &|_| None).unwrap();
    assert_eq!(empty.worker, WorkerConfig::default());
    assert_eq!(empty.summary(), "0 connectors, data in ./data");
}

#[test]
fn rest_api_outside_loopback_needs_a_token() {
    let problems = load_text("[worker.rest]\nlisten = \"0.0.0.0:8083\"\n", &|_| None).unwrap_err();
    assert_eq!(
        problems.to_string(),
        "test.toml:2:10: error: the REST API would listen on 0.0.0.0:8083, which is not a loopback address, without a token\n  hint: set `token` (e.g. token = \"${PLEXUS_TOKEN}\") or `token_file` in [worker.rest], or listen on 127.0.0.1"
    );
    let problems = load_text("[worker.rest]\nlisten = \"localhost\"\n", &|_| None).unwrap_err();
    assert!(
        problems
            .to_string()
            .starts_with("test.toml:2:10: error: setting `listen` must be an address and port"),
        "{problems}"
    );
    let off = load_text("[worker.rest]\nlisten = \"off\"\n", &|_| None).unwrap();
    assert_eq!(off.worker.rest.listen, None);
    let file = load_text(
        "[worker.rest]\nlisten = \"[::]:8083\"\ntoken_file = \"/etc/plexus/token\"\n",
        &|_| None,
    )
    .unwrap();
    assert!(file.worker.rest.requires_token());
}

#[test]
fn dead_letter_policy() {
    let text = r#"
[[connector]]
name = "g"
type = "datagen"
topic = "t"
[connector.errors]
tolerance = "dead-letter"
dead_letter_topic = "bad.records"
"#;
    let config = load_text(text, &|_| None).unwrap();
    let errors = &config.connectors[0].errors;
    assert_eq!(
        (errors.tolerance, errors.dead_letter_topic.as_str()),
        (ErrorTolerance::DeadLetter, "bad.records")
    );
    assert_eq!(config.summary(), "1 connector (g: datagen -> t), data in ./data");
}

#[test]
fn loads_folders_in_name_order_and_reports_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "b-sink.toml",
        "[[connector]]\nname = \"out\"\ntype = \"file-sink\"\ntopics = [\"t\"]\n[connector.settings]\npath = \"o.jsonl\"\n",
    );
    write(
        "a-source.toml",
        "[worker]\ndata_dir = \"d\"\n\n[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"t\"\n",
    );
    write("notes.txt", "not configuration");
    let config = Config::load(&[dir.path().to_path_buf()], &common::registry(), &|_| None).unwrap();
    assert_eq!(
        config.files,
        [dir.path().join("a-source.toml"), dir.path().join("b-sink.toml")]
    );
    assert_eq!(
        config.summary(),
        "2 connectors (gen: datagen -> t; out: file-sink <- t), data in d"
    );

    // Problems come in file order, each file's in line order, whatever order they are found in.
    write(
        "c-bad.toml",
        "[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"t\"\nrate = 1\n",
    );
    write(
        "a-source.toml",
        "[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"t\"\n[connector.settings]\nrate = -1\n",
    );
    let problems = Config::load(&[dir.path().to_path_buf()], &common::registry(), &|_| None).unwrap_err();
    let a = dir.path().join("a-source.toml");
    let c = dir.path().join("c-bad.toml");
    let rendered: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        rendered,
        [
            format!(
                "{}:6:8: error: setting `rate` must be at least 0, found -1",
                a.display()
            ),
            format!(
                "{}:2:8: error: duplicate connector name `gen`\n  hint: the first connector named `gen` is at {}:2:8; names must be unique",
                c.display(),
                a.display()
            ),
            format!(
                "{}:5:1: error: unknown key `rate` in [[connector]]\n  hint: `rate` is a setting of connector type `datagen`: move it under [connector.settings]",
                c.display()
            ),
        ]
    );
}

#[test]
fn unreadable_paths_are_problems_too() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[connector]]\nname = 1\n").unwrap();
    let problems = Config::load(
        &[missing.clone(), empty_dir.clone(), bad.clone()],
        &common::registry(),
        &|_| None,
    )
    .unwrap_err();
    let rendered = problems.to_string();
    assert!(
        rendered.starts_with(&format!("error: cannot read `{}`: ", missing.display())),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!(
            "error: no *.toml files in directory `{}`",
            empty_dir.display()
        )),
        "{rendered}"
    );
    assert!(rendered.contains(&format!(
        "{}:2:8: error: key `name` must be a string, found an integer",
        bad.display()
    )));
    assert_eq!(problems.len(), 4, "{rendered}"); // + the missing `type`
}

/// A registry whose every secret field has a kind with parsing or bounds, so that an
/// invalid secret value reaches each kind of error message.
fn secret_registry() -> ConnectorTypeRegistry {
    let schema = ConfigSchema::new()
        .field(FieldSpec::new("password", FieldKind::String).secret().required())
        .field(FieldSpec::new("token_ttl", FieldKind::Duration).secret())
        .field(FieldSpec::new("key_size", FieldKind::Size).secret())
        .field(FieldSpec::new("pin", FieldKind::integer_between(Some(0), Some(9_999))).secret())
        .field(FieldSpec::new("mode", FieldKind::one_of(["hunter3", "other"])).secret())
        .field(
            FieldSpec::new("api_key", FieldKind::String)
                .secret()
                .with_default("default-hunter2-key"),
        );
    ConnectorTypeRegistry::new().with("vault", ConnectorKind::Source, schema)
}

const SECRET: &str = "hunter2";

#[test]
fn secrets_never_show() {
    let env = |name: &str| (name == "PGPASSWORD").then(|| format!("{SECRET}-from-env"));
    let valid = "[[connector]]\nname = \"v\"\ntype = \"vault\"\ntopic = \"t\"\n[connector.settings]\npassword = \"${PGPASSWORD}\"\n".to_owned();
    let config = Config::load_str(&[("v.toml".into(), valid)], &secret_registry(), &env).unwrap();
    let settings = &config.connectors[0].settings;
    assert_eq!(settings.secret("password").unwrap().expose(), "hunter2-from-env");
    assert_eq!(
        settings.secret("api_key").unwrap().expose(),
        "default-hunter2-key",
        "secret defaults are wrapped"
    );
    assert!(matches!(settings.get("password"), Some(Value::Secret(_))));
    let shown = [
        format!("{config:?}"),
        format!("{config:#?}"),
        config.summary(),
        settings.to_json().to_string(),
        format!("{}", settings.get("password").unwrap()),
        format!("{:?}", settings.iter().collect::<Vec<_>>()),
    ];
    for text in &shown {
        assert!(!text.contains(SECRET), "secret shown in: {text}");
    }
    assert!(
        settings.to_json_exposed().to_string().contains(SECRET),
        "plugins get the real value"
    );

    // Invalid secret values: every message about them must leave the value out.
    let invalid = format!(
        "[[connector]]\nname = \"v\"\ntype = \"vault\"\ntopic = \"t\"\n[connector.settings]\n\
         password = [\"{SECRET}\"]\ntoken_ttl = \"{SECRET}\"\nkey_size = \"-{SECRET}\"\npin = 12345\n\
         mode = \"{SECRET}\"\n"
    );
    let problems = Config::load_str(&[("v.toml".into(), invalid)], &secret_registry(), &env).unwrap_err();
    assert_eq!(problems.len(), 5, "{problems}");
    for text in [format!("{problems}"), format!("{problems:?}"), format!("{problems:#?}")] {
        assert!(!text.contains(SECRET), "secret shown in: {text}");
        assert!(!text.contains("12345"), "secret integer shown in: {text}");
    }
    assert!(
        problems
            .to_string()
            .contains("setting `token_ttl`: cannot parse *** as a duration"),
        "{problems}"
    );
}

#[test]
fn a_source_topic_may_name_one_topic_per_table() {
    let ok = "[[connector]]\nname = \"shop\"\ntype = \"datagen\"\ntopic = \"shop.{table}\"\n";
    let config = load_text(ok, &|_| None).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.connectors[0].topics, vec!["shop.{table}".to_owned()]);

    let typo = "[[connector]]\nname = \"shop\"\ntype = \"datagen\"\ntopic = \"shop.{tabel}\"\n";
    let problems = load_text(typo, &|_| None).unwrap_err().to_string();
    assert!(
        problems.contains("4:9: error: topic name `shop.{tabel}` has an unknown placeholder"),
        "{problems}"
    );
    assert!(problems.contains("`{table}`"), "{problems}");
}

/// The first phase of a load reads only `[worker]`: connectors of types nobody knows
/// yet (a plugin's) do not stop it from telling where the plugins are.
#[test]
fn the_worker_table_loads_before_the_connector_types_are_known() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[connector]]\nname = \"x\"\ntype = \"from-a-plugin\"\ntopic = \"t\"\nsettings = { anything = 1 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[worker]\nplugin_dirs = [\"${PLUGINS:-/opt/plexus/plugins}\", \"./more\"]\n",
    )
    .unwrap();
    let worker = Config::load_worker(&[dir.path().to_path_buf()], &|_| None).unwrap();
    assert_eq!(
        worker.plugin_dirs,
        [PathBuf::from("/opt/plexus/plugins"), PathBuf::from("./more")]
    );
    let env = |name: &str| (name == "PLUGINS").then(|| "/p".to_owned());
    let worker = Config::load_worker(&[dir.path().join("b.toml")], &env).unwrap();
    assert_eq!(worker.plugin_dirs[0], PathBuf::from("/p"));
    // No [worker] table: the defaults. A bad one: its problems.
    let worker = Config::load_worker(&[dir.path().join("a.toml")], &|_| None).unwrap();
    assert!(worker.plugin_dirs.is_empty());
    std::fs::write(dir.path().join("b.toml"), "[worker]\nplugin_dirs = \"one\"\n").unwrap();
    let problems = Config::load_worker(&[dir.path().join("b.toml")], &|_| None).unwrap_err();
    assert!(problems.to_string().contains("plugin_dirs"), "{problems}");
}
