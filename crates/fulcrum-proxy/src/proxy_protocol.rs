//! The PROXY protocol ([HAProxy's specification], versions 1 and 2),
//! parsed and written with the `ppp` crate.
//!
//! In: a listener with `proxy_protocol` takes connections only from its
//! `trusted` networks, and each must open with a header, complete within
//! the first read (HAProxy's `accept-proxy` rule: a balancer in front
//! sends it in one segment); the address it carries is the client from
//! then on. Out: a pool with `send_proxy_protocol` opens every upstream
//! connection with a header naming the client (`send-proxy-v2`).
//!
//! [HAProxy's specification]: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_config::{ProxyProtocol, ProxyVersion};
use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header read (a v2 header with its TLVs); a longer one is refused.
const MAX_HEADER: usize = 1024;

/// Where a connection comes from and where it was made to, as the client
/// sees it: the socket's ends, or what a trusted PROXY header carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// Reads and removes the PROXY header `stream` must open with, within
/// `limit`. A `LOCAL` command (a health check of the balancer in front)
/// or an `UNKNOWN` address keeps the socket's own `endpoints`. `Err`
/// says why the connection must be closed.
pub async fn receive(
    stream: &mut TcpStream,
    accepted: &ProxyProtocol,
    endpoints: Endpoints,
    limit: Duration,
) -> Result<Endpoints, String> {
    let mut buffer = [0u8; MAX_HEADER];
    let read = tokio::time::timeout(limit, stream.peek(&mut buffer))
        .await
        .map_err(|_| format!("no PROXY header within {limit:?}"))?
        .map_err(|e| format!("reading the PROXY header failed: {e}"))?;
    let (carried, length) = parse(&buffer[..read], accepted)?;
    // Consume exactly the header: what follows belongs to the protocol.
    stream
        .read_exact(&mut buffer[..length])
        .await
        .map_err(|e| format!("reading the PROXY header failed: {e}"))?;
    Ok(carried.unwrap_or(endpoints))
}

/// The endpoints a header at the start of `bytes` carries (`None`:
/// keep the socket's) and its length.
pub fn parse(bytes: &[u8], accepted: &ProxyProtocol) -> Result<(Option<Endpoints>, usize), String> {
    let endpoints = |client: SocketAddr, local: SocketAddr| Some(Endpoints { client, local });
    match HeaderResult::parse(bytes) {
        header if header.is_incomplete() => {
            Err(format!("no complete PROXY header in the first {} bytes received", bytes.len()))
        }
        HeaderResult::V1(Ok(header)) if accepted.v1 => {
            let carried = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => endpoints(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                ppp::v1::Addresses::Tcp6(a) => endpoints(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                ppp::v1::Addresses::Unknown => None,
            };
            Ok((carried, header.header.len()))
        }
        HeaderResult::V2(Ok(header)) if accepted.v2 => {
            let carried = match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => endpoints(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, v2::Addresses::IPv6(a)) => endpoints(
                    (a.source_address, a.source_port).into(),
                    (a.destination_address, a.destination_port).into(),
                ),
                (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            Ok((carried, header.len()))
        }
        HeaderResult::V1(Ok(_)) => Err("a PROXY v1 header, but this listener takes only v2".into()),
        HeaderResult::V2(Ok(_)) => Err("a PROXY v2 header, but this listener takes only v1".into()),
        HeaderResult::V1(Err(e)) => Err(format!("not a PROXY header: {e}")),
        HeaderResult::V2(Err(e)) => Err(format!("not a PROXY header: {e}")),
    }
}

/// The header naming `endpoints` in `version`.
pub fn header(version: ProxyVersion, endpoints: Endpoints) -> Vec<u8> {
    // Both ends in one family, as the header requires.
    let (client, local) = match (endpoints.client, endpoints.local) {
        (client @ SocketAddr::V4(_), local @ SocketAddr::V6(_)) => (to_v6(client), local),
        (client @ SocketAddr::V6(_), local @ SocketAddr::V4(_)) => (client, to_v6(local)),
        ends => ends,
    };
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((client, local)).to_string().into_bytes(),
        ProxyVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, local),
        )
        .build()
        .expect("a header of two addresses fits in memory"),
    }
}

/// The header of a connection made on the balancer's own behalf (a health
/// check): v1 `UNKNOWN`, v2 `LOCAL`.
pub fn local_header(version: ProxyVersion) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        ProxyVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .expect("an empty header fits in memory"),
    }
}

fn to_v6(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> ProxyProtocol {
        ProxyProtocol { v1: true, v2: true, trusted: Vec::new() }
    }

    fn ends(client: &str, local: &str) -> Endpoints {
        Endpoints { client: client.parse().unwrap(), local: local.parse().unwrap() }
    }

    #[test]
    fn what_is_written_parses_back_in_both_versions() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (client, local) in
                [("203.0.113.7:5555", "10.0.0.1:443"), ("[2001:db8::1]:5555", "[2001:db8::2]:80")]
            {
                let written = header(version, ends(client, local));
                let mut bytes = written.clone();
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
                let (carried, length) = parse(&bytes, &both()).unwrap();
                assert_eq!((carried, length), (Some(ends(client, local)), written.len()), "{version:?}");
            }
            let (carried, length) = parse(&local_header(version), &both()).unwrap();
            assert_eq!((carried, length), (None, local_header(version).len()));
        }
    }

    #[test]
    fn partial_malformed_and_unaccepted_headers_are_refused() {
        let v2 = header(ProxyVersion::V2, ends("203.0.113.7:1", "10.0.0.1:2"));
        assert!(parse(&v2[..20], &both()).unwrap_err().contains("no complete PROXY header"));
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n", &both()).unwrap_err().contains("not a PROXY header"));
        assert!(parse(b"PROXY TCP4 1.2.3.4 nonsense\r\n", &both()).is_err());
        let v1_only = ProxyProtocol { v1: true, v2: false, trusted: Vec::new() };
        assert!(parse(&v2, &v1_only).unwrap_err().contains("only v1"));
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let written = header(ProxyVersion::V1, ends("203.0.113.7:1", "[2001:db8::2]:2"));
        assert!(String::from_utf8(written)
            .unwrap()
            .starts_with("PROXY TCP6 ::ffff:203.0.113.7 2001:db8::2 1 2"));
    }
}
