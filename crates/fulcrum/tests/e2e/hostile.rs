//! Hostile clients end to end: networks kept out at accept and by route,
//! request limits (head size, header count, URI, body — declared and
//! chunked), connection caps per address, and the admin API refusing a
//! client that guesses its token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// Sends `request` on a new connection from `from` and returns what came
/// back until the server closed (or 5 s passed).
fn exchange(listen: SocketAddr, from: &str, request: &[u8]) -> String {
    let socket = connect_from(listen, from);
    let Ok(mut stream) = socket else { return String::new() };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if stream.write_all(request).is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A blocking TCP connection to `to` from the local address `from` (127.0.0.x).
fn connect_from(to: SocketAddr, from: &str) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
        socket.connect(to).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn config(listen: SocketAddr, admin: SocketAddr, backend: SocketAddr, listener_extra: &str) -> String {
    format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n{listener_extra}\n\n\
         [[listeners.routes]]\npath_prefix = \"/private\"\npool = \"app\"\nallow = [\"127.0.0.1/32\"]\n\n\
         [pools.app]\nbackends = [{{ address = \"{backend}\" }}]\n\n[admin]\nlisten = \"{admin}\"\n"
    )
}

fn get_from(from: &str, listen: SocketAddr, path: &str) -> String {
    exchange(listen, from, format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_networks_are_closed_at_accept_and_routes_refuse_with_403() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let extra = "allow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.3/32\"]";
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, extra), admin);
    let allowed = tokio::task::spawn_blocking(move || get_from("127.0.0.2", listen, "/")).await.unwrap();
    assert_eq!(status_of(&allowed), 200, "{allowed}");
    let denied = tokio::task::spawn_blocking(move || get_from("127.0.0.3", listen, "/")).await.unwrap();
    assert_eq!(denied, "", "closed without an answer");
    let private =
        tokio::task::spawn_blocking(move || get_from("127.0.0.2", listen, "/private/x")).await.unwrap();
    assert_eq!(status_of(&private), 403, "{private}");
    let own = tokio::task::spawn_blocking(move || get_from("127.0.0.1", listen, "/private/x")).await.unwrap();
    assert_eq!(status_of(&own), 200);
    assert_eq!(backend.hits(), 2, "refused requests never reach the backend");
    let metrics = get(&client(), &format!("http://{admin}/metrics")).await.1;
    assert!(metrics.contains("lb_refused_total{listener=\"web\",reason=\"denied\"} 1"), "{metrics}");
    assert!(metrics.contains("lb_refused_total{listener=\"web\",reason=\"route_denied\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_uris_and_bodies_are_refused_before_the_backend_sees_them() {
    let complete = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&complete);
    let backend = backend(move |request| {
        let counted = Arc::clone(&counted);
        async move {
            use http_body_util::BodyExt;
            if request.into_body().collect().await.is_ok() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            text("ok")
        }
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, ""), admin);
    let head = |extra: String, target: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: x\r\n{extra}connection: close\r\n\r\n")
    };
    let send = move |request: String| exchange(listen, "127.0.0.1", request.as_bytes());

    let big_headers: String = (0..70).map(|i| format!("x-filler-{i}: {}\r\n", "a".repeat(1000))).collect();
    let many_headers: String = (0..101).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let long_uri = format!("/{}", "u".repeat(9 * 1024));
    let (big, many, uri) = tokio::task::spawn_blocking(move || {
        (send(head(big_headers, "/")), send(head(many_headers, "/")), send(head(String::new(), &long_uri)))
    })
    .await
    .unwrap();
    assert_eq!(status_of(&big), 431, "70 KB of headers: {big:.80}");
    assert_eq!(status_of(&many), 431, "101 headers: {many:.80}");
    assert_eq!(status_of(&uri), 414, "a 9 KB URI: {uri:.80}");
    // max_header_bytes (64 KiB) is exact, however the head is read: 55
    // bytes of request line and fields around one `x-pad`.
    let padded = |length: usize| head(format!("x-pad: {}\r\n", "a".repeat(length - 55)), "/");
    let (at_limit, over) = (padded(65536), padded(65537));
    assert_eq!(at_limit.len(), 65536);
    let (at_limit, over) = tokio::task::spawn_blocking(move || (send(at_limit), send(over))).await.unwrap();
    assert_eq!(status_of(&at_limit), 200, "a head of exactly 64 KiB: {at_limit:.80}");
    assert_eq!(status_of(&over), 431, "a byte over: {over:.80}");

    // 11 MiB uploads, declared and chunked.
    let declared = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 11534336\r\n\r\n").unwrap();
        let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
        let mut answer = vec![0; 4096];
        let n = stream.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(status_of(&declared), 413, "{declared:.80}");
    let chunked = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        let chunk =
            [format!("{:x}\r\n", 64 * 1024).into_bytes(), vec![b'x'; 64 * 1024], b"\r\n".to_vec()].concat();
        for _ in 0..(11 * 16) {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert_eq!(status_of(&chunked), 413, "{chunked:.80}");
    assert_eq!(backend.hits(), 2, "only the head at the limit and the chunked upload reached the backend");
    assert_eq!(
        complete.load(Ordering::SeqCst),
        1,
        "and the upload was cut off: the backend saw only the GET whole"
    );
    let metrics = get(&client(), &format!("http://{admin}/metrics")).await.1;
    assert!(metrics.contains("lb_refused_total{listener=\"web\",reason=\"body_too_large\"} 2"), "{metrics}");
    assert!(metrics.contains("lb_refused_total{listener=\"web\",reason=\"uri_too_long\"} 1"));
    // The head a byte over, and the 70 KB one unless hyper refused it first.
    assert!(
        ["1", "2"].iter().any(|n| metrics.contains(&format!("reason=\"head_too_large\"}} {n}\n"))),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gets_max_connections_per_ip_and_no_more() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, "max_connections_per_ip = 100"), admin);
    let (held, extra_ok, other_ok) = tokio::task::spawn_blocking(move || {
        let held: Vec<TcpStream> = (0..100).map(|_| connect_from(listen, "127.0.0.2").unwrap()).collect();
        // Let the balancer accept and count all of them.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut extra = String::from("x");
        while !extra.is_empty() && Instant::now() < deadline {
            extra = get_from("127.0.0.2", listen, "/");
        }
        let other = get_from("127.0.0.3", listen, "/");
        (held.len(), extra, other)
    })
    .await
    .unwrap();
    assert_eq!(held, 100);
    assert_eq!(extra_ok, "", "the 101st connection from one address is closed at once");
    assert_eq!(status_of(&other_ok), 200, "another address still connects");
    let metrics = get(&client(), &format!("http://{admin}/metrics")).await.1;
    assert!(
        metrics.contains("lb_refused_total{listener=\"web\",reason=\"max_connections_per_ip\"} "),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_stops_answering_a_client_that_guesses_its_token() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = config(listen, admin, backend.address, "").replace(
        &format!("[admin]\nlisten = \"{admin}\"\n"),
        &format!("[admin]\nlisten = \"{admin}\"\ntoken = \"right-token\"\nallow = [\"127.0.0.1/32\"]\n"),
    );
    let _lb = Fulcrum::start(&config, admin);
    let ask = move |token: &str, from: &str| {
        let request = format!(
            "GET /stats HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        );
        status_of(&exchange(admin, from, request.as_bytes()))
    };
    let statuses = tokio::task::spawn_blocking(move || {
        let wrong: Vec<u16> = (0..12).map(|_| ask("wrong-token", "127.0.0.1")).collect();
        let right_meanwhile = ask("right-token", "127.0.0.1");
        std::thread::sleep(Duration::from_millis(1100));
        (wrong, right_meanwhile, ask("right-token", "127.0.0.1"), ask("right-token", "127.0.0.2"))
    })
    .await
    .unwrap();
    let (wrong, right_meanwhile, right_later, other_network) = statuses;
    assert_eq!(&wrong[..10], &[401; 10]);
    assert_eq!(&wrong[10..], &[429, 429], "the 11th failure within a second");
    assert_eq!(right_meanwhile, 429, "even the right token, while it is guessing");
    assert_eq!(right_later, 200, "a second later");
    assert_eq!(other_network, 403, "outside [admin] allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_one_byte_a_second_gets_408_at_the_header_read_timeout() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let extra = "limits = { header_read_timeout = \"2s\" }";
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, extra), admin);
    let (answer, took) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(1100))).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            let mut chunk = [0; 512];
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(_) => {} // nothing yet: the next byte after a second
            }
        }
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(status_of(&answer), 408, "{answer:?}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "after {took:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_the_header_read_timeout_costs_the_connection_nothing() {
    // The head deadline is the client's: a request received in time and
    // served slowly neither runs out of it nor leaves it running for the
    // next request on the connection.
    let backend = backend(|_request| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        text("slow")
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let extra = "limits = { header_read_timeout = \"1s\" }";
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, extra), admin);
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (0..2)
            .map(|_| {
                stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
                let mut chunk = [0; 1024];
                let n = stream.read(&mut chunk).unwrap();
                String::from_utf8_lossy(&chunk[..n]).into_owned()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = answers.iter().map(|a| status_of(a)).collect();
    assert_eq!(statuses, [200, 200], "{answers:?}");
    assert_eq!(backend.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_after_its_last_request_saying_so() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let extra = "limits = { max_requests_per_connection = 3 }";
    let _lb = Fulcrum::start(&config(listen, admin, backend.address, extra), admin);
    let answers = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answers = Vec::new();
        for _ in 0..3 {
            stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut chunk = [0; 1024];
            let n = stream.read(&mut chunk).unwrap();
            answers.push(String::from_utf8_lossy(&chunk[..n]).to_lowercase());
        }
        let mut rest = [0; 16];
        let closed = matches!(stream.read(&mut rest), Ok(0));
        (answers, closed)
    })
    .await
    .unwrap();
    let (answers, closed) = answers;
    assert!(answers.iter().all(|a| status_of(a) == 200), "{answers:?}");
    assert!(!answers[1].contains("connection: close"));
    assert!(answers[2].contains("connection: close"), "the third of three says so: {}", answers[2]);
    assert!(closed, "and the connection closes after it");
}
