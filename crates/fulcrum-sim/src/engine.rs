//! The discrete-event loop for one algorithm. Virtual time in nanoseconds;
//! events (arrivals, completions, membership changes, the per-second tick)
//! come off a binary heap in time order, ties broken by insertion order.
//!
//! Selection is the proxy's own: `fulcrum_balance::build_selector` over
//! members whose `Load` the engine updates exactly as the data path does
//! (in-flight guards from dispatch to completion, latency observed at
//! completion), so what the simulator shows is what the balancer does.
//!
//! Availability is the proxy's too: each backend has the core's
//! [`Availability`] (circuit breaker, outlier detection, concurrency
//! limit) built from the scenario's `[resilience]`; the candidate filter
//! asks it, the pick takes a breaker permit, and every completion records
//! its outcome, failures counted as errors in `Load` as the data path does.
//!
//! Admission is the proxy's as well: with `[admission]`, requests beyond
//! the pool's limit (fixed, or the core's [`GradientLimit`] fed each
//! request's time from dispatch to completion) wait in a queue and are
//! shed when it is full or when they have waited the deadline.
//!
//! Every algorithm sees the same arrivals, keys and service times: they
//! come from their own seeded streams (common random numbers), so
//! differences in the results come from the algorithms alone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use fulcrum_balance::resilience::{
    Availability, BreakerState, GradientConfig, GradientLimit, Outcome, Permit,
};
use fulcrum_balance::{
    build_selector, mix64, Algorithm, InFlight, Load, Member, PickContext, Selector, SplitMix64,
};
use hdrhistogram::Histogram;

use crate::scenario::{LimitSetting, RunSpec, Scenario};
use crate::workload::{next_arrival, rate_at, service_time, Zipf};

const SECOND: u64 = 1_000_000_000;
/// Keys sampled to measure how many move on a membership change.
const MOVED_KEY_SAMPLE: u64 = 10_000;

/// What one algorithm did over the scenario.
#[derive(Debug)]
pub struct Run {
    /// The algorithm's config name.
    pub algorithm: String,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests answered within the client timeout.
    pub successes: u64,
    /// Latency of every answered request, microseconds.
    pub latency_us: Histogram<u64>,
    /// Requests each backend received.
    pub per_backend: Vec<u64>,
    /// Requests each backend received, per simulated second.
    pub per_second: Vec<Vec<u32>>,
    /// Share of sampled keys that changed backend at membership changes
    /// (hashing algorithms; `None` for the others or without changes).
    pub keys_moved: Option<f64>,
    /// Requests no backend could take (all ejected, open or at their limit).
    pub no_backend: u64,
    /// Outlier ejections, per backend.
    pub ejections: Vec<u32>,
    /// Times each backend's circuit breaker opened.
    pub breaker_opens: Vec<u32>,
    /// Requests shed by admission control.
    pub shed: u64,
    /// What the autoscaling advisor saw and decided, with `[autoscale]`.
    pub autoscale: Option<crate::autoscale::AutoscaleTrace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    Completion(usize),
    Membership(usize),
    Tick,
    /// A backend started by the autoscaling advisor joins.
    Provisioned,
}

struct Request {
    /// Arrival at the balancer.
    arrived: u64,
    /// Dispatch to its backend, where it queues when the backend is busy.
    dispatched: u64,
    service: f64,
    backend: usize,
    failed: bool,
    permit: Option<Permit>,
    _in_flight: InFlight,
}

struct Backend {
    load: Arc<Load>,
    availability: Availability,
    speed: f64,
    weight: u32,
    member: bool,
    busy: usize,
    queue: VecDeque<usize>,
}

/// A request waiting for an admission slot.
struct Pending {
    arrived: u64,
    key: Option<u64>,
    service: f64,
}

enum Limit {
    Fixed(u32),
    Adaptive(GradientLimit),
}

struct Admission {
    limit: Limit,
    admitted: u32,
    waiting: VecDeque<Pending>,
    queue: usize,
    deadline: u64,
}

impl Admission {
    fn limit(&self) -> u32 {
        match &self.limit {
            Limit::Fixed(n) => *n,
            Limit::Adaptive(gradient) => gradient.limit(),
        }
    }
}

struct Engine<'a> {
    scenario: &'a Scenario,
    algorithm: Algorithm,
    backends: Vec<Backend>,
    selector: Box<dyn Selector>,
    member_to_backend: Vec<usize>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    requests: Vec<Option<Request>>,
    free: Vec<usize>,
    arrivals_rng: SplitMix64,
    service_rng: SplitMix64,
    pick_rng: SplitMix64,
    keys_rng: SplitMix64,
    zipf: Option<Zipf>,
    run: Run,
    moved: Vec<f64>,
    admission: Option<Admission>,
    autoscaler: Option<crate::autoscale::Autoscaler>,
    /// Backends started by the advisor that have not joined yet.
    booting: u32,
}

