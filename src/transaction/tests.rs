//! Transaction layer tests on a simulated clock: a base `Instant` plus durations,
//! no sleeps, no sockets. Every transmission and event is recorded with the
//! simulated offset at which it happened, so schedules are asserted exactly.

use super::*;
use crate::flow::ConnId;
use crate::sip::reason_phrase;
use crate::util::Rng;
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

// ============================================================ non-INVITE client

#[test]
fn nict_udp_timer_e_doubles_to_t2_and_timer_f_times_out() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", OUR_VIA, "z9hG4bKnict1", 1);
    let key = s.send(peer_udp(), &text);
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Trying));
    s.run_until(ms(40_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ])
    );
    assert!(
        sent.iter()
            .all(|(_, t)| t.flow == peer_udp() && t.data == text.as_bytes())
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key.clone()))),
        ]
    );
    assert_eq!(s.layer.client_state(&key), None);
    assert_eq!(s.layer.len(), (0, 0));
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn nict_udp_proceeding_retransmits_every_t2() {
    let mut s = Sim::new();
    let text = request("NOTIFY", OUR_VIA, "z9hG4bKnict2", 2);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(600));
    assert_eq!(
        s.on_response(&response(&text, 100, "")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Proceeding));
    s.run_until(ms(40_000));
    // E at 1.5 s was already set; from then on every T2 until F.
    assert_eq!(
        times(&s.take_sent()),
        ms_list(&[0, 500, 1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500])
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key))),
        ]
    );
}

#[test]
fn nict_custom_timers_scale_e_and_f() {
    let mut s = Sim::with(Timers {
        t1: ms(100),
        t2: ms(400),
        t4: ms(1000),
    });
    let key = s.send(peer_udp(), &request("OPTIONS", OUR_VIA, "z9hG4bKnict3", 1));
    s.run_until(ms(10_000));
    assert_eq!(
        times(&s.take_sent()),
        ms_list(&[
            0, 100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100,
            5500, 5900, 6300
        ])
    );
    assert_eq!(s.take_events()[0], (ms(6400), TxEvent::Timeout(key)));
}

#[test]
fn nict_udp_final_response_completes_and_timer_k_absorbs() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", OUR_VIA, "z9hG4bKnict4", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(2000));
    let ok = response(&text, 200, "t1");
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Completed));
    // K is the only deadline left (not the stale E or F).
    assert_eq!(s.layer.poll_timeout(), Some(s.t0 + ms(7000)));
    s.run_until(ms(3000));
    assert_eq!(s.on_response(&ok), ResponseDisposition::Absorbed);
    assert_eq!(
        s.on_response(&response(&text, 100, "")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(40_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500, 1500]));
    assert_eq!(
        s.take_events(),
        vec![(ms(7000), TxEvent::Terminated(TxKey::Client(key.clone())))]
    );
    assert_eq!(s.on_response(&ok), ResponseDisposition::Stray);
}

#[test]
fn nict_tcp_never_retransmits_f_still_runs_k_is_zero() {
    let mut s = Sim::new();
    let a = s.send(peer_tcp(), &request("SUBSCRIBE", OUR_VIA, "z9hG4bKtcp1", 1));
    let text_b = request("NOTIFY", OUR_VIA, "z9hG4bKtcp2", 1);
    let b = s.send(peer_tcp(), &text_b);
    s.run_until(ms(1000));
    assert_eq!(
        s.on_response(&response(&text_b, 200, "t")),
        ResponseDisposition::PassUp(b.clone())
    );
    // Timer K = 0: gone at once.
    assert_eq!(s.layer.client_state(&b), None);
    assert_eq!(
        s.take_events(),
        vec![(ms(1000), TxEvent::Terminated(TxKey::Client(b)))]
    );
    s.run_until(ms(40_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[0, 0]));
    assert!(sent.iter().all(|(_, t)| t.flow == peer_tcp()));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(a.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(a))),
        ]
    );
}

#[test]
fn late_handle_timeout_does_not_burst() {
    let mut s = Sim::new();
    s.send(peer_udp(), &request("OPTIONS", OUR_VIA, "z9hG4bKlate", 1));
    s.take_sent();
    // The runtime oversleeps: three retransmissions were due by 4 s.
    s.now = s.t0 + ms(4000);
    s.layer.handle_timeout(s.now);
    s.drain();
    assert_eq!(s.take_sent().len(), 1);
    // The schedule continues from the late instant, not from the missed ones.
    assert_eq!(s.layer.poll_timeout(), Some(s.t0 + ms(5000)));
}

// ================================================================ INVITE client

#[test]
fn ict_udp_timer_a_doubles_without_cap_and_timer_b_times_out() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict1", 1);
    let key = s.send(peer_udp(), &text);
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Calling));
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[0, 500, 1500, 3500, 7500, 15500, 31500])
    );
    assert!(sent.iter().all(|(_, t)| t.data == text.as_bytes()));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key))),
        ]
    );
}

