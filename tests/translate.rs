//! Subscription translation, sans-IO: phones and a scripted upstream talk to the
//! `Endpoint` through a simulated network with a simulated clock.

mod sim;

use blf_bridge::flow::{ConnId, Flow};
use blf_bridge::presence::{DialogState, parse_dialog_info};
use blf_bridge::sip::{HeaderName, Method, SipMessage, Transport};
use sim::*;
use std::time::Duration;

const PHONE: &str = "127.0.0.1:40000";
const PHONE2: &str = "127.0.0.1:40002";
const WAVE: &str = "Grandstream Wave";
const GXP: &str = "Grandstream GXP2170 1.0.11.3";
const YEALINK: &str = "Yealink SIP-T46S 66.86.0.15";

/// A BLF phone sending Grandstream-style dialog SUBSCRIBEs.
struct Phone {
    addr: String,
    ua: String,
    user: String,
    target: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// Our dialog's To-tag once the bridge answered.
    to_tag: Option<String>,
    event: String,
    accept: String,
    extra: String,
    branch_n: u32,
}

impl Phone {
    fn new(addr: &str, ua: &str, target: &str) -> Phone {
        Phone {
            addr: addr.into(),
            ua: ua.into(),
            user: "1001".into(),
            target: target.into(),
            call_id: format!("blf-{}-{target}@192.168.1.50", addr.replace([':', '.'], "")),
            from_tag: "1365906328".into(),
            cseq: 0,
            to_tag: None,
            event: "dialog".into(),
            accept: "application/dialog-info+xml, multipart/related, application/rlmi+xml".into(),
            extra: String::new(),
            branch_n: 0,
        }
    }

    fn request(&mut self, expires: Option<u32>, new_branch: bool) -> String {
        static BRANCHES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        if new_branch {
            self.branch_n = BRANCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.cseq += 1;
        }
        let ruri = match &self.to_tag {
            Some(_) => "sip:blf-bridge@127.0.0.1:5060".to_string(),
            None => format!("sip:{}@pbx.test", self.target),
        };
        let to = match &self.to_tag {
            Some(t) => format!("<sip:{}@pbx.test>;tag={t}", self.target),
            None => format!("<sip:{}@pbx.test>", self.target),
        };
        let expires = expires
            .map(|e| format!("Expires: {e}\r\n"))
            .unwrap_or_default();
        format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.50:{};branch=z9hG4bK{}x{}x{};rport\r\n\
Max-Forwards: 70\r\n\
From: \"{}\" <sip:{}@pbx.test>;tag={}\r\n\
To: {to}\r\n\
Call-ID: {}\r\n\
CSeq: {} SUBSCRIBE\r\n\
Contact: <sip:{}@192.168.1.50:5062;transport=udp>\r\n\
Event: {}\r\n\
Accept: {}\r\n\
Supported: replaces, path, timer, eventlist\r\n\
User-Agent: {}\r\n\
{expires}{}Content-Length: 0\r\n\r\n",
            self.via_port(),
            self.call_id.len(),
            self.call_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>(),
            self.branch_n,
            self.user,
            self.user,
            self.from_tag,
            self.call_id,
            self.cseq,
            self.user,
            self.event,
            self.accept,
            self.ua,
            self.extra,
        )
    }

    /// Each phone has its own Via sent-by port (transactions are matched by it).
    fn via_port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(5062)
            - 34938
    }

    /// Send a (re-)SUBSCRIBE; returns everything the bridge sent to the phone.
    fn subscribe(&mut self, sim: &mut Sim, expires: Option<u32>) -> Vec<SipMessage> {
        let req = self.request(expires, true);
        sim.udp_from(&self.addr, &req);
        let msgs = sim.take_to(&self.addr);
        if self.to_tag.is_none()
            && let Some(ok) = msgs.iter().find(|m| m.status() == Some(200))
        {
            self.to_tag = ok.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
        }
        msgs
    }

    /// Retransmit the last SUBSCRIBE unchanged.
    fn retransmit(&mut self, sim: &mut Sim, expires: Option<u32>) -> Vec<SipMessage> {
        let req = self.request(expires, false);
        sim.udp_from(&self.addr, &req);
        sim.take_to(&self.addr)
    }

    fn answer(&self, sim: &mut Sim, notify: &SipMessage, code: u16) {
        let r = reply(notify, code, "Whatever", None, "");
        sim.udp_from(&self.addr, &r);
    }
}

