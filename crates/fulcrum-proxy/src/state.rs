//! What one listener serves — protocol, routes, pools, certificates —
//! as of the last (re)load. The accept loop holds it behind an `ArcSwap`
//! and a reload replaces it whole, so new requests see the new config
//! while requests in flight finish on the old.

use std::sync::Arc;

use fulcrum_config::Protocol;
use http::request::Parts;

use crate::pool::Pool;
use crate::route::{request_host, CompiledRoute};

/// What one listener serves, as of the last (re)load.
#[derive(Debug)]
pub struct ListenerState {
    /// The listener's name.
    pub name: String,
    /// What it speaks.
    pub protocol: Protocol,
    /// Routing rules, first match wins.
    pub routes: Vec<CompiledRoute>,
    /// Pool for requests no rule matches.
    pub default_pool: Arc<Pool>,
    /// TLS acceptor, for https.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where requests are logged, when `[log] access` is on.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl ListenerState {
    /// The pool a request goes to.
    pub fn route(&self, request: &Parts) -> Arc<Pool> {
        if self.routes.is_empty() {
            return Arc::clone(&self.default_pool);
        }
        let host = request_host(request);
        let pool =
            self.routes.iter().find(|r| r.matches(request, host)).map_or(&self.default_pool, |r| r.pool());
        Arc::clone(pool)
    }
}
