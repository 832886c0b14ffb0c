//! Progressive canary analysis: a new version takes a growing share of a
//! route's traffic, one step per interval, while its error rate and p99
//! latency stay close to the baseline's measured over the same interval;
//! one bad interval sends its share back to zero at once.
//!
//! This is the step analysis of Flagger (`stepWeights`, `threshold`,
//! request-success-rate and request-duration metrics) and Argo Rollouts
//! (`setWeight` steps gated by an `AnalysisRun`), done inside the
//! balancer on its own measurements instead of by a controller polling
//! Prometheus. The machine is pure: the proxy feeds it each interval's
//! figures and reads back the weight.

use std::sync::atomic::{AtomicU64, Ordering};

/// Latencies below this count as this much when comparing p99s: at
/// loopback speeds timer noise alone would otherwise double a ratio.
pub const P99_FLOOR_NANOS: u64 = 1_000_000;

/// A canary's schedule and its gates.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryPlan {
    /// Percentages of traffic, strictly increasing, each in (0, 100].
    pub steps: Vec<f64>,
    /// Requests each side needs before an interval is judged.
    pub min_requests: u64,
    /// Most the canary's error rate may exceed the baseline's, percentage points.
    pub max_error_rate: f64,
    /// Most the canary's p99 may be of the baseline's.
    pub max_p99_ratio: f64,
}

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Walking its steps.
    Progressing,
    /// Holding its weight; intervals are not judged.
    Paused,
    /// Sent back to 0% by a failed judgement or an operator.
    RolledBack,
    /// Takes all the traffic.
    Promoted,
}

impl Phase {
    /// The value of `lb_canary_state`: 0 rolled back, 1 progressing (or paused), 2 promoted.
    pub fn gauge(self) -> i64 {
        match self {
            Self::RolledBack => 0,
            Self::Progressing | Self::Paused => 1,
            Self::Promoted => 2,
        }
    }

    /// The name the admin API shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::RolledBack => "rolled_back",
            Self::Promoted => "promoted",
        }
    }
}

/// One side's figures over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed: 5xx, or no answer from the backend.
    pub errors: u64,
    /// 99th percentile latency, nanoseconds (0 without requests).
    pub p99_nanos: u64,
}

impl Summary {
    /// Errors over requests, percent.
    pub fn error_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }
}

/// What one interval's judgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few requests on a side: the figures keep accumulating.
    Wait,
    /// Healthy: on to this percentage.
    Advanced(f64),
    /// Healthy at the last step: all traffic to the canary.
    Promoted,
    /// A gate failed; why, with the figures.
    RolledBack(String),
}

/// A canary's state machine.
#[derive(Debug, Clone)]
pub struct CanaryMachine {
    plan: CanaryPlan,
    step: usize,
    phase: Phase,
}

impl CanaryMachine {
    /// A canary at its first step.
    pub fn new(plan: CanaryPlan) -> Self {
        let phase = if plan.steps.first().is_some_and(|&s| s >= 100.0) {
            Phase::Promoted
        } else {
            Phase::Progressing
        };
        Self { plan, step: 0, phase }
    }

    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The index of its current step.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The canary's share of traffic, percent.
    pub fn percent(&self) -> f64 {
        match self.phase {
            Phase::RolledBack => 0.0,
            Phase::Promoted => 100.0,
            Phase::Progressing | Phase::Paused => self.plan.steps[self.step],
        }
    }

