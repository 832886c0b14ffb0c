//! The PROXY protocol (HAProxy's, versions 1 and 2): which listeners take
//! a header carrying the real client (`proxy_protocol`), from which
//! networks, and which pools send one to their backends
//! (`send_proxy_protocol`).

use crate::file::ProxyProtocolFile;
use crate::span::KeyPath;
use crate::validate::Validator;
use crate::Cidr;

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// Parses `v1` or `v2`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "v1" => Some(Self::V1),
            "v2" => Some(Self::V2),
            _ => None,
        }
    }
}

/// A listener's PROXY protocol acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Accepts version 1 headers (default true).
    pub v1: bool,
    /// Accepts version 2 headers (default true).
    pub v2: bool,
    /// Networks allowed to send a header (required); others are closed.
    pub trusted: Vec<Cidr>,
}

impl Validator<'_> {
    pub(crate) fn proxy_protocol(&mut self, raw: &ProxyProtocolFile, path: &KeyPath) -> ProxyProtocol {
        let mut accepted =
            ProxyProtocol { v1: raw.versions.is_none(), v2: raw.versions.is_none(), trusted: Vec::new() };
        for (i, version) in raw.versions.iter().flatten().enumerate() {
            match ProxyVersion::parse(version) {
                Some(ProxyVersion::V1) => accepted.v1 = true,
                Some(ProxyVersion::V2) => accepted.v2 = true,
                None => self.error(
                    &path.key("versions").index(i),
                    format!("`{version}` is not a PROXY protocol version; expected v1 or v2"),
                ),
            }
        }
        if raw.versions.as_ref().is_some_and(Vec::is_empty) {
            self.error(&path.key("versions"), "name at least one of v1 and v2");
        }
        accepted.trusted = self.networks(&path.key("trusted"), Some(&raw.trusted));
        if raw.trusted.is_empty() {
            self.error(
                &path.key("trusted"),
                "name the networks of the balancers allowed to send PROXY headers",
            );
        }
        accepted
    }

    pub(crate) fn send_proxy_protocol(
        &mut self,
        path: &KeyPath,
        raw: Option<&String>,
    ) -> Option<ProxyVersion> {
        let raw = raw?;
        let version = ProxyVersion::parse(raw);
        if version.is_none() {
            self.error(path, format!("`{raw}` is not a PROXY protocol version; expected v1 or v2"));
        }
        version
    }
}
