//! Fulcrum's own short answers: every refusal says why in plain text.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// A plain-text response with `status` and `message`.
pub fn plain(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(message));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// 503 when no backend of the pool can take the request.
pub fn no_backend() -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "no backend is available for this request\n");
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 429 when a rate limit refuses the request, saying when to retry and
/// which policy applies.
pub fn rate_limited(
    limit: &crate::admission::rate_limit::RateLimiter,
    refused: crate::admission::rate_limit::Refused,
) -> Response<ProxyBody> {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many requests; see Retry-After\n");
    for (name, value) in limit.headers(refused) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// 503 when admission control sheds the request.
pub fn shed(why: crate::admission::Shed) -> Response<ProxyBody> {
    let message = match why {
        crate::admission::Shed::Deadline => {
            "the pool is overloaded: the request waited its class's whole deadline\n"
        }
        crate::admission::Shed::QueueFull => "the pool is overloaded: its queue is full\n",
    };
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// 503 when a session that may not move (`mode = "hard"`) cannot reach its backend.
pub fn session_unavailable() -> Response<ProxyBody> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "the backend of this session is unavailable\n");
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A redirect of the route's own to `location`.
pub fn redirect(status: u16, location: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(""));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(location) => {
            response.headers_mut().insert(http::header::LOCATION, location);
        }
        Err(_) => {
            return plain(StatusCode::BAD_REQUEST, "the redirect target cannot be built from this request\n")
        }
    }
    response
}
