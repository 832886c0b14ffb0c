//! Turns the file's serde structs into the typed [`Config`], collecting
//! every problem (not just the first) with its key path and line:column.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::file::{BackendFile, FileConfig, PoolFile};
use crate::model::*;
use crate::parse_duration;
use crate::span::{self, KeyPath};
use crate::{RateLimit, SessionStore};

/// Validates `raw` (parsed from `text`); relative paths resolve against `base_dir`.
pub fn validate(raw: FileConfig, text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut v = Validator { text, base_dir, errors: Vec::new() };
    let root = KeyPath::default();
    let server = v.server(&raw, &root.key("server"));
    let admin = raw.admin.as_ref().and_then(|a| v.admin(a, &root.key("admin")));
    let pools: BTreeMap<String, Pool> = raw
        .pools
        .iter()
        .filter_map(|(name, pool)| Some((name.clone(), v.pool(pool, &root.key("pools").key(name))?)))
        .collect();
    let pool_names: HashSet<&str> = raw.pools.keys().map(String::as_str).collect();
    let listeners = v.listeners(&raw.listeners, &root.key("listeners"), &pool_names);
    let geo = raw.geo.as_ref().map(|g| v.geo(g, &root.key("geo")));
    for (name, pool) in &pools {
        if pool.geo && geo.is_none() {
            v.error(
                &root.key("pools").key(name).key("geo"),
                "`geo = true` needs a [geo] section with networks and latencies",
            );
        }
    }
    let log = v.log(&raw.log, &root.key("log"));
    let redis = raw.redis.as_ref().and_then(|r| v.redis(r, &root.key("redis")));
    let rate_limits: BTreeMap<String, RateLimit> = raw
        .rate_limits
        .iter()
        .map(|(name, limit)| (name.clone(), v.rate_limit(limit, &root.key("rate_limits").key(name))))
        .collect();
    v.admission_references(&raw, &rate_limits, &pools);
    for (name, pool) in &pools {
        let shared = pool.affinity.as_ref().is_some_and(|a| a.store == SessionStore::Redis);
        if shared && raw.redis.is_none() {
            v.error(
                &root.key("pools").key(name).key("affinity").key("store"),
                "`store = \"redis\"` needs a [redis] section with the server's url",
            );
        }
    }
    for (i, listener) in listeners.iter().enumerate() {
        if !listener.access.deny_regions.is_empty() && geo.is_none() {
            v.error(
                &root.key("listeners").index(i).key("deny_regions"),
                "`deny_regions` needs a [geo] section whose networks name the regions",
            );
        }
        let http_only = pools.get(&listener.pool).and_then(|p| p.affinity.as_ref()).filter(|a| {
            listener.protocol == Protocol::Tcp && !matches!(a.kind, crate::AffinityKind::ClientIp { .. })
        });
        let tls_pool = pools.get(&listener.pool).filter(|p| p.tls.is_some());
        if listener.protocol == Protocol::Tcp && tls_pool.is_some() {
            v.error(
                &root.key("listeners").index(i).key("pool"),
                format!("a tcp listener relays bytes as they come; pool `{}` has `tls`, which HTTP listeners speak", listener.pool),
            );
        }
        if let Some(affinity) = http_only {
            v.error(
                &root.key("listeners").index(i).key("pool"),
                format!(
                    "a tcp listener sees no {}s; pool `{}` needs affinity kind = \"client_ip\" to serve it",
                    affinity.kind.name(),
                    listener.pool
                ),
            );
        }
    }
    if v.errors.is_empty() {
        Ok(Config { server, admin, listeners, pools, geo, log, redis, rate_limits })
    } else {
        v.errors.sort_by_key(|e| e.location);
        Err(v.errors)
    }
}