    /// Judges an interval's figures, when both sides have enough requests
    /// and the canary is progressing (otherwise [`Verdict::Wait`]).
    pub fn judge(&mut self, canary: &Summary, baseline: &Summary) -> Verdict {
        if self.phase != Phase::Progressing
            || canary.requests < self.plan.min_requests
            || baseline.requests < self.plan.min_requests
        {
            return Verdict::Wait;
        }
        let error_excess = canary.error_percent() - baseline.error_percent();
        if error_excess > self.plan.max_error_rate {
            self.phase = Phase::RolledBack;
            return Verdict::RolledBack(format!(
                "error rate {:.2}% vs baseline {:.2}% ({} of {} vs {} of {} requests): more than {} points above",
                canary.error_percent(),
                baseline.error_percent(),
                canary.errors,
                canary.requests,
                baseline.errors,
                baseline.requests,
                self.plan.max_error_rate
            ));
        }
        let ratio =
            canary.p99_nanos.max(P99_FLOOR_NANOS) as f64 / baseline.p99_nanos.max(P99_FLOOR_NANOS) as f64;
        if ratio > self.plan.max_p99_ratio {
            self.phase = Phase::RolledBack;
            return Verdict::RolledBack(format!(
                "p99 {:.1} ms vs baseline {:.1} ms: ratio {ratio:.2} above {}",
                canary.p99_nanos as f64 / 1e6,
                baseline.p99_nanos as f64 / 1e6,
                self.plan.max_p99_ratio
            ));
        }
        self.advance()
    }

    fn advance(&mut self) -> Verdict {
        if self.step + 1 < self.plan.steps.len() {
            self.step += 1;
            if self.plan.steps[self.step] >= 100.0 {
                self.phase = Phase::Promoted;
                return Verdict::Promoted;
            }
            return Verdict::Advanced(self.plan.steps[self.step]);
        }
        self.phase = Phase::Promoted;
        Verdict::Promoted
    }

    /// An operator sends all traffic to the canary.
    pub fn promote(&mut self) {
        self.phase = Phase::Promoted;
    }

    /// An operator sends the canary's traffic back to the baseline.
    pub fn abort(&mut self) {
        self.phase = Phase::RolledBack;
    }

    /// An operator holds the canary at its weight; false when it is not progressing.
    pub fn pause(&mut self) -> bool {
        let progressing = self.phase == Phase::Progressing;
        if progressing {
            self.phase = Phase::Paused;
        }
        progressing
    }

    /// An operator lets a paused canary walk on; false when it is not paused.
    pub fn resume(&mut self) -> bool {
        let paused = self.phase == Phase::Paused;
        if paused {
            self.phase = Phase::Progressing;
        }
        paused
    }
}

/// Sub-buckets per power of two: latencies are kept to within 12.5%.
const SUB_BUCKETS: u64 = 8;
/// Powers of two of nanoseconds covered (2^40 ns ≈ 18 minutes).
const OCTAVES: u64 = 40;

/// A lock-free log-linear latency histogram (the layout of HdrHistogram
/// with 3 bits of precision), emptied into a [`Summary`] per interval.
#[derive(Debug)]
pub struct Window {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..SUB_BUCKETS * OCTAVES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS {
        return nanos as usize;
    }
    let octave = 63 - u64::from(nanos.leading_zeros()); // ≥ 3
    let sub = (nanos >> (octave - 3)) & (SUB_BUCKETS - 1);
    (((octave - 2) * SUB_BUCKETS + sub) as usize).min((SUB_BUCKETS * OCTAVES) as usize - 1)
}

/// The highest latency a bucket holds.
fn bucket_top(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let octave = bucket / SUB_BUCKETS + 2;
    let sub = bucket % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << (octave - 3)) - 1
}

