//! Upstream HTTP/1.1 connections to backends, kept alive and reused.
//!
//! Idle connections live in a per-thread pool keyed by the backend's
//! address (so a backend whose weight or state changed, which the pool
//! rebuilds, keeps its warm connections, and none are stranded), so a
//! checkout or checkin touches no lock and no state shared across
//! threads (the habit of nginx's per-worker `keepalive` cache). A
//! connection is checked in only once its response body has been read to
//! the end; a checkout waits for hyper to report it ready and skips any
//! that closed or sat idle longer than the pool's idle timeout. Every
//! [`SWEEP_EVERY`] checkins a thread drops its expired connections, which
//! also releases those of removed backends; so does a worker going idle
//! ([`sweep_when_idle`], at most every [`IDLE_SWEEP_EVERY`]), so that a
//! connection the backend closed is closed here too, not left in
//! `CLOSE_WAIT` until traffic resumes. A thread keeps [`KEEP_WARM`]
//! idle connections per backend for itself; a burst's surplus, up to the
//! pool's `max_idle_per_backend`, is shared by all threads for a few
//! seconds ([`crate::upstream_overflow`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::backend::Backend;
use crate::error::UpstreamError;
use crate::proxy_protocol::Endpoints;
use crate::request_body::RequestBody;
use crate::upstream_h1::{self, Connection, Deadline};
use crate::upstream_tls::Offer;

/// How many checkins between two sweeps of a thread's idle connections.
const SWEEP_EVERY: u32 = 1024;

/// The least time between two sweeps of a worker that goes idle.
const IDLE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Where to send a request and how long to wait for what.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend's address key: its idle connections' key.
    pub backend_key: u64,
    /// Its address.
    pub address: std::net::SocketAddr,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle connection may be reused.
    pub idle_timeout: Duration,
    /// Idle connections kept per backend on this thread.
    pub max_idle: usize,
    /// The PROXY header each new connection opens with
    /// (`send_proxy_protocol`): its version and the client it names,
    /// written out only when a connection is opened.
    pub proxy_header: Option<(fulcrum_config::ProxyVersion, Endpoints)>,
    /// TLS to the backend, when the pool configures it.
    pub tls: Option<Arc<crate::upstream_tls::TlsClient>>,
}

impl Target {
    /// The target for `backend` with `pool`'s settings.
    pub fn new(backend: &Backend, pool: &crate::pool::Pool) -> Self {
        Self {
            backend_key: backend.address_key,
            address: backend.address,
            connect_timeout: pool.timeouts.connect,
            idle_timeout: pool.timeouts.idle,
            max_idle: pool.max_idle_per_backend,
            proxy_header: None,
            tls: pool.tls.clone(),
        }
        .keyed_by_tls()
    }

    /// Connections over TLS are pooled apart from clear ones to the same
    /// address, and from those of other TLS settings.
    #[inline]
    fn keyed_by_tls(mut self) -> Self {
        if let Some(tls) = &self.tls {
            self.backend_key = fulcrum_balance::mix64(self.backend_key ^ tls.id.rotate_left(32));
        }
        self
    }

    /// The target for `backend` as a connection of the client at
    /// `endpoints`: with `send_proxy_protocol`, its connections open with a
    /// header naming the client and are reused only by that client's
    /// connection (HAProxy's `send-proxy` connections are private too).
    #[inline]
    pub fn for_client(backend: &Backend, pool: &crate::pool::Pool, endpoints: &Endpoints) -> Self {
        let target = Self::new(backend, pool);
        match pool.config.send_proxy_protocol {
            None => target,
            Some(version) => target.private_to(version, endpoints),
        }
    }

    #[cold]
    fn private_to(mut self, version: fulcrum_config::ProxyVersion, endpoints: &Endpoints) -> Self {
        self.proxy_header = Some((version, *endpoints));
        let mut key = [0u8; 18];
        match endpoints.client.ip() {
            std::net::IpAddr::V4(ip) => key[..4].copy_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) => key[..16].copy_from_slice(&ip.octets()),
        }
        key[16..].copy_from_slice(&endpoints.client.port().to_be_bytes());
        let client = fulcrum_balance::hash64(&key);
        self.backend_key = fulcrum_balance::mix64(self.backend_key ^ client);
        self
    }
}

/// An idle connection and since when.
pub struct Idle {
    pub connection: Connection,
    since: Instant,
    idle_timeout: Duration,
}

