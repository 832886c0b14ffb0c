//! UDP balancing end to end: 300 flows from different source ports over 3
//! echo backends — each flow's replies come back, a flow stays on its
//! backend, shares are even — and killing a backend moves exactly its
//! flows, once, when the health checks catch it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::net::UdpSocket;

/// A UDP echo backend answering `NAME:payload`, with a TCP listener on
/// the same port for health checks; aborting the handle kills both.
async fn udp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    // The kernel picks a free UDP port; its TCP twin may be taken by
    // another test's connection, so draw again until both are free.
    let (socket, address, health) = loop {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        if let Ok(health) = tokio::net::TcpListener::bind(address).await {
            break (socket, address, health);
        }
    };
    let task = tokio::spawn(async move {
        let mut buffer = [0u8; 1500];
        loop {
            tokio::select! {
                received = socket.recv_from(&mut buffer) => {
                    let (length, from) = received.unwrap();
                    let reply = [name.as_bytes(), b":", &buffer[..length]].concat();
                    socket.send_to(&reply, from).await.unwrap();
                }
                accepted = health.accept() => drop(accepted),
            }
        }
    });
    (address, task)
}

/// Sends `payload` from `client` and returns the name of the backend that echoed it.
async fn ask(client: &UdpSocket, listen: SocketAddr, payload: &str) -> String {
    client.send_to(payload.as_bytes(), listen).await.unwrap();
    let mut buffer = [0u8; 1500];
    let length = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("no reply to {payload}"))
        .unwrap();
    let reply = String::from_utf8_lossy(&buffer[..length]).into_owned();
    let (name, echoed) = reply.split_once(':').unwrap();
    assert_eq!(echoed, payload);
    name.to_string()
}

async fn ask_all(clients: &[UdpSocket], listen: SocketAddr, round: usize) -> Vec<String> {
    let mut names = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        names.push(ask(client, listen, &format!("flow-{i}-round-{round}")).await);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_stick_spread_evenly_and_only_a_dead_backends_flows_move() {
    let backends = [udp_echo("a").await, udp_echo("b").await, udp_echo("c").await];
    let (listen, admin) = (local(free_port()), local(free_port()));
    let list: Vec<String> = backends.iter().map(|(a, _)| format!("{{ address = \"{a}\" }}")).collect();
    let config = format!(
        "[admin]\nlisten = \"{admin}\"\n\n\
         [[listeners]]\nname = \"dns\"\nlisten = \"{listen}\"\nprotocol = \"udp\"\npool = \"dns\"\n\
         udp = {{ session_idle = \"30s\", max_sessions = 1000 }}\n\n\
         [pools.dns]\nalgorithm = \"round_robin\"\nbackends = [{}]\n\
         health_check = {{ kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", fall = 2, rise = 1 }}\n",
        list.join(", ")
    );
    let _lb = Fulcrum::start(&config, admin);

    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    let first = ask_all(&clients, listen, 0).await;
    let again = ask_all(&clients, listen, 1).await;
    assert_eq!(first, again, "a flow changed backend");
    let shares = first.iter().fold(HashMap::new(), |mut m, n| {
        *m.entry(n.clone()).or_insert(0) += 1;
        m
    });
    println!("300 flows: {shares:?}");
    for name in ["a", "b", "c"] {
        assert!((80..=120).contains(&shares[name]), "{name} has {} of 300 flows", shares[name]);
    }

    // Kill b (its UDP and TCP sockets close) and wait for the checks to see it.
    backends[1].1.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = admin_json("GET", &format!("http://{admin}/stats"), "").await;
        let b = backends[1].0.to_string();
        let health = stats["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["address"] == b.as_str())
            .unwrap()["health"]
            .clone();
        if health == "unhealthy" {
            break;
        }
        assert!(Instant::now() < deadline, "b was never marked unhealthy: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = ask_all(&clients, listen, 2).await;
    let settled = ask_all(&clients, listen, 3).await;
    assert_eq!(after, settled, "a flow moved twice");
    for (i, (before, now)) in first.iter().zip(&after).enumerate() {
        if before == "b" {
            assert_ne!(now, "b", "flow {i} stayed on the dead backend");
        } else {
            assert_eq!(before, now, "flow {i} moved though its backend lives");
        }
    }
    let moved = first.iter().filter(|n| *n == "b").count();
    println!("killing b moved its {moved} flows and no other");
}
