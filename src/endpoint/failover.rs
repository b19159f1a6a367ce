//! Several upstream servers (RFC 3263): `[upstream] proxy` named by a domain
//! resolves to an ordered list of servers (SRV priority, then weight; the
//! runtime resolves, see `runtime::dns`). This is the bookkeeping of which one
//! is in use, pure data driven by the endpoint:
//!
//! - **failover**: the server in use stops answering (a keep-alive interval
//!   without an answer, a transaction timeout — Timer B/F —, an ICMP error or a
//!   refused/reset TCP connection reported by the runtime): the next server in
//!   the list is used, wrapping around;
//! - **failback**: while a less preferred server is in use, the more preferred
//!   ones are probed with OPTIONS every [`FAILBACK_PROBE_INTERVAL`] and when the
//!   resolution is renewed (TTL expiry); the first of them that answers is used
//!   again;
//! - a new resolution keeps the server in use when it is still listed (its
//!   position may change), else moves to the first one.
//!
//! What moving means for the subscriptions (they are re-established on the
//! new server: the old one's dialogs are dead) is the endpoint's and the
//! subscription manager's business.

use crate::flow::Flow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the more preferred servers are probed while a less preferred one
/// is in use (also at every renewed resolution).
pub const FAILBACK_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// The resolved servers and the one in use.
#[derive(Debug, Clone)]
pub struct Failover {
    list: Arc<[Flow]>,
    current: usize,
    /// When the more preferred servers are probed next (only while one of
    /// them is not in use).
    next_probe: Option<Instant>,
}

impl Failover {
    /// One server (a `host:port` or an IP literal, or the first resolved one).
    pub fn new(first: Flow) -> Failover {
        Failover {
            list: Arc::from(vec![first]),
            current: 0,
            next_probe: None,
        }
    }

    /// The server in use.
    pub fn current(&self) -> Flow {
        self.list[self.current]
    }

    /// Its position in the list (0: the most preferred).
    pub fn index(&self) -> usize {
        self.current
    }

    /// Every server, most preferred first.
    pub fn all(&self) -> Arc<[Flow]> {
        self.list.clone()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Position of a server in the list (flows compared without their
    /// connection).
    pub fn position(&self, flow: &Flow) -> Option<usize> {
        self.list
            .iter()
            .position(|f| f.remote == flow.remote && f.transport == flow.transport)
    }

    /// A new resolution. Returns `true` when the server in use is no longer
    /// listed (then the first one is in use now). An empty list is ignored
    /// (the runtime keeps the last good resolution when one fails).
    pub fn set(&mut self, list: Vec<Flow>, now: Instant) -> bool {
        if list.is_empty() {
            return false;
        }
        let cur = self.current();
        self.list = Arc::from(list);
        let moved = match self.position(&cur) {
            Some(j) => {
                self.current = j;
                false
            }
            None => {
                self.current = 0;
                true
            }
        };
        // renewed resolution: probe the more preferred ones now
        self.next_probe = (self.current > 0).then_some(now);
        moved
    }

    /// Use the next server (wrapping around); returns it.
    pub fn advance(&mut self, now: Instant) -> Flow {
        self.current = (self.current + 1) % self.list.len();
        self.next_probe = (self.current > 0).then(|| now + FAILBACK_PROBE_INTERVAL);
        self.current()
    }

    /// A more preferred server answered a probe: use it (`false` when it is
    /// not more preferred than the one in use).
    pub fn back_to(&mut self, flow: &Flow, now: Instant) -> bool {
        match self.position(flow) {
            Some(j) if j < self.current => {
                self.current = j;
                self.next_probe = (j > 0).then(|| now + FAILBACK_PROBE_INTERVAL);
                true
            }
            _ => false,
        }
    }

    /// The servers to probe now (more preferred than the one in use), when a
    /// probe is due; the next probe is scheduled.
    pub fn probes_due(&mut self, now: Instant) -> Vec<Flow> {
        match self.next_probe {
            Some(at) if at <= now && self.current > 0 => {
                self.next_probe = Some(now + FAILBACK_PROBE_INTERVAL);
                self.list[..self.current].to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// When [`Failover::probes_due`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_probe.filter(|_| self.current > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(port: u16) -> Flow {
        Flow::udp(std::net::SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn advance_wraps_and_probes_only_while_not_on_the_first() {
        let now = Instant::now();
        let mut fo = Failover::new(f(1));
        assert!(!fo.set(vec![f(1), f(2), f(3)], now));
        assert_eq!(fo.poll_timeout(), None);
        assert_eq!(fo.advance(now), f(2));
        assert_eq!(fo.poll_timeout(), Some(now + FAILBACK_PROBE_INTERVAL));
        assert!(fo.probes_due(now).is_empty());
        assert_eq!(fo.advance(now), f(3));
        let later = now + FAILBACK_PROBE_INTERVAL;
        assert_eq!(fo.probes_due(later), vec![f(1), f(2)]);
        assert!(fo.back_to(&f(2), later));
        assert!(!fo.back_to(&f(3), later), "not more preferred");
        assert_eq!(fo.advance(later), f(3));
        assert_eq!(fo.advance(later), f(1));
        assert_eq!(fo.poll_timeout(), None);
    }

    #[test]
    fn a_new_resolution_keeps_the_server_in_use_when_listed() {
        let now = Instant::now();
        let mut fo = Failover::new(f(1));
        fo.set(vec![f(1), f(2)], now);
        fo.advance(now);
        // reordered: f(2) still in use, f(3) now preferred and probed at once
        assert!(!fo.set(vec![f(3), f(2)], now));
        assert_eq!(fo.current(), f(2));
        assert_eq!(fo.probes_due(now), vec![f(3)]);
        // gone from the list: the first one
        assert!(fo.set(vec![f(4), f(5)], now));
        assert_eq!(fo.current(), f(4));
        // an empty resolution changes nothing
        assert!(!fo.set(vec![], now));
        assert_eq!(fo.len(), 2);
    }
}
