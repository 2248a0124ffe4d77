//! The `plexus` command as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_plexus");

fn quickstart() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/quickstart.toml")
}

#[test]
fn validate_prints_a_summary_or_every_problem() {
    let ok = Command::new(BIN).arg("validate").arg(quickstart()).output().unwrap();
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "2 connectors (shop: datagen -> shop.{table}; orders-out: file-sink <- shop.orders), data in ./data"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[connector]]\nname = \"x\"\ntype = \"datagn\"\ntopic = \"t\"\n\n[[connector]]\nname = \"y\"\ntype = \"file-sink\"\ntopics = [\"t\"]\n[connector.settings]\npath = \"/tmp\"\nroll_sise = \"1MiB\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("validate").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:8: error: unknown connector type `datagn`"),
        "{err}"
    );
    assert!(err.contains("did you mean `datagen`?"), "{err}");
    assert!(
        err.contains("bad.toml:12:1: error: unknown setting `roll_sise`"),
        "{err}"
    );
    assert!(err.contains("did you mean `roll_size`?"), "{err}");
    assert!(err.contains("2 problem(s) found"), "{err}");
}

#[test]
fn the_quickstart_runs_to_completion_and_writes_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(BIN)
        .current_dir(dir.path())
        .arg("run")
        .args(["--rest-listen", "127.0.0.1:0"])
        .arg(quickstart())
        .arg("--exit-when-done")
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 5_000, "{} lines", lines.len());
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["source"]["table"], "orders");
        assert!(matches!(value["op"].as_str(), Some("c" | "u" | "d")), "{line}");
    }

    // The log can be inspected afterwards.
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["consume", "shop.orders", "--from-beginning", "--max", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let consumed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(consumed.lines().count(), 2);
    let first: serde_json::Value = serde_json::from_str(consumed.lines().next().unwrap()).unwrap();
    assert_eq!(first["offset"], 0);
    assert_eq!(first["value"]["op"], "c");
    let topics = Command::new(BIN)
        .current_dir(dir.path())
        .args(["topics", "list"])
        .output()
        .unwrap();
    let topics = String::from_utf8_lossy(&topics.stdout);
    assert!(
        topics.contains("shop.orders") && topics.contains("shop.customers"),
        "{topics}"
    );
}

#[test]
fn sighup_reloads_a_configuration_directory() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        conf.join("a.toml"),
        format!(
            "[worker]\ndata_dir = \"{}\"\n\n[[connector]]\nname = \"a\"\ntype = \"datagen\"\ntopic = \"a.{{table}}\"\nsettings = {{ count = 100 }}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .args(["--rest-listen", "127.0.0.1:0"])
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    std::fs::write(
        conf.join("b.toml"),
        "[[connector]]\nname = \"b\"\ntype = \"datagen\"\ntopic = \"b.{table}\"\nsettings = { count = 100 }\n",
    )
    .unwrap();
    Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let out = Command::new(BIN)
        .args(["topics", "list", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let topics = String::from_utf8_lossy(&out.stdout);
    assert!(topics.contains("a.orders"), "{topics}");
    assert!(
        topics.contains("b.orders"),
        "the connector added by the reload ran: {topics}"
    );
}

#[test]
fn secrets_never_reach_the_output_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\ndata_dir = \"{}\"\n[worker.rest]\ntoken = \"${{TOKEN}}\"\n\n[[connector]]\nname = \"g\"\ntype = \"datagen\"\ntopic = \"t.{{table}}\"\nsettings = {{ count = 50 }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let secret = "tok-5ecret-4711";
    for args in [
        vec!["validate"],
        vec!["run", "--exit-when-done", "--rest-listen", "127.0.0.1:0"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg(&config)
            .env("TOKEN", secret)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.len() > 50,
            "{args:?} printed too little to be a meaningful check: {all}"
        );
        assert!(!all.contains(secret), "{args:?} printed the token:\n{all}");
    }
}

#[test]
fn every_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(BIN)
            .arg("validate")
            .arg(&path)
            .env("PGPASSWORD", "secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "the examples are there");
}
