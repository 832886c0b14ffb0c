//! Typed release-engineering settings of a route — sticky splits,
//! progressive canaries, mirroring, redirects, path and header rewriting —
//! and their validation, with every default in one place.
//!
//! The canary's analysis follows Flagger's and Argo Rollouts' step
//! analysis (a weight schedule gated on error rate and latency compared to
//! the baseline); the header rules follow Envoy's
//! `request_headers_to_add`/`_remove`.

use std::time::Duration;

use crate::file::{CanaryFile, HeaderRulesFile, MirrorFile, RedirectFile};
use crate::span::KeyPath;
use crate::validate::Validator;
use crate::HashKey;

/// `canary.steps`: percentages of traffic the canary takes, in order.
pub const DEFAULT_CANARY_STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];
/// `canary.interval`.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(60);
/// `canary.min_requests`: per side, before a step is judged.
pub const DEFAULT_CANARY_MIN_REQUESTS: u64 = 100;
/// `canary.max_error_rate`: percentage points above the baseline's.
pub const DEFAULT_CANARY_MAX_ERROR_RATE: f64 = 1.0;
/// `canary.max_p99_ratio`: canary p99 over baseline p99.
pub const DEFAULT_CANARY_MAX_P99_RATIO: f64 = 1.5;
/// `mirror.percent`.
pub const DEFAULT_MIRROR_PERCENT: f64 = 100.0;
/// `mirror.max_in_flight`: copies in flight at once per route; more are shed.
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: usize = 100;
/// `redirect.status`.
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// A progressive canary: `pool` takes `steps[0]`% of the route's traffic,
/// then each next step once an interval's figures compare well to `baseline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// The new version.
    pub pool: String,
    /// The version it is compared to, which takes the rest.
    pub baseline: String,
    /// Percentages, strictly increasing, each in (0, 100].
    pub steps: Vec<f64>,
    /// How often the figures are judged (default 60s).
    pub interval: Duration,
    /// Requests each side needs before a judgement (default 100).
    pub min_requests: u64,
    /// Most the canary's error rate may exceed the baseline's, in percentage points (default 1).
    pub max_error_rate: f64,
    /// Most the canary's p99 may be of the baseline's (default 1.5).
    pub max_p99_ratio: f64,
}

/// A route that answers with a redirect itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Where to, with variables.
    pub to: Template,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: u16,
}

/// Copies of a share of a route's requests sent to another pool, whose
/// responses are discarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// The shadow pool.
    pub pool: String,
    /// Share of requests copied, percent (default 100).
    pub percent: f64,
    /// Copies in flight at once; more are shed (default 100).
    pub max_in_flight: usize,
}

/// Header changes, applied in order: remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Headers replaced (or created), lower-case names.
    pub set: Vec<(String, Template)>,
    /// Headers appended, lower-case names.
    pub add: Vec<(String, Template)>,
    /// Headers removed, lower-case names.
    pub remove: Vec<String>,
}

impl HeaderRules {
    /// Whether the rules change nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Text with `${client_ip}`, `${host}`, `${path}`, `${request_id}` and
/// `${scheme}` filled in per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

/// A part of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A request variable.
    Var(Variable),
}

/// What a template variable stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// The client's address.
    ClientIp,
    /// The request's host, without port.
    Host,
    /// The request's path with its query.
    Path,
    /// The request's `X-Request-Id` (generated when the client sent none).
    RequestId,
    /// `http` or `https`.
    Scheme,
}

impl Template {
    /// Parses `text`; an unknown variable or a `${` without `}` is the error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let Some(len) = rest[start + 2..].find('}') else {
                return Err("unterminated `${`".into());
            };
            let variable = match &rest[start + 2..start + 2 + len] {
                "client_ip" => Variable::ClientIp,
                "host" => Variable::Host,
                "path" => Variable::Path,
                "request_id" => Variable::RequestId,
                "scheme" => Variable::Scheme,
                other => {
                    return Err(format!(
                    "unknown variable `${{{other}}}`; expected client_ip, host, path, request_id or scheme"
                ))
                }
            };
            pieces.push(Piece::Var(variable));
            rest = &rest[start + 3 + len..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self(pieces))
    }

    /// Whether the template uses `variable`.
    pub fn uses(&self, variable: Variable) -> bool {
        self.0.contains(&Piece::Var(variable))
    }
}

/// Headers whose value is framing or connection management, which a rule
/// may not write: a wrong one would corrupt the message.
const UNWRITABLE: [&str; 8] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

