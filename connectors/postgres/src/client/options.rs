//! How to reach the server: [`ConnectOptions`] and [`SslMode`], with libpq's meanings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Whether and how to use TLS, as libpq's `sslmode` (without `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP; SSL is never asked for.
    Disable,
    /// TLS if the server accepts it, plain TCP if it refuses SSL. Like libpq, the
    /// certificate is only checked (as with `VerifyCa`) when `sslrootcert` is set; unlike
    /// libpq, a failed TLS handshake is an error, not a retry in plain TCP.
    #[default]
    Prefer,
    /// TLS or fail. Like libpq, the certificate is only checked (as with `VerifyCa`) when
    /// `sslrootcert` is set: encryption without authentication of the server otherwise.
    Require,
    /// TLS, with a certificate issued by a trusted CA (any host name).
    VerifyCa,
    /// TLS, with a certificate issued by a trusted CA and valid for `host` (a DNS name, or
    /// an IP address matched against the certificate's IP address names).
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ParseSslModeError;

    fn from_str(text: &str) -> Result<SslMode, ParseSslModeError> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(ParseSslModeError(text.to_owned())),
        }
    }
}

/// Text that is not one of the accepted `sslmode` values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an sslmode: expected one of disable, prefer, require, verify-ca, verify-full")]
pub struct ParseSslModeError(String);

/// Where and as whom to connect. `Debug` does not show the password.
#[derive(Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Needed unless the server trusts the client without one (`trust` in pg_hba.conf).
    pub password: Option<String>,
    pub database: String,
    pub sslmode: SslMode,
    /// PEM file with the CA certificate(s) to trust (libpq's sslrootcert); when None, the webpki roots.
    pub sslrootcert: Option<PathBuf>,
    /// Shown in `pg_stat_activity` and `pg_stat_replication`; not sent when empty.
    pub application_name: String,
    /// Bounds opening the TCP connection, the TLS handshake and authentication together.
    pub connect_timeout: Duration,
    /// Session settings sent in the startup packet (`options=-c name=value ...`), e.g. ("DateStyle","ISO"), ("TimeZone","UTC").
    pub settings: Vec<(String, String)>,
}

impl Default for ConnectOptions {
    /// libpq's defaults where it has them: `localhost:5432`, database and user
    /// `postgres`, `sslmode=prefer`; a 10 s connect timeout.
    fn default() -> ConnectOptions {
        ConnectOptions {
            host: "localhost".to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: None,
            database: "postgres".to_owned(),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "plexus".to_owned(),
            connect_timeout: Duration::from_secs(10),
            settings: Vec::new(),
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("settings", &self.settings)
            .finish()
    }
}

impl ConnectOptions {
    /// The parameters of the startup packet: for a logical replication walsender that
    /// also accepts SQL (`replication=database`) when `replication`, else for an
    /// ordinary session.
    pub(crate) fn startup_parameters(&self, replication: bool) -> Vec<(&'static str, String)> {
        let mut parameters = vec![("user", self.user.clone()), ("database", self.database.clone())];
        if replication {
            parameters.push(("replication", "database".to_owned()));
        }
        parameters.push(("client_encoding", "UTF8".to_owned()));
        if !self.application_name.is_empty() {
            parameters.push(("application_name", self.application_name.clone()));
        }
        if !self.settings.is_empty() {
            parameters.push(("options", command_line_options(&self.settings)));
        }
        parameters
    }
}

/// `-c name=value -c ...`, escaped as the server splits it (`pg_split_opts`): arguments
/// are separated by spaces, and a backslash makes the next character literal.
fn command_line_options(settings: &[(String, String)]) -> String {
    let mut options = String::new();
    for (name, value) in settings {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str("-c ");
        for c in name.chars().chain(std::iter::once('=')).chain(value.chars()) {
            if c.is_ascii_whitespace() || c == '\\' {
                options.push('\\');
            }
            options.push(c);
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_round_trips_and_rejects_unknown_values() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
        let error = "allow".parse::<SslMode>().unwrap_err().to_string();
        assert!(error.contains("`allow`") && error.contains("verify-full"), "{error}");
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[test]
    fn debug_hides_the_password() {
        let options = ConnectOptions {
            password: Some("s3cret".to_owned()),
            ..ConnectOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn settings_are_escaped_like_libpq_options() {
        let settings = vec![
            ("DateStyle".to_owned(), "ISO, DMY".to_owned()),
            ("search_path".to_owned(), r"a\b".to_owned()),
        ];
        assert_eq!(
            command_line_options(&settings),
            r"-c DateStyle=ISO,\ DMY -c search_path=a\\b"
        );
        let options = ConnectOptions {
            settings,
            ..ConnectOptions::default()
        };
        let parameters = options.startup_parameters(true);
        assert!(parameters.contains(&("replication", "database".to_owned())));
        assert!(parameters.iter().any(|(name, _)| *name == "options"));
    }
}
