//! The forwarding proxy end to end through the sans-IO `Endpoint`, on the
//! simulated network of `tests/sim` (no sockets, simulated clock): phones on
//! 127.0.0.1:50xx, the bridge on 127.0.0.1:5060, a scripted upstream on
//! 127.0.0.1:5070.

mod sim;

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::Flow;
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{HeaderName, Method, SipMessage, Transport};
use bytes::Bytes;
use sim::msg::Req;
use sim::*;
use std::sync::Arc;
use std::time::Duration;

const P1001: &str = "127.0.0.1:5062";
const P1002: &str = "127.0.0.1:5063";

fn one(mut v: Vec<SipMessage>, what: &str) -> SipMessage {
    assert_eq!(
        v.len(),
        1,
        "{what}: expected one message, got {:?}",
        v.iter().map(text).collect::<Vec<_>>()
    );
    v.remove(0)
}

fn status(m: &SipMessage) -> u16 {
    m.status().unwrap_or(0)
}

fn values(m: &SipMessage, name: HeaderName) -> Vec<String> {
    m.values(name)
        .map(|s| String::from_utf8_lossy(m.slice(s)).into_owned())
        .collect()
}

fn ruri(m: &SipMessage) -> String {
    String::from_utf8_lossy(m.request_uri().unwrap_or_default()).into_owned()
}

/// The Record-Route value the bridge added (the top one when it was last to add).
fn bridge_rr(m: &SipMessage) -> String {
    values(m, HeaderName::RecordRoute)
        .into_iter()
        .find(|v| v.contains("@127.0.0.1:5060"))
        .expect("no Record-Route of the bridge")
}

/// A Grandstream phone's REGISTER; `extra` header lines go before its User-Agent.
fn register(user: &str, port: u16, cseq: u32, extra: &str) -> Req {
    Req::new("REGISTER", "sip:pbx.test")
        .phone(port, &format!("z9hG4bKreg{user}{cseq}"))
        .from(user, &format!("r{user}"))
        .to(user)
        .call_id(&format!("reg-{user}@phone"))
        .cseq(cseq)
        .contact(&format!("<sip:{user}@127.0.0.1:{port};transport=udp>"))
        .header("Expires", "3600")
        .headers(extra)
        .header("User-Agent", "Grandstream GXP2170 1.0.11.23")
}

/// REGISTER 401 → REGISTER with credentials → 200, as the upstream registrar.
/// Returns the Contact the registrar saw.
fn register_phone(sim: &mut Sim, user: &str, port: u16, extra: &str) -> String {
    let phone = format!("127.0.0.1:{port}");
    sim.udp_from(&phone, &register(user, port, 1, extra));
    let up = one(sim.take_to(UPSTREAM), "REGISTER upstream");
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            401,
            "Unauthorized",
            Some("k401"),
            "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n",
        ),
    );
    let r = one(sim.take_to(&phone), "401 to phone");
    assert_eq!(status(&r), 401);
    assert!(hv_named(&r, "WWW-Authenticate").is_some());
    sim.udp_from(
        &phone,
        &register(user, port, 2, &format!("{extra}Authorization: Digest username=\"{user}\", realm=\"pbx.test\", nonce=\"n1\", uri=\"sip:pbx.test\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"c\"\n")),
    );
    let up2 = one(sim.take_to(UPSTREAM), "REGISTER with credentials");
    let contact = values(&up2, HeaderName::Contact).remove(0);
    assert_eq!(
        contact,
        values(&up, HeaderName::Contact)[0],
        "the retry keeps its binding token"
    );
    let mut extra_hdr = format!("Contact: {contact};expires=3600\r\n");
    for p in values(&up2, HeaderName::Path) {
        extra_hdr.push_str(&format!("Path: {p}\r\n"));
    }
    sim.udp_from(UPSTREAM, &reply(&up2, 200, "OK", Some("k200"), &extra_hdr));
    let ok = one(sim.take_to(&phone), "200 to phone");
    assert_eq!(status(&ok), 200);
    contact
}

