//! Closing client connections that hold a file descriptor and do nothing
//! (nginx's `client_header_timeout` and `keepalive_timeout`, HAProxy's
//! `timeout http-request` / `http-keep-alive`):
//!
//! - a connection that sends no byte within the header read timeout of
//!   being accepted is closed (hyper times out only a head that has begun);
//! - a connection with no request in flight that reads nothing for the
//!   keep-alive timeout is closed (checked every quarter of it by a sweep
//!   once a second, so the close comes between 1 and 1.25 timeouts, plus
//!   up to a second, after the last byte);
//! - when accepting fails for want of file descriptors, every connection
//!   with no request in flight is closed at once, so new clients can be
//!   served;
//! - an HTTP/1 connection with no request in flight that read nothing
//!   between two sweeps is asked to nap: it lets go of hyper and its
//!   buffers and waits on its bare socket (see `serve`), as nginx frees a
//!   keep-alive connection's buffers.
//!
//! The I/O wrapper counts reads; requests count themselves in flight with
//! a guard that the response body holds until it has been sent (or the
//! client went away), so a request waiting for a slow backend is never
//! idle. One [`Watchlist`] per proxy holds every open HTTP connection and
//! one sweeper task checks their clocks once a second: a connection pays
//! nothing per request for its timeouts but a counter, and no timer or
//! task of its own (a select over timers in each connection's task polled
//! them on every wake-up: ~5% more instructions per request).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reads and requests in flight on one client connection, its idle clock,
/// and the token that asks it to close.
#[derive(Debug)]
pub struct Activity {
    reads: AtomicU64,
    in_flight: AtomicU64,
    /// Requests so far, and how many the connection may serve.
    requests: AtomicU64,
    max_requests: u64,
    clock: Mutex<IdleClock>,
    close: CancellationToken,
    /// Closing for a cause of its own (idle, requests served, descriptors
    /// short), not because the proxy drains.
    closed_for_cause: AtomicBool,
    /// Draining: every HTTP/1 response says `Connection: close`.
    closing: AtomicBool,
    /// The sweeper asked it to nap; cleared when it wakes up again, so it
    /// is asked at most once per awake spell.
    nap_wanted: AtomicBool,
    /// Wakes the connection when `nap_wanted` is set: a flag and a waker
    /// in the connection's own state, not a child token (an allocation,
    /// and its parent's lock, every time it wakes up).
    nap_waker: AtomicWaker,
    /// Reads seen at the previous sweep.
    reads_at_last_sweep: AtomicU64,
    /// Napping: holding only its socket.
    napping: AtomicBool,
    /// A request head has begun and is not complete: hyper holds it, and
    /// would finish it before letting go (so it does not nap).
    head_begun: AtomicBool,
}

impl Activity {
    /// A connection accepted now under the listener's `limits` (its
    /// header-read and keep-alive timeouts, its requests per connection)
    /// that closes when `close` is cancelled (a child of the proxy's drain token).
    pub fn new(close: CancellationToken, limits: &fulcrum_config::Limits) -> Self {
        Self {
            reads: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            max_requests: limits.max_requests_per_connection,
            clock: Mutex::new(IdleClock::new(limits.header_read_timeout, limits.keepalive_timeout)),
            close,
            closed_for_cause: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            nap_wanted: AtomicBool::new(false),
            nap_waker: AtomicWaker::new(),
            reads_at_last_sweep: AtomicU64::new(0),
            napping: AtomicBool::new(false),
            head_begun: AtomicBool::new(false),
        }
    }

    /// Notes whether the connection naps, for the census.
    pub fn set_napping(&self, napping: bool) {
        self.napping.store(napping, Ordering::Relaxed);
    }

    /// The connection is awake (again): the sweeper may ask it to nap.
    pub fn awake(&self) {
        self.nap_wanted.store(false, Ordering::Release);
    }

