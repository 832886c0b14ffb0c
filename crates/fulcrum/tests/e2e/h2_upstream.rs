//! HTTP/2 to backends end to end: an h2c pool multiplexes 64 concurrent
//! client streams on a few upstream connections (counted at the backend),
//! the backend sees HTTP/2 with `te: trailers`, and trailers such as
//! gRPC's `grpc-status` come back to an HTTP/2 client.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An h2c-only backend counting its connections; each answer (after
/// 50 ms, so streams overlap) names the HTTP version and `te` it saw and
/// ends with `grpc-status: 5` trailers.
async fn h2c_backend(connections: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let te = request.headers().get("te").map_or("none", |v| v.to_str().unwrap()).to_string();
                let said = format!("{:?} te={te}", request.version());
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("5"));
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    vec![Ok(Frame::data(Bytes::from(said))), Ok(Frame::trailers(trailers))];
                let body = StreamBody::new(futures_util::stream::iter(frames));
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_streams_share_a_few_upstream_connections_and_trailers_come_back() {
    let connections = Arc::new(AtomicUsize::new(0));
    let backend = h2c_backend(Arc::clone(&connections)).await;
    let listen = local(free_port());
    // One worker thread: connections are shared per backend and thread,
    // and the HTTP/1.1 request below must find this thread's connection.
    let config = format!(
        "[server]\nworker_threads = 1\n\n[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"grpc\"\n\n\
         [pools.grpc]\nprotocol = \"h2c\"\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    let _lb = Fulcrum::start(&config, listen);

    // One HTTP/2 client connection (prior knowledge) carrying 64 streams at once.
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = Request::post(format!("http://{listen}/pkg.Service/Call{i}"))
                    .header("te", "trailers")
                    .header("content-type", "application/grpc")
                    .body(full("payload"))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let collected = response.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().expect("the trailers came back");
                (String::from_utf8(collected.to_bytes().to_vec()).unwrap(), trailers)
            })
        })
        .collect();
    for call in calls {
        let (body, trailers) = call.await.unwrap();
        assert_eq!(body, "HTTP/2.0 te=trailers");
        assert_eq!(trailers["grpc-status"], "5");
    }
    let opened = connections.load(Ordering::SeqCst);
    println!("64 concurrent streams used {opened} upstream connection(s)");
    assert!((1..=4).contains(&opened), "{opened} upstream connections for 64 streams");

    // A plain HTTP/1.1 client reaches the same h2c backend.
    let answer = get_with(&format!("http://{listen}/health"), &[]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "HTTP/2.0 te=none"));
    assert_eq!(connections.load(Ordering::SeqCst), opened, "a request opened another connection");
}

/// An h2c backend answering every call trailers-only with `grpc-status`
/// `status`, after `delay`.
async fn grpc_status_backend(status: &'static str, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service =
                hyper::service::service_fn(move |_request: Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    let mut response = Response::new(full(""));
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    response.headers_mut().insert("grpc-status", HeaderValue::from_static(status));
                    Ok::<_, Infallible>(response)
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_calls_are_retried_elsewhere_and_grpc_timeouts_bound_the_call() {
    let unavailable = grpc_status_backend("14", Duration::ZERO).await;
    let serving = grpc_status_backend("0", Duration::ZERO).await;
    let slow = grpc_status_backend("0", Duration::from_secs(3)).await;
    let listen = local(free_port());
    let config = format!(
        "[[listeners]]\nname = \"web\"\nlisten = \"{listen}\"\npool = \"grpc\"\n\n\
         [[listeners.routes]]\npath_prefix = \"/slow.\"\npool = \"slow\"\n\n\
         [pools.grpc]\nprotocol = \"h2c\"\nbackends = [{{ address = \"{unavailable}\" }}, {{ address = \"{serving}\" }}]\n\
         retries = {{ attempts = 1, on = [\"gateway-error\"], retry_non_idempotent = true }}\n\n\
         [pools.slow]\nprotocol = \"h2c\"\nbackends = [{{ address = \"{slow}\" }}]\n"
    );
    let _lb = Fulcrum::start(&config, listen);
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let call = |path: &str, timeout: Option<&str>| {
        let mut request = Request::post(format!("http://{listen}{path}"))
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .header("content-length", "5");
        if let Some(timeout) = timeout {
            request = request.header("grpc-timeout", timeout);
        }
        request.body(full("\0\0\0\0\0")).unwrap()
    };
    for i in 0..20 {
        let response = sender.send_request(call(&format!("/pkg.Service/Call{i}"), None)).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "0", "call {i} got UNAVAILABLE through");
    }
    let started = std::time::Instant::now();
    let response = sender.send_request(call("/slow.Service/Call", Some("200m"))).await.unwrap();
    let took = started.elapsed();
    println!("a call with grpc-timeout 200m to a 3 s backend answered in {took:?}");
    assert_eq!(
        (response.status(), &response.headers()["grpc-status"]),
        (http::StatusCode::OK, &HeaderValue::from_static("4"))
    );
    assert!(took < Duration::from_secs(2), "the deadline was not honoured: {took:?}");
}
