//! HTTP/2 to backends (`protocol = "h2c"`, or `"h2"` over TLS with ALPN):
//! requests are multiplexed on one shared connection per backend and
//! worker thread (a few when requests race to open the first), as Envoy's
//! and pingora's HTTP/2 upstream pools do. The backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is respected — a request past it
//! waits for a stream — and a closed connection is replaced on the next
//! request. Trailers (gRPC's `grpc-status`) pass through as body frames.
//!
//! A thread's shared connections are swept like its HTTP/1.1 idle pool
//! ([`crate::upstream`]): whenever it opens a connection, and every
//! [`SWEEP_EVERY`] requests, it forgets those that closed or carried no
//! new request for the pool's idle timeout — a removed backend's among
//! them. Forgetting drops the last sender, and hyper then closes the
//! connection with GOAWAY once its streams in flight have ended.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::error::UpstreamError;
use crate::request_body::RequestBody;
use crate::upstream::{open, speaks_h2, Stream, Target};
use crate::upstream_tls::Offer;

/// How many requests between two sweeps of a thread's shared connections.
const SWEEP_EVERY: u32 = 1024;

/// A backend's shared connection on this thread, opened once by the first
/// request that needs it while the others racing it wait.
type Shared = Arc<tokio::sync::OnceCell<SendRequest<RequestBody>>>;

struct Entry {
    shared: Shared,
    last_used: Instant,
    idle_timeout: Duration,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        // A slot still opening is kept by the request opening it, so
        // forgetting it costs at most one more connection.
        self.shared.get().is_some_and(SendRequest::is_closed)
            || now.duration_since(self.last_used) >= self.idle_timeout
    }
}

#[derive(Default)]
struct Connections {
    by_backend: HashMap<u64, Entry>,
    sends: u32,
}

impl Connections {
    /// The backend's shared slot, fresh when its connection closed or expired.
    fn slot(&mut self, target: &Target) -> Shared {
        let now = Instant::now();
        self.sends = self.sends.wrapping_add(1);
        let usable = self.by_backend.get(&target.backend_key).is_some_and(|e| !e.expired(now));
        if !usable || self.sends.is_multiple_of(SWEEP_EVERY) {
            self.by_backend.retain(|_, entry| !entry.expired(now));
        }
        let entry = self.by_backend.entry(target.backend_key).or_insert_with(|| Entry {
            shared: Shared::default(),
            last_used: now,
            idle_timeout: target.idle_timeout,
        });
        entry.last_used = now;
        Arc::clone(&entry.shared)
    }

    /// Forgets `shared` if it is still the backend's slot: its connection
    /// refused a request, so the next one opens another.
    fn forget(&mut self, target: &Target, shared: &Shared) {
        if self.by_backend.get(&target.backend_key).is_some_and(|e| Arc::ptr_eq(&e.shared, shared)) {
            self.by_backend.remove(&target.backend_key);
        }
    }
}

thread_local! {
    static SHARED: RefCell<Connections> = RefCell::default();
}

/// How many times a request is sent again, each time on a new connection,
/// after its connection ended before sending it or the backend refused it
/// unprocessed.
const RESENDS: u32 = 2;

/// Sends `request` on the backend's shared connection (opening it, or
/// starting it on `opened`, when there is none or it closed) and waits
/// up to `limit` for the response head, sends again included: one
/// deadline covers the first send and its at most [`RESENDS`] more.
///
/// A backend that rotates its connections (nginx after
/// `keepalive_requests`, gRPC servers at their maximum connection age)
/// ends each one with a GOAWAY, which requests may race. A request the
/// connection ended before sending is sent again on a new connection,
/// whatever its body. One the backend refused unprocessed (above the
/// GOAWAY's last stream, or REFUSED_STREAM), or one still waiting for a
/// free stream when the GOAWAY came, is sent again when its body can be
/// replayed (none, or kept for retries); a streaming body is gone, and
/// such a request is answered 502.
pub async fn send(
    target: &Target,
    request: http::Request<RequestBody>,
    limit: Duration,
    mut opened: Option<Stream>,
) -> Result<http::Response<Incoming>, UpstreamError> {
    let (head, body) = request.into_parts();
    let copy = body.replay_copy().map(|body| (crate::http::clone_parts(&head), body));
    let mut request = http::Request::from_parts(head, body);
    let deadline = Instant::now() + limit;
    let mut resends = 0;
    loop {
        let shared = SHARED.with(|s| s.borrow_mut().slot(target));
        let (error, unsent) = match send_on(&shared, target, request, deadline, opened.take()).await {
            Ok(response) => return Ok(response),
            Err(failed) => failed,
        };
        let again = match (unsent, &copy) {
            (Some(unsent), _) => unsent,
            (None, Some((head, body))) if error.refused_unprocessed() || never_opened(&error) => {
                http::Request::from_parts(
                    crate::http::clone_parts(head),
                    body.replay_copy().expect("a replay copies"),
                )
            }
            (None, _) => return Err(error),
        };
        if resends == RESENDS {
            return Err(error);
        }
        tracing::debug!(backend = %target.address, %error, "sending the request again on a new connection");
        SHARED.with(|s| s.borrow_mut().forget(target, &shared));
        request = again;
        resends += 1;
    }
}

