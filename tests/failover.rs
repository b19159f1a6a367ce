//! Failover and failback between the servers `[upstream] proxy` resolved to
//! (RFC 3263 SRV: two PBX servers, priority 10 at 127.0.0.1:5070 and 20 at
//! 127.0.0.1:5080), sans-IO with the simulated clock: the runtime's resolver
//! is replaced by `Endpoint::set_upstreams`, its transport errors by
//! `Endpoint::transport_failed`.

mod sim;

use blf_bridge::endpoint::failover::FAILBACK_PROBE_INTERVAL;
use blf_bridge::flow::Flow;
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::*;
use std::collections::HashSet;
use std::time::Duration;

const A: &str = UPSTREAM; // priority 10
const B: &str = "127.0.0.1:5080"; // priority 20
const GXP: &str = "Grandstream GXP2170 1.0.11.3";
const PHONE: &str = "127.0.0.1:40000";

fn servers() -> Vec<Flow> {
    vec![Flow::udp(addr(A)), Flow::udp(addr(B))]
}

fn options_sim(interval: u64) -> Sim {
    let config = base_config("").replace(
        "keepalive = \"none\"",
        &format!("keepalive = \"options\"\nkeepalive_interval = {interval}"),
    );
    let mut sim = Sim::with_config(config);
    let now = sim.now;
    sim.ep.set_upstreams(servers(), now);
    sim
}

/// A GXP at [`PHONE`] subscribing to 1002's dialog state.
fn subscribe_phone(sim: &mut Sim) {
    let req = format!(
        "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP {PHONE};branch=z9hG4bKgxp1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=gxptag\r\n\
To: <sip:1002@pbx.test>\r\n\
Call-ID: gxp-1002@192.168.1.50\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:1001@{PHONE}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {GXP}\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n"
    );
    sim.udp_from(PHONE, &req);
    let r = sim.take_to(PHONE);
    assert!(r.iter().any(|m| m.status() == Some(200)), "{r:?}");
}

/// The phone's NOTIFYs so far (answered 200), as the dialog state they
/// render: "confirmed" (busy), "early" (ringing), "terminated" (idle; the GXP
/// profile renders unknown the same way) or "none".
fn lamps(sim: &mut Sim) -> Vec<&'static str> {
    let msgs = sim.take_to(PHONE);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| is_method(m, Method::Notify)) {
        if !seen.insert(hv(m, HeaderName::CSeq)) {
            continue;
        }
        sim.udp_from(PHONE, &reply(m, 200, "OK", None, ""));
        let b = body(m);
        out.push(
            ["confirmed", "early", "terminated"]
                .into_iter()
                .find(|s| b.contains(&format!("<state>{s}</state>")))
                .unwrap_or("none"),
        );
    }
    out
}

/// The bridge's merged state of 1002 (`unknown`, `idle`, `busy`, …).
fn view(sim: &Sim) -> &'static str {
    sim.ep.status(sim.now).targets[0].state
}

/// Answer (or not) the OPTIONS pings `pbx` got; the other messages are
/// handed back. Returns (pings, rest).
fn pings(sim: &mut Sim, pbx: &mut FakePbx, answer: bool) -> (usize, Vec<SipMessage>) {
    let (p, rest): (Vec<_>, Vec<_>) = pbx
        .take(sim)
        .into_iter()
        .partition(|m| is_method(m, Method::Options));
    if answer {
        for m in &p {
            sim.udp_from(pbx.addr(), &reply(m, 200, "OK", Some("pbx"), ""));
        }
    }
    (p.len(), rest)
}

fn subscribes(msgs: &[SipMessage]) -> Vec<SipMessage> {
    msgs.iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .cloned()
        .collect()
}

