//! A route's live canary: the state machine of
//! [`fulcrum_balance::canary`], the figures of both sides since the last
//! judgement, and the task that judges them every `interval`.
//!
//! One [`LiveCanary`] lives as long as its route keeps the same canary
//! config: a reload that leaves it unchanged keeps it (step, figures and
//! all), a changed or removed canary drops it, and dropping it stops its
//! task. Requests read its weight from one atomic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use fulcrum_balance::canary::{CanaryMachine, CanaryPlan, Phase, Summary, Verdict, Window};
use serde::Serialize;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::events::Events;

/// Which side of a canary a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The new version.
    Canary,
    /// The version it is compared to.
    Baseline,
}

/// Basis points of traffic (1/100 of a percent) the split is drawn over.
pub const BASIS: u32 = 10_000;

/// One route's canary.
#[derive(Debug)]
pub struct LiveCanary {
    /// The listener of the route.
    pub listener: String,
    /// The route.
    pub route: String,
    /// The canary as configured.
    pub config: fulcrum_config::Canary,
    machine: Mutex<CanaryMachine>,
    /// The canary's share, basis points; what requests read.
    share: AtomicU32,
    canary: Window,
    baseline: Window,
    last: Mutex<Option<Judged>>,
    events: Arc<Events>,
    _stop: DropGuard,
}

/// The last interval judged, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// The canary's figures.
    pub canary: Figures,
    /// The baseline's figures.
    pub baseline: Figures,
    /// What was decided.
    pub verdict: String,
}

/// One side's figures over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Error rate, percent.
    pub error_rate: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl From<&Summary> for Figures {
    fn from(s: &Summary) -> Self {
        Self { requests: s.requests, error_rate: s.error_percent(), p99_ms: s.p99_nanos as f64 / 1e6 }
    }
}

/// What the admin API shows of a canary.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    /// `progressing`, `paused`, `rolled_back` or `promoted`.
    pub state: &'static str,
    /// The canary pool's share, percent.
    pub weight: f64,
    /// The index of the current step.
    pub step: usize,
    /// The schedule.
    pub steps: Vec<f64>,
    /// Requests counted per side since the last judgement.
    pub pending: [u64; 2],
    /// The last judgement, if any.
    pub last: Option<Judged>,
}

/// An operator's action on a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// All traffic to the canary.
    Promote,
    /// All traffic back to the baseline.
    Abort,
    /// Hold the weight.
    Pause,
    /// Walk on.
    Resume,
}

impl Action {
    /// Parses `promote`, `abort`, `pause` or `resume`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "promote" => Self::Promote,
            "abort" => Self::Abort,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            _ => return None,
        })
    }
}

impl LiveCanary {
    /// Starts `config`'s canary for `route` of `listener`, judged every
    /// interval by a task that ends when the canary is dropped.
    pub fn start(
        listener: &str,
        route: &str,
        config: &fulcrum_config::Canary,
        events: Arc<Events>,
    ) -> Arc<Self> {
        let machine = CanaryMachine::new(CanaryPlan {
            steps: config.steps.clone(),
            min_requests: config.min_requests,
            max_error_rate: config.max_error_rate,
            max_p99_ratio: config.max_p99_ratio,
        });
        let stop = CancellationToken::new();
        let live = Arc::new(Self {
            listener: listener.into(),
            route: route.into(),
            config: config.clone(),
            share: AtomicU32::new(basis_points(machine.percent())),
            machine: Mutex::new(machine),
            canary: Window::default(),
            baseline: Window::default(),
            last: Mutex::new(None),
            events,
            _stop: stop.clone().drop_guard(),
        });
        tracing::info!(listener, route, pool = %config.pool, baseline = %config.baseline, weight = live.percent(), "canary started");
        tokio::spawn(judge_every_interval(Arc::downgrade(&live), config.interval, stop));
        live
    }

    /// The canary's share of traffic, basis points.
    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    fn percent(&self) -> f64 {
        f64::from(self.share()) / 100.0
    }

    /// Counts a response of `side` that took `nanos`; `error` for a 5xx.
    pub fn record(&self, side: Side, error: bool, nanos: u64) {
        match side {
            Side::Canary => self.canary.record(error, nanos),
            Side::Baseline => self.baseline.record(error, nanos),
        }
    }

    /// Judges the figures gathered since the last judgement (once both
    /// sides have `min_requests`, else they keep accumulating).
    pub fn judge(&self) {
        let mut machine = self.lock();
        if machine.phase() != Phase::Progressing {
            // Figures gathered while paused or finished are not judged later.
            self.canary.take();
            self.baseline.take();
            return;
        }
        let enough = self.config.min_requests;
        if self.canary.requests() < enough || self.baseline.requests() < enough {
            return;
        }
        let (canary, baseline) = (self.canary.take(), self.baseline.take());
        let verdict = machine.judge(&canary, &baseline);
        self.share.store(basis_points(machine.percent()), Ordering::Relaxed);
        drop(machine);
        let figures = format!(
            "canary {} requests, {:.2}% errors, p99 {:.1} ms; baseline {} requests, {:.2}% errors, p99 {:.1} ms",
            canary.requests,
            canary.error_percent(),
            canary.p99_nanos as f64 / 1e6,
            baseline.requests,
            baseline.error_percent(),
            baseline.p99_nanos as f64 / 1e6
        );
        let (kind, said) = match &verdict {
            Verdict::Wait => return,
            Verdict::Advanced(percent) => {
                tracing::info!(listener = %self.listener, route = %self.route, weight = percent, %figures, "canary advanced");
                ("canary_step", format!("advanced to {percent}%: {figures}"))
            }
            Verdict::Promoted => {
                tracing::info!(listener = %self.listener, route = %self.route, %figures, "canary promoted");
                ("canary_promoted", format!("promoted to 100%: {figures}"))
            }
            Verdict::RolledBack(why) => {
                tracing::warn!(listener = %self.listener, route = %self.route, reason = %why, %figures, "canary rolled back to 0%");
                ("canary_rolled_back", format!("rolled back to 0%: {why}; {figures}"))
            }
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Judged { canary: (&canary).into(), baseline: (&baseline).into(), verdict: said.clone() });
        self.events.push(kind, &self.listener, &self.route, said);
    }

