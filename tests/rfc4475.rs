//! RFC 4475 (SIP torture test messages) against the datagram framer, the validator,
//! the editor and the sans-IO endpoint.
//!
//! Every one of the 49 messages in `tests/data/rfc4475/` (copied byte for byte from
//! the RFC's base64 archive) is in [`TABLE`] with the outcome RFC 4475 §3 describes
//! for it, in the role the bridge plays (a proxy, RFC 3261 §16):
//! - valid requests pass `check_request`, are forwarded byte for byte when nothing
//!   is edited, and have their tricky values asserted one by one;
//! - role-dependent ones state what a proxy does (`bext01` → 420, `zeromf` → 483,
//!   `bcast` → dropped);
//! - invalid requests are rejected with the status RFC 4475 names (400, 416, 505)
//!   and a reason phrase naming the problem, also end to end through
//!   [`Endpoint::handle_datagram`];
//! - invalid responses are dropped.
//!
//! Finally no input may panic: every message (and every sample) is also fed
//! truncated at every byte offset and with deterministic random byte flips through
//! everything in `fuzz/exercise.rs` (the same code the fuzz targets run).

#[path = "../fuzz/exercise.rs"]
mod exercise;

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::Flow;
use blf_bridge::sip::{
    Editor, HeaderName, Method, NameAddr, Scheme, SipMessage, StreamFramer, StreamItem,
    SubStateKind, Uri, validate,
};
use blf_bridge::util::Rng;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What RFC 4475 says should happen to a message, for a proxy.
#[derive(Clone, Copy)]
enum Expect {
    /// Well-formed request. `proxy` is what a proxy answers itself (`None`: it
    /// forwards). `check` asserts the message's values.
    Request {
        proxy: Option<u16>,
        check: fn(&SipMessage, &[u8]),
    },
    /// Well-formed response; `forward` is false when a proxy must drop it anyway.
    Response {
        forward: bool,
        check: fn(&SipMessage, &[u8]),
    },
    /// Invalid request: answered with this status and reason phrase.
    Reject { code: u16, reason: &'static str },
    /// Invalid response: `check_response` fails with this reason and it is dropped.
    Drop { reason: &'static str },
}

use Expect::*;

const fn reject(code: u16, reason: &'static str) -> Expect {
    Reject { code, reason }
}
const fn fwd(check: fn(&SipMessage, &[u8])) -> Expect {
    Request { proxy: None, check }
}

/// RFC 4475 §3, one row per file.
const TABLE: &[(&str, Expect)] = &[
    // 3.1.1 valid messages
    ("wsinv", fwd(wsinv)),
    ("intmeth", fwd(intmeth)),
    ("esc01", fwd(esc01)),
    ("escnull", fwd(escnull)),
    ("esc02", fwd(esc02)),
    ("lwsdisp", fwd(lwsdisp)),
    ("longreq", fwd(longreq)),
    ("dblreq", fwd(dblreq)),
    ("semiuri", fwd(semiuri)),
    ("transports", fwd(transports)),
    ("mpart01", fwd(mpart01)),
    (
        "unreason",
        Response {
            forward: true,
            check: unreason,
        },
    ),
    (
        "noreason",
        Response {
            forward: true,
            check: noreason,
        },
    ),
    // 3.1.2 invalid messages
    ("badinv01", reject(400, "Malformed Via")),
    ("clerr", reject(400, "Content-Length Exceeds Message")),
    ("ncl", reject(400, "Malformed Content-Length")),
    // "should respond with a 400 Bad Request due to the CSeq error"
    ("scalar02", reject(400, "Malformed CSeq")),
    (
        "scalarlg",
        Drop {
            reason: "Malformed CSeq",
        },
    ),
    ("quotbal", reject(400, "Malformed To")),
    ("ltgtruri", reject(400, "Request-URI in Angle Brackets")),
    ("lwsruri", reject(400, "Whitespace in Request-URI")),
    ("lwsstart", reject(400, "Extra Whitespace in Request-Line")),
    ("trws", reject(400, "Trailing Whitespace in Request-Line")),
    ("escruri", reject(400, "Headers Not Allowed in Request-URI")),
    // "shouldn't [reject] unless the contents of the Date header field were
    // actually important to its processing": the bridge never reads Date.
    ("baddate", fwd(baddate)),
    ("regbadct", reject(400, "Malformed Contact")),
    ("badaspec", reject(400, "Malformed To")),
    ("baddn", reject(400, "Malformed From")),
    ("badvers", reject(505, "Version Not Supported")),
    (
        "mismatch01",
        reject(400, "CSeq Method Does Not Match Request Method"),
    ),
    // 501 or 400 are both allowed; the mismatch is what is wrong with it
    (
        "mismatch02",
        reject(400, "CSeq Method Does Not Match Request Method"),
    ),
    (
        "bigcode",
        Drop {
            reason: "Malformed Status-Line",
        },
    ),
    // 3.2 transaction layer: "could reject the request with a 400 Response
    // (preferably statelessly)"
    (
        "badbranch",
        reject(400, "Missing Transaction Identifier in Via Branch"),
    ),
    // 3.3 application layer
    ("insuf", reject(400, "Missing Call-ID")),
    ("unkscm", reject(416, "Unsupported URI Scheme")),
    ("novelsc", reject(416, "Unsupported URI Scheme")),
    ("unksm2", fwd(unksm2)),
    (
        "bext01",
        Request {
            proxy: Some(420),
            check: bext01,
        },
    ),
    ("invut", fwd(invut)),
    ("regaut01", fwd(regaut01)),
    ("multi01", reject(400, "Duplicate From")),
    ("mcl01", reject(400, "Multiple Content-Length Values")),
    (
        "bcast",
        Response {
            forward: false,
            check: bcast,
        },
    ),
    (
        "zeromf",
        Request {
            proxy: Some(483),
            check: zeromf,
        },
    ),
    ("cparam01", fwd(cparam01)),
    ("cparam02", fwd(cparam02)),
    ("regescrt", fwd(regescrt)),
    ("sdp01", fwd(sdp01)),
    // 3.4 backward compatibility
    ("inv2543", fwd(inv2543)),
];

fn data_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(sub)
}

fn load(name: &str) -> Vec<u8> {
    let p = data_dir("rfc4475").join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parse(data: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(data)).expect("framable")
}

/// What a proxy does with a well-formed request before forwarding it: RFC 3261
/// §16.3 step 3 (Max-Forwards) and step 6 (Proxy-Require).
fn proxy_answer(m: &SipMessage) -> Option<u16> {
    if m.max_forwards() == Some(Ok(0)) {
        return Some(483);
    }
    if !validate::unsupported_proxy_require(m).is_empty() {
        return Some(420);
    }
    None
}

fn na(r: Option<Result<NameAddr<'_>, blf_bridge::sip::TypedError>>) -> NameAddr<'_> {
    r.expect("header present").expect("header parses")
}

fn s(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8")
}

// ------------------------------------------------------------------ the table

#[test]
fn corpus_has_49_messages_and_every_one_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(data_dir("rfc4475"))
        .expect("tests/data/rfc4475")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| {
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 49);
    let mut names: Vec<String> = TABLE.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), TABLE.len(), "duplicate row");
    assert_eq!(files, names);
}

