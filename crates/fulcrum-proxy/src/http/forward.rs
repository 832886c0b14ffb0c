//! One HTTP request's path: check → route → pick → forward → stream back.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::headers::{self, ClientInfo};
use super::{respond, upgrade};
use crate::backend::Backend;
use crate::error::UpstreamError;
use crate::listener::ListenerState;
use crate::upstream::{self, Target};
use crate::{clock, hash_key};

/// What every request on one client connection shares.
#[derive(Debug)]
pub struct Connection {
    /// The listener's current routes and pools (swapped on reload).
    pub state: Arc<arc_swap::ArcSwap<ListenerState>>,
    /// The client, for `X-Forwarded-*`.
    pub client: ClientInfo,
}

/// Serves one request; never fails (failures are answered with a status).
pub async fn handle(
    request: Request<Incoming>,
    connection: Arc<Connection>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    if let Some(reason) = headers::malformed(&parts) {
        return Ok(respond::plain(StatusCode::BAD_REQUEST, reason));
    }
    let pool = connection.state.load().route(&parts);
    let key = pool
        .config
        .algorithm
        .uses_key()
        .then(|| hash_key::request_key(&parts, connection.client.addr, &pool.config));
    let Some(backend) = pool.pick(key, Some(connection.client.addr)).map(Arc::clone) else {
        return Ok(respond::no_backend());
    };
    let target = Target::new(&backend, &pool);
    let upgrade = headers::is_upgrade(&parts);
    headers::prepare_request(&mut parts, &connection.client, upgrade);
    let in_flight = backend.load.start();
    let request = Request::from_parts(parts, body);
    if upgrade {
        return Ok(upgrade::forward(request, &target, pool.timeouts.response_header, in_flight)
            .await
            .unwrap_or_else(|e| failed(&backend, &e)));
    }

    let mut sender = match upstream::checkout(&target).await {
        Ok(sender) => sender,
        Err(e) => return Ok(failed(&backend, &e)),
    };
    let started = clock::now_nanos();
    let response =
        match tokio::time::timeout(pool.timeouts.response_header, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Ok(failed(&backend, &UpstreamError::Send(e))),
            Err(_) => return Ok(failed(&backend, &UpstreamError::ResponseTimeout)),
        };
    let now = clock::now_nanos();
    backend.load.observe_latency(now - started, now);
    let (mut parts, body) = response.into_parts();
    if parts.status.is_server_error() {
        backend.load.record_error();
    }
    headers::prepare_response(&mut parts.headers, false);
    Ok(Response::from_parts(parts, ProxyBody::upstream(body, Some((sender, target)), in_flight)))
}

/// Counts and logs a failed attempt on `backend` and answers the client.
fn failed(backend: &Backend, error: &UpstreamError) -> Response<ProxyBody> {
    backend.load.record_error();
    tracing::warn!(backend = %backend.address, error = %error, "request to backend failed");
    respond::plain(error.status(), error.client_message())
}
