//! Every balancing algorithm, one module each, and the factory that builds
//! the one a pool's configuration names.

mod least_connections;
mod round_robin;
mod weighted_round_robin;

pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::{Member, Selector};

/// A pool's balancing algorithm and its parameters, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// Strict rotation over available backends.
    RoundRobin,
    /// nginx's smooth weighted round robin.
    WeightedRoundRobin,
    /// Fewest in-flight requests per unit of weight.
    LeastConnections,
}

impl Algorithm {
    /// Every configuration name, in documentation order.
    pub const NAMES: &'static [&'static str] = &["round_robin", "weighted_round_robin", "least_connections"];

    /// The algorithm a configuration name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "round_robin" => Self::RoundRobin,
            "weighted_round_robin" => Self::WeightedRoundRobin,
            "least_connections" => Self::LeastConnections,
            _ => return None,
        })
    }

    /// The configuration name of this algorithm.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConnections => "least_connections",
        }
    }
}

/// Builds the selector for `algorithm` over `members` (off the request
/// path: called when membership or weights change).
pub fn build_selector(algorithm: &Algorithm, members: &[Member]) -> Box<dyn Selector> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new(members.len())),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(members)),
        Algorithm::LeastConnections => Box::new(LeastConnections::new(members)),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::{Load, Member, PickContext, Selector, SplitMix64};

    /// Members named a, b, c, ... with the given weights.
    pub fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                key: ((b'a' + i as u8) as char).to_string(),
                weight,
                load: Arc::new(Load::default()),
            })
            .collect()
    }

    /// `n` picks accepting everything, as member names.
    pub fn pick_names(selector: &dyn Selector, members: &[Member], n: usize) -> String {
        let mut rng = SplitMix64::new(1);
        (0..n)
            .map(|_| {
                let mut ctx = PickContext { key: None, now_nanos: 0, rng: &mut rng };
                members[selector.pick(&mut ctx, &|_| true).unwrap()].key.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}
