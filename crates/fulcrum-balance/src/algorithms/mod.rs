//! Every balancing algorithm, one module each, and the factory that builds
//! the one a pool's configuration names.

mod adaptive;
mod bounded_consistent_hash;
mod consistent_hash;
mod ip_hash;
mod least;
mod least_connections;
mod least_response_time;
mod maglev;
mod p2c;
mod random;
mod ring;
mod round_robin;
mod weighted_round_robin;
mod weighted_sampler;

pub use adaptive::Adaptive;
pub use bounded_consistent_hash::BoundedConsistentHash;
pub use consistent_hash::ConsistentHash;
pub use ip_hash::IpHash;
pub use least::{EXACT_SCAN_LIMIT, SAMPLE};
pub use least_connections::LeastConnections;
pub use least_response_time::LeastResponseTime;
pub use maglev::{is_prime, Maglev, DEFAULT_TABLE_SIZE};
pub use p2c::PowerOfTwoChoices;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::{Member, Selector};

/// Default points per unit of weight on a hash ring (ketama's 160).
pub const DEFAULT_VIRTUAL_NODES: u32 = 160;
/// Default load bound of `bounded_consistent_hash` (HAProxy suggests 125).
pub const DEFAULT_BALANCE_FACTOR: f64 = 1.25;

/// A pool's balancing algorithm and its parameters, as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Strict rotation over available backends.
    RoundRobin,
    /// nginx's smooth weighted round robin.
    WeightedRoundRobin,
    /// Fewest in-flight requests per unit of weight.
    LeastConnections,
    /// Lowest EWMA latency × (in-flight + 1).
    LeastResponseTime,
    /// Power of two random choices on peak-EWMA cost.
    P2c,
    /// Weighted random.
    Random,
    /// Hash of the client address.
    IpHash,
    /// Ketama ring.
    ConsistentHash {
        /// Points per unit of weight.
        virtual_nodes: u32,
    },
    /// Maglev lookup table.
    Maglev {
        /// Table size, prime.
        table_size: u64,
    },
    /// Consistent hashing with bounded loads.
    BoundedConsistentHash {
        /// Points per unit of weight.
        virtual_nodes: u32,
        /// No member above ⌈c·m/n⌉ in flight.
        balance_factor: f64,
    },
    /// Weights adjusted from latency, errors and load.
    Adaptive,
}

impl Algorithm {
    /// Every configuration name, in documentation order.
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_response_time",
        "p2c",
        "random",
        "ip_hash",
        "consistent_hash",
        "maglev",
        "bounded_consistent_hash",
        "adaptive",
    ];

    /// The algorithm a configuration name stands for, with default parameters.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "round_robin" => Self::RoundRobin,
            "weighted_round_robin" => Self::WeightedRoundRobin,
            "least_connections" => Self::LeastConnections,
            "least_response_time" => Self::LeastResponseTime,
            "p2c" => Self::P2c,
            "random" => Self::Random,
            "ip_hash" => Self::IpHash,
            "consistent_hash" => Self::ConsistentHash { virtual_nodes: DEFAULT_VIRTUAL_NODES },
            "maglev" => Self::Maglev { table_size: DEFAULT_TABLE_SIZE },
            "bounded_consistent_hash" => Self::BoundedConsistentHash {
                virtual_nodes: DEFAULT_VIRTUAL_NODES,
                balance_factor: DEFAULT_BALANCE_FACTOR,
            },
            "adaptive" => Self::Adaptive,
            _ => return None,
        })
    }

    /// The configuration name of this algorithm.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConnections => "least_connections",
            Self::LeastResponseTime => "least_response_time",
            Self::P2c => "p2c",
            Self::Random => "random",
            Self::IpHash => "ip_hash",
            Self::ConsistentHash { .. } => "consistent_hash",
            Self::Maglev { .. } => "maglev",
            Self::BoundedConsistentHash { .. } => "bounded_consistent_hash",
            Self::Adaptive => "adaptive",
        }
    }

    /// Whether picks depend on a per-request hash key.
    pub fn uses_key(&self) -> bool {
        matches!(
            self,
            Self::IpHash
                | Self::ConsistentHash { .. }
                | Self::Maglev { .. }
                | Self::BoundedConsistentHash { .. }
        )
    }
}

