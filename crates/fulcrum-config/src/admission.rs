//! Typed admission settings: named rate limits (`[rate_limits.NAME]`),
//! referenced by listeners and routes, and a pool's admission control
//! (`[pools.NAME.admission]`: concurrency limit, queue, traffic classes),
//! each with its defaults in one place.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::file::{AdmissionFile, MaxConcurrentFile, RateLimitFile};
use crate::span::KeyPath;
use crate::validate::Validator;

/// The class of requests no route gives one.
pub const DEFAULT_CLASS: &str = "default";
/// `admission.queue`.
pub const DEFAULT_QUEUE: usize = 1000;
/// Deadline of the `default` class when `classes` is not given.
pub const DEFAULT_CLASS_DEADLINE: Duration = Duration::from_secs(1);

/// A named rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// What requests are counted by.
    pub key: LimitKey,
    /// Requests per `per`, at least 1.
    pub rate: u32,
    /// The period `rate` is counted over.
    pub per: Duration,
    /// Requests admitted at once beyond the steady rate (default 0).
    pub burst: u32,
    /// Where the counts live (default local).
    pub store: LimitStore,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client's address.
    ClientIp,
    /// A request header's value (lower-case name); requests without it share one count.
    Header(String),
    /// A cookie's value; requests without it share one count.
    Cookie(String),
    /// Every request together.
    Global,
}

/// Where a rate limit's counts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    /// This instance alone.
    Local,
    /// `[redis]`, so every instance together admits the rate.
    Redis,
}

/// A pool's admission control.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Requests in flight to the pool at most.
    pub max_concurrent: ConcurrencyLimit,
    /// Requests that may wait for a slot (default 1000); beyond it the lowest class is shed.
    pub queue: usize,
    /// Traffic classes by name; always has `default`.
    pub classes: BTreeMap<String, TrafficClass>,
}

/// How many requests a pool serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyLimit {
    /// A fixed number.
    Fixed(u32),
    /// A gradient limit that follows the backends' latency.
    Adaptive,
}

/// A traffic class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficClass {
    /// 0 is served first.
    pub priority: u8,
    /// A request still queued this long after it arrived is shed.
    pub deadline: Duration,
}

impl Validator<'_> {
    pub(crate) fn rate_limit(&mut self, raw: &RateLimitFile, path: &KeyPath) -> RateLimit {
        let key = match raw.key.as_deref().unwrap_or("client_ip") {
            "client_ip" => LimitKey::ClientIp,
            "global" => LimitKey::Global,
            text => match text.split_once(':') {
                Some(("header", name)) if !name.is_empty() => LimitKey::Header(name.to_ascii_lowercase()),
                Some(("cookie", name)) if !name.is_empty() => LimitKey::Cookie(name.to_string()),
                _ => {
                    self.error(
                        &path.key("key"),
                        format!("`{text}` is not a limit key; expected client_ip, header:NAME, cookie:NAME or global"),
                    );
                    LimitKey::Global
                }
            },
        };
        if raw.rate == 0 {
            self.error(&path.key("rate"), "must be at least 1 (requests per `per`)");
        }
        let per = self.duration(&path.key("per"), raw.per.as_ref(), Duration::from_secs(1));
        let store = match raw.store.as_deref().unwrap_or("local") {
            "local" => LimitStore::Local,
            "redis" => LimitStore::Redis,
            other => {
                self.error(&path.key("store"), format!("unknown store `{other}`; expected local or redis"));
                LimitStore::Local
            }
        };
        RateLimit { key, rate: raw.rate.max(1), per, burst: raw.burst.unwrap_or(0), store }
    }

    pub(crate) fn admission(&mut self, raw: &AdmissionFile, path: &KeyPath) -> Admission {
        let max_concurrent = match &raw.max_concurrent {
            MaxConcurrentFile::Count(n) if (1..=1_000_000).contains(n) => ConcurrencyLimit::Fixed(*n as u32),
            MaxConcurrentFile::Word(word) if word == "adaptive" => ConcurrencyLimit::Adaptive,
            _ => {
                self.error(
                    &path.key("max_concurrent"),
                    "must be a number of requests (1..=1000000) or \"adaptive\"",
                );
                ConcurrencyLimit::Adaptive
            }
        };
        let mut classes = BTreeMap::new();
        for (name, class) in raw.classes.iter().flatten() {
            let path = path.key("classes").key(name);
            let deadline =
                self.duration(&path.key("deadline"), Some(&class.deadline), DEFAULT_CLASS_DEADLINE);
            classes.insert(name.clone(), TrafficClass { priority: class.priority, deadline });
        }
        if classes.is_empty() && raw.classes.is_none() {
            classes.insert(
                DEFAULT_CLASS.to_string(),
                TrafficClass { priority: 0, deadline: DEFAULT_CLASS_DEADLINE },
            );
        }
        if !classes.contains_key(DEFAULT_CLASS) {
            self.error(
                &path.key("classes"),
                "needs a `default` class (for requests no route gives a class), e.g. default = { priority = 1, deadline = \"500ms\" }",
            );
        }
        Admission { max_concurrent, queue: raw.queue.unwrap_or(DEFAULT_QUEUE), classes }
    }
}

impl Validator<'_> {
    /// Every rate limit a listener or route names exists (and has the
    /// store it needs); every class a route names is one of the classes of
    /// the pools it sends to.
    pub(crate) fn admission_references(
        &mut self,
        raw: &crate::file::FileConfig,
        limits: &BTreeMap<String, RateLimit>,
        pools: &BTreeMap<String, crate::Pool>,
    ) {
        let root = KeyPath::default();
        for (name, limit) in limits {
            if limit.store == LimitStore::Redis && raw.redis.is_none() {
                self.error(
                    &root.key("rate_limits").key(name).key("store"),
                    "`store = \"redis\"` needs a [redis] section with the server's url",
                );
            }
        }
        let limit_ref = |v: &mut Self, path: KeyPath, name: &Option<String>| {
            if let Some(name) = name.as_deref().filter(|n| !limits.contains_key(*n)) {
                v.error(&path, format!("no rate limit named `{name}` (define it as [rate_limits.{name}])"));
            }
        };
        for (i, listener) in raw.listeners.iter().enumerate() {
            let path = root.key("listeners").index(i);
            limit_ref(self, path.key("rate_limit"), &listener.rate_limit);
            if listener.rate_limit.is_some() && listener.protocol.as_deref() == Some("tcp") {
                self.error(
                    &path.key("rate_limit"),
                    "rate limits count HTTP requests; a tcp listener takes none",
                );
            }
            for (j, route) in listener.routes.iter().enumerate() {
                let path = path.key("routes").index(j);
                limit_ref(self, path.key("rate_limit"), &route.rate_limit);
                let Some(class) = &route.class else { continue };
                let targets =
                    route.pool.iter().cloned().chain(route.split.iter().flatten().map(|s| s.pool.clone()));
                for pool in targets {
                    let classes = pools.get(&pool).and_then(|p| p.admission.as_ref()).map(|a| &a.classes);
                    if classes.is_some_and(|c| !c.contains_key(class)) {
                        self.error(
                            &path.key("class"),
                            format!("pool `{pool}` has no traffic class `{class}` (add it to pools.{pool}.admission.classes)"),
                        );
                    }
                }
            }
        }
    }
}
