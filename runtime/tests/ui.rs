//! The status page (`GET /ui`) in a real browser: a worker runs a datagen pipeline, and
//! Debian's headless Chromium, driven by `tests/ui/check.mjs` (playwright-core), loads
//! the page and checks that the connectors, a non-zero throughput, a topic's size and a
//! drawn chart appear. The screenshot is kept in `artifacts/ui-status.png`.
//!
//! Needs Node.js, /usr/bin/chromium and `tests/ui/node_modules`: `scripts/setup-browser`
//! installs them. Without them the test fails (it never skips).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plexus");
const SETUP: &str = "run scripts/setup-browser (installs Debian's chromium and tests/ui's npm packages)";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate lives in the workspace")
        .to_path_buf()
}

/// Kills the worker when the test ends, whether it passed or panicked.
struct WorkerGuard(Child);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails, saying what to install, when the browser tooling is missing.
fn require_browser_tooling(root: &Path) {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): {SETUP}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!("Node.js not found ({err}): {SETUP}"),
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium not found: {SETUP}"
    );
    assert!(
        root.join("tests/ui/node_modules/playwright-core").is_dir(),
        "tests/ui/node_modules/playwright-core not found: {SETUP}"
    );
}

#[test]
fn the_status_page_shows_a_running_pipeline_in_chromium() {
    let root = workspace();
    require_browser_tooling(&root);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"[worker]
data_dir = "{data}"

[[connector]]
name = "shop"
type = "datagen"
topic = "shop.{{table}}"
settings = {{ seed = 7, rate = 2000 }}

[[connector]]
name = "orders-out"
type = "discard"
topics = ["shop.orders"]
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();

    let child = Command::new(BIN)
        .arg("run")
        .arg(&config)
        .args(["--rest-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker = WorkerGuard(child);

    // Read stderr on a thread for the whole run (a full pipe would block the worker),
    // handing each line over and keeping them all for failure messages.
    let stderr = worker.0.stderr.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
    }
    let stderr_so_far = || seen.lock().unwrap().join("\n");

    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("plexus: REST API at ") {
                    break url.trim().trim_end_matches('/').to_owned();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "no `plexus: REST API at` line within 30 s; stderr:\n{}",
                stderr_so_far()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "the worker exited ({:?}) before serving its API; stderr:\n{}",
                worker.0.wait(),
                stderr_so_far()
            ),
        }
    };
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("ui-status.png");
    let _ = std::fs::remove_file(&screenshot);

    let check = Command::new("node")
        .current_dir(&root)
        .arg("tests/ui/check.mjs")
        .arg(format!("{base}/ui"))
        .arg(&screenshot)
        .args(["shop", "orders-out"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    println!("{stdout}");
    assert!(
        check.status.success(),
        "tests/ui/check.mjs failed ({}):\n{stderr}\n{stdout}\nworker stderr:\n{}",
        check.status,
        stderr_so_far()
    );
    assert!(stdout.contains("status page OK"), "unexpected output:\n{stdout}");

    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        screenshot.display()
    );
    assert!(
        png.len() > 10 * 1024,
        "the screenshot is only {} bytes: {}",
        png.len(),
        screenshot.display()
    );
    println!("screenshot: {} ({} KiB)", screenshot.display(), png.len() / 1024);

    // The worker kept running throughout: the page watched a live pipeline.
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker exited during the check; stderr:\n{}",
        stderr_so_far()
    );
}
