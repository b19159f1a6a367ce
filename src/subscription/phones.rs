//! The registry's phone side: a phone's SUBSCRIBE accepted, refreshed,
//! refused (caps, watchers) or ended, and the NOTIFYs it gets. The transitions
//! of one subscription belong to [`PhoneSub`]; this is the bookkeeping around
//! them (indices, per-source counts, timers).

use super::build;
use super::manager::{CAP_RETRY_AFTER_S, Queued, SubscriptionManager};
use super::notifier::*;
use super::timers::Timer;
use super::types::*;
use crate::flow::Flow;
use crate::presence::MergedState;
use crate::profile::{Profile, RenderedDoc, Rendering, SubState};
use crate::sip::SipMessage;
use crate::transaction::ServerKey;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl SubscriptionManager {
    /// Whether the phone subscription has shown that its source is real (it
    /// answered a NOTIFY or refreshed in the dialog). Unknown ones have not.
    pub fn is_verified(&self, phone: PhoneId) -> bool {
        self.phones.get(&phone).is_some_and(|p| p.verified)
    }

    /// Count a phone subscription in (or out of) its source's share.
    pub(super) fn count_source(&mut self, ip: IpAddr, add: bool) {
        if add {
            *self.per_source.entry(ip).or_default() += 1;
        } else if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }

    /// A phone subscription from `ip` ended without its source ever answering
    /// a NOTIFY: its share of `max_subscriptions_per_source` stays taken for
    /// `[security] block_s` more. A source flooding SUBSCRIBEs it never answers
    /// (spoofed, or not a phone) so gets its 200 subscriptions once per Timer F
    /// plus `block_s`, not once per Timer F; a phone answers its first NOTIFY.
    pub(super) fn owe_share(&mut self, ip: IpAddr, now: Instant) {
        self.give_back_shares(now);
        self.count_source(ip, true);
        let until = now + Duration::from_secs(self.env.cfg.security.block_s);
        self.owed.push_back((until, ip));
    }

    /// Shares owed since `block_s` ago are given back.
    pub(super) fn give_back_shares(&mut self, now: Instant) {
        while let Some(&(until, ip)) = self.owed.front() {
            if until > now {
                break;
            }
            self.owed.pop_front();
            self.count_source(ip, false);
        }
    }

    /// The refusal of a SUBSCRIBE beyond a cap of `[security]`: the source's
    /// share (403: waiting does not help), the target's watchers or the
    /// bridge's targets (503 with Retry-After). Logged once per source and
    /// interval.
    pub(super) fn over_cap(
        &mut self,
        src: IpAddr,
        existing: Option<TargetId>,
        expires: u32,
        aor: &str,
        now: Instant,
    ) -> Option<Refusal> {
        self.give_back_shares(now);
        let sec = &self.env.cfg.security;
        let retry = vec![("Retry-After", CAP_RETRY_AFTER_S.to_string())];
        let from_source = self.per_source.get(&src).copied().unwrap_or(0);
        let watchers = existing
            .and_then(|id| self.targets.get(&id))
            .map(|t| t.watchers.len());
        let (refusal, cap, limit): (Refusal, _, _) =
            if from_source >= sec.max_subscriptions_per_source {
                let r = (403, "Too Many Subscriptions From This Source", Vec::new());
                (
                    r,
                    "max_subscriptions_per_source",
                    sec.max_subscriptions_per_source,
                )
            } else if watchers.is_some_and(|w| w >= sec.max_subscriptions_per_target) {
                let r = (503, "Service Unavailable", retry);
                (
                    r,
                    "max_subscriptions_per_target",
                    sec.max_subscriptions_per_target,
                )
            } else if existing.is_none() && expires > 0 && self.targets.len() >= sec.max_targets {
                (
                    (503, "Service Unavailable", retry),
                    "max_targets",
                    sec.max_targets,
                )
            } else {
                return None;
            };
        if self.log_gate.allow(src, now) {
            tracing::warn!(source = %src, target = %aor, cap, limit, code = refusal.0, "phone SUBSCRIBE refused: [security] cap reached (logged once per source every 10 s)");
        }
        Some(refusal)
    }

    /// A fetch (`Expires: 0`) of a target nobody watches: answered from what
    /// is known — nothing, so the profile's unknown rendering, terminated —
    /// without an upstream subscription.
    pub(super) fn answer_unwatched_fetch(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        flow: Flow,
        req: Initial,
        profile: Arc<Profile>,
        now: Instant,
    ) {
        let aor = &format!("sip:{}@{}", req.user, self.env.cfg.upstream.domain);
        let local_tag = self.rng.tag();
        let ok = build::subscribe_ok(&self.env, msg, flow, Some(&local_tag), 0);
        self.respond(key, ok);
        let accepted = Accepted {
            id: PhoneId(self.next_id()),
            target: TargetId(0),
            profile: ProfileRef::new(&profile),
            remote_target: req.contact,
            flow,
            local_tag,
            expires: 0,
        };
        let mut sub = PhoneSub::accept(accepted, msg, now);
        sub.release();
        sub.end();
        let view = crate::presence::TargetView::new(MergedState::Unknown);
        let doc = crate::profile::render(&profile, aor, &view)
            .document()
            .cloned();
        let branch = self.rng.branch();
        tracing::debug!(phone = %flow, target = %aor, "fetch of an unwatched target: answered unknown, nothing upstream");
        let notify = sub.notify(&self.env, &branch, SubState::TIMEOUT, doc.as_ref());
        self.out.push_back(notify);
    }

    // ------------------------------------------------------------ phone side

    pub(super) fn refuse(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        (code, reason, extra): Refusal,
    ) {
        self.respond(key, build::response(msg, code, reason, None, &extra));
    }

    pub(super) fn on_phone_initial(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        flow: Flow,
        now: Instant,
    ) {
        let req = match Initial::check(msg, &self.env.cfg.subscriptions) {
            Ok(req) => req,
            Err(refusal) => return self.refuse(key, msg, refusal),
        };
        let profile = self.profile_for(msg);
        let aor = format!("sip:{}@{}", req.user, self.env.cfg.upstream.domain);
        // fail-subscription profiles: refuse while the target is known offline
        let offline =
            (self.target_by_aor(&aor)).is_some_and(|t| t.view.state == MergedState::Offline);
        if offline && let Some(refusal) = offline_refusal(profile) {
            return self.refuse(key, msg, refusal);
        }
        let profile = profile.clone();
        let existing = self.by_aor.get(&aor).copied();
        if let Some(refusal) = self.over_cap(flow.remote.ip(), existing, req.expires, &aor, now) {
            return self.refuse(key, msg, refusal);
        }
        if existing.is_none() && req.expires == 0 {
            return self.answer_unwatched_fetch(key, msg, flow, req, profile, now);
        }
        let profile = ProfileRef::new(&profile);
        let target = self.ensure_target(&aor, &req.user, req.from_user.as_deref(), now);

        let local_tag = self.rng.tag();
        let id = PhoneId(self.next_id());
        let expires = req.expires;
        let ok = build::subscribe_ok(&self.env, msg, flow, Some(&local_tag), expires);
        self.respond(key, ok);
        let accepted = Accepted {
            id,
            target,
            profile,
            remote_target: req.contact,
            flow,
            local_tag,
            expires,
        };
        let mut sub = PhoneSub::accept(accepted, msg, now);
        // reserve the counters with the first write: the first RESERVE NOTIFYs
        // then cost no disk write at all
        sub.reserved_cseq = RESERVE;
        sub.reserved_version = RESERVE;
        tracing::info!(
            phone = %flow, target = %aor, profile = %sub.profile.name(), expires,
            "phone subscription accepted"
        );
        let ready = self.targets.get_mut(&target).is_some_and(|t| t.watch(id));
        sub.hold_until = (!ready).then(|| now + self.first_notify_hold());
        let hold_until = sub.hold_until;
        self.phone_index.insert(sub.key(), id);
        self.count_source(flow.remote.ip(), true);
        self.phones.insert(id, Box::new(sub));
        self.mark_phone(id);
        if expires > 0 {
            let at = now + Duration::from_secs(expires as u64);
            let expire = Timer::PhoneExpire {
                phone: id,
                generation: 0,
            };
            self.schedule(at, expire);
        }
        match hold_until {
            Some(until) => self.schedule(until, Timer::PhoneHold { phone: id }),
            None => {
                self.fresh_docs(target);
                self.release_first_notify(id, false, now);
                self.settle_docs(target);
            }
        }
    }

    pub(super) fn on_phone_resubscribe(
        &mut self,
        id: PhoneId,
        key: ServerKey,
        msg: &SipMessage,
        flow: Flow,
        now: Instant,
    ) {
        let Some(sub) = self.phones.get(&id) else {
            return;
        };
        let (cseq, expires) = match sub.check_resubscribe(msg, &self.env.cfg.subscriptions) {
            Ok(granted) => granted,
            Err(refusal) => return self.refuse(key, msg, refusal),
        };
        let target_offline = self
            .targets
            .get(&sub.target)
            .is_some_and(|t| t.view.state == MergedState::Offline);
        let refusal = sub
            .profile
            .get(&self.env.profiles)
            .and_then(|p| offline_refusal(p));
        if let (Some(refusal), true, true) = (refusal, target_offline, expires > 0) {
            self.refuse(key, msg, refusal);
            return self.remove_phone(id, now);
        }
        self.respond(
            key,
            build::subscribe_ok(&self.env, msg, flow, None, expires),
        );
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        let old_ip = sub.flow.remote.ip();
        sub.refresh(msg, cseq, flow, expires, now);
        let target = sub.target;
        if let Some(t) = self.targets.get_mut(&target)
            && !t.verified_watch
        {
            t.verified_watch = true;
            self.mark_target(target, false);
        }
        if old_ip != flow.remote.ip() {
            // the subscription now counts in its new source's share
            self.count_source(old_ip, false);
            self.count_source(flow.remote.ip(), true);
        }
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        if let Some(c) = self.changes.as_mut() {
            c.phones.insert(id, true);
        }
        if expires == 0 {
            tracing::info!(phone = %flow, call_id = %sub.call_id(), "phone unsubscribed");
            self.terminate_phone(id, SubState::TIMEOUT, true, now);
        } else {
            let (at, generation) = (sub.expires_at, sub.timer_gen);
            let holding = sub.state == PhoneState::Holding;
            let expire = Timer::PhoneExpire {
                phone: id,
                generation,
            };
            self.schedule(at, expire);
            if !holding {
                self.update_phone_alone(id, now);
            }
        }
    }

    /// Send the held first NOTIFY (`deadline`: the hold deadline passed before the
    /// upstream answered).
    pub(super) fn release_first_notify(&mut self, id: PhoneId, deadline: bool, now: Instant) {
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        if !sub.release() {
            return;
        }
        if deadline {
            tracing::debug!(
                phone = %id,
                "upstream not answered by the hold deadline: rendering what is known"
            );
        }
        if sub.fetch {
            self.terminate_phone(id, SubState::TIMEOUT, true, now);
        } else {
            self.update_phone(id, now);
        }
    }

    /// A NOTIFY decided for one phone on its own (a refresh, the end of the
    /// NOTIFY in flight): rendered afresh.
    pub(super) fn update_phone_alone(&mut self, id: PhoneId, now: Instant) {
        let Some(target) = self.phones.get(&id).map(|p| p.target) else {
            return;
        };
        self.fresh_docs(target);
        self.update_phone(id, now);
        self.settle_docs(target);
    }

    /// Decide whether the phone gets the target's current rendering: if it
    /// changed (or a full state was asked for), a NOTIFY is queued with its
    /// CSeq and version reserved (and the reserved marks moved ahead in the
    /// store when reached); it is built when the endpoint sends it. The
    /// target's renderings in [`fanout_docs`](Self::fanout_docs) render each
    /// profile once per target change.
    pub(super) fn update_phone(&mut self, id: PhoneId, now: Instant) {
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        let queued = sub.queued;
        if !queued && !sub.may_notify() {
            return;
        }
        let Some(target) = self.targets.get(&sub.target) else {
            return;
        };
        let Some(profile) = sub.profile.get(&self.env.profiles) else {
            return;
        };
        let slot = self.fanout_docs.entry(sub.target).or_default();
        let (rendering, digest) = slot.docs.get(profile, target);
        let end = match rendering {
            Rendering::Terminate {
                reason,
                retry_after,
            } => Some((reason.clone(), *retry_after)),
            Rendering::Document(_) => None,
        };
        if queued && end.is_none() {
            // its queued NOTIFY is built from the newest rendering anyway
            return;
        }
        match sub.on_rendering(rendering, digest) {
            Update::Nothing => {}
            Update::Notify(cseq, version) => {
                slot.queued += 1;
                let target = sub.target;
                let marks_moved = sub.move_marks();
                self.fanout.push_back(Queued {
                    phone: id,
                    target,
                    cseq,
                    version,
                    decided: now,
                });
                if marks_moved {
                    // written (durably) before any of the fan-out leaves
                    self.mark_phone(id);
                }
            }
            Update::Terminate => {
                let (reason, retry_after) = end.unwrap_or_default();
                let aor = &target.aor;
                let state = SubState::Terminated {
                    reason: &reason,
                    retry_after,
                };
                tracing::info!(phone = %id, target = %aor, "target offline: failing the phone subscription ({state})");
                self.terminate_phone(id, state, false, now);
            }
        }
    }

    /// The document the phone would get now (for a final NOTIFY).
    pub(super) fn current_doc(&self, id: PhoneId) -> Option<RenderedDoc> {
        let sub = self.phones.get(&id)?;
        let target = self.targets.get(&sub.target)?;
        let profile = sub.profile.get(&self.env.profiles)?;
        let view = target.phone_view();
        crate::profile::render(profile, &target.aor, &view)
            .document()
            .cloned()
    }

    /// Send the final NOTIFY (with the current document when `with_body`) and
    /// remove the subscription at once.
    pub(super) fn terminate_phone(
        &mut self,
        id: PhoneId,
        state: SubState<'_>,
        with_body: bool,
        now: Instant,
    ) {
        let doc = with_body.then(|| self.current_doc(id)).flatten();
        let branch = self.rng.branch();
        if let Some(sub) = self.phones.get_mut(&id) {
            sub.end();
            let notify = sub.notify(&self.env, &branch, state, doc.as_ref());
            self.out.push_back(notify);
        }
        self.remove_phone(id, now);
    }

    pub(super) fn remove_phone(&mut self, id: PhoneId, now: Instant) {
        let Some(sub) = self.phones.remove(&id) else {
            return;
        };
        self.count_source(sub.flow.remote.ip(), false);
        self.mark_phone(id);
        self.phone_index.remove(&sub.key());
        let mut until = now + Duration::from_secs(self.env.cfg.subscriptions.linger_s);
        if let Some(t) = self.targets.get(&sub.target) {
            // a refused target is remembered until its next attempt: a phone
            // coming back meanwhile (a fail-subscription profile does) gets
            // what is known instead of a new upstream SUBSCRIBE
            until = until.max(t.refused_until().unwrap_or(until));
        }
        let linger = self
            .targets
            .get_mut(&sub.target)
            .and_then(|t| t.unwatch(id, until));
        let Some(generation) = linger else {
            return;
        };
        let target = sub.target;
        // kept: a target a real phone watched (it may come back), and a refused
        // one until its retry (a phone coming back meanwhile gets what is known,
        // not a new upstream SUBSCRIBE)
        if self
            .targets
            .get(&target)
            .is_some_and(|t| t.verified_watch || t.refused_until().is_some_and(|r| r > now))
        {
            self.schedule(until, Timer::Linger { target, generation });
        } else {
            // no watcher ever showed its source is real: nobody to keep the
            // upstream subscriptions for
            self.drop_target(target, now);
        }
    }

    /// A phone's TCP connection went away: later NOTIFYs may open a new one.
    pub fn connection_closed(&mut self, conn: crate::flow::ConnId) {
        for p in self.phones.values_mut() {
            if p.flow.conn == Some(conn) {
                p.flow.conn = None;
            }
        }
    }
}
