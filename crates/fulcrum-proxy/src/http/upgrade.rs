//! Protocol switches (WebSocket, RFC 6455 §4): the handshake is forwarded
//! on a dedicated upstream connection, and once the backend answers 101
//! both upgraded streams are spliced together until either side closes.
//!
//! The client's side is taken back from hyper by the connection's own
//! task once the 101 is written (hyper's "manual" upgrade: the same
//! hand-over that lets a keep-alive connection nap), so the request hands
//! the backend's side to the connection through its [`Switch`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use fulcrum_balance::InFlight;
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{BackendBody, ProxyBody};
use super::headers;
use crate::error::UpstreamError;
use crate::request_body::RequestBody;
use crate::upstream::{self, Stream, Target};
use crate::upstream_h1::{self, Deadline};
use crate::upstream_tls::Offer;

/// A client connection's pending protocol switch: the backend's side,
/// waiting for the connection to hand over the client's.
#[derive(Debug, Default)]
pub struct Switch(Mutex<Option<Box<Switched>>>);

/// A backend that switched protocols, waiting for its client.
#[derive(Debug)]
pub struct Switched {
    backend: Stream,
    /// What the backend sent after its 101, for the client.
    pending: BytesMut,
    address: SocketAddr,
    in_flight: InFlight,
}

impl Switch {
    /// The protocol switch a request left, if any.
    pub fn take(&self) -> Option<Box<Switched>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Switched {
    /// Splices `client` (with `early`, the bytes it sent after its request
    /// head) to the backend until either side closes.
    pub async fn splice<C: AsyncRead + AsyncWrite + Unpin>(self, mut client: C, early: &[u8]) {
        let Self { mut backend, pending, address, in_flight: _in_flight } = self;
        let spliced = async {
            backend.write_all(early).await?;
            client.write_all(&pending).await?;
            tokio::io::copy_bidirectional(&mut client, &mut backend).await
        };
        if let Err(e) = spliced.await {
            tracing::debug!(backend = %address, error = %e, "upgraded connection ended with an error");
        }
    }
}

/// Forwards an upgrade request on a connection of its own; on 101 leaves
/// the backend's side in `switch` for the client connection to splice.
pub async fn forward(
    mut request: Request<RequestBody>,
    target: &Target,
    response_timeout: Duration,
    in_flight: InFlight,
    switch: &Switch,
) -> Result<Response<ProxyBody>, UpstreamError> {
    // The client's side is spliced by its connection, not through this.
    request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let connection = upstream::connect(target, Offer::Http1).await?;
    let (mut parts, body) = request.into_parts();
    let deadline = Deadline::after(tokio::time::Instant::now(), response_timeout);
    let (head, connection) = connection
        .send(&mut parts, body, true, deadline)
        .await
        .map_err(|failed| UpstreamError::from_exchange(failed.error))?;
    if head.status != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = upstream_h1::Body::response(head, connection).into_parts();
        headers::prepare_response(&mut parts.headers, false);
        let body = BackendBody::Http1(body, target.clone());
        return Ok(Response::from_parts(parts, ProxyBody::upstream(body, in_flight)));
    }
    let mut response = Response::new(ProxyBody::message(""));
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    headers::prepare_response(response.headers_mut(), true);
    let (backend, pending) = connection.into_upgraded();
    *switch.0.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Box::new(Switched { backend, pending, address: target.address, in_flight }));
    Ok(response)
}
