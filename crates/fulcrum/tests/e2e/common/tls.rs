//! TLS for end-to-end tests: a throwaway CA, leaf certificates written
//! where a config can name them, and a client that trusts the CA.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    Ca { cert: params.self_signed(&key).unwrap(), key }
}

/// Writes a leaf certificate for `name` signed by `ca`; returns its DER.
pub fn leaf(ca: &Ca, name: &str, dir: &std::path::Path, file: &str) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    cert.der().clone()
}

pub async fn connect(
    listen: std::net::SocketAddr,
    ca: &Ca,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

/// A client certificate for `common_name` (organisation `Example`), signed by `ca`.
pub fn client_identity(ca: &Ca, common_name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "Example");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()).into())
}
