//! Issue 9, items 1, 2, 8 and 9: forged responses, requests injected into the
//! bridge's upstream subscriptions, challenges from elsewhere, relay-check
//! bypasses and the TCP binding fallback — each attack as the issue ran it,
//! sans-IO on the simulated network of `tests/sim` (nothing leaves the process).

mod sim;

use blf_bridge::flow::{ConnId, Flow};
use blf_bridge::presence::{DialogState, parse_dialog_info};
use blf_bridge::sip::{HeaderName, Method, SipMessage, Transport};
use sim::msg::Req;
use sim::*;
use std::time::Duration;

const P1001: &str = "127.0.0.1:5062";
const P1002: &str = "127.0.0.1:5063";
/// A host outside the default `[security] allow` (TEST-NET-1).
const OUTSIDER: &str = "192.0.2.66:5060";
const GXP: &str = "Grandstream GXP2170 1.0.11.3";

fn status(m: &SipMessage) -> u16 {
    m.status().unwrap_or(0)
}

fn one(mut v: Vec<SipMessage>, what: &str) -> SipMessage {
    assert_eq!(
        v.len(),
        1,
        "{what}: expected one message, got {:?}",
        v.iter().map(text).collect::<Vec<_>>()
    );
    v.remove(0)
}

fn values(m: &SipMessage, name: HeaderName) -> Vec<String> {
    m.values(name)
        .map(|s| String::from_utf8_lossy(m.slice(s)).into_owned())
        .collect()
}

fn ruri(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.request_uri().unwrap_or_default()).into_owned()
}

/// A response whose top Via names the bridge with one of its proxy branches,
/// and whose second Via names `next` (`SIP/2.0/UDP host:port`).
fn forged_response(i: u32, next: &str) -> String {
    format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bb-{i:016x}-deadbeefcafe\r\n\
Via: {next};branch=z9hG4bKvictim{i}\r\n\
From: <sip:a@pbx.test>;tag=a{i}\r\n\
To: <sip:b@pbx.test>;tag=b{i}\r\n\
Call-ID: forged{i}@x\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Length: 0\r\n\r\n"
    )
}

// ------------------------------------------------------------------ item 1

#[test]
fn two_thousand_forged_responses_from_outside_allow_relay_nothing() {
    let mut sim = Sim::new("");
    let mut transmits = 0;
    for i in 0..2000 {
        let next = if i % 2 == 0 {
            "SIP/2.0/UDP 127.0.0.1:9999"
        } else {
            "SIP/2.0/TCP 127.0.0.1:9998"
        };
        sim.udp_from(OUTSIDER, &forged_response(i, next));
        transmits += sim.pending.len();
        sim.clear();
    }
    assert_eq!(transmits, 0, "forged responses were relayed");
    assert_eq!(sim.ep.stats().responses_dropped, 2000);
    assert_eq!(sim.ep.proxy().stats().stateless, 0);
}

#[test]
fn a_stray_response_from_the_upstream_goes_only_to_an_allowed_phone_over_udp() {
    let mut sim = Sim::new("");
    // naming a TCP hop: no connection is opened for a stray
    sim.udp_from(UPSTREAM, &forged_response(1, "SIP/2.0/TCP 127.0.0.1:9998"));
    assert!(sim.pending.is_empty(), "{:?}", sim.pending);
    // a host outside allow, a broadcast address, an unspecified one: dropped
    for (i, next) in [
        "SIP/2.0/UDP 203.0.113.9:5060",
        "SIP/2.0/UDP 255.255.255.255:5060",
        "SIP/2.0/UDP 127.0.0.1:5062;received=255.255.255.255",
        "SIP/2.0/UDP 224.0.0.1:5060",
        "SIP/2.0/UDP 0.0.0.0:5060",
    ]
    .iter()
    .enumerate()
    {
        sim.udp_from(UPSTREAM, &forged_response(10 + i as u32, next));
        assert!(sim.pending.is_empty(), "{next}: {:?}", sim.pending);
    }
    // from a phone (allowed, but not the upstream): dropped
    sim.udp_from(P1002, &forged_response(20, "SIP/2.0/UDP 127.0.0.1:5062"));
    assert!(sim.pending.is_empty(), "{:?}", sim.pending);
    assert_eq!(sim.ep.stats().responses_dropped, 7);
    // what strays are for: a late response from the upstream to an allowed phone
    sim.udp_from(UPSTREAM, &forged_response(30, "SIP/2.0/UDP 127.0.0.1:5062"));
    let (flow, m) = sim.take_flows_to(P1001).remove(0);
    assert_eq!((flow.transport, status(&m)), (Transport::Udp, 200));
}