pub(crate) struct Validator<'a> {
    text: &'a str,
    pub(crate) base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(crate) fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            location: span::locate(self.text, path),
            message: message.into(),
        });
    }

    /// `value` with every `${NAME}` replaced by that environment variable.
    pub(crate) fn string(&mut self, path: &KeyPath, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(len) = rest[start + 2..].find('}') else {
                self.error(path, "unterminated `${` (write `${NAME}` to read the environment variable NAME)");
                return None;
            };
            let name = &rest[start + 2..start + 2 + len];
            match std::env::var(name) {
                Ok(found) => out.push_str(&found),
                Err(_) => {
                    self.error(path, format!("environment variable `{name}` is not set"));
                    return None;
                }
            }
            rest = &rest[start + 3 + len..];
        }
        out.push_str(rest);
        Some(out)
    }

    pub(crate) fn duration(&mut self, path: &KeyPath, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(path, "must be longer than zero");
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.error(path, message);
                default
            }
        }
    }

    pub(crate) fn socket_addr(&mut self, path: &KeyPath, value: &str) -> Option<SocketAddr> {
        let value = self.string(path, value)?;
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(path, format!("`{value}` is not an IP:port address (e.g. \"127.0.0.1:8080\")"));
                None
            }
        }
    }

    fn log(&mut self, raw: &crate::file::LogFile, path: &KeyPath) -> Log {
        let access = match raw.access.as_deref() {
            None | Some("off") => AccessTarget::Off,
            Some("stderr") => AccessTarget::Stderr,
            Some(file) => match self.string(&path.key("access"), file) {
                Some(file) => AccessTarget::File(self.base_dir.join(file)),
                None => AccessTarget::Off,
            },
        };
        let format = match raw.format.as_deref() {
            None | Some("json") => AccessFormat::Json,
            Some("combined") => AccessFormat::Combined,
            Some(other) => {
                self.error(
                    &path.key("format"),
                    format!("unknown access log format `{other}`; expected json or combined"),
                );
                AccessFormat::Json
            }
        };
        Log { access, format }
    }

    fn geo(&mut self, raw: &crate::file::GeoFile, path: &KeyPath) -> Geo {
        let mut networks = Vec::new();
        for (i, network) in raw.networks.iter().enumerate() {
            match Cidr::parse(&network.cidr) {
                Some(cidr) => networks.push((cidr, network.region.clone())),
                None => self.error(
                    &path.key("networks").index(i).key("cidr"),
                    format!("`{}` is not a network (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")", network.cidr),
                ),
            }
        }
        let latency = raw
            .latency
            .iter()
            .flat_map(|(from, to)| to.iter().map(move |(to, ms)| ((from.clone(), to.clone()), *ms)))
            .collect();
        Geo { networks, latency }
    }

    fn server(&mut self, raw: &FileConfig, path: &KeyPath) -> Server {
        let worker_threads = raw.server.worker_threads.unwrap_or(0);
        if worker_threads > 1024 {
            self.error(&path.key("worker_threads"), "must be at most 1024 (0 = one per core)");
        }
        let graceful_timeout = self.duration(
            &path.key("graceful_timeout"),
            raw.server.graceful_timeout.as_ref(),
            DEFAULT_GRACEFUL_TIMEOUT,
        );
        Server { worker_threads, graceful_timeout }
    }

    fn admin(&mut self, raw: &crate::file::AdminFile, path: &KeyPath) -> Option<Admin> {
        let listen = self.socket_addr(&path.key("listen"), &raw.listen)?;
        let token = match &raw.token {
            Some(t) => Some(self.string(&path.key("token"), t)?).filter(|t| !t.is_empty()),
            None => None,
        };
        if token.is_none() && !listen.ip().is_loopback() {
            self.error(
                &path.key("listen"),
                "a non-loopback admin address needs `admin.token` (anyone could steer the balancer)",
            );
        }
        let allow = self.networks(&path.key("allow"), raw.allow.as_ref());
        Some(Admin { listen, token, watch_config: raw.watch_config.unwrap_or(false), allow })
    }

    fn pool(&mut self, raw: &PoolFile, path: &KeyPath) -> Option<Pool> {
        let name = raw.algorithm.as_deref().unwrap_or("round_robin");
        let algorithm = Algorithm::from_name(name).map(|a| self.algorithm_parameters(a, raw, path));
        if algorithm.is_none() {
            self.error(
                &path.key("algorithm"),
                format!("unknown algorithm `{name}`; expected one of {}", Algorithm::NAMES.join(", ")),
            );
        }
        let hash_key = match &raw.hash_key {
            None => HashKey::ClientIp,
            Some(text) => HashKey::parse(text).unwrap_or_else(|| {
                self.error(
                    &path.key("hash_key"),
                    format!("`{text}` is not a hash key; expected client_ip, header:NAME, cookie:NAME, path or query:NAME"),
                );
                HashKey::ClientIp
            }),
        };
        if raw.hash_key.is_some()
            && algorithm.as_ref().is_some_and(|a| !a.uses_key() || *a == Algorithm::IpHash)
        {
            self.error(
                &path.key("hash_key"),
                format!(
                    "`{name}` does not hash a key; use consistent_hash, maglev or bounded_consistent_hash"
                ),
            );
        }
        let subnet_mask = raw.subnet_mask.unwrap_or(32);
        if subnet_mask > 32 {
            self.error(&path.key("subnet_mask"), "an IPv4 prefix length is 0..=32");
        }
        let subnet_mask_v6 = raw.subnet_mask_v6.unwrap_or(128);
        if subnet_mask_v6 > 128 {
            self.error(&path.key("subnet_mask_v6"), "an IPv6 prefix length is 0..=128");
        }
        let mut seen = HashSet::new();
        let backends: Vec<Backend> = raw
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let path = path.key("backends").index(i);
                let backend = self.backend(b, &path)?;
                if !seen.insert(backend.address) {
                    self.error(
                        &path.key("address"),
                        format!("{} is listed twice in this pool", backend.address),
                    );
                }
                Some(backend)
            })
            .collect();
        let timeouts = raw.timeouts.as_ref().map_or_else(Timeouts::default, |t| {
            let path = path.key("timeouts");
            Timeouts {
                request: t
                    .request
                    .as_ref()
                    .map(|r| self.duration(&path.key("request"), Some(r), Duration::ZERO)),
                connect: self.duration(&path.key("connect"), t.connect.as_ref(), DEFAULT_CONNECT_TIMEOUT),
                response_header: self.duration(
                    &path.key("response_header"),
                    t.response_header.as_ref(),
                    DEFAULT_RESPONSE_HEADER_TIMEOUT,
                ),
                idle: self.duration(&path.key("idle"), t.idle.as_ref(), DEFAULT_IDLE_TIMEOUT),
            }
        });
        Some(Pool {
            algorithm: algorithm?,
            backends,
            timeouts,
            max_idle_per_backend: raw.max_idle_per_backend.unwrap_or(DEFAULT_MAX_IDLE_PER_BACKEND),
            hash_key,
            subnet_mask,
            subnet_mask_v6,
            locality_zone: raw.locality.as_ref().map(|l| l.zone.clone()),
            slow_start: raw
                .slow_start
                .as_ref()
                .map(|s| self.duration(&path.key("slow_start"), Some(s), Duration::ZERO)),
            geo: raw.geo.unwrap_or(false),
            health_check: raw.health_check.as_ref().map(|h| self.health_check(h, &path.key("health_check"))),
            passive_health: raw
                .passive_health
                .as_ref()
                .map(|p| self.passive_health(p, &path.key("passive_health"))),
            circuit_breaker: raw
                .circuit_breaker
                .as_ref()
                .map(|c| self.circuit_breaker(c, &path.key("circuit_breaker"))),
            retries: raw.retries.as_ref().map(|r| self.retries(r, &path.key("retries"))),
            affinity: raw.affinity.as_ref().map(|a| self.affinity(a, &path.key("affinity"))),
            admission: raw.admission.as_ref().map(|a| self.admission(a, &path.key("admission"))),
            send_proxy_protocol: self
                .send_proxy_protocol(&path.key("send_proxy_protocol"), raw.send_proxy_protocol.as_ref()),
            tls: raw.tls.as_ref().and_then(|t| self.upstream_tls(t, &path.key("tls"))),
            protocol: self.upstream_protocol(raw, &path.key("protocol")),
            discovery: raw.discovery.as_ref().map(|d| self.discovery(d, &path.key("discovery"))),
            autoscale: raw.autoscale.as_ref().map(|a| self.autoscale(a, &path.key("autoscale"))),
        })
    }

    fn upstream_protocol(&mut self, raw: &PoolFile, path: &KeyPath) -> UpstreamProtocol {
        let protocol = match raw.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("h2c") => UpstreamProtocol::H2c,
            Some("h2") => UpstreamProtocol::H2,
            Some("auto") => UpstreamProtocol::Auto,
            Some(other) => {
                self.error(
                    path,
                    format!("unknown backend protocol `{other}`; expected http1, h2c, h2 or auto"),
                );
                UpstreamProtocol::Http1
            }
        };
        if protocol == UpstreamProtocol::H2 && raw.tls.is_none() {
            self.error(path, "`h2` is HTTP/2 over TLS: give the pool `tls` (or use `h2c` for clear text)");
        }
        if protocol == UpstreamProtocol::Auto && raw.tls.is_none() {
            self.error(path, "`auto` picks HTTP/2 or HTTP/1.1 in the TLS handshake: give the pool `tls`");
        }
        if protocol == UpstreamProtocol::H2c && raw.tls.is_some() {
            self.error(path, "`h2c` is HTTP/2 in clear text; with `tls`, use `h2`");
        }
        protocol
    }

    /// `algorithm` with the pool's algorithm-specific keys applied; a key
    /// that the algorithm does not use is an error, not silently ignored.
    fn algorithm_parameters(&mut self, algorithm: Algorithm, raw: &PoolFile, path: &KeyPath) -> Algorithm {
        let name = algorithm.name();
        let unused = |v: &mut Self, key: &str, used_by: &str| {
            v.error(&path.key(key), format!("`{key}` only applies to {used_by}, not to `{name}`"));
        };
        match algorithm {
            Algorithm::ConsistentHash { virtual_nodes } => {
                Algorithm::ConsistentHash { virtual_nodes: self.virtual_nodes(raw, path, virtual_nodes) }
            }
            Algorithm::BoundedConsistentHash { virtual_nodes, balance_factor } => {
                let balance_factor = raw.balance_factor.unwrap_or(balance_factor);
                if !(balance_factor > 1.0 && balance_factor <= 100.0) {
                    self.error(
                        &path.key("balance_factor"),
                        "must be above 1.0 (1.25 lets a backend take 25% above the mean)",
                    );
                }
                Algorithm::BoundedConsistentHash {
                    virtual_nodes: self.virtual_nodes(raw, path, virtual_nodes),
                    balance_factor,
                }
            }
            Algorithm::Maglev { table_size } => {
                let table_size = raw.table_size.unwrap_or(table_size);
                if !(fulcrum_balance::algorithms::is_prime(table_size) && table_size <= 10_000_019) {
                    self.error(
                        &path.key("table_size"),
                        format!("must be a prime up to 10000019 (e.g. 65537); got {table_size}"),
                    );
                } else if table_size <= raw.backends.len() as u64 * 10 {
                    self.error(
                        &path.key("table_size"),
                        "must be well above the backend count (at least 10x; the paper uses 100x)",
                    );
                }
                Algorithm::Maglev { table_size }
            }
            other => {
                if raw.virtual_nodes.is_some() {
                    unused(self, "virtual_nodes", "consistent_hash and bounded_consistent_hash");
                }
                if raw.table_size.is_some() {
                    unused(self, "table_size", "maglev");
                }
                if raw.balance_factor.is_some() {
                    unused(self, "balance_factor", "bounded_consistent_hash");
                }
                other
            }
        }
    }

    fn virtual_nodes(&mut self, raw: &PoolFile, path: &KeyPath, default: u32) -> u32 {
        let virtual_nodes = raw.virtual_nodes.unwrap_or(default);
        if !(1..=10_000).contains(&virtual_nodes) {
            self.error(&path.key("virtual_nodes"), "must be between 1 and 10000 (default 160)");
        }
        virtual_nodes
    }

    fn backend(&mut self, raw: &BackendFile, path: &KeyPath) -> Option<Backend> {
        let address = self.socket_addr(&path.key("address"), &raw.address);
        let weight = raw.weight.unwrap_or(DEFAULT_WEIGHT);
        if !(1..=MAX_WEIGHT).contains(&weight) {
            self.error(&path.key("weight"), format!("must be between 1 and {MAX_WEIGHT} (got {weight})"));
        }
        Some(Backend {
            address: address?,
            weight,
            zone: raw.zone.clone(),
            region: raw.region.clone(),
            priority: raw.priority.unwrap_or(0),
            state: match raw.state.as_deref() {
                None => BackendState::Active,
                Some(text) => BackendState::parse(text).unwrap_or_else(|| {
                    self.error(
                        &path.key("state"),
                        format!("unknown state `{text}`; expected active, draining or maintenance"),
                    );
                    BackendState::Active
                }),
            },
            origin: raw.origin,
        })
    }
}
