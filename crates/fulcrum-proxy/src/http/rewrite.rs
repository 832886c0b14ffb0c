//! A route's changes to what it forwards and answers: path prefixes
//! stripped and added (Traefik's `StripPrefix` + `AddPrefix`), headers
//! removed, set and added both ways (Envoy's header manipulation), and
//! the variables their values and redirects may use.

use fulcrum_config::{HeaderRules, Piece, Template, Variable};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Uri;

/// The values of a request's template variables, taken as the client
/// sent it (before any rewrite).
#[derive(Debug, Clone)]
pub struct Variables {
    client_ip: String,
    host: String,
    path: String,
    request_id: String,
    scheme: &'static str,
}

impl Variables {
    /// The variables of `request` from `client` over `scheme`.
    pub fn of(request: &Parts, client: std::net::IpAddr, scheme: &'static str) -> Self {
        Self {
            client_ip: client.to_string(),
            host: crate::route::request_host(request).unwrap_or_default().to_string(),
            path: request.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string(),
            request_id: request
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            scheme,
        }
    }

    /// `template` with its variables filled in.
    pub fn expand(&self, template: &Template) -> String {
        let mut out = String::new();
        for piece in &template.0 {
            out.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Var(Variable::ClientIp) => &self.client_ip,
                Piece::Var(Variable::Host) => &self.host,
                Piece::Var(Variable::Path) => &self.path,
                Piece::Var(Variable::RequestId) => &self.request_id,
                Piece::Var(Variable::Scheme) => self.scheme,
            });
        }
        out
    }
}

/// Whether any of `rules` uses `variable`.
pub fn rules_use(rules: &HeaderRules, variable: Variable) -> bool {
    rules.set.iter().chain(&rules.add).any(|(_, t)| t.uses(variable))
}

/// Applies `rules` to `headers`: remove, then set, then add. A value
/// that expands to something a header cannot hold is skipped.
pub fn apply(headers: &mut HeaderMap, rules: &HeaderRules, variables: &Variables) {
    for name in &rules.remove {
        headers.remove(name.as_str());
    }
    let value = |template: &Template| HeaderValue::from_str(&variables.expand(template)).ok();
    for (name, template) in &rules.set {
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name.as_bytes()), value(template)) {
            headers.insert(name, value);
        }
    }
    for (name, template) in &rules.add {
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name.as_bytes()), value(template)) {
            headers.append(name, value);
        }
    }
}

/// `uri` (origin form) with `strip` removed from the front of its path
/// when it is there, then `prefix` added; the query is kept.
pub fn rewrite_path(uri: &Uri, strip: Option<&str>, prefix: Option<&str>) -> Uri {
    let path = uri.path();
    let mut rest = match strip {
        Some(strip) if path.starts_with(strip) => &path[strip.len()..],
        _ => path,
    };
    if rest.is_empty() {
        rest = "/";
    }
    let mut new = String::with_capacity(path.len() + prefix.map_or(0, str::len) + 1);
    match prefix {
        Some(prefix) => {
            new.push_str(prefix.trim_end_matches('/'));
            if !rest.starts_with('/') {
                new.push('/');
            }
            new.push_str(rest);
        }
        None if !rest.starts_with('/') => {
            new.push('/');
            new.push_str(rest);
        }
        None => new.push_str(rest),
    }
    if let Some(query) = uri.query() {
        new.push('?');
        new.push_str(query);
    }
    new.parse().unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_are_stripped_then_added_and_the_query_kept() {
        assert_eq!(rewrite_path(&uri("/api/users?id=1"), Some("/api"), None), "/users?id=1");
        assert_eq!(rewrite_path(&uri("/api/users?id=1"), Some("/api"), Some("/v1")), "/v1/users?id=1");
        assert_eq!(rewrite_path(&uri("/api"), Some("/api"), None), "/");
        assert_eq!(rewrite_path(&uri("/apis"), Some("/api/"), Some("/v1/")), "/v1/apis");
        assert_eq!(rewrite_path(&uri("/users"), None, Some("/v1")), "/v1/users");
        assert_eq!(rewrite_path(&uri("/apiary"), Some("/api"), None), "/ary");
    }

    #[test]
    fn rules_remove_set_and_add_with_variables() {
        let parts = http::Request::get("/a?b=1")
            .header("host", "shop.example:8080")
            .header("x-request-id", "r-1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let vars = Variables::of(&parts, "10.1.2.3".parse().unwrap(), "https");
        let template = |t: &str| Template::parse(t).unwrap();
        assert_eq!(
            vars.expand(&template("${scheme}://${host}${path} ${request_id}")),
            "https://shop.example/a?b=1 r-1"
        );
        let rules = HeaderRules {
            set: vec![("x-env".into(), template("prod")), ("host".into(), template("internal"))],
            add: vec![("x-client".into(), template("${client_ip}"))],
            remove: vec!["x-debug".into()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-debug", HeaderValue::from_static("1"));
        headers.insert("x-env", HeaderValue::from_static("dev"));
        headers.insert("x-client", HeaderValue::from_static("first"));
        apply(&mut headers, &rules, &vars);
        assert!(!headers.contains_key("x-debug"));
        assert_eq!(headers["x-env"], "prod");
        assert_eq!(headers["host"], "internal");
        let clients: Vec<_> = headers.get_all("x-client").iter().collect();
        assert_eq!(clients, ["first", "10.1.2.3"]);
    }
}
