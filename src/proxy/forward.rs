//! Forwarding one request, RFC 3261 §16.3–§16.6: one step per function, in the
//! order of the RFC, called in turn by [`Proxy::forward_request`].
//!
//! The checks (§16.3) and the routing decision (§16.4, §16.5 with the
//! no-open-relay rules) may refuse the request; from the REGISTER bookkeeping on,
//! every step succeeds and only edits the copy (§16.6).

use super::register::{RegCtx, RegisterEdit};
use super::route::{self, BRANCH_PREFIX, OwnUser, RouteEntry};
use super::{Proxy, Reject, registrar, token};
use crate::flow::Flow;
use crate::local::LocalAddrs;
use crate::sip::{Editor, Method, Scheme, SipMessage, Transport, Uri};
use bytes::Bytes;
use std::time::Instant;

/// A request ready to go out.
pub(super) struct Prepared {
    pub flow: Flow,
    pub data: Bytes,
    pub branch: String,
    pub register: Option<RegCtx>,
}

/// One request on its way through the steps: what it is, and what the steps
/// decided so far.
struct Forwarding<'m> {
    msg: &'m SipMessage,
    method: Method,
    /// An ACK for a 2xx (stateless; no loop or Proxy-Require check, no Record-Route).
    ack: bool,
    from_upstream: bool,
    /// The flow the request came on.
    from: Flow,
    in_dialog: bool,
    /// The Request-URI as received.
    ruri: &'m [u8],
    /// The Route values as received.
    routes: Vec<RouteEntry<'m>>,
    /// Indices into `routes` of the values that go (sorted, no duplicates).
    remove: Vec<usize>,
    /// §16.4: the Request-URI a strict router replaced with ours, restored from
    /// the last Route value.
    restored_ruri: Option<Vec<u8>>,
    /// The Request-URI the copy gets, when it changes.
    set_ruri: Option<Vec<u8>>,
    /// The flow token of a Record-Route of ours this request is routed by.
    flow_token: Option<Vec<u8>>,
    /// The binding token of a Path of ours this request is routed by.
    path_token: Option<Vec<u8>>,
    /// §16.6 step 6: the Route value carrying the Request-URI a strict next hop
    /// swaps out.
    append_route: Option<Vec<u8>>,
}

impl<'m> Forwarding<'m> {
    fn new(
        msg: &'m SipMessage,
        from: Flow,
        from_upstream: bool,
        ack: bool,
    ) -> Result<Forwarding<'m>, Reject> {
        let (Some(method), Some(ruri)) = (msg.method(), msg.request_uri()) else {
            return Err(Reject::new(400, "Not a Request"));
        };
        Ok(Forwarding {
            msg,
            method: method.clone(),
            ack,
            from_upstream,
            from,
            in_dialog: msg.to_tag().is_some(),
            ruri,
            routes: route::routes(msg),
            remove: Vec::new(),
            restored_ruri: None,
            set_ruri: None,
            flow_token: None,
            path_token: None,
            append_route: None,
        })
    }

    /// The Request-URI after Route pre-processing.
    fn effective_ruri(&self) -> &[u8] {
        self.restored_ruri.as_deref().unwrap_or(self.ruri)
    }

    /// The flow of the phone side as responses reach it.
    fn reply_flow(&self) -> Flow {
        self.from.reply()
    }

    /// Route values left after pre-processing.
    fn remaining_routes(&self) -> usize {
        self.routes.len() - self.remove.len()
    }
}

impl Proxy {
    /// The routing decision and the edited copy of a request (§16.3–§16.6).
    pub(super) fn forward_request(
        &mut self,
        msg: &SipMessage,
        from: Flow,
        from_upstream: bool,
        ack: bool,
        now: Instant,
    ) -> Result<Prepared, Reject> {
        let mut req = Forwarding::new(msg, from, from_upstream, ack)?;
        // §16.3: validation
        let max_forwards = check_max_forwards(msg)?; // step 3
        let hash = route::loop_hash(msg);
        if !ack {
            check_loop(&self.env.local, msg, hash)?; // step 4
            check_proxy_require(msg)?; // step 5
        }
        // §16.4, §16.5: the routing decision
        preprocess_route(&self.env.local, &mut req);
        let target = self.relay_policy(&mut req)?;
        let register = self.register_bindings(&req, now)?;
        strict_route_fixup(&mut req); // §16.6 step 6
        if !from_upstream {
            // no open relay, judged on the request as it will go out
            self.check_forwarded(&req)?;
        }
        let branch = self.new_branch(&req, hash);

        // §16.6: the copy
        let mut e = Editor::new(msg);
        rewrite_request_uri_and_routes(&mut e, &req); // steps 2 and 6
        e.set_max_forwards(max_forwards); // step 3
        self.add_record_route(&mut e, &req, target); // step 4
        let register = register.map(|r| register_edits(&mut e, r)); // step 5
        push_via(&mut e, &self.env.local, target.transport, &branch); // steps 8 and 9
        Ok(Prepared {
            flow: target,
            data: e.finish(),
            branch,
            register,
        })
    }