#[test]
fn ict_tcp_never_retransmits_and_timer_b_times_out() {
    let mut s = Sim::new();
    let key = s.send(peer_tcp(), &request("INVITE", OUR_VIA, "z9hG4bKict2", 1));
    s.run_until(ms(60_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0]));
    assert_eq!(s.take_events()[0], (ms(32_000), TxEvent::Timeout(key)));
}

#[test]
fn ict_provisional_stops_timer_a_and_b_then_non2xx_acked_until_timer_d() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict3", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(1000));
    assert_eq!(
        s.on_response(&response(&text, 180, "callee")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Proceeding));
    assert_eq!(s.layer.poll_timeout(), None);
    s.run_until(ms(100_000));
    assert!(s.take_events().is_empty(), "no Timer B once Proceeding");
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500]));

    let busy = response(&text, 486, "callee");
    assert_eq!(
        s.on_response(&busy),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Completed));
    s.run_until(ms(101_000));
    assert_eq!(s.on_response(&busy), ResponseDisposition::Absorbed);
    s.run_until(ms(101_500));
    assert_eq!(s.on_response(&busy), ResponseDisposition::Absorbed);
    // A 2xx after a non-2xx is not ours to pass up.
    assert_eq!(
        s.on_response(&response(&text, 200, "callee")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(200_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[100_000, 101_000, 101_500]));
    let first_ack = sent[0].1.data.clone();
    assert!(first_ack.starts_with(b"ACK "));
    assert!(
        sent.iter()
            .all(|(_, t)| t.data == first_ack && t.flow == peer_udp())
    );
    // Timer D = 32 s after the final response.
    assert_eq!(
        s.take_events(),
        vec![(ms(132_000), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&busy), ResponseDisposition::Stray);
}

#[test]
fn ict_non2xx_ack_has_exactly_the_rfc3261_headers() {
    let mut s = Sim::new();
    // As a proxy would forward it: our Via on top of the phone's, a route set,
    // a decremented Max-Forwards, a Contact and a body.
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\n";
    let invite = format!(
        "INVITE sip:1002@127.0.0.2:5080;transport=udp SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1;rport\r\n\
         Via: SIP/2.0/UDP 127.0.0.5:5062;branch=z9hG4bKphone;received=127.0.0.5;rport=5062\r\n\
         Max-Forwards: 69\r\n\
         Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
         Record-Route: <sip:127.0.0.1;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\n\
         From: \"Alice\" <sip:1001@example.com>;tag=from-1\r\n\
         To: <sip:1002@example.com>\r\n\
         Call-ID: call-ack-1@example.com\r\n\
         CSeq: 314 INVITE\r\n\
         Contact: <sip:1001@127.0.0.5:5062>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let key = s.send(peer_udp(), &invite);
    s.take_sent();
    let busy = response(&invite, 486, "callee-tag");
    assert_eq!(s.on_response(&busy), ResponseDisposition::PassUp(key));
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, peer_udp());
    let expected = "ACK sip:1002@127.0.0.2:5080;transport=udp SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\n\
         From: \"Alice\" <sip:1001@example.com>;tag=from-1\r\n\
         To: <sip:1002@example.com>;tag=callee-tag\r\n\
         Call-ID: call-ack-1@example.com\r\n\
         CSeq: 314 ACK\r\n\
         Content-Length: 0\r\n\r\n";
    assert_eq!(
        String::from_utf8_lossy(&sent[0].1.data),
        expected,
        "ACK for a non-2xx"
    );
    let ack = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(crate::sip::validate::check_request(&ack), Ok(()));
    assert_eq!(ack.values(HeaderName::Via).count(), 1);
}

#[test]
fn ict_end_to_end_ack_is_absorbed_by_the_server_layer() {
    // Our client layer talks to a second layer acting as the UAS.
    let mut uac = Sim::new();
    let mut uas = Sim::new();
    let key = uac.send(peer_udp(), &request("INVITE", OUR_VIA, "z9hG4bKe2e", 5));
    let invite = SipMessage::parse(uac.take_sent()[0].1.data.clone()).unwrap();
    let skey = new_key(
        uas.layer
            .on_request(&invite, phone_udp(), phone_udp(), uas.now),
    );
    uas.drain();
    let trying = SipMessage::parse(uas.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(
        uac.on_response(&trying),
        ResponseDisposition::PassUp(key.clone())
    );
    let busy = MessageBuilder::response_to(&invite, 486, "Busy Here", Some("uas-tag")).finish();
    uas.respond(&skey, busy).unwrap();
    let busy = SipMessage::parse(uas.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(uac.on_response(&busy), ResponseDisposition::PassUp(key));
    let ack = SipMessage::parse(uac.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(
        uas.layer
            .on_request(&ack, phone_udp(), phone_udp(), uas.now),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(uas.layer.server_state(&skey), Some(ServerState::Confirmed));
}

#[test]
fn ict_2xx_accepted_passes_up_every_2xx_until_timer_m() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict4", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(1000));
    let ok = response(&text, 200, "callee");
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Accepted));
    s.run_until(ms(2000));
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    // A forked 2xx (another To tag) is passed up too.
    assert_eq!(
        s.on_response(&response(&text, 200, "fork-2")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(
        s.on_response(&response(&text, 180, "callee")),
        ResponseDisposition::Absorbed
    );
    assert_eq!(
        s.on_response(&response(&text, 486, "callee")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(60_000));
    // No ACK from the layer for a 2xx, no retransmission after it.
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500]));
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&ok), ResponseDisposition::Stray);
}

