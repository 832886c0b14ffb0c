//! Idle keep-alive connections nap — they hand hyper and its buffers back
//! and wait on their bare socket — and wake for their next requests; one
//! with a request head begun stays awake until the head ends or its 408.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\
         limits = {{ header_read_timeout = \"4s\" }}\n\n\
         [pools.app]\nbackends = [{{ address = \"{backend}\" }}]\n\n[admin]\nlisten = \"{admin}\"\n"
    )
}

/// Client connections in `state` (`awake` or `napping`), as `/metrics` says.
async fn connections(admin: SocketAddr, state: &str) -> f64 {
    let metrics = get(&client(), &format!("http://{admin}/metrics")).await.1;
    metric(&metrics, &format!("lb_client_connections{{state=\"{state}\"}}"))
}

/// Waits until `count` connections nap; returns how long that took.
async fn until_napping(admin: SocketAddr, count: f64) -> Duration {
    let started = Instant::now();
    loop {
        let napping = connections(admin, "napping").await;
        if napping == count {
            return started.elapsed();
        }
        let all = get(&client(), &format!("http://{admin}/metrics")).await.1;
        assert!(started.elapsed() < Duration::from_secs(10), "{napping} napping, not {count}: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one response with a `content-length` body from `stream`.
fn response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut chunk).expect("a response");
        assert!(n > 0, "closed after {text:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
}

fn send(stream: &mut TcpStream, bytes: &str) {
    stream.write_all(bytes.as_bytes()).unwrap();
}

/// A balancer before a backend answering `a`, and a client connection to
/// it that has had its first request answered.
struct Served {
    backend: Backend,
    /// Kept by every test: dropping it stops the balancer.
    lb: Fulcrum,
    listen: SocketAddr,
    admin: SocketAddr,
    stream: TcpStream,
    first: String,
}

async fn served() -> Served {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let lb = Fulcrum::start(&config(listen, admin, backend.address), admin);
    let mut stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    send(&mut stream, "GET /1 HTTP/1.1\r\nhost: x\r\n\r\n");
    let first = response(&mut stream);
    Served { backend, lb, listen, admin, stream, first }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_naps_and_wakes_for_its_next_request() {
    let Served { backend, lb: _lb, admin, mut stream, first, .. } = served().await;
    assert!(first.starts_with("HTTP/1.1 200") && first.ends_with("a"), "{first:?}");
    let took = until_napping(admin, 1.0).await;
    // Quiet from one sweep to the next: 1 to 2 seconds, plus scrapes on a busy machine.
    assert!(took < Duration::from_secs(4), "napped after {took:?}");
    assert_eq!(connections(admin, "awake").await, 0.0);

    send(&mut stream, "GET /2 HTTP/1.1\r\nhost: x\r\n\r\n");
    let second = response(&mut stream);
    assert!(second.starts_with("HTTP/1.1 200") && second.ends_with("a"), "{second:?}");
    assert!(!second.to_ascii_lowercase().contains("connection: close"), "{second:?}");
    until_napping(admin, 1.0).await;

    // Pipelined: both answered by one wake-up, in order.
    send(&mut stream, "GET /3 HTTP/1.1\r\nhost: x\r\n\r\nGET /4 HTTP/1.1\r\nhost: x\r\n\r\n");
    for _ in 0..2 {
        let answer = response(&mut stream);
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("a"), "{answer:?}");
    }
    until_napping(admin, 1.0).await;
    assert_eq!(backend.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_head_begun_stays_awake_until_it_ends_or_gets_408() {
    let Served { backend, lb: _lb, admin, mut stream, .. } = served().await;
    until_napping(admin, 1.0).await;

    let begun = Instant::now();
    send(&mut stream, "GET /2 HTTP/1.1\r\nhost");
    let answer = tokio::task::spawn_blocking(move || {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    // Woken by those bytes, it holds its head, awake, until the 408.
    until_napping(admin, 0.0).await;
    let mut napped = 0.0_f64;
    while !answer.is_finished() {
        napped = napped.max(connections(admin, "napping").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, took) = (answer.await.unwrap(), begun.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(7), "after {took:?}");
    assert_eq!(napped, 0.0, "it napped with a head begun");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_does_not_nap() {
    let Served { lb: _lb, listen, admin, stream: _h1, .. } = served().await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let url = format!("http://{listen}/");
    let ask = |client: &hyper_util::client::legacy::Client<_, _>| client.get(url.parse().unwrap());
    assert_eq!(ask(&h2).await.unwrap().status(), 200);
    // Both idle about as long: the HTTP/1 connection naps, the HTTP/2 one stays
    // open and awake through another sweep (a GOAWAY would have closed it:
    // the client reconnects only for its next request).
    until_napping(admin, 1.0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(connections(admin, "awake").await, 1.0, "the HTTP/2 connection is open");
    assert_eq!(ask(&h2).await.unwrap().status(), 200);
}
