//! Malformed, non-Digest, folded, escaped and case-varied challenge headers, and
//! our output parsed back.

use super::*;

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