#[test]
fn ict_tcp_non2xx_ack_sent_and_timer_d_zero() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict5", 1);
    let key = s.send(peer_tcp(), &text);
    s.take_sent();
    let busy = response(&text, 603, "callee");
    assert_eq!(
        s.on_response(&busy),
        ResponseDisposition::PassUp(key.clone())
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .1
            .data
            .starts_with(b"ACK sip:1002@127.0.0.2:5080 SIP/2.0\r\n")
    );
    assert_eq!(sent[0].1.flow, peer_tcp());
    assert_eq!(
        s.take_events(),
        vec![(ms(0), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&busy), ResponseDisposition::Stray);
}

#[test]
fn client_matching_uses_branch_and_cseq_method() {
    let mut s = Sim::new();
    let invite = request("INVITE", OUR_VIA, "z9hG4bKsame", 1);
    let cancel = request("CANCEL", OUR_VIA, "z9hG4bKsame", 1);
    let ik = s.send(peer_udp(), &invite);
    let ck = s.send(peer_udp(), &cancel);
    assert_ne!(ik, ck);
    assert_eq!(ck.method(), &Method::Cancel);
    assert_eq!(ck.branch(), b"z9hG4bKsame");
    assert_eq!(
        s.on_response(&response(&cancel, 200, "x")),
        ResponseDisposition::PassUp(ck.clone())
    );
    assert_eq!(s.layer.client_state(&ik), Some(ClientState::Calling));
    assert_eq!(s.layer.client_state(&ck), Some(ClientState::Completed));
    assert_eq!(
        s.on_response(&response(&invite, 487, "x")),
        ResponseDisposition::PassUp(ik.clone())
    );
    assert_eq!(s.layer.client_state(&ik), Some(ClientState::Completed));
    // Same branch, a method we have no transaction for; other branch.
    assert_eq!(
        s.on_response(&response(
            &request("OPTIONS", OUR_VIA, "z9hG4bKsame", 1),
            200,
            "x"
        )),
        ResponseDisposition::Stray
    );
    assert_eq!(
        s.on_response(&response(
            &request("INVITE", OUR_VIA, "z9hG4bKother", 1),
            200,
            "x"
        )),
        ResponseDisposition::Stray
    );
}

#[test]
fn send_request_rejects_what_cannot_be_a_client_transaction() {
    let mut s = Sim::new();
    let now = s.now;
    let mut send = |text: &str| {
        s.layer
            .send_request(peer_udp(), Bytes::copy_from_slice(text.as_bytes()), now)
    };
    assert_eq!(
        send(&ack(OUR_VIA, "z9hG4bKa", 1, "t")),
        Err(TxError::AckIsNotATransaction)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "1234", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "z9hG4bK", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(
            &request("OPTIONS", OUR_VIA, "z9hG4bKok", 1).replace("CSeq: 1 OPTIONS", "CSeq: 1 INFO")
        ),
        Err(TxError::CSeqMismatch)
    );
    assert_eq!(
        send("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nCSeq: 1 OPTIONS\r\n\r\n"),
        Err(TxError::NotARequest)
    );
    assert_eq!(send("\r\n\r\n"), Err(TxError::Unparsable));
    let first = send(&request("OPTIONS", OUR_VIA, "z9hG4bKdup", 1));
    assert!(first.is_ok());
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "z9hG4bKdup", 2)),
        Err(TxError::DuplicateTransaction)
    );

    assert_eq!(s.layer.len(), (1, 0));
    s.drain();
    assert_eq!(s.take_sent().len(), 1);
}

// ============================================================ non-INVITE server

#[test]
fn nist_udp_retransmission_answered_byte_identically_until_timer_j() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKnist1", 7);
    let key = new_key(s.on_request(&text));
    assert_eq!(key.method(), &Method::Subscribe);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.run_until(ms(500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    assert!(s.take_sent().is_empty(), "nothing to answer with yet");

    s.run_until(ms(1000));
    let ok = MessageBuilder::response_to(&parse(&text), 200, "OK", Some("srv"))
        .header("Expires", 600)
        .header("Contact", "<sip:127.0.0.1:5060>")
        .finish();
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Completed));
    s.run_until(ms(1500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(31_500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[1000, 1500, 31_500]));
    for (_, t) in &sent {
        assert_eq!(t.data, ok, "answered byte-identically from the store");
        assert_eq!(t.flow, phone_reply_udp());
    }
    s.run_until(ms(60_000));
    // Timer J = 64·T1 after the final response; no retransmission of our own.
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Server(key.clone())))]
    );
    assert!(s.take_sent().is_empty());
    assert_eq!(
        s.layer.respond(&key, ok, s.now),
        Err(TxError::NoTransaction)
    );
    assert!(matches!(s.on_request(&text), RequestDisposition::New(_)));
}

