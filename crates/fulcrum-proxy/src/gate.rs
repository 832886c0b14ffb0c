//! A listener's door: who may connect (`allow`, `deny`, `deny_regions`,
//! checked at accept, before any byte is read or TLS handshake made), how
//! many connections may be open at once (`max_connections`: beyond it the
//! accept loop waits, so new connections wait in the kernel's backlog) and
//! per client address (`max_connections_per_ip`: beyond it the connection
//! is closed at once), and the count of everything refused
//! (`lb_refused_total{listener,reason}`).
//!
//! The gate belongs to the listening socket and outlives reloads; every
//! admitted connection holds an [`Entry`] that gives its place back when
//! the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Why a connection or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its network or region is not let in (connection closed at accept).
    Denied,
    /// Its address already has `max_connections_per_ip` open.
    TooManyConnections,
    /// A route's `allow` does not include it (403).
    RouteDenied,
    /// Its request target is longer than `max_uri_bytes` (414).
    UriTooLong,
    /// Its request head is larger than `max_header_bytes` (431).
    HeadTooLarge,
    /// Its body is larger than `max_body_bytes` (413).
    BodyTooLarge,
    /// It sent no valid PROXY header, or came from a network not trusted to.
    ProxyProtocol,
}

impl Refused {
    /// Every reason, in counter order.
    pub const ALL: [Refused; 7] = [
        Self::Denied,
        Self::TooManyConnections,
        Self::RouteDenied,
        Self::UriTooLong,
        Self::HeadTooLarge,
        Self::BodyTooLarge,
        Self::ProxyProtocol,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::TooManyConnections => "max_connections_per_ip",
            Self::RouteDenied => "route_denied",
            Self::UriTooLong => "uri_too_long",
            Self::HeadTooLarge => "head_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::ProxyProtocol => "proxy_protocol",
        }
    }
}

/// One listening socket's door.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicUsize,
    freed: Notify,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: [AtomicU64; Refused::ALL.len()],
}

impl Gate {
    /// Counts a refusal.
    pub fn refuse(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by reason.
    pub fn refused(&self, why: Refused) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Waits until fewer than `max` connections are open (`None`: no cap).
    pub async fn room(&self, max: Option<usize>) {
        let Some(max) = max else { return };
        loop {
            let freed = self.freed.notified();
            if self.open.load(Ordering::Acquire) < max {
                return;
            }
            freed.await;
        }
    }

    /// Lets `client` in unless it already has `per_ip` connections open.
    pub fn enter(self: &Arc<Self>, client: IpAddr, per_ip: Option<usize>) -> Option<Entry> {
        let counted = match per_ip {
            Some(max) => {
                let mut open = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let count = open.entry(client).or_insert(0);
                if *count >= max {
                    drop(open);
                    self.refuse(Refused::TooManyConnections);
                    return None;
                }
                *count += 1;
                Some(client)
            }
            None => None,
        };
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Entry { gate: Arc::clone(self), counted })
    }
}

/// An admitted connection's place; given back when dropped.
#[derive(Debug)]
pub struct Entry {
    gate: Arc<Gate>,
    counted: Option<IpAddr>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(client) = self.counted {
            let mut open = self.gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = open.get_mut(&client) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&client);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        self.gate.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_its_places_come_back() {
        let gate = Arc::new(Gate::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let entries: Vec<Entry> = (0..3).map(|_| gate.enter(a, Some(3)).unwrap()).collect();
        assert!(gate.enter(a, Some(3)).is_none(), "the 4th from one address");
        assert!(gate.enter(b, Some(3)).is_some(), "another address");
        drop(entries);
        assert!(gate.enter(a, Some(3)).is_some());
        assert_eq!(gate.refused(Refused::TooManyConnections), 1);
        assert!(
            gate.per_ip.lock().unwrap().is_empty(),
            "no address is remembered once its connections close"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn room_waits_until_a_connection_closes() {
        let gate = Arc::new(Gate::default());
        let first = gate.enter("10.0.0.1".parse().unwrap(), None).unwrap();
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.room(Some(1)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one open of one: no room");
        drop(first);
        waiting.await.unwrap();
    }
}
