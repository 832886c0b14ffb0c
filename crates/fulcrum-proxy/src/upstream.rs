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
//! also releases those of removed backends. A thread keeps [`KEEP_WARM`]
//! idle connections per backend for itself; a burst's surplus, up to the
//! pool's `max_idle_per_backend`, is shared by all threads for a few
//! seconds ([`crate::upstream_overflow`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::backend::Backend;
use crate::error::UpstreamError;
use crate::proxy_protocol::Endpoints;
use crate::request_body::RequestBody;
use crate::upstream_tls::Offer;

/// Most bytes buffered per upstream connection and direction: backend
/// response heads are limited to this, as nginx's default
/// `proxy_buffer_size` limits them to a page.
const MAX_BUFFER: usize = 8 * 1024;

/// How many checkins between two sweeps of a thread's idle connections.
const SWEEP_EVERY: u32 = 1024;

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
    pub sender: SendRequest<RequestBody>,
    since: Instant,
    idle_timeout: Duration,
}

impl Idle {
    /// Whether it is open and idle for less than its timeout (and `limit`).
    pub fn usable(&self, now: Instant, limit: Duration) -> bool {
        !self.sender.is_closed() && now.saturating_duration_since(self.since) < self.idle_timeout.min(limit)
    }
}

#[derive(Default)]
struct IdlePool {
    by_backend: HashMap<u64, Vec<Idle>, BuildHasherDefault<IdHasher>>,
    checkins: u32,
}

impl IdlePool {
    /// Drops the connections that closed or idled past their timeout.
    fn sweep(&mut self, now: Instant) {
        self.by_backend.retain(|_, list| {
            list.retain(|idle| idle.usable(now, Duration::MAX));
            !list.is_empty()
        });
    }
}

/// Idle connections per backend a thread keeps for itself; the rest of a
/// pool's `max_idle_per_backend` is shared ([`crate::upstream_overflow`]).
const KEEP_WARM: usize = 32;

/// Backend keys are hashes of configured addresses, not chosen by clients:
/// a multiplicative hash spreads them and costs one instruction.
#[derive(Default)]
struct IdHasher(u64);

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

/// A ready connection to `target` and whether it was reused: a pooled
/// one if any, else a new one.
pub async fn checkout(target: &Target) -> Result<(SendRequest<RequestBody>, bool), UpstreamError> {
    while let Some(mut sender) = take_idle(target.backend_key) {
        if sender.ready().await.is_ok() {
            return Ok((sender, true));
        }
    }
    // Boxed, here and below: opening a connection (TCP, TLS, HTTP/1.1
    // handshake) is rare next to reusing one, and its future is kilobytes
    // that every request's future would otherwise carry and copy.
    Ok((Box::pin(connect(target, false)).await?, false))
}

fn take_idle(backend_key: u64) -> Option<SendRequest<RequestBody>> {
    let own = IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.by_backend.get_mut(&backend_key)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if idle.usable(now, Duration::MAX) {
                return Some(idle.sender);
            }
        }
        None
    });
    own.or_else(|| take_shared(backend_key))
}

#[cold]
fn take_shared(backend_key: u64) -> Option<SendRequest<RequestBody>> {
    crate::upstream_overflow::take(backend_key)
}

/// Returns a connection whose last response was read to the end (inlined
/// into the response body's end, the hot caller, despite the mirror's).
#[inline(always)]
pub fn checkin(target: &Target, sender: SendRequest<RequestBody>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.checkins = pool.checkins.wrapping_add(1);
        let now = Instant::now();
        if pool.checkins.is_multiple_of(SWEEP_EVERY) {
            pool.sweep(now);
            crate::upstream_overflow::sweep(now);
        }
        let idle = Idle { sender, since: now, idle_timeout: target.idle_timeout };
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

/// Sends `request` on `sender` and waits up to `limit` for the response
/// head. A pooled (`reused`) connection the backend closed just as it was
/// reused (the keep-alive race) gives the request back unsent; it is then
/// sent once on a fresh connection, whatever its method, because nothing
/// was processed (pingora's `RetryType::ReusedOnly`).
#[inline(always)]
pub async fn send(
    target: &Target,
    (sender, reused): (SendRequest<RequestBody>, bool),
    request: http::Request<RequestBody>,
    limit: Duration,
) -> Result<(http::Response<hyper::body::Incoming>, SendRequest<RequestBody>), UpstreamError> {
    let mut sender = sender;
    let unsent = match tokio::time::timeout(limit, sender.try_send_request(request)).await {
        Err(_) => return Err(UpstreamError::ResponseTimeout),
        Ok(Ok(response)) => return Ok((response, sender)),
        Ok(Err(mut unsent)) => match unsent.take_message() {
            Some(request) if reused => {
                tracing::debug!(backend = %target.address, error = %unsent.error(), "pooled connection was closed; sending on a fresh one");
                request
            }
            _ => return Err(UpstreamError::from_send(unsent.into_error())),
        },
    };
    Box::pin(resend(target, unsent, limit)).await
}

/// Sends a request that a closed pooled connection gave back on a fresh
/// connection (boxed: rare, and its future is large).
#[cold]
async fn resend(
    target: &Target,
    request: http::Request<RequestBody>,
    limit: Duration,
) -> Result<(http::Response<hyper::body::Incoming>, SendRequest<RequestBody>), UpstreamError> {
    let mut sender = connect(target, false).await?;
    let response = tokio::time::timeout(limit, sender.send_request(request))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout)?
        .map_err(UpstreamError::from_send)?;
    Ok((response, sender))
}