#[test]
fn nist_tcp_timer_j_is_zero() {
    let mut s = Sim::new();
    let text = request("NOTIFY", PHONE_VIA, "z9hG4bKnist2", 3);
    let key = new_key(s.on_request_from(&text, phone_tcp(), phone_tcp()));
    s.respond(&key, response_bytes(&text, 200, "x")).unwrap();
    assert_eq!(s.layer.server_state(&key), None);
    assert_eq!(
        s.take_events(),
        vec![(ms(0), TxEvent::Terminated(TxKey::Server(key)))]
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, phone_tcp());
    assert_eq!(s.layer.len(), (0, 0));
}

#[test]
fn nist_late_100_only_after_t2_rfc4320() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKlate100", 1).replace(
        "Content-Length: 0\r\n",
        "Timestamp: 54\r\nContent-Length: 0\r\n",
    );
    let key = new_key(s.on_request(&text));
    // The client's E schedule: 0.5, 1.5, 3.5 are all before T2.
    for at in [500, 1500, 3500, 3999] {
        s.run_until(ms(at));
        assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    }
    assert!(s.take_sent().is_empty(), "no 100 before T2");
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.run_until(ms(4000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
    s.run_until(ms(8000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[4000, 8000]));
    assert_eq!(sent[0].1.data, sent[1].1.data);
    let trying = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.branch(), Some(&b"z9hG4bKlate100"[..]));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.cseq().unwrap().unwrap().seq, 1);
    assert_eq!(trying.header_value_by_name("Timestamp"), Some(&b"54"[..]));
    assert_eq!(sent[0].1.flow, phone_reply_udp());
    // The final response replaces the 100 in the store.
    let ok = response_bytes(&text, 200, "srv");
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(_, t)| t.data == ok));
}

#[test]
fn nist_tu_may_not_send_provisionals_or_408() {
    let mut s = Sim::new();
    let text = request("OPTIONS", PHONE_VIA, "z9hG4bKno1xx", 1);
    let key = new_key(s.on_request(&text));
    for code in [100, 180, 183] {
        assert_eq!(
            s.respond(&key, response_bytes(&text, code, "t")),
            Err(TxError::ProvisionalToNonInvite)
        );
    }
    assert_eq!(
        s.respond(&key, response_bytes(&text, 408, "t")),
        Err(TxError::Timeout408ToNonInvite)
    );
    assert_eq!(
        s.respond(&key, Bytes::from_static(b"SIP/2.0 99 Odd\r\n\r\n")),
        Err(TxError::NotAResponse)
    );
    assert_eq!(
        s.respond(&key, Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n")),
        Err(TxError::NotAResponse)
    );
    assert!(s.take_sent().is_empty());
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.respond(&key, response_bytes(&text, 404, "t")).unwrap();
    assert_eq!(
        s.respond(&key, response_bytes(&text, 200, "t")),
        Err(TxError::AlreadyFinal)
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].1), Some(404));
}

#[test]
fn no_408_is_ever_generated() {
    let mut s = Sim::new();
    // A non-INVITE the TU never answers, retransmitted on the client's E schedule.
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKnever", 1);
    let nist = new_key(s.on_request(&text));
    // An INVITE the TU never answers.
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKneverinv", 1);
    let ist = new_key(s.on_request(&inv));
    // Our own requests that never get an answer.
    let nict = s.send(
        peer_udp(),
        &request("NOTIFY", OUR_VIA, "z9hG4bKnoanswer", 1),
    );
    let ict = s.send(
        peer_udp(),
        &request("INVITE", OUR_VIA, "z9hG4bKnoanswer", 1),
    );
    for at in [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ] {
        s.run_until(ms(at));
        assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
        assert_eq!(s.on_request(&inv), RequestDisposition::Retransmission);
    }
    s.run_until(ms(100_000));
    let sent = s.take_sent();
    for (_, t) in &sent {
        assert!(
            t.data.starts_with(b"SIP/2.0 100 ")
                || t.data.starts_with(b"SUBSCRIBE ")
                || t.data.starts_with(b"NOTIFY ")
                || t.data.starts_with(b"INVITE "),
            "unexpected transmission {:?}",
            String::from_utf8_lossy(&t.data)
        );
        assert!(!t.data.starts_with(b"SIP/2.0 408"));
    }
    // Only the late 100 (from 7.5 s) for the non-INVITE, the 100 for the INVITE
    // at once and on every retransmission.
    let to_phone: Vec<_> = sent
        .iter()
        .filter(|(_, t)| t.flow == phone_reply_udp())
        .map(|(d, t)| (*d, status_of(t).unwrap()))
        .collect();
    assert_eq!(
        to_phone.iter().filter(|(_, c)| *c == 100).count(),
        to_phone.len()
    );
    assert_eq!(to_phone.len(), 1 + 10 + 7);
    let events = s.take_events();
    // The unanswered non-INVITE is dropped silently 64·T1 after it arrived.
    assert!(events.contains(&(ms(32_000), TxEvent::Terminated(TxKey::Server(nist)))));
    assert!(events.contains(&(ms(32_000), TxEvent::Timeout(nict))));
    assert!(events.contains(&(ms(32_000), TxEvent::Timeout(ict))));
    // The INVITE server transaction waits for its TU (Timer C is the TU's).
    assert_eq!(s.layer.server_state(&ist), Some(ServerState::Proceeding));
    assert!(s.layer.terminate_server(&ist));
    assert!(s.layer.is_empty());
}

