//! WebSocket upgrades are tunnelled through the balancer.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_balancer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        socket.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    let listen = local(free_port());
    let _lb = Fulcrum::start(&http_config(listen, "round_robin", &[backend], ""), listen);
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{listen}/chat")).await.unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        socket.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    socket.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_data().len(), 100_000);
    socket.close(None).await.unwrap();
}
