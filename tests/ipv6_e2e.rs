//! IPv6 end to end: the real `blf-bridge` binary listening on `[::1]`, a phone on
//! `::1` that registers and subscribes through it, and an upstream stub on `::1`
//! (a registrar and presence server answering with 200s and NOTIFYs). Everything
//! the bridge sends goes to `::1`; its Vias and Contacts name `[::1]`.

mod common;

use blf_bridge::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use common::*;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IDLE: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"sip:1002@pbx.test\"/>\n";
const OPEN: &str = "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:1002@pbx.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>\n";

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
}

fn hv(m: &SipMessage, n: HeaderName) -> String {
    String::from_utf8_lossy(m.header_value(n).unwrap_or_default()).into_owned()
}

/// A 200 to `req`, with a To-tag and extra header lines.
fn ok(req: &SipMessage, tag: &str, extra: &str) -> String {
    let mut s = String::from("SIP/2.0 200 OK\r\n");
    for v in req.values(HeaderName::Via) {
        s += &format!("Via: {}\r\n", String::from_utf8_lossy(req.slice(v)));
    }
    let to = hv(req, HeaderName::To);
    let to = if req.to_tag().is_some() {
        to
    } else {
        format!("{to};tag={tag}")
    };
    s += &format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        hv(req, HeaderName::From),
        hv(req, HeaderName::CallId),
        hv(req, HeaderName::CSeq)
    );
    s
}

/// The upstream stub: answers REGISTER, SUBSCRIBE and OPTIONS with 200, and
/// follows each new SUBSCRIBE with a NOTIFY (idle dialog-info / open PIDF).
struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(SocketAddr, SipMessage)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start() -> Stub {
        let sock = UdpSocket::bind(v6(0)).expect("bind [::1]");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = SipMessage::parse(Bytes::copy_from_slice(&buf[..len])) else {
                    continue;
                };
                seen2.lock().unwrap().push((from, m.clone()));
                let Some(method) = m.method().cloned() else {
                    continue;
                };
                n += 1;
                match method {
                    Method::Register => {
                        let c = hv(&m, HeaderName::Contact);
                        let r = ok(&m, "reg", &format!("Contact: {c};expires=300\r\n"));
                        let _ = sock.send_to(r.as_bytes(), from);
                    }
                    Method::Options => {
                        let _ = sock.send_to(ok(&m, "opt", "").as_bytes(), from);
                    }
                    Method::Subscribe => {
                        let tag = format!("stub{n}");
                        let contact = format!("Contact: <sip:stub@{addr}>\r\nExpires: 600\r\n");
                        let _ = sock.send_to(ok(&m, &tag, &contact).as_bytes(), from);
                        if m.to_tag().is_some() {
                            continue;
                        }
                        let event = hv(&m, HeaderName::Event);
                        let (ct, body) = if event.starts_with("presence") {
                            ("application/pidf+xml", OPEN)
                        } else {
                            ("application/dialog-info+xml", IDLE)
                        };
                        let (_, c) = m.contacts().next().expect("SUBSCRIBE Contact");
                        let target = String::from_utf8_lossy(c.unwrap().uri).into_owned();
                        let notify = format!(
                            "NOTIFY {target} SIP/2.0\r\n\
Via: SIP/2.0/UDP {addr};branch=z9hG4bKstub{n};rport\r\n\
Max-Forwards: 70\r\n\
From: {};tag={tag}\r\n\
To: {}\r\n\
Call-ID: {}\r\n\
CSeq: 1 NOTIFY\r\n\
Contact: <sip:stub@{addr}>\r\n\
Event: {event}\r\n\
Subscription-State: active;expires=600\r\n\
Content-Type: {ct}\r\n\
Content-Length: {}\r\n\r\n{body}",
                            hv(&m, HeaderName::To),
                            hv(&m, HeaderName::From),
                            hv(&m, HeaderName::CallId),
                            body.len()
                        );
                        let _ = sock.send_to(notify.as_bytes(), from);
                    }
                    _ => {}
                }
            }
        });
        Stub {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<(SocketAddr, SipMessage)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything that reaches `sock` within `d` (answering NOTIFYs with 200).
fn collect(
    sock: &UdpSocket,
    d: Duration,
    until: impl Fn(&[SipMessage]) -> bool,
) -> Vec<SipMessage> {
    let deadline = Instant::now() + d;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline && !until(&got) {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])) else {
            continue;
        };
        if m.method() == Some(&Method::Notify) {
            let _ = sock.send_to(ok(&m, "x", "").as_bytes(), from);
        }
        got.push(m);
    }
    got
}