/// The phone at `addr` registers `user` through the bridge (REGISTER → 200).
fn register_through_bridge(sim: &mut Sim, addr: &str, user: &str) {
    let req = format!(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKreg{user};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@pbx.test>;tag=r{user}\r\nTo: <sip:{user}@pbx.test>\r\nCall-ID: reg-{user}@phone\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{addr}>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    );
    sim.udp_from(addr, &req);
    let up = sim.take_to(UPSTREAM);
    assert_eq!(up.len(), 1);
    let c = hv(&up[0], HeaderName::Contact);
    let ok = reply(
        &up[0],
        200,
        "OK",
        Some("k"),
        &format!("Contact: {c};expires=3600\r\n"),
    );
    sim.udp_from(UPSTREAM, &ok);
    assert_eq!(responses(&sim.take_to(addr)), vec![200]);
}

fn responses(msgs: &[SipMessage]) -> Vec<u16> {
    msgs.iter().filter_map(|m| m.status()).collect()
}

/// NOTIFYs, without retransmissions (same CSeq).
fn notifies(msgs: &[SipMessage]) -> Vec<SipMessage> {
    let mut seen = std::collections::HashSet::new();
    msgs.iter()
        .filter(|m| is_method(m, Method::Notify))
        .filter(|m| seen.insert((hv(m, HeaderName::CallId), cseq(m))))
        .cloned()
        .collect()
}

/// (Subscription-State, dialog-info version, first dialog state, remote display)
fn doc(m: &SipMessage) -> (String, u32, Option<DialogState>, Option<String>) {
    let d = parse_dialog_info(m.body()).expect("NOTIFY body is dialog-info");
    let first = d.dialogs.first();
    (
        hv(m, HeaderName::SubscriptionState),
        d.version.expect("version"),
        first.map(|x| x.state),
        first.and_then(|x| x.remote.display.clone()),
    )
}

fn cseq(m: &SipMessage) -> u32 {
    m.cseq().unwrap().unwrap().seq
}

fn subscribes(msgs: &[SipMessage]) -> Vec<SipMessage> {
    msgs.iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .cloned()
        .collect()
}

/// Phone subscribes; the upstream accepts both subscriptions and reports
/// `dialog` (idle dummy) and `presence` (given body). Returns the first NOTIFY.
fn establish(
    sim: &mut Sim,
    pbx: &mut FakePbx,
    phone: &mut Phone,
    presence: Option<&str>,
) -> SipMessage {
    let msgs = phone.subscribe(sim, Some(600));
    assert_eq!(responses(&msgs), vec![200], "{msgs:?}");
    let up = pbx.take(sim);
    assert_eq!(pbx.accept(sim, &up, 600), 2);
    pbx.notify(sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(sim, "presence", "active;expires=600", presence);
    let n = notifies(&sim.take_to(&phone.addr));
    assert_eq!(n.len(), 1, "exactly one first NOTIFY");
    n[0].clone()
}

// ------------------------------------------------------------------ phone side

#[test]
fn wave_watching_an_offline_extension_sees_it_confirmed_then_idle_then_busy() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut phone = Phone::new(PHONE, WAVE, "1002");

    let msgs = phone.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&msgs), vec![200]);
    let ok = &msgs[0];
    assert!(ok.to_tag().is_some(), "200 carries our To-tag");
    assert_eq!(ok.expires().unwrap().unwrap(), 600);
    assert!(hv(ok, HeaderName::Contact).contains("127.0.0.1:5060"));
    assert!(
        notifies(&msgs).is_empty(),
        "first NOTIFY is held until the upstream has spoken"
    );

    // upstream: one dialog and one presence subscription for 1002, as 1001
    let up = pbx.take(&mut sim);
    let subs = subscribes(&up);
    assert_eq!(subs.len(), 2);
    let mut events: Vec<String> = subs.iter().map(event_of).collect();
    events.sort();
    assert_eq!(events, ["dialog", "presence"]);
    for s in &subs {
        assert_eq!(s.request_uri(), Some(&b"sip:1002@pbx.test"[..]));
        assert!(hv(s, HeaderName::From).starts_with("<sip:1001@pbx.test>;tag="));
        let accept = hv(s, HeaderName::Accept);
        if event_of(s) == "presence" {
            assert_eq!(accept, "application/pidf+xml");
        } else {
            assert_eq!(accept, "application/dialog-info+xml");
        }
    }
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    assert!(
        notifies(&sim.take_to(PHONE)).is_empty(),
        "still waiting for presence"
    );
    // Kamailio: a presence NOTIFY without body for an unregistered extension
    pbx.notify(&mut sim, "presence", "active;expires=600", None);
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    let first = &n[0];
    assert_eq!(event_of(first), "dialog");
    assert_eq!(
        hv(first, HeaderName::ContentType),
        "application/dialog-info+xml"
    );
    assert_eq!(
        first.request_uri(),
        Some(&b"sip:1001@192.168.1.50:5062;transport=udp"[..])
    );
    assert_eq!(first.to_tag(), Some(phone.from_tag.as_bytes()));
    assert_eq!(
        first.from_tag().map(|t| t.to_vec()),
        phone.to_tag.clone().map(|t| t.into_bytes())
    );
    let (state, version, dstate, _) = doc(first);
    assert_eq!(state, "active;expires=600");
    assert_eq!(version, 0);
    assert_eq!(
        dstate,
        Some(DialogState::Confirmed),
        "Wave: offline renders confirmed"
    );
    let entity = parse_dialog_info(first.body()).unwrap().entity;
    assert_eq!(entity.as_deref(), Some("sip:1002@pbx.test"));
    phone.answer(&mut sim, first, 200);

    // 1002 registers: presence open → idle (terminated)
    sim.advance(Duration::from_secs(10));
    pbx.notify(&mut sim, "presence", "active;expires=590", Some(PIDF_OPEN));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    let (state, version, dstate, _) = doc(&n[0]);
    assert_eq!(state, "active;expires=590", "expires counts down");
    assert_eq!(version, 1);
    assert_eq!(dstate, Some(DialogState::Terminated));
    assert_eq!(cseq(&n[0]), cseq(first) + 1);
    phone.answer(&mut sim, &n[0], 200);

    // ringing → confirmed on Wave
    pbx.notify(&mut sim, "dialog", "active;expires=590", Some(EARLY));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    let (_, version, dstate, _) = doc(&n[0]);
    assert_eq!((version, dstate), (2, Some(DialogState::Confirmed)));
    phone.answer(&mut sim, &n[0], 200);

    // an identical upstream document changes nothing: no NOTIFY
    pbx.notify(&mut sim, "presence", "active;expires=590", Some(PIDF_OPEN));
    assert!(notifies(&sim.take_to(PHONE)).is_empty());

    // hang up → idle again
    pbx.notify(&mut sim, "dialog", "active;expires=590", Some(DUMMY_IDLE));
    let n = notifies(&sim.take_to(PHONE));
    let (_, version, dstate, _) = doc(&n[0]);
    assert_eq!((version, dstate), (3, Some(DialogState::Terminated)));
    phone.answer(&mut sim, &n[0], 200);

    // 1002 un-registers: presence closed → offline (confirmed) again
    pbx.notify(
        &mut sim,
        "presence",
        "active;expires=590",
        Some(PIDF_CLOSED),
    );
    let n = notifies(&sim.take_to(PHONE));
    let (_, version, dstate, _) = doc(&n[0]);
    assert_eq!((version, dstate), (4, Some(DialogState::Confirmed)));
}