#[test]
fn message_builder_writes_a_request_and_what_derives_from_it() {
    let inv = Req::new("INVITE", "sip:1002@pbx.test")
        .phone(5062, "z9hG4bKo1")
        .from("1001", "o1")
        .to("1002")
        .call_id("out1@phone")
        .contact("<sip:1001@127.0.0.1:5062>")
        .header("Supported", "timer")
        .body("text/plain", "hi");
    assert_eq!(
        inv.to_string(),
        "INVITE sip:1002@pbx.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKo1;rport
Max-Forwards: 70
From: <sip:1001@pbx.test>;tag=o1
To: <sip:1002@pbx.test>
Call-ID: out1@phone
CSeq: 1 INVITE
Contact: <sip:1001@127.0.0.1:5062>
Supported: timer
Content-Type: text/plain
Content-Length: 2

hi"
    );
    assert_eq!(
        inv.ack("u407").to_string(),
        "ACK sip:1002@pbx.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKo1;rport
Max-Forwards: 70
From: <sip:1001@pbx.test>;tag=o1
To: <sip:1002@pbx.test>;tag=u407
Call-ID: out1@phone
CSeq: 1 ACK
Content-Length: 0

"
    );
    let bye = inv
        .in_dialog("BYE", 2, "z9hG4bKb")
        .ruri("sip:1002@127.0.0.1:5063")
        .with_to_tag("t")
        .route("<sip:a;lr>")
        .route("<sip:b;lr>");
    assert!(bye.to_string().starts_with(
        "BYE sip:1002@127.0.0.1:5063 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKb;rport
Route: <sip:a;lr>, <sip:b;lr>
"
    ));
    assert!(
        bye.crlf()
            .contains("CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    );
}

#[test]
fn register_rewrites_contact_to_a_token_and_restores_it_in_the_200() {
    let mut sim = Sim::new("");
    sim.udp_from(P1001, &register("1001", 5062, 1, "X-Grandstream-Line: 1\n"));
    let up = one(sim.take_to(UPSTREAM), "REGISTER upstream");
    let contact = values(&up, HeaderName::Contact);
    assert_eq!(contact.len(), 1);
    assert!(
        contact[0].starts_with("<sip:b-") && contact[0].ends_with("@127.0.0.1:5060>"),
        "{contact:?}"
    );
    assert!(
        up.header(HeaderName::Path).is_none(),
        "the phone did not offer Path"
    );
    assert_eq!(hv_named(&up, "X-Grandstream-Line").as_deref(), Some("1"));
    assert_eq!(up.vias().count(), 2);
    assert_eq!(up.max_forwards().unwrap().unwrap(), 69);

    // 401 goes back to the phone untouched but for our Via
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            401,
            "Unauthorized",
            Some("k"),
            "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\"\r\n",
        ),
    );
    let r = one(sim.take_to(P1001), "401");
    assert_eq!(status(&r), 401);
    assert_eq!(r.vias().count(), 1);
    assert_eq!(
        hv(&r, HeaderName::WwwAuthenticate),
        "Digest realm=\"pbx.test\", nonce=\"n1\""
    );

    sim.udp_from(
        P1001,
        &register("1001", 5062, 2, "Authorization: Digest username=\"1001\"\n"),
    );
    let up2 = one(sim.take_to(UPSTREAM), "REGISTER retry");
    assert_eq!(
        values(&up2, HeaderName::Contact),
        contact,
        "same token on the retry"
    );
    assert_eq!(
        hv(&up2, HeaderName::Authorization),
        "Digest username=\"1001\"",
        "the phone's own credentials are relayed"
    );
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up2,
            200,
            "OK",
            Some("k"),
            &format!("Contact: {};expires=120\r\n", contact[0]),
        ),
    );
    let ok = one(sim.take_to(P1001), "200");
    assert_eq!(status(&ok), 200);
    assert_eq!(
        values(&ok, HeaderName::Contact),
        ["<sip:1001@127.0.0.1:5062;transport=udp>;expires=120"]
    );

    // re-REGISTER 100 s later: same token, binding extended
    sim.advance(Duration::from_secs(100));
    sim.clear();
    sim.udp_from(P1001, &register("1001", 5062, 3, ""));
    let up3 = one(sim.take_to(UPSTREAM), "re-REGISTER");
    assert_eq!(
        values(&up3, HeaderName::Contact),
        contact,
        "the mapping survives re-REGISTERs"
    );
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up3,
            200,
            "OK",
            Some("k"),
            &format!("Contact: {};expires=120\r\n", contact[0]),
        ),
    );
    sim.take_to(P1001);
    sim.advance(Duration::from_secs(119));
    assert_eq!(sim.ep.proxy().registrations().len(), 1);
    // the binding expires with the registrar's: a call to the old token is refused
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.ep.proxy().registrations().len(), 0);
    sim.clear();
    let tok_uri = contact[0]
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    sim.udp_from(UPSTREAM, &inbound_invite(&tok_uri, "x1"));
    let r: Vec<_> = sim
        .take_to(UPSTREAM)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert_eq!(status(&one(r, "403")), 403);
    assert!(sim.take_to(P1001).is_empty());
}

#[test]
fn unregister_removes_the_binding() {
    let mut sim = Sim::new("");
    let contact = register_phone(&mut sim, "1001", 5062, "");
    assert_eq!(sim.ep.proxy().registrations().len(), 1);
    let unreg = register("1001", 5062, 3, "").set("Expires", "0");
    sim.udp_from(P1001, &unreg);
    let up = one(sim.take_to(UPSTREAM), "un-REGISTER");
    assert_eq!(
        values(&up, HeaderName::Contact)[0],
        contact,
        "the registrar must be told to drop the token Contact"
    );
    sim.udp_from(UPSTREAM, &reply(&up, 200, "OK", Some("k"), ""));
    assert_eq!(status(&one(sim.take_to(P1001), "200")), 200);
    assert_eq!(sim.ep.proxy().registrations().len(), 0);
}

/// A call from 1003 through the upstream, which record-routes itself.
fn inbound_invite(ruri: &str, call: &str) -> Req {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    Req::new("INVITE", ruri)
        .upstream(&format!("z9hG4bKk{call}"))
        .record_route(&format!("<sip:127.0.0.1:5070;lr;ftag=c{call}>"))
        .max_forwards(69)
        .from("1003", &format!("c{call}"))
        .to("1001")
        .call_id(&format!("{call}@caller"))
        .contact("<sip:1003@127.0.0.1:5074>")
        .body("application/sdp", sdp)
}

#[test]
fn inbound_call_reaches_the_registered_phone_through_its_token_and_completes() {
    let mut sim = Sim::new("");
    let contact = register_phone(&mut sim, "1001", 5062, "");
    let tok_uri = contact
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let invite = inbound_invite(&tok_uri, "in1");
    sim.udp_from(UPSTREAM, &invite);
    let trying = one(sim.take_to(UPSTREAM), "100 Trying at once");
    assert_eq!(status(&trying), 100);
    let inv = one(sim.take_to(P1001), "INVITE to phone");
    assert_eq!(
        ruri(&inv),
        "sip:1001@127.0.0.1:5062;transport=udp",
        "the phone's own Contact is restored"
    );
    let rr = values(&inv, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2);
    assert!(
        rr[0].starts_with("<sip:f-") && rr[0].ends_with("@127.0.0.1:5060;lr>"),
        "{rr:?}"
    );
    assert_eq!(rr[1], "<sip:127.0.0.1:5070;lr;ftag=cin1>");
    assert_eq!(inv.vias().count(), 2);
    assert!(body(&inv).starts_with("v=0"));

    // the phone rings and answers
    sim.udp_from(P1001, &reply(&inv, 180, "Ringing", Some("p1"), ""));
    let r = one(sim.take_to(UPSTREAM), "180");
    assert_eq!((status(&r), r.vias().count()), (180, 1));
    let ok = reply(
        &inv,
        200,
        "OK",
        Some("p1"),
        &format!(
            "Contact: <sip:1001@127.0.0.1:5062>\r\nRecord-Route: {}, {}\r\n",
            rr[0], rr[1]
        ),
    );
    sim.udp_from(P1001, &ok);
    let r = one(sim.take_to(UPSTREAM), "200");
    assert_eq!(status(&r), 200);
    assert_eq!(r.branch(), Some(&b"z9hG4bKkin1"[..]));

    // ACK for the 2xx: the caller's route set is the Record-Route reversed, the
    // upstream has popped itself
    let ack = invite
        .in_dialog("ACK", 1, "z9hG4bKack1")
        .ruri("sip:1001@127.0.0.1:5062")
        .with_to_tag("p1")
        .route(&rr[0]);
    sim.udp_from(UPSTREAM, &ack);
    let a = one(sim.take_to(P1001), "ACK to phone");
    assert!(is_method(&a, Method::Ack));
    assert!(a.header(HeaderName::Route).is_none());
    assert_eq!(a.vias().count(), 2);

    // the phone hangs up: its route set is the INVITE's Record-Route in order
    let bye = Req::new("BYE", "sip:1003@127.0.0.1:5074")
        .phone(5062, "z9hG4bKbye1")
        .route(&rr[0])
        .route(&rr[1])
        .from("1001", "p1")
        .to("1003")
        .with_to_tag("cin1")
        .call_id("in1@caller");
    sim.udp_from(P1001, &bye);
    let b = one(sim.take_to(UPSTREAM), "BYE upstream");
    assert!(is_method(&b, Method::Bye));
    assert_eq!(
        values(&b, HeaderName::Route),
        ["<sip:127.0.0.1:5070;lr;ftag=cin1>"]
    );
    sim.udp_from(UPSTREAM, &reply(&b, 200, "OK", None, ""));
    assert_eq!(status(&one(sim.take_to(P1001), "200 BYE")), 200);
    assert_eq!(sim.ep.proxy().stats().forbidden, 0);
}