#[test]
fn phone_on_ipv6_loopback_registers_and_subscribes_through_a_bridge_on_ipv6() {
    if !e2e_ready("phone_on_ipv6_loopback_registers_and_subscribes_through_a_bridge_on_ipv6") {
        return;
    }
    let stub = Stub::start();
    let port = free_port();
    let bridge_addr = v6(port);
    let cfg = format!(
        "[listen]\nudp = \"[::1]:{port}\"\n\n\
         [upstream]\nproxy = \"{}\"\ndomain = \"pbx.test\"\ntransport = \"udp\"\nkeepalive = \"none\"\n\n\
         [[account]]\nuser = \"1001\"\npassword = \"pass1001\"\n",
        stub.addr
    );
    let bridge = Bridge::start(&cfg);
    assert_eq!(bridge.addr(), bridge_addr);

    let phone = UdpSocket::bind(v6(0)).unwrap();
    let me = phone.local_addr().unwrap();
    // REGISTER through the bridge
    let register = format!(
        "REGISTER sip:pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-v6reg-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=v6r\r\n\
To: <sip:1001@pbx.test>\r\n\
Call-ID: v6reg@phone\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:1001@{me}>\r\n\
Expires: 300\r\n\
Content-Length: 0\r\n\r\n"
    );
    phone.send_to(register.as_bytes(), bridge_addr).unwrap();
    let got = collect(&phone, Duration::from_secs(5), |g| {
        g.iter().any(|m| m.status() == Some(200))
    });
    assert!(
        got.iter()
            .any(|m| m.status() == Some(200) && hv(m, HeaderName::CallId) == "v6reg@phone"),
        "REGISTER answered: {got:?}\n{}",
        tail(&bridge.log(), 30)
    );
    let seen = stub.seen();
    let (from, reg) = seen
        .iter()
        .find(|(_, m)| m.method() == Some(&Method::Register))
        .expect("the REGISTER reached the upstream");
    assert_eq!(*from, bridge_addr, "sent from the bridge's [::1] socket");
    let top = reg.top_via().unwrap().unwrap();
    assert_eq!(top.sent_by(), ("[::1]", port), "the bridge's Via");
    assert!(
        hv(reg, HeaderName::Contact).contains("[::1]"),
        "{}",
        hv(reg, HeaderName::Contact)
    );

    // SUBSCRIBE (BLF) through the bridge: 200, then a NOTIFY rendered from what
    // the upstream stub said
    let subscribe = format!(
        "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-v6sub-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=v6s\r\n\
To: <sip:1002@pbx.test>\r\n\
Call-ID: v6sub@phone\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:1001@{me}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: Grandstream GXP2170 1.0.11.3\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n"
    );
    phone.send_to(subscribe.as_bytes(), bridge_addr).unwrap();
    let got = collect(&phone, Duration::from_secs(8), |g| {
        g.iter().any(|m| m.method() == Some(&Method::Notify))
    });
    let ok200 = got
        .iter()
        .find(|m| m.status() == Some(200) && hv(m, HeaderName::CallId) == "v6sub@phone")
        .unwrap_or_else(|| panic!("SUBSCRIBE answered: {got:?}\n{}", tail(&bridge.log(), 30)));
    assert!(hv(ok200, HeaderName::Contact).contains(&format!("[::1]:{port}")));
    let notify = got
        .iter()
        .find(|m| m.method() == Some(&Method::Notify))
        .unwrap_or_else(|| panic!("a NOTIFY: {got:?}\n{}", tail(&bridge.log(), 30)));
    let body = String::from_utf8_lossy(notify.body()).into_owned();
    assert!(body.contains("entity=\"sip:1002@pbx.test\""), "{body}");
    assert_eq!(
        notify.top_via().unwrap().unwrap().sent_by(),
        ("[::1]", port),
        "the bridge's Via on its NOTIFY"
    );
    // the upstream got the bridge's own subscriptions, over ::1
    let subs: Vec<_> = stub
        .seen()
        .into_iter()
        .filter(|(_, m)| m.method() == Some(&Method::Subscribe))
        .collect();
    assert!(subs.len() >= 2, "dialog and presence: {}", subs.len());
    for (from, s) in &subs {
        assert_eq!(*from, bridge_addr);
        assert_eq!(s.top_via().unwrap().unwrap().sent_by(), ("[::1]", port));
    }
}
