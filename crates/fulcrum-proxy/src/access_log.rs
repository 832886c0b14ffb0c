//! The access log: one line per request, JSON or Apache's combined format,
//! with request id, client, method, target, status, bytes, total and
//! upstream durations, pool, backend, retries and why that backend was
//! chosen. Lines are formatted on the request's task and handed to a
//! writer thread over a bounded queue; when the queue is full the line is
//! dropped and counted, so a slow disk never slows the data path.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use fulcrum_config::{AccessFormat, AccessTarget, Log};
use http::Method;

/// Lines queued for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// A running access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<String>,
    format: AccessFormat,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

/// What is known of a request when its response starts.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived (monotonic nanos).
    pub started: u64,
    /// `X-Request-Id` as forwarded.
    pub request_id: String,
    /// The client.
    pub client: IpAddr,
    /// Method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// Pool.
    pub pool: Arc<str>,
    /// Backend, when one was picked.
    pub backend: Option<SocketAddr>,
    /// Why that backend: the algorithm and, for hashing ones, the key kind.
    pub reason: String,
    /// Retries made.
    pub retries: u32,
    /// Time to the backend's response headers, nanos.
    pub upstream_nanos: Option<u64>,
    /// Status sent to the client.
    pub status: u16,
}

impl AccessLog {
    /// Starts the writer for `config`; `None` when the access log is off.
    pub fn start(config: &Log) -> std::io::Result<Option<Arc<Self>>> {
        let mut out: Box<dyn Write + Send> = match &config.access {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stderr => Box::new(std::io::stderr()),
            AccessTarget::File(path) => {
                Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (lines, queue) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut buffer = Vec::with_capacity(64 * 1024);
            while let Ok(line) = queue.recv() {
                buffer.extend_from_slice(line.as_bytes());
                // Batch whatever else is already queued into one write.
                while let Ok(line) = queue.try_recv() {
                    buffer.extend_from_slice(line.as_bytes());
                    if buffer.len() > 60 * 1024 {
                        break;
                    }
                }
                if let Err(e) = out.write_all(&buffer).and_then(|()| out.flush()) {
                    tracing::error!(error = %e, "cannot write the access log");
                }
                buffer.clear();
            }
        })?;
        Ok(Some(Arc::new(Self { lines, format: config.format, dropped: AtomicU64::new(0) })))
    }

    /// Logs a finished request that sent `bytes` of body, at `now`.
    pub fn write(&self, entry: &Entry, bytes: u64, now: u64) {
        let line = match self.format {
            AccessFormat::Json => json_line(entry, bytes, now),
            AccessFormat::Combined => combined_line(entry, bytes, now),
        };
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn millis(nanos: u64) -> f64 {
    (nanos / 1_000) as f64 / 1_000.0
}

fn json_line(e: &Entry, bytes: u64, now: u64) -> String {
    let mut line = serde_json::json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "request_id": e.request_id,
        "client": e.client.to_string(),
        "method": e.method.as_str(),
        "path": e.target,
        "status": e.status,
        "bytes": bytes,
        "duration_ms": millis(now.saturating_sub(e.started)),
        "upstream_ms": e.upstream_nanos.map(millis),
        "pool": &*e.pool,
        "backend": e.backend.map(|b| b.to_string()),
        "retries": e.retries,
        "reason": e.reason,
        "user_agent": e.user_agent,
    })
    .to_string();
    line.push('\n');
    line
}

fn combined_line(e: &Entry, bytes: u64, now: u64) -> String {
    let time = humantime::format_rfc3339_seconds(SystemTime::now());
    let quoted = |s: &str| s.replace('"', "\\\"");
    format!(
        "{} - - [{time}] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\" rid={} pool={} backend={} upstream_ms={} duration_ms={} retries={} reason=\"{}\"\n",
        e.client,
        e.method,
        quoted(&e.target),
        e.status,
        bytes,
        quoted(e.user_agent.as_deref().unwrap_or("-")),
        e.request_id,
        e.pool,
        e.backend.map_or("-".into(), |b| b.to_string()),
        e.upstream_nanos.map_or("-".into(), |n| millis(n).to_string()),
        millis(now.saturating_sub(e.started)),
        e.retries,
        quoted(&e.reason)
    )
}

/// A fresh request id: 128 random bits as 32 hex digits.
pub fn new_request_id() -> String {
    let (high, low) = crate::rng::with_rng(|rng| (rng.next_u64(), rng.next_u64()));
    format!("{high:016x}{low:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            started: 1_000_000,
            request_id: "abc".into(),
            client: "10.0.0.1".parse().unwrap(),
            method: Method::GET,
            target: "/x?y=1".into(),
            user_agent: Some("curl/8".into()),
            pool: "app".into(),
            backend: Some("127.0.0.1:9001".parse().unwrap()),
            reason: "round_robin".into(),
            retries: 1,
            upstream_nanos: Some(2_500_000),
            status: 200,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let line: serde_json::Value = serde_json::from_str(&json_line(&entry(), 42, 5_000_000)).unwrap();
        assert_eq!(line["request_id"], "abc");
        assert_eq!(line["path"], "/x?y=1");
        assert_eq!(line["bytes"], 42);
        assert_eq!(line["duration_ms"], 4.0);
        assert_eq!(line["upstream_ms"], 2.5);
        assert_eq!(line["backend"], "127.0.0.1:9001");
        assert_eq!(line["retries"], 1);
        assert_eq!(line["reason"], "round_robin");
    }

    #[test]
    fn combined_lines_start_like_apaches() {
        let line = combined_line(&entry(), 42, 5_000_000);
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.contains(
                "] \"GET /x?y=1 HTTP/1.1\" 200 42 \"-\" \"curl/8\" rid=abc pool=app backend=127.0.0.1:9001"
            ),
            "{line}"
        );
        assert!(line.ends_with("retries=1 reason=\"round_robin\"\n"), "{line}");
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
