//! Power of two random choices on peak-EWMA load (Mitzenmacher, "The Power
//! of Two Choices in Randomized Load Balancing", 2001; the peak-EWMA cost is
//! Finagle's, as in tower's `balance::p2c` and linkerd2-proxy).
//!
//! Two distinct members are drawn at random (weighted by capacity) and the
//! one with the lower cost `RTT estimate × (in-flight + 1) / weight` wins.
//! Sampling two instead of scanning all keeps a pick O(1) at any pool size
//! while avoiding the herd behaviour of always choosing the global minimum:
//! with n balls in n bins the maximum load drops from Θ(log n / log log n)
//! (one random choice) to Θ(log log n).

use std::sync::Arc;

use crate::algorithms::weighted_sampler::WeightedSampler;
use crate::{Load, Member, PickContext, Selector};

/// Two random choices, the cheaper wins.
#[derive(Debug)]
pub struct PowerOfTwoChoices {
    loads: Box<[(Arc<Load>, f64)]>,
    sampler: WeightedSampler,
}

/// Random draws before falling back to a full scan when the filter
/// rejects (most members unavailable).
const DRAWS: usize = 8;

impl PowerOfTwoChoices {
    /// A selector over `members`' live loads.
    pub fn new(members: &[Member]) -> Self {
        Self {
            loads: members.iter().map(|m| (Arc::clone(&m.load), f64::from(m.weight.max(1)))).collect(),
            sampler: WeightedSampler::new(members),
        }
    }

    fn cost(&self, index: usize, now: u64) -> f64 {
        let (load, weight) = &self.loads[index];
        load.peak_ewma_cost(now) / weight
    }
}

impl Selector for PowerOfTwoChoices {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.loads.len();
        if len <= 1 {
            return (len == 1 && accept(0)).then_some(0);
        }
        let mut first = None;
        for _ in 0..DRAWS {
            let candidate = self.sampler.sample(ctx.rng);
            if !accept(candidate) {
                continue;
            }
            match first {
                None => first = Some(candidate),
                Some(a) if a != candidate => {
                    let now = ctx.now_nanos;
                    return Some(if self.cost(candidate, now) < self.cost(a, now) { candidate } else { a });
                }
                Some(_) => {}
            }
        }
        // Few acceptable members: compare all of them.
        let now = ctx.now_nanos;
        (0..len)
            .filter(|&i| accept(i))
            .min_by(|&a, &b| self.cost(a, now).total_cmp(&self.cost(b, now)))
            .or(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{members, members_named};
    use crate::SplitMix64;

    #[test]
    fn avoids_a_slow_backend() {
        let m = members(&[1, 1, 1, 1]);
        m[2].load.observe_latency(2_000_000_000, 0);
        let p2c = PowerOfTwoChoices::new(&m);
        let mut rng = SplitMix64::new(3);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            let mut ctx = PickContext { key: None, now_nanos: 1_000, rng: &mut rng };
            counts[p2c.pick(&mut ctx, &|_| true).unwrap()] += 1;
        }
        // The slow one only wins when drawn against itself... which p2c never does.
        assert_eq!(counts[2], 0, "{counts:?}");
    }

    #[test]
    fn respects_the_filter_even_when_most_are_rejected() {
        let m = members(&[1; 10]);
        let p2c = PowerOfTwoChoices::new(&m);
        let mut rng = SplitMix64::new(4);
        for _ in 0..100 {
            let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
            assert_eq!(p2c.pick(&mut ctx, &|i| i == 7), Some(7));
            assert_eq!(p2c.pick(&mut ctx, &|_| false), None);
        }
    }

    /// Balls into bins: n = 10^5 requests that never finish, one choice
    /// (uniform random) against two choices on in-flight load.
    #[test]
    fn two_choices_flatten_the_maximum_load() {
        let n = 100_000;
        let names: Vec<String> = (0..n).map(|i| format!("bin-{i}")).collect();
        let m = members_named(&names);
        let mut rng = SplitMix64::new(42);
        let mut random_bins = vec![0u32; n];
        for _ in 0..n {
            random_bins[rng.below(n as u64) as usize] += 1;
        }
        let p2c = PowerOfTwoChoices::new(&m);
        let mut guards = Vec::with_capacity(n);
        for _ in 0..n {
            let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
            let index = p2c.pick(&mut ctx, &|_| true).unwrap();
            guards.push(m[index].load.start());
        }
        let p2c_max = m.iter().map(|m| m.load.in_flight()).max().unwrap();
        let random_max = *random_bins.iter().max().unwrap();
        assert!(p2c_max <= 4, "p2c max load {p2c_max}");
        assert!(random_max >= 6, "random max load {random_max}");
    }
}