/// Simulates `scenario` as `spec` says (an algorithm, and an admission
/// limit); `progress` gets the simulated time reached (nanos) now and then.
pub fn simulate(scenario: &Scenario, spec: &RunSpec, progress: &mut dyn FnMut(u64)) -> Run {
    let algorithm = Algorithm::from_name(&spec.algorithm).expect("scenario names were checked");
    let admission = scenario.admission.as_ref().zip(spec.limit.as_ref()).map(|(settings, limit)| Admission {
        limit: match limit {
            LimitSetting::Fixed(n) => Limit::Fixed(*n),
            LimitSetting::Named(_) => Limit::Adaptive(GradientLimit::new(GradientConfig::default(), 0)),
        },
        admitted: 0,
        waiting: VecDeque::new(),
        queue: settings.queue,
        deadline: settings.deadline.as_nanos() as u64,
    });
    let seed = scenario.seed;
    let count = scenario.backends.count;
    let backends = (0..count).map(|i| new_backend(scenario, i)).collect();
    let seconds = scenario.duration.as_secs() as usize + 1;
    let mut engine = Engine {
        scenario,
        algorithm,
        backends,
        selector: build_selector(&Algorithm::RoundRobin, &[]),
        member_to_backend: Vec::new(),
        events: BinaryHeap::new(),
        sequence: 0,
        requests: Vec::new(),
        free: Vec::new(),
        arrivals_rng: SplitMix64::new(mix64(seed ^ 0xA)),
        service_rng: SplitMix64::new(mix64(seed ^ 0xB)),
        pick_rng: SplitMix64::new(mix64(seed ^ 0xC)),
        keys_rng: SplitMix64::new(mix64(seed ^ 0xD)),
        zipf: scenario.keys.as_ref().map(Zipf::new),
        run: Run {
            algorithm: spec.label(),
            requests: 0,
            successes: 0,
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            per_backend: vec![0; count],
            per_second: vec![vec![0; seconds]; count],
            keys_moved: None,
            no_backend: 0,
            ejections: vec![0; count],
            breaker_opens: vec![0; count],
            shed: 0,
            autoscale: None,
        },
        moved: Vec::new(),
        admission,
        autoscaler: scenario.autoscale.as_ref().map(crate::autoscale::Autoscaler::new),
        booting: 0,
    };
    engine.rebuild();
    engine.schedule(0, Event::Arrival);
    engine.schedule(SECOND, Event::Tick);
    for (i, change) in scenario.membership.iter().enumerate() {
        engine.schedule(change.at.as_nanos() as u64, Event::Membership(i));
    }
    let end = scenario.duration.as_nanos() as u64;
    while let Some(Reverse((now, _, event))) = engine.events.pop() {
        match event {
            Event::Arrival => engine.arrive(now, end),
            Event::Completion(slot) => engine.complete(slot, now),
            Event::Membership(i) => engine.change_membership(i, now),
            Event::Provisioned => engine.provisioned(),
            Event::Tick => {
                engine.selector.tick(now);
                engine.autoscale(now);
                progress(now.min(end));
                if now < end {
                    engine.schedule(now + SECOND, Event::Tick);
                }
            }
        }
    }
    // Requests still waiting when the events ran out never got a slot.
    engine.run.shed += engine.admission.as_ref().map_or(0, |a| a.waiting.len() as u64);
    engine.run.autoscale = engine.autoscaler.take().map(|a| a.trace);
    if !engine.moved.is_empty() {
        engine.run.keys_moved = Some(engine.moved.iter().sum::<f64>() / engine.moved.len() as f64);
    }
    engine.run
}

fn new_backend(scenario: &Scenario, index: usize) -> Backend {
    let resilience = &scenario.resilience;
    Backend {
        load: Arc::new(Load::default()),
        availability: Availability::new(
            resilience.circuit_breaker.as_ref().map(|b| b.config()),
            resilience.passive_health.as_ref().map(|p| p.config()),
            resilience.circuit_breaker.as_ref().and_then(|b| b.max_requests),
        ),
        speed: scenario.backends.speed_factors.get(index).copied().unwrap_or(1.0),
        weight: scenario.backends.weights.get(index).copied().unwrap_or(1).max(1),
        member: true,
        busy: 0,
        queue: VecDeque::new(),
    }
}

