//! DNS service discovery (`[pools.NAME.discovery]`): one follower task per
//! pool resolves its name (A/AAAA with a fixed port, or SRV with the
//! records' targets, ports, weights and priorities, RFC 2782) with
//! `hickory-resolver`, at least every `interval` and when the answer's TTL
//! ends. New addresses join, addresses gone from DNS drain and leave once
//! idle (or after the graceful timeout), and a failed or empty answer keeps
//! the last good set: a DNS hiccup never empties a pool. The backends found
//! are a layer of the runtime overlay between the file and the operator's
//! changes ([`fulcrum_config::Overlay::discovered`]); they are resolved
//! again at start, never persisted.
//!
//! Followers belong to the [`crate::control::Controller`], one per pool and
//! discovery config: a reload that changes or removes a pool's discovery
//! replaces or stops its follower (dropping it aborts the task).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fulcrum_config::{DiscoveredBackend, Discovery, DiscoveryRecords};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::control::Controller;

/// Re-resolving sooner than this is pointless, even for a TTL of 0.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// How long a resolution may take, retries included.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a draining backend is checked for its last request.
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Backend weights are 1..=this (SRV weights are 0..=65535).
const MAX_WEIGHT: u32 = 1_000_000;

/// What one resolution found, and how long the answer is good for.
#[derive(Debug)]
pub struct Resolved {
    /// The backends, in the answer's order, without duplicates.
    pub backends: Vec<DiscoveredBackend>,
    /// Until the shortest TTL of the answer ends.
    pub valid_for: Duration,
}

/// A resolver for `discovery`: its own server when configured, the
/// system's otherwise. No cache: every resolution asks the server.
pub fn resolver(discovery: &Discovery) -> Result<TokioResolver, String> {
    let mut builder = match discovery.resolver {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => {
            TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system's DNS config: {e}"))?
        }
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| format!("cannot build a DNS resolver: {e}"))
}