#[test]
fn gxp_gets_offline_label_and_pickup_data() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut phone = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut phone, Some(PIDF_CLOSED));
    let (_, v, state, display) = doc(&first);
    assert_eq!(
        (v, state, display.as_deref()),
        (0, Some(DialogState::Confirmed), Some("Offline"))
    );
    phone.answer(&mut sim, &first, 200);

    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let n = notifies(&sim.take_to(PHONE));
    phone.answer(&mut sim, &n[0], 200);
    assert_eq!(doc(&n[0]).2, Some(DialogState::Terminated));

    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(EARLY));
    let n = notifies(&sim.take_to(PHONE));
    let d = parse_dialog_info(n[0].body()).unwrap();
    let dlg = &d.dialogs[0];
    assert_eq!(dlg.state, DialogState::Early);
    assert_eq!(dlg.call_id.as_deref(), Some("1-5707@127.0.0.1"));
    assert_eq!(dlg.local_tag.as_deref(), Some("5549SIPpTag010"));
    assert_eq!(dlg.remote_tag.as_deref(), Some("5707SIPpTag001"));
    assert_eq!(dlg.remote.display.as_deref(), Some("Bob & Co"));
    assert_eq!(dlg.remote.identity.as_deref(), Some("sip:1003@pbx.test"));
    assert!(
        std::str::from_utf8(n[0].body())
            .unwrap()
            .contains("Bob &amp; Co"),
        "display name XML-escaped"
    );
}

#[test]
fn hold_deadline_renders_unknown_when_the_upstream_is_silent() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut phone = Phone::new(PHONE, GXP, "1002");
    let msgs = phone.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&msgs), vec![200]);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    // dialog answers idle but presence says nothing: must not flash idle
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    sim.advance(Duration::from_millis(1900));
    assert!(
        notifies(&sim.take_to(PHONE)).is_empty(),
        "held before the deadline"
    );
    sim.advance(Duration::from_millis(150));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1, "released at the 2 s deadline");
    // GXP renders unknown as terminated with the dialog id of the target
    let (state, v, dstate, _) = doc(&n[0]);
    assert!(state.starts_with("active;expires="));
    assert_eq!((v, dstate), (0, Some(DialogState::Terminated)));
    phone.answer(&mut sim, &n[0], 200);
    // presence arrives later: offline is shown
    pbx.notify(&mut sim, "presence", "active;expires=600", None);
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    let (_, v, dstate, display) = doc(&n[0]);
    assert_eq!(
        (v, dstate, display.as_deref()),
        (1, Some(DialogState::Confirmed), Some("Offline"))
    );
}

