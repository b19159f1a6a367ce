//! A simulated network and clock around the sans-IO `Endpoint`: phones and a fake
//! upstream exchange messages with it as strings; time advances only when a test
//! says so. No sockets, no sleeps.
#![allow(dead_code)]

pub mod msg;

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{ConnId, Flow, Transmit};
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{HeaderName, Method, SipMessage, Transport};
use blf_bridge::store::Snapshot;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BRIDGE: &str = "127.0.0.1:5060";
pub const UPSTREAM: &str = "127.0.0.1:5070";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn base_config(extra: &str) -> String {
    format!(
        r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"

[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.test"
transport = "udp"
keepalive = "none"

[[account]]
user = "1001"
password = "pass1001"

[[account]]
user = "1005"
password = "pass1005"

{extra}
"#
    )
}

/// LF line ends to CRLF (CRLFs stay).
pub fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n").replace("\r\r\n", "\r\n")
}

pub struct Sim {
    pub ep: Endpoint,
    pub now: Instant,
    pub start: Instant,
    /// Transmits not yet consumed by the test.
    pub pending: Vec<Transmit>,
    /// The configuration text (for restarts).
    pub config: String,
    /// An in-memory state store (with [`Sim::new_persistent`]): every batch
    /// the endpoint hands out is applied as soon as it is taken.
    pub store: Option<Snapshot>,
    /// Restarts so far (each new endpoint gets another seed).
    pub restarts: u64,
}

impl Sim {
    pub fn new(extra_config: &str) -> Sim {
        Sim::with_config(base_config(extra_config))
    }

    /// A bridge with this whole configuration text.
    pub fn with_config(config: String) -> Sim {
        let now = Instant::now();
        let ep = Self::endpoint(&config, 42, now);
        Sim {
            ep,
            now,
            start: now,
            pending: Vec::new(),
            config,
            store: None,
            restarts: 0,
        }
    }

    /// A bridge with an (in-memory) state store.
    pub fn new_persistent(extra_config: &str) -> Sim {
        let mut sim = Sim::new(extra_config);
        sim.ep.enable_persistence();
        sim.store = Some(Snapshot::default());
        sim
    }

    fn endpoint(config: &str, seed: u64, now: Instant) -> Endpoint {
        let cfg = Config::parse(config, "sim.toml", &|_| None).unwrap();
        let local = LocalAddrs {
            udp: Some(addr(BRIDGE)),
            tcp: Some(addr(BRIDGE)),
            advertise_host: "127.0.0.1".into(),
        };
        Endpoint::new(
            Arc::new(cfg),
            Arc::new(ProfileSet::builtin()),
            local,
            addr(UPSTREAM),
            seed,
            now,
        )
    }

    /// The bridge crashes and starts again from its store: everything in
    /// flight is lost (pending transmits dropped), the new endpoint restores.
    pub fn restart(&mut self) {
        let snap = self
            .store
            .clone()
            .expect("restart needs Sim::new_persistent");
        self.restarts += 1;
        self.pending.clear();
        // the key file survives (the runtime reads it before restoring)
        let key = self.ep.proxy().token_key();
        self.ep = Self::endpoint(&self.config, 42 + self.restarts, self.now);
        self.ep.set_token_key(key);
        self.ep.enable_persistence();
        self.ep.restore(&snap, self.now);
        self.drain();
    }

    /// Everything the endpoint sends now, and its changes into the store;
    /// as the runtime does, the changes are taken whenever the endpoint
    /// holds its NOTIFYs until they are.
    fn drain(&mut self) {
        loop {
            while let Some(t) = self.ep.poll_transmit() {
                self.pending.push(t);
            }
            let waits = self.ep.waits_for_persist();
            if let Some(s) = self.store.as_mut() {
                while let Some(b) = self.ep.poll_persist() {
                    s.apply(&b);
                }
            }
            if !waits {
                break;
            }
        }
    }

    /// Deliver a datagram from `from` (UDP).
    /// `text`: a `str`, a `String` or a [`msg::Req`]; LF line ends become CRLF.
    pub fn udp_from(&mut self, from: &str, text: &(impl std::fmt::Display + ?Sized)) {
        let data = Bytes::from(crlf(&text.to_string()));
        self.ep
            .handle_datagram(Flow::udp(addr(from)), data, self.now);
        self.drain();
    }

