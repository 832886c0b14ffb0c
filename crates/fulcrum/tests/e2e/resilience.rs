//! Keeping traffic off sick backends, end to end with real processes:
//! a SIGKILLed backend costs no failed GET, a failing backend's circuit
//! opens and then admits exactly the half-open probes, and a flapping
//! backend under a 60 s soak loses nothing and leaks nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

/// Three backend processes behind a Fulcrum with health checks, retries
/// and an admin listener; returns them with the backends' addresses and
/// the balancer's and admin API's addresses.
fn three_backends_behind_fulcrum() -> (Vec<BackendProcess>, [SocketAddr; 3], Fulcrum, SocketAddr, SocketAddr)
{
    let addresses = [local(free_port()), local(free_port()), local(free_port())];
    let backends =
        addresses.iter().enumerate().map(|(i, a)| BackendProcess::start(*a, &format!("b{i}"))).collect();
    let (listen, admin) = (local(free_port()), local(free_port()));
    let lb = Fulcrum::start(&resilient_config(listen, admin, &addresses), admin);
    (backends, addresses, lb, listen, admin)
}

/// The admin API's view of one backend.
async fn backend_stats(admin: SocketAddr, address: SocketAddr) -> serde_json::Value {
    let client = client();
    let response =
        client.request(Request::get(format!("http://{admin}/stats")).body(full("")).unwrap()).await.unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    stats["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == address.to_string())
        .unwrap()
        .clone()
}

/// Clients sending GETs in a loop until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(listen: SocketAddr, clients: usize, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let client = client();
                    let deadline = Instant::now() + limit;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let request = Request::get(format!("http://{listen}/")).body(full("")).unwrap();
                        let good = match client.request(request).await {
                            Ok(response) => {
                                response.status() == 200 && response.into_body().collect().await.is_ok()
                            }
                            Err(_) => false,
                        };
                        if good { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

fn resilient_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    http_config(
        listen,
        "round_robin",
        backends,
        "health_check = { path = \"/health\", interval = \"200ms\", timeout = \"200ms\", rise = 2, fall = 2 }\n\
         retries = { attempts = 2, backoff = \"5ms\" }\n",
    ) + &format!("[admin]\nlisten = \"{admin}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backend_costs_no_failed_get_and_returns_after_rise() {
    let (mut backends, addresses, _lb, listen, admin) = three_backends_behind_fulcrum();
    let load = Load::start(listen, 4, Duration::from_secs(30));
    // Kill only once traffic is flowing over every backend.
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.ok.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    backends[1].kill();
    let killed = Instant::now();
    while backend_stats(admin, addresses[1]).await["health"] != "unhealthy" {
        assert!(killed.elapsed() < Duration::from_secs(5), "the dead backend was never marked down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detection = killed.elapsed();
    // fall × interval, plus one probe timeout and the probes' ±10% jitter.
    assert!(detection <= Duration::from_millis(2 * 220 + 200 + 150), "marked down after {detection:?}");

    let restarted = Instant::now();
    backends[1] = BackendProcess::start(addresses[1], "b1");
    let served_before = backend_stats(admin, addresses[1]).await["requests_total"].as_u64().unwrap();
    while backend_stats(admin, addresses[1]).await["requests_total"].as_u64().unwrap() <= served_before {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "traffic never returned to the restarted backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = restarted.elapsed();
    assert!(recovery <= Duration::from_millis(2 * 220 + 300), "traffic returned after {recovery:?}");

    let (ok, failed) = load.finish().await;
    eprintln!("kill/restart: {ok} GETs ok, {failed} failed; down after {detection:?}, traffic back after {recovery:?}");
    assert_eq!(failed, 0, "{failed} GETs failed ({ok} succeeded)");
    assert!(ok > 200, "too little load: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_takes_no_traffic_until_the_wait_then_exactly_the_half_open_probes() {
    let failing = backend(|_request| async move {
        let mut response = text("broken");
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
    .await;
    let [b, c] = [named_backend("b").await, named_backend("c").await];
    let listen = local(free_port());
    let config = http_config(
        listen,
        "round_robin",
        &[failing.address, b.address, c.address],
        "circuit_breaker = { failure_rate_threshold = 50, minimum_calls = 10, window = 20, wait_in_open = \"30s\", half_open_calls = 3 }",
    );
    let lb = Fulcrum::start(&config, listen);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(get(&client, &format!("http://{listen}/")).await.0);
    }
    let opened = Instant::now();
    assert_eq!(failing.hits(), 10, "the circuit opens on the 10th failure (minimum_calls)");
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 10);
    lb.wait_for_log("circuit breaker changed state");

    // Open: no traffic at all while the wait lasts.
    for _ in 0..30 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 200);
    }
    assert_eq!(failing.hits(), 10);

    tokio::time::sleep(Duration::from_secs(30).saturating_sub(opened.elapsed()) + Duration::from_millis(100))
        .await;
    for _ in 0..30 {
        get(&client, &format!("http://{listen}/")).await;
    }
    assert_eq!(failing.hits(), 13, "half-open admits exactly 3 probes, which fail and reopen it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_backend_under_a_soak_loses_no_get_and_leaks_no_memory() {
    let (mut backends, addresses, lb, listen, _admin) = three_backends_behind_fulcrum();
    let load = Load::start(listen, 4, Duration::from_secs(90));
    let soak = Duration::from_secs(60);
    let started = Instant::now();
    let mut rss_after_warmup = None;
    let mut up = true;
    while started.elapsed() < soak {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if up {
            backends[2].kill();
        } else {
            backends[2] = BackendProcess::start(addresses[2], "flapper");
        }
        up = !up;
        if rss_after_warmup.is_none() && started.elapsed() >= Duration::from_secs(10) {
            rss_after_warmup = Some(memory_kib(lb.child.id(), "VmRSS:"));
        }
    }
    let (ok, failed) = load.finish().await;
    let growth = memory_kib(lb.child.id(), "VmRSS:") - rss_after_warmup.unwrap();
    eprintln!(
        "soak: {ok} GETs ok, {failed} failed; RSS {} KiB after warm-up, grew {growth} KiB",
        rss_after_warmup.unwrap()
    );
    assert_eq!(failed, 0, "{failed} GETs failed ({ok} succeeded)");
    assert!(ok > 5_000, "too little load: {ok}");
    assert!(growth < 4 * 1024, "RSS grew {growth} KiB over 50 s of soak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_takes_no_traffic_but_is_still_probed_and_draining_takes_no_new_requests() {
    let slow = backend(|_request| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        text("a")
    })
    .await;
    let traffic_to_b = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&traffic_to_b);
    let b = backend(move |request: Request<hyper::body::Incoming>| {
        if request.uri().path() != "/health" {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        async move { text("b") }
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = |a_state: &str, b_state: &str| {
        format!(
            "[admin]\nlisten = \"{admin}\"\n[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\
             [pools.app]\nhealth_check = {{ path = \"/health\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }}\n\
             backends = [{{ address = \"{}\", state = \"{a_state}\" }}, {{ address = \"{}\", state = \"{b_state}\" }}]\n",
            slow.address, b.address
        )
    };
    let lb = Fulcrum::start(&config("active", "maintenance"), admin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend_stats(admin, b.address).await["health"] != "healthy" {
        assert!(Instant::now() < deadline, "a backend in maintenance must still be probed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend_stats(admin, b.address).await["state"], "maintenance");
    let client = client();
    for _ in 0..3 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.1, "a");
    }
    assert_eq!(traffic_to_b.load(Ordering::SeqCst), 0, "only probes may reach a backend in maintenance");

    // Drain a while a request is in flight on it: that request finishes,
    // new ones go to b.
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { get(&client, &format!("http://{listen}/")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    lb.write_config(&config("draining", "active"));
    lb.signal("HUP");
    lb.wait_for_log("reload applied: pool `app` changed");
    assert_eq!(get(&client, &format!("http://{listen}/")).await.1, "b");
    assert_eq!(in_flight.await.unwrap(), (200, "a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_every_circuit_is_open_answers_503_at_once() {
    let failing = backend(|_request| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut response = text("broken");
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
    .await;
    let listen = local(free_port());
    let config = http_config(
        listen,
        "round_robin",
        &[failing.address],
        "circuit_breaker = { minimum_calls = 4, window = 4, wait_in_open = \"60s\" }",
    );
    let _lb = Fulcrum::start(&config, listen);
    let client = client();
    for _ in 0..4 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.0, 500);
    }
    let started = Instant::now();
    let response =
        client.request(Request::get(format!("http://{listen}/")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_millis(200), "the 503 must not wait for the slow backend");
    assert_eq!(failing.hits(), 4);
}
