//! What one listener serves — protocol, routes, pools, certificates —
//! as of the last (re)load. The accept loop holds it behind an `ArcSwap`
//! and a reload replaces it whole, so new requests see the new config
//! while requests in flight finish on the old.

use std::sync::Arc;

use fulcrum_config::Protocol;
use http::request::Parts;

use crate::admission::rate_limit::RateLimiter;
use crate::pool::Pool;
use crate::release::canary::Side;
use crate::route::{request_host, CompiledRoute};

/// What one listener serves, as of the last (re)load.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener's name.
    pub name: String,
    /// What it speaks.
    pub protocol: Protocol,
    /// Routing rules, first match wins.
    pub routes: Vec<Arc<CompiledRoute>>,
    /// Pool for requests no rule matches.
    pub default_pool: Arc<Pool>,
    /// TLS acceptor, for https.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Clients may present certificates (`tls.client_ca`), whose subject backends are told.
    pub client_certificates: bool,
    /// Where requests are logged, when `[log] access` is on.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// The rate limit every request of the listener counts against.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// Networks let in and kept out at accept.
    pub access: fulcrum_config::AccessList,
    /// Client regions for `deny_regions`.
    pub geo: Option<Arc<fulcrum_config::Geo>>,
    /// Connections open at once at most.
    pub max_connections: Option<usize>,
    /// Connections open at once per client address at most.
    pub max_connections_per_ip: Option<usize>,
    /// Request limits.
    pub limits: fulcrum_config::Limits,
    /// Flow settings, for udp.
    pub udp: fulcrum_config::Udp,
    /// PROXY headers taken, and from whom.
    pub proxy_protocol: Option<fulcrum_config::ProxyProtocol>,
    /// `Strict-Transport-Security` on every response, for https.
    pub hsts: Option<http::HeaderValue>,
    /// HTTP/3's TLS and transport settings, for https listeners with `http3`.
    pub h3: Option<Arc<quinn::ServerConfig>>,
    /// `Alt-Svc` on every response, pointing at HTTP/3 when it is served.
    pub alt_svc: Option<http::HeaderValue>,
    /// HTTP connection settings, built from `limits`.
    pub builders: Arc<crate::http::Builders>,
}

/// Where a request goes and what admits it.
#[derive(Debug)]
pub struct Routed {
    /// The pool (the listener's for a redirect, which forwards nothing).
    pub pool: Arc<Pool>,
    /// The matching route, if any.
    pub route: Option<Arc<CompiledRoute>>,
    /// The side of the route's canary the request went to, if it has one.
    pub side: Option<Side>,
    /// The matching route does not allow the client's network.
    pub denied: bool,
}

impl ListenerState {
    /// Where a request from `client` goes.
    pub fn route(&self, request: &Parts, client: std::net::IpAddr) -> Routed {
        let unrouted =
            || Routed { pool: Arc::clone(&self.default_pool), route: None, side: None, denied: false };
        if self.routes.is_empty() {
            return unrouted();
        }
        let host = request_host(request);
        let Some(route) = self.routes.iter().find(|r| r.matches(request, host)) else { return unrouted() };
        let (pool, side) = match route.pick(request, client) {
            Some((pool, side)) => (Arc::clone(pool), side),
            None => (Arc::clone(&self.default_pool), None),
        };
        Routed {
            pool,
            side,
            denied: !route.allow.is_empty() && !route.allow.iter().any(|net| net.contains(client)),
            route: Some(Arc::clone(route)),
        }
    }
}
