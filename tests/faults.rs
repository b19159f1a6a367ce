//! Faults on the phone side, sans-IO: a phone that stops answering NOTIFYs in the
//! middle of its subscription is dropped after Timer F (64·T1 = 32 s) and not
//! before, one that answers 481 is dropped at once; in both cases the other
//! phones watching the same target are not affected. (A lossy network between
//! real processes is `tests/faults_e2e.rs`.)

mod sim;

use blf_bridge::presence::{DialogState, parse_dialog_info};
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::*;
use std::time::Duration;

const GXP: &str = "Grandstream GXP2170 1.0.11.3";

/// A BLF phone watching 1002 (dialog package), user 1001.
struct Phone {
    addr: String,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    branch: u32,
}

impl Phone {
    fn new(addr: &str) -> Phone {
        Phone {
            addr: addr.into(),
            call_id: format!("blf-{}@phone", addr.replace([':', '.'], "")),
            cseq: 0,
            to_tag: None,
            branch: 0,
        }
    }

    fn subscribe(&mut self, sim: &mut Sim, expires: u32) -> Vec<SipMessage> {
        self.cseq += 1;
        self.branch += 1;
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        let (ruri, to) = match &self.to_tag {
            Some(t) => (
                "sip:blf-bridge@127.0.0.1:5060".to_string(),
                format!("<sip:1002@pbx.test>;tag={t}"),
            ),
            None => (
                "sip:1002@pbx.test".to_string(),
                "<sip:1002@pbx.test>".into(),
            ),
        };
        let req = format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{}x{};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=ph{port}\r\n\
To: {to}\r\n\
Call-ID: {}\r\n\
CSeq: {} SUBSCRIBE\r\n\
Contact: <sip:1001@127.0.0.1:{port}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {GXP}\r\n\
Expires: {expires}\r\n\
Content-Length: 0\r\n\r\n",
            port, self.branch, self.call_id, self.cseq
        );
        sim.udp_from(&self.addr, &req);
        let msgs = sim.take_to(&self.addr);
        if self.to_tag.is_none()
            && let Some(ok) = msgs.iter().find(|m| m.status() == Some(200))
        {
            self.to_tag = ok.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
        }
        msgs
    }

    fn answer(&self, sim: &mut Sim, notify: &SipMessage, code: u16) {
        sim.udp_from(&self.addr, &reply(notify, code, "Whatever", None, ""));
    }
}

fn statuses(msgs: &[SipMessage]) -> Vec<u16> {
    msgs.iter().filter_map(|m| m.status()).collect()
}

fn cseq(m: &SipMessage) -> u32 {
    m.cseq().unwrap().unwrap().seq
}

/// NOTIFYs, without retransmissions (same Call-ID and CSeq).
fn notifies(msgs: &[SipMessage]) -> Vec<SipMessage> {
    let mut seen = std::collections::HashSet::new();
    msgs.iter()
        .filter(|m| is_method(m, Method::Notify))
        .filter(|m| seen.insert((hv(m, HeaderName::CallId), cseq(m))))
        .cloned()
        .collect()
}

fn state(m: &SipMessage) -> Option<DialogState> {
    parse_dialog_info(m.body())
        .expect("dialog-info")
        .dialogs
        .first()
        .map(|d| d.state)
}

/// Two phones watch 1002 and have answered their first NOTIFY.
fn two_watchers() -> (Sim, FakePbx, Phone, Phone) {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut a = Phone::new("127.0.0.1:40000");
    let mut b = Phone::new("127.0.0.1:40002");
    assert_eq!(statuses(&a.subscribe(&mut sim, 600)), vec![200]);
    let up = pbx.take(&mut sim);
    assert_eq!(pbx.accept(&mut sim, &up, 600), 2);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let n = notifies(&sim.take_to(&a.addr));
    assert_eq!(n.len(), 1);
    a.answer(&mut sim, &n[0], 200);
    let m = b.subscribe(&mut sim, 600);
    assert_eq!(statuses(&m), vec![200]);
    let n = notifies(&m);
    let n = if n.is_empty() {
        sim.advance(Duration::from_millis(100));
        notifies(&sim.take_to(&b.addr))
    } else {
        n
    };
    assert_eq!(n.len(), 1, "b's first NOTIFY");
    b.answer(&mut sim, &n[0], 200);
    assert!(
        pbx.take(&mut sim).iter().all(|m| !m.is_request()),
        "one upstream subscription pair"
    );
    (sim, pbx, a, b)
}

