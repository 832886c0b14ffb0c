//! Closing client connections that hold a file descriptor and do nothing
//! (nginx's `client_header_timeout` and `keepalive_timeout`, HAProxy's
//! `timeout http-request` / `http-keep-alive`):
//!
//! - a connection that sends no byte within the header read timeout of
//!   being accepted is closed (hyper times out only a head that has begun);
//! - a connection with no request in flight that reads nothing for the
//!   keep-alive timeout is closed (checked every quarter of it, so the
//!   close comes between 1 and 1.25 timeouts after the last byte);
//! - when the listener runs out of file descriptors, every connection
//!   with no request in flight is asked to close at once, so new clients
//!   can be served.
//!
//! The I/O wrapper counts reads; requests count themselves in flight with
//! a guard that the response body holds until it has been sent (or the
//! client went away), so a request waiting for a slow backend is never
//! idle.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long a new connection may stay silent.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with nothing in flight may stay silent.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads and requests in flight on one client connection.
#[derive(Debug, Default)]
pub struct Activity {
    reads: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>);

impl InFlightRequest {
    /// Starts counting a request on `activity`.
    pub fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection's I/O, counting reads that brought bytes.
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    /// Wraps `io`, counting on `activity`.
    pub fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Quarters of the keep-alive timeout a connection must stay quiet.
const QUIET_CHECKS: u32 = 4;

/// Decides, at each check, whether a connection has idled out.
#[derive(Debug)]
pub struct IdleClock {
    keepalive_timeout: Duration,
    next_check: Instant,
    reads_seen: u64,
    quiet_checks: u32,
}

impl IdleClock {
    /// The clock of a connection accepted now.
    pub fn new(header_read_timeout: Duration, keepalive_timeout: Duration) -> Self {
        Self {
            keepalive_timeout,
            next_check: Instant::now() + header_read_timeout,
            reads_seen: 0,
            quiet_checks: 0,
        }
    }

    /// When to check next.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Checks `activity` now; returns why the connection should close.
    pub fn check(&mut self, activity: &Activity) -> Option<&'static str> {
        let reads = activity.reads.load(Ordering::Relaxed);
        if reads == 0 {
            return Some("no request within the header read timeout");
        }
        if reads != self.reads_seen || !activity.is_idle() {
            self.reads_seen = reads;
            self.quiet_checks = 0;
        } else {
            self.quiet_checks += 1;
            if self.quiet_checks >= QUIET_CHECKS {
                return Some("idle longer than the keep-alive timeout");
            }
        }
        self.next_check = Instant::now() + self.keepalive_timeout / QUIET_CHECKS;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(activity: &Activity) {
        activity.reads.fetch_add(1, Ordering::Relaxed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_closes_at_the_header_read_timeout() {
        let activity = Activity::default();
        let mut clock = IdleClock::new(Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(clock.next_check(), Instant::now() + Duration::from_secs(10));
        tokio::time::sleep_until(clock.next_check()).await;
        assert!(clock.check(&activity).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_keepalive_closes_after_its_timeout_and_a_busy_one_never() {
        let activity = Arc::new(Activity::default());
        let mut clock = IdleClock::new(Duration::from_secs(10), Duration::from_secs(60));
        read(&activity);
        let last_byte = Instant::now();
        let closed_at = loop {
            tokio::time::sleep_until(clock.next_check()).await;
            if clock.check(&activity).is_some() {
                break Instant::now();
            }
        };
        let idle = closed_at - last_byte;
        assert!(idle >= Duration::from_secs(60) && idle <= Duration::from_secs(75), "{idle:?}");

        let activity = Arc::new(Activity::default());
        let mut clock = IdleClock::new(Duration::from_secs(10), Duration::from_secs(60));
        read(&activity);
        let _waiting_for_a_slow_backend = InFlightRequest::new(&activity);
        for _ in 0..100 {
            tokio::time::sleep_until(clock.next_check()).await;
            assert_eq!(clock.check(&activity), None, "a request in flight is not idle");
        }
    }
}
