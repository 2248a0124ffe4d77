//! [`ReplicationStream`]: the CopyBoth phase after START_REPLICATION.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use postgres_protocol::message::frontend;
use tracing::debug;

use super::ClientError;
use super::codec;
use super::connection::handle_asynchronous;
use super::transport::Transport;

/// How long [`ReplicationStream::finish`] waits for the server to end the COPY.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The replication messages of a started slot, and the way to answer them.
pub struct ReplicationStream {
    transport: Transport,
    /// The server ended the COPY: [`ReplicationStream::recv`] only returns `None` now.
    ended: bool,
}

impl ReplicationStream {
    pub(crate) fn new(transport: Transport) -> ReplicationStream {
        ReplicationStream {
            transport,
            ended: false,
        }
    }

    /// The next CopyData payload from the server (XLogData 'w' or keepalive 'k' bytes, undecoded).
    /// None when the server ends the copy (CopyDone / CommandComplete).
    ///
    /// Cancel-safe: bytes read before a cancellation stay buffered and a message is only
    /// returned once complete, so it can be used in `tokio::select!` with timers. The
    /// payload shares the read buffer's allocation (no copy).
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            // The only await: everything after it runs to completion once a frame is taken.
            let frame = self.transport.read_frame("streaming replication").await?;
            match frame.tag {
                b'd' => return Ok(Some(frame.body)),
                b'c' | b'C' => {
                    debug!("The server ended the replication stream.");
                    self.ended = true;
                    return Ok(None);
                }
                b'E' => return Err(codec::parse_error_response(frame.body)?),
                _ if handle_asynchronous(&frame)? => {}
                other => {
                    return Err(ClientError::protocol(format!(
                        "{} during replication",
                        codec::describe_tag(other)
                    )));
                }
            }
        }
    }

    /// Sends one CopyData message (a standby status update) and flushes.
    ///
    /// If cancelled, the message is not lost or cut: what the socket did not take yet
    /// goes out with the next call.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        frontend::CopyData::new(payload)
            .map_err(|e| ClientError::InvalidInput {
                message: format!("a CopyData payload of {} bytes cannot be sent: {e}", payload.len()),
            })?
            .write(self.transport.write_buf());
        self.transport.flush().await
    }

    /// Sends CopyDone and Terminate, closing politely.
    ///
    /// Between the two, waits (at most 10 s) for the server to end the COPY and the
    /// command, so that it releases the slot and sees a clean end of session rather than
    /// a reset connection. Messages still arriving meanwhile are dropped: they were not
    /// acknowledged, so the server sends them again to the next consumer of the slot.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        frontend::copy_done(self.transport.write_buf());
        self.transport.flush().await?;
        let ended = tokio::time::timeout(FINISH_TIMEOUT, self.wait_for_ready())
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    what: "ending replication (waiting for the server's ReadyForQuery after CopyDone)".to_owned(),
                    after: FINISH_TIMEOUT,
                })
            });
        let closed = self.terminate().await;
        ended.and(closed)
    }

    /// Reads up to ReadyForQuery, dropping the replication data still in flight.
    async fn wait_for_ready(&mut self) -> Result<(), ClientError> {
        loop {
            let frame = self.transport.read_frame("ending replication").await?;
            match frame.tag {
                b'Z' => return Ok(()),
                b'd' | b'c' | b'C' => {}
                b'E' => return Err(codec::parse_error_response(frame.body)?),
                _ if handle_asynchronous(&frame)? => {}
                other => {
                    return Err(ClientError::protocol(format!(
                        "{} while replication ends",
                        codec::describe_tag(other)
                    )));
                }
            }
        }
    }

    async fn terminate(&mut self) -> Result<(), ClientError> {
        frontend::terminate(self.transport.write_buf());
        self.transport.flush().await?;
        self.transport.shutdown().await
    }
}

impl fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("tls", &self.transport.is_tls())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
