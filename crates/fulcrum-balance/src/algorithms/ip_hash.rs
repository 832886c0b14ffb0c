//! Client-address hashing, as nginx's `ip_hash`: the client's address
//! (masked to its subnet by the caller, `subnet_mask = 24` groups a /24)
//! selects a member in proportion to weight; when that member is
//! unavailable the hash is re-mixed and tried again (20 times, as nginx),
//! then the acceptable members are scanned in order.

use crate::hash::mix64;
use crate::{Member, PickContext, Selector};

/// Client address → member, weighted.
#[derive(Debug)]
pub struct IpHash {
    /// Running sums of the weights: member i owns `[cumulative[i-1], cumulative[i])`.
    cumulative: Box<[u64]>,
}

const TRIES: usize = 20;

impl IpHash {
    /// A selector over `members`' weights.
    pub fn new(members: &[Member]) -> Self {
        let mut total = 0;
        Self {
            cumulative: members
                .iter()
                .map(|m| {
                    total += u64::from(m.weight.max(1));
                    total
                })
                .collect(),
        }
    }

    fn owner(&self, hash: u64) -> usize {
        let point = hash % self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&end| end <= point)
    }
}

impl Selector for IpHash {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.cumulative.is_empty() {
            return None;
        }
        let mut hash = ctx.key.unwrap_or_else(|| ctx.rng.next_u64());
        for _ in 0..TRIES {
            let index = self.owner(hash);
            if accept(index) {
                return Some(index);
            }
            hash = mix64(hash.wrapping_add(1));
        }
        (0..self.cumulative.len()).find(|&i| accept(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members;
    use crate::SplitMix64;

    #[test]
    fn same_key_same_member_and_weights_hold() {
        let m = members(&[1, 3]);
        let ip = IpHash::new(&m);
        let mut rng = SplitMix64::new(0);
        let mut counts = [0; 2];
        for client in 0..20_000u64 {
            let key = Some(mix64(client));
            let mut ctx = PickContext { key, now_nanos: 0, rng: &mut rng };
            let first = ip.pick(&mut ctx, &|_| true).unwrap();
            assert_eq!(ip.pick(&mut ctx, &|_| true), Some(first));
            counts[first] += 1;
        }
        assert!((4_500..5_500).contains(&counts[0]), "{counts:?}");
        let mut ctx = PickContext { key: Some(1), now_nanos: 0, rng: &mut rng };
        assert_eq!(ip.pick(&mut ctx, &|i| i == 0), Some(0));
    }
}
