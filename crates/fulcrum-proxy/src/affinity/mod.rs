//! Session affinity (`[pools.NAME.affinity]`): keeping each session on one
//! backend, decided before the balancing algorithm, which only places new
//! sessions and those whose backend cannot serve (HAProxy's `cookie` and
//! `stick-table`, with sealed cookies and a shared store in the open).
//!
//! - `cookie`: the backend travels in a sealed cookie ([`cookie`]); any
//!   instance with the secrets honours it. The local table only remembers
//!   which sessions it saw, for counts and for an operator's rebalance.
//! - `header` / `client_ip`: the session key maps to a backend in the
//!   session table ([`table`]), so bindings survive membership changes; with
//!   `store = "redis"` the table is a cache in front of the shared store
//!   (revalidated every [`REVALIDATE_SECS`]), so every instance agrees.
//!
//! A session's life: [`Affinity::lookup`] before the pick says where it is
//! bound; [`crate::pool::Pool::pick_bound`] tries that backend; the
//! response's backend is then [`Affinity::bind`]-ed (a new session, or a
//! failover when the bound backend could not serve), which writes the
//! store and returns the cookie to set.

pub mod cookie;
pub mod table;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_balance::hash64;
use fulcrum_config::{Affinity as AffinityConfig, AffinityKind, AffinityMode, SessionStore};
use http::request::Parts;
use http::HeaderValue;

use self::cookie::{CookieSealer, CookieSession};
use self::table::{Entry, SessionTable, FORGOTTEN};
use crate::backend::Backend;
use crate::shared_store::SharedStore;

/// A binding confirmed by the shared store this many seconds ago is asked
/// for again (another instance may have moved or forgotten it).
pub const REVALIDATE_SECS: u32 = 2;

/// How a request's session was placed (`lb_affinity_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Its bound backend served it.
    Hit,
    /// It had no session: the algorithm placed it.
    New,
    /// Its backend could not serve: it moved to another.
    Failover,
    /// Its cookie did not open (tampered, expired, foreign): placed as new.
    Invalid,
}

impl Placement {
    /// Every placement, in metric order.
    pub const ALL: [Placement; 4] = [Self::Hit, Self::New, Self::Failover, Self::Invalid];

    /// The name in metrics and the access log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::New => "new",
            Self::Failover => "failover",
            Self::Invalid => "invalid",
        }
    }
}

/// One request's session, from lookup to binding.
#[derive(Debug)]
pub struct Session {
    key: u64,
    /// The address key of the backend the session is bound to.
    pub bound: Option<u64>,
    /// How it was placed so far.
    pub placement: Placement,
    /// The expiry of the cookie the client sent, to refresh it in time.
    cookie_expires_ms: Option<u64>,
    /// The binding is not (known to be) in the shared store yet.
    unconfirmed: bool,
}

impl Session {
    fn bound(key: u64, backend: u64) -> Self {
        Self {
            key,
            bound: Some(backend),
            placement: Placement::Hit,
            cookie_expires_ms: None,
            unconfirmed: false,
        }
    }

    fn unbound(key: u64, placement: Placement) -> Self {
        Self { key, bound: None, placement, cookie_expires_ms: None, unconfirmed: false }
    }

    /// Its bound backend cannot serve: whatever serves it next is a failover.
    pub fn fail_over(&mut self) {
        if self.bound.is_some() {
            self.placement = Placement::Failover;
        }
    }
}

/// What outlives a pool generation: the sessions and their counters.
#[derive(Debug)]
pub struct Sessions {
    table: SessionTable,
    placements: [AtomicU64; 4],
}

impl Sessions {
    /// Requests placed each way, in [`Placement::ALL`] order.
    pub fn placements(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.placements[i].load(Ordering::Relaxed))
    }
}

/// A pool's affinity.
#[derive(Debug)]
pub struct Affinity {
    /// The settings.
    pub config: AffinityConfig,
    pool: Arc<str>,
    sessions: Arc<Sessions>,
    sealer: Option<CookieSealer>,
    store: Option<Arc<SharedStore>>,
    ttl_secs: u32,
    graceful_timeout_nanos: u64,
}

