//! The local session table: session key → backend, bounded and idle-timed
//! like HAProxy's stick tables. It is split in [`SHARDS`] LRU lists (the
//! `lru` crate) behind their own locks, so concurrent requests rarely
//! meet; each shard holds at most its share of `max_sessions` and evicts
//! its least recently used session to take a new one. A session unseen
//! for the TTL is forgotten when next looked up (or evicted before).
//!
//! The table outlives pool generations: a reload that adds or removes
//! backends keeps every session (a new backend takes only new sessions;
//! a removed one loses only its own).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

/// Independent LRU lists (a power of two: the shard is the key's top bits).
pub const SHARDS: usize = 64;

/// One session's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The backend's address key ([`crate::backend::Backend::address_key`]);
    /// [`FORGOTTEN`] when an operator forgot the session.
    pub backend: u64,
    /// When the session was last seen, seconds on the proxy clock.
    pub seen: u32,
    /// When the shared store last confirmed this binding (0: never).
    pub confirmed: u32,
}

/// The backend of a session an operator forgot (rebalance, flush): its
/// next request is placed anew.
pub const FORGOTTEN: u64 = 0;

/// Sessions of one pool.
#[derive(Debug)]
pub struct SessionTable {
    shards: Box<[Mutex<LruCache<u64, Entry>>]>,
    per_shard: usize,
}

