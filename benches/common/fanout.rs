//! The fan-out driver shared by `benches/fanout.rs` (wall time) and
//! `examples/fanout.rs` (instructions under callgrind): a sans-IO endpoint,
//! N Grandstream Wave phones (UDP) watching 1002, a scripted upstream that
//! flips 1002's presence between open and closed. Only the endpoint's public
//! API is used, so the same driver measures any version of the core.
#![allow(dead_code)]

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{Flow, Transmit};
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const UPSTREAM: &str = "127.0.0.1:5070";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const CONFIG: &str = r#"
[listen]
udp = "127.0.0.1:5060"

[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.test"
transport = "udp"
keepalive = "none"

[subscriptions]
max_expires = 10000000

[[account]]
user = "1001"
password = "pass1001"

[security]
watchers = "allowed"
max_subscriptions_per_source = 1000000
max_subscriptions_per_target = 1000000
rate_per_source = 1000000
"#;

const DIALOG_IDLE: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"VERSION\" state=\"full\" entity=\"sip:1002@pbx.test\"/>\n";
const PIDF: &str = "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:1002@pbx.test\">\n  <tuple id=\"0x7f3c99fbb888\">\n    <status>\n      <basic>BASIC</basic>\n    </status>\n  </tuple>\n</presence>\n";

fn phone_addr(i: usize) -> SocketAddr {
    let n = i + 1;
    SocketAddr::from(([127, 1, (n >> 8) as u8, (n & 0xff) as u8], 5060))
}

fn reply(req: &SipMessage, code: u16, to_tag: Option<&str>, extra: &str) -> String {
    let hv = |n| String::from_utf8_lossy(req.header_value(n).unwrap_or_default()).into_owned();
    let mut s = format!("SIP/2.0 {code} OK\r\n");
    for h in req.headers_named(HeaderName::Via) {
        s.push_str(&format!(
            "Via: {}\r\n",
            String::from_utf8_lossy(req.value(h))
        ));
    }
    s.push_str(&format!("From: {}\r\n", hv(HeaderName::From)));
    match to_tag {
        Some(t) if req.to_tag().is_none() => {
            s.push_str(&format!("To: {};tag={t}\r\n", hv(HeaderName::To)))
        }
        _ => s.push_str(&format!("To: {}\r\n", hv(HeaderName::To))),
    }
    s.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        hv(HeaderName::CallId),
        hv(HeaderName::CSeq)
    ));
    s
}

/// The upstream dialogs (Call-ID, the bridge's From, our tag) by event.
struct Up {
    call_id: String,
    from: String,
    tag: String,
    cseq: u32,
}

pub struct Fan {
    ep: Endpoint,
    now: Instant,
    dialog: Option<Up>,
    presence: Option<Up>,
    open: bool,
}

impl Fan {
    pub fn new(watchers: usize) -> Fan {
        let cfg = Config::parse(CONFIG, "fanout.toml", &|_| None).unwrap();
        let local = LocalAddrs {
            udp: Some(addr("127.0.0.1:5060")),
            tcp: None,
            advertise_host: "127.0.0.1".into(),
        };
        let now = Instant::now();
        let ep = Endpoint::new(
            Arc::new(cfg),
            Arc::new(ProfileSet::builtin()),
            local,
            addr(UPSTREAM),
            1,
            now,
        );
        let mut f = Fan {
            ep,
            now,
            dialog: None,
            presence: None,
            open: false,
        };
        for i in 0..watchers {
            let a = phone_addr(i);
            let sub = format!(
                "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{i:08x}s;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@pbx.test>;tag={i}f\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: {i:08x}-fan@{ip}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:{u}@{a}>\r\nEvent: dialog\r\nAccept: application/dialog-info+xml\r\nUser-Agent: Grandstream Wave 1.0.6.8\r\nExpires: 10000000\r\nContent-Length: 0\r\n\r\n",
                u = 3000 + i,
                ip = a.ip()
            );
            f.ep.handle_datagram(Flow::udp(a), Bytes::from(sub), f.now);
            f.answer_all();
        }
        f.trigger();
        f.answer_all();
        f.advance(Duration::from_secs(40));
        f
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.ep.handle_timeout(self.now);
        self.answer_all();
    }

    /// Everything the bridge sends is answered (the upstream accepts its
    /// SUBSCRIBEs with a NOTIFY; the phones answer 200).
    fn answer_all(&mut self) {
        loop {
            let mut out: Vec<Transmit> = Vec::new();
            while let Some(t) = self.ep.poll_transmit() {
                out.push(t);
            }
            if out.is_empty() {
                return;
            }
            for t in out {
                self.answer(t);
            }
        }
    }

