//! Header rules for forwarding (RFC 9110 §7.6.1, RFC 7239's de-facto
//! `X-Forwarded-*` cousins): hop-by-hop headers and those named in
//! `Connection` are dropped both ways, `Host` is kept, the client is
//! appended to `X-Forwarded-For`, and the request line becomes origin-form
//! HTTP/1.1 for the backend.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Uri, Version};
use std::sync::{Mutex, PoisonError};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never the message.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    // RFC 9113 §3.1: the h2c upgrade's settings; Fulcrum never forwards it.
    HeaderName::from_static("http2-settings"),
];

/// End-to-end headers a `Connection` token may not remove: the message
/// needs them, and their handling is Fulcrum's (RFC 9110 §7.6.1).
const NEVER_NAMED_AWAY: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

/// Whether the request asks to switch protocols (WebSocket). An upgrade
/// to `h2c` is not one: tunnelled h2 would bypass routing and
/// `X-Forwarded-For`, so such a request is served as HTTP/1.1 (its
/// `Upgrade` and `HTTP2-Settings` are dropped as hop-by-hop).
pub fn is_upgrade(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.get(header::UPGRADE).is_some_and(|protocols| {
            !protocols.to_str().map_or(true, |p| p.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        })
        && connection_tokens(&parts.headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes hop-by-hop headers and every header `Connection` names.
///
/// One pass over the names finds which hop-by-hop headers are present
/// (most messages carry none, or `Connection: keep-alive`), so only those
/// are removed: no hashing of absent names on the hot path.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `close` and `keep-alive` are the usual tokens and name no other
    // header; anything else is removed by name.
    if present & 1 != 0 && !headers.get_all(header::CONNECTION).iter().all(names_no_field) {
        // (Not through `entry`, which grows a full map before it looks.)
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|name| !NEVER_NAMED_AWAY.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether a `Connection` value lists only `close` and `keep-alive`:
/// it names no other header field to drop.
pub fn names_no_field(value: &HeaderValue) -> bool {
    value.as_bytes().split(|&b| b == b',').all(|token| {
        let token = token.trim_ascii();
        token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
    })
}

/// Connection facts the request rewrite needs, computed once per connection.
/// Every connection holds one while it is open, napping too, so nothing
/// in it is kept twice (the client's address is read from `endpoints`).
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's IP, as it goes into `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The client's and the listener's socket addresses (as a trusted
    /// PROXY header gave them), for PROXY headers sent upstream.
    pub endpoints: crate::proxy_protocol::Endpoints,
    /// On listeners with `tls.client_ca`: the verified client
    /// certificate's subject, if the client presented one.
    pub cert_subject: Option<Option<HeaderValue>>,
    /// `Host` as the connection's HTTP/2 or HTTP/3 requests' `:authority` gives it.
    pub authority_host: AuthorityHost,
}

/// The `Host` value last made from a request's `:authority` on one
/// connection. A connection's requests name the same authority, so the
/// value is checked and copied once, not per request, and each request's
/// `Host` and `X-Forwarded-Host` share it (a reference count each).
#[derive(Debug, Default)]
pub struct AuthorityHost(Mutex<Option<HeaderValue>>);

impl AuthorityHost {
    fn value(&self, authority: &str) -> Option<HeaderValue> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = last.as_ref().filter(|host| host.as_bytes() == authority.as_bytes()) {
            return Some(host.clone());
        }
        let host = HeaderValue::from_str(authority).ok()?;
        *last = Some(host.clone());
        Some(host)
    }
}

impl ClientInfo {
    /// The client's address, for hash keys.
    pub fn addr(&self) -> std::net::IpAddr {
        self.endpoints.client.ip()
    }

    /// `ip` as `X-Forwarded-For` carries it. IPv4 is written here: std's
    /// formatter costs ~600 instructions, a tenth of a new connection's own
    /// work.
    pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
        let std::net::IpAddr::V4(v4) = ip else {
            return HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        };
        let mut text = [0u8; 15];
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                text[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                text[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            text[len] = b'0' + octet % 10;
            len += 1;
        }
        HeaderValue::from_bytes(&text[..len]).expect("digits and dots are a valid header value")
    }
}

static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");

/// Rewrites a client request for the backend. `upgrade` keeps the
/// protocol-switch headers a WebSocket handshake needs.
pub fn prepare_request(parts: &mut Parts, client: &ClientInfo, upgrade: bool) {
    let upgrade_to = if upgrade { parts.headers.get(header::UPGRADE).cloned() } else { None };
    if parts.version >= Version::HTTP_2 {
        join_cookie_crumbs(&mut parts.headers);
    }
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // Room for the X-Forwarded-* fields at once: one growth of the map,
    // not one per field.
    headers.reserve(3);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    // One lookup: an entry (room was reserved above, so it does not grow
    // the map), not a get and then an insert.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(field) => {
            field.insert(client.ip.clone());
        }
        Entry::Occupied(mut field) => {
            let mut joined = Vec::with_capacity(64);
            for value in field.iter() {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.ip.as_bytes());
            field.insert(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.ip.clone()));
        }
    }
    if let Some(subject) = &client.cert_subject {
        // Only what the handshake verified: a client's own claim is dropped.
        headers.remove(&X_CLIENT_CERT_SUBJECT);
        if let Some(subject) = subject {
            headers.insert(X_CLIENT_CERT_SUBJECT.clone(), subject.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(client.proto));

    let (host, from_authority) = match headers.get(header::HOST) {
        Some(host) => (Some(host.clone()), false),
        None => (parts.uri.authority().and_then(|a| client.authority_host.value(a.as_str())), true),
    };
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        if from_authority {
            headers.insert(header::HOST, host);
        }
    }

    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri =
            parts.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    }
    parts.version = Version::HTTP_11;
}

