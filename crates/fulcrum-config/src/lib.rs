//! Fulcrum's configuration: a TOML file becomes a validated, typed
//! [`Config`] — or a list of errors that each name the key path
//! (`pools.api.backends[2].weight`) and its line:column.
//!
//! The flow is file → [`file`] (serde structs that reject unknown keys) →
//! [`validate`] (environment substitution, durations, addresses,
//! references between sections) → [`model`] (the typed config the rest of
//! Fulcrum is built from). [`diff`] says what a reload changes.

mod admission;
mod affinity;
mod autoscale;
mod diff;
mod discovery;
mod duration;
mod error;
mod file;
mod limits;
mod model;
mod proxy_protocol;
mod release;
mod resilience;
mod runtime;
mod span;
mod upstream_tls;
mod validate;
mod validate_listener;

pub use admission::{
    Admission, ConcurrencyLimit, LimitKey, LimitStore, RateLimit, TrafficClass, DEFAULT_CLASS,
};
pub use affinity::{
    Affinity, AffinityKind, AffinityMode, Redis, SessionStore, DEFAULT_AFFINITY_TTL, DEFAULT_REDIS_TIMEOUT,
};
pub use autoscale::{Autoscale, DEFAULT_AUTOSCALE_INTERVAL};
pub use diff::{diff, Change};
pub use discovery::{BackendOrigin, Discovery, DiscoveryRecords, DEFAULT_DISCOVERY_INTERVAL};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use limits::{AccessList, Limits};
pub use model::*;
pub use proxy_protocol::{ProxyProtocol, ProxyVersion};
pub use release::{
    Canary, HeaderRules, Mirror, Piece, Redirect, Template, Variable, DEFAULT_CANARY_INTERVAL,
    DEFAULT_CANARY_MAX_ERROR_RATE, DEFAULT_CANARY_MAX_P99_RATIO, DEFAULT_CANARY_MIN_REQUESTS,
    DEFAULT_CANARY_STEPS, DEFAULT_MIRROR_MAX_IN_FLIGHT, DEFAULT_MIRROR_PERCENT, DEFAULT_REDIRECT_STATUS,
};
pub use resilience::{
    CircuitBreaker, HealthCheck, PassiveHealth, ProbeKind, Retries, RetryOn, DEFAULT_MAX_REPLAY_BODY,
};
pub use runtime::{
    AddedBackend, BackendChange, DiscoveredBackend, Overlay, PoolOverlay, RouteSwitch, SplitPart,
};
pub use upstream_tls::UpstreamTls;

use std::path::{Path, PathBuf};

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    Ok(Source::read(path)?.config(&Overlay::default())?.0)
}

/// Validates config `text`; `source` names it in errors and relative file
/// paths in it (certificates) are resolved against `base_dir`.
pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let source =
        Source { text: text.to_string(), name: source.to_string(), base_dir: base_dir.to_path_buf() };
    Ok(source.config(&Overlay::default())?.0)
}

/// A config file's text and where it came from, kept so that runtime
/// changes ([`Overlay`]) are validated together with it, by the same
/// validator.
#[derive(Debug, Clone)]
pub struct Source {
    text: String,
    name: String,
    base_dir: PathBuf,
}

impl Source {
    /// Reads the config file at `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(path.display().to_string(), format!("cannot read the config file: {e}"))
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self { text, name: path.display().to_string(), base_dir })
    }

    /// Config text that is not a file (the demo's); paths resolve against `.`.
    pub fn inline(text: &str, name: &str) -> Self {
        Self { text: text.to_string(), name: name.to_string(), base_dir: PathBuf::from(".") }
    }

    /// The effective config: `overlay` layered over the file, validated
    /// as one, with the overlay's warnings (changes for pools or backends
    /// the file no longer has).
    pub fn config(&self, overlay: &Overlay) -> Result<(Config, Vec<String>), ConfigErrors> {
        let text = &self.text;
        let mut raw: file::FileConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let location = inner.span().map(|s| span::line_col(text, s.start));
                ConfigErrors {
                    source: self.name.clone(),
                    errors: vec![ConfigError {
                        path: if path == "." { String::new() } else { path },
                        location,
                        message: inner.message().to_string(),
                    }],
                }
            })?;
        let warnings = overlay.apply(&mut raw);
        let config = validate::validate(raw, text, &self.base_dir)
            .map_err(|errors| ConfigErrors { source: self.name.clone(), errors })?;
        Ok((config, warnings))
    }
}