    /// §16.5 and the no-open-relay rules: the next hop, and the Request-URI
    /// changes that go with it.
    fn relay_policy(&self, req: &mut Forwarding<'_>) -> Result<Flow, Reject> {
        if req.from_upstream {
            self.inbound_target(req)
        } else {
            self.outbound_target(req)
        }
    }

    /// From the upstream: only a phone the bridge knows — by the flow token of
    /// our Record-Route, the binding of our Path or of our rewritten Contact in
    /// the Request-URI, or a registered phone Contact; else `403`.
    fn inbound_target(&self, req: &mut Forwarding<'_>) -> Result<Flow, Reject> {
        let eff_raw = req.effective_ruri();
        let eff = Uri::parse(eff_raw).ok();
        let ruri_binding = eff
            .as_ref()
            .filter(|u| self.env.local.is_own_uri(u))
            .and_then(|u| match OwnUser::of(u) {
                OwnUser::Binding(t) => self.regs.get(t),
                _ => None,
            });
        let registered = self.regs.by_phone_contact(eff_raw);
        // A binding whose TCP connection closed has no flow until the phone
        // registers again (RFC 5626 §5.3: 430).
        let flow_of = |b: &registrar::Binding| {
            if b.flow_failed {
                Err(Reject::new(430, "Flow Failed"))
            } else {
                Ok(b.flow)
            }
        };
        let target = if let Some(t) = &req.flow_token {
            let f = token::decode(&self.key, t).ok_or(Reject::new(403, "Forbidden"))?;
            // The phone's current registration beats a Record-Route minted
            // on a TCP connection that may be gone since.
            match registered {
                Some(b)
                    if f.conn.is_some()
                        && b.flow.remote.ip() == f.remote.ip()
                        && !b.flow_failed =>
                {
                    b.flow
                }
                _ => f,
            }
        } else if let Some(t) = &req.path_token {
            flow_of(self.regs.get(t).ok_or(Reject::new(403, "Forbidden"))?)?
        } else if let Some(b) = ruri_binding {
            flow_of(b)?
        } else if let Some(b) = registered {
            flow_of(b)?
        } else {
            return Err(Reject::new(403, "Forbidden"));
        };
        if let Some(b) = ruri_binding {
            req.set_ruri = Some(b.contact.clone().into_bytes());
        }
        Ok(target)
    }

    /// From a phone: always the upstream. Out of a dialog (or with no Route set
    /// left), the Request-URI must name the upstream or the bridge, else `403`;
    /// one naming the bridge is re-addressed to the upstream domain.
    fn outbound_target(&self, req: &mut Forwarding<'_>) -> Result<Flow, Reject> {
        let local = &self.env.local;
        let eff = Uri::parse(req.effective_ruri()).ok();
        let host_ok = match &eff {
            Some(u) if u.is_sip() => self.env.is_upstream_host(u.host_str()) || local.is_own_uri(u),
            Some(u) => u.scheme == Scheme::Tel,
            None => false,
        };
        if !host_ok && (!req.in_dialog || req.remaining_routes() == 0) {
            return Err(Reject::new(403, "Forbidden"));
        }
        if !req.in_dialog
            && let Some(u) = eff.as_ref().filter(|u| local.is_own_uri(u))
            && OwnUser::of(u) == OwnUser::Other
        {
            req.set_ruri = Some(readdress(u, &self.env.cfg.upstream.domain));
        }
        Ok(self.env.upstream)
    }

