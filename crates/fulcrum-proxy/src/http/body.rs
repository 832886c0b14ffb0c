//! The response body Fulcrum sends to clients: either a short message of
//! its own (errors) or a backend's body streamed frame by frame.
//!
//! A streamed body carries the upstream connection (an HTTP/1.1 body
//! reads its own) and the backend's in-flight guard: when the body has
//! been read to its end the connection goes back to the idle pool and the
//! request stops counting as in flight; when the client goes away early,
//! the connection is dropped (it may still hold unread bytes) and the
//! guard with it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use fulcrum_balance::InFlight;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::idle::InFlightRequest;
use crate::access_log::{AccessLog, Entry};
use crate::upstream::{self, Target};
use crate::upstream_h1;

/// An error of a body on its way to the client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A backend's response body: read off an HTTP/1.1 connection (returned
/// to `Target`'s pool at its end), or an HTTP/2 stream's.
#[derive(Debug)]
pub enum BackendBody {
    Http1(upstream_h1::Body, Target),
    Http2(Incoming),
}

impl BackendBody {
    /// Returns the connection to its pool when it may be reused.
    fn release(self) {
        if let Self::Http1(body, target) = self {
            if let Some(connection) = body.into_reusable() {
                upstream::checkin(&target, connection);
            }
        }
    }

    /// Reads the body to its end and releases its connection.
    pub async fn drain(mut self) -> Result<(), BoxError> {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
            frame?;
        }
        self.release();
        Ok(())
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http1(body, _) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body, _) => body.is_end_stream(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body, _) => body.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// A body Fulcrum answers a client with; it holds its request's
/// in-flight count on the client connection until it is dropped.
#[derive(Debug)]
pub struct ProxyBody(Kind, Option<InFlightRequest>);

#[derive(Debug)]
enum Kind {
    Message(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

/// A backend's response body and what to release when it ends.
#[derive(Debug)]
struct UpstreamBody {
    /// Taken at the end, to release its connection.
    body: Option<BackendBody>,
    finished: bool,
    in_flight: Option<InFlight>,
    /// The admission slot, when the pool has admission control.
    ticket: Option<crate::admission::Ticket>,
    /// The access-log line to write when the body ends, and the bytes so far.
    log: Option<(Arc<AccessLog>, Box<Entry>)>,
    bytes: u64,
}

impl ProxyBody {
    /// A complete body of Fulcrum's own.
    pub fn message(text: &'static str) -> Self {
        Self(Kind::Message(Some(Bytes::from_static(text.as_bytes()))), None)
    }

    /// A backend's body; its connection is returned to the pool at its end.
    pub fn upstream(body: BackendBody, in_flight: InFlight) -> Self {
        Self(
            Kind::Upstream(Box::new(UpstreamBody {
                body: Some(body),
                finished: false,
                in_flight: Some(in_flight),
                ticket: None,
                log: None,
                bytes: 0,
            })),
            None,
        )
    }

    /// Keeps the request's admission slot until the backend's body has
    /// been sent (at once for a message of Fulcrum's own).
    pub fn hold_ticket(&mut self, ticket: crate::admission::Ticket) {
        if let Kind::Upstream(upstream) = &mut self.0 {
            if !upstream.finished {
                upstream.ticket = Some(ticket);
            }
        }
    }

    /// Keeps the request counted in flight until this body is dropped.
    pub fn hold(&mut self, in_flight: InFlightRequest) {
        self.1 = Some(in_flight);
    }

    /// Logs the request when this body has been sent (at once for a
    /// message of Fulcrum's own).
    pub fn log_when_sent(&mut self, log: Arc<AccessLog>, entry: Entry) {
        match &mut self.0 {
            Kind::Message(bytes) => {
                log.write(&entry, bytes.as_ref().map_or(0, |b| b.len() as u64), crate::clock::now_nanos())
            }
            Kind::Upstream(upstream) => upstream.log = Some((log, Box::new(entry))),
        }
    }
}

impl UpstreamBody {
    fn finish(&mut self) {
        self.finished = true;
        self.in_flight = None;
        self.ticket = None;
        if let Some(body) = self.body.take() {
            body.release();
        }
        self.write_log();
    }

    fn write_log(&mut self) {
        if let Some((log, entry)) = self.log.take() {
            log.write(&entry, self.bytes, crate::clock::now_nanos());
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.finished && self.body.as_ref().is_some_and(Body::is_end_stream) {
            self.finish();
        }
        // A client that went away mid-body is still logged, with what it got.
        self.write_log();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Message(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(upstream) => {
                let Some(body) = &mut upstream.body else { return Poll::Ready(None) };
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            upstream.bytes += data.len() as u64;
                        }
                    }
                    None => upstream.finish(),
                    // The body keeps its place, so it never reads as ended;
                    // an HTTP/1.1 body has dropped its connection already.
                    Some(Err(_)) => {
                        if let Some(in_flight) = &upstream.in_flight {
                            in_flight.load().record_error();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Message(bytes) => bytes.is_none(),
            Kind::Upstream(upstream) => {
                upstream.finished || upstream.body.as_ref().is_none_or(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Message(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Message(None) => SizeHint::with_exact(0),
            Kind::Upstream(upstream) => {
                upstream.body.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint)
            }
        }
    }
}