impl Affinity {
    /// The affinity of `pool` as `config` sets it, keeping `previous`
    /// sessions when they are of the same kind; `store` is the `[redis]`
    /// store, used when the config asks for it.
    pub fn new(
        pool: &str,
        config: &AffinityConfig,
        previous: Option<&Affinity>,
        store: Option<&Arc<SharedStore>>,
        graceful_timeout: Duration,
    ) -> Self {
        let sessions = previous
            .filter(|p| p.config.kind == config.kind && p.config.max_sessions == config.max_sessions)
            .map(|p| Arc::clone(&p.sessions))
            .unwrap_or_else(|| {
                Arc::new(Sessions {
                    table: SessionTable::new(config.max_sessions),
                    placements: Default::default(),
                })
            });
        Self {
            config: config.clone(),
            pool: pool.into(),
            sessions,
            sealer: matches!(config.kind, AffinityKind::Cookie(_))
                .then(|| CookieSealer::new(&config.secrets)),
            store: store.filter(|_| config.store == SessionStore::Redis).cloned(),
            ttl_secs: config.ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32,
            graceful_timeout_nanos: graceful_timeout.as_nanos() as u64,
        }
    }

    /// The sessions and counters.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Whether a session's backend must never change (`mode = "hard"`).
    pub fn is_hard(&self) -> bool {
        self.config.mode == AffinityMode::Hard
    }

    /// Whether a session bound to the draining `backend` still goes there at `now`.
    pub fn keeps_draining(&self, backend: &Backend, now: u64) -> bool {
        self.config.drain_keeps_sessions
            && now.saturating_sub(backend.draining_since()) < self.graceful_timeout_nanos
    }

