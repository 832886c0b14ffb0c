//! Shared end-to-end harness: a real `fulcrum` process on 127.0.0.1 with
//! a config written to a temp dir, and small in-test backends.

mod tls;
pub use tls::*;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// A port on 127.0.0.1 that nothing listens on, handed out once per test
/// process, from outside the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`). A port from inside it could become
/// the source port of any outgoing connection between this probe and the
/// balancer's bind, and Linux refuses a listener's bind to a port a
/// connection uses. The ports run on from an offset of the process id, so
/// back-to-back runs use different ones.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let Some((first, count)) = ports_outside_ephemeral_range() else {
        return ephemeral_free_port();
    };
    let start = std::process::id() as usize;
    for _ in 0..count {
        let port = first + ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % count) as u16;
        // Without `SO_REUSEADDR`: a port any socket holds, even in
        // TIME_WAIT, is passed over.
        let probe = tokio::net::TcpSocket::new_v4().expect("a socket");
        if probe.bind(local(port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {first}..{}", first as usize + count);
}

/// The widest span of at least 2,000 ports below or above the ephemeral
/// range (above 10,000, clear of well-known services), if there is one.
fn ports_outside_ephemeral_range() -> Option<(u16, usize)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().filter_map(|n| n.parse::<usize>().ok());
    let (low, high) = (bounds.next()?, bounds.next()?);
    let below = (10_000, low.saturating_sub(10_000));
    let above = (high + 1, 65_536usize.saturating_sub(high + 1));
    let (first, count) = if below.1 >= above.1 { below } else { above };
    if count < 2_000 {
        return None;
    }
    Some((u16::try_from(first).ok()?, count))
}

/// A port the kernel picks (bound and released), never one this process
/// handed out before: where no span lies outside the ephemeral range.
fn ephemeral_free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Reads from `socket` until `marker` has arrived.
pub async fn read_until(socket: &mut tokio::net::TcpStream, marker: &[u8]) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut room = [0u8; 4096];
    while !received.windows(marker.len()).any(|w| w == marker) {
        let n = socket.read(&mut room).await.unwrap();
        assert!(n > 0, "closed before {:?} arrived", String::from_utf8_lossy(marker));
        received.extend_from_slice(&room[..n]);
    }
}

/// A running `fulcrum run` process; killed on drop.
pub struct Fulcrum {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Fulcrum {
    /// Writes `config` and starts `fulcrum run`, waiting until `ready` accepts.
    pub fn start(config: &str, ready: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config, ready)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str, ready: SocketAddr) -> Self {
        Self::start_binary(std::path::Path::new(env!("CARGO_BIN_EXE_fulcrum")), dir, config, ready)
    }

    /// Like [`Fulcrum::start_in`], running the binary at `binary`.
    pub fn start_binary(
        binary: &std::path::Path,
        dir: tempfile::TempDir,
        config: &str,
        ready: SocketAddr,
    ) -> Self {
        let path = dir.path().join("fulcrum.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("fulcrum.log")).unwrap();
        let child = Command::new(binary)
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut fulcrum = Fulcrum { child, dir, config: path };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(ready).is_err() {
            if let Some(status) = fulcrum.child.try_wait().unwrap() {
                panic!("fulcrum exited ({status}) before listening on {ready}:\n{}", fulcrum.log());
            }
            assert!(Instant::now() < deadline, "nothing listens on {ready}:\n{}", fulcrum.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        fulcrum
    }

    /// Sends `signal` (e.g. "HUP", "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fulcrum.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text` (10 s at most).
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "the log never said `{text}`:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file.
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocks until something accepts on `address` (10 s at most).
pub fn wait_for_port(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An in-test HTTP backend counting its requests.
#[derive(Clone)]
pub struct Backend {
    pub address: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts a backend on a free port answering with `handler`.
pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (handler, counter) = (handler.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend { address, hits }
}

/// A backend answering every request with `name` as its body.
pub async fn named_backend(name: &'static str) -> Backend {
    backend(move |_request| async move { text(name) }).await
}

pub fn text(body: impl Into<Bytes>) -> Response<Body> {
    Response::new(full(body))
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// A client whose connections come from `local` (e.g. 127.0.0.2).
pub fn client_from(local: IpAddr) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(local));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`, returning status and body text.
pub async fn get(client: &Client<HttpConnector, Body>, url: &str) -> (u16, String) {
    let response = client.request(Request::get(url).body(full("")).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One answer: status, trimmed body text and headers.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: http::HeaderMap,
}

/// Sends `method url` with `headers` and `body`; the whole answer.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client().request(builder.body(full(body.to_string())).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, body: String::from_utf8_lossy(&body).trim().to_string(), headers }
}

/// GET `url` with `headers`.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    request("GET", url, headers, "").await
}

/// An admin API call that must succeed; its JSON answer.
pub async fn admin_json(method: &str, url: &str, body: &str) -> serde_json::Value {
    let answer = request(method, url, &[("content-type", "application/json")], body).await;
    assert!(answer.status < 300, "{method} {url}: {} {}", answer.status, answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// The value of the first metric line starting with `prefix` (0 when none).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Config for one http listener on `listen` over `backends`.
pub fn http_config(listen: SocketAddr, algorithm: &str, backends: &[SocketAddr], extra_pool: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{b}\" }}")).collect();
    format!(
        "[server]\nworker_threads = 2\ngraceful_timeout = \"5s\"\n\n[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\n\
         [pools.app]\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n{extra_pool}\n",
        list.join(", ")
    )
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A `/proc/PID/status` figure in KiB: `VmRSS` (now) or `VmHWM` (peak).
pub fn memory_kib(pid: u32, field: &str) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line =
        status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A `fulcrum backend` process, killed when dropped (also when a test fails).
pub struct BackendProcess(Child);

impl BackendProcess {
    /// Starts one on `address` and waits until it accepts.
    pub fn start(address: SocketAddr, name: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(["backend", "--listen", &address.to_string(), "--name", name])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(address);
        Self(child)
    }

    /// SIGKILLs it and waits until it is gone.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `redis-server` (Debian's package) on a free port of 127.0.0.1, with no
/// persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` and waits until it accepts.
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        wait_for_port(local(port));
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILLs it and waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
