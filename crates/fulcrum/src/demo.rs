//! `fulcrum demo`: the newcomer's first command. Starts four built-in
//! backends of different speeds (one flaky), a balancer on 127.0.0.1:8080
//! over them (p2c with health checks, outlier detection and retries) and
//! the dashboard on 127.0.0.1:9090, and sends it a light stream of requests
//! (20 per second, loopback only) so the dashboard has something to explain.
//! Runs until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cli::BackendArgs;

const BALANCER: &str = "127.0.0.1:8080";
const ADMIN: &str = "127.0.0.1:9090";

struct DemoBackend {
    name: &'static str,
    listen: &'static str,
    latency_ms: u64,
    error_rate: f64,
}

const BACKENDS: [DemoBackend; 4] = [
    DemoBackend { name: "fast", listen: "127.0.0.1:9001", latency_ms: 5, error_rate: 0.0 },
    DemoBackend { name: "medium", listen: "127.0.0.1:9002", latency_ms: 25, error_rate: 0.0 },
    DemoBackend { name: "slow", listen: "127.0.0.1:9003", latency_ms: 120, error_rate: 0.0 },
    DemoBackend { name: "flaky", listen: "127.0.0.1:9004", latency_ms: 10, error_rate: 0.2 },
];

/// Sends the balancer a request every 50 ms, for as long as the demo runs.
async fn steady_traffic() {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let client = client.clone();
        tokio::spawn(async move {
            let uri = format!("http://{BALANCER}/").parse().expect("a valid demo URI");
            if let Ok(response) = client.get(uri).await {
                // Read the body so the connection is reused.
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
        });
    }
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub fn run() -> ExitCode {
    match crate::run::runtime(0).and_then(|rt| rt.block_on(demo())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::runtime_failure(&e),
    }
}

fn config_text() -> String {
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|b| format!("  {{ address = \"{}\", zone = \"{}\" }},", b.listen, b.name))
        .collect();
    format!(
        "[server]\ngraceful_timeout = \"5s\"\n\n[admin]\nlisten = \"{ADMIN}\"\n\n[[listeners]]\nname = \"demo\"\n\
         listen = \"{BALANCER}\"\npool = \"demo\"\n\n[pools.demo]\nalgorithm = \"p2c\"\n\
         health_check = {{ path = \"/health\", interval = \"1s\" }}\n\
         passive_health = {{ consecutive_5xx = 3, ejection_time = \"10s\", max_ejection_percent = 25 }}\n\
         retries = {{ attempts = 1, on = [\"5xx\", \"gateway-error\"] }}\nbackends = [\n{}\n]\n",
        backends.join("\n")
    )
}

async fn demo() -> anyhow::Result<()> {
    for backend in &BACKENDS {
        let address = backend.listen.parse().expect("demo addresses are valid");
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!("demo backend `{}` cannot listen on {address} (is something using it?)", backend.name)
        })?;
        let args = BackendArgs {
            listen: address,
            name: Some(backend.name.to_string()),
            latency: Duration::from_millis(backend.latency_ms),
            jitter: Duration::from_millis(backend.latency_ms / 2),
            error_rate: backend.error_rate,
        };
        tokio::spawn(crate::backend::serve(listener, args));
    }
    let source = fulcrum_config::Source::inline(&config_text(), "demo");
    let overlay = fulcrum_config::Overlay::default();
    let (config, _) =
        source.config(&overlay).map_err(|e| anyhow::anyhow!("the demo config is invalid: {e}"))?;
    let graceful_timeout = config.server.graceful_timeout;
    let (_controller, proxy, admin) = crate::run::start(None, source, overlay, config).await?;

    println!("Fulcrum demo is running.\n");
    println!("  balancer   http://{BALANCER}/      (p2c over {} backends, health checks, outlier detection, retries)", BACKENDS.len());
    println!("  dashboard  http://{ADMIN}/");
    println!("  stats      http://{ADMIN}/stats\n");
    for b in &BACKENDS {
        let flaky = if b.error_rate > 0.0 {
            format!(", fails {:.0}% of requests", b.error_rate * 100.0)
        } else {
            String::new()
        };
        println!("  backend {:<7} {}  ~{} ms{flaky}", b.name, b.listen, b.latency_ms);
    }
    println!("\nThe demo sends the balancer 20 requests/s: open the dashboard to watch p2c keep");
    println!("traffic off the slow backend and outlier detection eject the flaky one now and then.");
    println!("\nTry:  for i in $(seq 8); do curl -s http://{BALANCER}/; done");
    println!("      fulcrum simulate        (the same algorithms, compared in virtual time)");
    println!("Stop: Ctrl-C\n");
    tokio::spawn(steady_traffic());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
    proxy.shutdown(graceful_timeout).await;
    admin.stop.cancel();
    Ok(())
}
