//! RFC 3261 §16 transaction-stateful proxy for everything the bridge does not
//! translate (REGISTER, calls, MWI, presence from Zoiper, passthrough profiles).
//!
//! Sans-IO like the rest of the core: the endpoint hands it requests that already
//! have a server transaction, responses to the client transactions it started,
//! stray responses, timeouts; it produces [`Out`] items.
//!
//! (API skeleton: the forwarding logic is being written; until then requests are
//! refused with 501 and nothing is forwarded.)

use crate::config::Config;
use crate::endpoint::LocalAddrs;
use crate::flow::{ConnId, Flow};
use crate::profile::ProfileSet;
use crate::sip::{MessageBuilder, SipMessage};
use crate::transaction::ServerKey;
use crate::util::Rng;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// What the proxy needs to know about its surroundings.
#[derive(Clone)]
pub struct ProxyEnv {
    pub cfg: Arc<Config>,
    pub profiles: Arc<ProfileSet>,
    pub local: LocalAddrs,
    /// Flow towards `[upstream] proxy`.
    pub upstream: Flow,
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
}

pub struct Proxy {
    env: ProxyEnv,
    rng: Rng,
    out: VecDeque<Out>,
}

impl Proxy {
    pub fn new(env: ProxyEnv, seed: u64) -> Self {
        Proxy {
            env,
            rng: Rng::seeded(seed),
            out: VecDeque::new(),
        }
    }

    /// A request with a new server transaction that the proxy must route.
    pub fn on_request(&mut self, key: ServerKey, msg: &SipMessage, _from: Flow, _from_upstream: bool, _now: Instant) {
        let _ = (&self.env, &mut self.rng);
        let data = MessageBuilder::response_to(msg, 501, "Not Implemented", None).finish();
        self.out.push_back(Out::Response { key, data });
    }

    /// A CANCEL (its own server transaction) and the INVITE server transaction it
    /// refers to, if any.
    pub fn on_cancel(&mut self, key: ServerKey, msg: &SipMessage, _invite: Option<ServerKey>, _now: Instant) {
        let data = MessageBuilder::response_to(msg, 481, "Call/Transaction Does Not Exist", None).finish();
        self.out.push_back(Out::Response { key, data });
    }

    /// An ACK that no server transaction absorbed (ACK for a 2xx): route it.
    pub fn on_ack(&mut self, _msg: &SipMessage, _from: Flow, _now: Instant) {}

    /// A response on one of our client transactions.
    pub fn on_response(&mut self, _tag: Tag, _msg: &SipMessage, _now: Instant) {}

    /// A response that matches no client transaction (e.g. a retransmitted 2xx).
    pub fn on_stray_response(&mut self, _msg: &SipMessage, _from: Flow, _now: Instant) {}

    /// Timer B/F fired on a forwarded request.
    pub fn on_request_timeout(&mut self, _tag: Tag, _now: Instant) {}

    /// A client transaction of ours ended.
    pub fn on_client_terminated(&mut self, _tag: Tag, _now: Instant) {}

    /// Timer H: no ACK for a final non-2xx response we sent.
    pub fn on_ack_timeout(&mut self, _key: &ServerKey, _now: Instant) {}

    pub fn connection_closed(&mut self, _conn: ConnId) {}

    pub fn handle_timeout(&mut self, _now: Instant) {}

    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }
}
