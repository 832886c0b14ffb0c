//! Relays bytes both ways between two TCP sockets until both directions
//! have ended, passing each side's half-close (a shutdown of its writes)
//! on to the other side.
//!
//! Each direction starts by copying through a buffer of its own. For
//! request/response traffic that is one read and one write per message,
//! and a read shorter than the buffer tells tokio the socket is drained,
//! so no read comes back empty. Once a read fills the whole buffer the
//! direction is carrying bulk data, and it switches to splice(2) through a
//! pipe of its own: the kernel moves the received pages into the pipe and
//! on to the other socket without copying them through user space. This is
//! the choice HAProxy's `option splice-auto` makes (HAProxy configuration
//! manual, "option splice-auto"; Linux splice(2)).
//!
//! Ownership: the buffer and the pipe belong to their direction's future,
//! so they are freed when the direction ends, fails or is dropped with the
//! connection. Without a pipe to be had (no descriptors left) a direction
//! keeps copying.

use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Bytes buffered each way while copying: large enough that a bulk
/// transfer fills it and moves on to splicing.
const COPY_BUFFER: usize = 32 * 1024;

/// Bytes asked of one splice into the pipe: a pipe's default capacity.
const SPLICE_CHUNK: usize = 64 * 1024;

/// What one direction moved, by how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub copied: u64,
    pub spliced: u64,
}

/// Relays until both directions have ended; returns what went from the
/// client to the upstream, then back. Stops at the first error either way.
pub async fn relay(client: &mut TcpStream, upstream: &mut TcpStream) -> io::Result<(Moved, Moved)> {
    let (mut client_reads, mut client_writes) = client.split();
    let (mut upstream_reads, mut upstream_writes) = upstream.split();
    tokio::try_join!(
        one_way(&mut client_reads, &mut upstream_writes),
        one_way(&mut upstream_reads, &mut client_writes)
    )
}

/// Moves bytes from `from` to `to` until `from` closes, then shuts down
/// `to`'s writes.
async fn one_way(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>) -> io::Result<Moved> {
    let mut moved = Moved::default();
    let mut buffer = vec![0; COPY_BUFFER];
    let pipe = loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            to.shutdown().await?;
            return Ok(moved);
        }
        to.write_all(&buffer[..read]).await?;
        moved.copied += read as u64;
        if read == buffer.len() {
            // Retried at each full read while descriptors are short.
            if let Ok(pipe) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC) {
                break pipe;
            }
        }
    };
    drop(buffer);
    loop {
        let spliced = splice_through(from.as_ref(), &pipe, to.as_ref()).await?;
        if spliced == 0 {
            to.shutdown().await?;
            return Ok(moved);
        }
        moved.spliced += spliced as u64;
    }
}

/// Splices what `from` has (up to a pipe's worth) into the pipe, then all
/// of it out to `to`; returns how much, 0 when `from` has closed. The pipe
/// is empty again on return, so the next splice in never waits on it.
async fn splice_through(
    from: &TcpStream,
    (pipe_out, pipe_in): &(OwnedFd, OwnedFd),
    to: &TcpStream,
) -> io::Result<usize> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let received = loop {
        from.readable().await?;
        match from.try_io(Interest::READABLE, || Ok(splice(from, None, pipe_in, None, SPLICE_CHUNK, flags)?))
        {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            outcome => break outcome?,
        }
    };
    let mut left = received;
    while left > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || Ok(splice(pipe_out, None, to, None, left, flags)?)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => left -= sent?,
        }
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of sockets on 127.0.0.1.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    /// A relay between two fresh connections: the client's end, the
    /// backend's end, and the relay's task.
    async fn relayed() -> (TcpStream, TcpStream, tokio::task::JoinHandle<io::Result<(Moved, Moved)>>) {
        let (client_side, mut relay_client) = socket_pair().await;
        let (mut relay_upstream, backend_side) = socket_pair().await;
        let relaying = tokio::spawn(async move { relay(&mut relay_client, &mut relay_upstream).await });
        (client_side, backend_side, relaying)
    }

    /// Bytes that differ from one offset to the next, so a lost, repeated
    /// or reordered chunk shows.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn small_messages_are_copied_and_half_close_passes_on() {
        let (mut client, mut backend, relay) = relayed().await;
        let mut answer = [0; 5];
        for _ in 0..3 {
            client.write_all(b"ping").await.unwrap();
            let mut asked = [0; 4];
            backend.read_exact(&mut asked).await.unwrap();
            assert_eq!(&asked, b"ping");
            backend.write_all(b"pong!").await.unwrap();
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"pong!");
        }
        client.shutdown().await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(60), backend.read(&mut answer));
        assert_eq!(closed.await.expect("the client's FIN reached the backend").unwrap(), 0);
        backend.write_all(b"bye").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye", "the backend could still answer after the client's half-close");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!(up, Moved { copied: 12, spliced: 0 });
        assert_eq!(down, Moved { copied: 18, spliced: 0 });
    }

    #[tokio::test]
    async fn bulk_both_ways_is_spliced_intact_and_half_close_passes_on() {
        const BULK: usize = 6 * 1024 * 1024;
        let (mut client, mut backend, relay) = relayed().await;
        let (upload, download) = (pattern(BULK, 1), pattern(BULK, 2));
        // The backend answers only once the upload's end (the client's FIN,
        // passed on through the pipe's direction) has reached it.
        let answer = download.clone();
        let backend = tokio::spawn(async move {
            let mut received = Vec::new();
            backend.read_to_end(&mut received).await.unwrap();
            backend.write_all(&answer).await.unwrap();
            backend.shutdown().await.unwrap();
            received
        });
        let exchange = async {
            client.write_all(&upload).await.unwrap();
            client.shutdown().await.unwrap();
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        };
        // A direction that never passes its close on fails here, not hangs.
        let received_down = tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
            .await
            .expect("the backend saw the upload end and answered");
        let received_up = backend.await.unwrap();
        assert!(received_up == upload, "upload arrived changed ({} of {BULK} bytes)", received_up.len());
        assert!(
            received_down == download,
            "download arrived changed ({} of {BULK} bytes)",
            received_down.len()
        );
        let (up, down) = relay.await.unwrap().unwrap();
        for moved in [up, down] {
            assert_eq!(moved.copied + moved.spliced, BULK as u64);
            assert!(moved.spliced > moved.copied, "bulk went mostly through the pipe: {moved:?}");
        }
    }
}