    /// Counts a finished request's placement.
    pub fn count(&self, placement: Placement) {
        let index = Placement::ALL.iter().position(|p| *p == placement).expect("every placement is listed");
        self.sessions.placements[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The session of an HTTP request from `client`; `None` when it has
    /// none (`kind = "header"` and no such header).
    pub async fn lookup(&self, parts: &Parts, client: IpAddr) -> Option<Session> {
        match &self.config.kind {
            AffinityKind::Cookie(name) => {
                Some(self.cookie_session(crate::hash_key::cookie(parts, name).map(str::as_bytes)))
            }
            AffinityKind::Header(name) => {
                let value = parts.headers.get(name.as_str())?;
                Some(self.stored_session(mix(hash64(value.as_bytes()))).await)
            }
            AffinityKind::ClientIp { .. } => self.lookup_client(client).await,
        }
    }

    /// The session of a TCP connection from `client` (`kind = "client_ip"`).
    pub async fn lookup_client(&self, client: IpAddr) -> Option<Session> {
        let AffinityKind::ClientIp { v4, v6 } = self.config.kind else { return None };
        let masked = crate::hash_key::masked(client, v4, v6);
        Some(self.stored_session(mix(hash64(&masked.to_be_bytes()))).await)
    }

    fn cookie_session(&self, value: Option<&[u8]>) -> Session {
        let sealer = self.sealer.as_ref().expect("cookie affinity has a sealer");
        let Some(value) = value else { return Session::unbound(sealer.new_id(), Placement::New) };
        let Some(cookie) = sealer.open(value, &self.pool, unix_millis()) else {
            return Session::unbound(sealer.new_id(), Placement::Invalid);
        };
        let now = now_secs();
        let table = &self.sessions.table;
        match table.get(cookie.id, now, self.ttl_secs) {
            Some(entry) if entry.backend == FORGOTTEN => return Session::unbound(cookie.id, Placement::New),
            Some(entry) if entry.backend == cookie.backend => {}
            _ => table.put(cookie.id, Entry { backend: cookie.backend, seen: now, confirmed: 0 }),
        }
        Session { cookie_expires_ms: Some(cookie.expires_ms), ..Session::bound(cookie.id, cookie.backend) }
    }

    async fn stored_session(&self, key: u64) -> Session {
        let now = now_secs();
        let table = &self.sessions.table;
        let local = table.get(key, now, self.ttl_secs).filter(|e| e.backend != FORGOTTEN);
        let Some(store) = &self.store else {
            return local
                .map_or_else(|| Session::unbound(key, Placement::New), |e| Session::bound(key, e.backend));
        };
        if let Some(entry) =
            local.filter(|e| e.confirmed != 0 && now.saturating_sub(e.confirmed) < REVALIDATE_SECS)
        {
            return Session::bound(key, entry.backend);
        }
        let unconfirmed = |entry: Option<Entry>| match entry {
            Some(e) => Session { unconfirmed: true, ..Session::bound(key, e.backend) },
            None => Session::unbound(key, Placement::New),
        };
        match store.get_refresh(&store.key(&self.pool, key), u64::from(self.ttl_secs)).await {
            Ok(Some(marker)) if marker == crate::shared_store::FORGOTTEN => {
                table.remove(key);
                Session::unbound(key, Placement::New)
            }
            Ok(Some(address)) => {
                let backend = address_key(&address);
                table.put(key, Entry { backend, seen: now, confirmed: now });
                Session::bound(key, backend)
            }
            // The store lost it (restarted, evicted) or never had it (bound
            // while it was down): this instance's binding is written back.
            Ok(None) => unconfirmed(local),
            Err(_) => Session { unconfirmed: false, ..unconfirmed(local) },
        }
    }

    /// Binds `session` to `backend`, which served it; returns the
    /// `Set-Cookie` value to send when the client's cookie must change.
    /// `secure`: the client came over TLS.
    pub async fn bind(&self, session: &mut Session, backend: &Backend, secure: bool) -> Option<HeaderValue> {
        let target = backend.address_key;
        let moved = session.bound != Some(target);
        if moved {
            session.fail_over();
        }
        if let Some(sealer) = &self.sealer {
            let now_ms = unix_millis();
            let ttl_ms = u64::from(self.ttl_secs) * 1000;
            let fresh = session.cookie_expires_ms.is_some_and(|e| e.saturating_sub(now_ms) > ttl_ms / 2);
            if !moved && fresh && session.placement == Placement::Hit {
                return None;
            }
            self.sessions.table.put(session.key, Entry { backend: target, seen: now_secs(), confirmed: 0 });
            session.bound = Some(target);
            let value = sealer.seal(
                &CookieSession { id: session.key, backend: target, expires_ms: now_ms + ttl_ms },
                &self.pool,
            );
            return self.set_cookie(&value, secure);
        }
        if !moved && !session.unconfirmed {
            return None;
        }
        let now = now_secs();
        let mut entry = Entry { backend: target, seen: now, confirmed: 0 };
        if let Some(store) = &self.store {
            let key = store.key(&self.pool, session.key);
            let address = backend.address.to_string();
            let ttl = u64::from(self.ttl_secs);
            let written = match session.placement {
                Placement::Failover => store.bind(&key, &address, ttl).await.map(|()| None),
                _ => store.bind_new(&key, &address, ttl).await,
            };
            match written {
                Ok(None) => entry.confirmed = now,
                // Another instance placed this session first: follow it.
                Ok(Some(winner)) => {
                    entry = Entry { backend: address_key(&winner), seen: now, confirmed: now }
                }
                Err(_) => {}
            }
        }
        let table = &self.sessions.table;
        let entry = if session.placement == Placement::Failover || entry.confirmed != 0 {
            table.put(session.key, entry);
            entry
        } else {
            // Locally, as Redis's SET NX does across instances: the first
            // placement of a session holds.
            table.put_first(session.key, entry, self.ttl_secs)
        };
        session.bound = Some(entry.backend);
        session.unconfirmed = false;
        None
    }

    fn set_cookie(&self, value: &str, secure: bool) -> Option<HeaderValue> {
        let AffinityKind::Cookie(name) = &self.config.kind else { return None };
        let secure = if secure { "; Secure" } else { "" };
        let text =
            format!("{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", self.ttl_secs);
        HeaderValue::from_str(&text).ok()
    }

    /// Live sessions per backend address key, as this instance knows them.
    pub fn counts(&self) -> std::collections::HashMap<u64, usize> {
        self.sessions.table.counts(now_secs(), self.ttl_secs)
    }

    /// Forgets `fraction` of the sessions, from the busiest backends
    /// first; they are placed anew on their next request, by every
    /// instance sharing the store. Returns how many were forgotten.
    pub async fn rebalance(&self, fraction: f64) -> Result<usize, crate::shared_store::Unavailable> {
        let now = now_secs();
        let quota = table::rebalance_quota(&self.counts(), fraction);
        let forgotten = self.sessions.table.forget(&quota, now, self.ttl_secs);
        if let Some(store) = &self.store {
            let keys: Vec<String> = forgotten.iter().map(|&k| store.key(&self.pool, k)).collect();
            store.forget(&keys).await?;
        }
        Ok(forgotten.len())
    }

    /// Forgets every session (in the shared store too); returns how many
    /// this instance held.
    pub async fn flush(&self) -> Result<usize, crate::shared_store::Unavailable> {
        let held = self.sessions.table.clear();
        match &self.store {
            Some(store) => Ok(held.max(store.forget_pool(&self.pool).await?)),
            None => Ok(held),
        }
    }
}

/// The key a backend is known by in sessions: the same on every instance.
pub fn address_key(address: &str) -> u64 {
    mix(hash64(address.as_bytes())).max(1)
}

/// SplitMix64's finaliser: spreads short keys (a client address) over all
/// 64 bits, so the table's shards fill evenly.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn now_secs() -> u32 {
    (crate::clock::now_nanos() / 1_000_000_000) as u32
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
