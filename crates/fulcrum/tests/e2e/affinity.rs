//! Sticky sessions end to end with real processes: sealed cookies honoured
//! by any instance with the secrets, header sessions shared by two
//! instances through a real `redis-server`, failover when a session's
//! backend dies (soft) or a 503 (hard), draining backends that keep their
//! sessions, a Redis outage that fails no request, and an operator's
//! rebalance and flush.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

const SECRET: &str = "an-affinity-secret-for-tests";

/// The value of the `fulcrum_sid` cookie the balancer set, if any.
fn session_cookie(answer: &Answer) -> Option<String> {
    answer.headers.get_all(http::header::SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let value = text.strip_prefix("fulcrum_sid=")?;
        Some(value.split(';').next()?.to_string())
    })
}

/// A config with one http listener on `listen` over `backends` with `affinity`,
/// and an admin listener.
fn sticky_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], pool_extra: &str) -> String {
    http_config(listen, "round_robin", backends, pool_extra) + &format!("[admin]\nlisten = \"{admin}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_stick_on_every_instance_and_bad_cookies_start_fresh_ones() {
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let affinity = format!("affinity = {{ kind = \"cookie\", secrets = [\"{SECRET}\"] }}\n");
    let (a, admin_a, b, admin_b) =
        (local(free_port()), local(free_port()), local(free_port()), local(free_port()));
    let _lb_a = Fulcrum::start(&sticky_config(a, admin_a, &addresses, &affinity), admin_a);
    // Instance B has another pool with the same cookie name and secret: its
    // cookies must not open on `app`.
    let other = local(free_port());
    let config_b = sticky_config(b, admin_b, &addresses, &affinity)
        + &format!(
            "[[listeners]]\nname = \"other\"\nlisten = \"{other}\"\npool = \"other\"\n\n[pools.other]\nbackends = [{{ address = \"{}\" }}]\n{affinity}",
            addresses[0]
        );
    let _lb_b = Fulcrum::start(&config_b, admin_b);
    wait_for_port(other);

    // 20 clients, 10 requests each, alternating between the instances.
    let mut used = HashSet::new();
    for client in 0..20 {
        let first = get_with(&format!("http://{a}/"), &[]).await;
        assert_eq!(first.status, 200);
        let cookie = session_cookie(&first).expect("a new session gets a cookie");
        assert!(
            !cookie.contains("127.0.0.1") && !addresses.iter().any(|a| cookie.contains(&a.to_string())),
            "the cookie hides the backend"
        );
        let header = format!("fulcrum_sid={cookie}");
        for i in 1..10 {
            let instance = if i % 2 == 1 { b } else { a };
            let answer = get_with(&format!("http://{instance}/"), &[("cookie", &header)]).await;
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (200, first.body.as_str()),
                "client {client} moved"
            );
        }
        used.insert(first.body);
    }
    assert_eq!(used.len(), 3, "new sessions are spread by the algorithm: {used:?}");

    // A cookie with one byte flipped, and other bad cookies: a fresh session, never an error.
    let good = session_cookie(&get_with(&format!("http://{a}/"), &[]).await).unwrap();
    let mut flipped = good.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let other_pool = session_cookie(&get_with(&format!("http://{other}/"), &[]).await).unwrap();
    let garbage = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB".to_string();
    let bad = [
        String::from_utf8(flipped).unwrap(),
        String::new(),
        "x".repeat(10_000),
        "!!not*base64!!".into(),
        garbage,
        other_pool,
    ];
    for value in &bad {
        let answer = get_with(&format!("http://{b}/"), &[("cookie", &format!("fulcrum_sid={value}"))]).await;
        assert_eq!(answer.status, 200, "cookie {:.40}", value);
        let fresh = session_cookie(&answer).expect("a bad cookie gets a fresh session");
        assert_ne!(&fresh, value);
    }
    let metrics = get_with(&format!("http://{admin_b}/metrics"), &[]).await.body;
    assert_eq!(metric(&metrics, "lb_affinity_total{pool=\"app\",result=\"invalid\"}"), 6.0, "{metrics}");
    assert_eq!(metric(&metrics, "lb_affinity_total{pool=\"app\",result=\"hit\"}"), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_header_sessions_through_redis_and_a_new_backend_moves_none() {
    let redis = RedisServer::start();
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let store = format!("[redis]\nurl = \"{}\"\nkey_prefix = \"test:\"\n", redis.url());
    let affinity = "affinity = { kind = \"header\", header = \"x-session-id\", store = \"redis\" }\n";
    let (a, admin_a, b, admin_b) =
        (local(free_port()), local(free_port()), local(free_port()), local(free_port()));
    let _lb_a = Fulcrum::start(&(sticky_config(a, admin_a, &addresses, affinity) + &store), admin_a);
    let _lb_b = Fulcrum::start(&(sticky_config(b, admin_b, &addresses, affinity) + &store), admin_b);

    let mut placed: HashMap<String, String> = HashMap::new();
    for session in 0..50 {
        let id = format!("session-{session}");
        for i in 0..4 {
            let instance = if i % 2 == 0 { a } else { b };
            let answer = get_with(&format!("http://{instance}/"), &[("x-session-id", &id)]).await;
            assert_eq!(answer.status, 200);
            let backend = placed.entry(id.clone()).or_insert_with(|| answer.body.clone());
            assert_eq!(*backend, answer.body, "{id} split between instances");
        }
    }
    let spread: HashSet<&String> = placed.values().collect();
    assert_eq!(spread.len(), 3, "sessions spread over every backend");

    // A fourth backend added at runtime on both instances takes no existing session.
    let d = named_backend("d").await;
    for admin in [admin_a, admin_b] {
        admin_json(
            "POST",
            &format!("http://{admin}/api/v1/pools/app/backends"),
            &format!("{{\"address\":\"{}\"}}", d.address),
        )
        .await;
    }
    for (id, backend) in &placed {
        for instance in [a, b] {
            let answer = get_with(&format!("http://{instance}/"), &[("x-session-id", id)]).await;
            assert_eq!(&answer.body, backend, "{id} moved after a backend was added");
        }
    }
    assert_eq!(d.hits(), 0);
    for session in 0..8 {
        get_with(&format!("http://{a}/"), &[("x-session-id", &format!("late-{session}"))]).await;
    }
    assert!(d.hits() > 0, "new sessions reach the new backend");

    let sessions = admin_json("GET", &format!("http://{admin_a}/api/v1/pools/app/sessions"), "").await;
    assert_eq!(sessions["store"], "redis");
    assert_eq!(sessions["sessions"], 58, "{sessions}");
}

/// Four clients, each looping over its own sessions with GETs; records
/// which backend served each request of each session, in order.
struct SessionLoad {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(String, u16, String)>>>,
}

impl SessionLoad {
    fn start(listen: SocketAddr, sessions: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..4)
            .map(|worker| {
                let (stop, failed) = (Arc::clone(&stop), Arc::clone(&failed));
                tokio::spawn(async move {
                    let client = client();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        for session in (worker..sessions).step_by(4) {
                            let id = format!("s{session}");
                            let request = Request::get(format!("http://{listen}/"))
                                .header("x-session-id", &id)
                                .body(full(""))
                                .unwrap();
                            let (status, body) = match client.request(request).await {
                                Ok(response) => {
                                    let status = response.status().as_u16();
                                    let body = response.into_body().collect().await.map(|b| b.to_bytes());
                                    (status, body.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
                                }
                                Err(_) => (0, Ok(String::new())),
                            };
                            if status != 200 {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                            seen.push((id, status, body.unwrap_or_default()));
                        }
                    }
                    seen
                })
            })
            .collect();
        Self { stop, failed, tasks }
    }

    async fn finish(self) -> Vec<(String, u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap());
        }
        all
    }
}

