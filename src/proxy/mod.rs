//! RFC 3261 §16 transaction-stateful proxy for everything the bridge does not
//! translate (REGISTER, calls, MWI, presence from Zoiper, passthrough profiles).
//!
//! Sans-IO like the rest of the core: the endpoint hands it requests that already
//! have a server transaction, responses to the client transactions it started,
//! stray responses, ACKs for 2xx, timeouts; it produces [`Out`] items. The proxy
//! never forks: every request has exactly one next hop.
//!
//! ## Direction and no open relay
//! - **From a phone** (a source in `[security] allow`): the next hop is always
//!   `[upstream] proxy`. An out-of-dialog request must name the upstream (its
//!   domain, proxy host or address, an alias) or the bridge itself in its
//!   Request-URI, else `403`; a Request-URI naming the bridge is re-addressed to
//!   the upstream domain. An in-dialog request may also name any host when its
//!   Route set carries the bridge's own Record-Route with a flow token minted
//!   for this phone (same IP); otherwise its Request-URI and every Route left
//!   must name the upstream or the bridge (a made-up To-tag is no dialog). The
//!   check is made on the request as it goes out, after the strict-route
//!   fix-up, so a Route without `;lr` cannot swap a foreign Request-URI in.
//! - **From the upstream**: the next hop is a phone the bridge knows — the flow in
//!   an authenticated flow token of a Record-Route it inserted
//!   ([`token`]), a binding named by a Path it inserted or a Contact it rewrote,
//!   or the Contact of a registration it relayed ([`registrar`]). Anything else:
//!   `403`, logged; nothing is ever sent to a third party. A binding whose TCP
//!   connection closed gets `430 Flow Failed` until the phone registers again
//!   (never a connection to the address its Contact names).
//!
//! ## Forwarding (§16.3–§16.6, `forward.rs`: one function per step)
//! Max-Forwards is checked (`483` at 0) and decremented (70 added when absent);
//! loops are detected with a hash of the loop-relevant fields carried in our
//! branch (`482`; a spiral with a different Request-URI passes); Proxy-Require
//! gets `420`. Route pre-processing pops the bridge's own Route entries (loose
//! routing) and undoes a strict router's Request-URI swap; a strict router as
//! the next Route gets the Request-URI swap it expects (§16.6 step 6). Dialog-creating
//! requests (INVITE, SUBSCRIBE, REFER outside a dialog; NOTIFY from the upstream)
//! get `Record-Route: <sip:f-<flow-token>@bridge;lr>` — twice, when the bridge is
//! reached under different addresses on its two sides. Our Via with a unique
//! branch goes on top; `Content-Length` is added when a datagram without one goes
//! out on TCP. Every other byte is forwarded as it came.
//!
//! ## REGISTER (`register.rs`, bindings in [`registrar`])
//! A phone's REGISTER gets our Path (RFC 3327) or its Contacts rewritten to
//! binding URIs of ours; the 2xx updates the bindings and goes back with the
//! phone's own Contacts.
//!
//! ## Responses (§16.7, `response.rs`)
//! Our Via is popped and the response is relayed on the server transaction (which
//! answers to the next Via with `received`/`rport`); 100 is hop-by-hop, 503
//! becomes 500, a REGISTER 2xx gets the phones' Contacts back. A response without
//! a transaction (the endpoint hands over only those from the upstream) is
//! forwarded statelessly when its top Via is ours and the next Via names a
//! phone inside `[security] allow` over UDP — never over TCP (no connection is
//! opened for it), never to a broadcast, multicast or unspecified address.
//!
//! ## INVITE
//! Timer C (181 s, restarted by every provisional) cancels a call that rings
//! forever; CANCEL is answered hop-by-hop (`200`) and forwarded once a
//! provisional arrived; an INVITE whose CANCEL is never answered is given up
//! 64·T1 later (`487`, or `408` after Timer C) and its client transaction
//! terminated. Further 2xx (downstream forking) are relayed as they come.

mod forward;
mod register;
pub mod registrar;
mod response;
pub mod route;
#[cfg(test)]
mod tests;
pub mod token;