#[test]
fn two_phones_on_one_target_share_one_upstream_pair() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut a = Phone::new(PHONE, GXP, "1002");
    let mut b = Phone::new(PHONE2, WAVE, "1002");
    let first = establish(&mut sim, &mut pbx, &mut a, Some(PIDF_OPEN));
    a.answer(&mut sim, &first, 200);
    let msgs = b.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&msgs), vec![200]);
    // target already known: B's first NOTIFY goes out at once
    let n = notifies(&msgs);
    assert_eq!(n.len(), 1);
    assert_eq!(doc(&n[0]).1, 0, "B has its own version counter");
    b.answer(&mut sim, &n[0], 200);
    assert!(
        subscribes(&pbx.take(&mut sim)).is_empty(),
        "no second upstream subscription"
    );
    assert_eq!(
        pbx.subs.len(),
        2,
        "exactly one dialog and one presence subscription"
    );

    // one upstream change reaches both phones
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let na = notifies(&sim.take_to(PHONE));
    let nb = notifies(&sim.take_to(PHONE2));
    assert_eq!((na.len(), nb.len()), (1, 1));
    assert_eq!(doc(&na[0]).1, 1);
    assert_eq!(doc(&nb[0]).1, 1);

    // a third phone on another target → a second pair
    let mut c = Phone::new("127.0.0.1:40004", GXP, "1003");
    c.subscribe(&mut sim, Some(600));
    let up = subscribes(&pbx.take(&mut sim));
    assert_eq!(up.len(), 2);
    assert!(
        up.iter()
            .all(|s| s.request_uri() == Some(&b"sip:1003@pbx.test"[..]))
    );
}

#[test]
fn expires_absent_clamped_too_brief() {
    let mut sim = Sim::new("");
    let mut p = Phone::new(PHONE, GXP, "1002");
    let m = p.subscribe(&mut sim, None);
    assert_eq!(m[0].status(), Some(200));
    assert_eq!(
        m[0].expires().unwrap().unwrap(),
        3600,
        "absent → package default 3600"
    );

    let mut p = Phone::new(PHONE2, GXP, "1003");
    let m = p.subscribe(&mut sim, Some(86400));
    assert_eq!(
        m[0].expires().unwrap().unwrap(),
        3600,
        "clamped to the configured maximum"
    );

    let mut p = Phone::new("127.0.0.1:40004", GXP, "1004");
    let m = p.subscribe(&mut sim, Some(30));
    assert_eq!(m[0].status(), Some(423));
    assert_eq!(hv(&m[0], HeaderName::MinExpires), "60");
    assert!(m[0].to_tag().is_none());

    let mut sim = Sim::new("[subscriptions]\nmax_expires = 900\nmin_expires = 120\n");
    let mut p = Phone::new(PHONE, GXP, "1002");
    let m = p.subscribe(&mut sim, Some(3600));
    assert_eq!(m[0].expires().unwrap().unwrap(), 900);
    let mut p = Phone::new(PHONE2, GXP, "1002");
    let m = p.subscribe(&mut sim, Some(100));
    assert_eq!(
        (m[0].status(), hv(&m[0], HeaderName::MinExpires)),
        (Some(423), "120".to_string())
    );
}

#[test]
fn initial_expires_zero_is_a_fetch() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    // another phone watches 1002 (a fetch of a target nobody watches is
    // answered at once without going upstream: tests/hardening.rs)
    Phone::new(PHONE2, WAVE, "1002").subscribe(&mut sim, Some(600));
    let mut p = Phone::new(PHONE, WAVE, "1002");
    let m = p.subscribe(&mut sim, Some(0));
    assert_eq!(responses(&m), vec![200]);
    assert_eq!(m[0].expires().unwrap().unwrap(), 0);
    assert!(
        notifies(&m).is_empty(),
        "the fetch waits for the upstream too"
    );
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    let (state, v, dstate, _) = doc(&n[0]);
    assert_eq!(state, "terminated;reason=timeout");
    assert_eq!((v, dstate), (0, Some(DialogState::Terminated)));
    // the subscription is gone
    let m = p.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![481]);
}

