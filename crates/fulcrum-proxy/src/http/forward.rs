//! One HTTP request's path: check → route → pick → forward (retrying on
//! another backend when the policy allows) → stream the response back.

use std::convert::Infallible;
use std::sync::Arc;

use fulcrum_balance::resilience::{backoff, Outcome};
use fulcrum_balance::InFlight;
use fulcrum_config::Retries;
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::headers::{self, ClientInfo};
use super::request_body::RequestBody;
use super::{respond, upgrade};
use crate::backend::Backend;
use crate::error::UpstreamError;
use crate::listener::ListenerState;
use crate::pool::Pool;
use crate::upstream::{self, Target};
use crate::{clock, hash_key};

/// What every request on one client connection shares.
#[derive(Debug)]
pub struct Connection {
    /// The listener's current routes and pools (swapped on reload).
    pub state: Arc<arc_swap::ArcSwap<ListenerState>>,
    /// The client, for `X-Forwarded-*` and hash keys.
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
    let client = connection.client.addr;
    let key = pool.config.algorithm.uses_key().then(|| hash_key::request_key(&parts, client, &pool.config));
    let upgrade = headers::is_upgrade(&parts);
    headers::prepare_request(&mut parts, &connection.client, upgrade);
    if upgrade {
        let Some(backend) = pool.pick(key, Some(client), &[], clock::now_nanos()).map(Arc::clone) else {
            return Ok(respond::no_backend());
        };
        let target = Target::new(&backend, &pool);
        let request = Request::from_parts(parts, RequestBody::Streaming(body));
        let forwarded =
            upgrade::forward(request, &target, pool.timeouts.response_header, backend.load.start()).await;
        return Ok(forwarded.unwrap_or_else(|e| failed(&pool, &backend, &e, 0)));
    }
    let forwarding = forward(&pool, parts, body, key, client);
    Ok(match pool.timeouts.request {
        None => forwarding.await,
        Some(limit) => tokio::time::timeout(limit, forwarding).await.unwrap_or_else(|_| {
            respond::plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the request took longer than the pool's request timeout\n",
            )
        }),
    })
}

/// The attempts of one request: the first, then retries on other backends.
async fn forward(
    pool: &Arc<Pool>,
    parts: Parts,
    body: Incoming,
    key: Option<u64>,
    client: std::net::IpAddr,
) -> Response<ProxyBody> {
    let policy = pool.config.retries.as_ref().filter(|r| r.attempts > 0 && may_retry(&parts.method, r));
    let mut body = match policy {
        Some(policy) => match replayable(body, &parts, policy.max_replay_body).await {
            Ok(body) => body,
            Err(response) => return response,
        },
        None => RequestBody::Streaming(body),
    };
    let replay = matches!(body, RequestBody::Replay(_));
    pool.record_request();
    // Retry bookkeeping (tried backends, a copy of the request head) is
    // only paid for while another attempt is still possible.
    let mut parts = Some(parts);
    let mut tried = Vec::new();
    let mut retries = 0;
    loop {
        let retry_possible = replay && policy.is_some_and(|p| retries < p.attempts);
        let started = clock::now_nanos();
        let Some(backend) = pool.pick(key, Some(client), &tried, started).map(Arc::clone) else {
            return respond::no_backend();
        };
        let head = match (&parts, retry_possible) {
            (Some(head), true) => {
                tried.push(backend.id);
                clone_parts(head)
            }
            _ => parts.take().expect("the request head is taken only by the last attempt"),
        };
        let this_body = match &mut body {
            RequestBody::Replay(bytes) => RequestBody::Replay(bytes.clone()),
            streaming => std::mem::replace(streaming, RequestBody::Replay(None)),
        };
        let request = Request::from_parts(head, this_body);
        let attempt = send(pool, &backend, request).await;
        let now = clock::now_nanos();
        let took = now.saturating_sub(started);
        let retryable = match &attempt {
            Ok((response, _, _)) => {
                backend.load.observe_latency(took, now);
                let status = response.status();
                pool.record(&backend, outcome_of_status(status), took, now);
                policy.is_some_and(|p| retry_on_status(p, status))
            }
            Err(error) => {
                pool.record(&backend, Outcome::GatewayFailure, took, now);
                policy.is_some_and(|p| retry_on_error(p, error))
            }
        };
        let status = match &attempt {
            Ok((response, _, _)) => response.status(),
            Err(error) => error.status(),
        };
        backend.metrics.record(status.as_u16(), took, now);
        let can_retry = retry_possible && retryable && pool.try_retry();
        if !can_retry {
            return match attempt {
                Ok(attempt) => finish(attempt, &backend),
                Err(error) => failed(pool, &backend, &error, took),
            };
        }
        let policy = policy.expect("can_retry implies a policy");
        match &attempt {
            Ok((response, _, _)) => {
                tracing::info!(backend = %backend.address, status = %response.status(), retry = retries + 1, "retrying on another backend")
            }
            Err(error) => {
                tracing::info!(backend = %backend.address, %error, retry = retries + 1, "retrying on another backend")
            }
        }
        drop(attempt);
        pool.metrics.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait = crate::rng::with_rng(|rng| backoff(policy.backoff, policy.max_backoff, retries, rng));
        tokio::time::sleep(wait).await;
        retries += 1;
    }
}

