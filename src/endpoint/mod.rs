//! The sans-IO endpoint: everything the bridge does, as a state machine fed with
//! `(message, flow, time)` and timeouts, producing [`Transmit`]s. The tokio
//! runtime (`crate::runtime`) only moves bytes and calls these methods.
//!
//! Dispatch of an incoming request, in order:
//! 1. framing and validation (`400`/`416`/`505` with a reason phrase naming the
//!    problem when the Via can be read; otherwise dropped; always logged with the
//!    source address);
//! 2. RFC 3581 `received`/`rport` stamped on the top Via;
//! 3. source check: phones (`[security] allow`) and the upstream only, else `403`;
//! 4. the transaction layer absorbs retransmissions and hop-by-hop ACKs;
//! 5. the subscription translator takes translated SUBSCRIBEs, requests inside its
//!    own dialogs, and upstream NOTIFYs for its subscriptions; the bridge answers
//!    OPTIONS addressed to itself and `481` for unknown dialogs addressed to it;
//! 6. everything else goes to the proxy.
//!
//! Requests inside the bridge's own upstream subscriptions (NOTIFYs) are taken
//! from the upstream only (`403` otherwise). A response is taken only from where
//! the request of its client transaction went (the upstream: [`Endpoint::is_upstream`]);
//! a stray one (no transaction) only from the upstream; anything else is dropped,
//! counted in [`Stats::responses_dropped`] and logged at info once per source per
//! minute.

pub mod failover;
pub mod guard;

use crate::config::{Config, Watchers};
use crate::context::Context;
use crate::flow::{ConnId, Flow, Transmit};
use crate::local::{CALL_ID_HOST, CONTACT_USER};
use crate::profile::ProfileSet;
use crate::proxy::{self, Proxy};
use crate::sip::Via;
use crate::sip::{Editor, HeaderName, MessageBuilder, Method, SipMessage, Transport, Uri};
use crate::subscription::{Out, ReqTag, Route, SubscriptionManager};
use crate::transaction::{
    ClientKey, RequestDisposition, ResponseDisposition, Timers, TransactionLayer, TxEvent, TxKey,
};
use crate::util::Rng;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The bridge's own addresses (defined in [`crate::local`]; re-exported here
/// because [`Endpoint::new`] takes them).
pub use crate::local::LocalAddrs;

pub mod status;

/// Who started a client transaction.
#[derive(Debug, Clone)]
enum Owner {
    Sub(ReqTag),
    Proxy(proxy::Tag),
    /// Keep-alive OPTIONS towards the upstream.
    Ping,
    /// OPTIONS to a more preferred upstream server than the one in use
    /// (failback, see [`failover`]).
    Probe(Flow),
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub malformed_dropped: u64,
    pub malformed_rejected: u64,
    pub forbidden: u64,
    /// Responses dropped for their source or their next hop (forged, stray).
    pub responses_dropped: u64,
    /// Requests dropped: over `[security] rate_per_source`, or from a source
    /// blocked after repeated authentication failures.
    pub throttled: u64,
    /// BLF SUBSCRIBEs refused by `[security] watchers`.
    pub watchers_refused: u64,
}

pub struct Endpoint {
    ctx: Context,
    txl: TransactionLayer,
    subs: SubscriptionManager,
    proxy: Proxy,
    owners: HashMap<ClientKey, Owner>,
    rng: Rng,
    out: VecDeque<Transmit>,
    stats: Stats,
    next_ping: Option<Instant>,
    /// Changes are tracked for a state store.
    persistence: bool,
    /// See [`Endpoint::transmit_is_fanout`].
    last_fanout: bool,
    /// For the metrics.
    counters: status::Counters,
    /// A graceful stop is under way: new requests are not taken.
    draining: bool,
    /// Upstream liveness, from the keep-alive OPTIONS (see [`Liveness`]).
    liveness: Liveness,
    /// When a dropped response was last logged, per source (rate limit).
    drop_log: HashMap<std::net::IpAddr, Instant>,
    /// Per-source rate limit and authentication-failure blocks.
    guard: guard::Guard,
    /// Refused watchers are logged once per source and interval.
    log_gate: crate::util::LogGate,
    /// The resolved upstream servers and the one in use.
    failover: failover::Failover,
    /// Where the client transactions towards an upstream server went (for
    /// failover on their timeout).
    sent_upstream: HashMap<ClientKey, Flow>,
    /// With several upstream servers: the keep-alive OPTIONS to the one in use
    /// must be answered by then, else the next server is tried.
    ping_deadline: Option<Instant>,
    /// The TCP connection the upstream answers on (the one the bridge opened
    /// and sends its requests over), once a response came on it.
    upstream_conn: Option<ConnId>,
}

/// A dropped response is logged at info at most once per source per interval.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Sources remembered for that rate limit (beyond: not logged at info).
const DROP_LOG_SOURCES: usize = 1024;

/// Whether the upstream answers. A keep-alive OPTIONS goes out every
/// `keepalive_interval`; when a whole interval passes without anything heard
/// from the upstream (a response, a request) since the last ping, it is lost:
/// every lamp turns `unknown` and pings go out every [`PROBE_INTERVAL`] until
/// it answers again; then every upstream subscription is re-established.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness {
    /// A ping went out and nothing was heard from the upstream since.
    pub awaiting: bool,
    /// The upstream is considered lost.
    pub lost: bool,
    /// When something was last heard from the upstream.
    pub last_heard: Option<Instant>,
}

/// Ping interval while the upstream is lost.
pub const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// With several upstream servers, how long a keep-alive OPTIONS to the one in
/// use may stay unanswered before the next one is tried (over UDP the request
/// went out at 0, 0.5, 1.5 and 3.5 s by then). So a dead server is left within
/// `keepalive_interval` + 4 s (34 s with the default interval).
pub const PING_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

