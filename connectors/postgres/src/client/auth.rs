//! The start of a session: the startup packet, authentication (cleartext, MD5 or
//! SCRAM-SHA-256) and the server's parameters up to the first ReadyForQuery.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;

use super::codec::{self, AuthRequest};
use super::connection::handle_asynchronous;
use super::transport::Transport;
use super::{ClientError, ConnectOptions};

/// What the server told about the new session.
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub backend_pid: i32,
    /// `server_version`, e.g. `15.18 (Debian 15.18-1.pgdg120+1)`.
    pub server_version: String,
}

/// Sends the startup packet, authenticates, and reads up to the first ReadyForQuery.
/// `replication` asks for a walsender (`replication=database`) instead of a plain session.
pub(crate) async fn start_session(
    transport: &mut Transport,
    options: &ConnectOptions,
    replication: bool,
) -> Result<Session, ClientError> {
    let parameters = options.startup_parameters(replication);
    frontend::startup_message(
        parameters.iter().map(|(name, value)| (*name, value.as_str())),
        transport.write_buf(),
    )
    .map_err(|e| ClientError::InvalidInput {
        message: format!("the connection options cannot be sent ({e}); remove NUL characters from them"),
    })?;
    transport.flush().await?;
    authenticate(transport, options).await?;
    let mut session = Session::default();
    loop {
        let frame = transport.read_frame("starting the session").await?;
        match frame.tag {
            b'S' => {
                let (name, value) = codec::parse_parameter_status(frame.body)?;
                if name == "server_version" {
                    session.server_version = value;
                }
            }
            // The secret key only serves to cancel queries (CancelRequest), which this client
            // does not do.
            b'K' => (session.backend_pid, _) = codec::parse_backend_key_data(frame.body)?,
            b'Z' => return Ok(session),
            b'E' => return Err(codec::parse_error_response(frame.body)?),
            _ if handle_asynchronous(&frame)? => {}
            other => {
                return Err(ClientError::protocol(format!(
                    "{} while the session starts",
                    codec::describe_tag(other)
                )));
            }
        }
    }
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(transport: &mut Transport, options: &ConnectOptions) -> Result<(), ClientError> {
    let mut scram: Option<ScramSha256> = None;
    loop {
        let frame = transport.read_frame("authenticating").await?;
        match frame.tag {
            b'R' => {}
            b'E' => return Err(codec::parse_error_response(frame.body)?),
            _ if handle_asynchronous(&frame)? => continue,
            other => {
                return Err(ClientError::protocol(format!(
                    "{} instead of an authentication request",
                    codec::describe_tag(other)
                )));
            }
        }
        let out = transport.write_buf();
        match codec::parse_auth_request(frame.body)? {
            AuthRequest::Ok => return Ok(()),
            AuthRequest::CleartextPassword => {
                frontend::password_message(password(options)?.as_bytes(), out).map_err(password_error)?;
            }
            AuthRequest::Md5Password { salt } => {
                let hash = md5_hash(options.user.as_bytes(), password(options)?.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), out).map_err(password_error)?;
            }
            AuthRequest::Sasl(mechanisms) => {
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(ClientError::Auth {
                        message: format!(
                            "the server offers the SASL mechanisms {} for user `{}`, and plexus only supports \
                             {SCRAM_SHA_256}",
                            mechanisms.join(", "),
                            options.user
                        ),
                    });
                }
                // Channel binding (SCRAM-SHA-256-PLUS) is not offered: the TLS verification
                // chosen with sslmode already authenticates the server when that matters.
                let exchange = ScramSha256::new(password(options)?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), out).map_err(password_error)?;
                scram = Some(exchange);
            }
            AuthRequest::SaslContinue(data) => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| ClientError::protocol("SASLContinue before any SASL exchange started"))?;
                exchange.update(&data).map_err(|e| ClientError::Auth {
                    message: format!("the server's SCRAM-SHA-256 challenge is invalid: {e}"),
                })?;
                frontend::sasl_response(exchange.message(), out).map_err(password_error)?;
            }
            AuthRequest::SaslFinal(data) => {
                let exchange = scram
                    .as_mut()
                    .ok_or_else(|| ClientError::protocol("SASLFinal before any SASL exchange started"))?;
                exchange.finish(&data).map_err(|e| ClientError::Auth {
                    message: format!(
                        "the server's SCRAM-SHA-256 proof is invalid ({e}): it does not know the password, \
                         so it may not be the server you meant to reach"
                    ),
                })?;
                // AuthenticationOk follows; nothing to send.
                continue;
            }
            AuthRequest::Unsupported(method) => {
                return Err(ClientError::Auth {
                    message: format!(
                        "the server asks user `{}` for {method} authentication, which plexus does not support; \
                         allow scram-sha-256 (or md5 or password) for this user in pg_hba.conf",
                        options.user
                    ),
                });
            }
        }
        transport.flush().await?;
    }
}

/// The password, which the server just asked for.
fn password(options: &ConnectOptions) -> Result<&str, ClientError> {
    options.password.as_deref().ok_or_else(|| ClientError::Auth {
        message: format!(
            "the server asks for a password for user `{}`, and none is set; set `password`",
            options.user
        ),
    })
}

fn password_error(error: std::io::Error) -> ClientError {
    ClientError::InvalidInput {
        message: format!("the password cannot be sent ({error}); it must not contain NUL characters"),
    }
}
