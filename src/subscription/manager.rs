//! The registry: targets and phone subscriptions, the indices that route
//! requests to them, and the timers. The transitions themselves belong to
//! [`PhoneSub`] (notifier side) and [`Upstream`] (subscriber side).

use super::build;
use super::notifier::{Accepted, AfterNotify, PhoneState, PhoneSub, ProfileRef, Renderings};
use super::subscriber::{Action, Upstream};
use super::types::*;
use crate::auth::Credentials;
use crate::config::Config;
use crate::endpoint::LocalAddrs;
use crate::flow::Flow;
use crate::presence::{DialogStream, MergedState, PresenceStream, TargetView};
use crate::profile::{
    Mode, OfflineStrategy, Profile, ProfileSet, RenderedDoc, Rendering, SubState,
};
use crate::sip::typed::SubStateKind;
use crate::sip::{Method, SipMessage};
use crate::transaction::ServerKey;
use crate::util::Rng;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the manager needs to know about its surroundings.
#[derive(Clone)]
pub struct Env {
    pub cfg: Arc<Config>,
    pub profiles: Arc<ProfileSet>,
    pub local: LocalAddrs,
    /// Flow towards `[upstream] proxy`.
    pub upstream: Flow,
    /// RFC 3261 T1 (Timer N = 64·T1).
    pub t1: Duration,
    /// User-Agent header of requests the bridge originates.
    pub user_agent: String,
}

/// Identifies what a client transaction started by the manager was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReqTag {
    Notify {
        phone: PhoneId,
        cseq: u32,
    },
    Upstream {
        target: TargetId,
        package: Package,
        generation: u32,
        cseq: u32,
        unsubscribe: bool,
    },
}

/// Work for the endpoint.
#[derive(Debug, Clone)]
pub enum Out {
    /// Send through a new client transaction; report its outcome with `tag`.
    Request {
        flow: Flow,
        data: Bytes,
        tag: ReqTag,
    },
    /// Answer a server transaction.
    Response { key: ServerKey, data: Bytes },
}

/// Where an incoming request belongs: the one question the endpoint asks
/// ([`SubscriptionManager::route`]); it hands every route but
/// [`NotOurs`](Route::NotOurs) back to [`SubscriptionManager::on_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// In one of our upstream subscription dialogs, recognised by its Call-ID
    /// (ours, random) whatever flow it arrives on.
    Upstream(TargetId, Package),
    /// A NOTIFY in an upstream subscription we just ended: answered 200.
    RetiredNotify,
    /// In a phone subscription the bridge terminates (Call-ID and our tag).
    PhoneDialog(PhoneId),
    /// An out-of-dialog dialog-event SUBSCRIBE whose phone's profile translates.
    NewTranslated,
    /// Not for the subscription translator.
    NotOurs,
}

