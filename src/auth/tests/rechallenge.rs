//! The client across challenges: nonce counts, stale and repeated nonces, realms,
//! what is not a challenge, and the state it keeps.

use super::*;

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
