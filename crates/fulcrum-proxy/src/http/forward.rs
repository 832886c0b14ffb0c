//! One HTTP request's path: check → route → pick → forward (retrying on
//! another backend when the policy allows) → stream the response back.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use fulcrum_balance::resilience::{backoff, Outcome};
use fulcrum_balance::InFlight;
use fulcrum_config::{Retries, UpstreamProtocol};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BackendBody, ProxyBody};
use super::headers::{self, ClientInfo};
use super::idle::InFlightRequest;
use super::{grpc, respond, rewrite, upgrade, validate};
use crate::affinity::{Placement, Session};
use crate::attempt::Attempt;
use crate::backend::Backend;
use crate::error::UpstreamError;
use crate::pool::Pool;
use crate::proxy_protocol::Endpoints;
use crate::request_body::{ClientBody, RequestBody};
use crate::state::ListenerState;
use crate::upstream::{self, Target};
use crate::upstream_h1::Deadline;
use crate::upstream_tls::Offer;
use crate::{clock, hash_key};

/// What every request on one client connection shares.
#[derive(Debug)]
pub struct Connection {
    /// The listener's current routes and pools (swapped on reload).
    pub state: Arc<arc_swap::ArcSwap<ListenerState>>,
    /// The client, for `X-Forwarded-*` and hash keys.
    pub client: ClientInfo,
    /// Reads and requests in flight, for the idle timeouts.
    pub activity: Arc<super::idle::Activity>,
    /// The listener's door, which counts refusals.
    pub gate: Arc<crate::gate::Gate>,
    /// A protocol switch waiting for the connection to splice it.
    pub switch: upgrade::Switch,
}

/// What forwarding tried, for the access log.
#[derive(Debug, Default)]
struct Attempted {
    backend: Option<std::net::SocketAddr>,
    retries: u32,
    upstream_nanos: Option<u64>,
    /// How the request's session was placed (pools with affinity).
    placement: Option<Placement>,
    /// Why admission refused it: `rate_limited`, `shed:deadline`, `shed:queue_full`.
    refusal: Option<&'static str>,
}

/// Why a request found no backend.
#[derive(Debug, Clone, Copy)]
enum Unplaced {
    /// No backend of the pool can take it.
    NoBackend,
    /// Its session may not move and its backend cannot serve.
    SessionUnavailable,
}

impl Unplaced {
    fn response(self) -> Response<ProxyBody> {
        match self {
            Self::NoBackend => respond::no_backend(),
            Self::SessionUnavailable => respond::session_unavailable(),
        }
    }
}

/// What decides where a request goes: its hash key, its client and its session.
#[derive(Debug)]
struct Origin {
    key: Option<u64>,
    client: std::net::IpAddr,
    session: Option<Session>,
    /// The client came over TLS (affinity cookies are `Secure`).
    secure: bool,
}