impl Idle {
    /// Whether it is open and idle for less than its timeout (and `limit`).
    pub fn usable(&mut self, now: Instant, limit: Duration) -> bool {
        now.saturating_duration_since(self.since) < self.idle_timeout.min(limit) && self.connection.is_open()
    }
}

/// Idle connections by backend key.
pub type ByBackend = HashMap<u64, Vec<Idle>, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdlePool {
    by_backend: ByBackend,
    checkins: u32,
    swept: Option<Instant>,
}

impl IdlePool {
    /// Drops the connections that closed or idled past their timeout
    /// (the thread's own and the shared surplus).
    fn sweep(&mut self, now: Instant) {
        self.by_backend.retain(|_, list| {
            list.retain_mut(|idle| idle.usable(now, Duration::MAX));
            !list.is_empty()
        });
        crate::upstream_overflow::sweep(now);
        self.swept = Some(now);
    }
}

/// Sweeps the calling worker's idle connections unless it did within
/// [`IDLE_SWEEP_EVERY`]; the runtime calls it as a worker thread goes idle
/// (`on_thread_park`). A backend's close wakes the worker that polls the
/// sockets (an event on one), which parks again and drops the connection
/// — or, when it swept less than a second before, at its next wake: an
/// HTTP listener's idle sweeper ticks every second.
pub fn sweep_when_idle() {
    let _ = IDLE.try_with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else { return };
        let now = Instant::now();
        if pool.swept.is_none_or(|at| now.saturating_duration_since(at) >= IDLE_SWEEP_EVERY) {
            pool.sweep(now);
        }
    });
}

/// Idle connections per backend a thread keeps for itself; the rest of a
/// pool's `max_idle_per_backend` is shared ([`crate::upstream_overflow`]).
const KEEP_WARM: usize = 32;

/// Backend keys are hashes of configured addresses, not chosen by clients:
/// a multiplicative hash spreads them and costs one instruction.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

thread_local! {
    static IDLE: RefCell<IdlePool> = RefCell::default();
}

/// A connection to `target` and whether it was reused: a pooled one if
/// any (idle for less than its timeout at `now`), else a new one.
pub async fn checkout(target: &Target, now: Instant) -> Result<(Connection, bool), UpstreamError> {
    if let Some(connection) = take_idle(target.backend_key, now) {
        return Ok((connection, true));
    }
    // Boxed, here and below: opening a connection (TCP, TLS) is rare next
    // to reusing one, and its future is kilobytes that every request's
    // future would otherwise carry and copy.
    Ok((Box::pin(connect(target, Offer::Pool)).await?, false))
}

fn take_idle(backend_key: u64, now: Instant) -> Option<Connection> {
    let own = IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.by_backend.get_mut(&backend_key)?;
        while let Some(mut idle) = list.pop() {
            if idle.usable(now, Duration::MAX) {
                return Some(idle.connection);
            }
        }
        None
    });
    own.or_else(|| take_shared(backend_key, now))
}

#[cold]
fn take_shared(backend_key: u64, now: Instant) -> Option<Connection> {
    crate::upstream_overflow::take(backend_key, now)
}

/// Returns a connection whose last response was read to the end (inlined
/// into the response body's end, the hot caller, despite the mirror's).
#[inline(always)]
pub fn checkin(target: &Target, connection: Connection) {
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.checkins = pool.checkins.wrapping_add(1);
        let now = Instant::now();
        if pool.checkins.is_multiple_of(SWEEP_EVERY) {
            pool.sweep(now);
        }
        let idle = Idle { connection, since: now, idle_timeout: target.idle_timeout };
        let list = pool.by_backend.entry(target.backend_key).or_default();
        if list.len() < target.max_idle.min(KEEP_WARM) {
            list.push(idle);
        } else if target.max_idle > KEEP_WARM {
            share(target, idle);
        }
    });
}

#[cold]
fn share(target: &Target, idle: Idle) {
    crate::upstream_overflow::put(target.backend_key, idle, target.max_idle - KEEP_WARM);
}

/// A backend's response with its body still to read.
pub type Response = http::Response<upstream_h1::Body>;

