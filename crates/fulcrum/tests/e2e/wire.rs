//! Wire correctness under hostile and unusual clients, end to end through
//! a real listener to a recording backend: what the client is answered
//! and what the backend received (nginx's and HAProxy's behaviour is the
//! reference for each case).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the backend received: method, target, headers, body.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn recording_backend() -> (Backend, Log) {
    let log: Log = Arc::default();
    let record = Arc::clone(&log);
    let backend = backend(move |request: Request<hyper::body::Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            record.lock().unwrap().push(Received {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                headers: parts.headers,
                body,
            });
            text("recorded")
        }
    })
    .await;
    (backend, log)
}

/// Sends `request` on a new connection; returns the status code of the
/// first response (0 when the connection closed without one).
async fn raw_status(listen: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn start(extra_pool: &str) -> (SocketAddr, impl Fn(&[SocketAddr]) -> Fulcrum) {
    let listen = local(free_port());
    let extra = extra_pool.to_string();
    (listen, move |backends: &[SocketAddr]| {
        Fulcrum::start(&http_config(listen, "round_robin", backends, &extra), listen)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_the_clients_fault_and_never_ejects_the_backend() {
    let (backend, _log) = recording_backend().await;
    let (listen, start) =
        start("passive_health = { consecutive_5xx = 3, consecutive_failures = 3, ejection_time = \"30s\" }");
    let _lb = start(&[backend.address]);
    let bodies: [&[u8]; 5] = [
        b"ZZ\r\nhello\r\n0\r\n\r\n",                // not hex
        b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n", // size overflow
        b"0x5\r\nhello\r\n0\r\n\r\n",               // 0x prefix
        b"5\nhello\r\n0\r\n\r\n",                   // bare LF
        b"5\r\nhelloXX0\r\n\r\n",                   // chunk without its CRLF
    ];
    for body in bodies {
        let mut request = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let status = raw_status(listen, &request).await;
        assert_eq!(status, 400, "malformed chunked body {:?}", String::from_utf8_lossy(body));
    }
    let client = client();
    for _ in 0..5 {
        assert_eq!(
            get(&client, &format!("http://{listen}/")).await.0,
            200,
            "the backend was blamed and ejected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rules_hold_on_the_wire() {
    let (backend, log) = recording_backend().await;
    let (listen, start) = start("");
    let _lb = start(&[backend.address]);
    let hits = || log.lock().unwrap().len();

    // 6. A transfer coding Fulcrum does not implement: 501, not forwarded.
    let request =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw_status(listen, request).await, 501);
    // 9. Invalid targets and Host values: 400; CONNECT: 501; huge heads: 431.
    for (request, expected) in [
        (&b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n"[..], 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: user@c\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ] {
        assert_eq!(raw_status(listen, request).await, expected, "{}", String::from_utf8_lossy(request));
    }
    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 300 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw_status(listen, &huge).await, 431);
    assert_eq!(hits(), 0, "a refused request reached the backend: {:?}", log.lock().unwrap());

    // OPTIONS * is forwarded as such.
    assert_eq!(raw_status(listen, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await, 200);
    let options = log.lock().unwrap().last().unwrap().clone();
    assert_eq!((options.method.as_str(), options.target.as_str()), ("OPTIONS", "*"));

    // 7. `Connection: Host` cannot remove Host.
    assert_eq!(raw_status(listen, b"GET /c HTTP/1.1\r\nHost: kept\r\nConnection: Host\r\n\r\n").await, 200);
    assert_eq!(log.lock().unwrap().last().unwrap().headers["host"], "kept");

    // 8. `Upgrade: h2c` is served as HTTP/1.1, its headers not forwarded.
    let request = b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    assert_eq!(raw_status(listen, request).await, 200);
    let received = log.lock().unwrap().last().unwrap().clone();
    assert!(
        !received.headers.contains_key("upgrade") && !received.headers.contains_key("http2-settings"),
        "{received:?}"
    );

    // 5. A GET with a chunked body keeps its body.
    let request = b"GET /g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(raw_status(listen, request).await, 200);
    assert_eq!(log.lock().unwrap().last().unwrap().body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_crumbs_are_joined_and_whitespace_values_refused() {
    let (backend, log) = recording_backend().await;
    let (listen, start) = start("");
    let _lb = start(&[backend.address]);
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let url = format!("http://h2.example:{}/", listen.port());
    let request = Request::get(&url)
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(full(""))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let cookies: Vec<String> = log.lock().unwrap()[0]
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);

    let request =
        Request::get(&url).header("x-padded", http::HeaderValue::from_static(" v ")).body(full("")).unwrap();
    let status = sender.send_request(request).await.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(status, 400, "a padded HTTP/2 value");
    assert_eq!(log.lock().unwrap().len(), 1, "the malformed request was forwarded");

    // 5. An HTTP/2 body without content-length on a GET reaches the backend.
    let chunks = vec![Ok::<_, hyper::Error>(hyper::body::Frame::data(bytes::Bytes::from_static(b"h2 body")))];
    let unknown_length = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let request = Request::get(&url).body(BodyExt::boxed(unknown_length)).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    assert_eq!(log.lock().unwrap().last().unwrap().body, b"h2 body");
}

/// Writes `pieces` on a new connection, each in its own packet (a pause
/// between them lets the balancer read each alone), and returns the first
/// bytes it answers.
async fn answer_to_pieces(listen: SocketAddr, pieces: &[&[u8]]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream.write_all(piece).await.unwrap();
    }
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    answer.truncate(n);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_or_a_request_head_split_across_packets_is_served() {
    let backend = named_backend("ok").await;
    let (listen, start) = start("");
    let _lb = start(&[backend.address]);

    let empty_settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let answer =
        answer_to_pieces(listen, &[b"PRI * HTTP/2.0\r\n", &[b"\r\nSM\r\n\r\n", empty_settings].concat()])
            .await;
    assert_eq!(answer.get(3), Some(&4), "HTTP/2 answers with its SETTINGS frame: {answer:?}");

    let answer =
        answer_to_pieces(listen, &[b"GET / HTTP/1.1\r\nHo", b"st: x\r\nconnection: close\r\n\r\n"]).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_header_read_timeout_while_others_are_served() {
    let backend = named_backend("ok").await;
    let (listen, start) = start("");
    let _lb = start(&[backend.address]);
    let opened = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(listen).await.unwrap();
    let client = client();
    assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;
    let closed_after = opened.elapsed();
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the silent connection is still open: {read:?}");
    println!("a silent connection was closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(14),
        "{closed_after:?}"
    );
}
