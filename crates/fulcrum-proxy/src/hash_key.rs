//! The per-request hash key of hashing algorithms (`hash_key` in a pool's
//! config): the client's address masked to its subnet, a header, a cookie,
//! the path or a query parameter. A request without the configured
//! property falls back to its client address, so it still lands on a
//! consistent backend. Hashes are `fulcrum_balance::hash64`: the same on
//! every instance and across restarts.

use std::net::IpAddr;

use fulcrum_balance::hash64;
use fulcrum_config::{HashKey, Pool as PoolConfig};
use http::request::Parts;

/// The hash of `client` masked to the pool's subnet prefix.
pub fn client_key(client: IpAddr, pool: &PoolConfig) -> u64 {
    match client {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & prefix_mask_u32(pool.subnet_mask);
            hash64(&bits.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & prefix_mask_u128(pool.subnet_mask_v6);
            hash64(&bits.to_be_bytes())
        }
    }
}

/// `client` masked to its /`v4` or /`v6` network, as a number (sessions
/// of `client_ip` affinity are keyed by it).
pub fn masked(client: IpAddr, v4: u8, v6: u8) -> u128 {
    match client {
        IpAddr::V4(a) => u128::from(u32::from(a) & prefix_mask_u32(v4)),
        IpAddr::V6(a) => u128::from(a) & prefix_mask_u128(v6),
    }
}

fn prefix_mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn prefix_mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// The hash key of an HTTP request for `pool`.
pub fn request_key(request: &Parts, client: IpAddr, pool: &PoolConfig) -> u64 {
    let value: Option<&[u8]> = match &pool.hash_key {
        HashKey::ClientIp => None,
        HashKey::Path => Some(request.uri.path().as_bytes()),
        HashKey::Header(name) => request.headers.get(name.as_str()).map(|v| v.as_bytes()),
        HashKey::Cookie(name) => cookie(request, name).map(str::as_bytes),
        HashKey::Query(name) => query_parameter(request, name).map(str::as_bytes),
    };
    value.map_or_else(|| client_key(client, pool), hash64)
}

/// The value of cookie `name` of `request`.
pub fn cookie<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn query_parameter<'a>(request: &'a Parts, name: &str) -> Option<&'a str> {
    request
        .uri
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(hash_key: HashKey, subnet_mask: u8) -> PoolConfig {
        PoolConfig {
            algorithm: fulcrum_config::Algorithm::IpHash,
            backends: Vec::new(),
            timeouts: Default::default(),
            max_idle_per_backend: 1,
            hash_key,
            subnet_mask,
            subnet_mask_v6: 64,
            locality_zone: None,
            slow_start: None,
            geo: false,
            health_check: None,
            passive_health: None,
            circuit_breaker: None,
            retries: None,
            affinity: None,
            admission: None,
            send_proxy_protocol: None,
            tls: None,
            protocol: Default::default(),
            discovery: None,
            autoscale: None,
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn subnet_masks_group_clients() {
        let p = pool(HashKey::ClientIp, 24);
        assert_eq!(
            client_key("10.1.2.3".parse().unwrap(), &p),
            client_key("10.1.2.200".parse().unwrap(), &p)
        );
        assert_ne!(client_key("10.1.2.3".parse().unwrap(), &p), client_key("10.1.3.3".parse().unwrap(), &p));
        assert_eq!(
            client_key("2001:db8::1".parse().unwrap(), &p),
            client_key("2001:db8::ffff".parse().unwrap(), &p)
        );
        let all = pool(HashKey::ClientIp, 0);
        assert_eq!(
            client_key("1.1.1.1".parse().unwrap(), &all),
            client_key("9.9.9.9".parse().unwrap(), &all)
        );
    }

    #[test]
    fn keys_come_from_the_configured_place_or_fall_back_to_the_client() {
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let by_cookie = pool(HashKey::Cookie("session".into()), 32);
        let request = parts("/a", &[("cookie", "theme=dark; session=abc123")]);
        assert_eq!(request_key(&request, client, &by_cookie), hash64(b"abc123"));
        let no_cookie = parts("/a", &[]);
        assert_eq!(request_key(&no_cookie, client, &by_cookie), client_key(client, &by_cookie));
        let by_query = pool(HashKey::Query("user".into()), 32);
        assert_eq!(request_key(&parts("/x?a=1&user=42", &[]), client, &by_query), hash64(b"42"));
        let by_header = pool(HashKey::Header("x-tenant".into()), 32);
        assert_eq!(request_key(&parts("/", &[("X-Tenant", "acme")]), client, &by_header), hash64(b"acme"));
        let by_path = pool(HashKey::Path, 32);
        assert_eq!(request_key(&parts("/img/1.png?v=2", &[]), client, &by_path), hash64(b"/img/1.png"));
    }
}
