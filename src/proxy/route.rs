//! Routing rules as pure functions over a message and the bridge's addresses:
//! the user parts of the bridge's own URIs, loop detection (RFC 3261 §16.3
//! step 4), the Route set (§16.4) and the URIs the bridge writes into
//! Record-Route, Path and rewritten Contacts. Which URIs and Vias are the
//! bridge's own is [`crate::local`]'s rule; which hosts are the upstream's is
//! [`Context::is_upstream_host`].

use crate::context::Context;
use crate::local::LocalAddrs;
use crate::sip::message::split_list;
use crate::sip::{HeaderName, NameAddr, SipMessage, Span, Transport, Uri};

/// Prefix of every branch the proxy writes (after the RFC 3261 magic cookie);
/// followed by the 16-hex-digit loop-detection hash.
pub const BRANCH_PREFIX: &str = "z9hG4bK-bb-";
/// User part prefix of a Record-Route URI carrying a flow token.
pub const RR_USER_PREFIX: &str = "f-";
/// User part prefix of a rewritten Contact or a Path URI carrying a binding token.
pub const BINDING_USER_PREFIX: &str = "b-";

/// The user part of one of the bridge's own URIs, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnUser<'a> {
    /// `f-<token>`: a Record-Route entry (flow token).
    Flow(&'a [u8]),
    /// `b-<token>`: a rewritten Contact or a Path entry (registration binding).
    Binding(&'a [u8]),
    /// Anything else (no user, the subscription Contact user, …).
    Other,
}

impl<'a> OwnUser<'a> {
    pub fn of(uri: &Uri<'a>) -> OwnUser<'a> {
        match uri.user {
            Some(u) if u.starts_with(RR_USER_PREFIX.as_bytes()) => {
                OwnUser::Flow(&u[RR_USER_PREFIX.len()..])
            }
            Some(u) if u.starts_with(BINDING_USER_PREFIX.as_bytes()) => {
                OwnUser::Binding(&u[BINDING_USER_PREFIX.len()..])
            }
            _ => OwnUser::Other,
        }
    }
}

/// Record-Route value carrying a flow token, reachable over `transport`.
pub fn record_route(local: &LocalAddrs, flow_token: &str, transport: Transport) -> String {
    format!(
        "<{};lr>",
        local.uri(&format!("{RR_USER_PREFIX}{flow_token}"), transport)
    )
}

/// The Contact URI that replaces a phone's Contact in a REGISTER (reachable
/// from the upstream).
pub fn binding_contact(ctx: &Context, token: &str) -> String {
    ctx.local.uri(
        &format!("{BINDING_USER_PREFIX}{token}"),
        ctx.upstream.transport,
    )
}

/// The Path value added to a REGISTER (RFC 3327).
pub fn path(ctx: &Context, token: &str) -> String {
    format!("<{};lr>", binding_contact(ctx, token))
}

/// FNV-1a 64 over the fields RFC 3261 §16.6 step 8 names for loop detection:
/// Request-URI, Call-ID, From tag, To tag, CSeq number, Proxy-Require — plus
/// the Route set as received. (The topmost Via and Proxy-Authorization are left
/// out on purpose: the first differs on every hop and the second when a phone
/// answers a challenge, which would hide a real loop.) The Route set matters
/// for in-dialog requests between two phones of the bridge: the request passes
/// the bridge twice with the same Request-URI, but with a shorter Route set the
/// second time — a spiral, not a loop.
pub fn loop_hash(msg: &SipMessage) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &c in b {
            h ^= u64::from(c);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // field separator
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(msg.request_uri().unwrap_or_default());
    eat(msg.call_id().unwrap_or_default());
    eat(msg.from_tag().unwrap_or_default());
    eat(msg.to_tag().unwrap_or_default());
    let seq = msg.cseq().and_then(|c| c.ok()).map(|c| c.seq).unwrap_or(0);
    eat(&seq.to_be_bytes());
    for t in msg.option_tags(HeaderName::ProxyRequire) {
        eat(t);
    }
    for r in msg.values(HeaderName::Route) {
        eat(msg.slice(r));
    }
    h
}

/// RFC 3261 §16.3 step 4: does a Via of ours carry this request's loop hash
/// (a loop), as opposed to a different one (a spiral) or none?
pub fn is_loop(local: &LocalAddrs, msg: &SipMessage, hash: u64) -> bool {
    let want = format!("{BRANCH_PREFIX}{hash:016x}");
    msg.vias().flatten().any(|v| {
        v.branch().is_some_and(|b| {
            b.len() >= want.len() && b[..want.len()].eq_ignore_ascii_case(want.as_bytes())
        }) && local.is_own_via(&v)
    })
}

/// One Route value: its span and parsed URI.
#[derive(Debug, Clone, Copy)]
pub struct RouteEntry<'m> {
    pub span: Span,
    /// Index of the Route header line holding it.
    pub line: usize,
    pub uri: &'m [u8],
}

/// Every Route value in order (values that do not parse are kept with an
/// empty URI so that indices stay right).
pub fn routes(msg: &SipMessage) -> Vec<RouteEntry<'_>> {
    let mut v = Vec::new();
    for (line, h) in msg.headers_named(HeaderName::Route).enumerate() {
        for span in split_list(msg.buffer(), h.value) {
            let uri = NameAddr::parse(msg.slice(span))
                .map(|na| na.uri)
                .unwrap_or_default();
            v.push(RouteEntry { span, line, uri });
        }
    }
    v
}

/// The edits that remove the Route values whose indices are in `remove` (sorted),
/// as `(span, replacement)` pairs: whole lines when every value of a line goes,
/// otherwise the line's value rewritten with the remaining values.
pub fn route_removals(
    msg: &SipMessage,
    entries: &[RouteEntry<'_>],
    remove: &[usize],
) -> Vec<(Span, Vec<u8>)> {
    let mut edits = Vec::new();
    for (line, h) in msg.headers_named(HeaderName::Route).enumerate() {
        let in_line: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].line == line)
            .collect();
        let removed = in_line.iter().filter(|i| remove.contains(i)).count();
        if removed == 0 {
            continue;
        }
        if removed == in_line.len() {
            edits.push((h.line, Vec::new()));
            continue;
        }
        let mut value = Vec::with_capacity(h.value.len());
        for &i in in_line.iter().filter(|i| !remove.contains(i)) {
            if !value.is_empty() {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(msg.slice(entries[i].span));
        }
        edits.push((h.value, value));
    }
    edits
}

/// Span of `sub` inside the message buffer (`sub` must be a slice of it).
pub fn span_in(msg: &SipMessage, sub: &[u8]) -> Option<Span> {
    let base = msg.buffer().as_ptr() as usize;
    let start = (sub.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(sub.len())?;
    (end <= msg.buffer().len()).then(|| Span::new(start, end))
}
