//! The dashboard in a real browser (Debian's chromium + chromium-driver,
//! driven over WebDriver): the backends appear, a click on "drain" changes
//! the backend's state through the API, and a screenshot is saved.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use fantoccini::{ClientBuilder, Locator};
use http::Request;
use http_body_util::BodyExt;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn backend_state(admin: std::net::SocketAddr, token: &str, id: &str) -> String {
    let request = Request::get(format!("http://{admin}/api/v1/pools"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let pools: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let backends = pools["pools"][0]["backends"].as_array().unwrap();
    backends.iter().find(|b| b["id"] == id).unwrap()["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_backends_and_drains_one_with_a_click() {
    let [a, b] = [named_backend("a").await, named_backend("b").await];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let autoscale = "autoscale = { min = 2, max = 6, per_backend_concurrency = 10, interval = \"1s\" }";
    let config = http_config(listen, "round_robin", &[a.address, b.address], autoscale)
        + &format!("[admin]\nlisten = \"{admin}\"\ntoken = \"dash\"\n");
    let _lb = Fulcrum::start(&config, admin);
    let client = client();
    for _ in 0..10 {
        get(&client, &format!("http://{listen}/")).await;
    }

    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Driver)
        .expect("chromedriver is needed: apt-get install -y chromium chromium-driver");
    wait_for_port(local(port));
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1500,900", format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    // ChromeDriver speaks plain HTTP on loopback: no TLS stack needed.
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromium starts under chromedriver");

    browser.goto(&format!("http://{admin}/?token=dash")).await.unwrap();
    let id = a.address.to_string();
    let row = Locator::Css("tr[data-backend]");
    browser.wait().at_most(Duration::from_secs(10)).for_element(row).await.unwrap();
    let rows = browser.find_all(row).await.unwrap();
    assert_eq!(rows.len(), 2, "both backends are listed");
    let first = rows[0].text().await.unwrap();
    assert!(first.contains(&id) && first.contains("active") && first.contains("unknown"), "{first}");

    // The autoscaling advisor's desired against current backends, with its reasoning once evaluated.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let advice = browser.find(Locator::Css("p.autoscale")).await.unwrap().text().await.unwrap();
        if advice.contains("backends fit") {
            assert!(advice.contains("desired 2 backends, current 2 (2..6)"), "{advice}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no evaluation shown: {advice}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let drain = format!("button[data-action='drain'][data-id='{id}']");
    browser.find(Locator::Css(&drain)).await.unwrap().click().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while backend_state(admin, "dash", &id).await != "draining" {
        assert!(std::time::Instant::now() < deadline, "the click did not drain the backend");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The page shows it on its next refresh.
    let shown = format!("tr[data-backend='{id}'] .warn");
    browser.wait().at_most(Duration::from_secs(5)).for_element(Locator::Css(&shown)).await.unwrap();

    let screenshot = browser.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &screenshot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());
    assert!(screenshot.starts_with(b"\x89PNG"));
    browser.close().await.unwrap();
    drop(driver);
}