/// Whether hyper dropped the request before opening its stream. A request
/// waiting for a free stream (under the backend's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`) when the connection shuts down (a
/// GOAWAY) is dropped with hyper's "dispatch task is gone" error and not
/// handed back (hyper 1's `proto::h2::client`, its pending `fut_ctx`);
/// hyper has no predicate for that error, so its description is matched,
/// and a test holds it to hyper's wording.
#[cold]
fn never_opened(error: &UpstreamError) -> bool {
    matches!(error, UpstreamError::Send(e) if e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_user() && e.to_string() == "dispatch task is gone"))
}

/// One send on `shared`'s connection; a failure comes with the request
/// when hyper did not start sending it.
async fn send_on(
    shared: &Shared,
    target: &Target,
    request: http::Request<RequestBody>,
    deadline: Instant,
    opened: Option<Stream>,
) -> Result<http::Response<Incoming>, (UpstreamError, Option<http::Request<RequestBody>>)> {
    let connected = shared.get_or_try_init(|| connect(target, opened)).await;
    let mut sender = connected.map_err(|error| (error, None))?.clone();
    let sent = async {
        if let Err(error) = sender.ready().await {
            return Err((UpstreamError::Send(Box::new(error)), Some(request)));
        }
        sender.try_send_request(request).await.map_err(|mut failed| {
            let unsent = failed.take_message();
            (UpstreamError::from_send(failed.into_error()), unsent)
        })
    };
    tokio::time::timeout_at(deadline, sent).await.map_err(|_| (UpstreamError::ResponseTimeout, None))?
}

