//! The manager's side of the state store: which records changed (and whether
//! a peer is about to be told about the change, so it must be on disk first),
//! the records as store operations, and the restore after a restart.
//!
//! Records are the plain serde types themselves ([`PhoneSub`], [`Target`] with
//! its two [`Upstream`](super::Upstream)s), as JSON, keyed by their ids.

use super::manager::{SubscriptionManager, credentials};
use super::notifier::{PhoneState, PhoneSub};
use super::subscriber::UpState;
use super::target::Target;
use super::timers::Timer;
use super::types::{Changes, Package, PhoneId, TargetId};
use crate::store::{Batch, Table};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What a restore found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub phones: usize,
    pub targets: usize,
    /// Phone subscriptions that expired while the bridge was down.
    pub expired: usize,
    /// Records that could not be read (logged and dropped).
    pub unreadable: usize,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl SubscriptionManager {
    /// From now on, track changes for the store ([`Self::persist_into`]).
    pub fn enable_persistence(&mut self) {
        self.changes.get_or_insert_with(Changes::default);
    }

    pub(super) fn mark_phone(&mut self, id: PhoneId) {
        if let Some(c) = self.changes.as_mut() {
            c.phones.insert(id, true);
        }
    }

    pub(super) fn mark_target(&mut self, id: TargetId, durable: bool) {
        if let Some(c) = self.changes.as_mut() {
            let d = c.targets.entry(id).or_insert(false);
            *d |= durable;
        }
    }

    /// The changes since the last call as store operations. Returns whether
    /// any of them must be durable before the bridge says more.
    pub fn persist_into(&mut self, batch: &mut Batch) -> bool {
        self.persist_barrier = false;
        let Some(c) = self.changes.as_mut() else {
            return false;
        };
        if c.is_empty() {
            return false;
        }
        let phones = std::mem::take(&mut c.phones);
        let targets = std::mem::take(&mut c.targets);
        let mut durable = false;
        for (id, d) in phones {
            durable |= d;
            match self.phones.get(&id).map(serde_json::to_vec) {
                Some(Ok(v)) => batch.put(Table::Phones, key(id.0), v),
                Some(Err(e)) => tracing::error!(phone = %id, error = %e, "cannot serialise"),
                None => batch.delete(Table::Phones, key(id.0)),
            }
        }
        for (id, d) in targets {
            durable |= d;
            match self.targets.get(&id).map(serde_json::to_vec) {
                Some(Ok(v)) => batch.put(Table::Targets, key(id.0), v),
                Some(Err(e)) => tracing::error!(target = %id, error = %e, "cannot serialise"),
                None => batch.delete(Table::Targets, key(id.0)),
            }
        }
        durable
    }

    /// Load what the store held (after a restart): drop what expired, bring
    /// every phone back in its dialog (holding its next NOTIFY until the
    /// target's state is known again), and queue each target's upstream
    /// subscriptions for a refresh in their existing dialogs (paced).
    pub fn restore(
        &mut self,
        phones: &[(Vec<u8>, Vec<u8>)],
        targets: &[(Vec<u8>, Vec<u8>)],
        now: Instant,
    ) -> Restored {
        let mut r = Restored::default();
        let mut loaded_targets: Vec<Target> = Vec::new();
        for (k, v) in targets {
            match serde_json::from_slice::<Target>(v) {
                Ok(t) => loaded_targets.push(t),
                Err(e) => {
                    r.unreadable += 1;
                    tracing::warn!(key = ?k, error = %e, "state store: unreadable target record dropped");
                }
            }
        }
        let mut loaded_phones: Vec<PhoneSub> = Vec::new();
        for (k, v) in phones {
            match serde_json::from_slice::<PhoneSub>(v) {
                Ok(p) => loaded_phones.push(p),
                Err(e) => {
                    r.unreadable += 1;
                    tracing::warn!(key = ?k, error = %e, "state store: unreadable phone record dropped");
                }
            }
        }
        let mut max_id = 0u64;
        for mut t in loaded_targets {
            max_id = max_id.max(t.id.0);
            self.resume_target(&mut t);
            for up in [&t.dialog, &t.presence] {
                let call_id = Bytes::from(up.call_id.clone());
                self.upstream_index.insert(call_id, (t.id, up.package));
            }
            self.by_aor.insert(t.aor.clone(), t.id);
            self.targets.insert(t.id, Box::new(t));
            r.targets += 1;
        }
        self.check_refresh_capacity();
        for mut p in loaded_phones {
            max_id = max_id.max(p.id.0);
            if p.expires_at <= now || p.state == PhoneState::Terminating {
                r.expired += 1;
                self.mark_phone(p.id); // delete it from the store
                continue;
            }
            let Some(t) = self.targets.get_mut(&p.target) else {
                r.unreadable += 1;
                tracing::warn!(phone = %p.id, "state store: phone subscription without its target dropped");
                self.mark_phone(p.id);
                continue;
            };
            if !t.watchers.contains(&p.id) {
                t.watchers.push(p.id);
            }
            resume_phone(&mut p);
            let (at, generation) = (p.expires_at, p.timer_gen);
            self.phone_index.insert(p.key(), p.id);
            self.count_source(p.flow.remote.ip(), true);
            let id = p.id;
            self.phones.insert(id, Box::new(p));
            self.mark_phone(id); // the counters moved to the reserved marks
            self.schedule(
                at,
                Timer::PhoneExpire {
                    phone: id,
                    generation,
                },
            );
            r.phones += 1;
        }
        self.next_id = self.next_id.max(max_id + 1);
        // targets: watchers that did not come back are gone; then resume
        let mut ids: Vec<TargetId> = self.targets.keys().copied().collect();
        // the most watched first: they light the most keys
        ids.sort_by_key(|id| {
            let t = &self.targets[id];
            (std::cmp::Reverse(t.watchers.len()), id.0)
        });
        let linger = Duration::from_secs(self.env.cfg.subscriptions.linger_s);
        for id in ids {
            let phones = &self.phones;
            let Some(t) = self.targets.get_mut(&id) else {
                continue;
            };
            t.watchers.retain(|w| phones.contains_key(w));
            if t.watchers.is_empty() {
                // nobody watches it any more: drop it once the linger is over
                t.linger_gen += 1;
                let generation = t.linger_gen;
                t.linger_until = Some(now + linger);
                self.schedule(
                    now + linger,
                    Timer::Linger {
                        target: id,
                        generation,
                    },
                );
            }
            self.resuming.insert(id);
            self.mark_target(id, false);
            for package in Package::BOTH {
                let resume_in_dialog = self
                    .targets
                    .get(&id)
                    .is_some_and(|t| t.upstream(package).established());
                if resume_in_dialog {
                    self.send_subscribe(id, package, false, now);
                } else {
                    self.resubscribe_fresh(id, package, now);
                }
            }
        }
        tracing::info!(
            phones = r.phones,
            targets = r.targets,
            expired = r.expired,
            unreadable = r.unreadable,
            "restored subscriptions from the state store"
        );
        r
    }

    /// A restored target (credentials come from the configuration through the
    /// account's digest client, never from the store): nothing in flight, and both streams unknown until the upstream speaks
    /// again (a phone must never get a stale state as if it were current).
    fn resume_target(&mut self, t: &mut Target) {
        for up in [&mut t.dialog, &mut t.presence] {
            up.in_flight = false;
            up.last_request = None;
            up.notified = false;
            up.ever_notified = false;
            up.failures = 0;
            up.cseq = up.cseq.max(up.reserved_cseq);
            up.state = if up.established() {
                UpState::Active
            } else {
                UpState::Idle
            };
        }
        t.dialog_stream.set_unknown();
        t.presence_stream.set_unknown();
        t.merge();
    }

    /// The target's upstream refresh goes out now: its restored phones wait
    /// for the state at most `first_notify_timeout_ms` from here.
    pub(super) fn start_resumed_holds(&mut self, target: TargetId, now: Instant) {
        let Some(t) = self.targets.get(&target) else {
            return;
        };
        let until = now + self.first_notify_hold();
        let mut holds = Vec::new();
        for w in &t.watchers {
            if let Some(p) = self.phones.get_mut(w)
                && p.state == PhoneState::Holding
                && p.hold_until.is_none()
            {
                p.hold_until = Some(until);
                holds.push(*w);
            }
        }
        for phone in holds {
            self.schedule(until, Timer::PhoneHold { phone });
        }
    }

    /// SIGHUP: new configuration and profiles. Credentials and profiles are
    /// picked up, and every phone whose rendering changed gets a NOTIFY.
    pub fn reload(&mut self, env: super::Env, now: Instant) {
        self.env = env;
        for p in self.phones.values_mut() {
            p.profile.reresolve(&self.env.profiles);
        }
        for (account, client) in &mut self.digest {
            client.set_credentials(credentials(&self.env.cfg, account));
        }
        // new credentials are worth trying at once
        self.auth_gate.clear();
        let ids: Vec<TargetId> = self.targets.keys().copied().collect();
        for id in ids {
            self.recompute(id, now);
        }
    }
}

/// A restored phone subscription: its TCP connection is gone (NOTIFYs open a
/// new one), its counters continue from the reserved marks, and it holds its
/// next NOTIFY (a full state) until the target's state is known again.
fn resume_phone(p: &mut PhoneSub) {
    p.flow.conn = None;
    p.local_cseq = p.local_cseq.max(p.reserved_cseq);
    p.next_version = p.next_version.max(p.reserved_version);
    p.state = PhoneState::Holding;
    p.hold_until = None;
    p.last_doc = None;
    p.notify_in_flight = false;
    p.dirty = false;
    p.force_full = true;
}
