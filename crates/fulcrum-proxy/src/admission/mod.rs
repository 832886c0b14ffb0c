//! Admission: what decides whether a request may go on before a backend
//! is picked — named rate limits ([`rate_limit`]) and a pool's admission
//! control ([`PoolAdmission`]).
//!
//! A pool with `admission` serves at most `max_concurrent` requests at
//! once (a fixed number, or the core's [`GradientLimit`] that follows the
//! backends' latency: Envoy's adaptive concurrency). Requests beyond it
//! wait in a priority queue — lower `priority` first, first come first
//! served within a class — and one still waiting at its class's deadline
//! is shed (503), never forwarded late. A full queue sheds its newest
//! request of the lowest class below the arrival's, or the arrival itself
//! when there is none (Envoy's overload manager, Netflix's
//! concurrency-limits, HAProxy's queue with `timeout queue`).
//!
//! Every slot is a [`Ticket`] that frees itself when dropped; a request
//! cancelled while it waits leaves the queue (or gives back the slot it
//! was just granted), so no slot can leak.

pub mod rate_limit;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fulcrum_balance::resilience::{GradientConfig, GradientLimit};
use fulcrum_config::{Admission, ConcurrencyLimit, DEFAULT_CLASS};
use tokio::sync::oneshot;

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// It waited its class's whole deadline.
    Deadline,
    /// The queue was full of requests of its class or above.
    QueueFull,
}

impl Shed {
    /// The name in metrics (`reason`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::QueueFull => "queue_full",
        }
    }

    /// The access log's `reason`.
    pub fn log_reason(self) -> &'static str {
        match self {
            Self::Deadline => "shed:deadline",
            Self::QueueFull => "shed:queue_full",
        }
    }
}

/// One traffic class and its counters.
#[derive(Debug)]
pub struct Class {
    /// Its name.
    pub name: String,
    deadline: Duration,
    shed: [AtomicU64; 2],
}

