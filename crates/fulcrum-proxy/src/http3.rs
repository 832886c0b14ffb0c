//! HTTP/3 (RFC 9114) on an https listener's UDP port (`http3 = true`):
//! QUIC by `quinn`, HTTP/3 framing by `h3`, and every request then takes
//! the same path as an HTTP/1.1 or HTTP/2 one ([`crate::http::handle_quic`]):
//! routes, limits, pools, retries, the access log.
//!
//! A connection is admitted like a TCP one (allow/deny, per-address caps)
//! and handshakes with the listener's current certificates and client
//! certificate policy, read at each handshake so a reload applies to new
//! connections. The endpoint is the listener's: it stops when the listener
//! does, and a draining proxy ends each connection with a GOAWAY once
//! its requests in flight have been answered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::{self as l7, ClientInfo, Connection};
use crate::listener::Acceptor;
use crate::proxy_protocol::Endpoints;
use crate::request_body::BodyError;

/// How long a client may take to finish its QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The QUIC side of an https listener's TLS: the same certificates and
/// client policy, TLS 1.3 only (as QUIC requires), ALPN `h3`, and the
/// connection idle timeout of the listener's `keepalive_timeout`.
pub fn server_config(
    tls: &Arc<rustls::ServerConfig>,
    limits: &fulcrum_config::Limits,
) -> anyhow::Result<Arc<quinn::ServerConfig>> {
    let mut tls = (**tls).clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow::anyhow!("the certificates cannot serve QUIC: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        limits
            .keepalive_timeout
            .try_into()
            .map_err(|_| anyhow::anyhow!("keepalive_timeout is too long for QUIC"))?,
    ));
    config.transport_config(Arc::new(transport));
    Ok(Arc::new(config))
}

/// The `Alt-Svc` value that points h1 and h2 clients at HTTP/3 on `port`.
pub fn alt_svc(port: u16) -> HeaderValue {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).expect("a valid header value")
}

/// Serves HTTP/3 on `socket` until the listener stops.
pub async fn serve(socket: std::net::UdpSocket, config: Arc<quinn::ServerConfig>, acceptor: Acceptor) {
    let runtime = Arc::new(quinn::TokioRuntime);
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some((*config).clone()),
        socket,
        runtime,
    ) {
        Ok(endpoint) => endpoint,
        Err(e) => return tracing::error!(error = %e, "cannot serve HTTP/3"),
    };
    loop {
        let incoming = tokio::select! {
            () = acceptor.stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let peer = incoming.remote_address();
        let Some(entry) = crate::listener::admit(&acceptor, peer) else {
            incoming.refuse();
            continue;
        };
        let Some(config) = acceptor.state.load().h3.clone() else {
            incoming.refuse();
            continue;
        };
        let connecting = match incoming.accept_with(config) {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "QUIC connection refused");
                continue;
            }
        };
        let local = endpoint.local_addr().unwrap_or(peer);
        let acceptor = acceptor.clone();
        acceptor.tracker.clone().spawn(async move {
            let _entry = entry;
            let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(e)) => return tracing::debug!(client = %peer, error = %e, "QUIC handshake failed"),
                Err(_) => return tracing::debug!(client = %peer, "QUIC handshake timed out"),
            };
            serve_connection(connection, Endpoints { client: peer, local }, acceptor).await;
        });
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"listener stopped");
}