impl Window {
    /// Counts a response that took `nanos`; `error` for a 5xx or no answer.
    pub fn record(&self, error: bool, nanos: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted since the window was last taken.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The figures so far, emptying the window. A response recorded while
    /// it is taken counts in this window or the next, never in both.
    pub fn take(&self) -> Summary {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.swap(0, Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let rank = (total * 99).div_ceil(100).max(1);
        let mut seen = 0;
        let mut p99_nanos = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                p99_nanos = bucket_top(bucket);
                break;
            }
        }
        Summary { requests, errors, p99_nanos }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CanaryPlan {
        CanaryPlan {
            steps: vec![1.0, 5.0, 25.0, 100.0],
            min_requests: 100,
            max_error_rate: 1.0,
            max_p99_ratio: 1.5,
        }
    }

    fn figures(requests: u64, errors: u64, p99_ms: u64) -> Summary {
        Summary { requests, errors, p99_nanos: p99_ms * 1_000_000 }
    }

    #[test]
    fn a_healthy_canary_walks_every_step_to_promotion() {
        let mut machine = CanaryMachine::new(plan());
        assert_eq!(machine.percent(), 1.0);
        let healthy = figures(200, 1, 10);
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Advanced(5.0));
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Advanced(25.0));
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Promoted);
        assert_eq!((machine.phase(), machine.percent()), (Phase::Promoted, 100.0));
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Wait, "a promoted canary is not judged");
    }

    #[test]
    fn too_few_requests_on_either_side_waits() {
        let mut machine = CanaryMachine::new(plan());
        assert_eq!(machine.judge(&figures(99, 99, 10), &figures(5000, 0, 10)), Verdict::Wait);
        assert_eq!(machine.judge(&figures(5000, 0, 10), &figures(99, 0, 10)), Verdict::Wait);
        assert_eq!(machine.percent(), 1.0);
    }

    #[test]
    fn an_error_rate_above_the_gate_rolls_back_at_once() {
        let mut machine = CanaryMachine::new(plan());
        // 1.5 points above the baseline: within 1.0 it would advance.
        match machine.judge(&figures(200, 4, 10), &figures(1000, 5, 10)) {
            Verdict::RolledBack(why) => assert!(why.contains("error rate 2.00% vs baseline 0.50%"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!((machine.phase(), machine.percent()), (Phase::RolledBack, 0.0));
        let mut machine = CanaryMachine::new(plan());
        assert_eq!(machine.judge(&figures(200, 3, 10), &figures(1000, 5, 10)), Verdict::Advanced(5.0));
    }

    #[test]
    fn a_slow_canary_rolls_back_and_sub_millisecond_noise_does_not() {
        let mut machine = CanaryMachine::new(plan());
        assert!(matches!(machine.judge(&figures(200, 0, 16), &figures(200, 0, 10)), Verdict::RolledBack(_)));
        let mut machine = CanaryMachine::new(plan());
        let fast = Summary { requests: 200, errors: 0, p99_nanos: 300_000 };
        let faster = Summary { requests: 200, errors: 0, p99_nanos: 100_000 };
        assert_eq!(machine.judge(&fast, &faster), Verdict::Advanced(5.0));
    }

    #[test]
    fn operators_pause_resume_promote_and_abort() {
        let mut machine = CanaryMachine::new(plan());
        let healthy = figures(200, 0, 10);
        assert!(machine.pause());
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Wait);
        assert_eq!((machine.phase(), machine.percent()), (Phase::Paused, 1.0));
        assert!(!machine.pause());
        assert!(machine.resume());
        assert_eq!(machine.judge(&healthy, &healthy), Verdict::Advanced(5.0));
        machine.abort();
        assert_eq!(machine.percent(), 0.0);
        assert!(!machine.resume());
        machine.promote();
        assert_eq!((machine.phase(), machine.percent()), (Phase::Promoted, 100.0));
    }

    #[test]
    fn the_window_keeps_p99_within_its_precision_and_empties_when_taken() {
        let window = Window::default();
        for i in 1..=1000u64 {
            window.record(i % 100 == 0, i * 1_000_000);
        }
        let summary = window.take();
        assert_eq!((summary.requests, summary.errors), (1000, 10));
        let p99 = summary.p99_nanos as f64 / 1e6;
        assert!((990.0..=990.0 * 1.125).contains(&p99), "p99 {p99} ms");
        assert_eq!(window.take(), Summary { requests: 0, errors: 0, p99_nanos: 0 });
    }

    #[test]
    fn buckets_cover_their_values() {
        for nanos in [0, 1, 7, 8, 9, 15, 16, 1000, 123_456_789, 1 << 39] {
            let bucket = bucket_of(nanos);
            assert!(bucket_top(bucket) >= nanos, "{nanos} above its bucket's top {}", bucket_top(bucket));
            if bucket > 0 {
                assert!(bucket_top(bucket - 1) < nanos, "{nanos} belongs to an earlier bucket");
            }
        }
    }
}
