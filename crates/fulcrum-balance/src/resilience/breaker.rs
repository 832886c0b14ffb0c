//! A circuit breaker with resilience4j's state machine
//! (`CircuitBreakerStateMachine`): **closed** records every call in a
//! sliding window (the last `window` calls, or the last `window` seconds);
//! once `minimum_calls` are recorded, a failure rate or slow-call rate at
//! or above its threshold **opens** it. Open rejects calls until
//! `wait_in_open` has passed, then the next call moves it to **half-open**,
//! which admits exactly `half_open_calls` probes: if their failure or slow
//! rate is below the thresholds it closes (with a fresh window), otherwise it
//! opens again for another wait.
//!
//! Every admitted call holds a [`Permit`]. A call that ends without an
//! outcome (its request was cancelled) hands its permit back with
//! [`CircuitBreaker::cancel`], so a half-open probe slot is never lost: the
//! breaker cannot stay half-open with no permits and no probe in flight.

use std::collections::VecDeque;

/// How the closed state's window is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `window` calls.
    Count,
    /// The calls of the last `window` seconds.
    Time,
}

/// Breaker settings (resilience4j's names and meanings).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Percent of failed calls that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls that opens the breaker (100 = only when all are slow).
    pub slow_call_rate_threshold: f64,
    /// A call longer than this is slow.
    pub slow_call_duration_nanos: u64,
    /// Calls recorded before rates are judged.
    pub minimum_calls: u32,
    /// Window size: calls (count) or seconds (time).
    pub window: u32,
    /// Count or time window.
    pub window_kind: WindowKind,
    /// How long the breaker stays open before probing.
    pub wait_in_open_nanos: u64,
    /// Probes admitted while half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    /// resilience4j's defaults.
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_nanos: 60 * SECOND,
            minimum_calls: 100,
            window: 100,
            window_kind: WindowKind::Count,
            wait_in_open_nanos: 60 * SECOND,
            half_open_calls: 10,
        }
    }
}

/// The breaker's state, as reported (`lb_circuit_breaker_state`: 0/1/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are rejected.
    Open,
    /// A limited number of probe calls flow.
    HalfOpen,
}

impl BreakerState {
    /// The state's name in `/stats` and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

const SECOND: u64 = 1_000_000_000;

/// Calls, failures and slow calls, aggregated.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn rates(&self) -> (f64, f64) {
        let calls = f64::from(self.calls.max(1));
        (f64::from(self.failures) * 100.0 / calls, f64::from(self.slow) * 100.0 / calls)
    }
}

/// What an admitted call holds until it records an outcome
/// ([`CircuitBreaker::record`]) or is cancelled; either consumes it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be recorded or cancelled"]
pub struct Permit {
    /// The half-open period this probe slot belongs to, for probes.
    probe_of: Option<u64>,
}