impl SessionTable {
    /// A table holding at most `max_sessions` (rounded up to a multiple of [`SHARDS`]).
    pub fn new(max_sessions: usize) -> Self {
        Self {
            // Unbounded lists with the bound enforced here: `LruCache::new`
            // would allocate the whole capacity up front.
            shards: (0..SHARDS).map(|_| Mutex::new(LruCache::unbounded())).collect(),
            per_shard: max_sessions.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, LruCache<u64, Entry>> {
        let index = (key >> (64 - SHARDS.trailing_zeros())) as usize;
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The binding of `key` seen at `now` (seconds), unless it was idle
    /// for `ttl` seconds (it is dropped then).
    pub fn get(&self, key: u64, now: u32, ttl: u32) -> Option<Entry> {
        let mut shard = self.shard(key);
        let entry = shard.get_mut(&key)?;
        if now.saturating_sub(entry.seen) >= ttl {
            shard.pop(&key);
            return None;
        }
        entry.seen = now;
        Some(*entry)
    }

    /// Binds `key`, evicting the shard's least recently used session when full.
    pub fn put(&self, key: u64, entry: Entry) {
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard && !shard.contains(&key) {
            shard.pop_lru();
        }
        shard.put(key, entry);
    }

    /// Binds `key` unless a live binding exists (a concurrent request of
    /// the same session placed it first); returns the binding that holds.
    pub fn put_first(&self, key: u64, entry: Entry, ttl: u32) -> Entry {
        let mut shard = self.shard(key);
        if let Some(existing) = shard.get(&key) {
            if existing.backend != FORGOTTEN && entry.seen.saturating_sub(existing.seen) < ttl {
                return *existing;
            }
        }
        if shard.len() >= self.per_shard && !shard.contains(&key) {
            shard.pop_lru();
        }
        shard.put(key, entry);
        entry
    }

    /// Forgets `key`.
    pub fn remove(&self, key: u64) {
        self.shard(key).pop(&key);
    }

    /// Live sessions per backend address key at `now`.
    pub fn counts(&self, now: u32, ttl: u32) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (_, entry) in shard.iter() {
                if entry.backend != FORGOTTEN && now.saturating_sub(entry.seen) < ttl {
                    *counts.entry(entry.backend).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// Forgets up to `quota[backend]` live sessions of each backend;
    /// returns the keys forgotten. A forgotten session stays in the table
    /// as [`FORGOTTEN`] so a cookie naming it is placed anew too.
    pub fn forget(&self, quota: &HashMap<u64, usize>, now: u32, ttl: u32) -> Vec<u64> {
        let mut left = quota.clone();
        let mut forgotten = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (key, entry) in shard.iter_mut() {
                if now.saturating_sub(entry.seen) >= ttl {
                    continue;
                }
                if let Some(n) = left.get_mut(&entry.backend).filter(|n| **n > 0) {
                    *n -= 1;
                    entry.backend = FORGOTTEN;
                    forgotten.push(*key);
                }
            }
        }
        forgotten
    }

    /// Forgets every session; returns how many there were.
    pub fn clear(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                let n = shard.len();
                shard.clear();
                n
            })
            .sum()
    }

    /// Sessions held, live or idle.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

/// How many sessions to forget on each backend so that `fraction` of all
/// sessions move, taken from the most loaded first (water-filling: the
/// busiest backends are cut down to a common level).
pub fn rebalance_quota(counts: &HashMap<u64, usize>, fraction: f64) -> HashMap<u64, usize> {
    let total: usize = counts.values().sum();
    let mut to_forget = (total as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut levels: Vec<(u64, usize)> = counts.iter().map(|(&b, &n)| (b, n)).collect();
    levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut quota: HashMap<u64, usize> = HashMap::new();
    while to_forget > 0 {
        let top = levels[0].1;
        if top == 0 {
            break;
        }
        // Every backend at the top level gives one session per round.
        for level in levels.iter_mut().take_while(|l| l.1 == top) {
            if to_forget == 0 {
                break;
            }
            level.1 -= 1;
            *quota.entry(level.0).or_insert(0) += 1;
            to_forget -= 1;
        }
        levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    quota
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(backend: u64, seen: u32) -> Entry {
        Entry { backend, seen, confirmed: 0 }
    }

    #[test]
    fn sessions_expire_after_their_idle_time() {
        let table = SessionTable::new(100);
        table.put(7, entry(1, 10));
        assert_eq!(table.get(7, 15, 10).map(|e| e.backend), Some(1));
        assert_eq!(table.get(7, 24, 10).map(|e| e.backend), Some(1), "seen at 15, so alive until 25");
        assert_eq!(table.get(7, 34, 10), None);
        assert_eq!(table.len(), 0, "an expired session is dropped when found");
    }

    #[test]
    fn a_full_shard_evicts_its_least_recently_used_session() {
        let table = SessionTable::new(SHARDS * 2);
        // Three keys of one shard (same top bits).
        let (a, b, c) = (1u64, 2u64, 3u64);
        table.put(a, entry(1, 0));
        table.put(b, entry(1, 0));
        assert!(table.get(a, 1, 100).is_some(), "a is now the most recent");
        table.put(c, entry(1, 1));
        assert!(table.get(b, 1, 100).is_none(), "b was the least recently used");
        assert!(table.get(a, 1, 100).is_some() && table.get(c, 1, 100).is_some());
    }

    #[test]
    fn the_table_never_holds_more_than_its_bound() {
        let table = SessionTable::new(1000);
        let mut key = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..50_000 {
            key = key.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            table.put(key, entry(1, 0));
        }
        assert!(table.len() <= 1000usize.div_ceil(SHARDS) * SHARDS, "{}", table.len());
    }

    #[test]
    fn the_first_placement_of_a_session_wins() {
        let table = SessionTable::new(100);
        assert_eq!(table.put_first(5, entry(1, 0), 10).backend, 1);
        assert_eq!(
            table.put_first(5, entry(2, 1), 10).backend,
            1,
            "a concurrent second placement follows the first"
        );
        assert_eq!(table.put_first(5, entry(2, 20), 10).backend, 2, "an expired binding is replaced");
        table.forget(&HashMap::from([(2, 1)]), 20, 10);
        assert_eq!(table.put_first(5, entry(3, 21), 10).backend, 3, "a forgotten one too");
    }

    #[test]
    fn rebalance_cuts_the_busiest_backends_first() {
        let counts = HashMap::from([(1, 70), (2, 20), (3, 10)]);
        let quota = rebalance_quota(&counts, 0.2);
        assert_eq!(quota, HashMap::from([(1, 20)]), "20 of 100 sessions, all from the busiest");
        let quota = rebalance_quota(&HashMap::from([(1, 50), (2, 48), (3, 2)]), 0.1);
        assert_eq!(quota.values().sum::<usize>(), 10);
        assert_eq!((quota[&1], quota[&2]), (6, 4), "both cut down to 44");
    }

    #[test]
    fn forgetting_marks_sessions_so_their_next_request_is_placed_anew() {
        // Keys 0..10 share a shard: room for ten in it.
        let table = SessionTable::new(SHARDS * 10);
        for key in 0..10u64 {
            table.put(key, entry(if key < 6 { 1 } else { 2 }, 0));
        }
        let forgotten = table.forget(&HashMap::from([(1, 2)]), 1, 100);
        assert_eq!(forgotten.len(), 2);
        let counts = table.counts(1, 100);
        assert_eq!((counts[&1], counts[&2]), (4, 4));
        assert_eq!(table.get(forgotten[0], 1, 100).map(|e| e.backend), Some(FORGOTTEN));
    }
}
