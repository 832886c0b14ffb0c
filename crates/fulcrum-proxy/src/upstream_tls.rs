//! TLS to backends with rustls: the pool's CA bundle (or the system's
//! roots through `rustls-native-certs`), the SNI name (the configured one,
//! else the backend's IP address), a client certificate for backends that
//! require one, and session resumption (rustls's in-memory cache, kept
//! for the life of the pool). `verify = false` accepts any certificate and
//! says so in the log when the pool is built.

use std::sync::Arc;

use anyhow::Context;
use fulcrum_config::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Which application protocols a handshake offers (ALPN, RFC 7301).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// What the pool's `protocol` speaks: `h2`, `http/1.1`, or both for `auto`.
    Pool,
    /// `http/1.1` only: protocol switches and HTTP health probes.
    Http1,
    /// `h2` only: gRPC health probes.
    H2,
}

/// A pool's TLS client.
pub struct TlsClient {
    /// By [`Offer`]: one configuration each, sharing the session cache.
    connectors: [tokio_rustls::TlsConnector; 3],
    sni: Option<ServerName<'static>>,
    /// Unique per client: idle connections made with it are kept apart
    /// from those to the same address in clear or with other settings.
    pub id: u64,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("sni", &self.sni).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// The client for `tls` of pool `pool`, reading its files now.
    pub fn new(
        pool: &str,
        tls: &UpstreamTls,
        protocol: fulcrum_config::UpstreamProtocol,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("no TLS protocol version available")?;
        let builder = if tls.verify {
            builder.with_root_certificates(roots(tls)?)
        } else {
            tracing::warn!(pool, "tls.verify = false: backends' certificates are not verified (anyone on the path can impersonate them)");
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        };
        let mut config = match &tls.client_cert {
            Some((cert, key)) => {
                let chain = read_chain(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("cannot read a private key from {}", key.display()))?;
                builder.with_client_auth_cert(chain, key).context("unusable client certificate or key")?
            }
            None => builder.with_no_client_auth(),
        };
        let (h2, http1) = (b"h2".to_vec(), b"http/1.1".to_vec());
        config.alpn_protocols = match protocol {
            fulcrum_config::UpstreamProtocol::Http1 => vec![http1.clone()],
            fulcrum_config::UpstreamProtocol::H2c | fulcrum_config::UpstreamProtocol::H2 => vec![h2.clone()],
            fulcrum_config::UpstreamProtocol::Auto => vec![h2.clone(), http1.clone()],
        };
        let offering = |alpn: Vec<u8>| {
            let mut config = config.clone();
            config.alpn_protocols = vec![alpn];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        let connectors = [offering(http1), offering(h2), tokio_rustls::TlsConnector::from(Arc::new(config))];
        let sni = match &tls.sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .with_context(|| format!("`{name}` is not a server name"))?,
            ),
            None => None,
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { connectors, sni, id })
    }

    /// Makes the TLS handshake with the backend at `address` over
    /// `stream`, offering `offer`'s protocols.
    pub async fn connect(
        &self,
        address: std::net::SocketAddr,
        stream: tokio::net::TcpStream,
        offer: Offer,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = self.sni.clone().unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let connector = match offer {
            Offer::Http1 => &self.connectors[0],
            Offer::H2 => &self.connectors[1],
            Offer::Pool => &self.connectors[2],
        };
        connector.connect(name, stream).await
    }
}

fn read_chain(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .with_context(|| format!("cannot read certificates from {}", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", path.display());
    Ok(chain)
}

/// The CAs backends' certificates must chain to.
fn roots(tls: &UpstreamTls) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in read_chain(ca)? {
                roots.add(cert).with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "a system root certificate could not be read");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(added > 0, "no system root certificates found; give the pool's `tls.ca`");
        }
    }
    Ok(roots)
}

/// `verify = false`: any certificate passes; signatures are still checked,
/// so the handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