use crate::context::Context;
use crate::flow::{ConnId, Flow};
use crate::sip::{MessageBuilder, Method, SipMessage};
use crate::transaction::{ClientKey, ServerKey};
use crate::util::Rng;
use bytes::Bytes;
use register::RegCtx;
use registrar::Registrations;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Identifies a client transaction the proxy started (a forwarded request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(pub u64);

/// Work for the endpoint.
#[derive(Debug, Clone)]
pub enum Out {
    /// Forward through a new client transaction.
    Request { flow: Flow, data: Bytes, tag: Tag },
    /// Answer (or relay a response on) a server transaction.
    Response { key: ServerKey, data: Bytes },
    /// Send without a transaction (ACK for 2xx, stateless response relay).
    Stateless { flow: Flow, data: Bytes },
    /// Drop this INVITE client transaction silently: it was CANCELled and never
    /// got a final response (RFC 3261 §9.1), the proxy has answered upstream.
    TerminateClient { key: ClientKey },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests forwarded through a client transaction.
    pub forwarded: u64,
    /// ACKs for 2xx and responses forwarded statelessly.
    pub stateless: u64,
    /// Responses relayed on a server transaction.
    pub relayed: u64,
    /// Requests refused with 403 (foreign domain, unknown target).
    pub forbidden: u64,
    /// 482 Loop Detected.
    pub loops: u64,
    /// 483 Too Many Hops.
    pub too_many_hops: u64,
    /// Every refusal the proxy answered itself, by status code.
    pub rejected_by_code: std::collections::BTreeMap<u16, u64>,
}

/// The proxy's durable state: the flow-token key and the registrations. Plain
/// data; persist it to keep inbound routing across a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyState {
    /// HMAC key of the flow tokens in Record-Route (hex, 32 bytes).
    pub token_key: String,
    pub registrations: Registrations,
}

/// Timer C: longer than 3 minutes (RFC 3261 §16.6 step 11).
const TIMER_C: Duration = Duration::from_secs(181);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    None,
    /// CANCEL asked for (by the phone or Timer C) before any provisional: sent
    /// when the first provisional arrives.
    Pending,
    Sent,
}

/// One forwarded request (a response context, §16.7).
#[derive(Debug)]
struct Fwd {
    server: ServerKey,
    method: Method,
    /// Where the request went.
    flow: Flow,
    /// Where responses go when the server transaction cannot take them.
    reply: Flow,
    /// Our branch on the forwarded request.
    branch: String,
    /// INVITE: the forwarded bytes (to build the CANCEL from).
    request: Bytes,
    provisional: bool,
    /// Status of the final response sent upstream, if any.
    final_code: Option<u16>,
    cancel: Cancel,
    /// 487 for a CANCEL from the previous hop, 408 for Timer C.
    give_up_code: u16,
    timer_c: Option<Instant>,
    give_up: Option<Instant>,
    /// Non-INVITE: forget the context after the client transaction must be over.
    guard: Option<Instant>,
    register: Option<RegCtx>,
}

