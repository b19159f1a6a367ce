//! Digest client tests over real SIP messages.
//!
//! Expected `response` values marked "python" were computed independently with
//! Python's hashlib from the inputs shown next to them (the cnonce being the one
//! the seeded [`Rng`] yields, read from the header under test).

use super::digest::{ResponseInput, compute_response};
use super::*;
use bytes::Bytes;
use ezk_sip_types::header::typed::{AuthResponse, DigestResponse, Username};

const SEED: u64 = 42;

fn msg(s: &str) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).expect("test message parses")
}

/// The bridge's initial SUBSCRIBE to 1002, with optional extra header lines.
fn subscribe(uri: &str, extra: &[(&str, &str)]) -> SipMessage {
    let mut s = format!(
        "SUBSCRIBE {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1491280923;rport\r\n\
         From: <sip:1001@pbx.example.com>;tag=1365906328\r\n\
         To: <sip:1002@pbx.example.com>\r\n\
         Call-ID: 1979306516-5062-1@BA.BG.B.FA\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Event: dialog\r\n\
         Expires: 3600\r\n"
    );
    for (n, v) in extra {
        s.push_str(n);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    msg(&s)
}

/// A challenge response with the given status and challenge header lines.
fn challenge(status: u16, headers: &[(&str, &str)]) -> SipMessage {
    let reason = match status {
        401 => "Unauthorized",
        407 => "Proxy Authentication Required",
        _ => "Whatever",
    };
    let mut s = format!(
        "SIP/2.0 {status} {reason}\r\n\
         Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1491280923;rport=5062;received=198.51.100.7\r\n\
         From: <sip:1001@pbx.example.com>;tag=1365906328\r\n\
         To: <sip:1002@pbx.example.com>;tag=as1a2b3c4d\r\n\
         Call-ID: 1979306516-5062-1@BA.BG.B.FA\r\n\
         CSeq: 1 SUBSCRIBE\r\n"
    );
    for (n, v) in headers {
        s.push_str(n);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    msg(&s)
}

fn client() -> DigestClient {
    DigestClient::new(Credentials::new("1001", "s3cr3t"))
}

/// Parse a header value we produced back through ezk (as a server would).
fn parsed(value: &str) -> DigestResponse {
    match ezk_parse::<AuthResponse>(value.as_bytes()) {
        Ok(AuthResponse::Digest(d)) => d,
        other => panic!("not a digest response: {other:?} from {value}"),
    }
}

/// `param=value` or `param="value"` from one of our header values.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value
        .trim_start_matches("Digest ")
        .split(", ")
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

const KAMAILIO_407: &str =
    r#"Digest realm="pbx.test", nonce="Zk9uY2UxMjM0NTY3ODkwYWJjZGVm", qop="auth""#;
const KAMAILIO_407_B: &str =
    r#"Digest realm="pbx.test", nonce="U2Vjb25kTm9uY2VGb3JQYnhUZXN0", qop="auth""#;

/// The 407 from corpus/samples/resp407.sip (Asterisk), copied byte for byte.
const RESP407: &str = "SIP/2.0 407 Proxy Authentication Required\r\n\
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1491280923;rport=5062;received=198.51.100.7\r\n\
From: <sip:1001@pbx.example.com>;tag=1365906328\r\n\
To: <sip:1002@pbx.example.com>;tag=as1a2b3c4d\r\n\
Call-ID: 1979306516-5062-1@BA.BG.B.FA\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Server: Asterisk PBX 18.20.0\r\n\
Proxy-Authenticate: Digest realm=\"pbx.example.com\", nonce=\"5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c\", qop=\"auth\", algorithm=MD5, opaque=\"a1b2c3\"\r\n\
Content-Length: 0\r\n\
\r\n";

#[test]
fn resp407_sample_yields_exact_proxy_authorization() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    assert!(!c.has_credentials());
    assert!(
        c.authorize(
            &Method::Subscribe,
            "sip:1002@pbx.example.com",
            b"",
            &mut rng
        )
        .is_empty()
    );
    let req = subscribe("sip:1002@pbx.example.com", &[]);
    c.handle_challenge(&msg(RESP407), &req, &mut rng).unwrap();
    assert!(c.has_credentials());
    let h = c.authorize(
        &Method::Subscribe,
        "sip:1002@pbx.example.com",
        b"",
        &mut rng,
    );
    // python: ha1=H("1001:pbx.example.com:s3cr3t"); ha2=H("SUBSCRIBE:sip:1002@pbx.example.com")
    // H(ha1+":5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c:00000001:"+cnonce+":auth:"+ha2)
    assert_eq!(
        h,
        vec![(
            "Proxy-Authorization",
            format!(
                "Digest username=\"1001\", realm=\"pbx.example.com\", nonce=\"5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c\", \
                 uri=\"sip:1002@pbx.example.com\", response=\"{RESP407_RESPONSE}\", algorithm=MD5, \
                 cnonce=\"{RESP407_CNONCE}\", qop=auth, nc=00000001, opaque=\"a1b2c3\""
            )
        )]
    );
}
/// The first cnonce `Rng::seeded(SEED)` yields (32 hex digits from two `next_u64`).
const RESP407_CNONCE: &str = "bdd732262feb6e9528efe333b266f103";
/// python (see the test).
const RESP407_RESPONSE: &str = "b7dd3054b03e7d6ec2e6a570c008334b";

#[test]
fn www_authenticate_without_qop_uses_rfc2069() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let resp = challenge(
        401,
        &[(
            "WWW-Authenticate",
            r#"Digest realm="pbx.test", nonce="b2xkLXN0eWxl""#,
        )],
    );
    c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
        .unwrap();
    let h = c.authorize(&Method::Options, "sip:pbx.test", b"", &mut rng);
    // python: H(H("1001:pbx.test:s3cr3t")+":b2xkLXN0eWxl:"+H("OPTIONS:sip:pbx.test"))
    assert_eq!(
        h,
        vec![(
            "Authorization",
            "Digest username=\"1001\", realm=\"pbx.test\", nonce=\"b2xkLXN0eWxl\", uri=\"sip:pbx.test\", \
             response=\"8b8c524871baa783304e16ae45b9d2b1\", algorithm=MD5"
                .to_string()
        )]
    );
}

