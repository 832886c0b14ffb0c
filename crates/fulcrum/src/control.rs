//! The running balancer as the admin API and signals steer it: the config
//! file, the operator's runtime changes layered over it (persisted next to
//! the file), and the proxy they are applied to. Every change — an API
//! call, SIGHUP, `POST /api/v1/reload` — goes through one path: compute the
//! effective config, apply it to the proxy as a diff, then persist.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fulcrum_admin::{ApiError, BackendUpdate, Control, NewBackend};
use fulcrum_config::{AddedBackend, BackendChange, Config, DiscoveredBackend, Overlay, RouteSwitch, Source};
use fulcrum_proxy::{
    BackendStats, CanaryView, Event, PoolSessions, Proxy, RouteError, RouteView, SessionsError, Stats,
};
use futures_util::future::BoxFuture;
use http::StatusCode;

use crate::discovery::Follower;

/// Shared by the admin API, the signal loop and drain tasks.
#[derive(Clone)]
pub struct Controller(Arc<Inner>);

struct Inner {
    /// The config file, when there is one (the demo has none).
    config_path: Option<PathBuf>,
    proxy: Arc<Proxy>,
    graceful_timeout: Duration,
    state: Mutex<State>,
    /// One DNS discovery follower per pool that has `discovery`.
    followers: Mutex<HashMap<String, Follower>>,
}

struct State {
    /// The config file's text, which every overlay is validated with.
    source: Source,
    overlay: Overlay,
}

impl Controller {
    /// Starts with `source` (read from `config_path`) and the runtime
    /// changes persisted beside it, returning the effective config the
    /// proxy should start with; both are validated together.
    pub fn load(config_path: Option<&std::path::Path>, source: &Source) -> Result<(Config, Overlay), String> {
        let overlay = match config_path {
            Some(path) => Overlay::load(&Overlay::path_for(path))?,
            None => Overlay::default(),
        };
        let (effective, warnings) = source.config(&overlay).map_err(|e| e.to_string())?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        Ok((effective, overlay))
    }

    /// A controller for a proxy started from `source` + `overlay`.
    pub fn new(config_path: Option<PathBuf>, source: Source, overlay: Overlay, proxy: Arc<Proxy>) -> Self {
        let graceful_timeout = proxy.config().server.graceful_timeout;
        Self(Arc::new(Inner {
            config_path,
            proxy,
            graceful_timeout,
            state: Mutex::new(State { source, overlay }),
            followers: Mutex::new(HashMap::new()),
        }))
    }

    /// Starts, replaces or stops DNS discovery followers to match the
    /// running config; backends discovered for a pool that no longer has
    /// `discovery` leave with its follower.
    pub fn sync_discovery(&self) {
        let config = self.0.proxy.config();
        let mut followers = self.0.followers.lock().unwrap_or_else(|p| p.into_inner());
        followers
            .retain(|pool, f| config.pools.get(pool).and_then(|p| p.discovery.as_ref()) == Some(&f.config));
        for (pool, pool_config) in &config.pools {
            if let Some(discovery) = &pool_config.discovery {
                if !followers.contains_key(pool) {
                    followers
                        .insert(pool.clone(), Follower::start(self.clone(), pool.clone(), discovery.clone()));
                }
            }
        }
        drop(followers);
        let mut state = self.lock();
        let stale: Vec<String> = state
            .overlay
            .discovered
            .keys()
            .filter(|pool| config.pools.get(*pool).is_none_or(|p| p.discovery.is_none()))
            .cloned()
            .collect();
        if !stale.is_empty() {
            let mut overlay = state.overlay.clone();
            for pool in &stale {
                overlay.discovered.remove(pool);
            }
            if let Err(e) = self.commit(&mut state, overlay) {
                tracing::error!(pools = ?stale, error = %e.message, "cannot remove the backends of a pool that no longer has discovery");
            }
        }
    }

    /// Applies a DNS answer to `pool`: new addresses join, known ones take
    /// the answer's weight, missing ones start draining. Returns the
    /// addresses that are draining now.
    pub fn discovered(&self, pool: &str, answer: &[DiscoveredBackend]) -> Vec<SocketAddr> {
        let mut state = self.lock();
        let previous = state.overlay.discovered.get(pool).cloned().unwrap_or_default();
        let merged = crate::discovery::merge(&previous, answer);
        let draining = merged.iter().filter(|b| b.draining).map(|b| b.address).collect();
        if merged != previous {
            let joined: Vec<String> = merged
                .iter()
                .filter(|b| !b.draining && !previous.iter().any(|p| p.address == b.address && !p.draining))
                .map(|b| b.address.to_string())
                .collect();
            let mut overlay = state.overlay.clone();
            overlay.discovered.insert(pool.to_string(), merged);
            match self.commit(&mut state, overlay) {
                Ok(()) => {
                    tracing::info!(%pool, joined = ?joined, draining = ?draining, "DNS discovery changed the pool")
                }
                Err(e) => {
                    tracing::error!(%pool, error = %e.message, "cannot apply a DNS answer; the pool keeps its backends")
                }
            }
        }
        draining
    }