    /// The no-open-relay rule on a phone's request as it will be forwarded
    /// (after the strict-route fix-up, so a Route without `;lr` cannot swap a
    /// foreign Request-URI in): an in-dialog request carrying the bridge's own
    /// Record-Route with a flow token minted for this phone (same IP) goes as it
    /// is; anything else only when its Request-URI and every Route left name
    /// the upstream or the bridge — a made-up To-tag plus a Route set is no
    /// dialog.
    fn check_forwarded(&self, req: &Forwarding<'_>) -> Result<(), Reject> {
        if req.in_dialog
            && let Some(t) = &req.flow_token
            && token::decode(&self.key, t).is_some_and(|f| f.remote.ip() == req.from.remote.ip())
        {
            return Ok(());
        }
        let local = &self.env.local;
        let names_us_or_upstream = |raw: &[u8], tel_ok: bool| match Uri::parse(raw) {
            Ok(u) if u.is_sip() => self.env.is_upstream_host(u.host_str()) || local.is_own_uri(&u),
            Ok(u) => tel_ok && u.scheme == Scheme::Tel,
            Err(_) => false,
        };
        let ruri = req.set_ruri.as_deref().unwrap_or(req.ruri);
        let routes_ok = (0..req.routes.len())
            .filter(|i| !req.remove.contains(i))
            .all(|i| names_us_or_upstream(req.routes[i].uri, false));
        let appended_ok = req.append_route.as_deref().is_none_or(|r| {
            let r = r
                .strip_prefix(b"<")
                .and_then(|r| r.strip_suffix(b">"))
                .unwrap_or(r);
            names_us_or_upstream(r, true)
        });
        if names_us_or_upstream(ruri, true) && routes_ok && appended_ok {
            Ok(())
        } else {
            Err(Reject::new(403, "Forbidden"))
        }
    }

    /// A REGISTER from a phone: create or refresh its bindings (RFC 3327 Path or
    /// Contact rewriting), and the edits that keep the bridge on the inbound path.
    fn register_bindings(
        &mut self,
        req: &Forwarding<'_>,
        now: Instant,
    ) -> Result<Option<RegisterEdit>, Reject> {
        if req.from_upstream || req.method != Method::Register || req.ack {
            return Ok(None);
        }
        self.register_edit(req.msg, req.reply_flow(), now).map(Some)
    }

    /// §16.6 step 8 with §16.3 step 4: our branch carries the loop hash; an ACK
    /// for a 2xx gets a branch derived from its own, so that retransmissions
    /// reuse it.
    fn new_branch(&mut self, req: &Forwarding<'_>, hash: u64) -> String {
        if req.ack {
            let b = req.msg.branch().unwrap_or_default();
            format!("{BRANCH_PREFIX}{hash:016x}-a{:016x}", fnv(b))
        } else {
            format!("{BRANCH_PREFIX}{hash:016x}-{}", self.rng.token(8))
        }
    }

    /// §16.6 step 4: dialog-creating requests (INVITE, SUBSCRIBE, REFER outside a
    /// dialog; NOTIFY from the upstream) get our Record-Route with a flow token
    /// naming the phone — twice when the bridge is reached under different
    /// addresses on its two sides.
    fn add_record_route(&self, e: &mut Editor<'_>, req: &Forwarding<'_>, target: Flow) {
        let dialog_creating = !req.ack
            && ((!req.in_dialog
                && matches!(
                    req.method,
                    Method::Invite | Method::Subscribe | Method::Refer
                ))
                || (req.from_upstream && req.method == Method::Notify));
        if !dialog_creating {
            return;
        }
        // The phone-side flow is what the token names.
        let phone = if req.from_upstream {
            target
        } else {
            req.reply_flow()
        };
        let tok = token::encode(&self.key, &phone);
        let (prev_t, next_t) = if req.from_upstream {
            (self.env.upstream.transport, phone.transport)
        } else {
            (phone.transport, self.env.upstream.transport)
        };
        let towards_next = route::record_route(&self.env.local, &tok, next_t);
        let towards_prev = route::record_route(&self.env.local, &tok, prev_t);
        e.push_record_route(towards_next.as_bytes());
        if towards_prev != towards_next {
            e.push_record_route(towards_prev.as_bytes());
        }
    }
}

/// §16.3 step 3: `483` at 0; the value the copy gets (70 when absent).
fn check_max_forwards(msg: &SipMessage) -> Result<u32, Reject> {
    match msg.max_forwards() {
        None => Ok(70),
        Some(Ok(0)) => Err(Reject::new(483, "Too Many Hops")),
        Some(Ok(n)) => Ok(n - 1),
        Some(Err(_)) => Err(Reject::new(400, "Malformed Max-Forwards")),
    }
}

/// §16.3 step 4: `482` when a Via of ours carries this request's loop hash (a
/// spiral, with a different hash, passes).
fn check_loop(local: &LocalAddrs, msg: &SipMessage, hash: u64) -> Result<(), Reject> {
    if route::is_loop(local, msg, hash) {
        return Err(Reject::new(482, "Loop Detected"));
    }
    Ok(())
}