#[test]
fn phone_that_stops_answering_mid_subscription_is_dropped_after_timer_f() {
    let (mut sim, mut pbx, mut a, mut b) = two_watchers();
    // 1002 starts ringing; a answers its NOTIFY, b does not any more
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(EARLY));
    let na = notifies(&sim.take_to(&a.addr));
    assert_eq!(na.len(), 1);
    assert_eq!(state(&na[0]), Some(DialogState::Early));
    a.answer(&mut sim, &na[0], 200);
    let nb = notifies(&sim.take_to(&b.addr));
    assert_eq!(nb.len(), 1);
    let lost = cseq(&nb[0]);

    // Timer E retransmits until Timer F (64*T1 = 32 s): b is kept until then
    sim.advance(Duration::from_secs(31));
    let retrans: Vec<SipMessage> = sim
        .take_to(&b.addr)
        .into_iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    assert!(retrans.len() >= 5, "retransmitted {} times", retrans.len());
    assert!(retrans.iter().all(|m| cseq(m) == lost));
    // a's subscription goes on meanwhile
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let na = notifies(&sim.take_to(&a.addr));
    assert_eq!(na.len(), 1);
    assert_eq!(state(&na[0]), Some(DialogState::Confirmed));
    a.answer(&mut sim, &na[0], 200);

    // Timer F fires: b is dropped, its refresh is refused
    sim.advance(Duration::from_secs(2));
    sim.take_to(&b.addr);
    assert_eq!(statuses(&b.subscribe(&mut sim, 600)), vec![481]);
    // and gets nothing more, while a still does
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    let na = notifies(&sim.take_to(&a.addr));
    assert_eq!(na.len(), 1, "a keeps its subscription");
    a.answer(&mut sim, &na[0], 200);
    sim.advance(Duration::from_secs(40));
    assert!(notifies(&sim.take_to(&b.addr)).is_empty());
    assert_eq!(statuses(&a.subscribe(&mut sim, 600)), vec![200]);
}

#[test]
fn phone_answering_481_mid_subscription_is_dropped_at_once() {
    let (mut sim, mut pbx, mut a, mut b) = two_watchers();
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(EARLY));
    let na = notifies(&sim.take_to(&a.addr));
    a.answer(&mut sim, &na[0], 200);
    let nb = notifies(&sim.take_to(&b.addr));
    assert_eq!(nb.len(), 1);
    // b lost its subscription state (rebooted): 481 → gone at once
    b.answer(&mut sim, &nb[0], 481);
    assert!(sim.take_to(&b.addr).is_empty(), "nothing more to b");
    assert_eq!(statuses(&b.subscribe(&mut sim, 600)), vec![481]);
    // no retransmission, no later NOTIFY to b; a goes on
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let na = notifies(&sim.take_to(&a.addr));
    assert_eq!(na.len(), 1);
    assert_eq!(state(&na[0]), Some(DialogState::Confirmed));
    sim.advance(Duration::from_secs(5));
    assert!(sim.take_to(&b.addr).is_empty());
    sim.take_to(&a.addr); // retransmissions meanwhile
    // and when a answers 481 too (before Timer F), it is gone at once as well
    a.answer(&mut sim, &na[0], 481);
    assert!(sim.take_to(&a.addr).is_empty());
    assert_eq!(statuses(&a.subscribe(&mut sim, 600)), vec![481]);
}
