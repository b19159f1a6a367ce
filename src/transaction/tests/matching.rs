//! Matching responses to client transactions and requests (retransmissions, ACK,
//! CANCEL, RFC 2543 peers) to server transactions; what `send_request` refuses.

use super::*;

#[test]
fn client_matching_uses_branch_and_cseq_method() {
    let mut s = Sim::new();
    let invite = request("INVITE", OUR_VIA, "z9hG4bKsame", 1);
    let cancel = request("CANCEL", OUR_VIA, "z9hG4bKsame", 1);
    let ik = s.send(peer_udp(), &invite);
    let ck = s.send(peer_udp(), &cancel);
    assert_ne!(ik, ck);
    assert_eq!(ck.method(), &Method::Cancel);
    assert_eq!(ck.branch(), b"z9hG4bKsame");
    assert_eq!(
        s.on_response(&response(&cancel, 200, "x")),
        ResponseDisposition::PassUp(ck.clone())
    );
    assert_eq!(s.layer.client_state(&ik), Some(ClientState::Calling));
    assert_eq!(s.layer.client_state(&ck), Some(ClientState::Completed));
    assert_eq!(
        s.on_response(&response(&invite, 487, "x")),
        ResponseDisposition::PassUp(ik.clone())
    );
    assert_eq!(s.layer.client_state(&ik), Some(ClientState::Completed));
    // Same branch, a method we have no transaction for; other branch.
    assert_eq!(
        s.on_response(&response(
            &request("OPTIONS", OUR_VIA, "z9hG4bKsame", 1),
            200,
            "x"
        )),
        ResponseDisposition::Stray
    );
    assert_eq!(
        s.on_response(&response(
            &request("INVITE", OUR_VIA, "z9hG4bKother", 1),
            200,
            "x"
        )),
        ResponseDisposition::Stray
    );
}

#[test]
fn send_request_rejects_what_cannot_be_a_client_transaction() {
    let mut s = Sim::new();
    let now = s.now;
    let mut send = |text: &str| {
        s.layer
            .send_request(peer_udp(), Bytes::copy_from_slice(text.as_bytes()), now)
    };
    assert_eq!(
        send(&ack(OUR_VIA, "z9hG4bKa", 1, "t")),
        Err(TxError::AckIsNotATransaction)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "1234", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "z9hG4bK", 1)),
        Err(TxError::NoRfc3261Branch)
    );
    assert_eq!(
        send(
            &request("OPTIONS", OUR_VIA, "z9hG4bKok", 1).replace("CSeq: 1 OPTIONS", "CSeq: 1 INFO")
        ),
        Err(TxError::CSeqMismatch)
    );
    assert_eq!(
        send("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nCSeq: 1 OPTIONS\r\n\r\n"),
        Err(TxError::NotARequest)
    );
    assert_eq!(send("\r\n\r\n"), Err(TxError::Unparsable));
    let first = send(&request("OPTIONS", OUR_VIA, "z9hG4bKdup", 1));
    assert!(first.is_ok());
    assert_eq!(
        send(&request("OPTIONS", OUR_VIA, "z9hG4bKdup", 2)),
        Err(TxError::DuplicateTransaction)
    );

    assert_eq!(s.layer.len(), (1, 0));
    s.drain();
    assert_eq!(s.take_sent().len(), 1);
}
#[test]
fn server_matching_uses_branch_sent_by_and_method() {
    let mut s = Sim::new();
    let inv = |via: &str| request("INVITE", via, "z9hG4bKm1", 1);
    let k = new_key(s.on_request(&inv("SIP/2.0/UDP pc33.example.com")));
    // Host case-insensitive, port defaulted to 5060, branch case-insensitive.
    assert_eq!(
        s.on_request(&inv("SIP/2.0/UDP PC33.Example.COM:5060")),
        RequestDisposition::Retransmission
    );
    assert_eq!(
        s.on_request(&request(
            "INVITE",
            "SIP/2.0/UDP pc33.example.com",
            "Z9HG4BKM1",
            1
        )),
        RequestDisposition::Retransmission
    );
    // Other sent-by: another transaction.
    let other_port = new_key(s.on_request(&inv("SIP/2.0/UDP pc33.example.com:5070")));
    let other_host = new_key(s.on_request(&inv("SIP/2.0/UDP pc34.example.com")));
    assert_ne!(other_port, k);
    assert_ne!(other_host, k);
    // Same branch, other method: another transaction.
    let c = new_key(s.on_request(&request(
        "CANCEL",
        "SIP/2.0/UDP pc33.example.com",
        "z9hG4bKm1",
        1,
    )));
    let o = new_key(s.on_request(&request(
        "OPTIONS",
        "SIP/2.0/UDP pc33.example.com",
        "z9hG4bKm1",
        1,
    )));
    assert_ne!(c, k);
    assert_ne!(o, k);
    assert_eq!(c.method(), &Method::Cancel);
    assert!(!k.is_legacy());
    // TLS defaults to 5061.
    let t = new_key(s.on_request(&request(
        "INVITE",
        "SIP/2.0/TLS tls.example.com",
        "z9hG4bKm2",
        1,
    )));
    assert_eq!(
        s.on_request(&request(
            "INVITE",
            "SIP/2.0/TLS tls.example.com:5061",
            "z9hG4bKm2",
            1
        )),
        RequestDisposition::Retransmission
    );
    assert!(matches!(
        s.on_request(&request("INVITE", "SIP/2.0/TLS tls.example.com:5060", "z9hG4bKm2", 1)),
        RequestDisposition::New(x) if x != t
    ));
    // An ACK matches its INVITE (and only with the same sent-by).
    s.respond(
        &k,
        response_bytes(&inv("SIP/2.0/UDP pc33.example.com"), 404, "u"),
    )
    .unwrap();
    assert_eq!(
        s.on_request(&ack(
            "SIP/2.0/UDP pc33.example.com:5070",
            "z9hG4bKm1",
            1,
            "u"
        )),
        RequestDisposition::Ack
    );
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
    assert_eq!(
        s.on_request(&ack("SIP/2.0/UDP pc33.example.com", "z9hG4bKm1", 1, "u")),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Confirmed));
    assert_eq!(s.layer.len(), (0, 7));
}

