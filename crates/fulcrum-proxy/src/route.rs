//! L7 routing: a listener's rules, compiled against the running pools.
//! Rules are tried in order and the first whose every condition matches
//! wins. Its action sends the request to one pool, to one of a split's
//! pools in proportion to their weights, to a canary or its baseline, or
//! answers it with a redirect.
//!
//! A split (or canary) with a `split_key` is sticky: the key's hash picks
//! a point in the weights' range, so one key always lands in the same
//! variant, and growing the first variant's weight only moves keys from
//! the others to it (the cumulative-weight buckets of Envoy's
//! `runtime_fraction` and Istio's weighted destinations, keyed by a hash
//! instead of a random draw).

use std::sync::Arc;

use fulcrum_balance::{hash64, mix64};
use fulcrum_config::{HashKey, HeaderRules, HostMatch, Redirect, Route, RouteTarget};
use http::request::Parts;
use http::HeaderName;

use crate::admission::rate_limit::RateLimiter;
use crate::pool::Pool;
use crate::release::canary::{LiveCanary, Side, BASIS};
use crate::release::mirror::{Mirror, MirrorSlots};

/// One compiled rule.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Unique within its listener.
    pub name: String,
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    methods: Vec<http::Method>,
    headers: Vec<(HeaderName, String)>,
    query: Vec<(String, String)>,
    target: Target,
    split_key: Option<HashKey>,
    /// Copies of a share of its requests, when mirrored.
    pub mirror: Option<Mirror>,
    /// Path prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Path prefix added before forwarding.
    pub rewrite_prefix: Option<String>,
    /// Changes to forwarded requests' headers.
    pub request_headers: HeaderRules,
    /// Changes to responses' headers.
    pub response_headers: HeaderRules,
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
    Canary { canary: Arc<Pool>, baseline: Arc<Pool>, live: Arc<LiveCanary> },
    Redirect(Redirect),
}

/// What compiling a route looks up by name: the running pools and rate
/// limits, and the canaries and mirror slots that outlive one config
/// generation.
pub struct Resolver<'a> {
    /// A pool by name (validation guarantees it exists).
    pub pool: &'a dyn Fn(&str) -> Arc<Pool>,
    /// A rate limit by name.
    pub rate_limit: &'a dyn Fn(&str) -> Arc<RateLimiter>,
    /// The live canary of a route (by route name).
    pub canary: &'a dyn Fn(&str, &fulcrum_config::Canary) -> Arc<LiveCanary>,
    /// The mirror slots of a route (by route name, with `max_in_flight`).
    pub mirror_slots: &'a dyn Fn(&str, usize) -> Arc<MirrorSlots>,
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl CompiledRoute {
    /// Compiles `route`, resolving what it names through `resolve`.
    pub fn compile(route: &Route, resolve: &Resolver<'_>) -> Self {
        let target = match &route.target {
            RouteTarget::Pool(name) => Target::Pool((resolve.pool)(name)),
            RouteTarget::Split(parts) => Target::Split {
                pools: parts.iter().map(|(name, w)| ((resolve.pool)(name), *w)).collect(),
                total: parts.iter().map(|(_, w)| w).sum(),
            },
            RouteTarget::Canary(canary) => Target::Canary {
                canary: (resolve.pool)(&canary.pool),
                baseline: (resolve.pool)(&canary.baseline),
                live: (resolve.canary)(&route.name, canary),
            },
            RouteTarget::Redirect(redirect) => Target::Redirect(redirect.clone()),
        };
        let mirror = route.mirror.as_ref().map(|m| Mirror {
            pool: (resolve.pool)(&m.pool),
            share: (m.percent * 100.0).round() as u32,
            slots: (resolve.mirror_slots)(&route.name, m.max_in_flight),
        });
        Self {
            name: route.name.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            methods: route.methods.iter().filter_map(|m| m.parse().ok()).collect(),
            headers: route.headers.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.clone()))).collect(),
            query: route.query.clone(),
            target,
            split_key: route.split_key.clone(),
            mirror,
            strip_prefix: route.strip_prefix.clone(),
            rewrite_prefix: route.rewrite_prefix.clone(),
            request_headers: route.request_headers.clone(),
            response_headers: route.response_headers.clone(),
            rate_limit: route.rate_limit.as_deref().map(resolve.rate_limit),
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
            && (self.query.is_empty() || self.query_matches(request))
    }

    /// Every configured parameter is in the query with the wanted value
    /// (compared decoded: `v=a%20b` matches `"a b"`).
    fn query_matches(&self, request: &Parts) -> bool {
        let Some(query) = request.uri.query() else { return false };
        self.query.iter().all(|(name, want)| {
            form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == name.as_str() && v == want.as_str())
        })
    }

    /// The pool a matching request goes to and, for a canary, which side
    /// it is; `None` for a redirect.
    pub fn pick(&self, request: &Parts, client: std::net::IpAddr) -> Option<(&Arc<Pool>, Option<Side>)> {
        match &self.target {
            Target::Pool(pool) => Some((pool, None)),
            Target::Split { pools, total } => {
                let mut ticket = self.draw(request, client, *total);
                for (pool, weight) in pools {
                    if ticket < *weight {
                        return Some((pool, None));
                    }
                    ticket -= weight;
                }
                Some((&pools[pools.len() - 1].0, None))
            }
            Target::Canary { canary, baseline, live } => {
                // The canary's range comes first, so growing it only takes
                // keys from the baseline.
                if self.draw(request, client, BASIS) < live.share() {
                    Some((canary, Some(Side::Canary)))
                } else {
                    Some((baseline, Some(Side::Baseline)))
                }
            }
            Target::Redirect(_) => None,
        }
    }

    /// A number below `total`: the split key's place when there is a key,
    /// else random.
    fn draw(&self, request: &Parts, client: std::net::IpAddr, total: u32) -> u32 {
        let Some(key) = &self.split_key else {
            return crate::rng::with_rng(|rng| rng.below(u64::from(total))) as u32;
        };
        let value = match key {
            HashKey::Header(name) => request.headers.get(name.as_str()).map(|v| hash64(v.as_bytes())),
            HashKey::Cookie(name) => crate::hash_key::cookie(request, name).map(|v| hash64(v.as_bytes())),
            _ => None,
        };
        // A request without the key is placed by its client's address.
        let hash = value.unwrap_or_else(|| hash64(&crate::hash_key::masked(client, 32, 128).to_be_bytes()));
        // Salted, so the variant says nothing of the backend a hashing
        // algorithm would pick for the same key.
        let spread = mix64(hash ^ SPLIT_SALT);
        ((u128::from(spread) * u128::from(total)) >> 64) as u32
    }

    /// The redirect this route answers with, if it is one.
    pub fn redirect(&self) -> Option<&Redirect> {
        match &self.target {
            Target::Redirect(redirect) => Some(redirect),
            _ => None,
        }
    }

    /// The route's live canary, if it has one.
    pub fn canary(&self) -> Option<&Arc<LiveCanary>> {
        match &self.target {
            Target::Canary { live, .. } => Some(live),
            _ => None,
        }
    }

    /// The pools and weights requests are split over now (a canary's as
    /// percentages); empty for a redirect.
    pub fn weights(&self) -> Vec<(String, f64)> {
        match &self.target {
            Target::Pool(pool) => vec![(pool.name.to_string(), 100.0)],
            Target::Split { pools, .. } => {
                pools.iter().map(|(p, w)| (p.name.to_string(), f64::from(*w))).collect()
            }
            Target::Canary { canary, baseline, live } => {
                let percent = f64::from(live.share()) / 100.0;
                vec![(canary.name.to_string(), percent), (baseline.name.to_string(), 100.0 - percent)]
            }
            Target::Redirect(_) => Vec::new(),
        }
    }

    /// What the route does: `pool`, `split`, `canary` or `redirect`.
    pub fn action(&self) -> &'static str {
        match &self.target {
            Target::Pool(_) => "pool",
            Target::Split { .. } => "split",
            Target::Canary { .. } => "canary",
            Target::Redirect(_) => "redirect",
        }
    }

    /// Whether forwarding must rewrite anything of the request.
    pub fn rewrites_request(&self) -> bool {
        self.strip_prefix.is_some() || self.rewrite_prefix.is_some() || !self.request_headers.is_empty()
    }
}

