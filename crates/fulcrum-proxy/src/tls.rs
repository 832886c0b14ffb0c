//! TLS termination with rustls: several certificates, one chosen per
//! connection by the SNI name the client asks for, matched against the
//! DNS names each certificate's subject alternative names carry, read once
//! when the config is loaded. A wildcard `*.example.com` matches exactly
//! one more leftmost label, as browsers match it (RFC 6125 §6.4.3); the
//! client still verifies the certificate itself. ALPN offers h2 and
//! http/1.1. With `client_ca` clients present certificates signed by it
//! (mTLS, required or optional), whose subject the backend is told.
//! Sessions resume by ticket (RFC 5077/8446, rotating ticket keys) or by
//! id from a cache of [`SESSION_CACHE`] sessions.
//!
//! The crypto is AWS-LC's (`aws-lc-rs`): its X25519 (s2n-bignum's
//! verified assembly) and SHA-256 (SHA extensions) make a handshake cost
//! about a tenth less CPU than ring's, measured with `perfsuite.py
//! tls-handshake`; the rest of Fulcrum keeps ring.

use std::sync::Arc;

use anyhow::Context;
use fulcrum_config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The rustls server config for `tls`, reading the certificate files now.
pub fn server_config(tls: &Tls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(server_provider());
    let mut certificates = Vec::new();
    for pair in &tls.certificates {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
            .and_then(|certs| certs.collect())
            .with_context(|| format!("cannot read certificates from {}", pair.cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", pair.cert.display());
        let key = PrivateKeyDer::from_pem_file(&pair.key)
            .with_context(|| format!("cannot read a private key from {}", pair.key.display()))?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .with_context(|| format!("unusable private key in {}", pair.key.display()))?;
        let names = dns_names(&chain[0]).with_context(|| {
            format!("cannot read the names of the certificate in {}", pair.cert.display())
        })?;
        certificates.push(Named { names, key: Arc::new(CertifiedKey::new(chain, signing_key)) });
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        fulcrum_config::TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        fulcrum_config::TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .context("no TLS protocol version available")?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read client CAs from {}", ca.display()))?
            {
                roots.add(cert).with_context(|| format!("unusable client CA in {}", ca.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.client_auth_required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().context("cannot verify client certificates")?)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { certificates }));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().context("cannot make TLS session tickets")?;
    Ok(Arc::new(config))
}

/// The crypto provider, its cipher suites reordered so that suites
/// hashing with SHA-256 come first (AES-128-GCM, then ChaCha20-Poly1305,
/// then the SHA-384 ones), and chosen in this order whatever the client
/// prefers. CPUs hash SHA-256 in hardware (SHA extensions) but not
/// SHA-384, which every TLS 1.3 key-schedule step and resumption binder
/// runs through: with AES-256-GCM-SHA384, the suite OpenSSL clients list
/// first, a resumed handshake cost 7% more CPU. Go's servers prefer
/// AES-128-GCM the same way.
fn server_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        let common = match suite {
            rustls::SupportedCipherSuite::Tls12(suite) => &suite.common,
            rustls::SupportedCipherSuite::Tls13(suite) => &suite.common,
        };
        common.hash_provider.algorithm() != rustls::crypto::hash::HashAlgorithm::SHA256
    });
    provider
}

/// Sessions kept for resumption by id (each a few hundred bytes).
pub const SESSION_CACHE: usize = 20_000;

/// The subject of the certificate the client presented and rustls
/// verified, as a header value (`CN=alice, O=Example`).
pub fn client_subject(connection: &rustls::ServerConnection) -> Option<http::HeaderValue> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    http::HeaderValue::from_str(&cert.subject().to_string()).ok()
}

/// A certificate and the DNS names (lowercase, maybe `*.`-wildcards) it is for.
#[derive(Debug)]
struct Named {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The DNS names in `leaf`'s subject alternative names.
fn dns_names(leaf: &CertificateDer<'_>) -> anyhow::Result<Vec<String>> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cert.valid_dns_names().map(str::to_ascii_lowercase).collect())
}

/// Picks the first certificate for the client's SNI name, or the first
/// certificate when there is no name or no match.
#[derive(Debug)]
struct SniResolver {
    certificates: Vec<Named>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|sni| self.certificates.iter().find(|c| c.names.iter().any(|n| name_matches(n, sni))));
        by_name.or_else(|| self.certificates.first()).map(|c| Arc::clone(&c.key))
    }
}

/// Whether certificate name `pattern` covers `sni` (case-insensitive; a
/// leading `*.` stands for exactly one non-empty label).
fn name_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => sni
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("a.example.com", "A.Example.com"));
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(!name_matches("a.example.com", "b.example.com"));
    }
}
