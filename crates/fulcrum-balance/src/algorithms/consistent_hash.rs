//! Consistent hashing on a ketama ring ([`super::ring`]): the request's
//! key picks the first point clockwise; if that member is unavailable the
//! walk continues clockwise, so its keys spread over the others while every
//! other key stays put.

use super::ring::Ring;
use crate::{Member, PickContext, Selector};

/// Key → member on a ring of virtual nodes.
#[derive(Debug)]
pub struct ConsistentHash {
    ring: Ring,
}

impl ConsistentHash {
    /// A ring with `virtual_nodes` points per unit of weight.
    pub fn new(members: &[Member], virtual_nodes: u32) -> Self {
        Self { ring: Ring::new(members, virtual_nodes) }
    }
}

impl Selector for ConsistentHash {
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let hash = ctx.key.unwrap_or_else(|| ctx.rng.next_u64());
        self.ring.find(hash, accept)
    }
}
