//! [`CopyOut`]: the rows of a `COPY ... TO STDOUT`, read off the connection's buffer in
//! place.

use std::fmt;

use bytes::{Buf, Bytes};

use super::ClientError;
use super::codec::{self, Frame};
use super::connection::handle_asynchronous;
use super::transport::Transport;

/// A `COPY ... TO STDOUT` under way, from [`super::ReplicationConnection::copy_out`].
pub struct CopyOut<'a> {
    transport: &'a mut Transport,
    /// The server sent ReadyForQuery: the COPY and its command are over.
    ended: bool,
}

impl<'a> CopyOut<'a> {
    pub(crate) fn new(transport: &'a mut Transport) -> CopyOut<'a> {
        CopyOut {
            transport,
            ended: false,
        }
    }

    /// Waits for data, then hands every complete CopyData payload now buffered to
    /// `row`, in order: in the text and CSV formats, one row with its newline. False
    /// once the COPY has ended (the connection is ready for the next query); a server
    /// error ends it with [`ClientError::Server`].
    ///
    /// The payloads are borrowed from the read buffer: nothing is copied or allocated
    /// per row, and one call covers a whole socket read (many rows). Not cancel-safe
    /// once `row` has been called: a cancelled call may hand the same rows again.
    pub async fn read(&mut self, mut row: impl FnMut(&[u8])) -> Result<bool, ClientError> {
        if self.ended {
            return Ok(false);
        }
        loop {
            let buf = self.transport.buffered();
            let mut at = 0;
            let mut error = None;
            while let Some(total) = codec::frame_len(&buf[at..])? {
                let Some(message) = buf.get(at..at + total) else {
                    break;
                };
                let (tag, body) = (message[0], &message[5..]);
                at += total;
                match tag {
                    b'd' => row(body),
                    // CopyDone, then CommandComplete, then ReadyForQuery.
                    b'c' | b'C' => {}
                    b'Z' => {
                        self.ended = true;
                        break;
                    }
                    b'E' => {
                        error = Some(codec::parse_error_response(Bytes::copy_from_slice(body))?);
                    }
                    b'N' | b'S' | b'A' => {
                        handle_asynchronous(&Frame {
                            tag,
                            body: Bytes::copy_from_slice(body),
                        })?;
                    }
                    other => {
                        return Err(ClientError::protocol(format!(
                            "{} during a COPY",
                            codec::describe_tag(other)
                        )));
                    }
                }
            }
            buf.advance(at);
            // The server follows an error with ReadyForQuery: read up to it, so that
            // the connection stays usable.
            if let Some(error) = error {
                if !self.ended {
                    while self.transport.read_frame("ending a failed COPY").await?.tag != b'Z' {}
                    self.ended = true;
                }
                return Err(error);
            }
            if self.ended {
                return Ok(false);
            }
            if at > 0 {
                return Ok(true);
            }
            self.transport.read_more("reading a COPY").await?;
        }
    }
}

impl fmt::Debug for CopyOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOut")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
