//! DNS service discovery end to end: a real DNS server (Debian's
//! `dnsmasq`, on a loopback port) serves A and SRV records; the pool
//! follows record changes within its interval, removed backends drain with
//! no failed request under load, and a dead DNS server changes nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// A `dnsmasq` answering from a hosts file and SRV lines, on a free port
/// of 127.0.0.1; killed on drop.
struct DnsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl DnsServer {
    fn start(hosts: &str, srv: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self { child: None, port: free_port(), dir };
        server.serve(hosts, srv);
        server
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// (Re)starts it with these records, on the same port.
    fn serve(&mut self, hosts: &str, srv: &[String]) {
        self.stop();
        std::fs::write(self.hosts_path(), hosts).unwrap();
        let mut conf = format!(
            "port={}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\naddn-hosts={}\nlocal-ttl=1\n",
            self.port,
            self.hosts_path().display()
        );
        for line in srv {
            conf.push_str(&format!("srv-host={line}\n"));
        }
        let conf_path = self.dir.path().join("dnsmasq.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--pid-file=", "--user=", "--log-facility=-"])
            .arg(format!("--conf-file={}", conf_path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/test.sh installs dnsmasq-base)");
        self.child = Some(child);
        wait_for_port(local(self.port));
    }

    /// Rewrites the hosts file and has dnsmasq re-read it (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts_path(), hosts).unwrap();
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener on `address`, bound without `SO_REUSEADDR`: with it, Linux
/// refuses a port that an outgoing connection of the host uses as its
/// source port, on any loopback address — which a port `free_port` handed
/// out may have become since.
fn listener_at(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Listeners on 127.0.0.`last`, one for each of `lasts`, all on one port
/// (A records carry no port): a port taken on any of them is passed over.
fn listeners_on_one_port(lasts: &[u8]) -> (u16, Vec<tokio::net::TcpListener>) {
    loop {
        let port = free_port();
        let bound: std::io::Result<Vec<_>> =
            lasts.iter().map(|&last| listener_at(SocketAddr::from(([127, 0, 0, last], port)))).collect();
        if let Ok(listeners) = bound {
            return (port, listeners);
        }
    }
}

/// A backend named `name` on `listener` that takes `delay` to answer.
fn backend_on(listener: tokio::net::TcpListener, name: &'static str, delay: Duration) -> Arc<AtomicUsize> {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(text(name))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    hits
}

/// The pool's backends from `/stats`: (address, weight, state, origin).
async fn pool_backends(admin: SocketAddr) -> Vec<(String, u64, String, String)> {
    let stats = admin_json("GET", &format!("http://{admin}/stats"), "").await;
    let mut backends: Vec<_> = stats["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b: &Value| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_string(),
                b["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    backends.sort();
    backends
}

/// Polls `/stats` until the pool's addresses are `expected` (10 s at most);
/// returns how long that took.
async fn wait_for_addresses(admin: SocketAddr, expected: &[String]) -> Duration {
    let start = Instant::now();
    loop {
        let addresses: Vec<String> = pool_backends(admin).await.into_iter().map(|b| b.0).collect();
        if addresses == expected {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the pool has {addresses:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(listen: SocketAddr, admin: SocketAddr, static_backends: &str, discovery: &str) -> String {
    // Smooth weighted round robin, so SRV weights show in the split.
    format!(
        r#"
[admin]
listen = "{admin}"

[[listeners]]
name = "web"
listen = "{listen}"
pool = "app"

[pools.app]
algorithm = "weighted_round_robin"
backends = [{static_backends}]
discovery = {discovery}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_followed_and_a_dead_dns_server_changes_nothing() {
    let (port, listeners) = listeners_on_one_port(&[2, 3, 4]);
    let at = |last: u8| SocketAddr::from(([127, 0, 0, last], port));
    let hits: Vec<_> = listeners
        .into_iter()
        .zip(["b2", "b3", "b4"])
        .map(|(l, name)| backend_on(l, name, Duration::ZERO))
        .collect();
    let mut dns = DnsServer::start("127.0.0.2 app.svc.test\n127.0.0.3 app.svc.test\n", &[]);
    let (listen, admin) = (local(free_port()), local(free_port()));
    let static_backend = named_backend("static").await;
    let fulcrum = Fulcrum::start(
        &config(
            listen,
            admin,
            &format!("{{ address = \"{}\" }}", static_backend.address),
            &format!(
                r#"{{ dns = "app.svc.test", type = "A", port = {port}, resolver = "127.0.0.1:{}", interval = "1s" }}"#,
                dns.port
            ),
        ),
        listen,
    );
    // Resolved before the first request: both addresses, from DNS, beside the static one.
    let backends = pool_backends(admin).await;
    let view: Vec<(String, String)> = backends.iter().map(|b| (b.0.clone(), b.3.clone())).collect();
    let static_address = static_backend.address.to_string();
    let mut expected: Vec<(String, String)> =
        [(static_address.clone(), "static"), (at(2).to_string(), "dns"), (at(3).to_string(), "dns")]
            .into_iter()
            .map(|(a, o)| (a, o.to_string()))
            .collect();
    expected.sort();
    assert_eq!(view, expected, "both A records, from DNS, beside the static backend");
    let client = client();
    for _ in 0..30 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    }
    assert!(hits[0].load(Ordering::SeqCst) > 0 && hits[1].load(Ordering::SeqCst) > 0);

    // The record changes: .2 leaves, .4 joins, within the 1 s interval.
    dns.set_hosts("127.0.0.3 app.svc.test\n127.0.0.4 app.svc.test\n");
    let mut after = vec![static_address.clone(), at(3).to_string(), at(4).to_string()];
    after.sort();
    let took = wait_for_addresses(admin, &after).await;
    println!("the pool followed the A records in {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?} for a 1 s interval (and a 1 s TTL)");
    let before = hits[0].load(Ordering::SeqCst);
    for _ in 0..30 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    }
    assert_eq!(hits[0].load(Ordering::SeqCst), before, "the removed backend takes nothing");
    assert!(hits[2].load(Ordering::SeqCst) > 0, "the new backend takes traffic");

    // The DNS server dies: three intervals later the pool is unchanged.
    dns.stop();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(pool_backends(admin).await.into_iter().map(|b| b.0).collect::<Vec<_>>(), after);
    for _ in 0..10 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    }
    fulcrum.wait_for_log("DNS discovery failed; keeping the last good set of backends");
    assert_eq!(pool_backends(admin).await.into_iter().map(|b| b.0).collect::<Vec<_>>(), after);
    assert_eq!(fulcrum.log().matches("DNS discovery failed").count(), 1, "one line per outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_bring_weights_and_removed_backends_drain_under_load() {
    let ports = [free_port(), free_port(), free_port()];
    let mut hits = Vec::new();
    for (port, name) in ports.iter().zip(["s1", "s2", "s3"]) {
        hits.push(backend_on(listener_at(local(*port)).unwrap(), name, Duration::from_millis(20)));
    }
    let srv = |ports: &[(u16, u16)]| -> Vec<String> {
        ports
            .iter()
            .map(|(port, weight)| format!("_app._tcp.svc.test,b.svc.test,{port},0,{weight}"))
            .collect()
    };
    let hosts = "127.0.0.1 b.svc.test\n";
    let mut dns = DnsServer::start(hosts, &srv(&[(ports[0], 1), (ports[1], 3), (ports[2], 1)]));
    let (listen, admin) = (local(free_port()), local(free_port()));
    let _fulcrum = Fulcrum::start(
        &config(
            listen,
            admin,
            "",
            &format!(
                r#"{{ dns = "_app._tcp.svc.test", type = "SRV", resolver = "127.0.0.1:{}", interval = "1s" }}"#,
                dns.port
            ),
        ),
        listen,
    );
    let backends = pool_backends(admin).await;
    let weights: Vec<(String, u64)> = backends.iter().map(|b| (b.0.clone(), b.1)).collect();
    let mut expected: Vec<(String, u64)> = vec![
        (local(ports[0]).to_string(), 1),
        (local(ports[1]).to_string(), 3),
        (local(ports[2]).to_string(), 1),
    ];
    expected.sort();
    assert_eq!(weights, expected, "SRV weights become backend weights");

    // Four looping clients; the third backend's record goes away meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                match client.get(format!("http://{listen}/").parse().unwrap()).await {
                    Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    dns.serve(hosts, &srv(&[(ports[0], 1), (ports[1], 3)]));
    let mut remaining = vec![local(ports[0]).to_string(), local(ports[1]).to_string()];
    remaining.sort();
    let took = wait_for_addresses(admin, &remaining).await;
    let removed_hits = hits[2].load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("the SRV record left; the backend drained and left in {took:?}; {ok} requests, {failed} failed");
    assert_eq!(failed, 0, "draining a backend that left DNS fails nothing");
    assert!(ok > 100, "the clients kept going: {ok}");
    assert_eq!(
        hits[2].load(Ordering::SeqCst),
        removed_hits,
        "the removed backend takes nothing after it left"
    );
    assert!(hits[1].load(Ordering::SeqCst) > hits[0].load(Ordering::SeqCst) * 2, "weight 3 against 1");
}
