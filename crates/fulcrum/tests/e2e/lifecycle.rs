//! Operating the process: SIGHUP reloads under load without a failed
//! request, a broken config is refused and the running one stays, and
//! SIGTERM lets a slow in-flight request finish before exiting 0.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_under_load_without_failed_requests() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let listen = local(free_port());
    let only_a = http_config(listen, "round_robin", &[a.address], "");
    let both = http_config(listen, "least_connections", &[a.address, b.address], "");
    let lb = Fulcrum::start(&only_a, listen);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let request = http::Request::get(format!("http://{listen}/")).body(full("")).unwrap();
                match client.request(request).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for round in 0..10 {
        lb.write_config(if round % 2 == 0 { &both } else { &only_a });
        lb.signal("HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The last write left only `a`: b must stop receiving once it applies.
    lb.write_config(&both);
    lb.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = b.hits();
    while b.hits() < before + 10 {
        assert!(Instant::now() < deadline, "backend b gets no traffic after the reload that added it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed during reloads");
    assert!(ok.load(Ordering::SeqCst) > 100, "too little load to mean anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_running_config() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let listen = local(free_port());
    let lb = Fulcrum::start(&http_config(listen, "round_robin", &[a.address], ""), listen);
    let broken =
        http_config(listen, "round_robin", &[a.address, b.address], "").replace("round_robin", "fastest");
    lb.write_config(&broken);
    lb.signal("HUP");
    lb.wait_for_log("reload refused, the running config stays");
    assert!(lb.log().contains("pools.app.algorithm: unknown algorithm `fastest`"), "{}", lb.log());
    // Had the reload applied, b would take every other request; all must
    // still go to a, and a later valid reload must still work.
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await, (200, "a".to_string()));
    }
    lb.write_config(&http_config(listen, "round_robin", &[b.address], ""));
    lb.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&client, &format!("http://{listen}/")).await.1 != "b" {
        assert!(Instant::now() < deadline, "a valid reload after a refused one did not apply");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_opens_new_listeners_and_closes_removed_ones() {
    let a = named_backend("a").await;
    let (first, second) = (local(free_port()), local(free_port()));
    let lb = Fulcrum::start(&http_config(first, "round_robin", &[a.address], ""), first);
    lb.write_config(&http_config(second, "round_robin", &[a.address], ""));
    lb.signal("HUP");
    wait_for_port(second);
    assert_eq!(get(&client(), &format!("http://{second}/")).await, (200, "a".to_string()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(first).is_ok() {
        assert!(Instant::now() < deadline, "the removed listener still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let slow = backend(|_request| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        text("finished")
    })
    .await;
    let listen = local(free_port());
    let mut lb = Fulcrum::start(&http_config(listen, "round_robin", &[slow.address], ""), listen);
    let in_flight = tokio::spawn(async move { get(&client(), &format!("http://{listen}/")).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.hits() == 0 {
        assert!(Instant::now() < deadline, "the slow request never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lb.signal("TERM");
    assert_eq!(in_flight.await.unwrap(), (200, "finished".to_string()));
    assert_eq!(lb.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(std::net::TcpStream::connect(listen).is_err(), "still accepting after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_the_file_changes() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let (listen, admin) = (local(free_port()), local(free_port()));
    let watched = |backend: std::net::SocketAddr| {
        http_config(listen, "round_robin", &[backend], "")
            + &format!("[admin]\nlisten = \"{admin}\"\nwatch_config = true\n")
    };
    let lb = Fulcrum::start(&watched(a.address), admin);
    assert_eq!(get(&client(), &format!("http://{listen}/")).await.1, "a");
    lb.write_config(&watched(b.address));
    lb.wait_for_log("config file changed: reloading");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&client(), &format!("http://{listen}/")).await.1 != "b" {
        assert!(Instant::now() < deadline, "the edited file was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
