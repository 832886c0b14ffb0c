//! TCP (L4) listeners: per-connection balancing, bytes both ways, half-close.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP backend that reads until the client half-closes, then answers
/// `NAME:BYTES` and closes.
async fn counting_backend(name: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.unwrap();
                stream.write_all(format!("{name}:{}", received.len()).as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_balanced_and_half_close_is_passed_on() {
    let (a, b) = (counting_backend("a").await, counting_backend("b").await);
    let (listen, admin) = (local(free_port()), local(free_port()));
    // Readiness is probed on the admin port: a probe of the TCP port would
    // itself be a balanced connection.
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\n[[listeners]]\nname = \"l4\"\nlisten = \"{listen}\"\nprotocol = \"tcp\"\npool = \"db\"\n\
         [pools.db]\nalgorithm = \"round_robin\"\nbackends = [{{ address = \"{a}\" }}, {{ address = \"{b}\" }}]\n"
    );
    let _lb = Fulcrum::start(&config, admin);
    let payload = vec![42u8; 300_000];
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(listen).await.unwrap();
        stream.write_all(&payload).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answers.push(answer);
    }
    assert_eq!(answers, ["a:300000", "b:300000", "a:300000", "b:300000"]);
}