#[test]
fn cancel_finds_its_invite() {
    let mut s = Sim::new();
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKc1", 1);
    let k = new_key(s.on_request(&inv));
    let cancel = request("CANCEL", PHONE_VIA, "z9hG4bKc1", 1);
    let ck = new_key(s.on_request(&cancel));
    assert_ne!(ck, k);
    assert_eq!(
        s.layer.find_invite_for_cancel(&parse(&cancel)),
        Some(k.clone())
    );
    // Another branch, another sent-by, not a CANCEL: nothing.
    assert_eq!(
        s.layer
            .find_invite_for_cancel(&parse(&request("CANCEL", PHONE_VIA, "z9hG4bKc2", 1))),
        None
    );
    assert_eq!(
        s.layer.find_invite_for_cancel(&parse(&request(
            "CANCEL",
            "SIP/2.0/UDP 127.0.0.6:5062",
            "z9hG4bKc1",
            1
        ))),
        None
    );
    assert_eq!(s.layer.find_invite_for_cancel(&parse(&inv)), None);
    // The TU answers the CANCEL and the INVITE.
    s.respond(&ck, response_bytes(&cancel, 200, "u")).unwrap();
    s.respond(&k, response_bytes(&inv, 487, "u")).unwrap();
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
    assert_eq!(s.layer.server_state(&ck), Some(ServerState::Completed));
    s.run_until(ms(60_000));
    assert_eq!(s.layer.find_invite_for_cancel(&parse(&cancel)), None);
}

#[test]
fn rfc2543_peers_are_matched_field_by_field() {
    let mut s = Sim::new();
    let via = "SIP/2.0/UDP 127.0.0.9:5060";
    for branch in ["", "old-style-1"] {
        let inv = request("INVITE", via, branch, 10);
        let k = new_key(s.on_request(&inv));
        assert!(k.is_legacy());
        s.take_sent();
        assert_eq!(s.on_request(&inv), RequestDisposition::Retransmission);
        assert_eq!(s.take_sent().len(), 1, "100 re-sent");
        // Any differing field makes another transaction.
        for variant in [
            inv.replace("tag=f1", "tag=f2"),
            inv.replace("CSeq: 10 INVITE", "CSeq: 11 INVITE"),
            inv.replace("Call-ID: c1@", "Call-ID: c2@"),
            inv.replace("INVITE sip:1002@", "INVITE sip:1003@"),
            inv.replace("127.0.0.9:5060", "127.0.0.9:5070"),
            inv.replace(
                "To: <sip:1002@example.com>",
                "To: <sip:1002@example.com>;tag=dlg",
            ),
        ] {
            let v = new_key(s.on_request(&variant));
            assert_ne!(v, k);
            assert!(s.layer.terminate_server(&v));
        }
        // CANCEL: its own transaction, and it finds the INVITE.
        let cancel = request("CANCEL", via, branch, 10);
        let ck = new_key(s.on_request(&cancel));
        assert_ne!(ck, k);
        assert_eq!(
            s.layer.find_invite_for_cancel(&parse(&cancel)),
            Some(k.clone())
        );
        // ACK for our non-2xx: the To tag is the one of our response.
        s.respond(&k, response_bytes(&inv, 486, "uas-tag")).unwrap();
        assert_eq!(
            s.on_request(&ack(via, branch, 10, "wrong-tag")),
            RequestDisposition::Ack
        );
        assert_eq!(s.layer.server_state(&k), Some(ServerState::Completed));
        assert_eq!(
            s.on_request(&ack(via, branch, 10, "uas-tag")),
            RequestDisposition::AckAbsorbed
        );
        assert_eq!(s.layer.server_state(&k), Some(ServerState::Confirmed));
        assert!(s.layer.terminate_server(&k));
        assert!(s.layer.terminate_server(&ck));
    }
    // A re-INVITE (To tag already set) is acked with the same To tag.
    let reinv = request("INVITE", via, "", 20).replace(
        "To: <sip:1002@example.com>",
        "To: <sip:1002@example.com>;tag=dlg",
    );
    let k = new_key(s.on_request(&reinv));
    s.respond(&k, response_bytes(&reinv, 491, "ignored"))
        .unwrap();
    assert_eq!(
        s.on_request(&ack(via, "", 20, "dlg")),
        RequestDisposition::AckAbsorbed
    );
}
