//! Named rate limits (`[rate_limits.NAME]`): GCRA per key (client
//! address, header, cookie or one global count), from the `governor` crate
//! on the proxy's clock, or — with `store = "redis"` — a Lua script doing
//! the same GCRA atomically in Redis on Redis's clock, so N instances
//! together admit the rate once. When Redis does not answer, the local
//! limiter decides (each instance then admits the rate on its own): a
//! store failure never fails a request.
//!
//! GCRA (the generic cell rate algorithm, ATM Forum TM 4.0; Brandur Leach's
//! "Rate limiting, cells, and GCRA"): a key's theoretical arrival time
//! `tat` advances by the emission interval `per / rate` per admitted
//! request; a request is refused while `tat - now` exceeds the tolerance
//! `interval × burst`, so `burst + 1` requests pass at once and `rate` per
//! `per` after that. Idle keys are dropped by [`RateLimiter::upkeep`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fulcrum_balance::hash64;
use fulcrum_config::{LimitKey, LimitStore, RateLimit};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use http::request::Parts;
use http::HeaderValue;

use crate::shared_store::SharedStore;

/// governor's clock: the proxy's (tokio's, so tests can pause it).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyClock;

impl governor::clock::Clock for ProxyClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(crate::clock::now_nanos())
    }
}

/// GCRA in Redis. KEYS[1]: the key's theoretical arrival time (µs, Redis
/// clock); ARGV: emission interval and tolerance (µs). Returns 0 when the
/// request is admitted, else the µs until it would be.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
if tat - now > tolerance then
  return tat - now - tolerance
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.floor((next_tat - now) / 1000) + 1)
return 0
",
    )
});

/// A refused request: when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Time until the request would be admitted.
    pub retry_after: Duration,
}

/// One named limit.
pub struct RateLimiter {
    /// Its name in the config, metrics and headers.
    pub name: Arc<str>,
    /// Its settings.
    pub config: RateLimit,
    local: governor::RateLimiter<u64, DashMapStateStore<u64>, ProxyClock, NoOpMiddleware<Duration>>,
    store: Option<Arc<SharedStore>>,
    interval: Duration,
    refused: AtomicU64,
    policy: HeaderValue,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// The limit `name` as `config` sets it; `store` is the `[redis]` store.
    pub fn new(name: &str, config: &RateLimit, store: Option<&Arc<SharedStore>>) -> Self {
        let interval = (config.per / config.rate).max(Duration::from_nanos(1));
        let quota = governor::Quota::with_period(interval)
            .expect("the interval is above zero")
            .allow_burst(NonZeroU32::new(config.burst.saturating_add(1)).expect("at least one"));
        let window = config.per.as_secs().max(1);
        let policy = format!("\"{name}\";q={};w={window}", config.rate);
        Self {
            name: name.into(),
            config: config.clone(),
            local: governor::RateLimiter::dashmap_with_clock(quota, ProxyClock),
            store: store.filter(|_| config.store == LimitStore::Redis).cloned(),
            interval,
            refused: AtomicU64::new(0),
            policy: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        }
    }

