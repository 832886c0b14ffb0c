//! Serving one client connection: HTTP/2 when it opens with the h2
//! preface (h2c prior knowledge, or ALPN `h2` under TLS), HTTP/1.1
//! otherwise; draining and closing when asked; and napping.
//!
//! Memory per idle connection is what decides how many a balancer holds
//! (nginx frees a keep-alive connection's buffers between requests,
//! `ngx_http_set_keepalive`; HAProxy keeps none while idle). hyper keeps
//! its read and write buffers (8–16 KiB each) for as long as it serves a
//! connection, so:
//!
//! - nothing of HTTP is built until the client's first bytes arrive: a
//!   connection that has sent nothing costs its task and socket;
//! - an HTTP/1 connection that the idle sweeper finds quiet (no request in
//!   flight, no request head begun, nothing read between two sweeps) naps:
//!   hyper is shut down gracefully (an idle hyper connection closes
//!   without writing a byte), its parts are taken back
//!   (`Connection::without_shutdown`) and dropped with their buffers, and
//!   the task waits on the bare socket, then serves the next request with
//!   a new hyper connection. Bytes hyper had buffered when it let go (a
//!   head that raced the nap) are replayed to it, and their 408 deadline
//!   keeps running while it naps.
//!
//! Because hyper is driven without its own shutdown, protocol switches
//! are spliced here too (hyper's "manual" upgrade): the 101 is written,
//! the client's side comes back with the parts and joins the backend's
//! side that the request left in [`super::upgrade::Switch`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::forward::{self, Connection};
use super::idle::{Activity, Watched, Watchlist};
use super::streams::{StreamExecutor, WithStreams};

/// Fewest bytes buffered per client connection and direction (HAProxy's
/// `tune.bufsize` is 16 KiB).
pub const MIN_BUFFER: usize = 32 * 1024;

/// How long a draining proxy keeps serving requests on open connections
/// (each answered `Connection: close`) before it closes the idle ones.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// At most this long for the goodbye (FIN, or TLS close_notify) of a
/// connection that ends.
///
/// Timers that only a drain or a close needs are boxed where they are
/// awaited: inline, each would widen every connection's task, napping or
/// not, by a timer entry.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// Most bytes the first read of a connection takes: a typical request
/// head (HAProxy reads up to its 16 KiB buffer at once).
const FIRST_READ: usize = 4 * 1024;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A listener's HTTP connection settings.
///
/// Per connection and direction at most `max_header_bytes` (at least
/// [`MIN_BUFFER`]) bytes are buffered (hyper's default is ~400 KB;
/// upstream response heads `upstream_h1::MAX_HEAD`): a client that reads
/// slowly stops the backend's body being read (backpressure), it does not
/// grow a buffer. The same bound refuses larger request heads with 431, as
/// do more than `max_headers` fields; an HTTP/2 header list is bounded by
/// `max_header_bytes` too.
#[derive(Debug, Clone)]
pub struct Builders {
    http1: http1::Builder,
    max_header_list_size: u32,
}

impl Builders {
    /// The settings of a listener with `limits`.
    pub fn new(limits: &fulcrum_config::Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .keep_alive(true)
            // Refusing half-closes makes hyper read while a request is in
            // flight, so a client that leaves cancels its request and the
            // upstream exchange (allowing them saves ~1.1K instructions
            // per keep-alive request: that read allocates a buffer).
            .half_close(false)
            .writev(false)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUFFER))
            .max_headers(limits.max_headers)
            // `head_timer` keeps heads to `header_read_timeout` and answers 408.
            .header_read_timeout(None);
        Self { http1, max_header_list_size: limits.max_header_bytes as u32 }
    }

    /// HTTP/2's settings, with an executor of the connection's own: its
    /// streams run in its task (see [`super::streams`]).
    fn http2(&self, executor: StreamExecutor) -> http2::Builder<StreamExecutor> {
        let mut http2 = http2::Builder::new(executor);
        http2.timer(TokioTimer::new()).max_header_list_size(self.max_header_list_size);
        http2
    }
}