/// Sends `request` on `connection` and waits until `deadline` for the
/// response head. A pooled (`reused`) connection the backend closed just
/// as it was reused (the keep-alive race) is sent once more on a fresh
/// connection when the backend cannot have acted on it: nothing came
/// back, and either the request is idempotent or writing it failed
/// (pingora's `RetryType::ReusedOnly`, nginx's rule for cached
/// connections). Only a body kept for replay (or none) can go again.
#[inline(always)]
pub async fn send(
    target: &Target,
    (connection, reused): (Connection, bool),
    request: http::Request<RequestBody>,
    deadline: Deadline,
) -> Result<Response, UpstreamError> {
    let (mut parts, body) = request.into_parts();
    let again = if reused { body.replay_copy() } else { None };
    let failed = match connection.send(&mut parts, body, false, deadline).await {
        Ok((head, connection)) => return Ok(upstream_h1::Body::response(head, connection)),
        Err(failed) if matches!(failed.error, upstream_h1::Error::TimedOut) => {
            return Err(UpstreamError::ResponseTimeout)
        }
        Err(failed) => failed,
    };
    let idempotent = parts.method.is_idempotent();
    match again {
        Some(body) if failed.unanswered && (idempotent || failed.unwritten) => {
            tracing::debug!(backend = %target.address, error = %failed.error, "pooled connection was closed; sending on a fresh one");
            Box::pin(resend(target, parts, body, deadline)).await
        }
        _ => Err(UpstreamError::from_exchange(failed.error)),
    }
}

/// Sends a request again on a fresh connection, within the first send's
/// deadline (boxed: rare, and its future is large).
#[cold]
async fn resend(
    target: &Target,
    mut parts: http::request::Parts,
    body: RequestBody,
    deadline: Deadline,
) -> Result<Response, UpstreamError> {
    let connection = connect(target, Offer::Pool).await?;
    match connection.send(&mut parts, body, false, deadline).await {
        Ok((head, connection)) => Ok(upstream_h1::Body::response(head, connection)),
        Err(failed) => Err(UpstreamError::from_exchange(failed.error)),
    }
}

/// A new HTTP/1.1 connection to `target`, offering `offer`'s protocols
/// in a TLS handshake.
pub async fn connect(target: &Target, offer: Offer) -> Result<Connection, UpstreamError> {
    Ok(Connection::new(open(target, offer).await?))
}

