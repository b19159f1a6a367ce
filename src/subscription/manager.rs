//! The translator's logic: phone-side notifier, upstream subscriber, target
//! registry, timers.

use super::build;
use super::types::*;
use crate::auth::{Credentials, DigestClient};
use crate::config::Config;
use crate::endpoint::LocalAddrs;
use crate::flow::Flow;
use crate::presence::{self, ApplyOutcome, DialogStream, MergedState, PresenceStream, TargetView};
use crate::profile::{Mode, OfflineStrategy, ProfileSet, Rendering};
use crate::sip::SubStateKind;
use crate::sip::{HeaderName, Method, SipMessage};
use crate::transaction::ServerKey;
use crate::util::Rng;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consecutive transient failures during which an upstream stream keeps its last
/// known state.
const TRANSIENT_FAILURES_KEPT: u32 = 3;

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
        phone: u64,
        cseq: u32,
    },
    Upstream {
        target: u64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    PhoneExpire {
        phone: u64,
        generation: u32,
    },
    PhoneHold {
        phone: u64,
    },
    UpRefresh {
        target: u64,
        package: Package,
        generation: u32,
        cseq: u32,
    },
    UpRetry {
        target: u64,
        package: Package,
        generation: u32,
    },
    UpTimerN {
        target: u64,
        package: Package,
        generation: u32,
    },
    Linger {
        target: u64,
        generation: u32,
    },
}

/// The subscription translator. See the module docs.
pub struct SubscriptionManager {
    env: Env,
    targets: HashMap<u64, Target>,
    by_aor: HashMap<String, u64>,
    phones: HashMap<u64, PhoneSub>,
    /// (Call-ID, our tag) → phone subscription.
    phone_index: HashMap<(String, String), u64>,
    /// Upstream Call-ID → (target, package).
    upstream_index: HashMap<String, (u64, Package)>,
    /// Call-IDs of upstream subscriptions we just ended, with when: their last
    /// NOTIFYs still get a 200 rather than a 481.
    retired: HashMap<String, Instant>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    next_id: u64,
    out: VecDeque<Out>,
    rng: Rng,
}