/// Phone 1001 calls 1002.
fn outbound_invite(cseq: u32, branch: &str) -> Req {
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
    Req::new("INVITE", "sip:1002@pbx.test")
        .phone(5062, branch)
        .from("1001", "o1")
        .to("1002")
        .call_id("out1@phone")
        .cseq(cseq)
        .contact("<sip:1001@127.0.0.1:5062>")
        .body("application/sdp", sdp)
}

#[test]
fn outbound_call_with_407_ringing_answer_ack_and_bye_from_the_far_end() {
    let mut sim = Sim::new("");
    let invite = outbound_invite(1, "z9hG4bKo1");
    sim.udp_from(P1001, &invite);
    assert_eq!(status(&one(sim.take_to(P1001), "100 Trying")), 100);
    let inv = one(sim.take_to(UPSTREAM), "INVITE upstream");
    let rr = bridge_rr(&inv);
    sim.udp_from(
        UPSTREAM,
        &reply(
            &inv,
            407,
            "Proxy Authentication Required",
            Some("u407"),
            "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"n2\"\r\n",
        ),
    );
    let r = one(sim.take_to(P1001), "407 relayed");
    assert_eq!(status(&r), 407);
    assert_eq!(
        hv(&r, HeaderName::ProxyAuthenticate),
        "Digest realm=\"pbx.test\", nonce=\"n2\""
    );
    // the ACK for the 407 is hop-by-hop: ours goes upstream at once, the phone's is absorbed
    let ack = one(sim.take_to(UPSTREAM), "our ACK for the 407");
    assert!(is_method(&ack, Method::Ack));
    assert_eq!(ack.branch(), inv.branch());
    sim.udp_from(P1001, &invite.ack("u407"));
    assert!(
        sim.take_to(UPSTREAM).is_empty(),
        "the phone's ACK for a 407 stays here"
    );

    // with credentials
    let invite2 = outbound_invite(2, "z9hG4bKo2").header(
        "Proxy-Authorization",
        "Digest username=\"1001\", response=\"x\"",
    );
    sim.udp_from(P1001, &invite2);
    sim.take_to(P1001);
    let inv2 = one(sim.take_to(UPSTREAM), "INVITE with credentials");
    assert_eq!(
        hv(&inv2, HeaderName::ProxyAuthorization),
        "Digest username=\"1001\", response=\"x\""
    );
    let rr2 = bridge_rr(&inv2);
    assert_eq!(rr, rr2, "the flow token names the same phone");
    sim.udp_from(UPSTREAM, &reply(&inv2, 180, "Ringing", Some("callee"), ""));
    assert_eq!(status(&one(sim.take_to(P1001), "180")), 180);
    let rr_set = format!(
        "Record-Route: <sip:127.0.0.1:5070;lr>, {rr2}\r\nContact: <sip:1002@127.0.0.1:5063>\r\n"
    );
    sim.udp_from(UPSTREAM, &reply(&inv2, 200, "OK", Some("callee"), &rr_set));
    let ok = one(sim.take_to(P1001), "200");
    assert_eq!(status(&ok), 200);
    assert_eq!(
        values(&ok, HeaderName::RecordRoute),
        ["<sip:127.0.0.1:5070;lr>".to_string(), rr2.clone()]
    );

    // ACK for the 2xx: route set reversed
    sim.udp_from(
        P1001,
        &invite2
            .in_dialog("ACK", 2, "z9hG4bKo3")
            .ruri("sip:1002@127.0.0.1:5063")
            .with_to_tag("callee")
            .route(&rr2)
            .route("<sip:127.0.0.1:5070;lr>"),
    );
    let a = one(sim.take_to(UPSTREAM), "ACK upstream");
    assert!(is_method(&a, Method::Ack));
    assert_eq!(values(&a, HeaderName::Route), ["<sip:127.0.0.1:5070;lr>"]);
    assert_eq!(ruri(&a), "sip:1002@127.0.0.1:5063");

    // the far end hangs up
    sim.udp_from(
        UPSTREAM,
        &Req::new("BYE", "sip:1001@127.0.0.1:5062")
            .upstream("z9hG4bKkbye")
            .via("SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bKcbye;received=127.0.0.1")
            .route(&rr2)
            .max_forwards(69)
            .from("1002", "callee")
            .to("1001")
            .with_to_tag("o1")
            .call_id("out1@phone")
            .cseq(7),
    );
    let b = one(sim.take_to(P1001), "BYE to the phone");
    assert!(is_method(&b, Method::Bye));
    assert!(b.header(HeaderName::Route).is_none());
    assert_eq!(b.vias().count(), 3);
    sim.udp_from(P1001, &reply(&b, 200, "OK", None, ""));
    let r = one(sim.take_to(UPSTREAM), "200 for BYE");
    assert_eq!((status(&r), r.vias().count()), (200, 2));

    // a 2xx retransmitted after every transaction is gone is forwarded statelessly
    sim.advance(Duration::from_secs(40));
    sim.clear();
    sim.udp_from(UPSTREAM, &reply(&inv2, 200, "OK", Some("callee"), &rr_set));
    let again = one(sim.take_to(P1001), "stray 2xx");
    assert_eq!(status(&again), 200);
    assert_eq!(again.vias().count(), 1);
}

