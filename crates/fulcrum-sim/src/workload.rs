//! Random draws of the workload, all from seeded generators: Poisson
//! inter-arrival times at the scenario's current rate, service times, and
//! Zipf-distributed request keys.

use std::time::Duration;

use fulcrum_balance::SplitMix64;

use crate::scenario::{Arrivals, Keys, Service};

const SECOND: f64 = 1e9;

/// The arrival rate (per second) at time `t` (nanos): the base rate, moved
/// by ramps and multiplied by spikes.
pub fn rate_at(arrivals: &Arrivals, t: u64) -> f64 {
    let at = Duration::from_nanos(t);
    let mut rate = arrivals.rate;
    for ramp in &arrivals.ramps {
        if at >= ramp.to {
            rate = ramp.to_rate;
        } else if at >= ramp.from {
            let span = (ramp.to - ramp.from).as_secs_f64().max(1e-9);
            let done = (at - ramp.from).as_secs_f64() / span;
            rate = ramp.from_rate + (ramp.to_rate - ramp.from_rate) * done;
        }
    }
    for spike in &arrivals.spikes {
        if at >= spike.from && at < spike.to {
            rate *= spike.factor;
        }
    }
    rate.max(1e-9)
}

/// Time to the next Poisson arrival at `rate` per second, in nanos.
pub fn next_arrival(rate: f64, rng: &mut SplitMix64) -> u64 {
    let u = 1.0 - rng.next_f64(); // (0, 1]
    (-u.ln() / rate * SECOND) as u64
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One service time, in nanos.
pub fn service_time(service: &Service, rng: &mut SplitMix64) -> f64 {
    match service {
        Service::Constant { value } => value.as_nanos() as f64,
        Service::Exponential { mean } => -(1.0 - rng.next_f64()).ln() * mean.as_nanos() as f64,
        Service::Lognormal { median, sigma } => {
            let median = median.as_nanos() as f64;
            let shape = sigma.as_nanos() as f64 / median;
            median * (shape * normal(rng)).exp()
        }
    }
}

/// Zipf-distributed keys `0..count`: key `k` has weight `1 / (k+1)^exponent`.
#[derive(Debug)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The sampler for `keys`.
    pub fn new(keys: &Keys) -> Self {
        let mut total = 0.0;
        let cumulative = (0..keys.count)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(keys.exponent);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// One key.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let target = rng.next_f64() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c <= target).min(self.cumulative.len() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Ramp;

    #[test]
    fn poisson_gaps_average_one_over_the_rate() {
        let mut rng = SplitMix64::new(1);
        let mean = (0..100_000).map(|_| next_arrival(1000.0, &mut rng) as f64).sum::<f64>() / 100_000.0;
        assert!((mean / 1e6 - 1.0).abs() < 0.02, "{mean}");
    }

    #[test]
    fn ramps_and_spikes_shape_the_rate() {
        let arrivals = Arrivals {
            rate: 100.0,
            ramps: vec![Ramp {
                from: Duration::from_secs(10),
                to: Duration::from_secs(20),
                from_rate: 100.0,
                to_rate: 300.0,
            }],
            spikes: vec![crate::scenario::Spike {
                from: Duration::from_secs(30),
                to: Duration::from_secs(31),
                factor: 5.0,
            }],
        };
        let s = 1_000_000_000;
        assert_eq!(rate_at(&arrivals, 5 * s), 100.0);
        assert_eq!(rate_at(&arrivals, 15 * s), 200.0);
        assert_eq!(rate_at(&arrivals, 25 * s), 300.0);
        assert_eq!(rate_at(&arrivals, 30 * s), 1500.0);
    }

    #[test]
    fn lognormal_has_the_requested_median_and_spread() {
        let service =
            Service::Lognormal { median: Duration::from_millis(167), sigma: Duration::from_millis(5) };
        let mut rng = SplitMix64::new(2);
        let mut draws: Vec<f64> = (0..50_000).map(|_| service_time(&service, &mut rng) / 1e6).collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[25_000];
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let std = (draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
        assert!((median - 167.0).abs() < 0.3 && (std - 5.0).abs() < 0.2, "median {median}, std {std}");
    }

    #[test]
    fn zipf_favours_low_keys() {
        let zipf = Zipf::new(&Keys { count: 1000, exponent: 1.0 });
        let mut rng = SplitMix64::new(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        // Key 0 is twice as likely as key 1 and ten times key 9.
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((ratio - 2.0).abs() < 0.15, "{ratio}");
        assert!(counts[0] > 8 * counts[9] && counts[0] < 12 * counts[9]);
    }
}
