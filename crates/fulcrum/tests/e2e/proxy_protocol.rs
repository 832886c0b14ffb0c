//! The PROXY protocol end to end: a trusted balancer's v1/v2 header makes
//! the carried address the client everywhere (X-Forwarded-For, the access
//! log, allow/deny), an untrusted sender or a missing or malformed header
//! gets the connection closed and counted, and `send_proxy_protocol`
//! hands the client on to backends that parse it (HTTP and TCP pools).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use http::Request;
use ppp::PartialResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A v2 header carrying `client` → `local`, as HAProxy's `send-proxy-v2` writes it.
fn v2_header(client: &str, local: &str) -> Vec<u8> {
    let addresses = (client.parse::<SocketAddr>().unwrap(), local.parse::<SocketAddr>().unwrap());
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        addresses,
    )
    .build()
    .unwrap()
}

/// Connects to `to` from `from`, sends `bytes`, and reads to the end (or
/// until the balancer closes the connection).
async fn exchange(from: &str, to: SocketAddr, bytes: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    // The balancer may close before everything is written: that is an answer too.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n";

/// A backend that expects a PROXY header on every connection and answers
/// each request with the client it names (any version).
async fn parsing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(answer_with_the_header(stream));
        }
    });
    address
}

async fn answer_with_the_header(mut stream: TcpStream) {
    let mut buffer = vec![0u8; 4096];
    let mut read = 0;
    let named = loop {
        let n = stream.read(&mut buffer[read..]).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        read += n;
        let (named, length) = match ppp::HeaderResult::parse(&buffer[..read]) {
            header if header.is_incomplete() => continue,
            ppp::HeaderResult::V1(Ok(header)) => (header.addresses.to_string(), header.header.len()),
            ppp::HeaderResult::V2(Ok(header)) => (format!("{:?}", header.addresses), header.len()),
            _ => ("no PROXY header".to_string(), 0),
        };
        // The request after the header: answer once its head is in.
        if buffer[length..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break named.trim().to_string();
        }
    };
    let response =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{named}", named.len());
    let _ = stream.write_all(response.as_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_header_names_the_client_everywhere_and_anything_else_is_closed() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        text(format!("xff={}", request.headers()["x-forwarded-for"].to_str().unwrap()))
    })
    .await;
    let parsing = parsing_backend().await;
    let (edge, l4, admin) = (local(free_port()), local(free_port()), local(free_port()));
    let config = format!(
        "[log]\naccess = \"access.log\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[listeners]]\nname = \"edge\"\nlisten = \"{edge}\"\npool = \"app\"\nallow = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\
         proxy_protocol = {{ versions = [\"v1\", \"v2\"], trusted = [\"127.0.0.1/32\"] }}\n\n\
         [[listeners.routes]]\npath_prefix = \"/out\"\npool = \"parsing\"\n\n\
         [[listeners]]\nname = \"l4\"\nlisten = \"{l4}\"\nprotocol = \"tcp\"\npool = \"parsing_v1\"\n\n\
         [pools.app]\nbackends = [{{ address = \"{}\" }}]\n\n\
         [pools.parsing]\nsend_proxy_protocol = \"v2\"\nbackends = [{{ address = \"{parsing}\" }}]\n\n\
         [pools.parsing_v1]\nsend_proxy_protocol = \"v1\"\nbackends = [{{ address = \"{parsing}\" }}]\n",
        echo.address
    );
    let lb = Fulcrum::start(&config, admin);

    let mut v2 = v2_header("203.0.113.7:5555", "10.0.0.1:443");
    v2.extend_from_slice(GET);
    let answer = exchange("127.0.0.1", edge, &v2).await;
    assert!(answer.ends_with("xff=203.0.113.7"), "{answer}");
    let v1 = [b"PROXY TCP6 2001:db8::9 2001:db8::1 6000 443\r\n".as_slice(), GET].concat();
    let answer = exchange("127.0.0.1", edge, &v1).await;
    assert!(answer.ends_with("xff=2001:db8::9"), "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(lb.dir.path().join("access.log")).unwrap_or_default();
        if log.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        log.contains("\"client\":\"203.0.113.7\"") && log.contains("\"client\":\"2001:db8::9\""),
        "{log}"
    );

    // Closed without a byte of answer: an untrusted sender (127.0.0.2), a
    // trusted one without a header, a malformed header, and a carried
    // client that `allow` does not let in.
    let refused = [
        ("127.0.0.2", v2.clone()),
        ("127.0.0.1", GET.to_vec()),
        ("127.0.0.1", [b"PROXY TCP4 203.0.113.7 nonsense\r\n".as_slice(), GET].concat()),
        ("127.0.0.1", [v2_header("198.51.100.1:1", "10.0.0.1:443"), GET.to_vec()].concat()),
    ];
    for (from, bytes) in &refused {
        assert_eq!(
            exchange(from, edge, bytes).await,
            "",
            "from {from}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(echo.hits(), 2, "a refused connection reached the backend");
    let metrics = request("GET", &format!("http://{admin}/metrics"), &[], "").await.body;
    assert_eq!(metric(&metrics, "lb_refused_total{listener=\"edge\",reason=\"proxy_protocol\"}"), 3.0);
    assert_eq!(metric(&metrics, "lb_refused_total{listener=\"edge\",reason=\"denied\"}"), 1.0);

    // Out: the carried client goes on to a backend that parses PROXY v2 …
    let mut out = v2_header("203.0.113.7:5555", "10.0.0.1:443");
    out.extend_from_slice(b"GET /out HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
    let answer = exchange("127.0.0.1", edge, &out).await;
    assert!(answer.contains("203.0.113.7") && answer.contains("5555"), "{answer}");
    // … and a TCP listener's client to one that parses v1.
    let answer = exchange("127.0.0.1", l4, b"GET / HTTP/1.1\r\nHost: l4\r\n\r\n").await;
    assert!(answer.contains("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{answer}");
    assert!(answer.contains(&format!(" {}", l4.port())), "the header names the listener's port: {answer}");
}
