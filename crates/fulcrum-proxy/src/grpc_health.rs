//! The gRPC health probe (`health_check.kind = "grpc"`): one unary call of
//! `grpc.health.v1.Health/Check` over HTTP/2, as the gRPC health checking
//! protocol (grpc/grpc `doc/health-checking.md`) and Kubernetes' gRPC
//! probes define it. The call passes when its `grpc-status` is 0 and the
//! answer's status is `SERVING`; anything else fails with the reason.
//!
//! The two messages are one optional field each, so they are written and
//! read here by hand (protobuf's wire format: field 1, a string in the
//! request and an enum varint in the answer) rather than generated.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Largest answer read: the message is a few bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// `HealthCheckResponse.ServingStatus` names, by value.
const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// Asks the backend at the other end of `stream` whether `service` is serving.
pub async fn probe<S>(stream: S, authority: &str, service: &str) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{authority}/grpc.health.v1.Health/Check"))
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .body(Full::new(request_message(service)))
        .map_err(|e| format!("bad probe request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("call failed: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status().as_u16()));
    }
    let (parts, body) = response.into_parts();
    let collected = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    // A trailers-only answer carries its status in the headers.
    let trailers = collected.trailers().cloned().unwrap_or(parts.headers);
    let status = trailers.get("grpc-status").and_then(|s| s.to_str().ok()).unwrap_or("");
    if status != "0" {
        let message = trailers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
        return Err(format!("grpc-status {status:?} {message}").trim_end().to_string());
    }
    match serving_status(&collected.to_bytes())? {
        1 => Ok(()),
        other => {
            let name = SERVING_STATUS.get(other as usize).copied().unwrap_or("an unknown status");
            Err(format!("service {service:?} is {name}"))
        }
    }
}

/// A length-prefixed `HealthCheckRequest { service }`.
fn request_message(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

/// The `status` of a length-prefixed `HealthCheckResponse` (0 when absent,
/// as protobuf defaults it); fields it does not know are skipped.
fn serving_status(framed: &[u8]) -> Result<u64, String> {
    let bad = |why: &str| format!("malformed HealthCheckResponse: {why}");
    let (header, rest) = framed.split_at_checked(5).ok_or_else(|| bad("no message"))?;
    if header[0] != 0 {
        return Err(bad("compressed"));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut message = rest.get(..length).ok_or_else(|| bad("truncated"))?;
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message).ok_or_else(|| bad("truncated key"))?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message).ok_or_else(|| bad("truncated status"))?,
            (_, 0) => drop(varint(&mut message).ok_or_else(|| bad("truncated varint"))?),
            (_, 1) => message = message.get(8..).ok_or_else(|| bad("truncated fixed64"))?,
            (_, 2) => {
                let skip = varint(&mut message).ok_or_else(|| bad("truncated length"))? as usize;
                message = message.get(skip..).ok_or_else(|| bad("truncated field"))?;
            }
            (_, 5) => message = message.get(4..).ok_or_else(|| bad("truncated fixed32"))?,
            (_, wire) => return Err(bad(&format!("wire type {wire}"))),
        }
    }
    Ok(status)
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_service_and_the_answer_status_is_read() {
        assert_eq!(&request_message("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(&request_message("echo")[..], [0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']);
        // status = SERVING after an unknown string field 2.
        assert_eq!(serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]), Ok(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Ok(0));
        assert!(serving_status(&[0, 0, 0, 0, 3, 0x08]).is_err());
        assert!(serving_status(&[1, 0, 0, 0, 0]).is_err());
    }
}
