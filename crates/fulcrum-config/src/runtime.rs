//! Changes an operator made at runtime (through the admin API), kept apart
//! from the config file and layered over it: backends added, removed or
//! re-weighted, operator states, and routes switched to another pool or
//! split (blue-green). The overlay is persisted next to the
//! config as JSON (atomically: write, fsync, rename, fsync the directory)
//! and re-applied on every start and reload, so nothing an operator did is
//! silently lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::file::{BackendFile, FileConfig, SplitFile};

/// Runtime changes to one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOverlay {
    /// Backends added through the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<AddedBackend>,
    /// Backends removed through the API (by address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<SocketAddr>,
    /// Weight and state changes, by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changed: BTreeMap<SocketAddr, BackendChange>,
}

/// A backend added at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedBackend {
    /// `IP:port`.
    pub address: SocketAddr,
    /// Relative capacity.
    pub weight: u32,
    /// Zone, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Region, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A weight and/or state override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendChange {
    /// New weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// New state: `active`, `draining` or `maintenance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A route's action replaced at runtime: one pool, or a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RouteSwitch {
    /// Every request to this pool.
    Pool(String),
    /// Requests split over these pools by weight.
    Split(Vec<SplitPart>),
}

/// One pool of a runtime split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitPart {
    /// The pool.
    pub pool: String,
    /// Its weight.
    pub weight: u32,
}

/// Every runtime change, by pool and by listener and route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Changes per pool name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolOverlay>,
    /// Route switches per listener name, then route name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, BTreeMap<String, RouteSwitch>>,
    /// Backends DNS discovery found, per pool name: layered between the
    /// file and the operator's changes, and never persisted (they are
    /// resolved again at start).
    #[serde(skip)]
    pub discovered: BTreeMap<String, Vec<DiscoveredBackend>>,
}

/// A backend DNS discovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveredBackend {
    /// `IP:port`.
    pub address: SocketAddr,
    /// Its weight (an SRV record's; 1 for A records).
    pub weight: u32,
    /// Its priority level (an SRV record's priority ranked, 0 first; 0 for A records).
    pub priority: u8,
    /// Gone from DNS: it takes no new requests and leaves once idle.
    pub draining: bool,
}