/// §16.3 step 5: `420` listing the Proxy-Require tags (the bridge supports no
/// extension).
fn check_proxy_require(msg: &SipMessage) -> Result<(), Reject> {
    let tags = crate::sip::validate::unsupported_proxy_require(msg);
    if tags.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = tags
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect();
    Err(Reject {
        code: 420,
        reason: "Bad Extension",
        unsupported: Some(list.join(", ")),
        retry_after: None,
    })
}

/// §16.4: a Request-URI of ours with a flow token means the previous hop was a
/// strict router (the real Request-URI is the last Route value); then the
/// leading Route values of ours (one URI, possibly twice) are popped, their
/// flow or binding token kept for the routing decision.
fn preprocess_route(local: &LocalAddrs, req: &mut Forwarding<'_>) {
    if let Ok(u) = Uri::parse(req.ruri)
        && local.is_own_uri(&u)
        && let (OwnUser::Flow(t), Some(last)) = (OwnUser::of(&u), req.routes.len().checked_sub(1))
    {
        req.restored_ruri = Some(req.routes[last].uri.to_vec());
        req.remove.push(last);
        req.flow_token = Some(t.to_vec());
    }
    let mut first_user: Option<&[u8]> = None;
    for (i, e) in req.routes.iter().enumerate() {
        if req.remove.contains(&i) {
            break;
        }
        let Ok(u) = Uri::parse(e.uri) else { break };
        if !local.is_own_uri(&u) {
            break;
        }
        let user = u.user.unwrap_or_default();
        match first_user {
            None => first_user = Some(user),
            Some(f) if f != user => break,
            _ => {}
        }
        match OwnUser::of(&u) {
            OwnUser::Flow(t) => req.flow_token = Some(t.to_vec()),
            OwnUser::Binding(t) => req.path_token = Some(t.to_vec()),
            OwnUser::Other => {}
        }
        req.remove.push(i);
    }
    req.remove.sort_unstable();
    req.remove.dedup();
    req.set_ruri = req.restored_ruri.clone();
}

/// §16.6 step 6: the next Route is a strict router — it must see itself in the
/// Request-URI, with the Request-URI moved to the end of the Route set.
fn strict_route_fixup(req: &mut Forwarding<'_>) {
    let Some(i) = (0..req.routes.len()).find(|i| !req.remove.contains(i)) else {
        return;
    };
    let Ok(u) = Uri::parse(req.routes[i].uri) else {
        return;
    };
    if !u.is_sip() || u.has_lr() {
        return;
    }
    let current = req.set_ruri.clone().unwrap_or_else(|| req.ruri.to_vec());
    let mut v = Vec::with_capacity(current.len() + 2);
    v.push(b'<');
    v.extend_from_slice(&current);
    v.push(b'>');
    req.append_route = Some(v);
    req.set_ruri = Some(req.routes[i].uri.to_vec());
    req.remove.push(i);
    req.remove.sort_unstable();
}

/// §16.6 steps 2 and 6 on the copy: the new Request-URI, the Route values of
/// ours popped, the strict router's swapped-out Request-URI appended.
fn rewrite_request_uri_and_routes(e: &mut Editor<'_>, req: &Forwarding<'_>) {
    if let Some(u) = &req.set_ruri {
        e.set_request_uri(u);
    }
    for (span, rep) in route::route_removals(req.msg, &req.routes, &req.remove) {
        e.replace_span(span, &rep);
    }
    if let Some(r) = &req.append_route {
        e.append_header("Route", r);
    }
}

/// §16.6 step 5 for a REGISTER: rewritten Contacts, removals of directly
/// registered Contacts, our Path. Returns what the 2xx must update.
fn register_edits(e: &mut Editor<'_>, r: RegisterEdit) -> RegCtx {
    for (span, with) in &r.contact_edits {
        e.replace_span(*span, with.as_bytes());
    }
    for c in &r.extra_contacts {
        e.append_header("Contact", c.as_bytes());
    }
    if let Some(p) = &r.path {
        e.push_path(p.as_bytes());
    }
    r.ctx
}

/// §16.6 steps 8 and 9: our Via on top; `Content-Length` when the copy goes
/// out on a stream.
fn push_via(e: &mut Editor<'_>, local: &LocalAddrs, transport: Transport, branch: &str) {
    e.push_via(local.via(transport, branch).as_bytes());
    if transport.is_reliable() {
        e.ensure_content_length();
    }
}

/// A Request-URI that names the bridge, re-addressed to the upstream domain
/// (user and URI parameters kept, except `transport` and `maddr`).
pub(super) fn readdress(u: &Uri<'_>, domain: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(u.raw.len() + domain.len());
    v.extend_from_slice(if u.scheme == Scheme::Sips {
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

/// FNV-1a 64 (for deterministic ACK branches).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}