    /// Takes the draining backends of `pool` that have no request left (or
    /// outlived the graceful timeout) out of `draining`, returning them.
    pub fn drained(
        &self,
        pool: &str,
        draining: &mut HashMap<SocketAddr, tokio::time::Instant>,
    ) -> Vec<SocketAddr> {
        let stats = self.0.proxy.stats();
        let backends =
            stats.pools.iter().find(|p| p.name == pool).map(|p| p.backends.as_slice()).unwrap_or(&[]);
        let mut gone = Vec::new();
        draining.retain(|address, since| {
            let id = address.to_string();
            let idle = backends.iter().find(|b| b.id == id).is_none_or(|b| b.active_requests == 0);
            let done = idle || since.elapsed() >= self.0.graceful_timeout;
            if done {
                gone.push(*address);
            }
            !done
        });
        gone
    }

    /// Removes drained discovered backends from `pool`.
    pub fn forget_discovered(&self, pool: &str, gone: &[SocketAddr]) {
        let mut state = self.lock();
        let mut overlay = state.overlay.clone();
        let Some(found) = overlay.discovered.get_mut(pool) else { return };
        found.retain(|b| !(b.draining && gone.contains(&b.address)));
        match self.commit(&mut state, overlay) {
            Ok(()) => tracing::info!(%pool, removed = ?gone, "drained backends left DNS and the pool"),
            Err(e) => tracing::error!(%pool, error = %e.message, "cannot remove drained discovered backends"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `overlay` over the file config, validated with it as the
    /// file alone is (an invalid change is a 400 naming the key); persists
    /// it once applied. On any failure nothing changes.
    fn commit(&self, state: &mut State, overlay: Overlay) -> Result<(), ApiError> {
        let (effective, warnings) = state.source.config(&overlay).map_err(|e| {
            bad_request(e.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let previous = self.0.proxy.config();
        self.0.proxy.reload(effective).map_err(|e| internal(format!("cannot apply the change: {e:#}")))?;
        if let Some(path) = &self.0.config_path {
            if let Err(e) = overlay.save(&Overlay::path_for(path)) {
                // Persisting failed: undo, so what runs is what is on disk.
                let message = format!("cannot persist the change next to {}: {e}", path.display());
                return Err(internal(match self.0.proxy.reload(previous) {
                    Ok(_) => message,
                    Err(undo) => {
                        tracing::error!(error = %format!("{undo:#}"), "undoing an unpersisted change failed: the running config differs from the files until the next reload");
                        format!("{message}; undoing it failed too ({undo:#}), so the running config differs from the files until the next reload")
                    }
                }));
            }
        }
        state.overlay = overlay;
        Ok(())
    }

    fn backend(&self, pool: &str, id: &str) -> Result<BackendStats, ApiError> {
        let stats = self.0.proxy.stats();
        let pool_stats = stats
            .pools
            .iter()
            .find(|p| p.name == pool)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no pool named `{pool}`")))?;
        pool_stats.backends.iter().find(|b| b.id == id).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("pool `{pool}` has no backend `{id}`"))
        })
    }

    /// Waits (up to the graceful timeout) for a draining backend's requests
    /// to finish, then removes it.
    fn finish_removal(&self, pool: String, address: SocketAddr) {
        let controller = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + controller.0.graceful_timeout;
            let id = address.to_string();
            while Instant::now() < deadline {
                match controller.backend(&pool, &id) {
                    Ok(b) if b.active_requests > 0 => tokio::time::sleep(Duration::from_millis(50)).await,
                    Ok(_) => break,
                    Err(_) => return,
                }
            }
            let mut state = controller.lock();
            let mut overlay = state.overlay.clone();
            overlay.remove(&pool, address);
            match controller.commit(&mut state, overlay) {
                Ok(()) => tracing::info!(%pool, backend = %address, "drained backend removed"),
                Err(e) => {
                    tracing::error!(%pool, backend = %address, error = %e.message, "removing a drained backend failed")
                }
            }
        });
    }
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

impl Control for Controller {
    fn stats(&self) -> Stats {
        self.0.proxy.stats()
    }

    fn metrics(&self, openmetrics: bool) -> String {
        self.0.proxy.encode_metrics(openmetrics)
    }

    fn add_backend(&self, pool: &str, backend: NewBackend) -> Result<BackendStats, ApiError> {
        let address: SocketAddr = backend.address.parse().map_err(|_| {
            bad_request(format!("`{}` is not an IP:port address (e.g. \"127.0.0.1:9004\")", backend.address))
        })?;
        let weight = backend.weight.unwrap_or(1);
        let mut state = self.lock();
        let running = self.0.proxy.config();
        let Some(pool_config) = running.pools.get(pool) else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no pool named `{pool}`")));
        };
        if pool_config.backends.iter().any(|b| b.address == address) {
            return Err(ApiError::new(StatusCode::CONFLICT, format!("pool `{pool}` already has {address}")));
        }
        let mut overlay = state.overlay.clone();
        overlay.add(pool, AddedBackend { address, weight, zone: backend.zone, region: backend.region });
        self.commit(&mut state, overlay)?;
        drop(state);
        tracing::info!(%pool, backend = %address, weight, "backend added through the admin API");
        self.backend(pool, &address.to_string())
    }

    fn update_backend(&self, pool: &str, id: &str, update: BackendUpdate) -> Result<BackendStats, ApiError> {
        let current = self.backend(pool, id)?;
        let address: SocketAddr =
            current.address.parse().map_err(|_| internal("bad backend address".into()))?;
        let weight = update.weight;
        let mut state = self.lock();
        let mut overlay = state.overlay.clone();
        overlay.change(pool, address, BackendChange { weight, state: update.state.clone() });
        self.commit(&mut state, overlay)?;
        drop(state);
        tracing::info!(%pool, backend = %address, weight = ?weight, state = ?update.state, "backend changed through the admin API");
        self.backend(pool, id)
    }

    fn remove_backend(&self, pool: &str, id: &str) -> Result<BackendStats, ApiError> {
        let current = self.backend(pool, id)?;
        let address: SocketAddr =
            current.address.parse().map_err(|_| internal("bad backend address".into()))?;
        let mut state = self.lock();
        let mut overlay = state.overlay.clone();
        overlay.change(pool, address, BackendChange { weight: None, state: Some("draining".into()) });
        self.commit(&mut state, overlay)?;
        drop(state);
        tracing::info!(%pool, backend = %address, "backend draining before removal (admin API)");
        self.finish_removal(pool.to_string(), address);
        self.backend(pool, id)
    }

    fn sessions(&self, pool: &str) -> Result<PoolSessions, SessionsError> {
        self.0.proxy.sessions(pool)
    }

    fn rebalance_sessions(
        &self,
        pool: String,
        fraction: f64,
    ) -> BoxFuture<'static, Result<usize, SessionsError>> {
        let proxy = Arc::clone(&self.0.proxy);
        Box::pin(async move { proxy.rebalance_sessions(&pool, fraction).await })
    }

