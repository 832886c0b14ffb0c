//! Fulcrum's configuration: a TOML file becomes a validated, typed
//! [`Config`] — or a list of errors that each name the key path
//! (`pools.api.backends[2].weight`) and its line:column.
//!
//! The flow is file → [`file`] (serde structs that reject unknown keys) →
//! [`validate`] (environment substitution, durations, addresses,
//! references between sections) → [`model`] (the typed config the rest of
//! Fulcrum is built from). [`diff`] says what a reload changes.

mod diff;
mod duration;
mod error;
mod file;
mod model;
mod resilience;
mod runtime;
mod span;
mod validate;
mod validate_listener;

pub use diff::{diff, Change};
pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use resilience::{CircuitBreaker, HealthCheck, PassiveHealth, ProbeKind, Retries, RetryOn};
pub use runtime::{AddedBackend, BackendChange, Overlay, PoolOverlay};

use std::path::Path;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(path.display().to_string(), format!("cannot read the config file: {e}"))
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &path.display().to_string(), base_dir)
}

/// Validates config `text`; `source` names it in errors and relative file
/// paths in it (certificates) are resolved against `base_dir`.
pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let raw: file::FileConfig =
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = inner.span().map(|s| span::line_col(text, s.start));
            ConfigErrors {
                source: source.to_string(),
                errors: vec![ConfigError {
                    path: if path == "." { String::new() } else { path },
                    location,
                    message: inner.message().to_string(),
                }],
            }
        })?;
    validate::validate(raw, text, base_dir)
        .map_err(|errors| ConfigErrors { source: source.to_string(), errors })
}