#[test]
fn refresh_sends_immediate_full_state_and_versions_continue() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    sim.advance(Duration::from_secs(300));
    let m = p.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![200]);
    assert_eq!(
        m[0].to_tag().map(|t| t.to_vec()),
        p.to_tag.clone().map(|t| t.into_bytes())
    );
    assert_eq!(m[0].expires().unwrap().unwrap(), 600);
    let n = notifies(&m);
    assert_eq!(
        n.len(),
        1,
        "immediate NOTIFY on refresh, even without a change"
    );
    let (state, v, _, _) = doc(&n[0]);
    assert_eq!(state, "active;expires=600");
    assert_eq!(v, 1, "version is not reset by a refresh");
    assert!(cseq(&n[0]) > cseq(&first));
    assert_eq!(
        n[0].body().len(),
        first.body().len(),
        "same document, new version"
    );
    // the refresh moved expiry: 400 s after it the subscription is still alive
    p.answer(&mut sim, &n[0], 200);
    pbx.run(&mut sim, Duration::from_secs(400));
    assert!(notifies(&sim.take_to(PHONE)).is_empty());
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(doc(&n[0]).0, "active;expires=200");
}

#[test]
fn unsubscribe_sends_final_notify_and_later_requests_get_481() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    let m = p.subscribe(&mut sim, Some(0));
    assert_eq!(responses(&m), vec![200]);
    let n = notifies(&m);
    assert_eq!(n.len(), 1);
    let (state, v, _, _) = doc(&n[0]);
    assert_eq!(state, "terminated;reason=timeout");
    assert_eq!(v, 1);
    let m = p.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![481]);
}

#[test]
fn expiry_without_refresh_terminates() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let msgs = p.subscribe(&mut sim, Some(120));
    assert_eq!(msgs[0].expires().unwrap().unwrap(), 120);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let n = notifies(&sim.take_to(PHONE));
    p.answer(&mut sim, &n[0], 200);
    sim.advance(Duration::from_secs(119));
    assert!(notifies(&sim.take_to(PHONE)).is_empty());
    sim.advance(Duration::from_secs(2));
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    assert_eq!(doc(&n[0]).0, "terminated;reason=timeout");
    assert_eq!(responses(&p.subscribe(&mut sim, Some(120))), vec![481]);
}

#[test]
fn notify_answered_481_removes_the_subscription() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 481);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    assert!(notifies(&sim.take_to(PHONE)).is_empty());
    assert_eq!(responses(&p.subscribe(&mut sim, Some(600))), vec![481]);
}

#[test]
fn notify_timeout_removes_the_subscription_after_timer_f() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    // a phone registered through the bridge has shown its address is real:
    // its NOTIFYs are retransmitted in full (an unverified source gets only a
    // few retransmissions, issue 9 item 6: tests/hardening.rs)
    register_through_bridge(&mut sim, PHONE, "1001");
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    // never answered: UDP retransmissions (Timer E), then Timer F
    sim.advance(Duration::from_secs(31));
    let retrans: Vec<SipMessage> = sim
        .take_to(PHONE)
        .into_iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    assert!(retrans.len() >= 6, "retransmitted {} times", retrans.len());
    assert!(retrans.iter().all(|m| cseq(m) == cseq(&first)));
    sim.advance(Duration::from_secs(2));
    sim.take_to(PHONE);
    assert_eq!(responses(&p.subscribe(&mut sim, Some(600))), vec![481]);
}

#[test]
fn one_notify_in_flight_and_the_latest_state_follows() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    // two changes while the first NOTIFY is unanswered
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(EARLY));
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    assert!(
        notifies(&sim.take_to(PHONE)).is_empty(),
        "nothing overtakes the outstanding NOTIFY"
    );
    p.answer(&mut sim, &first, 200);
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1, "the changes are coalesced");
    let (_, v, dstate, _) = doc(&n[0]);
    assert_eq!((v, dstate), (1, Some(DialogState::Confirmed)));
    assert_eq!(cseq(&n[0]), cseq(&first) + 1);
}

#[test]
fn unknown_dialog_bad_event_and_accept_are_refused() {
    let mut sim = Sim::new("");
    // in-dialog request for a subscription the bridge does not know
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.to_tag = Some("nosuchtag".into());
    assert_eq!(responses(&p.subscribe(&mut sim, Some(600))), vec![481]);

    // a refresh with another package
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    p.event = "presence".into();
    let m = p.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![489]);
    assert_eq!(hv(&m[0], HeaderName::AllowEvents), "dialog");

    // Accept without dialog-info
    let mut q = Phone::new(PHONE2, GXP, "1002");
    q.accept = "application/pidf+xml".into();
    let m = q.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![406]);
}

#[test]
fn event_id_is_echoed() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.event = "dialog;id=7".into();
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    assert_eq!(event_of(&first), "dialog;id=7");
}