#[test]
fn every_message_gets_its_rfc4475_outcome() {
    for &(name, expect) in TABLE {
        let data = load(name);
        let m = parse(&data);
        match expect {
            Request { proxy, check } => {
                assert!(m.is_request(), "{name}");
                assert_eq!(validate::check_request(&m), Ok(()), "{name}");
                assert_eq!(proxy_answer(&m), proxy, "{name}: proxy role");
                // forwarded unchanged = byte for byte (dblreq: the REGISTER only)
                let out = Editor::new(&m).finish();
                if name == "dblreq" {
                    assert_eq!(&out[..], &data[..out.len()], "{name}");
                    assert!(
                        data[out.len()..]
                            .starts_with(b"\r\nINVITE sip:joe@example.com SIP/2.0\r\n")
                    );
                } else {
                    assert_eq!(&out[..], &data[..], "{name}: not forwarded byte for byte");
                }
                check(&m, &data);
            }
            Response { forward, check } => {
                assert!(!m.is_request(), "{name}");
                assert_eq!(validate::check_response(&m), Ok(()), "{name}");
                assert_eq!(
                    !validate::has_broadcast_via(&m),
                    forward,
                    "{name}: proxy role"
                );
                assert_eq!(&Editor::new(&m).finish()[..], &data[..], "{name}");
                check(&m, &data);
            }
            Reject { code, reason } => {
                assert!(m.is_request(), "{name}");
                let d = validate::check_request(&m).expect_err(name);
                assert_eq!((d.code, d.reason), (code, reason), "{name}");
            }
            Drop { reason } => {
                assert!(!m.is_request(), "{name}");
                let d = validate::check_response(&m).expect_err(name);
                assert_eq!(d.reason, reason, "{name}");
            }
        }
    }
}

