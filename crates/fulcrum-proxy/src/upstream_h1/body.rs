//! A backend's response body, read from its connection as the client
//! takes it. While it is read, the rest of the request body (if any)
//! keeps streaming out; once it ends, the connection is handed back
//! through [`Body::into_reusable`] when it may carry another request.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::chunked::{Chunked, Step};
use super::response::{Framing, Head};
use super::{Connection, Error};

/// A response body being read off a backend connection.
#[derive(Debug)]
pub struct Body {
    connection: Option<Connection>,
    decoding: Decoding,
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl Body {
    /// The response `head` announced, read from `connection`.
    pub fn response(head: Head, connection: Connection) -> http::Response<Self> {
        let decoding = match head.framing {
            Framing::Empty | Framing::Length(0) => Decoding::Done,
            Framing::Length(length) => Decoding::Length(length),
            Framing::Chunked => Decoding::Chunked(Chunked::Size),
            Framing::UntilClose => Decoding::UntilClose,
        };
        let body = Self { connection: Some(connection), decoding, keep_alive: head.keep_alive };
        let mut response = http::Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        response
    }

    /// The connection, when the body has been read to its end, the whole
    /// request went out and nothing else arrived: ready for another request.
    pub fn into_reusable(mut self) -> Option<Connection> {
        let connection = self.connection.take()?;
        let clean = self.decoding == Decoding::Done
            && self.keep_alive
            && connection.request_sent()
            && connection.0.read.is_empty();
        clean.then_some(connection)
    }

    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(connection) = &mut self.connection else { return Poll::Ready(None) };
        // The upload goes on while the answer is read (full duplex); a
        // backend that stopped reading it has already answered.
        if !connection.request_sent() {
            match connection.poll_write(cx) {
                Poll::Ready(Err(Error::RequestBody(error))) => {
                    return Poll::Ready(Some(Err(Error::RequestBody(error))));
                }
                Poll::Ready(Err(_)) => {
                    self.keep_alive = false;
                    connection.0.outgoing = None;
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            let read = &mut connection.0.read;
            match &mut self.decoding {
                Decoding::Done => return Poll::Ready(None),
                Decoding::Length(left) if !read.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                    *left -= take as u64;
                    if *left == 0 {
                        self.decoding = Decoding::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(read.split_to(take).freeze()))));
                }
                Decoding::UntilClose if !read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(read.split().freeze()))));
                }
                Decoding::Chunked(state) => match state.step(read)? {
                    Step::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Step::Trailers(trailers) => {
                        self.decoding = Decoding::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Step::Continue => {
                        if *state == Chunked::Done {
                            self.decoding = Decoding::Done;
                        }
                        continue;
                    }
                    Step::NeedMore => {}
                },
                Decoding::Length(_) | Decoding::UntilClose => {}
            }
            if ready!(connection.poll_fill(cx))? == 0 {
                if self.decoding == Decoding::UntilClose {
                    self.decoding = Decoding::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::IncompleteBody)));
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let frame = ready!(this.poll_decode(cx));
        if let Some(Err(_)) = &frame {
            // Mid-body, the connection's state is unknown: never reused.
            this.connection = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.decoding == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoding {
            Decoding::Done => SizeHint::with_exact(0),
            Decoding::Length(left) => SizeHint::with_exact(left),
            Decoding::Chunked(_) | Decoding::UntilClose => SizeHint::default(),
        }
    }
}
