//! A throw-away PostgreSQL cluster with logical replication enabled.
//!
//! `initdb` refuses to run as root, and tests here often do: the cluster then belongs
//! to the `postgres` system user that Debian's package creates, and every server
//! command runs as that user (`runuser`).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{free_port, running_as_root};

/// The PostgreSQL major version the tests use (Debian 12's).
pub const VERSION: u32 = 15;

/// The superuser of every test cluster, and its password.
pub const USER: &str = "plexus";
pub const PASSWORD: &str = "plexus-test";

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("PostgreSQL {VERSION} is not installed ({0} is missing): run scripts/setup-postgres")]
    NotInstalled(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server on port {port} did not accept connections within {seconds} s; its log:\n{log}")]
    NotReady { port: u16, seconds: u64, log: String },
}

impl From<crate::process::CommandFailed> for PostgresError {
    fn from(failed: crate::process::CommandFailed) -> Self {
        PostgresError::Command {
            what: failed.what,
            detail: failed.detail,
        }
    }
}

/// A running cluster; stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// The system user running the server, when the tests run as root.
    owner: Option<&'static str>,
}

impl TempPostgres {
    /// Starts a new cluster with `wal_level = logical` on a free loopback port.
    pub fn start() -> Result<TempPostgres, PostgresError> {
        Self::start_with(&[])
    }

    /// Like [`TempPostgres::start`], with extra `postgresql.conf` lines.
    pub fn start_with(settings: &[&str]) -> Result<TempPostgres, PostgresError> {
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{VERSION}/bin"));
        if !bin.join("postgres").exists() {
            return Err(PostgresError::NotInstalled(bin.join("postgres")));
        }
        let owner = running_as_root().then_some("postgres");
        let dir = tempfile::Builder::new().prefix("plexus-pg-").tempdir()?;
        if let Some(owner) = owner {
            run(
                "chown the cluster directory",
                Command::new("chown").arg(owner).arg(dir.path()),
            )?;
        }
        let data = dir.path().join("data");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD)?;
        if let Some(owner) = owner {
            run(
                "chown the password file",
                Command::new("chown").arg(owner).arg(&password_file),
            )?;
        }
        let port = free_port()?;
        let cluster = TempPostgres { dir, port, bin, owner };
        cluster.server_command(
            "initdb",
            cluster
                .command("initdb")
                .args([
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "-U",
                    USER,
                ])
                .arg(format!("--pwfile={}", password_file.display()))
                .arg("-D")
                .arg(&data),
        )?;
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("port = {port}"),
            format!("unix_socket_directories = '{}'", cluster.dir.path().display()),
            "wal_level = logical".to_owned(),
            "max_replication_slots = 20".to_owned(),
            "max_wal_senders = 20".to_owned(),
            // Test clusters are thrown away: durability of the server is not under test.
            "fsync = off".to_owned(),
            "synchronous_commit = off".to_owned(),
            "full_page_writes = off".to_owned(),
        ];
        conf.extend(settings.iter().map(|s| (*s).to_owned()));
        let mut text = std::fs::read_to_string(data.join("postgresql.conf"))?;
        text.push('\n');
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(data.join("postgresql.conf"), text)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\nlocal all all scram-sha-256\n",
        )?;
        cluster.server_command(
            "pg_ctl start",
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.log_path())
                .args(["-w", "-t", "60", "start"]),
        )?;
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Like [`TempPostgres::start_with`], with TLS on: `cert_pem` (the server certificate,
    /// then any intermediates) and `key_pem` (its private key) are written into the
    /// cluster's directory, the key readable by the server's user only (PostgreSQL refuses
    /// it otherwise), and the server restarts with `ssl = on` using them, so that a bad
    /// certificate or key fails here, with the server's log.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str, settings: &[&str]) -> Result<TempPostgres, PostgresError> {
        use std::os::unix::fs::PermissionsExt;

        let cluster = Self::start_with(settings)?;
        let cert = cluster.dir.path().join("server.crt");
        let key = cluster.dir.path().join("server.key");
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        if let Some(owner) = cluster.owner {
            run(
                "chown the TLS certificate and key",
                Command::new("chown").arg(owner).arg(&cert).arg(&key),
            )?;
        }
        let conf = cluster.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ));
        std::fs::write(&conf, text)?;
        cluster.server_command(
            "pg_ctl restart with ssl = on",
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(cluster.data_dir())
                .arg("-l")
                .arg(cluster.log_path())
                .args(["-w", "-t", "60", "-m", "fast", "restart"]),
        )?;
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://plexus:...@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL through `psql` (an independent client) and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, PostgresError> {
        let output = run(
            "psql",
            Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", USER, "-d", database, "-c", sql])
                .env("PGPASSWORD", PASSWORD),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned())
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.owner {
            Some(owner) => {
                let mut command = Command::new("runuser");
                command.args(["-u", owner, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn server_command(&self, what: &str, command: &mut Command) -> Result<Output, PostgresError> {
        run(what, command).map_err(|e| match e {
            PostgresError::Command { what, detail } => PostgresError::Command {
                what,
                detail: format!("{detail}\nserver log:\n{}", self.log()),
            },
            other => other,
        })
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), PostgresError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.psql("postgres", "select 1").is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PostgresError::NotReady {
                    port: self.port,
                    seconds: timeout.as_secs(),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
    }
}

/// Runs `command` to its end, failing with the command's reason.
fn run(what: &str, command: &mut Command) -> Result<Output, PostgresError> {
    Ok(crate::process::run(what, command)?)
}
