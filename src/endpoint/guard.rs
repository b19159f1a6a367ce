//! Per-source admission (`[security] rate_per_source`, `block_s`): a token
//! bucket of requests per source IP, and a short block of a source whose
//! REGISTERs keep failing authentication (fail2ban-like). A limited or blocked
//! source's requests are dropped without an answer (an answer would reflect a
//! spoofed flood); each episode is logged once.
//!
//! Sources are IPs (a phone's ports do not matter). The upstream is never
//! limited (the endpoint does not ask for it). Quiet sources are forgotten when
//! the table grows, so a flood of spoofed sources cannot grow it without bound
//! for long.

use crate::config::{AUTH_FAILURE_WINDOW_S, AUTH_FAILURES_TO_BLOCK, Security};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What happens to a request from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// Over its rate: dropped.
    Limited,
    /// Blocked after repeated authentication failures: dropped.
    Blocked,
}

#[derive(Debug)]
struct Source {
    tokens: f64,
    last: Instant,
    /// Authentication failures within the window (oldest first; at most the
    /// number that blocks).
    failures: Vec<Instant>,
    blocked_until: Option<Instant>,
    /// When its being over the rate was last logged (once every 10 s).
    limited_logged: Option<Instant>,
}

/// Sources the table keeps before it forgets quiet ones.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
pub struct Guard {
    rate: f64,
    burst: f64,
    block: Duration,
    sources: HashMap<IpAddr, Source>,
    prune_at: usize,
}

impl Guard {
    pub fn new(sec: &Security) -> Guard {
        let rate = f64::from(sec.rate_per_source.max(1));
        Guard {
            rate,
            burst: rate * 2.0,
            block: Duration::from_secs(sec.block_s),
            sources: HashMap::new(),
            prune_at: PRUNE_AT,
        }
    }

    /// A reloaded configuration: new rate and block length (sources kept).
    pub fn reconfigure(&mut self, sec: &Security) {
        let fresh = Guard::new(sec);
        self.rate = fresh.rate;
        self.burst = fresh.burst;
        self.block = fresh.block;
    }

    fn source(&mut self, ip: IpAddr, now: Instant) -> &mut Source {
        if self.sources.len() >= self.prune_at {
            self.prune(now);
        }
        let burst = self.burst;
        self.sources.entry(ip).or_insert_with(|| Source {
            tokens: burst,
            last: now,
            failures: Vec::new(),
            blocked_until: None,
            limited_logged: None,
        })
    }

    /// Forget sources that are neither blocked, nor short of tokens, nor
    /// recently failing.
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let window = Duration::from_secs(AUTH_FAILURE_WINDOW_S);
        self.sources.retain(|_, s| {
            let refilled =
                s.tokens + now.saturating_duration_since(s.last).as_secs_f64() * rate >= burst;
            let blocked = s.blocked_until.is_some_and(|t| t > now);
            let failing = s
                .failures
                .last()
                .is_some_and(|t| now.saturating_duration_since(*t) < window);
            blocked || failing || !refilled
        });
        self.prune_at = (self.sources.len() * 2).max(PRUNE_AT);
    }

    /// Whether a request from `ip` is taken now (a token is spent).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        let (rate, burst) = (self.rate, self.burst);
        let s = self.source(ip, now);
        if let Some(until) = s.blocked_until {
            if until > now {
                return Admission::Blocked;
            }
            s.blocked_until = None;
            s.failures.clear();
            tracing::info!(source = %ip, "block after repeated authentication failures ended");
        }
        let dt = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + dt * rate).min(burst);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Admission::Pass;
        }
        // not once per episode: under a steady flood an episode ends with every
        // token (~50 lines/s)
        let quiet = crate::util::LogGate::INTERVAL;
        if s.limited_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= quiet)
        {
            s.limited_logged = Some(now);
            tracing::warn!(source = %ip, rate_per_source = rate, "source exceeds [security] rate_per_source: dropping its requests (logged once per source every 10 s)");
        }
        Admission::Limited
    }

    /// A REGISTER from `ip` was answered 401/403/407 by the registrar. The
    /// [`AUTH_FAILURES_TO_BLOCK`]th within [`AUTH_FAILURE_WINDOW_S`] blocks the
    /// source for `block_s` (logged once per block).
    pub fn auth_failure(&mut self, ip: IpAddr, now: Instant) {
        let block = self.block;
        let s = self.source(ip, now);
        if s.blocked_until.is_some_and(|t| t > now) {
            return;
        }
        let window = Duration::from_secs(AUTH_FAILURE_WINDOW_S);
        s.failures
            .retain(|t| now.saturating_duration_since(*t) < window);
        s.failures.push(now);
        if s.failures.len() >= AUTH_FAILURES_TO_BLOCK as usize {
            s.failures.clear();
            if block.is_zero() {
                return;
            }
            s.blocked_until = Some(now + block);
            tracing::warn!(
                source = %ip,
                failures = AUTH_FAILURES_TO_BLOCK,
                window_s = AUTH_FAILURE_WINDOW_S,
                block_s = block.as_secs(),
                "repeated authentication failures: source blocked, its requests are dropped"
            );
        }
    }

    /// Sources tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bucket_bursts_twice_the_rate_then_refills() {
        let sec = Security {
            rate_per_source: 5,
            ..Security::default()
        };
        let mut g = Guard::new(&sec);
        let t0 = Instant::now();
        let passed = (0..30)
            .filter(|_| g.admit(ip("10.0.0.1"), t0) == Admission::Pass)
            .count();
        assert_eq!(passed, 10);
        assert_eq!(g.admit(ip("10.0.0.2"), t0), Admission::Pass, "per source");
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..30)
            .filter(|_| g.admit(ip("10.0.0.1"), t1) == Admission::Pass)
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn ten_failures_within_a_minute_block_for_block_s() {
        let mut g = Guard::new(&Security::default());
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..9 {
            g.auth_failure(a, t0 + Duration::from_secs(i * 7));
        }
        // the first ones left the window
        g.auth_failure(a, t0 + Duration::from_secs(70));
        assert_eq!(g.admit(a, t0 + Duration::from_secs(70)), Admission::Pass);
        let t = t0 + Duration::from_secs(100);
        for _ in 0..10 {
            g.auth_failure(a, t);
        }
        assert_eq!(g.admit(a, t), Admission::Blocked);
        assert_eq!(g.admit(ip("10.0.0.2"), t), Admission::Pass);
        assert_eq!(g.admit(a, t + Duration::from_secs(59)), Admission::Blocked);
        assert_eq!(g.admit(a, t + Duration::from_secs(60)), Admission::Pass);
    }

    #[test]
    fn quiet_sources_are_forgotten() {
        let mut g = Guard::new(&Security::default());
        let t0 = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            g.admit(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(g.len(), PRUNE_AT);
        g.admit(ip("10.0.0.1"), t0 + Duration::from_secs(5));
        assert!(g.len() < 10, "{}", g.len());
    }
}
