//! L4 UDP balancing (nginx's `stream` UDP proxying, Envoy's UDP proxy
//! filter): a flow is a client address; its first datagram picks a
//! backend with the pool's algorithm (hashing algorithms hash the client's
//! address and port, so a flow maps stably), and every later datagram of
//! the flow goes to the same backend through the flow's own socket, whose
//! replies go back to the client from the listener's socket.
//!
//! The flow table belongs to the listener's one receiving task: a flow is
//! dropped — its socket closed, its reply task stopped, its in-flight
//! count released — when it has been idle for `session_idle`, when its
//! backend stops serving (removed, drained, unhealthy, ejected: its next
//! datagram picks again), or when the listener stops. At most
//! `max_sessions` flows are kept; datagrams of new flows beyond are dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fulcrum_balance::resilience::Outcome;
use fulcrum_balance::InFlight;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::state::ListenerState;

/// The largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One client's flow.
#[derive(Debug)]
struct Flow {
    backend_key: u64,
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
    /// When a datagram last passed either way, nanoseconds.
    last_seen: Arc<AtomicU64>,
    _in_flight: InFlight,
    replies: tokio::task::JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Relays datagrams on `socket` until `stop` fires.
pub async fn serve(socket: UdpSocket, state: Arc<ArcSwap<ListenerState>>, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        let (length, client) = tokio::select! {
            () = stop.cancelled() => break,
            _ = sweep.tick() => {
                let idle = state.load().udp.session_idle.as_nanos() as u64;
                let now = crate::clock::now_nanos();
                flows.retain(|_, flow| now.saturating_sub(flow.last_seen.load(Ordering::Relaxed)) < idle);
                continue;
            }
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "receiving a datagram failed");
                    continue;
                }
            },
        };
        let now = crate::clock::now_nanos();
        let state = state.load();
        let pool = &state.default_pool;
        let serves = flows.get(&client).map(|f| pool.still_serves(f.backend_key, now));
        if serves == Some(false) {
            let moved = flows.remove(&client).map(|f| f.backend);
            tracing::debug!(%client, backend = ?moved, "UDP flow's backend no longer serves; picking again");
        }
        if !flows.contains_key(&client) {
            if flows.len() >= state.udp.max_sessions {
                tracing::debug!(%client, "UDP flow dropped: max_sessions flows are open");
                continue;
            }
            match open_flow(pool, client, &socket, now).await {
                Some(flow) => {
                    flows.insert(client, flow);
                }
                None => continue,
            }
        }
        let flow = flows.get(&client).expect("the flow exists now");
        flow.last_seen.store(now, Ordering::Relaxed);
        if let Err(e) = flow.upstream.send(&buffer[..length]).await {
            tracing::debug!(backend = %flow.backend, error = %e, "sending a datagram to the backend failed");
        }
    }
}

/// A new flow for `client`: a backend picked, a socket connected to it,
/// and the task relaying its replies.
async fn open_flow(
    pool: &crate::pool::Pool,
    client: SocketAddr,
    listener: &Arc<UdpSocket>,
    now: u64,
) -> Option<Flow> {
    let key =
        pool.config.algorithm.uses_key().then(|| fulcrum_balance::hash64(client.to_string().as_bytes()));
    let Some(attempt) = pool.pick(key, Some(client.ip()), &[], now) else {
        tracing::warn!(pool = %pool.name, %client, "no backend available for a UDP flow; datagram dropped");
        return None;
    };
    let backend = Arc::clone(attempt.backend());
    let local: SocketAddr =
        if backend.address.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let upstream = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(e) => {
            attempt.finish(Outcome::GatewayFailure, 502, now);
            tracing::warn!(error = %e, "cannot open a socket for a UDP flow");
            return None;
        }
    };
    if let Err(e) = upstream.connect(backend.address).await {
        attempt.finish(Outcome::GatewayFailure, 502, now);
        tracing::warn!(backend = %backend.address, error = %e, "cannot address the backend of a UDP flow");
        return None;
    }
    attempt.finish(Outcome::Success, 200, now);
    let upstream = Arc::new(upstream);
    let last_seen = Arc::new(AtomicU64::new(now));
    let replies = tokio::spawn(relay_replies(
        Arc::clone(&upstream),
        Arc::clone(listener),
        client,
        Arc::clone(&last_seen),
    ));
    Some(Flow {
        backend_key: backend.address_key,
        backend: backend.address,
        upstream,
        last_seen,
        _in_flight: backend.load.start(),
        replies,
    })
}

/// Sends every datagram the backend answers on `upstream` back to `client`.
async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last_seen: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let length = match upstream.recv(&mut buffer).await {
            Ok(length) => length,
            // An ICMP unreachable from a dead backend: the flow waits for
            // the next datagram (or its idle end) to pick again.
            Err(e) => {
                tracing::debug!(%client, error = %e, "receiving from a UDP backend failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        last_seen.store(crate::clock::now_nanos(), Ordering::Relaxed);
        if let Err(e) = listener.send_to(&buffer[..length], client).await {
            tracing::debug!(%client, error = %e, "sending a reply to a UDP client failed");
        }
    }
}