/// Start on A: pinged, 1002 watched, busy on A.
fn on_a_busy(sim: &mut Sim, a: &mut FakePbx) {
    sim.advance(Duration::ZERO);
    assert_eq!(pings(sim, a, true).0, 1, "a keep-alive to A at start");
    subscribe_phone(sim);
    let up = a.take(sim);
    assert_eq!(a.accept(sim, &up, 600), 2, "dialog and presence on A");
    a.notify(sim, "dialog", "active;expires=600", Some(CONFIRMED));
    a.notify(sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    assert_eq!(lamps(sim), vec!["confirmed"]);
    assert_eq!(view(sim), "busy");
    assert_eq!(sim.ep.upstreams().1, 0);
}

#[test]
fn a_dead_server_is_left_for_the_next_and_the_lamps_come_back_from_it() {
    let mut sim = options_sim(30);
    let mut a = FakePbx::default();
    let mut b = FakePbx::at(B);
    on_a_busy(&mut sim, &mut a);
    let a_call_ids: HashSet<String> = a.subs.iter().map(|s| s.call_id.clone()).collect();

    // A dies: nothing answers there any more. B answers whatever reaches it.
    let died = sim.now;
    let mut on_b = None;
    let mut seen_lamps = Vec::new();
    let mut views = vec![view(&sim)];
    while sim.now - died < Duration::from_secs(40) {
        sim.advance(Duration::from_millis(500));
        pings(&mut sim, &mut a, false);
        let (_, rest) = pings(&mut sim, &mut b, true);
        let subs = subscribes(&rest);
        if !subs.is_empty() {
            assert_eq!(b.accept(&mut sim, &subs, 600), 2, "{subs:?}");
            on_b.get_or_insert(sim.now - died);
        }
        seen_lamps.extend(lamps(&mut sim));
        if views.last() != Some(&view(&sim)) {
            views.push(view(&sim));
        }
    }
    let on_b = on_b.expect("the subscriptions moved to B");
    // a ping every 30 s, unanswered for 4 s: on B within 35 s
    assert!(on_b <= Duration::from_secs(35), "{on_b:?}");
    assert_eq!(sim.ep.upstreams().1, 1, "B in use");
    assert_eq!(
        views,
        vec!["busy", "unknown"],
        "unknown while nothing is known"
    );
    assert_eq!(
        seen_lamps,
        vec!["terminated"],
        "the phone shows the unknown rendering"
    );
    // fresh dialogs on B, not A's dialogs refreshed there
    for s in &b.subs {
        assert!(!a_call_ids.contains(&s.call_id), "{s:?}");
    }
    // B says 1002 is still busy: the lamp follows
    b.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    b.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    assert_eq!(view(&sim), "busy");
    assert_eq!(lamps(&mut sim), vec!["confirmed"]);
    let st = sim.ep.status(sim.now);
    assert_eq!(st.counters.upstream_failovers, 1);
    assert_eq!((st.upstream_server.as_str(), st.upstream_servers), (B, 2));

    // trust by flow: B's dialogs take NOTIFYs from the resolved servers only
    let forged = format!(
        "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKforged\r\n\
Max-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 99 NOTIFY\r\nEvent: dialog\r\n\
Subscription-State: active;expires=600\r\nContent-Type: application/dialog-info+xml\r\nContent-Length: {}\r\n\r\n{}",
        b.subs[0].target,
        b.subs[0].tag,
        b.subs[0].watcher,
        b.subs[0].call_id,
        EARLY.len(),
        EARLY
    );
    let forged = if b.subs[0].event == "dialog" {
        forged
    } else {
        forged.replace("Event: dialog", "Event: presence")
    };
    sim.udp_from("127.0.0.1:5090", &forged);
    let r = sim.take_to("127.0.0.1:5090");
    assert_eq!(r.first().and_then(|m| m.status()), Some(403), "{r:?}");
    assert!(
        lamps(&mut sim).is_empty(),
        "a forged NOTIFY changes nothing"
    );
}

#[test]
fn the_preferred_server_is_probed_and_used_again_when_it_answers() {
    let mut sim = options_sim(30);
    let mut a = FakePbx::default();
    let mut b = FakePbx::at(B);
    on_a_busy(&mut sim, &mut a);
    // A fails (an ICMP error reported by the runtime): B at once
    let now = sim.now;
    sim.ep.transport_failed(Flow::udp(addr(A)), now);
    sim.advance(Duration::ZERO);
    assert_eq!(sim.ep.upstreams().1, 1);
    assert_eq!(pings(&mut sim, &mut b, true).0, 1, "B pinged at once");
    assert_eq!(view(&sim), "unknown");
    assert_eq!(lamps(&mut sim), vec!["terminated"]);
    let subs = subscribes(&b.take(&mut sim));
    assert_eq!(b.accept(&mut sim, &subs, 600), 2);
    b.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    b.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    assert_eq!(lamps(&mut sim), vec!["confirmed"]);
    a.take(&mut sim);

    // A is still dead: probed every 30 s, unanswered; B stays in use
    let mut probes = 0;
    for _ in 0..70 {
        sim.advance(Duration::from_secs(1));
        probes += pings(&mut sim, &mut a, false).0;
        pings(&mut sim, &mut b, true);
    }
    assert_eq!(probes, 2, "a probe to A every 30 s");
    assert_eq!(sim.ep.upstreams().1, 1);
    assert!(lamps(&mut sim).is_empty());

    // A is back: its next probe is answered, the subscriptions move back
    // (fresh dialogs on A) and the lamp keeps its state meanwhile
    let mut moved = false;
    for _ in 0..FAILBACK_PROBE_INTERVAL.as_secs() {
        sim.advance(Duration::from_secs(1));
        let (n, _) = pings(&mut sim, &mut a, true);
        pings(&mut sim, &mut b, true);
        if n > 0 {
            // the probe's answer moves the subscriptions at once
            let rest = a.take(&mut sim);
            let subs = subscribes(&rest);
            assert_eq!(sim.ep.upstreams().1, 0, "back on A");
            assert_eq!(a.accept(&mut sim, &subs, 600), 2, "fresh on A: {rest:?}");
            moved = true;
            break;
        }
    }
    assert!(moved, "the probe went out within the interval");
    assert!(lamps(&mut sim).is_empty(), "no unknown while moving back");
    assert_eq!(view(&sim), "busy", "the last state is kept until A speaks");
    a.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    a.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    assert_eq!(view(&sim), "idle");
    assert_eq!(lamps(&mut sim), vec!["terminated"]);
    // keep-alives go to A from now on
    b.take(&mut sim);
    sim.advance(Duration::from_secs(31));
    assert_eq!(pings(&mut sim, &mut a, true).0, 1);
    assert_eq!(pings(&mut sim, &mut b, true).0, 0);
    assert_eq!(sim.ep.status(sim.now).counters.upstream_failovers, 2);
}

#[test]
fn a_renewed_resolution_probes_the_preferred_server_at_once() {
    let mut sim = options_sim(30);
    let mut a = FakePbx::default();
    let mut b = FakePbx::at(B);
    on_a_busy(&mut sim, &mut a);
    let now = sim.now;
    sim.ep.transport_failed(Flow::udp(addr(A)), now);
    sim.advance(Duration::ZERO);
    pings(&mut sim, &mut b, true);
    a.take(&mut sim);
    // the TTL ran out, the runtime resolved again (same servers): A is
    // probed now, not 30 s later
    sim.advance(Duration::from_secs(3));
    a.take(&mut sim);
    let now = sim.now;
    sim.ep.set_upstreams(servers(), now);
    sim.advance(Duration::ZERO);
    assert_eq!(pings(&mut sim, &mut a, false).0, 1);
    // a resolution without B: A is used (B is not a server any more)
    let now = sim.now;
    sim.ep.set_upstreams(vec![Flow::udp(addr(A))], now);
    assert_eq!(sim.ep.upstreams(), (vec![Flow::udp(addr(A))].into(), 0));
}

#[test]
fn a_transaction_timeout_to_the_server_in_use_moves_to_the_next() {
    // no keep-alive: only Timer F tells
    let mut sim = Sim::new("");
    let now = sim.now;
    sim.ep.set_upstreams(servers(), now);
    let mut a = FakePbx::default();
    let mut b = FakePbx::at(B);
    subscribe_phone(&mut sim);
    assert_eq!(subscribes(&a.take(&mut sim)).len(), 2);
    // A never answers: after 32 s (Timer F) the SUBSCRIBEs go to B (the phone
    // answers its NOTIFYs meanwhile, as phones do)
    let mut moved_at = None;
    for _ in 0..40 {
        sim.advance(Duration::from_secs(1));
        lamps(&mut sim);
        a.take(&mut sim);
        let subs = subscribes(&b.take(&mut sim));
        if !subs.is_empty() {
            moved_at.get_or_insert(sim.elapsed());
            b.accept(&mut sim, &subs, 600);
        }
    }
    let at = moved_at.expect("moved to B");
    assert!(
        at >= Duration::from_secs(32) && at <= Duration::from_secs(34),
        "{at:?}"
    );
    assert_eq!(sim.ep.upstreams().1, 1);
    assert_eq!(b.subs.len(), 2, "dialog and presence on B");
    // a response to B's request from A is not taken (trust by flow)
    b.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    lamps(&mut sim);
    sim.advance(Duration::from_secs(600 - 60));
    let refresh: Vec<SipMessage> = subscribes(&b.take(&mut sim));
    assert!(!refresh.is_empty(), "refreshed on B");
    let dropped = sim.ep.stats().responses_dropped;
    sim.udp_from(
        A,
        &reply(&refresh[0], 200, "OK", Some("x"), "Expires: 600\r\n"),
    );
    assert_eq!(sim.ep.stats().responses_dropped, dropped + 1);
}

#[test]
fn with_every_server_silent_only_probes_go_out_until_one_answers() {
    let mut sim = options_sim(30);
    let mut a = FakePbx::default();
    let mut b = FakePbx::at(B);
    on_a_busy(&mut sim, &mut a);
    // both dead for two minutes: pings take turns, no SUBSCRIBE goes out
    let (mut pings_a, mut pings_b, mut subs) = (0, 0, 0);
    for _ in 0..240 {
        sim.advance(Duration::from_millis(500));
        let (n, rest) = pings(&mut sim, &mut a, false);
        pings_a += n;
        subs += subscribes(&rest).len();
        let (n, rest) = pings(&mut sim, &mut b, false);
        pings_b += n;
        subs += subscribes(&rest).len();
        lamps(&mut sim);
    }
    assert_eq!(subs, 0, "no SUBSCRIBE to servers that do not answer");
    assert!(pings_a >= 20 && pings_b >= 20, "{pings_a} {pings_b}");
    assert_eq!(view(&sim), "unknown");
    assert_eq!(
        sim.ep.status(sim.now).counters.upstream_failovers,
        1,
        "one move counted (and logged at warn), not every turn"
    );
    // B answers again: everything is subscribed afresh there
    let mut fresh = Vec::new();
    for _ in 0..10 {
        sim.advance(Duration::from_millis(500));
        a.take(&mut sim);
        let (_, rest) = pings(&mut sim, &mut b, true);
        fresh.extend(subscribes(&rest));
        fresh.extend(subscribes(&b.take(&mut sim)));
        if !fresh.is_empty() {
            break;
        }
    }
    assert_eq!(b.accept(&mut sim, &fresh, 600), 2, "{fresh:?}");
    assert_eq!(sim.ep.upstreams().1, 1);
}
