//! Restarts, sans-IO: the bridge keeps its state in a store (here in memory,
//! applied batch by batch as the runtime would commit it), crashes, and comes
//! back from it. Phones keep their dialogs (same Call-ID and tags, CSeq and
//! version above anything sent before), upstream subscriptions are refreshed in
//! their existing dialogs at the configured pace, registrations keep routing.

mod sim;

use blf_bridge::presence::{MergedState, parse_dialog_info};
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const GXP: &str = "Grandstream GXP2170 1.0.11.3";

/// A GXP watching `target` from `port` on 127.0.0.1.
struct Phone {
    ua: &'static str,
    port: u16,
    target: String,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    n: u32,
}

impl Phone {
    fn new(port: u16, target: &str) -> Phone {
        Phone::with_ua(port, target, GXP)
    }

    fn with_ua(port: u16, target: &str, ua: &'static str) -> Phone {
        Phone {
            ua,
            port,
            target: target.into(),
            call_id: format!("gxp-{port}-{target}@192.168.1.50"),
            cseq: 0,
            to_tag: None,
            n: 0,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn request(&mut self, expires: u32) -> String {
        self.cseq += 1;
        self.n += 1;
        let (ruri, to) = match &self.to_tag {
            Some(t) => (
                "sip:blf-bridge@127.0.0.1:5060".to_string(),
                format!("<sip:{}@pbx.test>;tag={t}", self.target),
            ),
            None => (
                format!("sip:{}@pbx.test", self.target),
                format!("<sip:{}@pbx.test>", self.target),
            ),
        };
        format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKgxp{port}x{n};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=gxptag{port}\r\n\
To: {to}\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:1001@127.0.0.1:{port}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {ua}\r\n\
Expires: {expires}\r\n\
Content-Length: 0\r\n\r\n",
            port = self.port,
            n = self.n,
            cid = self.call_id,
            cseq = self.cseq,
            ua = self.ua,
        )
    }

    /// Send a SUBSCRIBE; the bridge's answers to this phone.
    fn subscribe(&mut self, sim: &mut Sim, expires: u32) -> Vec<SipMessage> {
        let req = self.request(expires);
        sim.udp_from(&self.addr(), &req);
        let msgs = sim.take_to(&self.addr());
        if self.to_tag.is_none()
            && let Some(ok) = msgs.iter().find(|m| m.status() == Some(200))
        {
            self.to_tag = ok.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
        }
        msgs
    }
}

/// The NOTIFYs in `msgs` without retransmissions (each answered 200 by the
/// phone it went to).
fn answer_notifies(sim: &mut Sim, msgs: &[SipMessage], to: &str) -> Vec<SipMessage> {
    let mut seen = HashSet::new();
    let n: Vec<SipMessage> = msgs
        .iter()
        .filter(|m| is_method(m, Method::Notify))
        .filter(|m| seen.insert(cseq(m)))
        .cloned()
        .collect();
    for m in &n {
        let r = reply(m, 200, "OK", None, "");
        sim.udp_from(to, &r);
    }
    n
}

fn cseq(m: &SipMessage) -> u32 {
    m.cseq().unwrap().unwrap().seq
}

fn version(m: &SipMessage) -> u32 {
    parse_dialog_info(m.body()).unwrap().version.unwrap()
}

fn from_tag(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.from_tag().unwrap()).into_owned()
}

fn state_of(m: &SipMessage) -> String {
    let d = parse_dialog_info(m.body()).unwrap();
    d.dialogs
        .first()
        .map(|x| format!("{:?}", x.state))
        .unwrap_or_else(|| "none".into())
}

