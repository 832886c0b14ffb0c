//! Idle upstream HTTP/1.1 connections beyond a thread's warm set, shared
//! by every worker thread (HAProxy's idle-connection stealing between
//! threads, reduced to one shared list per backend). A burst — hundreds
//! of requests an HTTP/2 client multiplexes — leaves its connections here
//! rather than in the thread that happened to finish them, so any thread
//! reuses them, and none are opened twice because the one that finished
//! them was another. Only the cold path takes its lock: a thread's own
//! pool ([`crate::upstream`]) serves the steady load.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::upstream::{ByBackend, Idle};
use crate::upstream_h1::Connection;

/// How long a connection may sit idle here: a burst's surplus is not kept
/// for the pool's whole idle timeout.
pub const SURPLUS_IDLE: Duration = Duration::from_secs(5);

fn lists() -> MutexGuard<'static, ByBackend> {
    static LISTS: OnceLock<Mutex<ByBackend>> = OnceLock::new();
    LISTS.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps `idle` for `backend_key` unless `room` are already kept.
pub fn put(backend_key: u64, idle: Idle, room: usize) {
    let mut lists = lists();
    let list = lists.entry(backend_key).or_default();
    if list.len() < room {
        list.push(idle);
    }
}

/// The most recently kept connection to `backend_key` still usable at
/// `now`, if any.
pub fn take(backend_key: u64, now: Instant) -> Option<Connection> {
    let mut lists = lists();
    let list = lists.get_mut(&backend_key)?;
    while let Some(mut idle) = list.pop() {
        if idle.usable(now, SURPLUS_IDLE) {
            return Some(idle.connection);
        }
    }
    None
}

/// Drops what closed or idled out.
pub fn sweep(now: Instant) {
    lists().retain(|_, list| {
        list.retain_mut(|idle| idle.usable(now, SURPLUS_IDLE));
        !list.is_empty()
    });
}

/// How many connections to `backend_key` are kept here.
#[cfg(test)]
pub fn len(backend_key: u64) -> usize {
    lists().get(&backend_key).map_or(0, Vec::len)
}
