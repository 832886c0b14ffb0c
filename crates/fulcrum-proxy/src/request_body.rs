//! The body sent to a backend: the client's, streamed as it arrives (and
//! cut off with [`BodyError::TooLarge`] once it exceeds the listener's
//! `max_body_bytes`, so the upstream request is aborted), or a small body
//! read in full beforehand so a retry can send it again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed (cannot be replayed), with the bytes it may still bring.
    Streaming(Incoming, u64),
    /// A complete body, cloned for each attempt.
    Replay(Option<Bytes>),
}

/// Why a client's body could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's connection broke or sent a malformed body.
    #[error("{0}")]
    Client(#[from] hyper::Error),
    /// The body went past the listener's `max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    /// The client's `body`, which may bring at most `limit` bytes.
    pub fn streaming(body: Incoming, limit: u64) -> Self {
        Self::Streaming(body, limit)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Streaming(body, left) => {
                let frame = match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(frame) => frame,
                };
                Poll::Ready(frame.map(|frame| {
                    let frame = frame?;
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *left {
                            return Err(BodyError::TooLarge(*left));
                        }
                        *left -= len;
                    }
                    Ok(frame)
                }))
            }
            RequestBody::Replay(bytes) => {
                Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(body, _) => body.is_end_stream(),
            RequestBody::Replay(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(body, _) => body.size_hint(),
            RequestBody::Replay(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
