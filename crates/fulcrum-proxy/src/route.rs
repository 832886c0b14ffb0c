//! L7 routing: a listener's rules, compiled against the running pools.
//! Rules are tried in order and the first whose every condition matches
//! wins; a split picks one of its pools at random in proportion to weight.

use std::sync::Arc;

use fulcrum_config::{HostMatch, Route, RouteTarget};
use http::request::Parts;
use http::HeaderName;

use crate::admission::rate_limit::RateLimiter;
use crate::pool::Pool;

/// One compiled rule.
#[derive(Debug)]
pub struct CompiledRoute {
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    methods: Vec<http::Method>,
    headers: Vec<(HeaderName, String)>,
    target: Target,
    /// The rate limit of matching requests, besides the listener's.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// The traffic class of matching requests.
    pub class: Arc<str>,
    /// When not empty, only clients of these networks (others get 403).
    pub allow: Vec<fulcrum_config::Cidr>,
}

#[derive(Debug)]
enum Target {
    Pool(Arc<Pool>),
    Split { pools: Vec<(Arc<Pool>, u32)>, total: u32 },
}

impl CompiledRoute {
    /// Compiles `route`, resolving pool names through `pool_by_name`
    /// (validation guarantees they exist).
    pub fn compile(
        route: &Route,
        pool_by_name: &dyn Fn(&str) -> Arc<Pool>,
        limit_by_name: &dyn Fn(&str) -> Arc<RateLimiter>,
    ) -> Self {
        let target = match &route.target {
            RouteTarget::Pool(name) => Target::Pool(pool_by_name(name)),
            RouteTarget::Split(parts) => Target::Split {
                pools: parts.iter().map(|(name, w)| (pool_by_name(name), *w)).collect(),
                total: parts.iter().map(|(_, w)| w).sum(),
            },
        };
        Self {
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            methods: route.methods.iter().filter_map(|m| m.parse().ok()).collect(),
            headers: route.headers.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.clone()))).collect(),
            target,
            rate_limit: route.rate_limit.as_deref().map(limit_by_name),
            class: route.class.as_str().into(),
            allow: route.allow.clone(),
        }
    }

    /// Whether the request matches every condition of this rule.
    pub fn matches(&self, request: &Parts, host: Option<&str>) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(HostMatch::Exact(want)), Some(host)) => host.eq_ignore_ascii_case(want),
            (Some(HostMatch::Wildcard(suffix)), Some(host)) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
            (Some(_), None) => false,
        };
        host_ok
            && self.path_prefix.as_ref().is_none_or(|p| request.uri.path().starts_with(p.as_str()))
            && (self.methods.is_empty() || self.methods.contains(&request.method))
            && self
                .headers
                .iter()
                .all(|(name, want)| request.headers.get(name).is_some_and(|v| v == want.as_str()))
    }

    /// The pool this rule sends a matching request to.
    pub fn pool(&self) -> &Arc<Pool> {
        match &self.target {
            Target::Pool(pool) => pool,
            Target::Split { pools, total } => {
                let mut ticket = crate::rng::with_rng(|rng| rng.below(u64::from(*total))) as u32;
                for (pool, weight) in pools {
                    if ticket < *weight {
                        return pool;
                    }
                    ticket -= weight;
                }
                &pools[pools.len() - 1].0
            }
        }
    }
}

/// The host of a request without its port, from `Host` or the URI.
pub fn request_host(request: &Parts) -> Option<&str> {
    let raw = match request.headers.get(http::header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => request.uri.authority()?.as_str(),
    };
    Some(match raw.rfind(':') {
        Some(colon) if !raw.ends_with(']') => &raw[..colon],
        _ => raw,
    })
}
