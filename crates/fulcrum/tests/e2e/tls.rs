//! HTTPS listeners: the certificate is chosen by SNI, ALPN negotiates h2,
//! and certificates are re-read on reload.

use std::time::Duration;

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_and_h2_is_negotiated() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        text(format!("proto={}", request.headers()["x-forwarded-proto"].to_str().unwrap()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let cert_a = leaf(&ca, "a.test", dir.path(), "a");
    let cert_b = leaf(&ca, "*.b.test", dir.path(), "b");
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{listen}\"\nprotocol = \"https\"\npool = \"app\"\n\
         tls = {{ certificates = [{{ cert = \"a.pem\", key = \"a.key\" }}, {{ cert = \"b.pem\", key = \"b.key\" }}] }}\n\
         [pools.app]\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address
    );
    let lb = Fulcrum::start_in(dir, &config, listen);

    let for_a = connect(listen, &ca, "a.test").await;
    assert_eq!(for_a.get_ref().1.peer_certificates().unwrap()[0], cert_a);
    let for_b = connect(listen, &ca, "www.b.test").await;
    assert_eq!(for_b.get_ref().1.peer_certificates().unwrap()[0], cert_b);
    assert_eq!(for_b.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(for_b),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let response =
        sender.send_request(Request::get("https://www.b.test/").body(full("")).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "proto=https");

    // Certificates are re-read on reload: replace a.test's and SIGHUP.
    let renewed = leaf(&ca, "a.test", lb.dir.path(), "a");
    assert_ne!(renewed, cert_a);
    lb.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stream = connect(listen, &ca, "a.test").await;
        if stream.get_ref().1.peer_certificates().unwrap()[0] == renewed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the renewed certificate was not served after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_a_sha256_suite_and_resumes_sessions() {
    let echo = backend(|_: Request<hyper::body::Incoming>| async move { text("ok".to_string()) }).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    leaf(&ca, "a.test", dir.path(), "a");
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"tls\"\nlisten = \"{listen}\"\nprotocol = \"https\"\npool = \"app\"\n\
         tls = {{ certificates = [{{ cert = \"a.pem\", key = \"a.key\" }}] }}\n\
         [pools.app]\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address
    );
    let _lb = Fulcrum::start_in(dir, &config, listen);

    // ring's client lists AES-256-GCM-SHA384 first, as OpenSSL's does.
    let provider = rustls::crypto::ring::default_provider();
    assert_eq!(provider.cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let client = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&client))
            .connect(rustls::pki_types::ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        // The session tickets arrive after the handshake: a request and its
        // answer make sure the client has read them.
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        let connection = stream.get_ref().1;
        assert_eq!(
            connection.negotiated_cipher_suite().unwrap().suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        kinds.push(connection.handshake_kind());
    }
    assert_eq!(kinds, [Some(rustls::HandshakeKind::Full), Some(rustls::HandshakeKind::Resumed)]);
}
