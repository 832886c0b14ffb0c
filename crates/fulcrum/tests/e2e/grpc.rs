//! gRPC through Fulcrum end to end, against tonic servers on h2c
//! backends: 10,000 unary calls and a 1,000-message bidirectional stream
//! with no error, a NOT_FOUND status passed through in the trailers, and
//! the `grpc` health check taking down a backend whose service reports
//! NOT_SERVING (and only it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The streamed message: a sequence number and text.
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    text: String,
}

const CHAT: &str = "/fulcrum.test.Echo/Chat";

/// `fulcrum.test.Echo/Chat`: a bidirectional stream answering each note
/// with the note, its text prefixed by the backend's name.
#[derive(Clone)]
struct Echo(&'static str);

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "fulcrum.test.Echo";
}

type NoteStream = Pin<Box<dyn futures_util::Stream<Item = Result<Note, tonic::Status>> + Send>>;

impl Service<tonic::Request<tonic::Streaming<Note>>> for Echo {
    type Response = tonic::Response<NoteStream>;
    type Error = tonic::Status;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Note>>) -> Self::Future {
        let name = self.0;
        let answers = request
            .into_inner()
            .map(move |note| note.map(|n| Note { seq: n.seq, text: format!("{name}:{}", n.text) }));
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(answers) as NoteStream)) })
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            if request.uri().path() != CHAT {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Note, Note>::default());
            Ok(grpc.streaming(echo, request).await)
        })
    }
}

/// A tonic backend on 127.0.0.1 serving gRPC health and the echo chat;
/// its reporter changes what the health service says.
async fn backend(name: &'static str) -> (SocketAddr, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>()
        .await;
    reporter.set_service_status("fulcrum.test.Echo", ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(Echo(name))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (address, reporter)
}

async fn channel(address: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap()
}

/// `calls` unary health checks of the echo service over `clients`
/// concurrent callers sharing one channel; the time per call.
async fn unary_calls(channel: &Channel, calls: usize, clients: usize) -> Duration {
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut client = HealthClient::new(channel.clone());
        callers.spawn(async move {
            for _ in 0..calls / clients {
                let request = HealthCheckRequest { service: "fulcrum.test.Echo".into() };
                let answer = client.check(request).await.expect("a unary call failed");
                assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }
    started.elapsed() / calls as u32
}

/// A 1,000-note chat; the backends that answered, in order of the notes.
async fn chat(channel: &Channel) -> Vec<String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let notes = futures_util::stream::iter((0..1000u64).map(|seq| Note { seq, text: format!("note {seq}") }));
    let answers = grpc
        .streaming(
            tonic::Request::new(notes),
            http::uri::PathAndQuery::from_static(CHAT),
            tonic_prost::ProstCodec::<Note, Note>::default(),
        )
        .await
        .expect("the stream was refused")
        .into_inner();
    let answers: Vec<Note> = answers.map(|a| a.expect("a streamed answer failed")).collect().await;
    assert_eq!(answers.len(), 1000, "answers were lost");
    answers
        .into_iter()
        .enumerate()
        .map(|(i, note)| {
            assert_eq!(note.seq, i as u64, "answers out of order");
            let (name, text) = note.text.split_once(':').unwrap();
            assert_eq!(text, format!("note {i}"));
            name.to_string()
        })
        .collect()
}

async fn health_of(admin: SocketAddr, backend: SocketAddr) -> String {
    let stats = admin_json("GET", &format!("http://{admin}/stats"), "").await;
    let backends = stats["pools"][0]["backends"].as_array().unwrap().clone();
    let entry = backends.iter().find(|b| b["address"] == backend.to_string().as_str()).unwrap();
    entry["health"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_streams_statuses_and_health_checks_pass_through() {
    let (a, _a_reporter) = backend("a").await;
    let (b, b_reporter) = backend("b").await;
    let (listen, admin) = (local(free_port()), local(free_port()));
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\n\n\
         [[listeners]]\nname = \"grpc\"\nlisten = \"{listen}\"\npool = \"echo\"\n\n\
         [pools.echo]\nalgorithm = \"round_robin\"\nprotocol = \"h2c\"\n\
         backends = [{{ address = \"{a}\" }}, {{ address = \"{b}\" }}]\n\
         health_check = {{ kind = \"grpc\", service = \"fulcrum.test.Echo\", interval = \"100ms\", timeout = \"1s\", fall = 2, rise = 1 }}\n"
    );
    let _lb = Fulcrum::start(&config, admin);
    let through = channel(listen).await;

    // Unary: 10,000 calls, none failing; the cost of the hop per call.
    let direct = channel(a).await;
    unary_calls(&direct, 1000, 16).await;
    unary_calls(&through, 1000, 16).await;
    let per_call_direct = unary_calls(&direct, 10_000, 16).await;
    let per_call_through = unary_calls(&through, 10_000, 16).await;
    println!(
        "10,000 unary calls, 16 callers: {per_call_through:?} a call through Fulcrum, \
         {per_call_direct:?} direct to the backend"
    );
    // One caller, one call at a time: the hop's added latency per call.
    let alone_direct = unary_calls(&direct, 2000, 1).await;
    let alone_through = unary_calls(&through, 2000, 1).await;
    println!("one caller: {alone_through:?} a call through Fulcrum, {alone_direct:?} direct");

    // A status other than OK passes through, message and all.
    let mut client = HealthClient::new(through.clone());
    let refused = client.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert_eq!(refused.message(), "service not registered");

    // Bidirectional streaming: 1,000 notes answered in order by one backend.
    let answered_by = chat(&through).await;
    assert!(answered_by.iter().all(|n| *n == answered_by[0]), "a stream changed backend");
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        names.push(chat(&through).await[0].clone());
    }
    assert!(
        names.contains(&"a".into()) && names.contains(&"b".into()),
        "streams were not balanced: {names:?}"
    );

    // b's echo service stops serving: the grpc check takes b down, a stays up.
    assert_eq!(health_of(admin, b).await, "healthy");
    b_reporter.set_service_status("fulcrum.test.Echo", ServingStatus::NotServing).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_of(admin, b).await != "unhealthy" {
        assert!(Instant::now() < deadline, "the grpc check never took b down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health_of(admin, a).await, "healthy");
    for _ in 0..4 {
        assert_eq!(chat(&through).await[0], "a", "a stream went to the NOT_SERVING backend");
    }
}
