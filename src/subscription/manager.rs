//! The registry: targets and phone subscriptions, the indices that route
//! requests to them, and the timers. The transitions themselves belong to
//! [`PhoneSub`] (notifier side) and [`Upstream`] (subscriber side).

use super::build;
use super::notifier::{AfterNotify, PhoneState, PhoneSub, Renderings};
use super::pacer::Pacer;
use super::subscriber::{Action, UpTimer, Upstream};
use super::target::Target;
use super::timers::{Timer, Timers};
use super::types::*;
use crate::auth::{Credentials, DigestClient};
use crate::config::Config;
use crate::flow::Flow;
use crate::profile::{Mode, Profile, SubState};
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
    /// Boxed: a table sized for growth holds 16-byte slots, not whole records.
    pub(super) targets: IdMap<TargetId, Box<Target>>,
    pub(super) by_aor: HashMap<String, TargetId>,
    pub(super) phones: IdMap<PhoneId, Box<PhoneSub>>,
    /// (Call-ID, our tag) → phone subscription.
    pub(super) phone_index: HashMap<DialogKey, PhoneId>,
    /// Upstream Call-ID → (target, package).
    pub(super) upstream_index: HashMap<Bytes, (TargetId, Package)>,
    /// Call-IDs of upstream subscriptions we just ended, with when: their last
    /// NOTIFYs still get a 200 rather than a 481.
    pub(super) retired: HashMap<Bytes, Instant>,
    pub(super) timers: Timers,
    /// Phone and target ids come from one counter.
    pub(super) next_id: u64,
    pub(super) out: VecDeque<Out>,
    /// Phone NOTIFYs decided, with their CSeq and version reserved, not yet
    /// built: the endpoint builds and sends them one at a time
    /// ([`SubscriptionManager::poll_notify`]), so the first leaves before the
    /// thousandth is made. In decision order.
    pub(super) fanout: VecDeque<Queued>,
    /// The renderings the queued NOTIFYs of a target are built from: those
    /// of its latest decision (a newer change replaces them, so a phone not
    /// yet sent gets the newest document), with how many entries of
    /// `fanout` still use them.
    pub(super) fanout_docs: IdMap<TargetId, FanoutDocs>,
    /// Targets whose state changed and whose phones are not all decided yet:
    /// each phone is decided when the endpoint asks for the next NOTIFY
    /// ([`SubscriptionManager::poll_notify`]), so the first NOTIFY of a large
    /// fan-out leaves after one decision, not after a thousand. In change order.
    pub(super) sweeps: VecDeque<Sweep>,
    /// A phone decided in a sweep changed what the store keeps (its reserved
    /// CSeq/version marks moved): no NOTIFY is handed out until the store has
    /// taken that change ([`SubscriptionManager::persist_into`]), so it is
    /// written before the NOTIFY leaves, as for a change decided at once.
    pub(super) persist_barrier: bool,
    /// The targets outgrew `refresh_capacity` and it was said.
    pub(super) capacity_warned: bool,
    pub(super) rng: Rng,
    /// Upstream SUBSCRIBEs wait here for their turn.
    pub(super) pacer: Pacer,
    /// What changed since the store last took it (only with a store).
    pub(super) changes: Option<Changes>,
    /// Restored targets whose upstream refresh has not gone out yet: their
    /// phones' hold deadline starts when it does.
    pub(super) resuming: HashSet<TargetId>,
    /// Upstream SUBSCRIBEs whose authentication failed (for the metrics).
    pub(super) auth_failures: u64,
    /// Account user → its digest client, shared by all its upstream
    /// subscriptions: the last challenge per realm is answered with the next
    /// `nc` by every SUBSCRIBE of the account, new targets included, instead
    /// of a 401/407 round trip each.
    pub(super) digest: HashMap<String, DigestClient>,
    /// Account user → its hold after authentication failures: new upstream
    /// subscriptions of the account wait for it, then one probes for all.
    pub(super) auth_gate: HashMap<String, AuthGate>,
    /// Account user → the digest realm the upstream first challenged it with
    /// (when `[[account]] realm` does not pin one): no other realm is answered.
    pub(super) realms: HashMap<String, String>,
    /// Phone subscriptions per source IP (`[security] max_subscriptions_per_source`).
    pub(super) per_source: HashMap<IpAddr, usize>,
    /// Shares of `per_source` still held by phone subscriptions that ended
    /// without their source ever answering a NOTIFY, with when they are given
    /// back (`[security] block_s` after): a flood whose NOTIFYs go unanswered
    /// does not get its share back after each Timer F.
    pub(super) owed: VecDeque<(Instant, IpAddr)>,
    /// Refusals are logged at most once per source and interval.
    pub(super) log_gate: LogGate,
    /// The upstream moved to another server while it was not answering: when
    /// it answers, every subscription is made afresh (the old dialogs are dead).
    pub(super) moved: bool,
}

