//! Fulcrum's data path: listeners (HTTP/1.1, HTTP/2, TLS, TCP), routing,
//! forwarding over pooled upstream connections, and the control plane
//! that starts, reloads and drains them.
//!
//! A request's path reads top to bottom through the modules:
//! [`listener`] accepts → [`route`] picks the pool → [`affinity`] finds
//! the request's session → [`pool`] picks the backend with the core's selector → [`http`] (or [`tcp`]) forwards over
//! [`upstream`] connections. Dependencies point the same way: `listener`
//! uses `http` and `state` (what a listener serves); `http` uses `state`,
//! `upstream` and `request_body`; `upstream` uses only `request_body`.

mod access_log;
mod admission;
mod affinity;
mod attempt;
pub mod autoscale;
mod backend;
mod clock;
mod error;
mod events;
mod exporter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod grpc_health;
mod guards;
mod hash_key;
mod health_check;
mod http;
mod http3;
pub mod inherit;
mod listener;
mod metrics;
mod pool;
mod proxy_protocol;
mod relay;
mod release;
mod request_body;
mod rng;
mod route;
mod server;
mod shared_store;
mod state;
mod stats;
mod tcp;
#[cfg(test)]
mod testing;
mod tiers;
mod tls;
mod udp;
mod upstream;
mod upstream_h1;
mod upstream_h2;
mod upstream_overflow;
mod upstream_tls;

pub use events::Event;
pub use release::canary::{CanaryView, Figures, Judged};
pub use release::view::{MirrorView, RouteError, RouteView, WeightView};
pub use server::Proxy;
pub use stats::{
    AdmissionStats, BackendSessions, BackendStats, ListenerStats, PoolSessions, PoolStats, SessionsError,
    Stats,
};
pub use upstream::sweep_when_idle;