fn endpoint() -> Endpoint {
    let cfg = Config::parse(
        r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"

[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.example.com"

[[account]]
user = "1001"
password = "secret"
"#,
        "rfc4475.toml",
        &|_| None,
    )
    .expect("test config");
    let local = LocalAddrs {
        udp: Some("127.0.0.1:5060".parse().expect("addr")),
        tcp: Some("127.0.0.1:5060".parse().expect("addr")),
        advertise_host: "127.0.0.1".into(),
    };
    let upstream = "127.0.0.1:5070".parse().expect("addr");
    Endpoint::new(
        Arc::new(cfg),
        Arc::new(blf_bridge::profile::ProfileSet::builtin()),
        local,
        upstream,
        1,
        Instant::now(),
    )
}

/// Invalid requests get exactly one answer, on the flow they came from, with the
/// expected status and a reason phrase that names the problem; invalid responses
/// get nothing.
#[test]
fn endpoint_answers_invalid_requests_and_drops_invalid_responses() {
    let now = Instant::now();
    let from = Flow::udp("127.0.0.1:5062".parse().expect("addr"));
    let mut checked = 0;
    for &(name, expect) in TABLE {
        let data = load(name);
        let mut ep = endpoint();
        ep.handle_datagram(from, Bytes::from(data.clone()), now);
        let out: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        match expect {
            Reject { code, reason } => {
                assert_eq!(out.len(), 1, "{name}: {out:?}");
                assert_eq!(out[0].flow, from, "{name}");
                let r = parse(&out[0].data);
                assert_eq!(r.status(), Some(code), "{name}");
                let phrase = r.reason().unwrap_or_default();
                assert_eq!(s(phrase), reason, "{name}");
                assert!(!phrase.is_empty() && phrase != b"Bad Request", "{name}");
                // the answer belongs to the request: same Call-ID/CSeq/Vias
                let req = parse(&data);
                assert_eq!(r.call_id(), req.call_id(), "{name}");
                assert_eq!(
                    r.header_value(HeaderName::CSeq),
                    req.header_value(HeaderName::CSeq),
                    "{name}"
                );
                assert_eq!(
                    r.count(HeaderName::Via),
                    req.count(HeaderName::Via),
                    "{name}"
                );
                checked += 1;
            }
            Drop { .. } => {
                assert!(out.is_empty(), "{name}: {out:?}");
                checked += 1;
            }
            Request { .. } | Response { .. } => {}
        }
    }
    // 22 requests to answer, 2 responses to drop
    assert_eq!(
        checked, 24,
        "every invalid message went through the endpoint"
    );
}

// ------------------------------------------------------- per-message values

fn wsinv(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.method(), Some(&Method::Invite));
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(ruri.user, Some(&b"vivekg"[..]));
    assert_eq!(ruri.host, b"chair-dnrc.example.com");
    assert_eq!(ruri.params.get("unknownparam"), Some(None));
    let to = na(m.to());
    assert_eq!(to.uri, b"sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag(), Some(&b"1918181833n"[..]));
    let from = na(m.from());
    assert_eq!(from.display, Some(&br#""J Rosenberg \\\"""#[..]));
    assert_eq!(from.uri, b"sip:jdrosen@example.com");
    assert_eq!(m.from_tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.max_forwards(), Some(Ok(68)));
    assert_eq!(m.call_id(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    let cseq = m.cseq().expect("CSeq").expect("parses");
    assert_eq!((cseq.seq, cseq.method), (9, &b"INVITE"[..]));
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n") && m.body().ends_with(b"a=rtpmap:31 LPC\r\n"));
    // three Via values over two headers, the first one folded over three lines
    let vias: Vec<_> = m.vias().map(|v| v.expect("Via parses")).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!((vias[0].transport, vias[0].host), ("UDP", "192.0.2.2"));
    assert_eq!(vias[0].branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(m.branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(
        (vias[1].transport, vias[1].host),
        ("TCP", "spindle.example.com")
    );
    assert_eq!(vias[1].branch(), Some(&b"z9hG4bK9ikj8"[..]));
    assert_eq!(
        (vias[2].transport, vias[2].host),
        ("UDP", "192.168.255.111")
    );
    assert_eq!(vias[2].branch(), Some(&b"z9hG4bK30239"[..]));
    // empty Subject, unknown headers kept as written
    assert_eq!(m.header_value(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        m.header_value_by_name("newfangledheader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
    assert_eq!(
        m.header_value_by_name("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    let route =
        NameAddr::parse(m.header_value(HeaderName::Route).unwrap_or_default()).expect("Route");
    let ru = route.parsed_uri().expect("Route URI");
    assert!(ru.has_lr());
    assert_eq!(ru.params.value("unknownwith"), Some(&b"value"[..]));
    assert_eq!(ru.params.get("unknown-no-value"), Some(None));
    let contacts: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].display, Some(&br#""Quoted string \"\"""#[..]));
    assert_eq!(contacts[0].params.value("newparam"), Some(&b"newvalue"[..]));
    assert_eq!(contacts[0].params.get("secondparam"), Some(None));
    assert_eq!(contacts[0].params.value("q"), Some(&b"0.33"[..]));
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
}

fn intmeth(m: &SipMessage, _: &[u8]) {
    let method: &[u8] = b"!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(&Method::Other(Bytes::from_static(method))));
    let cseq = m.cseq().expect("CSeq").expect("parses");
    assert_eq!((cseq.seq, cseq.method), (139122385, method));
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(ruri.scheme, Scheme::Sip);
    assert_eq!(
        ruri.user,
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(ruri.host, b"example.com");
    assert_eq!(ruri.headers, None);
    assert_eq!(m.branch(), Some(&b"z9hG4bK-.!%66*_+`'~"[..]));
    let to = na(m.to());
    assert_eq!(
        to.display,
        Some(&b"\"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\""[..])
    );
    assert_eq!(to.parsed_uri().expect("To URI").host, b"example.com");
    let from = na(m.from());
    assert_eq!(from.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
    assert_eq!(from.tag(), Some(&b"_token~1'+`*%!-."[..]));
    let fp = from.params.value("fromParam''~+*_!.-%").expect("fromParam");
    assert_eq!(
        s(fp),
        "\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\""
    );
    assert_eq!(
        m.call_id(),
        Some(&b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"[..])
    );
    assert_eq!(m.max_forwards(), Some(Ok(255)));
    assert_eq!(
        m.header_value_by_name("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}\u{5927}\u{505c}\u{96fb}".as_bytes())
    );
}

fn esc01(m: &SipMessage, _: &[u8]) {
    // escapes are kept as written, never decoded
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(ruri.user, Some(&b"sips%3Auser%40example.com"[..]));
    assert_eq!(ruri.host, b"example.net");
    assert_eq!(
        na(m.to()).parsed_uri().expect("To").user,
        Some(&b"%75se%72"[..])
    );
    assert_eq!(
        na(m.from()).parsed_uri().expect("From").user,
        Some(&b"I%20have%20spaces"[..])
    );
    let c: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(c.len(), 1);
    let cu = c[0].parsed_uri().expect("Contact URI");
    assert_eq!(cu.user, Some(&b"cal%6Cer"[..]));
    assert_eq!(cu.params.get("%6C%72"), Some(None));
    assert_eq!(cu.params.value("n%61me"), Some(&b"v%61lue%25%34%31"[..]));
    assert_eq!(cu.params.get("lr"), None, "%6C%72 is not lr");
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(m.body().len(), 150);
}

fn escnull(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(
        na(m.to()).parsed_uri().expect("To").user,
        Some(&b"null-%00-null"[..])
    );
    assert_eq!(m.from_tag(), Some(&b"839923423"[..]));
    let users: Vec<&[u8]> = m
        .contacts()
        .map(|(_, c)| {
            c.expect("Contact")
                .parsed_uri()
                .expect("URI")
                .user
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(users, [&b"%00"[..], b"%00%00"]);
    assert_eq!(m.body(), b"");
}

fn esc02(m: &SipMessage, _: &[u8]) {
    // RE%47IST%45R is an extension method, not REGISTER
    assert_eq!(
        m.method(),
        Some(&Method::Other(Bytes::from_static(b"RE%47IST%45R")))
    );
    assert_ne!(m.method(), Some(&Method::Register));
    assert_eq!(
        m.cseq().expect("CSeq").expect("parses").method,
        b"RE%47IST%45R"
    );
    assert_eq!(na(m.to()).display, Some(&b"\"%Z%45\""[..]));
    assert_eq!(na(m.from()).display, Some(&b"\"%Z%45\""[..]));
    assert_eq!(m.branch(), Some(&b"z9hG4bK209%fzsnel234"[..]));
    // two Contact values, not three: C%6Fntact is an unknown header
    let hosts: Vec<&[u8]> = m
        .contacts()
        .map(|(_, c)| c.expect("Contact").parsed_uri().expect("URI").host)
        .collect();
    assert_eq!(hosts, [&b"host1.example.com"[..], b"host3.example.com"]);
    assert_eq!(
        m.header_value_by_name("C%6Fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );
}

fn lwsdisp(m: &SipMessage, _: &[u8]) {
    let from = na(m.from());
    assert_eq!(from.display, Some(&b"caller"[..]));
    assert_eq!(from.uri, b"sip:caller@example.com");
    assert_eq!(from.tag(), Some(&b"323"[..]));
}

fn longreq(m: &SipMessage, data: &[u8]) {
    let vias: Vec<_> = m.vias().map(|v| v.expect("Via")).collect();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host, "sip33.example.com");
    assert_eq!(vias[33].host, "host.example.com");
    assert_eq!(vias[33].received(), Some(&b"192.0.2.5"[..]));
    let branch = vias[33].branch().expect("branch");
    assert!(branch.starts_with(b"verylonglong") && branch.len() > 150);
    let to = na(m.to());
    assert!(
        to.display
            .expect("display")
            .starts_with(b"\"I have a user name of extremeextreme")
    );
    let tu = to.parsed_uri().expect("To URI");
    assert_eq!((tu.host, tu.port), (&b"example.com"[..], Some(6000)));
    let p1 = tu.params.value("unknownparam1").expect("unknownparam1");
    assert!(p1.len() == 89 && p1.starts_with(b"verylonglong") && p1.ends_with(b"longvalue"));
    assert_eq!(m.from_tag().map(<[u8]>::len), Some(155));
    let cid = m.call_id().expect("Call-ID");
    assert!(cid.starts_with(b"longreq.onereally") && cid.ends_with(b"longcallid"));
    let unknown = m
        .headers()
        .iter()
        .find(|h| m.header_name_bytes(h).starts_with(b"Unknown-LongLong"))
        .expect("long unknown header");
    let v = m.value(unknown);
    assert!(v.starts_with(b"unknown-longlong") && v.ends_with(b"longlong-parameter-value"));
    assert_eq!(m.header_name_bytes(unknown).len(), 93); // "Unknown-" + 20 x "Long" + "-Name"
    assert_eq!(m.body().len(), 150);
    assert_eq!(m.body(), &data[data.len() - 150..]);
}

fn dblreq(m: &SipMessage, data: &[u8]) {
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(
        m.call_id(),
        Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..])
    );
    assert_eq!(m.cseq().expect("CSeq").expect("parses").seq, 8);
    assert_eq!(m.body(), b"");
    // the INVITE after the REGISTER is noise, not a second message
    assert!(m.message_bytes().len() < data.len());
    assert!(!m.message_bytes().windows(6).any(|w| w == b"INVITE"));
}

fn semiuri(m: &SipMessage, _: &[u8]) {
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(ruri.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(ruri.host, b"example.com");
    assert!(ruri.params.raw.is_empty());
    // the folded Accept list has six values
    assert_eq!(m.values(HeaderName::Accept).count(), 6);
    assert_eq!(m.accepts("message/sipfrag"), Some(true));
    assert_eq!(m.accepts("application/pidf+xml"), Some(false));
}

fn transports(m: &SipMessage, _: &[u8]) {
    let vias: Vec<_> = m.vias().map(|v| v.expect("Via")).collect();
    let t: Vec<(&str, &str)> = vias.iter().map(|v| (v.transport, v.host)).collect();
    assert_eq!(
        t,
        [
            ("UDP", "t1.example.com"),
            ("SCTP", "t2.example.com"),
            ("TLS", "t3.example.com"),
            ("UNKNOWN", "t4.example.com"),
            ("TCP", "t5.example.com"),
        ]
    );
    assert_eq!(vias[2].sent_by(), ("t3.example.com", 5061));
    assert_eq!(
        m.call_id(),
        Some(&b"transports.kijh4akdnaqjkwendsasfdj"[..])
    );
}

fn mpart01(m: &SipMessage, data: &[u8]) {
    assert_eq!(m.method(), Some(&Method::Message));
    assert_eq!(m.body().len(), 553);
    // the binary part is intact: the body is exactly the last 553 bytes
    assert_eq!(m.body(), &data[data.len() - 553..]);
    assert!(std::str::from_utf8(m.body()).is_err(), "binary body");
    assert!(m.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(m.content_type(), Some(&b"multipart/mixed"[..]));
    assert!(
        m.header_value(HeaderName::Identity)
            .is_some_and(|v| v.len() == 172)
    );
}

fn unreason(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        s(m.reason().unwrap_or_default()),
        "= 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}"
    );
    assert_eq!(m.body().len(), 154);
    assert_eq!(m.branch(), Some(&b"z9hG4bK1324923"[..]));
}

fn noreason(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(&b""[..]));
    assert_eq!(m.to_tag(), Some(&b"902jndnke3"[..]));
}

fn baddate(m: &SipMessage, _: &[u8]) {
    assert_eq!(
        m.header_value(HeaderName::Date),
        Some(&b"Fri, 01 Jan 2010 16:00:00 EST"[..])
    );
    assert_eq!(m.body().len(), 150);
}

fn unksm2(m: &SipMessage, _: &[u8]) {
    let to = na(m.to());
    assert_eq!(to.uri, b"isbn:2983792873");
    assert_eq!(to.parsed_uri().expect("To URI").scheme, Scheme::Other);
    let from = na(m.from());
    assert_eq!(from.uri, b"http://www.example.com");
    assert_eq!(from.tag(), Some(&b"3234233"[..]));
    let c: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].uri, b"name:John_Smith");
    assert!(!c[0].parsed_uri().expect("URI").is_sip());
}

fn bext01(m: &SipMessage, _: &[u8]) {
    assert_eq!(
        validate::unsupported_proxy_require(m),
        [&b"noProxiesSupportThis"[..], b"norDoAnyProxiesSupportThis"]
    );
    let require: Vec<&[u8]> = m.option_tags(HeaderName::Require).collect();
    assert_eq!(
        require,
        [&b"nothingSupportsThis"[..], b"nothingSupportsThisEither"]
    );
}

fn invut(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.content_type(), Some(&b"application/unknownformat"[..]));
    assert_eq!(
        m.body(),
        b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n"
    );
}

fn regaut01(m: &SipMessage, _: &[u8]) {
    assert_eq!(
        m.header_value(HeaderName::Authorization),
        Some(&b"NoOneKnowsThisScheme opaque-data=here"[..])
    );
    assert_eq!(m.header_value(HeaderName::ContentLength), Some(&b"0"[..]));
}

fn bcast(m: &SipMessage, _: &[u8]) {
    assert!(validate::has_broadcast_via(m));
    let hosts: Vec<&str> = m.vias().map(|v| v.expect("Via").host).collect();
    assert_eq!(hosts, ["192.0.2.198", "255.255.255.255"]);
}

fn zeromf(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.max_forwards(), Some(Ok(0)));
}

fn cparam01(m: &SipMessage, _: &[u8]) {
    // unknownparam is a contact parameter, not a URI parameter
    let c: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(c.len(), 1);
    assert!(!c[0].angle);
    assert_eq!(c[0].uri, b"sip:+19725552222@gw1.example.net");
    assert_eq!(c[0].params.get("unknownparam"), Some(None));
    assert!(c[0].parsed_uri().expect("URI").params.raw.is_empty());
}

fn cparam02(m: &SipMessage, _: &[u8]) {
    // ... and here it is a URI parameter
    let c: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(c.len(), 1);
    assert!(c[0].angle);
    assert_eq!(c[0].uri, b"sip:+19725552222@gw1.example.net;unknownparam");
    assert!(c[0].params.raw.is_empty());
    assert_eq!(
        c[0].parsed_uri().expect("URI").params.get("unknownparam"),
        Some(None)
    );
}

fn regescrt(m: &SipMessage, _: &[u8]) {
    let c: Vec<_> = m.contacts().map(|(_, c)| c.expect("Contact")).collect();
    assert_eq!(c.len(), 1);
    let u = c[0].parsed_uri().expect("URI");
    assert_eq!(u.host, b"example.com");
    assert_eq!(u.headers, Some(&b"Route=%3Csip:sip.example.com%3E"[..]));
}

fn sdp01(m: &SipMessage, _: &[u8]) {
    assert_eq!(m.accepts("application/sdp"), Some(false));
    assert_eq!(m.accepts("text/nobodyKnowsThis"), Some(true));
    assert_eq!(m.body().len(), 150);
}

fn inv2543(m: &SipMessage, data: &[u8]) {
    let via = m.top_via().expect("Via").expect("parses");
    assert_eq!(via.branch(), None);
    assert!(!via.has_rfc3261_branch());
    assert_eq!(m.from_tag(), None);
    assert_eq!(m.header(HeaderName::ContentLength).map(|_| ()), None);
    assert_eq!(m.max_forwards(), None);
    // no Content-Length on UDP: the body is the rest of the datagram
    let blank = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("blank line")
        + 4;
    assert_eq!(m.body(), &data[blank..]);
    assert!(m.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
    let rr = NameAddr::parse(m.header_value(HeaderName::RecordRoute).unwrap_or_default())
        .expect("Record-Route");
    assert_eq!(
        rr.parsed_uri().expect("URI").maddr(),
        Some(&b"ss1.example.com"[..])
    );
}

// ---------------------------------------------------------------- samples

fn sample(name: &str) -> Vec<u8> {
    let p = data_dir("samples").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn samples_are_valid_and_round_trip() {
    for name in [
        "notify.sip",
        "notify_compact.sip",
        "resp407.sip",
        "subscribe_expires0.sip",
        "subscribe_expires3600.sip",
        "subscribe_presence_vendor.sip",
    ] {
        let data = sample(name);
        let m = parse(&data);
        let verdict = if m.is_request() {
            validate::check_request(&m)
        } else {
            validate::check_response(&m)
        };
        assert_eq!(verdict, Ok(()), "{name}");
        assert_eq!(&Editor::new(&m).finish()[..], &data[..], "{name}");
    }
    for name in ["notify.sip", "notify_compact.sip"] {
        let m = parse(&sample(name));
        let st = m
            .subscription_state()
            .expect("Subscription-State")
            .expect("parses");
        assert_eq!(
            (st.state, st.expires),
            (SubStateKind::Active, Some(3599)),
            "{name}"
        );
        assert!(m.event().expect("Event").expect("parses").is("dialog"));
        assert_eq!(m.body().len(), 291);
    }
    let m = parse(&sample("subscribe_presence_vendor.sip"));
    let ev = m.event().expect("Event").expect("parses");
    assert_eq!((ev.package, ev.id()), (&b"presence"[..], Some(&b"7"[..])));
    assert_eq!(m.expires(), Some(Ok(600)));
}

/// All samples back to back on one TCP stream, in odd-sized reads, frame into the
/// same messages as the datagrams.
#[test]
fn samples_on_a_stream() {
    let names = [
        "notify.sip",
        "resp407.sip",
        "notify_compact.sip",
        "subscribe_expires0.sip",
        "subscribe_presence_vendor.sip",
        "subscribe_expires3600.sip",
    ];
    let mut f = StreamFramer::new();
    let mut got = Vec::new();
    let mut pings = 0;
    let mut drain = |f: &mut StreamFramer| {
        while let Some(item) = f.next_item().expect("stream stays valid") {
            match item {
                StreamItem::Message(m) => got.push(m.message_bytes()),
                StreamItem::Ping => pings += 1,
                StreamItem::Pong => panic!("no pong was sent"),
            }
        }
    };
    for n in names {
        for chunk in sample(n).chunks(7) {
            f.push(chunk);
            drain(&mut f);
        }
        // A keep-alive ping between messages, in one read: a lone CRLF at the end
        // of a read is taken for a pong (RFC 5626 §4.4.1 ambiguity).
        f.push(b"\r\n\r\n");
        drain(&mut f);
    }
    assert_eq!(pings, names.len());
    assert_eq!(got.len(), names.len());
    for (m, n) in got.iter().zip(names) {
        assert_eq!(&m[..], &sample(n)[..], "{n}");
    }
}

// ----------------------------------------------------------------- no panic

/// The 49 messages in table order, then the samples sorted by name (a fixed order,
/// so that the seeded byte flips are the same on every machine).
fn all_inputs() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = TABLE.iter().map(|(n, _)| load(n)).collect();
    let mut samples: Vec<PathBuf> = std::fs::read_dir(data_dir("samples"))
        .expect("samples")
        .map(|e| e.expect("entry").path())
        .collect();
    samples.sort();
    assert_eq!(samples.len(), 6);
    v.extend(samples.iter().map(|p| std::fs::read(p).expect("sample")));
    v
}

#[test]
fn no_panic_on_any_truncation() {
    let mut parsed = 0;
    for data in all_inputs() {
        for cut in 0..=data.len() {
            let d = &data[..cut];
            if exercise::datagram(d) {
                parsed += 1;
            }
            exercise::stream(d, &[(cut % 13) as u8 + 1]);
        }
        // and the whole thing on a stream one byte at a time
        exercise::stream(&data, &[1]);
    }
    // most prefixes are framable (with a defect): the sweep really went deep
    assert!(parsed > 20_000, "{parsed}");
}

/// Bytes that matter to the grammar, so that flips hit interesting states.
const SPICY: &[u8] = b" \t\r\n:;,=\"<>@\\?%/0123456789SIPsip";

#[test]
fn no_panic_on_random_byte_flips() {
    let mut rng = Rng::seeded(1);
    for data in all_inputs() {
        for _ in 0..400 {
            let mut d = data.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let i = rng.below(d.len() as u64) as usize;
                d[i] = if rng.below(2) == 0 {
                    SPICY[rng.below(SPICY.len() as u64) as usize]
                } else {
                    rng.below(256) as u8
                };
            }
            // sometimes also cut or duplicate a slice
            match rng.below(4) {
                0 => d.truncate(rng.below(d.len() as u64 + 1) as usize),
                1 => {
                    let a = rng.below(d.len() as u64) as usize;
                    let b = (a + rng.below(40) as usize).min(d.len());
                    let piece = d[a..b].to_vec();
                    d.splice(a..a, piece);
                }
                _ => {}
            }
            exercise::datagram(&d);
            let sizes: Vec<u8> = (0..5).map(|_| rng.below(64) as u8).collect();
            exercise::stream(&d, &sizes);
        }
    }
}
