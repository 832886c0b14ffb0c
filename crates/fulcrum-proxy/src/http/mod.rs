//! The L7 side: serving HTTP/1.1 and HTTP/2 client connections (clear or
//! TLS) and forwarding each request to a backend.

mod body;
mod forward;
mod headers;
mod request_body;
mod respond;
mod upgrade;

pub use body::ProxyBody;
pub use forward::Connection;
pub use headers::ClientInfo;
pub use request_body::RequestBody;

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// The connection builder every HTTP listener shares: HTTP/1.1 with
/// keep-alive, and HTTP/2 detected by its preface (h2c prior knowledge,
/// or ALPN `h2` under TLS).
pub fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true).half_close(false).writev(false);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one client connection until it closes; on `shutdown` it stops
/// taking new requests and lets the ones in flight finish.
pub async fn serve<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    connection: Arc<Connection>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| forward::handle(request, Arc::clone(&connection)));
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = shutdown.cancelled() => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
