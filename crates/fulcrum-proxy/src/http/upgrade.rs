//! Protocol switches (WebSocket, RFC 6455 §4): the handshake is forwarded
//! on a dedicated upstream connection, and once the backend answers 101
//! both upgraded streams are spliced together until either side closes.

use std::time::Duration;

use fulcrum_balance::InFlight;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::headers;
use crate::error::UpstreamError;
use crate::request_body::RequestBody;
use crate::upstream::{self, Target};

/// Forwards an upgrade request; on 101 splices client and backend.
pub async fn forward(
    mut request: Request<RequestBody>,
    target: &Target,
    response_timeout: Duration,
    in_flight: InFlight,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let client_side = hyper::upgrade::on(&mut request);
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
    let backend_side = hyper::upgrade::on(&mut response);
    let address = target.address;
    tokio::spawn(async move {
        let _in_flight = in_flight;
        match tokio::try_join!(client_side, backend_side) {
            Ok((client, backend)) => {
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(backend = %address, error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::warn!(backend = %address, error = %e, "protocol switch failed"),
        }
    });
    let (parts, body) = response.into_parts();
    drop(body);
    Ok(Response::from_parts(parts, ProxyBody::message("")))
}
