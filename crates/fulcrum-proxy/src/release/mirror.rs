//! Traffic mirroring (Envoy's `request_mirror_policies`, nginx's
//! `mirror`): a copy of a share of a route's requests goes to a shadow
//! pool, fire and forget; its response is read and discarded.
//!
//! The primary never waits for a copy: copies run in their own tasks, at
//! most `max_in_flight` per route (more are shed, counted, and never
//! delay anything), each bounded by the shadow pool's timeouts. A copy
//! holds its in-flight slot, and nothing else of the request, until it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use tokio::sync::Semaphore;

use crate::pool::Pool;
use crate::proxy_protocol::Endpoints;
use crate::request_body::RequestBody;

/// What became of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// The shadow answered (any status).
    Sent,
    /// The shadow did not answer: refused, reset or timed out.
    Failed,
    /// Too many copies were in flight.
    Shed,
    /// The request body was too large to copy.
    TooLarge,
    /// The shadow pool had no backend to take it.
    NoBackend,
}

impl MirrorResult {
    /// Every result, in label order.
    pub const ALL: [Self; 5] = [Self::Sent, Self::Failed, Self::Shed, Self::TooLarge, Self::NoBackend];

    /// The `result` label of `lb_mirror_total`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Shed => "shed",
            Self::TooLarge => "too_large",
            Self::NoBackend => "no_backend",
        }
    }
}

/// A route's mirroring slots and counts, kept across reloads while
/// `max_in_flight` is unchanged.
#[derive(Debug)]
pub struct MirrorSlots {
    /// The listener of the route.
    pub listener: String,
    /// The route.
    pub route: String,
    /// Copies in flight at once, at most.
    pub max_in_flight: usize,
    in_flight: Arc<Semaphore>,
    counts: [AtomicU64; MirrorResult::ALL.len()],
}

impl MirrorSlots {
    /// Slots for `route` of `listener`.
    pub fn new(listener: &str, route: &str, max_in_flight: usize) -> Arc<Self> {
        Arc::new(Self {
            listener: listener.into(),
            route: route.into(),
            max_in_flight,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            counts: Default::default(),
        })
    }

    /// Counts a copy's result.
    pub fn count(&self, result: MirrorResult) {
        self.counts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies so far with each result.
    pub fn counts(&self) -> impl Iterator<Item = (MirrorResult, u64)> + '_ {
        MirrorResult::ALL.iter().map(|&r| (r, self.counts[r as usize].load(Ordering::Relaxed)))
    }
}

/// A route's mirror as of one config generation.
#[derive(Debug)]
pub struct Mirror {
    /// The shadow pool.
    pub pool: Arc<Pool>,
    /// Share of requests copied, basis points.
    pub share: u32,
    /// The route's slots and counts.
    pub slots: Arc<MirrorSlots>,
}

impl Mirror {
    /// Whether this request is one of the copied share.
    pub fn chosen(&self) -> bool {
        self.share >= crate::release::canary::BASIS
            || crate::rng::with_rng(|rng| rng.below(u64::from(crate::release::canary::BASIS)))
                < u64::from(self.share)
    }

    /// Sends a copy of `head` with `body` to the shadow pool, unless too
    /// many copies are in flight. Returns at once.
    pub fn send(&self, head: Parts, body: Option<Bytes>, endpoints: Endpoints) {
        let Ok(slot) = Arc::clone(&self.slots.in_flight).try_acquire_owned() else {
            self.slots.count(MirrorResult::Shed);
            return;
        };
        let pool = Arc::clone(&self.pool);
        let slots = Arc::clone(&self.slots);
        tokio::spawn(async move {
            let result = copy(&pool, head, body, endpoints).await;
            slots.count(result);
            drop(slot);
        });
    }
}

/// One copy, from pick to the end of the shadow's response.
async fn copy(pool: &Pool, head: Parts, body: Option<Bytes>, endpoints: Endpoints) -> MirrorResult {
    let client = endpoints.client.ip();
    let key = pool.config.algorithm.uses_key().then(|| crate::hash_key::client_key(client, &pool.config));
    let started = crate::clock::now_nanos();
    let Some(attempt) = pool.pick(key, Some(client), &[], started) else {
        return MirrorResult::NoBackend;
    };
    let backend = Arc::clone(attempt.backend());
    let request = http::Request::from_parts(head, RequestBody::Replay(body));
    match crate::http::send(pool, &backend, request, &endpoints, started).await {
        Ok((response, _in_flight)) => {
            let status = response.status();
            // Read to its end, the body returns its connection to the pool.
            let _ = tokio::time::timeout(pool.timeouts.idle, response.into_body().drain()).await;
            let outcome = crate::http::outcome_of_status(status);
            attempt.finish(outcome, status.as_u16(), crate::clock::now_nanos());
            MirrorResult::Sent
        }
        Err(error) => {
            tracing::debug!(pool = %pool.name, backend = %backend.address, %error, "mirrored request failed");
            attempt.finish(
                fulcrum_balance::resilience::Outcome::GatewayFailure,
                error.status().as_u16(),
                crate::clock::now_nanos(),
            );
            MirrorResult::Failed
        }
    }
}
