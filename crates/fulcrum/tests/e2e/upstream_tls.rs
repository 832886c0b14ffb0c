//! TLS to backends end to end, with a test CA and real TLS backends: a
//! verified backend answers, one signed by another CA is a 502 with the
//! verification error in the log, a backend that requires a client
//! certificate gets the pool's, and `verify = false` connects to anything
//! with a warning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::*;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS backend for `backend.test` signed by `ca`, answering with whether
/// the client presented a certificate and, in `x-version`, the HTTP
/// version it was asked in; with `client_ca` it requires one signed by
/// that CA. It picks the first protocol in `alpn` the client offers.
async fn tls_backend(
    ca: &Ca,
    dir: &std::path::Path,
    file: &str,
    client_ca: Option<&Ca>,
    alpn: &[&str],
) -> SocketAddr {
    leaf(ca, "backend.test", dir, file);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join(format!("{file}.pem")))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{file}.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_ca.cert.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let presented = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| async move {
                    let mut answer = text(format!("tls ok, client certificate: {presented}"));
                    let version = format!("{:?}", request.version()).parse().unwrap();
                    answer.headers_mut().insert("x-version", version);
                    Ok::<_, Infallible>(answer)
                });
                // Like nginx, it speaks what ALPN settled on.
                let server =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let server = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => server.http2_only(),
                    _ => server.http1_only(),
                };
                let _ = server.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_verified_a_wrong_ca_is_a_502_and_client_certificates_are_presented() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca, client_ca) = (ca(), ca(), ca());
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca.cert.pem()).unwrap();
    leaf(&client_ca, "fulcrum.test", dir.path(), "client");
    let plain = tls_backend(&ca, dir.path(), "plain", None, &[]).await;
    let strict = tls_backend(&ca, dir.path(), "strict", Some(&client_ca), &[]).await;
    let listen = local(free_port());
    let route = |prefix: &str, pool: &str| {
        format!("[[listeners.routes]]\npath_prefix = \"/{prefix}\"\npool = \"{pool}\"\n\n")
    };
    let pool = |name: &str, backend: SocketAddr, tls: &str| {
        format!("[pools.{name}]\nbackends = [{{ address = \"{backend}\" }}]\ntls = {{ {tls} }}\n\n")
    };
    let config = format!("[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"verified\"\n\n")
        + &route("wrong", "wrong_ca")
        + &route("mtls", "mtls")
        + &route("nocert", "no_client_cert")
        + &route("anything", "unverified")
        + &pool("verified", plain, "ca = \"ca.pem\", sni = \"backend.test\"")
        + &pool("wrong_ca", plain, "ca = \"other-ca.pem\", sni = \"backend.test\"")
        + &pool(
            "mtls",
            strict,
            "ca = \"ca.pem\", sni = \"backend.test\", client_cert = \"client.pem\", client_key = \"client.key\"",
        )
        + &pool("no_client_cert", strict, "ca = \"ca.pem\", sni = \"backend.test\"")
        + &pool("unverified", plain, "verify = false");
    let lb = Fulcrum::start_in(dir, &config, listen);

    let answer = get_with(&format!("http://{listen}/"), &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "tls ok, client certificate: false"));
    let answer = get_with(&format!("http://{listen}/wrong"), &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    lb.wait_for_log("TLS handshake with the backend failed");
    let line =
        lb.log().lines().find(|l| l.contains("TLS handshake with the backend failed")).unwrap().to_string();
    println!("{line}");
    assert!(line.contains("invalid peer certificate") && line.contains(&plain.to_string()), "{line}");

    let answer = get_with(&format!("http://{listen}/mtls"), &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "tls ok, client certificate: true"));
    let answer = get_with(&format!("http://{listen}/nocert"), &[]).await;
    assert_eq!(answer.status, 502, "a backend requiring a client certificate let one without in");

    let answer = get_with(&format!("http://{listen}/anything"), &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "tls ok, client certificate: false"));
    assert!(lb.log().contains("tls.verify = false"), "no warning for an unverified pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_pool_speaks_what_each_backend_picks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    let modern = tls_backend(&ca, dir.path(), "modern", None, &["h2", "http/1.1"]).await;
    let legacy = tls_backend(&ca, dir.path(), "legacy", None, &["http/1.1"]).await;
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"mixed\"\n\n\
         [pools.mixed]\nalgorithm = \"round_robin\"\nprotocol = \"auto\"\n\
         backends = [{{ address = \"{modern}\" }}, {{ address = \"{legacy}\" }}]\n\
         tls = {{ ca = \"ca.pem\", sni = \"backend.test\" }}\n\
         health_check = {{ kind = \"http\", path = \"/\", interval = \"50ms\", fall = 1 }}\n"
    );
    let lb = Fulcrum::start_in(dir, &config, listen);
    let mut versions = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let answer = get_with(&format!("http://{listen}/"), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        *versions.entry(answer.headers["x-version"].to_str().unwrap().to_string()).or_insert(0) += 1;
    }
    println!("auto pool, 20 requests: {versions:?}");
    assert_eq!(versions, [("HTTP/1.1".to_string(), 10), ("HTTP/2.0".to_string(), 10)].into());
    // The HTTP health probes offer http/1.1 only, so both backends pass
    // probe after probe (one failure would take a backend down).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!lb.log().contains("backend is down"), "{}", lb.log());
}
