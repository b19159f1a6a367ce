//! Routing rules, sans-IO: the proxy alone, fed requests and responses, its
//! [`Out`] items inspected. (End-to-end scenarios through the endpoint live in
//! `tests/proxy_sim.rs`.)

use super::forward::readdress;
use super::registrar::BindingMode;
use super::response::via_flow;
use super::route::{BRANCH_PREFIX, OwnUser};
use super::*;
use crate::config::Config;
use crate::local::LocalAddrs;
use crate::profile::ProfileSet;
use crate::sip::{HeaderName, Method, NameAddr, Transport, Uri, Via};
use std::net::SocketAddr;
use std::sync::Arc;

const BRIDGE: &str = "192.168.1.2:5060";
const PBX: &str = "198.51.100.10:5060";
const PHONE: &str = "192.168.1.50:5062";

fn cfg(extra_upstream: &str, extra: &str) -> Config {
    let text = format!(
        r#"
[listen]
udp = "192.168.1.2:5060"
tcp = "192.168.1.2:5060"
[upstream]
proxy = "sip.provider.example:5060"
domain = "pbx.example.com"
aliases = ["Alias.Example.com"]
keepalive = "none"
{extra_upstream}
{extra}
"#
    );
    Config::parse(&text, "t.toml", &|_| None).unwrap()
}

fn proxy_with(extra_upstream: &str, extra: &str) -> Proxy {
    let cfg = cfg(extra_upstream, extra);
    Proxy::new(
        Context::new(
            Arc::new(cfg),
            Arc::new(ProfileSet::builtin()),
            LocalAddrs {
                udp: Some(BRIDGE.parse().unwrap()),
                tcp: Some(BRIDGE.parse().unwrap()),
                advertise_host: "192.168.1.2".into(),
            },
            PBX.parse().unwrap(),
            Duration::from_millis(500),
        ),
        crate::util::Rng::seeded(1),
    )
}

fn proxy() -> Proxy {
    proxy_with("", "")
}

fn msg(s: &str) -> SipMessage {
    let s = s.replace('\n', "\r\n");
    SipMessage::parse(Bytes::from(s)).unwrap()
}

fn phone() -> Flow {
    Flow::udp(PHONE.parse().unwrap())
}

fn pbx() -> Flow {
    Flow::udp(PBX.parse().unwrap())
}

fn key(m: &SipMessage) -> ServerKey {
    ServerKey::lookup(m, m.method().unwrap().clone()).unwrap()
}

fn drain(p: &mut Proxy) -> Vec<Out> {
    std::iter::from_fn(|| p.poll_out()).collect()
}

/// Feed a request and return what came out.
fn feed(p: &mut Proxy, m: &SipMessage, from: Flow, from_upstream: bool) -> Vec<Out> {
    p.on_request(key(m), m, from, from_upstream, Instant::now());
    drain(p)
}

fn status_of(o: &[Out]) -> Option<u16> {
    o.iter().find_map(|o| match o {
        Out::Response { data, .. } => SipMessage::parse(data.clone()).ok()?.status(),
        _ => None,
    })
}

fn forwarded(o: &[Out]) -> Option<(Flow, SipMessage)> {
    o.iter().find_map(|o| match o {
        Out::Request { flow, data, .. } => Some((*flow, SipMessage::parse(data.clone()).ok()?)),
        _ => None,
    })
}

fn invite(ruri: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bKph1;rport=5062;received=192.168.1.50
Max-Forwards: 70
{extra}From: <sip:1001@pbx.example.com>;tag=a1
To: <sip:1002@pbx.example.com>
Call-ID: c1@phone
CSeq: 1 INVITE
Contact: <sip:1001@192.168.1.50:5062>
Content-Length: 0

"
    )
}

fn text(m: &SipMessage) -> String {
    String::from_utf8_lossy(&m.message_bytes()).into_owned()
}