/// A client's stream: plain TCP or TLS over it, whose socket a napping
/// connection waits on.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath.
    fn socket(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// While a TLS connection naps, rustls holds no plaintext: hyper read until
/// it would block before it went idle.
impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Serves one client connection until it closes. When its `activity`
/// asks it to close (the proxy drains, it idled out, or file descriptors
/// ran out) it stops taking new requests and lets the ones in flight
/// finish. `watchlist` checks its idle timeouts while it is open.
///
/// The returned future is what a connection's task holds for its whole
/// life, so it holds little: the socket, the connection's state and, in
/// turn, the wait for the first bytes or for the end of a nap. Serving
/// requests (hyper's connection and everything a request needs) lives in
/// a box that exists only while the connection is awake. It is built
/// without an `async fn`'s copies of its arguments.
pub fn serve<I: ClientStream>(
    io: I,
    builders: Arc<Builders>,
    connection: Arc<Connection>,
    watchlist: &Arc<Watchlist>,
    header_read_timeout: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let watching = watchlist.watch(Arc::clone(&connection.activity));
    let mut io = Watched::new(io, Arc::clone(&connection.activity), header_read_timeout);
    async move {
        let activity = &connection.activity;
        let http2 = tokio::select! {
            first = first_bytes(&mut io) => match first {
                Some(http2) => http2,
                None => return,
            },
            () = activity.close_requested().cancelled() => return,
        };
        // Boxed: hyper keeps room for one request future per connection,
        // idle or not, and moves an HTTP/2 stream's several times on its
        // way to being polled; a request's future is kilobytes, its box
        // one pointer.
        let request_connection = Arc::clone(&connection);
        let mut service =
            service_fn(move |request| Box::pin(forward::handle(request, Arc::clone(&request_connection))));
        if http2 {
            return Box::pin(serve_http2(io, &builders, service, activity)).await;
        }
        loop {
            let Some((napping, kept)) =
                Box::pin(awake_http1(io, &builders.http1, service, &connection)).await
            else {
                break;
            };
            (io, service) = (napping, kept);
            activity.set_napping(true);
            let woken = nap(&mut io, activity).await;
            activity.set_napping(false);
            if !woken {
                return Box::pin(close(io)).await;
            }
        }
        // Named here so the block owns it: the watch ends with the task.
        drop(watching);
    }
}

/// Reads the first bytes, at least up to what tells HTTP/2's preface from
/// anything else, and hands them back to be replayed to hyper. One read
/// takes up to [`FIRST_READ`] bytes, so a request head usually arrives
/// whole in the first system call. `None` when the client left first.
async fn first_bytes<I: ClientStream>(io: &mut Watched<I>) -> Option<bool> {
    // Empty, so allocation-free, until bytes come: a connection that sends
    // nothing holds no buffer.
    let mut first = Vec::new();
    let mut drained = false;
    while first.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&first) {
        let read = std::future::poll_fn(|cx| {
            // On the stack while polled, not in the connection's future;
            // uninitialised: the read writes what it fills.
            let mut room = [std::mem::MaybeUninit::uninit(); FIRST_READ];
            let mut buffer = ReadBuf::uninit(&mut room);
            let polled = std::task::ready!(Pin::new(&mut *io).poll_read(cx, &mut buffer));
            first.extend_from_slice(buffer.filled());
            std::task::Poll::Ready(polled.map(|()| buffer.remaining()))
        })
        .await;
        match read {
            Ok(room_left) if room_left < FIRST_READ => drained = room_left > 0,
            _ => return None,
        }
    }
    let http2 = first.starts_with(HTTP2_PREFACE);
    io.replay_first(first, drained, http2);
    Some(http2)
}

/// HTTP/2 until the connection ends; it never naps.
async fn serve_http2<I, S>(io: Watched<I>, builders: &Builders, service: S, activity: &Activity)
where
    I: ClientStream,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::body::ProxyBody> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let executor = StreamExecutor::default();
    let connection = builders.http2(executor.clone()).serve_connection(TokioIo::new(io), service);
    let serving = WithStreams::new(connection, executor);
    let (result, _) = drive(serving, activity, false, |s| {
        if let Some(connection) = s.connection() {
            connection.graceful_shutdown();
        }
    })
    .await;
    log_end(result.map_err(Into::into));
}

