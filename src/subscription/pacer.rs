//! Pacing of upstream SUBSCRIBEs: a token bucket of `rate` per second with a
//! burst of as many, and two queues of (target, package) waiting for a token:
//! the urgent one (a target phones are waiting for, with no state yet) is
//! always served first, then the rest (refreshes, resumes, retries). A site
//! coming up with thousands of keys, or a bridge resuming them after a
//! restart, reaches the provider at `rate`, never in one burst, and a key
//! just pressed does not wait behind thousands of refreshes. Un-SUBSCRIBEs
//! wait too, built already (their target is gone), and go before both.

use super::types::{Out, Package, TargetId};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

pub(super) struct Pacer {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Targets phones are waiting for.
    urgent: VecDeque<(TargetId, Package)>,
    queue: VecDeque<(TargetId, Package)>,
    queued: HashSet<(TargetId, Package)>,
    /// Un-SUBSCRIBEs of dropped targets, built, waiting for a token.
    unsubscribes: VecDeque<Out>,
    /// A pacing timer is set for this time.
    pub(super) timer: Option<Instant>,
}

impl Pacer {
    pub(super) fn new(rate: u32) -> Pacer {
        let rate = f64::from(rate.max(1));
        Pacer {
            rate,
            tokens: rate,
            last: None,
            urgent: VecDeque::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            unsubscribes: VecDeque::new(),
            timer: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.last = Some(now);
    }

    /// Take a token now if one is free and nobody is queued before us
    /// (un-SUBSCRIBEs first, then urgent requests, then the normal queue).
    pub(super) fn try_take(&mut self, now: Instant, urgent: bool) -> bool {
        self.refill(now);
        let ahead = self.unsubscribes.is_empty()
            && self.urgent.is_empty()
            && (urgent || self.queue.is_empty());
        if ahead && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Take a token now for an un-SUBSCRIBE if one is free and no other
    /// un-SUBSCRIBE waits (they go before queued SUBSCRIBEs).
    pub(super) fn try_take_unsubscribe(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.unsubscribes.is_empty() && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Queue a built un-SUBSCRIBE.
    pub(super) fn defer_unsubscribe(&mut self, request: Out) {
        self.unsubscribes.push_back(request);
    }

    /// The next queued un-SUBSCRIBE whose token is available now.
    pub(super) fn pop_unsubscribe(&mut self, now: Instant) -> Option<Out> {
        self.refill(now);
        if self.tokens < 1.0 {
            return None;
        }
        let next = self.unsubscribes.pop_front()?;
        self.tokens -= 1.0;
        Some(next)
    }

    /// Queue a SUBSCRIBE; false when that one is queued already.
    pub(super) fn enqueue(&mut self, target: TargetId, package: Package, urgent: bool) -> bool {
        if !self.queued.insert((target, package)) {
            return false;
        }
        if urgent {
            self.urgent.push_back((target, package));
        } else {
            self.queue.push_back((target, package));
        }
        true
    }

    /// The next queued SUBSCRIBE whose token is available now.
    pub(super) fn pop_ready(&mut self, now: Instant) -> Option<(TargetId, Package)> {
        self.refill(now);
        if self.tokens < 1.0 {
            return None;
        }
        let next = match self.urgent.pop_front() {
            Some(n) => n,
            None => self.queue.pop_front()?,
        };
        self.queued.remove(&next);
        self.tokens -= 1.0;
        Some(next)
    }

    /// When the next queued SUBSCRIBE may go (None: nothing queued).
    pub(super) fn next_at(&self, now: Instant) -> Option<Instant> {
        if self.queued() == 0 {
            return None;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = Duration::from_secs_f64(missing / self.rate);
        // at least 1 ms, so a timer never spins at the same instant
        Some(now + wait.max(Duration::from_millis(1)))
    }

    pub(super) fn queued(&self) -> usize {
        self.unsubscribes.len() + self.urgent.len() + self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_rate_then_one_token_per_interval() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10);
        let sent = (0..25).filter(|_| p.try_take(t0, false)).count();
        assert_eq!(sent, 10, "a burst of `rate`");
        for i in 0..15u64 {
            assert!(p.enqueue(TargetId(i), Package::Dialog, false));
        }
        assert!(
            !p.enqueue(TargetId(0), Package::Dialog, false),
            "no duplicates"
        );
        assert_eq!(p.pop_ready(t0), None);
        // 1 s later: 10 more
        let t1 = t0 + Duration::from_secs(1);
        let mut n = 0;
        while p.pop_ready(t1).is_some() {
            n += 1;
        }
        assert_eq!(n, 10);
        assert_eq!(p.queued(), 5);
        let at = p.next_at(t1).unwrap();
        assert!(
            at > t1 && at <= t1 + Duration::from_millis(101),
            "{:?}",
            at - t1
        );
        // order is kept
        assert_eq!(
            p.pop_ready(t1 + Duration::from_millis(100)),
            Some((TargetId(10), Package::Dialog))
        );
        // a queued request blocks newcomers from jumping ahead
        assert!(!p.try_take(t1 + Duration::from_secs(10), false));
    }

    #[test]
    fn urgent_requests_go_before_the_queue() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2);
        assert!(p.try_take(t0, false) && p.try_take(t0, false));
        for i in 0..10u64 {
            assert!(p.enqueue(TargetId(i), Package::Presence, false));
        }
        let t1 = t0 + Duration::from_millis(500);
        // a token is free and only normal requests wait: an urgent one takes it
        assert!(p.try_take(t1, true));
        // no token: queued, but ahead of the ten
        assert!(!p.try_take(t1, true));
        assert!(p.enqueue(TargetId(99), Package::Dialog, true));
        assert!(!p.try_take(t1 + Duration::from_secs(5), false));
        assert!(
            !p.try_take(t1 + Duration::from_secs(5), true),
            "an urgent one queued first"
        );
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(p.pop_ready(t2), Some((TargetId(99), Package::Dialog)));
        assert_eq!(p.pop_ready(t2), Some((TargetId(0), Package::Presence)));
        assert_eq!(p.queued(), 9);
    }

    fn unsubscribe(n: u64) -> Out {
        Out::Request {
            flow: crate::flow::Flow::udp("127.0.0.1:5070".parse().unwrap()),
            data: bytes::Bytes::from(format!("unsubscribe {n}")),
            tag: super::super::types::ReqTag::Upstream {
                target: TargetId(n),
                package: Package::Dialog,
                generation: 0,
                cseq: 2,
                unsubscribe: true,
            },
        }
    }

    #[test]
    fn unsubscribes_are_paced_too_and_go_first() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2);
        assert!(p.try_take_unsubscribe(t0));
        assert!(p.try_take(t0, false));
        assert!(!p.try_take_unsubscribe(t0), "the bucket is empty");
        p.defer_unsubscribe(unsubscribe(1));
        p.defer_unsubscribe(unsubscribe(2));
        assert!(p.enqueue(TargetId(9), Package::Presence, false));
        assert_eq!(p.queued(), 3);
        assert!(p.pop_unsubscribe(t0).is_none());
        let at = p.next_at(t0).unwrap();
        assert!(at > t0 && at <= t0 + Duration::from_millis(501));
        // 0.5 s later: one token, for the first un-SUBSCRIBE
        let t1 = t0 + Duration::from_millis(500);
        assert!(
            matches!(p.pop_unsubscribe(t1), Some(Out::Request { data, .. }) if data == "unsubscribe 1")
        );
        assert_eq!(p.pop_ready(t1), None);
        assert!(
            !p.try_take_unsubscribe(t1 + Duration::from_secs(5)),
            "one still waits"
        );
        assert!(p.pop_unsubscribe(t1 + Duration::from_secs(5)).is_some());
        assert_eq!(
            p.pop_ready(t1 + Duration::from_secs(5)),
            Some((TargetId(9), Package::Presence))
        );
        assert_eq!(p.queued(), 0);
    }
}
