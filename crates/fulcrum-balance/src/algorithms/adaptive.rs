//! Adaptive weights: each member's weight is recomputed on every `tick`
//! (the proxy ticks once per second) from what it has shown since the last
//! tick, then picks are weighted-random over the current weights.
//!
//! For member `i` with configured weight `wᵢ`:
//!
//! ```text
//! latency factor  Lᵢ = clamp(L̄ / latencyᵢ, 0.1, 10)      L̄ = mean EWMA latency of all members
//! error factor    Eᵢ = (1 − errorsᵢ / requestsᵢ)²        over the last interval (1 if no requests)
//! load factor     Cᵢ = 1 / (1 + in_flightᵢ / (mean in-flight + 1))
//! target          Tᵢ = wᵢ · Lᵢ · Eᵢ · Cᵢ
//! next weight     aᵢ ← aᵢ + clamp(½ (Tᵢ − aᵢ), −20% aᵢ, +20% aᵢ), never below 5% of wᵢ
//! ```
//!
//! Halving the gap smooths noise; the ±20% step bound keeps one bad
//! interval from swinging traffic; the 5% floor keeps probing a member
//! that recovers: weighted round robin with dynamic adjustment, made
//! stable.
//!
//! A pick draws a ticket below the total weight and binary-searches the
//! running sums the tick keeps (O(log n)); an unacceptable draw is drawn
//! again (rejection sampling keeps the weighted distribution over the
//! acceptable members exact), and after 8 rejections the acceptable
//! members are walked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Load, Member, PickContext, Selector};

/// Fixed-point scale of the stored weights.
const SCALE: f64 = 1000.0;
/// Draws before a pick walks the acceptable members instead.
const DRAWS: usize = 8;

/// Weighted random over continuously adjusted weights.
#[derive(Debug)]
pub struct Adaptive {
    loads: Box<[Arc<Load>]>,
    base: Box<[f64]>,
    /// Current weights × [`SCALE`].
    current: Box<[AtomicU64]>,
    /// Running sums of `current`: `running[i]` = Σ current[..=i].
    running: Box<[AtomicU64]>,
    /// (requests_total, errors_total) at the previous tick.
    previous: Mutex<Vec<(u64, u64)>>,
}

impl Adaptive {
    /// Starts every member at its configured weight.
    pub fn new(members: &[Member]) -> Self {
        let adaptive = Self {
            loads: members.iter().map(|m| Arc::clone(&m.load)).collect(),
            base: members.iter().map(|m| f64::from(m.weight.max(1))).collect(),
            current: members
                .iter()
                .map(|m| AtomicU64::new((f64::from(m.weight.max(1)) * SCALE) as u64))
                .collect(),
            running: members.iter().map(|_| AtomicU64::new(0)).collect(),
            previous: Mutex::new(
                members.iter().map(|m| (m.load.requests_total(), m.load.errors_total())).collect(),
            ),
        };
        adaptive.sum_up();
        adaptive
    }

    /// Recomputes the running sums from the current weights.
    fn sum_up(&self) {
        let mut sum = 0;
        for (weight, running) in self.current.iter().zip(&self.running) {
            sum += weight.load(Ordering::Relaxed);
            running.store(sum, Ordering::Relaxed);
        }
    }