/// An account whose upstream authentication failed: until `until`, its new
/// upstream subscriptions are not sent (a wrong password with 1,000 keys would
/// otherwise be 2,000 refused SUBSCRIBEs per round, and providers ban for
/// less); then one goes as a probe and the others wait for its answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct AuthGate {
    pub until: Instant,
    /// Consecutive failed probes of the account (the hold doubles).
    pub failures: u32,
    /// A probe went out since the hold last grew: its failure doubles the
    /// hold; failures of SUBSCRIBEs sent before the hold (the same wave) do
    /// not.
    pub probing: bool,
}

/// A phone NOTIFY in the fan-out queue: its phone, and the CSeq and document
/// version reserved for it (it is built only while the phone still expects
/// exactly this one).
#[derive(Debug, Clone, Copy)]
pub(super) struct Queued {
    pub phone: PhoneId,
    pub target: TargetId,
    pub cseq: u32,
    pub version: u32,
    pub decided: Instant,
}

/// See [`SubscriptionManager::fanout_docs`].
#[derive(Default)]
pub(super) struct FanoutDocs {
    pub docs: Renderings,
    pub queued: usize,
    /// A sweep of the target's phones is pending (see
    /// [`SubscriptionManager::sweeps`]): keep the renderings.
    pub sweeping: bool,
}

/// The phones of one target still to be decided after its state changed
/// (a snapshot of its watchers at the change; a phone gone by its turn is
/// skipped).
pub(super) struct Sweep {
    pub target: TargetId,
    pub phones: Vec<PhoneId>,
    pub next: usize,
    /// When the change was decided.
    pub at: Instant,
}