    /// Requests refused so far (`lb_rate_limited_total`).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a request from `client`; `Err` when it is over the limit.
    pub async fn check(&self, parts: &Parts, client: IpAddr) -> Result<(), Refused> {
        let key = self.key(parts, client);
        let decided = match &self.store {
            Some(store) => self.check_shared(store, key).await,
            None => None,
        };
        let verdict = decided.unwrap_or_else(|| {
            self.local.check_key(&key).map_err(|not_until| Refused {
                retry_after: not_until.wait_time_from(Duration::from_nanos(crate::clock::now_nanos())),
            })
        });
        if verdict.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// The shared store's verdict, or `None` when it did not answer.
    async fn check_shared(&self, store: &SharedStore, key: u64) -> Option<Result<(), Refused>> {
        let interval = self.interval.as_micros() as u64;
        let tolerance = interval * u64::from(self.config.burst);
        let redis_key = format!("{}rl:{}:{key:016x}", store.config.key_prefix, self.name);
        let mut invocation = GCRA.key(redis_key);
        invocation.arg(interval.max(1)).arg(tolerance);
        let wait: u64 = store.run_script(&invocation).await.ok()?;
        Some(if wait == 0 { Ok(()) } else { Err(Refused { retry_after: Duration::from_micros(wait) }) })
    }

    fn key(&self, parts: &Parts, client: IpAddr) -> u64 {
        match &self.config.key {
            LimitKey::ClientIp => match client {
                IpAddr::V4(v4) => hash64(&v4.octets()),
                IpAddr::V6(v6) => hash64(&v6.octets()),
            },
            LimitKey::Header(name) => parts.headers.get(name.as_str()).map_or(0, |v| hash64(v.as_bytes())),
            LimitKey::Cookie(name) => {
                crate::hash_key::cookie(parts, name).map_or(0, |v| hash64(v.as_bytes()))
            }
            LimitKey::Global => 0,
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` headers (IETF
    /// draft-ietf-httpapi-ratelimit-headers) of a refusal.
    pub fn headers(&self, refused: Refused) -> [(http::HeaderName, HeaderValue); 3] {
        let seconds = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let state = format!("\"{}\";r=0;t={seconds}", self.name);
        [
            (http::header::RETRY_AFTER, HeaderValue::from(seconds)),
            (http::HeaderName::from_static("ratelimit-policy"), self.policy.clone()),
            (
                http::HeaderName::from_static("ratelimit"),
                HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static("")),
            ),
        ]
    }

    /// Forgets keys idle long enough to be back at a full burst.
    pub fn upkeep(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, per: &str, burst: u32) -> RateLimiter {
        let config = RateLimit {
            key: LimitKey::ClientIp,
            rate,
            per: fulcrum_config::parse_duration(per).unwrap(),
            burst,
            store: LimitStore::Local,
        };
        RateLimiter::new("test", &config, None)
    }

    fn request() -> Parts {
        http::Request::get("/").body(()).unwrap().into_parts().0
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate() {
        let limit = limiter(10, "1s", 5);
        let client: IpAddr = "127.0.0.2".parse().unwrap();
        let mut admitted = 0;
        for _ in 0..50 {
            admitted += usize::from(limit.check(&request(), client).await.is_ok());
        }
        assert_eq!(admitted, 6, "burst + 1 at once");
        assert!(limit.check(&request(), "127.0.0.3".parse().unwrap()).await.is_ok(), "another client");
        let refused = limit.check(&request(), client).await.unwrap_err();
        assert!(refused.retry_after <= Duration::from_millis(100), "{refused:?}");
        let mut admitted = 0;
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(100)).await;
            admitted += usize::from(limit.check(&request(), client).await.is_ok());
        }
        assert_eq!(admitted, 10, "then `rate` per second");
        assert_eq!(limit.refused(), 45);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten() {
        let limit = limiter(10, "1s", 5);
        for i in 0..1000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            limit.check(&request(), client).await.unwrap();
        }
        assert_eq!(limit.local.len(), 1000);
        limit.upkeep();
        assert_eq!(limit.local.len(), 1000, "recent keys stay");
        tokio::time::advance(Duration::from_secs(1)).await;
        limit.upkeep();
        assert_eq!(limit.local.len(), 0, "back at a full burst: nothing to remember");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_say_when_to_retry_and_which_policy_applies() {
        let limit = limiter(2, "1m", 0);
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limit.check(&request(), client).await.is_ok());
        let refused = limit.check(&request(), client).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        let headers = limit.headers(refused);
        assert_eq!(headers[0].1, "30");
        assert_eq!(headers[1].1, "\"test\";q=2;w=60");
        assert_eq!(headers[2].1, "\"test\";r=0;t=30");
    }
}
