//! The L7 side: serving HTTP/1.1 and HTTP/2 client connections (clear or
//! TLS) and forwarding each request to a backend.

mod body;
mod forward;
mod grpc;
mod head_timer;
mod headers;
mod idle;
mod respond;
mod rewrite;
mod serve;
mod streams;
mod upgrade;
mod validate;

pub use forward::{handle_quic, outcome_of_status, send, Connection};
pub use headers::{clone_parts, names_no_field, ClientInfo};
pub use idle::{Activity, Census, Watchlist};
pub use serve::{serve, Builders};

/// What the fuzz targets drive of the request path.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::net::IpAddr;

    use http::request::Parts;

    /// A pool hashing each kind of key.
    fn pools() -> &'static [fulcrum_config::Pool] {
        static POOLS: std::sync::OnceLock<Vec<fulcrum_config::Pool>> = std::sync::OnceLock::new();
        POOLS.get_or_init(|| {
            ["client_ip", "header:x-user", "cookie:session", "path", "query:id"]
                .iter()
                .map(|key| {
                    let text = format!(
                        "[pools.app]\nalgorithm = \"consistent_hash\"\nhash_key = \"{key}\"\nsubnet_mask = 24\n"
                    );
                    let config = fulcrum_config::parse(&text, "fuzz", std::path::Path::new(".")).expect("valid");
                    config.pools["app"].clone()
                })
                .collect()
        })
    }

    /// Every decision taken on a parsed head before it is forwarded.
    pub fn decide(mut parts: Parts, client: IpAddr) {
        if super::validate::refuse(&parts).is_some() {
            return;
        }
        let limits = fulcrum_config::Limits::default();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let _ = super::forward::beyond_limits(&parts, &limits, false, declared);
        for pool in pools() {
            let _ = crate::hash_key::request_key(&parts, client, pool);
        }
        let upgrade = super::headers::is_upgrade(&parts);
        let info = super::ClientInfo {
            ip: http::HeaderValue::from_static("10.0.0.1"),
            proto: "http",
            endpoints: crate::proxy_protocol::Endpoints {
                client: std::net::SocketAddr::new(client, 1),
                local: std::net::SocketAddr::new(client, 2),
            },
            cert_subject: Some(None),
            authority_host: Default::default(),
        };
        let variables = super::rewrite::Variables::of(&parts, client, "http");
        super::headers::prepare_request(&mut parts, &info, upgrade);
        super::rewrite::apply(&mut parts.headers, rules(), &variables);
        let _ = super::rewrite::rewrite_path(&parts.uri, Some("/api"), Some("/v1"));
        let _ = variables.expand(&rules().set[0].1);
    }

    /// Header rules using every template variable.
    fn rules() -> &'static fulcrum_config::HeaderRules {
        static RULES: std::sync::OnceLock<fulcrum_config::HeaderRules> = std::sync::OnceLock::new();
        RULES.get_or_init(|| {
            let template = "${scheme}://${host}${path} ${client_ip} ${request_id}";
            fulcrum_config::HeaderRules {
                set: vec![("x-seen".into(), fulcrum_config::Template::parse(template).expect("valid"))],
                add: vec![("host".into(), fulcrum_config::Template::parse("${host}").expect("valid"))],
                remove: vec!["cookie".into()],
            }
        })
    }
}
