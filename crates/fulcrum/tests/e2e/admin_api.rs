//! Steering a running balancer through the admin API: adding a backend
//! to a live pool, re-weighing, draining, removing, reloading — and none
//! of it lost when the process is SIGKILLed and restarted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use http::{Method, Request};
use http_body_util::BodyExt;

async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let response = client().request(request.body(full(body.to_string())).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr], token: &str) -> String {
    http_config(listen, "round_robin", backends, "")
        + &format!("[admin]\nlisten = \"{admin}\"\ntoken = \"{token}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_added_changed_and_removed_live_and_survive_a_sigkill() {
    let [a, b] = [named_backend("a").await, named_backend("b").await];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let text = config(listen, admin, &[a.address], "s3cret");
    let lb = Fulcrum::start(&text, admin);
    let token = Some("s3cret");
    let client = client();

    // Auth and errors are JSON with a status.
    let (status, body) = call(admin, Method::GET, "/api/v1/pools", "", None).await;
    assert_eq!((status, body["error"].as_str().is_some()), (401, true));
    assert_eq!(call(admin, Method::GET, "/health", "", None).await.0, 200);
    let (status, body) =
        call(admin, Method::POST, "/api/v1/pools/app/backends", "{\"address\": \"nope\"}", token).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not an IP:port"), "{body}");
    assert_eq!(
        call(
            admin,
            Method::POST,
            "/api/v1/pools/missing/backends",
            &format!("{{\"address\": \"{}\"}}", b.address),
            token
        )
        .await
        .0,
        404
    );
    assert_eq!(call(admin, Method::POST, "/api/v1/pools/app/backends", "{not json", token).await.0, 400);

    // Add b to the running pool: it takes traffic at once.
    let (status, added) = call(
        admin,
        Method::POST,
        "/api/v1/pools/app/backends",
        &format!("{{\"address\": \"{}\", \"weight\": 2}}", b.address),
        token,
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["id"], b.address.to_string());
    assert_eq!(added["weight"], 2);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&client, &format!("http://{listen}/")).await.1);
    }
    assert!(seen.contains(&"b".to_string()), "{seen:?}");
    assert_eq!(
        call(
            admin,
            Method::POST,
            "/api/v1/pools/app/backends",
            &format!("{{\"address\": \"{}\"}}", b.address),
            token
        )
        .await
        .0,
        409
    );

    // Put a in maintenance: everything goes to b.
    let id = a.address.to_string();
    let (status, changed) = call(
        admin,
        Method::PATCH,
        &format!("/api/v1/pools/app/backends/{id}"),
        "{\"state\": \"maintenance\", \"weight\": 3}",
        token,
    )
    .await;
    assert_eq!(
        (status, changed["state"].as_str(), changed["weight"].as_u64()),
        (200, Some("maintenance"), Some(3))
    );
    for _ in 0..4 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.1, "b");
    }
    assert_eq!(
        call(
            admin,
            Method::PATCH,
            &format!("/api/v1/pools/app/backends/{id}"),
            "{\"state\": \"sleeping\"}",
            token
        )
        .await
        .0,
        400
    );

    // SIGKILL and restart: the added backend and a's state are still there.
    let mut lb = lb;
    lb.child.kill().unwrap();
    lb.child.wait().unwrap();
    let overlay = std::fs::read_to_string(lb.dir.path().join("fulcrum.toml.runtime.json")).unwrap();
    assert!(overlay.contains(&b.address.to_string()), "{overlay}");
    let dir = std::mem::replace(&mut lb.dir, tempfile::tempdir().unwrap());
    let lb = Fulcrum::start_in(dir, &text, admin);
    let (_, pools) = call(admin, Method::GET, "/api/v1/pools", "", token).await;
    let backends = pools["pools"][0]["backends"].as_array().unwrap().clone();
    let state_of = |addr: SocketAddr| {
        backends
            .iter()
            .find(|x| x["id"] == addr.to_string())
            .map(|x| (x["state"].clone(), x["weight"].clone()))
    };
    assert_eq!(state_of(a.address), Some((serde_json::json!("maintenance"), serde_json::json!(3))));
    assert_eq!(state_of(b.address), Some((serde_json::json!("active"), serde_json::json!(2))));

    // Reactivate a, then remove b: drained, then gone (also after a reload).
    call(admin, Method::PATCH, &format!("/api/v1/pools/app/backends/{id}"), "{\"state\": \"active\"}", token)
        .await;
    let (status, removing) =
        call(admin, Method::DELETE, &format!("/api/v1/pools/app/backends/{}", b.address), "", token).await;
    assert_eq!((status, removing["state"].as_str()), (202, Some("draining")));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, pools) = call(admin, Method::GET, "/api/v1/pools", "", token).await;
        if pools["pools"][0]["backends"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the drained backend was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, reloaded) = call(admin, Method::POST, "/api/v1/reload", "", token).await;
    assert_eq!(status, 200, "{reloaded}");
    for _ in 0..4 {
        assert_eq!(get(&client, &format!("http://{listen}/")).await.1, "a");
    }
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_api_reloads_under_load_fail_no_request_and_a_broken_file_is_refused() {
    let [a, b] = [named_backend("a").await, named_backend("b").await];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let one = config(listen, admin, &[a.address], "t");
    let two = http_config(listen, "least_connections", &[a.address, b.address], "")
        + &format!("[admin]\nlisten = \"{admin}\"\ntoken = \"t\"\n");
    let lb = Fulcrum::start(&one, admin);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let client = client();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match client
                        .request(Request::get(format!("http://{listen}/")).body(full("")).unwrap())
                        .await
                    {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    for round in 0..20 {
        lb.write_config(if round % 2 == 0 { &two } else { &one });
        let (status, body) = call(admin, Method::POST, "/api/v1/reload", "", Some("t")).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body["changes"].as_array().unwrap().is_empty(), "round {round}: {body}");
        // Let traffic flow on each config before the next reload.
        let served = ok.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ok.load(Ordering::SeqCst) < served + 20 {
            assert!(Instant::now() < deadline, "no traffic after reload {round}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    lb.write_config(&one.replace("round_robin", "fastest"));
    let (status, body) = call(admin, Method::POST, "/api/v1/reload", "", Some("t")).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0].as_str().unwrap().contains("unknown algorithm `fastest`"), "{body}");
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("20 API reloads: {ok} requests ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 100);
}

fn ctl(admin: SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["ctl", "--admin", &format!("http://{admin}"), "--token", token])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_steers_the_balancer_with_tables_and_json() {
    let [a, b] = [named_backend("a").await, named_backend("b").await];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let _lb = Fulcrum::start(&config(listen, admin, &[a.address], "tok"), admin);
    let (code, out, _) = ctl(admin, "tok", &["pools"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("POOL") && out.contains("app   round_robin  1         1"), "{out}");

    let (code, out, err) = ctl(admin, "tok", &["add", "app", &b.address.to_string(), "--weight", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{}: weight 3, active\n", b.address));
    let id = b.address.to_string();
    assert_eq!(ctl(admin, "tok", &["weight", "app", &id, "5"]).1, format!("{id}: weight 5, active\n"));
    assert_eq!(ctl(admin, "tok", &["drain", "app", &id]).1, format!("{id}: weight 5, draining\n"));
    let (_, table, _) = ctl(admin, "tok", &["backends", "app"]);
    assert!(table.lines().any(|l| l.starts_with(&id) && l.contains("draining")), "{table}");
    assert_eq!(ctl(admin, "tok", &["enable", "app", &id]).1, format!("{id}: weight 5, active\n"));

    let (_, json, _) = ctl(admin, "tok", &["--json", "backends", "app"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["pools"][0]["backends"].as_array().unwrap().len(), 2);
    assert_eq!(ctl(admin, "tok", &["reload"]).1, "reloaded: nothing changed\n");

    let (code, _, err) = ctl(admin, "tok", &["add", "nope", "127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(err.contains("404") && err.contains("no pool named `nope`"), "{err}");
    assert_eq!(ctl(admin, "wrong", &["pools"]).0, 2);
    let (code, _, err) = ctl(local(free_port()), "tok", &["pools"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}
