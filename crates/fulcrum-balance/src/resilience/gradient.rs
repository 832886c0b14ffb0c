//! An adaptive concurrency limit: Envoy's adaptive concurrency filter
//! ("gradient controller"), after Netflix's concurrency-limits Gradient.
//!
//! The limit follows the ratio of the uncongested round-trip time to the
//! recent one. Every sample window (100 ms) the mean RTT of the requests
//! that finished in it gives
//!
//! ```text
//! gradient  = clamp(min_rtt × (1 + buffer) / sample_rtt, 0.5, 2.0)
//! limit'    = gradient × limit + √(gradient × limit)      (headroom: queue)
//! ```
//!
//! so the limit grows while latency stays near the minimum and falls as
//! soon as requests queue at the backends. The minimum RTT is measured at
//! start and again every `min_rtt_interval` (10 s): the limit drops to
//! `min_limit` until `MIN_RTT_SAMPLES` requests have finished, and the
//! smallest RTT among them becomes the new minimum — so a backend that got
//! slower for good is re-learnt instead of throttled forever.
//!
//! A pure state machine: times are arguments (monotonic nanos).

/// Settings of the gradient limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    /// Smallest limit, also the limit while the minimum RTT is measured.
    pub min_limit: u32,
    /// Largest limit.
    pub max_limit: u32,
    /// Limit before anything is known.
    pub initial_limit: u32,
    /// Length of a sample window, nanos.
    pub sample_window: u64,
    /// Time between minimum-RTT measurements, nanos.
    pub min_rtt_interval: u64,
    /// Share above the minimum RTT that still counts as uncongested.
    pub buffer: f64,
}

impl Default for GradientConfig {
    fn default() -> Self {
        Self {
            min_limit: 3,
            max_limit: 1000,
            initial_limit: 20,
            sample_window: 100_000_000,
            min_rtt_interval: 10_000_000_000,
            buffer: 0.1,
        }
    }
}

/// Requests whose RTT make one minimum-RTT measurement.
pub const MIN_RTT_SAMPLES: u32 = 25;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Measuring the minimum RTT at `min_limit`: samples so far and the smallest.
    MeasuringMinRtt { samples: u32, smallest: u64, resume_limit: f64 },
    /// Following the gradient until `next_measure`.
    Following { next_measure: u64 },
}

/// The limit and what it is computed from.
#[derive(Debug, Clone)]
pub struct GradientLimit {
    config: GradientConfig,
    limit: f64,
    min_rtt: u64,
    phase: Phase,
    window_start: u64,
    window_sum: u64,
    window_count: u64,
}