#[test]
fn call_between_two_phones_spirals_through_the_bridge() {
    let mut sim = Sim::new("");
    let c1002 = register_phone(&mut sim, "1002", 5063, "");
    let invite = outbound_invite(1, "z9hG4bKsp1");
    sim.udp_from(P1001, &invite);
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE upstream");
    // the upstream looks 1002 up and sends the INVITE back to the bridge
    let text_up = text(&inv).replace(
        "INVITE sip:1002@pbx.test SIP/2.0",
        &format!("INVITE {} SIP/2.0", c1002.trim_matches(['<', '>'])),
    );
    // (and record-routes itself)
    let back = text_up
        .replacen(
            "Via: ",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKspk\r\nVia: ",
            1,
        )
        .replacen(
            "Record-Route: ",
            "Record-Route: <sip:127.0.0.1:5070;lr>\r\nRecord-Route: ",
            1,
        );
    sim.raw_from(Flow::udp(addr(UPSTREAM)), back.as_bytes());
    sim.take_to(UPSTREAM);
    let at_1002 = one(
        sim.take_to(P1002),
        "INVITE reaches 1002 (a spiral, not a loop)",
    );
    assert_eq!(ruri(&at_1002), "sip:1002@127.0.0.1:5063;transport=udp");
    assert_eq!(at_1002.vias().count(), 4);
    let rr = values(&at_1002, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 3, "the bridge record-routes each pass: {rr:?}");
    assert_ne!(rr[0], rr[2], "each pass names its own phone");

    // 1001 hangs up along its route set (the Record-Route reversed): the BYE
    // passes the bridge twice with the same Request-URI, a spiral again
    sim.udp_from(
        P1001,
        &invite
            .in_dialog("BYE", 2, "z9hG4bKspbye")
            .ruri("sip:1002@127.0.0.1:5063")
            .with_to_tag("t1002")
            .route(&rr[2])
            .route(&rr[1])
            .route(&rr[0]),
    );
    let bye = one(sim.take_to(UPSTREAM), "BYE upstream");
    assert_eq!(
        values(&bye, HeaderName::Route),
        [rr[1].clone(), rr[0].clone()]
    );
    // the upstream pops itself and routes to the bridge again
    let again = text(&bye)
        .replacen(
            "Via: ",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKspk2\r\nVia: ",
            1,
        )
        .replace(&format!("{}, ", rr[1]), "");
    sim.raw_from(Flow::udp(addr(UPSTREAM)), again.as_bytes());
    let b = one(sim.take_to(P1002), "BYE reaches 1002");
    assert!(is_method(&b, Method::Bye));
    assert!(b.header(HeaderName::Route).is_none());
    assert_eq!(sim.ep.proxy().stats().loops, 0);
}

#[test]
fn a_looping_request_gets_482() {
    let mut sim = Sim::new("");
    sim.udp_from(P1001, &outbound_invite(1, "z9hG4bKl1"));
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE upstream");
    // the upstream sends it straight back, Request-URI unchanged
    let back = text(&inv).replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKlk\r\nVia: ",
        1,
    );
    sim.raw_from(Flow::udp(addr(UPSTREAM)), back.as_bytes());
    let r: Vec<_> = sim
        .take_to(UPSTREAM)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert_eq!(status(&one(r, "482")), 482);
    assert_eq!(sim.ep.proxy().stats().loops, 1);
}

#[test]
fn max_forwards_zero_gets_483_and_is_not_forwarded() {
    let mut sim = Sim::new("");
    sim.udp_from(
        P1001,
        &Req::new("MESSAGE", "sip:1002@pbx.test")
            .top_via("127.0.0.1:5062", "z9hG4bKmf0")
            .max_forwards(0)
            .from("1001", "m1")
            .to("1002")
            .call_id("mf0@phone")
            .body("text/plain", "hi"),
    );
    assert_eq!(status(&one(sim.take_to(P1001), "483")), 483);
    assert!(sim.take_to(UPSTREAM).is_empty());
}

#[test]
fn cancel_of_a_ringing_call() {
    let mut sim = Sim::new("");
    let invite = outbound_invite(1, "z9hG4bKc1");
    sim.udp_from(P1001, &invite);
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE");
    sim.udp_from(UPSTREAM, &reply(&inv, 180, "Ringing", Some("cal"), ""));
    assert_eq!(status(&one(sim.take_to(P1001), "180")), 180);
    sim.udp_from(P1001, &invite.cancel());
    let r = one(sim.take_to(P1001), "200 for CANCEL");
    assert_eq!(
        (status(&r), hv(&r, HeaderName::CSeq)),
        (200, "1 CANCEL".into())
    );
    let c = one(sim.take_to(UPSTREAM), "CANCEL upstream");
    assert!(is_method(&c, Method::Cancel));
    assert_eq!(
        c.branch(),
        inv.branch(),
        "CANCEL carries the forwarded INVITE's branch"
    );
    assert_eq!(ruri(&c), ruri(&inv));
    assert_eq!(c.vias().count(), 1);
    sim.udp_from(UPSTREAM, &reply(&c, 200, "OK", Some("cal"), ""));
    assert!(
        sim.take_to(P1001).is_empty(),
        "the CANCEL's 200 is hop-by-hop"
    );
    sim.udp_from(
        UPSTREAM,
        &reply(&inv, 487, "Request Terminated", Some("cal"), ""),
    );
    assert_eq!(status(&one(sim.take_to(P1001), "487")), 487);
    assert!(is_method(
        &one(sim.take_to(UPSTREAM), "ACK for 487"),
        Method::Ack
    ));
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut sim = Sim::new("");
    let invite = outbound_invite(1, "z9hG4bKc2");
    sim.udp_from(P1001, &invite);
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE");
    sim.udp_from(P1001, &invite.cancel());
    assert_eq!(status(&one(sim.take_to(P1001), "200 CANCEL")), 200);
    assert!(
        sim.take_to(UPSTREAM).is_empty(),
        "no CANCEL before a provisional (RFC 3261 §9.1)"
    );
    sim.udp_from(UPSTREAM, &reply(&inv, 100, "Trying", None, ""));
    let c = one(sim.take_to(UPSTREAM), "CANCEL after the 100");
    assert!(is_method(&c, Method::Cancel));
    assert!(sim.take_to(P1001).is_empty(), "100 is not relayed");
}

