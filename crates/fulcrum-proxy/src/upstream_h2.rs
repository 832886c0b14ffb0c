//! HTTP/2 to backends (`protocol = "h2c"`, or `"h2"` over TLS with ALPN):
//! requests are multiplexed on one shared connection per backend and
//! worker thread (a few when requests race to open the first), as Envoy's
//! and pingora's HTTP/2 upstream pools do. The backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is respected — a request past it
//! waits for a stream — and a closed connection is replaced on the next
//! request. Trailers (gRPC's `grpc-status`) pass through as body frames.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::error::UpstreamError;
use crate::request_body::RequestBody;
use crate::upstream::{open, Target};

/// A backend's shared connection on this thread, opened once by the first
/// request that needs it while the others racing it wait.
type Shared = Arc<tokio::sync::OnceCell<SendRequest<RequestBody>>>;

thread_local! {
    static SHARED: RefCell<HashMap<u64, Shared>> = RefCell::default();
}

/// Sends `request` on the backend's shared connection (opening it when
/// there is none or it closed) and waits up to `limit` for the response head.
pub async fn send(
    target: &Target,
    request: http::Request<RequestBody>,
    limit: Duration,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let shared = SHARED.with(|s| {
        let mut s = s.borrow_mut();
        let entry = s.entry(target.backend_key).or_default();
        if entry.get().is_some_and(SendRequest::is_closed) {
            *entry = Shared::default();
        }
        Arc::clone(entry)
    });
    let mut sender = shared.get_or_try_init(|| connect(target)).await?.clone();
    let sent = async {
        sender.ready().await.map_err(UpstreamError::Send)?;
        sender.send_request(request).await.map_err(UpstreamError::from_send)
    };
    tokio::time::timeout(limit, sent).await.map_err(|_| UpstreamError::ResponseTimeout)?
}

async fn connect(target: &Target) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let address = target.address;
    let stream = open(target).await?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(backend = %address, error = %e, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A request as an HTTP/2 backend takes it: version 2 and an absolute URI
/// (its authority from `Host`, else the backend's address).
pub fn to_h2(parts: &mut http::request::Parts, backend: std::net::SocketAddr, tls: bool) {
    parts.version = http::Version::HTTP_2;
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| backend.to_string(), str::to_string);
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let scheme = if tls { "https" } else { "http" };
    if let Ok(uri) = format!("{scheme}://{authority}{path}").parse() {
        parts.uri = uri;
        // `:authority` carries it now.
        parts.headers.remove(http::header::HOST);
    }
}