#[test]
fn notify_follows_the_subscribers_flow_and_record_route() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    // behind NAT: Via says 192.168.1.50:5062, packets come from 127.0.0.1:40000
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.extra = "Record-Route: <sip:10.9.9.9;lr>\r\n".into();
    let msgs = p.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&msgs), vec![200]);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let flows = sim.take_flows_to(PHONE);
    assert_eq!(flows.len(), 1);
    let (flow, n) = &flows[0];
    assert_eq!(flow.transport, Transport::Udp);
    assert_eq!(
        flow.remote,
        addr(PHONE),
        "to the source address, not the Via/Contact"
    );
    assert_eq!(hv(n, HeaderName::Route), "<sip:10.9.9.9;lr>");
    assert_eq!(
        n.request_uri(),
        Some(&b"sip:1001@192.168.1.50:5062;transport=udp"[..])
    );

    // over TCP: the same connection
    let req = Phone::new("127.0.0.1:40010", GXP, "1002")
        .request(Some(600), true)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    sim.tcp_from("127.0.0.1:40010", 7, &req);
    let flows = sim.take_flows_to("127.0.0.1:40010");
    assert_eq!(flows.len(), 2, "200 and the first NOTIFY (target known)");
    for (flow, m) in &flows {
        assert_eq!(flow.conn, Some(ConnId(7)));
        assert_eq!(flow.transport, Transport::Tcp);
        if m.is_request() {
            assert!(hv(m, HeaderName::Via).starts_with("SIP/2.0/TCP "));
        }
    }
}

#[test]
fn retransmitted_subscribe_is_answered_from_the_transaction() {
    let mut sim = Sim::new("");
    let mut p = Phone::new(PHONE, GXP, "1002");
    let m1 = p.subscribe(&mut sim, Some(600));
    let m2 = p.retransmit(&mut sim, Some(600));
    assert_eq!(responses(&m2), vec![200]);
    assert_eq!(
        m1[0].message_bytes(),
        m2[0].message_bytes(),
        "the stored 200, byte for byte"
    );
    assert_eq!(notifies(&m2).len(), 0, "no second NOTIFY");
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
}

// ------------------------------------------------------------------ upstream side

fn auth_header(m: &SipMessage) -> String {
    hv_named(m, "Proxy-Authorization").unwrap_or_default()
}

#[test]
fn upstream_challenge_is_answered_with_the_phones_account() {
    for (user, expect) in [("1005", "1005"), ("1001", "1001"), ("4711", "1001")] {
        // 4711 is no account user and did not register: watching needs
        // `watchers = "allowed"` (issue 9, item 7)
        let mut sim = Sim::new(if user == "4711" {
            "[security]\nwatchers = \"allowed\"\n"
        } else {
            ""
        });
        let mut pbx = FakePbx::default();
        let mut p = Phone::new(PHONE, GXP, "1002");
        p.user = user.into();
        p.subscribe(&mut sim, Some(600));
        let up = subscribes(&pbx.take(&mut sim));
        assert_eq!(up.len(), 2);
        for s in &up {
            let r = reply(
                s,
                407,
                "Proxy Authentication Required",
                Some("chal"),
                "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"abc123\", qop=\"auth\"\r\n",
            );
            sim.udp_from(UPSTREAM, &r);
        }
        let again = subscribes(&pbx.take(&mut sim));
        assert_eq!(again.len(), 2, "both re-sent with credentials");
        let mut nc = Vec::new();
        for s in &again {
            let a = auth_header(s);
            assert!(a.contains(&format!("username=\"{expect}\"")), "{user}: {a}");
            assert!(a.contains("uri=\"sip:1002@pbx.test\""));
            nc.extend(
                a.split(", ")
                    .filter(|p| p.starts_with("nc="))
                    .map(str::to_string),
            );
            assert!(cseq(s) == 2);
        }
        // one digest client per account: the nonce's count goes on across
        // its subscriptions
        nc.sort();
        assert_eq!(nc, ["nc=00000001", "nc=00000002"]);
    }
}

#[test]
fn notify_before_the_2xx_is_accepted() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.subscribe(&mut sim, Some(600));
    let up = pbx.take(&mut sim);
    // record the dialogs without answering: build FakeSubs through accept() on a
    // throw-away sim, then send the NOTIFYs first
    let mut other = Sim::new("");
    pbx.accept(&mut other, &up, 600);
    let r = pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    assert_eq!(
        responses(&r),
        vec![200],
        "NOTIFY before the 2xx is accepted"
    );
    let r = pbx.notify(
        &mut sim,
        "presence",
        "active;expires=600",
        Some(PIDF_CLOSED),
    );
    assert_eq!(responses(&r), vec![200]);
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    assert_eq!(doc(&n[0]).3.as_deref(), Some("Offline"));
    // the late 2xx is fine too
    pbx.accept(&mut sim, &up, 600);
}

