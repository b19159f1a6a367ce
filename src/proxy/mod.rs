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
//!   the upstream domain. An in-dialog request may also name any host when it
//!   still carries a Route set past the bridge (a dialog the upstream
//!   record-routed).
//! - **From the upstream**: the next hop is a phone the bridge knows — the flow in
//!   an authenticated flow token of a Record-Route it inserted
//!   ([`token`]), a binding named by a Path it inserted or a Contact it rewrote,
//!   or the Contact of a registration it relayed ([`registrar`]). Anything else:
//!   `403`, logged; nothing is ever sent to a third party.
//!
//! ## Forwarding (§16.6)
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
//! ## Responses (§16.7)
//! Our Via is popped and the response is relayed on the server transaction (which
//! answers to the next Via with `received`/`rport`); 100 is hop-by-hop, 503
//! becomes 500, a REGISTER 2xx gets the phones' Contacts back. A response without
//! a transaction is forwarded statelessly when its top Via is ours.
//!
//! ## INVITE
//! Timer C (181 s, restarted by every provisional) cancels a call that rings
//! forever; CANCEL is answered hop-by-hop (`200`) and forwarded once a
//! provisional arrived; an INVITE whose CANCEL is never answered is given up
//! 64·T1 later (`487`, or `408` after Timer C) and its client transaction
//! terminated. Further 2xx (downstream forking) are relayed as they come.

pub mod registrar;
pub mod route;
#[cfg(test)]
mod tests;
pub mod token;

use crate::config::Config;
use crate::endpoint::{LocalAddrs, reply_flow};
use crate::flow::{ConnId, Flow};
use crate::profile::ProfileSet;
use crate::sip::{
    Editor, HeaderName, MessageBuilder, Method, NameAddr, SipMessage, Transport, Uri, Via,
};
use crate::transaction::{ClientKey, ServerKey};
use crate::util::Rng;
use bytes::Bytes;
use registrar::{BindingMode, Registrations};
use route::{BRANCH_PREFIX, Here, OwnUser};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the proxy needs to know about its surroundings.
#[derive(Clone)]
pub struct ProxyEnv {
    pub cfg: Arc<Config>,
    pub profiles: Arc<ProfileSet>,
    pub local: LocalAddrs,
    /// Flow towards `[upstream] proxy`.
    pub upstream: Flow,
    /// The transaction layer's T1 (Timer C give-up and CANCEL give-up derive
    /// from it).
    pub t1: Duration,
}

impl ProxyEnv {
    /// The routing view of these surroundings.
    pub fn here(&self) -> Here<'_> {
        Here {
            local: &self.local,
            cfg: &self.cfg,
            upstream: &self.upstream,
        }
    }
}

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

/// What a REGISTER's 2xx must update.
#[derive(Debug, Clone)]
struct RegCtx {
    aor: String,
    flow: Flow,
    mode: BindingMode,
    /// Tokens of the request's Contacts, with the expiry each asked for.
    tokens: Vec<(String, Option<u32>)>,
    wildcard: bool,
    /// Tokens whose directly registered Contact this request asks to remove.
    removes_direct: Vec<String>,
    /// The registrar ignored our Path: tell the phone to re-register soon, so
    /// that the binding moves to Contact rewriting.
    shorten: bool,
}

/// Expiry handed to a phone whose REGISTER the registrar accepted while ignoring
/// our Path: its next REGISTER (then with a rewritten Contact) comes this soon.
const PATH_FALLBACK_EXPIRES: u32 = 60;

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
}

impl Reject {
    fn new(code: u16, reason: &'static str) -> Reject {
        Reject {
            code,
            reason,
            unsupported: None,
        }
    }
}

/// A request ready to go out.
struct Prepared {
    flow: Flow,
    data: Bytes,
    branch: String,
    register: Option<RegCtx>,
}

pub struct Proxy {
    env: ProxyEnv,
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
}