/// A connection to a backend: TCP, or TLS over TCP.
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Whether the backend picked HTTP/2 in the TLS handshake.
pub fn speaks_h2(stream: &Stream) -> bool {
    matches!(stream, Either::Right(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2"))
}

/// A connection to the target's backend: TCP, then its PROXY header and
/// TLS handshake (offering `offer`'s protocols) when the pool has them.
pub async fn open(target: &Target, offer: Offer) -> Result<Stream, UpstreamError> {
    let mut stream = tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.address))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    if let Some((version, endpoints)) = target.proxy_header {
        let header = crate::proxy_protocol::header(version, endpoints);
        tokio::io::AsyncWriteExt::write_all(&mut stream, &header).await.map_err(UpstreamError::Connect)?;
    }
    let Some(tls) = &target.tls else { return Ok(Either::Left(stream)) };
    let stream = tokio::time::timeout(target.connect_timeout, tls.connect(target.address, stream, offer))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Tls)?;
    Ok(Either::Right(stream))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A backend on 127.0.0.1 answering every request with its method.
    async fn backend() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(request.method().to_string()),
                        )))
                    }),
                ));
            }
        });
        address
    }

    fn target(address: std::net::SocketAddr) -> Target {
        Target {
            backend_key: 1,
            address,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle: 4,
            proxy_header: None,
            tls: None,
        }
    }

    /// A connection whose backend closed it after a check found it open:
    /// the keep-alive race, made deterministic.
    async fn closed_after_checkout() -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        let mut connection = Connection::new(Either::Left(near));
        assert!(connection.is_open());
        far.shutdown().await.unwrap();
        drop(far);
        connection
    }

    fn request(method: http::Method) -> http::Request<RequestBody> {
        let body = RequestBody::Replay(Some(bytes::Bytes::from_static(b"body")));
        http::Request::builder().method(method).uri("/").header("host", "b").body(body).unwrap()
    }

    async fn text(response: Response) -> String {
        let mut bytes = Vec::new();
        let mut body = std::pin::pin!(response.into_body());
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
        {
            bytes.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn an_idempotent_request_on_a_reused_connection_closed_under_it_goes_again_on_a_fresh_one() {
        let target = target(backend().await);
        let connection = closed_after_checkout().await;
        let response = send(
            &target,
            (connection, true),
            request(http::Method::PUT),
            Deadline::after(Instant::now(), Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(text(response).await, "PUT", "the request reached the backend on a new connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_timed_out_on_a_reused_connection_is_not_sent_again() {
        // The backend reads the request and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (_silent, _) = listener.accept().await.unwrap();
        let target = target(listener.local_addr().unwrap());
        let deadline = Deadline::after(Instant::now(), Duration::from_secs(5));
        let sent =
            send(&target, (Connection::new(Either::Left(near)), true), request(http::Method::GET), deadline);
        assert!(matches!(sent.await, Err(UpstreamError::ResponseTimeout)));
        let second = std::future::poll_fn(|cx| std::task::Poll::Ready(listener.poll_accept(cx))).await;
        assert!(second.is_pending(), "the backend was sent the request again on a new connection");
    }

    #[tokio::test]
    async fn a_post_the_backend_may_have_read_or_a_new_connections_failure_is_not_sent_again() {
        let target = target(backend().await);
        for (reused, method) in [(true, http::Method::POST), (false, http::Method::GET)] {
            let connection = closed_after_checkout().await;
            let sent = send(
                &target,
                (connection, reused),
                request(method.clone()),
                Deadline::after(Instant::now(), Duration::from_secs(5)),
            )
            .await;
            assert!(matches!(sent, Err(UpstreamError::Send(_))), "{method} (reused: {reused}): {sent:?}");
        }
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_is_not_checked_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target { backend_key: 0xC105ED, ..target(listener.local_addr().unwrap()) };
        checkin_closed(&target, &listener).await;
        assert!(
            take_idle(target.backend_key, Instant::now()).is_none(),
            "a closed connection was checked out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_going_idle_drops_closed_connections_at_most_once_a_second() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target { backend_key: 0x1D1E, ..target(listener.local_addr().unwrap()) };
        let pooled = || IDLE.with(|p| p.borrow().by_backend.get(&target.backend_key).map_or(0, Vec::len));
        checkin_closed(&target, &listener).await;
        sweep_when_idle();
        assert_eq!(pooled(), 0, "going idle left a closed connection pooled");
        checkin_closed(&target, &listener).await;
        sweep_when_idle();
        assert_eq!(pooled(), 1, "swept twice within a second");
        tokio::time::advance(IDLE_SWEEP_EVERY).await;
        sweep_when_idle();
        assert_eq!(pooled(), 0, "not swept a second later");
    }

    /// Checks in a connection to `target` that the backend then closes, and
    /// waits until the reactor has seen the close (until then the
    /// connection still looks open).
    async fn checkin_closed(target: &Target, listener: &TcpListener) {
        let near = TcpStream::connect(target.address).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        checkin(target, Connection::new(Either::Left(near)));
        drop(far.shutdown().await);
        drop(far);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let open = IDLE.with(|p| {
                    let mut p = p.borrow_mut();
                    p.by_backend
                        .get_mut(&target.backend_key)
                        .and_then(|l| l.last_mut())
                        .map(|c| c.connection.is_open())
                });
                if open == Some(false) {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the backend's close was never seen");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bursts_surplus_is_shared_between_threads_and_idles_out() {
        // A key no other test uses: the shared list is the process's.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target { max_idle: 512, backend_key: 0xB0B5, ..target(listener.local_addr().unwrap()) };
        let mut far_ends = Vec::new();
        for _ in 0..100 {
            let near = TcpStream::connect(target.address).await.unwrap();
            far_ends.push(listener.accept().await.unwrap().0);
            checkin(&target, Connection::new(Either::Left(near)));
        }
        let own = || IDLE.with(|p| p.borrow().by_backend.get(&target.backend_key).map_or(0, Vec::len));
        let shared = || crate::upstream_overflow::len(target.backend_key);
        assert_eq!((own(), shared()), (KEEP_WARM, 100 - KEEP_WARM));

        // Another thread, with no pool of its own, reuses the surplus.
        let key = target.backend_key;
        let taken = std::thread::spawn(move || take_idle(key, Instant::now()).is_some()).join().unwrap();
        assert!(taken, "another thread found no shared connection");
        assert_eq!(shared(), 100 - KEEP_WARM - 1);

        tokio::time::advance(crate::upstream_overflow::SURPLUS_IDLE).await;
        IDLE.with(|p| p.borrow_mut().sweep(Instant::now()));
        assert_eq!((own(), shared()), (KEEP_WARM, 0), "only the warm connections outlive a burst");
        tokio::time::advance(Duration::from_secs(60)).await;
        IDLE.with(|p| p.borrow_mut().sweep(Instant::now()));
        assert_eq!(own(), 0, "and they idle out at the idle timeout");
    }
}
