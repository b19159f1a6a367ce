//! The Authorization / Proxy-Authorization values computed from real and
//! constructed challenges, checked against independently computed responses.

use super::*;

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
const RESP407_CNONCE: &str = "86cc7763222724a28af00a133fad517d";
/// python (see the test).
const RESP407_RESPONSE: &str = "0c2c81b56419af32834dbea03e5d3eb0";

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
const MD5_SESS_CLIENT: &str = "d9e7f2d8c64cb3c7881160366117bfc2";
