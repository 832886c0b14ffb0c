//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
//! "Consistent Hashing with Bounded Loads", SODA 2018), with HAProxy's
//! `hash-balance-factor` semantics: with `m` requests in flight (counting
//! this one) over `n` members, no member may hold more than `⌈c·m/n⌉`;
//! the key walks clockwise past members at their bound. Keys stay on their
//! member while it is not overloaded, and no member ever is.

use std::sync::Arc;

use super::ring::Ring;
use crate::{Load, Member, PickContext, Selector};

/// Consistent hashing where no member exceeds `balance_factor` × mean load.
#[derive(Debug)]
pub struct BoundedConsistentHash {
    ring: Ring,
    loads: Box<[Arc<Load>]>,
    balance_factor: f64,
}

impl BoundedConsistentHash {
    /// A ring with `virtual_nodes` points per unit of weight and load bound `balance_factor` (> 1).
    pub fn new(members: &[Member], virtual_nodes: u32, balance_factor: f64) -> Self {
        Self {
            ring: Ring::new(members, virtual_nodes),
            loads: members.iter().map(|m| Arc::clone(&m.load)).collect(),
            balance_factor,
        }
    }

    /// `⌈c·m/n⌉` for `m` requests in flight including the new one.
    fn bound(&self, accept: &dyn Fn(usize) -> bool) -> u64 {
        let (mut in_flight, mut members) = (1u64, 0u64);
        for (i, load) in self.loads.iter().enumerate() {
            if accept(i) {
                in_flight += load.in_flight();
                members += 1;
            }
        }
        (self.balance_factor * in_flight as f64 / members.max(1) as f64).ceil() as u64
    }
}

impl Selector for BoundedConsistentHash {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let bound = self.bound(accept);
        let hash = ctx.key.unwrap_or_else(|| ctx.rng.next_u64());
        self.ring.find(hash, &|i| self.loads[i].in_flight() < bound && accept(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;
    use crate::SplitMix64;
    use proptest::prelude::*;

    /// Places a request for `key`; returns the chosen member's in-flight
    /// count and the bound ⌈c·m/n⌉ for the m requests now in flight.
    fn place(
        chb: &BoundedConsistentHash,
        m: &[Member],
        key: u64,
        live: &mut Vec<crate::InFlight>,
    ) -> (u64, u64) {
        let mut rng = SplitMix64::new(key);
        let mut ctx = PickContext { key: Some(crate::hash::mix64(key)), now_nanos: 0, rng: &mut rng };
        let index = chb.pick(&mut ctx, &|_| true).unwrap();
        live.push(m[index].load.start());
        let total: u64 = m.iter().map(|x| x.load.in_flight()).sum();
        (m[index].load.in_flight(), (chb.balance_factor * total as f64 / m.len() as f64).ceil() as u64)
    }

    proptest! {
        /// Under any sequence of arrivals (hot keys included) and
        /// departures, a request is never placed on a member that would
        /// then hold more than ⌈c·m/n⌉.
        #[test]
        fn no_placement_exceeds_the_bound(
            ops in prop::collection::vec((any::<bool>(), 0u64..8, any::<u8>()), 1..400),
            factor in 1.05f64..2.0,
        ) {
            let m = members(&[1, 1, 1, 1, 1]);
            let chb = BoundedConsistentHash::new(&m, 40, factor);
            let mut live = Vec::new();
            for (arrive, key, which) in ops {
                if arrive || live.is_empty() {
                    let (chosen, bound) = place(&chb, &m, key, &mut live);
                    prop_assert!(chosen <= bound, "placed at {chosen} over bound {bound}");
                } else {
                    live.swap_remove(which as usize % live.len());
                }
            }
        }

        /// With arrivals only, every member stays within the bound at all times.
        #[test]
        fn arrivals_never_overload_any_member(keys in prop::collection::vec(0u64..4, 1..300), factor in 1.05f64..2.0) {
            let m = members(&[1, 1, 1, 1, 1]);
            let chb = BoundedConsistentHash::new(&m, 40, factor);
            let mut live = Vec::new();
            for key in keys {
                let (_, bound) = place(&chb, &m, key, &mut live);
                for member in &m {
                    prop_assert!(member.load.in_flight() <= bound);
                }
            }
        }
    }

    #[test]
    fn an_unloaded_key_stays_on_its_ring_owner() {
        let m = members(&[1, 1, 1]);
        let chb = BoundedConsistentHash::new(&m, 160, 1.25);
        let plain = super::super::ConsistentHash::new(&m, 160);
        let mut rng = SplitMix64::new(1);
        for key in 0..100u64 {
            let mut ctx = PickContext { key: Some(crate::hash::mix64(key)), now_nanos: 0, rng: &mut rng };
            let bounded = chb.pick(&mut ctx, &|_| true);
            assert_eq!(bounded, plain.pick(&mut ctx, &|_| true));
        }
    }
}
