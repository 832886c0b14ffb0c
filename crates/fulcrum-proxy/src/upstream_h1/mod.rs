//! Fulcrum's own HTTP/1.1 client for backend connections (RFC 9112).
//!
//! A request is written and its response read by the task that forwards
//! it, on a connection that task holds: no connection task, no channels
//! and no wake-ups between tasks per request (hyper's client dispatches
//! every request through a task of its own, which cost more than a third
//! of a proxied request's instructions). The request body streams out
//! while the response is read (a backend may answer before the upload
//! ends), and the response body is read by the client's side as it
//! writes, so the connection returns to its pool the moment the body ends.
//!
//! The head is parsed with `httparse` (hyper's parser), its body framed
//! as hyper frames it ([`response`]), and a connection is reused only
//! when the backend keeps it alive, the whole request went out and no
//! byte beyond the response came in — nginx's and HAProxy's rule.

mod body;
mod chunked;
mod deadline;
mod request;
mod response;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use http::request::Parts;

pub use body::Body;
pub use deadline::Deadline;
use deadline::ResponseTimer;
use request::Outgoing;
use response::Head;

use crate::request_body::{BodyError, RequestBody};
use crate::upstream::Stream;

/// Largest response head (and trailer section) accepted, as nginx's
/// default `proxy_buffer_size` limits it to a page.
pub const MAX_HEAD: usize = 8 * 1024;

/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 8 * 1024;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the backend closed the connection before answering")]
    Closed,
    #[error("the backend's response head is malformed: {0}")]
    Malformed(httparse::Error),
    #[error("the backend's response has an invalid Content-Length")]
    InvalidLength,
    #[error("the backend's response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the backend's chunked body is malformed")]
    Chunk,
    #[error("the backend closed the connection before the end of the body")]
    IncompleteBody,
    #[error("the backend switched protocols unasked")]
    UnexpectedSwitch,
    #[error("no response head before the deadline")]
    TimedOut,
    #[error("the request body ended {0} bytes short of its Content-Length")]
    ShortRequestBody(u64),
    #[error("the request body is longer than its Content-Length")]
    LongRequestBody,
    #[error(transparent)]
    RequestBody(BodyError),
}

/// A failed exchange, and whether the backend had begun to answer.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    /// Nothing of a response arrived and the request may not have been
    /// read: a request found the connection closed under it.
    pub unanswered: bool,
    /// Writing the request failed: the backend cannot have read all of it.
    pub unwritten: bool,
}

/// A connection to a backend, idle or carrying one exchange (boxed: it
/// moves between the pool, a request's future and a response body).
#[derive(Debug)]
pub struct Connection(Box<Inner>);

#[derive(Debug)]
struct Inner {
    io: Stream,
    /// Bytes read from the backend and not yet used.
    read: BytesMut,
    /// What of the current request is still to be written (its buffer
    /// is the next request's).
    outgoing: Option<Outgoing>,
    timer: ResponseTimer,
}

impl Connection {
    /// HTTP/1.1 over a connected `io`.
    pub fn new(io: Stream) -> Self {
        Self(Box::new(Inner { io, read: BytesMut::new(), outgoing: None, timer: ResponseTimer::default() }))
    }

