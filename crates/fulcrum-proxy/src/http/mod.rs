//! The L7 side: serving HTTP/1.1 and HTTP/2 client connections (clear or
//! TLS) and forwarding each request to a backend.

mod body;
mod forward;
mod grpc;
mod head_timer;
mod headers;
mod idle;
mod respond;
mod rewrite;
mod upgrade;
mod validate;

pub use forward::{handle_quic, outcome_of_status, send, Connection};
pub use headers::ClientInfo;
pub use idle::{Activity, Watchlist};

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

/// The connection builder of a listener with `limits`: HTTP/1.1 with
/// keep-alive, and HTTP/2 detected by its preface (h2c prior knowledge,
/// or ALPN `h2` under TLS).
///
/// Per connection and direction at most `max_header_bytes` (at least
/// [`MIN_BUFFER`]) bytes are buffered (hyper's default is ~400 KB;
/// upstream connections `upstream::MAX_BUFFER`): a client that reads
/// slowly stops the backend's body being read (backpressure), it does not
/// grow a buffer. The same bound refuses larger request heads with 431, as
/// do more than `max_headers` fields; an HTTP/2 header list is bounded by
/// `max_header_bytes` too.
pub fn connection_builder(limits: &fulcrum_config::Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false)
        .writev(false)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUFFER))
        .max_headers(limits.max_headers)
        // `head_timer` keeps heads to `header_read_timeout` and answers 408.
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes as u32);
    builder
}

/// Fewest bytes buffered per client connection and direction (HAProxy's
/// `tune.bufsize` is 16 KiB).
pub const MIN_BUFFER: usize = 32 * 1024;

/// Serves one client connection until it closes. When its `activity`
/// asks it to close (the proxy drains, it idled out, or file descriptors
/// ran out) it stops taking new requests and lets the ones in flight
/// finish. `watchlist` checks its idle timeouts while it is open.
pub async fn serve<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    connection: Arc<Connection>,
    watchlist: &Arc<idle::Watchlist>,
    header_read_timeout: std::time::Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&connection.activity);
    let _watching = watchlist.watch(Arc::clone(&activity));
    let io = idle::Watched::new(io, Arc::clone(&activity), header_read_timeout);
    // Boxed: hyper keeps room for one request future per connection, idle
    // or not, and moves an HTTP/2 stream's several times on its way into
    // its task; a request's future is kilobytes, its box one pointer.
    let service = service_fn(move |request| Box::pin(forward::handle(request, Arc::clone(&connection))));
    let serving = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(serving);
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = activity.close_requested().cancelled() => {
            if !activity.closed_for_cause() {
                // Draining: closing a kept-alive connection at once would
                // race the request its client may be sending on it. For a
                // moment requests are still served, each answered with
                // `Connection: close`, so busy clients leave cleanly.
                activity.answer_closing();
                tokio::select! {
                    result = serving.as_mut() => return log_end(result),
                    () = tokio::time::sleep(DRAIN_LINGER) => {}
                }
            }
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    log_end(result);
}

/// How long a draining proxy keeps serving requests on open connections
/// (each answered `Connection: close`) before it closes the idle ones.
const DRAIN_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// What the fuzz targets drive of the request path.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use std::net::IpAddr;

    use http::request::Parts;

    /// A pool hashing each kind of key.
    fn pools() -> &'static [fulcrum_config::Pool] {
        static POOLS: std::sync::OnceLock<Vec<fulcrum_config::Pool>> = std::sync::OnceLock::new();
        POOLS.get_or_init(|| {
            ["client_ip", "header:x-user", "cookie:session", "path", "query:id"]
                .iter()
                .map(|key| {
                    let text = format!(
                        "[pools.app]\nalgorithm = \"consistent_hash\"\nhash_key = \"{key}\"\nsubnet_mask = 24\n"
                    );
                    let config = fulcrum_config::parse(&text, "fuzz", std::path::Path::new(".")).expect("valid");
                    config.pools["app"].clone()
                })
                .collect()
        })
    }

    /// Every decision taken on a parsed head before it is forwarded.
    pub fn decide(mut parts: Parts, client: IpAddr) {
        if super::validate::refuse(&parts).is_some() {
            return;
        }
        let limits = fulcrum_config::Limits::default();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let _ = super::forward::beyond_limits(&parts, &limits, false, declared);
        for pool in pools() {
            let _ = crate::hash_key::request_key(&parts, client, pool);
        }
        let upgrade = super::headers::is_upgrade(&parts);
        let info = super::ClientInfo {
            addr: client,
            ip: http::HeaderValue::from_static("10.0.0.1"),
            proto: http::HeaderValue::from_static("http"),
            endpoints: crate::proxy_protocol::Endpoints {
                client: std::net::SocketAddr::new(client, 1),
                local: std::net::SocketAddr::new(client, 2),
            },
            cert_subject: Some(None),
        };
        let variables = super::rewrite::Variables::of(&parts, client, "http");
        super::headers::prepare_request(&mut parts, &info, upgrade);
        super::rewrite::apply(&mut parts.headers, rules(), &variables);
        let _ = super::rewrite::rewrite_path(&parts.uri, Some("/api"), Some("/v1"));
        let _ = variables.expand(&rules().set[0].1);
    }

    /// Header rules using every template variable.
    fn rules() -> &'static fulcrum_config::HeaderRules {
        static RULES: std::sync::OnceLock<fulcrum_config::HeaderRules> = std::sync::OnceLock::new();
        RULES.get_or_init(|| {
            let template = "${scheme}://${host}${path} ${client_ip} ${request_id}";
            fulcrum_config::HeaderRules {
                set: vec![("x-seen".into(), fulcrum_config::Template::parse(template).expect("valid"))],
                add: vec![("host".into(), fulcrum_config::Template::parse("${host}").expect("valid"))],
                remove: vec!["cookie".into()],
            }
        })
    }
}