    /// Resolves when the sweeper asks this awake connection to nap (quiet
    /// since the previous sweep).
    pub fn nap_wanted(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            // Registered before the flag is read, so a request between the
            // two is not missed.
            self.nap_waker.register(cx.waker());
            if self.nap_wanted.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Asks an awake connection that read nothing since the previous sweep,
    /// has no request in flight and no head begun to nap.
    fn nap_if_quiet(&self) {
        let reads = self.reads.load(Ordering::Relaxed);
        let quiet = self.reads_at_last_sweep.swap(reads, Ordering::Relaxed) == reads;
        if quiet
            && self.is_idle()
            && !self.head_begun.load(Ordering::Relaxed)
            && !self.nap_wanted.swap(true, Ordering::AcqRel)
        {
            self.nap_waker.wake();
        }
    }

    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Cancelled when the connection should close gracefully.
    pub fn close_requested(&self) -> &CancellationToken {
        &self.close
    }

    /// Whether it closes for a cause of its own rather than a drain.
    pub fn closed_for_cause(&self) -> bool {
        self.closed_for_cause.load(Ordering::Relaxed)
    }

    /// From now on its HTTP/1 responses say `Connection: close`.
    pub fn answer_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn close_because(&self, reason: &'static str) {
        self.closed_for_cause.store(true, Ordering::Relaxed);
        if !self.close.is_cancelled() {
            tracing::debug!(reason, "closing a client connection");
            self.close.cancel();
        }
    }

    /// Checks the idle clock if a check is due at `now`, and whether to nap.
    fn sweep(&self, now: Instant) {
        self.nap_if_quiet();
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if clock.next_check() <= now {
            if let Some(reason) = clock.check(self) {
                self.close_because(reason);
            }
        }
    }
}

/// How often the sweeper looks at the connections' clocks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Every open HTTP connection of a proxy, for its idle timeouts.
#[derive(Debug, Default)]
pub struct Watchlist {
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// Open HTTP client connections by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Served by hyper (or not yet sent a byte).
    pub awake: u64,
    /// Idle, holding only their socket.
    pub napping: u64,
}

/// A connection's place on the watchlist, given up when dropped.
#[derive(Debug)]
pub struct Watching {
    list: Arc<Watchlist>,
    id: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.list.lock().remove(&self.id);
    }
}

impl Watchlist {
    /// A watchlist swept once a second for as long as it is referenced.
    /// Must be called inside a tokio runtime.
    pub fn start() -> Arc<Self> {
        let list = Arc::new(Self::default());
        tokio::spawn(sweep(Arc::downgrade(&list)));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `activity` until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>, activity: Arc<Activity>) -> Watching {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        Watching { list: Arc::clone(self), id }
    }

    /// Asks every connection with no request in flight to close (out of
    /// file descriptors).
    pub fn close_idle(&self) {
        for activity in self.lock().values().filter(|a| a.is_idle()) {
            activity.close_because("out of file descriptors");
        }
    }

    /// How many connections are open, and how many of them nap.
    pub fn census(&self) -> Census {
        let connections = self.lock();
        let napping = connections.values().filter(|a| a.napping.load(Ordering::Relaxed)).count() as u64;
        Census { awake: connections.len() as u64 - napping, napping }
    }

    fn sweep_once(&self) {
        let now = Instant::now();
        let due: Vec<Arc<Activity>> = self.lock().values().cloned().collect();
        for activity in due {
            activity.sweep(now);
        }
    }
}

async fn sweep(list: Weak<Watchlist>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(list) = list.upgrade() else { break };
        list.sweep_once();
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>, bool);

impl InFlightRequest {
    /// Starts counting a request on `activity`.
    /// An HTTP/1 connection (`keep_alive_limited`) closes (gracefully:
    /// after this response) once it has served its
    /// `max_requests_per_connection`; an HTTP/2 one is not rotated, as
    /// Envoy and HAProxy do not rotate them by default: a GOAWAY would fail
    /// the calls a multiplexing client (tonic, for one) has racing it.
    pub fn new(activity: &Arc<Activity>, keep_alive_limited: bool) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let rotated = keep_alive_limited
            && activity.requests.fetch_add(1, Ordering::Relaxed) + 1 >= activity.max_requests;
        if rotated {
            activity.close_because("it served max_requests_per_connection");
        }
        let last = rotated || (keep_alive_limited && activity.closing.load(Ordering::Relaxed));
        Self(Arc::clone(activity), last)
    }

    /// Whether this is the last request the connection serves.
    pub fn is_last(&self) -> bool {
        self.1
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection's I/O: counts reads that brought bytes, keeps its
/// request heads to their deadline, hands out bytes to replay before
/// reading more (those read to tell HTTP/2's preface from HTTP/1, and what
/// hyper had buffered when a napping connection let go of it), and notes
/// when the client closed its side, so a connection that ends is not
/// mistaken for one that naps.
#[derive(Debug)]
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    head: super::head_timer::HeadTimer,
    /// What `activity` was last told of the head.
    head_begun: bool,
    /// Read already (and counted), to hand out first.
    replay: bytes::Bytes,
    /// Whether the socket may hold more than `replay`: if not, the read
    /// that hands out its end does not also try the socket (a system call
    /// that would find nothing).
    more_after_replay: bool,
    closed_by_client: bool,
}

