//! What a reload changes: the differences between two valid configs, for
//! the log and the reload API (after sozu's `ConfigState::diff`).

use std::collections::BTreeSet;
use std::fmt;

use crate::model::Config;

/// One difference between the running and the new config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `[server]` settings changed (take effect on restart).
    Server,
    /// `[admin]` changed (takes effect on restart).
    Admin,
    /// A listener appeared.
    ListenerAdded(String),
    /// A listener disappeared (stops accepting; open connections finish).
    ListenerRemoved(String),
    /// A listener's routes, pool, TLS or address changed.
    ListenerChanged(String),
    /// A pool appeared.
    PoolAdded(String),
    /// A pool disappeared.
    PoolRemoved(String),
    /// A pool's algorithm, backends or settings changed.
    PoolChanged(String),
    /// `[geo]` networks or latencies changed.
    Geo,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Server => write!(f, "[server] changed (applies after a restart)"),
            Change::Admin => write!(f, "[admin] changed (applies after a restart)"),
            Change::ListenerAdded(n) => write!(f, "listener `{n}` added"),
            Change::ListenerRemoved(n) => write!(f, "listener `{n}` removed"),
            Change::ListenerChanged(n) => write!(f, "listener `{n}` changed"),
            Change::PoolAdded(n) => write!(f, "pool `{n}` added"),
            Change::PoolRemoved(n) => write!(f, "pool `{n}` removed"),
            Change::PoolChanged(n) => write!(f, "pool `{n}` changed"),
            Change::Geo => write!(f, "[geo] changed"),
        }
    }
}

/// Every change from `old` to `new`, listeners first, then pools.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.server != new.server {
        changes.push(Change::Server);
    }
    if old.admin != new.admin {
        changes.push(Change::Admin);
    }
    if old.geo != new.geo {
        changes.push(Change::Geo);
    }
    let names = |c: &Config| c.listeners.iter().map(|l| l.name.clone()).collect::<BTreeSet<_>>();
    for name in names(old).union(&names(new)) {
        let find = |c: &Config| c.listeners.iter().find(|l| &l.name == name).cloned();
        match (find(old), find(new)) {
            (Some(_), None) => changes.push(Change::ListenerRemoved(name.clone())),
            (None, Some(_)) => changes.push(Change::ListenerAdded(name.clone())),
            (Some(a), Some(b)) if a != b => changes.push(Change::ListenerChanged(name.clone())),
            _ => {}
        }
    }
    let pools: BTreeSet<&String> = old.pools.keys().chain(new.pools.keys()).collect();
    for name in pools {
        match (old.pools.get(name), new.pools.get(name)) {
            (Some(_), None) => changes.push(Change::PoolRemoved(name.clone())),
            (None, Some(_)) => changes.push(Change::PoolAdded(name.clone())),
            (Some(a), Some(b)) if a != b => changes.push(Change::PoolChanged(name.clone())),
            _ => {}
        }
    }
    changes
}