impl Origin {
    /// The first attempt: the session's backend when it can serve, else the
    /// algorithm's pick — or, when the session may not move (`mode =
    /// "hard"`), a 503.
    fn first_pick<'p>(&mut self, pool: &'p Pool, now: u64) -> Result<Attempt<'p>, Unplaced> {
        if let Some(session) = &mut self.session {
            if let Some(bound) = session.bound {
                if let Some(attempt) = pool.pick_bound(bound, now) {
                    return Ok(attempt);
                }
                session.fail_over();
                if self.pinned(pool) {
                    return Err(Unplaced::SessionUnavailable);
                }
            }
        }
        pool.pick(self.key, Some(self.client), &[], now).ok_or(Unplaced::NoBackend)
    }

    /// Whether the request belongs to a session that may not move.
    fn pinned(&self, pool: &Pool) -> bool {
        self.session.as_ref().is_some_and(|s| s.bound.is_some())
            && pool.affinity.as_ref().is_some_and(|a| a.is_hard())
    }

    /// Binds the session to `backend`, which answered it, and adds the
    /// session cookie to `response` when it changed.
    async fn bind(&mut self, pool: &Pool, backend: &Backend, response: &mut Response<ProxyBody>) {
        let (Some(affinity), Some(session)) = (&pool.affinity, &mut self.session) else { return };
        if let Some(cookie) = affinity.bind(session, backend, self.secure).await {
            response.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
    }

    fn placement(&self) -> Option<Placement> {
        self.session.as_ref().map(|s| s.placement)
    }
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Serves one request; never fails (failures are answered with a status).
/// The request counts as in flight on its connection from the moment hyper
/// hands it over (before its future is first polled: hyper reads the
/// connection again in between, and a head deadline must not start for a
/// request already received) until its response body has been sent.
///
/// The request's future is [`serve_request`]'s own, not one awaiting it:
/// an `async` wrapper would copy the whole of it (kilobytes) into itself
/// when first polled.
pub fn handle(
    request: Request<Incoming>,
    connection: Arc<Connection>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
    let http1 = request.version() <= http::Version::HTTP_11;
    let in_flight = InFlightRequest::new(&connection.activity, http1);
    let (parts, body) = request.into_parts();
    serve_request(parts, ClientBody::Hyper(body), connection, in_flight)
}

/// Serves one HTTP/3 request (its connection is QUIC's: never rotated).
pub async fn handle_quic(
    parts: Parts,
    body: crate::http3::QuicBody,
    connection: Arc<Connection>,
) -> Response<ProxyBody> {
    let in_flight = InFlightRequest::new(&connection.activity, false);
    let Ok(response) = serve_request(parts, ClientBody::Quic(Box::new(body)), connection, in_flight).await;
    response
}

/// Routes, admits and forwards a request, and answers it.
async fn serve_request(
    mut parts: Parts,
    body: ClientBody,
    connection: Arc<Connection>,
    in_flight: InFlightRequest,
) -> Result<Response<ProxyBody>, Infallible> {
    let client = connection.client.addr();
    let (routed, access_log, listener_limit, limits, hsts, alt_svc) = {
        let state = connection.state.load();
        let routed = state.route(&parts, client);
        let (hsts, alt_svc) = (state.hsts.clone(), state.alt_svc.clone());
        (routed, state.access_log.clone(), state.rate_limit.clone(), state.limits, hsts, alt_svc)
    };
    let pool = routed.pool;
    let route = routed.route.as_deref();
    // Templates read the request as the client sent it.
    let variables = route.filter(|r| uses_variables(r)).map(|r| {
        if uses_request_id(r) {
            request_id(&mut parts);
        }
        let scheme = if connection.client.proto == "https" { "https" } else { "http" };
        Box::new(rewrite::Variables::of(&parts, client, scheme))
    });
    let logging = access_log.map(|log| (log, request_id(&mut parts)));
    // The request's start, read only for what reports its duration (the
    // access log, a canary's comparison of its sides); each attempt reads
    // its own.
    let started = (logging.is_some() || routed.side.is_some()).then(clock::now_nanos).unwrap_or_default();
    // The client's request line and headers as received, for the log.
    let original = logging.as_ref().map(|_| headers::clone_parts(&parts));
    // Every answer goes out through here, once.
    let answer = |mut response: Response<ProxyBody>, pool: Option<&Pool>, attempted: Attempted| {
        if let (Some(route), Some(variables)) = (route, &variables) {
            rewrite::apply(response.headers_mut(), &route.response_headers, variables);
        }
        if let Some(hsts) = &hsts {
            response.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if let Some(alt_svc) = &alt_svc {
            response.headers_mut().insert(http::header::ALT_SVC, alt_svc.clone());
        }
        if let (Some(affinity), Some(placement)) =
            (pool.and_then(|p| p.affinity.as_ref()), attempted.placement)
        {
            affinity.count(placement);
        }
        if let (Some((log, request_id)), Some(head)) = (&logging, &original) {
            let mut entry = entry(head, started, client, request_id.clone(), &attempted, response.status());
            if let Some(pool) = pool {
                entry.pool = Arc::clone(&pool.name);
                entry.reason = reason(pool, &attempted);
            }
            response.body_mut().log_when_sent(Arc::clone(log), entry);
        }
        // The connection's last request says so in its response, so the client
        // sends nothing more on it (closing after it would race the next request).
        if in_flight.is_last() {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        response.body_mut().hold(in_flight);
        Ok(response)
    };
    if let Some((status, reason)) = validate::refuse(&parts) {
        return answer(respond::plain(status, reason), None, Attempted::default());
    }
    let declared = body.declared_length();
    if let Some((why, status, message)) = beyond_limits(&parts, &limits, routed.denied, declared) {
        connection.gate.refuse(why);
        let attempted = Attempted { refusal: Some(why.name()), ..Attempted::default() };
        return answer(respond::plain(status, message), Some(&pool), attempted);
    }
    let body = RequestBody::streaming(body, limits.max_body_bytes);
    for limit in
        [listener_limit.as_deref(), route.and_then(|r| r.rate_limit.as_deref())].into_iter().flatten()
    {
        if let Err(refused) = limit.check(&parts, client).await {
            let attempted = Attempted { refusal: Some("rate_limited"), ..Attempted::default() };
            return answer(respond::rate_limited(limit, refused), Some(&pool), attempted);
        }
    }
    if let (Some(redirect), Some(variables)) = (route.and_then(|r| r.redirect()), &variables) {
        return answer(
            respond::redirect(redirect.status, &variables.expand(&redirect.to)),
            None,
            Attempted::default(),
        );
    }
    let key = pool.config.algorithm.uses_key().then(|| hash_key::request_key(&parts, client, &pool.config));
    let session = match &pool.affinity {
        Some(affinity) => affinity.lookup(&parts, client).await,
        None => None,
    };
    let mut origin = Origin { key, client, session, secure: connection.client.proto == "https" };
    let upgrade = headers::is_upgrade(&parts);
    // `TE: trailers` is hop-by-hop, but HTTP/2 carries it end to end (RFC
    // 9113 §8.2.2) and gRPC backends require it.
    let te_trailers = pool.config.protocol.is_h2()
        && parts.headers.get(http::header::TE).is_some_and(|te| te.as_bytes() == b"trailers");
    headers::prepare_request(&mut parts, &connection.client, upgrade);
    if te_trailers {
        parts.headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    if let Some(route) = route.filter(|r| r.rewrites_request()) {
        if let Some(variables) = &variables {
            rewrite::apply(&mut parts.headers, &route.request_headers, variables);
        }
        if route.strip_prefix.is_some() || route.rewrite_prefix.is_some() {
            parts.uri = rewrite::rewrite_path(
                &parts.uri,
                route.strip_prefix.as_deref(),
                route.rewrite_prefix.as_deref(),
            );
        }
    }
    // The upstream HTTP/1.1 client, like hyper's, sends no body for a GET
    // or HEAD of unknown length unless told to: a client's chunked GET
    // body is forwarded chunked.
    if !http_body::Body::is_end_stream(&body)
        && matches!(parts.method, Method::GET | Method::HEAD)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        parts.headers.insert(http::header::TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
    }
    if upgrade {
        let attempt = match origin.first_pick(&pool, clock::now_nanos()) {
            Ok(attempt) => attempt,
            Err(unplaced) => {
                let attempted = Attempted { placement: origin.placement(), ..Attempted::default() };
                return answer(unplaced.response(), Some(&pool), attempted);
            }
        };
        let backend = Arc::clone(attempt.backend());
        let target = Target::for_client(&backend, &pool, &connection.client.endpoints);
        let request = Request::from_parts(parts, body);
        // Boxed: protocol switches are rare, and their future is large.
        let timeout = pool.timeouts.response_header;
        let forwarded =
            Box::pin(upgrade::forward(request, &target, timeout, backend.load.start(), &connection.switch))
                .await;
        let now = clock::now_nanos();
        let response = match forwarded {
            Ok(mut response) => {
                let status = response.status();
                attempt.finish(outcome_of_status(status), status.as_u16(), now);
                origin.bind(&pool, &backend, &mut response).await;
                response
            }
            Err(error) if error.is_client_fault() => respond::plain(error.status(), error.client_message()),
            Err(error) => {
                let took = attempt.finish(Outcome::GatewayFailure, error.status().as_u16(), now);
                failed(&pool, &backend, &error, took)
            }
        };
        let attempted = Attempted {
            backend: Some(backend.address),
            placement: origin.placement(),
            ..Attempted::default()
        };
        return answer(response, Some(&pool), attempted);
    }
    // Admission control holds a slot until the response body has been sent.
    let ticket = match &pool.admission {
        Some(admission) => {
            let class = admission.class(route.map_or(fulcrum_config::DEFAULT_CLASS, |r| &r.class));
            match admission.admit(class).await {
                Ok(ticket) => Some(ticket),
                Err(shed) => {
                    let attempted = Attempted { refusal: Some(shed.log_reason()), ..Attempted::default() };
                    return answer(respond::shed(shed), Some(&pool), attempted);
                }
            }
        }
        None => None,
    };
    let body = match route.and_then(|r| r.mirror.as_ref()).filter(|m| m.chosen()) {
        // Boxed: the rare copy should not grow every request's future.
        Some(mirror) => {
            match Box::pin(mirror_copy(mirror, &pool, &parts, body, connection.client.endpoints)).await {
                Ok(body) => body,
                Err(response) => return answer(response, Some(&pool), Attempted::default()),
            }
        }
        None => body,
    };
    let mut deadline = pool.timeouts.request.map(|limit| tokio::time::Instant::now() + limit);
    // A gRPC call's own deadline, when sooner.
    let call_deadline = pool.config.protocol.is_h2().then(|| grpc::timeout(&parts)).flatten().map(|limit| {
        let at = tokio::time::Instant::now() + limit;
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
        at
    });
    let forwarding = forward(&pool, parts, body, &mut origin, &connection.client.endpoints, deadline);
    // Attempts charge a timeout to their backend themselves; this bound
    // covers what happens between them (reading a replayable body, backoff).
    let (mut response, mut attempted) = match deadline {
        None => forwarding.await,
        Some(deadline) => tokio::time::timeout_at(deadline, forwarding)
            .await
            .unwrap_or_else(|_| (request_timeout(), Attempted::default())),
    };
    if call_deadline.is_some_and(|at| tokio::time::Instant::now() >= at)
        && response.status() == StatusCode::GATEWAY_TIMEOUT
    {
        response = grpc::deadline_exceeded();
    }
    attempted.placement = origin.placement();
    if let (Some(side), Some(canary)) = (routed.side, route.and_then(|r| r.canary())) {
        canary.record(side, response.status().is_server_error(), clock::now_nanos().saturating_sub(started));
    }
    // A chunked body cut off at `max_body_bytes` is the one refusal forwarding makes.
    if attempted.refusal == Some(crate::gate::Refused::BodyTooLarge.name()) {
        connection.gate.refuse(crate::gate::Refused::BodyTooLarge);
    }
    if let Some(ticket) = ticket {
        response.body_mut().hold_ticket(ticket);
    }
    answer(response, Some(&pool), attempted)
}

/// Whether the route's templates need the request's variables.
fn uses_variables(route: &crate::route::CompiledRoute) -> bool {
    route.redirect().is_some() || !route.request_headers.is_empty() || !route.response_headers.is_empty()
}

fn uses_request_id(route: &crate::route::CompiledRoute) -> bool {
    use fulcrum_config::Variable::RequestId;
    route.redirect().is_some_and(|r| r.to.uses(RequestId))
        || rewrite::rules_use(&route.request_headers, RequestId)
        || rewrite::rules_use(&route.response_headers, RequestId)
}

/// Sends a copy of the request to the route's shadow pool. A body is
/// copied when it is small enough to keep (the pool's `max_replay_body`);
/// the primary then forwards the kept bytes.
async fn mirror_copy(
    mirror: &crate::release::mirror::Mirror,
    pool: &Pool,
    parts: &Parts,
    body: RequestBody,
    endpoints: Endpoints,
) -> Result<RequestBody, Response<ProxyBody>> {
    let limit =
        pool.config.retries.as_ref().map_or(fulcrum_config::DEFAULT_MAX_REPLAY_BODY, |r| r.max_replay_body);
    let body = replayable(body, parts, limit).await?;
    match &body {
        RequestBody::Replay(bytes) => mirror.send(headers::clone_parts(parts), bytes.clone(), endpoints),
        _ => mirror.slots.count(crate::release::mirror::MirrorResult::TooLarge),
    }
    Ok(body)
}

/// Why a request is refused by the listener's limits or its route's
/// `allow` before any of it is forwarded: the reason counted, the status
/// and what the client reads. A chunked body past `max_body_bytes` is cut
/// off while it streams instead.
pub(super) fn beyond_limits(
    parts: &Parts,
    limits: &fulcrum_config::Limits,
    route_denied: bool,
    declared_body: Option<u64>,
) -> Option<(crate::gate::Refused, StatusCode, &'static str)> {
    use crate::gate::Refused;
    if route_denied {
        return Some((
            Refused::RouteDenied,
            StatusCode::FORBIDDEN,
            "this route does not serve your network\n",
        ));
    }
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.max_uri_bytes {
        return Some((Refused::UriTooLong, StatusCode::URI_TOO_LONG, "the request target is too long\n"));
    }
    if parts.version < http::Version::HTTP_2 && head_bytes(parts, target) > limits.max_header_bytes {
        return Some((
            Refused::HeadTooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than this listener accepts\n",
        ));
    }
    if declared_body.is_some_and(|length| length > limits.max_body_bytes) {
        return Some((
            Refused::BodyTooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this listener accepts\n",
        ));
    }
    None
}

/// The size of an HTTP/1 request's head as it was written (request line,
/// `name: value` lines, blank line). hyper's own bound on its read buffer
/// refuses most larger heads, but not all: a head that arrives in a few
/// large reads can pass it by up to one read. HTTP/2 and HTTP/3 header
/// lists are bounded exactly by their own settings.
fn head_bytes(parts: &Parts, target: usize) -> usize {
    const REQUEST_LINE_EXTRA: usize = " HTTP/1.1\r\n".len() + 1;
    let fields: usize = parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    parts.method.as_str().len() + target + REQUEST_LINE_EXTRA + fields + 2
}

/// 504 when the pool's request timeout ran out.
fn request_timeout() -> Response<ProxyBody> {
    respond::plain(StatusCode::GATEWAY_TIMEOUT, "the request took longer than the pool's request timeout\n")
}

/// The request's `X-Request-Id`, generated (and added, so the backend gets
/// it) when the client sent none.
fn request_id(parts: &mut Parts) -> String {
    if let Some(id) = parts.headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        return id.to_string();
    }
    let id = crate::access_log::new_request_id();
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), http::HeaderValue::from_str(&id).expect("hex is a valid header value"));
    id
}

/// Why the request went where it did, for the access log: the session's
/// placement first when the pool has affinity (`affinity:hit` needed no
/// algorithm), then the algorithm and what it hashed.
fn reason(pool: &Pool, attempted: &Attempted) -> String {
    use fulcrum_config::HashKey;
    if let Some(refusal) = attempted.refusal {
        return refusal.into();
    }
    if attempted.placement == Some(Placement::Hit) && attempted.backend.is_some() {
        return "affinity:hit".into();
    }
    let mut reason = match attempted.placement {
        Some(placement) => format!("affinity:{}, {}", placement.name(), pool.config.algorithm.name()),
        None => pool.config.algorithm.name().to_string(),
    };
    if pool.config.algorithm.uses_key() {
        reason += match &pool.config.hash_key {
            HashKey::ClientIp => " on client_ip".to_string(),
            HashKey::Path => " on path".to_string(),
            HashKey::Header(name) => format!(" on header:{name}"),
            HashKey::Cookie(name) => format!(" on cookie:{name}"),
            HashKey::Query(name) => format!(" on query:{name}"),
        }
        .as_str();
    }
    if attempted.backend.is_none() {
        reason += ", no backend available";
    } else if attempted.retries > 0 {
        reason += &format!(", after {} failed attempt(s) elsewhere", attempted.retries);
    }
    reason
}

fn entry(
    parts: &Parts,
    started: u64,
    client: std::net::IpAddr,
    request_id: String,
    attempted: &Attempted,
    status: StatusCode,
) -> crate::access_log::Entry {
    crate::access_log::Entry {
        started,
        request_id,
        client,
        method: parts.method.clone(),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
        user_agent: parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        pool: "-".into(),
        backend: attempted.backend,
        reason: String::new(),
        retries: attempted.retries,
        upstream_nanos: attempted.upstream_nanos,
        status: status.as_u16(),
    }
}

/// The attempts of one request: the first, then retries on other backends.
async fn forward(
    pool: &Arc<Pool>,
    parts: Parts,
    body: RequestBody,
    origin: &mut Origin,
    endpoints: &Endpoints,
    deadline: Option<tokio::time::Instant>,
) -> (Response<ProxyBody>, Attempted) {
    let policy = pool.config.retries.as_ref().filter(|r| r.attempts > 0 && may_retry(&parts.method, r));
    let mut body = match policy {
        Some(policy) => match replayable(body, &parts, policy.max_replay_body).await {
            Ok(body) => body,
            Err(response) => return (response, Attempted::default()),
        },
        None => body,
    };
    let replay = matches!(body, RequestBody::Replay(_));
    pool.record_request();
    // Retry bookkeeping (tried backends, a copy of the request head) is
    // only paid for while another attempt is still possible.
    let mut parts = Some(parts);
    let mut tried = Vec::new();
    let mut retries = 0;
    let mut attempted = Attempted::default();
    loop {
        let retry_possible = replay && policy.is_some_and(|p| retries < p.attempts);
        let started = clock::now_nanos();
        let picked = if retries == 0 {
            origin.first_pick(pool, started)
        } else {
            pool.pick(origin.key, Some(origin.client), &tried, started).ok_or(Unplaced::NoBackend)
        };
        let attempt = match picked {
            Ok(attempt) => attempt,
            Err(unplaced) => {
                attempted.backend = None;
                return (unplaced.response(), attempted);
            }
        };
        let backend = Arc::clone(attempt.backend());
        attempted.backend = Some(backend.address);
        attempted.retries = retries;
        let head = match (&parts, retry_possible) {
            (Some(head), true) => {
                tried.push(backend.id);
                headers::clone_parts(head)
            }
            _ => parts.take().expect("the request head is taken only by the last attempt"),
        };
        let this_body = match &mut body {
            RequestBody::Replay(bytes) => RequestBody::Replay(bytes.clone()),
            streaming => std::mem::replace(streaming, RequestBody::Replay(None)),
        };
        let request = Request::from_parts(head, this_body);
        let sent = match deadline {
            None => send(pool, &backend, request, endpoints, started).await,
            Some(deadline) => {
                tokio::time::timeout_at(deadline, send(pool, &backend, request, endpoints, started))
                    .await
                    .unwrap_or(Err(UpstreamError::RequestTimeout))
            }
        };
        let now = clock::now_nanos();
        // Every attempt counts against its backend, retried or not — unless
        // the client broke it: a bad or abandoned request body is never the
        // backend's failure (the attempt is dropped unrecorded).
        let (outcome, status, retryable) = match &sent {
            Ok((response, _)) if pool.config.protocol.is_h2() && grpc::unavailable(response.headers()) => {
                // UNAVAILABLE: the backend could not serve the call (502's meaning).
                let gateway = StatusCode::BAD_GATEWAY;
                (Outcome::GatewayFailure, gateway, policy.is_some_and(|p| retry_on_status(p, gateway)))
            }
            Ok((response, _)) => {
                let status = response.status();
                (outcome_of_status(status), status, policy.is_some_and(|p| retry_on_status(p, status)))
            }
            Err(error) if error.is_client_fault() => {
                drop(attempt);
                attempted.upstream_nanos = Some(now.saturating_sub(started));
                if matches!(error, UpstreamError::BodyTooLarge) {
                    attempted.refusal = Some(crate::gate::Refused::BodyTooLarge.name());
                }
                return (respond::plain(error.status(), error.client_message()), attempted);
            }
            Err(error) => {
                (Outcome::GatewayFailure, error.status(), policy.is_some_and(|p| retry_on_error(p, error)))
            }
        };
        let took = attempt.finish(outcome, status.as_u16(), now);
        attempted.upstream_nanos = Some(took);
        // A refused connection did no work upstream, so retrying it cannot
        // amplify load: it is not charged to the retry budget, which exists
        // to stop retry storms on struggling backends (timeouts, resets, 5xx).
        let refused = matches!(sent, Err(UpstreamError::Connect(_)));
        let pinned = origin.pinned(pool);
        let can_retry = retry_possible && retryable && !pinned && (refused || pool.try_retry());
        if !can_retry {
            let response = match sent {
                Ok(sent) => {
                    let mut response = finish(sent);
                    origin.bind(pool, &backend, &mut response).await;
                    response
                }
                Err(error) => {
                    let response = failed(pool, &backend, &error, took);
                    // A session that may not move has lost its backend (it
                    // refused the connection or dropped it mid-request).
                    let unreachable = matches!(
                        error,
                        UpstreamError::Connect(_)
                            | UpstreamError::ConnectTimeout
                            | UpstreamError::Tls(_)
                            | UpstreamError::Send(_)
                    );
                    if pinned && unreachable {
                        respond::session_unavailable()
                    } else {
                        response
                    }
                }
            };
            return (response, attempted);
        }
        let policy = policy.expect("can_retry implies a policy");
        match &sent {
            Ok((response, _)) => {
                tracing::info!(backend = %backend.address, status = %response.status(), retry = retries + 1, "retrying on another backend")
            }
            Err(error) => {
                tracing::info!(backend = %backend.address, %error, retry = retries + 1, "retrying on another backend")
            }
        }
        drop(sent);
        pool.metrics.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wait = crate::rng::with_rng(|rng| backoff(policy.backoff, policy.max_backoff, retries, rng));
        tokio::time::sleep(wait).await;
        retries += 1;
    }
}

/// A response's headers, its body (which holds its HTTP/1.1 connection)
/// and the request's in-flight count, which lasts until the body ends.
pub type Sent = (Response<BackendBody>, InFlight);

/// One attempt on `backend`: a pooled connection, the request, the
/// response headers within the pool's timeout. (Mirrored copies go
/// through here too, so the upstream calls stay inlined in one place.)
pub async fn send(
    pool: &Pool,
    backend: &Arc<Backend>,
    request: Request<RequestBody>,
    endpoints: &Endpoints,
    started: u64,
) -> Result<Sent, UpstreamError> {
    let target = Target::for_client(backend, pool, endpoints);
    let in_flight = backend.load.start();
    if pool.config.protocol != UpstreamProtocol::Http1 && backend.negotiated.h2() != Some(false) {
        return Box::pin(send_h2(pool, backend, target, request, in_flight)).await;
    }
    // The attempt's start is the time to judge idle connections by and,
    // for a reused one, the start of the wait for the head; a new one's
    // wait starts once it is open.
    let started = clock::instant_at(started);
    let (connection, reused) = upstream::checkout(&target, started).await?;
    let sent = if reused { started } else { tokio::time::Instant::now() };
    let deadline = Deadline::after(sent, pool.timeouts.response_header);
    let response = upstream::send(&target, (connection, reused), request, deadline).await?;
    Ok((response.map(|body| BackendBody::Http1(body, target)), in_flight))
}

/// One attempt on an HTTP/2 backend: the request made HTTP/2, sent on the
/// backend's shared connection. An `auto` pool's backend is asked first:
/// if it picks HTTP/1.1, the request goes on that connection as HTTP/1.1.
#[cold]
async fn send_h2(
    pool: &Pool,
    backend: &Backend,
    target: Target,
    request: Request<RequestBody>,
    in_flight: InFlight,
) -> Result<Sent, UpstreamError> {
    let auto = pool.config.protocol == UpstreamProtocol::Auto;
    let limit = pool.timeouts.response_header;
    let mut opened = None;
    if auto && backend.negotiated.h2().is_none() {
        let stream = upstream::open(&target, Offer::Pool).await?;
        let h2 = upstream::speaks_h2(&stream);
        backend.negotiated.learn(h2);
        if !h2 {
            let connection = crate::upstream_h1::Connection::new(stream);
            let deadline = Deadline::after(tokio::time::Instant::now(), limit);
            let response = upstream::send(&target, (connection, false), request, deadline).await?;
            return Ok((response.map(|body| BackendBody::Http1(body, target)), in_flight));
        }
        opened = Some(stream);
    }
    let (mut parts, body) = request.into_parts();
    crate::upstream_h2::to_h2(&mut parts, target.address, target.tls.is_some());
    let request = Request::from_parts(parts, body);
    let sent = crate::upstream_h2::send(&target, request, limit, opened).await;
    if auto && sent.is_err() {
        backend.negotiated.forget();
    }
    Ok((sent?.map(BackendBody::Http2), in_flight))
}

/// Streams a backend's response to the client.
fn finish((response, in_flight): Sent) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::prepare_response(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upstream(body, in_flight))
}

/// Logs a failed attempt on `backend` and answers the client.
fn failed(pool: &Pool, backend: &Backend, error: &UpstreamError, took: u64) -> Response<ProxyBody> {
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
async fn replayable(
    body: RequestBody,
    parts: &Parts,
    limit: u64,
) -> Result<RequestBody, Response<ProxyBody>> {
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
        return Ok(body);
    }
    match body.collect().await {
        Ok(collected) => Ok(RequestBody::Replay(Some(collected.to_bytes()))),
        Err(_) => Err(respond::plain(StatusCode::BAD_REQUEST, "the request body could not be read\n")),
    }
}

fn is_gateway_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// How a response of `status` counts against its backend.
pub fn outcome_of_status(status: StatusCode) -> Outcome {
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
        UpstreamError::Connect(_)
        | UpstreamError::ConnectTimeout
        | UpstreamError::Handshake(_)
        | UpstreamError::Tls(_) => policy.on.connect_failure || policy.on.gateway_error,
        UpstreamError::Send(_) => policy.on.reset || policy.on.gateway_error,
        UpstreamError::ResponseTimeout => policy.on.gateway_error,
        UpstreamError::RequestTimeout | UpstreamError::ClientBody(_) | UpstreamError::BodyTooLarge => false,
    }
}