/// Resolves `discovery` once.
pub async fn resolve(resolver: &TokioResolver, discovery: &Discovery) -> Result<Resolved, String> {
    let name = discovery.name.as_str();
    let answer = async {
        match discovery.records {
            DiscoveryRecords::Address { port } => {
                let lookup = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
                let backends =
                    lookup.iter().map(|ip| found(SocketAddr::new(ip, port), 1, 0)).collect::<Vec<_>>();
                Ok(Resolved { backends, valid_for: remaining(lookup.valid_until()) })
            }
            DiscoveryRecords::Service => service(resolver, name).await,
        }
    };
    let mut resolved = tokio::time::timeout(RESOLVE_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer within {RESOLVE_TIMEOUT:?}"))??;
    let mut seen = std::collections::HashSet::new();
    resolved.backends.retain(|b| seen.insert(b.address));
    Ok(resolved)
}

/// SRV records: each target's addresses (from the answer's additional
/// section, else looked up) on the record's port, with its weight, and its
/// priority ranked among the answer's priorities (lowest first = level 0).
async fn service(resolver: &TokioResolver, name: &str) -> Result<Resolved, String> {
    let lookup = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut valid_for = remaining(lookup.valid_until());
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        .collect();
    let mut priorities: Vec<u16> = records.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut backends = Vec::new();
    for record in &records {
        let level = priorities.binary_search(&record.priority).unwrap_or(0).min(255) as u8;
        let weight = u32::from(record.weight).clamp(1, MAX_WEIGHT);
        let glued: Vec<IpAddr> = lookup
            .additionals()
            .iter()
            .filter(|r| r.name == record.target)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        let addresses = if glued.is_empty() {
            let target = resolver
                .lookup_ip(record.target.clone())
                .await
                .map_err(|e| format!("target {}: {e}", record.target))?;
            valid_for = valid_for.min(remaining(target.valid_until()));
            target.iter().collect()
        } else {
            glued
        };
        backends
            .extend(addresses.into_iter().map(|ip| found(SocketAddr::new(ip, record.port), weight, level)));
    }
    Ok(Resolved { backends, valid_for })
}

fn found(address: SocketAddr, weight: u32, priority: u8) -> DiscoveredBackend {
    DiscoveredBackend { address, weight, priority, draining: false }
}

fn remaining(until: std::time::Instant) -> Duration {
    until.saturating_duration_since(std::time::Instant::now())
}

/// The discovered set after an answer: what DNS returned is active (with
/// the answer's weight and priority), what it no longer returns drains, in
/// the order first seen so backend indices stay stable.
pub fn merge(previous: &[DiscoveredBackend], answer: &[DiscoveredBackend]) -> Vec<DiscoveredBackend> {
    let mut merged: Vec<DiscoveredBackend> = previous
        .iter()
        .map(|old| match answer.iter().find(|b| b.address == old.address) {
            Some(now) => *now,
            None => DiscoveredBackend { draining: true, ..*old },
        })
        .collect();
    merged.extend(answer.iter().filter(|b| !previous.iter().any(|old| old.address == b.address)));
    merged
}

/// Resolves every pool's discovery once before the proxy starts, so an
/// instance (a restart, a binary upgrade) does not serve a discovered pool
/// empty; a pool whose name does not resolve starts with its static
/// backends and its follower keeps trying. Returns the config with what
/// was found.
pub async fn resolve_at_start(
    source: &fulcrum_config::Source,
    config: fulcrum_config::Config,
    mut overlay: fulcrum_config::Overlay,
) -> Result<(fulcrum_config::Config, fulcrum_config::Overlay), String> {
    let mut found_any = false;
    for (pool, pool_config) in &config.pools {
        let Some(discovery) = &pool_config.discovery else { continue };
        let answer = match resolver(discovery) {
            Ok(resolver) => resolve(&resolver, discovery).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(resolved) if !resolved.backends.is_empty() => {
                tracing::info!(%pool, name = %discovery.name, backends = resolved.backends.len(), "DNS discovery found the pool's backends");
                overlay.discovered.insert(pool.clone(), resolved.backends);
                found_any = true;
            }
            Ok(_) => {
                tracing::warn!(%pool, name = %discovery.name, "DNS discovery found no records at start; the pool starts with its static backends")
            }
            Err(e) => {
                tracing::warn!(%pool, name = %discovery.name, error = %e, "DNS discovery failed at start; the pool starts with its static backends")
            }
        }
    }
    if !found_any {
        return Ok((config, overlay));
    }
    let (config, _) = source.config(&overlay).map_err(|e| e.to_string())?;
    Ok((config, overlay))
}

/// A pool's follower task; dropping it stops the task.
pub struct Follower {
    /// The discovery config it follows (a reload with another replaces it).
    pub config: Discovery,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Starts following `pool`'s `config` for `controller`.
    pub fn start(controller: Controller, pool: String, config: Discovery) -> Self {
        let task = tokio::spawn(follow(controller, pool, config.clone()));
        Self { config, task }
    }
}

/// Resolves, applies, waits; drains what left DNS meanwhile.
async fn follow(controller: Controller, pool: String, config: Discovery) {
    let resolver = match resolver(&config) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%pool, error = %e, "DNS discovery cannot start; the pool keeps its backends");
            return;
        }
    };
    let mut failing = false;
    let mut draining: HashMap<SocketAddr, Instant> = HashMap::new();
    loop {
        let next_resolution = match resolve(&resolver, &config).await {
            Ok(resolved) if !resolved.backends.is_empty() => {
                if failing {
                    tracing::info!(%pool, name = %config.name, "DNS discovery answers again");
                    failing = false;
                }
                for address in controller.discovered(&pool, &resolved.backends) {
                    draining.entry(address).or_insert_with(Instant::now);
                }
                draining.retain(|address, _| !resolved.backends.iter().any(|b| b.address == *address));
                resolved.valid_for.clamp(MIN_REFRESH, config.interval.max(MIN_REFRESH))
            }
            outcome => {
                if !failing {
                    let why = match outcome {
                        Ok(_) => "no records".to_string(),
                        Err(e) => e,
                    };
                    tracing::warn!(%pool, name = %config.name, error = %why, "DNS discovery failed; keeping the last good set of backends");
                    failing = true;
                }
                config.interval
            }
        };
        let deadline = Instant::now() + next_resolution;
        loop {
            let gone = controller.drained(&pool, &mut draining);
            if !gone.is_empty() {
                controller.forget_discovered(&pool, &gone);
            }
            if draining.is_empty() {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            let wake = deadline.min(Instant::now() + DRAIN_POLL);
            tokio::time::sleep_until(wake).await;
            if wake == deadline {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, weight: u32) -> DiscoveredBackend {
        found(SocketAddr::from(([127, 0, 0, 1], port)), weight, 0)
    }

    #[test]
    fn an_answer_adds_keeps_reweighs_and_drains() {
        let previous = vec![backend(1, 1), backend(2, 1), backend(3, 1)];
        let answer = vec![backend(3, 5), backend(4, 1), backend(1, 1)];
        let merged = merge(&previous, &answer);
        let view: Vec<(u16, u32, bool)> =
            merged.iter().map(|b| (b.address.port(), b.weight, b.draining)).collect();
        assert_eq!(view, vec![(1, 1, false), (2, 1, true), (3, 5, false), (4, 1, false)]);
    }

    #[test]
    fn a_draining_backend_that_comes_back_is_active_again() {
        let previous = vec![DiscoveredBackend { draining: true, ..backend(2, 1) }];
        let merged = merge(&previous, &[backend(2, 1)]);
        assert!(!merged[0].draining);
    }
}
