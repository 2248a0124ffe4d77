//! [`ReplicationConnection`]: opening a walsender session and running commands on it.

use std::fmt;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::codec::{self, Frame};
use super::transport::{Socket, Transport};
use super::{ClientError, ConnectOptions, CopyOut, ReplicationStream, SslMode, auth, tls};

/// A connection opened with `replication=database` (logical replication walsender that
/// also accepts simple SQL), or with [`ReplicationConnection::connect_sql`] an ordinary
/// session, which reads tables with [`ReplicationConnection::copy_out`].
pub struct ReplicationConnection {
    transport: Transport,
    backend_pid: i32,
    server_version_num: u32,
}

impl ReplicationConnection {
    /// Connects, negotiates TLS as `options.sslmode` says, and authenticates, all within
    /// `options.connect_timeout` (a zero timeout waits forever, as in libpq).
    pub async fn connect(options: &ConnectOptions) -> Result<ReplicationConnection, ClientError> {
        Self::open(options, true).await
    }

    /// Connects like [`ReplicationConnection::connect`], for an ordinary session (no
    /// walsender: it takes no `max_wal_senders` slot and runs any SQL).
    pub async fn connect_sql(options: &ConnectOptions) -> Result<ReplicationConnection, ClientError> {
        Self::open(options, false).await
    }

    async fn open(options: &ConnectOptions, replication: bool) -> Result<ReplicationConnection, ClientError> {
        let after = options.connect_timeout;
        if after.is_zero() {
            return Self::connect_unbounded(options, replication).await;
        }
        tokio::time::timeout(after, Self::connect_unbounded(options, replication))
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    what: format!(
                        "connecting to PostgreSQL at {}:{} (TCP, TLS and authentication)",
                        options.host, options.port
                    ),
                    after,
                })
            })
    }

    /// Runs a simple-protocol query: a replication command (`IDENTIFY_SYSTEM`,
    /// `CREATE_REPLICATION_SLOT ... LOGICAL pgoutput EXPORT_SNAPSHOT`, ...) or plain SQL.
    /// Returns the rows of the last result set, each column as text (`None` for NULL);
    /// with several statements, those of the last statement that returned rows.
    ///
    /// Always reads up to ReadyForQuery, so a server error ([`ClientError::Server`])
    /// leaves the connection usable. Not cancel-safe: a cancelled call leaves the
    /// connection in the middle of a query; drop it.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ClientError> {
        self.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.transport.read_frame("running a query").await?;
            match frame.tag {
                b'T' => rows.clear(),
                b'D' => rows.push(codec::parse_data_row(frame.body)?),
                b'C' | b'I' => {}
                b'E' => {
                    let server_error = codec::parse_error_response(frame.body)?;
                    if is_fatal(&server_error) {
                        // The server closes the connection now: there is no ReadyForQuery.
                        return Err(server_error);
                    }
                    error.get_or_insert(server_error);
                }
                b'Z' => {
                    return match error {
                        Some(error) => Err(error),
                        None => Ok(rows),
                    };
                }
                // A COPY: refused, and its data skipped, so that the connection stays usable.
                b'G' | b'H' | b'W' => {
                    if frame.tag == b'G' {
                        frontend::copy_fail(
                            "plexus simple_query does not send COPY data",
                            self.transport.write_buf(),
                        )
                        .map_err(|e| ClientError::protocol(e.to_string()))?;
                    } else if frame.tag == b'W' {
                        frontend::copy_done(self.transport.write_buf());
                    }
                    self.transport.flush().await?;
                    error.get_or_insert(ClientError::InvalidInput {
                        message: format!(
                            "`{sql}` starts a COPY, which simple_query does not run; use start_replication for \
                             START_REPLICATION, copy_out for COPY ... TO STDOUT"
                        ),
                    });
                }
                b'd' | b'c' => {}
                _ if handle_asynchronous(&frame)? => {}
                other => {
                    return Err(ClientError::protocol(format!(
                        "{} in the answer to a simple query",
                        codec::describe_tag(other)
                    )));
                }
            }
        }
    }

    /// Sends `sql`, a `COPY ... TO STDOUT`, and expects CopyOutResponse; the rows then
    /// come from [`CopyOut::read`]. The connection is usable again once that returns
    /// false (the COPY ended); after an error, drop it.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>, ClientError> {
        self.send_query(sql).await?;
        loop {
            let frame = self.transport.read_frame("starting a COPY").await?;
            match frame.tag {
                b'H' => return Ok(CopyOut::new(&mut self.transport)),
                b'E' => {
                    let error = codec::parse_error_response(frame.body)?;
                    // Up to ReadyForQuery, so that the connection stays usable.
                    if !is_fatal(&error) {
                        while self.transport.read_frame("ending a failed COPY").await?.tag != b'Z' {}
                    }
                    return Err(error);
                }
                _ if handle_asynchronous(&frame)? => {}
                other => {
                    return Err(ClientError::protocol(format!(
                        "`{sql}` was answered with {} instead of CopyOutResponse; copy_out expects a COPY ... TO \
                         STDOUT",
                        codec::describe_tag(other)
                    )));
                }
            }
        }
    }

    /// The process id of the server's walsender for this connection.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// From the server_version ParameterStatus, e.g. 150018 for "15.18" (major*10000 + minor), like server_version_num.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Sends `sql` (a START_REPLICATION command) and expects CopyBothResponse.
    pub async fn start_replication(mut self, sql: &str) -> Result<ReplicationStream, ClientError> {
        self.send_query(sql).await?;
        loop {
            let frame = self.transport.read_frame("starting replication").await?;
            match frame.tag {
                b'W' => return Ok(ReplicationStream::new(self.transport)),
                b'E' => return Err(codec::parse_error_response(frame.body)?),
                _ if handle_asynchronous(&frame)? => {}
                other => {
                    return Err(ClientError::protocol(format!(
                        "`{sql}` was answered with {} instead of CopyBothResponse; start_replication expects a \
                         START_REPLICATION command",
                        codec::describe_tag(other)
                    )));
                }
            }
        }
    }

    /// Ends the session politely (Terminate, then closing the socket).
    pub async fn close(mut self) -> Result<(), ClientError> {
        frontend::terminate(self.transport.write_buf());
        self.transport.flush().await?;
        self.transport.shutdown().await
    }

    async fn connect_unbounded(
        options: &ConnectOptions,
        replication: bool,
    ) -> Result<ReplicationConnection, ClientError> {
        let mut transport = Transport::new(open_socket(options).await?);
        let session = auth::start_session(&mut transport, options, replication).await?;
        let server_version_num = codec::server_version_num(&session.server_version);
        debug!(
            host = %options.host,
            port = options.port,
            tls = transport.is_tls(),
            backend_pid = session.backend_pid,
            server_version = %session.server_version,
            "Connected to PostgreSQL for replication."
        );
        Ok(ReplicationConnection {
            transport,
            backend_pid: session.backend_pid,
            server_version_num,
        })
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), ClientError> {
        frontend::query(sql, self.transport.write_buf()).map_err(|e| ClientError::InvalidInput {
            message: format!("the query cannot be sent ({e}); it must not contain NUL characters"),
        })?;
        self.transport.flush().await
    }
}

