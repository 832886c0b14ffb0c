//! Weighted random sampling in O(1) with Walker's alias method (A. J.
//! Walker, "An efficient method for generating discrete random variables
//! with general distributions", ACM TOMS 1977; Vose's stable construction).
//! Shared by `random` and `p2c`.

use crate::{Member, SplitMix64};

/// Draws member indices with probability proportional to weight.
#[derive(Debug)]
pub struct WeightedSampler {
    /// Per slot: probability (scaled to u64) of keeping the slot's own index.
    keep: Box<[u64]>,
    alias: Box<[u32]>,
}

impl WeightedSampler {
    /// The sampler for `members`' weights.
    pub fn new(members: &[Member]) -> Self {
        let n = members.len();
        let total: f64 = members.iter().map(|m| f64::from(m.weight.max(1))).sum();
        let mut scaled: Vec<f64> =
            members.iter().map(|m| f64::from(m.weight.max(1)) * n as f64 / total).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        let mut keep = vec![u64::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = (scaled[s] * u64::MAX as f64) as u64;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self { keep: keep.into(), alias: alias.into() }
    }

    /// One weighted draw (the sampler must not be empty).
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let slot = rng.below(self.keep.len() as u64) as usize;
        if rng.next_u64() <= self.keep[slot] {
            slot
        } else {
            self.alias[slot] as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;

    #[test]
    fn draws_in_proportion_to_weight() {
        let sampler = WeightedSampler::new(&members(&[1, 2, 7]));
        let mut rng = SplitMix64::new(11);
        let mut counts = [0f64; 3];
        for _ in 0..100_000 {
            counts[sampler.sample(&mut rng)] += 1.0;
        }
        for (count, want) in counts.iter().zip([0.1, 0.2, 0.7]) {
            assert!((count / 100_000.0 - want).abs() < 0.01, "{counts:?}");
        }
    }
}
