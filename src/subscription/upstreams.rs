//! The registry's upstream side: SUBSCRIBEs sent through the pacer, fresh
//! dialogs, failures and backoff, and the NOTIFYs the upstream sends into the
//! bridge's subscriptions. The transitions of one subscription belong to
//! [`Upstream`]; this is the bookkeeping around them.

use super::build;
use super::manager::{AuthGate, SubscriptionManager, account_digest};
use super::subscriber::*;
use super::target::*;
use super::timers::Timer;
use super::types::*;
use crate::sip::{Method, SipMessage};
use crate::transaction::ServerKey;
use bytes::Bytes;
use std::time::{Duration, Instant};

impl SubscriptionManager {
    // ------------------------------------------------------------ upstream side

    /// Send an upstream SUBSCRIBE when the pacer allows it, else queue it (an
    /// un-SUBSCRIBE is built at once, its target is about to be forgotten, and
    /// waits built).
    pub(super) fn send_subscribe(
        &mut self,
        target: TargetId,
        package: Package,
        unsubscribe: bool,
        now: Instant,
    ) {
        // phones are waiting for this target's first state (not a refresh,
        // a resume or a retry): it goes before the rest
        let urgent = !unsubscribe
            && !self.resuming.contains(&target)
            && self
                .upstream(target, package)
                .is_some_and(|u| !u.ever_notified && u.failures == 0 && u.remote_tag.is_none());
        if !unsubscribe && self.held_by_account(target, package, now) {
            return;
        }
        if unsubscribe {
            if !self.pacer.try_take_unsubscribe(now) {
                let before = self.out.len();
                self.send_subscribe_now(target, package, true, now);
                if self.out.len() > before
                    && let Some(request) = self.out.pop_back()
                {
                    self.pacer.defer_unsubscribe(request);
                    self.schedule_pace(now);
                }
                return;
            }
        } else if !self.pacer.try_take(now, urgent) {
            if self.pacer.enqueue(target, package, urgent) {
                self.schedule_pace(now);
            }
            return;
        }
        self.send_subscribe_now(target, package, unsubscribe, now);
    }

    /// Whether a new upstream subscription must wait for its account's hold
    /// after authentication failures (then it is parked until the hold ends).
    /// When the hold is over, this one goes as the probe and the hold covers
    /// its round trip (64·T1), so the others wait for its answer.
    fn held_by_account(&mut self, target: TargetId, package: Package, now: Instant) -> bool {
        let Some(t) = self.targets.get(&target) else {
            return false;
        };
        if t.upstream(package).state != UpState::Idle {
            // only a fresh attempt waits: not a refresh, nor the answer to a
            // challenge or a 423 within an attempt
            return false;
        }
        let Some(gate) = self.auth_gate.get_mut(&t.account) else {
            return false;
        };
        if now >= gate.until {
            gate.until = now + self.env.t1 * 64;
            gate.probing = true;
            return false;
        }
        let at = gate.until + Duration::from_millis(self.rng.below(1000));
        let Some(t) = self.targets.get_mut(&target) else {
            return false;
        };
        let up = t.upstream_mut(package);
        up.state = UpState::Stopped;
        up.in_flight = false;
        up.retry_at = Some(at);
        up.last_error = Some("held: the account's upstream authentication failed".into());
        let retry = UpTimer::Retry {
            generation: up.generation,
        };
        self.schedule(at, Timer::Up(target, package, retry));
        self.mark_target(target, false);
        self.recompute(target, now);
        true
    }

    pub(super) fn schedule_pace(&mut self, now: Instant) {
        let Some(at) = self.pacer.next_at(now) else {
            return;
        };
        if self.pacer.timer.is_some_and(|t| t <= at) {
            return;
        }
        self.pacer.timer = Some(at);
        self.schedule(at, Timer::Pace);
    }

    pub(super) fn on_pace(&mut self, now: Instant) {
        self.pacer.timer = None;
        while let Some(request) = self.pacer.pop_unsubscribe(now) {
            self.out.push_back(request);
        }
        while let Some((target, package)) = self.pacer.pop_ready(now) {
            if self.targets.contains_key(&target) {
                self.send_subscribe_now(target, package, false, now);
            }
        }
        self.schedule_pace(now);
    }

    pub(super) fn send_subscribe_now(
        &mut self,
        target: TargetId,
        package: Package,
        unsubscribe: bool,
        now: Instant,
    ) {
        if !unsubscribe && self.resuming.remove(&target) {
            self.start_resumed_holds(target, now);
        }
        let branch = self.rng.branch();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let owner = Owner {
            id: target,
            aor: &t.aor,
            account: &t.account,
        };
        let up = match package {
            Package::Dialog => &mut t.dialog,
            Package::Presence => &mut t.presence,
        };
        let auth = account_digest(&mut self.digest, &self.env.cfg, &t.account);
        let request = up.subscribe(&self.env, owner, &branch, unsubscribe, auth, &mut self.rng);
        let generation = up.generation;
        // the CSeq must never go backwards, even after a crash: reserve ahead
        let durable = up.cseq >= up.reserved_cseq;
        if durable {
            up.reserved_cseq = up.cseq.saturating_add(RESERVE);
        }
        self.out.push_back(request);
        self.mark_target(target, durable);
        if !unsubscribe {
            let at = now + self.env.t1 * 64;
            let timer_n = UpTimer::TimerN { generation };
            self.schedule(at, Timer::Up(target, package, timer_n));
        }
    }

