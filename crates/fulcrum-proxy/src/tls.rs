//! TLS termination with rustls: several certificates, one chosen per
//! connection by the SNI name the client asks for, matched against the
//! names each certificate carries (webpki's subject-name check, so
//! wildcards behave as browsers expect). ALPN offers h2 and http/1.1.

use std::sync::Arc;

use anyhow::Context;
use fulcrum_config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The rustls server config for `tls`, reading the certificate files now.
pub fn server_config(tls: &Tls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
        certificates.push(Arc::new(CertifiedKey::new(chain, signing_key)));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certificates }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Picks the first certificate valid for the client's SNI name, or the
/// first certificate when there is no name or no match.
#[derive(Debug)]
struct SniResolver {
    certificates: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = ServerName::try_from(name).ok()?;
            self.certificates.iter().find(|key| valid_for(key, &name))
        });
        by_name.or_else(|| self.certificates.first()).cloned()
    }
}

fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.cert
        .first()
        .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}