impl Engine<'_> {
    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.push(Reverse((at, self.sequence, event)));
    }

    /// Rebuilds the selector over the current members (as a reload does).
    fn rebuild(&mut self) {
        self.member_to_backend = (0..self.backends.len()).filter(|&i| self.backends[i].member).collect();
        let members: Vec<Member> = self
            .member_to_backend
            .iter()
            .map(|&i| Member {
                key: format!("backend-{i}"),
                weight: self.backends[i].weight,
                load: Arc::clone(&self.backends[i].load),
            })
            .collect();
        self.selector = build_selector(&self.algorithm, &members);
    }

    fn key(&mut self) -> Option<u64> {
        match &self.zipf {
            Some(zipf) => Some(mix64(zipf.sample(&mut self.keys_rng))),
            None => Some(self.keys_rng.next_u64()),
        }
    }

    fn arrive(&mut self, now: u64, end: u64) {
        let gap = next_arrival(rate_at(&self.scenario.arrivals, now), &mut self.arrivals_rng);
        if now + gap < end {
            self.schedule(now + gap, Event::Arrival);
        }
        self.run.requests += 1;
        let key = self.key();
        let service = service_time(&self.scenario.backends.service, &mut self.service_rng);
        let Some(admission) = &mut self.admission else {
            return self.dispatch(now, now, key, service);
        };
        if admission.admitted < admission.limit() && admission.waiting.is_empty() {
            admission.admitted += 1;
            self.dispatch(now, now, key, service);
        } else if admission.waiting.len() < admission.queue {
            admission.waiting.push_back(Pending { arrived: now, key, service });
        } else {
            self.run.shed += 1;
        }
    }

    /// Picks a backend for a request that arrived at `arrived` and sends
    /// it there at `now`.
    fn dispatch(&mut self, arrived: u64, now: u64, key: Option<u64>, service: f64) {
        let mut ctx = PickContext { key, now_nanos: now, rng: &mut self.pick_rng };
        let (backends, members) = (&self.backends, &self.member_to_backend);
        let accept = |m: usize| {
            let b = &backends[members[m]];
            b.availability.serves(now, b.load.in_flight())
        };
        let Some(member) = self.selector.pick(&mut ctx, &accept) else {
            return self.no_backend();
        };
        let backend = self.member_to_backend[member];
        let b = &mut self.backends[backend];
        let Ok(permit) = b.availability.admit(now) else {
            return self.no_backend();
        };
        self.run.per_backend[backend] += 1;
        if let Some(second) = self.run.per_second[backend].get_mut((now / SECOND) as usize) {
            *second += 1;
        }
        let request = Request {
            arrived,
            dispatched: now,
            service,
            backend,
            failed: false,
            permit,
            _in_flight: b.load.start(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.requests[slot] = Some(request);
                slot
            }
            None => {
                self.requests.push(Some(request));
                self.requests.len() - 1
            }
        };
        let limit = self.scenario.backends.concurrency;
        if limit == 0 || b.busy < limit {
            self.start_service(slot, now);
        } else {
            b.queue.push_back(slot);
        }
    }

    /// A request no backend could take gives back its admission slot.
    fn no_backend(&mut self) {
        self.run.no_backend += 1;
        if let Some(admission) = &mut self.admission {
            admission.admitted -= 1;
        }
    }

    /// Frees the admission slot of a request dispatched `rtt` ago and
    /// hands free slots to waiting requests (shedding those past the deadline).
    fn release(&mut self, rtt: u64, now: u64) {
        let Some(admission) = &mut self.admission else { return };
        admission.admitted -= 1;
        if let Limit::Adaptive(gradient) = &mut admission.limit {
            gradient.on_sample(rtt, now);
        }
        let mut ready = Vec::new();
        while admission.admitted < admission.limit() {
            let Some(pending) = admission.waiting.pop_front() else { break };
            if now - pending.arrived > admission.deadline {
                self.run.shed += 1;
                continue;
            }
            admission.admitted += 1;
            ready.push(pending);
        }
        for pending in ready {
            self.dispatch(pending.arrived, now, pending.key, pending.service);
        }
    }

    /// Begins serving request `slot` on its backend at `now`.
    fn start_service(&mut self, slot: usize, now: u64) {
        let request = self.requests[slot].as_mut().expect("a queued request is live");
        let backend = &mut self.backends[request.backend];
        backend.busy += 1;
        let mut took = request.service * backend.speed;
        let at = std::time::Duration::from_nanos(now);
        for incident in &self.scenario.incidents {
            if incident.backend == request.backend && at >= incident.from && at < incident.to {
                if incident.outage {
                    request.failed = true;
                    took = 0.0;
                } else if let Some(latency) = incident.latency {
                    took = latency.as_nanos() as f64;
                } else if let Some(factor) = incident.slowdown {
                    took *= factor;
                }
            }
        }
        self.schedule(now + took as u64, Event::Completion(slot));
    }

    fn complete(&mut self, slot: usize, now: u64) {
        let mut request = self.requests[slot].take().expect("a completion belongs to a live request");
        self.free.push(slot);
        let latency = now - request.arrived;
        let may_eject = self.may_eject(now);
        let backend = &mut self.backends[request.backend];
        backend.busy -= 1;
        let outcome = if request.failed { Outcome::GatewayFailure } else { Outcome::Success };
        let changes = backend.availability.record(outcome, request.permit.take(), latency, now, || may_eject);
        if changes.ejected_for.is_some() {
            self.run.ejections[request.backend] += 1;
        }
        if matches!(changes.breaker, Some((_, BreakerState::Open))) {
            self.run.breaker_opens[request.backend] += 1;
        }
        if request.failed {
            backend.load.record_error();
        }
        if !request.failed {
            backend.load.observe_latency(latency, now);
            let _ = self.run.latency_us.record((latency / 1000).max(1));
            if self.scenario.timeout.is_none_or(|t| latency <= t.as_nanos() as u64) {
                self.run.successes += 1;
            }
        }
        if let Some(next) = backend.queue.pop_front() {
            self.start_service(next, now);
        }
        self.release(now - request.dispatched, now);
    }

    /// Whether the scenario's ejection cap allows one more ejection at `now`.
    fn may_eject(&self, now: u64) -> bool {
        let Some(passive) = &self.scenario.resilience.passive_health else { return false };
        let members = self.backends.iter().filter(|b| b.member).count();
        let cap = ((passive.max_ejection_percent() / 100.0 * members as f64).floor() as usize).max(1);
        let ejected =
            self.backends.iter().filter(|b| b.member && b.availability.ejected_until() > now).count();
        ejected < cap
    }

    /// The advisor's per-second sample, and its advice carried out.
    fn autoscale(&mut self, now: u64) {
        let Some(autoscaler) = &mut self.autoscaler else { return };
        let members = || self.backends.iter().filter(|b| b.member);
        let in_flight: u64 = members().map(|b| b.load.in_flight()).sum();
        let serving = members().count() as u32;
        match autoscaler.sample(now, in_flight as f64, serving, self.booting) {
            crate::autoscale::Action::None => {}
            crate::autoscale::Action::Add(count) => {
                let delay = autoscaler.provision_delay;
                self.booting += count;
                for _ in 0..count {
                    self.schedule(now + delay, Event::Provisioned);
                }
            }
            crate::autoscale::Action::ShrinkTo(desired) => {
                let mut serving = serving;
                for backend in self.backends.iter_mut().rev() {
                    if serving <= desired.max(1) {
                        break;
                    }
                    if backend.member {
                        backend.member = false;
                        serving -= 1;
                    }
                }
                self.rebuild();
            }
        }
    }

    /// A backend the advisor started joins the pool.
    fn provisioned(&mut self) {
        self.booting = self.booting.saturating_sub(1);
        self.add_backend();
        self.rebuild();
    }

    fn add_backend(&mut self) {
        let index = self.backends.len();
        self.backends.push(new_backend(self.scenario, index));
        self.run.per_backend.push(0);
        self.run.per_second.push(vec![0; self.run.per_second[0].len()]);
        self.run.ejections.push(0);
        self.run.breaker_opens.push(0);
    }

    fn change_membership(&mut self, index: usize, _now: u64) {
        let change = &self.scenario.membership[index];
        let before: Vec<usize> = self.placements();
        if let Some(removed) = change.remove {
            self.backends[removed].member = false;
        }
        for _ in 0..change.add.unwrap_or(0) {
            self.add_backend();
        }
        self.rebuild();
        if self.algorithm.uses_key() {
            let after = self.placements();
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            self.moved.push(moved as f64 / before.len() as f64);
        }
    }

    /// Where a fixed sample of keys goes now (backend indices).
    fn placements(&self) -> Vec<usize> {
        let mut rng = SplitMix64::new(0);
        (0..MOVED_KEY_SAMPLE)
            .map(|k| {
                let mut ctx = PickContext { key: Some(mix64(k)), now_nanos: 0, rng: &mut rng };
                self.selector.pick(&mut ctx, &|_| true).map_or(usize::MAX, |m| self.member_to_backend[m])
            })
            .collect()
    }
}