async fn connect(target: &Target, opened: Option<Stream>) -> Result<SendRequest<RequestBody>, UpstreamError> {
    let address = target.address;
    let stream = match opened {
        Some(stream) => stream,
        None => open(target, Offer::Pool).await?,
    };
    if target.tls.is_some() && !speaks_h2(&stream) {
        // An `auto` backend that no longer picks h2.
        return Err(UpstreamError::Tls(std::io::Error::other("the backend did not pick h2 in ALPN")));
    }
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(backend = %address, error = %e, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A request as an HTTP/2 backend takes it: version 2 and an absolute URI
/// (its authority from `Host`, else the backend's address), built from
/// parts: the path is shared with the request's, not formatted and parsed.
pub fn to_h2(parts: &mut http::request::Parts, backend: std::net::SocketAddr, tls: bool) {
    use http::uri::{Authority, PathAndQuery, Scheme};
    parts.version = http::Version::HTTP_2;
    let authority = match parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => Authority::try_from(host),
        None => Authority::try_from(backend.to_string()),
    };
    let Ok(authority) = authority else { return };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(authority);
    uri.path_and_query =
        Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    if let Ok(absolute) = http::Uri::from_parts(uri) {
        parts.uri = absolute;
        // `:authority` carries it now.
        parts.headers.remove(http::header::HOST);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::mpsc;

    use super::*;

    fn h2_parts(target: &str, host: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::get(target);
        if let Some(host) = host {
            request = request.header(http::header::HOST, host);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        to_h2(&mut parts, "127.0.0.1:9001".parse().unwrap(), false);
        parts
    }

    #[test]
    fn a_request_for_an_h2_backend_carries_its_host_as_authority() {
        let parts = h2_parts("/a/b?c=d", Some("api.example:8443"));
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_eq!(parts.uri, "http://api.example:8443/a/b?c=d");
        assert!(parts.headers.get(http::header::HOST).is_none(), "`:authority` replaces Host");
        let mut parts = http::Request::get("/x").body(()).unwrap().into_parts().0;
        to_h2(&mut parts, "127.0.0.1:9001".parse().unwrap(), true);
        assert_eq!(parts.uri, "https://127.0.0.1:9001/x", "no Host: the backend's address");
        let absolute = h2_parts("http://other.example/p?q", Some("other.example"));
        assert_eq!(absolute.uri, "http://other.example/p?q");
    }

    /// An h2c backend on 127.0.0.1; the receiver hears of each connection
    /// it accepts (`true`) and each that ends (`false`).
    async fn h2c_backend() -> (SocketAddr, mpsc::UnboundedReceiver<bool>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (events, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let events = events.clone();
                let _ = events.send(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_: http::Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    let _ = events.send(false);
                });
            }
        });
        (address, heard)
    }

    fn target(address: SocketAddr, backend_key: u64) -> Target {
        Target {
            backend_key,
            address,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_idle: 0,
            proxy_header: None,
            tls: None,
        }
    }

    /// A bodiless HTTP/2 `GET /` for the backend at `address`.
    fn h2_get(address: SocketAddr) -> http::Request<RequestBody> {
        let mut request = http::Request::new(RequestBody::Replay(None));
        *request.uri_mut() = format!("http://{address}/").parse().unwrap();
        *request.version_mut() = http::Version::HTTP_2;
        request
    }

    async fn get(target: &Target) {
        let response = send(target, h2_get(target.address), Duration::from_secs(5), None).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    /// One HTTP/2 frame: its 9-byte header, then `payload`.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// The next frame's type, flags and stream; `None` at the end.
    async fn read_frame(stream: &mut tokio::net::TcpStream) -> Option<(u8, u8, u32)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0; 9];
        stream.read_exact(&mut head).await.ok()?;
        let mut payload = vec![0; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
        stream.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff))
    }

    /// How a hand-framed backend treats its first connection's requests.
    #[derive(Clone, Copy)]
    enum FirstConnection {
        /// Once this many requests have arrived, GOAWAY keeping only the
        /// first, answer that one and leave the connection open until the
        /// client closes it (nginx at `keepalive_requests`).
        RotateAfter(usize),
        /// Reset the first request's stream with REFUSED_STREAM and answer
        /// every later one (a backend at its concurrency limit).
        RefuseFirst,
        /// Reset the first request's stream with REFUSED_STREAM after
        /// this long; later connections answer nothing.
        RefuseLateThenStall(Duration),
        /// Allow one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1),
        /// answer the first request, and at the second GOAWAY keeping it,
        /// then answer it: a request the client held back for a free
        /// stream is never opened.
        OneStreamThenRotate,
    }

    /// An h2c backend (frames written by hand) whose first connection
    /// follows `script`; later connections answer every request. Counts its
    /// connections.
    async fn scripted_backend(script: FirstConnection) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const OK: u8 = 0x88; // HPACK: `:status: 200` from the static table
        const END_STREAM_AND_HEADERS: u8 = 0x5;
        const REFUSED_STREAM: u32 = 0x7;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                tokio::spawn(async move {
                    let mut preface = [0; 24];
                    stream.read_exact(&mut preface).await.unwrap();
                    let settings: &[u8] = match (first, script) {
                        (true, FirstConnection::OneStreamThenRotate) => &[0, 3, 0, 0, 0, 1],
                        _ => &[],
                    };
                    stream.write_all(&frame(4, 0, 0, settings)).await.unwrap();
                    let mut requests = Vec::new();
                    while let Some((kind, flags, id)) = read_frame(&mut stream).await {
                        let reply = match (kind, first, script) {
                            (4, ..) if flags & 1 == 0 => frame(4, 1, 0, &[]),
                            (1, false, FirstConnection::RefuseLateThenStall(_)) => continue,
                            (1, false, _) => frame(1, END_STREAM_AND_HEADERS, id, &[OK]),
                            (1, true, FirstConnection::OneStreamThenRotate) => {
                                requests.push(id);
                                if requests.len() == 2 {
                                    let mut go_away = id.to_be_bytes().to_vec();
                                    go_away.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                                    stream.write_all(&frame(7, 0, 0, &go_away)).await.unwrap();
                                }
                                frame(1, END_STREAM_AND_HEADERS, id, &[OK])
                            }
                            (1, true, FirstConnection::RefuseLateThenStall(after)) => {
                                tokio::time::sleep(after).await;
                                frame(3, 0, id, &REFUSED_STREAM.to_be_bytes())
                            }
                            (1, true, FirstConnection::RefuseFirst) => {
                                requests.push(id);
                                if requests.len() == 1 {
                                    frame(3, 0, id, &REFUSED_STREAM.to_be_bytes())
                                } else {
                                    frame(1, END_STREAM_AND_HEADERS, id, &[OK])
                                }
                            }
                            (1, true, FirstConnection::RotateAfter(racing)) if requests.len() < racing => {
                                requests.push(id);
                                if requests.len() < racing {
                                    continue;
                                }
                                let kept = requests[0];
                                let mut go_away = kept.to_be_bytes().to_vec();
                                go_away.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
                                stream.write_all(&frame(7, 0, 0, &go_away)).await.unwrap();
                                frame(1, END_STREAM_AND_HEADERS, kept, &[OK])
                            }
                            _ => continue,
                        };
                        stream.write_all(&reply).await.unwrap();
                    }
                });
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn requests_a_rotating_backend_refused_unprocessed_are_sent_again_on_a_new_connection() {
        const RACING: usize = 8;
        let (address, connections) = scripted_backend(FirstConnection::RotateAfter(RACING)).await;
        let to = target(address, 3);
        let requests = (0..RACING).map(|_| send(&to, h2_get(address), Duration::from_secs(5), None));
        let answers = futures_util::future::join_all(requests).await;
        let statuses: Vec<_> = answers.iter().map(|a| a.as_ref().map(|r| r.status().as_u16())).collect();
        assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "{statuses:?}");
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one rotation, one new connection"
        );
    }

    #[tokio::test]
    async fn a_request_refused_with_refused_stream_is_sent_again_on_a_new_connection() {
        let (address, connections) = scripted_backend(FirstConnection::RefuseFirst).await;
        let to = target(address, 4);
        let response = send(&to, h2_get(address), Duration::from_secs(5), None).await;
        assert_eq!(response.map(|r| r.status().as_u16()).ok(), Some(200));
        // The refusing connection stays open, so only forgetting its slot
        // sends the request elsewhere.
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "sent again on a new connection"
        );
    }

    #[tokio::test]
    async fn a_request_held_back_for_a_stream_when_the_backend_rotates_is_sent_on_a_new_connection() {
        let (address, connections) = scripted_backend(FirstConnection::OneStreamThenRotate).await;
        let to = target(address, 6);
        let request = || send(&to, h2_get(address), Duration::from_secs(5), None);
        // The first answer brings the backend's one-stream limit with it.
        assert_eq!(request().await.map(|r| r.status().as_u16()).ok(), Some(200));
        let (kept, held_back) = tokio::join!(request(), request());
        let statuses = [kept, held_back].map(|answer| answer.map(|r| r.status().as_u16()));
        assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "{statuses:?}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "one rotation");
    }

    #[tokio::test(start_paused = true)]
    async fn one_deadline_covers_a_request_and_its_sends_again() {
        let (address, connections) =
            scripted_backend(FirstConnection::RefuseLateThenStall(Duration::from_secs(4))).await;
        let to = target(address, 5);
        let started = Instant::now();
        let response = send(&to, h2_get(address), Duration::from_secs(5), None).await;
        assert!(matches!(response, Err(UpstreamError::ResponseTimeout)), "{response:?}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "refused, then sent again");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the send again waited past the request's limit"
        );
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_closed_by_the_next_sweep() {
        let (a, mut a_heard) = h2c_backend().await;
        let (b, _) = h2c_backend().await;
        let (to_a, to_b) = (target(a, 1), target(b, 2));
        get(&to_a).await;
        get(&to_a).await;
        assert_eq!(a_heard.recv().await, Some(true));
        assert!(a_heard.try_recv().is_err(), "two requests opened two connections");

        // Under the idle timeout a's connection stays, whatever b does.
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(9)).await;
        tokio::time::resume();
        get(&to_b).await;
        get(&to_a).await;
        assert!(a_heard.try_recv().is_err(), "a's connection was replaced while in use");

        // Idle past it (as a removed backend's is), it is forgotten when
        // b's next connection sweeps, and hyper closes it.
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(11)).await;
        tokio::time::resume();
        get(&to_b).await;
        let closed = tokio::time::timeout(Duration::from_secs(5), a_heard.recv()).await;
        assert_eq!(closed, Ok(Some(false)), "a's idle connection was not closed");
    }
}
