//! Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
//! Backoff and Jitter", Marc Brooker, 2015): the wait before retry `n`
//! (0-based) is uniform in `[0, min(max, base × 2ⁿ))`, which spreads
//! retries of many clients instead of synchronising them.

use std::time::Duration;

use crate::SplitMix64;

/// The wait before retry `attempt` (0 for the first retry).
pub fn backoff(base: Duration, max: Duration, attempt: u32, rng: &mut SplitMix64) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(max);
    ceiling.mul_f64(rng.next_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_growing_ceiling_and_the_cap() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        let mut rng = SplitMix64::new(3);
        for attempt in 0..40 {
            let ceiling = (base * 2u32.pow(attempt.min(20))).min(max);
            let mut longest = Duration::ZERO;
            for _ in 0..200 {
                let wait = backoff(base, max, attempt, &mut rng);
                assert!(wait < ceiling || ceiling.is_zero(), "attempt {attempt}: {wait:?} ≥ {ceiling:?}");
                longest = longest.max(wait);
            }
            assert!(longest > ceiling.mul_f64(0.9), "jitter should cover the range");
        }
    }
}
