//! The HTTP/1 request-head deadline (`limits.header_read_timeout`): from
//! the first byte of a head read while no request is in flight, the client
//! has that long to finish it; otherwise it gets `408 Request Timeout` and
//! the connection closes (HAProxy's `timeout http-request`). Hyper's own
//! header timer closes without an answer, so this one replaces it.
//!
//! A connection that opens with the HTTP/2 preface has no head deadline
//! (its idle clock and HTTP/2's own flow govern it); one that never sends
//! a byte is closed by its idle clock ([`super::idle`]).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What a client that did not finish its head in time reads before the close.
pub const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 43\r\nconnection: close\r\n\r\nthe request head took longer than allowed\r\n";

/// One connection's head deadline.
#[derive(Debug)]
pub struct HeadTimer {
    timeout: Duration,
    head: Head,
    /// Whether the connection speaks HTTP/2 (told once its first bytes
    /// show it: a preface may come in pieces).
    http2: bool,
    expired: bool,
}

/// Where the pending head stands. A head that arrives whole is served
/// before its deadline is ever waited on, so only its first byte's time
/// is kept; the timer is made (allocated and registered) the first time a
/// read of a begun head finds nothing more: when it comes in pieces.
#[derive(Debug)]
enum Head {
    /// None pending.
    Idle,
    /// Its first byte was read then.
    Begun(Instant),
    /// Its deadline, being waited on.
    Waiting(Pin<Box<Sleep>>),
}

impl HeadTimer {
    /// A timer giving each head `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, head: Head::Idle, http2: false, expired: false }
    }

    /// Whether the head deadline has passed: the connection is done (it
    /// reads as closed).
    pub fn expired(&self) -> bool {
        self.expired
    }

    /// A request is being served: no head is pending.
    pub fn clear(&mut self) {
        self.head = Head::Idle;
    }

    /// Waits on the pending head's deadline, and whether it has passed.
    /// Called when a read finds nothing more: the timer is made (allocated
    /// and registered) only for a head that does not arrive in one go.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Head::Begun(first_byte) = self.head {
            self.head = Head::Waiting(Box::pin(tokio::time::sleep_until(first_byte + self.timeout)));
        }
        let Head::Waiting(deadline) = &mut self.head else { return self.expired };
        self.expired |= deadline.as_mut().poll(cx).is_ready();
        self.expired
    }

    /// The connection speaks HTTP/2: it has no heads, and what its
    /// preface began is no head either.
    pub fn speaks_http2(&mut self) {
        self.http2 = true;
        self.head = Head::Idle;
    }

    /// Whether a head has begun and its deadline runs.
    pub fn begun(&self) -> bool {
        !matches!(self.head, Head::Idle)
    }

    /// Bytes were read; `in_flight`: a request is being served.
    pub fn on_read(&mut self, in_flight: bool) {
        if !self.http2 && !in_flight && matches!(self.head, Head::Idle) {
            self.head = Head::Begun(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(timer: &mut HeadTimer, in_flight: bool) -> bool {
        if in_flight {
            timer.clear();
        }
        timer.poll_expired(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_unfinished_at_its_deadline_expires_and_a_served_one_does_not() {
        let mut timer = HeadTimer::new(Duration::from_secs(10));
        assert!(!poll(&mut timer, false), "nothing read yet");
        timer.on_read(false);
        tokio::time::advance(Duration::from_secs(9)).await;
        timer.on_read(false);
        assert!(!poll(&mut timer, false));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll(&mut timer, false), "10 s after the head's first byte, however it trickles");

        let mut served = HeadTimer::new(Duration::from_secs(10));
        served.on_read(false);
        assert!(!poll(&mut served, true), "its request is in flight: the head is done");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!poll(&mut served, false), "the next head's clock starts at its first byte");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_head_deadline() {
        // Its preface's first piece began what looked like a head, whose
        // deadline is already being waited on.
        let mut timer = HeadTimer::new(Duration::from_secs(1));
        timer.on_read(false);
        assert!(!poll(&mut timer, false));
        timer.speaks_http2();
        timer.on_read(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!poll(&mut timer, false));
    }
}
