//! Typed DNS service discovery settings (`[pools.NAME.discovery]`): the
//! name a pool's backends are found under, the record type, the resolver
//! and how often to look again, with their defaults in one place.

use std::net::SocketAddr;
use std::time::Duration;

use crate::file::DiscoveryFile;
use crate::span::KeyPath;
use crate::validate::Validator;

/// `discovery.interval`.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Where a pool finds backends besides its static list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The name to resolve (e.g. `app.service.internal`).
    pub name: String,
    /// What records to ask for.
    pub records: DiscoveryRecords,
    /// The DNS server to ask; `None`: the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// Resolve again at least this often (sooner when the records' TTL ends).
    pub interval: Duration,
}

/// The record type a pool is discovered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryRecords {
    /// A and AAAA records: one backend per address, all on `port`.
    Address {
        /// The backends' port.
        port: u16,
    },
    /// SRV records: targets, ports and weights from the records.
    Service,
}

/// Where a backend of the effective config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendOrigin {
    /// The config file.
    #[default]
    Static,
    /// DNS service discovery.
    Dns,
    /// The admin API.
    Api,
}

impl BackendOrigin {
    /// `static`, `dns` or `api`, as `/stats` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dns => "dns",
            Self::Api => "api",
        }
    }
}

impl Validator<'_> {
    pub(crate) fn discovery(&mut self, raw: &DiscoveryFile, path: &KeyPath) -> Discovery {
        let name = raw.dns.trim_end_matches('.').to_string();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            self.error(&path.key("dns"), format!("`{}` is not a DNS name", raw.dns));
        }
        let records = match raw.r#type.as_deref().unwrap_or("A") {
            "A" | "a" => match raw.port {
                Some(port) if port > 0 => DiscoveryRecords::Address { port },
                Some(_) => {
                    self.error(&path.key("port"), "must be 1..=65535");
                    DiscoveryRecords::Address { port: 1 }
                }
                None => {
                    self.error(path, "A records carry no port: give `port` (1..=65535)");
                    DiscoveryRecords::Address { port: 1 }
                }
            },
            "SRV" | "srv" => {
                if raw.port.is_some() {
                    self.error(&path.key("port"), "SRV records carry their own ports; remove `port`");
                }
                DiscoveryRecords::Service
            }
            other => {
                self.error(&path.key("type"), format!("unknown record type `{other}`; expected A or SRV"));
                DiscoveryRecords::Service
            }
        };
        let resolver = raw.resolver.as_ref().and_then(|r| match r.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, 53)),
            Err(_) => self.socket_addr(&path.key("resolver"), r),
        });
        let interval =
            self.duration(&path.key("interval"), raw.interval.as_ref(), DEFAULT_DISCOVERY_INTERVAL);
        Discovery { name, records, resolver, interval }
    }
}
