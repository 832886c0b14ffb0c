//! What the balancer decided on its own, for operators to read back
//! through `GET /api/v1/events`: canary steps, rollbacks, promotions and
//! the operators' own canary actions. A bounded log, oldest dropped first,
//! kept for the life of the process.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Events kept; older ones are dropped.
pub const KEPT: usize = 1000;

/// One event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Sequence number, from 1 for the process's first event.
    pub id: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// What happened: `canary_step`, `canary_rolled_back`, `canary_promoted`, `canary_paused`, `canary_resumed`.
    pub kind: &'static str,
    /// The listener of the route concerned.
    pub listener: String,
    /// The route concerned.
    pub route: String,
    /// What happened, with the figures behind it.
    pub message: String,
}

/// The event log.
#[derive(Debug, Default)]
pub struct Events {
    log: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// Appends an event.
    pub fn push(&self, kind: &'static str, listener: &str, route: &str, message: String) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.0 += 1;
        let event = Event { id: log.0, at_ms, kind, listener: listener.into(), route: route.into(), message };
        if log.1.len() == KEPT {
            log.1.pop_front();
        }
        log.1.push_back(event);
    }

    /// Every kept event, oldest first.
    pub fn all(&self) -> Vec<Event> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).1.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_in_order() {
        let events = Events::default();
        for i in 0..KEPT + 5 {
            events.push("canary_step", "web", "api", format!("step {i}"));
        }
        let all = events.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].id, 6);
        assert_eq!(all[KEPT - 1].message, format!("step {}", KEPT + 4));
    }
}