fn outbound_message(branch: &str) -> Req {
    Req::new("MESSAGE", "sip:1002@pbx.test")
        .phone(5062, branch)
        .from("1001", "m1")
        .to("1002")
        .call_id(&format!("{branch}@phone"))
        .body("text/plain", "hello")
}

#[test]
fn a_response_with_the_right_branch_from_the_wrong_source_is_not_relayed() {
    let mut sim = Sim::new("");
    sim.udp_from(P1001, &outbound_message("z9hG4bKm1"));
    let up = one(sim.take_to(UPSTREAM), "MESSAGE upstream");
    // another phone (allowed) and an outsider answer for the upstream
    sim.udp_from(P1002, &reply(&up, 200, "OK", Some("evil"), ""));
    sim.udp_from(OUTSIDER, &reply(&up, 200, "OK", Some("evil"), ""));
    assert!(sim.take_to(P1001).is_empty(), "forged 200 relayed");
    assert_eq!(sim.ep.stats().responses_dropped, 2);
    // the real answer still goes through (the transaction was not touched)
    sim.udp_from(UPSTREAM, &reply(&up, 202, "Accepted", Some("real"), ""));
    assert_eq!(status(&one(sim.take_to(P1001), "202 to phone")), 202);
}

// ------------------------------------------------------------------ item 2

/// A GXP phone on `port` subscribes to the dialog state of `target`.
fn blf_subscribe(port: u16, target: &str, n: u32) -> Req {
    Req::new("SUBSCRIBE", &format!("sip:{target}@pbx.test"))
        .phone(port, &format!("z9hG4bKblf{port}x{n}"))
        .from("1001", "gxp1")
        .to(target)
        .call_id(&format!("blf-{port}-{target}@phone"))
        .cseq(n)
        .contact(&format!("<sip:1001@127.0.0.1:{port}>"))
        .header("Event", "dialog")
        .header("Accept", "application/dialog-info+xml")
        .header("Expires", "600")
        .header("User-Agent", GXP)
}

fn dialog_state(m: &SipMessage) -> Option<DialogState> {
    let d = parse_dialog_info(m.body()).expect("dialog-info body");
    d.dialogs.first().map(|x| x.state)
}

fn notifies(msgs: &[SipMessage]) -> Vec<SipMessage> {
    msgs.iter()
        .filter(|m| is_method(m, Method::Notify))
        .cloned()
        .collect()
}