#[test]
fn local_and_upstream_hosts() {
    let p = proxy();
    let h = &p.env.local;
    assert!(h.is_local("192.168.1.2", None));
    assert!(h.is_local("192.168.1.2", Some(5060)));
    assert!(
        !h.is_local("192.168.1.2", Some(5062)),
        "another port on our host is not us"
    );
    assert!(!h.is_local("192.168.1.50", Some(5060)));
    assert!(!h.is_local("bridge.lan", None));
    for host in [
        "pbx.example.com",
        "PBX.example.COM",
        "sip.provider.example",
        "198.51.100.10",
        "alias.example.com",
    ] {
        assert!(p.env.is_upstream_host(host), "{host}");
    }
    for host in [
        "example.com",
        "evil.pbx.example.com.attacker",
        "198.51.100.11",
        "192.168.1.2",
    ] {
        assert!(!p.env.is_upstream_host(host), "{host}");
    }
    // resolved through SRV: every server's address and target name
    let second = Flow::udp("198.51.100.20:5060".parse().unwrap());
    let env = p.env.with_upstream(
        p.env.upstream,
        std::sync::Arc::from(vec![p.env.upstream, second]),
        std::sync::Arc::from(vec!["sip2.provider.example".to_string()]),
    );
    for host in [
        "198.51.100.20",
        "SIP2.provider.example",
        "sip2.provider.example.",
    ] {
        assert!(env.is_upstream_host(host), "{host}");
    }
    assert!(!env.is_upstream_host("sip3.provider.example"));
}

#[test]
fn unspecified_bind_treats_loopback_and_advertise_host_as_us() {
    let mut p = proxy();
    p.env.local = LocalAddrs {
        udp: Some("0.0.0.0:5070".parse().unwrap()),
        tcp: None,
        advertise_host: "bridge.lan".into(),
    };
    let h = &p.env.local;
    assert!(h.is_local("127.0.0.1", Some(5070)));
    assert!(h.is_local("BRIDGE.LAN", Some(5070)));
    assert!(
        !h.is_local("bridge.lan", None),
        "default port 5060 is not ours"
    );
}

#[test]
fn phone_request_goes_upstream_with_our_via_and_decremented_max_forwards() {
    let mut p = proxy();
    let m = msg(&invite("sip:1002@pbx.example.com", ""));
    let out = feed(&mut p, &m, phone(), false);
    let (flow, f) = forwarded(&out).expect("forwarded");
    assert_eq!(flow, pbx());
    let via = f.top_via().unwrap().unwrap();
    assert_eq!((via.host, via.port), ("192.168.1.2", Some(5060)));
    assert!(via.branch().unwrap().starts_with(BRANCH_PREFIX.as_bytes()));
    assert!(via.rport().is_some());
    assert_eq!(f.max_forwards().unwrap().unwrap(), 69);
    assert_eq!(f.vias().count(), 2);
    assert_eq!(f.request_uri().unwrap(), b"sip:1002@pbx.example.com");
    // INVITE creates a dialog: one Record-Route, with a flow token naming the phone
    let rr: Vec<_> = f
        .values(HeaderName::RecordRoute)
        .map(|s| f.slice(s).to_vec())
        .collect();
    assert_eq!(rr.len(), 1);
    let na = NameAddr::parse(&rr[0]).unwrap();
    let u = Uri::parse(na.uri).unwrap();
    assert!(u.has_lr());
    let OwnUser::Flow(t) = OwnUser::of(&u) else {
        panic!("no flow token: {}", text(&f))
    };
    assert_eq!(token::decode(&p.key, t), Some(phone()));
    assert_eq!(p.stats().forwarded, 1);
}

