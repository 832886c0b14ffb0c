//! The validated, typed configuration every other part of Fulcrum is built
//! from. Each field documents its default; defaults live in one place, the
//! `DEFAULT_*` constants below, which the README's reference mirrors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use fulcrum_balance::Algorithm;

/// Drain time on SIGTERM: `[server] graceful_timeout`.
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
/// `pools.*.timeouts.connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `pools.*.timeouts.response_header`.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// `pools.*.timeouts.idle`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `pools.*.max_idle_per_backend`.
pub const DEFAULT_MAX_IDLE_PER_BACKEND: usize = 512;
/// `pools.*.backends[*].weight`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[admin]`; no admin listener when absent.
    pub admin: Option<Admin>,
    /// `[[listeners]]`, in file order.
    pub listeners: Vec<Listener>,
    /// `[pools.NAME]`, by name.
    pub pools: BTreeMap<String, Pool>,
    /// `[geo]`: client networks → regions and latencies between regions.
    pub geo: Option<Geo>,
    /// `[log]`: the access log.
    pub log: Log,
    /// `[redis]`: the store shared by every instance; none by default.
    pub redis: Option<crate::Redis>,
    /// `[rate_limits.NAME]`, by name.
    pub rate_limits: BTreeMap<String, crate::RateLimit>,
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Log {
    /// Where access lines go (default: nowhere).
    pub access: AccessTarget,
    /// Line format (default JSON).
    pub format: AccessFormat,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessTarget {
    /// No access log.
    #[default]
    Off,
    /// Standard error, with the process log.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Apache's combined format, followed by Fulcrum's fields as `key=value`.
    Combined,
}

/// Geographic routing data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Geo {
    /// Client networks and their regions; the longest matching prefix wins.
    pub networks: Vec<(Cidr, String)>,
    /// Latency in milliseconds between two regions, as configured (either order).
    pub latency: BTreeMap<(String, String), u32>,
}

impl Geo {
    /// The region of a client address, by longest prefix match.
    pub fn region_of(&self, client: std::net::IpAddr) -> Option<&str> {
        self.networks
            .iter()
            .filter(|(net, _)| net.contains(client))
            .max_by_key(|(net, _)| net.prefix)
            .map(|(_, r)| r.as_str())
    }