// ================================================================ INVITE server

#[test]
fn ist_sends_100_at_once_and_resends_the_last_provisional() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist1", 1).replace(
        "Content-Length: 0\r\n",
        "Timestamp: 1.5\r\nContent-Length: 0\r\n",
    );
    let key = new_key(s.on_request(&text));
    assert_eq!(key.method(), &Method::Invite);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, phone_reply_udp());
    let trying = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.branch(), Some(&b"z9hG4bKist1"[..]));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.from_tag(), Some(&b"f1"[..]));
    assert_eq!(trying.call_id(), Some(&b"c1@example.com"[..]));
    assert_eq!(
        trying.header_value(HeaderName::CSeq),
        Some(&b"1 INVITE"[..])
    );
    assert_eq!(trying.header_value_by_name("Timestamp"), Some(&b"1.5"[..]));

    s.run_until(ms(500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let again = s.take_sent();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.data, sent[0].1.data);

    s.run_until(ms(1000));
    let ringing = response_bytes(&text, 180, "uas");
    s.respond(&key, ringing.clone()).unwrap();
    s.run_until(ms(1500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[1000, 1500]));
    assert!(sent.iter().all(|(_, t)| t.data == ringing));
    // No timer runs in Proceeding.
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn ist_udp_timer_g_retransmits_until_timer_h() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist2", 1);
    let key = new_key(s.on_request(&text));
    s.take_sent();
    s.run_until(ms(1000));
    let busy = response_bytes(&text, 486, "uas");
    s.respond(&key, busy.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Completed));
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[
            1000, 1500, 2500, 4500, 8500, 12500, 16500, 20500, 24500, 28500, 32500
        ])
    );
    assert!(
        sent.iter()
            .all(|(_, t)| t.data == busy && t.flow == phone_reply_udp())
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(33_000), TxEvent::AckTimeout(key.clone())),
            (ms(33_000), TxEvent::Terminated(TxKey::Server(key))),
        ]
    );
}

#[test]
fn ist_ack_confirms_stops_g_and_timer_i_ends_it() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist3", 4);
    let key = new_key(s.on_request(&text));
    s.run_until(ms(1000));
    let busy = response_bytes(&text, 486, "uas");
    s.respond(&key, busy.clone()).unwrap();
    s.run_until(ms(1200));
    // An INVITE retransmission in Completed gets the final response again.
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(2000));
    let ack_text = ack(PHONE_VIA, "z9hG4bKist3", 4, "uas");
    assert_eq!(s.on_request(&ack_text), RequestDisposition::AckAbsorbed);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Confirmed));
    s.run_until(ms(3000));
    assert_eq!(s.on_request(&ack_text), RequestDisposition::AckAbsorbed);
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[0, 1000, 1200, 1500]));
    assert!(sent[1..].iter().all(|(_, t)| t.data == busy));
    // Timer I = T4 after the ACK; no Timer H.
    assert_eq!(
        s.take_events(),
        vec![(ms(7000), TxEvent::Terminated(TxKey::Server(key)))]
    );
    // Once gone, the ACK is the TU's to route (stray).
    assert_eq!(s.on_request(&ack_text), RequestDisposition::Ack);
}

#[test]
fn ist_tcp_no_timer_g_timer_h_runs_and_timer_i_is_zero() {
    let mut s = Sim::new();
    let a = request("INVITE", PHONE_VIA, "z9hG4bKtcpA", 1);
    let b = request("INVITE", PHONE_VIA, "z9hG4bKtcpB", 1);
    let ka = new_key(s.on_request_from(&a, phone_tcp(), phone_tcp()));
    let kb = new_key(s.on_request_from(&b, phone_tcp(), phone_tcp()));
    s.run_until(ms(1000));
    s.respond(&ka, response_bytes(&a, 500, "x")).unwrap();
    s.respond(&kb, response_bytes(&b, 480, "y")).unwrap();
    assert_eq!(
        s.on_request_from(
            &ack(PHONE_VIA, "z9hG4bKtcpB", 1, "y"),
            phone_tcp(),
            phone_tcp()
        ),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(s.layer.server_state(&kb), None);
    s.run_until(ms(60_000));
    // Two 100s at 0, two finals at 1 s, no retransmission.
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 0, 1000, 1000]));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(1000), TxEvent::Terminated(TxKey::Server(kb))),
            (ms(33_000), TxEvent::AckTimeout(ka.clone())),
            (ms(33_000), TxEvent::Terminated(TxKey::Server(ka))),
        ]
    );
}

