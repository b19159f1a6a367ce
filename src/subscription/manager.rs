//! The registry: targets and phone subscriptions, the indices that route
//! requests to them, and the timers. The transitions themselves belong to
//! [`PhoneSub`] (notifier side) and [`Upstream`] (subscriber side).

use super::build;
use super::notifier::{
    Accepted, AfterNotify, Initial, PhoneState, PhoneSub, ProfileRef, Refusal, Renderings, Update,
    offline_refusal,
};
use super::pacer::Pacer;
use super::subscriber::{Action, Failure, Owner, UpTimer, Upstream};
use super::target::{Target, UpNotified};
use super::timers::{Timer, Timers};
use super::types::*;
use crate::flow::Flow;
use crate::presence::MergedState;
use crate::profile::{Mode, Profile, RenderedDoc, SubState};
use crate::sip::{Method, SipMessage};
use crate::transaction::ServerKey;
use crate::util::{LogGate, Rng};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The subscription translator. See the module docs.
pub struct SubscriptionManager {
    pub(super) env: Env,
    pub(super) targets: HashMap<TargetId, Target>,
    pub(super) by_aor: HashMap<String, TargetId>,
    pub(super) phones: HashMap<PhoneId, PhoneSub>,
    /// (Call-ID, our tag) → phone subscription.
    pub(super) phone_index: HashMap<DialogKey, PhoneId>,
    /// Upstream Call-ID → (target, package).
    pub(super) upstream_index: HashMap<Bytes, (TargetId, Package)>,
    /// Call-IDs of upstream subscriptions we just ended, with when: their last
    /// NOTIFYs still get a 200 rather than a 481.
    retired: HashMap<Bytes, Instant>,
    pub(super) timers: Timers,
    /// Phone and target ids come from one counter.
    pub(super) next_id: u64,
    out: VecDeque<Out>,
    pub(super) rng: Rng,
    /// Upstream SUBSCRIBEs wait here for their turn.
    pacer: Pacer,
    /// What changed since the store last took it (only with a store).
    pub(super) changes: Option<Changes>,
    /// Restored targets whose upstream refresh has not gone out yet: their
    /// phones' hold deadline starts when it does.
    pub(super) resuming: HashSet<TargetId>,
    /// Upstream SUBSCRIBEs whose authentication failed (for the metrics).
    auth_failures: u64,
    /// Account user → the digest realm the upstream first challenged it with
    /// (when `[[account]] realm` does not pin one): no other realm is answered.
    realms: HashMap<String, String>,
    /// Phone subscriptions per source IP (`[security] max_subscriptions_per_source`).
    pub(super) per_source: HashMap<IpAddr, usize>,
    /// Refusals are logged at most once per source and interval.
    log_gate: LogGate,
}

/// Retry-After (seconds) of a SUBSCRIBE refused because a cap is reached.
pub const CAP_RETRY_AFTER_S: u32 = 60;

impl SubscriptionManager {
    pub fn new(env: Env, rng: Rng) -> Self {
        SubscriptionManager {
            pacer: Pacer::new(env.cfg.subscriptions.upstream_rate),
            changes: None,
            resuming: HashSet::new(),
            auth_failures: 0,
            realms: HashMap::new(),
            per_source: HashMap::new(),
            log_gate: LogGate::default(),
            env,
            targets: HashMap::new(),
            by_aor: HashMap::new(),
            phones: HashMap::new(),
            phone_index: HashMap::new(),
            upstream_index: HashMap::new(),
            retired: HashMap::new(),
            timers: Timers::default(),
            next_id: 1,
            out: VecDeque::new(),
            rng,
        }
    }