/// The backends a session went through, in order, each listed once per stay.
fn stays(seen: &[(String, u16, String)], id: &str) -> Vec<String> {
    let mut stays: Vec<String> = Vec::new();
    for (_, _, backend) in seen.iter().filter(|(s, status, _)| s == id && *status == 200) {
        if stays.last() != Some(backend) {
            stays.push(backend.clone());
        }
    }
    stays
}

/// Waits until the balancer holds `count` live sessions.
async fn wait_for_sessions(admin: SocketAddr, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions = admin_json("GET", &format!("http://{admin}/api/v1/pools/app/sessions"), "").await;
        if sessions["sessions"] == count {
            return;
        }
        assert!(Instant::now() < deadline, "never {count} sessions: {sessions}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three backend processes (b0, b1, b2) behind a Fulcrum with health
/// checks, retries and header affinity in `mode`, under 30 looping
/// sessions; returns once every session is placed, having killed b1, with
/// 1.5 s of load after the kill recorded.
async fn kill_a_sticky_backend_under_load(
    mode: &str,
) -> (Fulcrum, SocketAddr, usize, Vec<(String, u16, String)>) {
    let addresses = [local(free_port()), local(free_port()), local(free_port())];
    let mut backends: Vec<BackendProcess> =
        addresses.iter().enumerate().map(|(i, a)| BackendProcess::start(*a, &format!("b{i}"))).collect();
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = sticky_config(
        listen,
        admin,
        &addresses,
        &format!(
            "health_check = {{ path = \"/health\", interval = \"200ms\", timeout = \"200ms\", rise = 2, fall = 2 }}\n\
             retries = {{ attempts = 2, backoff = \"5ms\" }}\n\
             affinity = {{ kind = \"header\", mode = \"{mode}\" }}\n"
        ),
    );
    let lb = Fulcrum::start(&config, admin);
    let load = SessionLoad::start(listen, 30);
    wait_for_sessions(admin, 30).await;
    backends[1].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed = load.failed.load(Ordering::SeqCst);
    (lb, admin, failed, load.finish().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_sticky_backend_moves_each_of_its_sessions_once_without_a_failed_get() {
    let (_lb, admin, failed_during, seen) = kill_a_sticky_backend_under_load("soft").await;
    assert_eq!(failed_during, 0, "{failed_during} GETs failed");
    let mut moved = 0;
    for session in 0..30 {
        let stays = stays(&seen, &format!("s{session}"));
        match stays.as_slice() {
            [only] => assert_ne!(only, "b1", "s{session} stayed on the dead backend"),
            [first, second] => {
                assert_eq!(first, "b1", "only the dead backend's sessions move: s{session} {stays:?}");
                assert_ne!(second, "b1");
                moved += 1;
            }
            other => panic!("s{session} moved more than once: {other:?}"),
        }
    }
    eprintln!("soft failover: {} GETs, 0 failed, {moved} of 30 sessions moved once", seen.len());
    assert!(moved >= 5, "round robin gave the killed backend about a third of 30 sessions; {moved} moved");
    let metrics = get_with(&format!("http://{admin}/metrics"), &[]).await.body;
    assert_eq!(
        metric(&metrics, "lb_affinity_total{pool=\"app\",result=\"failover\"}"),
        moved as f64,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_affinity_answers_503_for_the_sessions_of_a_killed_backend() {
    let (_lb, _admin, _failed, seen) = kill_a_sticky_backend_under_load("hard").await;

    let on_dead: HashSet<&String> =
        seen.iter().filter(|(_, status, b)| *status == 200 && b == "b1").map(|(id, _, _)| id).collect();
    assert!(!on_dead.is_empty());
    for (id, status, backend) in &seen {
        if on_dead.contains(id) {
            assert!(*status == 503 || backend == "b1", "{id} left its backend: {status} {backend}");
        } else {
            assert_eq!(*status, 200, "{id} was not on the killed backend");
        }
    }
    let refused = seen.iter().filter(|(_, status, _)| *status == 503).count();
    eprintln!(
        "hard: {} GETs, {refused} answered 503 for the {} sessions of the killed backend",
        seen.len(),
        on_dead.len()
    );
    assert!(refused > 0, "the dead backend's sessions got 503s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_backend_keeps_its_sessions_and_takes_no_new_ones_until_rebalanced() {
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (listen, admin) = (local(free_port()), local(free_port()));
    let affinity = "affinity = { kind = \"header\", drain_keeps_sessions = true }\n";
    let config = sticky_config(listen, admin, &addresses, affinity) + "[log]\naccess = \"access.log\"\n";
    let lb = Fulcrum::start(&config, admin);
    let url = format!("http://{listen}/");
    let mut placed = HashMap::new();
    for session in 0..30 {
        let id = format!("old-{session}");
        placed.insert(id.clone(), get_with(&url, &[("x-session-id", &id)]).await.body);
    }
    let drained = addresses[0];
    let patch = request(
        "PATCH",
        &format!("http://{admin}/api/v1/pools/app/backends/{drained}"),
        &[("content-type", "application/json")],
        r#"{"state":"draining"}"#,
    )
    .await;
    assert_eq!(patch.status, 200, "{}", patch.body);
    for (id, backend) in &placed {
        assert_eq!(
            &get_with(&url, &[("x-session-id", id)]).await.body,
            backend,
            "{id} left the draining backend"
        );
    }
    for session in 0..30 {
        let answer = get_with(&url, &[("x-session-id", &format!("new-{session}"))]).await;
        assert_ne!(answer.body, "a", "a new session reached the draining backend");
    }

    // Sessions per backend, then a rebalance that moves a fifth of them off the busiest.
    let sessions = admin_json("GET", &format!("http://{admin}/api/v1/pools/app/sessions"), "").await;
    assert_eq!(sessions["sessions"], 60, "{sessions}");
    let counts: HashMap<String, u64> = sessions["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["backend"].as_str().unwrap().to_string(), b["sessions"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts[&addresses[0].to_string()], 10);
    let rebalanced = admin_json(
        "POST",
        &format!("http://{admin}/api/v1/pools/app/sessions/rebalance"),
        r#"{"fraction":0.2}"#,
    )
    .await;
    assert_eq!(rebalanced["forgotten"], 12);
    let after = admin_json("GET", &format!("http://{admin}/api/v1/pools/app/sessions"), "").await;
    assert_eq!(after["sessions"], 48, "{after}");
    let bad = request(
        "POST",
        &format!("http://{admin}/api/v1/pools/app/sessions/rebalance"),
        &[("content-type", "application/json")],
        r#"{"fraction":1.5}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    let flushed = admin_json("DELETE", &format!("http://{admin}/api/v1/pools/app/sessions"), "").await;
    assert!(flushed["forgotten"].as_u64().unwrap() >= 48);
    let empty = admin_json("GET", &format!("http://{admin}/api/v1/pools/app/sessions"), "").await;
    assert_eq!(empty["sessions"], 0);

    // The access log says how each request was placed.
    let log = std::fs::read_to_string(lb.dir.path().join("access.log")).unwrap();
    let reasons: Vec<String> = log
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "affinity:hit").count(),
        30,
        "the 30 old sessions' second requests"
    );
    assert_eq!(reasons.iter().filter(|r| *r == "affinity:new, round_robin").count(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_keeps_a_client_on_one_backend() {
    let backends = [named_backend("a").await, named_backend("b").await, named_backend("c").await];
    let list: Vec<String> = backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.address)).collect();
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"l4\"\nlisten = \"{listen}\"\nprotocol = \"tcp\"\npool = \"app\"\n\n\
         [pools.app]\nbackends = [{}]\naffinity = {{ kind = \"client_ip\" }}\n",
        list.join(", ")
    );
    let _lb = Fulcrum::start(&config, listen);
    let mut served = Vec::new();
    for _ in 0..10 {
        // A new connection each time (the client's pool would reuse one).
        let answer = get_with(&format!("http://{listen}/"), &[("connection", "close")]).await;
        assert_eq!(answer.status, 200);
        served.push(answer.body);
    }
    // The harness's readiness probe was this client's first connection and
    // may still be placing it while the first request is placed; from the
    // second on, the session is bound.
    let after_first: HashSet<&String> = served[1..].iter().collect();
    assert_eq!(after_first.len(), 1, "round robin alone would have used all three: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_fails_no_request_and_bindings_are_written_again_after_it() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let backends = [named_backend("a").await, named_backend("b").await];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config =
        sticky_config(listen, admin, &addresses, "affinity = { kind = \"header\", store = \"redis\" }\n")
            + &format!("[redis]\nurl = \"{}\"\ntimeout = \"50ms\"\n", redis.url());
    let lb = Fulcrum::start(&config, admin);
    let load = SessionLoad::start(listen, 20);
    wait_for_sessions(admin, 20).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed_in_outage = load.failed.load(Ordering::SeqCst);
    let _redis = RedisServer::start_on(port);
    // Bindings confirmed before the outage are asked for again within
    // REVALIDATE_SECS; the restarted store has none and gets them back.
    let store = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut connection = store.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg("fulcrum:app:*").query_async(&mut connection).await.unwrap();
        if keys.len() == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of 20 bindings written back", keys.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = load.finish().await;
    assert_eq!(failed_in_outage, 0, "requests failed while redis was down");
    assert!(seen.iter().all(|(_, status, _)| *status == 200));
    for session in 0..20 {
        assert_eq!(stays(&seen, &format!("s{session}")).len(), 1, "s{session} moved during the outage");
    }
    let metrics = get_with(&format!("http://{admin}/metrics"), &[]).await.body;
    assert!(metric(&metrics, "lb_shared_store_errors_total") > 0.0, "{metrics}");
    eprintln!(
        "redis outage: {} GETs, 0 failed; store errors counted: {}",
        seen.len(),
        metric(&metrics, "lb_shared_store_errors_total")
    );
    let log = lb.log();
    assert_eq!(
        log.matches("shared store (redis) is unavailable").count(),
        1,
        "logged once per outage:\n{log}"
    );
}
