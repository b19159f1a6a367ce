//! IPv6: the RFC 5118 torture messages (`tests/data/ipv6/`, §4.1–4.10) through the
//! parser, the validator and a sans-IO bridge that listens on `[::1]`; and a
//! phone on `[::1]` registering and subscribing through such a bridge towards an
//! upstream on `[::1]` (sans-IO here; the real binary on `[::1]` is in
//! `tests/ipv6_e2e.rs`).

mod sim;

use sim::{crlf, reply};

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{Flow, Transmit};
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{HeaderName, SipMessage, Uri, validate};
use bytes::Bytes;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn load(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ipv6")
        .join(format!("{name}.sip"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parse(d: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(d)).expect("parses")
}

fn s(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const BRIDGE6: &str = "[::1]:5060";
const UPSTREAM6: &str = "[::1]:5070";
const PHONE6: &str = "[::1]:40000";

/// A bridge listening on [::1] for the domain `example.com`, upstream on [::1].
fn bridge6(domain: &str) -> Endpoint {
    let text = format!(
        r#"
[listen]
udp = "{BRIDGE6}"
tcp = "{BRIDGE6}"
[upstream]
proxy = "{UPSTREAM6}"
domain = "{domain}"
transport = "udp"
keepalive = "none"
[[account]]
user = "1001"
password = "pass1001"
"#
    );
    let cfg = Config::parse(&text, "ipv6.toml", &|_| None).expect("config");
    Endpoint::new(
        Arc::new(cfg),
        Arc::new(ProfileSet::builtin()),
        LocalAddrs {
            udp: Some(a(BRIDGE6)),
            tcp: Some(a(BRIDGE6)),
            advertise_host: "[::1]".into(),
        },
        a(UPSTREAM6),
        11,
        Instant::now(),
    )
}

fn out(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

/// An IPv6 reference `[…]` (or a bare address) as an address.
fn v6(host: &str) -> Ipv6Addr {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|e| panic!("{host}: {e}"))
}

fn uri_of(m: &SipMessage) -> Uri<'_> {
    Uri::parse(m.request_uri().unwrap()).expect("Request-URI")
}

fn contact_host(m: &SipMessage) -> String {
    let (_, c) = m.contacts().next().expect("a Contact");
    let c = c.expect("Contact parses");
    c.parsed_uri().expect("Contact URI").host_str().to_string()
}

/// RFC 5118 §4: the values of every message, as the RFC explains them.
#[test]
fn rfc5118_messages_parse_to_the_right_values() {
    // 4.1 valid: IPv6 references in Request-URI, Via and Contact
    let m = parse(&load("4.1-ipv6-good"));
    assert_eq!(validate::check_request(&m), Ok(()));
    assert_eq!(uri_of(&m).host_str(), "[2001:db8::10]");
    assert_eq!(uri_of(&m).host_unbracketed(), "2001:db8::10");
    assert_eq!(uri_of(&m).port, None);
    let via = m.top_via().unwrap().unwrap();
    assert_eq!(v6(via.sent_by().0), v6("2001:db8::9:1"));
    assert_eq!(via.sent_by().1, 5060);
    assert_eq!(v6(&contact_host(&m)), v6("2001:db8::1"));

    // 4.2 invalid: an unbracketed IPv6 address in the Request-URI
    let m = parse(&load("4.2-ipv6-bad"));
    assert_eq!(
        validate::check_request(&m).map_err(|d| d.code),
        Err(400),
        "RFC 5118 4.2"
    );

    // 4.3: "[2001:db8::10:5070]" is all address, no port
    let m = parse(&load("4.3-port-ambiguous"));
    assert_eq!(validate::check_request(&m), Ok(()));
    assert_eq!(v6(uri_of(&m).host_str()), v6("2001:db8::10:5070"));
    assert_eq!(uri_of(&m).port, None);

    // 4.4: "[2001:db8::10]:5070" is address and port
    let m = parse(&load("4.4-port-unambiguous"));
    assert_eq!(validate::check_request(&m), Ok(()));
    assert_eq!(v6(uri_of(&m).host_str()), v6("2001:db8::10"));
    assert_eq!(uri_of(&m).port, Some(5070));

    // 4.5: received with and without the brackets, both accepted
    for (f, want) in [
        ("4.5a-via-received-param-with-delim", "[2001:db8::9:255]"),
        ("4.5b-via-received-param-no-delim", "2001:db8::9:255"),
    ] {
        let m = parse(&load(f));
        assert_eq!(validate::check_request(&m), Ok(()), "{f}");
        let via = m.top_via().unwrap().unwrap();
        assert_eq!(s(via.received().unwrap()), want, "{f}");
        assert_eq!(v6(s(via.received().unwrap())), v6("2001:db8::9:255"), "{f}");
        assert!(via.has_rfc3261_branch(), "{f}");
    }

    // 4.6 / 4.8: IPv6 (and IPv4) in the SDP body, untouched
    for f in ["4.6-ipv6-in-sdp", "4.8-mult-ip-in-sdp"] {
        let m = parse(&load(f));
        assert_eq!(validate::check_request(&m), Ok(()), "{f}");
        assert!(s(m.body()).contains("c=IN IP6 2001:db8::"), "{f}");
        assert_eq!(
            s(m.header_value(HeaderName::ContentLength).unwrap())
                .parse::<usize>()
                .unwrap(),
            m.body().len(),
            "{f}"
        );
    }

    // 4.7: IPv6 and IPv4 Vias mixed, one over TCP
    let m = parse(&load("4.7-mult-ip-in-header"));
    assert_eq!(validate::check_request(&m), Ok(()));
    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(v6(vias[0].sent_by().0), v6("2001:db8::9:1"));
    assert_eq!(vias[0].sent_by().1, 6050);
    assert_eq!(vias[1].sent_by(), ("192.0.2.1", 5060));
    assert_eq!(vias[2].transport, "TCP");
    assert_eq!(v6(vias[2].sent_by().0), v6("2001:db8::9:255"));
    assert_eq!(s(vias[2].received().unwrap()), "192.0.2.200");

    // 4.9: IPv4-mapped IPv6 addresses
    let m = parse(&load("4.9-ipv4-mapped-ipv6"));
    assert_eq!(validate::check_request(&m), Ok(()));
    let via = m.top_via().unwrap().unwrap();
    assert_eq!(v6(via.sent_by().0), v6("::ffff:192.0.2.10"));
    assert_eq!(via.sent_by().1, 19823);
    assert_eq!(v6(&contact_host(&m)), v6("::ffff:192.0.2.2"));

    // 4.10: "2001:db8::192.0.2.1" is an address, "2001:db8:::192.0.2.1" is not
    let m = parse(&load("4.10b-ipv6-correct-abnf-2-colons"));
    assert_eq!(validate::check_request(&m), Ok(()));
    assert_eq!(v6(uri_of(&m).host_str()), v6("2001:db8::192.0.2.1"));
    let m = parse(&load("4.10a-ipv6-bug-abnf-3-colons"));
    let ruri = m.request_uri().unwrap();
    assert!(
        blf_bridge::sip::Uri::parse(ruri).is_err(),
        "not an IPv6 reference: {}",
        String::from_utf8_lossy(ruri)
    );
    assert!(validate::check_request(&m).is_err());
}

/// Each RFC 5118 message from a phone on [::1] to a bridge on [::1]: the invalid
/// one gets 400, the valid ones are answered as any request to a foreign host or
/// IP literal is (403: the bridge relays only to its domain), never forwarded;
/// and, with its Request-URI in the bridge's domain, each valid one is forwarded
/// to the upstream on [::1] with its Vias and body unchanged under the bridge's
/// `[::1]` Via, and the upstream's answer comes back to the phone on [::1].
#[test]
fn rfc5118_messages_through_a_bridge_on_ipv6_loopback() {
    let phone = Flow::udp(a(PHONE6));
    let valid = [
        "4.1-ipv6-good",
        "4.3-port-ambiguous",
        "4.4-port-unambiguous",
        "4.5a-via-received-param-with-delim",
        "4.5b-via-received-param-no-delim",
        "4.6-ipv6-in-sdp",
        "4.7-mult-ip-in-header",
        "4.8-mult-ip-in-sdp",
        "4.9-ipv4-mapped-ipv6",
        "4.10b-ipv6-correct-abnf-2-colons",
    ];
    let now = Instant::now();
    // as written: to foreign hosts
    for (f, codes) in [
        ("4.2-ipv6-bad", &[400][..]),
        // not an address (RFC 5118 4.10): a malformed Request-URI, 400
        ("4.10a-ipv6-bug-abnf-3-colons", &[400][..]),
    ]
    .into_iter()
    .chain(
        valid
            .iter()
            .filter(|f| **f != "4.9-ipv4-mapped-ipv6")
            .map(|f| (*f, &[403][..])),
    ) {
        let mut ep = bridge6("example.com");
        ep.handle_datagram(phone, Bytes::from(load(f)), now);
        let o = out(&mut ep);
        let finals: Vec<u16> = o
            .iter()
            .map(|t| parse(&t.data))
            .filter_map(|r| r.status())
            .filter(|&c| c >= 200)
            .collect();
        assert_eq!(finals.len(), 1, "{f}: {o:?}");
        assert!(codes.contains(&finals[0]), "{f}: {}", finals[0]);
        assert!(
            o.iter().all(|t| t.flow.remote == a(PHONE6)),
            "{f}: something left towards another host: {o:?}"
        );
    }
    // in the bridge's domain: forwarded, answered
    for f in valid {
        let text = String::from_utf8(load(f)).unwrap();
        let (line, rest) = text.split_once("\r\n").unwrap();
        let method = line.split(' ').next().unwrap();
        let ruri = if method == "REGISTER" {
            "sip:example.com"
        } else {
            "sip:user@example.com"
        };
        let data = format!("{method} {ruri} SIP/2.0\r\n{rest}");
        let req = parse(data.as_bytes());
        let mut ep = bridge6("example.com");
        ep.handle_datagram(phone, Bytes::from(data.clone()), now);
        let o = out(&mut ep);
        let up: Vec<_> = o.iter().filter(|t| t.flow.remote == a(UPSTREAM6)).collect();
        assert_eq!(up.len(), 1, "{f}: {o:?}");
        let fwd = parse(&up[0].data);
        assert_eq!(fwd.method(), req.method(), "{f}");
        let top = fwd.top_via().unwrap().unwrap();
        assert_eq!(v6(top.sent_by().0), Ipv6Addr::LOCALHOST, "{f}: our Via");
        assert_eq!(top.sent_by().1, 5060, "{f}");
        let below: Vec<&[u8]> = fwd
            .values(HeaderName::Via)
            .skip(1)
            .map(|v| fwd.slice(v))
            .collect();
        let orig: Vec<&[u8]> = req.values(HeaderName::Via).map(|v| req.slice(v)).collect();
        // the phone's Via gets received/rport stamped; the rest are untouched
        assert_eq!(below.len(), orig.len(), "{f}");
        let (b0, o0) = (
            blf_bridge::sip::Via::parse(below[0]).unwrap(),
            blf_bridge::sip::Via::parse(orig[0]).unwrap(),
        );
        assert_eq!(
            (b0.sent_by(), b0.branch()),
            (o0.sent_by(), o0.branch()),
            "{f}"
        );
        assert_eq!(below[1..], orig[1..], "{f}");
        assert_eq!(fwd.body(), req.body(), "{f}: body");
        // the upstream answers; the answer reaches the phone on [::1]
        let ok = reply(
            &fwd,
            200,
            "OK",
            Some("up1"),
            "Contact: <sip:user@[::1]:5070>\r\n",
        );
        ep.handle_datagram(Flow::udp(a(UPSTREAM6)), Bytes::from(crlf(&ok)), now);
        let back: Vec<_> = out(&mut ep)
            .into_iter()
            .filter(|t| parse(&t.data).status() == Some(200))
            .collect();
        assert_eq!(back.len(), 1, "{f}: {back:?}");
        assert_eq!(
            back[0].flow.remote.ip(),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            "{f}"
        );
        let r = parse(&back[0].data);
        assert_eq!(r.count(HeaderName::Via), req.count(HeaderName::Via), "{f}");
        assert_eq!(r.call_id(), req.call_id(), "{f}");
    }
}
