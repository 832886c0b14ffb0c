//! What a listener lets in: networks allowed and denied (`allow`, `deny`,
//! `deny_regions`), connection caps, and the request limits (`limits`),
//! with safe defaults when a listener sets nothing (HAProxy's and Envoy's
//! orders of magnitude).

use std::time::Duration;

use crate::file::{ByteSize, LimitsFile};
use crate::model::Cidr;
use crate::span::KeyPath;
use crate::validate::Validator;

/// `limits.max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// `limits.max_headers`.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// `limits.max_uri_bytes`.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// `limits.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// `limits.header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `limits.keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `limits.max_requests_per_connection`.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;

/// Request limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers), bytes; beyond: 431.
    pub max_header_bytes: usize,
    /// Most header fields; beyond: 431.
    pub max_headers: usize,
    /// Longest request target, bytes; beyond: 414.
    pub max_uri_bytes: usize,
    /// Largest request body, bytes; beyond: 413.
    pub max_body_bytes: u64,
    /// Time a client has to send a whole request head.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub keepalive_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
        }
    }
}

/// Networks let in and kept out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessList {
    /// When not empty, only these networks.
    pub allow: Vec<Cidr>,
    /// Refused even when allowed; the longest matching prefix of both lists decides.
    pub deny: Vec<Cidr>,
    /// Regions (from `[geo]` networks) refused.
    pub deny_regions: Vec<String>,
}

impl AccessList {
    /// Whether nothing is configured.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.deny_regions.is_empty()
    }

    /// Whether `client` (in `region`, if known) may connect: the longest
    /// prefix matching it in `allow` or `deny` decides; with none matching,
    /// it may when `allow` is empty.
    pub fn admits(&self, client: std::net::IpAddr, region: Option<&str>) -> bool {
        if region.is_some_and(|r| self.deny_regions.iter().any(|d| d == r)) {
            return false;
        }
        let longest = |list: &[Cidr]| list.iter().filter(|c| c.contains(client)).map(|c| c.prefix).max();
        match (longest(&self.allow), longest(&self.deny)) {
            (Some(allowed), Some(denied)) => allowed > denied,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => self.allow.is_empty(),
        }
    }
}

impl Validator<'_> {
    pub(crate) fn networks(&mut self, path: &KeyPath, raw: Option<&Vec<String>>) -> Vec<Cidr> {
        raw.iter()
            .flat_map(|list| list.iter().enumerate())
            .filter_map(|(i, text)| {
                let parsed = Cidr::parse(text);
                if parsed.is_none() {
                    self.error(
                        &path.index(i),
                        format!("`{text}` is not a network (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")"),
                    );
                }
                parsed
            })
            .collect()
    }

    pub(crate) fn limits(&mut self, raw: Option<&LimitsFile>, path: &KeyPath) -> Limits {
        let d = Limits::default();
        let Some(raw) = raw else { return d };
        let bounded = |v: &mut Self, key: &str, value: Option<u64>, default: u64, range: (u64, u64)| {
            let value = value.unwrap_or(default);
            if !(range.0..=range.1).contains(&value) {
                v.error(&path.key(key), format!("must be between {} and {}", range.0, range.1));
            }
            value
        };
        let max_body_bytes = match &raw.max_body_bytes {
            None => d.max_body_bytes,
            Some(size) => match size.bytes() {
                Ok(bytes) => bytes,
                Err(message) => {
                    self.error(&path.key("max_body_bytes"), message);
                    d.max_body_bytes
                }
            },
        };
        Limits {
            max_header_bytes: bounded(
                self,
                "max_header_bytes",
                raw.max_header_bytes,
                d.max_header_bytes as u64,
                (8192, 1 << 20),
            ) as usize,
            max_headers: bounded(self, "max_headers", raw.max_headers, d.max_headers as u64, (1, 10_000))
                as usize,
            max_uri_bytes: bounded(
                self,
                "max_uri_bytes",
                raw.max_uri_bytes,
                d.max_uri_bytes as u64,
                (16, 1 << 20),
            ) as usize,
            max_body_bytes,
            header_read_timeout: self.duration(
                &path.key("header_read_timeout"),
                raw.header_read_timeout.as_ref(),
                d.header_read_timeout,
            ),
            keepalive_timeout: self.duration(
                &path.key("keepalive_timeout"),
                raw.keepalive_timeout.as_ref(),
                d.keepalive_timeout,
            ),
            max_requests_per_connection: bounded(
                self,
                "max_requests_per_connection",
                raw.max_requests_per_connection,
                d.max_requests_per_connection,
                (1, u64::MAX),
            ),
        }
    }
}

impl ByteSize {
    /// The size in bytes: a number, or text like `"10MiB"`, `"512KiB"`, `"1GiB"`, `"100B"`.
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Self::Bytes(n) => return Ok(*n),
            Self::Text(text) => text.trim(),
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            _ => return Err(format!("`{text}` is not a size; write e.g. 10485760, \"512KiB\" or \"10MiB\"")),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .ok_or_else(|| format!("`{text}` is not a size; write e.g. 10485760, \"512KiB\" or \"10MiB\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_decides() {
        let list = AccessList {
            allow: vec![Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("10.9.1.0/24").unwrap()],
            deny: vec![Cidr::parse("10.9.0.0/16").unwrap()],
            deny_regions: vec!["xx".into()],
        };
        let ip = |s: &str| s.parse().unwrap();
        assert!(list.admits(ip("10.1.2.3"), None));
        assert!(!list.admits(ip("10.9.2.3"), None), "the /16 deny is longer than the /8 allow");
        assert!(list.admits(ip("10.9.1.3"), None), "the /24 allow is longer than the /16 deny");
        assert!(!list.admits(ip("192.168.1.1"), None), "not allowed");
        assert!(!list.admits(ip("10.1.2.3"), Some("xx")), "a denied region");
        assert!(AccessList { deny: list.deny.clone(), ..AccessList::default() }.admits(ip("8.8.8.8"), None));
    }

    #[test]
    fn sizes_read_as_bytes() {
        assert_eq!(ByteSize::Text("10MiB".into()).bytes(), Ok(10 << 20));
        assert_eq!(ByteSize::Text("512 KiB".into()).bytes(), Ok(512 << 10));
        assert_eq!(ByteSize::Bytes(7).bytes(), Ok(7));
        assert!(ByteSize::Text("ten".into()).bytes().is_err());
        assert!(ByteSize::Text("99999999999999GiB".into()).bytes().is_err());
    }
}