/// Serves one QUIC connection's requests until it closes or the proxy drains.
async fn serve_connection(quic: quinn::Connection, endpoints: Endpoints, acceptor: Acceptor) {
    let peer = endpoints.client;
    let (limits, client_certificates) = {
        let state = acceptor.state.load();
        (state.limits, state.client_certificates)
    };
    let cert_subject = client_certificates.then(|| client_subject(&quic));
    let connection = Arc::new(Connection {
        state: Arc::clone(&acceptor.state),
        client: ClientInfo {
            ip: ClientInfo::ip_value(peer.ip()),
            proto: "https",
            endpoints,
            cert_subject,
            authority_host: Default::default(),
        },
        activity: Arc::new(l7::Activity::new(acceptor.drain.child_token(), &limits)),
        gate: Arc::clone(&acceptor.gate),
        switch: Default::default(),
    });
    let mut h3 = match h3::server::builder()
        .max_field_section_size(limits.max_header_bytes as u64)
        .build::<_, Bytes>(h3_quinn::Connection::new(quic))
        .await
    {
        Ok(h3) => h3,
        Err(e) => return tracing::debug!(client = %peer, error = %e, "HTTP/3 connection setup failed"),
    };
    let close = connection.activity.close_requested();
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let resolver = tokio::select! {
            () = close.cancelled() => {
                // GOAWAY: no new requests; those in flight are answered.
                let _ = h3.shutdown(0).await;
                break;
            }
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => resolver,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = %peer, error = %e, "HTTP/3 connection ended with an error");
                    break;
                }
            },
        };
        let connection = Arc::clone(&connection);
        requests.spawn(async move {
            match resolver.resolve_request().await {
                Ok((request, stream)) => serve_request(request, stream, connection).await,
                Err(e) => tracing::debug!(error = %e, "HTTP/3 request refused"),
            }
        });
        // Reap finished requests so the set holds only those in flight.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// One request: its body streamed to the backend, the response streamed back.
async fn serve_request(request: http::Request<()>, stream: Stream, connection: Arc<Connection>) {
    let (parts, ()) = request.into_parts();
    let (mut send, receive) = stream.split();
    let body = QuicBody::new(receive, &parts).await;
    let response = l7::handle_quic(parts, body, connection).await;
    let (mut head, mut body) = response.into_parts();
    // Connection-specific fields are not HTTP/3's (RFC 9114 §4.2).
    head.headers.remove(http::header::CONNECTION);
    if let Err(e) = send.send_response(http::Response::from_parts(head, ())).await {
        return tracing::debug!(error = %e, "HTTP/3 response head not sent");
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => send.send_data(data).await,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => send.send_trailers(trailers).await,
                    Err(_) => Ok(()),
                },
            },
            Err(e) => {
                tracing::debug!(error = %e, "response body broke off; resetting the HTTP/3 stream");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = sent {
            return tracing::debug!(error = %e, "HTTP/3 client went away");
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(error = %e, "HTTP/3 stream not finished");
    }
}

/// The verified client certificate's subject, as the TLS listener tells it.
fn client_subject(quic: &quinn::Connection) -> Option<HeaderValue> {
    let chain = quic.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    HeaderValue::from_str(&cert.subject().to_string()).ok()
}

/// An HTTP/3 request body: DATA frames, then trailers if any.
pub struct QuicBody {
    stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    /// Read ahead, to learn whether a request without a length has a body.
    first: Option<Bytes>,
    phase: Phase,
    declared: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Data,
    Trailers,
    Done,
}

impl std::fmt::Debug for QuicBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicBody").field("phase", &self.phase).field("declared", &self.declared).finish()
    }
}

impl QuicBody {
    /// The body of the request `parts` heads. Without a `content-length`,
    /// the first frame is awaited so a request that has no body (its
    /// stream ended with its head, as a GET's does) is forwarded as one.
    async fn new(
        stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
        parts: &http::request::Parts,
    ) -> Self {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = Self { stream, first: None, phase: Phase::Data, declared };
        if declared.is_none() {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => body.first = Some(data),
                    // Trailers straight after the head: nothing else comes.
                    Err(_) => body.phase = Phase::Done,
                },
                Some(Err(_)) | None => body.phase = Phase::Done,
            }
        }
        body
    }
}

impl Body for QuicBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if this.phase == Phase::Data {
            match ready!(this.stream.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    return Poll::Ready(Some(Ok(Frame::data(data.copy_to_bytes(data.remaining())))))
                }
                Ok(None) => this.phase = Phase::Trailers,
                Err(e) => {
                    this.phase = Phase::Done;
                    return Poll::Ready(Some(Err(BodyError::Client(Box::new(e)))));
                }
            }
        }
        if this.phase == Phase::Trailers {
            let trailers = ready!(this.stream.poll_recv_trailers(cx));
            this.phase = Phase::Done;
            return Poll::Ready(match trailers {
                Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                Ok(None) => None,
                Err(e) => Some(Err(BodyError::Client(Box::new(e)))),
            });
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.phase == Phase::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(length) => SizeHint::with_exact(length),
            None if self.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