#[test]
fn unanswered_cancel_gives_up_with_487_and_timer_c_cancels_endless_ringing() {
    // The next hop ignores the CANCEL: 64·T1 later the phone gets 487.
    let mut sim = Sim::new("");
    let invite = outbound_invite(1, "z9hG4bKc3");
    sim.udp_from(P1001, &invite);
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE");
    sim.udp_from(UPSTREAM, &reply(&inv, 180, "Ringing", Some("cal"), ""));
    sim.take_to(P1001);
    sim.udp_from(P1001, &invite.cancel());
    sim.take_to(P1001);
    sim.advance(Duration::from_secs(33));
    // (the 487 is retransmitted by Timer G while the phone does not ACK)
    let finals: Vec<_> = sim
        .take_to(P1001)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert!(!finals.is_empty() && finals.iter().all(|m| text(m) == text(&finals[0])));
    let r = &finals[0];
    assert_eq!(status(r), 487);
    assert!(r.to_tag().is_some());
    assert_eq!(sim.ep.proxy().pending(), 0);

    // Timer C: ringing for more than 3 minutes → CANCEL, then 408 if still nothing.
    let mut sim = Sim::new("");
    sim.udp_from(P1001, &outbound_invite(1, "z9hG4bKc4"));
    sim.take_to(P1001);
    let inv = one(sim.take_to(UPSTREAM), "INVITE");
    sim.udp_from(UPSTREAM, &reply(&inv, 180, "Ringing", Some("cal"), ""));
    sim.take_to(P1001);
    sim.advance(Duration::from_secs(180));
    assert!(
        sim.take_to(UPSTREAM)
            .iter()
            .all(|m| !is_method(m, Method::Cancel))
    );
    sim.advance(Duration::from_secs(2));
    let c: Vec<_> = sim
        .take_to(UPSTREAM)
        .into_iter()
        .filter(|m| is_method(m, Method::Cancel))
        .collect();
    // (retransmitted by Timer E until answered)
    assert!(
        !c.is_empty() && c.iter().all(|m| m.branch() == inv.branch()),
        "Timer C CANCEL"
    );
    sim.advance(Duration::from_secs(33));
    let finals: Vec<_> = sim
        .take_to(P1001)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert!(
        !finals.is_empty() && finals.iter().all(|m| status(m) == 408),
        "408 after Timer C"
    );
    assert_eq!(sim.ep.proxy().pending(), 0);
}

#[test]
fn foreign_domain_and_unknown_targets_are_refused_and_never_leave() {
    let mut sim = Sim::new("");
    sim.udp_from(
        P1001,
        &outbound_invite(1, "z9hG4bKf1").ruri("sip:bob@example.com"),
    );
    let r: Vec<_> = sim
        .take_to(P1001)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert_eq!(status(&one(r, "403")), 403);
    assert!(
        sim.take_to(UPSTREAM).is_empty(),
        "nothing leaves the bridge"
    );
    // from the upstream: a phone the bridge does not know
    sim.udp_from(UPSTREAM, &inbound_invite("sip:1001@192.0.2.44:5060", "u1"));
    let r: Vec<_> = sim
        .take_to(UPSTREAM)
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert_eq!(status(&one(r, "403 to upstream")), 403);
    assert!(
        sim.pending.is_empty(),
        "nothing sent to a third party: {:?}",
        sim.pending
    );
    // from a source neither allowed nor the upstream
    sim.udp_from(
        "203.0.113.9:5060",
        &outbound_invite(1, "z9hG4bKf2")
            .top_via("203.0.113.9:5060", "z9hG4bKf2")
            .rport()
            .contact("<sip:1001@203.0.113.9:5060>"),
    );
    let r: Vec<_> = sim
        .take_to("203.0.113.9:5060")
        .into_iter()
        .filter(|m| status(m) >= 200)
        .collect();
    assert_eq!(status(&one(r, "403 to stranger")), 403);
    assert!(sim.pending.is_empty());
    assert_eq!(sim.ep.proxy().stats().forbidden, 2);
    assert_eq!(sim.ep.stats().forbidden, 1);
}

#[test]
fn path_mode_when_the_phone_supports_it() {
    let mut sim = Sim::new("");
    sim.udp_from(
        P1002,
        &register(
            "1002",
            5063,
            1,
            "Supported: replaces, path, timer, eventlist\n",
        ),
    );
    let up = one(sim.take_to(UPSTREAM), "REGISTER");
    assert_eq!(
        values(&up, HeaderName::Contact),
        ["<sip:1002@127.0.0.1:5063;transport=udp>"],
        "Contact untouched"
    );
    let path = values(&up, HeaderName::Path);
    assert_eq!(path.len(), 1);
    assert!(
        path[0].starts_with("<sip:b-") && path[0].ends_with("@127.0.0.1:5060;lr>"),
        "{path:?}"
    );
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("k"),
            &format!(
                "Contact: <sip:1002@127.0.0.1:5063;transport=udp>;expires=600\r\nPath: {}\r\n",
                path[0]
            ),
        ),
    );
    let ok = one(sim.take_to(P1002), "200");
    assert_eq!(
        values(&ok, HeaderName::Contact),
        ["<sip:1002@127.0.0.1:5063;transport=udp>;expires=600"]
    );
    assert_eq!(sim.ep.proxy().registrations().registrar_path, Some(true));

    // inbound: Request-URI the phone's Contact, Route the Path
    let inv = inbound_invite("sip:1002@127.0.0.1:5063;transport=udp", "p1").route(&path[0]);
    sim.udp_from(UPSTREAM, &inv);
    let at = one(sim.take_to(P1002), "INVITE via Path");
    assert!(at.header(HeaderName::Route).is_none());
    assert_eq!(ruri(&at), "sip:1002@127.0.0.1:5063;transport=udp");
}

