//! Typed autoscaling-advisor settings (`[pools.NAME.autoscale]`): the
//! bounds, the utilization to size for, cooldowns, the forecast horizon
//! and the hooks decisions are sent to, with their defaults in one place.

use std::time::Duration;

use crate::file::AutoscaleFile;
use crate::span::KeyPath;
use crate::validate::Validator;

/// `autoscale.min`.
pub const DEFAULT_AUTOSCALE_MIN: u32 = 1;
/// `autoscale.target_utilization`.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// `autoscale.per_backend_concurrency`.
pub const DEFAULT_PER_BACKEND_CONCURRENCY: u32 = 100;
/// `autoscale.scale_up_cooldown`.
pub const DEFAULT_SCALE_UP_COOLDOWN: Duration = Duration::from_secs(60);
/// `autoscale.scale_down_cooldown`.
pub const DEFAULT_SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(300);
/// `autoscale.predict`.
pub const DEFAULT_PREDICT: Duration = Duration::from_secs(30);
/// `autoscale.interval`.
pub const DEFAULT_AUTOSCALE_INTERVAL: Duration = Duration::from_secs(10);

/// A pool's autoscaling advisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    /// Fewest backends to advise.
    pub min: u32,
    /// Most backends to advise.
    pub max: u32,
    /// In-flight requests over capacity to size for, in (0, 1].
    pub target_utilization: f64,
    /// Requests one backend serves at once at full utilization.
    pub per_backend_concurrency: u32,
    /// Time after any decision before a scale-up.
    pub scale_up_cooldown: Duration,
    /// Time after any decision before a scale-down.
    pub scale_down_cooldown: Duration,
    /// How far ahead the load is forecast (zero: no forecast).
    pub predict: Duration,
    /// How often the advice is evaluated.
    pub interval: Duration,
    /// `http://` URL each decision is POSTed to as JSON.
    pub webhook: Option<String>,
    /// Program run for each decision, with `FULCRUM_POOL`, `FULCRUM_CURRENT`
    /// and `FULCRUM_DESIRED` in its environment.
    pub exec: Option<String>,
}

impl Validator<'_> {
    pub(crate) fn autoscale(&mut self, raw: &AutoscaleFile, path: &KeyPath) -> Autoscale {
        let min = raw.min.unwrap_or(DEFAULT_AUTOSCALE_MIN);
        if min == 0 {
            self.error(&path.key("min"), "must be at least 1");
        }
        if raw.max < min.max(1) {
            self.error(&path.key("max"), format!("must be at least `min` ({min})"));
        }
        let target_utilization = raw.target_utilization.unwrap_or(DEFAULT_TARGET_UTILIZATION);
        if !(target_utilization > 0.0 && target_utilization <= 1.0) {
            self.error(&path.key("target_utilization"), "must be above 0 and at most 1 (0.7 sizes for 70%)");
        }
        let per_backend_concurrency = raw.per_backend_concurrency.unwrap_or(DEFAULT_PER_BACKEND_CONCURRENCY);
        if per_backend_concurrency == 0 {
            self.error(&path.key("per_backend_concurrency"), "must be at least 1 request");
        }
        let predict = match &raw.predict {
            Some(text) if text.trim() == "0s" || text.trim() == "0" => Duration::ZERO,
            other => self.duration(&path.key("predict"), other.as_ref(), DEFAULT_PREDICT),
        };
        let hook = raw.hook.as_ref();
        let webhook = hook.and_then(|h| h.webhook.as_ref()).and_then(|url| {
            let path = path.key("hook").key("webhook");
            let host = url.strip_prefix("http://").map(|rest| rest.split('/').next().unwrap_or_default());
            match host {
                Some(host) if !host.is_empty() && !url.contains(char::is_whitespace) => Some(url.clone()),
                _ => {
                    self.error(
                        &path,
                        format!("`{url}` is not an http:// URL (e.g. \"http://127.0.0.1:8500/scale\")"),
                    );
                    None
                }
            }
        });
        let exec = hook.and_then(|h| h.exec.clone());
        if exec.as_ref().is_some_and(|e| e.trim().is_empty()) {
            self.error(&path.key("hook").key("exec"), "must name a program");
        }
        Autoscale {
            min: min.max(1),
            max: raw.max.max(min.max(1)),
            target_utilization,
            per_backend_concurrency: per_backend_concurrency.max(1),
            scale_up_cooldown: self.duration(
                &path.key("scale_up_cooldown"),
                raw.scale_up_cooldown.as_ref(),
                DEFAULT_SCALE_UP_COOLDOWN,
            ),
            scale_down_cooldown: self.duration(
                &path.key("scale_down_cooldown"),
                raw.scale_down_cooldown.as_ref(),
                DEFAULT_SCALE_DOWN_COOLDOWN,
            ),
            predict,
            interval: self.duration(&path.key("interval"), raw.interval.as_ref(), DEFAULT_AUTOSCALE_INTERVAL),
            webhook,
            exec,
        }
    }
}