    /// Milliseconds from region `a` to `b`: 0 within a region, the
    /// configured figure in either direction, else `u32::MAX` (unknown: last resort).
    pub fn latency_ms(&self, a: &str, b: &str) -> u32 {
        if a == b {
            return 0;
        }
        // A few region pairs at most: a scan, and no key to allocate.
        self.latency
            .iter()
            .find(|((x, y), _)| (x == a && y == b) || (x == b && y == a))
            .map_or(u32::MAX, |(_, &ms)| ms)
    }
}

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub address: std::net::IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` (a bare address is a host network).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let address: std::net::IpAddr = address.trim().parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Self { address, prefix })
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.address, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Worker threads; 0 (the default) = one per core.
    pub worker_threads: usize,
    /// How long in-flight requests may finish after SIGTERM (default 30s).
    pub graceful_timeout: Duration,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Address of the admin API, `/metrics`, `/stats` and the dashboard.
    pub listen: SocketAddr,
    /// Bearer token; required when `listen` is not a loopback address.
    pub token: Option<String>,
    /// Reload when the config file changes (default false).
    pub watch_config: bool,
    /// When not empty, only clients of these networks reach the admin API.
    pub allow: Vec<Cidr>,
}

/// One listening socket and what it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// `http` (default), `https` or `tcp`.
    pub protocol: Protocol,
    /// Pool for requests no route matches (every connection, for `tcp`).
    pub pool: String,
    /// Rate limit every request of the listener is counted against.
    pub rate_limit: Option<String>,
    /// Networks let in and kept out, checked at accept.
    pub access: crate::AccessList,
    /// Connections open at once at most; beyond, new ones wait in the backlog.
    pub max_connections: Option<usize>,
    /// Connections open at once per client address; beyond, closed at accept.
    pub max_connections_per_ip: Option<usize>,
    /// Request limits.
    pub limits: crate::Limits,
    /// Certificates, for `https`.
    pub tls: Option<Tls>,
    /// `Strict-Transport-Security` added to every response (https only).
    pub hsts: Option<String>,
    /// Also serve HTTP/3 on the same UDP port (https only), advertised with `Alt-Svc`.
    pub http3: bool,
    /// PROXY protocol headers taken from trusted networks; none by default.
    pub proxy_protocol: Option<crate::ProxyProtocol>,
    /// Flow settings, for `udp` listeners.
    pub udp: Udp,
    /// L7 routing rules; the first match wins.
    pub routes: Vec<Route>,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge) in clear text.
    Http,
    /// HTTP/1.1 and HTTP/2 over TLS (ALPN).
    Https,
    /// Raw TCP, balanced per connection.
    Tcp,
    /// UDP datagrams, balanced per flow (client address).
    Udp,
}

/// `udp.session_idle`.
pub const DEFAULT_UDP_SESSION_IDLE: Duration = Duration::from_secs(30);
/// `udp.max_sessions`.
pub const DEFAULT_UDP_MAX_SESSIONS: usize = 100_000;

/// How a UDP listener keeps its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    /// A flow with no datagram either way for this long is forgotten (default 30s).
    pub session_idle: Duration,
    /// Flows kept at once; datagrams of new flows beyond it are dropped (default 100000).
    pub max_sessions: usize,
}

impl Default for Udp {
    fn default() -> Self {
        Self { session_idle: DEFAULT_UDP_SESSION_IDLE, max_sessions: DEFAULT_UDP_MAX_SESSIONS }
    }
}

/// Certificates of an `https` listener; one is chosen per connection by SNI.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// PEM certificate chains with their keys; the first is the default.
    pub certificates: Vec<CertificatePaths>,
    /// CAs that sign client certificates (mTLS); none by default.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (default) or optional, with `client_ca`.
    pub client_auth_required: bool,
    /// Oldest TLS version accepted (default 1.2).
    pub min_version: TlsVersion,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One L7 routing rule: all given conditions must match.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique within the listener; the admin API addresses the route by
    /// it (default: the route's index, from 0).
    pub name: String,
    /// Host condition, without port.
    pub host: Option<HostMatch>,
    /// Path prefix condition.
    pub path_prefix: Option<String>,
    /// Allowed methods (upper case); empty = any.
    pub methods: Vec<String>,
    /// Exact header matches (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Exact query parameter matches (decoded).
    pub query: Vec<(String, String)>,
    /// Where matching requests go.
    pub target: RouteTarget,
    /// What keeps a client in one variant of a split or canary (default:
    /// none, each request is split on its own).
    pub split_key: Option<HashKey>,
    /// Copies of a share of requests to a shadow pool.
    pub mirror: Option<crate::Mirror>,
    /// Path prefix removed before forwarding.
    pub strip_prefix: Option<String>,
    /// Path prefix added before forwarding (after `strip_prefix`).
    pub rewrite_prefix: Option<String>,
    /// Changes to the request's headers, after `X-Forwarded-*`.
    pub request_headers: crate::HeaderRules,
    /// Changes to the response's headers.
    pub response_headers: crate::HeaderRules,
    /// Rate limit matching requests are counted against (besides the listener's).
    pub rate_limit: Option<String>,
    /// Traffic class of matching requests (default `default`).
    pub class: String,
    /// When not empty, only clients of these networks (others get 403).
    pub allow: Vec<Cidr>,
}

/// A host condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`, lower case.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`.
    Wildcard(String),
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    /// One pool.
    Pool(String),
    /// Pools chosen in proportion to their weights (by `split_key` when set).
    Split(Vec<(String, u32)>),
    /// A canary pool taking a growing share from its baseline.
    Canary(crate::Canary),
    /// No pool: the balancer answers with a redirect.
    Redirect(crate::Redirect),
}

impl RouteTarget {
    /// Every pool the target may send to.
    pub fn pools(&self) -> Vec<&str> {
        match self {
            Self::Pool(pool) => vec![pool],
            Self::Split(parts) => parts.iter().map(|(p, _)| p.as_str()).collect(),
            Self::Canary(canary) => vec![&canary.pool, &canary.baseline],
            Self::Redirect(_) => Vec::new(),
        }
    }
}

/// A set of backends and how to balance over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Balancing algorithm (default `round_robin`).
    pub algorithm: Algorithm,
    /// Backends, in file order.
    pub backends: Vec<Backend>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Idle keep-alive connections kept per backend and worker thread (default 64).
    pub max_idle_per_backend: usize,
    /// What hashing algorithms hash (default `client_ip`).
    pub hash_key: HashKey,
    /// Prefix length an IPv4 client address is masked to before hashing (default 32).
    pub subnet_mask: u8,
    /// Prefix length an IPv6 client address is masked to before hashing (default 128).
    pub subnet_mask_v6: u8,
    /// The zone this pool prefers (`locality = { zone = "a" }`), spilling
    /// over when too little of it is healthy.
    pub locality_zone: Option<String>,
    /// Ramp time of a backend's weight after it is added (`slow_start`).
    pub slow_start: Option<Duration>,
    /// Send each client to the nearest healthy region (`geo = true`, needs `[geo]`).
    pub geo: bool,
    /// Active health checks (`health_check`); none by default.
    pub health_check: Option<crate::HealthCheck>,
    /// Outlier detection (`passive_health`); none by default.
    pub passive_health: Option<crate::PassiveHealth>,
    /// Circuit breaker per backend (`circuit_breaker`); none by default.
    pub circuit_breaker: Option<crate::CircuitBreaker>,
    /// Retry policy (`retries`); no retries by default.
    pub retries: Option<crate::Retries>,
    /// Session affinity (`affinity`); none by default.
    pub affinity: Option<crate::Affinity>,
    /// Admission control (`admission`); none by default.
    pub admission: Option<crate::Admission>,
    /// A PROXY protocol header sent on every upstream connection; none by default.
    pub send_proxy_protocol: Option<crate::ProxyVersion>,
    /// TLS to the backends (`tls`); clear text by default.
    pub tls: Option<crate::UpstreamTls>,
    /// What HTTP the backends speak (default HTTP/1.1).
    pub protocol: UpstreamProtocol,
    /// Backends found by DNS besides the static ones (`discovery`); none by default.
    pub discovery: Option<crate::Discovery>,
    /// The autoscaling advisor (`autoscale`); none by default.
    pub autoscale: Option<crate::Autoscale>,
}

/// The HTTP version spoken to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per pooled connection.
    #[default]
    Http1,
    /// HTTP/2 in clear text (prior knowledge), multiplexed.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), multiplexed; needs `tls`.
    H2,
    /// TLS offering ALPN `h2` and `http/1.1`: each backend speaks what it
    /// picks; needs `tls`.
    Auto,
}

impl UpstreamProtocol {
    /// Whether backends may speak HTTP/2 (so gRPC's deadlines, trailers
    /// and statuses are honoured).
    pub fn is_h2(self) -> bool {
        matches!(self, Self::H2c | Self::H2 | Self::Auto)
    }
}

/// The request property hashing algorithms place by. A request without
/// it (no such header, cookie or query parameter) is hashed by its client
/// address instead, so it still lands consistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address, masked by `subnet_mask` / `subnet_mask_v6`.
    ClientIp,
    /// A request header's value (lower-case name).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The URL path.
    Path,
    /// A query parameter's value.
    Query(String),
}

impl HashKey {
    /// Parses `client_ip`, `header:NAME`, `cookie:NAME`, `path` or `query:NAME`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once(':').map_or((text, None), |(k, n)| (k, Some(n)));
        let name = name.filter(|n| !n.is_empty()).map(str::to_string);
        Some(match (kind, name) {
            ("client_ip", None) => Self::ClientIp,
            ("path", None) => Self::Path,
            ("header", Some(n)) => Self::Header(n.to_ascii_lowercase()),
            ("cookie", Some(n)) => Self::Cookie(n),
            ("query", Some(n)) => Self::Query(n),
            _ => return None,
        })
    }
}

/// One backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `IP:port`.
    pub address: SocketAddr,
    /// Relative capacity, 1..=1000000 (default 1).
    pub weight: u32,
    /// Availability zone, for locality-aware balancing.
    pub zone: Option<String>,
    /// Region, for geographic routing.
    pub region: Option<String>,
    /// Priority level, 0 first (default 0): a level takes traffic only when
    /// the levels before it lack healthy capacity.
    pub priority: u8,
    /// Operator state (default `active`).
    pub state: BackendState,
    /// Where it came from: the file, discovery or the admin API.
    pub origin: crate::BackendOrigin,
}

/// Whether an operator lets a backend take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendState {
    /// Takes traffic.
    #[default]
    Active,
    /// Takes no new requests; those in flight finish.
    Draining,
    /// Takes no traffic; still probed, so its health stays known.
    Maintenance,
}

impl BackendState {
    /// Parses `active`, `draining` or `maintenance`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "draining" => Some(Self::Draining),
            "maintenance" => Some(Self::Maintenance),
            _ => None,
        }
    }

    /// The name as written in config and shown by the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Maintenance => "maintenance",
        }
    }
}

/// Upstream timeouts of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request, from pick to response headers, retries included (default: none).
    pub request: Option<Duration>,
    /// TCP connect to a backend (default 5s); expiry counts as a connect failure (502).
    pub connect: Duration,
    /// From request sent to response headers received (default 60s); expiry answers 504.
    pub response_header: Duration,
    /// How long an idle upstream keep-alive connection is kept (default 60s).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: None,
            connect: DEFAULT_CONNECT_TIMEOUT,
            response_header: DEFAULT_RESPONSE_HEADER_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}
