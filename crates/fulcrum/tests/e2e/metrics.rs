//! `/metrics`: the README's metric names and labels with real values, valid for
//! `promtool check metrics` (CI installs Debian's `prometheus` package).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

async fn scrape(admin: std::net::SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut request = Request::get(format!("http://{admin}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = client().request(request.body(full("")).unwrap()).await.unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (
        content_type,
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_specs_names_and_real_values_and_pass_promtool() {
    let ok = named_backend("ok").await;
    let failing = backend(|_request| async move {
        let mut response = text("no");
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = http_config(listen, "round_robin", &[ok.address, failing.address], "")
        + &format!("[admin]\nlisten = \"{admin}\"\n");
    let _lb = Fulcrum::start(&config, admin);
    let client = client();
    for _ in 0..10 {
        get(&client, &format!("http://{listen}/")).await;
    }
    let (content_type, text) = scrape(admin, None).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let line = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
    };
    let ok_labels = format!("pool=\"app\",backend=\"{}\"", ok.address);
    let bad_labels = format!("pool=\"app\",backend=\"{}\"", failing.address);
    assert!(line(&format!("lb_requests_total{{{ok_labels},code=\"200\"}}")).ends_with(" 5"));
    assert!(line(&format!("lb_requests_total{{{bad_labels},code=\"503\"}}")).ends_with(" 5"));
    assert!(line(&format!("lb_response_time_seconds_count{{{ok_labels}}}")).ends_with(" 5"));
    assert!(line(&format!("lb_response_time_seconds_bucket{{le=\"0.0005\",{ok_labels}}}")).len() > 10);
    assert!(line(&format!("lb_error_rate{{{bad_labels}}}")).ends_with(" 1.0"));
    assert!(line(&format!("lb_error_rate{{{ok_labels}}}")).ends_with(" 0.0"));
    assert!(line(&format!("lb_active_connections{{{ok_labels}}}")).ends_with(" 0.0"));
    assert!(line(&format!("lb_backend_health{{{ok_labels}}}")).ends_with(" 1.0"));
    assert!(line(&format!("lb_circuit_breaker_state{{{ok_labels}}}")).ends_with(" 0.0"));
    assert!(line("lb_retries_total{pool=\"app\"}").ends_with(" 0"));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed: apt-get install -y prometheus");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The failing backend is flagged, with its figure, by the recommendations.
    let response = client
        .request(Request::get(format!("http://{admin}/api/v1/recommendations")).body(full("")).unwrap())
        .await
        .unwrap();
    let advice: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let advice = advice["recommendations"].as_array().unwrap();
    assert!(
        advice.iter().any(|r| r["kind"] == "high_error_rate"
            && r["backend"] == failing.address.to_string()
            && r["figure"] == "100.0% of requests failed in the last minute"),
        "{advice:?}"
    );

    let (content_type, openmetrics) = scrape(admin, Some("application/openmetrics-text;version=1.0.0")).await;
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(openmetrics.ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_failures_still_count_against_their_backend() {
    let ok = named_backend("ok").await;
    let failing = backend(|_request| async move {
        let mut response = text("no");
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
    .await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = http_config(
        listen,
        "round_robin",
        &[ok.address, failing.address],
        "retries = { attempts = 1, on = [\"5xx\"], backoff = \"1ms\" }",
    ) + &format!("[admin]\nlisten = \"{admin}\"\n");
    let _lb = Fulcrum::start(&config, admin);
    let client = client();
    for _ in 0..10 {
        assert_eq!(
            get(&client, &format!("http://{listen}/")).await,
            (200, "ok".to_string()),
            "retried on the good backend"
        );
    }
    let response =
        client.request(Request::get(format!("http://{admin}/stats")).body(full("")).unwrap()).await.unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let failing_stats = stats["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == failing.address.to_string())
        .unwrap()
        .clone();
    let attempts = failing_stats["requests_total"].as_u64().unwrap();
    assert_eq!(attempts, failing.hits() as u64);
    assert!(attempts >= 4, "round robin sent the failing backend about half the first attempts: {attempts}");
    assert_eq!(
        failing_stats["errors_total"].as_u64(),
        Some(attempts),
        "every failed attempt counts, retried or not"
    );
    let (_, text) = scrape(admin, None).await;
    assert!(text.contains("lb_retries_total{pool=\"app\"} "), "{text}");
    assert!(!text.contains("lb_retries_total{pool=\"app\"} 0"), "retries were made");
}
