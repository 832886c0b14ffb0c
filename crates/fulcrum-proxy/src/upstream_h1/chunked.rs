//! The chunked transfer coding's decoder (RFC 9112 §7.1): chunk-size
//! lines (extensions ignored), data, the CRLF after it, and the trailer
//! section after the last chunk. It works on the connection's read
//! buffer and asks for more bytes whenever a piece is incomplete.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

use super::Error;

/// Longest chunk-size line accepted, extensions included.
const MAX_SIZE_LINE: usize = 4096;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// At the CRLF that ends a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
    /// Past the end of the body.
    Done,
}

/// What one step of decoding gave.
#[derive(Debug)]
pub enum Step {
    /// Body data.
    Data(Bytes),
    /// The trailer fields (the body has ended).
    Trailers(HeaderMap),
    /// The state moved on; step again.
    Continue,
    /// More bytes are needed.
    NeedMore,
}

impl Chunked {
    /// Decodes what it can of `buf`, taking what it used out of it.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        match *self {
            Self::Size => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    return if buf.len() > MAX_SIZE_LINE { Err(Error::Chunk) } else { Ok(Step::NeedMore) };
                };
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").ok_or(Error::Chunk)?;
                let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii_end();
                if digits.is_empty() || digits.len() > 15 {
                    return Err(Error::Chunk);
                }
                let mut size = 0u64;
                for &digit in digits {
                    let value = (digit as char).to_digit(16).ok_or(Error::Chunk)?;
                    size = size << 4 | u64::from(value);
                }
                buf.advance(end + 1);
                *self = if size == 0 { Self::Trailers } else { Self::Data(size) };
                Ok(Step::Continue)
            }
            Self::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                *self = if left == 0 { Self::DataEnd } else { Self::Data(left) };
                Ok(Step::Data(data))
            }
            Self::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Chunk);
                }
                buf.advance(2);
                *self = Self::Size;
                Ok(Step::Continue)
            }
            Self::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *self = Self::Done;
                    return Ok(Step::Continue);
                }
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((length, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields.iter() {
                            let name = http::HeaderName::from_bytes(field.name.as_bytes())
                                .map_err(|_| Error::Chunk)?;
                            let value =
                                http::HeaderValue::from_bytes(field.value).map_err(|_| Error::Chunk)?;
                            trailers.append(name, value);
                        }
                        buf.advance(length);
                        *self = Self::Done;
                        Ok(Step::Trailers(trailers))
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= super::MAX_HEAD => Ok(Step::NeedMore),
                    Ok(httparse::Status::Partial) | Err(_) => Err(Error::Chunk),
                }
            }
            Self::Done => Ok(Step::NeedMore),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `wire` decodes to when it arrives `piece` bytes at a time.
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut body, mut trailers, mut fed) = (Vec::new(), None, 0);
        while state != Chunked::Done {
            match state.step(&mut buf)? {
                Step::Data(data) => body.extend_from_slice(&data),
                Step::Trailers(fields) => trailers = Some(fields),
                Step::Continue => {}
                Step::NeedMore => {
                    if fed == wire.len() {
                        return Err(Error::IncompleteBody);
                    }
                    let next = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
        Ok((body, trailers, buf.len() + wire.len() - fed))
    }

    #[test]
    fn chunks_decode_whatever_pieces_they_arrive_in() {
        let wire = b"5;ext=1\r\nhello\r\nA\r\n, chunked!\r\n0\r\nGrpc-Status: 0\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (body, trailers, left) = decode(wire, piece).unwrap();
            assert_eq!(body, b"hello, chunked!", "in pieces of {piece}");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
            assert_eq!(left, 4, "the next response's bytes are left in the buffer");
        }
        let (body, trailers, left) = decode(b"0\r\n\r\n", 1).unwrap();
        assert!(body.is_empty() && trailers.is_none() && left == 0);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [
            &b"5\r\nhelloXX0\r\n\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n",
            b"10000000000000000\r\n",
            b"\r\n",
            b"0\r\nBad Field\r\n\r\n",
        ] {
            assert!(
                matches!(decode(wire, 1), Err(Error::Chunk)),
                "{:?} was accepted",
                String::from_utf8_lossy(wire)
            );
        }
        assert!(matches!(decode(&[b'1'; MAX_SIZE_LINE + 2], 64), Err(Error::Chunk)), "an endless size line");
        assert!(matches!(decode(b"5\r\nhel", 2), Err(Error::IncompleteBody)));
    }
}