/// A response's headers, the connection it came on and the request's
/// in-flight count, which lasts until the response body ends.
type Attempt = (Response<Incoming>, (hyper::client::conn::http1::SendRequest<RequestBody>, Target), InFlight);

/// One attempt on `backend`: a pooled connection, the request, the
/// response headers within the pool's timeout.
async fn send(
    pool: &Pool,
    backend: &Arc<Backend>,
    request: Request<RequestBody>,
) -> Result<Attempt, UpstreamError> {
    let target = Target::new(backend, pool);
    let in_flight = backend.load.start();
    let mut sender = upstream::checkout(&target).await?;
    let response = tokio::time::timeout(pool.timeouts.response_header, sender.send_request(request))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout)?
        .map_err(UpstreamError::Send)?;
    Ok((response, (sender, target), in_flight))
}

/// Streams a backend's response to the client.
fn finish((response, connection, in_flight): Attempt, backend: &Backend) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if parts.status.is_server_error() {
        backend.load.record_error();
    }
    headers::prepare_response(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upstream(body, Some(connection), in_flight))
}

/// Counts and logs a failed attempt on `backend` and answers the client.
fn failed(pool: &Pool, backend: &Backend, error: &UpstreamError, took: u64) -> Response<ProxyBody> {
    backend.load.record_error();
    tracing::warn!(pool = %pool.name, backend = %backend.address, error = %error, took_ms = took / 1_000_000, "request to backend failed");
    respond::plain(error.status(), error.client_message())
}

/// RFC 9110 §9.2.2: methods whose repetition has no further effect.
fn may_retry(method: &Method, policy: &Retries) -> bool {
    policy.retry_non_idempotent
        || matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        )
}

/// The request body ready for replay when it is small enough to keep (or
/// empty); larger bodies stream and are not retried.
async fn replayable(body: Incoming, parts: &Parts, limit: u64) -> Result<RequestBody, Response<ProxyBody>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(RequestBody::Replay(None));
    }
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_none_or(|l| l > limit) {
        return Ok(RequestBody::Streaming(body));
    }
    match body.collect().await {
        Ok(collected) => Ok(RequestBody::Replay(Some(collected.to_bytes()))),
        Err(_) => Err(respond::plain(StatusCode::BAD_REQUEST, "the request body could not be read\n")),
    }
}

fn clone_parts(parts: &Parts) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

fn is_gateway_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

fn outcome_of_status(status: StatusCode) -> Outcome {
    if is_gateway_status(status) {
        Outcome::GatewayFailure
    } else if status.is_server_error() {
        Outcome::ServerError
    } else {
        Outcome::Success
    }
}

fn retry_on_status(policy: &Retries, status: StatusCode) -> bool {
    (policy.on.server_error && status.is_server_error())
        || (policy.on.gateway_error && is_gateway_status(status))
}

fn retry_on_error(policy: &Retries, error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Connect(_) | UpstreamError::ConnectTimeout | UpstreamError::Handshake(_) => {
            policy.on.connect_failure || policy.on.gateway_error
        }
        UpstreamError::Send(_) => policy.on.reset || policy.on.gateway_error,
        UpstreamError::ResponseTimeout => policy.on.gateway_error,
    }
}
