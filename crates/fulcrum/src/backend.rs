//! `fulcrum backend`: a small HTTP server to put behind the balancer when
//! trying setups, in the demo and in tests. Every path answers 200 with
//! the backend's name (after the configured latency, and 500 at the
//! configured error rate); `/health` answers `{"status":"ok"}`.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_balance::SplitMix64;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::cli::BackendArgs;

/// Runs `fulcrum backend` until Ctrl-C.
pub fn run(args: BackendArgs) -> ExitCode {
    let served = crate::run::runtime(0).and_then(|rt| {
        rt.block_on(async {
            let listener = TcpListener::bind(args.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
            tracing::info!(address = %args.listen, "test backend listening");
            tokio::select! {
                () = serve(listener, args) => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            Ok(())
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::runtime_failure(&e),
    }
}

/// Serves the test backend on `listener` forever.
pub async fn serve(listener: TcpListener, args: BackendArgs) {
    let name: Arc<str> = args.name.clone().unwrap_or_else(|| args.listen.to_string()).into();
    let args = Arc::new(args);
    let mut seed = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        seed += 1;
        let (name, args) = (Arc::clone(&name), Arc::clone(&args));
        tokio::spawn(async move {
            let rng = Arc::new(std::sync::Mutex::new(SplitMix64::new(seed)));
            let service = service_fn(move |request| {
                answer(request, Arc::clone(&name), Arc::clone(&args), Arc::clone(&rng))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    name: Arc<str>,
    args: Arc<BackendArgs>,
    rng: Arc<std::sync::Mutex<SplitMix64>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let health = request.uri().path() == "/health";
    // Read the whole request body (uploads) without keeping it.
    let mut body = request.into_body();
    while let Some(Ok(_)) = body.frame().await {}
    if health {
        return Ok(reply(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into(), &name));
    }
    let (jitter, fail) = {
        let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
        (args.jitter.mul_f64(rng.next_f64()), rng.next_f64() < args.error_rate)
    };
    let delay = args.latency + jitter;
    if delay > Duration::ZERO {
        tokio::time::sleep(delay).await;
    }
    Ok(if fail {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{name} failed (simulated error)\n"),
            &name,
        )
    } else {
        reply(StatusCode::OK, "text/plain", format!("{name}\n"), &name)
    })
}

fn reply(status: StatusCode, content_type: &'static str, body: String, name: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    if let Ok(value) = http::HeaderValue::from_str(name) {
        response.headers_mut().insert("x-backend", value);
    }
    response
}