impl Endpoint {
    /// A deterministic endpoint (random values from `seed`): for tests and
    /// fuzzing. The runtime uses [`Endpoint::with_rng`] with an OS-seeded source.
    pub fn new(
        cfg: Arc<Config>,
        profiles: Arc<ProfileSet>,
        local: LocalAddrs,
        upstream: SocketAddr,
        seed: u64,
        now: Instant,
    ) -> Self {
        Endpoint::with_rng(cfg, profiles, local, upstream, Rng::seeded(seed), now)
    }

    /// The endpoint with its random source (the runtime seeds it from the OS).
    pub fn with_rng(
        cfg: Arc<Config>,
        profiles: Arc<ProfileSet>,
        local: LocalAddrs,
        upstream: SocketAddr,
        mut rng: Rng,
        now: Instant,
    ) -> Self {
        let timers = Timers::default();
        let ctx = Context::new(cfg, profiles, local, upstream, timers.t1);
        let ctx_upstream = ctx.upstream;
        let subs = SubscriptionManager::new(ctx.clone(), rng.fork());
        let proxy = Proxy::new(ctx.clone(), rng.fork());
        let guard = guard::Guard::new(&ctx.cfg.security);
        // the first keep-alive goes out at once: readiness (`/readyz`) needs to
        // know that the upstream answers
        let next_ping = match ctx.cfg.upstream.keepalive {
            crate::config::Keepalive::None => None,
            _ => Some(now),
        };
        Endpoint {
            ctx,
            txl: TransactionLayer::new(timers),
            subs,
            proxy,
            owners: HashMap::new(),
            rng,
            out: VecDeque::new(),
            stats: Stats::default(),
            next_ping,
            persistence: false,
            last_fanout: false,
            counters: status::Counters::default(),
            draining: false,
            liveness: Liveness::default(),
            drop_log: HashMap::new(),
            guard,
            log_gate: crate::util::LogGate::default(),
            failover: failover::Failover::new(ctx_upstream),
            sent_upstream: HashMap::new(),
            ping_deadline: None,
            upstream_conn: None,
        }
    }

    /// Keep this flow-token key (the one in the state directory).
    pub fn set_token_key(&mut self, key: [u8; 32]) {
        self.proxy.set_token_key(key);
    }

    /// Track changes for a state store from now on ([`Endpoint::poll_persist`]).
    pub fn enable_persistence(&mut self) {
        self.persistence = true;
        self.subs.enable_persistence();
        self.proxy.enable_persistence();
    }

    /// What changed since the last call, as one store batch.
    pub fn poll_persist(&mut self) -> Option<crate::store::Batch> {
        if !self.persistence {
            return None;
        }
        let mut b = crate::store::Batch::default();
        let subs_durable = self.subs.persist_into(&mut b);
        let regs = self.proxy.persist_into(&mut b);
        b.durable = subs_durable || regs;
        (!b.is_empty()).then_some(b)
    }

