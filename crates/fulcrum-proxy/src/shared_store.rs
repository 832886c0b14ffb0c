//! The store every Fulcrum instance shares (`[redis]`): session bindings
//! as `PREFIX + pool + ":" + key → backend address`, each with the
//! session's TTL. Built on the `redis` crate's connection manager, which
//! reconnects in the background.
//!
//! The store is an optimisation, never a dependency: every command has the
//! configured deadline, and a failure marks the store down for
//! [`RETRY_AFTER`] so requests in the meantime decide locally at once
//! instead of each waiting for the deadline. An outage is logged once when
//! it starts and once when it ends, and every failed or skipped command is
//! counted (`lb_shared_store_errors_total`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fulcrum_config::Redis;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a failure keeps requests off the store.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The value that marks a session forgotten by an operator (rebalance or
/// flush), so other instances drop their cached binding instead of
/// writing it back.
pub const FORGOTTEN: &str = "-";
/// How long a forgotten marker lasts: every instance revalidates its
/// cached bindings far sooner than this.
const FORGOTTEN_TTL_SECS: u64 = 60;
/// Keys deleted or marked per round trip.
const BATCH: usize = 500;

/// The store did not answer in time (or is marked down); decide locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A connection to the shared store.
pub struct SharedStore {
    connection: ConnectionManager,
    /// What the config asked for, to keep the store across reloads that do not change it.
    pub config: Redis,
    down_until: AtomicU64,
    down: AtomicBool,
    errors: AtomicU64,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").field("prefix", &self.config.key_prefix).finish_non_exhaustive()
    }
}

impl SharedStore {
    /// A store for `config`; connects lazily (Fulcrum starts and serves
    /// while Redis is down). Must be called inside a tokio runtime.
    pub fn new(config: &Redis) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| anyhow::anyhow!("[redis] url is not usable: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(3)
            .set_max_delay(RETRY_AFTER);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| anyhow::anyhow!("[redis] cannot be set up: {e}"))?;
        Ok(Self {
            connection,
            config: config.clone(),
            down_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        })
    }

    /// Commands that failed or were skipped while the store was down.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The store key of session `key` in `pool`.
    pub fn key(&self, pool: &str, key: u64) -> String {
        format!("{}{pool}:{key:016x}", self.config.key_prefix)
    }

    /// The binding of `key`, refreshing its TTL to `ttl_secs` (GETEX).
    pub async fn get_refresh(&self, key: &str, ttl_secs: u64) -> Result<Option<String>, Unavailable> {
        self.run(redis::cmd("GETEX").arg(key).arg("EX").arg(ttl_secs)).await
    }

    /// Binds `key` to `value` unless another instance bound it first; then
    /// returns that instance's binding (SET NX GET).
    pub async fn bind_new(
        &self,
        key: &str,
        value: &str,
        ttl_secs: u64,
    ) -> Result<Option<String>, Unavailable> {
        let existing: Option<String> = self
            .run(redis::cmd("SET").arg(key).arg(value).arg("NX").arg("GET").arg("EX").arg(ttl_secs))
            .await?;
        // A forgotten marker is no binding: take its place.
        match existing {
            Some(marker) if marker == FORGOTTEN => self.bind(key, value, ttl_secs).await.map(|()| None),
            other => Ok(other),
        }
    }

    /// Binds `key` to `value`, replacing any binding (a failover).
    pub async fn bind(&self, key: &str, value: &str, ttl_secs: u64) -> Result<(), Unavailable> {
        self.run(redis::cmd("SET").arg(key).arg(value).arg("EX").arg(ttl_secs)).await
    }

    /// Marks `keys` forgotten, so every instance re-places those sessions.
    pub async fn forget(&self, keys: &[String]) -> Result<(), Unavailable> {
        for batch in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for key in batch {
                pipe.cmd("SET").arg(key).arg(FORGOTTEN).arg("EX").arg(FORGOTTEN_TTL_SECS).ignore();
            }
            self.run_pipeline(&pipe).await?;
        }
        Ok(())
    }

    /// Marks every session of `pool` forgotten; returns how many there were.
    pub async fn forget_pool(&self, pool: &str) -> Result<usize, Unavailable> {
        let pattern = format!("{}{pool}:*", self.config.key_prefix);
        let mut cursor = 0u64;
        let mut forgotten = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(BATCH))
                .await?;
            forgotten += keys.len();
            self.forget(&keys).await?;
            if next == 0 {
                return Ok(forgotten);
            }
            cursor = next;
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> Result<T, Unavailable> {
        self.available()?;
        let mut connection = self.connection.clone();
        let reply = tokio::time::timeout(self.config.timeout, command.query_async(&mut connection)).await;
        self.settle(reply)
    }

    /// Runs a Lua script (loaded on first use, then called by its hash).
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        self.available()?;
        let mut connection = self.connection.clone();
        let reply = tokio::time::timeout(self.config.timeout, invocation.invoke_async(&mut connection)).await;
        self.settle(reply)
    }

    async fn run_pipeline(&self, pipe: &redis::Pipeline) -> Result<(), Unavailable> {
        self.available()?;
        let mut connection = self.connection.clone();
        // A batch gets the deadline of each of its commands' round trips: one.
        let reply = tokio::time::timeout(self.config.timeout * 4, pipe.query_async(&mut connection)).await;
        self.settle(reply)
    }

    fn available(&self) -> Result<(), Unavailable> {
        if crate::clock::now_nanos() < self.down_until.load(Ordering::Relaxed) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        Ok(())
    }

    fn settle<T>(
        &self,
        reply: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Unavailable> {
        let error = match reply {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(prefix = %self.config.key_prefix, "the shared store answers again");
                }
                return Ok(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.config.timeout),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.down_until.store(crate::clock::now_nanos() + RETRY_AFTER.as_nanos() as u64, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "the shared store (redis) is unavailable; sessions are placed locally until it answers");
        }
        Err(Unavailable)
    }
}
