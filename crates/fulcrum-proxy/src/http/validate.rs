//! What a request must be before any of it is forwarded, decided on the
//! parsed head (hyper has already refused what it cannot parse):
//!
//! - one valid `Host` (RFC 9112 §3.2, an RFC 3986 authority without
//!   userinfo), required in HTTP/1.1 and in HTTP/2 without `:authority`;
//! - a request target in origin form (`/path?query`) or absolute form;
//!   `*` only for `OPTIONS` (RFC 9112 §3.2.4); `CONNECT` is not proxied;
//! - no transfer coding other than `chunked` (Fulcrum decodes no others;
//!   forwarding one as plain chunked would change the message);
//! - HTTP/2 field values without leading or trailing whitespace
//!   (RFC 9113 §8.2.1).
//!
//! Each refusal carries its status and the reason the client reads.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode, Version};

/// A refused request: the status and the reason.
pub type Refusal = (StatusCode, &'static str);

const fn bad(reason: &'static str) -> Refusal {
    (StatusCode::BAD_REQUEST, reason)
}

/// Why the request must be refused before it reaches any backend.
pub fn refuse(parts: &Parts) -> Option<Refusal> {
    if parts.method == Method::CONNECT {
        return Some((StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported\n"));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(bad("more than one Host header\n"));
    }
    match (host, parts.version) {
        (None, Version::HTTP_11) => return Some(bad("an HTTP/1.1 request needs a Host header\n")),
        (None, version) if version >= Version::HTTP_2 && parts.uri.authority().is_none() => {
            return Some(bad("an HTTP/2 or HTTP/3 request needs :authority or Host\n"))
        }
        (Some(host), _) if !is_valid_host(host.as_bytes()) => return Some(bad("invalid Host header\n")),
        _ => {}
    }
    if parts.uri.authority().is_some_and(|a| !is_valid_host(a.as_str().as_bytes())) {
        return Some(bad("invalid authority in the request target\n"));
    }
    if let Some(refusal) = refuse_target(parts) {
        return Some(refusal);
    }
    if let Some(refusal) = refuse_transfer_coding(parts) {
        return Some(refusal);
    }
    if parts.version >= Version::HTTP_2 && parts.headers.values().any(has_outer_whitespace) {
        return Some(bad("an HTTP/2 field value starts or ends with whitespace\n"));
    }
    None
}

fn refuse_target(parts: &Parts) -> Option<Refusal> {
    let uri = &parts.uri;
    if uri.scheme().is_some() {
        return None; // absolute form (or HTTP/2's pseudo-headers)
    }
    if uri.authority().is_none() && uri.path() == "*" {
        return (parts.method != Method::OPTIONS).then_some(bad("`*` is only a target for OPTIONS\n"));
    }
    if uri.authority().is_some() || !uri.path().starts_with('/') {
        return Some(bad("the request target must start with `/`\n"));
    }
    None
}

fn refuse_transfer_coding(parts: &Parts) -> Option<Refusal> {
    let codings = parts.headers.get_all(header::TRANSFER_ENCODING);
    let only_chunked = codings.iter().all(|value| {
        value.to_str().is_ok_and(|v| v.split(',').map(str::trim).all(|c| c.eq_ignore_ascii_case("chunked")))
    });
    (!only_chunked)
        .then_some((StatusCode::NOT_IMPLEMENTED, "transfer codings other than chunked are not supported\n"))
}

fn has_outer_whitespace(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    bytes.first().is_some_and(is_space) || bytes.last().is_some_and(is_space)
}

/// RFC 3986 `host [ ":" port ]` as `Host` carries it: a reg-name
/// (unreserved, percent-encoded, sub-delims), an IPv4 address or an
/// IP-literal in brackets; no userinfo, no whitespace. Empty is allowed
/// (RFC 9112 §3.2: targets without an authority).
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else { return false };
        let literal = &value[1..close];
        if literal.is_empty() || !literal.iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b)) {
            return false;
        }
        match &value[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &[][..]),
        }
    };
    host.iter().all(|&b| REG_NAME[usize::from(b)]) && port.iter().all(u8::is_ascii_digit) && port.len() <= 5
}

/// The bytes of an RFC 3986 reg-name: unreserved, sub-delims and `%` (a
/// table, so the check costs a load per byte on every request).
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
    }

    fn status(request: http::request::Builder) -> Option<u16> {
        refuse(&parts(request)).map(|(status, _)| status.as_u16())
    }

    #[test]
    fn hosts() {
        for good in ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:443", "[::1]", "a-b_c.d~e", ""]
        {
            assert!(is_valid_host(good.as_bytes()), "{good}");
        }
        for bad in ["a b", "a b@c", "user@host", "host:port", "[::1", "[zz]", "h/x", "h:123456"] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn targets_and_methods() {
        assert_eq!(status(http::Request::get("/ok").header("host", "h")), None);
        assert_eq!(status(http::Request::get("http://h/ok").header("host", "h")), None);
        assert_eq!(status(http::Request::get("foo").header("host", "h")), Some(400));
        assert_eq!(status(http::Request::get("*").header("host", "h")), Some(400));
        assert_eq!(status(http::Request::options("*").header("host", "h")), None);
        assert_eq!(status(http::Request::connect("h:443").header("host", "h:443")), Some(501));
        assert_eq!(status(http::Request::get("/").header("host", "a b@c")), Some(400));
    }

    #[test]
    fn hosts_required_and_single() {
        assert_eq!(status(http::Request::get("/")), Some(400));
        assert_eq!(status(http::Request::get("/").header("host", "a").header("host", "b")), Some(400));
        assert_eq!(status(http::Request::get("/").version(Version::HTTP_10)), None);
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        let te = |v: &'static str| {
            status(http::Request::post("/").header("host", "h").header("transfer-encoding", v))
        };
        assert_eq!(te("chunked"), None);
        assert_eq!(te("gzip, chunked"), Some(501));
        assert_eq!(te("Chunked"), None);
    }

    #[test]
    fn http2_values_with_outer_whitespace_are_malformed() {
        let h2 = |v: &'static str| {
            status(
                http::Request::get("https://h/")
                    .version(Version::HTTP_2)
                    .header("x-a", HeaderValue::from_static(v)),
            )
        };
        assert_eq!(h2("fine"), None);
        assert_eq!(h2(" lead"), Some(400));
        assert_eq!(h2("trail\t"), Some(400));
    }
}
