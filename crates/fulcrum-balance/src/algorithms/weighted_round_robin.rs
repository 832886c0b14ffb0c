//! Smooth weighted round robin, as nginx's `ngx_http_upstream_get_peer`
//! (Maxim Dounin, nginx commit 52327e0627f4, 2012).
//!
//! Each round every member's current weight grows by its weight; the member
//! with the largest current weight is chosen and loses the total weight.
//! Weights 5, 1, 1 give `a a b a c a a`: heavy members are interleaved with
//! light ones instead of being served in bursts.
//!
//! Build slowly, pick quickly: the whole cycle of Σw/gcd picks is computed
//! when the selector is built, and a pick is one atomic increment and an
//! array read. Cycles longer than [`MAX_CYCLE`] (huge or co-prime weights
//! over many backends) are computed over weights scaled down
//! proportionally, which keeps every share within 1/`MAX_CYCLE` of exact.
//! Unavailable members are skipped in the cycle, so the others keep their
//! relative shares.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{scan, Member, PickContext, Selector, MAX_CANDIDATES};

/// Longest precomputed cycle (entries of `u32`, 4 MiB).
pub const MAX_CYCLE: u64 = 1 << 20;

/// A precomputed smooth weighted round-robin cycle.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    cycle: Box<[u32]>,
    cursor: AtomicUsize,
    members: usize,
}

impl WeightedRoundRobin {
    /// The cycle for `members`' weights.
    pub fn new(members: &[Member]) -> Self {
        let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight.max(1))).collect();
        Self {
            cycle: smooth_cycle(&scale_to_cycle_limit(&weights)).into(),
            cursor: AtomicUsize::new(0),
            members: members.len(),
        }
    }
}

impl Selector for WeightedRoundRobin {
    fn pick(&self, _ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut index = 0;
        for _ in 0..self.cycle.len().min(MAX_CANDIDATES) {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed) % self.cycle.len();
            index = self.cycle[slot] as usize;
            if accept(index) {
                return Some(index);
            }
        }
        scan(self.members, index + 1, accept)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Weights divided by their gcd and, if their sum still exceeds
/// [`MAX_CYCLE`], scaled down proportionally (never below 1).
fn scale_to_cycle_limit(weights: &[u64]) -> Vec<u64> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_CYCLE {
        return reduced;
    }
    reduced.iter().map(|&w| (w * MAX_CYCLE / total).max(1)).collect()
}

/// One full smooth-WRR cycle: Σw picks, member `i` exactly `w[i]` times.
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{members, pick_names};
    use proptest::prelude::*;

    #[test]
    fn nginx_golden_sequences() {
        let m = members(&[5, 1, 1]);
        assert_eq!(pick_names(&WeightedRoundRobin::new(&m), &m, 7), "a a b a c a a");
        let m = members(&[4, 2, 1]);
        assert_eq!(pick_names(&WeightedRoundRobin::new(&m), &m, 7), "a b a c a b a");
    }

    #[test]
    fn cycle_repeats() {
        let m = members(&[2, 1]);
        assert_eq!(pick_names(&WeightedRoundRobin::new(&m), &m, 6), "a b a a b a");
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_their_ratio() {
        let scaled = scale_to_cycle_limit(&[3_000_000, 1_000_001, 7]);
        assert!(scaled.iter().sum::<u64>() <= MAX_CYCLE + 3);
        let ratio = scaled[0] as f64 / scaled[1] as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{scaled:?}");
        assert_eq!(scaled[2], 1);
    }

    proptest! {
        #[test]
        fn every_member_gets_exactly_its_weight_per_cycle(weights in prop::collection::vec(1u32..50, 1..12)) {
            let m = members(&weights);
            let wrr = WeightedRoundRobin::new(&m);
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u32; weights.len()];
            let mut rng = crate::SplitMix64::new(0);
            for _ in 0..total {
                let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
                counts[wrr.pick(&mut ctx, &|_| true).unwrap()] += 1;
            }
            prop_assert_eq!(counts, weights);
        }
    }
}
