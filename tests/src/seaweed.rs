//! A throw-away SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one
//! process) with S3 authentication on, for the object-storage tests.
//!
//! Every port is a free loopback port, every file lives in a temporary directory, and
//! telemetry is off. The S3 gateway knows one identity, whose access key and secret the
//! harness generates, so a test with a wrong secret meets a real refusal.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `weed mini` gets to answer on its S3 port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong while starting or driving the server.
#[derive(Debug, thiserror::Error)]
pub enum SeaweedError {
    #[error("{0}")]
    NotInstalled(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("SeaweedFS did not answer on its S3 port {port} within {seconds} s; the end of its log:\n{log}")]
    NotReady { port: u16, seconds: u64, log: String },
    #[error("SeaweedFS exited while starting ({status}); the end of its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("`weed shell` {command} failed: {output}")]
    Shell { command: String, output: String },
}

/// A running `weed mini`; killed and its directory removed on drop.
#[derive(Debug)]
pub struct SeaweedFs {
    dir: tempfile::TempDir,
    weed: PathBuf,
    child: Option<Child>,
    ports: Ports,
    access_key_id: String,
    secret_access_key: String,
}

impl SeaweedFs {
    /// Starts a server on free loopback ports and waits until its S3 gateway answers.
    /// A port taken by someone else between choosing and binding it makes the server
    /// exit; the start is then tried again on other ports.
    pub fn start() -> Result<SeaweedFs, SeaweedError> {
        let weed = crate::python::weed().map_err(SeaweedError::NotInstalled)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&weed) {
                Err(SeaweedError::Exited { .. }) if attempt < 3 => continue,
                result => return result,
            }
        }
    }

    /// The S3 endpoint: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The filer's HTTP address, `http://127.0.0.1:<port>`: it serves a bucket's
    /// objects as `/buckets/<bucket>/<key>` without S3, for reading them back
    /// independently of an S3 client.
    pub fn filer_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.filer)
    }

    /// The S3 gateway's port.
    pub fn s3_port(&self) -> u16 {
        self.ports.s3
    }

    /// The access key id of the one identity the gateway accepts.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// That identity's secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Creates a bucket (`s3.bucket.create` in `weed shell`). Names follow S3's rules:
    /// 3 to 63 lower-case letters, digits, dots and hyphens.
    pub fn create_bucket(&self, name: &str) -> Result<(), SeaweedError> {
        let command = format!("s3.bucket.create -name {name}");
        let output = self.shell(&command)?;
        if output.contains(&format!("created bucket {name}")) {
            Ok(())
        } else {
            Err(SeaweedError::Shell { command, output })
        }
    }

    /// Runs one `weed shell` command against this server and returns what it printed.
    pub fn shell(&self, command: &str) -> Result<String, SeaweedError> {
        let mut child = Command::new(&self.weed)
            .arg("shell")
            .arg(format!(
                "-master=127.0.0.1:{}.{}",
                self.ports.master, self.ports.master_grpc
            ))
            .arg(format!(
                "-filer=127.0.0.1:{}.{}",
                self.ports.filer, self.ports.filer_grpc
            ))
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(command.as_bytes())?;
            stdin.write_all(b"\n")?;
        }
        let output = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(text)
        } else {
            Err(SeaweedError::Shell {
                command: command.to_owned(),
                output: text,
            })
        }
    }

    /// Kills the server at once (SIGKILL), as a crash or a lost machine would: open
    /// connections are reset and the ports stop answering. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // `weed mini` puts its gRPC sockets in /tmp whatever its flags say, and a
            // killed server cannot remove them.
            for (service, port) in self.ports.grpc() {
                let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
            }
        }
    }

    /// Freezes the server (SIGSTOP), as a hung machine: the kernel still accepts
    /// connections on its ports, but nothing reads or answers. [`SeaweedFs::kill`] and
    /// the drop still end it.
    pub fn freeze(&mut self) -> Result<(), SeaweedError> {
        let Some(child) = self.child.as_ref() else {
            return Ok(());
        };
        let status = Command::new("kill").arg("-STOP").arg(child.id().to_string()).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(SeaweedError::Io(std::io::Error::other(format!(
                "kill -STOP failed: {status}"
            ))))
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("weed.log"))
    }

    fn start_once(weed: &Path) -> Result<SeaweedFs, SeaweedError> {
        let dir = tempfile::Builder::new().prefix("plexus-weed-").tempdir()?;
        let access_key_id = format!("PLEXUS{}", random_hex(7).to_uppercase());
        let secret_access_key = random_hex(20);
        let identities = format!(
            r#"{{"identities":[{{"name":"plexus","credentials":[{{"accessKey":"{access_key_id}","secretKey":"{secret_access_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities)?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let log = std::fs::File::create(dir.path().join("weed.log"))?;
        let ports = Ports::free()?;
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"])
            .arg(format!("-s3.config={}", config.display()))
            // Like S3: writing to a missing bucket is an error, not a new bucket.
            .arg("-s3.autoCreateBucket=false")
            .args(["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .args(ports.flags())
            .arg(format!(
                "-filer.localSocket={}",
                dir.path().join("filer.sock").display()
            ))
            .arg(format!("-s3.localSocket={}", dir.path().join("s3.sock").display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut server = SeaweedFs {
            dir,
            weed: weed.to_owned(),
            child: Some(child),
            ports,
            access_key_id,
            secret_access_key,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits until the S3 gateway answers an HTTP request (any status) and the filer
    /// accepts a shell command.
    fn wait_ready(&mut self) -> Result<(), SeaweedError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(SeaweedError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if http_answers(self.ports.s3) && self.shell("s3.bucket.list").is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(SeaweedError::NotReady {
                    port: self.ports.s3,
                    seconds: START_TIMEOUT.as_secs(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every port `weed mini` listens on (the gRPC ports otherwise default to the HTTP
/// port plus 10000, which may be taken).
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

impl Ports {
    /// Ten distinct free ports: all bound at once, so the kernel hands out different
    /// ones, then released for the server.
    fn free() -> std::io::Result<Ports> {
        let listeners = (0..10)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ] = ports[..]
        else {
            return Err(std::io::Error::other("expected ten ports"));
        };
        Ok(Ports {
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        })
    }

    /// The services with a gRPC port, as `weed mini` names their sockets.
    fn grpc(&self) -> [(&'static str, u16); 5] {
        [
            ("master", self.master_grpc),
            ("volume", self.volume_grpc),
            ("filer", self.filer_grpc),
            ("s3", self.s3_grpc),
            ("admin", self.admin_grpc),
        ]
    }

    fn flags(&self) -> Vec<String> {
        vec![
            format!("-master.port={}", self.master),
            format!("-master.port.grpc={}", self.master_grpc),
            format!("-volume.port={}", self.volume),
            format!("-volume.port.grpc={}", self.volume_grpc),
            format!("-filer.port={}", self.filer),
            format!("-filer.port.grpc={}", self.filer_grpc),
            format!("-s3.port={}", self.s3),
            format!("-s3.port.grpc={}", self.s3_grpc),
            format!("-admin.port={}", self.admin),
            format!("-admin.port.grpc={}", self.admin_grpc),
        ]
    }
}

/// Whether something answers HTTP on the loopback port.
fn http_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Random hex digits from the standard library's per-process random hash keys: unique
/// enough for test credentials, without a dependency.
fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        let _ = write!(out, "{:016x}", hasher.finish());
    }
    out.truncate(bytes * 2);
    out
}