/// How much earlier than `first_notify_timeout_ms` a held phone's first
/// NOTIFY is released: the time the NOTIFY takes to be on the wire (the
/// timer's tick, the rest of the loop's pass, the send), so the phone has it
/// within the timeout. At most a tenth of the timeout.
pub const HOLD_MARGIN: Duration = Duration::from_millis(20);

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
            digest: HashMap::new(),
            auth_gate: HashMap::new(),
            per_source: HashMap::new(),
            owed: VecDeque::new(),
            log_gate: LogGate::default(),
            moved: false,
            env,
            targets: IdMap::default(),
            by_aor: HashMap::new(),
            phones: IdMap::default(),
            phone_index: HashMap::new(),
            upstream_index: HashMap::new(),
            retired: HashMap::new(),
            timers: Timers::default(),
            next_id: 1,
            out: VecDeque::new(),
            fanout: VecDeque::new(),
            fanout_docs: IdMap::default(),
            sweeps: VecDeque::new(),
            persist_barrier: false,
            capacity_warned: false,
            rng,
        }
    }

    /// How long a phone waits for its target's state before its first NOTIFY
    /// renders what is known: `first_notify_timeout_ms` less [`HOLD_MARGIN`].
    pub(super) fn first_notify_hold(&self) -> Duration {
        let timeout = Duration::from_millis(self.env.cfg.subscriptions.first_notify_timeout_ms);
        timeout.saturating_sub(HOLD_MARGIN.min(timeout / 10))
    }

    // ----------------------------------------------------------- introspection

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values().map(|t| &**t)
    }
    pub fn target_by_aor(&self, aor: &str) -> Option<&Target> {
        self.by_aor
            .get(aor)
            .and_then(|id| self.targets.get(id))
            .map(|t| &**t)
    }
    pub fn phones(&self) -> impl Iterator<Item = &PhoneSub> {
        self.phones.values().map(|p| &**p)
    }
    pub fn phone(&self, id: PhoneId) -> Option<&PhoneSub> {
        self.phones.get(&id).map(|p| &**p)
    }

    /// Whether [`poll_out`](Self::poll_out) has something.
    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn poll_out(&mut self) -> Option<Out> {
        crate::transaction::drained(&mut self.out)
    }

    /// The next queued phone NOTIFY, built now from its target's newest
    /// rendering, with the time it is built at (`now`, or without one the time
    /// it was decided). Entries whose phone went away, ended, or was given a
    /// newer NOTIFY are skipped. Everything [`poll_out`](Self::poll_out) holds
    /// goes first: the endpoint drains it before asking for these.
    pub fn poll_notify(&mut self, now: Option<Instant>) -> Option<BuiltNotify> {
        loop {
            // a sweep's decision queued something for `poll_out` (a phone
            // ended) or must reach the store first: the endpoint does that
            if self.persist_barrier || !self.out.is_empty() {
                return None;
            }
            let Some(q) = self.fanout.pop_front() else {
                if self.advance_sweep() {
                    continue;
                }
                break;
            };
            let Some(slot) = self.fanout_docs.get_mut(&q.target) else {
                continue;
            };
            slot.queued = slot.queued.saturating_sub(1);
            let built = match self.phones.get_mut(&q.phone) {
                // still waiting for exactly this NOTIFY (not ended, not removed)
                Some(sub) if sub.queued && sub.local_cseq == q.cseq => {
                    let rendering = self.targets.get(&q.target).and_then(|target| {
                        let profile = sub.profile.get(&self.env.profiles)?;
                        Some(slot.docs.get(profile, target))
                    });
                    match rendering {
                        Some((crate::profile::Rendering::Document(doc), Some(digest))) => {
                            let branch = self.rng.branch();
                            let at = now.unwrap_or(q.decided);
                            Some(sub.build_queued(&self.env, &branch, doc, digest, q.version, at))
                        }
                        _ => {
                            // nothing to send it any more (the latest decision
                            // ends such a phone itself): not in flight
                            sub.unqueue();
                            None
                        }
                    }
                }
                _ => None,
            };
            if slot.queued == 0 && !slot.sweeping {
                self.fanout_docs.remove(&q.target);
            }
            if built.is_some() {
                return built;
            }
        }
        if self.fanout.capacity() > 256 {
            self.fanout.shrink_to(64);
        }
        None
    }

    /// Decide the next phone of the oldest pending sweep (or end that sweep).
    /// False when no sweep is pending.
    fn advance_sweep(&mut self) -> bool {
        let Some(s) = self.sweeps.front() else {
            return false;
        };
        if s.next >= s.phones.len() {
            let target = s.target;
            self.sweeps.pop_front();
            if let Some(slot) = self.fanout_docs.get_mut(&target) {
                slot.sweeping = false;
            }
            self.settle_docs(target);
            return true;
        }
        self.decide_in_sweep();
        if self.changes.as_ref().is_some_and(|c| !c.is_empty()) {
            // the decision changed what the store keeps (typically the
            // phone's reserved marks moved, and its neighbours' are about to):
            // the rest of the target's phones are decided now, so one durable
            // batch covers them all, and no NOTIFY leaves before it is taken
            while self.decide_in_sweep() {}
            self.persist_barrier = true;
        }
        true
    }

    /// Decide the next phone of the oldest sweep; false when it has none left.
    fn decide_in_sweep(&mut self) -> bool {
        let Some(s) = self.sweeps.front_mut() else {
            return false;
        };
        let Some(&phone) = s.phones.get(s.next) else {
            return false;
        };
        s.next += 1;
        let (target, at) = (s.target, s.at);
        self.decide_watcher(target, phone, at);
        true
    }

    /// Whether NOTIFYs wait until the store has taken the latest changes
    /// ([`SubscriptionManager::persist_into`]).
    pub fn waits_for_persist(&self) -> bool {
        self.persist_barrier
    }

    /// When the pending decisions were made: the time for what a sweep's
    /// decision queued (see [`SubscriptionManager::poll_out`]).
    pub fn sweep_time(&self) -> Option<Instant> {
        self.sweeps.front().map(|s| s.at)
    }

    /// Phone NOTIFYs decided and not built yet.
    pub fn queued_notifies(&self) -> usize {
        self.fanout.len()
            + self
                .sweeps
                .iter()
                .map(|s| s.phones.len().saturating_sub(s.next))
                .sum::<usize>()
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

    /// How many targets `upstream_rate` keeps refreshed upstream: each has
    /// two subscriptions, refreshed as early as 70 % of `upstream_expires`.
    /// Beyond that the refreshes fall behind and upstream subscriptions can
    /// expire before their turn.
    pub fn refresh_capacity(&self) -> usize {
        let s = &self.env.cfg.subscriptions;
        let per_s = f64::from(s.upstream_rate.max(1));
        (per_s * f64::from(s.upstream_expires) * 0.7 / 2.0) as usize
    }

    /// Warn (once, until the count is back under 90 % of it) when the
    /// targets outgrow [`refresh_capacity`](Self::refresh_capacity).
    pub(super) fn check_refresh_capacity(&mut self) {
        let cap = self.refresh_capacity();
        let n = self.targets.len();
        if n > cap && !self.capacity_warned {
            self.capacity_warned = true;
            let s = &self.env.cfg.subscriptions;
            tracing::warn!(
                targets = n,
                capacity = cap,
                upstream_rate = s.upstream_rate,
                upstream_expires = s.upstream_expires,
                "more watched targets than upstream_rate can keep refreshed: upstream subscriptions may expire before their refresh; raise [subscriptions] upstream_rate or upstream_expires"
            );
        } else if n * 10 < cap * 9 {
            self.capacity_warned = false;
        }
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
    pub(super) fn timer_is_live(&self, t: &Timer) -> bool {
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

    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn respond(&mut self, key: ServerKey, data: Bytes) {
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
        // the index holds digests: the subscription's own Call-ID and tag decide
        let id = self.phone_index.get(&DialogKey::new(cid, to_tag)).copied();
        match id.filter(|id| {
            self.phones.get(id).is_some_and(|p| {
                p.call_id().as_bytes() == cid && p.local_tag().as_bytes() == to_tag
            })
        }) {
            Some(id) => Route::PhoneDialog(id),
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

    // ------------------------------------------------------------ targets

    pub(super) fn ensure_target(
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
        self.targets.insert(id, Box::new(t));
        self.check_refresh_capacity();
        self.mark_target(id, true);
        for package in Package::BOTH {
            self.send_subscribe(id, package, false, now);
        }
        id
    }

    /// Recompute the merged view and decide for every watcher whether its
    /// document changed (one rendering per profile; the NOTIFYs are queued with
    /// their CSeq and version reserved, and built as the endpoint sends them).
    pub(super) fn recompute(&mut self, target: TargetId, now: Instant) {
        let Some(t) = self.targets.get_mut(&target) else {
            return;
        };
        t.merge();
        let phones = t.watchers.clone();
        // the new state's renderings replace those of an earlier change
        self.fresh_docs(target);
        if let Some(slot) = self.fanout_docs.get_mut(&target) {
            slot.sweeping = true;
        }
        // each phone is decided when its turn to be sent comes; a sweep still
        // pending for the target starts over with the new state
        match self.sweeps.iter_mut().find(|s| s.target == target) {
            Some(s) => {
                s.phones = phones;
                s.next = 0;
                s.at = now;
            }
            None => self.sweeps.push_back(Sweep {
                target,
                phones,
                next: 0,
                at: now,
            }),
        }
    }

    /// One watcher of a changed target: a phone holding its first NOTIFY is
    /// released once the target's state is known, the others get the new
    /// rendering if it changed for them.
    fn decide_watcher(&mut self, target: TargetId, w: PhoneId, now: Instant) {
        let holding = self
            .phones
            .get(&w)
            .is_some_and(|p| p.state == PhoneState::Holding);
        if !holding {
            self.update_phone(w, now);
        } else if self.targets.get(&target).is_some_and(|t| t.ready()) {
            self.release_first_notify(w, false, now);
        }
    }

    /// New renderings for the target's queued NOTIFYs: its state changed, or
    /// a phone's NOTIFY is decided on its own.
    pub(super) fn fresh_docs(&mut self, target: TargetId) {
        let slot = self.fanout_docs.entry(target).or_default();
        slot.docs = Renderings::default();
    }

    /// A target's renderings are kept only while NOTIFYs wait for them.
    pub(super) fn settle_docs(&mut self, target: TargetId) {
        if self
            .fanout_docs
            .get(&target)
            .is_some_and(|s| s.queued == 0 && !s.sweeping)
        {
            self.fanout_docs.remove(&target);
        }
    }

    pub(super) fn drop_target(&mut self, target: TargetId, now: Instant) {
        let Some(t) = self.targets.get(&target) else {
            return;
        };
        if t.verified_watch {
            tracing::info!(target = %t.aor, "no phone watches the target any more: unsubscribing upstream");
            let established = Package::BOTH.map(|p| t.upstream(p).established().then_some(p));
            for p in established.into_iter().flatten() {
                self.send_subscribe(target, p, true, now);
            }
        } else {
            // No watcher ever showed its source is real (a flood from forged or
            // silent sources looks like this): the upstream subscriptions are
            // abandoned, not un-SUBSCRIBEd, so the attack costs the provider no
            // second wave. They end at their expiry, or at the provider's next
            // NOTIFY, which gets a 481 once the retired Call-ID is forgotten.
            tracing::info!(target = %t.aor, "no phone watches the target any more and none ever answered: leaving its upstream subscriptions to expire");
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

    /// The outcome of a request the manager sent.
    pub fn on_response(&mut self, tag: ReqTag, msg: &SipMessage, now: Instant) {
        match tag {
            ReqTag::Notify { phone, cseq } => {
                let Some(sub) = self.phones.get_mut(&phone) else {
                    return;
                };
                let code = msg.status().unwrap_or(0);
                let after = sub.on_notify_response(cseq, code);
                let target = sub.target;
                if (200..300).contains(&code)
                    && let Some(t) = self.targets.get_mut(&target)
                    && !t.verified_watch
                {
                    t.verified_watch = true;
                    // kept across a restart: the target is unsubscribed, not
                    // abandoned, when its last watcher goes
                    self.mark_target(target, false);
                }
                match after {
                    AfterNotify::Nothing => {}
                    AfterNotify::Update => self.update_phone_alone(phone, now),
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
                let auth = account_digest(&mut self.digest, &self.env.cfg, &t.account);
                let action = up.on_response(
                    msg,
                    default_expires,
                    &t.aor,
                    realm,
                    &mut answered,
                    auth,
                    now,
                    &mut self.rng,
                );
                if let Some(r) = answered
                    && realm.is_none()
                {
                    tracing::info!(account = %t.account, realm = %r, "upstream realm kept for the account");
                    self.realms.insert(t.account.clone(), r);
                }
                if msg.status().is_some_and(|c| (200..300).contains(&c))
                    && self.auth_gate.remove(&t.account).is_some()
                {
                    tracing::info!(account = %t.account, "upstream authentication works again: the account's subscriptions resume");
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
                if let Some(sub) = self.phones.get(&phone) {
                    tracing::warn!(%phone, "NOTIFY timed out: removing the phone subscription");
                    if !sub.verified {
                        // its source never answered: it keeps the share a while
                        self.owe_share(sub.flow.remote.ip(), now);
                    }
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

    // ------------------------------------------------------------ timers

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
    }

    pub(super) fn upstream(&self, target: TargetId, package: Package) -> Option<&Upstream> {
        self.targets.get(&target).map(|t| t.upstream(package))
    }

    pub(super) fn fire(&mut self, timer: Timer, now: Instant) {
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
                let target = self.phones.get(&phone).map(|p| p.target);
                if let Some(target) = target {
                    self.fresh_docs(target);
                    self.release_first_notify(phone, true, now);
                    self.settle_docs(target);
                }
            }
            Timer::Pace => self.on_pace(now),
            Timer::Up(target, package, timer) => {
                let unwatched = self
                    .targets
                    .get(&target)
                    .is_some_and(|t| t.watchers.is_empty());
                if unwatched && matches!(timer, UpTimer::Retry { .. }) {
                    // nobody watches a refused target: its linger ends it
                    return;
                }
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

/// The credentials of `account` (an `[[account]]` user, else the first account).
pub(super) fn credentials(cfg: &Config, account: &str) -> Credentials {
    let a = cfg.account_for(Some(account));
    Credentials {
        username: a.map(|a| a.auth_user.clone()).unwrap_or_default(),
        password: a.map(|a| a.password.clone()).unwrap_or_default(),
    }
}

/// The digest client of `account`, made on first use.
pub(super) fn account_digest<'a>(
    digest: &'a mut HashMap<String, DigestClient>,
    cfg: &Config,
    account: &str,
) -> &'a mut DigestClient {
    digest
        .entry(account.to_string())
        .or_insert_with(|| DigestClient::new(credentials(cfg, account)))
}

#[allow(dead_code)]
fn _assert_plain_data() {
    pub(super) fn is_serde<T: serde::Serialize + for<'de> serde::Deserialize<'de>>() {}
    is_serde::<PhoneSub>();
    is_serde::<Upstream>();
    is_serde::<Target>();
}