#[test]
fn upstream_notify_for_an_unknown_subscription_gets_481() {
    let mut sim = Sim::new("");
    let msg = "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKzz1\r\nMax-Forwards: 70\r\nFrom: <sip:1002@pbx.test>;tag=a\r\nTo: <sip:1001@pbx.test>;tag=b\r\nCall-ID: nobody\r\nCSeq: 1 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n";
    sim.udp_from(UPSTREAM, msg);
    let r = sim.take_to(UPSTREAM);
    assert_eq!(responses(&r), vec![481]);
}

#[test]
fn upstream_refresh_happens_before_expiry_with_jitter() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    assert!(
        pbx.run(&mut sim, Duration::from_secs(400)).is_empty(),
        "not before 70 % of 600 s"
    );
    let refreshes = pbx.run(&mut sim, Duration::from_secs(115));
    assert_eq!(refreshes.len(), 2, "both refreshed by 85 %");
    for r in &refreshes {
        let fs = pbx
            .subs
            .iter()
            .find(|s| s.call_id == hv(r, HeaderName::CallId))
            .unwrap();
        assert_eq!(
            r.request_uri(),
            Some(&b"sip:127.0.0.1:5070"[..]),
            "in-dialog: the notifier's Contact"
        );
        assert_eq!(r.to_tag(), Some(fs.tag.as_bytes()));
        assert_eq!(cseq(r), 2);
        assert_eq!(r.expires().unwrap().unwrap(), 600);
    }
    // the two refreshes are not at the same instant (jitter)
    let t: Vec<_> = refreshes
        .iter()
        .map(|r| hv(r, HeaderName::CallId))
        .collect();
    assert_ne!(t[0], t[1]);
}

#[test]
fn terminated_reasons_drive_resubscription() {
    // deactivated → a fresh subscription (new Call-ID) at once
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    let old = pbx
        .subs
        .iter()
        .find(|s| s.event == "presence")
        .unwrap()
        .call_id
        .clone();
    let r = pbx.notify(&mut sim, "presence", "terminated;reason=deactivated", None);
    let s = subscribes(&r);
    assert_eq!(s.len(), 1);
    assert_eq!(event_of(&s[0]), "presence");
    assert_ne!(hv(&s[0], HeaderName::CallId), old);
    assert!(s[0].to_tag().is_none());

    // probation with retry-after → not before 30 s
    pbx.accept(&mut sim, &s, 600);
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    sim.take_to(PHONE);
    let r = pbx.notify(
        &mut sim,
        "presence",
        "terminated;reason=probation;retry-after=30",
        None,
    );
    assert!(subscribes(&r).is_empty());
    sim.advance(Duration::from_secs(29));
    assert!(subscribes(&pbx.take(&mut sim)).is_empty());
    sim.advance(Duration::from_secs(3));
    assert_eq!(subscribes(&pbx.take(&mut sim)).len(), 1);

    // rejected → stop: presence unknown, nothing retried soon, never offline
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
    pbx.notify(&mut sim, "presence", "terminated;reason=rejected", None);
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
    sim.advance(Duration::from_secs(120));
    for n in notifies(&sim.take_to(PHONE)) {
        assert_ne!(
            doc(&n).3.as_deref(),
            Some("Offline"),
            "a rejected presence subscription never means offline"
        );
    }
    let again = subscribes(&pbx.take(&mut sim));
    assert!(
        again.is_empty(),
        "{:#?}",
        again.iter().map(text).collect::<Vec<_>>()
    );
    let t = sim
        .ep
        .subscriptions()
        .target_by_aor("sip:1002@pbx.test")
        .unwrap();
    assert_ne!(t.view.state, blf_bridge::presence::MergedState::Offline);
}

#[test]
fn timer_n_and_capped_exponential_backoff() {
    let mut sim = Sim::new("[subscriptions]\nretry_min = 5\nretry_max = 20\n");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.subscribe(&mut sim, Some(600));
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    // no NOTIFY ever: Timer N (32 s) fails both, retries follow 5, 10, 20, 20 s
    let mut times = vec![0.0];
    for _ in 0..400 {
        sim.advance(Duration::from_millis(500));
        for n in notifies(&sim.take_to(PHONE)) {
            p.answer(&mut sim, &n, 200);
        }
        for s in subscribes(&pbx.take(&mut sim)) {
            if event_of(&s) == "dialog" && s.to_tag().is_none() {
                times.push(sim.elapsed().as_secs_f64());
                pbx.accept(&mut sim, &[s], 600);
            }
        }
    }
    assert!(times.len() >= 5, "{times:?}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // each gap = Timer N (32 s) + backoff (+ < 1 s jitter)
    let backoffs: Vec<f64> = gaps.iter().map(|g| g - 32.0).collect();
    assert!((5.0..7.0).contains(&backoffs[0]), "{backoffs:?}");
    assert!((10.0..12.0).contains(&backoffs[1]), "{backoffs:?}");
    assert!((20.0..22.0).contains(&backoffs[2]), "{backoffs:?}");
    assert!(
        (20.0..22.0).contains(&backoffs[3]),
        "capped at retry_max: {backoffs:?}"
    );
}

#[test]
fn upstream_503_retry_after_is_honoured() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    p.subscribe(&mut sim, Some(600));
    for s in subscribes(&pbx.take(&mut sim)) {
        let r = reply(
            &s,
            503,
            "Service Unavailable",
            Some("x"),
            "Retry-After: 20\r\n",
        );
        sim.udp_from(UPSTREAM, &r);
    }
    sim.advance(Duration::from_secs(19));
    assert!(subscribes(&pbx.take(&mut sim)).is_empty());
    sim.advance(Duration::from_secs(2));
    assert_eq!(subscribes(&pbx.take(&mut sim)).len(), 2);
}

