//! A backend's response head, parsed from the connection's read buffer,
//! and how its body is framed (RFC 9112 §6.3, in the order hyper's client
//! applies it): no body for HEAD, 1xx, 204 and 304; chunked when
//! `Transfer-Encoding` ends in `chunked`; else `Content-Length` (every
//! value equal); else read until the backend closes.
//!
//! A `Connection` field of only `close` and `keep-alive` is read here and
//! kept out of the head's fields: it names no other field, and the
//! response's rewrite for the client drops it as hop-by-hop anyway
//! (`http::headers::strip_hop_by_hop`, which then has nothing to look up).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::Error;

/// Most header fields a response head may have (hyper's default).
const MAX_HEADERS: usize = 100;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body follows the head.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes (the connection is then spent).
    UntilClose,
}

/// A final response head and what it says about the connection.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub keep_alive: bool,
}

/// The next response head in `buf`, taken out of it, once complete;
/// `None` while more bytes are needed. Interim (1xx) responses other
/// than 101 are consumed and skipped, as hyper's client does.
pub fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(length)) if length <= super::MAX_HEAD => length,
            Ok(httparse::Status::Complete(_)) => return Err(Error::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(Error::Malformed(error)),
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed(httparse::Error::Status))?;
        let version = if response.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        // Where each field sits in the head, so its value can be a slice of
        // the head's bytes rather than a copy.
        // (On the stack: a head is at most `MAX_HEAD` bytes, so offsets fit `u16`.)
        let start = buf.as_ptr() as usize;
        let mut spans = [Span::default(); MAX_HEADERS];
        for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
            let name = h.name.as_ptr() as usize - start;
            let value = h.value.as_ptr() as usize - start;
            *span = Span {
                name: name as u16,
                name_end: (name + h.name.len()) as u16,
                value: value as u16,
                value_end: (value + h.value.len()) as u16,
            };
        }
        let fields = response.headers.len();
        let head = buf.split_to(length).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        return head_of(status, version, &head, &spans[..fields], method).map(Some);
    }
}

/// Where one field's name and value sit in the head.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    name: u16,
    name_end: u16,
    value: u16,
    value_end: u16,
}

fn head_of(
    status: StatusCode,
    version: Version,
    head: &Bytes,
    spans: &[Span],
    method: &Method,
) -> Result<Head, Error> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut keep_alive = version == Version::HTTP_11;
    let mut closing = false;
    // The framing fields, noted as the fields go into the map (no lookups after).
    let mut chunked = None;
    let mut length = Ok(None);
    for span in spans {
        let name = HeaderName::from_bytes(&head[usize::from(span.name)..usize::from(span.name_end)])
            .map_err(|_| Error::Malformed(httparse::Error::HeaderName))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(usize::from(span.value)..usize::from(span.value_end)))
                .map_err(|_| Error::Malformed(httparse::Error::HeaderValue))?;
        if name == CONNECTION {
            // Once a `Connection` field asks to close, a later
            // `keep-alive` does not undo it.
            if closing || has_token(&value, "close") {
                closing = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, "keep-alive");
            }
            if crate::http::names_no_field(&value) {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            // The last coding of the last field decides.
            chunked = Some(ends_in_chunked(&value));
        } else if name == CONTENT_LENGTH {
            length = length.and_then(|known| content_length(&value, known));
        }
        headers.append(name, value);
    }
    let framing = framing(status, version, method, chunked, length)?;
    // Both framings at once is how responses are smuggled: the body is
    // read as chunked, and the connection is not trusted again.
    if chunked.is_some() && !matches!(length, Ok(None)) {
        keep_alive = false;
    }
    Ok(Head { status, version, headers, framing, keep_alive: keep_alive && framing != Framing::UntilClose })
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
pub(super) fn ends_in_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The length one `Content-Length` field gives, with `known`, what earlier
/// ones gave: every value (comma-separated too) must be the same number.
pub(super) fn content_length(value: &HeaderValue, known: Option<u64>) -> Result<Option<u64>, ()> {
    let mut length = known;
    for part in value.as_bytes().split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
            return Err(());
        }
        let parsed = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != parsed) {
            return Err(());
        }
        length = Some(parsed);
    }
    Ok(length)
}

/// The body's framing from the status, the request's method and what
/// `Transfer-Encoding` (`chunked`: whether present, and ending in
/// `chunked`) and `Content-Length` said.
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    chunked: Option<bool>,
    length: Result<Option<u64>, ()>,
) -> Result<Framing, Error> {
    if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if method == Method::HEAD || (method == Method::CONNECT && status.is_success()) {
        return Ok(Framing::Empty);
    }
    if let Some(chunked) = chunked {
        if version == Version::HTTP_10 {
            return Err(Error::Malformed(httparse::Error::Version));
        }
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    match length {
        Ok(length) => Ok(length.map_or(Framing::UntilClose, Framing::Length)),
        Err(()) => Err(Error::InvalidLength),
    }
}

/// Whether the comma-separated `value` lists `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &str, method: Method) -> Result<Option<Head>, Error> {
        parse(&mut BytesMut::from(bytes), &method)
    }

    #[test]
    fn a_head_arrives_in_pieces_and_leaves_the_body_behind() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Len");
        assert!(parse(&mut buf, &Method::GET).unwrap().is_none());
        buf.extend_from_slice(b"gth: 5\r\nX-A: 1\r\n\r\nhello");
        let head = parse(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!((head.status, head.framing, head.keep_alive), (StatusCode::OK, Framing::Length(5), true));
        assert_eq!(head.headers["x-a"], "1");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn interim_responses_are_skipped_but_a_switch_is_not() {
        let head = parsed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", Method::POST)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(!head.headers.contains_key("link"), "the interim response's fields are not the final one's");
        let switch = parsed("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((switch.status, switch.framing), (StatusCode::SWITCHING_PROTOCOLS, Framing::Empty));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |head: &str, method: Method| parsed(head, method).map(|h| h.unwrap().framing);
        for (head, method, expected) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD, Framing::Empty),
            ("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", Method::GET, Framing::Empty),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Method::GET, Framing::Chunked),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET, Framing::UntilClose),
            ("HTTP/1.1 200 OK\r\n\r\n", Method::GET, Framing::UntilClose),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
                Method::GET,
                Framing::Length(7),
            ),
        ] {
            assert_eq!(framing(head, method).unwrap(), expected, "{head:?}");
        }
        for bad in ["7, 8", "-1", "0x10", "", "99999999999999999999"] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(framing(&head, Method::GET), Err(Error::InvalidLength)), "{bad:?} was accepted");
        }
        assert!(framing("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_fields() {
        let keep = |head: &str| parsed(head, Method::GET).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"), "a body read until close spends the connection");
        assert!(!keep("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn a_connection_field_stays_in_the_head_only_when_it_names_other_fields() {
        let fields = |head: &str| parsed(head, Method::GET).unwrap().unwrap().headers;
        let plain = fields("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!plain.contains_key(CONNECTION) && plain.contains_key(CONTENT_LENGTH));
        assert!(!fields("HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\n\r\n").contains_key(CONNECTION));
        let naming = fields("HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n");
        assert_eq!(naming[CONNECTION], "close, X-Hop", "the rewrite needs it to drop X-Hop");
        let upgrade =
            fields("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n");
        assert_eq!(upgrade[CONNECTION], "Upgrade");
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in
            ["HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "HTTP/2 200\r\n\r\n"]
        {
            assert!(parsed(bad, Method::GET).is_err(), "{bad:?} was accepted");
        }
    }
}