#[test]
fn a_crash_is_invisible_to_a_watching_phone_and_upstream_dialogs_are_refreshed_not_recreated() {
    let mut sim = Sim::new_persistent("");
    let mut pbx = FakePbx::default();
    let mut gxp = Phone::new(40000, "1002");
    let msgs = gxp.subscribe(&mut sim, 600);
    assert!(msgs.iter().any(|m| m.status() == Some(200)), "{msgs:?}");
    let up = pbx.take(&mut sim);
    assert_eq!(pbx.accept(&mut sim, &up, 600), 2);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    // a few changes: idle, ringing, busy
    let mut seen = Vec::new();
    let m = sim.take_to(&gxp.addr());
    seen.extend(answer_notifies(&mut sim, &m, &gxp.addr()));
    for body in [EARLY, CONFIRMED] {
        pbx.notify(&mut sim, "dialog", "active;expires=600", Some(body));
        let m = sim.take_to(&gxp.addr());
        seen.extend(answer_notifies(&mut sim, &m, &gxp.addr()));
    }
    assert_eq!(seen.len(), 3, "idle, ringing, busy");
    let max_cseq = seen.iter().map(cseq).max().unwrap();
    let max_version = seen.iter().map(version).max().unwrap();
    let our_tag = from_tag(&seen[0]);
    let up_before: Vec<(String, u32)> = pbx
        .seen
        .iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .map(|m| (hv(m, HeaderName::CallId), cseq(m)))
        .collect();

    // crash; the new process restores from the store
    sim.advance(Duration::from_secs(5));
    sim.restart();
    sim.advance(Duration::from_millis(100));
    let refreshes: Vec<SipMessage> = pbx
        .take(&mut sim)
        .into_iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(refreshes.len(), 2, "one refresh per package: {refreshes:?}");
    for r in &refreshes {
        let cid = hv(r, HeaderName::CallId);
        let sub = pbx.subs.iter().find(|s| s.call_id == cid);
        let sub =
            sub.unwrap_or_else(|| panic!("a refresh in an existing dialog, not a new one: {cid}"));
        // in the dialog: the upstream's To-tag, a CSeq above any sent before
        assert_eq!(
            String::from_utf8_lossy(r.to_tag().expect("in-dialog refresh has a To-tag")),
            sub.tag
        );
        let before = up_before
            .iter()
            .filter(|(c, _)| *c == cid)
            .map(|x| x.1)
            .max()
            .unwrap();
        assert!(cseq(r) > before, "CSeq {} after {before}", cseq(r));
    }
    // nothing for the phone until the state is known again
    assert!(
        sim.take_to(&gxp.addr()).is_empty(),
        "no stale NOTIFY before the upstream answered"
    );
    assert_eq!(pbx.accept(&mut sim, &refreshes, 600), 2);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let after = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(after.len(), 1, "one NOTIFY with the state: {m:?}");
    let n = &after[0];
    assert_eq!(hv(n, HeaderName::CallId), gxp.call_id, "same dialog");
    assert_eq!(from_tag(n), our_tag, "same dialog (our tag)");
    assert_eq!(
        String::from_utf8_lossy(n.to_tag().unwrap()),
        "gxptag40000",
        "same dialog (the phone's tag)"
    );
    assert!(cseq(n) > max_cseq, "CSeq {} after {max_cseq}", cseq(n));
    assert!(
        version(n) > max_version,
        "version {} after {max_version}",
        version(n)
    );
    assert_eq!(state_of(n), "Confirmed");
    assert!(hv(n, HeaderName::SubscriptionState).starts_with("active"));

    // the phone's refresh in its old dialog is accepted (never 481)
    let msgs = gxp.subscribe(&mut sim, 600);
    assert_eq!(
        msgs.iter().filter_map(|m| m.status()).collect::<Vec<_>>(),
        vec![200],
        "{msgs:?}"
    );
    let n2 = answer_notifies(&mut sim, &msgs, &gxp.addr());
    let n2 = if n2.is_empty() {
        let m = sim.take_to(&gxp.addr());
        answer_notifies(&mut sim, &m, &gxp.addr())
    } else {
        n2
    };
    assert_eq!(n2.len(), 1, "a refresh gets a full-state NOTIFY");
    assert!(cseq(&n2[0]) > cseq(n) && version(&n2[0]) > version(n));

    // a second crash right away: still above everything sent so far
    let (c, v) = (cseq(&n2[0]), version(&n2[0]));
    sim.restart();
    sim.advance(Duration::from_millis(100));
    let refreshes = pbx.take(&mut sim);
    pbx.accept(&mut sim, &refreshes, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let n3 = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(n3.len(), 1);
    assert!(cseq(&n3[0]) > c && version(&n3[0]) > v);
}

#[test]
fn upstream_that_lost_the_subscriptions_gets_fresh_ones_and_phones_see_unknown_meanwhile() {
    let mut sim = Sim::new_persistent("");
    let mut pbx = FakePbx::default();
    let mut gxp = Phone::new(40000, "1002");
    gxp.subscribe(&mut sim, 600);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let first = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(state_of(&first[0]), "Confirmed");
    let old_call_ids: HashSet<String> = pbx.subs.iter().map(|s| s.call_id.clone()).collect();

    sim.restart();
    sim.advance(Duration::from_millis(100));
    let refreshes = pbx.take(&mut sim);
    // the PBX restarted too: it knows none of them
    for r in refreshes.iter().filter(|m| is_method(m, Method::Subscribe)) {
        let resp = reply(r, 481, "Subscription Does Not Exist", Some("x"), "");
        sim.udp_from(UPSTREAM, &resp);
    }
    let fresh: Vec<SipMessage> = pbx
        .take(&mut sim)
        .into_iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(fresh.len(), 2, "a fresh subscription per package");
    for f in &fresh {
        assert!(f.to_tag().is_none(), "out of dialog");
        assert!(
            !old_call_ids.contains(&hv(f, HeaderName::CallId)),
            "new Call-ID"
        );
    }
    // the PBX does not answer the fresh ones for a while: after the hold the
    // phone is told the state is unknown, never the stale "busy"
    sim.advance(Duration::from_secs(3));
    let m = sim.take_to(&gxp.addr());
    let held = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(held.len(), 1, "{m:?}");
    assert_ne!(state_of(&held[0]), "Confirmed", "no stale busy lamp");
    assert!(cseq(&held[0]) > cseq(&first[0]));
    // the PBX answers: the lamp is right again
    let again: Vec<SipMessage> = pbx
        .take(&mut sim)
        .into_iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    pbx.accept(&mut sim, &[fresh, again].concat(), 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let right = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(right.len(), 1);
    assert_eq!(state_of(&right[0]), "Confirmed");
}

#[test]
fn subscriptions_that_expired_while_down_are_dropped_and_their_targets_unsubscribed() {
    let mut sim = Sim::new_persistent("");
    let mut pbx = FakePbx::default();
    let mut gxp = Phone::new(40000, "1002");
    gxp.subscribe(&mut sim, 60);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
    // down for longer than the phone's subscription lasts
    sim.now += Duration::from_secs(120);
    sim.restart();
    assert_eq!(
        sim.ep.subscriptions().phones().count(),
        0,
        "expired: dropped"
    );
    assert!(
        sim.take_to(&gxp.addr()).is_empty(),
        "no NOTIFY to a phone that left"
    );
    // the target lingers, then its upstream subscriptions end
    let mut unsubs = 0;
    for _ in 0..40 {
        sim.advance(Duration::from_secs(1));
        let msgs = pbx.take(&mut sim);
        unsubs += msgs
            .iter()
            .filter(|m| {
                is_method(m, Method::Subscribe) && m.expires().and_then(|e| e.ok()) == Some(0)
            })
            .count();
        pbx.accept(&mut sim, &msgs, 600);
    }
    assert_eq!(unsubs, 2, "both upstream subscriptions ended");
    assert_eq!(sim.ep.subscriptions().targets().count(), 0);
    assert!(
        sim.store.as_ref().unwrap().phones.is_empty(),
        "gone from the store too"
    );
    assert!(sim.store.as_ref().unwrap().targets.is_empty());
}

/// The scale check of issue 8: 10,000 phone subscriptions over 1,000 targets,
/// a restart, refreshes paced at the configured rate, and every phone's NOTIFY
/// out within targets × 2 / rate + 5 s of simulated time.
#[test]
fn ten_thousand_subscriptions_resume_paced_within_the_bound() {
    const TARGETS: usize = 1000;
    const PER_TARGET: usize = 10;
    const RATE: u32 = 200;
    // 10,000 phones simulated on one IP (127.0.0.1, one port each): the
    // per-source caps of [security] are raised to let them all in
    let mut sim = Sim::new_persistent(&format!(
        "[subscriptions]\nupstream_rate = {RATE}\nfirst_notify_timeout_ms = 2000\n\
         [security]\nmax_subscriptions_per_source = 10000\nrate_per_source = 100000\n"
    ));
    let mut pbx = FakePbx::default();
    let mut phones: Vec<Phone> = Vec::new();
    for i in 0..TARGETS * PER_TARGET {
        let target = format!("{}", 2000 + i % TARGETS);
        phones.push(Phone::new(20000 + i as u16, &target));
    }
    // subscribe everyone, one simulated millisecond apart in groups
    for (i, p) in phones.iter_mut().enumerate() {
        let req = p.request(3600);
        sim.udp_from(&p.addr(), &req);
        if i % 100 == 99 {
            sim.advance(Duration::from_millis(10));
        }
    }
    // the PBX answers every SUBSCRIBE as it comes, and notifies idle
    let mut answered: HashSet<String> = HashSet::new();
    let mut to_tags: HashMap<u16, String> = HashMap::new();
    let settle = |sim: &mut Sim,
                  pbx: &mut FakePbx,
                  answered: &mut HashSet<String>,
                  to_tags: &mut HashMap<u16, String>,
                  notified: &mut HashMap<u16, (u32, u32, f64)>| {
        let pending = std::mem::take(&mut sim.pending);
        let mut to_pbx = Vec::new();
        for t in pending {
            let Ok(m) = SipMessage::parse(t.data.clone()) else {
                continue;
            };
            if t.flow.remote == addr(UPSTREAM) {
                to_pbx.push(m);
                continue;
            }
            let port = t.flow.remote.port();
            if m.status() == Some(200) {
                if let Some(tag) = m.to_tag() {
                    to_tags.insert(port, String::from_utf8_lossy(tag).into_owned());
                }
            } else if is_method(&m, Method::Notify) {
                let at = sim.elapsed().as_secs_f64();
                notified.insert(port, (cseq(&m), version(&m), at));
                let r = reply(&m, 200, "OK", None, "");
                sim.udp_from(&format!("127.0.0.1:{port}"), &r);
            }
        }
        let subs: Vec<SipMessage> = to_pbx
            .into_iter()
            .filter(|m| is_method(m, Method::Subscribe))
            .collect();
        let mut n = 0;
        for s in &subs {
            let cid = hv(s, HeaderName::CallId);
            pbx.accept(sim, std::slice::from_ref(s), 600);
            let i = pbx.subs.iter().rposition(|x| x.call_id == cid).unwrap();
            let body = if pbx.subs[i].event == "dialog" {
                DUMMY_IDLE
            } else {
                PIDF_OPEN
            };
            pbx.notify_sub(sim, i, "active;expires=600", Some(body));
            answered.insert(cid);
            n += 1;
        }
        n
    };
    let mut notified: HashMap<u16, (u32, u32, f64)> = HashMap::new();
    for _ in 0..200 {
        sim.advance(Duration::from_millis(100));
        settle(
            &mut sim,
            &mut pbx,
            &mut answered,
            &mut to_tags,
            &mut notified,
        );
        settle(
            &mut sim,
            &mut pbx,
            &mut answered,
            &mut to_tags,
            &mut notified,
        );
    }
    assert_eq!(
        answered.len(),
        TARGETS * 2,
        "two upstream subscriptions per target"
    );
    assert_eq!(
        notified.len(),
        TARGETS * PER_TARGET,
        "every phone got its first NOTIFY"
    );
    let before = notified.clone();
    let snap = sim.store.as_ref().unwrap();
    assert_eq!(snap.phones.len(), TARGETS * PER_TARGET, "all persisted");
    assert_eq!(snap.targets.len(), TARGETS);
    let bytes: usize = snap
        .phones
        .iter()
        .chain(&snap.targets)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    eprintln!(
        "store: {} phone + {} target records, {:.0} bytes of records per phone subscription",
        snap.phones.len(),
        snap.targets.len(),
        bytes as f64 / (TARGETS * PER_TARGET) as f64
    );

    // crash and restart
    sim.restart();
    let t0 = sim.elapsed().as_secs_f64();
    let mut notified: HashMap<u16, (u32, u32, f64)> = HashMap::new();
    let mut refresh_times: Vec<f64> = Vec::new();
    let bound = (TARGETS * 2) as f64 / f64::from(RATE) + 5.0;
    let mut steps = 0;
    while notified.len() < TARGETS * PER_TARGET && steps < 400 {
        steps += 1;
        sim.advance(Duration::from_millis(100));
        let before_n = pbx.subs.len();
        let pending_subs = sim
            .pending
            .iter()
            .filter(|t| t.flow.remote == addr(UPSTREAM))
            .filter_map(|t| SipMessage::parse(t.data.clone()).ok())
            .filter(|m| is_method(m, Method::Subscribe))
            .count();
        for _ in 0..pending_subs {
            refresh_times.push(sim.elapsed().as_secs_f64() - t0);
        }
        settle(
            &mut sim,
            &mut pbx,
            &mut answered,
            &mut to_tags,
            &mut notified,
        );
        settle(
            &mut sim,
            &mut pbx,
            &mut answered,
            &mut to_tags,
            &mut notified,
        );
        assert_eq!(
            pbx.subs.len(),
            before_n,
            "refreshes only: no new upstream dialog"
        );
    }
    assert_eq!(notified.len(), TARGETS * PER_TARGET, "every phone resumed");
    let last = notified.values().map(|x| x.2).fold(0.0, f64::max) - t0;
    eprintln!(
        "resume: {} upstream refreshes, last at {:.2} s; last phone NOTIFY at {last:.2} s (bound {bound:.1} s)",
        refresh_times.len(),
        refresh_times.iter().copied().fold(0.0, f64::max)
    );
    assert!(last <= bound, "last NOTIFY at {last:.2} s > {bound:.1} s");
    assert_eq!(refresh_times.len(), TARGETS * 2);
    // paced: never more than RATE (+ the burst of RATE) in any second
    for w in 0..((bound as usize) + 1) {
        let n = refresh_times
            .iter()
            .filter(|&&t| t >= w as f64 && t < (w + 1) as f64)
            .count();
        assert!(n <= 2 * RATE as usize, "{n} refreshes in second {w}");
    }
    let spread = refresh_times.iter().copied().fold(0.0, f64::max);
    assert!(
        spread >= (TARGETS * 2) as f64 / f64::from(RATE) - 1.0 - 1.0,
        "refreshes spread over {spread:.2} s"
    );
    // same dialogs, counters above everything before
    for (port, (c, v, _)) in &notified {
        let (c0, v0, _) = before[port];
        assert!(
            *c > c0 && *v > v0,
            "phone {port}: CSeq {c0}->{c}, version {v0}->{v}"
        );
    }
}

/// Answer every keep-alive OPTIONS the bridge sent to the upstream with 200;
/// returns how many there were (the other messages are handed back).
fn answer_pings(sim: &mut Sim, pbx: &mut FakePbx, answer: bool) -> (usize, Vec<SipMessage>) {
    let msgs = pbx.take(sim);
    let (pings, rest): (Vec<_>, Vec<_>) = msgs
        .into_iter()
        .partition(|m| is_method(m, Method::Options));
    if answer {
        for p in &pings {
            let r = reply(p, 200, "OK", Some("pbx"), "");
            sim.udp_from(UPSTREAM, &r);
        }
    }
    (pings.len(), rest)
}

#[test]
fn upstream_loss_turns_lamps_unknown_and_its_return_re_establishes_them() {
    let config = base_config("").replace(
        "keepalive = \"none\"",
        "keepalive = \"options\"\nkeepalive_interval = 5",
    );
    let mut sim = Sim::with_config(config);
    let mut pbx = FakePbx::default();
    // the first keep-alive goes out at start: the upstream answers it
    sim.advance(Duration::ZERO);
    let (n, _) = answer_pings(&mut sim, &mut pbx, true);
    assert_eq!(n, 1, "a keep-alive at start");
    let mut gxp = Phone::new(40000, "1002");
    gxp.subscribe(&mut sim, 3600);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let first = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(state_of(&first[0]), "Confirmed", "busy");
    // the upstream answers its pings for a while: nothing changes
    for _ in 0..3 {
        sim.advance(Duration::from_secs(5));
        let (n, _) = answer_pings(&mut sim, &mut pbx, true);
        assert_eq!(n, 1);
        assert!(!sim.ep.liveness().lost);
    }
    assert!(sim.take_to(&gxp.addr()).is_empty());
    // it goes away: one unanswered interval later every lamp is unknown
    sim.advance(Duration::from_secs(5));
    answer_pings(&mut sim, &mut pbx, false);
    sim.advance(Duration::from_secs(5));
    assert!(sim.ep.liveness().lost, "lost after one unanswered interval");
    let m = sim.take_to(&gxp.addr());
    let unknown = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(unknown.len(), 1, "{m:?}");
    assert!(
        is_rendering(&unknown[0], MergedState::Unknown),
        "the profile's unknown"
    );
    // away for 20 s: probes every 2 s, no other upstream traffic than those
    let mut probes = 0;
    for _ in 0..10 {
        sim.advance(Duration::from_secs(2));
        let (n, _) = answer_pings(&mut sim, &mut pbx, false);
        probes += n;
    }
    assert!(probes >= 9, "probing every 2 s while lost: {probes}");
    assert!(
        sim.take_to(&gxp.addr()).is_empty(),
        "no lamp change while away"
    );
    // it comes back with a fresh database: the next probe is answered, the
    // bridge refreshes, gets 481 and subscribes afresh; 1002 is offline now
    let back = sim.elapsed();
    sim.advance(Duration::from_secs(2));
    let (n, rest) = answer_pings(&mut sim, &mut pbx, true);
    assert_eq!(n, 1);
    assert!(!sim.ep.liveness().lost);
    let refreshes: Vec<SipMessage> = rest
        .into_iter()
        .chain(pbx.take(&mut sim))
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(refreshes.len(), 2, "{refreshes:?}");
    for r in &refreshes {
        let resp = reply(r, 481, "Subscription Does Not Exist", Some("x"), "");
        sim.udp_from(UPSTREAM, &resp);
    }
    let fresh: Vec<SipMessage> = pbx
        .take(&mut sim)
        .into_iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(fresh.len(), 2);
    pbx.accept(&mut sim, &fresh, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(
        &mut sim,
        "presence",
        "active;expires=600",
        Some(PIDF_CLOSED),
    );
    let m = sim.take_to(&gxp.addr());
    let right = answer_notifies(&mut sim, &m, &gxp.addr());
    assert!(
        right
            .last()
            .is_some_and(|n| is_rendering(n, MergedState::Offline)),
        "offline: {m:?}"
    );
    assert!(sim.elapsed() - back <= Duration::from_secs(10));
}

/// Over TCP (through a NAT router) the upstream reaches the bridge only over the
/// connection the bridge opened. When that connection drops, the bridge opens a
/// new one at once (a keep-alive) and refreshes every upstream subscription in
/// its dialog on it, so that the provider's NOTIFYs follow; the lamps keep their
/// state meanwhile, and the upstream is not declared lost.
#[test]
fn a_lost_tcp_connection_to_the_upstream_is_reopened_and_the_subscriptions_refreshed_on_it() {
    use blf_bridge::flow::ConnId;
    use blf_bridge::sip::Transport;
    let config = base_config("").replace(
        "transport = \"udp\"\nkeepalive = \"none\"",
        "transport = \"tcp\"\nkeepalive = \"options\"\nkeepalive_interval = 20",
    );
    let mut sim = Sim::with_config(config);
    // every request to the upstream goes over TCP; the first answer names the
    // connection (the runtime opened it for the first request)
    let answer = |sim: &mut Sim, conn: u64, msgs: &[(blf_bridge::flow::Flow, SipMessage)]| {
        for (flow, m) in msgs {
            assert_eq!(flow.transport, Transport::Tcp, "{}", text(m));
            let extra = if is_method(m, Method::Subscribe) {
                "Contact: <sip:127.0.0.1:5070;transport=tcp>\r\nExpires: 600\r\n"
            } else {
                ""
            };
            let tag = format!("pbx-{}", hv(m, HeaderName::CallId).len());
            let r = reply(m, 200, "OK", Some(&tag), extra);
            sim.tcp_from(UPSTREAM, conn, &r);
        }
    };
    sim.advance(Duration::ZERO);
    let ping = sim.take_flows_to(UPSTREAM);
    assert_eq!(ping.len(), 1, "a keep-alive at start");
    answer(&mut sim, 7, &ping);

    let mut gxp = Phone::new(40000, "1002");
    gxp.subscribe(&mut sim, 3600);
    let subs = sim.take_flows_to(UPSTREAM);
    assert_eq!(subs.len(), 2, "dialog and presence");
    answer(&mut sim, 7, &subs);
    // the PBX's NOTIFYs come over the same connection: 1002 is busy
    for (_, m) in &subs {
        let (ct, body) = if event_of(m) == "dialog" {
            (
                "application/dialog-info+xml",
                CONFIRMED.replace("VERSION", "0"),
            )
        } else {
            ("application/pidf+xml", PIDF_OPEN.to_string())
        };
        // (tcp_from turns LF into CRLF: the length is the body's as sent)
        let body = crlf(&body);
        let tag = format!("pbx-{}", hv(m, HeaderName::CallId).len());
        let notify = format!(
            "NOTIFY sip:blf-bridge@127.0.0.1:5060;transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKn-{tag}-{ev}\r\nMax-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {cid}\r\nCSeq: 1 NOTIFY\r\nContact: <sip:127.0.0.1:5070;transport=tcp>\r\nEvent: {ev}\r\nSubscription-State: active;expires=600\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n{body}",
            to = hv(m, HeaderName::To),
            from = hv(m, HeaderName::From),
            cid = hv(m, HeaderName::CallId),
            ev = event_of(m),
            len = body.len(),
        );
        sim.tcp_from(UPSTREAM, 7, &notify);
    }
    let oks = sim.take_to(UPSTREAM);
    assert_eq!(oks.len(), 2, "both NOTIFYs answered");
    for o in &oks {
        assert_eq!(o.status(), Some(200), "{}", text(o));
    }
    // (one NOTIFY in flight per phone: answer until none is left)
    let mut last = None;
    loop {
        let m = sim.take_to(&gxp.addr());
        let n = answer_notifies(&mut sim, &m, &gxp.addr());
        if n.is_empty() {
            break;
        }
        last = n.last().cloned();
    }
    assert_eq!(state_of(&last.unwrap()), "Confirmed", "busy");

    // a keep-alive goes out on it and dies with it: the NAT router forgot the
    // connection and the provider reset it
    sim.advance(Duration::from_secs(20));
    let ping = sim.take_flows_to(UPSTREAM);
    assert_eq!(ping.len(), 1);
    sim.advance(Duration::from_millis(300));
    sim.ep.connection_closed(ConnId(7), sim.now);
    while let Some(t) = sim.ep.poll_transmit() {
        sim.pending.push(t);
    }
    // at once: a keep-alive and both subscriptions refreshed in their dialogs,
    // all for the runtime to send over a new connection (none named)
    let again = sim.take_flows_to(UPSTREAM);
    let methods: Vec<String> = again
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(m.method().unwrap().as_bytes()).into_owned())
        .collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "OPTIONS").count(),
        1,
        "{methods:?}"
    );
    let refreshes: Vec<&SipMessage> = again
        .iter()
        .map(|(_, m)| m)
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(refreshes.len(), 2, "{methods:?}");
    for (flow, _) in &again {
        assert_eq!(flow.conn, None, "not the dead connection");
        assert_eq!(flow.transport, Transport::Tcp);
    }
    for r in &refreshes {
        assert!(r.to_tag().is_some(), "a refresh in its dialog: {}", text(r));
        let before = subs
            .iter()
            .find(|(_, s)| hv(s, HeaderName::CallId) == hv(r, HeaderName::CallId));
        assert!(before.is_some(), "same dialog (Call-ID)");
    }
    // answered on the new connection (9); the lamp never left busy
    answer(&mut sim, 9, &again);
    assert!(sim.take_to(&gxp.addr()).is_empty(), "no lamp change");
    assert!(!sim.ep.liveness().lost);
    // and a second loss of a connection that is not the upstream's changes nothing
    sim.ep.connection_closed(ConnId(7), sim.now);
    while let Some(t) = sim.ep.poll_transmit() {
        sim.pending.push(t);
    }
    assert!(sim.take_to(UPSTREAM).is_empty());
    assert_eq!(sim.ep.status(sim.now).counters.upstream_reconnects, 1);
}