/// Builds the selector for `algorithm` over `members` (off the request
/// path: called when membership or weights change).
pub fn build_selector(algorithm: &Algorithm, members: &[Member]) -> Box<dyn Selector> {
    match *algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new(members.len())),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(members)),
        Algorithm::LeastConnections => Box::new(LeastConnections::new(members)),
        Algorithm::LeastResponseTime => Box::new(LeastResponseTime::new(members)),
        Algorithm::P2c => Box::new(PowerOfTwoChoices::new(members)),
        Algorithm::Random => Box::new(Random::new(members)),
        Algorithm::IpHash => Box::new(IpHash::new(members)),
        Algorithm::ConsistentHash { virtual_nodes } => Box::new(ConsistentHash::new(members, virtual_nodes)),
        Algorithm::Maglev { table_size } => Box::new(Maglev::new(members, table_size)),
        Algorithm::BoundedConsistentHash { virtual_nodes, balance_factor } => {
            Box::new(BoundedConsistentHash::new(members, virtual_nodes, balance_factor))
        }
        Algorithm::Adaptive => Box::new(Adaptive::new(members)),
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

    /// Members with the given keys, weight 1.
    pub fn members_named(names: &[String]) -> Vec<Member> {
        names
            .iter()
            .map(|key| Member { key: key.clone(), weight: 1, load: Arc::new(Load::default()) })
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

#[cfg(test)]
mod bounded_walk_tests {
    use std::cell::Cell;

    use super::testing::members;
    use super::*;
    use crate::{PickContext, SplitMix64, MAX_CANDIDATES};

    fn every_algorithm() -> Vec<Algorithm> {
        Algorithm::NAMES.iter().map(|name| Algorithm::from_name(name).expect("a listed name")).collect()
    }

    /// Co-prime weights make a weighted cycle of ~a million entries; with
    /// every member but one rejected, no pick may offer more than a bounded
    /// number of candidates, and each still finds the one that is left.
    #[test]
    fn a_mostly_rejected_pool_costs_a_bounded_walk() {
        let weights: Vec<u32> = (0..20).map(|i| 49_999 + 2 * i).collect();
        let m = members(&weights);
        for algorithm in every_algorithm() {
            let selector = build_selector(&algorithm, &m);
            let mut rng = SplitMix64::new(3);
            for key in 0..50u64 {
                let calls = Cell::new(0usize);
                let accept = |i: usize| {
                    calls.set(calls.get() + 1);
                    i == 13
                };
                let mut ctx =
                    PickContext { key: Some(key.wrapping_mul(0x9E37_79B9)), now_nanos: 0, rng: &mut rng };
                assert_eq!(selector.pick(&mut ctx, &accept), Some(13), "{}", algorithm.name());
                assert!(
                    calls.get() <= 2 * MAX_CANDIDATES + 2 * m.len(),
                    "{} offered {} candidates",
                    algorithm.name(),
                    calls.get()
                );
            }
        }
    }

    /// A Maglev table whose size equals the old fixed probe stride (7919)
    /// still finds a live member for every key when the owner is down.
    #[test]
    fn maglev_finds_a_live_member_at_any_prime_table_size() {
        let m = members(&[1, 1, 1, 1]);
        let selector = build_selector(&Algorithm::Maglev { table_size: 7919 }, &m);
        let mut rng = SplitMix64::new(5);
        for key in 0..2000u64 {
            let mut ctx = PickContext { key: Some(crate::mix64(key)), now_nanos: 0, rng: &mut rng };
            let owner = selector.pick(&mut ctx, &|_| true).expect("all up");
            let mut ctx = PickContext { key: Some(crate::mix64(key)), now_nanos: 0, rng: &mut rng };
            let other = selector.pick(&mut ctx, &|i| i != owner);
            assert!(other.is_some_and(|o| o != owner), "key {key}: no member with the owner down");
        }
    }
}
