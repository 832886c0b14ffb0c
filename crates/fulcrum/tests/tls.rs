//! HTTPS listeners: the certificate is chosen by SNI, ALPN negotiates h2,
//! and certificates are re-read on reload.

mod common;

use std::time::Duration;

use common::*;
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
