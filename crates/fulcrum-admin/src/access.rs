//! Who may use the admin API: clients of the `[admin] allow` networks
//! (all when unset; others get 403), holding the bearer token (compared in
//! constant time, `subtle`), and not guessing: a client with 10 failed
//! authentications within a second gets 429 for the rest of that second,
//! right token or not, so the answer reveals nothing while it guesses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fulcrum_config::Cidr;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{AdminState, ApiError};

/// Failed authentications per client and second before it gets 429.
pub const MAX_FAILURES_PER_SECOND: u32 = 10;
/// Clients remembered at once; past it only the current second's are kept.
const REMEMBERED_CLIENTS: usize = 10_000;

/// The admin API's access rules.
#[derive(Debug, Default)]
pub struct Access {
    /// Bearer token every route but `/health` needs, when set.
    pub token: Option<String>,
    /// When not empty, only clients of these networks.
    pub allow: Vec<Cidr>,
    failures: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Access {
    /// Rules with `token` and `allow`.
    pub fn new(token: Option<String>, allow: Vec<Cidr>) -> Self {
        Self { token, allow, failures: Mutex::default() }
    }

    fn allows(&self, client: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(client))
    }

    fn guessing(&self, client: IpAddr, second: u64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&client).is_some_and(|&(at, count)| at == second && count >= MAX_FAILURES_PER_SECOND)
    }

    fn failed(&self, client: IpAddr, second: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= REMEMBERED_CLIENTS {
            failures.retain(|_, (at, _)| *at == second);
        }
        let entry = failures.entry(client).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
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
    let second = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if access.guessing(peer.ip(), second) {
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
        access.failed(peer.ip(), second);
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_second_block_the_client_for_that_second() {
        let access = Access::new(Some("secret".into()), Vec::new());
        let (client, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES_PER_SECOND {
            assert!(!access.guessing(client, 100));
            access.failed(client, 100);
        }
        assert!(access.guessing(client, 100));
        assert!(!access.guessing(other, 100), "another client");
        assert!(!access.guessing(client, 101), "the next second");
        assert!(access.token_matches(Some("secret")) && !access.token_matches(Some("secreT")));
        assert!(!access.token_matches(None) && !access.token_matches(Some("")));
    }
}
