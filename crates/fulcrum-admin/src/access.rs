//! Who may use the admin API: clients of the `[admin] allow` networks
//! (all when unset; others get 403), holding the bearer token (compared in
//! constant time, `subtle`), and not guessing: a client with 10 failed
//! authentications within a second of its first gets 429 for the next
//! second, right token or not, so the answer reveals nothing while it
//! guesses. The window starts at the client's first failure, not at a
//! wall-clock second, so a burst cannot slip through by straddling one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fulcrum_config::Cidr;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::{AdminState, ApiError};

/// Failed authentications per client and window before it gets 429.
pub const MAX_FAILURES_PER_SECOND: u32 = 10;
/// The window failures are counted in, and how long a guesser is refused.
const WINDOW: Duration = Duration::from_secs(1);
/// Clients remembered at once; past it only the current second's are kept.
const REMEMBERED_CLIENTS: usize = 10_000;

/// The admin API's access rules.
#[derive(Debug, Default)]
pub struct Access {
    /// Bearer token every route but `/health` needs, when set.
    pub token: Option<String>,
    /// When not empty, only clients of these networks.
    pub allow: Vec<Cidr>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// One client's failed authentications.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// The first failure of the current window.
    since: Instant,
    count: u32,
    /// Refused until then, once `count` reached the limit.
    blocked_until: Option<Instant>,
}

impl Failures {
    fn blocks(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| now < until)
    }

    fn forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= WINDOW && !self.blocks(now)
    }
}

impl Access {
    /// Rules with `token` and `allow`.
    pub fn new(token: Option<String>, allow: Vec<Cidr>) -> Self {
        Self { token, allow, failures: Mutex::default() }
    }

    fn allows(&self, client: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(client))
    }

    fn guessing(&self, client: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&client).is_some_and(|f| f.blocks(now))
    }

    fn failed(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= REMEMBERED_CLIENTS {
            failures.retain(|_, f| !f.forgotten(now));
        }
        let fresh = Failures { since: now, count: 0, blocked_until: None };
        let entry = failures.entry(client).or_insert(fresh);
        if entry.forgotten(now) {
            *entry = fresh;
        }
        entry.count += 1;
        if entry.count >= MAX_FAILURES_PER_SECOND {
            entry.blocked_until = Some(now + WINDOW);
        }
    }

    fn token_matches(&self, given: Option<&str>) -> bool {
        match (&self.token, given) {
            (Some(token), Some(given)) => bool::from(token.as_bytes().ct_eq(given.as_bytes())),
            _ => false,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// 403 for clients outside `allow`, on every route.
pub async fn require_network(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if state.access.allows(peer.ip()) {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "the admin API does not serve your network").into_response()
    }
}

/// 401 without the token, 429 while a client is guessing it.
pub async fn require_token(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<TokenQuery>,
    request: Request,
    next: Next,
) -> Response {
    let access: &Arc<Access> = &state.access;
    if access.token.is_none() {
        return next.run(request).await;
    }
    let now = Instant::now();
    if access.guessing(peer.ip(), now) {
        let mut response =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many failed authentications; wait a second")
                .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if access.token_matches(bearer) || access.token_matches(query.token.as_deref()) {
        next.run(request).await
    } else {
        access.failed(peer.ip(), now);
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_within_a_second_block_the_client_for_a_second() {
        let access = Access::new(Some("secret".into()), Vec::new());
        let (client, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Straddling what would be a wall-clock second boundary changes nothing.
        for i in 0..u64::from(MAX_FAILURES_PER_SECOND) {
            assert!(!access.guessing(client, at(900 + i * 10)));
            access.failed(client, at(900 + i * 10));
        }
        assert!(access.guessing(client, at(990)));
        assert!(access.guessing(client, at(1989)), "a second after the 10th failure");
        assert!(!access.guessing(other, at(990)), "another client");
        assert!(!access.guessing(client, at(1990)), "after that second");
        access.failed(client, at(1990));
        assert!(!access.guessing(client, at(1991)), "a new window counts from one");
        assert!(access.token_matches(Some("secret")) && !access.token_matches(Some("secreT")));
        assert!(!access.token_matches(None) && !access.token_matches(Some("")));
    }

    #[test]
    fn slow_failures_never_block() {
        let access = Access::new(Some("secret".into()), Vec::new());
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let start = Instant::now();
        for i in 0..30 {
            let now = start + Duration::from_millis(i * 150);
            assert!(!access.guessing(client, now), "failure {i}");
            access.failed(client, now);
        }
        assert!(access.token_matches(Some("secret")) && !access.token_matches(Some("secreT")));
        assert!(!access.token_matches(None) && !access.token_matches(Some("")));
    }
}