#[test]
fn header_kind_follows_challenge_header() {
    let mut rng = Rng::seeded(SEED);
    let req = subscribe("sip:1002@pbx.test", &[]);
    let mut www = client();
    www.handle_challenge(
        &challenge(401, &[("WWW-Authenticate", KAMAILIO_407)]),
        &req,
        &mut rng,
    )
    .unwrap();
    let h = www.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, "Authorization");

    let mut proxy = client();
    proxy
        .handle_challenge(
            &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]),
            &req,
            &mut rng,
        )
        .unwrap();
    let h = proxy.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, "Proxy-Authorization");
    assert_eq!(proxy.spaces()[0].kind, ChallengeKind::Proxy);
}

#[test]
fn nc_counts_per_nonce_and_restarts_with_a_new_cnonce() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let req = subscribe("sip:1002@pbx.test", &[]);
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]),
        &req,
        &mut rng,
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
        let d = parsed(&h[0].1);
        let q = d.qop_response.expect("qop=auth answered with qop");
        seen.push((q.nc, q.cnonce.to_string(), d.response.to_string()));
    }
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(seen[0].1, seen[1].1);
    assert_eq!(seen[1].1, seen[2].1);
    assert_eq!(seen[0].1.len(), 32);
    assert_ne!(seen[0].2, seen[1].2, "nc enters the hash");

    // The next request is answered with stale=true and a new nonce.
    let sent = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let req = subscribe("sip:1002@pbx.test", &[(sent[0].0, &sent[0].1)]);
    let stale = format!("{KAMAILIO_407_B}, stale=true");
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", &stale)]),
        &req,
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let d = parsed(&h[0].1);
    assert_eq!(&*d.nonce, "U2Vjb25kTm9uY2VGb3JQYnhUZXN0");
    let q = d.qop_response.unwrap();
    assert_eq!(q.nc, 1);
    assert_ne!(q.cnonce.to_string(), seen[0].1);
    assert_eq!(param(&h[0].1, "nc"), Some("00000001"));
}

