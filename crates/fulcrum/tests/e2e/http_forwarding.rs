//! HTTP forwarding end to end: balancing, headers, streaming, HTTP/2,
//! malformed requests and the 502/503/504 answers the README documents.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_over_real_backends() {
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let listen = local(free_port());
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &addresses, ""), listen);
    let client = client();
    let mut bodies = Vec::new();
    for _ in 0..9 {
        let (status, body) = get(&client, &format!("http://{listen}/")).await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert_eq!(bodies.join(""), "abcabcabc");
    assert!(backends.iter().all(|b| b.hits() == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights_through_the_proxy() {
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n[pools.app]\nalgorithm = \"weighted_round_robin\"\n\
         backends = [{{ address = \"{}\", weight = 5 }}, {{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
        backends[0].address, backends[1].address, backends[2].address
    );
    let _lb = Fulcrum::start(&config, listen);
    let client = client();
    let mut sequence = String::new();
    for _ in 0..7 {
        sequence += &get(&client, &format!("http://{listen}/")).await.1;
    }
    assert_eq!(sequence, "aabacaa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_follow_the_spec() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        let mut lines: Vec<String> =
            request.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        lines.push(format!("uri: {}", request.uri()));
        text(lines.join("\n"))
    })
    .await;
    let listen = local(free_port());
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &[echo.address], ""), listen);
    let request = Request::get(format!("http://{listen}/path?q=1"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-custom", "kept")
        .body(full(""))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for expected in [
        "host: shop.example.com",
        "x-forwarded-for: 203.0.113.7, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: shop.example.com",
        "x-custom: kept",
        "uri: /path?q=1",
    ] {
        assert!(seen.lines().any(|l| l == expected), "backend did not see `{expected}`:\n{seen}");
    }
    assert!(!seen.contains("x-private"), "a header named in Connection was forwarded:\n{seen}");
}

/// FNV-1a, to compare large bodies without keeping two copies around.
fn fnv(data: &[u8], mut hash: u64) -> u64 {
    for byte in data {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;
const EIGHT_MIB: usize = 8 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_upload_and_download_stream_intact() {
    // The backend hashes what it receives and answers with 8 MiB of its own,
    // sent in 64 KiB chunks without a Content-Length (chunked).
    let backend = backend(|request: Request<hyper::body::Incoming>| async move {
        let mut body = request.into_body();
        let (mut hash, mut len) = (FNV_START, 0usize);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                hash = fnv(&data, hash);
                len += data.len();
            }
        }
        let chunks = pattern(EIGHT_MIB)
            .chunks(64 << 10)
            .map(|c| Ok::<_, hyper::Error>(Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<_>>();
        let mut response = Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed());
        response.headers_mut().insert("x-upload", format!("{len}:{hash:x}").parse().unwrap());
        response
    })
    .await;
    let listen = local(free_port());
    let lb = Fulcrum::start(&http_config(listen, "round_robin", &[backend.address], ""), listen);
    let peak_before = memory_kib(lb.child.id(), "VmHWM:");
    let upload = pattern(EIGHT_MIB);
    let request = Request::post(format!("http://{listen}/upload"))
        .body(Full::new(Bytes::from(upload.clone())).map_err(|n| match n {}).boxed())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-upload"],
        format!("{}:{:x}", EIGHT_MIB, fnv(&upload, FNV_START)).as_str()
    );
    let downloaded = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(downloaded.len(), EIGHT_MIB);
    assert_eq!(fnv(&downloaded, FNV_START), fnv(&upload, FNV_START));
    // Streamed, not buffered: 8 MiB went each way, and the balancer's peak
    // memory grew by less than either body (measured 3.1–4.2 MiB of
    // connection buffers and allocator arenas; buffering adds ≥ 8 MiB).
    let growth = memory_kib(lb.child.id(), "VmHWM:") - peak_before;
    eprintln!("8 MiB each way: balancer peak RSS grew {growth} KiB");
    assert!(growth < 6 * 1024, "balancer peak RSS grew {growth} KiB: bodies are being buffered");
}

/// A backend may answer while the client is still uploading (a `413` after
/// the head, say): the answer reaches the client before the upload ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answer_mid_upload_reaches_the_client_before_the_upload_ends() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut socket, _) = backend.accept().await.unwrap();
        // The head and the first chunk of the body, then the answer.
        read_until(&mut socket, b"part-1").await;
        socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly").await.unwrap();
        // Whatever more of the upload comes, until the balancer closes.
        let mut room = [0u8; 4096];
        while socket.read(&mut room).await.is_ok_and(|n| n > 0) {}
    });
    let listen = local(free_port());
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &[address], ""), listen);

    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let (chunks, upload) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(futures_util::stream::unfold(upload, |mut upload| async move {
        upload.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(Frame::data(chunk)), upload))
    }));
    chunks.send(Bytes::from_static(b"part-1")).await.unwrap();
    let request = Request::post("/upload").header("host", "lb").body(body).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .expect("no answer while the upload was still open")
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&answer[..], b"early");
    // Only now may the upload end: a balancer that waits for the whole
    // body before it reads the answer never answers above.
    drop(chunks);
    tokio::time::timeout(Duration::from_secs(10), backend)
        .await
        .expect("the backend's connection was never closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_backends_get_http11() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        text(format!("{:?} host={}", request.version(), request.headers()["host"].to_str().unwrap()))
    })
    .await;
    let listen = local(free_port());
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &[echo.address], ""), listen);
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutorForTests, hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // One connection's requests, the authority changing midway: each
    // backend request carries its own (the connection caches the last).
    for authority in ["h2.example", "h2.example", "other.example", "h2.example"] {
        let request = Request::get(format!("http://{authority}:{}/", listen.port())).body(full("")).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("HTTP/1.1 host={authority}:{}", listen.port()).as_bytes());
    }
}

