//! A throw-away MariaDB server (Debian's `mariadb-server`, installed by
//! `scripts/setup-mariadb`), with a database and a password user for the tests.
//!
//! The server runs as the user running the tests (`--user=root` when that is root,
//! which MariaDB otherwise refuses), in a temporary directory, on a free loopback port,
//! and is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, running_as_root};

/// The tests' user, its password and database.
pub const USER: &str = "plexus";
pub const PASSWORD: &str = "plexus-test";
pub const DATABASE: &str = "plexus";

const SERVER: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const CLIENT: &str = "/usr/bin/mariadb";

#[derive(Debug, thiserror::Error)]
pub enum MariaDbError {
    #[error("MariaDB is not installed ({0} is missing): run scripts/setup-mariadb")]
    NotInstalled(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server on port {port} did not accept connections within {seconds} s; its log:\n{log}")]
    NotReady { port: u16, seconds: u64, log: String },
}

impl From<crate::process::CommandFailed> for MariaDbError {
    fn from(failed: crate::process::CommandFailed) -> Self {
        MariaDbError::Command {
            what: failed.what,
            detail: failed.detail,
        }
    }
}

/// A running server; killed and deleted on drop.
#[derive(Debug)]
pub struct TempMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl TempMariaDb {
    /// Installs a data directory, starts the server and creates [`USER`] and
    /// [`DATABASE`].
    pub fn start() -> Result<TempMariaDb, MariaDbError> {
        for program in [SERVER, INSTALL_DB, CLIENT] {
            if !Path::new(program).exists() {
                return Err(MariaDbError::NotInstalled(program.into()));
            }
        }
        let dir = tempfile::Builder::new().prefix("plexus-mariadb-").tempdir()?;
        let data = dir.path().join("data");
        let root = running_as_root();
        let install = || {
            let _ = std::fs::remove_dir_all(&data);
            let mut install = Command::new(INSTALL_DB);
            install
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", dir.path().display()))
                .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
            if root {
                install.arg("--user=root");
            }
            run("mariadb-install-db", &mut install)
        };
        // Its bootstrap server occasionally fails on a loaded machine; once more, then
        // the error with its output.
        if install().is_err() {
            install()?;
        }
        let port = free_port()?;
        let mut server = Command::new(SERVER);
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.path().join("server.log").display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                // Test servers are thrown away: durability of the server is not under test.
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=32M",
                "--max-connections=50",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            server.arg("--user=root");
        }
        let child = server.spawn().map_err(|e| MariaDbError::Command {
            what: "start mariadbd".into(),
            detail: e.to_string(),
        })?;
        let db = TempMariaDb {
            dir,
            port,
            server: Some(child),
        };
        db.wait_ready(Duration::from_secs(60))?;
        db.root_sql(&format!(
            "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%' WITH GRANT OPTION; \
             CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;"
        ))?;
        Ok(db)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://plexus:...@127.0.0.1:PORT/plexus`.
    pub fn url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs SQL in [`DATABASE`] through the `mariadb` client (an independent reader) as
    /// [`USER`], over TCP, and returns its tab-separated output without headers or escapes.
    pub fn sql(&self, sql: &str) -> Result<String, MariaDbError> {
        let output = run(
            "mariadb",
            Command::new(CLIENT)
                .args(["--no-defaults", "-N", "-B", "--raw", "-h", "127.0.0.1"])
                .arg(format!("--port={}", self.port))
                .args(["-u", USER, DATABASE, "-e", sql])
                .env("MYSQL_PWD", PASSWORD),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned())
    }

    /// Runs SQL as the server's `root` over its socket (to create users, revoke grants).
    pub fn root_sql(&self, sql: &str) -> Result<String, MariaDbError> {
        let output = run(
            "mariadb as root",
            Command::new(CLIENT)
                .args(["--no-defaults", "-N", "-B", "-u", "root"])
                .arg(format!("--socket={}", self.dir.path().join("mysqld.sock").display()))
                .args(["-e", sql]),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned())
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), MariaDbError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.root_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(MariaDbError::NotReady {
                    port: self.port,
                    seconds: timeout.as_secs(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TempMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` to its end, failing with the command's reason.
fn run(what: &str, command: &mut Command) -> Result<Output, MariaDbError> {
    Ok(crate::process::run(what, command)?)
}
