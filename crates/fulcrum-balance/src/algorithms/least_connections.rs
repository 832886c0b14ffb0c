//! Least connections: the member with the fewest in-flight requests per
//! unit of weight (nginx `least_conn`, HAProxy `leastconn`).
//!
//! The cost is in-flight ÷ weight as a float; a pool of up to 64 members is
//! scanned exactly from a random start (ties spread), a larger one compares
//! 16 random members ([`super::least`]).

use std::sync::Arc;

use crate::{Load, Member, PickContext, Selector};

/// Least in-flight requests per unit of weight.
#[derive(Debug)]
pub struct LeastConnections {
    members: Box<[(Arc<Load>, f64)]>,
}

impl LeastConnections {
    /// A selector reading `members`' live loads.
    pub fn new(members: &[Member]) -> Self {
        Self { members: members.iter().map(|m| (Arc::clone(&m.load), f64::from(m.weight.max(1)))).collect() }
    }
}

impl Selector for LeastConnections {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        super::least::least(self.members.len(), ctx.rng, accept, |index| {
            let (load, weight) = &self.members[index];
            load.in_flight() as f64 / weight
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;
    use crate::SplitMix64;

    fn pick(lc: &LeastConnections, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut rng = SplitMix64::new(9);
        let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
        lc.pick(&mut ctx, accept)
    }

    #[test]
    fn picks_the_least_loaded() {
        let m = members(&[1, 1, 1]);
        let _busy: Vec<_> =
            (0..3).map(|_| m[0].load.start()).chain((0..1).map(|_| m[2].load.start())).collect();
        let lc = LeastConnections::new(&m);
        assert_eq!(pick(&lc, &|_| true), Some(1));
        assert_eq!(pick(&lc, &|i| i != 1), Some(2));
    }

    #[test]
    fn divides_by_weight() {
        let m = members(&[4, 1]);
        // a: 3 in flight over weight 4 (0.75) beats b: 1 over weight 1.
        let _busy: Vec<_> = (0..3).map(|_| m[0].load.start()).chain([m[1].load.start()]).collect();
        assert_eq!(pick(&LeastConnections::new(&m), &|_| true), Some(0));
    }

    #[test]
    fn ties_are_spread() {
        let m = members(&[1, 1, 1, 1]);
        let lc = LeastConnections::new(&m);
        let mut rng = SplitMix64::new(5);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
            counts[lc.pick(&mut ctx, &|_| true).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