impl Route {
    /// Phone-side routes; a request from the upstream is never one.
    pub fn is_phone_side(self) -> bool {
        matches!(self, Route::PhoneDialog(_) | Route::NewTranslated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    PhoneExpire {
        phone: PhoneId,
        generation: u32,
    },
    PhoneHold {
        phone: PhoneId,
    },
    UpRefresh {
        target: TargetId,
        package: Package,
        generation: u32,
        cseq: u32,
    },
    UpRetry {
        target: TargetId,
        package: Package,
        generation: u32,
    },
    UpTimerN {
        target: TargetId,
        package: Package,
        generation: u32,
    },
    Linger {
        target: TargetId,
        generation: u32,
    },
}

/// The subscription translator. See the module docs.
pub struct SubscriptionManager {
    env: Env,
    targets: HashMap<TargetId, Target>,
    by_aor: HashMap<String, TargetId>,
    phones: HashMap<PhoneId, PhoneSub>,
    /// (Call-ID, our tag) → phone subscription.
    phone_index: HashMap<DialogKey, PhoneId>,
    /// Upstream Call-ID → (target, package).
    upstream_index: HashMap<Bytes, (TargetId, Package)>,
    /// Call-IDs of upstream subscriptions we just ended, with when: their last
    /// NOTIFYs still get a 200 rather than a 481.
    retired: HashMap<Bytes, Instant>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    /// Phone and target ids come from one counter.
    next_id: u64,
    out: VecDeque<Out>,
    rng: Rng,
}

impl SubscriptionManager {
    pub fn new(env: Env, seed: u64) -> Self {
        SubscriptionManager {
            env,
            targets: HashMap::new(),
            by_aor: HashMap::new(),
            phones: HashMap::new(),
            phone_index: HashMap::new(),
            upstream_index: HashMap::new(),
            retired: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            next_id: 1,
            out: VecDeque::new(),
            rng: Rng::seeded(seed),
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
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    fn schedule(&mut self, at: Instant, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
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

    fn granted_expires(&self, msg: &SipMessage) -> Result<u32, (u16, &'static str, u32)> {
        let s = &self.env.cfg.subscriptions;
        let req = match msg.expires() {
            None => s.default_expires,
            Some(Ok(e)) => e,
            Some(Err(_)) => return Err((400, "Malformed Expires", 0)),
        };
        if req != 0 && req < s.min_expires {
            return Err((423, "Interval Too Brief", s.min_expires));
        }
        Ok(req.min(s.max_expires))
    }

    /// The granted expiry, or `None` after answering the SUBSCRIBE with `423`
    /// (+ `Min-Expires`) or `400`.
    fn granted_or_refused(&mut self, key: &ServerKey, msg: &SipMessage) -> Option<u32> {
        match self.granted_expires(msg) {
            Ok(e) => Some(e),
            Err((code, reason, min)) => {
                let extra = if code == 423 {
                    vec![("Min-Expires", min.to_string())]
                } else {
                    Vec::new()
                };
                let data = build::response(msg, code, reason, None, &extra);
                self.respond(key.clone(), data);
                None
            }
        }
    }

    /// The refusal of a `fail-subscription` profile while the target is offline.
    fn offline_refusal(msg: &SipMessage, profile: &Profile) -> Option<Bytes> {
        let OfflineStrategy::FailSubscription {
            reject_code,
            retry_after,
            ..
        } = profile.offline()
        else {
            return None;
        };
        let mut extra = Vec::new();
        if let Some(r) = retry_after {
            extra.push(("Retry-After", r.to_string()));
        }
        let reason = crate::sip::reason_phrase(*reject_code);
        Some(build::response(msg, *reject_code, reason, None, &extra))
    }

    fn on_phone_initial(&mut self, key: ServerKey, msg: &SipMessage, flow: Flow, now: Instant) {
        // Accept must allow dialog-info (RFC 6665 §4.2.1.1: 406 otherwise)
        if msg.accepts("application/dialog-info+xml") == Some(false) {
            let accept = [("Accept", "application/dialog-info+xml".into())];
            let data = build::response(msg, 406, "Not Acceptable", None, &accept);
            return self.respond(key, data);
        }
        let Some(expires) = self.granted_or_refused(&key, msg) else {
            return;
        };
        // Target: the Request-URI user (the To user when the R-URI has none).
        let user = msg
            .request_uri()
            .and_then(|u| crate::sip::Uri::parse(u).ok())
            .and_then(|u| u.user_str().map(str::to_string))
            .or_else(|| {
                msg.to()
                    .and_then(|t| t.ok())
                    .and_then(|t| t.parsed_uri().ok())
                    .and_then(|u| u.user_str().map(str::to_string))
            });
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            let data = build::response(msg, 404, "Not Found", None, &[]);
            return self.respond(key, data);
        };
        let Some(contact) = msg
            .contacts()
            .next()
            .and_then(|(_, c)| c.ok())
            .map(|c| String::from_utf8_lossy(c.uri).into_owned())
        else {
            let data = build::response(msg, 400, "Missing Contact", None, &[]);
            return self.respond(key, data);
        };
        let profile = self.profile_for(msg);
        let aor = format!("sip:{}@{}", user, self.env.cfg.upstream.domain);
        // fail-subscription profiles: refuse while the target is known offline
        let offline =
            (self.target_by_aor(&aor)).is_some_and(|t| t.view.state == MergedState::Offline);
        if offline && let Some(data) = Self::offline_refusal(msg, profile) {
            return self.respond(key, data);
        }
        let profile = ProfileRef::new(profile);
        let from_user = msg
            .from()
            .and_then(|f| f.ok())
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user_str().map(str::to_string));
        let target = self.ensure_target(&aor, &user, from_user.as_deref(), now);

        let local_tag = self.rng.tag();
        let id = PhoneId(self.next_id());
        let contact_header = build::contact(&self.env, flow.transport);
        let data = build::response(
            msg,
            200,
            "OK",
            Some(&local_tag),
            &[
                ("Contact", contact_header),
                ("Expires", expires.to_string()),
            ],
        );
        self.respond(key, data);
        let accepted = Accepted {
            id,
            target,
            profile,
            remote_target: contact,
            flow,
            local_tag,
            expires,
        };
        let sub = PhoneSub::accept(accepted, msg, now);
        tracing::info!(
            phone = %flow, target = %aor, profile = %sub.profile.name(), expires,
            "phone subscription accepted"
        );
        self.phone_index.insert(sub.key(), id);
        self.phones.insert(id, sub);
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        t.watchers.push(id);
        t.linger_until = None;
        let ready = t.ready();
        if expires > 0 {
            let at = now + Duration::from_secs(expires as u64);
            let generation = 0;
            self.schedule(
                at,
                Timer::PhoneExpire {
                    phone: id,
                    generation,
                },
            );
        }
        if ready {
            self.release_first_notify(id, false, &mut Renderings::default(), now);
        } else {
            let until =
                now + Duration::from_millis(self.env.cfg.subscriptions.first_notify_timeout_ms);
            if let Some(p) = self.phones.get_mut(&id) {
                p.hold_until = Some(until);
            }
            self.schedule(until, Timer::PhoneHold { phone: id });
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
        let cseq = match sub.check_resubscribe(msg) {
            Ok(cseq) => cseq,
            Err((code, reason, extra)) => {
                let data = build::response(msg, code, reason, None, &extra);
                return self.respond(key, data);
            }
        };
        let target = sub.target;
        let Some(expires) = self.granted_or_refused(&key, msg) else {
            return;
        };
        let target_offline = self
            .targets
            .get(&target)
            .is_some_and(|t| t.view.state == MergedState::Offline);
        if target_offline && expires > 0 {
            let refusal = self.phones.get(&id).and_then(|sub| {
                let profile = sub.profile.get(&self.env.profiles)?;
                Self::offline_refusal(msg, profile)
            });
            if let Some(data) = refusal {
                self.respond(key, data);
                self.remove_phone(id, now);
                return;
            }
        }
        let contact_header = build::contact(&self.env, flow.transport);
        let extra = [
            ("Contact", contact_header),
            ("Expires", expires.to_string()),
        ];
        self.respond(key, build::response(msg, 200, "OK", None, &extra));
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        sub.refresh(msg, cseq, flow, expires, now);
        if expires == 0 {
            tracing::info!(phone = %flow, call_id = %sub.call_id, "phone unsubscribed");
            self.terminate_phone(id, SubState::TIMEOUT, true, now);
        } else {
            let (at, generation) = (sub.expires_at, sub.timer_gen);
            let holding = sub.state == PhoneState::Holding;
            self.schedule(
                at,
                Timer::PhoneExpire {
                    phone: id,
                    generation,
                },
            );
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
        match docs.get(profile, target) {
            terminate @ Rendering::Terminate { .. } => {
                let Some(state) = terminate.subscription_state() else {
                    return;
                };
                tracing::info!(phone = %id, target = %target.aor, "target offline: failing the phone subscription ({state})");
                self.terminate_phone(id, state, false, now);
            }
            Rendering::Document(doc) => {
                if !sub.wants(doc) {
                    return;
                }
                let branch = self.rng.branch();
                let state = sub.active_state(now);
                let notify = sub.notify(&self.env, &branch, state, Some(doc));
                self.out.push_back(notify);
            }
        }
    }

    /// The document the phone would get now (for a final NOTIFY).
    fn current_doc(&self, id: PhoneId) -> Option<RenderedDoc> {
        let sub = self.phones.get(&id)?;
        let target = self.targets.get(&sub.target)?;
        let profile = sub.profile.get(&self.env.profiles)?;
        match crate::profile::render(profile, &target.aor, &target.phone_view()) {
            Rendering::Document(d) => Some(d),
            Rendering::Terminate { .. } => None,
        }
    }

    /// Send the final NOTIFY (with the current document when `with_body`) and
    /// remove the subscription at once.
    fn terminate_phone(&mut self, id: PhoneId, state: SubState<'_>, with_body: bool, now: Instant) {
        let doc = if with_body {
            self.current_doc(id)
        } else {
            None
        };
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
        self.phone_index.remove(&sub.key());
        let Some(t) = self.targets.get_mut(&sub.target) else {
            return;
        };
        t.watchers.retain(|w| *w != id);
        if t.watchers.is_empty() {
            let linger = Duration::from_secs(self.env.cfg.subscriptions.linger_s);
            t.linger_gen += 1;
            t.linger_until = Some(now + linger);
            let (target, generation) = (t.id, t.linger_gen);
            self.schedule(now + linger, Timer::Linger { target, generation });
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
        let acc_user = account.map(|a| a.user.clone()).unwrap_or_default();
        let credentials = Credentials {
            username: account.map(|a| a.auth_user.clone()).unwrap_or_default(),
            password: account.map(|a| a.password.clone()).unwrap_or_default(),
        };
        let mut upstream = |package| {
            let call_id = build::call_id(&mut self.rng);
            let up = Upstream::new(package, call_id, self.rng.tag(), credentials.clone());
            self.upstream_index
                .insert(Bytes::from(up.call_id.clone()), (id, package));
            up
        };
        let (dialog, presence) = (upstream(Package::Dialog), upstream(Package::Presence));
        let t = Target {
            id,
            aor: aor.to_string(),
            user: user.to_string(),
            account: acc_user,
            dialog,
            presence,
            dialog_stream: DialogStream::default(),
            presence_stream: PresenceStream::default(),
            view: TargetView::new(MergedState::Unknown),
            watchers: Vec::new(),
            linger_until: None,
            linger_gen: 0,
        };
        tracing::info!(target = %aor, "watching new target: subscribing upstream to dialog and presence");
        self.by_aor.insert(aor.to_string(), id);
        self.targets.insert(id, t);
        for package in Package::BOTH {
            self.send_subscribe(id, package, false, now);
        }
        id
    }

    /// Recompute the merged view and notify every watcher whose document changed
    /// (one rendering per profile, stamped per phone).
    fn recompute(&mut self, target: TargetId, now: Instant) {
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
        let established: Vec<Package> = Package::BOTH
            .into_iter()
            .filter(|&p| t.upstream(p).established())
            .collect();
        for p in established {
            self.send_subscribe(target, p, true, now);
        }
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

    fn send_subscribe(
        &mut self,
        target: TargetId,
        package: Package,
        unsubscribe: bool,
        now: Instant,
    ) {
        let branch = self.rng.branch();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let names = (t.aor.as_str(), t.account.as_str());
        let up = match package {
            Package::Dialog => &mut t.dialog,
            Package::Presence => &mut t.presence,
        };
        let sent = up.subscribe(&self.env, names, &branch, unsubscribe, &mut self.rng);
        let generation = sent.generation;
        self.out.push_back(Out::Request {
            flow: self.env.upstream,
            data: sent.data,
            tag: ReqTag::Upstream {
                target,
                package,
                generation,
                cseq: sent.cseq,
                unsubscribe,
            },
        });
        if !unsubscribe {
            // Timer N: a NOTIFY must follow within 64·T1 (RFC 6665 §4.1.2.4)
            let at = now + self.env.t1 * 64;
            self.schedule(
                at,
                Timer::UpTimerN {
                    target,
                    package,
                    generation,
                },
            );
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
    fn resubscribe_fresh(&mut self, target: TargetId, package: Package, now: Instant) {
        let call_id = build::call_id(&mut self.rng);
        let tag = self.rng.tag();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let new_call_id = Bytes::from(call_id.clone());
        let (old, had_dialog) = t.upstream_mut(package).restart(call_id, tag);
        if package == Package::Dialog {
            // a new dialog restarts the version sequence of the document stream
            t.dialog_stream.new_subscription();
        }
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
    fn upstream_failed(
        &mut self,
        target: TargetId,
        package: Package,
        why: String,
        retry_after: Option<u64>,
        stop: bool,
        now: Instant,
    ) {
        let jitter = self.rng.below(1000);
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let wait = t.upstream_mut(package).fail(
            why.clone(),
            retry_after,
            stop,
            &self.env.cfg.subscriptions,
        );
        if wait.forget_state {
            t.set_unknown(package);
        }
        tracing::warn!(target = %t.aor, package = package.event(), error = %why, retry_in_s = wait.delay_s, "upstream subscription failed");
        let at = now + Duration::from_secs(wait.delay_s) + Duration::from_millis(jitter);
        let generation = wait.generation;
        self.schedule(
            at,
            Timer::UpRetry {
                target,
                package,
                generation,
            },
        );
        self.recompute(target, now);
    }

    /// Carry out what an [`Upstream`] transition asks for.
    fn act(&mut self, target: TargetId, package: Package, action: Action, now: Instant) {
        match action {
            Action::Nothing => {}
            Action::Established { granted } => {
                let Some(up) = self.upstream(target, package) else {
                    return;
                };
                let (generation, cseq) = (up.generation, up.cseq);
                let at = now + self.refresh_delay(granted);
                let timer = Timer::UpRefresh {
                    target,
                    package,
                    generation,
                    cseq,
                };
                self.schedule(at, timer);
            }
            Action::Resubscribe => self.send_subscribe(target, package, false, now),
            Action::Restart => self.resubscribe_fresh(target, package, now),
            Action::Failed {
                why,
                retry_after,
                stop,
            } => self.upstream_failed(target, package, why, retry_after, stop, now),
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
                let action = up.on_response(msg, default_expires, &t.aor, now, &mut self.rng);
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
                unsubscribe,
                ..
            } => {
                let current = self
                    .upstream(target, package)
                    .is_some_and(|u| u.generation == generation);
                if current && !unsubscribe {
                    let why = "SUBSCRIBE timed out".to_string();
                    self.upstream_failed(target, package, why, None, false, now);
                }
            }
        }
    }

    /// Refresh before expiry: at 70–85 % of the granted time, at least 5 s early.
    fn refresh_delay(&mut self, granted: u32) -> Duration {
        let g = granted as u64 * 1000;
        let frac = 700 + self.rng.below(150);
        let at = g * frac / 1000;
        Duration::from_millis(at.min(g.saturating_sub(5000)).max(1000))
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
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        if !t.upstream_mut(package).on_notify(msg) {
            let data = build::response(msg, 481, "Subscription Does Not Exist", None, &[]);
            return self.respond(key, data);
        }
        // a terminating NOTIFY without a body carries no state
        let sub_state = msg.subscription_state().and_then(|s| s.ok());
        let terminated = sub_state
            .as_ref()
            .is_some_and(|s| matches!(s.state, SubStateKind::Terminated));
        let body = msg.body();
        let mut need_refresh = false;
        if !(terminated && body.is_empty()) {
            match t.apply_body(package, body, self.env.cfg.upstream.empty_presence) {
                Ok(refresh) => need_refresh = refresh,
                Err(e) if package == Package::Dialog => {
                    tracing::warn!(target = %t.aor, error = %e, "unusable dialog-info from upstream")
                }
                Err(e) => {
                    tracing::warn!(target = %t.aor, error = %e, "unusable PIDF from upstream")
                }
            }
        }
        let up = t.upstream_mut(package);
        let action = match &sub_state {
            Some(s) if matches!(s.state, SubStateKind::Terminated) => {
                let reason = s
                    .reason
                    .map(|r| String::from_utf8_lossy(r).to_ascii_lowercase());
                Some(up.on_terminated(reason.as_deref(), s.retry_after))
            }
            Some(s) => {
                if let Some(e) = s.expires {
                    up.expires_at = Some(now + Duration::from_secs(e as u64));
                }
                None
            }
            None => None,
        };
        if need_refresh && action.is_none() {
            tracing::info!(target = %t.aor, "dialog-info version gap: refreshing for full state");
        }
        self.respond(key, build::response(msg, 200, "OK", None, &[]));
        match action {
            Some(action) => {
                self.act(target, package, action, now);
                self.recompute(target, now);
            }
            None => {
                self.recompute(target, now);
                if need_refresh {
                    self.send_subscribe(target, package, false, now);
                }
            }
        }
    }

    // ------------------------------------------------------------ timers

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
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
            Timer::UpRefresh {
                target,
                package,
                generation,
                cseq,
            } => {
                if self
                    .upstream(target, package)
                    .is_some_and(|u| u.refresh_due(generation, cseq))
                {
                    self.send_subscribe(target, package, false, now);
                }
            }
            Timer::UpRetry {
                target,
                package,
                generation,
            } => {
                if self
                    .upstream(target, package)
                    .is_some_and(|u| u.retry_due(generation))
                {
                    self.resubscribe_fresh(target, package, now);
                }
            }
            Timer::UpTimerN {
                target,
                package,
                generation,
            } => {
                if self
                    .upstream(target, package)
                    .is_some_and(|u| u.timer_n_expired(generation))
                {
                    let why = "no NOTIFY within Timer N".to_string();
                    self.upstream_failed(target, package, why, None, false, now);
                }
            }
            Timer::Linger { target, generation } => {
                let expired = self
                    .targets
                    .get(&target)
                    .is_some_and(|t| t.linger_gen == generation && t.watchers.is_empty());
                if expired {
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