    /// Bring back what a state store held (after a restart). Unreadable records
    /// are logged and skipped; nothing here panics on a damaged store.
    pub fn restore(
        &mut self,
        snap: &crate::store::Snapshot,
        now: Instant,
    ) -> crate::subscription::Restored {
        let restored = self.subs.restore(&snap.phones, &snap.targets, now);
        let mut bindings = Vec::new();
        for (k, v) in &snap.bindings {
            match serde_json::from_slice::<crate::proxy::registrar::Binding>(v) {
                Ok(b) if b.expires_at > now => bindings.push(b),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(k), error = %e, "state store: unreadable binding dropped")
                }
            }
        }
        let registrar_path = snap
            .meta
            .iter()
            .find(|(k, _)| k == b"registrar_path")
            .and_then(|(_, v)| serde_json::from_slice::<Option<bool>>(v).ok())
            .flatten();
        let n = bindings.len();
        self.proxy.restore_bindings(bindings, registrar_path, now);
        tracing::info!(bindings = n, "restored registrations from the state store");
        self.pump(now);
        restored
    }

    /// SIGHUP: the new configuration's live parts (accounts, allow list,
    /// profiles) take effect; every phone whose rendering changed gets a NOTIFY.
    /// Listen addresses and the upstream stay as they are until a restart.
    pub fn reload(&mut self, cfg: Arc<Config>, profiles: Arc<ProfileSet>, now: Instant) {
        let ctx = Context::new(
            cfg,
            profiles,
            self.ctx.local.clone(),
            self.ctx.upstream.remote,
            self.ctx.t1,
        )
        .with_upstream(
            self.failover.current(),
            self.failover.all(),
            self.ctx.upstream_names.clone(),
        );
        self.ctx = ctx.clone();
        self.guard.reconfigure(&ctx.cfg.security);
        self.proxy.reload(ctx.clone());
        self.subs.reload(ctx, now);
        self.pump(now);
    }

    /// A graceful stop begins: new requests are no longer taken (a phone
    /// retransmits them to the bridge that comes back); transactions in flight
    /// finish. Phone subscriptions are kept (a `terminated` NOTIFY would make the
    /// phones drop their keys): they resume after the restart.
    pub fn begin_shutdown(&mut self, _now: Instant) {
        self.draining = true;
        self.next_ping = None;
    }

    /// No client transaction is waiting for a final response any more (keep-alive
    /// pings do not count: nobody waits for them).
    pub fn is_drained(&self) -> bool {
        let pings = self
            .owners
            .iter()
            .filter(|(k, o)| {
                matches!(o, Owner::Ping)
                    && matches!(
                        self.txl.client_state(k),
                        Some(
                            crate::transaction::ClientState::Trying
                                | crate::transaction::ClientState::Proceeding
                        )
                    )
            })
            .count();
        self.subs.queued_notifies() == 0 && self.txl.awaiting_final() <= pings
    }

    /// Live (client, server) transactions (the memory benchmark checks none is
    /// left when it measures).
    pub fn transactions(&self) -> (usize, usize) {
        self.txl.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The operator's window: every target with its lamp, upstream
    /// subscriptions and watching phones, plus the counters.
    pub fn status(&self, now: Instant) -> status::Status {
        self.status_of(now, true)
    }

    /// The counts and counters behind `/metrics` and `/readyz`, without the
    /// list of targets and their watchers: one pass over the targets and one
    /// over the phones, nothing allocated per phone.
    pub fn status_summary(&self, now: Instant) -> status::Status {
        self.status_of(now, false)
    }

    fn status_of(&self, now: Instant, full: bool) -> status::Status {
        let mut by_target: std::collections::HashMap<_, Vec<status::WatcherStatus>> =
            std::collections::HashMap::new();
        // a handful of profiles: counted by name without a String per phone
        let mut by_profile: Vec<(&str, usize)> = Vec::new();
        let mut phones = 0;
        for p in self.subs.phones() {
            phones += 1;
            let name = p.profile.name();
            match by_profile.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c += 1,
                None => by_profile.push((name, 1)),
            }
            if full {
                by_target
                    .entry(p.target)
                    .or_default()
                    .push(status::WatcherStatus {
                        address: p.flow.to_string(),
                        profile: name.to_string(),
                        user_agent: p.user_agent().map(str::to_string),
                        expires_in_s: status::secs_until(p.expires_at, now),
                    });
            }
        }
        let by_profile = by_profile
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let mut summary = status::Summary::default();
        let mut targets = Vec::new();
        for t in self.subs.targets() {
            summary.count(t);
            if full {
                let mut s = status::target_status(t);
                s.watchers = by_target.remove(&t.id).unwrap_or_default();
                targets.push(s);
            }
        }
        targets.sort_by(|a, b| a.aor.cmp(&b.aor));
        let mut counters = self.counters.clone();
        for (code, n) in &self.proxy.stats().rejected_by_code {
            *counters.requests_rejected.entry(*code).or_default() += n;
        }
        if self.stats.forbidden > 0 {
            *counters.requests_rejected.entry(403).or_default() += self.stats.forbidden;
        }
        if self.stats.malformed_rejected > 0 {
            *counters.requests_rejected.entry(400).or_default() += self.stats.malformed_rejected;
        }
        counters.upstream_auth_failures = self.subs.auth_failures();
        status::Status {
            targets,
            phone_subscriptions: phones,
            phones_by_profile: by_profile,
            upstream_paced: self.subs.paced(),
            upstream_refresh_capacity: self.subs.refresh_capacity(),
            upstream_reachable: !self.liveness.lost,
            upstream_heard_ms_ago: self
                .liveness
                .last_heard
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            upstream_server: self.failover.current().remote.to_string(),
            upstream_servers: self.failover.len(),
            counters,
            summary,
            full,
        }
    }

    pub fn subscriptions(&self) -> &SubscriptionManager {
        &self.subs
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// A UDP datagram (one message) arrived.
    pub fn handle_datagram(&mut self, from: Flow, data: Bytes, now: Instant) {
        match SipMessage::parse(data) {
            Ok(m) => self.handle_message(from, m, now),
            Err(e) => {
                self.stats.malformed_dropped += 1;
                tracing::warn!(%from, error = %e, "dropping unparsable datagram");
            }
        }
    }

    /// A framed message arrived (from UDP or a TCP stream).
    pub fn handle_message(&mut self, from: Flow, msg: SipMessage, now: Instant) {
        self.stats.received += 1;
        if self.upstream_index(&from) == Some(self.failover.index()) {
            self.heard_upstream(now);
            // responses come back on the connection their request went out on
            if from.conn.is_some() && !msg.is_request() {
                self.upstream_conn = from.conn;
            }
        }
        if msg.is_request() {
            self.on_request(from, msg, now);
        } else {
            self.on_response(from, msg, now);
        }
        self.pump(now);
    }

    /// Did this come from the upstream? Same IP, and the upstream's port — unless
    /// the upstream's IP is not one of the phones' (then any port: the upstream may
    /// open TCP connections from ephemeral ports).
    /// With several resolved servers, any of them is the upstream.
    fn is_upstream(&self, from: &Flow) -> bool {
        self.upstream_index(from).is_some()
    }

    /// Which resolved upstream server this came from (the rule of
    /// [`Endpoint::is_upstream`]; the exact address first, then the IP).
    fn upstream_index(&self, from: &Flow) -> Option<usize> {
        let ip = from.remote.ip();
        // an upstream reached over TLS speaks only TLS: clear text claiming to
        // be it is anyone else
        if self.ctx.upstream.transport == Transport::Tls && from.transport != Transport::Tls {
            return None;
        }
        let all = &self.ctx.upstreams;
        all.iter()
            .position(|u| u.remote == from.remote)
            .or_else(|| {
                (!self.ctx.cfg.security.allows(ip))
                    .then(|| all.iter().position(|u| u.remote.ip() == ip))
                    .flatten()
            })
    }

    fn on_request(&mut self, from: Flow, msg: SipMessage, now: Instant) {
        if let Err(d) = crate::sip::validate::check_request(&msg) {
            // Any Via header will do: the response copies the Via bytes as they
            // came and goes back on the source flow (RFC 4475 badinv01, badvers).
            if msg.header(HeaderName::Via).is_some() {
                self.stats.malformed_rejected += 1;
                tracing::warn!(%from, code = d.code, reason = d.reason, "rejecting malformed request");
                let resp = MessageBuilder::response_to(&msg, d.code, d.reason, None).finish();
                self.out.push_back(Transmit {
                    flow: from.reply(),
                    data: resp,
                });
            } else {
                self.stats.malformed_dropped += 1;
                tracing::warn!(%from, reason = d.reason, "dropping malformed request without a usable Via");
            }
            return;
        }
        // RFC 3581 / RFC 3261 §18.2.1: stamp received/rport on the top Via.
        let msg = match stamp_via(&msg, from.remote) {
            Some(bytes) => match SipMessage::parse(bytes) {
                Ok(m) => m,
                Err(_) => return,
            },
            None => msg,
        };
        let from_upstream = self.is_upstream(&from);
        if !from_upstream && !self.ctx.cfg.security.allows(from.remote.ip()) {
            self.stats.forbidden += 1;
            tracing::warn!(%from, method = %msg.method().map(|m| m.to_string()).unwrap_or_default(), "request from a source that is neither allowed nor the upstream: 403");
            if msg.method() != Some(&Method::Ack) {
                let resp = MessageBuilder::response_to(&msg, 403, "Forbidden", None).finish();
                self.out.push_back(Transmit {
                    flow: from.reply(),
                    data: resp,
                });
            }
            return;
        }
        if !from_upstream {
            match self.guard.admit(from.remote.ip(), now) {
                guard::Admission::Pass => {}
                guard::Admission::Limited | guard::Admission::Blocked => {
                    self.stats.throttled += 1;
                    return;
                }
            }
        }
        let reply_to = from.reply();
        let key = match self.txl.on_request(&msg, from, reply_to, now) {
            RequestDisposition::New(_) if self.draining => {
                tracing::debug!(%from, "stopping: new request not taken (the phone retransmits it to the next start)");
                return;
            }
            RequestDisposition::New(key) => key,
            RequestDisposition::Retransmission | RequestDisposition::AckAbsorbed => return,
            RequestDisposition::Malformed => {
                tracing::warn!(%from, "dropping request that cannot be matched to a transaction");
                return;
            }
            RequestDisposition::Ack => {
                // ACK for a 2xx (or stray): routed by the proxy
                self.proxy.on_ack(&msg, from, from_upstream, now);
                return;
            }
        };
        let Some(req) = msg.as_request() else {
            return; // only requests reach here (handle_message)
        };
        let method = req.method().clone();
        let in_dialog = msg.to_tag().is_some();

        // The subscription translator's own requests: those inside our upstream
        // subscription dialogs (NOTIFY, recognised by their Call-ID whatever
        // connection they arrive on), and, from phones only, those inside a phone
        // subscription the bridge terminates and new SUBSCRIBEs it translates.
        match self.subs.route(&msg) {
            Route::NotOurs => {}
            route if route.is_phone_side() && from_upstream => {}
            // Requests inside the bridge's upstream subscriptions come from the
            // upstream only (a phone knowing the dialog could inject state).
            Route::Upstream(..) | Route::RetiredNotify if !from_upstream => {
                self.stats.forbidden += 1;
                tracing::warn!(%from, "request inside an upstream subscription, not from the upstream: 403");
                let resp = MessageBuilder::response_to(&msg, 403, "Forbidden", None).finish();
                let _ = self.txl.respond(&key, resp, now);
                return;
            }
            Route::NewTranslated if !self.may_watch(&msg, &from) => {
                self.stats.watchers_refused += 1;
                if self.log_gate.allow(from.remote.ip(), now) {
                    tracing::warn!(%from, "BLF SUBSCRIBE refused: the watcher neither registered through the bridge from this address nor is an [[account]] user ([security] watchers; logged once per source every 10 s)");
                }
                let resp = MessageBuilder::response_to(&msg, 403, "Forbidden", None).finish();
                let _ = self.txl.respond(&key, resp, now);
                return;
            }
            route => {
                if matches!(route, Route::Upstream(..)) && method == Method::Notify {
                    self.counters.notifies_received += 1;
                }
                self.subs.on_request(route, key, &msg, from, now);
                return;
            }
        }
        if self.addressed_to_us(&msg) && msg.header(HeaderName::Route).is_none() {
            if in_dialog {
                // a dialog of ours we do not know (e.g. after a restart): 481
                let resp =
                    MessageBuilder::response_to(&msg, 481, "Call/Transaction Does Not Exist", None)
                        .finish();
                let _ = self.txl.respond(&key, resp, now);
                return;
            }
            if method == Method::Options {
                let resp = MessageBuilder::response_to(&msg, 200, "OK", None)
                    .header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK, MESSAGE, REGISTER")
                    .header("Allow-Events", "dialog, presence, message-summary")
                    .header("Accept", "application/sdp, application/dialog-info+xml, application/pidf+xml")
                    .finish();
                let _ = self.txl.respond(&key, resp, now);
                return;
            }
        }
        if method == Method::Cancel {
            let invite = self.txl.find_invite_for_cancel(&msg);
            self.proxy.on_cancel(key, &msg, invite, now);
            return;
        }
        self.proxy.on_request(key, &msg, from, from_upstream, now);
    }

    /// `[security] watchers`: may this phone have its BLF SUBSCRIBE translated?
    /// With `registered`: its From user is an `[[account]]` user, or it
    /// registered through the bridge (a binding the registrar accepted) from
    /// this address (UDP: the same address and port; TCP: the same IP).
    fn may_watch(&self, msg: &SipMessage, from: &Flow) -> bool {
        if self.ctx.cfg.security.watchers == Watchers::Allowed {
            return true;
        }
        let user = msg
            .from()
            .and_then(|f| f.ok())
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user_str().map(str::to_string));
        if user.is_some_and(|u| self.ctx.cfg.accounts.iter().any(|a| a.user == u)) {
            return true;
        }
        self.proxy.registrations().has_confirmed_from(from)
    }

    /// Is the Request-URI the bridge itself (our Contact user, or our address with
    /// no user)? See [`LocalAddrs::addresses_bridge`].
    fn addressed_to_us(&self, msg: &SipMessage) -> bool {
        msg.request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .is_some_and(|u| self.ctx.local.addresses_bridge(&u))
    }

    fn on_response(&mut self, from: Flow, msg: SipMessage, now: Instant) {
        if let Err(d) = crate::sip::validate::check_response(&msg) {
            self.stats.malformed_dropped += 1;
            tracing::warn!(%from, reason = d.reason, "dropping malformed response");
            return;
        }
        // A response is taken only from where its request went; a stray one
        // (no transaction, e.g. after a restart) only from the upstream.
        let from_ok = match self.txl.response_flow(&msg) {
            Some(sent_to) if self.failover.position(&sent_to).is_some() => {
                self.upstream_index(&from).is_some()
                    && self.upstream_index(&from) == self.failover.position(&sent_to)
            }
            Some(sent_to) => sent_to.remote == from.remote,
            None => self.is_upstream(&from),
        };
        if !from_ok {
            self.response_dropped(&from, "not from where its request went", now);
            return;
        }
        match self.txl.on_response(&msg, now) {
            ResponseDisposition::PassUp(key) => {
                let final_ = msg.status().is_some_and(|s| s >= 200);
                let owner = if final_ && key.method() != &Method::Invite {
                    self.owners.remove(&key)
                } else {
                    self.owners.get(&key).cloned()
                };
                match owner {
                    Some(Owner::Sub(tag)) if final_ => self.subs.on_response(tag, &msg, now),
                    Some(Owner::Sub(_)) => {}
                    Some(Owner::Proxy(tag)) => self.proxy.on_response(tag, &msg, now),
                    // Any answer shows the upstream reachable; pings carry no
                    // credentials and a 401/407 to one is not answered.
                    Some(Owner::Ping) => {}
                    // A more preferred server answers (a 503 says it does not
                    // want traffic yet): back to it.
                    Some(Owner::Probe(server)) if final_ && msg.status() != Some(503) => {
                        self.fail_back(server, now)
                    }
                    Some(Owner::Probe(_)) => {}
                    None => {}
                }
            }
            ResponseDisposition::Absorbed => {}
            ResponseDisposition::Stray => {
                if let Err(why) = self.proxy.on_stray_response(&msg) {
                    self.response_dropped(&from, why, now);
                }
            }
        }
    }

    /// Count a dropped response; log it at info once per source per minute.
    fn response_dropped(&mut self, from: &Flow, why: &'static str, now: Instant) {
        self.stats.responses_dropped += 1;
        let ip = from.remote.ip();
        if self.drop_log.len() >= DROP_LOG_SOURCES {
            self.drop_log.retain(|_, at| now < *at + DROP_LOG_INTERVAL);
        }
        let due = self
            .drop_log
            .get(&ip)
            .is_none_or(|at| now >= *at + DROP_LOG_INTERVAL);
        if due && self.drop_log.len() < DROP_LOG_SOURCES {
            self.drop_log.insert(ip, now);
            tracing::info!(%from, reason = why, dropped_total = self.stats.responses_dropped,
                "dropping response (further ones from this source are not logged for a minute)");
        } else {
            tracing::debug!(%from, reason = why, "dropping response");
        }
    }

    /// A CRLFCRLF keep-alive arrived on a TCP connection: answer with a CRLF pong.
    pub fn handle_keepalive_ping(&mut self, from: Flow) {
        self.out.push_back(Transmit {
            flow: from,
            data: Bytes::from_static(b"\r\n"),
        });
    }

    /// A timer set through [`Endpoint::poll_timeout`] fired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.txl.handle_timeout(now);
        self.subs.handle_timeout(now);
        self.proxy.handle_timeout(now);
        if self.next_ping.is_some_and(|t| t <= now) {
            self.send_keepalive(now);
        }
        if self.ping_deadline.is_some_and(|t| t <= now) {
            self.ping_deadline = None;
            if self.liveness.awaiting && !self.liveness.lost {
                self.fail_over("no answer to the keep-alive OPTIONS within 4 s", now);
            }
        }
        for server in self.failover.probes_due(now) {
            self.send_options(server, Owner::Probe(server), now);
        }
        self.pump(now);
    }

    /// Whether the upstream answers (from the keep-alives).
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    fn heard_upstream(&mut self, now: Instant) {
        self.liveness.awaiting = false;
        self.ping_deadline = None;
        self.liveness.last_heard = Some(now);
        if self.liveness.lost {
            self.liveness.lost = false;
            let interval =
                std::time::Duration::from_secs(self.ctx.cfg.upstream.keepalive_interval_s);
            self.next_ping = Some(now + interval);
            self.subs.upstream_back(now);
        }
    }

    // ---------------------------------------------------------- failover

    /// The runtime resolved `[upstream] proxy` (again): the servers, most
    /// preferred first (RFC 3263). The server in use stays when it is still
    /// listed (the more preferred ones are probed now); otherwise the first
    /// one is used and the upstream subscriptions move to it.
    pub fn set_upstreams(&mut self, servers: Vec<Flow>, now: Instant) {
        if servers.is_empty() {
            return;
        }
        let old = self.failover.current();
        let moved = self.failover.set(servers, now);
        self.apply_upstream();
        if moved {
            tracing::warn!(from = %old, to = %self.failover.current(), "upstream server in use is no longer resolved: moving to the first one");
            self.subs.upstream_moved(!self.liveness.lost, now);
            self.reset_liveness(now);
        }
        self.pump(now);
    }

    /// The host names the resolution went through (SRV targets): requests
    /// naming them (Route, Request-URI) name the upstream.
    pub fn set_upstream_names(&mut self, names: Vec<String>) {
        self.ctx.upstream_names = Arc::from(names);
        self.apply_upstream();
    }

    /// The runtime could not reach `server` (an ICMP error on a UDP send, a
    /// refused or reset TCP connection): if it is the server in use, the next
    /// one is tried.
    pub fn transport_failed(&mut self, server: Flow, now: Instant) {
        if self.failover.position(&server) == Some(self.failover.index()) {
            tracing::warn!(%server, "upstream server unreachable (transport error)");
            if self.fail_over("transport error", now) {
                self.pump(now);
            }
        }
    }

    /// The upstream servers, most preferred first, and the position of the one
    /// in use.
    pub fn upstreams(&self) -> (Arc<[Flow]>, usize) {
        (self.failover.all(), self.failover.index())
    }

    /// The server in use becomes the components' upstream.
    fn apply_upstream(&mut self) {
        let ctx = self.ctx.with_upstream(
            self.failover.current(),
            self.failover.all(),
            self.ctx.upstream_names.clone(),
        );
        self.ctx = ctx.clone();
        self.proxy.reload(ctx.clone());
        self.subs.set_upstream(ctx);
    }

    /// The server in use does not answer: move to the next one (`false` with a
    /// single server). Its dialogs are dead: every lamp is unknown, and once the
    /// new server answers the keep-alive (at once when the keep-alive is not
    /// OPTIONS) every upstream subscription is made afresh there.
    fn fail_over(&mut self, why: &'static str, now: Instant) -> bool {
        if self.failover.len() < 2 {
            return false;
        }
        let old = self.failover.current();
        let new = self.failover.advance(now);
        if self.liveness.lost {
            // every server silent: trying them in turn (every 2 s) is not news
            tracing::debug!(from = %old, to = %new, reason = why, "upstream failover: trying the next server");
        } else {
            tracing::warn!(from = %old, to = %new, reason = why, "upstream failover");
            self.counters.upstream_failovers += 1;
        }
        self.apply_upstream();
        self.subs.upstream_moved(false, now);
        if matches!(
            self.ctx.cfg.upstream.keepalive,
            crate::config::Keepalive::Options
        ) {
            if !self.liveness.lost {
                self.liveness.lost = true;
                self.subs.upstream_lost(now);
            }
            self.liveness.awaiting = false;
            self.ping_deadline = None;
            self.next_ping = Some(now);
        } else {
            self.subs.upstream_back(now);
        }
        true
    }

    /// A more preferred server answered its probe: use it again. The
    /// subscriptions are made afresh there (the lamps keep their state until
    /// its NOTIFYs arrive); the less preferred server's dialogs are left to
    /// expire.
    fn fail_back(&mut self, server: Flow, now: Instant) {
        let old = self.failover.current();
        if !self.failover.back_to(&server, now) {
            return;
        }
        tracing::info!(from = %old, to = %server, "upstream failback: a more preferred server answers");
        self.counters.upstream_failovers += 1;
        self.apply_upstream();
        self.subs.upstream_moved(!self.liveness.lost, now);
        self.reset_liveness(now);
    }

    /// The server now in use answered (or has not been asked yet): liveness
    /// starts afresh, the next keep-alive after one interval.
    fn reset_liveness(&mut self, now: Instant) {
        let was_lost = self.liveness.lost;
        self.ping_deadline = None;
        self.liveness.awaiting = false;
        self.liveness.lost = false;
        self.liveness.last_heard = Some(now);
        if self.next_ping.is_some() {
            let interval =
                std::time::Duration::from_secs(self.ctx.cfg.upstream.keepalive_interval_s);
            self.next_ping = Some(now + interval);
        }
        if was_lost {
            self.subs.upstream_back(now);
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        let interval = std::time::Duration::from_secs(self.ctx.cfg.upstream.keepalive_interval_s);
        let options = matches!(
            self.ctx.cfg.upstream.keepalive,
            crate::config::Keepalive::Options
        );
        // only an OPTIONS ping gets an answer to judge by; with several
        // servers, the next one is tried (its ping goes out now)
        if options && self.liveness.awaiting {
            let why = if self.liveness.lost {
                "no answer to the probe"
            } else {
                "no answer to the keep-alive OPTIONS"
            };
            if self.fail_over(why, now) {
                return;
            }
            if !self.liveness.lost {
                self.liveness.lost = true;
                self.subs.upstream_lost(now);
            }
        }
        self.liveness.awaiting = options;
        let interval = if self.liveness.lost {
            PROBE_INTERVAL
        } else {
            interval
        };
        self.next_ping = Some(now + interval);
        let upstream = self.ctx.upstream;
        match self.ctx.cfg.upstream.keepalive {
            crate::config::Keepalive::None => {}
            crate::config::Keepalive::Crlf => {
                let data = if upstream.transport.is_reliable() {
                    Bytes::from_static(b"\r\n\r\n")
                } else {
                    Bytes::from_static(b"\r\n")
                };
                self.out.push_back(Transmit {
                    flow: upstream,
                    data,
                });
            }
            crate::config::Keepalive::Options => {
                if self.failover.len() > 1 && !self.liveness.lost {
                    self.ping_deadline = Some(now + PING_ANSWER_WAIT);
                }
                self.send_options(upstream, Owner::Ping, now);
            }
        }
    }

    /// An OPTIONS to an upstream server (keep-alive or failback probe).
    fn send_options(&mut self, upstream: Flow, owner: Owner, now: Instant) {
        {
            {
                let t = upstream.transport;
                let local = &self.ctx.local;
                let branch = self.rng.branch();
                let tag = self.rng.tag();
                let cid = self.rng.token(20);
                let domain = &self.ctx.cfg.upstream.domain;
                let data = MessageBuilder::request(&Method::Options, &format!("sip:{domain}"))
                    .header("Via", local.via(t, &branch))
                    .header("Max-Forwards", 70)
                    .header(
                        "From",
                        format_args!("<sip:{CONTACT_USER}@{}>;tag={tag}", local.hostport(t)),
                    )
                    .header("To", format_args!("<sip:{domain}>"))
                    .header("Call-ID", format_args!("{cid}@{CALL_ID_HOST}"))
                    .header("CSeq", "1 OPTIONS")
                    .header("User-Agent", self.ctx.user_agent)
                    .finish();
                self.start_client(upstream, data, owner, now);
            }
        }
    }

    fn start_client(&mut self, flow: Flow, data: Bytes, owner: Owner, now: Instant) {
        self.start_client_built(flow, data, None, owner, now)
    }

    /// [`start_client`](Self::start_client); `branch`: a NOTIFY the core just
    /// built, whose branch it knows (not parsed again).
    fn start_client_built(
        &mut self,
        flow: Flow,
        data: Bytes,
        branch: Option<Bytes>,
        owner: Owner,
        now: Instant,
    ) {
        // a NOTIFY to a phone that has not shown its source is real (answered
        // a NOTIFY, refreshed in the dialog, or registered from that address)
        // goes out only a few times: a spoofed SUBSCRIBE must not make a
        // reflector
        let limit = match &owner {
            Owner::Sub(ReqTag::Notify { phone, .. })
                if !self.subs.is_verified(*phone)
                    && !self.proxy.registrations().has_confirmed_from(&flow) =>
            {
                Some(crate::subscription::UNVERIFIED_RETRANSMITS)
            }
            _ => None,
        };
        let started = match branch {
            Some(b) => self
                .txl
                .send_built_request(flow, data, b, Method::Notify, now),
            None => self.txl.send_request(flow, data, now),
        };
        match started {
            Ok(key) => {
                if let Some(n) = limit {
                    self.txl.limit_retransmits(&key, n);
                }
                if self.failover.position(&flow).is_some() {
                    self.sent_upstream.insert(key.clone(), flow);
                }
                self.owners.insert(key, owner);
            }
            Err(e) => tracing::error!(error = %e, "cannot start client transaction"),
        }
    }

    /// Move work produced by the components into the transaction layer.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(o) = self.subs.poll_out() {
                progressed = true;
                match o {
                    Out::Request { flow, data, tag } => {
                        if matches!(tag, crate::subscription::ReqTag::Notify { .. }) {
                            self.counters.notifies_sent += 1;
                        }
                        self.start_client(flow, data, Owner::Sub(tag), now)
                    }
                    Out::Response { key, data } => {
                        self.counters.rejected(&data);
                        if let Err(e) = self.txl.respond(&key, data, now) {
                            tracing::debug!(error = %e, "response on a finished transaction");
                        }
                    }
                }
            }
            while let Some(o) = self.proxy.poll_out() {
                progressed = true;
                match o {
                    proxy::Out::Request { flow, data, tag } => {
                        self.counters.forwarded(&data);
                        self.start_client(flow, data, Owner::Proxy(tag), now)
                    }
                    proxy::Out::Response { key, data } => {
                        if let Err(e) = self.txl.respond(&key, data, now) {
                            tracing::debug!(error = %e, "response on a finished transaction");
                        }
                    }
                    proxy::Out::Stateless { flow, data } => {
                        self.out.push_back(Transmit { flow, data })
                    }
                    proxy::Out::TerminateClient { key } => {
                        self.txl.terminate_client(&key);
                        self.owners.remove(&key);
                        self.sent_upstream.remove(&key);
                    }
                }
            }
            for ip in self.proxy.take_auth_failures() {
                self.guard.auth_failure(ip, now);
            }
            while let Some(ev) = self.txl.poll_event() {
                progressed = true;
                match ev {
                    TxEvent::Timeout(key) => match self.owners.remove(&key).inspect(|owner| {
                        self.counters.transaction_timeouts += 1;
                        // Timer B/F towards the server in use: the next one
                        // (a probe's timeout says nothing about it)
                        let sent_to = self.sent_upstream.get(&key).copied();
                        if !matches!(owner, Owner::Probe(_))
                            && sent_to.is_some_and(|f| {
                                self.failover.position(&f) == Some(self.failover.index())
                            })
                        {
                            progressed |= self.fail_over("transaction timeout", now);
                        }
                    }) {
                        Some(Owner::Sub(tag)) => self.subs.on_request_timeout(tag, now),
                        Some(Owner::Proxy(tag)) => self.proxy.on_request_timeout(tag),
                        Some(Owner::Ping) => {
                            tracing::warn!("upstream did not answer the keep-alive OPTIONS")
                        }
                        Some(Owner::Probe(server)) => {
                            tracing::debug!(%server, "preferred upstream server did not answer the probe")
                        }
                        None => {}
                    },
                    TxEvent::Terminated(TxKey::Client(key)) => {
                        self.sent_upstream.remove(&key);
                        if let Some(Owner::Proxy(tag)) = self.owners.remove(&key) {
                            self.proxy.on_client_terminated(tag);
                        }
                    }
                    TxEvent::Terminated(TxKey::Server(_)) => {}
                    TxEvent::AckTimeout(key) => self.proxy.on_ack_timeout(&key),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// The runtime closed (or lost) a TCP connection.
    ///
    /// When it is the connection to the upstream (reset by the provider or by a
    /// NAT router that forgot it), the provider can reach the bridge again only
    /// over a new one, which the bridge must open (RFC 5626 §4.4): a keep-alive
    /// goes out at once (the runtime opens the connection for it), and every
    /// established upstream subscription is refreshed on it (paced), so that the
    /// provider's NOTIFYs follow the new connection (SUBSCRIBE is a target
    /// refresh request, RFC 6665 §4.1.2.1).
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        self.subs.connection_closed(conn);
        self.proxy.connection_closed(conn);
        if self.upstream_conn == Some(conn) {
            self.upstream_conn = None;
            if !self.draining {
                self.reconnect_upstream(now);
            }
        }
        self.pump(now);
    }

    fn reconnect_upstream(&mut self, now: Instant) {
        tracing::warn!(
            upstream = %self.ctx.upstream.remote,
            "connection to the upstream lost: reconnecting, refreshing the upstream subscriptions on the new connection"
        );
        self.counters.upstream_reconnects += 1;
        // the ping in flight died with the connection: not an unanswered one
        // (its transaction runs out silently)
        self.liveness.awaiting = false;
        self.owners.retain(|_, o| !matches!(o, Owner::Ping));
        if !matches!(
            self.ctx.cfg.upstream.keepalive,
            crate::config::Keepalive::None
        ) {
            self.send_keepalive(now);
        }
        self.subs.upstream_reconnected(now);
    }

    /// Next datagram / stream write to perform, with the NOTIFYs of a fan-out
    /// built as they are asked for: each client transaction's timers start
    /// when the NOTIFY was decided. The runtime uses
    /// [`Endpoint::poll_transmit_at`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.next_transmit(None)
    }

    /// Next datagram / stream write to perform at `now`. Everything queued
    /// goes first (responses, upstream requests, retransmissions); then the
    /// phone NOTIFYs a change decided, one at a time: each is built, given
    /// its client transaction (timers from `now`) and handed out before the
    /// next is made, so the first leaves without waiting for the last.
    pub fn poll_transmit_at(&mut self, now: Instant) -> Option<Transmit> {
        self.next_transmit(Some(now))
    }

    fn next_transmit(&mut self, now: Option<Instant>) -> Option<Transmit> {
        let mut built = false;
        loop {
            if let Some(t) = self.out.pop_front() {
                self.last_fanout = false;
                return Some(t);
            }
            if let Some(t) = self.txl.poll_transmit() {
                // what the transaction layer had before was taken above: this
                // is the NOTIFY just built
                self.last_fanout = built;
                return Some(t);
            }
            if let Some(n) = self.subs.poll_notify(now) {
                self.counters.notifies_sent += 1;
                let branch = Some(n.branch);
                self.start_client_built(n.flow, n.data, branch, Owner::Sub(n.tag), n.at);
                built = true;
                continue;
            }
            // a phone decided in a fan-out queued something else (its
            // subscription ended): through the usual path, then on
            if self.subs.has_out() {
                let at = now.or_else(|| self.subs.sweep_time());
                if let Some(at) = at {
                    self.pump(at);
                    built = false;
                    continue;
                }
            }
            return None;
        }
    }

    /// Whether the transmit last handed out is a phone NOTIFY of a fan-out
    /// (its first sending): one per dialog, so such messages may leave in any
    /// order among themselves.
    pub fn transmit_is_fanout(&self) -> bool {
        self.last_fanout
    }

    /// NOTIFYs wait until [`Endpoint::poll_persist`] has taken the latest
    /// changes: a phone decided in a fan-out moved what the store keeps, and
    /// that must be durable before its NOTIFY leaves. The runtime takes the
    /// batch and then polls on.
    pub fn waits_for_persist(&self) -> bool {
        self.persistence && self.subs.waits_for_persist()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.txl.poll_timeout(),
            self.subs.poll_timeout(),
            self.proxy.poll_timeout(),
            self.next_ping,
            self.failover.poll_timeout(),
            self.ping_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Add `received` (source IP differs from sent-by, or rport requested) and fill
/// `rport` on the top Via. Returns the new bytes, or `None` when nothing changes.
pub fn stamp_via(msg: &SipMessage, src: SocketAddr) -> Option<Bytes> {
    let span = msg.top_via_span()?;
    let raw = msg.slice(span);
    let via = Via::parse(raw).ok()?;
    let ip = src.ip().to_string();
    let rport = via.rport();
    let needs_received =
        rport.is_some() || via.host.trim_start_matches('[').trim_end_matches(']') != ip;
    if !needs_received && rport.is_none() {
        return None;
    }
    // rebuild the parameter list: drop existing received/rport, append ours
    let mut out = Vec::with_capacity(raw.len() + 40);
    let params_start = raw.len() - via.params.raw.len();
    out.extend_from_slice(&raw[..params_start]);
    via.params.write_except(&["received", "rport"], &mut out);
    out.extend_from_slice(b";received=");
    out.extend_from_slice(ip.as_bytes());
    if rport.is_some() {
        out.extend_from_slice(format!(";rport={}", src.port()).as_bytes());
    }
    let mut e = Editor::new(msg);
    e.replace_value(span, &out);
    Some(e.finish())
}
