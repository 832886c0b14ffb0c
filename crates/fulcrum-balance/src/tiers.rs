//! Which part of a pool may serve a request, before the algorithm picks
//! within it: priority levels, then the local zone, then the nearest
//! region. Pure functions over "healthy weight / total weight" figures, so
//! the proxy's one candidate filter applies them to every algorithm.
//!
//! **Priority** (Envoy's priority load, `upstream/load_balancer_impl.cc`):
//! level `p` is worth `min(1, 1.4 × healthy_p / total_p)` of the traffic the
//! levels before it left over. With the overprovisioning factor 1.4, level
//! 0 keeps all traffic until fewer than 1/1.4 ≈ 71% of its weight is
//! healthy; then the shortfall spills, proportionally, to level 1, and so on.
//!
//! **Locality** (Envoy's zone-aware routing, simplified to one local zone):
//! the local zone takes `min(1, 1.4 × healthy_local / total_local)` of the
//! level's traffic and the rest spills to the other zones, so a zone that
//! loses most of its backends does not melt the survivors.
//!
//! **Geography**: the client's region comes from the `[geo]` networks; the
//! candidate regions are tried by increasing latency from it and the first
//! with a healthy backend serves.

/// Envoy's default overprovisioning factor.
pub const OVERPROVISIONING: f64 = 1.4;

/// Healthy and total weight of one group of backends.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    /// Sum of the weights of the group's available backends.
    pub healthy: u64,
    /// Sum of the weights of all the group's backends.
    pub total: u64,
}

impl Capacity {
    /// The share of offered traffic this group accepts: `min(1, 1.4 × healthy/total)`.
    pub fn share(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (OVERPROVISIONING * self.healthy as f64 / self.total as f64).min(1.0)
    }
}

/// The priority level (index into `levels`, ordered 0 first) that serves a
/// request, given a uniform `draw` in [0, 1). `None` when nothing is healthy.
/// `levels` is walked lazily (the proxy measures a level only when the
/// levels before it left traffic over), and again only when no level won
/// the draw.
pub fn choose_priority<I>(levels: I, draw: f64) -> Option<usize>
where
    I: IntoIterator<Item = Capacity>,
    I::IntoIter: Clone,
{
    let levels = levels.into_iter();
    let mut left = 1.0;
    let mut ticket = draw;
    for (index, level) in levels.clone().enumerate() {
        let served = left * level.share();
        if ticket < served {
            return Some(index);
        }
        ticket -= served;
        left -= served;
    }
    levels.into_iter().position(|l| l.healthy > 0)
}

/// Whether the local zone serves a request, given a uniform `draw` in
/// [0, 1); `remote_healthy` says whether any other zone could.
pub fn serve_locally(local: Capacity, remote_healthy: bool, draw: f64) -> bool {
    if !remote_healthy {
        return local.healthy > 0;
    }
    draw < local.share()
}

/// The nearest region with something healthy: `regions` are
/// `(latency from the client, has a healthy backend)` per candidate region.
pub fn nearest_region(regions: impl IntoIterator<Item = (u32, bool)>) -> Option<usize> {
    regions
        .into_iter()
        .enumerate()
        .filter(|(_, (_, healthy))| *healthy)
        .min_by_key(|(_, (latency, _))| *latency)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    fn capacity(healthy: u64, total: u64) -> Capacity {
        Capacity { healthy, total }
    }

    fn served_by_level(levels: &[Capacity]) -> Vec<f64> {
        let mut rng = SplitMix64::new(7);
        let mut counts = vec![0u32; levels.len()];
        for _ in 0..100_000 {
            if let Some(level) = choose_priority(levels.iter().copied(), rng.next_f64()) {
                counts[level] += 1;
            }
        }
        counts.iter().map(|&c| f64::from(c) / 100_000.0).collect()
    }

    #[test]
    fn priority_one_idles_while_priority_zero_has_capacity() {
        assert_eq!(served_by_level(&[capacity(3, 3), capacity(2, 2)]), [1.0, 0.0]);
        // 3 of 4 healthy: 1.4 × 0.75 ≥ 1, still everything on level 0.
        assert_eq!(served_by_level(&[capacity(3, 4), capacity(2, 2)]), [1.0, 0.0]);
    }

    #[test]
    fn the_shortfall_spills_proportionally() {
        // 1 of 2 healthy: level 0 takes 70%, level 1 the other 30%.
        let served = served_by_level(&[capacity(1, 2), capacity(2, 2)]);
        assert!((served[0] - 0.7).abs() < 0.01 && (served[1] - 0.3).abs() < 0.01, "{served:?}");
        // Level 0 dead: all on level 1.
        assert_eq!(served_by_level(&[capacity(0, 2), capacity(2, 2)]), [0.0, 1.0]);
        // Everything degraded: the remainder goes to the first live level.
        let served = served_by_level(&[capacity(1, 4), capacity(1, 4)]);
        assert!((served[0] - (0.35 + 1.0 - 0.35 - 0.65 * 0.35)).abs() < 0.01, "{served:?}");
        assert_eq!(choose_priority([capacity(0, 1), capacity(0, 1)], 0.5), None);
    }

    #[test]
    fn locality_spills_when_the_local_zone_is_short() {
        assert!(serve_locally(capacity(3, 3), true, 0.999));
        assert!(serve_locally(capacity(1, 2), true, 0.69));
        assert!(!serve_locally(capacity(1, 2), true, 0.71));
        assert!(!serve_locally(capacity(0, 2), true, 0.0));
        assert!(serve_locally(capacity(1, 3), false, 0.99), "no remote capacity: stay local");
    }

    #[test]
    fn the_nearest_healthy_region_wins() {
        assert_eq!(nearest_region([(90, true), (0, true), (40, true)]), Some(1));
        assert_eq!(nearest_region([(90, true), (0, false), (40, true)]), Some(2));
        assert_eq!(nearest_region([(90, false), (0, false)]), None);
    }
}
