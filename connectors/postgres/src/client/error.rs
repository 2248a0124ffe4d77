//! What can go wrong on a replication connection, and whether trying again may help.

use std::fmt;
use std::io;
use std::time::Duration;

/// A failure of the replication client: connecting, TLS, authentication, a server error
/// or an unexpected message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be opened.
    #[error(
        "cannot connect to PostgreSQL at {host}:{port}: {source}; check that the server runs, listens on that \
         address (listen_addresses, port) and that no firewall is in the way"
    )]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to an open connection failed.
    #[error("I/O error on the PostgreSQL connection: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection (it shut down, or the backend was terminated).
    #[error("the PostgreSQL server closed the connection while {during}; its log says why")]
    ConnectionClosed { during: &'static str },
    /// Something did not finish in time.
    #[error("{what} did not finish within {after:?}; check that the server is reachable and not overloaded")]
    Timeout { what: String, after: Duration },
    /// The TLS configuration or handshake failed (the message says which, and what to do).
    #[error("TLS failed: {message}")]
    Tls { message: String },
    /// The server refused SSL while `sslmode` requires it.
    #[error(
        "the server at {host}:{port} does not accept SSL connections, but sslmode={} requires SSL; set \
         sslmode=disable or sslmode=prefer, or enable ssl on the server (ssl = on with a certificate)",
        sslmode.as_str()
    )]
    TlsUnavailable {
        host: String,
        port: u16,
        sslmode: super::SslMode,
    },
    /// Authentication cannot proceed on the client's side (the server's own refusal is a
    /// [`ClientError::Server`] with SQLSTATE 28P01 or 28000).
    #[error("authentication failed: {message}")]
    Auth { message: String },
    /// Something cannot be sent to the server as it is (a NUL character in a connection
    /// option or a query, a message too long for the protocol, a query the method cannot run).
    #[error("invalid input for PostgreSQL: {message}")]
    InvalidInput { message: String },
    /// An ErrorResponse from the server.
    #[error("{}", ServerErrorDisplay { severity, code, message, detail, hint })]
    Server {
        /// `ERROR`, `FATAL` or `PANIC` (the untranslated severity when the server sends it).
        severity: String,
        /// The SQLSTATE, e.g. `42704` (undefined object).
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// The server sent something the protocol does not allow at this point.
    #[error(
        "unexpected data from the PostgreSQL server: {0}; the connection cannot be trusted any more: \
         reconnect, and report it if it happens again"
    )]
    Protocol(String),
}

impl ClientError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether reconnecting later may succeed without anyone changing anything: lost
    /// connections, timeouts, a server shutting down or starting, too many connections,
    /// a replication slot still held by a consumer that is going away.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Io(_)
            | ClientError::ConnectionClosed { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Server { code, .. } => is_transient_sqlstate(code),
            ClientError::Tls { .. }
            | ClientError::TlsUnavailable { .. }
            | ClientError::Auth { .. }
            | ClientError::InvalidInput { .. }
            | ClientError::Protocol(_) => false,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> ClientError {
        ClientError::Protocol(message.into())
    }
}

/// SQLSTATEs after which the same request may succeed later.
fn is_transient_sqlstate(code: &str) -> bool {
    // Class 08: connection exception; class 53: insufficient resources (53300 too many
    // connections, 53100 disk full, 53200 out of memory).
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            // admin_shutdown, crash_shutdown, cannot_connect_now (starting up or in recovery)
            "57P01" | "57P02" | "57P03"
            // serialization_failure, deadlock_detected
            | "40001" | "40P01"
            // object_in_use: "replication slot ... is active for PID ...", typically the
            // previous consumer's walsender that has not noticed its client is gone yet.
            | "55006"
        )
}

/// `ERROR 42704: message (detail: ...) (hint: ...)`.
struct ServerErrorDisplay<'a> {
    severity: &'a str,
    code: &'a str,
    message: &'a str,
    detail: &'a Option<String>,
    hint: &'a Option<String>,
}

impl fmt::Display for ServerErrorDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        for (label, value) in [("detail", self.detail), ("hint", self.hint)] {
            if let Some(value) = value {
                write!(f, " ({label}: {value})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, hint: Option<&str>) -> ClientError {
        ClientError::Server {
            severity: "ERROR".to_owned(),
            code: code.to_owned(),
            message: "replication slot \"x\" does not exist".to_owned(),
            detail: None,
            hint: hint.map(str::to_owned),
        }
    }

    #[test]
    fn server_error_display_names_severity_code_and_hint() {
        assert_eq!(
            server("42704", Some("create it first")).to_string(),
            "ERROR 42704: replication slot \"x\" does not exist (hint: create it first)"
        );
        assert_eq!(
            server("42704", None).to_string(),
            "ERROR 42704: replication slot \"x\" does not exist"
        );
    }

    #[test]
    fn transient_errors() {
        assert!(server("57P01", None).is_transient());
        assert!(server("53300", None).is_transient());
        assert!(server("08006", None).is_transient());
        assert!(!server("28P01", None).is_transient());
        assert!(!server("42601", None).is_transient());
        assert!(ClientError::ConnectionClosed { during: "reading" }.is_transient());
        assert!(!ClientError::Auth { message: String::new() }.is_transient());
        assert_eq!(server("42704", None).sqlstate(), Some("42704"));
        assert_eq!(ClientError::protocol("x").sqlstate(), None);
    }
}
