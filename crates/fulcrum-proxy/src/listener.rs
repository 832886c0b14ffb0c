//! Listening sockets and their accept loops.
//!
//! A socket is bound once per address and kept across reloads; what it
//! serves — protocol, routes, pools, certificates — is a
//! [`ListenerState`] behind an `ArcSwap`, replaced atomically on reload
//! so new connections and requests see the new config while in-flight
//! ones finish on the old.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_config::Protocol;
use futures_util::future::{Either, FutureExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gate::{Entry, Gate, Refused};
use crate::http::{self as l7, ClientInfo, Connection};
use crate::proxy_protocol::{self, Endpoints};
use crate::state::ListenerState;
use crate::tcp;

/// `accept(2)` errors: the process's and the system's file table is full.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything an accept loop needs.
#[derive(Debug, Clone)]
pub struct Acceptor {
    /// The swappable listener state.
    pub state: Arc<ArcSwap<ListenerState>>,
    /// Ends this accept loop (listener removed, or process stopping).
    pub stop: CancellationToken,
    /// Asks open connections to finish gracefully (process stopping).
    pub drain: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Who may connect, how many at once, and what was refused.
    pub gate: Arc<Gate>,
    /// Every open HTTP connection, for idle timeouts; when accepting fails
    /// for want of file descriptors, idle ones close so new clients can be
    /// served.
    pub watchlist: Arc<l7::Watchlist>,
}

/// A listening socket: TCP for http, https and tcp listeners, UDP for udp ones.
#[derive(Debug)]
pub enum Socket {
    /// Accepts connections.
    Stream(TcpListener),
    /// Receives datagrams.
    Datagram(tokio::net::UdpSocket),
}

/// Binds `address` for `protocol` (TCP with `SO_REUSEADDR`, as every
/// restartable server does), or takes the socket the previous process
/// handed on for it ([`crate::inherit`]).
pub fn bind(address: SocketAddr, protocol: Protocol) -> std::io::Result<Socket> {
    if protocol == Protocol::Udp {
        let socket = bind_udp(address)?;
        socket.set_nonblocking(true)?;
        return Ok(Socket::Datagram(tokio::net::UdpSocket::from_std(socket)?));
    }
    let socket = match crate::inherit::tcp(address) {
        Some(inherited) => inherited,
        None => std::net::TcpListener::bind(address)?,
    };
    socket.set_nonblocking(true)?;
    Ok(Socket::Stream(TcpListener::from_std(socket)?))
}

/// Binds `address`'s UDP port for HTTP/3 beside an https listener's TCP one.
pub fn bind_quic(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    bind_udp(address)
}

fn bind_udp(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    match crate::inherit::udp(address) {
        Some(inherited) => Ok(inherited),
        None => std::net::UdpSocket::bind(address),
    }
}

impl Socket {
    /// A duplicate of its descriptor to hand on at a binary upgrade.
    pub fn handoff(&self, address: SocketAddr) -> std::io::Result<(String, std::os::fd::OwnedFd)> {
        match self {
            Self::Stream(s) => crate::inherit::handoff(false, address, s),
            Self::Datagram(s) => crate::inherit::handoff(true, address, s),
        }
    }
}

/// Accepts connections until `acceptor.stop` fires.
pub async fn accept_loop(listener: TcpListener, acceptor: Acceptor) {
    let bound = Bound::of(&listener);
    loop {
        // At `max_connections`, new connections wait in the kernel's backlog.
        let max_connections = acceptor.state.load().max_connections;
        let accepted = tokio::select! {
            () = acceptor.stop.cancelled() => break,
            accepted = async {
                acceptor.gate.room(max_connections).await;
                listener.accept().await
            } => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let proxied = acceptor.state.load().proxy_protocol.clone();
                let Some(proxied) = proxied else {
                    // Admitted here, in accept order, before a task exists.
                    let Some(entry) = admit(&acceptor, peer) else { continue };
                    let endpoints = bound.endpoints(&stream, peer);
                    acceptor.tracker.spawn(serve_connection(stream, endpoints, &acceptor, entry));
                    continue;
                };
                if !proxied.trusted.iter().any(|net| net.contains(peer.ip())) {
                    acceptor.gate.refuse(Refused::ProxyProtocol);
                    tracing::debug!(client = %peer, "connection refused: not trusted to send PROXY headers");
                    continue;
                }
                let socket = bound.endpoints(&stream, peer);
                acceptor.tracker.spawn(serve_proxied(stream, socket, proxied, acceptor.clone()));
            }
            Err(e) => {
                // Out of file descriptors or similar: ask idle connections
                // to close, and back off instead of spinning.
                if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
                    acceptor.watchlist.close_idle();
                }
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The address a listener is bound to, when it names the one its
/// connections arrive at (not a wildcard such as `0.0.0.0`).
struct Bound(Option<SocketAddr>);

impl Bound {
    fn of(listener: &TcpListener) -> Self {
        Self(listener.local_addr().ok().filter(|address| !address.ip().is_unspecified()))
    }

    /// The ends of a connection accepted from `peer`: asking the socket
    /// (a system call per connection) only behind a wildcard address.
    fn endpoints(&self, stream: &TcpStream, peer: SocketAddr) -> Endpoints {
        let local = self.0.unwrap_or_else(|| stream.local_addr().unwrap_or(peer));
        Endpoints { client: peer, local }
    }
}

/// A connection from a balancer in front: its PROXY header first, then the
/// carried client is admitted (allow/deny, per-address caps) and served
/// as if it had connected itself.
async fn serve_proxied(
    mut stream: TcpStream,
    socket: Endpoints,
    accepted: fulcrum_config::ProxyProtocol,
    acceptor: Acceptor,
) {
    let limit = acceptor.state.load().limits.header_read_timeout;
    let peer = socket.client;
    let endpoints = match proxy_protocol::receive(&mut stream, &accepted, socket, limit).await {
        Ok(endpoints) => endpoints,
        Err(why) => {
            acceptor.gate.refuse(Refused::ProxyProtocol);
            return tracing::debug!(client = %peer, reason = %why, "connection closed: bad PROXY header");
        }
    };
    let Some(entry) = admit(&acceptor, endpoints.client) else { return };
    serve_connection(stream, endpoints, &acceptor, entry).await;
}

/// Lets `peer` in unless its network is kept out or it already has its
/// `max_connections_per_ip`; a refused connection is dropped (closed)
/// without a byte read.
pub fn admit(acceptor: &Acceptor, peer: SocketAddr) -> Option<Entry> {
    let state = acceptor.state.load();
    if !state.access.is_open() {
        let region = state.geo.as_ref().and_then(|geo| geo.region_of(peer.ip()));
        if !state.access.admits(peer.ip(), region) {
            acceptor.gate.refuse(Refused::Denied);
            tracing::debug!(client = %peer, "connection refused: its network is not allowed");
            return None;
        }
    }
    let entry = acceptor.gate.enter(peer.ip(), state.max_connections_per_ip);
    if entry.is_none() {
        tracing::debug!(client = %peer, "connection refused: max_connections_per_ip");
    }
    entry
}

/// Serves an admitted connection. What it needs is gathered now (its
/// socket options, the listener's current state, the connection's own
/// state); the future returned is its task, and holds only what serving
/// takes: a plain HTTP connection's is small while it waits for bytes or
/// naps (see `l7::serve`), the rarer TLS and TCP ones are boxed. Only a
/// TLS connection, which makes its own after the handshake, keeps a copy of
/// `acceptor` (copying one takes the drain and stop tokens' locks).
fn serve_connection(
    stream: TcpStream,
    endpoints: Endpoints,
    acceptor: &Acceptor,
    entry: Entry,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = endpoints.client;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // Only what this connection needs is taken from the state: a
    // keep-alive connection must not keep a replaced generation alive.
    let state = acceptor.state.load();
    let (builders, limits, client_certificates) =
        (Arc::clone(&state.builders), state.limits, state.client_certificates);
    let client = move |proto: &'static str| ClientInfo {
        ip: ClientInfo::ip_value(peer.ip()),
        proto,
        endpoints,
        cert_subject: None,
        authority_host: Default::default(),
    };
    let connection = move |acceptor: &Acceptor, client: ClientInfo| {
        Arc::new(Connection {
            state: Arc::clone(&acceptor.state),
            client,
            activity: Arc::new(l7::Activity::new(acceptor.drain.child_token(), &limits)),
            gate: Arc::clone(&acceptor.gate),
            switch: Default::default(),
        })
    };
    let serving: Either<_, Pin<Box<dyn Future<Output = ()> + Send>>> = match state.protocol {
        Protocol::Http => Either::Left(l7::serve(
            stream,
            builders,
            connection(acceptor, client("http")),
            &acceptor.watchlist,
            limits.header_read_timeout,
        )),
        Protocol::Tcp => {
            let pool = Arc::clone(&state.default_pool);
            Either::Right(Box::pin(async move { tcp::proxy(stream, endpoints, &pool).await }))
        }
        // A udp listener's socket receives datagrams; it accepts nothing.
        Protocol::Udp => Either::Right(Box::pin(std::future::ready(()))),
        Protocol::Https => {
            let tls = state.tls.clone();
            let acceptor = acceptor.clone();
            Either::Right(Box::pin(async move {
                let Some(tls) = tls.map(tokio_rustls::TlsAcceptor::from) else { return };
                // No TLS state until the client's hello arrives.
                let handshake = async {
                    stream.readable().await?;
                    tls.accept(stream).await
                };
                let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(client = %peer, "TLS handshake timed out"),
                };
                let mut client = client("https");
                if client_certificates {
                    client.cert_subject = Some(crate::tls::client_subject(stream.get_ref().1));
                }
                let connection = connection(&acceptor, client);
                l7::serve(stream, builders, connection, &acceptor.watchlist, limits.header_read_timeout)
                    .await;
            }))
        }
    };
    // Not `async { serving.await }`: that would hold `serving` twice.
    serving.map(move |()| drop(entry))
}