/// A phone watching 1002, both upstream subscriptions established; returns the
/// phone's NOTIFYs so far (answered).
fn watching(sim: &mut Sim, pbx: &mut FakePbx) {
    sim.udp_from(P1001, &blf_subscribe(5062, "1002", 1));
    assert_eq!(status(&one(sim.take_to(P1001), "200 SUBSCRIBE")), 200);
    let up = pbx.take(sim);
    assert_eq!(pbx.accept(sim, &up, 600), 2);
    pbx.notify(sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    answer_all(sim);
}

/// The phone answers every NOTIFY it got; returns them.
fn answer_all(sim: &mut Sim) -> Vec<SipMessage> {
    let n = notifies(&sim.take_to(P1001));
    for m in &n {
        sim.udp_from(P1001, &reply(m, 200, "OK", None, ""));
    }
    sim.take_to(P1001);
    n
}

#[test]
fn a_notify_injected_from_a_phone_port_into_an_upstream_subscription_changes_nothing() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    watching(&mut sim, &mut pbx);
    // the attacker knows the upstream dialog (Call-ID, both tags) and sends,
    // from a phone's port, a confirmed call with the highest version there is
    let s = pbx
        .subs
        .iter()
        .find(|s| s.event == "dialog")
        .unwrap()
        .clone();
    let body = CONFIRMED.replace("VERSION", "4294967295");
    let inject = format!(
        "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bKinject1;rport\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 99 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active;expires=600\r\nContent-Type: application/dialog-info+xml\r\nContent-Length: {}\r\n\r\n{body}",
        s.target,
        s.tag,
        s.watcher,
        s.call_id,
        body.len()
    );
    sim.raw_from(Flow::udp(addr(P1002)), inject.as_bytes());
    let r = one(sim.take_to(P1002), "answer to the injected NOTIFY");
    assert_ne!(status(&r), 200, "injected NOTIFY accepted");
    assert!(
        answer_all(&mut sim).is_empty(),
        "the watcher was told about the forged call"
    );
    // the real call and its end still reach the watcher (the key is not frozen)
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let n = answer_all(&mut sim);
    assert_eq!(
        dialog_state(n.last().unwrap()),
        Some(DialogState::Confirmed)
    );
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    let n = answer_all(&mut sim);
    assert_ne!(
        n.last().and_then(dialog_state),
        Some(DialogState::Confirmed),
        "the key stayed frozen on confirmed"
    );
    assert!(
        !n.is_empty(),
        "the end of the call never reached the watcher"
    );
}

#[test]
fn a_huge_version_from_the_upstream_does_not_freeze_the_key() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    watching(&mut sim, &mut pbx);
    let i = pbx.subs.iter().rposition(|s| s.event == "dialog").unwrap();
    pbx.subs[i].version = u32::MAX - 1;
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let n = answer_all(&mut sim);
    let v_phone = parse_dialog_info(n[0].body()).unwrap().version.unwrap();
    assert!(v_phone < 10, "the phone's version jumped to {v_phone}");
    // the upstream's counter starts over (a restart): its state is taken again
    pbx.subs[i].version = 5;
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    let n = answer_all(&mut sim);
    assert_eq!(
        n.len(),
        1,
        "the idle state after the huge version was ignored"
    );
    assert_ne!(dialog_state(&n[0]), Some(DialogState::Confirmed));
}

/// The two SUBSCRIBEs of a fresh target (dialog, presence), unanswered.
fn fresh_subscribes(sim: &mut Sim, pbx: &mut FakePbx, target: &str, n: u32) -> Vec<SipMessage> {
    sim.udp_from(P1001, &blf_subscribe(5062, target, n));
    assert_eq!(status(&one(sim.take_to(P1001), "200 SUBSCRIBE")), 200);
    let up = pbx.take(sim);
    assert_eq!(up.len(), 2);
    up
}

fn challenge(sub: &SipMessage, realm: &str) -> String {
    reply(
        sub,
        401,
        "Unauthorized",
        Some("ch"),
        &format!(
            "WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"n{realm}\", qop=\"auth\"\r\n"
        ),
    )
}

fn authorized(msgs: &[SipMessage]) -> usize {
    msgs.iter()
        .filter(|m| {
            is_method(m, Method::Subscribe) && m.header(HeaderName::Authorization).is_some()
        })
        .count()
}

