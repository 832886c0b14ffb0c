//! The response-header deadline of an exchange, and the one timer a
//! connection keeps for it across its requests.
//!
//! A timer per request costs an entry registered in tokio's timer wheel
//! and removed again (its lock, its slot lists) for every request,
//! though the deadline almost never fires. A connection carrying one
//! request after another keeps its timer instead and moves it only when
//! it would fire too early for the new deadline, or more than the
//! deadline's slack after it: Linux's timer slack (`prctl(PR_SET_TIMERSLACK)`),
//! which lets the kernel batch wake-ups, applied to moving timers. A
//! deadline fires at its time or up to its slack later, never before.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// When a response head must have come, and how much later the check
/// may come: a sixteenth of the limit.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    slack: Duration,
}

impl Deadline {
    /// `limit` after `start`.
    pub fn after(start: Instant, limit: Duration) -> Self {
        Self { at: start + limit, slack: limit / 16 }
    }
}

/// A connection's timer for its exchanges' deadlines (none until its
/// first exchange). While the connection idles, it stays set for its
/// last deadline and keeps the waker of its last exchange's task: should
/// the deadline pass first, that task is woken once for nothing, and a
/// task that has ended stays allocated (its cell: ~512 bytes for a
/// client connection's) until the deadline passes or the connection is
/// reused or closed — at most one per idle connection, for at most the
/// deadline. Letting go of the waker after each exchange costs a poll of
/// the timer, +170 instructions per request (callgrind, h2c), a third of
/// what keeping the timer saves.
#[derive(Debug, Default)]
pub struct ResponseTimer(Option<Pin<Box<Sleep>>>);

impl ResponseTimer {
    /// Sets the timer for `deadline` unless it already fires within the
    /// deadline's slack.
    pub fn arm(&mut self, deadline: Deadline) {
        let latest = deadline.at + deadline.slack;
        match &mut self.0 {
            Some(timer) if (deadline.at..=latest).contains(&timer.deadline()) => {}
            Some(timer) => timer.as_mut().reset(latest),
            None => self.0 = Some(Box::pin(tokio::time::sleep_until(latest))),
        }
    }

    /// Whether the armed deadline has passed (else the task is woken
    /// when it does).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired_now(timer: &mut ResponseTimer) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        timer.poll_expired(&mut cx).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_fires_at_its_time_or_within_its_slack_never_before() {
        let limit = Duration::from_millis(1600);
        let start = Instant::now();
        let mut timer = ResponseTimer::default();
        timer.arm(Deadline::after(start, limit));
        tokio::time::advance(limit - Duration::from_millis(1)).await;
        assert!(!expired_now(&mut timer), "fired before its deadline");
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        let fired = Instant::now() - start;
        assert!(fired >= limit && fired <= limit + limit / 16, "fired after {fired:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_moves_only_when_a_deadline_leaves_its_slack() {
        let limit = Duration::from_millis(1600);
        let start = Instant::now();
        let mut timer = ResponseTimer::default();
        timer.arm(Deadline::after(start, limit));
        let set_for = |timer: &ResponseTimer| timer.0.as_ref().expect("armed").deadline();
        let first = set_for(&timer);
        assert_eq!(first, start + limit + limit / 16);
        // Requests that follow within the slack keep it.
        timer.arm(Deadline::after(start + limit / 32, limit));
        timer.arm(Deadline::after(start + limit / 16, limit));
        assert_eq!(set_for(&timer), first, "moved for a deadline it still covers");
        // Past the slack, it would fire too early: it moves.
        timer.arm(Deadline::after(start + limit / 16 + Duration::from_millis(1), limit));
        assert!(set_for(&timer) > first);
        // A sooner deadline than it is set for (by more than the slack) moves it back.
        timer.arm(Deadline::after(start, limit / 4));
        assert_eq!(set_for(&timer), start + limit / 4 + limit / 64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_while_idle_is_set_again_for_the_next_deadline() {
        let limit = Duration::from_millis(100);
        let mut timer = ResponseTimer::default();
        timer.arm(Deadline::after(Instant::now(), limit));
        tokio::time::advance(limit * 3).await;
        assert!(expired_now(&mut timer));
        timer.arm(Deadline::after(Instant::now(), limit));
        assert!(!expired_now(&mut timer), "the next exchange timed out at once");
    }
}