    /// Whether it can carry another request: still open, and nothing
    /// arrived unasked (a backend's `408` before it closes, say). Polls
    /// the socket without waiting; its readiness is the reactor's, so an
    /// idle connection costs no system call here unless bytes or a FIN came.
    pub fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.0.read.is_empty() && self.poll_fill(&mut cx).is_pending()
    }

    /// Reads what the backend sent into the read buffer (`Ok(0)`: it closed).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let inner = &mut *self.0;
        if inner.read.capacity() - inner.read.len() < READ_ROOM / 8 {
            inner.read.reserve(READ_ROOM);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut inner.io), cx, &mut inner.read)
    }

    /// Writes what it can of the current request.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let inner = &mut *self.0;
        match &mut inner.outgoing {
            Some(outgoing) => outgoing.poll_write(&mut inner.io, cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Whether the current request was written to its end.
    fn request_sent(&self) -> bool {
        self.0.outgoing.as_ref().is_none_or(Outgoing::is_done)
    }

    /// Sends the request `parts` and `body` and reads the response head,
    /// which must come by `deadline` ([`Error::TimedOut`]). `parts` stay
    /// the caller's, to send again on another connection if this one
    /// turns out closed. A `101` is an answer only when `upgrade`.
    pub async fn send(
        mut self,
        parts: &mut Parts,
        body: RequestBody,
        upgrade: bool,
        deadline: Deadline,
    ) -> Result<(Head, Self), Failed> {
        let buffer = self.0.outgoing.take().map(Outgoing::into_buffer).unwrap_or_default();
        let outgoing = Outgoing::new(parts, body, buffer).map_err(|error| Failed {
            error,
            unanswered: true,
            unwritten: true,
        })?;
        self.0.outgoing = Some(outgoing);
        self.0.timer.arm(deadline);
        let method = &parts.method;
        let mut write_failed = None;
        let mut head = poll_fn(|cx| {
            if write_failed.is_none() {
                if let Poll::Ready(Err(error)) = self.poll_write(cx) {
                    if matches!(
                        error,
                        Error::RequestBody(_) | Error::ShortRequestBody(_) | Error::LongRequestBody
                    ) {
                        return Poll::Ready(Err(Failed { error, unanswered: true, unwritten: true }));
                    }
                    // The backend may have answered before it stopped
                    // reading (a 413 mid-upload): its answer is read first.
                    write_failed = Some(error);
                }
            }
            let head = match self.poll_head(cx, method) {
                Poll::Pending if self.0.timer.poll_expired(cx).is_ready() => Err(Error::TimedOut),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(head) => head,
            };
            Poll::Ready(head.map_err(|error| {
                let unanswered = self.0.read.is_empty();
                match write_failed.take() {
                    Some(error) => Failed { error, unanswered, unwritten: true },
                    None => Failed { error, unanswered, unwritten: false },
                }
            }))
        })
        .await?;
        if head.status == http::StatusCode::SWITCHING_PROTOCOLS && !upgrade {
            return Err(Failed { error: Error::UnexpectedSwitch, unanswered: false, unwritten: false });
        }
        if write_failed.is_some() {
            // What of the request went out is unknown: never reused.
            head.keep_alive = false;
            self.0.outgoing = None;
        }
        Ok((head, self))
    }

    /// Reads until a response head is complete.
    fn poll_head(&mut self, cx: &mut Context<'_>, method: &http::Method) -> Poll<Result<Head, Error>> {
        loop {
            if !self.0.read.is_empty() {
                if let Some(head) = response::parse(&mut self.0.read, method)? {
                    return Poll::Ready(Ok(head));
                }
                if self.0.read.len() > MAX_HEAD {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::Closed));
            }
        }
    }

    /// The connection after a `101`: the stream and what the backend sent
    /// beyond the head.
    pub fn into_upgraded(self) -> (Stream, BytesMut) {
        let Inner { io, read, .. } = *self.0;
        (io, read)
    }
}