impl<I> Watched<I> {
    /// Wraps `io`, counting on `activity`; each request head must be
    /// complete within `header_read_timeout`.
    pub fn new(io: I, activity: Arc<Activity>, header_read_timeout: Duration) -> Self {
        Self {
            io,
            activity,
            head: super::head_timer::HeadTimer::new(header_read_timeout),
            head_begun: false,
            replay: bytes::Bytes::new(),
            more_after_replay: false,
            closed_by_client: false,
        }
    }

    /// Hands out `bytes` first, before what was still to replay. They are
    /// copied: hyper's leftovers are a slice of its whole read buffer.
    pub fn replay(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.replay = [bytes, &self.replay].concat().into();
            self.more_after_replay = true;
        }
    }

    /// Hands out a connection's first bytes before reading more; `drained`:
    /// the read that took them found no more; `http2`: they are HTTP/2's
    /// preface, so the connection has no request-head deadline.
    pub fn replay_first(&mut self, first: Vec<u8>, drained: bool, http2: bool) {
        debug_assert!(self.replay.is_empty(), "the first bytes come first");
        self.replay = first.into();
        self.more_after_replay = !drained;
        if http2 {
            self.head.speaks_http2();
        }
    }

    /// Whether nothing is left to replay.
    pub fn nothing_to_replay(&self) -> bool {
        self.replay.is_empty()
    }

    /// Whether a read has seen the client's end of the stream (or the
    /// end a 408 puts to a head out of time).
    pub fn closed_by_client(&self) -> bool {
        self.closed_by_client
    }
}