/// Whether a GXP NOTIFY carries exactly the profile's rendering of `state`.
fn is_rendering(m: &SipMessage, state: MergedState) -> bool {
    use blf_bridge::presence::TargetView;
    use blf_bridge::profile::{ProfileSet, render};
    let set = ProfileSet::builtin();
    let p = set.get("grandstream-gxp").unwrap();
    let strip = |b: &str| {
        let root = b.find("<dialog-info").unwrap_or(0);
        let i = b[root..]
            .find(" version=\"")
            .map(|i| root + i + 10)
            .unwrap_or(0);
        let j = b[i..].find('"').map(|j| i + j).unwrap_or(i);
        format!("{}{}", &b[..i], &b[j..]).trim_end().to_string()
    };
    let body = String::from_utf8_lossy(m.body()).into_owned();
    render(p, "sip:1002@pbx.test", &TargetView::new(state))
        .document()
        .is_some_and(|d| strip(&d.with_version(0)) == strip(&body))
}

/// SIGHUP: reloaded profiles take effect at once; a phone whose rendering
/// changed gets a NOTIFY in its dialog, the others get nothing; nothing is lost.
#[test]
fn reload_renders_changed_profiles_again_and_keeps_every_subscription() {
    let mut sim = Sim::new_persistent("");
    let mut pbx = FakePbx::default();
    let mut gxp = Phone::new(40000, "1002");
    let mut wave = Phone::with_ua(40002, "1002", "Grandstream Wave");
    gxp.subscribe(&mut sim, 3600);
    wave.subscribe(&mut sim, 3600);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(
        &mut sim,
        "presence",
        "active;expires=600",
        Some(PIDF_CLOSED),
    );
    let m = sim.take_to(&gxp.addr());
    let before = answer_notifies(&mut sim, &m, &gxp.addr());
    assert!(String::from_utf8_lossy(before[0].body()).contains("display=\"Offline\""));
    let m = sim.take_to(&wave.addr());
    answer_notifies(&mut sim, &m, &wave.addr());

    // an operator overrides the GXP profile: offline now says "Away"
    let dir = std::env::temp_dir().join(format!("blf-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gxp_profile = include_str!("../profiles/grandstream-gxp.toml")
        .replace("remote_display = \"Offline\"", "remote_display = \"Away\"");
    std::fs::write(dir.join("grandstream-gxp.toml"), gxp_profile).unwrap();
    let profiles = blf_bridge::profile::ProfileSet::load(Some(&dir)).unwrap();
    let cfg = blf_bridge::config::Config::parse(&sim.config, "sim.toml", &|_| None).unwrap();
    let now = sim.now;
    sim.ep
        .reload(std::sync::Arc::new(cfg), std::sync::Arc::new(profiles), now);
    let _ = std::fs::remove_dir_all(&dir);
    sim.advance(Duration::ZERO); // collect what the endpoint sent
    let m = sim.take_to(&gxp.addr());
    let after = answer_notifies(&mut sim, &m, &gxp.addr());
    assert_eq!(after.len(), 1, "the GXP's rendering changed: one NOTIFY");
    assert!(String::from_utf8_lossy(after[0].body()).contains("display=\"Away\""));
    assert_eq!(hv(&after[0], HeaderName::CallId), gxp.call_id);
    assert!(cseq(&after[0]) > cseq(&before[0]));
    assert!(sim.take_to(&wave.addr()).is_empty(), "the Wave's did not");
    assert_eq!(sim.ep.subscriptions().phones().count(), 2);
    // later changes use the new profile too
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    answer_notifies(&mut sim, &m, &gxp.addr());
    pbx.notify(
        &mut sim,
        "presence",
        "active;expires=600",
        Some(PIDF_CLOSED),
    );
    let m = sim.take_to(&gxp.addr());
    let n = answer_notifies(&mut sim, &m, &gxp.addr());
    assert!(String::from_utf8_lossy(n.last().unwrap().body()).contains("display=\"Away\""));
}

/// SIGTERM: no new request is taken (the phone retransmits it to the next
/// start), the transactions in flight finish, and phone subscriptions are not
/// terminated.
#[test]
fn a_graceful_stop_takes_no_new_request_and_drains_without_terminating_anyone() {
    let mut sim = Sim::new_persistent("");
    let mut pbx = FakePbx::default();
    let mut gxp = Phone::new(40000, "1002");
    gxp.subscribe(&mut sim, 3600);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    let m = sim.take_to(&gxp.addr());
    let notify: Vec<SipMessage> = m
        .into_iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    assert!(
        !sim.ep.is_drained(),
        "a NOTIFY waits for the phone's answer"
    );

    let now = sim.now;
    sim.ep.begin_shutdown(now);
    let mut other = Phone::new(40002, "1003");
    let msgs = other.subscribe(&mut sim, 3600);
    assert!(msgs.is_empty(), "a new request is not taken: {msgs:?}");
    assert!(pbx.take(&mut sim).is_empty(), "nothing new upstream");

    answer_notifies(&mut sim, &notify[..1], &gxp.addr());
    assert!(sim.ep.is_drained(), "nothing waits for an answer any more");
    sim.advance(Duration::from_secs(2));
    let m = sim.take_to(&gxp.addr());
    assert!(
        !m.iter()
            .any(|m| hv(m, HeaderName::SubscriptionState).starts_with("terminated")),
        "no terminated NOTIFY: {m:?}"
    );
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
}