impl Class {
    /// Requests shed for a full queue and for the deadline.
    pub fn shed(&self, why: Shed) -> u64 {
        self.shed[why as usize].load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Limit {
    Fixed(u32),
    Adaptive(Mutex<GradientLimit>),
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Slots {
    in_flight: u32,
    queued: usize,
    /// One queue per class, in priority order.
    queues: Vec<VecDeque<Waiter>>,
    next_id: u64,
}

/// A pool's admission control.
#[derive(Debug)]
pub struct PoolAdmission {
    /// Classes in priority order (index = rank).
    pub classes: Vec<Class>,
    by_name: BTreeMap<String, usize>,
    capacity: usize,
    limit: Limit,
    /// The current limit, for readers that take no lock.
    current_limit: AtomicU32,
    slots: Mutex<Slots>,
}

impl PoolAdmission {
    /// Admission as `config` sets it, starting at `now`.
    pub fn new(config: &Admission, now: u64) -> Self {
        let mut ranked: Vec<(&String, &fulcrum_config::TrafficClass)> = config.classes.iter().collect();
        ranked.sort_by_key(|(name, class)| (class.priority, name.as_str()));
        let classes: Vec<Class> = ranked
            .iter()
            .map(|(name, class)| Class {
                name: (*name).clone(),
                deadline: class.deadline,
                shed: Default::default(),
            })
            .collect();
        let by_name = classes.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        let limit = match config.max_concurrent {
            ConcurrencyLimit::Fixed(n) => Limit::Fixed(n),
            ConcurrencyLimit::Adaptive => {
                Limit::Adaptive(Mutex::new(GradientLimit::new(GradientConfig::default(), now)))
            }
        };
        let current = match &limit {
            Limit::Fixed(n) => *n,
            Limit::Adaptive(gradient) => lock(gradient).limit(),
        };
        Self {
            slots: Mutex::new(Slots {
                queues: classes.iter().map(|_| VecDeque::new()).collect(),
                ..Slots::default()
            }),
            classes,
            by_name,
            capacity: config.queue,
            limit,
            current_limit: AtomicU32::new(current),
        }
    }

    /// The rank of class `name` (`default` when the pool has no such class).
    pub fn class(&self, name: &str) -> usize {
        self.by_name.get(name).or_else(|| self.by_name.get(DEFAULT_CLASS)).copied().unwrap_or(0)
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> u32 {
        self.current_limit.load(Ordering::Relaxed)
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        lock(&self.slots).in_flight
    }

    /// Requests waiting, per class rank.
    pub fn queue_depths(&self) -> Vec<usize> {
        lock(&self.slots).queues.iter().map(VecDeque::len).collect()
    }

    /// A slot for a request of class `rank`: at once when one is free and
    /// no request of its class or above waits, else after waiting in the
    /// queue — or shed.
    pub async fn admit(self: &Arc<Self>, rank: usize) -> Result<Ticket, Shed> {
        let (id, grant) = {
            let mut slots = lock(&self.slots);
            let ahead: usize = slots.queues[..=rank].iter().map(VecDeque::len).sum();
            if ahead == 0 && slots.in_flight < self.limit() {
                slots.in_flight += 1;
                return Ok(Ticket::new(self));
            }
            if slots.queued >= self.capacity {
                let victim = (rank + 1..slots.queues.len()).rev().find(|&c| !slots.queues[c].is_empty());
                let Some(victim) = victim else {
                    return Err(self.count(rank, Shed::QueueFull));
                };
                // Dropping its sender tells the victim it was shed.
                slots.queues[victim].pop_back();
                slots.queued -= 1;
                self.count(victim, Shed::QueueFull);
            }
            let (grant, granted) = oneshot::channel();
            let id = slots.next_id;
            slots.next_id += 1;
            slots.queues[rank].push_back(Waiter { id, grant });
            slots.queued += 1;
            (id, granted)
        };
        let mut waiting = Waiting { admission: self, rank, id, granted: grant, settled: false };
        let outcome = tokio::time::timeout(self.classes[rank].deadline, &mut waiting.granted).await;
        waiting.settled = true;
        match outcome {
            Ok(Ok(())) => Ok(Ticket::new(self)),
            Ok(Err(_evicted)) => Err(Shed::QueueFull),
            Err(_deadline) => {
                let mut slots = lock(&self.slots);
                if slots.remove(rank, id) {
                    return Err(self.count(rank, Shed::Deadline));
                }
                // Granted (or evicted) while the deadline struck.
                match waiting.granted.try_recv() {
                    Ok(()) => Ok(Ticket::new(self)),
                    Err(_) => Err(Shed::QueueFull),
                }
            }
        }
    }

    fn count(&self, rank: usize, why: Shed) -> Shed {
        self.classes[rank].shed[why as usize].fetch_add(1, Ordering::Relaxed);
        why
    }

    /// Frees a slot held `rtt` nanos (`None`: it carried no request) and
    /// hands free slots to the queue's first requests.
    fn release(&self, rtt: Option<u64>) {
        if let (Limit::Adaptive(gradient), Some(rtt)) = (&self.limit, rtt) {
            let mut gradient = lock(gradient);
            if gradient.on_sample(rtt, crate::clock::now_nanos()) {
                self.current_limit.store(gradient.limit(), Ordering::Relaxed);
            }
        }
        let limit = self.limit();
        let mut slots = lock(&self.slots);
        slots.in_flight -= 1;
        while slots.in_flight < limit {
            let Some(waiter) = slots.queues.iter_mut().find_map(VecDeque::pop_front) else { break };
            slots.queued -= 1;
            // A waiter that gave up has dropped its receiver: skip it.
            if waiter.grant.send(()).is_ok() {
                slots.in_flight += 1;
            }
        }
    }
}

impl Slots {
    /// Removes waiter `id` of class `rank`; whether it was still queued.
    fn remove(&mut self, rank: usize, id: u64) -> bool {
        let Some(position) = self.queues[rank].iter().position(|w| w.id == id) else { return false };
        self.queues[rank].remove(position);
        self.queued -= 1;
        true
    }
}

/// A request waiting in the queue; if it is dropped unsettled (the client
/// left), it leaves the queue or gives back the slot it was just granted.
struct Waiting<'a> {
    admission: &'a PoolAdmission,
    rank: usize,
    id: u64,
    granted: oneshot::Receiver<()>,
    settled: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut slots = lock(&self.admission.slots);
        if !slots.remove(self.rank, self.id) && self.granted.try_recv().is_ok() {
            drop(slots);
            self.admission.release(None);
        }
    }
}

/// One admitted request's slot, freed when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<PoolAdmission>,
    started: u64,
}

impl Ticket {
    fn new(admission: &Arc<PoolAdmission>) -> Self {
        Self { admission: Arc::clone(admission), started: crate::clock::now_nanos() }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let rtt = crate::clock::now_nanos().saturating_sub(self.started);
        self.admission.release(Some(rtt));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn admission(max: u32, queue: usize) -> Arc<PoolAdmission> {
        let class =
            |priority, ms| fulcrum_config::TrafficClass { priority, deadline: Duration::from_millis(ms) };
        let classes = BTreeMap::from([
            ("critical".to_string(), class(0, 2000)),
            ("default".to_string(), class(1, 500)),
            ("bulk".to_string(), class(2, 100)),
        ]);
        Arc::new(PoolAdmission::new(
            &Admission { max_concurrent: ConcurrencyLimit::Fixed(max), queue, classes },
            crate::clock::now_nanos(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_limit_wait_and_are_shed_at_their_deadline() {
        let pool = admission(1, 10);
        let held = pool.admit(pool.class("bulk")).await.unwrap();
        let started = tokio::time::Instant::now();
        let shed = pool.admit(pool.class("bulk")).await.unwrap_err();
        assert_eq!((shed, started.elapsed()), (Shed::Deadline, Duration::from_millis(100)));
        assert_eq!(pool.queue_depths(), [0, 0, 0], "a shed request leaves the queue");
        drop(held);
        let _again = pool.admit(pool.class("bulk")).await.expect("the slot came back");
        assert_eq!(pool.classes[pool.class("bulk")].shed(Shed::Deadline), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_highest_class_first_then_in_order_of_arrival() {
        let pool = admission(1, 10);
        let held = pool.admit(pool.class("critical")).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, class) in ["default", "bulk", "critical", "default"].into_iter().enumerate() {
            let (pool, order) = (Arc::clone(&pool), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let ticket = pool.admit(pool.class(class)).await;
                order.lock().unwrap().push((i, class, ticket.is_ok()));
                tokio::time::sleep(Duration::from_millis(60)).await;
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(
            order,
            [(2, "critical", true), (0, "default", true), (1, "bulk", false), (3, "default", true)],
            "each holds its slot 60 ms: bulk's 100 ms deadline strikes before its turn"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_the_newest_lower_class_request_or_the_arrival() {
        let pool = admission(1, 2);
        let _held = pool.admit(pool.class("default")).await.unwrap();
        let bulk = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.admit(pool.class("bulk")).await.map(drop) }
        });
        let default = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.admit(pool.class("default")).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(pool.queue_depths(), [0, 1, 1]);
        let critical = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.admit(pool.class("critical")).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(bulk.await.unwrap(), Err(Shed::QueueFull), "evicted for the critical request");
        assert_eq!(pool.queue_depths(), [1, 1, 0]);
        assert_eq!(
            pool.admit(pool.class("bulk")).await.unwrap_err(),
            Shed::QueueFull,
            "nothing lower to evict"
        );
        drop((critical, default));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue_and_leaks_no_slot() {
        let pool = admission(1, 10);
        let held = pool.admit(pool.class("critical")).await.unwrap();
        let waiter = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.admit(pool.class("critical")).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(pool.queue_depths(), [1, 0, 0]);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(pool.queue_depths(), [0, 0, 0]);
        drop(held);
        let _a = pool.admit(pool.class("critical")).await.expect("the only slot is free");
        assert_eq!(lock(&pool.slots).in_flight, 1);
    }
}