#[test]
fn a_challenge_from_a_phone_port_is_not_answered_with_the_bridge_credentials() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let up = fresh_subscribes(&mut sim, &mut pbx, "1002", 1);
    sim.udp_from(P1002, &challenge(&up[0], "attacker.example"));
    sim.udp_from(OUTSIDER, &challenge(&up[1], "attacker.example"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(
        authorized(&pbx.take(&mut sim)),
        0,
        "digest sent to the attacker"
    );
    assert!(sim.take_to(P1002).is_empty());
    // the upstream's own challenge is answered
    sim.udp_from(UPSTREAM, &challenge(&up[0], "pbx.test"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(authorized(&pbx.take(&mut sim)), 1);
}

#[test]
fn challenges_are_answered_for_the_account_realm_only() {
    // default: the first realm the upstream challenges with is kept
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let up = fresh_subscribes(&mut sim, &mut pbx, "1002", 1);
    sim.udp_from(UPSTREAM, &challenge(&up[0], "asterisk"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(authorized(&pbx.take(&mut sim)), 1, "first realm answered");
    sim.udp_from(UPSTREAM, &challenge(&up[1], "attacker.example"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(authorized(&pbx.take(&mut sim)), 0, "another realm answered");
    // a new target of the same account: its SUBSCRIBEs carry the account's
    // credentials for the kept realm at once (nonce reuse), and the kept
    // realm still rules
    let up = fresh_subscribes(&mut sim, &mut pbx, "1003", 2);
    assert_eq!(authorized(&up), 2, "pre-emptive credentials");
    assert!(
        up.iter()
            .all(|m| hv(m, HeaderName::Authorization).contains("realm=\"asterisk\""))
    );
    sim.udp_from(UPSTREAM, &challenge(&up[0], "pbx.test"));
    // the reused nonce expired: a new one in the kept realm is answered
    let renewed = challenge(&up[1], "asterisk").replace("nasterisk", "nasterisk2");
    sim.udp_from(UPSTREAM, &renewed);
    sim.advance(Duration::from_millis(10));
    assert_eq!(authorized(&pbx.take(&mut sim)), 1);

    // pinned: no other realm is ever answered
    let cfg = base_config("").replace(
        "user = \"1001\"\npassword = \"pass1001\"",
        "user = \"1001\"\npassword = \"pass1001\"\nrealm = \"pbx.test\"",
    );
    assert!(cfg.contains("realm = \"pbx.test\""));
    let mut sim = Sim::with_config(cfg);
    let mut pbx = FakePbx::default();
    let up = fresh_subscribes(&mut sim, &mut pbx, "1002", 1);
    sim.udp_from(UPSTREAM, &challenge(&up[0], "asterisk"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(
        authorized(&pbx.take(&mut sim)),
        0,
        "unpinned realm answered"
    );
    sim.udp_from(UPSTREAM, &challenge(&up[1], "pbx.test"));
    sim.advance(Duration::from_millis(10));
    assert_eq!(authorized(&pbx.take(&mut sim)), 1);
}

// ------------------------------------------------------------------ item 8

#[test]
fn a_strict_route_cannot_swap_in_a_foreign_request_uri() {
    let mut sim = Sim::new("");
    let invite = Req::new("INVITE", "sip:1002@pbx.test")
        .phone(5062, "z9hG4bKsr1")
        .route("<sip:victim@198.51.100.7>")
        .from("1001", "s1")
        .to("1002")
        .call_id("sr1@phone")
        .contact("<sip:1001@127.0.0.1:5062>");
    sim.udp_from(P1001, &invite);
    let up = sim.take_to(UPSTREAM);
    assert!(
        up.iter().all(|m| !ruri(m).contains("198.51.100.7")),
        "forwarded as {:?}",
        up.iter().map(text).collect::<Vec<_>>()
    );
    assert!(up.is_empty());
    let r = sim.take_to(P1001);
    assert_eq!(r.last().map(status), Some(403));
}

#[test]
fn a_made_up_dialog_with_a_route_set_is_not_relayed() {
    let mut sim = Sim::new("");
    for (i, m) in ["MESSAGE", "BYE"].iter().enumerate() {
        let req = Req::new(m, "sip:victim@198.51.100.7")
            .phone(5062, &format!("z9hG4bKmu{i}"))
            .route("<sip:127.0.0.1:5070;lr>")
            .from("1001", "mu")
            .to("sip:victim@198.51.100.7")
            .with_to_tag("made-up")
            .call_id(&format!("mu{i}@phone"));
        sim.udp_from(P1001, &req);
        assert!(sim.take_to(UPSTREAM).is_empty(), "{m} relayed");
        assert_eq!(status(&one(sim.take_to(P1001), "403")), 403);
    }
}

#[test]
fn an_in_dialog_request_needs_a_token_minted_for_that_phone() {
    let mut sim = Sim::new("");
    // a real dialog: the phone's INVITE gets the bridge's Record-Route
    let invite = Req::new("INVITE", "sip:1002@pbx.test")
        .phone(5062, "z9hG4bKd1")
        .from("1001", "d1")
        .to("1002")
        .call_id("d1@phone")
        .contact("<sip:1001@127.0.0.1:5062>");
    sim.udp_from(P1001, &invite);
    let inv = sim
        .take_to(UPSTREAM)
        .into_iter()
        .find(|m| is_method(m, Method::Invite))
        .unwrap();
    let rr = values(&inv, HeaderName::RecordRoute)
        .into_iter()
        .find(|v| v.contains("127.0.0.1:5060"))
        .unwrap();
    let bye = |branch: &str| {
        invite
            .in_dialog("BYE", 2, branch)
            .ruri("sip:1002@198.51.100.7:5074")
            .with_to_tag("callee")
            .route(&rr)
            .route("<sip:127.0.0.1:5070;lr>")
    };
    // the phone the token names: forwarded
    sim.udp_from(P1001, &bye("z9hG4bKd2"));
    let fwd = one(sim.take_to(UPSTREAM), "BYE upstream");
    assert_eq!(ruri(&fwd), "sip:1002@198.51.100.7:5074");
    sim.clear();
    // another host replaying that token: refused
    sim.udp_from("127.0.0.2:5062", &bye("z9hG4bKd3"));
    assert!(sim.take_to(UPSTREAM).is_empty(), "replayed token accepted");
    assert_eq!(status(&one(sim.take_to("127.0.0.2:5062"), "403")), 403);
}

// ------------------------------------------------------------------ item 9

fn inbound_invite(ruri: &str, call: &str) -> Req {
    Req::new("INVITE", ruri)
        .upstream(&format!("z9hG4bKk{call}"))
        .max_forwards(69)
        .from("1003", &format!("c{call}"))
        .to("1001")
        .call_id(&format!("{call}@caller"))
        .contact("<sip:1003@127.0.0.1:5074>")
}

#[test]
fn a_closed_tcp_binding_never_falls_back_to_its_contact_address() {
    let mut sim = Sim::new("");
    let phone_src = "127.0.0.1:40100";
    // the Contact names a third host
    let third = "127.0.0.1:5099";
    let reg = Req::new("REGISTER", "sip:pbx.test")
        .phone(5062, "z9hG4bKtr1")
        .tcp()
        .from("1001", "r1")
        .to("1001")
        .call_id("tr@phone")
        .contact(&format!("<sip:1001@{third};transport=tcp>"))
        .header("Expires", "3600");
    sim.tcp_from(phone_src, 9, &reg);
    let up = one(sim.take_to(UPSTREAM), "REGISTER");
    let contact = values(&up, HeaderName::Contact).remove(0);
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("k"),
            &format!("Contact: {contact};expires=600\r\n"),
        ),
    );
    sim.take_to(phone_src);
    let tok_uri = contact.trim_matches(['<', '>']).to_string();
    sim.ep.connection_closed(ConnId(9), sim.now);
    sim.udp_from(UPSTREAM, &inbound_invite(&tok_uri, "t2"));
    assert!(
        sim.take_to(third).is_empty(),
        "the third host got the INVITE"
    );
    assert!(sim.take_to(phone_src).is_empty());
    let answers: Vec<u16> = sim.take_to(UPSTREAM).iter().map(status).collect();
    assert_eq!(answers.last(), Some(&430), "{answers:?}");
    assert!(sim.pending.is_empty(), "{:?}", sim.pending);
    // the phone registers again on a new connection: reached there
    let reg2 = reg
        .in_dialog("REGISTER", 2, "z9hG4bKtr2")
        .contact(&format!("<sip:1001@{third};transport=tcp>"));
    sim.tcp_from("127.0.0.1:40101", 10, &reg2.header("Expires", "3600"));
    let up = one(sim.take_to(UPSTREAM), "REGISTER again");
    let contact2 = values(&up, HeaderName::Contact).remove(0);
    assert_eq!(contact2, contact, "same binding");
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("k"),
            &format!("Contact: {contact};expires=600\r\n"),
        ),
    );
    sim.take_to("127.0.0.1:40101");
    sim.udp_from(UPSTREAM, &inbound_invite(&tok_uri, "t3"));
    let (flow, inv) = sim.take_flows_to("127.0.0.1:40101").remove(0);
    assert!(is_method(&inv, Method::Invite));
    assert_eq!(flow.conn, Some(ConnId(10)));
    assert!(sim.take_to(third).is_empty());
}

// ------------------------------------------------------------------ item 2: randomness

/// Two bridges seeded from the OS share no tag, branch or Call-ID, and an
/// upstream Call-ID carries at least 96 random bits (the values an observer
/// sees do not let it predict the other bridge's — nor, with ChaCha12, the
/// next ones of the same bridge).
#[test]
fn os_seeded_endpoints_share_no_identifier_and_call_ids_carry_96_random_bits() {
    use blf_bridge::config::Config;
    use blf_bridge::endpoint::{Endpoint, LocalAddrs};
    use blf_bridge::profile::ProfileSet;
    use blf_bridge::util::Rng;
    use bytes::Bytes;
    use std::collections::HashSet;
    use std::sync::Arc;

    let mut seen: Vec<HashSet<String>> = Vec::new();
    for _ in 0..2 {
        let now = std::time::Instant::now();
        let cfg = Config::parse(&base_config(""), "sim.toml", &|_| None).unwrap();
        let local = LocalAddrs {
            udp: Some(addr("127.0.0.1:5060")),
            tcp: None,
            advertise_host: "127.0.0.1".into(),
        };
        let mut ep = Endpoint::with_rng(
            Arc::new(cfg),
            Arc::new(ProfileSet::builtin()),
            local,
            addr(UPSTREAM),
            Rng::from_entropy(),
            now,
        );
        let mut ids = HashSet::new();
        for (i, target) in ["1002", "1003", "1004"].iter().enumerate() {
            let req = blf_subscribe(5062, target, i as u32 + 1).crlf();
            ep.handle_datagram(Flow::udp(addr(P1001)), Bytes::from(req), now);
            // an outbound request through the proxy too (its branch)
            let m = outbound_message(&format!("z9hG4bKr{i}")).crlf();
            ep.handle_datagram(Flow::udp(addr(P1001)), Bytes::from(m), now);
        }
        while let Some(t) = ep.poll_transmit() {
            let m = SipMessage::parse(t.data).unwrap();
            if m.is_request() {
                let cid = hv(&m, HeaderName::CallId);
                if is_method(&m, Method::Subscribe) {
                    let random = cid.split('@').next().unwrap();
                    assert!(random.bytes().all(|c| c.is_ascii_alphanumeric()), "{cid}");
                    // base 62: log2(62) = 5.95 bits a character
                    let bits = random.len() as f64 * 62f64.log2();
                    assert!(bits >= 96.0, "{cid}: {bits} bits");
                    ids.insert(cid);
                    ids.insert(String::from_utf8_lossy(m.from_tag().unwrap()).into_owned());
                }
                ids.insert(String::from_utf8_lossy(m.branch().unwrap()).into_owned());
            } else if let Some(t) = m.to_tag() {
                ids.insert(String::from_utf8_lossy(t).into_owned());
            }
        }
        assert!(ids.len() >= 3 * 3 + 3, "{ids:?}");
        seen.push(ids);
    }
    let common: Vec<&String> = seen[0].intersection(&seen[1]).collect();
    assert!(common.is_empty(), "shared by both bridges: {common:?}");
}