#[test]
fn registrar_ignoring_path_moves_phones_to_contact_rewriting() {
    let mut sim = Sim::new("");
    sim.udp_from(P1002, &register("1002", 5063, 1, "Supported: path\n"));
    let up = one(sim.take_to(UPSTREAM), "REGISTER");
    assert!(up.header(HeaderName::Path).is_some());
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("k"),
            "Contact: <sip:1002@127.0.0.1:5063;transport=udp>;expires=600\r\n",
        ),
    );
    // the phone is asked to come back soon, so that its binding can move
    let ok = one(sim.take_to(P1002), "200");
    assert_eq!(
        values(&ok, HeaderName::Contact),
        ["<sip:1002@127.0.0.1:5063;transport=udp>;expires=60"]
    );
    assert_eq!(sim.ep.proxy().registrations().registrar_path, Some(false));
    // that phone is still known by its Contact: the upstream's requests to it pass
    sim.udp_from(
        UPSTREAM,
        &inbound_invite("sip:1002@127.0.0.1:5063;transport=udp", "np"),
    );
    assert!(is_method(
        &one(sim.take_to(P1002), "INVITE to the known Contact"),
        Method::Invite
    ));
    assert_eq!(status(&one(sim.take_to(UPSTREAM), "100 Trying")), 100);
    // its next REGISTER moves to a token Contact and removes the direct one
    sim.udp_from(P1002, &register("1002", 5063, 2, "Supported: path\n"));
    let up = one(sim.take_to(UPSTREAM), "re-REGISTER 1002");
    assert!(up.header(HeaderName::Path).is_none());
    let c = values(&up, HeaderName::Contact);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c[0].starts_with("<sip:b-"));
    assert_eq!(c[1], "<sip:1002@127.0.0.1:5063;transport=udp>;expires=0");
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("k"),
            &format!("Contact: {};expires=600\r\n", c[0]),
        ),
    );
    let ok = one(sim.take_to(P1002), "200");
    assert_eq!(
        values(&ok, HeaderName::Contact),
        ["<sip:1002@127.0.0.1:5063;transport=udp>;expires=600"]
    );
    // and the one after that is an ordinary refresh
    sim.udp_from(P1002, &register("1002", 5063, 3, "Supported: path\n"));
    let up = one(sim.take_to(UPSTREAM), "refresh 1002");
    assert_eq!(values(&up, HeaderName::Contact), [c[0].clone()]);
    // a new phone offering Path gets its Contact rewritten from the start
    sim.udp_from(P1001, &register("1001", 5062, 1, "Supported: path\n"));
    let up = one(sim.take_to(UPSTREAM), "REGISTER 1001");
    assert!(up.header(HeaderName::Path).is_none());
    assert!(values(&up, HeaderName::Contact)[0].starts_with("<sip:b-"));
}

#[test]
fn path_disabled_in_config_always_rewrites_contact() {
    let mut sim = Sim::new("[proxy]\npath = false\n");
    sim.udp_from(P1002, &register("1002", 5063, 1, "Supported: path\n"));
    let up = one(sim.take_to(UPSTREAM), "REGISTER");
    assert!(up.header(HeaderName::Path).is_none());
    assert!(values(&up, HeaderName::Contact)[0].starts_with("<sip:b-"));
}

#[test]
fn forwarded_bytes_stay_as_they_came_except_the_edited_headers() {
    let mut sim = Sim::new("");
    // compact forms, odd spacing, folding, a vendor header, a binary body; the Via
    // has no rport and names the source address, so nothing is stamped on it
    let body: &[u8] = b"\x00\x01binary\xff\r\n\r\nend";
    let head = "MESSAGE sip:1002@pbx.test SIP/2.0\r\n\
v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbp1\r\n\
Max-Forwards:   70\r\n\
f: \"Desk 1\" <sip:1001@pbx.test>;tag=bp\r\n\
t: <sip:1002@pbx.test>\r\n\
i: bp1@phone\r\n\
CSeq: 1 MESSAGE\r\n\
X-GS-Vendor: a=b;;c ,  d\r\n\
Subject: folded\r\n  continuation\r\n\
c: application/octet-stream\r\n";
    let mut msg = head.as_bytes().to_vec();
    msg.extend_from_slice(format!("l: {}\r\n\r\n", body.len()).as_bytes());
    msg.extend_from_slice(body);
    sim.raw_from(Flow::udp(addr(P1001)), &msg);
    let up = one(sim.take_to(UPSTREAM), "MESSAGE upstream");
    let out = up.message_bytes();
    let via_line = format!(
        "Via: {}\r\n",
        String::from_utf8_lossy(up.slice(up.values(HeaderName::Via).next().unwrap()))
    );
    let mut expect = msg.clone();
    let at = expect.windows(3).position(|w| w == b"v: ").unwrap();
    expect.splice(at..at, via_line.bytes());
    let s = String::from_utf8_lossy(&expect).replace("Max-Forwards:   70", "Max-Forwards:   69");
    let mut expect = s.into_bytes();
    // restore the binary body (lossy conversion above)
    let cut = expect.len() - String::from_utf8_lossy(body).len();
    expect.truncate(cut);
    expect.extend_from_slice(body);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&expect)
    );
    assert_eq!(&out[..], &expect[..]);
}

