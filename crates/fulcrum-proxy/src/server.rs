//! The running proxy: binds listeners, builds pools, applies reloads as a
//! diff, and drains on shutdown. This is the control plane; nothing here
//! runs per request.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use fulcrum_config::{diff, Change, Config, Protocol};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::rate_limit::RateLimiter;
use crate::events::Events;
use crate::gate::Gate;
use crate::health_check::Probers;
use crate::listener::{self, Acceptor};
use crate::pool::{Pool, Shared};
use crate::release::canary::LiveCanary;
use crate::release::mirror::MirrorSlots;
use crate::route::{CompiledRoute, Resolver};
use crate::shared_store::SharedStore;
use crate::state::ListenerState;
use crate::stats::{
    AdmissionStats, BackendSessions, BackendStats, ListenerStats, PoolSessions, PoolStats, SessionsError,
    Stats,
};

/// A running load balancer.
#[derive(Debug)]
pub struct Proxy {
    running: Mutex<Running>,
    tracker: TaskTracker,
    drain: CancellationToken,
    /// Every open HTTP connection, swept for idle timeouts.
    watchlist: Arc<crate::http::Watchlist>,
    /// What the balancer decided on its own (canary steps and rollbacks).
    events: Arc<Events>,
}

#[derive(Debug)]
struct Running {
    config: Config,
    access_log: Option<Arc<crate::access_log::AccessLog>>,
    pools: BTreeMap<String, Arc<Pool>>,
    /// Each pool generation's health probes, stopped when it is replaced.
    probers: BTreeMap<String, Probers>,
    /// The `[redis]` store, kept while its settings do not change.
    store: Option<Arc<SharedStore>>,
    /// Rate limits by name, each kept (with its counts) while unchanged.
    limiters: BTreeMap<String, Arc<RateLimiter>>,
    /// Live canaries by listener and route, kept while their config is unchanged.
    canaries: BTreeMap<(String, String), Arc<LiveCanary>>,
    /// Mirror slots and counts by listener and route.
    mirrors: BTreeMap<(String, String), Arc<MirrorSlots>>,
    /// Autoscaling advisors by pool, kept while their settings are unchanged.
    advisors: BTreeMap<String, Arc<crate::autoscale::LiveAdvisor>>,
    listeners: HashMap<SocketAddr, RunningListener>,
}

#[derive(Debug)]
struct RunningListener {
    state: Arc<ArcSwap<ListenerState>>,
    stop: CancellationToken,
    /// Admission at accept and the refusal counters, kept across reloads.
    gate: Arc<Gate>,
    /// Whether it also serves HTTP/3 on its UDP port.
    http3: bool,
    /// Duplicates of its sockets, handed on at a binary upgrade.
    sockets: Vec<(String, std::os::fd::OwnedFd)>,
}

