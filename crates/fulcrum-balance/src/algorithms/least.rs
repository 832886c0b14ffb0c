//! The search the `least_*` algorithms share: the accepted member with the
//! lowest cost. A pool of up to [`EXACT_SCAN_LIMIT`] members is scanned
//! whole from a random start (exact; ties spread). A larger pool compares
//! [`SAMPLE`] members drawn at random — the power of d choices
//! (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing",
//! 2001; Envoy's `least_request` likewise compares `choice_count` random
//! hosts) — so a pick costs the same at 1000 backends as at 64, and lands
//! among the least loaded few percent. When no sampled member is
//! acceptable (most of the pool down), the whole pool is scanned.

use crate::SplitMix64;

/// Pools up to this size are scanned whole: the pick is exact.
pub const EXACT_SCAN_LIMIT: usize = 64;
/// Members a pick in a larger pool compares.
pub const SAMPLE: usize = 16;

/// The accepted member with the lowest `cost` (see the module doc).
/// `accept` is asked only about members cheaper than the best so far.
pub fn least<C: PartialOrd + Copy>(
    len: usize,
    rng: &mut SplitMix64,
    accept: &dyn Fn(usize) -> bool,
    cost: impl Fn(usize) -> C,
) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let consider = |best: &mut Option<(usize, C)>, index: usize| {
        let c = cost(index);
        if best.is_none_or(|(_, b)| c < b) && accept(index) {
            *best = Some((index, c));
        }
    };
    let mut best = None;
    if len > EXACT_SCAN_LIMIT {
        for _ in 0..SAMPLE {
            consider(&mut best, rng.below(len as u64) as usize);
        }
        if best.is_some() {
            return best.map(|(index, _)| index);
        }
    }
    let start = rng.below(len as u64) as usize;
    for offset in 0..len {
        consider(&mut best, (start + offset) % len);
    }
    best.map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_pool_is_searched_exactly() {
        let costs: Vec<u64> = (0..EXACT_SCAN_LIMIT as u64).map(|i| 100 - i).collect();
        let mut rng = SplitMix64::new(3);
        for _ in 0..100 {
            assert_eq!(least(costs.len(), &mut rng, &|_| true, |i| costs[i]), Some(EXACT_SCAN_LIMIT - 1));
        }
    }

    #[test]
    fn a_large_pool_picks_among_its_least_loaded() {
        // 1000 members with distinct costs: the best of 16 random ones is in
        // the cheapest 1/17 on average.
        let mut rng = SplitMix64::new(11);
        let ranks: Vec<usize> =
            (0..10_000).map(|_| least(1000, &mut rng, &|_| true, |i| i).unwrap()).collect();
        let mean = ranks.iter().sum::<usize>() as f64 / ranks.len() as f64;
        assert!(mean < 1000.0 / 15.0, "mean rank {mean}");
        assert!(ranks.iter().all(|&r| r < 600), "never far from the least loaded (0.4^16 per pick)");
    }

    #[test]
    fn a_sample_with_nothing_acceptable_falls_back_to_the_whole_pool() {
        let mut rng = SplitMix64::new(5);
        assert_eq!(least(1000, &mut rng, &|i| i == 777, |i| i), Some(777));
        assert_eq!(least(1000, &mut rng, &|_| false, |i| i), None);
    }
}
