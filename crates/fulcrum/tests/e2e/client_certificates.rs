//! Downstream mTLS and TLS policy end to end: a listener requiring client
//! certificates refuses a handshake without one, tells the backend the
//! verified subject (and never a client's own claim of one), and a
//! `min_version = "1.3"` listener refuses TLS 1.2.

use std::sync::Arc;

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A TLS client of `versions` trusting `ca` and presenting `identity` if
/// any, which sends one request: `Err` when the handshake or the request
/// was refused.
async fn handshake(
    listen: std::net::SocketAddr,
    ca: &Ca,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("shop.test").unwrap(), tcp)
        .await?;
    // TLS 1.3 servers refuse a client certificate after the client's
    // handshake has finished: a round trip shows the refusal.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /probe HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\n\r\n").await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.is_empty() {
        return Err(std::io::Error::other("closed without an answer"));
    }
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_subject_reaches_the_backend() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        let subject = request.headers().get("x-client-cert-subject").map(|v| v.to_str().unwrap().to_string());
        text(format!("subject={}", subject.unwrap_or_else(|| "none".into())))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, stranger_ca) = (ca(), ca(), ca());
    leaf(&server_ca, "shop.test", dir.path(), "shop");
    std::fs::write(dir.path().join("clients.pem"), client_ca.cert.pem()).unwrap();
    let (mtls, modern) = (local(free_port()), local(free_port()));
    let config = format!(
        "[[listeners]]\nname = \"mtls\"\nlisten = \"{mtls}\"\nprotocol = \"https\"\npool = \"app\"\n\
         tls = {{ certificates = [{{ cert = \"shop.pem\", key = \"shop.key\" }}], client_ca = \"clients.pem\", client_auth = \"required\" }}\n\n\
         [[listeners]]\nname = \"modern\"\nlisten = \"{modern}\"\nprotocol = \"https\"\npool = \"app\"\n\
         tls = {{ certificates = [{{ cert = \"shop.pem\", key = \"shop.key\" }}], min_version = \"1.3\" }}\n\n\
         [pools.app]\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address
    );
    let _lb = Fulcrum::start_in(dir, &config, modern);
    let all: &[&'static rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];

    let refused = handshake(mtls, &server_ca, None, all).await;
    println!("without a client certificate: {:?}", refused.as_ref().err());
    assert!(refused.is_err(), "a client without a certificate was served");
    let stranger = handshake(mtls, &server_ca, Some(client_identity(&stranger_ca, "mallory")), all).await;
    assert!(stranger.is_err(), "a certificate from another CA was accepted");
    assert_eq!(echo.hits(), 0);

    let stream = connect_with(mtls, &server_ca, client_identity(&client_ca, "alice")).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "shop.test")
        .header("x-client-cert-subject", "CN=admin")
        .body(full(""))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "subject=CN=alice, O=Example", "the verified subject, not the client's claim");

    let old = handshake(modern, &server_ca, None, &[&rustls::version::TLS12]).await;
    assert!(old.is_err(), "TLS 1.2 was accepted by a min_version = 1.3 listener");
    assert!(handshake(modern, &server_ca, None, all).await.is_ok());
}

/// A TLS connection to `listen` presenting `identity`.
async fn connect_with(
    listen: std::net::SocketAddr,
    ca: &Ca,
    identity: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.0, identity.1)
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("shop.test").unwrap(), tcp)
        .await
        .unwrap()
}