impl fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("backend_pid", &self.backend_pid)
            .field("server_version_num", &self.server_version_num)
            .field("tls", &self.transport.is_tls())
            .finish_non_exhaustive()
    }
}

/// Handles the messages the server may send at any time (notices, parameter changes,
/// notifications); `false` for any other message.
pub(crate) fn handle_asynchronous(frame: &Frame) -> Result<bool, ClientError> {
    match frame.tag {
        b'N' => {
            let notice = codec::parse_error_response(frame.body.clone())?;
            debug!(notice = %notice, "PostgreSQL notice.");
        }
        b'S' => {
            let (name, value) = codec::parse_parameter_status(frame.body.clone())?;
            debug!(%name, %value, "PostgreSQL parameter changed.");
        }
        // Nothing here LISTENs; a notification would come from a stray LISTEN in SQL.
        b'A' => debug!("PostgreSQL notification ignored."),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Whether the server ends the session with this error.
fn is_fatal(error: &ClientError) -> bool {
    matches!(error, ClientError::Server { severity, .. } if severity == "FATAL" || severity == "PANIC")
}

/// Opens the TCP connection and negotiates TLS as `options.sslmode` says.
async fn open_socket(options: &ConnectOptions) -> Result<Socket, ClientError> {
    let mut tcp = TcpStream::connect((options.host.as_str(), options.port))
        .await
        .map_err(|source| ClientError::Connect {
            host: options.host.clone(),
            port: options.port,
            source,
        })?;
    // Standby status updates are small and must not wait for Nagle's algorithm.
    tcp.set_nodelay(true)?;
    if options.sslmode == SslMode::Disable {
        return Ok(Socket::Plain(tcp));
    }
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    // Exactly one byte, read from the socket itself: bytes the server might send after it
    // must go through the TLS handshake, never be taken as protocol messages (CVE-2021-23222).
    let answer = tcp.read_u8().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ClientError::ConnectionClosed {
            during: "answering the SSL request",
        },
        _ => ClientError::Io(e),
    })?;
    match answer {
        b'S' => Ok(Socket::Tls(Box::new(tls::handshake(tcp, options).await?))),
        b'N' if options.sslmode == SslMode::Prefer => Ok(Socket::Plain(tcp)),
        b'N' => Err(ClientError::TlsUnavailable {
            host: options.host.clone(),
            port: options.port,
            sslmode: options.sslmode,
        }),
        other => Err(ClientError::protocol(format!(
            "the server answered the SSL request with byte 0x{other:02x} instead of 'S' or 'N'"
        ))),
    }
}
