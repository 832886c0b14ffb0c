//! HTTP/3 end to end: an https listener with `http3 = true` answers a
//! quinn/h3 client on its UDP port through the same routes and pools
//! (bodies both ways, many streams on one connection, the client's
//! address in X-Forwarded-For), and its HTTP/1.1 responses advertise
//! HTTP/3 with Alt-Svc.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::common::*;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

type H3Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 connection to `listen` trusting `ca`, for `shop.test`.
async fn h3_client(listen: SocketAddr, ca: &Ca) -> H3Sender {
    h3_client_as(listen, ca, None).await.expect("the QUIC handshake failed")
}

/// The same, presenting `identity` if any; `Err` when the handshake fails.
async fn h3_client_as(
    listen: SocketAddr,
    ca: &Ca,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<H3Sender, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    let mut tls = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let quic = endpoint.connect(listen, "shop.test").unwrap().await.map_err(|e| e.to_string())?;
    let (mut driver, sender) =
        h3::client::new(h3_quinn::Connection::new(quic)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _endpoint = endpoint;
        std::future::poll_fn(|cx| driver.poll_close(cx)).await
    });
    Ok(sender)
}

/// Sends `method path` with `body` over HTTP/3; the status, `alt-svc` and body.
async fn h3_request(sender: &mut H3Sender, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let request =
        http::Request::builder().method(method).uri(format!("https://shop.test{path}")).body(()).unwrap();
    let mut stream = sender.send_request(request).await.unwrap();
    if !body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(body)).await.unwrap();
    }
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    let mut answer = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        answer.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (response.status().as_u16(), String::from_utf8(answer).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_client_is_served_through_the_same_routes_and_h1_is_told_of_h3() {
    let echo = backend(|request: http::Request<hyper::body::Incoming>| async move {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let header = |name: &str| parts.headers.get(name).map_or("-", |v| v.to_str().unwrap()).to_string();
        text(format!(
            "{} {} host={} xff={} proto={} te={} body={}",
            parts.method,
            parts.uri,
            header("host"),
            header("x-forwarded-for"),
            header("x-forwarded-proto"),
            header("transfer-encoding"),
            body.len()
        ))
    })
    .await;
    let teapot = backend(|_| async { text("the api") }).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    leaf(&ca, "shop.test", dir.path(), "shop");
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\nprotocol = \"https\"\nhttp3 = true\npool = \"echo\"\n\
         tls = {{ certificates = [{{ cert = \"shop.pem\", key = \"shop.key\" }}] }}\n\n\
         [[listeners.routes]]\npath_prefix = \"/api\"\npool = \"api\"\n\n\
         [pools.echo]\nbackends = [{{ address = \"{}\" }}]\n\n\
         [pools.api]\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address, teapot.address
    );
    let _lb = Fulcrum::start_in(dir, &config, listen);

    // HTTP/1.1 over TLS: the response points at HTTP/3 on the same port.
    let tls = connect(listen, &ca, "shop.test").await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/").header("host", "shop.test").body(full("")).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let alt_svc = response.headers().get("alt-svc").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(alt_svc, Some(format!("h3=\":{}\"; ma=86400", listen.port())));

    // HTTP/3: a GET, a POST with a body, a routed path.
    let mut h3 = h3_client(listen, &ca).await;
    let (status, body) = h3_request(&mut h3, "GET", "/hello?x=1", b"").await;
    println!("h3 GET: {status} {body}");
    assert_eq!(status, 200);
    assert_eq!(body, "GET /hello?x=1 host=shop.test xff=127.0.0.1 proto=https te=- body=0");
    let upload = vec![b'x'; 100_000];
    let (status, body) = h3_request(&mut h3, "POST", "/upload", &upload).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "POST /upload host=shop.test xff=127.0.0.1 proto=https te=chunked body=100000")
    );
    assert_eq!(h3_request(&mut h3, "GET", "/api/v1", b"").await, (200, "the api".to_string()));

    // 50 concurrent streams on the one connection.
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let mut h3 = h3.clone();
            tokio::spawn(async move { h3_request(&mut h3, "GET", &format!("/stream/{i}"), b"").await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.starts_with(&format!("GET /stream/{i} ")), "{body}");
    }
    assert_eq!(echo.hits(), 53);
    assert_eq!(teapot.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_clients_are_held_to_the_listeners_client_certificate_policy() {
    let echo = backend(|request: http::Request<hyper::body::Incoming>| async move {
        let subject = request.headers().get("x-client-cert-subject").map(|v| v.to_str().unwrap().to_string());
        text(format!("subject={}", subject.unwrap_or_else(|| "none".into())))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (ca(), ca());
    leaf(&server_ca, "shop.test", dir.path(), "shop");
    std::fs::write(dir.path().join("clients.pem"), client_ca.cert.pem()).unwrap();
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"mtls\"\nlisten = \"{listen}\"\nprotocol = \"https\"\nhttp3 = true\npool = \"app\"\n\
         tls = {{ certificates = [{{ cert = \"shop.pem\", key = \"shop.key\" }}], client_ca = \"clients.pem\", client_auth = \"required\" }}\n\n\
         [pools.app]\nbackends = [{{ address = \"{}\" }}]\n",
        echo.address
    );
    let _lb = Fulcrum::start_in(dir, &config, listen);

    // No certificate: the server refuses the handshake. (TLS 1.3 clients
    // finish theirs first, so the refusal may only show on the answer.)
    let refused = match h3_client_as(listen, &server_ca, None).await {
        Err(e) => e,
        Ok(mut sender) => {
            let request = http::Request::get("https://shop.test/").body(()).unwrap();
            let answer = async {
                let mut stream = sender.send_request(request).await?;
                stream.finish().await?;
                stream.recv_response().await
            };
            match answer.await {
                Err(e) => e.to_string(),
                Ok(response) => panic!("an HTTP/3 client without a certificate got {}", response.status()),
            }
        }
    };
    println!("h3 without a client certificate: {refused}");
    assert_eq!(echo.hits(), 0);

    // With one, the backend is told the verified subject, not the client's claim.
    let mut h3 = h3_client_as(listen, &server_ca, Some(client_identity(&client_ca, "alice"))).await.unwrap();
    let request = http::Request::get("https://shop.test/")
        .header("x-client-cert-subject", "CN=admin")
        .body(())
        .unwrap();
    let mut stream = h3.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);
    let mut answer = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        answer.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(String::from_utf8(answer).unwrap(), "subject=CN=alice, O=Example");
}