    /// Remember an ended upstream dialog for a while (64·T1).
    pub(super) fn retire(&mut self, call_id: Bytes, now: Instant) {
        let keep = self.env.t1 * 64;
        self.retired
            .retain(|_, at| now.saturating_duration_since(*at) < keep);
        self.retired.insert(call_id, now);
    }

    /// Start a fresh upstream dialog for this package (new Call-ID and tag).
    pub(super) fn resubscribe_fresh(&mut self, target: TargetId, package: Package, now: Instant) {
        let call_id = build::call_id(&mut self.rng);
        let tag = self.rng.tag();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let new_call_id = Bytes::from(call_id.clone());
        let (old, had_dialog) = t.restart(package, call_id, tag);
        self.mark_target(target, true);
        let old = Bytes::from(old);
        self.upstream_index.remove(&old);
        self.upstream_index.insert(new_call_id, (target, package));
        if had_dialog {
            self.retire(old, now);
        }
        self.send_subscribe(target, package, false, now);
    }

    /// Mark a failure and schedule the next attempt with capped exponential
    /// backoff (plus jitter), or `retry_after` when the upstream gave one.
    pub(super) fn upstream_failed(
        &mut self,
        target: TargetId,
        package: Package,
        f: Failure,
        now: Instant,
    ) {
        let auth = f.class == Refusal::Auth;
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let wait = t.fail(package, f, &self.env.cfg.subscriptions);
        // jitter: < 1 s, or up to 5 % of a wait of a minute or more (targets
        // refused together do not come back in one burst)
        let jitter = self.rng.below(1000.max(wait.delay_s.saturating_mul(50)));
        let at = now + Duration::from_secs(wait.delay_s) + Duration::from_millis(jitter);
        t.upstream_mut(package).retry_at = Some(at);
        if auth {
            // the account is held: its other new subscriptions wait too
            let gate = self.auth_gate.entry(t.account.clone()).or_insert(AuthGate {
                until: now,
                failures: 0,
                probing: true,
            });
            if gate.probing {
                gate.probing = false;
                gate.failures = gate.failures.saturating_add(1);
            }
            let hold = AUTH_FIRST_S
                .saturating_mul(1u64 << (gate.failures.max(1) - 1).min(16))
                .min(RARE_MAX_S);
            gate.until = gate.until.max(now + Duration::from_secs(hold));
            if gate.failures == 1 && !gate.probing {
                tracing::warn!(account = %t.account, hold_s = hold, "upstream authentication failed: the account's new subscriptions wait, then one tries for all");
            }
        }
        self.mark_target(target, false);
        let retry = UpTimer::Retry {
            generation: wait.generation,
        };
        self.schedule(at, Timer::Up(target, package, retry));
        self.recompute(target, now);
    }

    /// Carry out what an [`Upstream`] transition asks for.
    pub(super) fn act(&mut self, target: TargetId, package: Package, action: Action, now: Instant) {
        match action {
            Action::Nothing => {}
            Action::Schedule { after, timer } => {
                self.schedule(now + after, Timer::Up(target, package, timer))
            }
            Action::Resubscribe => self.send_subscribe(target, package, false, now),
            Action::Restart => self.resubscribe_fresh(target, package, now),
            Action::Failed(f) => {
                if f.class == Refusal::Auth {
                    self.auth_failures += 1;
                }
                self.upstream_failed(target, package, f, now)
            }
        }
    }

    /// A request the upstream sent into one of our subscription dialogs.
    pub(super) fn on_upstream_request(
        &mut self,
        target: TargetId,
        package: Package,
        key: ServerKey,
        msg: &SipMessage,
        now: Instant,
    ) {
        if msg.method() != Some(&Method::Notify) {
            let allow = [("Allow", "NOTIFY".to_string())];
            let data = build::response(msg, 405, "Method Not Allowed", None, &allow);
            return self.respond(key, data);
        }
        let empty = self.env.cfg.upstream.empty_presence;
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let Some(notified) = t.on_notify(package, msg, empty, now) else {
            let data = build::response(msg, 481, "Subscription Does Not Exist", None, &[]);
            return self.respond(key, data);
        };
        self.respond(key, build::response(msg, 200, "OK", None, &[]));
        self.mark_target(target, false);
        match notified {
            UpNotified::Applied => self.recompute(target, now),
            UpNotified::VersionGap => {
                self.recompute(target, now);
                self.send_subscribe(target, package, false, now);
            }
            UpNotified::Ended(action) => {
                self.act(target, package, action, now);
                self.recompute(target, now);
            }
        }
    }
}
