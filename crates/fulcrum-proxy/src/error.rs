//! Why forwarding to a backend failed, and what the client is told.
//! Each error knows its HTTP status and whether another backend might
//! succeed (pingora-error's habit of carrying the retry decision).

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
    /// The HTTP connection could not be set up.
    #[error("HTTP handshake with the backend failed: {0}")]
    Handshake(hyper::Error),
    /// No response headers within `timeouts.response_header`.
    #[error("the backend did not answer in time")]
    ResponseTimeout,
    /// The connection broke before a response arrived.
    #[error("the backend closed or reset the connection: {0}")]
    Send(hyper::Error),
}

impl UpstreamError {
    /// The status the client gets: 504 for timeouts, else 502.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ConnectTimeout | Self::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short plain-text body the client gets.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::ConnectTimeout => "the backend did not accept a connection in time\n",
            Self::ResponseTimeout => "the backend did not answer in time\n",
            Self::Connect(_) | Self::Handshake(_) => "the backend could not be reached\n",
            Self::Send(_) => "the backend closed the connection before answering\n",
        }
    }
}