#[derive(Clone, Copy)]
struct TokioExecutorForTests;

impl<F: std::future::Future + Send + 'static> hyper::rt::Executor<F> for TokioExecutorForTests
where
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

async fn raw_exchange(listen: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_are_never_forwarded() {
    let backend = named_backend("a").await;
    let listen = local(free_port());
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &[backend.address], ""), listen);
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
    ];
    for case in cases {
        let answer = raw_exchange(listen, case).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{:?} got {answer:?}", String::from_utf8_lossy(case));
    }
    assert_eq!(backend.hits(), 0, "a malformed request reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_slow_and_missing_backends_get_502_504_503() {
    let slow = backend(|_request| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text("late")
    })
    .await;
    let dead = local(free_port());
    let (web, slow_listen, empty) = (local(free_port()), local(free_port()), local(free_port()));
    let config = format!(
        "[[listeners]]\nname = \"dead\"\nlisten = \"{web}\"\npool = \"dead\"\n\
         [[listeners]]\nname = \"slow\"\nlisten = \"{slow_listen}\"\npool = \"slow\"\n\
         [[listeners]]\nname = \"empty\"\nlisten = \"{empty}\"\npool = \"empty\"\n\
         [pools.dead]\nbackends = [{{ address = \"{dead}\" }}]\n\
         [pools.slow]\nbackends = [{{ address = \"{}\" }}]\ntimeouts = {{ response_header = \"300ms\" }}\n\
         [pools.empty]\n",
        slow.address
    );
    let _lb = Fulcrum::start(&config, web);
    let client = client();

    let (status, body) = get(&client, &format!("http://{web}/")).await;
    assert_eq!((status, body.as_str()), (502, "the backend could not be reached\n"));

    let started = std::time::Instant::now();
    let (status, body) = get(&client, &format!("http://{slow_listen}/")).await;
    assert_eq!((status, body.as_str()), (504, "the backend did not answer in time\n"));
    assert!(started.elapsed() < Duration::from_secs(2));

    let response =
        client.request(Request::get(format!("http://{empty}/")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
}
