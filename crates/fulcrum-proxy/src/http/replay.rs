//! A client stream that hands out bytes already read before reading more:
//! the bytes read to tell HTTP/2's preface from an HTTP/1 request, and
//! what hyper had buffered when a napping connection let go of it (a
//! request head begun, or bytes after a protocol switch). It also notes
//! when the client closed its side, so a connection that ends is not
//! mistaken for one that naps.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` with bytes to replay first.
#[derive(Debug)]
pub struct Replay<I> {
    io: I,
    pending: Bytes,
    closed_by_client: bool,
}

impl<I> Replay<I> {
    /// `io` with nothing to replay.
    pub fn new(io: I) -> Self {
        Self { io, pending: Bytes::new(), closed_by_client: false }
    }

    /// Hands out `bytes` first, before what was still to replay. They are
    /// copied: hyper's leftovers are a slice of its whole read buffer.
    pub fn replay(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.pending = [bytes, &self.pending].concat().into();
        }
    }

    /// Whether nothing is left to replay.
    pub fn nothing_pending(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a read has seen the client's end of the stream.
    pub fn closed_by_client(&self) -> bool {
        self.closed_by_client
    }

    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
            this.pending.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before && buf.remaining() > 0 {
            this.closed_by_client = true;
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn replayed_bytes_come_first_then_the_stream_and_its_end() {
        let (client, server) = tokio::io::duplex(64);
        let mut replay = Replay::new(server);
        replay.replay(b"GET / ");
        let mut client = client;
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
        assert!(replay.nothing_pending());
        assert!(replay.closed_by_client());
    }

    #[tokio::test]
    async fn a_short_buffer_takes_the_replay_in_pieces() {
        let (_client, server) = tokio::io::duplex(64);
        let mut replay = Replay::new(server);
        replay.replay(b"abcdef");
        let mut piece = [0; 4];
        assert_eq!(replay.read(&mut piece).await.unwrap(), 4);
        assert_eq!(&piece, b"abcd");
        assert_eq!(replay.read(&mut piece).await.unwrap(), 2);
        assert_eq!(&piece[..2], b"ef");
        assert!(!replay.closed_by_client(), "the client has not closed");
    }
}
