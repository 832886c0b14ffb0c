//! A request as it goes out on a backend connection: its head written
//! into one buffer with the body's framing decided as hyper's client
//! decides it (a `Content-Length` or `Transfer-Encoding` the request
//! carries is kept; else a known length becomes `Content-Length`, an
//! unknown one chunked, except for GET, HEAD and CONNECT, which send no
//! body), then its body streamed frame by frame behind it.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Version};
use http_body::Body;
use tokio::io::AsyncWrite;

use super::{response, Error};
use crate::request_body::RequestBody;

/// Body chunks up to this size are copied behind what is pending, so a
/// small request goes out in one write; larger ones are written as they are.
const COALESCE: usize = 16 * 1024;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked,
}

/// The part of a request not yet written to the backend.
#[derive(Debug)]
pub struct Outgoing {
    /// Bytes to write, in order: `pending`, then `large`, then `closing`
    /// (the CRLF that ends a large chunk).
    pending: BytesMut,
    large: Option<Bytes>,
    closing: &'static [u8],
    /// The body still to be read from the client, and its framing.
    body: Option<(RequestBody, Framing)>,
    /// Written out and flushed to the end.
    done: bool,
}

impl Outgoing {
    /// `parts` and `body` as they go out: the head encoded now (into
    /// `buffer`), the body as it comes.
    pub fn new(parts: &mut http::request::Parts, body: RequestBody, buffer: BytesMut) -> Result<Self, Error> {
        let framing = if body.is_end_stream() {
            parts.headers.remove(TRANSFER_ENCODING);
            None
        } else {
            set_length(&parts.method, parts.version, &mut parts.headers, body.size_hint().exact())
        };
        let mut pending = buffer;
        encode_head(parts, &mut pending);
        let mut outgoing = Self { pending, large: None, closing: b"", body: None, done: false };
        match (framing, body) {
            (Some(framing), RequestBody::Replay(Some(bytes))) => {
                // A whole replayed body goes out behind its head at once.
                outgoing.body = Some((RequestBody::Replay(None), framing));
                outgoing.push_data(bytes)?;
            }
            (Some(framing), body) => outgoing.body = Some((body, framing)),
            (None, _) => {}
        }
        Ok(outgoing)
    }

    /// The write buffer, emptied, for the next request.
    pub fn into_buffer(self) -> BytesMut {
        let mut buffer = self.pending;
        buffer.clear();
        buffer
    }

    /// Whether everything has been written and flushed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Writes what it can to `io`, reading the body as it comes:
    /// ready once all of the request has been written and flushed.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        while !self.done {
            if !self.pending.is_empty() {
                let written = ready!(write_some(io, cx, &self.pending))?;
                self.pending.advance(written);
                continue;
            }
            if let Some(large) = &mut self.large {
                let written = ready!(write_some(io, cx, large))?;
                large.advance(written);
                if large.is_empty() {
                    self.large = None;
                }
                continue;
            }
            if !self.closing.is_empty() {
                let written = ready!(write_some(io, cx, self.closing))?;
                self.closing = &self.closing[written..];
                continue;
            }
            let Some((body, framing)) = &mut self.body else {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                self.done = true;
                break;
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // What was written so far must reach the backend while
                    // the client's next bytes are awaited.
                    ready!(Pin::new(&mut *io).poll_flush(cx))?;
                    return Poll::Pending;
                }
            };
            match frame {
                None => {
                    if let Framing::Length(left @ 1..) = framing {
                        return Poll::Ready(Err(Error::ShortRequestBody(*left)));
                    }
                    if matches!(framing, Framing::Chunked) {
                        self.pending.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.body = None;
                }
                Some(Err(error)) => return Poll::Ready(Err(Error::RequestBody(error))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.push_data(data)?,
                    Err(frame) => {
                        // Trailers travel only in the chunked coding.
                        if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), *framing) {
                            self.pending.extend_from_slice(b"0\r\n");
                            write_fields(&trailers, &mut self.pending);
                            self.pending.extend_from_slice(b"\r\n");
                            self.body = None;
                        }
                    }
                },
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Queues one chunk of body data in the body's framing.
    fn push_data(&mut self, data: Bytes) -> Result<(), Error> {
        let Some((_, framing)) = &mut self.body else { return Ok(()) };
        if data.is_empty() {
            return Ok(());
        }
        let chunked = match framing {
            Framing::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(Error::LongRequestBody);
                }
                *left -= len;
                false
            }
            Framing::Chunked => {
                let _ = write!(self.pending, "{:X}\r\n", data.len());
                true
            }
        };
        if data.len() <= COALESCE {
            self.pending.extend_from_slice(&data);
            if chunked {
                self.pending.extend_from_slice(b"\r\n");
            }
        } else {
            self.large = Some(data);
            self.closing = if chunked { b"\r\n" } else { b"" };
        }
        Ok(())
    }
}

/// One write of `bytes`; a write of nothing is an error, not progress.
fn write_some<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Poll<Result<usize, Error>> {
    match ready!(Pin::new(io).poll_write(cx, bytes)) {
        Ok(0) => Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into())),
        Ok(written) => Poll::Ready(Ok(written)),
        Err(error) => Poll::Ready(Err(error.into())),
    }
}

/// The request line and header fields, as hyper's client writes them.
fn encode_head(parts: &http::request::Parts, out: &mut BytesMut) {
    out.reserve(64 + parts.headers.len() * 32);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    match parts.uri.path_and_query() {
        Some(target) if parts.uri.scheme().is_none() => out.extend_from_slice(target.as_str().as_bytes()),
        _ => out.extend_from_slice(parts.uri.to_string().as_bytes()),
    }
    out.extend_from_slice(if parts.version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    write_fields(&parts.headers, out);
    out.extend_from_slice(b"\r\n");
}

fn write_fields(headers: &HeaderMap, out: &mut BytesMut) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The body's framing, with the headers made to say it (hyper's
/// `Client::set_length`); `None` when no body goes out.
fn set_length(
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
    exact: Option<u64>,
) -> Option<Framing> {
    let declared = content_length(headers);
    if version == Version::HTTP_10 {
        headers.remove(TRANSFER_ENCODING);
        return match (declared, exact) {
            (Some(length), _) | (None, Some(length)) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
                Some(Framing::Length(length))
            }
            (None, None) => None,
        };
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
        let last = headers.get_all(TRANSFER_ENCODING).iter().next_back();
        if !last.is_some_and(response::ends_in_chunked) {
            headers.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        return Some(Framing::Chunked);
    }
    if let Some(length) = declared {
        return Some(Framing::Length(length));
    }
    match exact {
        Some(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            Some(Framing::Length(length))
        }
        None if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => None,
        None => {
            headers.remove(CONTENT_LENGTH);
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            Some(Framing::Chunked)
        }
    }
}

/// The request's `Content-Length`, when every value agrees.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    values.try_fold(None, |known, value| response::content_length(value, known)).ok().flatten()
}
