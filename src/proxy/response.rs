//! Responses (RFC 3261 §16.7): relayed on the server transaction with our Via
//! popped, 503 turned into 500, a REGISTER 2xx with the phones' Contacts back;
//! Timer C and CANCEL give-ups answered by the proxy itself; stray responses
//! forwarded statelessly when their top Via is ours.

use super::register::RegCtx;
use super::route::BRANCH_PREFIX;
use super::{Cancel, Out, Proxy, TIMER_C, Tag, TimerRef};
use crate::flow::Flow;
use crate::sip::{Editor, HeaderName, MessageBuilder, SipMessage, Transport, Via};
use bytes::Bytes;
use std::net::IpAddr;
use std::time::Instant;

impl Proxy {
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
            if f.method == crate::sip::Method::Register && matches!(code, 401 | 403 | 407) {
                self.auth_failures.push(f.reply.remote.ip());
            }
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
    pub(super) fn response_bytes(
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
        if let Some(r) = reg.filter(|_| (200..300).contains(&code)) {
            self.restore_contacts(&mut e, msg, r);
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
        if let Some(r) = f.register.as_ref().filter(|_| code >= 200) {
            tracing::info!(user = %r.aor, source = %r.flow, code, "REGISTER relayed");
        }
        self.out.push_back(Out::Response {
            key: f.server.clone(),
            data,
        });
    }

    /// A response that matches no client transaction (e.g. a retransmitted 2xx
    /// after the transaction ended; the endpoint hands over only those from the
    /// upstream): forwarded statelessly if its top Via is ours and the next Via
    /// names an allowed phone over UDP. Never to a host outside `[security]
    /// allow`, never to a broadcast, multicast or unspecified address, and never
    /// over TCP (that would open a connection for a message nobody asked for).
    /// `Err`: why it was dropped.
    pub fn on_stray_response(&mut self, msg: &SipMessage) -> Result<(), &'static str> {
        let ours = msg.top_via().and_then(|v| v.ok()).is_some_and(|v| {
            v.branch()
                .is_some_and(|b| b.starts_with(BRANCH_PREFIX.as_bytes()))
                && self.env.local.is_own_via(&v)
        });
        if !ours {
            return Err("stray response whose top Via is not ours");
        }
        if crate::sip::validate::has_broadcast_via(msg) {
            return Err("stray response towards a broadcast address");
        }
        let Some(next) = msg.vias().nth(1).and_then(|v| v.ok()) else {
            return Err("stray response without a next Via");
        };
        let Some(flow) = via_flow(&next) else {
            return Err("stray response: cannot route to the next Via");
        };
        if flow.transport != Transport::Udp {
            return Err("stray response towards a TCP or TLS hop (no connection is opened for it)");
        }
        if !is_unicast(flow.remote.ip()) || flow.remote.port() == 0 {
            return Err("stray response towards a broadcast, multicast or unspecified address");
        }
        if !self.env.cfg.security.allows(flow.remote.ip()) {
            return Err("stray response towards a host outside [security] allow");
        }
        let code = msg.status().unwrap_or(500);
        let data = self
            .response_bytes(msg, code, flow.transport, None)
            .ok_or("stray response without a next Via")?;
        self.stats.stateless += 1;
        self.out.push_back(Out::Stateless { flow, data });
        Ok(())
    }

    /// Answer the previous hop ourselves on a forwarded INVITE.
    pub(super) fn answer(&mut self, id: u64, code: u16) {
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
}

/// The flow a response goes to according to a Via (RFC 3261 §18.2.2, RFC 3581):
/// `received` (or the sent-by address) and `rport` (or the sent-by port).
pub(super) fn via_flow(v: &Via<'_>) -> Option<Flow> {
    let transport = if v.transport.eq_ignore_ascii_case("UDP") {
        Transport::Udp
    } else if v.transport.eq_ignore_ascii_case("TCP") {
        Transport::Tcp
    } else if v.transport.eq_ignore_ascii_case("TLS") {
        Transport::Tls
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

/// Not broadcast, multicast or unspecified (a response goes to one host).
fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_broadcast() || a.is_multicast() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}
