//! The data path's per-thread random source for picks (no shared state,
//! no lock): a SplitMix64 seeded from the clock and the thread.

use std::cell::RefCell;

use fulcrum_balance::SplitMix64;

thread_local! {
    static RNG: RefCell<SplitMix64> = RefCell::new(SplitMix64::new(seed()));
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id())
}

/// Runs `f` with this thread's random source.
pub fn with_rng<T>(f: impl FnOnce(&mut SplitMix64) -> T) -> T {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}
