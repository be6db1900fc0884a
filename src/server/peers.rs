//! Open connections per client address, so that one peer cannot hold every socket, worker
//! and upstream connection (`max_connections_per_ip`). Counted once when a connection is
//! accepted and once when it ends, never per request; loopback peers with no cap configured
//! are not counted at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Peers {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's place in its address's count, given back when dropped.
pub struct Slot(Option<(Arc<Peers>, IpAddr)>);

impl Peers {
    /// A place for another connection from `ip`, or `None` when it holds `cap` already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cap: Option<u32>) -> Option<Slot> {
        let Some(cap) = cap else {
            return Some(Slot(None));
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot(Some((self.clone(), ip))))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((peers, ip)) = self.0.take() else {
            return;
        };
        let mut open = peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_cap_and_its_places_back() {
        let peers = Arc::new(Peers::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = peers.admit(ip, Some(2)).unwrap();
        let _b = peers.admit(ip, Some(2)).unwrap();
        assert!(peers.admit(ip, Some(2)).is_none());
        assert!(peers.admit("192.0.2.8".parse().unwrap(), Some(2)).is_some());
        drop(a);
        assert!(peers.admit(ip, Some(2)).is_some());
        assert!(peers.admit(ip, None).is_some(), "no cap, no count");
    }
}