    fn answer(&mut self, t: Transmit) {
        let Ok(m) = SipMessage::parse(t.data) else {
            return;
        };
        if !m.is_request() {
            return;
        }
        if t.flow.remote == addr(UPSTREAM) {
            if m.method() != Some(&Method::Subscribe) {
                return;
            }
            let hv =
                |n| String::from_utf8_lossy(m.header_value(n).unwrap_or_default()).into_owned();
            let event = hv(HeaderName::Event);
            let tag = format!("pbx{}", event.len());
            let up = Up {
                call_id: hv(HeaderName::CallId),
                from: hv(HeaderName::From),
                tag: tag.clone(),
                cseq: 0,
            };
            let ok = reply(
                &m,
                200,
                Some(&tag),
                "Contact: <sip:127.0.0.1:5070>\r\nExpires: 3600\r\n",
            );
            self.ep.handle_datagram(t.flow, Bytes::from(ok), self.now);
            if event.starts_with("dialog") {
                self.dialog = Some(up);
                self.notify(true, DIALOG_IDLE.replace("VERSION", "0"));
            } else {
                self.presence = Some(up);
            }
        } else {
            let ok = reply(&m, 200, None, "");
            self.ep.handle_datagram(t.flow, Bytes::from(ok), self.now);
        }
    }

    fn notify_bytes(&mut self, dialog: bool, body: String) -> Bytes {
        let up = if dialog {
            self.dialog.as_mut()
        } else {
            self.presence.as_mut()
        }
        .expect("upstream subscription accepted");
        up.cseq += 1;
        let (event, ct) = if dialog {
            ("dialog", "application/dialog-info+xml")
        } else {
            ("presence", "application/pidf+xml")
        };
        Bytes::from(format!(
            "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKn{event}{c}\r\nMax-Forwards: 70\r\nFrom: <sip:1002@pbx.test>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {c} NOTIFY\r\nContact: <sip:127.0.0.1:5070>\r\nEvent: {event}\r\nSubscription-State: active;expires=3600\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n{body}",
            c = up.cseq,
            tag = up.tag,
            to = up.from,
            cid = up.call_id,
            len = body.len(),
        ))
    }

    fn notify(&mut self, dialog: bool, body: String) {
        let data = self.notify_bytes(dialog, body);
        self.ep
            .handle_datagram(Flow::udp(addr(UPSTREAM)), data, self.now);
    }

    /// The next presence change, as bytes ready to deliver.
    fn next_change(&mut self) -> Bytes {
        self.open = !self.open;
        let basic = if self.open { "open" } else { "closed" };
        self.notify_bytes(false, PIDF.replace("BASIC", basic))
    }

    fn trigger(&mut self) {
        let data = self.next_change();
        self.ep
            .handle_datagram(Flow::udp(addr(UPSTREAM)), data, self.now);
    }

    /// A second passes (the timers due run, what they send is answered);
    /// returns the next change, ready to deliver.
    pub fn tick(&mut self) -> Bytes {
        let data = self.next_change();
        self.now += Duration::from_secs(1);
        self.ep.handle_timeout(self.now);
        self.answer_all();
        data
    }

    /// The change delivered to the endpoint (nothing polled yet).
    pub fn deliver(&mut self, data: Bytes) {
        self.ep
            .handle_datagram(Flow::udp(addr(UPSTREAM)), data, self.now);
    }

    /// Poll the endpoint until the first phone NOTIFY (included).
    pub fn poll_to_first(&mut self, out: &mut Vec<Transmit>) {
        while let Some(t) = self.ep.poll_transmit() {
            let phone = t.flow.remote != addr(UPSTREAM);
            out.push(t);
            if phone {
                return;
            }
        }
    }

    /// Poll the endpoint until it has nothing more.
    pub fn poll_rest(&mut self, out: &mut Vec<Transmit>) {
        while let Some(t) = self.ep.poll_transmit() {
            out.push(t);
        }
    }

    /// Answer what a fan-out sent, until the endpoint is quiet.
    pub fn answer_sent(&mut self, out: Vec<Transmit>) {
        for t in out {
            self.answer(t);
        }
        self.answer_all();
    }

    /// One fan-out: (time to the first phone NOTIFY, time to the last, how
    /// many), the phones' answers delivered afterwards.
    pub fn once(&mut self) -> (Duration, Duration, usize) {
        let data = self.next_change();
        // a second between fan-outs: the transactions of the previous ones
        // (Timer K, 5 s) are still there, as at a busy site
        self.now += Duration::from_secs(1);
        self.ep.handle_timeout(self.now);
        self.answer_all();
        let up = Flow::udp(addr(UPSTREAM));
        let mut out = Vec::with_capacity(1100);
        let t0 = Instant::now();
        self.ep.handle_datagram(up, data, self.now);
        let mut first = None;
        while let Some(t) = self.ep.poll_transmit() {
            if first.is_none() && t.flow.remote != addr(UPSTREAM) {
                first = Some(t0.elapsed());
            }
            out.push(t);
        }
        let last = t0.elapsed();
        let n = out.len();
        for t in out {
            self.answer(t);
        }
        self.answer_all();
        (first.unwrap_or(last), last, n)
    }
}