/// Outcome of classifying an out-of-dialog SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Translate it (the bridge answers).
    Translate,
    /// Proxy it unchanged.
    Passthrough,
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
    pub fn phone(&self, id: u64) -> Option<&PhoneSub> {
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

    // ------------------------------------------------------------ classification

    /// The profile of the phone that sent `msg`: the first whose User-Agent
    /// pattern matches, else `[profiles] default`.
    pub fn profile_for(&self, msg: &SipMessage) -> &crate::profile::Profile {
        let p = self.env.profiles.select(msg.user_agent());
        if p.name() == crate::profile::GENERIC
            && let Some(d) = self.env.profiles.get(&self.env.cfg.default_profile)
        {
            return d;
        }
        p
    }

    /// Should this out-of-dialog SUBSCRIBE from a phone be translated?
    pub fn classify(&self, msg: &SipMessage) -> Classification {
        let is_dialog = matches!(msg.event(), Some(Ok(e)) if e.is("dialog"));
        if !is_dialog {
            return Classification::Passthrough;
        }
        let profile = self.profile_for(msg);
        match profile.mode() {
            Mode::Translate => Classification::Translate,
            Mode::Passthrough => Classification::Passthrough,
        }
    }

    /// Is this in-dialog request addressed to one of our dialogs? (Phone
    /// subscriptions are keyed by our tag = the request's To-tag; upstream
    /// subscriptions by Call-ID.)
    pub fn owns_dialog(&self, msg: &SipMessage) -> bool {
        let Some(cid) = msg.call_id() else {
            return false;
        };
        let cid = String::from_utf8_lossy(cid);
        if let Some(tt) = msg.to_tag() {
            let key = (cid.to_string(), String::from_utf8_lossy(tt).into_owned());
            if self.phone_index.contains_key(&key) {
                return true;
            }
        }
        self.upstream_index.contains_key(cid.as_ref())
    }

    // ------------------------------------------------------------ phone side

    /// A SUBSCRIBE from a phone, to be answered by the bridge: initial
    /// (classified `Translate`) or in-dialog for one of our subscriptions.
    pub fn on_phone_subscribe(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        flow: Flow,
        now: Instant,
    ) {
        if msg.to_tag().is_some() {
            self.on_phone_resubscribe(key, msg, flow, now);
        } else {
            self.on_phone_initial(key, msg, flow, now);
        }
    }

    fn respond(&mut self, key: ServerKey, data: Bytes) {
        self.out.push_back(Out::Response { key, data });
    }

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

    fn on_phone_initial(&mut self, key: ServerKey, msg: &SipMessage, flow: Flow, now: Instant) {
        // Accept must allow dialog-info (RFC 6665 §4.2.1.1: 406 otherwise)
        if msg.accepts("application/dialog-info+xml") == Some(false) {
            let data = build::response(
                msg,
                406,
                "Not Acceptable",
                None,
                &[("Accept", "application/dialog-info+xml".into())],
            );
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
        let profile_name = profile.name().to_string();
        let reject = match profile.offline() {
            OfflineStrategy::FailSubscription {
                reject_code,
                retry_after,
                ..
            } => Some((*reject_code, *retry_after)),
            OfflineStrategy::Render => None,
        };
        let aor = format!("sip:{}@{}", user, self.env.cfg.upstream.domain);
        // fail-subscription profiles: refuse while the target is known offline
        if let Some((code, retry_after)) = reject
            && self
                .target_by_aor(&aor)
                .is_some_and(|t| t.view.state == MergedState::Offline)
        {
            let mut extra = Vec::new();
            if let Some(r) = retry_after {
                extra.push(("Retry-After", r.to_string()));
            }
            let data = build::response(msg, code, crate::sip::reason_phrase(code), None, &extra);
            return self.respond(key, data);
        }
        let from_user = msg
            .from()
            .and_then(|f| f.ok())
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user_str().map(str::to_string));
        let target_id = self.ensure_target(&aor, &user, from_user.as_deref(), now);

        let local_tag = self.rng.tag();
        let id = self.next_id;
        self.next_id += 1;
        let call_id = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();
        let remote_tag = String::from_utf8_lossy(msg.from_tag().unwrap_or_default()).into_owned();
        let to_value =
            String::from_utf8_lossy(msg.header_value(HeaderName::To).unwrap_or_default())
                .into_owned();
        let from_value =
            String::from_utf8_lossy(msg.header_value(HeaderName::From).unwrap_or_default())
                .into_owned();
        let route_set: Vec<String> = msg
            .values(HeaderName::RecordRoute)
            .map(|s| String::from_utf8_lossy(msg.slice(s)).into_owned())
            .collect();
        let event_id = msg
            .event()
            .and_then(|e| e.ok())
            .and_then(|e| e.id().map(|i| String::from_utf8_lossy(i).into_owned()));
        let remote_cseq = msg.cseq().and_then(|c| c.ok()).map(|c| c.seq).unwrap_or(0);
        let sub = PhoneSub {
            id,
            target: target_id,
            profile: profile_name,
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag,
            local_header: format!("{to_value};tag={local_tag}"),
            remote_header: from_value,
            remote_target: contact,
            route_set,
            flow,
            event_id,
            local_cseq: 0,
            remote_cseq,
            next_version: 0,
            expires_at: now + Duration::from_secs(expires as u64),
            state: PhoneState::Holding,
            hold_until: None,
            last_doc: None,
            notify_in_flight: false,
            dirty: false,
            force_full: true,
            fetch: expires == 0,
            timer_gen: 0,
        };
        let data = build::response(
            msg,
            200,
            "OK",
            Some(&local_tag),
            &[
                ("Contact", build::contact(&self.env, flow.transport)),
                ("Expires", expires.to_string()),
            ],
        );
        self.respond(key, data);
        tracing::info!(
            phone = %flow, target = %aor, profile = %sub.profile, expires,
            "phone subscription accepted"
        );
        self.phone_index.insert((call_id, local_tag), id);
        self.phones.insert(id, sub);
        if let Some(t) = self.targets.get_mut(&target_id) {
            t.watchers.push(id);
            t.linger_until = None;
        }
        if expires > 0 {
            self.schedule(
                now + Duration::from_secs(expires as u64),
                Timer::PhoneExpire {
                    phone: id,
                    generation: 0,
                },
            );
        }
        let ready = self.targets.get(&target_id).is_some_and(Target::ready);
        if ready {
            self.release_first_notify(id, false, now);
        } else {
            let until =
                now + Duration::from_millis(self.env.cfg.subscriptions.first_notify_timeout_ms);
            if let Some(p) = self.phones.get_mut(&id) {
                p.hold_until = Some(until);
            }
            self.schedule(until, Timer::PhoneHold { phone: id });
        }
    }

    fn on_phone_resubscribe(&mut self, key: ServerKey, msg: &SipMessage, flow: Flow, now: Instant) {
        let cid = String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned();
        let tt = String::from_utf8_lossy(msg.to_tag().unwrap_or_default()).into_owned();
        let Some(&id) = self.phone_index.get(&(cid, tt)) else {
            let data = build::response(msg, 481, "Subscription Does Not Exist", None, &[]);
            return self.respond(key, data);
        };
        let Some(sub) = self.phones.get(&id) else {
            return;
        };
        // same package and id (RFC 6665 §4.1.2.2)
        let ev = msg.event().and_then(|e| e.ok());
        let same_event = ev.is_some_and(|e| {
            e.is("dialog")
                && e.id().map(|i| String::from_utf8_lossy(i).into_owned()) == sub.event_id
        });
        if !same_event {
            let data = build::response(
                msg,
                489,
                "Bad Event",
                None,
                &[("Allow-Events", "dialog".into())],
            );
            return self.respond(key, data);
        }
        let cseq = msg.cseq().and_then(|c| c.ok()).map(|c| c.seq).unwrap_or(0);
        if cseq <= sub.remote_cseq {
            let data = build::response(msg, 500, "CSeq Out of Order", None, &[]);
            return self.respond(key, data);
        }
        let (target, profile) = (sub.target, sub.profile.clone());
        let Some(expires) = self.granted_or_refused(&key, msg) else {
            return;
        };
        let target_offline = self
            .targets
            .get(&target)
            .is_some_and(|t| t.view.state == MergedState::Offline);
        let reject = self
            .env
            .profiles
            .get(&profile)
            .and_then(|p| match p.offline() {
                OfflineStrategy::FailSubscription {
                    reject_code,
                    retry_after,
                    ..
                } => Some((*reject_code, *retry_after)),
                OfflineStrategy::Render => None,
            });
        if let (Some((code, retry_after)), true, true) = (reject, target_offline, expires > 0) {
            let mut extra = Vec::new();
            if let Some(r) = retry_after {
                extra.push(("Retry-After", r.to_string()));
            }
            let data = build::response(msg, code, crate::sip::reason_phrase(code), None, &extra);
            self.respond(key, data);
            self.remove_phone(id, now);
            return;
        }
        let contact_uri = msg
            .contacts()
            .next()
            .and_then(|(_, c)| c.ok())
            .map(|c| String::from_utf8_lossy(c.uri).into_owned());
        let transport = flow.transport;
        let data = build::response(
            msg,
            200,
            "OK",
            None,
            &[
                ("Contact", build::contact(&self.env, transport)),
                ("Expires", expires.to_string()),
            ],
        );
        self.respond(key, data);
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        sub.remote_cseq = cseq;
        if let Some(c) = contact_uri {
            sub.remote_target = c; // SUBSCRIBE is a target-refresh request
        }
        sub.flow = flow;
        sub.timer_gen += 1;
        sub.force_full = true;
        let generation = sub.timer_gen;
        if expires == 0 {
            sub.expires_at = now;
            tracing::info!(phone = %flow, call_id = %sub.call_id, "phone unsubscribed");
            self.terminate_phone(id, "terminated;reason=timeout", true, now);
        } else {
            sub.expires_at = now + Duration::from_secs(expires as u64);
            let at = sub.expires_at;
            let holding = sub.state == PhoneState::Holding;
            self.schedule(
                at,
                Timer::PhoneExpire {
                    phone: id,
                    generation,
                },
            );
            if !holding {
                self.update_phone(id, now);
            }
        }
    }
    /// Send the held first NOTIFY (`deadline`: the hold deadline passed before the
    /// upstream answered).
    fn release_first_notify(&mut self, id: u64, deadline: bool, now: Instant) {
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        if sub.state != PhoneState::Holding {
            return;
        }
        sub.state = PhoneState::Active;
        sub.hold_until = None;
        let fetch = sub.fetch;
        if deadline {
            tracing::debug!(
                phone = id,
                "upstream not answered by the hold deadline: rendering what is known"
            );
        }
        if fetch {
            self.terminate_phone(id, "terminated;reason=timeout", true, now);
        } else {
            self.update_phone(id, now);
        }
    }

    /// The view a phone gets now. Before both streams have spoken, an idle view is
    /// really "unknown" (do not flash idle before offline is known).
    fn view_for(&self, target: &Target) -> TargetView {
        let mut v = target.view.clone();
        if !target.ready() && matches!(v.state, MergedState::Idle | MergedState::Offline) {
            v.state = MergedState::Unknown;
        }
        v
    }

    /// Render the target for this phone and send a NOTIFY if the document changed
    /// (or a full state was asked for).
    fn update_phone(&mut self, id: u64, now: Instant) {
        let Some(sub) = self.phones.get(&id) else {
            return;
        };
        if sub.state != PhoneState::Active {
            return;
        }
        if sub.notify_in_flight {
            if let Some(s) = self.phones.get_mut(&id) {
                s.dirty = true;
            }
            return;
        }
        let Some(target) = self.targets.get(&sub.target) else {
            return;
        };
        let view = self.view_for(target);
        let Some(profile) = self.env.profiles.get(&sub.profile) else {
            return;
        };
        match crate::profile::render(profile, &target.aor, &view) {
            Rendering::Terminate {
                reason,
                retry_after,
            } => {
                let state = match retry_after {
                    Some(r) => format!("terminated;reason={reason};retry-after={r}"),
                    None => format!("terminated;reason={reason}"),
                };
                tracing::info!(phone = id, target = %target.aor, "target offline: failing the phone subscription ({state})");
                self.terminate_phone(id, &state, false, now);
            }
            Rendering::Document(doc) => {
                let changed = sub.last_doc.as_ref() != Some(&doc);
                if !changed && !sub.force_full {
                    return;
                }
                let remaining = sub.expires_at.saturating_duration_since(now).as_secs();
                let state = format!("active;expires={remaining}");
                self.send_notify(id, &state, Some(doc), now);
            }
        }
    }

    fn send_notify(
        &mut self,
        id: u64,
        subscription_state: &str,
        doc: Option<crate::profile::RenderedDoc>,
        _now: Instant,
    ) {
        let branch = self.rng.branch();
        let Some(sub) = self.phones.get_mut(&id) else {
            return;
        };
        sub.local_cseq += 1;
        let body = doc.as_ref().map(|d| {
            let v = sub.next_version;
            sub.next_version = sub.next_version.wrapping_add(1);
            d.with_version(v)
        });
        if doc.is_some() {
            sub.last_doc = doc;
        }
        sub.force_full = false;
        sub.dirty = false;
        sub.notify_in_flight = true;
        let data = build::notify(
            &self.env,
            sub,
            &branch,
            subscription_state,
            body.as_deref().map(|b| b.as_bytes()),
        );
        let tag = ReqTag::Notify {
            phone: id,
            cseq: sub.local_cseq,
        };
        self.out.push_back(Out::Request {
            flow: sub.flow,
            data,
            tag,
        });
    }

    /// Send the final NOTIFY (with the current document when `with_body`) and
    /// remove the subscription.
    fn terminate_phone(
        &mut self,
        id: u64,
        subscription_state: &str,
        with_body: bool,
        now: Instant,
    ) {
        let doc = if with_body {
            self.phones.get(&id).and_then(|sub| {
                let target = self.targets.get(&sub.target)?;
                let profile = self.env.profiles.get(&sub.profile)?;
                let view = self.view_for(target);
                match crate::profile::render(profile, &target.aor, &view) {
                    Rendering::Document(d) => Some(d),
                    Rendering::Terminate { .. } => None,
                }
            })
        } else {
            None
        };
        if let Some(sub) = self.phones.get_mut(&id) {
            sub.state = PhoneState::Terminating;
            // A final NOTIFY is sent even if one is in flight: it carries a higher
            // CSeq, and the subscription is gone afterwards.
            sub.notify_in_flight = false;
        }
        self.send_notify(id, subscription_state, doc, now);
        self.remove_phone(id, now);
    }

    fn remove_phone(&mut self, id: u64, now: Instant) {
        let Some(sub) = self.phones.remove(&id) else {
            return;
        };
        self.phone_index
            .remove(&(sub.call_id.clone(), sub.local_tag.clone()));
        let linger = Duration::from_secs(self.env.cfg.subscriptions.linger_s);
        if let Some(t) = self.targets.get_mut(&sub.target) {
            t.watchers.retain(|w| *w != id);
            if t.watchers.is_empty() {
                t.linger_gen += 1;
                t.linger_until = Some(now + linger);
                let (tid, generation) = (t.id, t.linger_gen);
                self.schedule(
                    now + linger,
                    Timer::Linger {
                        target: tid,
                        generation,
                    },
                );
            }
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
    ) -> u64 {
        if let Some(&id) = self.by_aor.get(aor) {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        let account = self
            .env
            .cfg
            .account_for(from_user)
            .map(|a| (a.user.clone(), a.auth_user.clone(), a.password.clone()));
        let (acc_user, auth_user, password) = account.unwrap_or_default();
        let mk = |me: &mut Self, package: Package| Upstream {
            package,
            state: UpState::Idle,
            call_id: format!("{}@blf-bridge", me.rng.token(20)),
            local_tag: me.rng.tag(),
            remote_tag: None,
            remote_target: None,
            route_set: Vec::new(),
            cseq: 0,
            generation: 0,
            in_flight: false,
            expires_at: None,
            ever_notified: false,
            notified: false,
            failures: 0,
            expires_floor: None,
            auth: DigestClient::new(Credentials {
                username: auth_user.clone(),
                password: password.clone(),
            }),
            last_request: None,
            last_error: None,
        };
        let dialog = mk(self, Package::Dialog);
        let presence = mk(self, Package::Presence);
        self.upstream_index
            .insert(dialog.call_id.clone(), (id, Package::Dialog));
        self.upstream_index
            .insert(presence.call_id.clone(), (id, Package::Presence));
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
        self.send_subscribe(id, Package::Dialog, false, now);
        self.send_subscribe(id, Package::Presence, false, now);
        id
    }

    /// Recompute the merged view and notify every watcher whose document changed.
    fn recompute(&mut self, target: u64, now: Instant) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let view = presence::merge(&t.dialog_stream, &t.presence_stream);
        if view != t.view {
            tracing::info!(target = %t.aor, from = %t.view.state, to = %view.state, "target state changed");
            t.view = view;
        }
        let ready = t.ready();
        let watchers = t.watchers.clone();
        for w in watchers {
            let holding = self
                .phones
                .get(&w)
                .is_some_and(|p| p.state == PhoneState::Holding);
            if holding {
                if ready {
                    self.release_first_notify(w, false, now);
                }
            } else {
                self.update_phone(w, now);
            }
        }
    }

    // ------------------------------------------------------------ upstream side

    fn send_subscribe(&mut self, target: u64, package: Package, unsubscribe: bool, now: Instant) {
        let upstream_expires = self.env.cfg.subscriptions.upstream_expires;
        let branch = self.rng.branch();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let up = t.upstream_mut(package);
        up.cseq += 1;
        let expires = if unsubscribe {
            0
        } else {
            upstream_expires.max(up.expires_floor.unwrap_or(0))
        };
        // pre-emptive credentials (nonce reuse with nc+1) once a challenge is known
        let ruri = match (&up.remote_tag, &up.remote_target) {
            (Some(_), Some(rt)) => build::in_dialog_target(rt, &up.route_set).0,
            _ => t.aor.clone(),
        };
        let mut up = t.upstream(package).clone();
        let auth = up
            .auth
            .authorize(&Method::Subscribe, &ruri, b"", &mut self.rng);
        let (data, _) = build::subscribe(&self.env, t, &up, &branch, expires, &auth);
        up.in_flight = true;
        up.last_request = Some(data.clone());
        if up.state == UpState::Idle || up.state == UpState::Backoff || up.state == UpState::Stopped
        {
            up.state = UpState::Subscribing;
        }
        if unsubscribe {
            up.state = UpState::Unsubscribing;
        }
        let generation = up.generation;
        let cseq = up.cseq;
        *t.upstream_mut(package) = up;
        self.out.push_back(Out::Request {
            flow: self.env.upstream,
            data,
            tag: ReqTag::Upstream {
                target,
                package,
                generation,
                cseq,
                unsubscribe,
            },
        });
        if !unsubscribe {
            // Timer N: a NOTIFY must follow within 64·T1 (RFC 6665 §4.1.2.4)
            self.schedule(
                now + self.env.t1 * 64,
                Timer::UpTimerN {
                    target,
                    package,
                    generation,
                },
            );
        }
    }

    /// Remember an ended upstream dialog for a while (64·T1).
    fn retire(&mut self, call_id: String, now: Instant) {
        let keep = self.env.t1 * 64;
        self.retired
            .retain(|_, at| now.saturating_duration_since(*at) < keep);
        self.retired.insert(call_id, now);
    }

    /// Start a fresh upstream dialog for this package (new Call-ID and tag).
    fn resubscribe_fresh(&mut self, target: u64, package: Package, now: Instant) {
        let call_id = format!("{}@blf-bridge", self.rng.token(20));
        let tag = self.rng.tag();
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let up = t.upstream_mut(package);
        let old = std::mem::replace(&mut up.call_id, call_id.clone());
        self.upstream_index.remove(&old);
        let old_had_dialog = up.remote_tag.is_some();
        up.local_tag = tag;
        up.remote_tag = None;
        up.remote_target = None;
        up.route_set.clear();
        up.generation += 1;
        up.in_flight = false;
        up.notified = false;
        up.expires_at = None;
        up.state = UpState::Idle;
        if package == Package::Dialog {
            // a new dialog restarts the version sequence of the document stream
            t.dialog_stream.new_subscription();
        }
        self.upstream_index.insert(call_id, (target, package));
        if old_had_dialog {
            self.retire(old, now);
        }
        self.send_subscribe(target, package, false, now);
    }

    /// Mark a failure and schedule the next attempt with capped exponential
    /// backoff (plus jitter), or `retry_after` when the upstream gave one.
    fn upstream_failed(
        &mut self,
        target: u64,
        package: Package,
        why: String,
        retry_after: Option<u64>,
        stop: bool,
        now: Instant,
    ) {
        let s = self.env.cfg.subscriptions.clone();
        let jitter = self.rng.below(1000);
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let aor = t.aor.clone();
        let up = t.upstream_mut(package);
        up.failures = up.failures.saturating_add(1);
        up.in_flight = false;
        up.last_error = Some(why.clone());
        let base = s
            .retry_min_s
            .saturating_mul(1u64 << (up.failures - 1).min(16))
            .min(s.retry_max_s);
        let delay = if stop {
            s.retry_max_s
        } else {
            retry_after
                .unwrap_or(base)
                .min(s.retry_max_s.max(retry_after.unwrap_or(0)))
        };
        up.state = if stop {
            UpState::Stopped
        } else {
            UpState::Backoff
        };
        let generation = up.generation;
        // A rejection, or repeated failures, make the stream unknown. A single
        // transient failure keeps the last known state while we retry, so lamps
        // do not flap on an upstream hiccup.
        if stop || up.failures >= TRANSIENT_FAILURES_KEPT {
            match package {
                Package::Dialog => t.dialog_stream.set_unknown(),
                Package::Presence => t.presence_stream.set_unknown(),
            }
        }
        tracing::warn!(target = %aor, package = package.event(), error = %why, retry_in_s = delay, "upstream subscription failed");
        let at = now + Duration::from_secs(delay) + Duration::from_millis(jitter);
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

    /// The outcome of a request the manager sent.
    pub fn on_response(&mut self, tag: ReqTag, msg: &SipMessage, now: Instant) {
        match tag {
            ReqTag::Notify { phone, cseq } => {
                self.on_notify_response(phone, cseq, msg.status().unwrap_or(0), now)
            }
            ReqTag::Upstream {
                target,
                package,
                generation,
                cseq,
                unsubscribe,
            } => {
                self.on_subscribe_response(target, package, generation, cseq, unsubscribe, msg, now)
            }
        }
    }

    /// A client transaction timed out (Timer F) without a final response.
    pub fn on_request_timeout(&mut self, tag: ReqTag, now: Instant) {
        match tag {
            ReqTag::Notify { phone, .. } => {
                if self.phones.contains_key(&phone) {
                    tracing::warn!(phone, "NOTIFY timed out: removing the phone subscription");
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
                if unsubscribe {
                    return;
                }
                let current = self
                    .targets
                    .get(&target)
                    .is_some_and(|t| t.upstream(package).generation == generation);
                if current {
                    self.upstream_failed(
                        target,
                        package,
                        "SUBSCRIBE timed out".into(),
                        None,
                        false,
                        now,
                    );
                }
            }
        }
    }

    fn on_notify_response(&mut self, phone: u64, cseq: u32, code: u16, now: Instant) {
        let Some(sub) = self.phones.get_mut(&phone) else {
            return;
        };
        if sub.local_cseq != cseq {
            return; // an older NOTIFY; a newer one is in flight
        }
        sub.notify_in_flight = false;
        match code {
            200..=299 => {
                if sub.dirty {
                    self.update_phone(phone, now);
                }
            }
            481 => {
                tracing::info!(
                    phone,
                    "phone answered NOTIFY with 481: removing the subscription"
                );
                self.remove_phone(phone, now);
            }
            401 | 407 => {
                // RFC 6665: a challenged NOTIFY does not end the subscription; we have
                // no credentials for the phone, so keep going and try on the next change.
                tracing::warn!(
                    phone,
                    code,
                    "phone challenged our NOTIFY; keeping the subscription"
                );
            }
            _ => {
                tracing::warn!(phone, code, "phone rejected a NOTIFY");
                if sub.dirty {
                    self.update_phone(phone, now);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_subscribe_response(
        &mut self,
        target: u64,
        package: Package,
        generation: u32,
        cseq: u32,
        unsubscribe: bool,
        msg: &SipMessage,
        now: Instant,
    ) {
        let code = msg.status().unwrap_or(0);
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        let aor = t.aor.clone();
        let up = t.upstream_mut(package);
        if up.generation != generation || up.cseq != cseq || unsubscribe {
            return;
        }
        up.in_flight = false;
        match code {
            200..=299 => {
                let was_initial = up.remote_tag.is_none();
                if let Some(tag) = msg.to_tag() {
                    up.remote_tag = Some(String::from_utf8_lossy(tag).into_owned());
                }
                if let Some(c) = msg.contacts().next().and_then(|(_, c)| c.ok()) {
                    up.remote_target = Some(String::from_utf8_lossy(c.uri).into_owned());
                }
                if was_initial {
                    // route set = Record-Route of the 2xx, reversed (RFC 3261 §12.1.2)
                    let mut rs: Vec<String> = msg
                        .values(HeaderName::RecordRoute)
                        .map(|s| String::from_utf8_lossy(msg.slice(s)).into_owned())
                        .collect();
                    rs.reverse();
                    up.route_set = rs;
                }
                let granted = msg
                    .expires()
                    .and_then(|e| e.ok())
                    .unwrap_or(self.env.cfg.subscriptions.upstream_expires);
                up.state = UpState::Active;
                // failures are reset by the first NOTIFY, not by the 2xx: an
                // upstream that accepts but never notifies must still back off
                if granted == 0 {
                    return;
                }
                up.expires_at = Some(now + Duration::from_secs(granted as u64));
                let generation = up.generation;
                let cseq = up.cseq;
                let at = now + self.refresh_delay(granted);
                self.schedule(
                    at,
                    Timer::UpRefresh {
                        target,
                        package,
                        generation,
                        cseq,
                    },
                );
                tracing::debug!(target = %aor, package = package.event(), granted, "upstream subscription active");
            }
            401 | 407 => {
                let challenged = up
                    .last_request
                    .clone()
                    .and_then(|b| SipMessage::parse(b).ok());
                let result = match &challenged {
                    Some(req) => up
                        .auth
                        .handle_challenge(msg, req, &mut self.rng)
                        .map_err(|e| e.to_string()),
                    None => Err("challenge without a request to answer".to_string()),
                };
                match result {
                    Ok(()) => self.send_subscribe(target, package, false, now),
                    Err(e) => {
                        tracing::error!(target = %aor, package = package.event(), "upstream authentication failed: {e}");
                        self.upstream_failed(
                            target,
                            package,
                            format!("authentication failed: {e}"),
                            None,
                            false,
                            now,
                        );
                    }
                }
            }
            423 => {
                let min = msg
                    .header_value(HeaderName::MinExpires)
                    .and_then(|v| crate::sip::parse_delta(v).ok());
                match min {
                    Some(m) if m > 0 && up.failures < 3 => {
                        up.failures += 1;
                        // remember the floor for this attempt
                        let aor2 = aor.clone();
                        tracing::info!(target = %aor2, min, "upstream wants a longer subscription");
                        up.expires_floor = Some(m);
                        self.send_subscribe(target, package, false, now);
                    }
                    _ => self.upstream_failed(
                        target,
                        package,
                        "423 without usable Min-Expires".into(),
                        None,
                        false,
                        now,
                    ),
                }
            }
            481 => {
                // the upstream lost our subscription (restart): start a fresh one now
                tracing::info!(target = %aor, package = package.event(), "upstream answered 481: re-subscribing");
                self.resubscribe_fresh(target, package, now);
            }
            403 | 404 | 405 | 489 | 501 | 603 => {
                let reason = format!(
                    "{code} {}",
                    String::from_utf8_lossy(msg.reason().unwrap_or_default())
                );
                self.upstream_failed(target, package, reason, None, true, now);
            }
            300..=699 => {
                let retry_after = msg
                    .header_value(HeaderName::RetryAfter)
                    .and_then(|v| {
                        let e = memchr::memchr(b';', v).unwrap_or(v.len());
                        crate::sip::parse_delta(&v[..e]).ok()
                    })
                    .map(u64::from);
                let reason = format!(
                    "{code} {}",
                    String::from_utf8_lossy(msg.reason().unwrap_or_default())
                );
                self.upstream_failed(target, package, reason, retry_after, false, now);
            }
            _ => {}
        }
    }

    /// Refresh before expiry: at 70–85 % of the granted time, at least 5 s early.
    fn refresh_delay(&mut self, granted: u32) -> Duration {
        let g = granted as u64 * 1000;
        let frac = 700 + self.rng.below(150);
        let at = g * frac / 1000;
        Duration::from_millis(at.min(g.saturating_sub(5000)).max(1000))
    }

    /// A request the upstream sent into one of our subscription dialogs (NOTIFY).
    /// Returns false when it is not ours.
    pub fn on_upstream_request(&mut self, key: ServerKey, msg: &SipMessage, now: Instant) -> bool {
        let Some(cid) = msg.call_id() else {
            return false;
        };
        let cid = String::from_utf8_lossy(cid).into_owned();
        let Some(&(target, package)) = self.upstream_index.get(&cid) else {
            if self.retired.contains_key(&cid) && msg.method() == Some(&Method::Notify) {
                let data = build::response(msg, 200, "OK", None, &[]);
                self.respond(key, data);
                return true;
            }
            return false;
        };
        if msg.method() != Some(&Method::Notify) {
            let data = build::response(
                msg,
                405,
                "Method Not Allowed",
                None,
                &[("Allow", "NOTIFY".into())],
            );
            self.respond(key, data);
            return true;
        }
        let Some(t) = self.targets.get_mut(&target) else {
            return false;
        };
        let up = t.upstream_mut(package);
        // The NOTIFY's To-tag is our From-tag; its From-tag is the notifier's tag.
        let to_tag_ok = msg.to_tag().is_some_and(|tt| tt == up.local_tag.as_bytes());
        let from_tag = msg
            .from_tag()
            .map(|f| String::from_utf8_lossy(f).into_owned());
        let event_ok = matches!(msg.event(), Some(Ok(e)) if e.is(package.event()));
        let tag_ok = match (&up.remote_tag, &from_tag) {
            (Some(r), Some(f)) => r == f,
            (None, Some(_)) => true, // NOTIFY before the 2xx (RFC 6665 §4.1.2.4)
            _ => false,
        };
        if !to_tag_ok || !tag_ok || !event_ok || up.state == UpState::Unsubscribing {
            let data = build::response(msg, 481, "Subscription Does Not Exist", None, &[]);
            self.respond(key, data);
            return true;
        }
        if up.remote_tag.is_none() {
            up.remote_tag = from_tag;
        }
        if let Some(c) = msg.contacts().next().and_then(|(_, c)| c.ok()) {
            up.remote_target = Some(String::from_utf8_lossy(c.uri).into_owned());
        }
        up.ever_notified = true;
        up.notified = true;
        up.failures = 0;
        up.last_error = None;
        if up.state == UpState::Subscribing {
            up.state = UpState::Active;
        }
        let data = build::response(msg, 200, "OK", None, &[]);
        self.respond(key, data);

        // Subscription-State
        let sub_state = msg.subscription_state().and_then(|s| s.ok()).map(|s| {
            (
                s.state,
                s.expires,
                s.reason
                    .map(|r| String::from_utf8_lossy(r).to_ascii_lowercase()),
                s.retry_after,
            )
        });
        // body (a terminating NOTIFY without a body carries no state)
        let body = msg.body();
        let terminated = matches!(sub_state, Some((SubStateKind::Terminated, ..)));
        let Some(t) = self.targets.get_mut(&target) else {
            return true;
        };
        let aor = t.aor.clone();
        let mut need_refresh = false;
        match package {
            _ if terminated && body.is_empty() => {}
            Package::Dialog => match t.dialog_stream.apply_body(body) {
                Ok(ApplyOutcome::NeedRefresh { .. }) => need_refresh = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target = %aor, error = %e, "unusable dialog-info from upstream")
                }
            },
            Package::Presence => {
                let empty = self.env.cfg.upstream.empty_presence;
                if let Err(e) = t.presence_stream.apply_body(body, empty) {
                    tracing::warn!(target = %aor, error = %e, "unusable PIDF from upstream");
                }
            }
        }
        if let Some((state, expires, reason, retry_after)) = sub_state {
            match state {
                SubStateKind::Terminated => {
                    self.on_upstream_terminated(
                        target,
                        package,
                        reason.as_deref(),
                        retry_after,
                        now,
                    );
                    self.recompute(target, now);
                    return true;
                }
                _ => {
                    if let (Some(e), Some(t)) = (expires, self.targets.get_mut(&target)) {
                        let up = t.upstream_mut(package);
                        up.expires_at = Some(now + Duration::from_secs(e as u64));
                    }
                }
            }
        }
        self.recompute(target, now);
        if need_refresh {
            tracing::info!(target = %aor, "dialog-info version gap: refreshing for full state");
            self.send_subscribe(target, package, false, now);
        }
        true
    }

    /// `Subscription-State: terminated` from the upstream (RFC 6665 §4.1.3).
    fn on_upstream_terminated(
        &mut self,
        target: u64,
        package: Package,
        reason: Option<&str>,
        retry_after: Option<u32>,
        now: Instant,
    ) {
        let unsubscribing = self
            .targets
            .get(&target)
            .is_some_and(|t| t.upstream(package).state == UpState::Unsubscribing);
        if unsubscribing {
            return;
        }
        match reason {
            None | Some("deactivated") | Some("timeout") => {
                if let Some(r) = retry_after {
                    self.upstream_failed(
                        target,
                        package,
                        "terminated by upstream".into(),
                        Some(r as u64),
                        false,
                        now,
                    );
                } else {
                    self.resubscribe_fresh(target, package, now);
                }
            }
            Some("probation") | Some("giveup") => {
                self.upstream_failed(
                    target,
                    package,
                    format!("terminated ({})", reason.unwrap_or_default()),
                    retry_after.map(u64::from),
                    false,
                    now,
                );
            }
            Some(r) => {
                // rejected / noresource / invariant / unknown: do not retry soon
                self.upstream_failed(
                    target,
                    package,
                    format!("terminated ({r})"),
                    None,
                    true,
                    now,
                );
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

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::PhoneExpire { phone, generation } => {
                if self
                    .phones
                    .get(&phone)
                    .is_some_and(|p| p.timer_gen == generation)
                {
                    tracing::info!(phone, "phone subscription expired");
                    self.terminate_phone(phone, "terminated;reason=timeout", true, now);
                }
            }
            Timer::PhoneHold { phone } => {
                if self
                    .phones
                    .get(&phone)
                    .is_some_and(|p| p.state == PhoneState::Holding)
                {
                    self.release_first_notify(phone, true, now);
                }
            }
            Timer::UpRefresh {
                target,
                package,
                generation,
                cseq,
            } => {
                let due = self.targets.get(&target).is_some_and(|t| {
                    let u = t.upstream(package);
                    u.generation == generation
                        && u.cseq == cseq
                        && u.state == UpState::Active
                        && !u.in_flight
                });
                if due {
                    self.send_subscribe(target, package, false, now);
                }
            }
            Timer::UpRetry {
                target,
                package,
                generation,
            } => {
                let due = self.targets.get(&target).is_some_and(|t| {
                    let u = t.upstream(package);
                    u.generation == generation
                        && matches!(u.state, UpState::Backoff | UpState::Stopped)
                });
                if due {
                    self.resubscribe_fresh(target, package, now);
                }
            }
            Timer::UpTimerN {
                target,
                package,
                generation,
            } => {
                let failed = self.targets.get(&target).is_some_and(|t| {
                    let u = t.upstream(package);
                    u.generation == generation && !u.notified && u.state != UpState::Unsubscribing
                });
                if failed {
                    self.upstream_failed(
                        target,
                        package,
                        "no NOTIFY within Timer N".into(),
                        None,
                        false,
                        now,
                    );
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

    fn drop_target(&mut self, target: u64, now: Instant) {
        let Some(t) = self.targets.get(&target) else {
            return;
        };
        tracing::info!(target = %t.aor, "no phone watches the target any more: unsubscribing upstream");
        let active: Vec<Package> = [Package::Dialog, Package::Presence]
            .into_iter()
            .filter(|&p| {
                let u = t.upstream(p);
                u.remote_tag.is_some() && matches!(u.state, UpState::Active)
            })
            .collect();
        for p in active {
            self.send_subscribe(target, p, true, now);
        }
        if let Some(t) = self.targets.remove(&target) {
            self.by_aor.remove(&t.aor);
            self.upstream_index.remove(&t.dialog.call_id);
            self.upstream_index.remove(&t.presence.call_id);
            self.retire(t.dialog.call_id, now);
            self.retire(t.presence.call_id, now);
        }
    }
}

#[allow(dead_code)]
fn _assert_plain_data() {
    fn is_serde<T: serde::Serialize + for<'de> serde::Deserialize<'de>>() {}
    is_serde::<PhoneSub>();
    is_serde::<Target>();
}
