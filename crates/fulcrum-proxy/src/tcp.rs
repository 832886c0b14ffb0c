//! L4 balancing: each TCP connection goes to the backend the pool picks,
//! and bytes are relayed both ways until both sides have closed (copied,
//! or spliced once a direction carries bulk: see `relay`). A side
//! that half-closes (shuts down its writes) has that shutdown passed on,
//! so request/response protocols that signal the end of input with a FIN
//! keep working. The connect is the attempt: its outcome is recorded like
//! an HTTP response's. With `client_ip` affinity a client's connections
//! stay on its backend, like its HTTP requests would.

use fulcrum_balance::resilience::Outcome;
use tokio::net::TcpStream;

use crate::pool::Pool;

/// Proxies one client connection to a backend of `pool`.
pub async fn proxy(mut client: TcpStream, endpoints: crate::proxy_protocol::Endpoints, pool: &Pool) {
    let peer = endpoints.client;
    let key = pool.config.algorithm.uses_key().then(|| crate::hash_key::client_key(peer.ip(), &pool.config));
    let mut session = match &pool.affinity {
        Some(affinity) => affinity.lookup_client(peer.ip()).await,
        None => None,
    };
    let started = crate::clock::now_nanos();
    let bound = session.as_ref().and_then(|s| s.bound).and_then(|b| pool.pick_bound(b, started));
    let hard = pool.affinity.as_ref().is_some_and(|a| a.is_hard());
    let attempt = match (bound, &mut session) {
        (Some(attempt), _) => Some(attempt),
        (None, Some(session)) if session.bound.is_some() => {
            session.fail_over();
            if hard {
                None
            } else {
                pool.pick(key, Some(peer.ip()), &[], started)
            }
        }
        (None, _) => pool.pick(key, Some(peer.ip()), &[], started),
    };
    let Some(attempt) = attempt else {
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
            if let (Some(affinity), Some(session)) = (&pool.affinity, &mut session) {
                affinity.bind(session, &backend, false).await;
                affinity.count(session.placement);
            }
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
    if let Some(version) = pool.config.send_proxy_protocol {
        let header = crate::proxy_protocol::header(version, endpoints);
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut upstream, &header).await {
            return tracing::debug!(backend = %backend.address, error = %e, "sending the PROXY header failed");
        }
    }
    match crate::relay::relay(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(backend = %backend.address, ?up, ?down, "TCP connection ended"),
        Err(e) => {
            tracing::debug!(backend = %backend.address, error = %e, "TCP connection ended with an error")
        }
    }
}
