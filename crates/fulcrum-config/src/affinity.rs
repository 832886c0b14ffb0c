//! Typed session-affinity settings (`[pools.NAME.affinity]`) and the shared
//! store they may use (`[redis]`), each with its defaults in one place.

use std::time::Duration;

use crate::file::{AffinityFile, RedisFile};
use crate::span::KeyPath;
use crate::validate::Validator;

/// `[redis] key_prefix`.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "fulcrum:";
/// `[redis] timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// `affinity.cookie`.
pub const DEFAULT_AFFINITY_COOKIE: &str = "fulcrum_sid";
/// `affinity.header`.
pub const DEFAULT_AFFINITY_HEADER: &str = "x-session-id";
/// `affinity.ttl`.
pub const DEFAULT_AFFINITY_TTL: Duration = Duration::from_secs(30 * 60);
/// `affinity.max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;
/// Shortest accepted cookie secret, bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The shared store every instance reads and writes sessions in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redis {
    /// `redis://[:password@]host:port/db` or `rediss://` (TLS).
    pub url: String,
    /// Prefix of every key Fulcrum writes (default `fulcrum:`).
    pub key_prefix: String,
    /// Per-command deadline (default 50ms); past it the instance decides locally.
    pub timeout: Duration,
}

/// Session affinity of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// What identifies a session.
    pub kind: AffinityKind,
    /// Cookie secrets: the first seals new cookies, all open them (default: none).
    pub secrets: Vec<String>,
    /// Idle time after which a session is forgotten (default 30m).
    pub ttl: Duration,
    /// What happens when the session's backend cannot serve (default soft).
    pub mode: AffinityMode,
    /// Bound of the local session table, LRU (default 1000000).
    pub max_sessions: usize,
    /// Where bindings live (default local).
    pub store: SessionStore,
    /// A draining backend keeps serving its sessions (default true).
    pub drain_keeps_sessions: bool,
}

/// What identifies a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKind {
    /// A sealed cookie of this name carries the backend.
    Cookie(String),
    /// The value of this request header (lower case) is the session key.
    Header(String),
    /// The client address masked to these IPv4 / IPv6 prefix lengths.
    ClientIp {
        /// IPv4 prefix length (default 32).
        v4: u8,
        /// IPv6 prefix length (default 64).
        v6: u8,
    },
}

impl AffinityKind {
    /// `cookie`, `header` or `client_ip`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cookie(_) => "cookie",
            Self::Header(_) => "header",
            Self::ClientIp { .. } => "client_ip",
        }
    }
}

/// What happens when a session's backend cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityMode {
    /// Pick another backend with the pool's algorithm and re-stick.
    Soft,
    /// Answer 503 with Retry-After.
    Hard,
}

/// Where session bindings live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStore {
    /// This instance's table only.
    Local,
    /// `[redis]`, read through the local table.
    Redis,
}

