//! Weighted random: each pick draws a member with probability proportional
//! to its weight (alias method, O(1)); rejected draws are retried, then the
//! acceptable members are scanned from a random start.

use crate::algorithms::weighted_sampler::WeightedSampler;
use crate::{Member, PickContext, Selector};

/// Weighted random choice.
#[derive(Debug)]
pub struct Random {
    len: usize,
    sampler: WeightedSampler,
}

impl Random {
    /// A sampler over `members`' weights.
    pub fn new(members: &[Member]) -> Self {
        Self { len: members.len(), sampler: WeightedSampler::new(members) }
    }
}

impl Selector for Random {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        for _ in 0..8 {
            let index = self.sampler.sample(ctx.rng);
            if accept(index) {
                return Some(index);
            }
        }
        let start = ctx.rng.below(self.len as u64) as usize;
        (0..self.len).map(|i| (start + i) % self.len).find(|&i| accept(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;
    use crate::SplitMix64;

    #[test]
    fn follows_weights_and_the_filter() {
        let m = members(&[3, 1]);
        let random = Random::new(&m);
        let mut rng = SplitMix64::new(2);
        let mut counts = [0; 2];
        for _ in 0..40_000 {
            let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
            counts[random.pick(&mut ctx, &|_| true).unwrap()] += 1;
        }
        assert!((29_000..31_000).contains(&counts[0]), "{counts:?}");
        let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
        assert_eq!(random.pick(&mut ctx, &|i| i == 1), Some(1));
    }
}
