//! The byte stream under a connection (plain TCP or TLS) with its read and write buffers.
//!
//! Both directions keep their bytes in buffers owned here, not in the futures, so that
//! a cancelled read or write loses nothing: reading appends to the read buffer and only
//! whole messages are taken off it; writing takes bytes off the write buffer only once
//! the socket accepted them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ClientError;
use super::codec::{self, Frame};

/// The read buffer's size: replication sends many small messages in bursts and some
/// large ones (whole rows); reading 128 KiB at a time keeps system calls few.
const READ_BUFFER_SIZE: usize = 128 * 1024;

/// Below this much free space, the read buffer grows (or is replaced) before reading.
const MIN_READ_SPACE: usize = 8 * 1024;

/// Plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Socket {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }
}

/// A socket with buffered, cancel-safe message reading and writing.
#[derive(Debug)]
pub(crate) struct Transport {
    socket: Socket,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Transport {
    pub(crate) fn new(socket: Socket) -> Transport {
        Transport {
            socket,
            read_buf: BytesMut::with_capacity(READ_BUFFER_SIZE),
            write_buf: BytesMut::with_capacity(1024),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.socket.is_tls()
    }

    /// Where to append messages for the server; [`Transport::flush`] sends them.
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// The next message from the server. Cancel-safe: a message is only taken off the
    /// buffer once complete, and what was read before a cancellation stays buffered.
    /// `during` completes "the server closed the connection while ...".
    pub(crate) async fn read_frame(&mut self, during: &'static str) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = codec::split_frame(&mut self.read_buf)? {
                return Ok(frame);
            }
            self.make_read_space()?;
            if self.socket.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ClientError::ConnectionClosed { during });
            }
        }
    }

    /// The bytes read and not taken yet, for reading messages in place.
    pub(crate) fn buffered(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Reads more bytes into the buffer (at least one), making room first.
    pub(crate) async fn read_more(&mut self, during: &'static str) -> Result<(), ClientError> {
        self.make_read_space()?;
        if self.socket.read_buf(&mut self.read_buf).await? == 0 {
            return Err(ClientError::ConnectionClosed { during });
        }
        Ok(())
    }

    /// Sends everything appended to the write buffer and flushes the socket. If cancelled,
    /// the bytes not yet sent stay queued (messages are never cut) and go out with the
    /// next call.
    pub(crate) async fn flush(&mut self) -> Result<(), ClientError> {
        while self.write_buf.has_remaining() {
            if self.socket.write_buf(&mut self.write_buf).await? == 0 {
                return Err(ClientError::ConnectionClosed {
                    during: "sending to it",
                });
            }
        }
        self.socket.flush().await?;
        Ok(())
    }

    /// Closes the sending side (a TLS close_notify, then a TCP FIN).
    pub(crate) async fn shutdown(&mut self) -> Result<(), ClientError> {
        self.socket.shutdown().await?;
        Ok(())
    }

    /// Ensures room for the rest of the current message (in one allocation, however big)
    /// or for a full-size read.
    fn make_read_space(&mut self) -> Result<(), ClientError> {
        let missing = codec::bytes_missing(&self.read_buf)?;
        let free = self.read_buf.capacity() - self.read_buf.len();
        if free < missing.max(MIN_READ_SPACE) {
            // When the messages handed out earlier have been dropped, this reuses the
            // buffer's allocation; otherwise it starts a new one and they keep the old.
            self.read_buf.reserve(missing.max(READ_BUFFER_SIZE));
        }
        Ok(())
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Socket::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