impl Validator<'_> {
    pub(crate) fn split_key(&mut self, path: &KeyPath, raw: &str) -> Option<HashKey> {
        match HashKey::parse(raw) {
            Some(key @ (HashKey::ClientIp | HashKey::Header(_) | HashKey::Cookie(_))) => Some(key),
            _ => {
                self.error(
                    path,
                    format!("`{raw}` is not a split key; expected client_ip, header:NAME or cookie:NAME"),
                );
                None
            }
        }
    }

    pub(crate) fn canary(&mut self, raw: &CanaryFile, path: &KeyPath) -> Canary {
        let steps = raw.steps.clone().unwrap_or_else(|| DEFAULT_CANARY_STEPS.to_vec());
        if steps.is_empty() {
            self.error(&path.key("steps"), "needs at least one percentage");
        }
        for (i, step) in steps.iter().enumerate() {
            if !(*step > 0.0 && *step <= 100.0) {
                self.error(&path.key("steps").index(i), "a step is a percentage above 0 and at most 100");
            } else if i > 0 && *step <= steps[i - 1] {
                self.error(&path.key("steps").index(i), "steps must increase");
            }
        }
        if raw.pool == raw.baseline {
            self.error(&path.key("baseline"), "the baseline must be another pool than the canary");
        }
        let min_requests = raw.min_requests.unwrap_or(DEFAULT_CANARY_MIN_REQUESTS);
        if min_requests == 0 {
            self.error(&path.key("min_requests"), "must be at least 1");
        }
        let max_error_rate = raw.max_error_rate.unwrap_or(DEFAULT_CANARY_MAX_ERROR_RATE);
        if !(0.0..=100.0).contains(&max_error_rate) {
            self.error(&path.key("max_error_rate"), "is in percentage points, from 0 to 100");
        }
        let max_p99_ratio = raw.max_p99_ratio.unwrap_or(DEFAULT_CANARY_MAX_P99_RATIO);
        if !(max_p99_ratio >= 1.0 && max_p99_ratio.is_finite()) {
            self.error(
                &path.key("max_p99_ratio"),
                "must be at least 1 (the canary's p99 over the baseline's)",
            );
        }
        Canary {
            pool: raw.pool.clone(),
            baseline: raw.baseline.clone(),
            steps,
            interval: self.duration(&path.key("interval"), raw.interval.as_ref(), DEFAULT_CANARY_INTERVAL),
            min_requests,
            max_error_rate,
            max_p99_ratio,
        }
    }

    pub(crate) fn redirect(&mut self, raw: &RedirectFile, path: &KeyPath) -> Option<Redirect> {
        let status = raw.status.unwrap_or(DEFAULT_REDIRECT_STATUS);
        if ![301, 302, 303, 307, 308].contains(&status) {
            self.error(
                &path.key("status"),
                format!("{status} is not a redirect; expected 301, 302, 303, 307 or 308"),
            );
        }
        let to = self.template(&path.key("to"), &raw.to)?;
        Some(Redirect { to, status })
    }

    pub(crate) fn mirror(&mut self, raw: &MirrorFile, path: &KeyPath) -> Mirror {
        let percent = raw.percent.unwrap_or(DEFAULT_MIRROR_PERCENT);
        if !(percent > 0.0 && percent <= 100.0) {
            self.error(&path.key("percent"), "a percentage above 0 and at most 100");
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MIRROR_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            self.error(&path.key("max_in_flight"), "must be at least 1");
        }
        Mirror { pool: raw.pool.clone(), percent, max_in_flight }
    }

    pub(crate) fn prefix(&mut self, path: &KeyPath, value: Option<&String>) -> Option<String> {
        let value = value?;
        if !value.starts_with('/') {
            self.error(path, "must start with `/`");
        }
        Some(value.clone())
    }

    pub(crate) fn header_rules(&mut self, raw: Option<&HeaderRulesFile>, path: &KeyPath) -> HeaderRules {
        let Some(raw) = raw else { return HeaderRules::default() };
        let written = |v: &mut Self, key: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
            let mut rules = Vec::new();
            for (name, value) in map.iter().flatten() {
                let path = path.key(key).key(name);
                let name = name.to_ascii_lowercase();
                if !v.header_name(&path, &name) {
                    continue;
                }
                if UNWRITABLE.contains(&name.as_str()) {
                    v.error(
                        &path,
                        format!(
                            "`{name}` frames the message; Fulcrum manages it and a rule may not write it"
                        ),
                    );
                    continue;
                }
                if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    v.error(&path, "a header value may not hold control characters");
                    continue;
                }
                if let Some(template) = v.template(&path, value) {
                    rules.push((name, template));
                }
            }
            rules
        };
        let set = written(self, "set", &raw.set);
        let add = written(self, "add", &raw.add);
        let mut remove = Vec::new();
        for (i, name) in raw.remove.iter().flatten().enumerate() {
            let name = name.to_ascii_lowercase();
            if self.header_name(&path.key("remove").index(i), &name) {
                remove.push(name);
            }
        }
        HeaderRules { set, add, remove }
    }

    fn header_name(&mut self, path: &KeyPath, name: &str) -> bool {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let valid = !name.is_empty() && name.bytes().all(token);
        if !valid {
            self.error(path, format!("`{name}` is not a header name"));
        }
        valid
    }

    fn template(&mut self, path: &KeyPath, text: &str) -> Option<Template> {
        Template::parse(text).map_err(|message| self.error(path, message)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_text_and_variables() {
        let t = Template::parse("https://${host}${path}?from=${client_ip}").unwrap();
        assert_eq!(
            t.0,
            [
                Piece::Text("https://".into()),
                Piece::Var(Variable::Host),
                Piece::Var(Variable::Path),
                Piece::Text("?from=".into()),
                Piece::Var(Variable::ClientIp),
            ]
        );
        assert!(t.uses(Variable::Host) && !t.uses(Variable::RequestId));
        assert!(Template::parse("${nope}").unwrap_err().contains("unknown variable `${nope}`"));
        assert!(Template::parse("a${host").is_err());
        assert_eq!(Template::parse("$5 off").unwrap().0, [Piece::Text("$5 off".into())]);
    }
}