#[test]
fn in_dialog_refresh_hashes_its_own_request_uri() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let initial = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let target = "sip:1002@10.0.0.5:5060;transport=udp";
    let refresh = c.authorize(&Method::Subscribe, target, b"", &mut rng);
    let d = parsed(&refresh[0].1);
    assert_eq!(&*d.uri, target);
    assert_eq!(parsed(&initial[0].1).uri.to_string(), "sip:1002@pbx.test");
    let cnonce = d.qop_response.as_ref().unwrap().cnonce.to_string();
    let input = ResponseInput {
        algorithm: Algorithm::Md5,
        username: "1001",
        realm: "pbx.test",
        password: "s3cr3t",
        method: b"SUBSCRIBE",
        uri: target,
        nonce: "Zk9uY2UxMjM0NTY3ODkwYWJjZGVm",
        qop: Some(Qop::Auth),
        nc: "00000002",
        cnonce: &cnonce,
        body: b"",
    };
    assert_eq!(&*d.response, compute_response(&input));
    let with_old_uri = ResponseInput {
        uri: "sip:1002@pbx.test",
        ..input
    };
    assert_ne!(&*d.response, compute_response(&with_old_uri));
}

#[test]
fn stale_true_after_credentials_is_retried() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &challenge(401, &[("WWW-Authenticate", KAMAILIO_407)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let sent = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let req = subscribe("sip:1002@pbx.test", &[(sent[0].0, &sent[0].1)]);
    let stale = format!("{KAMAILIO_407_B}, stale=TRUE");
    assert_eq!(
        c.handle_challenge(
            &challenge(401, &[("WWW-Authenticate", &stale)]),
            &req,
            &mut rng
        ),
        Ok(())
    );
    assert_eq!(c.spaces()[0].nonce, "U2Vjb25kTm9uY2VGb3JQYnhUZXN0");
}

#[test]
fn same_nonce_rechallenge_is_rejected() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let resp = challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]);
    c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
        .unwrap();
    let sent = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let req = subscribe("sip:1002@pbx.test", &[(sent[0].0, &sent[0].1)]);
    let err = c.handle_challenge(&resp, &req, &mut rng).unwrap_err();
    assert_eq!(
        err,
        AuthError::Rejected {
            realm: "pbx.test".into(),
            user: "1001".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "credentials for user 1001 rejected by realm pbx.test"
    );
    // Even stale=true with the nonce we just used is a rejection (no loop).
    let stale = format!("{KAMAILIO_407}, stale=true");
    let resp = challenge(407, &[("Proxy-Authenticate", &stale)]);
    assert!(matches!(
        c.handle_challenge(&resp, &req, &mut rng),
        Err(AuthError::Rejected { .. })
    ));
}

#[test]
fn fresh_non_stale_rechallenge_after_credentials_is_rejected() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let sent = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let req = subscribe("sip:1002@pbx.test", &[(sent[0].0, &sent[0].1)]);
    let err = c
        .handle_challenge(
            &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407_B)]),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "credentials for user 1001 rejected by realm pbx.test"
    );
    // The newest nonce is kept, so a later attempt costs one request, not two.
    assert_eq!(c.spaces()[0].nonce, "U2Vjb25kTm9uY2VGb3JQYnhUZXN0");
    assert_eq!(c.spaces()[0].nc, 0);
}

