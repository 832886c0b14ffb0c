//! State that must live exactly as long as its owner, end to end: a
//! half-open breaker probe cut off by the request timeout must not leave
//! the breaker stuck, a health prober must stop with the config
//! generation that started it, whatever client connections still hold it,
//! a pooled backend connection ends when its backend closes it, and a
//! request's upstream exchange ends when its client leaves.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FAILING: u8 = 0;
const SLOW: u8 = 1;
const HEALTHY: u8 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_half_open_probe_does_not_leave_the_breaker_stuck() {
    let mode = Arc::new(AtomicU8::new(FAILING));
    let backend_mode = Arc::clone(&mode);
    let backend = backend(move |_request| {
        let mode = backend_mode.load(Ordering::SeqCst);
        async move {
            match mode {
                FAILING => {
                    let mut response = text("failing");
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    response
                }
                SLOW => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    text("slow")
                }
                _ => text("ok"),
            }
        }
    })
    .await;
    let listen = local(free_port());
    let config = http_config(
        listen,
        "round_robin",
        &[backend.address],
        "timeouts = { request = \"200ms\" }\n\
         circuit_breaker = { minimum_calls = 4, window = 4, wait_in_open = \"1s\", half_open_calls = 1 }\n",
    );
    let _lb = Fulcrum::start(&config, listen);
    let client = client();
    let url = format!("http://{listen}/");
    for _ in 0..4 {
        assert_eq!(get(&client, &url).await.0, 500);
    }
    assert_eq!(get(&client, &url).await.0, 503, "four 500s of four calls open the breaker");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    mode.store(SLOW, Ordering::SeqCst);
    assert_eq!(
        get(&client, &url).await.0,
        504,
        "the single half-open probe is cut off by the request timeout"
    );
    mode.store(HEALTHY, Ordering::SeqCst);

    // The timed-out probe counts as a failure: the breaker waits once more
    // (1 s), then its next probe finds the backend healthy.
    let healthy_since = Instant::now();
    while get(&client, &url).await.0 != 200 {
        assert!(healthy_since.elapsed() < Duration::from_secs(3), "the breaker never admitted a probe again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_ms = healthy_since.elapsed().as_millis();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(get(&client, &url).await.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("breaker closed {recovered_ms} ms after the backend recovered; next 30 statuses: {statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prober_stops_with_its_config_generation() {
    let a_fails = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&a_fails);
    let backend = backend(move |request| {
        let failing = request.uri().path() == "/a" && flag.load(Ordering::SeqCst);
        async move {
            let mut response = text(if failing { "down" } else { "up" });
            if failing {
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        }
    })
    .await;
    let listen = local(free_port());
    let config = |path: &str| {
        http_config(
            listen,
            "round_robin",
            &[backend.address],
            &format!("health_check = {{ path = \"{path}\", interval = \"100ms\", rise = 1, fall = 1 }}\n"),
        )
    };
    let lb = Fulcrum::start(&config("/a"), listen);

    // A client keeps one keep-alive connection open across the reload.
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut held, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let response =
        held.send_request(Request::get("/").header("host", "lb").body(full("")).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();

    lb.write_config(&config("/b"));
    lb.signal("HUP");
    lb.wait_for_log("reload applied");
    // /a fails from now on; only the replaced generation probed it.
    a_fails.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(held);

    let client = client();
    let mut ok = 0;
    for _ in 0..50 {
        ok += usize::from(get(&client, &format!("http://{listen}/")).await.0 == 200);
    }
    println!("after the reload to /b with /a failing: {ok} of 50 GETs answered 200");
    assert_eq!(ok, 50, "a prober of the replaced config marked the backend down:\n{}", lb.log());
    assert!(!lb.log().contains("backend is down"), "{}", lb.log());
}

/// The backend closes an idle keep-alive connection (its keep-alive
/// timeout), and no request follows: Fulcrum closes its end too, instead
/// of leaving it in `CLOSE_WAIT` until traffic resumes.
#[tokio::test]
async fn a_pooled_connection_the_backend_closes_is_closed_with_no_traffic_after() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap();
    let backend = tokio::spawn(async move {
        let (mut socket, _) = backend.accept().await.unwrap();
        read_until(&mut socket, b"\r\n\r\n").await;
        socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
        // Idle a little, then close this side, as nginx's keepalive_timeout does.
        tokio::time::sleep(Duration::from_millis(300)).await;
        socket.shutdown().await.unwrap();
        let closed = Instant::now();
        let n = socket.read(&mut [0u8; 64]).await.unwrap();
        assert_eq!(n, 0, "Fulcrum sent more on a connection its backend closed");
        closed.elapsed()
    });
    let listen = local(free_port());
    let config = http_config(listen, "round_robin", &[address], "")
        .replace("worker_threads = 2", "worker_threads = 1");
    let lb = Fulcrum::start(&config, listen);
    let (status, body) = get(&client(), &format!("http://{listen}/")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let waited = tokio::time::timeout(Duration::from_secs(10), backend)
        .await
        .unwrap_or_else(|_| panic!("Fulcrum still holds the connection its backend closed:\n{}", lb.log()))
        .unwrap();
    println!("Fulcrum closed its end {} ms after the backend's FIN", waited.as_millis());
}

/// A request is owned by its client: when the client leaves before the
/// answer, the request's upstream exchange ends with it (its backend
/// connection closes), as nginx does by default; it does not hold the
/// backend, a pooled connection and its place in flight until the backend
/// answers. (hyper reads the client's connection while a request is in
/// flight only when half-closes are refused; with them allowed, this
/// backend would wait in vain.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_request_ends_its_upstream_exchange() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap();
    let (arrived, request_arrived) = tokio::sync::oneshot::channel();
    let backend = tokio::spawn(async move {
        let (mut socket, _) = backend.accept().await.unwrap();
        read_until(&mut socket, b"\r\n\r\n").await;
        arrived.send(()).unwrap();
        // Never answers: only the client leaving can end the exchange.
        let n = socket.read(&mut [0u8; 64]).await.unwrap_or(0);
        assert_eq!(n, 0, "Fulcrum sent more on an exchange whose client left");
        Instant::now()
    });
    let listen = local(free_port());
    let lb = Fulcrum::start(&http_config(listen, "round_robin", &[address], ""), listen);
    let mut client = tokio::net::TcpStream::connect(listen).await.unwrap();
    client.write_all(b"GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n").await.unwrap();
    request_arrived.await.expect("the request reached the backend");
    drop(client);
    let left = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), backend)
        .await
        .unwrap_or_else(|_| panic!("the backend still serves a client that left 10 s ago:\n{}", lb.log()))
        .unwrap();
    println!(
        "the upstream exchange ended {} ms after its client left",
        closed.duration_since(left).as_millis()
    );
}
