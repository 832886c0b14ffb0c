//! Least response time: the member with the lowest
//! `EWMA latency × (in-flight + 1)`, per unit of weight — the "least
//! time" idea of NGINX Plus (`least_time header`) with in-flight work
//! counted so that a fast backend is not flooded before its average moves.
//! A pool of up to 64 members is scanned exactly, a larger one compares 16
//! random members ([`super::least`]).

use std::sync::Arc;

use crate::{Load, Member, PickContext, Selector};

/// Lowest expected wait.
#[derive(Debug)]
pub struct LeastResponseTime {
    members: Box<[(Arc<Load>, f64)]>,
}

impl LeastResponseTime {
    /// A selector over `members`' live latency and load.
    pub fn new(members: &[Member]) -> Self {
        Self { members: members.iter().map(|m| (Arc::clone(&m.load), f64::from(m.weight.max(1)))).collect() }
    }
}

impl Selector for LeastResponseTime {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        super::least::least(self.members.len(), ctx.rng, accept, |index| {
            let (load, weight) = &self.members[index];
            load.latency_ewma_nanos() * (load.in_flight() + 1) as f64 / weight
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;
    use crate::SplitMix64;

    #[test]
    fn prefers_the_faster_backend_until_it_is_busy() {
        let m = members(&[1, 1]);
        m[0].load.observe_latency(10_000_000, 1);
        m[1].load.observe_latency(40_000_000, 1);
        let lrt = LeastResponseTime::new(&m);
        let mut rng = SplitMix64::new(1);
        let pick = |rng: &mut SplitMix64| {
            let mut ctx = PickContext { key: None, now_nanos: 1, rng };
            lrt.pick(&mut ctx, &|_| true).unwrap()
        };
        let fast_latency = m[0].load.latency_ewma_nanos();
        let slow_latency = m[1].load.latency_ewma_nanos();
        assert!(fast_latency < slow_latency);
        assert_eq!(pick(&mut rng), 0);
        // Enough work queued on the fast one makes the slow one cheaper.
        let queued = (slow_latency / fast_latency).ceil() as usize;
        let _busy: Vec<_> = (0..queued).map(|_| m[0].load.start()).collect();
        assert_eq!(pick(&mut rng), 1);
    }
}
