//! gRPC over HTTP/2 pools ([gRPC over HTTP2]): a call's `grpc-timeout`
//! bounds its request like the pool's request timeout (answered, when it
//! runs out, as gRPC does: `grpc-status: 4`, DEADLINE_EXCEEDED), and a
//! trailers-only answer with `grpc-status: 14` (UNAVAILABLE) counts as a
//! gateway failure for retries and outlier detection.
//!
//! [gRPC over HTTP2]: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md

use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// The call's deadline: `grpc-timeout` is 1 to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn timeout(request: &Parts) -> Option<Duration> {
    let text = request.headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Whether a response head says UNAVAILABLE (a trailers-only answer).
pub fn unavailable(headers: &HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|status| status.as_bytes() == b"14")
}

/// The answer to a call whose deadline ran out.
pub fn deadline_exceeded() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::message(""));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static("4"));
    headers.insert("grpc-message", HeaderValue::from_static("deadline exceeded at the load balancer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(timeout: &str) -> Parts {
        http::Request::post("/").header("grpc-timeout", timeout).body(()).unwrap().into_parts().0
    }

    #[test]
    fn timeouts_parse_every_unit_and_refuse_malformed_ones() {
        assert_eq!(super::timeout(&with("100m")), Some(Duration::from_millis(100)));
        assert_eq!(super::timeout(&with("2S")), Some(Duration::from_secs(2)));
        assert_eq!(super::timeout(&with("1H")), Some(Duration::from_secs(3600)));
        assert_eq!(super::timeout(&with("5u")), Some(Duration::from_micros(5)));
        for bad in ["", "m", "100", "123456789m", "10x", "-1S"] {
            assert_eq!(super::timeout(&with(bad)), None, "{bad}");
        }
    }
}
