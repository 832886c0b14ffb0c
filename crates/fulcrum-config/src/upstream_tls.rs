//! TLS to backends (`[pools.NAME] tls`): whether and how their
//! certificates are verified, the name sent as SNI, and the client
//! certificate presented to backends that require one (mTLS).

use std::path::PathBuf;

use crate::file::UpstreamTlsFile;
use crate::span::KeyPath;
use crate::validate::Validator;

/// TLS from Fulcrum to a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the backends' certificates (default true; false is logged as a warning).
    pub verify: bool,
    /// PEM bundle of the CAs trusted for backends (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified (default: the backend's IP address).
    pub sni: Option<String>,
    /// The client certificate chain and key presented to backends (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Validator<'_> {
    pub(crate) fn upstream_tls(&mut self, raw: &UpstreamTlsFile, path: &KeyPath) -> Option<UpstreamTls> {
        let ca = match &raw.ca {
            Some(ca) => Some(self.existing_file(&path.key("ca"), ca)?),
            None => None,
        };
        let client_cert = match (&raw.client_cert, &raw.client_key) {
            (Some(cert), Some(key)) => {
                let cert = self.existing_file(&path.key("client_cert"), cert);
                let key = self.existing_file(&path.key("client_key"), key);
                Some((cert?, key?))
            }
            (None, None) => None,
            (Some(_), None) => {
                self.error(&path.key("client_cert"), "a client certificate needs its `client_key`");
                None
            }
            (None, Some(_)) => {
                self.error(&path.key("client_key"), "a client key needs its `client_cert`");
                None
            }
        };
        if raw.sni.as_ref().is_some_and(|s| rustls_name_invalid(s)) {
            self.error(&path.key("sni"), "must be a DNS name or an IP address");
        }
        Some(UpstreamTls { verify: raw.verify.unwrap_or(true), ca, sni: raw.sni.clone(), client_cert })
    }
}

fn rustls_name_invalid(name: &str) -> bool {
    name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}
