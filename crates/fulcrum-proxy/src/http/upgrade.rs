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

use fulcrum_balance::InFlight;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::ProxyBody;
use super::headers;
use crate::error::UpstreamError;
use crate::request_body::RequestBody;
use crate::upstream::{self, Target};

/// A client connection's pending protocol switch: the backend's side,
/// waiting for the connection to hand over the client's.
#[derive(Debug, Default)]
pub struct Switch(Mutex<Option<Box<Switched>>>);

/// A backend that switched protocols, waiting for its client.
#[derive(Debug)]
pub struct Switched {
    backend: hyper::upgrade::OnUpgrade,
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
        let Self { backend, address, in_flight: _in_flight } = self;
        let spliced = async {
            let mut backend = TokioIo::new(backend.await.map_err(std::io::Error::other)?);
            backend.write_all(early).await?;
            tokio::io::copy_bidirectional(&mut client, &mut backend).await
        };
        if let Err(e) = spliced.await {
            tracing::debug!(backend = %address, error = %e, "upgraded connection ended with an error");
        }
    }
}

/// Forwards an upgrade request; on 101 leaves the backend's side in
/// `switch` for the client connection to splice.
pub async fn forward(
    mut request: Request<RequestBody>,
    target: &Target,
    response_timeout: Duration,
    in_flight: InFlight,
    switch: &Switch,
) -> Result<Response<ProxyBody>, UpstreamError> {
    // The client's side is spliced by its connection, not through this.
    request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let mut sender = upstream::connect(target, true).await?;
    let mut response = tokio::time::timeout(response_timeout, sender.send_request(request))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout)?
        .map_err(UpstreamError::from_send)?;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    headers::prepare_response(response.headers_mut(), switching);
    if !switching {
        let (parts, body) = response.into_parts();
        return Ok(Response::from_parts(parts, ProxyBody::upstream(body, None, in_flight)));
    }
    let backend = hyper::upgrade::on(&mut response);
    *switch.0.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Box::new(Switched { backend, address: target.address, in_flight }));
    let (parts, body) = response.into_parts();
    drop(body);
    Ok(Response::from_parts(parts, ProxyBody::message("")))
}
