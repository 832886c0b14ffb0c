//! One attempt on one backend as a value (tower's `peak_ewma` `Handle`,
//! linkerd's permit-holding gate): created when the pool picks the
//! backend, holding its circuit-breaker permit; [`Attempt::finish`]
//! records the outcome everywhere it counts (breaker, outlier detection,
//! latency estimate, metrics, error count). An attempt dropped without an
//! outcome — its request was cancelled by the client, a request timeout or
//! a shutdown — hands the breaker permit back, so a half-open probe slot
//! can never leak. HTTP requests, protocol switches and TCP connections
//! all go through this one type.

use std::sync::Arc;

use fulcrum_balance::resilience::{Outcome, Permit};

use crate::backend::Backend;
use crate::pool::Pool;

/// A picked backend and the permit to call it.
#[derive(Debug)]
pub struct Attempt<'p> {
    pool: &'p Pool,
    backend: Arc<Backend>,
    permit: Option<Permit>,
    started: u64,
}

impl<'p> Attempt<'p> {
    /// An attempt on `backend` of `pool` starting at `started` (monotonic
    /// nanos) under `permit` (when the pool has a breaker).
    pub fn new(pool: &'p Pool, backend: Arc<Backend>, permit: Option<Permit>, started: u64) -> Self {
        Self { pool, backend, permit, started }
    }

    /// The backend tried.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Records how the attempt ended at `now`: `status` is the backend's
    /// answer, or the status Fulcrum answers a transport failure with.
    /// Returns how long the attempt took.
    pub fn finish(mut self, outcome: Outcome, status: u16, now: u64) -> u64 {
        let took = now.saturating_sub(self.started);
        let backend = &self.backend;
        self.pool.record(backend, outcome, self.permit.take(), took, now);
        if outcome != Outcome::GatewayFailure {
            backend.load.observe_latency(took, now);
        }
        backend.metrics.record(status, took, now);
        if status >= 500 {
            backend.load.record_error();
        }
        took
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.backend.guards.cancel(permit, self.backend.address);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fulcrum_balance::resilience::{BreakerState, Outcome};

    use crate::clock::now_nanos;
    use crate::testing::pool;

    const BREAKER: &str =
        "circuit_breaker = { minimum_calls = 2, window = 2, wait_in_open = \"1s\", half_open_calls = 1 }";

    #[tokio::test(start_paused = true)]
    async fn a_dropped_half_open_probe_frees_its_slot() {
        let pool = pool(&["127.0.0.1:9"], BREAKER);
        for _ in 0..2 {
            let attempt = pool.pick(None, None, &[], now_nanos()).expect("closed");
            attempt.finish(Outcome::ServerError, 500, now_nanos());
        }
        assert!(pool.pick(None, None, &[], now_nanos()).is_none(), "two failures of two open it");

        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = pool.pick(None, None, &[], now_nanos()).expect("the wait is over: one probe");
        assert!(pool.pick(None, None, &[], now_nanos()).is_none(), "the only probe slot is taken");
        drop(probe); // cancelled: the client left, or a timeout dropped the request

        let probe =
            pool.pick(None, None, &[], now_nanos()).expect("the cancelled probe's slot is free again");
        probe.finish(Outcome::Success, 200, now_nanos());
        assert_eq!(pool.backends[0].guards.breaker_state(), BreakerState::Closed);
        assert!(pool.pick(None, None, &[], now_nanos()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_wait() {
        let pool = pool(&["127.0.0.1:9"], BREAKER);
        for _ in 0..2 {
            pool.pick(None, None, &[], now_nanos()).unwrap().finish(
                Outcome::GatewayFailure,
                502,
                now_nanos(),
            );
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        pool.pick(None, None, &[], now_nanos()).unwrap().finish(Outcome::GatewayFailure, 504, now_nanos());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(pool.pick(None, None, &[], now_nanos()).is_none(), "open for a full wait again");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(pool.pick(None, None, &[], now_nanos()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_counts_on_its_backend_and_a_cancelled_one_does_not() {
        let pool = pool(&["127.0.0.1:9"], "");
        let backend = std::sync::Arc::clone(&pool.backends[0]);
        let attempt = pool.pick(None, None, &[], now_nanos()).unwrap();
        tokio::time::advance(Duration::from_millis(30)).await;
        assert_eq!(attempt.finish(Outcome::ServerError, 500, now_nanos()), 30_000_000);
        drop(pool.pick(None, None, &[], now_nanos()).unwrap());
        assert_eq!(backend.load.errors_total(), 1);
    }
}