impl<I> Watched<I> {
    /// Resolves when the client's socket has bytes (or its end) to read,
    /// or when a request head begun has run out of time: the next read
    /// then answers 408.
    ///
    /// Polled, not awaited: readiness waits in the socket's own reader
    /// slot, so a napping connection's task keeps no waiter of its own.
    pub fn readable_or_head_expired(&mut self) -> impl Future<Output = ()> + Send + '_
    where
        I: super::serve::ClientStream,
    {
        std::future::poll_fn(move |cx| {
            if self.head.poll_expired(cx) || self.io.socket().poll_read_ready(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// A request head ran out of time: the client is told so (best effort,
    /// once: a fresh socket has room for these bytes), and the read ends
    /// the connection.
    fn end_late_head(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.activity.close.is_cancelled() {
            let _ = Pin::new(&mut self.io).poll_write(cx, super::head_timer::REQUEST_TIMEOUT);
            self.activity.close_because("its request head took longer than header_read_timeout");
        }
        self.closed_by_client = true;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let replayed = !this.replay.is_empty();
        if replayed {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            bytes::Buf::advance(&mut this.replay, n);
            if !this.replay.is_empty() || buf.remaining() == 0 || !this.more_after_replay {
                return Poll::Ready(Ok(()));
            }
            // What the socket holds follows in the same read: a head that
            // took hyper two reads would make it grow its 8 KiB buffer,
            // which copies it.
        }
        let in_flight = !this.activity.is_idle();
        if in_flight {
            this.head.clear();
        }
        if this.head.expired() {
            return this.end_late_head(cx);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            this.head.on_read(in_flight);
        } else if matches!(polled, Poll::Ready(Ok(()))) && buf.remaining() > 0 {
            this.closed_by_client = true;
        }
        if polled.is_pending() && this.head.poll_expired(cx) {
            return this.end_late_head(cx);
        }
        if this.head.begun() != this.head_begun {
            this.head_begun = !this.head_begun;
            this.activity.head_begun.store(this.head_begun, Ordering::Relaxed);
        }
        if replayed && !matches!(polled, Poll::Ready(Ok(()))) {
            // The replayed bytes are read; the next read meets the error
            // (or the end it left).
            return Poll::Ready(Ok(()));
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
struct IdleClock {
    keepalive_timeout: Duration,
    next_check: Instant,
    reads_seen: u64,
    quiet_checks: u32,
}

impl IdleClock {
    /// The clock of a connection accepted now.
    fn new(header_read_timeout: Duration, keepalive_timeout: Duration) -> Self {
        Self {
            keepalive_timeout,
            next_check: Instant::now() + header_read_timeout,
            reads_seen: 0,
            quiet_checks: 0,
        }
    }

    /// When to check next.
    fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Checks `activity` now; returns why the connection should close.
    fn check(&mut self, activity: &Activity) -> Option<&'static str> {
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

    fn fresh() -> Activity {
        Activity::new(CancellationToken::new(), &fulcrum_config::Limits::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_closes_at_the_header_read_timeout() {
        let activity = fresh();
        let mut clock = IdleClock::new(Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(clock.next_check(), Instant::now() + Duration::from_secs(10));
        tokio::time::sleep_until(clock.next_check()).await;
        assert!(clock.check(&activity).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_keepalive_closes_after_its_timeout_and_a_busy_one_never() {
        let activity = Arc::new(fresh());
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

        let activity = Arc::new(fresh());
        let mut clock = IdleClock::new(Duration::from_secs(10), Duration::from_secs(60));
        read(&activity);
        let _waiting_for_a_slow_backend = InFlightRequest::new(&activity, true);
        for _ in 0..100 {
            tokio::time::sleep_until(clock.next_check()).await;
            assert_eq!(clock.check(&activity), None, "a request in flight is not idle");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchlist_closes_silent_and_idle_connections_and_forgets_closed_ones() {
        let list = Watchlist::start();
        let silent = Arc::new(fresh());
        let busy = Arc::new(fresh());
        let (_s, _b) = (list.watch(Arc::clone(&silent)), list.watch(Arc::clone(&busy)));
        read(&busy);
        let _request = InFlightRequest::new(&busy, true);
        tokio::time::sleep(fulcrum_config::Limits::default().header_read_timeout + SWEEP_EVERY * 2).await;
        assert!(silent.close_requested().is_cancelled(), "silent past the header read timeout");
        assert!(!busy.close_requested().is_cancelled(), "a request is in flight");

        let dropped = list.watch(Arc::new(fresh()));
        assert_eq!(list.lock().len(), 3);
        drop(dropped);
        assert_eq!(list.lock().len(), 2, "a closed connection leaves the list");
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_uncounted_then_the_stream_and_its_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Arc::new(fresh());
        let mut watched = Watched::new(server, Arc::clone(&activity), Duration::from_secs(10));
        watched.replay(b"GET / ");
        watched.replay(b"");
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        drop(client);
        let mut piece = [0; 4];
        assert_eq!(watched.read(&mut piece).await.unwrap(), 4, "a short buffer takes the replay in pieces");
        let mut rest = Vec::new();
        watched.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&piece[..], &rest].concat(), b"GET / HTTP/1.1\r\n");
        assert!(watched.nothing_to_replay() && watched.closed_by_client());
        assert_eq!(activity.reads.load(Ordering::Relaxed), 1, "only the read from the stream counts");
    }

    #[tokio::test]
    async fn one_read_takes_the_replay_and_what_the_stream_holds() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, Arc::new(fresh()), Duration::from_secs(10));
        watched.replay(b"GET / ");
        let mut head = [0; 64];
        assert_eq!(watched.read(&mut head).await.unwrap(), 6, "nothing more to read yet: the replay alone");
        watched.replay(b"GET / ");
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        let n = watched.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_first_read_that_found_no_more_is_handed_out_without_reading_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, Arc::new(fresh()), Duration::from_secs(10));
        watched.replay_first(b"GET / ".to_vec(), true, false);
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        let mut head = [0; 64];
        assert_eq!(watched.read(&mut head).await.unwrap(), 6, "the socket was drained: the replay alone");
        assert_eq!(watched.read(&mut head).await.unwrap(), 10, "then what came since");

        watched.replay_first(b"GET / ".to_vec(), false, false);
        client.write_all(b"HTTP/1.1\r\n").await.unwrap();
        let n = watched.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n", "the first read filled its room: more is read at once");
    }

    #[tokio::test]
    async fn bytes_replayed_again_go_before_those_still_pending() {
        use tokio::io::AsyncReadExt;
        let (_client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, Arc::new(fresh()), Duration::from_secs(10));
        watched.replay(b"cd");
        watched.replay(b"ab");
        let mut all = [0; 4];
        watched.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"abcd");
        assert!(!watched.closed_by_client(), "the client has not closed");
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct CountWakes(AtomicU64);

    impl futures_util::task::ArcWake for CountWakes {
        fn wake_by_ref(count: &Arc<Self>) {
            count.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_naps_after_a_quiet_sweep_unless_busy_or_mid_head_and_is_counted() {
        let list = Watchlist::start();
        let (quiet, busy, mid_head) = (Arc::new(fresh()), Arc::new(fresh()), Arc::new(fresh()));
        let _watching: Vec<_> = [&quiet, &busy, &mid_head].map(|a| list.watch(Arc::clone(a))).into();
        let all = [&quiet, &busy, &mid_head];
        let wanted = |activity: &Activity| activity.nap_wanted.load(Ordering::Acquire);
        for activity in all {
            activity.awake();
            read(activity);
        }
        let waiting = Arc::clone(&quiet);
        let quiet_naps = tokio::spawn(async move { waiting.nap_wanted().await });
        tokio::task::yield_now().await;
        let _request = InFlightRequest::new(&busy, true);
        mid_head.head_begun.store(true, Ordering::Relaxed);
        // The first sweep sees the reads; the next finds them unchanged.
        tokio::time::sleep(SWEEP_EVERY / 2).await;
        assert!(all.iter().all(|a| !wanted(a)), "reads since the previous sweep");
        assert!(!quiet_naps.is_finished());
        tokio::time::sleep(SWEEP_EVERY).await;
        assert!(wanted(&quiet), "quiet from one sweep to the next");
        let woken = tokio::time::timeout(Duration::from_millis(1), quiet_naps).await;
        woken.expect("the waiting connection is woken").expect("no panic");
        assert!(!wanted(&busy), "a request is in flight");
        assert!(!wanted(&mid_head), "a head has begun");
        assert!(!quiet.close_requested().is_cancelled(), "napping is not closing");

        // Asked once per awake spell: later sweeps do not wake it again.
        let wakes = Arc::new(CountWakes::default());
        let waker = futures_util::task::waker(Arc::clone(&wakes));
        let mut asked = std::pin::pin!(quiet.nap_wanted());
        assert!(asked.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
        tokio::time::sleep(SWEEP_EVERY * 2).await;
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0, "no sweep asked again");

        quiet.set_napping(true);
        assert_eq!(list.census(), Census { awake: 2, napping: 1 });
        // Waking up lets the sweeper ask again.
        quiet.awake();
        assert!(!wanted(&quiet), "a new spell starts with no nap asked");
        read(&quiet);
        tokio::time::sleep(SWEEP_EVERY).await;
        assert!(!wanted(&quiet), "it read since the previous sweep");
        tokio::time::sleep(SWEEP_EVERY).await;
        assert!(wanted(&quiet));
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_closes_only_connections_with_nothing_in_flight() {
        let list = Watchlist::start();
        let (idle, busy) = (Arc::new(fresh()), Arc::new(fresh()));
        let (_i, _b) = (list.watch(Arc::clone(&idle)), list.watch(Arc::clone(&busy)));
        let _request = InFlightRequest::new(&busy, true);
        list.close_idle();
        assert!(idle.close_requested().is_cancelled());
        assert!(!busy.close_requested().is_cancelled());
    }
}