impl GradientLimit {
    /// A limit that first measures the minimum RTT, starting at `now`.
    pub fn new(config: GradientConfig, now: u64) -> Self {
        Self {
            config,
            limit: f64::from(config.initial_limit),
            min_rtt: 0,
            phase: Phase::MeasuringMinRtt {
                samples: 0,
                smallest: u64::MAX,
                resume_limit: f64::from(config.initial_limit),
            },
            window_start: now,
            window_sum: 0,
            window_count: 0,
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> u32 {
        match self.phase {
            Phase::MeasuringMinRtt { .. } => self.config.min_limit,
            Phase::Following { .. } => self.limit.round() as u32,
        }
    }

    /// The minimum RTT last measured (0 before the first measurement).
    pub fn min_rtt(&self) -> u64 {
        self.min_rtt
    }

    /// A request finished after `rtt` nanos, at `now`. Returns whether the limit changed.
    pub fn on_sample(&mut self, rtt: u64, now: u64) -> bool {
        let before = self.limit();
        match &mut self.phase {
            Phase::MeasuringMinRtt { samples, smallest, resume_limit } => {
                *samples += 1;
                *smallest = (*smallest).min(rtt.max(1));
                if *samples >= MIN_RTT_SAMPLES {
                    self.min_rtt = *smallest;
                    self.limit = *resume_limit;
                    self.phase = Phase::Following { next_measure: now + self.config.min_rtt_interval };
                    self.window_start = now;
                    self.window_sum = 0;
                    self.window_count = 0;
                }
            }
            Phase::Following { next_measure } => {
                let next_measure = *next_measure;
                self.window_sum += rtt;
                self.window_count += 1;
                if now.saturating_sub(self.window_start) >= self.config.sample_window {
                    self.update_limit();
                    self.window_start = now;
                    self.window_sum = 0;
                    self.window_count = 0;
                }
                if now >= next_measure {
                    self.phase =
                        Phase::MeasuringMinRtt { samples: 0, smallest: u64::MAX, resume_limit: self.limit };
                }
            }
        }
        before != self.limit()
    }

    fn update_limit(&mut self) {
        let sample_rtt = self.window_sum as f64 / self.window_count.max(1) as f64;
        let gradient = (self.min_rtt as f64 * (1.0 + self.config.buffer) / sample_rtt).clamp(0.5, 2.0);
        let scaled = gradient * self.limit;
        self.limit = (scaled + scaled.sqrt())
            .clamp(f64::from(self.config.min_limit), f64::from(self.config.max_limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Feeds `count` samples of `rtt` spread over `span` starting at `from`; returns the end time.
    fn feed(limit: &mut GradientLimit, from: u64, span: u64, count: u64, rtt: u64) -> u64 {
        for i in 0..count {
            limit.on_sample(rtt, from + span * (i + 1) / count);
        }
        from + span
    }

    fn measured(rtt: u64) -> (GradientLimit, u64) {
        let mut limit = GradientLimit::new(GradientConfig::default(), 0);
        assert_eq!(limit.limit(), 3, "measures the minimum RTT first, at the smallest limit");
        let now = feed(&mut limit, 0, 100 * MS, u64::from(MIN_RTT_SAMPLES), rtt);
        assert_eq!(limit.min_rtt(), rtt);
        assert_eq!(limit.limit(), 20, "back to the initial limit");
        (limit, now)
    }

    #[test]
    fn the_limit_grows_while_latency_stays_at_the_minimum() {
        let (mut limit, now) = measured(10 * MS);
        let now = feed(&mut limit, now, 1_000 * MS, 1_000, 10 * MS);
        let after_a_second = limit.limit();
        assert!(after_a_second > 100, "{after_a_second}");
        feed(&mut limit, now, 2_000 * MS, 2_000, 10 * MS);
        assert_eq!(limit.limit(), 1000, "uncongested: up to max_limit");
    }

    #[test]
    fn the_limit_falls_within_a_second_when_latency_doubles() {
        let (mut limit, now) = measured(10 * MS);
        let now = feed(&mut limit, now, 1_000 * MS, 1_000, 10 * MS);
        let high = limit.limit();
        feed(&mut limit, now, 1_000 * MS, 500, 20 * MS);
        assert!(limit.limit() < high / 10, "{high} -> {}", limit.limit());
        assert!(limit.limit() >= 3);
    }

    #[test]
    fn within_the_buffer_latency_counts_as_uncongested() {
        let (mut limit, now) = measured(10 * MS);
        feed(&mut limit, now, 1_000 * MS, 1_000, 10_500_000);
        assert!(limit.limit() > 100, "5% above the minimum is within the 10% buffer: {}", limit.limit());
    }

    #[test]
    fn the_minimum_rtt_is_measured_again_so_slower_backends_are_relearnt() {
        let (mut limit, now) = measured(10 * MS);
        // The backends get slower for good: the limit falls, then at the
        // next measurement 20 ms becomes the minimum and it grows back.
        let now = feed(&mut limit, now, 9_900 * MS, 5_000, 20 * MS);
        assert_eq!(limit.limit(), 3);
        let now = feed(&mut limit, now, 200 * MS, 10, 20 * MS);
        assert_eq!(limit.limit(), 3, "measuring: held at min_limit");
        let now = feed(&mut limit, now, 200 * MS, u64::from(MIN_RTT_SAMPLES), 20 * MS);
        assert_eq!(limit.min_rtt(), 20 * MS);
        feed(&mut limit, now, 4_000 * MS, 4_000, 20 * MS);
        assert_eq!(limit.limit(), 1000);
    }
}