impl Overlay {
    /// Where the overlay of the config at `config` is kept: `FILE.runtime.json` beside it.
    pub fn path_for(config: &Path) -> PathBuf {
        let mut name = config.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".runtime.json");
        config.with_file_name(name)
    }

    /// Reads the overlay at `path`; a missing file is an empty overlay.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the overlay to `path` atomically and durably.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let temporary = path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(serde_json::to_string_pretty(self).expect("an overlay serializes").as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Layers the overlay over the file's backend lists, before
    /// validation: the effective config then goes through the one
    /// validator the file alone goes through (weights, duplicates, states,
    /// table sizes…). Changes for pools or backends the file no longer has
    /// are skipped and returned as warnings.
    pub(crate) fn apply(&self, raw: &mut FileConfig) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, found) in &self.discovered {
            let Some(pool) = raw.pools.get_mut(name) else { continue };
            for backend in found {
                // A static backend at the same address wins.
                if pool.backends.iter().any(|b| b.address.parse::<SocketAddr>().ok() == Some(backend.address))
                {
                    continue;
                }
                pool.backends.push(BackendFile {
                    address: backend.address.to_string(),
                    weight: Some(backend.weight),
                    zone: None,
                    region: None,
                    priority: Some(backend.priority),
                    state: backend.draining.then(|| "draining".to_string()),
                    origin: crate::BackendOrigin::Dns,
                });
            }
        }
        for (name, overlay) in &self.pools {
            let Some(pool) = raw.pools.get_mut(name) else {
                warnings
                    .push(format!("runtime changes for pool `{name}` skipped: the config has no such pool"));
                continue;
            };
            let is = |b: &BackendFile, address: &SocketAddr| {
                b.address.parse::<SocketAddr>().ok() == Some(*address)
            };
            pool.backends.retain(|b| !overlay.removed.iter().any(|a| is(b, a)));
            for added in &overlay.added {
                if !pool.backends.iter().any(|b| is(b, &added.address)) {
                    pool.backends.push(BackendFile {
                        address: added.address.to_string(),
                        weight: Some(added.weight),
                        zone: added.zone.clone(),
                        region: added.region.clone(),
                        priority: None,
                        state: None,
                        origin: crate::BackendOrigin::Api,
                    });
                }
            }
            for (address, change) in &overlay.changed {
                let Some(backend) = pool.backends.iter_mut().find(|b| is(b, address)) else {
                    warnings.push(format!(
                        "runtime change for {address} in pool `{name}` skipped: no such backend"
                    ));
                    continue;
                };
                if let Some(weight) = change.weight {
                    backend.weight = Some(weight);
                }
                if let Some(state) = &change.state {
                    backend.state = Some(state.clone());
                }
            }
        }
        for (listener_name, switches) in &self.routes {
            let Some(listener) = raw.listeners.iter_mut().find(|l| l.name == *listener_name) else {
                warnings.push(format!(
                    "runtime route changes for listener `{listener_name}` skipped: the config has no such listener"
                ));
                continue;
            };
            for (route_name, switch) in switches {
                let found = listener.routes.iter_mut().enumerate().find(|(i, r)| {
                    r.name.as_deref().map_or_else(|| i.to_string() == *route_name, |n| n == route_name)
                });
                let Some((_, route)) = found else {
                    warnings.push(format!(
                        "runtime change of route `{route_name}` of listener `{listener_name}` skipped: no such route"
                    ));
                    continue;
                };
                // The switch replaces the route's action, whatever it was.
                route.canary = None;
                route.redirect = None;
                (route.pool, route.split) = match switch {
                    RouteSwitch::Pool(pool) => (Some(pool.clone()), None),
                    RouteSwitch::Split(parts) => (
                        None,
                        Some(
                            parts
                                .iter()
                                .map(|p| SplitFile { pool: p.pool.clone(), weight: p.weight })
                                .collect(),
                        ),
                    ),
                };
            }
        }
        warnings
    }

    /// Records a route switched to another pool or split.
    pub fn switch_route(&mut self, listener: &str, route: &str, switch: RouteSwitch) {
        self.routes.entry(listener.to_string()).or_default().insert(route.to_string(), switch);
    }

    /// Records an added backend (undoing an earlier removal of it).
    pub fn add(&mut self, pool: &str, backend: AddedBackend) {
        let overlay = self.pools.entry(pool.to_string()).or_default();
        overlay.removed.retain(|a| *a != backend.address);
        overlay.added.retain(|b| b.address != backend.address);
        overlay.changed.remove(&backend.address);
        overlay.added.push(backend);
    }

    /// Records a weight and/or state change.
    pub fn change(&mut self, pool: &str, address: SocketAddr, change: BackendChange) {
        let entry = self.pools.entry(pool.to_string()).or_default().changed.entry(address).or_default();
        if change.weight.is_some() {
            entry.weight = change.weight;
        }
        if change.state.is_some() {
            entry.state = change.state;
        }
    }

    /// Records a removal.
    pub fn remove(&mut self, pool: &str, address: SocketAddr) {
        let overlay = self.pools.entry(pool.to_string()).or_default();
        overlay.changed.remove(&address);
        let was_added = overlay.added.iter().any(|b| b.address == address);
        overlay.added.retain(|b| b.address != address);
        if !was_added && !overlay.removed.contains(&address) {
            overlay.removed.push(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> crate::Source {
        crate::Source::inline(
            "[pools.app]\nbackends = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\" }]\n",
            "t",
        )
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn changes_layer_over_the_file_and_round_trip_through_disk() {
        let mut overlay = Overlay::default();
        overlay.add("app", AddedBackend { address: addr(3), weight: 5, zone: None, region: None });
        overlay.change("app", addr(1), BackendChange { weight: Some(9), state: Some("draining".into()) });
        overlay.remove("app", addr(2));
        let (config, warnings) = file().config(&overlay).unwrap();
        assert!(warnings.is_empty());
        let backends = &config.pools["app"].backends;
        assert_eq!(backends.iter().map(|b| b.address.port()).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((backends[0].weight, backends[0].state), (9, crate::BackendState::Draining));
        assert_eq!(backends[1].weight, 5);

        let dir = std::env::temp_dir().join(format!("fulcrum-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Overlay::path_for(&dir.join("fulcrum.toml"));
        assert!(path.ends_with("fulcrum.toml.runtime.json"));
        overlay.save(&path).unwrap();
        assert_eq!(Overlay::load(&path).unwrap(), overlay);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removing_an_added_backend_forgets_it_and_stale_changes_are_reported() {
        let mut overlay = Overlay::default();
        overlay.add("app", AddedBackend { address: addr(3), weight: 1, zone: None, region: None });
        overlay.remove("app", addr(3));
        assert_eq!(overlay.pools["app"], PoolOverlay::default());
        overlay.change("gone", addr(1), BackendChange { weight: Some(2), state: None });
        overlay.change("app", addr(7), BackendChange { weight: Some(2), state: None });
        let (_, warnings) = file().config(&overlay).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn runtime_changes_go_through_the_files_validator() {
        let mut overlay = Overlay::default();
        overlay.change("app", addr(1), BackendChange { weight: Some(0), state: Some("sleeping".into()) });
        let errors = file().config(&overlay).unwrap_err().errors;
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["pools.app.backends[0].weight", "pools.app.backends[0].state"], "{errors:?}");
    }
}
