//! Live load of one backend: lock-free counters shared by the data path
//! (which updates them) and load-aware algorithms (which read them).
//!
//! A `Load` outlives selector rebuilds: when membership changes, surviving
//! backends keep their `Arc<Load>` so in-flight counts stay exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters for one backend.
#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicU64,
    requests_total: AtomicU64,
    errors_total: AtomicU64,
}

impl Load {
    /// Requests sent to this backend and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests started on this backend since it was added.
    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Requests that ended in a transport error or a 5xx.
    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    /// Counts one failed request.
    pub fn record_error(&self) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request as started; the returned guard marks it finished
    /// when dropped, so a request counts exactly as long as it lives.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        InFlight { load: Arc::clone(self) }
    }
}

/// One in-flight request on a backend; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
}

impl InFlight {
    /// The backend's load this request counts against.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards() {
        let load = Arc::new(Load::default());
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        drop(a);
        assert_eq!(load.in_flight(), 1);
        drop(b);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.requests_total(), 2);
    }
}
