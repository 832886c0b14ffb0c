//! Listening sockets handed from one process to the next, for binary
//! upgrades without a dropped connection (nginx's and HAProxy's way: the
//! new process inherits the old one's file descriptors instead of binding
//! again, so the kernel's accept queues are never closed).
//!
//! The old process passes its sockets at descriptors 3.. with
//! `LISTEN_FDS` (systemd's socket-activation convention, read by the
//! `listenfd` crate) and names them in `FULCRUM_LISTEN_NAMES`
//! (`tcp/127.0.0.1:8080,udp/127.0.0.1:8443,…`, in descriptor order). The
//! new process [`adopt`]s them before anything else runs; binding an
//! address then takes its inherited socket when there is one, and sockets
//! nobody takes are closed when the proxy has started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

/// The environment variable naming the inherited descriptors.
pub const NAMES_VARIABLE: &str = "FULCRUM_LISTEN_NAMES";

/// Sockets inherited at start, by name, until bound.
static INHERITED: Mutex<Option<HashMap<String, OwnedFd>>> = Mutex::new(None);

/// The name a socket is handed on under.
pub fn name(datagram: bool, address: SocketAddr) -> String {
    format!("{}/{address}", if datagram { "udp" } else { "tcp" })
}

/// Takes the descriptors the previous process passed. Call first thing in
/// `main`, before any thread starts (it clears `LISTEN_FDS`). Returns how
/// many were inherited.
pub fn adopt() -> std::io::Result<usize> {
    let Ok(names) = std::env::var(NAMES_VARIABLE) else { return Ok(0) };
    let mut fds = listenfd::ListenFd::from_env();
    let mut inherited = HashMap::new();
    for (index, name) in names.split(',').filter(|n| !n.is_empty()).enumerate() {
        let fd: Option<OwnedFd> = if name.starts_with("udp/") {
            fds.take_udp_socket(index)?.map(OwnedFd::from)
        } else {
            fds.take_tcp_listener(index)?.map(OwnedFd::from)
        };
        if let Some(fd) = fd {
            inherited.insert(name.to_string(), fd);
        }
    }
    let count = inherited.len();
    *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = Some(inherited);
    Ok(count)
}

/// The inherited TCP listener for `address`, if the previous process passed one.
pub fn tcp(address: SocketAddr) -> Option<std::net::TcpListener> {
    take(&name(false, address)).map(std::net::TcpListener::from)
}

/// The inherited UDP socket for `address`, if the previous process passed one.
pub fn udp(address: SocketAddr) -> Option<std::net::UdpSocket> {
    take(&name(true, address)).map(std::net::UdpSocket::from)
}

fn take(name: &str) -> Option<OwnedFd> {
    INHERITED.lock().unwrap_or_else(|p| p.into_inner()).as_mut()?.remove(name)
}

/// Closes inherited sockets no listener took (the new config dropped
/// them), returning their names.
pub fn close_unused() -> Vec<String> {
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(|m| m.into_keys().collect())
        .unwrap_or_default()
}

/// A socket to hand on: its name and a duplicate of its descriptor.
pub fn handoff(
    datagram: bool,
    address: SocketAddr,
    socket: &impl AsFd,
) -> std::io::Result<(String, OwnedFd)> {
    Ok((name(datagram, address), socket.as_fd().try_clone_to_owned()?))
}
