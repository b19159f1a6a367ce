//! Transaction layer tests on a simulated clock: a base `Instant` plus durations,
//! no sleeps, no sockets. Every transmission and event is recorded with the
//! simulated offset at which it happened, so schedules are asserted exactly.
//!
//! This file holds the simulator and the message helpers; the tests are in one
//! file per machine (client/server, INVITE/non-INVITE), plus matching and
//! robustness.

mod client_invite;
mod client_non_invite;
mod matching;
mod robustness;
mod server_invite;
mod server_non_invite;

use super::*;
use crate::flow::{ConnId, Flow};
use crate::sip::{HeaderName, MessageBuilder, Method, SipMessage, reason_phrase};
use crate::util::Rng;
use bytes::Bytes;
use std::net::SocketAddr;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ms_list(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|&n| ms(n)).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Where our requests go (the peer).
fn peer_udp() -> Flow {
    Flow::udp(addr("127.0.0.2:5080"))
}
fn peer_tcp() -> Flow {
    Flow::tcp(addr("127.0.0.2:5080"), Some(ConnId(7)))
}
/// Where a phone's requests come from and where the answers go.
fn phone_udp() -> Flow {
    Flow::udp(addr("127.0.0.5:5062"))
}
fn phone_reply_udp() -> Flow {
    Flow::udp(addr("127.0.0.5:40000"))
}
fn phone_tcp() -> Flow {
    Flow::tcp(addr("127.0.0.5:5062"), Some(ConnId(9)))
}

fn parse(text: &str) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
}

const OUR_VIA: &str = "SIP/2.0/UDP 127.0.0.1:5060;rport";
const PHONE_VIA: &str = "SIP/2.0/UDP 127.0.0.5:5062;rport";

/// A request with the given top Via (`;branch=` appended when `branch` is not empty).
fn request(method: &str, via: &str, branch: &str, cseq: u32) -> String {
    let via = if branch.is_empty() {
        via.to_string()
    } else {
        format!("{via};branch={branch}")
    };
    format!(
        "{method} sip:1002@127.0.0.2:5080 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@example.com>;tag=f1\r\nTo: <sip:1002@example.com>\r\n\
         Call-ID: c1@example.com\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The ACK a UAC sends for a non-2xx to [`request`]`("INVITE", via, branch, cseq)`.
fn ack(via: &str, branch: &str, cseq: u32, to_tag: &str) -> String {
    let via = if branch.is_empty() {
        via.to_string()
    } else {
        format!("{via};branch={branch}")
    };
    format!(
        "ACK sip:1002@127.0.0.2:5080 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
         From: <sip:1001@example.com>;tag=f1\r\nTo: <sip:1002@example.com>;tag={to_tag}\r\n\
         Call-ID: c1@example.com\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A response to `req` (text), with a To tag for codes above 100.
fn response_bytes(req: &str, code: u16, to_tag: &str) -> Bytes {
    let tag = (code > 100).then_some(to_tag);
    MessageBuilder::response_to(&parse(req), code, reason_phrase(code), tag).finish()
}

fn response(req: &str, code: u16, to_tag: &str) -> SipMessage {
    SipMessage::parse(response_bytes(req, code, to_tag)).unwrap()
}

fn status_of(t: &Transmit) -> Option<u16> {
    SipMessage::parse(t.data.clone()).ok()?.status()
}

/// The layer plus a simulated clock and a log of everything it emitted.
struct Sim {
    layer: TransactionLayer,
    t0: Instant,
    now: Instant,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, TxEvent)>,
}

impl Sim {
    fn new() -> Sim {
        Sim::with(Timers::default())
    }
    fn with(timers: Timers) -> Sim {
        let t0 = Instant::now();
        Sim {
            layer: TransactionLayer::new(timers),
            t0,
            now: t0,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }
    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
    fn drain(&mut self) {
        let at = self.elapsed();
        while let Some(t) = self.layer.poll_transmit() {
            self.sent.push((at, t));
        }
        while let Some(e) = self.layer.poll_event() {
            self.events.push((at, e));
        }
    }
    /// Move the clock to `t` (offset from the start), firing every timer on the
    /// way at its own instant.
    fn run_until(&mut self, t: Duration) {
        let end = self.t0 + t;
        assert!(end >= self.now, "the simulated clock only moves forward");
        while let Some(d) = self.layer.poll_timeout() {
            if d > end {
                break;
            }
            assert!(d >= self.now, "a deadline in the past was left pending");
            self.now = d;
            self.layer.handle_timeout(d);
            self.drain();
        }
        self.now = end;
    }
    fn send(&mut self, flow: Flow, text: &str) -> ClientKey {
        let k = self
            .layer
            .send_request(flow, Bytes::copy_from_slice(text.as_bytes()), self.now)
            .unwrap();
        self.drain();
        k
    }
    fn on_response(&mut self, msg: &SipMessage) -> ResponseDisposition {
        let d = self.layer.on_response(msg, self.now);
        self.drain();
        d
    }
    fn on_request_from(&mut self, text: &str, from: Flow, reply_to: Flow) -> RequestDisposition {
        let d = self
            .layer
            .on_request(&parse(text), from, reply_to, self.now);
        self.drain();
        d
    }
    fn on_request(&mut self, text: &str) -> RequestDisposition {
        self.on_request_from(text, phone_udp(), phone_reply_udp())
    }
    fn respond(&mut self, key: &ServerKey, data: Bytes) -> Result<(), TxError> {
        let r = self.layer.respond(key, data, self.now);
        self.drain();
        r
    }
    fn take_sent(&mut self) -> Vec<(Duration, Transmit)> {
        std::mem::take(&mut self.sent)
    }
    fn take_events(&mut self) -> Vec<(Duration, TxEvent)> {
        std::mem::take(&mut self.events)
    }
}

fn times(sent: &[(Duration, Transmit)]) -> Vec<Duration> {
    sent.iter().map(|(d, _)| *d).collect()
}

fn new_key(d: RequestDisposition) -> ServerKey {
    match d {
        RequestDisposition::New(k) => k,
        other => panic!("expected a new transaction, got {other:?}"),
    }
}
