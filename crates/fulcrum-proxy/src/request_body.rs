//! The body sent to a backend: the client's, streamed as it arrives (and
//! cut off with [`BodyError::TooLarge`] once it exceeds the listener's
//! `max_body_bytes`, so the upstream request is aborted), or a small body
//! read in full beforehand so a retry can send it again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A client's body as its connection delivers it.
#[derive(Debug)]
pub enum ClientBody {
    /// From an HTTP/1.1 or HTTP/2 connection.
    Hyper(Incoming),
    /// From an HTTP/3 stream.
    /// Boxed: an h3 stream is large, and every HTTP/1.1 and HTTP/2 request
    /// would otherwise carry its size through each layer it moves through.
    Quic(Box<crate::http3::QuicBody>),
}

impl ClientBody {
    /// The length the client declared, if it did.
    pub fn declared_length(&self) -> Option<u64> {
        match self {
            Self::Hyper(body) => body.size_hint().exact(),
            Self::Quic(body) => body.size_hint().exact(),
        }
    }
}

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed (cannot be replayed), with the bytes it may still bring.
    Streaming(Incoming, u64),
    /// An HTTP/3 client's body, streamed likewise.
    Quic(Box<crate::http3::QuicBody>, u64),
    /// A complete body, cloned for each attempt.
    Replay(Option<Bytes>),
}

/// Why a client's body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's connection broke or sent a malformed body.
    #[error("{0}")]
    Client(Box<dyn std::error::Error + Send + Sync>),
    /// The body went past the listener's `max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

impl From<hyper::Error> for BodyError {
    fn from(error: hyper::Error) -> Self {
        Self::Client(Box::new(error))
    }
}

impl RequestBody {
    /// A copy to send again, when the body is kept whole (or empty): a
    /// streaming body is read once.
    pub fn replay_copy(&self) -> Option<Self> {
        match self {
            Self::Replay(bytes) => Some(Self::Replay(bytes.clone())),
            body if body.is_end_stream() => Some(Self::Replay(None)),
            _ => None,
        }
    }

    /// The client's `body`, which may bring at most `limit` bytes. One
    /// that has already ended (a GET's, mostly) is kept as empty: asked
    /// once here, not again by each step that looks (an HTTP/2 body
    /// answers under its connection's lock).
    pub fn streaming(body: ClientBody, limit: u64) -> Self {
        match body {
            ClientBody::Hyper(body) if body.is_end_stream() => Self::Replay(None),
            ClientBody::Hyper(body) => Self::Streaming(body, limit),
            ClientBody::Quic(body) => Self::Quic(body, limit),
        }
    }
}

/// `frame`, counted against the bytes the body may still bring.
fn limited<E: Into<BodyError>>(
    frame: Option<Result<Frame<Bytes>, E>>,
    left: &mut u64,
) -> Option<Result<Frame<Bytes>, BodyError>> {
    frame.map(|frame| {
        let frame = frame.map_err(Into::into)?;
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > *left {
                return Err(BodyError::TooLarge(*left));
            }
            *left -= len;
        }
        Ok(frame)
    })
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Streaming(body, left) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => Poll::Ready(limited(frame, left)),
            },
            RequestBody::Quic(body, left) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(frame) => Poll::Ready(limited(frame, left)),
            },
            RequestBody::Replay(bytes) => {
                Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(body, _) => body.is_end_stream(),
            RequestBody::Quic(body, _) => body.is_end_stream(),
            RequestBody::Replay(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(body, _) => body.size_hint(),
            RequestBody::Quic(body, _) => body.size_hint(),
            RequestBody::Replay(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
