//! The end-to-end tests: real `fulcrum` processes, backends, clients and
//! tools on 127.0.0.1, one module per capability. They form one test
//! binary rather than one per file so CI compiles the shared helpers and
//! links against the crate's dependencies once instead of 31 times. Run
//! one capability with `cargo test -p fulcrum --test e2e admission::`.

mod common;

mod access_log;
mod admin_api;
mod admission;
mod affinity;
mod algorithms;
mod autoscale;
mod cli;
mod client_certificates;
mod dashboard;
mod deploy;
mod discovery;
mod grpc;
mod h2_upstream;
mod hostile;
mod http3;
mod http_forwarding;
mod lifecycle;
mod metrics;
mod napping;
mod owned_state;
mod placement;
mod proxy_protocol;
mod release;
mod resilience;
mod tcp;
mod tls;
mod udp;
mod upgrade;
mod upstream_tls;
mod websocket;
mod wire;