#[test]
fn last_phone_leaving_unsubscribes_upstream_after_linger() {
    let mut sim = Sim::new("[subscriptions]\nlinger = 30\n");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, GXP, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    p.subscribe(&mut sim, Some(0));
    sim.advance(Duration::from_secs(10));
    assert!(subscribes(&pbx.take(&mut sim)).is_empty(), "lingering");
    // a phone comes back: the upstream pair is reused and the state is known
    let mut q = Phone::new(PHONE2, GXP, "1002");
    let m = q.subscribe(&mut sim, Some(600));
    assert_eq!(
        notifies(&m).len(),
        1,
        "immediate NOTIFY from the lingering state"
    );
    assert!(
        subscribes(&pbx.take(&mut sim)).is_empty(),
        "no new upstream subscription"
    );
    q.answer(&mut sim, &notifies(&m)[0], 200);
    q.subscribe(&mut sim, Some(0));
    sim.advance(Duration::from_secs(29));
    assert!(subscribes(&pbx.take(&mut sim)).is_empty());
    sim.advance(Duration::from_secs(2));
    let unsub = subscribes(&pbx.take(&mut sim));
    assert_eq!(unsub.len(), 2);
    assert!(
        unsub
            .iter()
            .all(|s| s.expires().unwrap().unwrap() == 0 && s.to_tag().is_some())
    );
    // the upstream's final NOTIFY for the ended subscription is still answered 200
    let r = pbx.notify(
        &mut sim,
        "dialog",
        "terminated;reason=timeout",
        Some(DUMMY_IDLE),
    );
    assert_eq!(responses(&r), vec![200]);
    assert!(
        sim.ep
            .subscriptions()
            .target_by_aor("sip:1002@pbx.test")
            .is_none()
    );
}

// ------------------------------------------------------------------ profiles

#[test]
fn fail_subscription_profile_terminates_while_offline_and_rejects_resubscribes() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut p = Phone::new(PHONE, YEALINK, "1002");
    let first = establish(&mut sim, &mut pbx, &mut p, Some(PIDF_OPEN));
    p.answer(&mut sim, &first, 200);
    pbx.notify(
        &mut sim,
        "presence",
        "active;expires=600",
        Some(PIDF_CLOSED),
    );
    let n = notifies(&sim.take_to(PHONE));
    assert_eq!(n.len(), 1);
    assert_eq!(
        hv(&n[0], HeaderName::SubscriptionState),
        "terminated;reason=probation;retry-after=60"
    );
    p.answer(&mut sim, &n[0], 200);
    // a new SUBSCRIBE while offline
    let mut q = Phone::new(PHONE, YEALINK, "1002");
    q.call_id = "second@x".into();
    let m = q.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![480]);
    assert_eq!(hv_named(&m[0], "Retry-After").as_deref(), Some("60"));
    // back online: accepted again
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let mut r = Phone::new(PHONE, YEALINK, "1002");
    r.call_id = "third@x".into();
    let m = r.subscribe(&mut sim, Some(600));
    assert_eq!(responses(&m), vec![200]);
    assert_eq!(notifies(&m).len(), 1);
}

#[test]
fn zoiper_dialog_subscribe_is_not_translated() {
    let mut sim = Sim::new("");
    let mut p = Phone::new(PHONE, "Z 5.2.25 rv2.8.112", "1002");
    let m = p.subscribe(&mut sim, Some(600));
    assert!(
        m.iter().all(|r| r.status() != Some(200)),
        "the bridge does not answer it itself"
    );
    let up = subscribes(&sim.take_to(UPSTREAM));
    assert!(
        up.iter().all(|s| event_of(s) != "presence"),
        "no translation pair"
    );
    assert_eq!(sim.ep.subscriptions().phones().count(), 0);
}

#[allow(dead_code)]
fn _unused(_: Flow) {}