    /// Applies an operator's action; `Err` says why it does not apply.
    pub fn act(&self, action: Action) -> Result<(), String> {
        let mut machine = self.lock();
        let (kind, said) = match action {
            Action::Promote => {
                machine.promote();
                ("canary_promoted", "promoted to 100% by an operator")
            }
            Action::Abort => {
                machine.abort();
                ("canary_rolled_back", "rolled back to 0% by an operator")
            }
            Action::Pause if machine.pause() => ("canary_paused", "paused by an operator"),
            Action::Resume if machine.resume() => ("canary_resumed", "resumed by an operator"),
            Action::Pause | Action::Resume => {
                return Err(format!("the canary is {}", machine.phase().name()));
            }
        };
        self.share.store(basis_points(machine.percent()), Ordering::Relaxed);
        drop(machine);
        tracing::info!(listener = %self.listener, route = %self.route, weight = self.percent(), "canary {said}");
        self.events.push(kind, &self.listener, &self.route, said.into());
        Ok(())
    }

    /// Where the canary stands.
    pub fn phase(&self) -> Phase {
        self.lock().phase()
    }

    /// What the admin API shows.
    pub fn view(&self) -> CanaryView {
        let machine = self.lock();
        CanaryView {
            state: machine.phase().name(),
            weight: machine.percent(),
            step: machine.step(),
            steps: self.config.steps.clone(),
            pending: [self.canary.requests(), self.baseline.requests()],
            last: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CanaryMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn basis_points(percent: f64) -> u32 {
    (percent * 100.0).round() as u32
}

async fn judge_every_interval(
    live: std::sync::Weak<LiveCanary>,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(live) = live.upgrade() else { return };
        live.judge();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(min_requests: u64) -> fulcrum_config::Canary {
        fulcrum_config::Canary {
            pool: "v2".into(),
            baseline: "v1".into(),
            steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
            interval: Duration::from_secs(30),
            min_requests,
            max_error_rate: 1.0,
            max_p99_ratio: 1.5,
        }
    }

    /// Just past the next judgement (every 30 s from the start).
    async fn next_interval() {
        tokio::time::sleep(Duration::from_millis(30_001)).await;
    }

    fn serve(live: &LiveCanary, requests: u64, canary_error_every: u64) {
        for i in 0..requests {
            live.record(Side::Canary, canary_error_every > 0 && i % canary_error_every == 0, 2_000_000);
            live.record(Side::Baseline, false, 2_000_000);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn judges_each_interval_and_walks_to_promotion() {
        let events = Arc::new(Events::default());
        let live = LiveCanary::start("web", "api", &config(100), Arc::clone(&events));
        assert_eq!(live.share(), 100, "1% is 100 basis points");
        for expected in [500, 2500, 5000] {
            serve(&live, 100, 0);
            next_interval().await;
            assert_eq!(live.share(), expected);
        }
        // Too few requests: the interval passes without a judgement.
        serve(&live, 99, 0);
        next_interval().await;
        assert_eq!(live.share(), 5000);
        serve(&live, 1, 0);
        next_interval().await;
        assert_eq!((live.share(), live.phase()), (BASIS, Phase::Promoted));
        let kinds: Vec<_> = events.all().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["canary_step", "canary_step", "canary_step", "canary_promoted"]);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_roll_back_with_the_figures_and_dropping_stops_the_task() {
        let events = Arc::new(Events::default());
        let live = LiveCanary::start("web", "api", &config(100), Arc::clone(&events));
        serve(&live, 200, 20); // 5% errors
        next_interval().await;
        assert_eq!((live.share(), live.phase()), (0, Phase::RolledBack));
        let event = &events.all()[0];
        assert_eq!(event.kind, "canary_rolled_back");
        assert!(event.message.contains("error rate 5.00% vs baseline 0.00%"), "{}", event.message);
        let weak = Arc::downgrade(&live);
        drop(live);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(weak.upgrade().is_none());
        assert_eq!(events.all().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn operators_pause_resume_and_promote() {
        let events = Arc::new(Events::default());
        let live = LiveCanary::start("web", "api", &config(10), Arc::clone(&events));
        live.act(Action::Pause).unwrap();
        serve(&live, 50, 0);
        next_interval().await;
        assert_eq!(live.share(), 100, "a paused canary holds its weight");
        assert!(live.act(Action::Pause).is_err());
        live.act(Action::Resume).unwrap();
        serve(&live, 50, 0);
        next_interval().await;
        assert_eq!(live.share(), 500);
        live.act(Action::Promote).unwrap();
        assert_eq!(live.view().state, "promoted");
        assert_eq!(live.share(), BASIS);
    }
}
