//! `plexus-connector-postgres`: change data capture from PostgreSQL.
//!
//! The `postgres-cdc` source ([`PostgresCdcFactory`]): a consistent snapshot of the
//! chosen tables, then every committed change read from a logical replication slot with
//! the built-in `pgoutput` plugin, acknowledged to the server only once durable in the
//! log; tables can be read again while streaming, on request. Underneath:
//!
//! - [`client`]: a thin replication-protocol client (TLS, SCRAM) on `postgres-protocol`.
//! - [`types`]: PostgreSQL values in their text form to JSON, and their Arrow types.
//!
//! and the protocol decoder, which does no I/O (bytes in, typed values out), so that it
//! can be tested exhaustively without a server:
//!
//! - [`replication`]: the CopyData payloads of the streaming replication protocol after
//!   `START_REPLICATION ... LOGICAL`: WAL data and keepalives from the server, standby
//!   status updates to it; the [`Lsn`](replication::Lsn) and
//!   [`PgTimestamp`](replication::PgTimestamp) types.
//! - [`pgoutput`]: the logical replication messages inside the WAL data (protocol versions
//!   1 and 2, including streamed in-progress transactions).
//!
//! ```
//! use bytes::Bytes;
//! use plexus_connector_postgres::pgoutput::{Decoder, Message};
//! use plexus_connector_postgres::replication::ReplicationMessage;
//!
//! let mut payload = vec![b'w']; // XLogData
//! payload.extend_from_slice(&[0; 24]); // WAL start, WAL end, send time
//! payload.push(b'B'); // pgoutput Begin
//! payload.extend_from_slice(&0x16B3748_u64.to_be_bytes()); // final LSN
//! payload.extend_from_slice(&0_i64.to_be_bytes()); // commit time
//! payload.extend_from_slice(&731_u32.to_be_bytes()); // xid
//!
//! let mut decoder = Decoder::new();
//! let ReplicationMessage::XLogData(data) = ReplicationMessage::decode(Bytes::from(payload))? else {
//!     unreachable!("not a keepalive")
//! };
//! let Message::Begin(begin) = decoder.decode(data.data)? else { unreachable!("a Begin") };
//! assert_eq!((begin.final_lsn.to_string().as_str(), begin.xid), ("0/16B3748", 731));
//! # Ok::<(), plexus_connector_postgres::DecodeError>(())
//! ```

pub mod client;
mod error;
pub mod pgoutput;
mod reader;
pub mod replication;
mod source;
pub mod types;

pub use error::DecodeError;
pub use source::{CdcConfig, PostgresCdcFactory, SCHEMA_HEADER, SCHEMAS_TOPIC, SnapshotMode, TableName};
