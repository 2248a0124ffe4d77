//! A thin async client for PostgreSQL's replication connections.
//!
//! sqlx runs the ordinary SQL; it cannot open a connection with `replication=database`,
//! which logical replication needs (CREATE_REPLICATION_SLOT, START_REPLICATION). This
//! client does only that: connect (TLS per `sslmode` as libpq, SCRAM-SHA-256, MD5 or
//! cleartext passwords), run simple-protocol commands, and stream the CopyData messages
//! of a started slot. Decoding them is [`crate::replication`]'s job. On an ordinary
//! session ([`ReplicationConnection::connect_sql`]) it also reads `COPY ... TO STDOUT`
//! ([`CopyOut`]): the snapshot's bulk reads, row by row straight off the read buffer.
//!
//! ```no_run
//! # async fn run() -> Result<(), plexus_connector_postgres::client::ClientError> {
//! use plexus_connector_postgres::client::{ConnectOptions, ReplicationConnection, SslMode};
//!
//! let options = ConnectOptions {
//!     host: "db.example.com".to_owned(),
//!     user: "replicator".to_owned(),
//!     password: Some("secret".to_owned()),
//!     database: "shop".to_owned(),
//!     sslmode: SslMode::VerifyFull,
//!     ..ConnectOptions::default()
//! };
//! let mut connection = ReplicationConnection::connect(&options).await?;
//! let system = connection.simple_query("IDENTIFY_SYSTEM").await?;
//! let mut stream = connection
//!     .start_replication("START_REPLICATION SLOT plexus LOGICAL 0/0 (proto_version '1', publication_names 'p')")
//!     .await?;
//! while let Some(payload) = stream.recv().await? {
//!     // plexus_connector_postgres::replication::ReplicationMessage::decode(payload)
//! #   let _ = (payload, &system);
//! }
//! stream.finish().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Files by role: `options` (what to connect to), `transport` (TCP or TLS, with
//! cancel-safe buffers), `tls` (certificate checks per sslmode), `auth` (startup and
//! passwords), `codec` (the server's messages, no I/O), `connection` and `stream` (the
//! two phases of a session), `copy` (reading a COPY), `error`.

mod auth;
mod codec;
mod connection;
mod copy;
mod error;
mod options;
mod stream;
mod tls;
mod transport;

pub use connection::ReplicationConnection;
pub use copy::CopyOut;
pub use error::ClientError;
pub use options::{ConnectOptions, ParseSslModeError, SslMode};
pub use stream::ReplicationStream;