#[test]
fn credentials_for_another_realm_do_not_count_as_answered() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    // The request carried WWW credentials for pbx.test; the proxy challenges too.
    c.handle_challenge(
        &challenge(401, &[("WWW-Authenticate", KAMAILIO_407)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let sent = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let req = subscribe("sip:1002@pbx.test", &[(sent[0].0, &sent[0].1)]);
    let resp = challenge(
        407,
        &[(
            "Proxy-Authenticate",
            r#"Digest realm="edge.test", nonce="ZWRnZQ", qop="auth""#,
        )],
    );
    c.handle_challenge(&resp, &req, &mut rng).unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let names: Vec<_> = h
        .iter()
        .map(|(n, v)| (*n, parsed(v).realm.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Authorization", "pbx.test".to_string()),
            ("Proxy-Authorization", "edge.test".to_string())
        ]
    );
}

#[test]
fn missing_challenge_header_is_no_challenge() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let err = c
        .handle_challenge(
            &challenge(401, &[]),
            &subscribe("sip:1002@pbx.test", &[]),
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(err, AuthError::NoChallenge { status: 401 });
    assert!(!c.has_credentials());
    // A 407 carrying only the wrong header kind for the status still counts.
    let err = c
        .handle_challenge(
            &challenge(407, &[("Server", "FreeSWITCH")]),
            &subscribe("sip:1002@pbx.test", &[]),
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(err, AuthError::NoChallenge { status: 407 });
}

#[test]
fn not_a_challenge_status_is_an_error() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let req = subscribe("sip:1002@pbx.test", &[]);
    let err = c
        .handle_challenge(
            &challenge(403, &[("WWW-Authenticate", KAMAILIO_407)]),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(err, AuthError::NotAChallenge { status: Some(403) });
    let err = c.handle_challenge(&req, &req, &mut rng).unwrap_err();
    assert_eq!(err, AuthError::NotAChallenge { status: None });
}

#[test]
fn sha256_is_preferred_over_md5_in_the_same_realm() {
    for order in [[0, 1], [1, 0]] {
        let mut rng = Rng::seeded(SEED);
        let mut c = client();
        let offers = [
            r#"Digest realm="pbx.test", nonce="bWQ1bm9uY2U", qop="auth", algorithm=MD5"#,
            r#"Digest realm="pbx.test", nonce="c2hhbm9uY2U", qop="auth", algorithm=SHA-256"#,
        ];
        let resp = challenge(
            401,
            &[
                ("WWW-Authenticate", offers[order[0]]),
                ("WWW-Authenticate", offers[order[1]]),
            ],
        );
        c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
            .unwrap();
        let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
        assert_eq!(h.len(), 1, "one answer per realm");
        assert_eq!(param(&h[0].1, "algorithm"), Some("SHA-256"));
        assert_eq!(param(&h[0].1, "nonce"), Some("c2hhbm9uY2U"));
        assert_eq!(param(&h[0].1, "response").map(str::len), Some(64));
    }
}

#[test]
fn several_realms_are_all_answered() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let resp = challenge(
        407,
        &[
            (
                "Proxy-Authenticate",
                r#"Digest realm="edge.test", nonce="ZWRnZQ", qop="auth", algorithm=SHA-256"#,
            ),
            ("Proxy-Authenticate", KAMAILIO_407),
            (
                "WWW-Authenticate",
                r#"Digest realm="uas.test", nonce="dWFz""#,
            ),
        ],
    );
    c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
        .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    let got: Vec<_> = h
        .iter()
        .map(|(n, v)| {
            (
                *n,
                param(v, "realm").unwrap_or("").to_string(),
                param(v, "algorithm").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("Authorization", "uas.test".into(), "MD5".into()),
            ("Proxy-Authorization", "edge.test".into(), "SHA-256".into()),
            ("Proxy-Authorization", "pbx.test".into(), "MD5".into()),
        ]
    );
    // One realm rejected while another is fine: the whole retry is refused.
    let req = subscribe(
        "sip:1002@pbx.test",
        &[(h[1].0, &h[1].1), (h[2].0, &h[2].1), (h[0].0, &h[0].1)],
    );
    let again = challenge(
        407,
        &[
            (
                "Proxy-Authenticate",
                r#"Digest realm="edge.test", nonce="bmV3", qop="auth", stale=true, algorithm=SHA-256"#,
            ),
            ("Proxy-Authenticate", KAMAILIO_407_B),
        ],
    );
    let err = c.handle_challenge(&again, &req, &mut rng).unwrap_err();
    assert_eq!(
        err,
        AuthError::Rejected {
            realm: "pbx.test".into(),
            user: "1001".into()
        }
    );
}

#[test]
fn unknown_algorithm_is_a_clear_error_unless_an_alternative_exists() {
    let mut rng = Rng::seeded(SEED);
    let req = subscribe("sip:1002@pbx.test", &[]);
    let mut c = client();
    let err = c
        .handle_challenge(
            &challenge(
                401,
                &[(
                    "WWW-Authenticate",
                    r#"Digest realm="pbx.test", nonce="bg", qop="auth", algorithm=SHA-512-256"#,
                )],
            ),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::UnsupportedAlgorithm {
            realm: "pbx.test".into(),
            algorithm: "SHA-512-256".into()
        }
    );
    assert!(
        err.to_string()
            .contains("unsupported digest algorithm SHA-512-256")
    );
    assert!(!c.has_credentials());

    let err = c
        .handle_challenge(
            &challenge(
                401,
                &[(
                    "WWW-Authenticate",
                    r#"Digest realm="pbx.test", nonce="bg", algorithm=AKAv1-MD5"#,
                )],
            ),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert!(
        matches!(err, AuthError::UnsupportedAlgorithm { ref algorithm, .. } if algorithm == "AKAv1-MD5")
    );

    // Same realm also offers MD5: answered with MD5.
    let resp = challenge(
        401,
        &[
            (
                "WWW-Authenticate",
                r#"Digest realm="pbx.test", nonce="bg", qop="auth", algorithm=SHA-512-256"#,
            ),
            ("WWW-Authenticate", KAMAILIO_407),
        ],
    );
    c.handle_challenge(&resp, &req, &mut rng).unwrap();
    assert_eq!(c.spaces()[0].algorithm, Algorithm::Md5);

    // An unanswerable second realm must not be silently dropped.
    let mut c = client();
    let resp = challenge(
        401,
        &[
            ("WWW-Authenticate", KAMAILIO_407),
            (
                "WWW-Authenticate",
                r#"Digest realm="other.test", nonce="bg", algorithm=FOO"#,
            ),
        ],
    );
    assert!(matches!(
        c.handle_challenge(&resp, &req, &mut rng),
        Err(AuthError::UnsupportedAlgorithm { ref realm, .. }) if realm == "other.test"
    ));
}

#[test]
fn qop_choice_and_auth_int_body() {
    let mut rng = Rng::seeded(SEED);
    let req = subscribe("sip:1002@pbx.test", &[]);
    let mut c = client();
    c.handle_challenge(
        &challenge(
            401,
            &[(
                "WWW-Authenticate",
                r#"Digest realm="pbx.test", nonce="bg", qop="auth-int,auth""#,
            )],
        ),
        &req,
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert_eq!(param(&h[0].1, "qop"), Some("auth"));

    let mut c = client();
    c.handle_challenge(
        &challenge(
            401,
            &[(
                "WWW-Authenticate",
                r#"Digest realm="pbx.test", nonce="bg", qop="auth-int""#,
            )],
        ),
        &req,
        &mut rng,
    )
    .unwrap();
    let body = b"<?xml version=\"1.0\"?>\r\n";
    let h = c.authorize(&Method::Notify, "sip:1002@pbx.test", body, &mut rng);
    let d = parsed(&h[0].1);
    assert_eq!(param(&h[0].1, "qop"), Some("auth-int"));
    let cnonce = d.qop_response.as_ref().unwrap().cnonce.to_string();
    let input = ResponseInput {
        algorithm: Algorithm::Md5,
        username: "1001",
        realm: "pbx.test",
        password: "s3cr3t",
        method: b"NOTIFY",
        uri: "sip:1002@pbx.test",
        nonce: "bg",
        qop: Some(Qop::AuthInt),
        nc: "00000001",
        cnonce: &cnonce,
        body,
    };
    assert_eq!(&*d.response, compute_response(&input));
    assert_ne!(
        &*d.response,
        compute_response(&ResponseInput { body: b"", ..input })
    );

    let mut c = client();
    let err = c
        .handle_challenge(
            &challenge(
                401,
                &[(
                    "WWW-Authenticate",
                    r#"Digest realm="pbx.test", nonce="bg", qop="auth-conf""#,
                )],
            ),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(err, AuthError::UnsupportedQop { ref qop, .. } if qop == "auth-conf"));
    let err = c
        .handle_challenge(
            &challenge(
                401,
                &[(
                    "WWW-Authenticate",
                    r#"Digest realm="pbx.test", nonce="bg", algorithm=MD5-sess"#,
                )],
            ),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(err, AuthError::UnsupportedQop { .. }));
}

#[test]
fn md5_sess_through_the_client() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &challenge(
            407,
            &[(
                "Proxy-Authenticate",
                r#"Digest realm="pbx.test", nonce="Yx2bQmZlYWQ0NTZk", qop="auth", algorithm=MD5-sess, opaque="op""#,
            )],
        ),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert_eq!(param(&h[0].1, "algorithm"), Some("MD5-sess"));
    assert_eq!(param(&h[0].1, "opaque"), Some("op"));
    assert_eq!(param(&h[0].1, "response"), Some(MD5_SESS_CLIENT));
}
/// python: ha1=H(H("1001:pbx.test:s3cr3t")+":Yx2bQmZlYWQ0NTZk:"+cnonce);
/// H(ha1+":Yx2bQmZlYWQ0NTZk:00000001:"+cnonce+":auth:"+H("SUBSCRIBE:sip:1002@pbx.test"))
/// with cnonce = RESP407_CNONCE (same seed, first draw).
const MD5_SESS_CLIENT: &str = "41f52cf9cf475f1974672f47d5e441ef";

#[test]
fn malformed_challenges_are_errors_not_panics() {
    let mut rng = Rng::seeded(SEED);
    let req = subscribe("sip:1002@pbx.test", &[]);
    for bad in [
        "Digest",
        "Digest realm",
        r#"Digest realm="pbx.test""#,
        r#"Digest nonce="abc""#,
        r#"Digest realm="pbx.test, nonce="abc""#,
        r#"Digest realm="pbx.test", nonce="abc", qop="auth"#,
        r#"Digest realm="pbx.test",, nonce="abc""#,
        "\u{e9}\u{e8}",
        "",
        ",,,",
    ] {
        let mut c = client();
        let resp = challenge(401, &[("WWW-Authenticate", bad)]);
        let r = c.handle_challenge(&resp, &req, &mut rng);
        assert!(
            matches!(r, Err(AuthError::Malformed { .. })),
            "{bad:?} gave {r:?}"
        );
        assert!(!c.has_credentials());
    }
    // Every truncation of a real challenge: never a panic, never a bogus retry
    // without a nonce.
    let full = "Digest realm=\"pbx.test\", nonce=\"abc\", opaque=\"x\", qop=\"auth,auth-int\", algorithm=SHA-256";
    for n in 0..full.len() {
        let mut c = client();
        let resp = challenge(401, &[("WWW-Authenticate", &full[..n])]);
        if c.handle_challenge(&resp, &req, &mut rng).is_ok() {
            assert_eq!(c.spaces()[0].nonce, "abc");
        }
    }
    // A malformed challenge next to a good one is skipped.
    let mut c = client();
    let resp = challenge(
        401,
        &[
            ("WWW-Authenticate", "Digest realm"),
            ("WWW-Authenticate", KAMAILIO_407),
        ],
    );
    c.handle_challenge(&resp, &req, &mut rng).unwrap();
    assert_eq!(c.spaces().len(), 1);
}

#[test]
fn non_digest_schemes_are_ignored_or_reported() {
    let mut rng = Rng::seeded(SEED);
    let req = subscribe("sip:1002@pbx.test", &[]);
    let mut c = client();
    let err = c
        .handle_challenge(
            &challenge(401, &[("WWW-Authenticate", r#"Basic realm="pbx.test""#)]),
            &req,
            &mut rng,
        )
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::UnsupportedScheme {
            scheme: "Basic".into()
        }
    );
    let resp = challenge(
        401,
        &[
            ("WWW-Authenticate", r#"Basic realm="pbx.test""#),
            (
                "WWW-Authenticate",
                r#"digest realm="pbx.test", nonce="bG93ZXI", qop=auth"#,
            ),
        ],
    );
    c.handle_challenge(&resp, &req, &mut rng).unwrap();
    assert_eq!(c.spaces()[0].nonce, "bG93ZXI");
}

#[test]
fn folded_challenge_header_is_understood() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let resp = challenge(
        407,
        &[(
            "Proxy-Authenticate",
            "Digest realm=\"pbx.test\",\r\n nonce=\"Zm9sZGVk\",\r\n\tqop=\"auth\"",
        )],
    );
    c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
        .unwrap();
    assert_eq!(c.spaces()[0].nonce, "Zm9sZGVk");
    assert_eq!(c.spaces()[0].qop, Some(Qop::Auth));
}

#[test]
fn output_parses_back_and_escapes_are_handled() {
    let mut rng = Rng::seeded(SEED);
    // A plain account: every field reads back through ezk's credentials parser.
    let mut c = client();
    c.handle_challenge(
        &msg(RESP407),
        &subscribe("sip:1002@pbx.example.com", &[]),
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(
        &Method::Subscribe,
        "sip:1002@pbx.example.com;x=1",
        b"",
        &mut rng,
    );
    let d = parsed(&h[0].1);
    assert_eq!(d.username, Username::Username("1001".into()));
    assert_eq!(&*d.realm, "pbx.example.com");
    assert_eq!(&*d.nonce, "5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c");
    assert_eq!(&*d.uri, "sip:1002@pbx.example.com;x=1");
    assert_eq!(d.opaque.as_deref(), Some("a1b2c3"));
    assert_eq!(d.algorithm.to_string(), "MD5");
    assert_eq!(d.qop_response.as_ref().map(|q| q.nc), Some(1));

    // A user name that needs quoted-pairs, and an empty opaque (echoed empty).
    let mut c = DigestClient::new(Credentials::new(r#"we"ird\user"#, "pw"));
    c.handle_challenge(
        &challenge(
            401,
            &[(
                "WWW-Authenticate",
                r#"Digest realm="pbx.test", nonce="n1", opaque="", qop="auth""#,
            )],
        ),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert!(
        h[0].1
            .starts_with(r#"Digest username="we\"ird\\user", realm="pbx.test""#),
        "{}",
        h[0].1
    );
    assert!(h[0].1.ends_with(r#", opaque="""#), "{}", h[0].1);
    let cnonce = param(&h[0].1, "cnonce").unwrap().to_string();
    let expected = compute_response(&ResponseInput {
        algorithm: Algorithm::Md5,
        username: r#"we"ird\user"#,
        realm: "pbx.test",
        password: "pw",
        method: b"SUBSCRIBE",
        uri: "sip:1002@pbx.test",
        nonce: "n1",
        qop: Some(Qop::Auth),
        nc: "00000001",
        cnonce: &cnonce,
        body: b"",
    });
    assert_eq!(param(&h[0].1, "response"), Some(expected.as_str()));
    // The challenged request carrying this header is recognised as answered, so
    // a wrong password ends in Rejected instead of a retry loop.
    let req = subscribe("sip:1002@pbx.test", &[(h[0].0, &h[0].1)]);
    let resp = challenge(
        401,
        &[(
            "WWW-Authenticate",
            r#"Digest realm="pbx.test", nonce="n2", qop="auth""#,
        )],
    );
    let err = c.handle_challenge(&resp, &req, &mut rng).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"credentials for user we"ird\user rejected by realm pbx.test"#
    );
}

#[test]
fn parameter_names_are_case_insensitive() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    let resp = challenge(
        401,
        &[(
            "WWW-Authenticate",
            r#"DIGEST Realm="pbx.test", NONCE="VXBwZXI", QOP="auth", Algorithm=sha-256"#,
        )],
    );
    c.handle_challenge(&resp, &subscribe("sip:1002@pbx.test", &[]), &mut rng)
        .unwrap();
    let s = &c.spaces()[0];
    assert_eq!(
        (s.realm.as_str(), s.nonce.as_str()),
        ("pbx.test", "VXBwZXI")
    );
    assert_eq!((s.algorithm, s.qop), (Algorithm::Sha256, Some(Qop::Auth)));
}

#[test]
fn state_serialises_without_the_password() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &msg(RESP407),
        &subscribe("sip:1002@pbx.example.com", &[]),
        &mut rng,
    )
    .unwrap();
    let _ = c.authorize(
        &Method::Subscribe,
        "sip:1002@pbx.example.com",
        b"",
        &mut rng,
    );
    let text = toml::to_string(&c).unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c"));
    assert!(!format!("{c:?}").contains("s3cr3t"));

    let mut back: DigestClient = toml::from_str(&text).unwrap();
    assert_eq!(back.spaces(), c.spaces());
    back.set_credentials(Credentials::new("1001", "s3cr3t"));
    let a = c.authorize(
        &Method::Subscribe,
        "sip:1002@pbx.example.com",
        b"",
        &mut rng,
    );
    let b = back.authorize(
        &Method::Subscribe,
        "sip:1002@pbx.example.com",
        b"",
        &mut rng,
    );
    assert_eq!(a, b);
    assert_eq!(param(&a[0].1, "nc"), Some("00000002"));
}

#[test]
fn nonce_is_reused_preemptively_until_replaced() {
    let mut rng = Rng::seeded(SEED);
    let mut c = client();
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    for (i, method) in [Method::Subscribe, Method::Options, Method::Subscribe]
        .iter()
        .enumerate()
    {
        let h = c.authorize(method, "sip:1002@pbx.test", b"", &mut rng);
        assert_eq!(
            param(&h[0].1, "nonce"),
            Some("Zk9uY2UxMjM0NTY3ODkwYWJjZGVm")
        );
        assert_eq!(parsed(&h[0].1).qop_response.unwrap().nc, i as u32 + 1);
    }
    // A new challenge for a request that carried no credentials (e.g. sent before
    // the first challenge) replaces the nonce without a rejection.
    c.handle_challenge(
        &challenge(407, &[("Proxy-Authenticate", KAMAILIO_407_B)]),
        &subscribe("sip:1002@pbx.test", &[]),
        &mut rng,
    )
    .unwrap();
    let h = c.authorize(&Method::Subscribe, "sip:1002@pbx.test", b"", &mut rng);
    assert_eq!(
        param(&h[0].1, "nonce"),
        Some("U2Vjb25kTm9uY2VGb3JQYnhUZXN0")
    );
    assert_eq!(param(&h[0].1, "nc"), Some("00000001"));
    c.clear();
    assert!(!c.has_credentials());
}
