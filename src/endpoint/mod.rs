//! The sans-IO endpoint: everything the bridge does, as a state machine fed with
//! `(message, flow, time)` and timeouts, producing [`Transmit`]s. The tokio
//! runtime (`crate::runtime`) only moves bytes and calls these methods.
//!
//! (Work in progress: this first version parses, validates, answers malformed
//! requests with 400 and OPTIONS to the bridge with 200.)

use crate::config::Config;
use crate::flow::{ConnId, Flow, Transmit};
use crate::sip::{MessageBuilder, Method, SipMessage};
use crate::util::Rng;
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The bridge's own addresses, as bound by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// Host written into Via/Contact/Record-Route.
    pub advertise_host: String,
}

pub struct Endpoint {
    cfg: Arc<Config>,
    local: LocalAddrs,
    upstream: SocketAddr,
    rng: Rng,
    out: VecDeque<Transmit>,
}

impl Endpoint {
    pub fn new(cfg: Arc<Config>, local: LocalAddrs, upstream: SocketAddr, seed: u64, _now: Instant) -> Self {
        Endpoint {
            cfg,
            local,
            upstream,
            rng: Rng::seeded(seed),
            out: VecDeque::new(),
        }
    }

    /// A UDP datagram (one message) arrived.
    pub fn handle_datagram(&mut self, from: Flow, data: Bytes, now: Instant) {
        match SipMessage::parse(data) {
            Ok(m) => self.handle_message(from, m, now),
            Err(e) => tracing::debug!(%from, error = %e, "dropping non-SIP datagram"),
        }
    }

    /// A framed message arrived (from UDP or a TCP stream).
    pub fn handle_message(&mut self, from: Flow, msg: SipMessage, _now: Instant) {
        let _ = (&self.cfg, &self.local, &self.upstream, &mut self.rng);
        if msg.is_request() {
            if let Err(d) = crate::sip::validate::check_request(&msg) {
                tracing::warn!(%from, code = d.code, reason = d.reason, "rejecting malformed request");
                // The answer goes back on the flow the request came from and
                // copies the Via values byte for byte, so it only needs a Via to
                // copy, not a readable one (RFC 4475 badinv01, badvers).
                if msg.header(crate::sip::HeaderName::Via).is_some() {
                    let resp = MessageBuilder::response_to(&msg, d.code, d.reason, None).finish();
                    self.out.push_back(Transmit { flow: from, data: resp });
                }
                return;
            }
            if msg.method() == Some(&Method::Options) {
                let resp = MessageBuilder::response_to(&msg, 200, "OK", None).finish();
                self.out.push_back(Transmit { flow: from, data: resp });
            }
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
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// The runtime closed (or lost) a TCP connection.
    pub fn connection_closed(&mut self, _conn: ConnId) {}

    /// Next datagram / stream write to perform.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
