//! Round robin: each pick takes the next backend in a fixed rotation.
//!
//! One shared atomic cursor is advanced per candidate examined, so skipped
//! (unavailable) backends do not make their successor take a double share:
//! with `b` down, `a b c` rotates as `a c a c`, as HAProxy's `roundrobin`.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{scan, PickContext, Selector, MAX_CANDIDATES};

/// Strict rotation over `len` members.
#[derive(Debug)]
pub struct RoundRobin {
    len: usize,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// A rotation over `len` members, starting at the first.
    pub fn new(len: usize) -> Self {
        Self { len, cursor: AtomicUsize::new(0) }
    }
}

impl Selector for RoundRobin {
    fn pick(&self, _ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut index = 0;
        for _ in 0..self.len.min(MAX_CANDIDATES) {
            index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.len;
            if accept(index) {
                return Some(index);
            }
        }
        scan(self.len, index + 1, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::testing::{members, pick_names};
    use crate::SplitMix64;

    #[test]
    fn rotates_in_order() {
        let m = members(&[1, 1, 1]);
        assert_eq!(pick_names(&RoundRobin::new(3), &m, 7), "a b c a b c a");
    }

    #[test]
    fn skips_unavailable_without_doubling_the_next() {
        let rr = RoundRobin::new(3);
        let mut rng = SplitMix64::new(0);
        let picks: Vec<usize> = (0..6)
            .map(|_| {
                let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
                rr.pick(&mut ctx, &|i| i != 1).unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn none_when_nothing_is_acceptable() {
        let rr = RoundRobin::new(3);
        let mut rng = SplitMix64::new(0);
        let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
        assert_eq!(rr.pick(&mut ctx, &|_| false), None);
        assert_eq!(RoundRobin::new(0).pick(&mut ctx, &|_| true), None);
    }
}
