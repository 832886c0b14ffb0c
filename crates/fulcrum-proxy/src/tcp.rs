//! L4 balancing: each TCP connection goes to the backend the pool picks,
//! and bytes are copied both ways until both sides have closed. A side
//! that half-closes (shuts down its writes) has that shutdown passed on,
//! so request/response protocols that signal the end of input with a FIN
//! keep working. The connect is the attempt: its outcome is recorded like
//! an HTTP response's.

use fulcrum_balance::resilience::Outcome;
use tokio::net::TcpStream;

use crate::pool::Pool;

/// Proxies one client connection to a backend of `pool`.
pub async fn proxy(mut client: TcpStream, peer: std::net::SocketAddr, pool: &Pool) {
    let key = pool.config.algorithm.uses_key().then(|| crate::hash_key::client_key(peer.ip(), &pool.config));
    let started = crate::clock::now_nanos();
    let Some(attempt) = pool.pick(key, Some(peer.ip()), &[], started) else {
        tracing::warn!(pool = %pool.name, "no backend available for a TCP connection; closing it");
        return;
    };
    let backend = std::sync::Arc::clone(attempt.backend());
    let _in_flight = backend.load.start();
    let connected = tokio::time::timeout(pool.timeouts.connect, TcpStream::connect(backend.address)).await;
    let now = crate::clock::now_nanos();
    let mut upstream = match connected {
        Ok(Ok(stream)) => {
            attempt.finish(Outcome::Success, 200, now);
            stream
        }
        Ok(Err(e)) => {
            attempt.finish(Outcome::GatewayFailure, 502, now);
            return tracing::warn!(backend = %backend.address, error = %e, "cannot connect to backend");
        }
        Err(_) => {
            attempt.finish(Outcome::GatewayFailure, 504, now);
            return tracing::warn!(backend = %backend.address, "connecting to backend timed out");
        }
    };
    if let Err(e) = upstream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(backend = %backend.address, error = %e, "TCP connection ended with an error");
    }
}