impl Proxy {
    pub fn new(env: ProxyEnv, seed: u64) -> Self {
        let mut rng = Rng::seeded(seed);
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
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
        }
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Registrations relayed through the bridge.
    pub fn registrations(&self) -> &Registrations {
        &self.regs
    }

    /// Number of live response contexts (forwarded requests awaiting completion).
    pub fn pending(&self) -> usize {
        self.ctxs.len()
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
        self.regs = state.registrations;
        self.regs.reindex();
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

    fn here(&self) -> Here<'_> {
        self.env.here()
    }

    fn schedule(&mut self, at: Instant, t: TimerRef) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
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
        b.header(
            "Server",
            format_args!("blf-bridge/{}", env!("CARGO_PKG_VERSION")),
        );
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
        let p = match self.prepare(msg, from, from_upstream, false, now) {
            Ok(p) => p,
            Err(r) => {
                self.count_reject(&r);
                tracing::warn!(%from, %method, code = r.code, reason = r.reason,
                    ruri = %String::from_utf8_lossy(msg.request_uri().unwrap_or_default()),
                    "proxy refused request");
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
            reply: reply_flow(msg, &from),
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
        match self.prepare(msg, from, from_upstream, true, now) {
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

    /// The routing decision and the edited bytes for a request (§16.3–§16.6).
    fn prepare(
        &mut self,
        msg: &SipMessage,
        from: Flow,
        from_upstream: bool,
        ack: bool,
        now: Instant,
    ) -> Result<Prepared, Reject> {
        let method = msg
            .method()
            .cloned()
            .ok_or(Reject::new(400, "Not a Request"))?;
        // §16.3 step 3: Max-Forwards
        let mf = match msg.max_forwards() {
            None => 70,
            Some(Ok(0)) => return Err(Reject::new(483, "Too Many Hops")),
            Some(Ok(n)) => n - 1,
            Some(Err(_)) => return Err(Reject::new(400, "Malformed Max-Forwards")),
        };
        // §16.3 step 4: loops
        let hash = route::loop_hash(msg);
        if !ack && route::is_loop(&self.env.here(), msg, hash) {
            return Err(Reject::new(482, "Loop Detected"));
        }
        // §16.3 step 5: Proxy-Require (we support no extension)
        if !ack {
            let tags = crate::sip::validate::unsupported_proxy_require(msg);
            if !tags.is_empty() {
                let list: Vec<String> = tags
                    .iter()
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .collect();
                return Err(Reject {
                    code: 420,
                    reason: "Bad Extension",
                    unsupported: Some(list.join(", ")),
                });
            }
        }
        let ruri_raw = msg.request_uri().ok_or(Reject::new(400, "Not a Request"))?;
        let entries = route::routes(msg);

        // §16.4: Route pre-processing
        let mut remove: Vec<usize> = Vec::new();
        let mut new_ruri: Option<Vec<u8>> = None;
        let mut flow_token: Option<Vec<u8>> = None;
        let mut path_token: Option<Vec<u8>> = None;
        {
            let here = self.env.here();
            if let Ok(u) = Uri::parse(ruri_raw)
                && here.is_own_uri(&u)
                && let (OwnUser::Flow(t), Some(last)) =
                    (OwnUser::of(&u), entries.len().checked_sub(1))
            {
                // the previous hop was a strict router
                new_ruri = Some(entries[last].uri.to_vec());
                remove.push(last);
                flow_token = Some(t.to_vec());
            }
            let mut first_user: Option<&[u8]> = None;
            for (i, e) in entries.iter().enumerate() {
                if remove.contains(&i) {
                    break;
                }
                let Ok(u) = Uri::parse(e.uri) else { break };
                if !here.is_own_uri(&u) {
                    break;
                }
                let user = u.user.unwrap_or_default();
                match first_user {
                    None => first_user = Some(user),
                    Some(f) if f != user => break,
                    _ => {}
                }
                match OwnUser::of(&u) {
                    OwnUser::Flow(t) => flow_token = Some(t.to_vec()),
                    OwnUser::Binding(t) => path_token = Some(t.to_vec()),
                    OwnUser::Other => {}
                }
                remove.push(i);
            }
        }
        remove.sort_unstable();
        remove.dedup();
        let remaining_routes = entries.len() - remove.len();
        let eff_raw: &[u8] = new_ruri.as_deref().unwrap_or(ruri_raw);
        let eff = Uri::parse(eff_raw).ok();
        let in_dialog = msg.to_tag().is_some();
        let mut set_ruri = new_ruri.clone();

        // Direction, target and the no-open-relay rules
        let target: Flow;
        let mut reg_edit: Option<RegisterEdit> = None;
        if from_upstream {
            let here = self.env.here();
            let ruri_binding =
                eff.as_ref()
                    .filter(|u| here.is_own_uri(u))
                    .and_then(|u| match OwnUser::of(u) {
                        OwnUser::Binding(t) => self.regs.get(t),
                        _ => None,
                    });
            let registered = self.regs.by_phone_contact(eff_raw);
            target = if let Some(t) = &flow_token {
                let f = token::decode(&self.key, t).ok_or(Reject::new(403, "Forbidden"))?;
                // The phone's current registration beats a Record-Route minted
                // on a TCP connection that may be gone since.
                match registered {
                    Some(b) if f.conn.is_some() && b.flow.remote.ip() == f.remote.ip() => b.flow,
                    _ => f,
                }
            } else if let Some(t) = &path_token {
                self.regs
                    .get(t)
                    .map(|b| b.flow)
                    .ok_or(Reject::new(403, "Forbidden"))?
            } else if let Some(b) = ruri_binding {
                b.flow
            } else if let Some(b) = registered {
                b.flow
            } else {
                return Err(Reject::new(403, "Forbidden"));
            };
            if let Some(b) = ruri_binding {
                set_ruri = Some(b.contact.clone().into_bytes());
            }
        } else {
            let here = self.env.here();
            let host_ok = match &eff {
                Some(u) if u.is_sip() => {
                    here.is_upstream_host(u.host_str()) || here.is_local(u.host_str(), u.port)
                }
                Some(u) => u.scheme == crate::sip::Scheme::Tel,
                None => false,
            };
            if !host_ok && (!in_dialog || remaining_routes == 0) {
                return Err(Reject::new(403, "Forbidden"));
            }
            if !in_dialog
                && let Some(u) = eff.as_ref().filter(|u| here.is_own_uri(u))
                && OwnUser::of(u) == OwnUser::Other
            {
                set_ruri = Some(readdress(u, &self.env.cfg.upstream.domain));
            }
            target = self.env.upstream;
            if method == Method::Register && !ack {
                reg_edit = Some(self.register_edit(msg, reply_flow(msg, &from), now));
            }
        }

        // §16.6 step 6: the next Route is a strict router — it must see itself in
        // the Request-URI, with the Request-URI moved to the end of the Route set.
        let mut append_route: Option<Vec<u8>> = None;
        if let Some(i) = (0..entries.len()).find(|i| !remove.contains(i))
            && let Ok(u) = Uri::parse(entries[i].uri)
            && u.is_sip()
            && !u.has_lr()
        {
            let current = set_ruri.clone().unwrap_or_else(|| ruri_raw.to_vec());
            let mut v = Vec::with_capacity(current.len() + 2);
            v.push(b'<');
            v.extend_from_slice(&current);
            v.push(b'>');
            append_route = Some(v);
            set_ruri = Some(entries[i].uri.to_vec());
            remove.push(i);
            remove.sort_unstable();
        }

        // §16.6: build the copy
        let here = self.env.here();
        let branch = if ack {
            let b = msg.branch().unwrap_or_default();
            format!("{BRANCH_PREFIX}{hash:016x}-a{:016x}", fnv(b))
        } else {
            format!("{BRANCH_PREFIX}{hash:016x}-{}", self.rng.token(8))
        };
        let mut e = Editor::new(msg);
        if let Some(u) = &set_ruri {
            e.set_request_uri(u);
        }
        for (span, rep) in route::route_removals(msg, &entries, &remove) {
            e.replace_span(span, &rep);
        }
        if let Some(r) = &append_route {
            e.append_header("Route", r);
        }
        e.set_max_forwards(mf);
        let dialog_creating = !ack
            && ((!in_dialog
                && matches!(method, Method::Invite | Method::Subscribe | Method::Refer))
                || (from_upstream && method == Method::Notify));
        if dialog_creating {
            // The phone-side flow is what the token names.
            let phone = if from_upstream {
                target
            } else {
                reply_flow(msg, &from)
            };
            let tok = token::encode(&self.key, &phone);
            let (prev_t, next_t) = if from_upstream {
                (self.env.upstream.transport, phone.transport)
            } else {
                (phone.transport, self.env.upstream.transport)
            };
            let towards_next = here.record_route(&tok, next_t);
            let towards_prev = here.record_route(&tok, prev_t);
            e.push_record_route(towards_next.as_bytes());
            if towards_prev != towards_next {
                e.push_record_route(towards_prev.as_bytes());
            }
        }
        let mut register = None;
        if let Some(r) = reg_edit {
            for (span, with) in &r.contact_edits {
                e.replace_span(*span, with.as_bytes());
            }
            for c in &r.extra_contacts {
                e.append_header("Contact", c.as_bytes());
            }
            if let Some(p) = &r.path {
                e.push_path(p.as_bytes());
            }
            register = Some(r.ctx);
        }
        e.push_via(here.via(target.transport, &branch).as_bytes());
        if target.transport.is_reliable() {
            e.ensure_content_length();
        }
        Ok(Prepared {
            flow: target,
            data: e.finish(),
            branch,
            register,
        })
    }

    /// Bindings for a REGISTER from a phone, and the edits that keep the bridge
    /// on the inbound path.
    fn register_edit(&mut self, msg: &SipMessage, phone: Flow, now: Instant) -> RegisterEdit {
        let aor = msg
            .to()
            .and_then(|t| t.ok())
            .map(|t| String::from_utf8_lossy(t.uri).into_owned())
            .unwrap_or_default();
        let wildcard = msg.is_wildcard_contact();
        let header_expires = msg.expires().and_then(|e| e.ok());
        let supports_path = msg
            .option_tags(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(b"path"));
        let contacts: Vec<(crate::sip::Span, NameAddr<'_>)> = if wildcard {
            Vec::new()
        } else {
            msg.contacts()
                .filter_map(|(s, c)| c.ok().map(|c| (s, c)))
                .collect()
        };
        let existing = contacts.iter().find_map(|(_, c)| {
            self.regs
                .find(&aor, &String::from_utf8_lossy(c.uri))
                .map(|b| b.mode)
        });
        let mode = existing.unwrap_or(
            if self.env.cfg.use_path && supports_path && self.regs.registrar_path != Some(false) {
                BindingMode::Path
            } else {
                BindingMode::Contact
            },
        );
        let mut edits = Vec::new();
        let mut tokens = Vec::new();
        let mut removes_direct = Vec::new();
        let mut extra_contacts = Vec::new();
        for (_, c) in &contacts {
            let uri = String::from_utf8_lossy(c.uri).into_owned();
            let rng = &mut self.rng;
            let b = self
                .regs
                .upsert(&aor, &uri, phone, mode, || rng.token(16), now);
            let token = b.token.clone();
            if mode == BindingMode::Contact && b.direct_registered {
                // The registrar holds the phone's own Contact from a REGISTER whose
                // Path it ignored: replace it with the token Contact.
                extra_contacts.push(format!("<{uri}>;expires=0"));
                removes_direct.push(token.clone());
            }
            let asked = c
                .params
                .value("expires")
                .and_then(|v| crate::sip::parse_delta(v).ok())
                .or(header_expires);
            if mode == BindingMode::Contact {
                let new = self.env.here().binding_contact(&token);
                if let Some(span) = route::span_in(msg, c.uri) {
                    let with = if c.angle { new } else { format!("<{new}>") };
                    edits.push((span, with));
                }
            }
            let at = self.regs.get(token.as_bytes()).map(|b| b.expires_at);
            if let Some(at) = at {
                self.schedule(at, TimerRef::Binding(token.clone()));
            }
            tokens.push((token, asked));
        }
        let path = (mode == BindingMode::Path)
            .then(|| tokens.first().map(|(t, _)| self.here().path(t)))
            .flatten();
        RegisterEdit {
            contact_edits: edits,
            extra_contacts,
            path,
            ctx: RegCtx {
                aor,
                flow: phone,
                mode,
                tokens,
                wildcard,
                removes_direct,
                shorten: false,
            },
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

    // ------------------------------------------------------------ responses

    /// A response on one of our client transactions.
    pub fn on_response(&mut self, tag: Tag, msg: &SipMessage, now: Instant) {
        let Some(code) = msg.status() else { return };
        if self.cancels.contains(&tag.0) {
            if code >= 200 {
                self.cancels.remove(&tag.0);
            }
            return;
        }
        let id = tag.0;
        let Some(f) = self.ctxs.get_mut(&id) else {
            return;
        };
        if f.invite() {
            if code < 200 {
                f.provisional = true;
                let relay = code > 100 && f.final_code.is_none();
                let restart_c = relay && f.cancel == Cancel::None;
                let pending = f.cancel == Cancel::Pending;
                if restart_c {
                    // §16.7 step 2: every provisional restarts Timer C
                    let at = now + TIMER_C;
                    f.timer_c = Some(at);
                    self.schedule(at, TimerRef::C(id));
                }
                if relay {
                    self.relay(id, msg, code);
                }
                if pending {
                    self.send_cancel(id, now);
                }
            } else if code < 300 {
                f.timer_c = None;
                f.give_up = None;
                if f.final_code.is_some_and(|c| c >= 300) {
                    // We already answered upstream; a late 2xx still goes through
                    // (the caller must ACK and BYE it).
                    let reply = f.reply;
                    if let Some(data) = self.response_bytes(msg, code, reply.transport, None) {
                        self.stats.stateless += 1;
                        self.out.push_back(Out::Stateless { flow: reply, data });
                    }
                } else {
                    f.final_code = Some(code);
                    self.relay(id, msg, code);
                }
            } else if f.final_code.is_none() {
                f.timer_c = None;
                f.give_up = None;
                f.final_code = Some(code);
                self.relay(id, msg, code);
            }
            // The context lives until the client transaction ends (further 2xx).
        } else {
            if code < 200 {
                return;
            }
            f.final_code = Some(code);
            let register = f.register.clone();
            if let Some(r) = register.filter(|_| (200..300).contains(&code))
                && self.registered(&r, msg, now)
                && let Some(reg) = self.ctxs.get_mut(&id).and_then(|f| f.register.as_mut())
            {
                reg.shorten = true;
            }
            self.relay(id, msg, code);
            self.remove_ctx(id);
        }
    }

    /// The response bytes to send upstream: our Via popped, 503 turned into 500,
    /// REGISTER Contacts restored, Content-Length ensured on a stream.
    fn response_bytes(
        &self,
        msg: &SipMessage,
        code: u16,
        out: Transport,
        reg: Option<&RegCtx>,
    ) -> Option<Bytes> {
        // the response must still name a previous hop
        msg.values(HeaderName::Via).nth(1)?;
        let mut e = Editor::new(msg);
        e.pop_via();
        if code == 503 {
            // §16.7 step 6: a 503 from the next hop would tell the previous one that
            // *we* are unavailable.
            let line = msg.start_line_span();
            e.replace_span(line, b"SIP/2.0 500 Server Internal Error\r\n");
        }
        if let Some(r) = reg.filter(|r| r.shorten && (200..300).contains(&code)) {
            for (span, c) in msg.contacts() {
                let Ok(c) = c else { continue };
                let mine = r.tokens.iter().any(|(t, _)| {
                    self.regs
                        .get(t.as_bytes())
                        .is_some_and(|b| b.contact.as_bytes().eq_ignore_ascii_case(c.uri))
                });
                if mine {
                    e.replace_span(span, &with_expires(&c, PATH_FALLBACK_EXPIRES));
                }
            }
        }
        if reg.is_some() && (200..300).contains(&code) {
            let here = self.here();
            for (_, c) in msg.contacts() {
                let Ok(c) = c else { continue };
                let Ok(u) = Uri::parse(c.uri) else { continue };
                if !here.is_own_uri(&u) {
                    continue;
                }
                let OwnUser::Binding(t) = OwnUser::of(&u) else {
                    continue;
                };
                let Some(b) = self.regs.get(t) else { continue };
                if let Some(span) = route::span_in(msg, c.uri) {
                    let with = if c.angle {
                        b.contact.clone()
                    } else {
                        format!("<{}>", b.contact)
                    };
                    e.replace_span(span, with.as_bytes());
                }
            }
        }
        if out.is_reliable() {
            e.ensure_content_length();
        }
        Some(e.finish())
    }

    /// Relay a response on the context's server transaction.
    fn relay(&mut self, id: u64, msg: &SipMessage, code: u16) {
        let Some(f) = self.ctxs.get(&id) else { return };
        let Some(data) = self.response_bytes(msg, code, f.reply.transport, f.register.as_ref())
        else {
            tracing::warn!(code, "dropping response with no Via left after ours");
            return;
        };
        self.stats.relayed += 1;
        self.out.push_back(Out::Response {
            key: f.server.clone(),
            data,
        });
    }

    /// A REGISTER got a 2xx: update the bindings it names. Returns whether the
    /// registrar ignored the Path of this REGISTER.
    fn registered(&mut self, r: &RegCtx, msg: &SipMessage, now: Instant) -> bool {
        let default = msg.expires().and_then(|e| e.ok()).unwrap_or(3600);
        if r.wildcard {
            for t in self.regs.tokens_of(&r.aor) {
                self.regs.remove(&t);
            }
            return false;
        }
        for t in &r.removes_direct {
            if let Some(b) = self.regs.get_mut(t) {
                b.direct_registered = false;
            }
        }
        let mut path_ignored = false;
        if r.mode == BindingMode::Path && !r.tokens.is_empty() {
            let ours = {
                let here = self.here();
                msg.values(HeaderName::Path).any(|s| {
                    NameAddr::parse(msg.slice(s))
                        .ok()
                        .and_then(|na| Uri::parse(na.uri).ok())
                        .is_some_and(|u| {
                            here.is_own_uri(&u) && matches!(OwnUser::of(&u), OwnUser::Binding(_))
                        })
                })
            };
            if self.regs.registrar_path != Some(ours) {
                if ours {
                    tracing::info!("the registrar supports Path (RFC 3327)");
                } else {
                    tracing::warn!(
                        "the registrar ignored our Path header: registrations move to Contact rewriting (phones are asked to re-register within a minute)"
                    );
                }
                self.regs.registrar_path = Some(ours);
            }
            path_ignored = !ours;
        }
        // What the registrar granted, per token.
        let mut granted: HashMap<String, u32> = HashMap::new();
        let any_contact = msg.header(HeaderName::Contact).is_some();
        {
            let here = self.here();
            for (_, c) in msg.contacts() {
                let Ok(c) = c else { continue };
                let exp = c
                    .params
                    .value("expires")
                    .and_then(|v| crate::sip::parse_delta(v).ok())
                    .unwrap_or(default);
                let token = match r.mode {
                    BindingMode::Contact => Uri::parse(c.uri).ok().and_then(|u| {
                        if !here.is_own_uri(&u) {
                            return None;
                        }
                        match OwnUser::of(&u) {
                            OwnUser::Binding(t) => Some(String::from_utf8_lossy(t).into_owned()),
                            _ => None,
                        }
                    }),
                    BindingMode::Path => r
                        .tokens
                        .iter()
                        .find(|(t, _)| {
                            self.regs
                                .get(t.as_bytes())
                                .is_some_and(|b| b.contact.as_bytes().eq_ignore_ascii_case(c.uri))
                        })
                        .map(|(t, _)| t.clone()),
                };
                if let Some(t) = token.filter(|t| r.tokens.iter().any(|(x, _)| x == t)) {
                    granted.insert(t, exp);
                }
            }
        }
        for (t, asked) in &r.tokens {
            let exp = match granted.get(t) {
                Some(&e) => e,
                // a registrar that lists no Contact at all: take what was asked
                None if !any_contact => asked.unwrap_or(default),
                None => 0,
            };
            match self.regs.confirm(t, r.flow, exp, now) {
                Some(at) => {
                    self.schedule(at, TimerRef::Binding(t.clone()));
                    if path_ignored && let Some(b) = self.regs.get_mut(t) {
                        b.mode = BindingMode::Contact;
                        b.direct_registered = true;
                    }
                }
                None => tracing::debug!(token = %t, "binding removed"),
            }
        }
        path_ignored
    }

    /// A response that matches no client transaction (e.g. a retransmitted 2xx
    /// after the transaction ended): forwarded statelessly if its top Via is ours.
    pub fn on_stray_response(&mut self, msg: &SipMessage, _from: Flow, _now: Instant) {
        let ours = msg.top_via().and_then(|v| v.ok()).is_some_and(|v| {
            v.branch()
                .is_some_and(|b| b.starts_with(BRANCH_PREFIX.as_bytes()))
                && self.here().is_local(v.host, v.port)
        });
        if !ours {
            tracing::debug!("dropping stray response that is not ours");
            return;
        }
        let Some(next) = msg.vias().nth(1).and_then(|v| v.ok()) else {
            return;
        };
        let Some(flow) = via_flow(&next) else {
            tracing::warn!("stray response: cannot route to the next Via");
            return;
        };
        let code = msg.status().unwrap_or(500);
        if let Some(data) = self.response_bytes(msg, code, flow.transport, None) {
            self.stats.stateless += 1;
            self.out.push_back(Out::Stateless { flow, data });
        }
    }

    // --------------------------------------------------------------- timers

    /// Timer B/F fired on a forwarded request.
    pub fn on_request_timeout(&mut self, tag: Tag, _now: Instant) {
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

    /// Answer the previous hop ourselves on a forwarded INVITE.
    fn answer(&mut self, id: u64, code: u16) {
        let Some(f) = self.ctxs.get_mut(&id) else {
            return;
        };
        f.final_code = Some(code);
        let server = f.server.clone();
        let reason = crate::sip::reason_phrase(code);
        // Build from the original request's identity: reuse the forwarded copy
        // for From/To/Call-ID/CSeq, and restore the Via list we received.
        let Ok(req) = SipMessage::parse(f.request.clone()) else {
            return;
        };
        let tag = self.rng.tag();
        let mut b = MessageBuilder::response(code, reason);
        for (i, v) in req.values(HeaderName::Via).enumerate() {
            if i > 0 {
                b.header_bytes("Via", req.slice(v));
            }
        }
        if let Some(v) = req.header_value(HeaderName::From) {
            b.header_bytes("From", v);
        }
        if let Some(v) = req.header_value(HeaderName::To) {
            if req.to_tag().is_some() {
                b.header_bytes("To", v);
            } else {
                let mut to = v.to_vec();
                to.extend_from_slice(b";tag=");
                to.extend_from_slice(tag.as_bytes());
                b.header_bytes("To", &to);
            }
        }
        if let Some(v) = req.header_value(HeaderName::CallId) {
            b.header_bytes("Call-ID", v);
        }
        if let Some(v) = req.header_value(HeaderName::CSeq) {
            b.header_bytes("CSeq", v);
        }
        self.out.push_back(Out::Response {
            key: server,
            data: b.finish(),
        });
    }

    /// A client transaction of ours ended.
    pub fn on_client_terminated(&mut self, tag: Tag, _now: Instant) {
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
    pub fn on_ack_timeout(&mut self, key: &ServerKey, _now: Instant) {
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

/// The edits for a REGISTER and what its 2xx must update.
struct RegisterEdit {
    contact_edits: Vec<(crate::sip::Span, String)>,
    /// Contact values to add (removals of directly registered Contacts).
    extra_contacts: Vec<String>,
    path: Option<String>,
    ctx: RegCtx,
}

/// A Contact value with its `expires` parameter lowered to at most `secs`.
fn with_expires(c: &NameAddr<'_>, secs: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(c.uri.len() + c.params.raw.len() + 16);
    if let Some(d) = c.display {
        v.extend_from_slice(d);
        v.push(b' ');
    }
    v.push(b'<');
    v.extend_from_slice(c.uri);
    v.push(b'>');
    let mut seen = false;
    for (name, value) in c.params.iter() {
        v.push(b';');
        v.extend_from_slice(name);
        if name.eq_ignore_ascii_case(b"expires") {
            seen = true;
            let granted = value
                .and_then(|x| crate::sip::parse_delta(x).ok())
                .unwrap_or(secs);
            v.extend_from_slice(format!("={}", granted.min(secs)).as_bytes());
        } else if let Some(val) = value {
            v.push(b'=');
            v.extend_from_slice(val);
        }
    }
    if !seen {
        v.extend_from_slice(format!(";expires={secs}").as_bytes());
    }
    v
}

/// A Request-URI that names the bridge, re-addressed to the upstream domain
/// (user and URI parameters kept, except `transport` and `maddr`).
fn readdress(u: &Uri<'_>, domain: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(u.raw.len() + domain.len());
    v.extend_from_slice(if u.scheme == crate::sip::Scheme::Sips {
        b"sips:"
    } else {
        b"sip:"
    });
    if let Some(user) = u.user {
        v.extend_from_slice(user);
        v.push(b'@');
    }
    v.extend_from_slice(domain.as_bytes());
    u.params.write_except(&["transport", "maddr"], &mut v);
    v
}

/// The flow a response goes to according to a Via (RFC 3261 §18.2.2, RFC 3581):
/// `received` (or the sent-by address) and `rport` (or the sent-by port).
fn via_flow(v: &Via<'_>) -> Option<Flow> {
    let transport = if v.transport.eq_ignore_ascii_case("UDP") {
        Transport::Udp
    } else if v.transport.eq_ignore_ascii_case("TCP") {
        Transport::Tcp
    } else {
        return None;
    };
    let ip: IpAddr = match v.received() {
        Some(r) => std::str::from_utf8(r)
            .ok()?
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .ok()?,
        None => v.host.trim_matches(|c| c == '[' || c == ']').parse().ok()?,
    };
    let port = match v.rport() {
        Some(Some(p)) => p,
        _ => v.port.unwrap_or(5060),
    };
    Some(Flow {
        transport,
        remote: std::net::SocketAddr::new(ip, port),
        conn: None,
    })
}

/// The CANCEL for a forwarded INVITE (RFC 3261 §9.1): same Request-URI, our Via
/// only, Route, From, To, Call-ID and CSeq number; Max-Forwards 70; no body.
pub fn build_cancel(invite: &Bytes) -> Option<Bytes> {
    let req = SipMessage::parse(invite.clone()).ok()?;
    crate::sip::builder::invite_transaction_request(&req, &crate::sip::Method::Cancel, None)
}

/// FNV-1a 64 (for deterministic ACK branches).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
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
