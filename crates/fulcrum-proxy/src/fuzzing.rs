//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the
//! code that reads bytes a client (or a backend) controls, from raw bytes, as the data
//! path runs it. Not part of the product's API.

use std::net::IpAddr;

use crate::http::fuzzing as http;

/// A request head as a client sends it, through the data path's
/// decisions: parsed with `httparse` (what hyper parses with), then the
/// validation that refuses it or not, the listener's limits, the routing
/// key and session lookups, and the rewrite of its head for the backend.
pub fn request_head(bytes: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(bytes), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut builder = ::http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(if parsed.version == Some(0) { ::http::Version::HTTP_10 } else { ::http::Version::HTTP_11 });
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let Ok(request) = builder.body(()) else { return };
    let (parts, ()) = request.into_parts();
    http::decide(parts, IpAddr::from([10, 0, 0, 1]));
}

/// A backend's response as Fulcrum's HTTP/1.1 client reads it: its head
/// and body framing, and a chunked body through the chunk decoder.
pub fn backend_response(bytes: &[u8]) {
    crate::upstream_h1::decode_for_fuzzing(bytes);
}

/// An affinity cookie value, opened as the pool `app` would.
pub fn affinity_cookie(bytes: &[u8]) {
    let sealer = crate::affinity::cookie::CookieSealer::new(&["fuzzing-secret-0123456789".to_string()]);
    assert!(sealer.open(bytes, "app", 0).is_none(), "random bytes never open as a session");
}

/// The first bytes of a connection to a listener taking PROXY headers:
/// parsed as a header (either version), and what it carries written back
/// as a header that parses to the same endpoints.
pub fn proxy_header(bytes: &[u8]) {
    let accepted = fulcrum_config::ProxyProtocol { v1: true, v2: true, trusted: Vec::new() };
    if let Ok((Some(carried), length)) = crate::proxy_protocol::parse(bytes, &accepted) {
        assert!(length <= bytes.len(), "a header is never longer than what was read");
        for version in [fulcrum_config::ProxyVersion::V1, fulcrum_config::ProxyVersion::V2] {
            let written = crate::proxy_protocol::header(version, carried);
            let (again, _) =
                crate::proxy_protocol::parse(&written, &accepted).expect("a written header parses");
            let same = |a: std::net::SocketAddr, b: std::net::SocketAddr| {
                a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
            };
            let again = again.expect("a written header carries its endpoints");
            assert!(same(again.client, carried.client) && same(again.local, carried.local));
        }
    }
}
