//! The config file's shape as serde reads it. Every table rejects unknown
//! keys so typos fail loudly; values stay close to the text (strings for
//! durations and addresses) so [`crate::validate`] can report them with
//! their key path.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolFile>,
    pub geo: Option<GeoFile>,
    #[serde(default)]
    pub log: LogFile,
    pub redis: Option<RedisFile>,
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub key: Option<String>,
    pub rate: u32,
    pub per: Option<String>,
    pub burst: Option<u32>,
    pub store: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionFile {
    pub max_concurrent: MaxConcurrentFile,
    pub queue: Option<usize>,
    pub classes: Option<BTreeMap<String, ClassFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MaxConcurrentFile {
    Count(u64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFile {
    pub priority: u8,
    pub deadline: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub url: String,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityFile {
    pub kind: Option<String>,
    pub cookie: Option<String>,
    pub header: Option<String>,
    pub subnet_mask: Option<u8>,
    pub subnet_mask_v6: Option<u8>,
    pub secrets: Option<Vec<String>>,
    pub ttl: Option<String>,
    pub mode: Option<String>,
    pub max_sessions: Option<usize>,
    pub store: Option<String>,
    pub drain_keeps_sessions: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub access: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoFile {
    #[serde(default)]
    pub networks: Vec<NetworkFile>,
    #[serde(default)]
    pub latency: BTreeMap<String, BTreeMap<String, u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub cidr: String,
    pub region: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalityFile {
    pub zone: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub worker_threads: Option<usize>,
    pub graceful_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
    pub token: Option<String>,
    pub watch_config: Option<bool>,
    pub allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub listen: String,
    pub protocol: Option<String>,
    pub pool: String,
    pub rate_limit: Option<String>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub deny_regions: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub limits: Option<LimitsFile>,
    pub tls: Option<TlsFile>,
    pub hsts: Option<String>,
    pub http3: Option<bool>,
    pub proxy_protocol: Option<ProxyProtocolFile>,
    pub udp: Option<UdpFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpFile {
    pub session_idle: Option<String>,
    pub max_sessions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolFile {
    pub versions: Option<Vec<String>>,
    #[serde(default)]
    pub trusted: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub max_uri_bytes: Option<u64>,
    pub max_body_bytes: Option<ByteSize>,
    pub header_read_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_requests_per_connection: Option<u64>,
}

/// A size: a number of bytes, or text like `"10MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub certificates: Vec<CertificateFile>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub min_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub query: Option<BTreeMap<String, String>>,
    pub pool: Option<String>,
    pub split: Option<Vec<SplitFile>>,
    pub split_key: Option<String>,
    pub canary: Option<CanaryFile>,
    pub redirect: Option<RedirectFile>,
    pub mirror: Option<MirrorFile>,
    pub strip_prefix: Option<String>,
    pub rewrite_prefix: Option<String>,
    pub request_headers: Option<HeaderRulesFile>,
    pub response_headers: Option<HeaderRulesFile>,
    pub rate_limit: Option<String>,
    pub class: Option<String>,
    pub allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    pub pool: String,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryFile {
    pub pool: String,
    pub baseline: String,
    pub steps: Option<Vec<f64>>,
    pub interval: Option<String>,
    pub min_requests: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub max_p99_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    pub to: String,
    pub status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    pub pool: String,
    pub percent: Option<f64>,
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesFile {
    pub set: Option<BTreeMap<String, String>>,
    pub add: Option<BTreeMap<String, String>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub algorithm: Option<String>,
    #[serde(default)]
    pub backends: Vec<BackendFile>,
    pub timeouts: Option<TimeoutsFile>,
    pub max_idle_per_backend: Option<usize>,
    pub hash_key: Option<String>,
    pub subnet_mask: Option<u8>,
    pub subnet_mask_v6: Option<u8>,
    pub virtual_nodes: Option<u32>,
    pub table_size: Option<u64>,
    pub balance_factor: Option<f64>,
    pub locality: Option<LocalityFile>,
    pub slow_start: Option<String>,
    pub geo: Option<bool>,
    pub health_check: Option<HealthCheckFile>,
    pub passive_health: Option<PassiveHealthFile>,
    pub circuit_breaker: Option<CircuitBreakerFile>,
    pub retries: Option<RetriesFile>,
    pub affinity: Option<AffinityFile>,
    pub admission: Option<AdmissionFile>,
    pub send_proxy_protocol: Option<String>,
    pub tls: Option<UpstreamTlsFile>,
    pub protocol: Option<String>,
    pub discovery: Option<DiscoveryFile>,
    pub autoscale: Option<AutoscaleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleFile {
    pub min: Option<u32>,
    pub max: u32,
    pub target_utilization: Option<f64>,
    pub per_backend_concurrency: Option<u32>,
    pub scale_up_cooldown: Option<String>,
    pub scale_down_cooldown: Option<String>,
    pub predict: Option<String>,
    pub interval: Option<String>,
    pub hook: Option<AutoscaleHookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleHookFile {
    pub webhook: Option<String>,
    pub exec: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    pub dns: String,
    pub r#type: Option<String>,
    pub port: Option<u16>,
    pub resolver: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub verify: Option<bool>,
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect_status: Option<[u16; 2]>,
    pub expect_body: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub unhealthy_interval: Option<String>,
    pub degraded_latency: Option<String>,
    pub service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthFile {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub interval: Option<String>,
    pub ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejection_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerFile {
    pub failure_rate_threshold: Option<f64>,
    pub slow_call_rate_threshold: Option<f64>,
    pub slow_call_duration: Option<String>,
    pub minimum_calls: Option<u32>,
    pub window: Option<u32>,
    pub window_kind: Option<String>,
    pub wait_in_open: Option<String>,
    pub half_open_calls: Option<u32>,
    pub max_requests: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    pub attempts: Option<u32>,
    pub on: Option<Vec<String>>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub budget_percent: Option<f64>,
    pub min_retries_per_second: Option<u32>,
    pub retry_non_idempotent: Option<bool>,
    pub max_replay_body: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    pub address: String,
    pub weight: Option<u32>,
    pub zone: Option<String>,
    pub region: Option<String>,
    pub priority: Option<u8>,
    pub state: Option<String>,
    /// Set by the layers over the file (discovery, the admin API), never read from it.
    #[serde(skip)]
    pub origin: crate::BackendOrigin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub request: Option<String>,
    pub connect: Option<String>,
    pub response_header: Option<String>,
    pub idle: Option<String>,
}
