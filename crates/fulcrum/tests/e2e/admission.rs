//! Admission control end to end with real processes: per-client rate
//! limits, one limit shared by two instances through a real
//! `redis-server`, priority classes with deadlines under overload, and the
//! adaptive concurrency limit when backends slow down.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// Status, `Retry-After` and time taken of one GET.
async fn timed_get(
    client: &Client<HttpConnector, Body>,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Duration) {
    let started = Instant::now();
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(full("")).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    response.into_body().collect().await.unwrap();
    (status, retry_after, started.elapsed())
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(admin: SocketAddr) -> String {
    get(&client(), &format!("http://{admin}/metrics")).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_client_limit_admits_the_burst_then_the_rate_and_spares_other_clients() {
    let backend = named_backend("a").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = http_config(listen, "round_robin", &[backend.address], "")
        .replace("pool = \"app\"\n\n", "pool = \"app\"\nrate_limit = \"per_client\"\n\n")
        + &format!(
            "[rate_limits.per_client]\nkey = \"client_ip\"\nrate = 10\nper = \"1s\"\nburst = 5\n\n[admin]\nlisten = \"{admin}\"\n"
        );
    let _lb = Fulcrum::start(&config, admin);
    let url = format!("http://{listen}/");
    let from_2 = client_from("127.0.0.2".parse().unwrap());
    let mut admitted = 0;
    let mut refused = 0;
    for _ in 0..50 {
        let (status, retry_after, _) = timed_get(&from_2, &url, &[]).await;
        match status {
            200 => admitted += 1,
            429 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After in whole seconds");
            }
            other => panic!("status {other}"),
        }
    }
    assert!((5..=7).contains(&admitted), "burst 5 + 1 of 50: {admitted}");
    assert_eq!(backend.hits(), admitted, "refused requests are never forwarded");
    let from_3 = client_from("127.0.0.3".parse().unwrap());
    assert_eq!(timed_get(&from_3, &url, &[]).await.0, 200, "another client has its own count");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut later = 0;
    for _ in 0..10 {
        later += usize::from(timed_get(&from_2, &url, &[]).await.0 == 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(later, 10, "10 per second pass again");
    // Ten at once again: the refusals carry the policy's headers.
    let burst = futures_util::future::join_all((0..10).map(|_| from_2.get(url.parse().unwrap()))).await;
    let refusals: Vec<_> = burst.into_iter().map(Result::unwrap).filter(|r| r.status() == 429).collect();
    assert!(!refusals.is_empty());
    let headers = refusals[0].headers();
    assert_eq!(headers["ratelimit-policy"], "\"per_client\";q=10;w=1");
    assert!(headers["ratelimit"].to_str().unwrap().starts_with("\"per_client\";r=0;t="));
    let text = metrics(admin).await;
    eprintln!("rate limit: {admitted} of 50 admitted at once, then 10 of 10 at the rate");
    assert_eq!(
        metric_sum(&text, "lb_rate_limited_total{limit=\"per_client\"}"),
        (refused + refusals.len()) as f64,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_limit_through_redis_and_keep_answering_without_it() {
    let mut redis = RedisServer::start();
    let backend = named_backend("a").await;
    let store = format!(
        "[redis]\nurl = \"{}\"\n\n[rate_limits.shared]\nkey = \"global\"\nrate = 50\nper = \"1s\"\nstore = \"redis\"\n",
        redis.url()
    );
    let instance = || {
        let (listen, admin) = (local(free_port()), local(free_port()));
        let config = http_config(listen, "round_robin", &[backend.address], "")
            .replace("pool = \"app\"\n\n", "pool = \"app\"\nrate_limit = \"shared\"\n\n")
            + &store
            + &format!("\n[admin]\nlisten = \"{admin}\"\n");
        (Fulcrum::start(&config, admin), listen)
    };
    let ((_a, a), (_b, b)) = (instance(), instance());
    let client = client();
    let started = Instant::now();
    let mut admitted = 0;
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let instance = if requests % 2 == 0 { a } else { b };
        let (status, _, _) = timed_get(&client, &format!("http://{instance}/"), &[]).await;
        assert!(status == 200 || status == 429, "{status}");
        admitted += usize::from(status == 200);
        requests += 1;
    }
    let expected = 1.0 + 50.0 * started.elapsed().as_secs_f64();
    eprintln!("shared limit: {admitted} of {requests} admitted by two instances in 2 s (the limit allows {expected:.0})");
    assert!(
        (admitted as f64 - expected).abs() <= expected * 0.1,
        "{admitted} admitted; one limit of 50/s over 2 s allows {expected:.0}, two separate ones twice that"
    );

    redis.kill();
    let mut by_instance = [0, 0];
    for i in 0..40 {
        let (status, _, _) =
            timed_get(&client, &format!("http://{}/", if i % 2 == 0 { a } else { b }), &[]).await;
        assert!(status == 200 || status == 429, "status {status} while redis is down");
        by_instance[i % 2] += usize::from(status == 200);
    }
    assert!(by_instance.iter().all(|&n| n > 0), "each instance admits on its own: {by_instance:?}");
}

/// A backend that serves `capacity` requests at once (the rest wait
/// inside it) in `latency_ms`, recording when each request finished and
/// how long it spent inside.
async fn limited_backend(
    capacity: usize,
    latency_ms: Arc<AtomicU64>,
    observed: Arc<Mutex<Vec<(Instant, Duration)>>>,
) -> common::Backend {
    let slots = Arc::new(tokio::sync::Semaphore::new(capacity));
    backend(move |_request| {
        let (slots, latency_ms, observed) =
            (Arc::clone(&slots), Arc::clone(&latency_ms), Arc::clone(&observed));
        async move {
            let arrived = Instant::now();
            let _slot = slots.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(latency_ms.load(Ordering::SeqCst))).await;
            observed.lock().unwrap().push((Instant::now(), arrived.elapsed()));
            text("ok")
        }
    })
    .await
}

/// Closed-loop clients sending GETs with `headers` until stopped; each
/// records status and time taken.
fn flood(
    listen: SocketAddr,
    connections: usize,
    headers: &'static [(&'static str, &'static str)],
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(u16, Duration)>>> {
    (0..connections)
        .map(|_| {
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (status, _, took) = timed_get(&client, &format!("http://{listen}/"), headers).await;
                    seen.push((status, took));
                    tokio::time::sleep(pause).await;
                }
                seen
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<(u16, Duration)>>>) -> Vec<(u16, Duration)> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn p99(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get((times.len() * 99 / 100).min(times.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn classed_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], admission: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{b}\" }}")).collect();
    format!(
        "[server]\nworker_threads = 2\n\n[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\n\
         [[listeners.routes]]\nheaders = {{ \"x-priority\" = \"critical\" }}\npool = \"app\"\nclass = \"critical\"\n\n\
         [[listeners.routes]]\nheaders = {{ \"x-priority\" = \"bulk\" }}\npool = \"app\"\nclass = \"bulk\"\n\n\
         [pools.app]\nbackends = [{}]\n\n[pools.app.admission]\n{admission}\n\n[admin]\nlisten = \"{admin}\"\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_overload_critical_requests_pass_and_bulk_is_shed_within_its_deadline() {
    let latency = Arc::new(AtomicU64::new(50));
    let observed = Arc::new(Mutex::new(Vec::new()));
    let backends = [
        limited_backend(4, Arc::clone(&latency), Arc::clone(&observed)).await,
        limited_backend(4, Arc::clone(&latency), Arc::clone(&observed)).await,
    ];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let admission = "max_concurrent = 8\nqueue = 1000\nclasses = { critical = { priority = 0, deadline = \"2s\" }, \
                     default = { priority = 1, deadline = \"500ms\" }, bulk = { priority = 2, deadline = \"100ms\" } }";
    let _lb = Fulcrum::start(
        &classed_config(listen, admin, &[backends[0].address, backends[1].address], admission),
        admin,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = flood(listen, 64, &[("x-priority", "bulk")], Duration::ZERO, &stop);
    let critical = flood(listen, 1, &[("x-priority", "critical")], Duration::from_millis(20), &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let (bulk, critical) = (collect(bulk).await, collect(critical).await);

    assert!(critical.len() > 20, "{} critical requests", critical.len());
    assert!(critical.iter().all(|(status, _)| *status == 200), "every critical request passes");
    let critical_p99 = p99(critical.iter().map(|(_, took)| *took).collect());
    assert!(critical_p99 < Duration::from_secs(2), "critical p99 {critical_p99:?}");
    let shed: Vec<Duration> = bulk.iter().filter(|(s, _)| *s == 503).map(|(_, t)| *t).collect();
    let served = bulk.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(shed.len() + served, bulk.len(), "bulk is served or shed, nothing else");
    assert!(!shed.is_empty() && served > 0);
    // Shed at the 100 ms deadline, not later (plus scheduling slack);
    // served ones waited at most the deadline, then 50 ms at a backend.
    assert!(shed.iter().all(|t| *t < Duration::from_millis(100 + 80)), "a shed took {:?}", shed.iter().max());
    let slowest = bulk.iter().filter(|(s, _)| *s == 200).map(|(_, t)| *t).max().unwrap();
    assert!(slowest < Duration::from_millis(100 + 50 + 80), "a served bulk request took {slowest:?}");

    let text = metrics(admin).await;
    assert_eq!(metric_sum(&text, "lb_shed_total{pool=\"app\",class=\"bulk\""), shed.len() as f64, "{text}");
    assert_eq!(metric_sum(&text, "lb_shed_total{pool=\"app\",class=\"critical\""), 0.0);
    assert_eq!(metric_sum(&text, "lb_requests_total"), (served + critical.len()) as f64);
    eprintln!(
        "overload: critical {} of {} passed, p99 {:?}; bulk {} served, {} shed (slowest shed {:?})",
        critical.len(),
        critical.len(),
        critical_p99,
        served,
        shed.len(),
        shed.iter().max().unwrap()
    );
}

/// 32 closed-loop clients over two backends of capacity 4 whose latency
/// goes from 20 to 40 ms after 2.5 s; returns the backends' p99 time per
/// request over the last 1.5 s, and the pool's limit before and after.
async fn slowdown_under(max_concurrent: &str) -> (Duration, u64, u64) {
    let latency = Arc::new(AtomicU64::new(20));
    let observed = Arc::new(Mutex::new(Vec::new()));
    let backends = [
        limited_backend(4, Arc::clone(&latency), Arc::clone(&observed)).await,
        limited_backend(4, Arc::clone(&latency), Arc::clone(&observed)).await,
    ];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let admission = format!(
        "max_concurrent = {max_concurrent}\nqueue = 1000\nclasses = {{ critical = {{ priority = 0, deadline = \"2s\" }}, \
         default = {{ priority = 1, deadline = \"2s\" }}, bulk = {{ priority = 2, deadline = \"2s\" }} }}"
    );
    let _lb = Fulcrum::start(
        &classed_config(listen, admin, &[backends[0].address, backends[1].address], &admission),
        admin,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = flood(listen, 32, &[], Duration::ZERO, &stop);
    let limit = || async {
        let stats: serde_json::Value =
            serde_json::from_str(&get(&client(), &format!("http://{admin}/stats")).await.1).unwrap();
        stats["pools"][0]["admission"]["limit"].as_u64().unwrap()
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = limit().await;
    latency.store(40, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let measured_from = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = limit().await;
    stop.store(true, Ordering::SeqCst);
    let served = collect(load).await;
    assert!(served.iter().all(|(s, _)| *s == 200 || *s == 503));
    let inside: Vec<Duration> = observed
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at >= measured_from)
        .map(|(_, took)| *took)
        .collect();
    (p99(inside), before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_adaptive_limit_falls_when_backends_slow_down_and_keeps_them_from_queueing() {
    let (fixed_p99, _, _) = slowdown_under("1000").await;
    let (adaptive_p99, before, after) = slowdown_under("\"adaptive\"").await;
    eprintln!(
        "backends at 40 ms: p99 inside the backends {fixed_p99:?} under a fixed limit of 1000, \
         {adaptive_p99:?} under the adaptive limit ({before} before the slowdown, {after} after)"
    );
    assert!(after < before, "the adaptive limit fell: {before} -> {after}");
    assert!(adaptive_p99 <= Duration::from_millis(80), "within 2x the uncongested 40 ms: {adaptive_p99:?}");
    assert!(
        fixed_p99 >= adaptive_p99 * 2,
        "a fixed limit lets requests queue inside the backends: {fixed_p99:?}"
    );
}