/// A new connection to `target`; `upgrades` keeps it usable for a
/// protocol switch (WebSocket), after which it is never pooled.
pub async fn connect(target: &Target, upgrades: bool) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let offer = if upgrades { Offer::Http1 } else { Offer::Pool };
    over(open(target, offer).await?, target, upgrades).await
}

/// HTTP/1.1 over an opened `stream`.
pub async fn over(
    stream: Stream,
    target: &Target,
    upgrades: bool,
) -> Result<SendRequest<RequestBody>, UpstreamError> {
    match stream {
        Either::Left(stream) => handshake(stream, target, upgrades).await,
        Either::Right(stream) => handshake(stream, target, upgrades).await,
    }
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

/// HTTP/1.1 over a connected `stream`, its connection task spawned.
async fn handshake<S>(
    stream: S,
    target: &Target,
    upgrades: bool,
) -> Result<SendRequest<RequestBody>, UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .max_buf_size(MAX_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    let address = target.address;
    if upgrades {
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(backend = %address, error = %e, "upstream connection ended with an error");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(backend = %address, error = %e, "upstream connection ended with an error");
            }
        });
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A backend on 127.0.0.1 answering every request with its method.
    async fn backend() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    /// A ready connection whose backend end is then closed before anything
    /// is written: the keep-alive race, made deterministic.
    async fn closed_just_after_ready() -> SendRequest<RequestBody> {
        let (near, far) = tokio::io::duplex(1024);
        let (mut sender, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
        tokio::spawn(connection);
        sender.ready().await.unwrap();
        drop(far);
        sender
    }

    fn post() -> http::Request<RequestBody> {
        http::Request::post("/").header("host", "b").body(RequestBody::Replay(None)).unwrap()
    }

    #[tokio::test]
    async fn a_request_a_reused_connection_gives_back_is_sent_once_on_a_fresh_one() {
        let target = target(backend().await);
        let sender = closed_just_after_ready().await;
        let (response, _fresh) = send(&target, (sender, true), post(), Duration::from_secs(5)).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "POST", "the non-idempotent request reached the backend once, on a new connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bursts_surplus_is_shared_between_threads_and_idles_out() {
        // A key no other test uses: the shared list is the process's.
        let target = Target { max_idle: 512, backend_key: 0xB0B5, ..target("127.0.0.1:9".parse().unwrap()) };
        let mut far_ends = Vec::new();
        for _ in 0..100 {
            let (near, far) = tokio::io::duplex(1024);
            let (mut sender, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
            tokio::spawn(connection);
            sender.ready().await.unwrap();
            far_ends.push(far);
            checkin(&target, sender);
        }
        let own = || IDLE.with(|p| p.borrow().by_backend.get(&target.backend_key).map_or(0, Vec::len));
        let shared = || crate::upstream_overflow::len(target.backend_key);
        assert_eq!((own(), shared()), (KEEP_WARM, 100 - KEEP_WARM));

        // Another thread, with no pool of its own, reuses the surplus.
        let key = target.backend_key;
        let taken = std::thread::spawn(move || take_idle(key).is_some()).join().unwrap();
        assert!(taken, "another thread found no shared connection");
        assert_eq!(shared(), 100 - KEEP_WARM - 1);

        tokio::time::advance(crate::upstream_overflow::SURPLUS_IDLE).await;
        IDLE.with(|p| p.borrow_mut().sweep(Instant::now()));
        crate::upstream_overflow::sweep(Instant::now());
        assert_eq!((own(), shared()), (KEEP_WARM, 0), "only the warm connections outlive a burst");
        tokio::time::advance(Duration::from_secs(60)).await;
        IDLE.with(|p| p.borrow_mut().sweep(Instant::now()));
        assert_eq!(own(), 0, "and they idle out at the idle timeout");
    }

    #[tokio::test]
    async fn a_new_connection_that_fails_is_not_retried() {
        let target = target(backend().await);
        let sender = closed_just_after_ready().await;
        let sent = send(&target, (sender, false), post(), Duration::from_secs(5)).await;
        assert!(matches!(sent, Err(UpstreamError::Send(_))), "{sent:?}");
    }
}
