//! Why forwarding to a backend failed, and what the client is told.
//! Each error knows its HTTP status and whether another backend might
//! succeed (pingora-error's habit of carrying the retry decision).

use crate::request_body::BodyError;
use http::StatusCode;

/// A failure talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connect did not finish within `timeouts.connect`.
    #[error("connecting to the backend timed out")]
    ConnectTimeout,
    /// The TCP connect failed (refused, unreachable).
    #[error("cannot connect to the backend: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake with the backend failed (its certificate did not
    /// verify, or it wanted a client certificate).
    #[error("TLS handshake with the backend failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP connection could not be set up.
    #[error("HTTP handshake with the backend failed: {0}")]
    Handshake(hyper::Error),
    /// No response headers within `timeouts.response_header`.
    #[error("the backend did not answer in time")]
    ResponseTimeout,
    /// The connection broke before a response arrived, or the response
    /// head was malformed.
    #[error("the backend closed or reset the connection: {0}")]
    Send(Box<dyn std::error::Error + Send + Sync>),
    /// The pool's request timeout ran out while the backend worked.
    #[error("the request took longer than the pool's request timeout")]
    RequestTimeout,
    /// The client's request body broke (malformed chunked encoding, or the
    /// client went away): the client's fault, never the backend's.
    #[error("the client's request body could not be read: {0}")]
    ClientBody(Box<dyn std::error::Error + Send + Sync>),
    /// The client's body went past the listener's `max_body_bytes`: the
    /// upstream request was aborted.
    #[error("the client's request body is too large")]
    BodyTooLarge,
}

impl UpstreamError {
    /// A failed send on an HTTP/2 connection: the client's fault when the
    /// request body failed — hyper's client reports a "user" error caused by the body's own
    /// error, which for a forwarded body is the client connection's
    /// `hyper::Error` — else the backend's (other user errors, such as a
    /// connection task that is gone, stay the backend's).
    pub fn from_send(error: hyper::Error) -> Self {
        use std::error::Error as _;
        let body_error =
            error.source().filter(|_| error.is_user()).and_then(|c| c.downcast_ref::<BodyError>());
        match body_error {
            Some(BodyError::TooLarge(_)) => Self::BodyTooLarge,
            Some(BodyError::Client(_)) => Self::ClientBody(Box::new(error)),
            None => Self::Send(Box::new(error)),
        }
    }

    /// A failed HTTP/1.1 exchange: the client's fault when its body
    /// failed, else the backend's.
    pub fn from_exchange(error: crate::upstream_h1::Error) -> Self {
        match error {
            crate::upstream_h1::Error::RequestBody(BodyError::TooLarge(_)) => Self::BodyTooLarge,
            crate::upstream_h1::Error::RequestBody(BodyError::Client(error)) => Self::ClientBody(error),
            crate::upstream_h1::Error::TimedOut => Self::ResponseTimeout,
            error => Self::Send(Box::new(error)),
        }
    }

    /// Whether an HTTP/2 backend refused the request without processing
    /// it: its stream was above the last one the backend's GOAWAY kept
    /// (a backend rotating its connections), or was reset with
    /// REFUSED_STREAM. RFC 9113 §8.7: such a request may be sent again,
    /// whatever its method.
    pub fn refused_unprocessed(&self) -> bool {
        use std::error::Error as _;
        let Self::Send(error) = self else { return false };
        let hyper = error.downcast_ref::<hyper::Error>();
        hyper.and_then(|e| e.source()).and_then(|cause| cause.downcast_ref::<h2::Error>()).is_some_and(|h2| {
            h2.is_remote() && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        })
    }

    /// Whether the client, not the backend, broke the exchange.
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::ClientBody(_) | Self::BodyTooLarge)
    }

    /// The status the client gets: 504 for timeouts, 400 for the client's
    /// own broken body, else 502.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ConnectTimeout | Self::ResponseTimeout | Self::RequestTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short plain-text body the client gets.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::ConnectTimeout => "the backend did not accept a connection in time\n",
            Self::ResponseTimeout => "the backend did not answer in time\n",
            Self::Connect(_) | Self::Handshake(_) => "the backend could not be reached\n",
            Self::Tls(_) => "the backend's TLS handshake failed\n",
            Self::Send(_) => "the backend closed the connection before answering\n",
            Self::RequestTimeout => "the request took longer than the pool's request timeout\n",
            Self::ClientBody(_) => "the request body could not be read\n",
            Self::BodyTooLarge => "the request body is larger than this listener accepts\n",
        }
    }
}