    /// Deliver raw bytes exactly as given.
    pub fn raw_from(&mut self, flow: Flow, data: &[u8]) {
        self.ep
            .handle_datagram(flow, Bytes::copy_from_slice(data), self.now);
        self.drain();
    }

    /// Deliver a message over a TCP connection.
    pub fn tcp_from(&mut self, from: &str, conn: u64, text: &(impl std::fmt::Display + ?Sized)) {
        let data = Bytes::from(crlf(&text.to_string()));
        let msg = SipMessage::parse(data).unwrap();
        self.ep
            .handle_message(Flow::tcp(addr(from), Some(ConnId(conn))), msg, self.now);
        self.drain();
    }

    /// Deliver a message over a TLS connection (only the upstream speaks TLS).
    #[allow(dead_code)] // only the TLS simulation uses it
    pub fn tls_from(&mut self, from: &str, conn: u64, text: &(impl std::fmt::Display + ?Sized)) {
        let data = Bytes::from(crlf(&text.to_string()));
        let msg = SipMessage::parse(data).unwrap();
        self.ep
            .handle_message(Flow::tls(addr(from), Some(ConnId(conn))), msg, self.now);
        self.drain();
    }

    /// Advance the clock by `d`, firing every timer on the way in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            match self.ep.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.ep.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
        self.ep.handle_timeout(self.now);
        self.drain();
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Take every pending message sent to `to`, parsed.
    pub fn take_to(&mut self, to: &str) -> Vec<SipMessage> {
        let to = addr(to);
        let (mine, rest): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|t| t.flow.remote == to);
        self.pending = rest;
        mine.into_iter()
            .filter_map(|t| SipMessage::parse(t.data).ok())
            .collect()
    }

    /// Take pending transmits to `to` with their flows.
    pub fn take_flows_to(&mut self, to: &str) -> Vec<(Flow, SipMessage)> {
        let to = addr(to);
        let (mine, rest): (Vec<_>, Vec<_>) =
            self.pending.drain(..).partition(|t| t.flow.remote == to);
        self.pending = rest;
        mine.into_iter()
            .filter_map(|t| SipMessage::parse(t.data.clone()).ok().map(|m| (t.flow, m)))
            .collect()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

// ---------------------------------------------------------------- message helpers

pub fn text(m: &SipMessage) -> String {
    String::from_utf8_lossy(&m.message_bytes()).into_owned()
}

pub fn hv(m: &SipMessage, name: HeaderName) -> String {
    String::from_utf8_lossy(m.header_value(name).unwrap_or_default()).into_owned()
}

pub fn hv_named(m: &SipMessage, name: &str) -> Option<String> {
    m.header_value_by_name(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub fn is_method(m: &SipMessage, method: Method) -> bool {
    m.method() == Some(&method)
}

pub fn event_of(m: &SipMessage) -> String {
    hv(m, HeaderName::Event)
}

/// A response to `req` built by a fake peer (copies Via/From/To/Call-ID/CSeq).
pub fn reply(
    req: &SipMessage,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in req.headers_named(HeaderName::Via) {
        s.push_str(&format!(
            "Via: {}\r\n",
            String::from_utf8_lossy(req.value(h))
        ));
    }
    s.push_str(&format!("From: {}\r\n", hv(req, HeaderName::From)));
    let to = hv(req, HeaderName::To);
    match (to_tag, req.to_tag()) {
        (Some(t), None) => s.push_str(&format!("To: {to};tag={t}\r\n")),
        _ => s.push_str(&format!("To: {to}\r\n")),
    }
    s.push_str(&format!("Call-ID: {}\r\n", hv(req, HeaderName::CallId)));
    s.push_str(&format!("CSeq: {}\r\n", hv(req, HeaderName::CSeq)));
    s.push_str(extra);
    if !extra.is_empty() && !extra.ends_with("\r\n") {
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// Body of a message as text.
pub fn body(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

pub fn transport_udp() -> Transport {
    Transport::Udp
}

// ---------------------------------------------------------------- fake upstream

/// One subscription the fake PBX accepted.
#[derive(Debug, Clone)]
pub struct FakeSub {
    pub call_id: String,
    pub event: String,
    /// The bridge's tag (From of its SUBSCRIBE).
    pub bridge_tag: String,
    /// Our (the PBX's) tag.
    pub tag: String,
    pub target: String,
    pub watcher: String,
    pub cseq: u32,
    pub version: u32,
}

/// A scripted hosted PBX: answers the bridge's SUBSCRIBEs and sends NOTIFYs.
#[derive(Default)]
pub struct FakePbx {
    pub subs: Vec<FakeSub>,
    pub seen: Vec<SipMessage>,
    /// Call-ID|CSeq|branch of every request seen (retransmission filter).
    keys: std::collections::HashSet<String>,
    n: u32,
    /// Its address (default [`UPSTREAM`]; failover tests run several).
    pub at: Option<&'static str>,
}

pub const DUMMY_IDLE: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"VERSION\" state=\"full\" entity=\"sip:1002@pbx.test\">\n  <dialog id=\"615293b33c62dec073e05d9421e9f48b\" direction=\"recipient\">\t<state>terminated</state>\t</dialog>\n</dialog-info>\n";

pub const EARLY: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"VERSION\" state=\"full\" entity=\"sip:1002@pbx.test\">\n  <dialog id=\"padi-1\" call-id=\"1-5707@127.0.0.1\" local-tag=\"5549SIPpTag010\" remote-tag=\"5707SIPpTag001\" direction=\"recipient\">\n    <state>early</state>\n    <remote>\n      <identity display=\"Bob &amp; Co\">sip:1003@pbx.test</identity>\n      <target uri=\"sip:1003@127.0.0.1:5074;transport=UDP\"/>\n    </remote>\n    <local>\n      <identity>sip:1002@pbx.test</identity>\n      <target uri=\"sip:1002@127.0.0.1:5073;transport=UDP\"/>\n    </local>\n  </dialog>\n</dialog-info>\n";

pub const CONFIRMED: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"VERSION\" state=\"full\" entity=\"sip:1002@pbx.test\">\n  <dialog id=\"padi-1\" call-id=\"1-5707@127.0.0.1\" direction=\"recipient\">\n    <state>confirmed</state>\n    <remote>\n      <identity>sip:1003@pbx.test</identity>\n      <target uri=\"sip:1003@127.0.0.1:5074;transport=UDP\"/>\n    </remote>\n    <local>\n      <identity>sip:1002@pbx.test</identity>\n      <target uri=\"sip:1002@pbx.test\"/>\n    </local>\n  </dialog>\n</dialog-info>\n";

pub const PIDF_OPEN: &str = "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"1002@pbx.test\">\n  <tuple id=\"0x7f3c99fbb888\">\n    <status>\n      <basic>open</basic>\n    </status>\n  </tuple>\n</presence>\n";

pub const PIDF_CLOSED: &str = "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"1002@pbx.test\">\n  <tuple xmlns=\"urn:ietf:params:xml:ns:pidf\" id=\"0x7f3c99fbb888\">\n    <status xmlns=\"urn:ietf:params:xml:ns:pidf\">\n      <basic>closed</basic>\n    </status>\n  </tuple>\n</presence>\n";

impl FakePbx {
    /// A PBX at another address than [`UPSTREAM`].
    pub fn at(addr: &'static str) -> FakePbx {
        FakePbx {
            at: Some(addr),
            ..FakePbx::default()
        }
    }

    pub fn addr(&self) -> &'static str {
        self.at.unwrap_or(UPSTREAM)
    }

    /// Take every message the bridge sent to the upstream, without
    /// retransmissions (a request whose Call-ID, CSeq and branch were seen).
    pub fn take(&mut self, sim: &mut Sim) -> Vec<SipMessage> {
        let v: Vec<SipMessage> = sim
            .take_to(self.addr())
            .into_iter()
            .filter(|m| {
                if !m.is_request() {
                    return true;
                }
                let key = format!(
                    "{}|{}|{}",
                    hv(m, HeaderName::CallId),
                    hv(m, HeaderName::CSeq),
                    String::from_utf8_lossy(m.branch().unwrap_or_default())
                );
                self.keys.insert(key)
            })
            .collect();
        self.seen.extend(v.iter().cloned());
        v
    }

    /// Let time pass in 100 ms steps, answering every SUBSCRIBE with 200 as it
    /// arrives. Returns the SUBSCRIBEs seen.
    pub fn run(&mut self, sim: &mut Sim, d: Duration) -> Vec<SipMessage> {
        let mut subs = Vec::new();
        let end = sim.now + d;
        while sim.now < end {
            sim.advance(Duration::from_millis(100));
            let msgs = self.take(sim);
            let s: Vec<SipMessage> = msgs
                .into_iter()
                .filter(|m| is_method(m, Method::Subscribe))
                .collect();
            self.accept(sim, &s, 600);
            subs.extend(s);
        }
        subs
    }

    /// Answer the SUBSCRIBEs in `msgs` with 200 (and `Expires: expires`), recording
    /// the dialogs. Returns how many were answered.
    pub fn accept(&mut self, sim: &mut Sim, msgs: &[SipMessage], expires: u32) -> usize {
        let mut n = 0;
        for m in msgs.iter().filter(|m| is_method(m, Method::Subscribe)) {
            let cid = hv(m, HeaderName::CallId);
            let existing = self.subs.iter().position(|s| s.call_id == cid);
            let tag = match existing {
                Some(i) => self.subs[i].tag.clone(),
                None => {
                    self.n += 1;
                    let tag = format!("pbxtag{}", self.n);
                    let target = String::from_utf8_lossy(m.request_uri().unwrap()).into_owned();
                    self.subs.push(FakeSub {
                        call_id: cid.clone(),
                        event: event_of(m),
                        bridge_tag: String::from_utf8_lossy(m.from_tag().unwrap()).into_owned(),
                        tag: tag.clone(),
                        target,
                        watcher: hv(m, HeaderName::From),
                        cseq: 0,
                        version: 0,
                    });
                    tag
                }
            };
            let resp = reply(
                m,
                200,
                "OK",
                Some(&tag),
                &format!("Contact: <sip:{}>\r\nExpires: {expires}\r\n", self.addr()),
            );
            sim.udp_from(self.addr(), &resp);
            n += 1;
        }
        n
    }

    /// Send a NOTIFY for the subscription with this event (the last one accepted).
    pub fn notify(
        &mut self,
        sim: &mut Sim,
        event: &str,
        sub_state: &str,
        body: Option<&str>,
    ) -> Vec<SipMessage> {
        let i = self
            .subs
            .iter()
            .rposition(|s| s.event == event)
            .expect("no upstream subscription for that event");
        self.notify_sub(sim, i, sub_state, body)
    }

    pub fn notify_sub(
        &mut self,
        sim: &mut Sim,
        i: usize,
        sub_state: &str,
        body: Option<&str>,
    ) -> Vec<SipMessage> {
        let msg = self.notify_text(i, sub_state, body);
        // the NOTIFY's To is the bridge's From (with its tag) - s.watcher holds it
        sim.raw_from(Flow::udp(addr(self.addr())), msg.as_bytes());
        self.take(sim)
    }

    /// The NOTIFY the PBX would send next for the last subscription with this
    /// event, delivered to the bridge without taking anything it sends (a test
    /// then polls the endpoint itself, one transmit at a time).
    pub fn notify_undrained(&mut self, sim: &mut Sim, event: &str, body: Option<&str>) {
        let i = self
            .subs
            .iter()
            .rposition(|s| s.event == event)
            .expect("no upstream subscription for that event");
        let msg = self.notify_text(i, "active;expires=600", body);
        sim.ep.handle_datagram(
            Flow::udp(addr(self.addr())),
            Bytes::from(msg.into_bytes()),
            sim.now,
        );
    }

    /// The text of the next NOTIFY for subscription `i`.
    pub fn notify_text(&mut self, i: usize, sub_state: &str, body: Option<&str>) -> String {
        self.n += 1;
        let at = self.addr();
        let s = &mut self.subs[i];
        s.cseq += 1;
        let (ct, b) = match body {
            Some(b) => {
                let b = b.replace("VERSION", &s.version.to_string());
                s.version += 1;
                let ct = if s.event == "dialog" {
                    "application/dialog-info+xml"
                } else {
                    "application/pidf+xml"
                };
                (format!("Content-Type: {ct}\r\n"), b)
            }
            None => (String::new(), String::new()),
        };
        let msg = format!(
            "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {at};branch=z9hG4bKpbx{}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} NOTIFY\r\nContact: <sip:{at}>\r\nEvent: {}\r\nSubscription-State: {sub_state}\r\n{ct}Content-Length: {}\r\n\r\n{b}",
            self.n,
            s.target,
            s.tag,
            s.watcher,
            s.call_id,
            s.cseq,
            s.event,
            b.len()
        );
        msg
    }
}