/// A circuit breaker for one backend.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Closed state: (second or call index, failed, slow) per call/bucket.
    calls: VecDeque<(u64, Tally)>,
    opened_at: u64,
    half_open_permits: u32,
    half_open: Tally,
    /// Counts half-open periods, so a stale probe's cancel frees nothing.
    half_open_period: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            calls: VecDeque::new(),
            opened_at: 0,
            half_open_permits: 0,
            half_open: Tally::default(),
            half_open_period: 0,
        }
    }

    /// The current state (an open breaker past its wait still reports open
    /// until a call arrives, as resilience4j).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When an open breaker admits its first probe; `None` unless open.
    pub fn reopens_at(&self) -> Option<u64> {
        (self.state == BreakerState::Open).then(|| self.opened_at + self.config.wait_in_open_nanos)
    }

    /// Whether a call at `now` would be admitted, without taking a permit.
    pub fn allows(&self, now: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => now >= self.opened_at + self.config.wait_in_open_nanos,
            BreakerState::HalfOpen => self.half_open_permits > 0,
        }
    }

    /// Admits a call at `now`, taking a half-open permit when probing.
    pub fn try_acquire(&mut self, now: u64) -> Option<Permit> {
        if self.state == BreakerState::Open && self.allows(now) {
            self.state = BreakerState::HalfOpen;
            self.half_open_permits = self.config.half_open_calls;
            self.half_open = Tally::default();
            self.half_open_period += 1;
        }
        match self.state {
            BreakerState::Closed => Some(Permit { probe_of: None }),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.half_open_permits > 0 => {
                self.half_open_permits -= 1;
                Some(Permit { probe_of: Some(self.half_open_period) })
            }
            BreakerState::HalfOpen => None,
        }
    }

    /// Hands back the permit of a call that ended without an outcome: a
    /// probe slot of the current half-open period becomes free again.
    pub fn cancel(&mut self, permit: Permit) {
        if self.state == BreakerState::HalfOpen && permit.probe_of == Some(self.half_open_period) {
            self.half_open_permits = (self.half_open_permits + 1).min(self.config.half_open_calls);
        }
    }

    /// Records how the call admitted with `permit` finished; returns the
    /// new state when it changed. A call admitted in an earlier state
    /// counts in the current one (as resilience4j records at completion).
    pub fn record(
        &mut self,
        permit: Permit,
        failed: bool,
        duration_nanos: u64,
        now: u64,
    ) -> Option<BreakerState> {
        drop(permit);
        let slow = duration_nanos > self.config.slow_call_duration_nanos;
        let before = self.state;
        match self.state {
            BreakerState::Open => {}
            BreakerState::Closed => {
                let tally = self.record_closed(failed, slow, now);
                if tally.calls >= self.config.minimum_calls && self.exceeds(tally) {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => {
                self.half_open.add(failed, slow);
                if self.half_open.calls >= self.config.half_open_calls {
                    if self.exceeds(self.half_open) {
                        self.open(now);
                    } else {
                        self.state = BreakerState::Closed;
                        self.calls.clear();
                    }
                }
            }
        }
        (self.state != before).then_some(self.state)
    }

    fn exceeds(&self, tally: Tally) -> bool {
        let (failure_rate, slow_rate) = tally.rates();
        failure_rate >= self.config.failure_rate_threshold
            || slow_rate >= self.config.slow_call_rate_threshold
    }

    fn open(&mut self, now: u64) {
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.half_open_permits = 0;
    }

    /// Adds a call to the closed window and returns the window's tally.
    fn record_closed(&mut self, failed: bool, slow: bool, now: u64) -> Tally {
        let window = u64::from(self.config.window.max(1));
        match self.config.window_kind {
            WindowKind::Count => {
                let mut call = Tally::default();
                call.add(failed, slow);
                self.calls.push_back((0, call));
                while self.calls.len() as u64 > window {
                    self.calls.pop_front();
                }
            }
            WindowKind::Time => {
                let second = now / SECOND;
                while self.calls.front().is_some_and(|(s, _)| s + window <= second) {
                    self.calls.pop_front();
                }
                match self.calls.back_mut() {
                    Some((s, tally)) if *s == second => tally.add(failed, slow),
                    _ => {
                        let mut tally = Tally::default();
                        tally.add(failed, slow);
                        self.calls.push_back((second, tally));
                    }
                }
            }
        }
        self.calls.iter().fold(Tally::default(), |mut sum, (_, t)| {
            sum.calls += t.calls;
            sum.failures += t.failures;
            sum.slow += t.slow;
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn config(kind: WindowKind) -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_nanos: 60_000 * MS,
            minimum_calls: 10,
            window: 10,
            window_kind: kind,
            wait_in_open_nanos: 30_000 * MS,
            half_open_calls: 10,
        }
    }

    fn feed(breaker: &mut CircuitBreaker, failures: u32, successes: u32, now: u64) -> Option<BreakerState> {
        let mut last = None;
        for i in 0..failures + successes {
            let permit = breaker.try_acquire(now).expect("admitted");
            last = breaker.record(permit, i < failures, MS, now).or(last);
        }
        last
    }

    #[test]
    fn nine_failures_below_the_minimum_stay_closed() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        assert_eq!(feed(&mut breaker, 9, 0, 0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn five_of_ten_open_and_four_of_ten_do_not() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        assert_eq!(feed(&mut breaker, 4, 6, 0), None);
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        assert_eq!(feed(&mut breaker, 5, 5, 0), Some(BreakerState::Open));
        assert!(breaker.try_acquire(1).is_none());
    }

    #[test]
    fn open_waits_then_admits_exactly_the_half_open_calls() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        feed(&mut breaker, 10, 0, 0);
        assert_eq!(breaker.reopens_at(), Some(30_000 * MS));
        assert!(!breaker.allows(29_999 * MS));
        assert!(breaker.try_acquire(29_999 * MS).is_none());
        let after_wait = 30_000 * MS;
        let mut probes: Vec<Permit> =
            (0..10).map(|_| breaker.try_acquire(after_wait).expect("a probe")).collect();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.try_acquire(after_wait).is_none(), "the 11th concurrent half-open call is rejected");
        let last = probes.pop().expect("ten probes");
        for probe in probes {
            assert_eq!(breaker.record(probe, false, MS, after_wait), None);
        }
        assert_eq!(breaker.record(last, false, MS, after_wait), Some(BreakerState::Closed));
    }

    #[test]
    fn failing_probes_reopen_for_another_wait() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        feed(&mut breaker, 10, 0, 0);
        let t = 30_000 * MS;
        for i in 0..10 {
            let probe = breaker.try_acquire(t).expect("a probe");
            breaker.record(probe, i < 5, MS, t);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allows(t + 29_999 * MS) && breaker.allows(t + 30_000 * MS));
    }

    #[test]
    fn slow_calls_open_it_too() {
        let mut breaker = CircuitBreaker::new(BreakerConfig {
            slow_call_rate_threshold: 50.0,
            slow_call_duration_nanos: 100 * MS,
            ..config(WindowKind::Count)
        });
        for i in 0..10 {
            let permit = breaker.try_acquire(0).expect("closed");
            breaker.record(permit, false, if i < 5 { 500 * MS } else { MS }, 0);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_time_window_forgets_old_calls() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Time));
        feed(&mut breaker, 4, 0, 0);
        // Ten seconds later the four failures have left the window: 4 of
        // 10 keeps it closed (with them it would be 8 of 14 and open)...
        assert_eq!(feed(&mut breaker, 4, 6, 10 * SECOND), None);
        // ...and two more failures make 6 of 12.
        assert_eq!(feed(&mut breaker, 2, 0, 10 * SECOND), Some(BreakerState::Open));
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let mut breaker =
            CircuitBreaker::new(BreakerConfig { half_open_calls: 1, ..config(WindowKind::Count) });
        feed(&mut breaker, 10, 0, 0);
        let t = 30_000 * MS;
        let probe = breaker.try_acquire(t).expect("the wait is over: one probe");
        assert!(breaker.try_acquire(t).is_none(), "the only slot is taken");
        breaker.cancel(probe);
        let probe = breaker.try_acquire(t).expect("the cancelled probe's slot is free again");
        assert_eq!(breaker.record(probe, false, MS, t), Some(BreakerState::Closed));
    }

    #[test]
    fn a_stale_permit_frees_no_slot_of_a_later_period() {
        let mut breaker =
            CircuitBreaker::new(BreakerConfig { half_open_calls: 2, ..config(WindowKind::Count) });
        // Admitted while closed, finished much later.
        let from_closed = breaker.try_acquire(0).expect("closed");
        feed(&mut breaker, 10, 0, 0);
        let t = 30_000 * MS;
        let (slow_probe, failing_probe) = (breaker.try_acquire(t).unwrap(), breaker.try_acquire(t).unwrap());
        breaker.record(failing_probe, true, MS, t);
        // The closed-state call ends now and counts as the period's second call: it reopens.
        assert_eq!(breaker.record(from_closed, true, MS, t), Some(BreakerState::Open));
        let t2 = t + 30_000 * MS;
        let (a, b) = (breaker.try_acquire(t2).unwrap(), breaker.try_acquire(t2).unwrap());
        breaker.cancel(slow_probe);
        assert!(breaker.try_acquire(t2).is_none(), "an old period's permit frees no slot of the new one");
        breaker.cancel(a);
        assert!(breaker.try_acquire(t2).is_some(), "the current period's cancelled permit does");
        breaker.cancel(b);
    }

    #[test]
    fn the_count_window_keeps_only_the_last_calls() {
        let mut breaker = CircuitBreaker::new(config(WindowKind::Count));
        feed(&mut breaker, 4, 20, 0);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // Window of 10: 5 new failures among the last 10 calls open it.
        assert_eq!(feed(&mut breaker, 5, 0, 0), Some(BreakerState::Open));
    }
}