#[test]
fn ist_2xx_accepted_absorbs_retransmissions_passes_acks_until_timer_l() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist4", 1);
    let key = new_key(s.on_request(&text));
    s.run_until(ms(1000));
    let ok = response_bytes(&text, 200, "uas");
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Accepted));
    s.run_until(ms(2000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    // The 2xx ACK (own branch, as RFC 3261 wants) and a broken one reusing the
    // INVITE's branch both go to the TU.
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKack2xx", 1, "uas")),
        RequestDisposition::Ack
    );
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKist4", 1, "uas")),
        RequestDisposition::Ack
    );
    // The TU's own 2xx retransmission goes out; a non-2xx does not.
    s.run_until(ms(3000));
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(
        s.respond(&key, response_bytes(&text, 486, "uas")),
        Err(TxError::AlreadyFinal)
    );
    s.run_until(ms(60_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 1000, 3000]));
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Server(key.clone())))]
    );
    assert_eq!(s.respond(&key, ok), Err(TxError::NoTransaction));
}

#[test]
fn ack_before_any_final_is_passed_to_the_tu() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKearly", 1);
    let key = new_key(s.on_request(&text));
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKearly", 1, "x")),
        RequestDisposition::Ack
    );
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
}

// ===================================================================== matching

#[test]
fn server_matching_uses_branch_sent_by_and_method() {
    let mut s = Sim::new();
    let inv = |via: &str| request("INVITE", via, "z9hG4bKm1", 1);
    let k = new_key(s.on_request(&inv("SIP/2.0/UDP pc33.example.com")));
    // Host case-insensitive, port defaulted to 5060, branch case-insensitive.
    assert_eq!(
        s.on_request(&inv("SIP/2.0/UDP PC33.Example.COM:5060")),
        RequestDisposition::Retransmission
    );
    assert_eq!(
        s.on_request(&request(
            "INVITE",
            "SIP/2.0/UDP pc33.example.com",
            "Z9HG4BKM1",
            1
        )),
        RequestDisposition::Retransmission
    );
    // Other sent-by: another transaction.
    let other_port = new_key(s.on_request(&inv("SIP/2.0/UDP pc33.example.com:5070")));
    let other_host = new_key(s.on_request(&inv("SIP/2.0/UDP pc34.example.com")));
    assert_ne!(other_port, k);
    assert_ne!(other_host, k);
    // Same branch, other method: another transaction.
    let c = new_key(s.on_request(&request(
        "CANCEL",
        "SIP/2.0/UDP pc33.example.com",
        "z9hG4bKm1",
        1,
    )));
    let o = new_key(s.on_request(&request(
        "OPTIONS",
        "SIP/2.0/UDP pc33.example.com",
        "z9hG4bKm1",
        1,
    )));
    assert_ne!(c, k);
    assert_ne!(o, k);
    assert_eq!(c.method(), &Method::Cancel);
    assert!(!k.is_legacy());
    // TLS defaults to 5061.
    let t = new_key(s.on_request(&request(
        "INVITE",
        "SIP/2.0/TLS tls.example.com",
        "z9hG4bKm2",
        1,
    )));
    assert_eq!(
        s.on_request(&request(
            "INVITE",
            "SIP/2.0/TLS tls.example.com:5061",
            "z9hG4bKm2",
            1
        )),
        RequestDisposition::Retransmission
    );
    assert!(matches!(
        s.on_request(&request("INVITE", "SIP/2.0/TLS tls.example.com:5060", "z9hG4bKm2", 1)),
        RequestDisposition::New(x) if x != t
    ));
    // An ACK matches its INVITE (and only with the same sent-by).
    s.respond(
        &k,
        response_bytes(&inv("SIP/2.0/UDP pc33.example.com"), 404, "u"),
    )
    .unwrap();
    assert_eq!(
        s.on_request(&ack(
            "SIP/2.0/UDP pc33.example.com:5070",
            "z9hG4bKm1",
            1,
            "u"
        )),
        RequestDisposition::Ack
    );
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
    assert_eq!(
        s.on_request(&ack("SIP/2.0/UDP pc33.example.com", "z9hG4bKm1", 1, "u")),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Confirmed));
    assert_eq!(s.layer.len(), (0, 7));
}