    fn flush_sessions(&self, pool: String) -> BoxFuture<'static, Result<usize, SessionsError>> {
        let proxy = Arc::clone(&self.0.proxy);
        Box::pin(async move { proxy.flush_sessions(&pool).await })
    }

    fn routes(&self) -> Vec<RouteView> {
        self.0.proxy.routes()
    }

    fn switch_route(&self, listener: &str, route: &str, switch: RouteSwitch) -> Result<RouteView, ApiError> {
        let find = || self.0.proxy.routes().into_iter().find(|r| r.listener == listener && r.name == route);
        find().ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("listener `{listener}` has no route `{route}`"))
        })?;
        let mut state = self.lock();
        let mut overlay = state.overlay.clone();
        overlay.switch_route(listener, route, switch.clone());
        self.commit(&mut state, overlay)?;
        drop(state);
        tracing::info!(%listener, %route, switch = ?switch, "route switched through the admin API");
        find().ok_or_else(|| internal("the switched route is gone".into()))
    }

    fn canary_action(&self, listener: &str, route: &str, action: &str) -> Result<CanaryView, RouteError> {
        self.0.proxy.canary_action(listener, route, action)
    }

    fn events(&self) -> Vec<Event> {
        self.0.proxy.events()
    }

    fn autoscale(&self) -> Vec<fulcrum_proxy::autoscale::AutoscaleView> {
        self.0.proxy.autoscale()
    }

    fn reload(&self) -> Result<Vec<String>, Vec<String>> {
        let Some(path) = &self.0.config_path else {
            return Err(vec!["this instance has no config file to reload".into()]);
        };
        let errors = |e: fulcrum_config::ConfigErrors| {
            e.errors.iter().map(|e| format!("{}:{e}", path.display())).collect::<Vec<_>>()
        };
        let source = Source::read(path).map_err(errors)?;
        let mut state = self.lock();
        let (effective, warnings) = source.config(&state.overlay).map_err(errors)?;
        let changes = self.0.proxy.reload(effective).map_err(|e| vec![format!("{e:#}")])?;
        state.source = source;
        drop(state);
        self.sync_discovery();
        Ok(changes.iter().map(ToString::to_string).chain(warnings).collect())
    }
}