#[test]
fn max_forwards_zero_is_483_and_missing_gets_70() {
    let mut p = proxy();
    let m =
        msg(&invite("sip:1002@pbx.example.com", "").replace("Max-Forwards: 70", "Max-Forwards: 0"));
    let out = feed(&mut p, &m, phone(), false);
    assert_eq!(status_of(&out), Some(483));
    assert!(forwarded(&out).is_none());
    assert_eq!(p.stats().too_many_hops, 1);

    let m = msg(&invite("sip:1002@pbx.example.com", "").replace("Max-Forwards: 70\n", ""));
    let (_, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(f.max_forwards().unwrap().unwrap(), 70);
    let m =
        msg(&invite("sip:1002@pbx.example.com", "").replace("Max-Forwards: 70", "Max-Forwards: 1"));
    let (_, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(f.max_forwards().unwrap().unwrap(), 0);
}

#[test]
fn proxy_require_is_420_listing_the_tags() {
    let mut p = proxy();
    let m = msg(&invite(
        "sip:1002@pbx.example.com",
        "Proxy-Require: foo, bar\n",
    ));
    let out = feed(&mut p, &m, phone(), false);
    let Out::Response { data, .. } = &out[0] else {
        panic!()
    };
    let r = SipMessage::parse(data.clone()).unwrap();
    assert_eq!(r.status(), Some(420));
    assert_eq!(
        r.header_value(HeaderName::Unsupported),
        Some(&b"foo, bar"[..])
    );
    assert!(
        r.to_tag().is_some(),
        "a final response we generate carries a To tag"
    );
}

#[test]
fn loop_is_482_but_a_spiral_passes() {
    let mut p = proxy();
    let m = msg(&invite("sip:1002@pbx.example.com", ""));
    let (_, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    // the upstream sends the very request back to us unchanged (a loop)
    let back = msg(&text(&f).replace("\r\n", "\n"));
    let out = feed(&mut p, &back, pbx(), true);
    assert_eq!(status_of(&out), Some(482));
    assert_eq!(p.stats().loops, 1);
    // the same request re-targeted by the upstream (a spiral) is not a loop; here it
    // is refused only because the target is unknown
    let spiral = msg(&text(&f)
        .replace(
            "sip:1002@pbx.example.com SIP/2.0",
            "sip:1002@192.168.1.77 SIP/2.0",
        )
        .replace("\r\n", "\n"));
    let out = feed(&mut p, &spiral, pbx(), true);
    assert_eq!(status_of(&out), Some(403));
}

#[test]
fn foreign_domain_from_a_phone_is_403_and_nothing_leaves() {
    let mut p = proxy();
    for ruri in [
        "sip:bob@example.com",
        "sip:1002@192.168.1.50:5062",
        "sip:1002@pbx.example.com.evil.net",
    ] {
        let m = msg(&invite(ruri, ""));
        let out = feed(&mut p, &m, phone(), false);
        assert_eq!(status_of(&out), Some(403), "{ruri}");
        assert!(forwarded(&out).is_none(), "{ruri}");
    }
    assert_eq!(p.stats().forbidden, 3);
    // allowed: the domain, the proxy host and address, an alias, tel:
    for ruri in [
        "sip:1002@pbx.example.com",
        "sip:1002@sip.provider.example:5060",
        "sip:1002@198.51.100.10",
        "sip:1002@alias.example.com",
        "tel:+15551234",
    ] {
        let m = msg(&invite(ruri, ""));
        let (flow, f) =
            forwarded(&feed(&mut p, &m, phone(), false)).unwrap_or_else(|| panic!("{ruri}"));
        assert_eq!(flow, pbx());
        assert_eq!(f.request_uri().unwrap(), ruri.as_bytes());
    }
}

#[test]
fn request_uri_naming_the_bridge_is_readdressed_to_the_upstream_domain() {
    let mut p = proxy();
    let m = msg(&invite(
        "sip:1002@192.168.1.2:5060;user=phone;transport=udp",
        "",
    ));
    let (flow, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(flow, pbx());
    assert_eq!(
        f.request_uri().unwrap(),
        b"sip:1002@pbx.example.com;user=phone"
    );
}

#[test]
fn in_dialog_requests_from_phones_follow_the_upstream_route_set() {
    let mut p = proxy();
    let bye = |ruri: &str, route: &str| {
        msg(&format!(
            "BYE {ruri} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bKbye1
Max-Forwards: 70
{route}From: <sip:1001@pbx.example.com>;tag=a1
To: <sip:1002@pbx.example.com>;tag=b2
Call-ID: c1@phone
CSeq: 2 BYE
Content-Length: 0

"
        ))
    };
    // the callee's contact is a foreign host, but the upstream record-routed
    // (and so did the bridge, with a flow token naming this phone)
    let tok = token::encode(&p.key, &phone());
    let m = bye(
        "sip:1002@203.0.113.9:5060",
        &format!("Route: <sip:f-{tok}@192.168.1.2;lr>, <sip:198.51.100.10;lr;ftag=a1>\n"),
    );
    let (flow, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(flow, pbx());
    assert_eq!(
        f.header_value(HeaderName::Route),
        Some(&b"<sip:198.51.100.10;lr;ftag=a1>"[..])
    );
    assert_eq!(
        f.request_uri().unwrap(),
        b"sip:1002@203.0.113.9:5060",
        "the Request-URI of an in-dialog request is not touched"
    );
    assert!(
        f.header(HeaderName::RecordRoute).is_none(),
        "no Record-Route on in-dialog requests"
    );
    // no route set past the bridge and a foreign target: refused
    let m = bye("sip:1002@203.0.113.9:5060", "Route: <sip:192.168.1.2;lr>\n");
    assert_eq!(status_of(&feed(&mut p, &m, phone(), false)), Some(403));
    // the upstream as remote target (a B2BUA PBX) needs no route set
    let m = bye("sip:1002@198.51.100.10:5060", "");
    assert_eq!(
        forwarded(&feed(&mut p, &m, phone(), false)).unwrap().0,
        pbx()
    );
}

#[test]
fn upstream_requests_only_reach_phones_the_bridge_knows() {
    let mut p = proxy();
    let from_pbx = |ruri: &str, route: &str| {
        msg(&format!(
            "BYE {ruri} SIP/2.0
Via: SIP/2.0/UDP 198.51.100.10;branch=z9hG4bKk1
Max-Forwards: 70
{route}From: <sip:1002@pbx.example.com>;tag=b2
To: <sip:1001@pbx.example.com>;tag=a1
Call-ID: c1@phone
CSeq: 9 BYE
Content-Length: 0

"
        ))
    };
    // a Route entry of ours with a valid flow token: to that phone
    let tok = token::encode(&p.key, &phone());
    let m = from_pbx(
        "sip:1001@192.168.1.50:5062",
        &format!("Route: <sip:f-{tok}@192.168.1.2:5060;lr>\n"),
    );
    let (flow, f) = forwarded(&feed(&mut p, &m, pbx(), true)).unwrap();
    assert_eq!(flow, phone());
    assert!(f.header(HeaderName::Route).is_none());
    // a forged token (another address, MAC not ours)
    let forged = token::encode(&[9; 32], &Flow::udp("8.8.8.8:5060".parse().unwrap()));
    let m = from_pbx(
        "sip:x@8.8.8.8",
        &format!("Route: <sip:f-{forged}@192.168.1.2:5060;lr>\n"),
    );
    assert_eq!(status_of(&feed(&mut p, &m, pbx(), true)), Some(403));
    // no Route, a phone nobody registered through us
    let m = from_pbx("sip:1001@192.168.1.50:5062", "");
    assert_eq!(status_of(&feed(&mut p, &m, pbx(), true)), Some(403));
    // a Route of ours without a token
    let m = from_pbx(
        "sip:1001@192.168.1.50:5062",
        "Route: <sip:192.168.1.2;lr>\n",
    );
    assert_eq!(status_of(&feed(&mut p, &m, pbx(), true)), Some(403));
    // an unknown binding token
    let m = from_pbx("sip:b-nosuchtoken@192.168.1.2", "");
    assert_eq!(status_of(&feed(&mut p, &m, pbx(), true)), Some(403));
    assert_eq!(p.stats().forbidden, 4);
}

#[test]
fn strict_router_request_uri_is_restored_from_the_last_route() {
    let mut p = proxy();
    let tok = token::encode(&p.key, &phone());
    let m = msg(&format!(
        "BYE sip:f-{tok}@192.168.1.2:5060;lr SIP/2.0
Via: SIP/2.0/UDP 198.51.100.10;branch=z9hG4bKs1
Max-Forwards: 70
Route: <sip:other.example;lr>, <sip:1001@192.168.1.50:5062>
From: <sip:1002@pbx.example.com>;tag=b2
To: <sip:1001@pbx.example.com>;tag=a1
Call-ID: c1@phone
CSeq: 9 BYE
Content-Length: 0

"
    ));
    let (flow, f) = forwarded(&feed(&mut p, &m, pbx(), true)).unwrap();
    assert_eq!(flow, phone());
    assert_eq!(f.request_uri().unwrap(), b"sip:1001@192.168.1.50:5062");
    assert_eq!(
        f.header_value(HeaderName::Route),
        Some(&b"<sip:other.example;lr>"[..])
    );
}

#[test]
fn strict_next_hop_gets_the_request_uri_swap() {
    let mut p = proxy();
    let m = msg(&invite(
        "sip:1002@pbx.example.com",
        "Route: <sip:192.168.1.2:5060;lr>\nRoute: <sip:198.51.100.10>,<sip:alias.example.com;lr>\n",
    ));
    let (flow, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(flow, pbx());
    assert_eq!(f.request_uri().unwrap(), b"sip:198.51.100.10");
    let routes: Vec<&[u8]> = f.values(HeaderName::Route).map(|s| f.slice(s)).collect();
    assert_eq!(
        routes,
        [
            &b"<sip:alias.example.com;lr>"[..],
            b"<sip:1002@pbx.example.com>"
        ]
    );
    // a strict Route cannot swap a foreign Request-URI in (issue 9, item 8),
    // nor can a preloaded Route lead to a foreign host
    for route in [
        "Route: <sip:victim@203.0.113.9>\n",
        "Route: <sip:198.51.100.10>,<sip:x.example;lr>\n",
    ] {
        let m = msg(&invite("sip:1002@pbx.example.com", route));
        assert_eq!(
            status_of(&feed(&mut p, &m, phone(), false)),
            Some(403),
            "{route}"
        );
    }
}

#[test]
fn own_routes_in_a_multi_value_line_are_removed_and_the_rest_kept() {
    let m = msg(&invite(
        "sip:1002@pbx.example.com",
        "Route: <sip:192.168.1.2:5060;lr>, <sip:f-x@192.168.1.2;lr>,<sip:a.example;lr>\nRoute: <sip:b.example;lr>\n",
    ));
    let entries = route::routes(&m);
    assert_eq!(entries.len(), 4);
    let edits = route::route_removals(&m, &entries, &[0, 1]);
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].1, b"<sip:a.example;lr>");
    let edits = route::route_removals(&m, &entries, &[0, 1, 2]);
    assert_eq!(edits.len(), 1);
    assert!(edits[0].1.is_empty(), "a whole line goes");
    assert_eq!(
        m.slice(edits[0].0),
        m.slice(m.header(HeaderName::Route).unwrap().line)
    );
}

#[test]
fn double_record_route_when_the_two_sides_use_different_transports() {
    let mut p = proxy_with("transport = \"tcp\"", "");
    let m = msg(&invite("sip:1002@pbx.example.com", ""));
    let (flow, f) = forwarded(&feed(&mut p, &m, phone(), false)).unwrap();
    assert_eq!(flow.transport, Transport::Tcp);
    let rr: Vec<String> = f
        .values(HeaderName::RecordRoute)
        .map(|s| String::from_utf8_lossy(f.slice(s)).into_owned())
        .collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    // top faces the upstream (TCP), bottom the phone (UDP)
    assert!(rr[0].contains(";transport=tcp;lr"), "{rr:?}");
    assert!(!rr[1].contains("transport="), "{rr:?}");
    assert_eq!(f.top_via().unwrap().unwrap().transport, "TCP");
    assert_eq!(f.header_value(HeaderName::ContentLength), Some(&b"0"[..]));

    // and both entries are popped when the upstream routes an in-dialog request back
    let tok = &rr[0][rr[0].find("f-").unwrap() + 2..rr[0].find('@').unwrap()];
    let bye = msg(&format!(
        "BYE sip:1001@192.168.1.50:5062 SIP/2.0
Via: SIP/2.0/TCP 198.51.100.10;branch=z9hG4bKd1
Max-Forwards: 70
Route: {}, {}
From: <sip:1002@pbx.example.com>;tag=b2
To: <sip:1001@pbx.example.com>;tag=a1
Call-ID: c1@phone
CSeq: 9 BYE
Content-Length: 0

",
        rr[0], rr[1]
    ));
    let (flow, f) = forwarded(&feed(
        &mut p,
        &bye,
        Flow::tcp(PBX.parse().unwrap(), Some(ConnId(1))),
        true,
    ))
    .unwrap();
    assert_eq!(flow, phone());
    assert!(f.header(HeaderName::Route).is_none(), "{}", text(&f));
    assert_eq!(f.top_via().unwrap().unwrap().transport, "UDP");
    assert!(tok.len() > 10);
}

#[test]
fn responses_pop_our_via_and_503_becomes_500() {
    let mut p = proxy();
    let m = msg(&invite("sip:1002@pbx.example.com", ""));
    let out = feed(&mut p, &m, phone(), false);
    let Some(Out::Request { data, tag, .. }) =
        out.into_iter().find(|o| matches!(o, Out::Request { .. }))
    else {
        panic!()
    };
    let f = SipMessage::parse(data).unwrap();
    let resp = |code: u16, reason: &str| {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in f.values(HeaderName::Via) {
            s.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(f.slice(v))));
        }
        s.push_str("From: <sip:1001@pbx.example.com>;tag=a1\r\nTo: <sip:1002@pbx.example.com>;tag=zz\r\nCall-ID: c1@phone\r\nCSeq: 1 INVITE\r\nX-Vendor: kept\r\nContent-Length: 0\r\n\r\n");
        SipMessage::parse(Bytes::from(s)).unwrap()
    };
    p.on_response(tag.clone(), &resp(100, "Trying"), Instant::now());
    assert!(drain(&mut p).is_empty(), "100 is hop-by-hop");
    p.on_response(tag.clone(), &resp(180, "Ringing"), Instant::now());
    let out = drain(&mut p);
    let Out::Response { data, .. } = &out[0] else {
        panic!()
    };
    let r = SipMessage::parse(data.clone()).unwrap();
    assert_eq!(r.status(), Some(180));
    assert_eq!(r.vias().count(), 1);
    assert_eq!(r.branch(), Some(&b"z9hG4bKph1"[..]));
    p.on_response(
        tag.clone(),
        &resp(503, "Service Unavailable"),
        Instant::now(),
    );
    let out = drain(&mut p);
    let Out::Response { data, .. } = &out[0] else {
        panic!()
    };
    let r = SipMessage::parse(data.clone()).unwrap();
    assert_eq!(r.status(), Some(500));
    assert_eq!(r.header_value_by_name("X-Vendor"), Some(&b"kept"[..]));
}

#[test]
fn cancel_is_built_from_the_forwarded_invite() {
    let inv = Bytes::from(
        "INVITE sip:1002@pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK-bb-1;rport\r\nVia: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bKph1\r\nRoute: <sip:198.51.100.10;lr>\r\nMax-Forwards: 69\r\nFrom: <sip:1001@pbx.example.com>;tag=a1\r\nTo: <sip:1002@pbx.example.com>\r\nCall-ID: c1@phone\r\nCSeq: 7 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0",
    );
    let c = SipMessage::parse(build_cancel(&inv).unwrap()).unwrap();
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.request_uri().unwrap(), b"sip:1002@pbx.example.com");
    assert_eq!(c.vias().count(), 1);
    assert_eq!(c.branch(), Some(&b"z9hG4bK-bb-1"[..]));
    assert_eq!(
        c.header_value(HeaderName::Route),
        Some(&b"<sip:198.51.100.10;lr>"[..])
    );
    assert_eq!(c.header_value(HeaderName::CSeq), Some(&b"7 CANCEL"[..]));
    assert_eq!(c.to_tag(), None);
    assert!(c.body().is_empty());
    assert!(crate::sip::validate::check_request(&c).is_ok());
}

#[test]
fn via_flow_uses_received_and_rport() {
    let v = |s: &str| via_flow(&Via::parse(s.as_bytes()).unwrap());
    assert_eq!(
        v("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1;received=192.0.2.7;rport=40000")
            .unwrap()
            .remote,
        "192.0.2.7:40000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        v("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1;received=192.0.2.7")
            .unwrap()
            .remote,
        "192.0.2.7:5062".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        v("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1").unwrap().remote,
        "10.0.0.5:5060".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        v("SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bK1")
            .unwrap()
            .transport,
        Transport::Tcp
    );
    assert!(
        v("SIP/2.0/UDP phone.lan;branch=z9hG4bK1").is_none(),
        "no resolver in the core"
    );
    assert!(v("SIP/2.0/SCTP 10.0.0.5;branch=z9hG4bK1").is_none());
}

#[test]
fn register_contact_is_rewritten_and_restored() {
    let mut p = proxy();
    let reg = msg("REGISTER sip:pbx.example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bKr1;rport=5062;received=192.168.1.50
Max-Forwards: 70
From: <sip:1001@pbx.example.com>;tag=r1
To: <sip:1001@pbx.example.com>
Call-ID: reg1@phone
CSeq: 1 REGISTER
Contact: \"Desk\" <sip:1001@192.168.1.50:5062;line=abc>;+sip.instance=\"<urn:uuid:1>\", sip:1001@192.168.1.50:5063;expires=60
Expires: 600
Content-Length: 0

");
    let out = feed(&mut p, &reg, phone(), false);
    let Some(Out::Request { data, tag, .. }) =
        out.into_iter().find(|o| matches!(o, Out::Request { .. }))
    else {
        panic!()
    };
    let f = SipMessage::parse(data).unwrap();
    let contacts: Vec<String> = f
        .values(HeaderName::Contact)
        .map(|s| String::from_utf8_lossy(f.slice(s)).into_owned())
        .collect();
    assert_eq!(contacts.len(), 2);
    assert!(
        contacts[0].starts_with("\"Desk\" <sip:b-")
            && contacts[0].ends_with("@192.168.1.2:5060>;+sip.instance=\"<urn:uuid:1>\""),
        "{contacts:?}"
    );
    assert!(
        contacts[1].starts_with("<sip:b-")
            && contacts[1].ends_with("@192.168.1.2:5060>;expires=60"),
        "addr-spec gets brackets so its parameters stay header parameters: {contacts:?}"
    );
    assert!(f.header(HeaderName::Path).is_none());
    assert!(
        f.header(HeaderName::RecordRoute).is_none(),
        "REGISTER is not record-routed"
    );
    assert_eq!(p.registrations().len(), 2);
    // the 200 lists our Contacts; the phone gets its own back
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:1001@pbx.example.com>;tag=r1\r\nTo: <sip:1001@pbx.example.com>;tag=x\r\nCall-ID: reg1@phone\r\nCSeq: 1 REGISTER\r\nContact: {};expires=600, {}\r\nContact: <sip:1001@10.9.9.9>;expires=30\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(f.slice(f.values(HeaderName::Via).next().unwrap())),
        String::from_utf8_lossy(f.slice(f.values(HeaderName::Via).nth(1).unwrap())),
        contacts[0].split(";+sip").next().unwrap(),
        contacts[1],
    );
    let now = Instant::now();
    p.on_response(tag, &SipMessage::parse(Bytes::from(ok)).unwrap(), now);
    let out = drain(&mut p);
    let Out::Response { data, .. } = &out[0] else {
        panic!()
    };
    let r = SipMessage::parse(data.clone()).unwrap();
    let back: Vec<String> = r
        .values(HeaderName::Contact)
        .map(|s| String::from_utf8_lossy(r.slice(s)).into_owned())
        .collect();
    assert_eq!(
        back,
        [
            "\"Desk\" <sip:1001@192.168.1.50:5062;line=abc>;expires=600",
            "<sip:1001@192.168.1.50:5063>;expires=60",
            "<sip:1001@10.9.9.9>;expires=30"
        ]
    );
    // the bindings live as long as the registrar granted
    let mut exp: Vec<Duration> = p
        .registrations()
        .bindings
        .values()
        .map(|b| b.expires_at - now)
        .collect();
    exp.sort();
    assert_eq!(exp, [Duration::from_secs(60), Duration::from_secs(600)]);
    assert!(p.registrations().bindings.values().all(|b| b.confirmed));
    p.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(p.registrations().len(), 1);
    p.handle_timeout(now + Duration::from_secs(600));
    assert!(p.registrations().is_empty());
}

#[test]
fn state_snapshot_restores_tokens_and_bindings() {
    let mut p = proxy();
    let now = Instant::now();
    p.regs.upsert(
        "sip:1@pbx.example.com",
        "sip:1@192.168.1.50:5062",
        phone(),
        BindingMode::Contact,
        || "tok1".into(),
        now,
    );
    p.regs.confirm("tok1", phone(), 300, now);
    let tok = token::encode(&p.key, &phone());
    let snap = toml::to_string(&p.state()).unwrap();
    let mut q = proxy_with("", "");
    q.restore(toml::from_str(&snap).unwrap(), now);
    assert_eq!(
        token::decode(&q.key, tok.as_bytes()),
        Some(phone()),
        "flow tokens survive a restart"
    );
    assert_eq!(
        q.registrations()
            .find("sip:1@pbx.example.com", "sip:1@192.168.1.50:5062")
            .map(|b| b.token.as_str()),
        Some("tok1")
    );
    // and an inbound request to the token contact still finds the phone
    let m = msg("OPTIONS sip:b-tok1@192.168.1.2:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.10;branch=z9hG4bKo1
Max-Forwards: 70
From: <sip:pbx.example.com>;tag=o1
To: <sip:1@pbx.example.com>
Call-ID: o1
CSeq: 1 OPTIONS
Content-Length: 0

");
    let (flow, f) = forwarded(&feed(&mut q, &m, pbx(), true)).unwrap();
    assert_eq!(flow, phone());
    assert_eq!(f.request_uri().unwrap(), b"sip:1@192.168.1.50:5062");
    q.handle_timeout(now + Duration::from_secs(300));
    assert!(q.registrations().is_empty());
}

#[test]
fn readdress_keeps_user_and_parameters() {
    let u =
        Uri::parse(b"sips:1002@192.168.1.2:5061;transport=tcp;user=phone;maddr=1.2.3.4;x").unwrap();
    assert_eq!(
        readdress(&u, "pbx.example.com"),
        b"sips:1002@pbx.example.com;user=phone;x"
    );
    let u = Uri::parse(b"sip:192.168.1.2").unwrap();
    assert_eq!(readdress(&u, "pbx.example.com"), b"sip:pbx.example.com");
}