impl Validator<'_> {
    pub(crate) fn redis(&mut self, raw: &RedisFile, path: &KeyPath) -> Option<Redis> {
        let url = self.string(&path.key("url"), &raw.url)?;
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            self.error(
                &path.key("url"),
                "must start with redis:// or rediss:// (e.g. \"redis://127.0.0.1:6379/0\")",
            );
        }
        Some(Redis {
            url,
            key_prefix: raw.key_prefix.clone().unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.into()),
            timeout: self.duration(&path.key("timeout"), raw.timeout.as_ref(), DEFAULT_REDIS_TIMEOUT),
        })
    }

    pub(crate) fn affinity(&mut self, raw: &AffinityFile, path: &KeyPath) -> Affinity {
        let kind_name = raw.kind.as_deref().unwrap_or("cookie");
        let misplaced = |v: &mut Self, key: &str, needs: &str| {
            v.error(
                &path.key(key),
                format!("`{key}` only applies to kind = \"{needs}\", not \"{kind_name}\""),
            );
        };
        let kind = match kind_name {
            "cookie" => {
                AffinityKind::Cookie(raw.cookie.clone().unwrap_or_else(|| DEFAULT_AFFINITY_COOKIE.into()))
            }
            "header" => AffinityKind::Header(
                raw.header.as_deref().unwrap_or(DEFAULT_AFFINITY_HEADER).to_ascii_lowercase(),
            ),
            "client_ip" => AffinityKind::ClientIp {
                v4: raw.subnet_mask.unwrap_or(32),
                v6: raw.subnet_mask_v6.unwrap_or(64),
            },
            other => {
                self.error(
                    &path.key("kind"),
                    format!("unknown affinity kind `{other}`; expected cookie, header or client_ip"),
                );
                AffinityKind::Cookie(DEFAULT_AFFINITY_COOKIE.into())
            }
        };
        if raw.cookie.is_some() && kind_name != "cookie" {
            misplaced(self, "cookie", "cookie");
        }
        if raw.header.is_some() && kind_name != "header" {
            misplaced(self, "header", "header");
        }
        for key in ["subnet_mask", "subnet_mask_v6"] {
            let given =
                if key == "subnet_mask" { raw.subnet_mask.is_some() } else { raw.subnet_mask_v6.is_some() };
            if given && kind_name != "client_ip" {
                misplaced(self, key, "client_ip");
            }
        }
        if let AffinityKind::ClientIp { v4, v6 } = kind {
            if v4 > 32 {
                self.error(&path.key("subnet_mask"), "an IPv4 prefix length is 0..=32");
            }
            if v6 > 128 {
                self.error(&path.key("subnet_mask_v6"), "an IPv6 prefix length is 0..=128");
            }
        }
        if let AffinityKind::Cookie(name) = &kind {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                self.error(&path.key("cookie"), "a cookie name is letters, digits, `-`, `_` and `.`");
            }
        }
        let secrets: Vec<String> = raw
            .secrets
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| {
                let path = path.key("secrets").index(i);
                let secret = self.string(&path, s)?;
                if secret.len() < MIN_SECRET_BYTES {
                    self.error(&path, format!("a secret needs at least {MIN_SECRET_BYTES} bytes"));
                }
                Some(secret)
            })
            .collect();
        match kind_name {
            "cookie" if secrets.is_empty() && raw.secrets.as_ref().is_none_or(Vec::is_empty) => self.error(
                &path.key("secrets"),
                "cookie affinity needs at least one secret to seal its cookies (e.g. secrets = [\"${AFFINITY_KEY}\"])",
            ),
            "header" | "client_ip" if raw.secrets.is_some() => misplaced(self, "secrets", "cookie"),
            _ => {}
        }
        let mode = match raw.mode.as_deref().unwrap_or("soft") {
            "soft" => AffinityMode::Soft,
            "hard" => AffinityMode::Hard,
            other => {
                self.error(&path.key("mode"), format!("unknown mode `{other}`; expected soft or hard"));
                AffinityMode::Soft
            }
        };
        let store = match raw.store.as_deref().unwrap_or("local") {
            "local" => SessionStore::Local,
            "redis" if kind_name == "cookie" => {
                self.error(
                    &path.key("store"),
                    "cookie sessions travel in the cookie itself; store = \"redis\" applies to header and client_ip",
                );
                SessionStore::Local
            }
            "redis" => SessionStore::Redis,
            other => {
                self.error(&path.key("store"), format!("unknown store `{other}`; expected local or redis"));
                SessionStore::Local
            }
        };
        let max_sessions = raw.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        if !(1..=100_000_000).contains(&max_sessions) {
            self.error(&path.key("max_sessions"), "must be between 1 and 100000000");
        }
        let ttl = self.duration(&path.key("ttl"), raw.ttl.as_ref(), DEFAULT_AFFINITY_TTL);
        if ttl < Duration::from_secs(1) {
            self.error(&path.key("ttl"), "must be at least 1s (sessions are timed in seconds)");
        }
        Affinity {
            kind,
            secrets,
            ttl,
            mode,
            max_sessions,
            store,
            drain_keeps_sessions: raw.drain_keeps_sessions.unwrap_or(true),
        }
    }
}
