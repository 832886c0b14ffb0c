//! Validation of `[[listeners]]` and their routes: addresses, protocols,
//! TLS certificates, and references to pools.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::file::{ListenerFile, RouteFile};
use crate::model::*;
use crate::span::KeyPath;
use crate::validate::Validator;

impl Validator<'_> {
    pub(crate) fn listeners(
        &mut self,
        raw: &[ListenerFile],
        path: &KeyPath,
        pools: &HashSet<&str>,
    ) -> Vec<Listener> {
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut listeners = Vec::new();
        for (i, listener) in raw.iter().enumerate() {
            let path = path.index(i);
            if listener.name.is_empty() {
                self.error(&path.key("name"), "must not be empty");
            } else if !names.insert(listener.name.as_str()) {
                self.error(
                    &path.key("name"),
                    format!("another listener is already named `{}`", listener.name),
                );
            }
            let listen = self.socket_addr(&path.key("listen"), &listener.listen);
            if let Some(addr) = listen {
                if !addresses.insert(addr) {
                    self.error(&path.key("listen"), format!("another listener already listens on {addr}"));
                }
            }
            if let Some(built) = self.listener(listener, &path, listen, pools) {
                listeners.push(built);
            }
        }
        listeners
    }

    fn listener(
        &mut self,
        raw: &ListenerFile,
        path: &KeyPath,
        listen: Option<SocketAddr>,
        pools: &HashSet<&str>,
    ) -> Option<Listener> {
        let protocol = match raw.protocol.as_deref().unwrap_or("http") {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                self.error(
                    &path.key("protocol"),
                    format!("unknown protocol `{other}`; expected http, https, tcp or udp"),
                );
                return None;
            }
        };
        self.pool_ref(&path.key("pool"), &raw.pool, pools);
        let tls = match (&raw.tls, protocol) {
            (Some(tls), Protocol::Https) => self.tls(tls, &path.key("tls")),
            (None, Protocol::Https) => {
                self.error(&path.key("protocol"), "an https listener needs `tls = { certificates = [...] }`");
                None
            }
            (Some(_), _) => {
                self.error(&path.key("tls"), "only an https listener takes `tls`");
                None
            }
            (None, _) => None,
        };
        if matches!(protocol, Protocol::Tcp | Protocol::Udp) && !raw.routes.is_empty() {
            self.error(
                &path.key("routes"),
                "a tcp or udp listener cannot route by HTTP rules; remove `routes`",
            );
        }
        if raw.udp.is_some() && protocol != Protocol::Udp {
            self.error(&path.key("udp"), "only a udp listener takes `udp`");
        }
        if raw.proxy_protocol.is_some() && protocol == Protocol::Udp {
            self.error(&path.key("proxy_protocol"), "a udp listener takes no PROXY headers");
        }
        let udp = match &raw.udp {
            Some(udp) => crate::Udp {
                session_idle: self.duration(
                    &path.key("udp").key("session_idle"),
                    udp.session_idle.as_ref(),
                    crate::DEFAULT_UDP_SESSION_IDLE,
                ),
                max_sessions: self
                    .positive(&path.key("udp").key("max_sessions"), udp.max_sessions)
                    .unwrap_or(crate::DEFAULT_UDP_MAX_SESSIONS),
            },
            None => crate::Udp::default(),
        };
        let routes: Vec<Route> = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(r, i, &path.key("routes").index(i), pools))
            .collect();
        let mut route_names = HashSet::new();
        for (i, route) in raw.routes.iter().enumerate() {
            let name = route.name.clone().unwrap_or_else(|| i.to_string());
            let path = path.key("routes").index(i).key("name");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                self.error(&path, "a route name is letters, digits, `-`, `_` and `.`");
            } else if !route_names.insert(name.clone()) {
                self.error(&path, format!("another route of this listener is named `{name}`"));
            }
        }
        let http3 = raw.http3.unwrap_or(false);
        if http3 && protocol != Protocol::Https {
            self.error(
                &path.key("http3"),
                "HTTP/3 runs over QUIC, which is always TLS: only an https listener serves it",
            );
        }
        let hsts = raw.hsts.clone();
        if hsts.is_some() && protocol != Protocol::Https {
            self.error(&path.key("hsts"), "only an https listener sends Strict-Transport-Security");
        }
        if hsts.as_ref().is_some_and(|h| h.is_empty() || h.bytes().any(|b| b < 0x20 || b == 0x7f)) {
            self.error(&path.key("hsts"), "must be a header value such as \"max-age=31536000\"");
        }
        Some(Listener {
            name: raw.name.clone(),
            listen: listen?,
            protocol,
            pool: raw.pool.clone(),
            rate_limit: raw.rate_limit.clone(),
            access: crate::AccessList {
                allow: self.networks(&path.key("allow"), raw.allow.as_ref()),
                deny: self.networks(&path.key("deny"), raw.deny.as_ref()),
                deny_regions: raw.deny_regions.clone().unwrap_or_default(),
            },
            max_connections: self.positive(&path.key("max_connections"), raw.max_connections),
            max_connections_per_ip: self
                .positive(&path.key("max_connections_per_ip"), raw.max_connections_per_ip),
            limits: self.limits(raw.limits.as_ref(), &path.key("limits")),
            tls,
            hsts,
            http3,
            proxy_protocol: raw
                .proxy_protocol
                .as_ref()
                .map(|p| self.proxy_protocol(p, &path.key("proxy_protocol"))),
            udp,
            routes,
        })
    }

    fn positive(&mut self, path: &KeyPath, value: Option<usize>) -> Option<usize> {
        if value == Some(0) {
            self.error(path, "must be at least 1 (leave it out for no limit)");
        }
        value
    }

    pub(crate) fn pool_ref(&mut self, path: &KeyPath, name: &str, pools: &HashSet<&str>) {
        if !pools.contains(name) {
            self.error(path, format!("no pool named `{name}` (define it as [pools.{name}])"));
        }
    }

    fn tls(&mut self, raw: &crate::file::TlsFile, path: &KeyPath) -> Option<Tls> {
        if raw.certificates.is_empty() {
            self.error(&path.key("certificates"), "needs at least one { cert, key } pair");
        }
        let mut certificates = Vec::new();
        for (i, pair) in raw.certificates.iter().enumerate() {
            let path = path.key("certificates").index(i);
            let cert = self.existing_file(&path.key("cert"), &pair.cert);
            let key = self.existing_file(&path.key("key"), &pair.key);
            certificates.push(CertificatePaths { cert: cert?, key: key? });
        }
        let client_ca = match &raw.client_ca {
            Some(ca) => Some(self.existing_file(&path.key("client_ca"), ca)?),
            None => None,
        };
        let client_auth_required = match raw.client_auth.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.error(
                    &path.key("client_auth"),
                    format!("`{other}` is not a client_auth; expected required or optional"),
                );
                true
            }
        };
        if raw.client_auth.is_some() && client_ca.is_none() {
            self.error(
                &path.key("client_auth"),
                "client certificates need `client_ca`, the CAs that sign them",
            );
        }
        let min_version = match raw.min_version.as_deref() {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(other) => {
                self.error(
                    &path.key("min_version"),
                    format!("`{other}` is not a TLS version Fulcrum speaks; expected \"1.2\" or \"1.3\""),
                );
                TlsVersion::V1_2
            }
        };
        Some(Tls { certificates, client_ca, client_auth_required, min_version })
    }

    pub(crate) fn existing_file(&mut self, path: &KeyPath, value: &str) -> Option<std::path::PathBuf> {
        let file = self.base_dir.join(self.string(path, value)?);
        if file.is_file() {
            Some(file)
        } else {
            self.error(path, format!("no such file: {}", file.display()));
            None
        }
    }

    fn route(
        &mut self,
        raw: &RouteFile,
        index: usize,
        path: &KeyPath,
        pools: &HashSet<&str>,
    ) -> Option<Route> {
        let host = raw.host.as_ref().map(|h| match h.to_ascii_lowercase().strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
            None => HostMatch::Exact(h.to_ascii_lowercase()),
        });
        if let Some(HostMatch::Wildcard(suffix)) = &host {
            if !suffix.starts_with('.') {
                self.error(&path.key("host"), "a wildcard host must look like \"*.example.com\"");
            }
        }
        if let Some(prefix) = &raw.path_prefix {
            if !prefix.starts_with('/') {
                self.error(&path.key("path_prefix"), "must start with `/`");
            }
        }
        let methods: Vec<String> = raw.methods.iter().flatten().map(|m| m.to_ascii_uppercase()).collect();
        for (i, method) in methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.error(&path.key("methods").index(i), format!("`{method}` is not an HTTP method"));
            }
        }
        let headers =
            raw.headers.iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let query = raw.query.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        let actions = [raw.pool.is_some(), raw.split.is_some(), raw.canary.is_some(), raw.redirect.is_some()];
        if actions.iter().filter(|&&given| given).count() != 1 {
            self.error(path, "a route needs exactly one of `pool`, `split`, `canary` or `redirect`");
            return None;
        }
        let target = if let Some(pool) = &raw.pool {
            self.pool_ref(&path.key("pool"), pool, pools);
            RouteTarget::Pool(pool.clone())
        } else if let Some(split) = &raw.split {
            if split.is_empty() {
                self.error(&path.key("split"), "needs at least one { pool, weight }");
            }
            for (i, part) in split.iter().enumerate() {
                self.pool_ref(&path.key("split").index(i).key("pool"), &part.pool, pools);
            }
            if split.iter().all(|p| p.weight == 0) {
                self.error(&path.key("split"), "at least one weight must be above zero");
            }
            RouteTarget::Split(split.iter().map(|p| (p.pool.clone(), p.weight)).collect())
        } else if let Some(canary) = &raw.canary {
            self.pool_ref(&path.key("canary").key("pool"), &canary.pool, pools);
            self.pool_ref(&path.key("canary").key("baseline"), &canary.baseline, pools);
            RouteTarget::Canary(self.canary(canary, &path.key("canary")))
        } else {
            let redirect = raw.redirect.as_ref().expect("exactly one action is given");
            RouteTarget::Redirect(self.redirect(redirect, &path.key("redirect"))?)
        };
        let split_key = raw.split_key.as_ref().and_then(|key| self.split_key(&path.key("split_key"), key));
        if split_key.is_some() && !matches!(target, RouteTarget::Split(_) | RouteTarget::Canary(_)) {
            self.error(&path.key("split_key"), "only a route with `split` or `canary` splits by a key");
        }
        let mirror = raw.mirror.as_ref().map(|m| {
            self.pool_ref(&path.key("mirror").key("pool"), &m.pool, pools);
            self.mirror(m, &path.key("mirror"))
        });
        let request_headers = self.header_rules(raw.request_headers.as_ref(), &path.key("request_headers"));
        if matches!(target, RouteTarget::Redirect(_)) {
            let forwarding = [
                ("mirror", mirror.is_some()),
                ("strip_prefix", raw.strip_prefix.is_some()),
                ("rewrite_prefix", raw.rewrite_prefix.is_some()),
                ("request_headers", !request_headers.is_empty()),
            ];
            for (key, given) in forwarding {
                if given {
                    self.error(&path.key(key), "a redirect forwards nothing; remove it or the redirect");
                }
            }
        }
        Some(Route {
            name: raw.name.clone().unwrap_or_else(|| index.to_string()),
            host,
            path_prefix: raw.path_prefix.clone(),
            methods,
            headers,
            query,
            target,
            split_key,
            mirror,
            strip_prefix: self.prefix(&path.key("strip_prefix"), raw.strip_prefix.as_ref()),
            rewrite_prefix: self.prefix(&path.key("rewrite_prefix"), raw.rewrite_prefix.as_ref()),
            request_headers,
            response_headers: self.header_rules(raw.response_headers.as_ref(), &path.key("response_headers")),
            rate_limit: raw.rate_limit.clone(),
            class: raw.class.clone().unwrap_or_else(|| crate::DEFAULT_CLASS.to_string()),
            allow: self.networks(&path.key("allow"), raw.allow.as_ref()),
        })
    }
}