#[test]
fn datagram_without_content_length_gets_one_on_tcp() {
    let cfg = base_config("").replace("transport = \"udp\"", "transport = \"tcp\"");
    let cfg = Config::parse(&cfg, "tcp.toml", &|_| None).unwrap();
    let now = std::time::Instant::now();
    let mut ep = Endpoint::new(
        Arc::new(cfg),
        Arc::new(ProfileSet::builtin()),
        LocalAddrs {
            udp: Some(addr(BRIDGE)),
            tcp: Some(addr(BRIDGE)),
            advertise_host: "127.0.0.1".into(),
        },
        addr(UPSTREAM),
        7,
        now,
    );
    let msg = "MESSAGE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKcl1\r\nMax-Forwards: 70\r\nFrom: <sip:1001@pbx.test>;tag=x\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: cl1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\r\nhello";
    ep.handle_datagram(
        Flow::udp(addr(P1001)),
        Bytes::from_static(msg.as_bytes()),
        now,
    );
    let t = std::iter::from_fn(|| ep.poll_transmit())
        .find(|t| t.flow.remote == addr(UPSTREAM))
        .expect("forwarded");
    assert_eq!(t.flow.transport, Transport::Tcp);
    let m = SipMessage::parse(t.data).unwrap();
    assert_eq!(hv(&m, HeaderName::ContentLength), "5");
    assert_eq!(body(&m), "hello");
    assert_eq!(m.top_via().unwrap().unwrap().transport, "TCP");
    // double Record-Route is not needed for MESSAGE; an INVITE gets one per side
    let inv = outbound_invite(1, "z9hG4bKcl2");
    ep.handle_datagram(Flow::udp(addr(P1001)), Bytes::from(inv.crlf()), now);
    let t = std::iter::from_fn(|| ep.poll_transmit())
        .find(|t| t.flow.remote == addr(UPSTREAM))
        .expect("INVITE");
    let m = SipMessage::parse(t.data).unwrap();
    let rr = values(&m, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(rr[0].ends_with(";transport=tcp;lr>") && rr[1].ends_with("@127.0.0.1:5060;lr>"));
}

#[test]
fn responses_go_to_the_next_via_with_received_and_rport() {
    let mut sim = Sim::new("");
    // rport: the response goes to the source port, not the Via port
    let options = Req::new("OPTIONS", "sip:1002@pbx.test")
        .phone(5062, "z9hG4bKrp1")
        .from("1001", "o")
        .to("1002")
        .call_id("rp1");
    sim.udp_from("127.0.0.1:40000", &options);
    let up = one(sim.take_to(UPSTREAM), "OPTIONS upstream");
    let phone_via = values(&up, HeaderName::Via).remove(1);
    assert_eq!(
        phone_via,
        "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKrp1;received=127.0.0.1;rport=40000"
    );
    sim.udp_from(UPSTREAM, &reply(&up, 200, "OK", Some("t"), ""));
    assert_eq!(
        status(&one(sim.take_to("127.0.0.1:40000"), "200 to rport")),
        200
    );
    assert!(sim.take_to(P1001).is_empty());
    // no rport, sent-by a private address the packet did not come from: still the
    // source address and port (symmetric response routing, docs/decisions.md §8)
    sim.udp_from(
        "127.0.0.1:40001",
        &options
            .top_via("10.1.2.3:5066", "z9hG4bKrp2")
            .call_id("rp2"),
    );
    let up = one(sim.take_to(UPSTREAM), "OPTIONS upstream");
    sim.udp_from(UPSTREAM, &reply(&up, 200, "OK", Some("t"), ""));
    assert_eq!(
        status(&one(sim.take_to("127.0.0.1:40001"), "200 to the source")),
        200
    );
    assert!(sim.take_to("127.0.0.1:5066").is_empty());
}

/// Phone 1001 subscribes to `event` of its own AOR.
fn subscribe(event: &str, ua: &str, cid: &str) -> Req {
    Req::new("SUBSCRIBE", "sip:1001@pbx.test")
        .phone(5062, &format!("z9hG4bK{cid}"))
        .from("1001", &format!("s{cid}"))
        .to("1001")
        .call_id(&format!("{cid}@phone"))
        .contact("<sip:1001@127.0.0.1:5062>")
        .header("Event", event)
        .header("Accept", "application/simple-message-summary")
        .header("Expires", "3600")
        .header("User-Agent", ua)
}

#[test]
fn mwi_subscribe_and_its_notify_pass_with_record_route() {
    let mut sim = Sim::new("");
    sim.udp_from(
        P1001,
        &subscribe("message-summary", "Grandstream GXP2170 1.0.11.23", "mwi1"),
    );
    let up = one(sim.take_to(UPSTREAM), "SUBSCRIBE upstream");
    assert_eq!(
        hv(&up, HeaderName::CallId),
        "mwi1@phone",
        "proxied, not translated"
    );
    let rr = bridge_rr(&up);
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up,
            200,
            "OK",
            Some("vm"),
            &format!("Contact: <sip:127.0.0.1:5070>\r\nRecord-Route: {rr}\r\nExpires: 3600\r\n"),
        ),
    );
    assert_eq!(status(&one(sim.take_to(P1001), "200")), 200);
    let summary = "Messages-Waiting: yes\r\nVoice-Message: 2/0 (0/0)\r\n";
    sim.udp_from(
        UPSTREAM,
        &Req::new("NOTIFY", "sip:1001@127.0.0.1:5062")
            .upstream("z9hG4bKn1")
            .route(&rr)
            .from("1001", "vm")
            .to("1001")
            .with_to_tag("smwi1")
            .call_id("mwi1@phone")
            .contact("<sip:127.0.0.1:5070>")
            .header("Event", "message-summary")
            .header("Subscription-State", "active;expires=3600")
            .body("application/simple-message-summary", summary),
    );
    let n = one(sim.take_to(P1001), "NOTIFY to the phone");
    assert!(is_method(&n, Method::Notify));
    assert!(n.header(HeaderName::Route).is_none());
    assert_eq!(body(&n), summary);
    assert_eq!(
        bridge_rr(&n),
        rr,
        "NOTIFY may establish the dialog: record-routed"
    );
    sim.udp_from(P1001, &reply(&n, 200, "OK", None, ""));
    let r = one(sim.take_to(UPSTREAM), "200 NOTIFY");
    assert_eq!((status(&r), r.vias().count()), (200, 1));
}

#[test]
fn passthrough_profile_dialog_subscribe_is_forwarded_untouched() {
    let mut sim = Sim::new("");
    let sub = subscribe("dialog", "Zoiper rv2.10.20.2", "zo1")
        .ruri("sip:1002@pbx.test")
        .to("1002");
    sim.udp_from(P1001, &sub);
    let up = one(sim.take_to(UPSTREAM), "SUBSCRIBE upstream");
    assert_eq!(hv(&up, HeaderName::CallId), "zo1@phone");
    assert_eq!(sim.ep.subscriptions().phones().count(), 0, "not translated");
    // everything but Via, Max-Forwards and Record-Route is as the phone sent it
    let strip = |m: &SipMessage| -> Vec<String> {
        text(m)
            .split("\r\n")
            .filter(|l| {
                !l.starts_with("Via:")
                    && !l.starts_with("Max-Forwards:")
                    && !l.starts_with("Record-Route:")
            })
            .map(str::to_owned)
            .collect()
    };
    let orig = SipMessage::parse(Bytes::from(sub.crlf())).unwrap();
    assert_eq!(strip(&up), strip(&orig));
    assert!(bridge_rr(&up).starts_with("<sip:f-"));
}

#[test]
fn requests_from_upstream_reach_phones_only_with_an_authentic_route() {
    let mut sim = Sim::new("");
    // a Route naming the bridge with a forged flow token pointing elsewhere
    let forged = Req::new("BYE", "sip:victim@127.0.0.1:5099")
        .upstream("z9hG4bKfg")
        .route("<sip:f-00c0a8010113c40000000000000000@127.0.0.1:5060;lr>")
        .from("x", "1")
        .to("y")
        .with_to_tag("2")
        .call_id("fg");
    sim.udp_from(UPSTREAM, &forged);
    let r = one(sim.take_to(UPSTREAM), "403");
    assert_eq!(status(&r), 403);
    assert!(sim.pending.is_empty(), "{:?}", sim.pending);
    assert_eq!(sim.ep.proxy().stats().forbidden, 1);
}