/// RFC 9113 §8.2.3: HTTP/2 clients may split `cookie` into one field per
/// crumb; forwarded as HTTP/1.1 they must be one field joined by `"; "`.
fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(256);
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Rewrites a backend response for the client.
pub fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade_to = if switching_protocols { headers.get(header::UPGRADE).cloned() } else { None };
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A copy of a request head (method, target, version, headers; not its
/// extensions), to send the request again or to log it as received.
pub fn clone_parts(parts: &Parts) -> Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_value_reads_as_std_writes_the_address() {
        for octet in 0..=255u8 {
            for ip in [
                [octet, 0, 0, 1],
                [10, octet, 9, octet],
                [255, 255, 255, octet],
                [octet, octet, octet, octet],
            ] {
                let ip = std::net::IpAddr::from(ip);
                assert_eq!(ClientInfo::ip_value(ip), ip.to_string().as_str());
            }
        }
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ClientInfo::ip_value(v6), "2001:db8::1");
    }

    fn parts(request: http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
    }

    fn client() -> ClientInfo {
        ClientInfo {
            ip: HeaderValue::from_static("10.0.0.9"),
            proto: "http",
            endpoints: crate::proxy_protocol::Endpoints {
                client: "10.0.0.9:40000".parse().unwrap(),
                local: "10.0.0.1:80".parse().unwrap(),
            },
            cert_subject: None,
            authority_host: Default::default(),
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut p = parts(
            http::Request::get("/x")
                .header("host", "site")
                .header("connection", "keep-alive, X-Secret")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("x-kept", "yes"),
        );
        prepare_request(&mut p, &client(), false);
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(!p.headers.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(p.headers["x-kept"], "yes");
        assert_eq!(p.headers["host"], "site");
        assert_eq!(p.headers["x-forwarded-host"], "site");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut p = parts(http::Request::get("/").header("host", "h").header("x-forwarded-for", "1.2.3.4"));
        prepare_request(&mut p, &client(), false);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        let mut p = parts(http::Request::get("/").header("host", "h"));
        prepare_request(&mut p, &client(), false);
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.9");
    }

    #[test]
    fn http2_authority_becomes_host_and_origin_form() {
        let mut p = parts(http::Request::get("https://example.com:8443/a?b=1").version(Version::HTTP_2));
        prepare_request(&mut p, &client(), false);
        assert_eq!(p.uri, "/a?b=1");
        assert_eq!(p.headers["host"], "example.com:8443");
        assert_eq!(p.version, Version::HTTP_11);
    }

    #[test]
    fn each_request_on_a_connection_gets_its_own_authority_as_host() {
        let connection = client();
        for authority in ["a.example", "a.example", "b.example:8443", "a.example"] {
            let mut p = parts(http::Request::get(format!("https://{authority}/")).version(Version::HTTP_2));
            prepare_request(&mut p, &connection, false);
            assert_eq!(p.headers["host"], authority);
            assert_eq!(p.headers["x-forwarded-host"], authority);
        }
    }

    #[test]
    fn connection_cannot_name_host_away_and_h2c_is_no_upgrade() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "site")
                .header("connection", "Host, Content-Length, Upgrade, HTTP2-Settings")
                .header("upgrade", "h2c")
                .header("http2-settings", "AAMAAABkAAQAAP__"),
        );
        assert!(!is_upgrade(&p));
        prepare_request(&mut p, &client(), false);
        assert_eq!(p.headers["host"], "site");
        assert!(!p.headers.contains_key("upgrade") && !p.headers.contains_key("http2-settings"));
    }

    #[test]
    fn http2_cookie_crumbs_are_joined() {
        let mut p = parts(
            http::Request::get("https://h/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("cookie", "c=3"),
        );
        prepare_request(&mut p, &client(), false);
        let cookies: Vec<_> = p.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
    }

    #[test]
    fn upgrade_headers_survive_for_websockets() {
        let mut p = parts(
            http::Request::get("/ws")
                .header("host", "h")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket"),
        );
        assert!(is_upgrade(&p));
        prepare_request(&mut p, &client(), true);
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["connection"], "upgrade");
    }
}
