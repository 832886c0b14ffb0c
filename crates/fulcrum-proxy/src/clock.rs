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
    let epoch = EPOCH.get_or_init(|| {
        let now = Instant::now();
        [86_400, 3_600, 60, 1]
            .into_iter()
            .find_map(|seconds| now.checked_sub(Duration::from_secs(seconds)))
            .unwrap_or(now)
    });
    Instant::now().saturating_duration_since(*epoch).as_nanos() as u64
}
