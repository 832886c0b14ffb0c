//! The autoscaling advisor end to end: a ramp from ~5% to 150% of a pool's
//! capacity through a real balancer. The webhook hears a scale-up before
//! utilization crosses 100% (the forecast looks ahead), never two within
//! the scale-up cooldown, and a scale-down once the load is gone and its
//! cooldown passed; the exec hook sees the same decisions in its
//! environment; the API and `/metrics` show the advice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use http_body_util::BodyExt;
use serde_json::Value;

/// Per-backend concurrency in the test's policy; 2 backends → 100% at 20 in flight.
const PER_BACKEND: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_is_advised_ahead_damped_by_cooldowns_and_sent_to_both_hooks() {
    let slow = || {
        backend(|_request| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("ok")
        })
    };
    let (a, b) = (slow().await, slow().await);

    // The webhook: every decision with the number of looping clients when it arrived.
    let clients_now = Arc::new(AtomicUsize::new(0));
    let heard: Arc<Mutex<Vec<(Instant, usize, Value)>>> = Arc::default();
    let webhook = {
        let (clients_now, heard) = (Arc::clone(&clients_now), Arc::clone(&heard));
        backend(move |request| {
            let (clients_now, heard) = (Arc::clone(&clients_now), Arc::clone(&heard));
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let decision: Value = serde_json::from_slice(&body).unwrap();
                heard.lock().unwrap().push((Instant::now(), clients_now.load(Ordering::SeqCst), decision));
                text("noted")
            }
        })
        .await
    };
    let dir = tempfile::tempdir().unwrap();
    let exec_log = dir.path().join("exec.log");
    let script = dir.path().join("scale.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$FULCRUM_POOL $FULCRUM_CURRENT $FULCRUM_DESIRED\" >> {}\n",
            exec_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (listen, admin) = (local(free_port()), local(free_port()));
    let autoscale = format!(
        "autoscale = {{ min = 2, max = 10, target_utilization = 0.7, per_backend_concurrency = {PER_BACKEND}, \
         interval = \"1s\", predict = \"3s\", scale_up_cooldown = \"3s\", scale_down_cooldown = \"6s\", \
         hook = {{ webhook = \"http://{}/scale\", exec = \"{}\" }} }}",
        webhook.address,
        script.display()
    );
    let config = http_config(listen, "least_connections", &[a.address, b.address], &autoscale)
        + &format!("[admin]\nlisten = \"{admin}\"\n");
    let fulcrum = Fulcrum::start(&config, admin);

    // Ramp: one more looping client every 400 ms, 1 → 30 (150% of 20), held 4 s, then none.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..30 {
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = get(&client, &format!("http://{listen}/")).await;
                assert_eq!(status, 200);
            }
        }));
        clients_now.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let load_gone = Instant::now();
    clients_now.store(0, Ordering::SeqCst);

    // Scale-downs follow once the load is gone, each after its cooldown,
    // until the advice is back to min (the forecast may still remember the
    // load at the first one).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !heard.lock().unwrap().iter().any(|(_, _, d)| d["direction"] == "down" && d["desired"] == 2) {
        assert!(Instant::now() < deadline, "no scale-down:\n{}", fulcrum.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heard = heard.lock().unwrap().clone();
    for (at, clients, decision) in &heard {
        println!(
            "+{:>5.1}s  {clients:>2} clients  {} {} -> {}  utilization {:.2} predicted {:.2}",
            at.duration_since(heard[0].0).as_secs_f64(),
            decision["direction"],
            decision["current"],
            decision["desired"],
            decision["utilization"].as_f64().unwrap(),
            decision["predicted_utilization"].as_f64().unwrap()
        );
    }
    let ups: Vec<&(Instant, usize, Value)> =
        heard.iter().filter(|(_, _, d)| d["direction"] == "up").collect();
    let first = ups.first().expect("a scale-up");
    assert!(first.1 < 2 * PER_BACKEND, "advised with {} clients, before 100% ({})", first.1, 2 * PER_BACKEND);
    assert!(first.2["utilization"].as_f64().unwrap() < 1.0, "{}", first.2);
    assert!(
        first.2["predicted_utilization"].as_f64().unwrap() > first.2["utilization"].as_f64().unwrap(),
        "the forecast saw the ramp coming: {}",
        first.2
    );
    for pair in ups.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0);
        assert!(gap >= Duration::from_millis(2800), "two scale-ups {gap:?} apart, within the 3 s cooldown");
    }
    let desired: Vec<u64> = ups.iter().map(|(_, _, d)| d["desired"].as_u64().unwrap()).collect();
    assert!(desired.windows(2).all(|w| w[1] > w[0]), "each scale-up asks for more: {desired:?}");
    assert!(*desired.last().unwrap() >= 4, "150% of 2 backends at 70% needs 5: {desired:?}");
    let first_down = heard.iter().position(|(_, _, d)| d["direction"] == "down").unwrap();
    assert!(heard[first_down].0 > load_gone, "no scale-down under load");
    for pair in heard[first_down - 1..].windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0);
        assert!(gap >= Duration::from_millis(5800), "a scale-down {gap:?} after the previous decision");
        assert_eq!(pair[1].2["direction"], "down", "only scale-downs once the load is gone");
    }

    // The exec hook ran for the same decisions, with them in its environment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let expected: Vec<String> =
        heard.iter().map(|(_, _, d)| format!("app {} {}", d["current"], d["desired"])).collect();
    loop {
        let lines: Vec<String> =
            std::fs::read_to_string(&exec_log).unwrap_or_default().lines().map(str::to_string).collect();
        if lines == expected {
            break;
        }
        assert!(Instant::now() < deadline, "exec hook saw {lines:?}, the webhook {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The API and the metric show the advice.
    let view = admin_json("GET", &format!("http://{admin}/api/v1/autoscale"), "").await;
    let pool = &view["pools"][0];
    assert_eq!(pool["pool"], "app");
    assert_eq!(pool["current"], 2);
    assert_eq!(pool["desired"], 2);
    assert_eq!(pool["last_decision"]["direction"], "down");
    let (_, metrics) = get(&client(), &format!("http://{admin}/metrics")).await;
    assert_eq!(metric(&metrics, "lb_autoscale_desired_backends{pool=\"app\"}"), 2.0);
    assert!(fulcrum.log().contains("autoscale advice changed"));
}