impl Fwd {
    fn invite(&self) -> bool {
        self.method == Method::Invite
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    C(u64),
    GiveUp(u64),
    Guard(u64),
    Binding(String),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reject {
    code: u16,
    reason: &'static str,
    unsupported: Option<String>,
    retry_after: Option<u32>,
}

impl Reject {
    fn new(code: u16, reason: &'static str) -> Reject {
        Reject {
            code,
            reason,
            unsupported: None,
            retry_after: None,
        }
    }
}

pub struct Proxy {
    env: Context,
    rng: Rng,
    out: VecDeque<Out>,
    key: [u8; 32],
    regs: Registrations,
    ctxs: HashMap<u64, Fwd>,
    by_server: HashMap<ServerKey, u64>,
    /// Tags of the CANCELs we sent (their responses are hop-by-hop).
    cancels: HashSet<u64>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerRef)>>,
    timer_seq: u64,
    next_id: u64,
    stats: ProxyStats,
    /// Tokens of the bindings written to the state store.
    stored_tokens: HashSet<String>,
    /// Sources whose REGISTER the registrar answered 401/403/407, for the
    /// endpoint's authentication-failure blocks.
    auth_failures: Vec<std::net::IpAddr>,
    /// Size from which the timer heap is compacted.
    compact_at: usize,
    /// Refusals are logged once per source and interval.
    log_gate: crate::util::LogGate,
    /// "proxy refused request" at warn: once per source every 10 s (the rest
    /// at debug), so a flood of refused requests does not fill the log.
    refusal_gate: crate::util::LogGate,
}

/// No timer-heap compaction below this many entries.
const COMPACT_MIN: usize = 1024;

impl Proxy {
    /// A proxy whose flow-token key comes from `rng` (the runtime then installs
    /// the key kept in the state directory, [`Proxy::set_token_key`]).
    pub fn new(env: Context, mut rng: Rng) -> Self {
        let mut key = [0u8; 32];
        rng.fill(&mut key);
        Proxy {
            env,
            rng,
            out: VecDeque::new(),
            key,
            regs: Registrations::default(),
            ctxs: HashMap::new(),
            by_server: HashMap::new(),
            cancels: HashSet::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            next_id: 0,
            stats: ProxyStats::default(),
            stored_tokens: HashSet::new(),
            auth_failures: Vec::new(),
            compact_at: COMPACT_MIN,
            log_gate: crate::util::LogGate::default(),
            refusal_gate: crate::util::LogGate::default(),
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Registrations relayed through the bridge.
    pub fn registrations(&self) -> &Registrations {
        &self.regs
    }

    /// Entries in the timer heap (stale ones included, until compacted).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Number of live response contexts (forwarded requests awaiting completion).
    pub fn pending(&self) -> usize {
        self.ctxs.len()
    }

    /// SIGHUP: the reloaded configuration (allow list, accounts, aliases).
    pub fn reload(&mut self, env: Context) {
        self.env = env;
    }

    /// The flow-token key in use.
    pub fn token_key(&self) -> [u8; 32] {
        self.key
    }

    /// Track binding changes for a state store ([`Proxy::persist_into`]).
    pub fn enable_persistence(&mut self) {
        self.regs.track_changes();
    }

    /// Use this flow-token key (kept across restarts, so tokens in dialogs set
    /// up before a restart still decode).
    pub fn set_token_key(&mut self, key: [u8; 32]) {
        self.key = key;
    }

    /// Binding changes since the last call, as store operations (key: the
    /// token; value: the binding as JSON; bindings the registrar accepted only).
    /// Returns whether it added any.
    pub fn persist_into(&mut self, batch: &mut crate::store::Batch) -> bool {
        use crate::store::Table;
        if !self.regs.has_changes() {
            return false;
        }
        let before = batch.ops.len();
        for (token, b) in self.regs.take_changes() {
            match b.and_then(|b| serde_json::to_vec(b).ok()) {
                Some(v) => {
                    batch.put(Table::Bindings, token.clone().into_bytes(), v);
                    self.stored_tokens.insert(token);
                }
                // a pending binding was never written: nothing to delete
                None if self.stored_tokens.remove(&token) => {
                    batch.delete(Table::Bindings, token.into_bytes())
                }
                None => {}
            }
        }
        if batch.ops.len() == before {
            return false;
        }
        if let Ok(v) = serde_json::to_vec(&self.regs.registrar_path) {
            batch.put(Table::Meta, b"registrar_path".to_vec(), v);
        }
        true
    }

    /// Restore bindings read from the store (after a restart): their TCP
    /// connections are gone, so each binding goes back to its phone's address
    /// over a new connection; bindings that expired meanwhile are dropped at the
    /// next timeout.
    pub fn restore_bindings(
        &mut self,
        bindings: Vec<registrar::Binding>,
        registrar_path: Option<bool>,
        now: Instant,
    ) {
        let regs = Registrations::from_bindings(
            bindings.into_iter().map(|mut b| {
                b.flow.conn = None;
                b
            }),
            registrar_path,
        );
        self.restore(
            ProxyState {
                token_key: crate::util::hex(&self.key),
                registrations: regs,
            },
            now,
        );
        // what was just loaded is on disk already
        let _ = self.regs.take_changes();
        self.stored_tokens = self.regs.bindings.keys().cloned().collect();
    }

    /// A snapshot of the durable state.
    pub fn state(&self) -> ProxyState {
        ProxyState {
            token_key: crate::util::hex(&self.key),
            registrations: self.regs.clone(),
        }
    }

    /// Restore a snapshot taken with [`Proxy::state`]; bindings whose deadline
    /// passed meanwhile expire at the next timeout.
    pub fn restore(&mut self, state: ProxyState, now: Instant) {
        if let Some(k) = unhex32(&state.token_key) {
            self.key = k;
        }
        let tracking = self.regs.tracking();
        self.regs = state.registrations;
        self.regs.reindex();
        if tracking {
            self.regs.track_changes();
        }
        let due: Vec<(Instant, String)> = self
            .regs
            .bindings
            .values()
            .map(|b| (b.expires_at.max(now), b.token.clone()))
            .collect();
        for (at, t) in due {
            self.schedule(at, TimerRef::Binding(t));
        }
    }

    fn schedule(&mut self, at: Instant, t: TimerRef) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
        if self.timers.len() >= self.compact_at {
            self.compact_timers();
        }
    }

    /// Drop the timers that would do nothing when they fire (every REGISTER
    /// and forwarded request leaves one behind), so the heap does not grow
    /// with the request rate until they fire. Amortised: the next compaction
    /// waits until the heap has doubled again.
    fn compact_timers(&mut self) {
        let heap = std::mem::take(&mut self.timers);
        let live = |at: &Instant, t: &TimerRef| match t {
            TimerRef::Binding(tok) => self
                .regs
                .bindings
                .get(tok)
                .is_some_and(|b| b.expires_at <= *at),
            TimerRef::Guard(id) => self.ctxs.get(id).is_some_and(|f| f.guard == Some(*at)),
            TimerRef::C(id) => self.ctxs.get(id).is_some_and(|f| f.timer_c == Some(*at)),
            TimerRef::GiveUp(id) => self.ctxs.get(id).is_some_and(|f| f.give_up == Some(*at)),
        };
        let mut entries: Vec<_> = heap
            .into_vec()
            .into_iter()
            .filter(|Reverse((at, _, t))| live(at, t))
            .collect();
        // one expiry timer per binding: the earliest that will remove it
        entries.sort_unstable_by(|a, b| b.cmp(a));
        let mut seen = HashSet::new();
        entries.retain(|Reverse((_, _, t))| match t {
            TimerRef::Binding(tok) => seen.insert(tok.clone()),
            _ => true,
        });
        self.timers = entries.into_iter().collect();
        self.compact_at = (self.timers.len() * 2).max(COMPACT_MIN);
    }

    /// Sources whose REGISTERs were answered 401/403/407 since the last call.
    pub fn take_auth_failures(&mut self) -> Vec<std::net::IpAddr> {
        std::mem::take(&mut self.auth_failures)
    }

    fn t1x64(&self) -> Duration {
        self.env.t1.saturating_mul(64)
    }

    /// Answer a request ourselves (To tag added on a final response).
    fn reply(&mut self, key: ServerKey, msg: &SipMessage, r: &Reject) {
        let tag = self.rng.tag();
        let mut b = MessageBuilder::response_to(msg, r.code, r.reason, Some(&tag));
        if let Some(u) = &r.unsupported {
            b.header("Unsupported", u);
        }
        if let Some(s) = r.retry_after {
            b.header("Retry-After", s);
        }
        b.header("Server", self.env.user_agent);
        self.out.push_back(Out::Response {
            key,
            data: b.finish(),
        });
    }

    // ------------------------------------------------------------- requests

    /// A request with a new server transaction that the proxy must route.
    pub fn on_request(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        from: Flow,
        from_upstream: bool,
        now: Instant,
    ) {
        let Some(req) = msg.as_request() else {
            return; // the endpoint hands the proxy requests only
        };
        let method = req.method().clone();
        let p = match self.forward_request(msg, from, from_upstream, false, now) {
            Ok(p) => p,
            Err(r) => {
                self.count_reject(&r);
                let ruri = String::from_utf8_lossy(msg.request_uri().unwrap_or_default());
                if self.refusal_gate.allow(from.remote.ip(), now) {
                    tracing::warn!(%from, %method, code = r.code, reason = r.reason, %ruri,
                        "proxy refused request (further refusals from this source within 10 s at debug)");
                } else {
                    tracing::debug!(%from, %method, code = r.code, reason = r.reason, %ruri,
                        "proxy refused request");
                }
                self.reply(key, msg, &r);
                return;
            }
        };
        self.next_id += 1;
        let id = self.next_id;
        let invite = method == Method::Invite;
        let mut fwd = Fwd {
            server: key.clone(),
            method,
            flow: p.flow,
            reply: from.reply(),
            branch: p.branch,
            request: if invite { p.data.clone() } else { Bytes::new() },
            provisional: false,
            final_code: None,
            cancel: Cancel::None,
            give_up_code: 408,
            timer_c: None,
            give_up: None,
            guard: None,
            register: p.register,
        };
        if invite {
            let at = now + TIMER_C;
            fwd.timer_c = Some(at);
            self.schedule(at, TimerRef::C(id));
        } else {
            // Timer F plus Timer K, with room to spare.
            let at = now + self.t1x64() + Duration::from_secs(10);
            fwd.guard = Some(at);
            self.schedule(at, TimerRef::Guard(id));
        }
        tracing::debug!(id, flow = %p.flow, method = %fwd.method, "forwarding request");
        self.ctxs.insert(id, fwd);
        self.by_server.insert(key, id);
        self.stats.forwarded += 1;
        self.out.push_back(Out::Request {
            flow: p.flow,
            data: p.data,
            tag: Tag(id),
        });
    }

    fn count_reject(&mut self, r: &Reject) {
        *self.stats.rejected_by_code.entry(r.code).or_default() += 1;
        match r.code {
            403 => self.stats.forbidden += 1,
            482 => self.stats.loops += 1,
            483 => self.stats.too_many_hops += 1,
            _ => {}
        }
    }

    /// An ACK that no server transaction absorbed (ACK for a 2xx): route it like
    /// any in-dialog request, statelessly.
    pub fn on_ack(&mut self, msg: &SipMessage, from: Flow, from_upstream: bool, now: Instant) {
        match self.forward_request(msg, from, from_upstream, true, now) {
            Ok(p) => {
                self.stats.stateless += 1;
                self.out.push_back(Out::Stateless {
                    flow: p.flow,
                    data: p.data,
                });
            }
            Err(r) => {
                self.count_reject(&r);
                tracing::warn!(%from, code = r.code, reason = r.reason, "dropping ACK the proxy cannot route");
            }
        }
    }

    /// A CANCEL (its own server transaction) and the INVITE server transaction it
    /// refers to, if any. Answered hop-by-hop; forwarded once the INVITE has a
    /// provisional response (RFC 3261 §9.1, §16.10).
    pub fn on_cancel(
        &mut self,
        key: ServerKey,
        msg: &SipMessage,
        invite: Option<ServerKey>,
        now: Instant,
    ) {
        let id = invite.and_then(|k| self.by_server.get(&k).copied());
        let Some(id) = id.filter(|id| self.ctxs.contains_key(id)) else {
            let data =
                MessageBuilder::response_to(msg, 481, "Call/Transaction Does Not Exist", None)
                    .finish();
            self.out.push_back(Out::Response { key, data });
            return;
        };
        let data = MessageBuilder::response_to(msg, 200, "OK", None).finish();
        self.out.push_back(Out::Response { key, data });
        self.cancel_fwd(id, 487, now);
    }

    /// Cancel the forwarded INVITE `id` (a CANCEL from the previous hop, or Timer C).
    fn cancel_fwd(&mut self, id: u64, code: u16, now: Instant) {
        let t1x64 = self.t1x64();
        let Some(f) = self.ctxs.get_mut(&id) else {
            return;
        };
        if f.final_code.is_some() || f.cancel != Cancel::None {
            return;
        }
        f.give_up_code = code;
        if f.provisional {
            self.send_cancel(id, now);
        } else {
            f.cancel = Cancel::Pending;
            // If nothing at all ever comes back, Timer B answers the INVITE.
            let at = now + t1x64;
            f.give_up = Some(at);
            self.schedule(at, TimerRef::GiveUp(id));
        }
    }

    fn send_cancel(&mut self, id: u64, now: Instant) {
        let t1x64 = self.t1x64();
        let Some(f) = self.ctxs.get_mut(&id) else {
            return;
        };
        f.cancel = Cancel::Sent;
        let at = now + t1x64;
        f.give_up = Some(at);
        let flow = f.flow;
        let data = build_cancel(&f.request);
        self.schedule(at, TimerRef::GiveUp(id));
        let Some(data) = data else {
            tracing::error!(id, "cannot build CANCEL from the forwarded INVITE");
            return;
        };
        self.next_id += 1;
        let tag = self.next_id;
        self.cancels.insert(tag);
        self.out.push_back(Out::Request {
            flow,
            data,
            tag: Tag(tag),
        });
    }

    // --------------------------------------------------------------- timers

    /// Timer B/F fired on a forwarded request.
    pub fn on_request_timeout(&mut self, tag: Tag) {
        if self.cancels.remove(&tag.0) {
            return;
        }
        let Some(f) = self.ctxs.get(&tag.0) else {
            return;
        };
        if f.invite() && f.final_code.is_none() {
            let code = if f.cancel != Cancel::None {
                f.give_up_code
            } else {
                408
            };
            self.answer(tag.0, code);
        }
        // RFC 4320: a non-INVITE gets no 408 from us; the client times out itself.
        self.remove_ctx(tag.0);
    }

    /// A client transaction of ours ended.
    pub fn on_client_terminated(&mut self, tag: Tag) {
        self.cancels.remove(&tag.0);
        if self
            .ctxs
            .get(&tag.0)
            .is_some_and(|f| f.invite() && f.final_code.is_none())
        {
            self.answer(tag.0, 408);
        }
        self.remove_ctx(tag.0);
    }

    /// Timer H: no ACK for a final non-2xx response we sent.
    pub fn on_ack_timeout(&mut self, key: &ServerKey) {
        tracing::debug!(?key, "no ACK for a final response relayed upstream");
    }

    fn remove_ctx(&mut self, id: u64) {
        if let Some(f) = self.ctxs.remove(&id)
            && self.by_server.get(&f.server) == Some(&id)
        {
            self.by_server.remove(&f.server);
        }
    }

    /// The runtime closed (or lost) a TCP connection.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.regs.connection_closed(conn);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, t))) = self.timers.pop() else {
                break;
            };
            match t {
                TimerRef::Binding(tok) => {
                    if self.regs.expire(&tok, now) {
                        tracing::debug!(token = %tok, "binding expired");
                    }
                }
                TimerRef::Guard(id) => {
                    if self.ctxs.get(&id).is_some_and(|f| f.guard == Some(at)) {
                        self.remove_ctx(id);
                    }
                }
                TimerRef::C(id) => {
                    let Some(f) = self.ctxs.get_mut(&id) else {
                        continue;
                    };
                    if f.timer_c != Some(at) || f.final_code.is_some() {
                        continue;
                    }
                    f.timer_c = None;
                    if f.provisional {
                        tracing::info!(id, "Timer C: cancelling an INVITE that rang too long");
                        self.cancel_fwd(id, 408, now);
                    } else {
                        self.give_up(id);
                    }
                }
                TimerRef::GiveUp(id) => {
                    if self
                        .ctxs
                        .get(&id)
                        .is_some_and(|f| f.give_up == Some(at) && f.final_code.is_none())
                    {
                        self.give_up(id);
                    }
                }
            }
        }
    }

    /// Answer the previous hop and drop the INVITE client transaction.
    fn give_up(&mut self, id: u64) {
        let Some(f) = self.ctxs.get(&id) else { return };
        let code = if f.cancel != Cancel::None {
            f.give_up_code
        } else {
            408
        };
        let key = ClientKey::new(Bytes::from(f.branch.clone()), Method::Invite);
        self.answer(id, code);
        self.out.push_back(Out::TerminateClient { key });
        self.remove_ctx(id);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }
}

/// The CANCEL for a forwarded INVITE (RFC 3261 §9.1): same Request-URI, our Via
/// only, Route, From, To, Call-ID and CSeq number; Max-Forwards 70; no body.
pub fn build_cancel(invite: &Bytes) -> Option<Bytes> {
    let req = SipMessage::parse(invite.clone()).ok()?;
    crate::sip::builder::invite_transaction_request(&req, &crate::sip::Method::Cancel, None)
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}
