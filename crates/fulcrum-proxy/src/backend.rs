//! A backend as the data path holds it: its address, its live load and
//! the identity of its upstream connection pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fulcrum_balance::Load;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One backend server of a pool.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the process's life; keys the per-thread connection pools.
    pub id: u64,
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative capacity.
    pub weight: u32,
    /// Availability zone, if configured.
    pub zone: Option<String>,
    /// Live counters, shared with the pool's selector.
    pub load: Arc<Load>,
}

impl Backend {
    /// A new backend with fresh counters.
    pub fn new(config: &fulcrum_config::Backend) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            address: config.address,
            weight: config.weight,
            zone: config.zone.clone(),
            load: Arc::new(Load::default()),
        }
    }

    /// Whether `config` describes this backend unchanged.
    pub fn matches(&self, config: &fulcrum_config::Backend) -> bool {
        self.address == config.address && self.weight == config.weight && self.zone == config.zone
    }
}