#[test]
fn cancel_from_the_upstream_reaches_the_ringing_phone() {
    let mut sim = Sim::new("");
    let contact = register_phone(&mut sim, "1001", 5062, "");
    let tok_uri = contact
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    let invite = inbound_invite(&tok_uri, "ic");
    sim.udp_from(UPSTREAM, &invite);
    sim.take_to(UPSTREAM);
    let inv = one(sim.take_to(P1001), "INVITE to phone");
    sim.udp_from(P1001, &reply(&inv, 180, "Ringing", Some("pc"), ""));
    sim.take_to(UPSTREAM);
    // the caller gives up: the upstream CANCELs hop-by-hop to the bridge
    sim.udp_from(UPSTREAM, &invite.cancel());
    assert_eq!(status(&one(sim.take_to(UPSTREAM), "200 CANCEL")), 200);
    let c = one(sim.take_to(P1001), "CANCEL to phone");
    assert!(is_method(&c, Method::Cancel));
    assert_eq!(c.branch(), inv.branch());
    assert_eq!(
        ruri(&c),
        ruri(&inv),
        "the CANCEL names what the INVITE named"
    );
    sim.udp_from(P1001, &reply(&c, 200, "OK", Some("pc"), ""));
    sim.udp_from(
        P1001,
        &reply(&inv, 487, "Request Terminated", Some("pc"), ""),
    );
    let r = one(sim.take_to(UPSTREAM), "487 upstream");
    assert_eq!((status(&r), r.vias().count()), (487, 1));
    assert!(is_method(
        &one(sim.take_to(P1001), "ACK for 487"),
        Method::Ack
    ));
}

#[test]
fn options_to_the_bridge_is_answered_and_options_to_a_user_is_proxied() {
    let mut sim = Sim::new("");
    let opt = |ruri: &str, b: &str| {
        Req::new("OPTIONS", ruri)
            .phone(5062, &format!("z9hG4bK{b}"))
            .from("1001", &format!("o{b}"))
            .to(ruri)
            .call_id(&format!("{b}@phone"))
    };
    sim.udp_from(P1001, &opt("sip:127.0.0.1:5060", "ka1"));
    assert_eq!(status(&one(sim.take_to(P1001), "200 from the bridge")), 200);
    assert!(sim.take_to(UPSTREAM).is_empty());
    // a user at the bridge's address: addressed to the upstream domain instead
    sim.udp_from(P1001, &opt("sip:1002@127.0.0.1:5060", "ka2"));
    let up = one(sim.take_to(UPSTREAM), "OPTIONS upstream");
    assert_eq!(ruri(&up), "sip:1002@pbx.test");
}

#[test]
fn tcp_phone_is_reached_on_its_connection_and_after_it_closes_gets_430() {
    let mut sim = Sim::new("");
    let phone_src = "127.0.0.1:40100";
    let reg = register("1001", 5062, 1, "")
        .tcp()
        .contact("<sip:1001@127.0.0.1:5062;transport=tcp>");
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
    let (flow, ok) = sim.take_flows_to(phone_src).remove(0);
    assert_eq!((status(&ok), flow.conn.map(|c| c.0)), (200, Some(9)));
    let tok_uri = contact.trim_matches(['<', '>']).to_string();
    sim.udp_from(UPSTREAM, &inbound_invite(&tok_uri, "t1"));
    sim.take_to(UPSTREAM);
    let (flow, inv) = sim.take_flows_to(phone_src).remove(0);
    assert_eq!(
        (flow.transport, flow.conn.map(|c| c.0)),
        (Transport::Tcp, Some(9))
    );
    assert_eq!(inv.top_via().unwrap().unwrap().transport, "TCP");
    // the connection drops: the flow failed (RFC 5626), the request gets 430
    // and nothing goes to the Contact's address (issue 9, item 9)
    sim.ep
        .connection_closed(blf_bridge::flow::ConnId(9), sim.now);
    sim.udp_from(UPSTREAM, &inbound_invite(&tok_uri, "t2"));
    let answers: Vec<u16> = sim.take_to(UPSTREAM).iter().map(status).collect();
    assert_eq!(answers.last(), Some(&430), "{answers:?}");
    assert!(sim.take_flows_to(P1001).is_empty());
    assert!(sim.pending.is_empty(), "{:?}", sim.pending);
}

#[test]
fn in_dialog_refer_with_replaces_info_and_update_pass_untouched() {
    let mut sim = Sim::new("");
    let rr = "<sip:127.0.0.1:5070;lr>";
    for (method, extra) in [
        (
            "REFER",
            "Refer-To: <sip:1003@pbx.test?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>\nReferred-By: <sip:1001@pbx.test>\n",
        ),
        ("INFO", "Content-Type: application/dtmf-relay\n"),
        ("UPDATE", "Supported: timer\n"),
        ("PRACK", "RAck: 1 1 INVITE\n"),
    ] {
        let req = Req::new(method, "sip:1002@127.0.0.1:5063")
            .top_via("127.0.0.1:5062", &format!("z9hG4bK{method}1"))
            .route("<sip:f-whatever@127.0.0.1:5060;lr>")
            .route(rr)
            .from("1001", "d1")
            .to("1002")
            .with_to_tag("d2")
            .call_id("dlg1@phone")
            .cseq(5)
            .headers(extra);
        sim.udp_from(P1001, &req);
        let up = one(sim.take_to(UPSTREAM), method);
        assert_eq!(up.method().unwrap().as_str(), method);
        assert_eq!(values(&up, HeaderName::Route), [rr]);
        // everything but Via, Max-Forwards and Route is as the phone sent it
        let strip = |m: &SipMessage| -> Vec<String> {
            text(m)
                .split("\r\n")
                .filter(|l| {
                    !l.starts_with("Via:")
                        && !l.starts_with("Max-Forwards:")
                        && !l.starts_with("Route:")
                })
                .map(str::to_owned)
                .collect()
        };
        let orig = SipMessage::parse(Bytes::from(req.crlf())).unwrap();
        assert_eq!(strip(&up), strip(&orig), "{method}");
        assert!(up.header(HeaderName::RecordRoute).is_none());
        sim.udp_from(UPSTREAM, &reply(&up, 200, "OK", None, ""));
        assert_eq!(status(&one(sim.take_to(P1001), "200")), 200);
    }
}