    /// The member whose share of the running sums holds `ticket`.
    fn holder(&self, ticket: u64) -> usize {
        let (mut low, mut high) = (0, self.running.len() - 1);
        while low < high {
            let middle = (low + high) / 2;
            if self.running[middle].load(Ordering::Relaxed) > ticket {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        low
    }

    /// The current weights (configured weight units).
    pub fn weights(&self) -> Vec<f64> {
        self.current.iter().map(|w| w.load(Ordering::Relaxed) as f64 / SCALE).collect()
    }
}

impl Selector for Adaptive {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total = self.running.last()?.load(Ordering::Relaxed);
        for _ in 0..DRAWS {
            if total == 0 {
                break;
            }
            let index = self.holder(ctx.rng.below(total));
            if accept(index) {
                return Some(index);
            }
        }
        let weights: u64 = (0..self.current.len())
            .filter(|&i| accept(i))
            .map(|i| self.current[i].load(Ordering::Relaxed))
            .sum();
        if weights == 0 {
            return None;
        }
        let mut ticket = ctx.rng.below(weights);
        for (i, weight) in self.current.iter().enumerate() {
            if !accept(i) {
                continue;
            }
            let weight = weight.load(Ordering::Relaxed);
            if ticket < weight {
                return Some(i);
            }
            ticket -= weight;
        }
        (0..self.current.len()).rev().find(|&i| accept(i))
    }

    fn tick(&self, _now_nanos: u64) {
        let n = self.loads.len();
        if n == 0 {
            return;
        }
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let mean_latency = self.loads.iter().map(|l| l.latency_ewma_nanos()).sum::<f64>() / n as f64;
        let mean_in_flight = self.loads.iter().map(|l| l.in_flight() as f64).sum::<f64>() / n as f64;
        for (i, load) in self.loads.iter().enumerate() {
            let (requests, errors) = (load.requests_total(), load.errors_total());
            let (prev_requests, prev_errors) = previous[i];
            previous[i] = (requests, errors);
            let interval_requests = requests.saturating_sub(prev_requests);
            let error_rate = if interval_requests == 0 {
                0.0
            } else {
                (errors.saturating_sub(prev_errors) as f64 / interval_requests as f64).min(1.0)
            };
            let latency_factor = (mean_latency / load.latency_ewma_nanos().max(1.0)).clamp(0.1, 10.0);
            let load_factor = 1.0 / (1.0 + load.in_flight() as f64 / (mean_in_flight + 1.0));
            let target = self.base[i] * latency_factor * (1.0 - error_rate).powi(2) * load_factor;
            let current = self.current[i].load(Ordering::Relaxed) as f64 / SCALE;
            let step = (0.5 * (target - current)).clamp(-0.2 * current, 0.2 * current);
            let next = (current + step).max(0.05 * self.base[i]);
            self.current[i].store((next * SCALE).round() as u64, Ordering::Relaxed);
        }
        drop(previous);
        self.sum_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;

    #[test]
    fn draws_follow_the_weights_of_the_acceptable_members() {
        let adaptive = Adaptive::new(&members(&[1, 2, 7, 30]));
        let mut rng = crate::SplitMix64::new(17);
        let mut counts = [0u32; 4];
        for _ in 0..60_000 {
            let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
            counts[adaptive.pick(&mut ctx, &|i| i != 3).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "an unacceptable member is never picked");
        let share = |i: usize| f64::from(counts[i]) / 60_000.0;
        for (i, weight) in [1.0, 2.0, 7.0].into_iter().enumerate() {
            assert!((share(i) - weight / 10.0).abs() < 0.01, "member {i}: {counts:?}");
        }
    }

    #[test]
    fn a_failing_slow_backend_loses_weight_gradually_and_keeps_a_floor() {
        let m = members(&[1, 1, 1]);
        let adaptive = Adaptive::new(&m);
        let mut now = 0;
        for round in 1..=30 {
            now += 1_000_000_000;
            for (i, member) in m.iter().enumerate() {
                for _ in 0..10 {
                    let _request = member.load.start();
                    member.load.observe_latency(if i == 2 { 200_000_000 } else { 10_000_000 }, now);
                    if i == 2 {
                        member.load.record_error();
                    }
                }
            }
            let before = adaptive.weights();
            adaptive.tick(now);
            let after = adaptive.weights();
            for (b, a) in before.iter().zip(&after) {
                assert!((a - b).abs() <= 0.2 * b + 1.0 / SCALE, "round {round}: {before:?} -> {after:?}");
            }
        }
        let weights = adaptive.weights();
        assert!((weights[2] - 0.05).abs() < 1e-3, "{weights:?}");
        assert!(weights[0] > 1.0 && weights[1] > 1.0, "{weights:?}");
    }
}