#[test]
fn cancel_finds_its_invite() {
    let mut s = Sim::new();
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKc1", 1);
    let k = new_key(s.on_request(&inv));
    let cancel = request("CANCEL", PHONE_VIA, "z9hG4bKc1", 1);
    let ck = new_key(s.on_request(&cancel));
    assert_ne!(ck, k);
    assert_eq!(
        s.layer.find_invite_for_cancel(&parse(&cancel)),
        Some(k.clone())
    );
    // Another branch, another sent-by, not a CANCEL: nothing.
    assert_eq!(
        s.layer
            .find_invite_for_cancel(&parse(&request("CANCEL", PHONE_VIA, "z9hG4bKc2", 1))),
        None
    );
    assert_eq!(
        s.layer.find_invite_for_cancel(&parse(&request(
            "CANCEL",
            "SIP/2.0/UDP 127.0.0.6:5062",
            "z9hG4bKc1",
            1
        ))),
        None
    );
    assert_eq!(s.layer.find_invite_for_cancel(&parse(&inv)), None);
    // The TU answers the CANCEL and the INVITE.
    s.respond(&ck, response_bytes(&cancel, 200, "u")).unwrap();
    s.respond(&k, response_bytes(&inv, 487, "u")).unwrap();
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
    assert_eq!(s.layer.server_state(&ck), Some(ServerState::Completed));
    s.run_until(ms(60_000));
    assert_eq!(s.layer.find_invite_for_cancel(&parse(&cancel)), None);
}

#[test]
fn rfc2543_peers_are_matched_field_by_field() {
    let mut s = Sim::new();
    let via = "SIP/2.0/UDP 127.0.0.9:5060";
    for branch in ["", "old-style-1"] {
        let inv = request("INVITE", via, branch, 10);
        let k = new_key(s.on_request(&inv));
        assert!(k.is_legacy());
        s.take_sent();
        assert_eq!(s.on_request(&inv), RequestDisposition::Retransmission);
        assert_eq!(s.take_sent().len(), 1, "100 re-sent");
        // Any differing field makes another transaction.
        for variant in [
            inv.replace("tag=f1", "tag=f2"),
            inv.replace("CSeq: 10 INVITE", "CSeq: 11 INVITE"),
            inv.replace("Call-ID: c1@", "Call-ID: c2@"),
            inv.replace("INVITE sip:1002@", "INVITE sip:1003@"),
            inv.replace("127.0.0.9:5060", "127.0.0.9:5070"),
            inv.replace(
                "To: <sip:1002@example.com>",
                "To: <sip:1002@example.com>;tag=dlg",
            ),
        ] {
            let v = new_key(s.on_request(&variant));
            assert_ne!(v, k);
            assert!(s.layer.terminate_server(&v));
        }
        // CANCEL: its own transaction, and it finds the INVITE.
        let cancel = request("CANCEL", via, branch, 10);
        let ck = new_key(s.on_request(&cancel));
        assert_ne!(ck, k);
        assert_eq!(
            s.layer.find_invite_for_cancel(&parse(&cancel)),
            Some(k.clone())
        );
        // ACK for our non-2xx: the To tag is the one of our response.
        s.respond(&k, response_bytes(&inv, 486, "uas-tag")).unwrap();
        assert_eq!(
            s.on_request(&ack(via, branch, 10, "wrong-tag")),
            RequestDisposition::Ack
        );
        assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
        assert_eq!(
            s.on_request(&ack(via, branch, 10, "uas-tag")),
            RequestDisposition::AckAbsorbed
        );
        assert_eq!(s.layer.server_state(&k), Some(ServerState::Confirmed));
        assert!(s.layer.terminate_server(&k));
        assert!(s.layer.terminate_server(&ck));
    }
    // A re-INVITE (To tag already set) is acked with the same To tag.
    let reinv = request("INVITE", via, "", 20).replace(
        "To: <sip:1002@example.com>",
        "To: <sip:1002@example.com>;tag=dlg",
    );
    let k = new_key(s.on_request(&reinv));
    s.respond(&k, response_bytes(&reinv, 491, "ignored"))
        .unwrap();
    assert_eq!(
        s.on_request(&ack(via, "", 20, "dlg")),
        RequestDisposition::AckAbsorbed
    );
}

// ============================================================ robustness, misc

#[test]
fn unusable_messages_are_reported_not_matched() {
    let mut s = Sim::new();
    let no_via =
        "OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(no_via), RequestDisposition::Malformed);
    assert_eq!(
        s.on_request(&no_via.replace("OPTIONS", "ACK")),
        RequestDisposition::Malformed
    );
    let bad_via =
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(bad_via), RequestDisposition::Malformed);
    // Legacy match needs CSeq and Call-ID.
    let no_cseq =
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(no_cseq), RequestDisposition::Malformed);
    let resp_no_via = parse("SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(s.on_response(&resp_no_via), ResponseDisposition::Stray);
    assert_eq!(s.on_response(&parse(no_via)), ResponseDisposition::Stray);
    assert!(s.take_sent().is_empty());
    assert!(s.layer.is_empty());
}

