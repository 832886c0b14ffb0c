//! The access log end to end: one JSON line per request with every field,
//! `X-Request-Id` generated when absent and passed on, `traceparent` passed
//! through untouched.

use std::time::{Duration, Instant};

use crate::common::*;
use http::Request;
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_with_its_id_timings_and_why_that_backend() {
    let echo = backend(|request: Request<hyper::body::Incoming>| async move {
        let header =
            |name: &str| request.headers().get(name).map_or("-", |v| v.to_str().unwrap()).to_string();
        text(format!("{} {}", header("x-request-id"), header("traceparent")))
    })
    .await;
    let dead = local(free_port());
    let (listen, failing) = (local(free_port()), local(free_port()));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let config = format!(
        "[log]\naccess = \"access.log\"\nformat = \"json\"\n\
         [[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"app\"\n\
         [[listeners]]\nname = \"broken\"\nlisten = \"{failing}\"\npool = \"dead\"\n\
         [pools.app]\nalgorithm = \"consistent_hash\"\nhash_key = \"header:x-user\"\nbackends = [{{ address = \"{}\" }}]\n\
         [pools.dead]\nbackends = [{{ address = \"{dead}\" }}]\n",
        echo.address
    );
    let _lb = Fulcrum::start_in(dir, &config, listen);
    let client = client();

    let (_, seen) = get(&client, &format!("http://{listen}/first?x=1")).await;
    let (generated, traceparent) = seen.split_once(' ').unwrap();
    assert_eq!(generated.len(), 32, "a generated request id reaches the backend: {seen}");
    assert_eq!(traceparent, "-");

    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let request = Request::get(format!("http://{listen}/second"))
        .header("x-request-id", "client-chosen-id")
        .header("traceparent", trace)
        .header("user-agent", "fulcrum-test")
        .body(full(""))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let seen = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(seen, format!("client-chosen-id {trace}"));

    assert_eq!(get(&client, &format!("http://{failing}/gone")).await.0, 502);

    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "only {} access lines:\n{text}", lines.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = &lines[0];
    assert_eq!(first["request_id"], generated);
    assert_eq!(
        (first["method"].as_str(), first["path"].as_str(), first["status"].as_u64()),
        (Some("GET"), Some("/first?x=1"), Some(200))
    );
    assert_eq!(first["bytes"].as_u64(), Some(34), "the body was the 32-digit id, a space and `-`");
    assert_eq!(first["pool"], "app");
    assert_eq!(first["backend"], echo.address.to_string());
    assert_eq!(first["reason"], "consistent_hash on header:x-user");
    assert_eq!(first["client"], "127.0.0.1");
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert_eq!(lines[1]["request_id"], "client-chosen-id");
    assert_eq!(lines[1]["user_agent"], "fulcrum-test");
    let failed = &lines[2];
    assert_eq!(
        (failed["status"].as_u64(), failed["backend"].as_str()),
        (Some(502), Some(dead.to_string().as_str()))
    );
    assert_eq!(failed["reason"], "round_robin");
    assert_eq!(failed["bytes"].as_u64(), Some("the backend could not be reached\n".len() as u64));
}