/// HTTP/1 while the connection is awake: hyper serves requests until the
/// connection naps (the socket and the service come back, and what hyper
/// had read is kept to replay) or ends (it is closed, or spliced to the
/// backend after a protocol switch).
async fn awake_http1<I, S>(
    io: Watched<I>,
    builder: &http1::Builder,
    service: S,
    connection: &Connection,
) -> Option<(Watched<I>, S)>
where
    I: ClientStream,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::body::ProxyBody> + Unpin,
    S::Future: Unpin + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let serving = AwakeHttp1(Some(Box::new(builder.serve_connection(TokioIo::new(io), service))));
    let (parts, napped) =
        match drive(serving, &connection.activity, true, AwakeHttp1::graceful_shutdown).await {
            (Ok(parts), napped) => (parts, napped),
            (Err(e), _) => {
                log_end(Err(e.into()));
                return None;
            }
        };
    let http1::Parts { io: taken, read_buf: leftover, service, .. } = parts;
    let mut io = taken.into_inner();
    if let Some(switched) = connection.switch.take() {
        // Boxed: rare, and a splice's future is larger than a nap's.
        Box::pin(switched.splice(io, &leftover)).await;
        return None;
    }
    io.replay(&leftover);
    // hyper's whole read buffer, which `leftover` is a slice of, goes now.
    drop(leftover);
    if !napped || io.closed_by_client() {
        close(io).await;
        return None;
    }
    Some((io, service))
}

/// An awake HTTP/1 connection, driven without hyper's shutdown so its
/// parts can be taken back.
struct AwakeHttp1<I, S: hyper::service::HttpService<hyper::body::Incoming>>(
    Option<Box<http1::Connection<TokioIo<Watched<I>>, S>>>,
);

impl<I, S> AwakeHttp1<I, S>
where
    I: ClientStream,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::body::ProxyBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(&mut self) {
        if let Some(connection) = &mut self.0 {
            Pin::new(&mut **connection).graceful_shutdown();
        }
    }
}

impl<I, S> Future for AwakeHttp1<I, S>
where
    I: ClientStream,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::body::ProxyBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = hyper::Result<http1::Parts<TokioIo<Watched<I>>, S>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let connection = self.0.as_mut().expect("an awake connection is not polled after it ended");
        std::task::ready!(connection.poll_without_shutdown(cx))?;
        let done = self.0.take().expect("polled just now");
        std::task::Poll::Ready(Ok(done.into_parts()))
    }
}

/// Drives `serving` until it ends. When the connection is asked to close
/// it is shut down gracefully (after a moment of `Connection: close`
/// answers if the proxy drains); when it may nap (`nap`: HTTP/1) and is
/// asked to, likewise at once. Returns its outcome and whether it ended
/// for a nap.
async fn drive<F, T, E>(
    mut serving: F,
    activity: &Activity,
    nap: bool,
    shut_down: impl Fn(&mut F),
) -> (Result<T, E>, bool)
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    // An HTTP/2 connection does not nap: letting go of hyper would send
    // GOAWAY to a client that may be about to open a stream.
    if nap {
        activity.awake();
    }
    tokio::select! {
        result = &mut serving => return (result, false),
        () = activity.close_requested().cancelled() => {}
        () = activity.nap_wanted(), if nap => {}
    }
    let napped = !activity.close_requested().is_cancelled();
    if !napped && !activity.closed_for_cause() {
        // Draining: closing a kept-alive connection at once would race the
        // request its client may be sending on it. For a moment requests
        // are still served, each answered with `Connection: close`, so
        // busy clients leave cleanly.
        activity.answer_closing();
        tokio::select! {
            result = &mut serving => return (result, false),
            () = Box::pin(tokio::time::sleep(DRAIN_LINGER)) => {}
        }
    }
    shut_down(&mut serving);
    (serving.await, napped)
}

/// Waits on the bare socket until the client sends again (`true`), or the
/// connection should close (`false`). A request head begun before the nap
/// wakes it at its deadline, to be answered 408.
async fn nap<I: ClientStream>(io: &mut Watched<I>, activity: &Activity) -> bool {
    if !io.nothing_to_replay() {
        return true;
    }
    tokio::select! {
        () = io.readable_or_head_expired() => return true,
        () = activity.close_requested().cancelled() => {}
    }
    // Draining: a request racing the close is still answered (the awake
    // connection lingers, then closes).
    !activity.closed_for_cause()
        && Box::pin(tokio::time::timeout(DRAIN_LINGER, io.readable_or_head_expired())).await.is_ok()
}

/// Says goodbye: FIN, or close_notify and FIN under TLS, unless the
/// client stopped reading.
async fn close<I: ClientStream>(mut io: Watched<I>) {
    let mut shutdown = std::pin::pin!(io.shutdown());
    // A TCP FIN goes at once; only TLS may wait for room to send its alert.
    let sent = std::future::poll_fn(|cx| std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready())).await;
    if !sent {
        let _ = Box::pin(tokio::time::timeout(CLOSE_WITHIN, shutdown)).await;
    }
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