impl Proxy {
    /// Binds every listener of `config` and starts serving. Must be called
    /// inside a tokio runtime.
    pub fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let proxy = Arc::new(Self {
            running: Mutex::new(Running {
                config: empty_config(),
                access_log: None,
                pools: BTreeMap::new(),
                probers: BTreeMap::new(),
                store: None,
                limiters: BTreeMap::new(),
                canaries: BTreeMap::new(),
                mirrors: BTreeMap::new(),
                advisors: BTreeMap::new(),
                listeners: HashMap::new(),
            }),
            tracker: TaskTracker::new(),
            drain: CancellationToken::new(),
            watchlist: crate::http::Watchlist::start(),
            events: Arc::default(),
        });
        proxy.apply(config)?;
        tokio::spawn(tick_pools(Arc::downgrade(&proxy)));
        Ok(proxy)
    }

    /// Applies `config` as a diff against the running one: unchanged
    /// sockets stay open, pools keep their surviving backends' state, and
    /// certificates are re-read. On error nothing changes.
    pub fn reload(&self, config: Config) -> anyhow::Result<Vec<Change>> {
        self.apply(config)
    }

    fn apply(&self, config: Config) -> anyhow::Result<Vec<Change>> {
        let mut running = self.lock();
        let changes = diff(&running.config, &config);
        let store = match (&config.redis, &running.store) {
            (Some(wanted), Some(store)) if store.config == *wanted => Some(Arc::clone(store)),
            (Some(wanted), _) => Some(Arc::new(SharedStore::new(wanted)?)),
            (None, _) => None,
        };
        let shared = Shared {
            geo: config.geo.clone().map(Arc::new),
            store: store.clone(),
            graceful_timeout: config.server.graceful_timeout,
        };
        let same_store = running.config.redis == config.redis;
        let limiters: BTreeMap<String, Arc<RateLimiter>> = config
            .rate_limits
            .iter()
            .map(|(name, limit)| {
                let kept = running.limiters.get(name).filter(|l| l.config == *limit && same_store);
                let limiter =
                    kept.cloned().unwrap_or_else(|| Arc::new(RateLimiter::new(name, limit, store.as_ref())));
                (name.clone(), limiter)
            })
            .collect();
        // What pools with affinity share besides their own config.
        let same_sharing = running.config.redis == config.redis
            && running.config.server.graceful_timeout == config.server.graceful_timeout;
        let access_log = if running.access_log.is_some() && running.config.log == config.log {
            running.access_log.clone()
        } else {
            crate::access_log::AccessLog::start(&config.log).context("cannot open the access log")?
        };

        // Certificates and keys for TLS to backends are read before anything changes.
        let mut tls_clients = BTreeMap::new();
        for (name, pool) in &config.pools {
            if let Some(tls) = &pool.tls {
                let client = crate::upstream_tls::TlsClient::new(name, tls, pool.protocol)
                    .with_context(|| format!("pool `{name}`: tls"))?;
                tls_clients.insert(name.clone(), Arc::new(client));
            }
        }
        let pools: BTreeMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, pool)| {
                let previous = running.pools.get(name).filter(|p| p.config == *pool);
                // A pool whose config (and the [geo] data it may use) is
                // unchanged is kept whole: selector state, ramps and all.
                let reuse = previous
                    .filter(|_| running.config.geo == config.geo)
                    .filter(|p| p.affinity.is_none() || same_sharing)
                    .map(Arc::clone);
                let pool = reuse.unwrap_or_else(|| {
                    let mut built = Pool::build(name, pool, running.pools.get(name).map(|p| &**p), &shared);
                    built.tls = tls_clients.get(name).cloned();
                    Arc::new(built)
                });
                (name.clone(), pool)
            })
            .collect();

        // Build every listener's new state and bind new sockets before
        // touching anything, so a failure leaves the running config intact.
        let mut states = Vec::new();
        let mut bound = Vec::new();
        let canaries = RefCell::new(BTreeMap::new());
        let mirrors = RefCell::new(BTreeMap::new());
        for listener in &config.listeners {
            let tls = match (&listener.tls, listener.protocol) {
                (Some(tls), Protocol::Https) => Some(
                    crate::tls::server_config(tls)
                        .with_context(|| format!("listener `{}`", listener.name))?,
                ),
                _ => None,
            };
            let h3 = match (&tls, listener.http3) {
                (Some(tls), true) => Some(
                    crate::http3::server_config(tls, &listener.limits)
                        .with_context(|| format!("listener `{}`", listener.name))?,
                ),
                _ => None,
            };
            let key = |route: &str| (listener.name.clone(), route.to_string());
            let canary = |route: &str, wanted: &fulcrum_config::Canary| {
                let kept = running.canaries.get(&key(route)).filter(|c| c.config == *wanted).cloned();
                let live = kept.unwrap_or_else(|| {
                    LiveCanary::start(&listener.name, route, wanted, Arc::clone(&self.events))
                });
                canaries.borrow_mut().insert(key(route), Arc::clone(&live));
                live
            };
            let mirror_slots = |route: &str, max_in_flight: usize| {
                let kept =
                    running.mirrors.get(&key(route)).filter(|m| m.max_in_flight == max_in_flight).cloned();
                let slots = kept.unwrap_or_else(|| MirrorSlots::new(&listener.name, route, max_in_flight));
                mirrors.borrow_mut().insert(key(route), Arc::clone(&slots));
                slots
            };
            let resolver = Resolver {
                pool: &|name| Arc::clone(&pools[name]),
                rate_limit: &|name| Arc::clone(&limiters[name]),
                canary: &canary,
                mirror_slots: &mirror_slots,
            };
            let routes =
                listener.routes.iter().map(|r| Arc::new(CompiledRoute::compile(r, &resolver))).collect();
            let state = ListenerState {
                name: listener.name.clone(),
                protocol: listener.protocol,
                routes,
                default_pool: Arc::clone(&pools[&listener.pool]),
                tls,
                access_log: access_log.clone(),
                rate_limit: listener.rate_limit.as_ref().map(|name| Arc::clone(&limiters[name])),
                access: listener.access.clone(),
                geo: shared.geo.clone(),
                max_connections: listener.max_connections,
                max_connections_per_ip: listener.max_connections_per_ip,
                limits: listener.limits,
                proxy_protocol: listener.proxy_protocol.clone(),
                udp: listener.udp,
                client_certificates: listener.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
                hsts: listener.hsts.as_deref().and_then(|h| http::HeaderValue::from_str(h).ok()),
                h3,
                alt_svc: listener.http3.then(|| crate::http3::alt_svc(listener.listen.port())),
                builders: Arc::new(crate::http::Builders::new(&listener.limits)),
            };
            let datagram = |state: &ListenerState| state.protocol == Protocol::Udp;
            if let Some(existing) = running.listeners.get(&listener.listen) {
                anyhow::ensure!(
                    datagram(&existing.state.load()) == datagram(&state),
                    "listener `{}` on {}: switching between udp and a stream protocol needs a restart",
                    listener.name,
                    listener.listen
                );
                anyhow::ensure!(
                    existing.http3 == state.h3.is_some(),
                    "listener `{}` on {}: switching http3 on or off needs a restart",
                    listener.name,
                    listener.listen
                );
            } else {
                let socket = listener::bind(listener.listen, listener.protocol).with_context(|| {
                    format!("listener `{}` cannot listen on {}", listener.name, listener.listen)
                })?;
                let quic = match state.h3 {
                    Some(_) => Some(listener::bind_quic(listener.listen).with_context(|| {
                        format!("listener `{}` cannot serve HTTP/3 on udp {}", listener.name, listener.listen)
                    })?),
                    None => None,
                };
                bound.push((listener.listen, (socket, quic)));
            }
            states.push((listener.listen, state));
        }

        let mut kept = HashMap::new();
        for (address, state) in states {
            match running.listeners.remove(&address) {
                Some(existing) => {
                    existing.state.store(Arc::new(state));
                    kept.insert(address, existing);
                }
                None => {
                    let sockets =
                        bound.iter().position(|(a, _)| *a == address).map(|i| bound.swap_remove(i).1);
                    let (socket, quic) = sockets.expect("a new listener's socket was bound above");
                    kept.insert(address, self.spawn_listener(address, socket, quic, state));
                }
            }
        }
        for (address, removed) in running.listeners.drain() {
            tracing::info!(%address, "listener stops accepting");
            removed.stop.cancel();
        }
        running.listeners = kept;
        running.access_log = access_log;
        // A kept pool keeps its probers; a rebuilt one gets new ones, and
        // the replaced generation's probers stop as their map is dropped.
        let mut old_probers = std::mem::take(&mut running.probers);
        for (name, pool) in &pools {
            let same_generation = running.pools.get(name).is_some_and(|old| Arc::ptr_eq(old, pool));
            let old = old_probers.remove(name);
            let probers = if same_generation {
                old
            } else {
                drop(old);
                Probers::start(pool)
            };
            running.probers.extend(probers.map(|p| (name.clone(), p)));
        }
        drop(old_probers);
        let mut old_advisors = std::mem::take(&mut running.advisors);
        for (name, pool) in &pools {
            let Some(config) = &pool.config.autoscale else { continue };
            let advisor = old_advisors.remove(name).filter(|a| a.config == *config).unwrap_or_else(|| {
                Arc::new(crate::autoscale::LiveAdvisor::new(name, config.clone(), crate::clock::now_nanos()))
            });
            running.advisors.insert(name.clone(), advisor);
        }
        running.pools = pools;
        running.store = store;
        running.limiters = limiters;
        running.canaries = canaries.into_inner();
        running.mirrors = mirrors.into_inner();
        running.config = config;
        Ok(changes)
    }

    fn spawn_listener(
        &self,
        address: SocketAddr,
        socket: listener::Socket,
        quic: Option<std::net::UdpSocket>,
        state: ListenerState,
    ) -> RunningListener {
        tracing::info!(listener = %state.name, %address, protocol = ?state.protocol, http3 = quic.is_some(), "listening");
        let h3 = state.h3.clone();
        let mut sockets = Vec::new();
        let handoffs =
            [Some(socket.handoff(address)), quic.as_ref().map(|q| crate::inherit::handoff(true, address, q))];
        for handoff in handoffs.into_iter().flatten() {
            match handoff {
                Ok(duplicate) => sockets.push(duplicate),
                Err(e) => {
                    tracing::warn!(%address, error = %e, "cannot keep this socket for a binary upgrade")
                }
            }
        }
        let running = RunningListener {
            sockets,
            http3: quic.is_some(),
            state: Arc::new(ArcSwap::from_pointee(state)),
            stop: CancellationToken::new(),
            gate: Arc::default(),
        };
        let acceptor = Acceptor {
            state: Arc::clone(&running.state),
            stop: running.stop.clone(),
            drain: self.drain.clone(),
            tracker: self.tracker.clone(),
            gate: Arc::clone(&running.gate),
            watchlist: Arc::clone(&self.watchlist),
        };
        if let (Some(quic), Some(h3)) = (quic, h3) {
            drop(tokio::spawn(crate::http3::serve(quic, h3, acceptor.clone())));
        }
        match socket {
            listener::Socket::Stream(socket) => drop(tokio::spawn(listener::accept_loop(socket, acceptor))),
            listener::Socket::Datagram(socket) => drop(tokio::spawn(crate::udp::serve(
                socket,
                Arc::clone(&running.state),
                running.stop.clone(),
            ))),
        }
        running
    }

    /// Stops accepting, asks open connections to finish their in-flight
    /// requests, and waits for them up to `timeout`. Returns whether every
    /// connection finished in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        for listener in self.lock().listeners.values() {
            listener.stop.cancel();
        }
        self.drain.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait()).await.is_ok()
    }

    /// Every pool's metrics: the OpenMetrics text format, or with
    /// `openmetrics = false` the classic Prometheus text format 0.0.4 (what
    /// `promtool` and older scrapers parse: counters' HELP/TYPE name the
    /// `_total` series, no `# EOF`).
    pub fn encode_metrics(&self, openmetrics: bool) -> String {
        let (pools, store_errors, limiters, gates, canaries, mirrors, desired) = {
            let running = self.lock();
            let gates = running
                .config
                .listeners
                .iter()
                .filter_map(|l| Some((l.name.clone(), Arc::clone(&running.listeners.get(&l.listen)?.gate))))
                .collect();
            (
                running.pools.values().cloned().collect(),
                running.store.as_ref().map(|s| s.errors()),
                running.limiters.values().cloned().collect(),
                gates,
                running.canaries.values().cloned().collect(),
                running.mirrors.values().cloned().collect(),
                running
                    .advisors
                    .iter()
                    .filter_map(|(name, a)| Some((name.clone(), a.view(running.pools.get(name)?).desired)))
                    .collect(),
            )
        };
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(crate::exporter::PoolsCollector {
            pools,
            store_errors,
            limiters,
            gates,
            canaries,
            mirrors,
            desired,
            client_connections: self.watchlist.census(),
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        if openmetrics {
            text
        } else {
            crate::exporter::to_prometheus_text(&text)
        }
    }

    /// Duplicates of every listening socket, named, to hand on to a new
    /// process at a binary upgrade ([`crate::inherit`]).
    pub fn handoff(&self) -> std::io::Result<Vec<(String, std::os::fd::OwnedFd)>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let sockets = running.listeners.values().flat_map(|l| &l.sockets);
        sockets.map(|(name, fd)| Ok((name.clone(), fd.try_clone()?))).collect()
    }

    /// The running config.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// A snapshot of every pool and backend.
    pub fn stats(&self) -> Stats {
        let now = crate::clock::now_nanos();
        let running = self.lock();
        let protocol = |p: Protocol| match p {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        Stats {
            listeners: running
                .config
                .listeners
                .iter()
                .map(|l| ListenerStats {
                    name: l.name.clone(),
                    listen: l.listen.to_string(),
                    protocol: protocol(l.protocol),
                    pool: l.pool.clone(),
                    routes: l.routes.len(),
                })
                .collect(),
            pools: running
                .pools
                .values()
                .map(|pool| PoolStats {
                    name: pool.name.to_string(),
                    algorithm: pool.config.algorithm.name(),
                    backends: pool
                        .backends
                        .iter()
                        .map(|b| BackendStats {
                            id: b.address.to_string(),
                            address: b.address.to_string(),
                            weight: b.weight,
                            effective_weight: f64::from(b.weight) * pool.weight_factor(b, now),
                            zone: b.zone.clone(),
                            state: b.state.name(),
                            origin: b.origin.name(),
                            active_requests: b.load.in_flight(),
                            requests_total: b.load.requests_total(),
                            errors_total: b.load.errors_total(),
                            health: b.guards.health().name(),
                            circuit: b.guards.breaker_state().name(),
                            ejected: b.guards.is_ejected(now),
                            latency_ewma_ms: b.load.latency_ewma_nanos() / 1e6,
                            p50_ms: b.metrics.quantile_ms(0.5),
                            p99_ms: b.metrics.quantile_ms(0.99),
                            error_rate: b.metrics.error_rate(now),
                            circuit_opens_10m: b.guards.breaker_opens_since(now, 600_000_000_000),
                        })
                        .collect(),
                    admission: pool.admission.as_ref().map(|a| {
                        let names = || a.classes.iter().map(|c| c.name.clone());
                        AdmissionStats {
                            limit: a.limit(),
                            in_flight: a.in_flight(),
                            queued: names().zip(a.queue_depths()).collect(),
                            shed: names()
                                .zip(a.classes.iter().map(|c| {
                                    c.shed(crate::admission::Shed::Deadline)
                                        + c.shed(crate::admission::Shed::QueueFull)
                                }))
                                .collect(),
                        }
                    }),
                    autoscale: running.advisors.get(&*pool.name).map(|a| a.view(pool)),
                })
                .collect(),
        }
    }

    /// Every pool's autoscaling advice, by pool name.
    pub fn autoscale(&self) -> Vec<crate::autoscale::AutoscaleView> {
        let running = self.lock();
        running
            .advisors
            .iter()
            .filter_map(|(name, advisor)| Some(advisor.view(running.pools.get(name)?)))
            .collect()
    }

    /// What every listener serves now, in config order.
    pub(crate) fn listener_states(&self) -> Vec<Arc<ListenerState>> {
        let running = self.lock();
        running
            .config
            .listeners
            .iter()
            .filter_map(|l| Some(running.listeners.get(&l.listen)?.state.load_full()))
            .collect()
    }

    /// What the balancer decided on its own, oldest first.
    pub fn events(&self) -> Vec<crate::events::Event> {
        self.events.all()
    }

    /// The pool `name` when it has affinity.
    fn sticky_pool(&self, name: &str) -> Result<Arc<Pool>, SessionsError> {
        let pool = self.lock().pools.get(name).cloned().ok_or_else(|| SessionsError::NoPool(name.into()))?;
        match pool.affinity {
            Some(_) => Ok(pool),
            None => Err(SessionsError::NoAffinity(name.into())),
        }
    }

    /// The sessions of pool `name` per backend.
    pub fn sessions(&self, name: &str) -> Result<PoolSessions, SessionsError> {
        let pool = self.sticky_pool(name)?;
        let affinity = pool.affinity.as_ref().expect("a sticky pool has affinity");
        let counts = affinity.counts();
        let backends: Vec<BackendSessions> = pool
            .backends
            .iter()
            .map(|b| BackendSessions {
                backend: b.address.to_string(),
                sessions: counts.get(&b.address_key).copied().unwrap_or(0),
            })
            .collect();
        let placements = affinity.sessions().placements();
        Ok(PoolSessions {
            pool: name.to_string(),
            kind: affinity.config.kind.name(),
            store: match affinity.config.store {
                fulcrum_config::SessionStore::Local => "local",
                fulcrum_config::SessionStore::Redis => "redis",
            },
            sessions: backends.iter().map(|b| b.sessions).sum(),
            backends,
            placements: crate::affinity::Placement::ALL.iter().map(|p| p.name()).zip(placements).collect(),
        })
    }

    /// Forgets `fraction` of pool `name`'s sessions, from its busiest
    /// backends first; returns how many.
    pub async fn rebalance_sessions(&self, name: &str, fraction: f64) -> Result<usize, SessionsError> {
        let pool = self.sticky_pool(name)?;
        let affinity = pool.affinity.as_ref().expect("a sticky pool has affinity");
        affinity.rebalance(fraction).await.map_err(|_| SessionsError::StoreUnavailable)
    }

    /// Forgets every session of pool `name`; returns how many there were.
    pub async fn flush_sessions(&self, name: &str) -> Result<usize, SessionsError> {
        let pool = self.sticky_pool(name)?;
        let affinity = pool.affinity.as_ref().expect("a sticky pool has affinity");
        affinity.flush().await.map_err(|_| SessionsError::StoreUnavailable)
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ticks every pool's algorithm once per second while the proxy lives.
async fn tick_pools(proxy: std::sync::Weak<Proxy>) {
    let mut interval = tokio::time::interval(TICK_INTERVAL);
    loop {
        interval.tick().await;
        let Some(proxy) = proxy.upgrade() else { break };
        let (pools, limiters, advisors) = {
            let running = proxy.lock();
            let advisors: Vec<(Arc<crate::autoscale::LiveAdvisor>, Arc<Pool>)> = running
                .advisors
                .iter()
                .filter_map(|(name, a)| Some((Arc::clone(a), Arc::clone(running.pools.get(name)?))))
                .collect();
            let pools: Vec<Arc<Pool>> = running.pools.values().cloned().collect();
            let limiters: Vec<Arc<RateLimiter>> = running.limiters.values().cloned().collect();
            (pools, limiters, advisors)
        };
        for pool in pools {
            pool.tick();
        }
        let now = crate::clock::now_nanos();
        for (advisor, pool) in advisors {
            advisor.tick(&pool, now);
        }
        for limiter in limiters {
            limiter.upkeep();
        }
    }
}

/// How often algorithms get their periodic upkeep (`adaptive` re-weighs).
const TICK_INTERVAL: Duration = Duration::from_secs(1);

fn empty_config() -> Config {
    Config {
        server: fulcrum_config::Server {
            worker_threads: 0,
            graceful_timeout: fulcrum_config::DEFAULT_GRACEFUL_TIMEOUT,
        },
        admin: None,
        listeners: Vec::new(),
        pools: BTreeMap::new(),
        geo: None,
        log: Default::default(),
        redis: None,
        rate_limits: BTreeMap::new(),
    }
}
