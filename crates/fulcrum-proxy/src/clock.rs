//! Monotonic nanoseconds since a process-wide epoch: the time argument the
//! pure core's algorithms and state machines take.
//!
//! It reads tokio's clock, so unit tests with `start_paused = true` drive
//! every state machine of the proxy on fake time. The epoch lies a while
//! before the first reading, so a paused test clock that started before it
//! still reads as increasing time.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's clock epoch.
pub fn now_nanos() -> u64 {
    Instant::now().saturating_duration_since(epoch()).as_nanos() as u64
}

/// The instant `nanos` after the epoch: a reading of [`now_nanos`] made
/// an [`Instant`] again without reading the clock a second time (a
/// reading costs ~27 ns here, and a request's steps share one).
pub fn instant_at(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

fn epoch() -> Instant {
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|seconds| now.checked_sub(Duration::from_secs(seconds)))
            .unwrap_or(now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reading_made_an_instant_is_the_instant_it_was_read_at() {
        let read = now_nanos();
        let at = Instant::now();
        assert_eq!(instant_at(read), at, "paused time: no time passed between the two readings");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(instant_at(now_nanos()), at + Duration::from_millis(1500));
    }
}
