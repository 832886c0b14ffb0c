//! Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4).
//!
//! Each member has a preference permutation of the `M` table slots,
//! `offset + j·skip mod M` with `offset = h1(key) mod M` and
//! `skip = h2(key) mod (M−1) + 1` (`M` prime makes every `skip` a full
//! cycle). Members take turns claiming their next preferred free slot until
//! the table is full; a member of weight `w` takes `w` turns per round
//! (weights divided by their gcd). A lookup is one array read, every member
//! owns ⌊M/N⌋ or ⌈M/N⌉ slots (equal weights), and a removal changes little
//! more than the removed member's slots. The table is built off the
//! request path (the paper: ~1.8 ms for M = 65537, N = 1000).

use crate::hash::{hash64, mix64};
use crate::{scan, Member, PickContext, Selector, MAX_CANDIDATES};

/// Default table size, prime (the paper's small table).
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;

/// A Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    members: usize,
}

impl Maglev {
    /// The table of `table_size` slots (prime, larger than the member count).
    pub fn new(members: &[Member], table_size: u64) -> Self {
        let preferences: Vec<(u64, u64)> = members
            .iter()
            .map(|m| {
                let h = hash64(m.key.as_bytes());
                (h % table_size, mix64(h ^ 0x5851_f42d_4c95_7f2d) % (table_size - 1) + 1)
            })
            .collect();
        let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight.max(1))).collect();
        Self::from_preferences(table_size, &preferences, &weights)
    }

    /// The table for explicit `(offset, skip)` pairs (the paper's worked
    /// example uses these directly).
    pub fn from_preferences(table_size: u64, preferences: &[(u64, u64)], weights: &[u64]) -> Self {
        const EMPTY: u32 = u32::MAX;
        let size = table_size as usize;
        let mut table = vec![EMPTY; size];
        if preferences.is_empty() {
            return Self { table: Box::new([]), members: 0 };
        }
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let turns: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
        let mut next = vec![0u64; preferences.len()];
        let mut filled = 0;
        'fill: loop {
            for (member, &(offset, skip)) in preferences.iter().enumerate() {
                for _ in 0..turns[member] {
                    let mut slot = ((offset + next[member] * skip) % table_size) as usize;
                    while table[slot] != EMPTY {
                        next[member] += 1;
                        slot = ((offset + next[member] * skip) % table_size) as usize;
                    }
                    table[slot] = member as u32;
                    next[member] += 1;
                    filled += 1;
                    if filled == size {
                        break 'fill;
                    }
                }
            }
        }
        Self { table: table.into(), members: preferences.len() }
    }

    /// The member owning each slot.
    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Selector for Maglev {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let hash = ctx.key.unwrap_or_else(|| ctx.rng.next_u64());
        let len = self.table.len() as u64;
        // The owner, else the owners of slots a per-key stride away: the
        // table size is prime, so any stride in 1..len visits every slot,
        // and a dead member's keys spread instead of piling onto one
        // neighbour. The walk is bounded; then the members are scanned.
        let stride = if len > 1 { mix64(hash) % (len - 1) + 1 } else { 1 };
        let owner = self.table[(hash % len) as usize] as usize;
        (0..(len as usize).min(MAX_CANDIDATES) as u64)
            .map(|i| self.table[((hash % len + i * stride) % len) as usize] as usize)
            .find(|&m| accept(m))
            .or_else(|| scan(self.members, owner + 1, accept))
    }
}

/// Whether `n` is prime (table sizes are validated with it).
pub fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::members_named;

    #[test]
    fn the_papers_worked_example() {
        // NSDI'16 §3.4, Table 1: M = 7; B0 (3,4), B1 (0,2), B2 (3,1).
        let before = Maglev::from_preferences(7, &[(3, 4), (0, 2), (3, 1)], &[1, 1, 1]);
        assert_eq!(before.table(), [1, 0, 1, 0, 2, 2, 0]);
        let after = Maglev::from_preferences(7, &[(3, 4), (3, 1)], &[1, 1]);
        let renamed: Vec<u32> = after.table().iter().map(|&m| if m == 1 { 2 } else { m }).collect();
        assert_eq!(renamed, [0, 0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn every_member_owns_an_equal_share_and_removal_disrupts_little() {
        let names: Vec<String> = (0..100).map(|i| format!("10.1.0.{i}:8080")).collect();
        let maglev = Maglev::new(&members_named(&names), DEFAULT_TABLE_SIZE);
        let mut owned = vec![0; 100];
        for &m in maglev.table() {
            owned[m as usize] += 1;
        }
        assert!(owned.iter().all(|&n| n == 655 || n == 656), "{owned:?}");

        let mut fewer = names.clone();
        fewer.remove(42);
        let after = Maglev::new(&members_named(&fewer), DEFAULT_TABLE_SIZE);
        let mut changed = 0;
        for (slot, (&b, &a)) in maglev.table().iter().zip(after.table()).enumerate() {
            if names[b as usize] == "10.1.0.42:8080" {
                assert_ne!(
                    fewer[a as usize], names[b as usize],
                    "slot {slot} still points at the removed member"
                );
            }
            if names[b as usize] != fewer[a as usize] {
                changed += 1;
            }
        }
        let share = changed as f64 / DEFAULT_TABLE_SIZE as f64;
        assert!(share <= 0.02, "{:.2}% of entries changed", share * 100.0);
    }

    #[test]
    fn weights_set_shares() {
        let mut m = members_named(&["a".into(), "b".into()]);
        m[0].weight = 3;
        let maglev = Maglev::new(&m, 1009);
        let a = maglev.table().iter().filter(|&&x| x == 0).count();
        assert!((755..=758).contains(&a), "{a}");
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(7) && !is_prime(65_536) && !is_prime(1));
    }
}