/// What a backend sends, decoded as this client decodes it: the head
/// (for a HEAD request when the first byte is odd, else a GET) and its
/// framing, then a chunked body through the chunk decoder, checking that
/// it never yields more bytes than arrived.
#[cfg(feature = "fuzzing")]
pub fn decode_for_fuzzing(bytes: &[u8]) {
    let method =
        if bytes.first().is_some_and(|b| b % 2 == 1) { http::Method::HEAD } else { http::Method::GET };
    let mut buf = BytesMut::from(bytes);
    let Ok(Some(head)) = response::parse(&mut buf, &method) else { return };
    let arrived = buf.len();
    let mut decoded = 0;
    match head.framing {
        response::Framing::Empty | response::Framing::UntilClose | response::Framing::Length(_) => {}
        response::Framing::Chunked => {
            let mut state = chunked::Chunked::Size;
            while let Ok(step) = state.step(&mut buf) {
                match step {
                    chunked::Step::Data(data) => decoded += data.len(),
                    chunked::Step::Trailers(_) | chunked::Step::NeedMore => break,
                    chunked::Step::Continue => {}
                }
            }
        }
    }
    assert!(decoded <= arrived, "decoded {decoded} body bytes from {arrived}");
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use bytes::Bytes;
    use http_body::Body as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::*;

    /// A connection to a backend that reads one request head and answers
    /// it with `answer`, then keeps the connection open.
    async fn answered_with(answer: &'static [u8]) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                if far.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            far.write_all(answer).await.unwrap();
            // Held open until the client side goes.
            let _ = far.read(&mut [0; 1]).await;
        });
        Connection::new(Either::Left(near))
    }

    fn get() -> Parts {
        http::Request::get("/").header("host", "b").body(()).unwrap().into_parts().0
    }

    /// A deadline no test reaches.
    fn no_deadline() -> Deadline {
        Deadline::after(tokio::time::Instant::now(), std::time::Duration::from_secs(3600))
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_does_not_come_by_the_deadline_times_out() {
        let silent = answered_with(b"").await;
        let (start, limit) = (tokio::time::Instant::now(), std::time::Duration::from_secs(2));
        let failed = silent
            .send(&mut get(), RequestBody::Replay(None), false, Deadline::after(start, limit))
            .await
            .unwrap_err();
        assert!(matches!(failed.error, Error::TimedOut), "{:?}", failed.error);
        let waited = start.elapsed();
        assert!(waited >= limit && waited <= limit + limit / 16, "timed out after {waited:?}");
    }

    type Read = (Vec<u8>, Option<http::HeaderMap>, Option<Connection>);

    /// The body's data and trailers, and the connection if reusable.
    async fn read_all(mut body: Body) -> Result<Read, Error> {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok((data, trailers, body.into_reusable()))
    }

    #[tokio::test]
    async fn a_chunked_answer_with_trailers_streams_and_frees_its_connection() {
        let connection = answered_with(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\n",
        )
        .await;
        let (head, connection) =
            connection.send(&mut get(), RequestBody::Replay(None), false, no_deadline()).await.unwrap();
        let (data, trailers, reusable) =
            read_all(Body::response(head, connection).into_body()).await.unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert!(reusable.is_some(), "a keep-alive connection read to its end goes back to the pool");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closes_or_overfills_is_not_reused() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ] {
            let connection = answered_with(answer).await;
            let (head, connection) =
                connection.send(&mut get(), RequestBody::Replay(None), false, no_deadline()).await.unwrap();
            let (data, _, reusable) = read_all(Body::response(head, connection).into_body()).await.unwrap();
            assert_eq!(data, b"ok");
            assert!(reusable.is_none(), "reused after {:?}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn a_post_body_goes_out_with_its_length_and_a_short_body_ends_in_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        let mut parts = http::Request::post("/up").header("host", "b").body(()).unwrap().into_parts().0;
        let body = RequestBody::Replay(Some(Bytes::from_static(b"payload")));
        let sending = tokio::spawn(async move {
            let (head, connection) = Connection::new(Either::Left(near))
                .send(&mut parts, body, false, no_deadline())
                .await
                .unwrap();
            read_all(Body::response(head, connection).into_body()).await
        });
        let mut request = vec![0; 1024];
        let mut read = 0;
        while !request[..read].ends_with(b"payload") {
            read += far.read(&mut request[read..]).await.unwrap();
        }
        let request = String::from_utf8_lossy(&request[..read]).into_owned();
        assert!(request.starts_with("POST /up HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("content-length: 7\r\n"), "{request}");
        far.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nonly").await.unwrap();
        drop(far);
        let read = sending.await.unwrap();
        assert!(
            matches!(read, Err(Error::IncompleteBody)),
            "a body cut short is an error, not a short success"
        );
    }

    #[tokio::test]
    async fn a_head_larger_than_the_limit_is_refused() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        while answer.len() <= MAX_HEAD {
            answer.extend_from_slice(format!("X-Filler: {}\r\n", "0".repeat(400)).as_bytes());
        }
        let complete = [&answer[..], b"\r\n"].concat();
        // Cut off, or complete in one read: either way too large.
        for answer in [answer, complete] {
            let connection = answered_with(answer.leak()).await;
            let failed = connection
                .send(&mut get(), RequestBody::Replay(None), false, no_deadline())
                .await
                .unwrap_err();
            assert!(matches!(failed.error, Error::HeadTooLarge), "{:?}", failed.error);
            assert!(!failed.unanswered);
        }
    }
}