#[test]
fn malformed_input_never_panics() {
    let mut s = Sim::new();
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKfz1", 1);
    let sub = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKfz2", 1);
    let ours = request("INVITE", OUR_VIA, "z9hG4bKfz3", 1);
    let legacy = request("INVITE", "SIP/2.0/UDP 127.0.0.9", "", 3);
    let ki = new_key(s.on_request(&inv));
    new_key(s.on_request(&sub));
    let kl = new_key(s.on_request(&legacy));
    s.respond(&kl, response_bytes(&legacy, 603, "t")).unwrap();
    s.send(peer_udp(), &ours);
    s.send(peer_udp(), &request("NOTIFY", OUR_VIA, "z9hG4bKfz4", 1));
    s.respond(&ki, response_bytes(&inv, 486, "t")).unwrap();
    let seeds: Vec<Vec<u8>> = vec![
        inv.clone().into_bytes(),
        sub.clone().into_bytes(),
        legacy.clone().into_bytes(),
        ack(PHONE_VIA, "z9hG4bKfz1", 1, "t").into_bytes(),
        request("CANCEL", PHONE_VIA, "z9hG4bKfz1", 1).into_bytes(),
        response_bytes(&ours, 180, "x").to_vec(),
        response_bytes(&ours, 486, "x").to_vec(),
        response_bytes(&request("NOTIFY", OUR_VIA, "z9hG4bKfz4", 1), 200, "x").to_vec(),
    ];
    let mut rng = Rng::seeded(4475);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in &seeds {
        for cut in 0..seed.len() {
            inputs.push(seed[..cut].to_vec());
        }
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len() as u64) as usize;
                let junk = [
                    0u8, b'\r', b'\n', b' ', b';', b':', b',', b'=', b'"', b'<', 0xff, b'z', b'9',
                ];
                m[i] = junk[rng.below(junk.len() as u64) as usize];
            }
            inputs.push(m);
        }
    }
    let mut step = 0u64;
    for input in inputs {
        step += 1;
        let now = s.now + ms(step % 7);
        s.now = now;
        let bytes = Bytes::from(input);
        if let Ok(msg) = SipMessage::parse(bytes.clone()) {
            if msg.is_request() {
                let d = s.layer.on_request(&msg, phone_udp(), phone_udp(), now);
                if let RequestDisposition::New(k) = d {
                    let _ = s.layer.respond(&k, bytes.clone(), now);
                    let _ = s.layer.respond(&k, response_bytes(&inv, 500, "z"), now);
                }
                let _ = s.layer.find_invite_for_cancel(&msg);
            } else {
                let _ = s.layer.on_response(&msg, now);
            }
        }
        let _ = s.layer.send_request(peer_udp(), bytes.clone(), now);
        let _ = s.layer.respond(&ki, bytes, now);
        s.layer.handle_timeout(now);
        s.drain();
    }
    s.run_until(s.elapsed() + ms(200_000));
    assert!(s.layer.is_empty(), "{:?}", s.layer.len());
    assert_eq!(s.layer.poll_timeout(), None);
    // Still works afterwards.
    let k = new_key(s.on_request(&inv));
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Proceeding));
}

#[test]
fn status_line_reader() {
    assert_eq!(status_code(b"SIP/2.0 200 OK\r\n"), Some(200));
    assert_eq!(status_code(b"sip/2.0 486\r\n"), Some(486));
    assert_eq!(status_code(b"SIP/2.0 699"), Some(699));
    for bad in [
        &b"SIP/2.0 2000 OK\r\n"[..],
        b"SIP/2.0 099 x\r\n",
        b"SIP/2.0 700 x\r\n",
        b"SIP/2.0 20 OK",
        b"SIP/3.0 200 OK",
        b"INVITE sip:a SIP/2.0",
        b"",
    ] {
        assert_eq!(status_code(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn dead_timer_entries_do_not_accumulate() {
    let mut s = Sim::new();
    // Thousands of transactions answered at once leave their E and F entries
    // dead in the heap; the heap is rebuilt instead of growing without bound.
    for i in 0..5000 {
        let text = request("OPTIONS", OUR_VIA, &format!("z9hG4bKmany{i}"), 1);
        s.send(peer_tcp(), &text);
        s.on_response(&response(&text, 200, "x"));
    }
    assert_eq!(s.layer.len(), (0, 0));
    assert!(
        s.layer.queue.heap.len() <= 1025,
        "{}",
        s.layer.queue.heap.len()
    );
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn timers_default_to_rfc3261_values() {
    let t = Timers::default();
    assert_eq!((t.t1, t.t2, t.t4), (ms(500), ms(4000), ms(5000)));
    assert_eq!(t.t1x64(), ms(32_000));
    assert_eq!(t.timer_d(), ms(32_000));
    let slow = Timers {
        t1: ms(1000),
        ..Timers::default()
    };
    assert_eq!(slow.timer_d(), ms(64_000));
    let zero = TransactionLayer::new(Timers {
        t1: Duration::ZERO,
        t2: Duration::ZERO,
        t4: Duration::ZERO,
    });
    assert!(zero.timers().t1 > Duration::ZERO);
}