    // ----------------------------------------------------------- introspection

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }
    pub fn target_by_aor(&self, aor: &str) -> Option<&Target> {
        self.by_aor.get(aor).and_then(|id| self.targets.get(id))
    }
    pub fn phones(&self) -> impl Iterator<Item = &PhoneSub> {
        self.phones.values()
    }
    pub fn phone(&self, id: PhoneId) -> Option<&PhoneSub> {
        self.phones.get(&id)
    }

    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Upstream SUBSCRIBEs whose authentication failed since start.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures
    }

    /// Entries in the timer heap (stale ones included, until compacted).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Upstream SUBSCRIBEs waiting for the pacer.
    pub fn paced(&self) -> usize {
        self.pacer.queued()
    }

    pub(super) fn schedule(&mut self, at: Instant, t: Timer) {
        self.timers.schedule(at, t);
        if self.timers.needs_compaction() {
            let mut timers = std::mem::take(&mut self.timers);
            timers.compact(|t| self.timer_is_live(t));
            self.timers = timers;
        }
    }

    /// Whether a timer would still do something when it fires (a refresh, a
    /// REGISTER or a re-subscription leaves the older ones stale).
    fn timer_is_live(&self, t: &Timer) -> bool {
        match *t {
            Timer::PhoneExpire { phone, generation } => self
                .phones
                .get(&phone)
                .is_some_and(|p| p.timer_gen == generation),
            Timer::PhoneHold { phone } => self
                .phones
                .get(&phone)
                .is_some_and(|p| p.state == PhoneState::Holding),
            Timer::Up(target, package, timer) => self
                .targets
                .get(&target)
                .is_some_and(|t| t.upstream(package).on_timer(timer) != Action::Nothing),
            Timer::Pace => true,
            Timer::Linger { target, generation } => self
                .targets
                .get(&target)
                .is_some_and(|t| t.lingered(generation)),
        }
    }

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

    /// The refusal of a SUBSCRIBE beyond a cap of `[security]`: the source's
    /// share (403: waiting does not help), the target's watchers or the
    /// bridge's targets (503 with Retry-After). Logged once per source and
    /// interval.
    fn over_cap(
        &mut self,
        src: IpAddr,
        existing: Option<TargetId>,
        expires: u32,
        aor: &str,
        now: Instant,
    ) -> Option<Refusal> {
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
    fn answer_unwatched_fetch(
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

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn respond(&mut self, key: ServerKey, data: Bytes) {
        self.out.push_back(Out::Response { key, data });
    }

    // ------------------------------------------------------------ routing

    /// The profile of the phone that sent `msg`: the first whose User-Agent
    /// pattern matches, else `[profiles] default`.
    pub fn profile_for(&self, msg: &SipMessage) -> &Arc<Profile> {
        let p = self.env.profiles.select_shared(msg.user_agent());
        if p.name() == crate::profile::GENERIC
            && let Some(d) = self.env.profiles.get_shared(&self.env.cfg.default_profile)
        {
            return d;
        }
        p
    }

    /// Where `msg` belongs. In order: our upstream dialogs (by Call-ID), a late
    /// NOTIFY of one just ended, our phone dialogs (by Call-ID and To-tag), and
    /// out-of-dialog dialog-event SUBSCRIBEs of translate-profile phones.
    pub fn route(&self, msg: &SipMessage) -> Route {
        let method = msg.method();
        let Some(to_tag) = msg.to_tag() else {
            let translate = method == Some(&Method::Subscribe)
                && matches!(msg.event(), Some(Ok(e)) if e.is("dialog"))
                && self.profile_for(msg).mode() == Mode::Translate;
            return if translate {
                Route::NewTranslated
            } else {
                Route::NotOurs
            };
        };
        let Some(cid) = msg.call_id() else {
            return Route::NotOurs;
        };
        if let Some(&(target, package)) = self.upstream_index.get(cid) {
            return Route::Upstream(target, package);
        }
        if self.retired.contains_key(cid) && method == Some(&Method::Notify) {
            return Route::RetiredNotify;
        }
        match self.phone_index.get(&DialogKey::new(cid, to_tag)) {
            Some(&id) => Route::PhoneDialog(id),
            None => Route::NotOurs,
        }
    }

    /// A request [`route`](Self::route) found to be ours, with its server
    /// transaction and the flow it came on.
    pub fn on_request(
        &mut self,
        route: Route,
        key: ServerKey,
        msg: &SipMessage,
        flow: Flow,
        now: Instant,
    ) {
        match route {
            Route::Upstream(target, package) => {
                self.on_upstream_request(target, package, key, msg, now)
            }
            Route::RetiredNotify => self.respond(key, build::response(msg, 200, "OK", None, &[])),
            Route::PhoneDialog(id) if msg.method() == Some(&Method::Subscribe) => {
                self.on_phone_resubscribe(id, key, msg, flow, now)
            }
            Route::PhoneDialog(_) => {
                let allow = [("Allow", "SUBSCRIBE".to_string())];
                let data = build::response(msg, 405, "Method Not Allowed", None, &allow);
                self.respond(key, data);
            }
            Route::NewTranslated => self.on_phone_initial(key, msg, flow, now),
            Route::NotOurs => {}
        }
    }

    // ------------------------------------------------------------ phone side

    fn refuse(&mut self, key: ServerKey, msg: &SipMessage, (code, reason, extra): Refusal) {
        self.respond(key, build::response(msg, code, reason, None, &extra));
    }

    fn on_phone_initial(&mut self, key: ServerKey, msg: &SipMessage, flow: Flow, now: Instant) {
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
        let hold_ms = self.env.cfg.subscriptions.first_notify_timeout_ms;
        sub.hold_until = (!ready).then(|| now + Duration::from_millis(hold_ms));
        let hold_until = sub.hold_until;
        self.phone_index.insert(sub.key(), id);
        self.count_source(flow.remote.ip(), true);
        self.phones.insert(id, sub);
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
            None => self.release_first_notify(id, false, &mut Renderings::default(), now),
        }
    }

    fn on_phone_resubscribe(
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
            tracing::info!(phone = %flow, call_id = %sub.call_id, "phone unsubscribed");
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
                self.update_phone(id, &mut Renderings::default(), now);
            }
        }
    }

    /// Send the held first NOTIFY (`deadline`: the hold deadline passed before the
    /// upstream answered).
    fn release_first_notify(
        &mut self,
        id: PhoneId,
        deadline: bool,
        docs: &mut Renderings,
        now: Instant,
    ) {
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
            self.update_phone(id, docs, now);
        }
    }

    /// Send the phone the target's current rendering if it changed (or a full
    /// state was asked for); `docs` renders each profile once per target change.
    fn update_phone(&mut self, id: PhoneId, docs: &mut Renderings, now: Instant) {
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        if !sub.may_notify() {
            return;
        }
        let Some(target) = self.targets.get(&sub.target) else {
            return;
        };
        let Some(profile) = sub.profile.get(&self.env.profiles) else {
            return;
        };
        let rendering = docs.get(profile, target);
        match sub.on_rendering(rendering, &self.env, &mut self.rng, now) {
            Update::Nothing => {}
            Update::Notify(notify) => {
                self.out.push_back(notify);
                self.reserve_counters(id);
            }
            Update::Terminate(state) => {
                tracing::info!(phone = %id, target = %target.aor, "target offline: failing the phone subscription ({state})");
                self.terminate_phone(id, state, false, now);
            }
        }
    }

    /// The document the phone would get now (for a final NOTIFY).
    fn current_doc(&self, id: PhoneId) -> Option<RenderedDoc> {
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
    fn terminate_phone(&mut self, id: PhoneId, state: SubState<'_>, with_body: bool, now: Instant) {
        let doc = with_body.then(|| self.current_doc(id)).flatten();
        let branch = self.rng.branch();
        if let Some(sub) = self.phones.get_mut(&id) {
            sub.end();
            let notify = sub.notify(&self.env, &branch, state, doc.as_ref());
            self.out.push_back(notify);
        }
        self.remove_phone(id, now);
    }

    fn remove_phone(&mut self, id: PhoneId, now: Instant) {
        let Some(sub) = self.phones.remove(&id) else {
            return;
        };
        self.count_source(sub.flow.remote.ip(), false);
        self.mark_phone(id);
        self.phone_index.remove(&sub.key());
        let until = now + Duration::from_secs(self.env.cfg.subscriptions.linger_s);
        let linger = self
            .targets
            .get_mut(&sub.target)
            .and_then(|t| t.unwatch(id, until));
        if let Some(generation) = linger {
            let target = sub.target;
            self.schedule(until, Timer::Linger { target, generation });
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

    // ------------------------------------------------------------ targets

    fn ensure_target(
        &mut self,
        aor: &str,
        user: &str,
        from_user: Option<&str>,
        now: Instant,
    ) -> TargetId {
        if let Some(&id) = self.by_aor.get(aor) {
            return id;
        }
        let id = TargetId(self.next_id());
        let account = self.env.cfg.account_for(from_user);
        let t = Target::new(id, aor, user, account, &mut self.rng);
        for up in [&t.dialog, &t.presence] {
            let call_id = Bytes::from(up.call_id.clone());
            self.upstream_index.insert(call_id, (id, up.package));
        }
        tracing::info!(target = %aor, "watching new target: subscribing upstream to dialog and presence");
        self.by_aor.insert(aor.to_string(), id);
        self.targets.insert(id, t);
        self.mark_target(id, true);
        for package in Package::BOTH {
            self.send_subscribe(id, package, false, now);
        }
        id
    }

    /// Recompute the merged view and notify every watcher whose document changed
    /// (one rendering per profile, stamped per phone).
    pub(super) fn recompute(&mut self, target: TargetId, now: Instant) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        t.merge();
        let ready = t.ready();
        let watchers = t.watchers.clone();
        let mut docs = Renderings::default();
        for w in watchers {
            let holding = self
                .phones
                .get(&w)
                .is_some_and(|p| p.state == PhoneState::Holding);
            if !holding {
                self.update_phone(w, &mut docs, now);
            } else if ready {
                self.release_first_notify(w, false, &mut docs, now);
            }
        }
    }

    fn drop_target(&mut self, target: TargetId, now: Instant) {
        let Some(t) = self.targets.get(&target) else {
            return;
        };
        tracing::info!(target = %t.aor, "no phone watches the target any more: unsubscribing upstream");
        let established = Package::BOTH.map(|p| t.upstream(p).established().then_some(p));
        for p in established.into_iter().flatten() {
            self.send_subscribe(target, p, true, now);
        }
        self.mark_target(target, true);
        if let Some(t) = self.targets.remove(&target) {
            self.by_aor.remove(&t.aor);
            for up in [t.dialog, t.presence] {
                let call_id = Bytes::from(up.call_id);
                self.upstream_index.remove(&call_id);
                self.retire(call_id, now);
            }
        }
    }

    // ------------------------------------------------------------ upstream side

    /// Send an upstream SUBSCRIBE when the pacer allows it, else queue it (an
    /// un-SUBSCRIBE goes at once: its target is about to be forgotten).
    pub(super) fn send_subscribe(
        &mut self,
        target: TargetId,
        package: Package,
        unsubscribe: bool,
        now: Instant,
    ) {
        if unsubscribe {
            self.pacer.force(now);
        } else if !self.pacer.try_take(now) {
            if self.pacer.enqueue(target, package) {
                self.schedule_pace(now);
            }
            return;
        }
        self.send_subscribe_now(target, package, unsubscribe, now);
    }

    fn schedule_pace(&mut self, now: Instant) {
        let Some(at) = self.pacer.next_at(now) else {
            return;
        };
        if self.pacer.timer.is_some_and(|t| t <= at) {
            return;
        }
        self.pacer.timer = Some(at);
        self.schedule(at, Timer::Pace);
    }

    fn on_pace(&mut self, now: Instant) {
        self.pacer.timer = None;
        while let Some((target, package)) = self.pacer.pop_ready(now) {
            if self.targets.contains_key(&target) {
                self.send_subscribe_now(target, package, false, now);
            }
        }
        self.schedule_pace(now);
    }

    fn send_subscribe_now(
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
        let request = up.subscribe(&self.env, owner, &branch, unsubscribe, &mut self.rng);
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
    fn retire(&mut self, call_id: Bytes, now: Instant) {
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
    fn upstream_failed(&mut self, target: TargetId, package: Package, f: Failure, now: Instant) {
        let jitter = Duration::from_millis(self.rng.below(1000));
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let wait = t.fail(package, f, &self.env.cfg.subscriptions);
        self.mark_target(target, false);
        let at = now + Duration::from_secs(wait.delay_s) + jitter;
        let retry = UpTimer::Retry {
            generation: wait.generation,
        };
        self.schedule(at, Timer::Up(target, package, retry));
        self.recompute(target, now);
    }

    /// Carry out what an [`Upstream`] transition asks for.
    fn act(&mut self, target: TargetId, package: Package, action: Action, now: Instant) {
        match action {
            Action::Nothing => {}
            Action::Schedule { after, timer } => {
                self.schedule(now + after, Timer::Up(target, package, timer))
            }
            Action::Resubscribe => self.send_subscribe(target, package, false, now),
            Action::Restart => self.resubscribe_fresh(target, package, now),
            Action::Failed(f) => {
                if f.why.starts_with("authentication failed") {
                    self.auth_failures += 1;
                }
                self.upstream_failed(target, package, f, now)
            }
        }
    }

    /// The outcome of a request the manager sent.
    pub fn on_response(&mut self, tag: ReqTag, msg: &SipMessage, now: Instant) {
        match tag {
            ReqTag::Notify { phone, cseq } => {
                let Some(sub) = self.phones.get_mut(&phone) else {
                    return;
                };
                match sub.on_notify_response(cseq, msg.status().unwrap_or(0)) {
                    AfterNotify::Nothing => {}
                    AfterNotify::Update => {
                        self.update_phone(phone, &mut Renderings::default(), now)
                    }
                    AfterNotify::Remove => self.remove_phone(phone, now),
                }
            }
            ReqTag::Upstream {
                target,
                package,
                generation,
                cseq,
                unsubscribe,
            } => {
                let Some(t) = self.targets.get_mut(&target) else {
                    return;
                };
                let up = match package {
                    Package::Dialog => &mut t.dialog,
                    Package::Presence => &mut t.presence,
                };
                if unsubscribe || !up.is_current(generation, cseq) {
                    return;
                }
                let default_expires = self.env.cfg.subscriptions.upstream_expires;
                let had_dialog = up.remote_tag.is_some();
                // the account's realm: pinned in the config, or the first one
                // the upstream challenged it with
                let pinned = self
                    .env
                    .cfg
                    .account_for(Some(&t.account))
                    .and_then(|a| a.realm.as_deref());
                let realm = pinned.or_else(|| self.realms.get(&t.account).map(String::as_str));
                let mut answered = None;
                let action = up.on_response(
                    msg,
                    default_expires,
                    &t.aor,
                    realm,
                    &mut answered,
                    now,
                    &mut self.rng,
                );
                if let Some(r) = answered
                    && realm.is_none()
                {
                    tracing::info!(account = %t.account, realm = %r, "upstream realm kept for the account");
                    self.realms.insert(t.account.clone(), r);
                }
                // a new dialog is worth a disk sync; a refresh is not
                let durable = !had_dialog && up.remote_tag.is_some();
                self.mark_target(target, durable);
                self.act(target, package, action, now);
            }
        }
    }

    /// A client transaction timed out (Timer F) without a final response.
    pub fn on_request_timeout(&mut self, tag: ReqTag, now: Instant) {
        match tag {
            ReqTag::Notify { phone, .. } => {
                if self.phones.contains_key(&phone) {
                    tracing::warn!(%phone, "NOTIFY timed out: removing the phone subscription");
                    self.remove_phone(phone, now);
                }
            }
            ReqTag::Upstream {
                target,
                package,
                generation,
                unsubscribe: false,
                ..
            } => {
                if let Some(up) = self.upstream(target, package) {
                    let action = up.on_request_timeout(generation);
                    self.act(target, package, action, now);
                }
            }
            ReqTag::Upstream { .. } => {}
        }
    }

    /// A request the upstream sent into one of our subscription dialogs.
    fn on_upstream_request(
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

    // ------------------------------------------------------------ timers

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
    }

    fn upstream(&self, target: TargetId, package: Package) -> Option<&Upstream> {
        self.targets.get(&target).map(|t| t.upstream(package))
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::PhoneExpire { phone, generation } => {
                let Some(p) = self.phones.get(&phone) else {
                    return;
                };
                if p.timer_gen == generation {
                    tracing::info!(%phone, "phone subscription expired");
                    self.terminate_phone(phone, SubState::TIMEOUT, true, now);
                }
            }
            Timer::PhoneHold { phone } => {
                self.release_first_notify(phone, true, &mut Renderings::default(), now)
            }
            Timer::Pace => self.on_pace(now),
            Timer::Up(target, package, timer) => {
                if let Some(up) = self.upstream(target, package) {
                    let action = up.on_timer(timer);
                    self.act(target, package, action, now);
                }
            }
            Timer::Linger { target, generation } => {
                if self
                    .targets
                    .get(&target)
                    .is_some_and(|t| t.lingered(generation))
                {
                    self.drop_target(target, now);
                }
            }
        }
    }
}

#[allow(dead_code)]
fn _assert_plain_data() {
    fn is_serde<T: serde::Serialize + for<'de> serde::Deserialize<'de>>() {}
    is_serde::<PhoneSub>();
    is_serde::<Upstream>();
    is_serde::<Target>();
}