const SPLIT_SALT: u64 = 0x5bd1_e995_3c6e_f372;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn route(live: &Arc<LiveCanary>) -> CompiledRoute {
        let text = "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\npool = \"v1\"\n\
                    [[listeners.routes]]\nname = \"shop\"\nsplit_key = \"cookie:uid\"\n\
                    canary = { pool = \"v2\", baseline = \"v1\" }\n\
                    [pools.v1]\nbackends = [{ address = \"127.0.0.1:2\" }]\n\
                    [pools.v2]\nbackends = [{ address = \"127.0.0.1:3\" }]\n";
        let config = fulcrum_config::parse(text, "test", std::path::Path::new(".")).unwrap();
        let pools: std::collections::BTreeMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, p)| (name.clone(), Arc::new(Pool::build(name, p, None, &Default::default()))))
            .collect();
        let resolver = Resolver {
            pool: &|name| Arc::clone(&pools[name]),
            rate_limit: &|_| unreachable!("no rate limits"),
            canary: &|_, _| Arc::clone(live),
            mirror_slots: &|_, _| unreachable!("no mirror"),
        };
        CompiledRoute::compile(&config.listeners[0].routes[0], &resolver)
    }

    fn sides(route: &CompiledRoute, users: usize) -> Vec<Side> {
        let client = std::net::Ipv4Addr::LOCALHOST.into();
        (0..users)
            .map(|uid| {
                let request =
                    http::Request::get("/").header("cookie", format!("uid=u{uid}")).body(()).unwrap();
                let parts = request.into_parts().0;
                let side = route.pick(&parts, client).unwrap().1.unwrap();
                assert_eq!(side, route.pick(&parts, client).unwrap().1.unwrap(), "uid {uid} moved");
                side
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sticky_canary_only_moves_baseline_users_as_it_grows() {
        let config = fulcrum_config::Canary {
            pool: "v2".into(),
            baseline: "v1".into(),
            steps: vec![10.0, 50.0, 100.0],
            interval: Duration::from_secs(60),
            min_requests: 1,
            max_error_rate: 1.0,
            max_p99_ratio: 1.5,
        };
        let live = LiveCanary::start("web", "shop", &config, Arc::default());
        let route = route(&live);
        let before = sides(&route, 2000);
        let share = |sides: &[Side]| sides.iter().filter(|s| **s == Side::Canary).count();
        assert!((160..=240).contains(&share(&before)), "{} of 2000 at 10%", share(&before));
        live.record(Side::Canary, false, 1_000_000);
        live.record(Side::Baseline, false, 1_000_000);
        live.judge();
        assert_eq!(live.share(), 5000);
        let after = sides(&route, 2000);
        assert!((900..=1100).contains(&share(&after)), "{} of 2000 at 50%", share(&after));
        let back = before.iter().zip(&after).filter(|(b, a)| **b == Side::Canary && **a == Side::Baseline);
        assert_eq!(back.count(), 0, "a step moved canary users back to the baseline");
    }
}
