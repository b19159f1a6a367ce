//! INVITE server transactions (RFC 3261 §17.2.1, RFC 6026): Timers G, H, I and L.

use super::*;

#[test]
fn ist_sends_100_at_once_and_resends_the_last_provisional() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist1", 1).replace(
        "Content-Length: 0\r\n",
        "Timestamp: 1.5\r\nContent-Length: 0\r\n",
    );
    let key = new_key(s.on_request(&text));
    assert_eq!(key.method(), &Method::Invite);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, phone_reply_udp());
    let trying = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.branch(), Some(&b"z9hG4bKist1"[..]));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.from_tag(), Some(&b"f1"[..]));
    assert_eq!(trying.call_id(), Some(&b"c1@example.com"[..]));
    assert_eq!(
        trying.header_value(HeaderName::CSeq),
        Some(&b"1 INVITE"[..])
    );
    assert_eq!(trying.header_value_by_name("Timestamp"), Some(&b"1.5"[..]));

    s.run_until(ms(500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let again = s.take_sent();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.data, sent[0].1.data);

    s.run_until(ms(1000));
    let ringing = response_bytes(&text, 180, "uas");
    s.respond(&key, ringing.clone()).unwrap();
    s.run_until(ms(1500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[1000, 1500]));
    assert!(sent.iter().all(|(_, t)| t.data == ringing));
    // No timer runs in Proceeding.
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn ist_udp_timer_g_retransmits_until_timer_h() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist2", 1);
    let key = new_key(s.on_request(&text));
    s.take_sent();
    s.run_until(ms(1000));
    let busy = response_bytes(&text, 486, "uas");
    s.respond(&key, busy.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Completed));
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[
            1000, 1500, 2500, 4500, 8500, 12500, 16500, 20500, 24500, 28500, 32500
        ])
    );
    assert!(
        sent.iter()
            .all(|(_, t)| t.data == busy && t.flow == phone_reply_udp())
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(33_000), TxEvent::AckTimeout(key.clone())),
            (ms(33_000), TxEvent::Terminated(TxKey::Server(key))),
        ]
    );
}

#[test]
fn ist_ack_confirms_stops_g_and_timer_i_ends_it() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist3", 4);
    let key = new_key(s.on_request(&text));
    s.run_until(ms(1000));
    let busy = response_bytes(&text, 486, "uas");
    s.respond(&key, busy.clone()).unwrap();
    s.run_until(ms(1200));
    // An INVITE retransmission in Completed gets the final response again.
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(2000));
    let ack_text = ack(PHONE_VIA, "z9hG4bKist3", 4, "uas");
    assert_eq!(s.on_request(&ack_text), RequestDisposition::AckAbsorbed);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Confirmed));
    s.run_until(ms(3000));
    assert_eq!(s.on_request(&ack_text), RequestDisposition::AckAbsorbed);
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[0, 1000, 1200, 1500]));
    assert!(sent[1..].iter().all(|(_, t)| t.data == busy));
    // Timer I = T4 after the ACK; no Timer H.
    assert_eq!(
        s.take_events(),
        vec![(ms(7000), TxEvent::Terminated(TxKey::Server(key)))]
    );
    // Once gone, the ACK is the TU's to route (stray).
    assert_eq!(s.on_request(&ack_text), RequestDisposition::Ack);
}

#[test]
fn ist_tcp_no_timer_g_timer_h_runs_and_timer_i_is_zero() {
    let mut s = Sim::new();
    let a = request("INVITE", PHONE_VIA, "z9hG4bKtcpA", 1);
    let b = request("INVITE", PHONE_VIA, "z9hG4bKtcpB", 1);
    let ka = new_key(s.on_request_from(&a, phone_tcp(), phone_tcp()));
    let kb = new_key(s.on_request_from(&b, phone_tcp(), phone_tcp()));
    s.run_until(ms(1000));
    s.respond(&ka, response_bytes(&a, 500, "x")).unwrap();
    s.respond(&kb, response_bytes(&b, 480, "y")).unwrap();
    assert_eq!(
        s.on_request_from(
            &ack(PHONE_VIA, "z9hG4bKtcpB", 1, "y"),
            phone_tcp(),
            phone_tcp()
        ),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(s.layer.server_state(&kb), None);
    s.run_until(ms(60_000));
    // Two 100s at 0, two finals at 1 s, no retransmission.
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 0, 1000, 1000]));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(1000), TxEvent::Terminated(TxKey::Server(kb))),
            (ms(33_000), TxEvent::AckTimeout(ka.clone())),
            (ms(33_000), TxEvent::Terminated(TxKey::Server(ka))),
        ]
    );
}

#[test]
fn ist_2xx_accepted_absorbs_retransmissions_passes_acks_until_timer_l() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKist4", 1);
    let key = new_key(s.on_request(&text));
    s.run_until(ms(1000));
    let ok = response_bytes(&text, 200, "uas");
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Accepted));
    s.run_until(ms(2000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    // The 2xx ACK (own branch, as RFC 3261 wants) and a broken one reusing the
    // INVITE's branch both go to the TU.
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKack2xx", 1, "uas")),
        RequestDisposition::Ack
    );
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKist4", 1, "uas")),
        RequestDisposition::Ack
    );
    // The TU's own 2xx retransmission goes out; a non-2xx does not.
    s.run_until(ms(3000));
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(
        s.respond(&key, response_bytes(&text, 486, "uas")),
        Err(TxError::AlreadyFinal)
    );
    s.run_until(ms(60_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 1000, 3000]));
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Server(key.clone())))]
    );
    assert_eq!(s.respond(&key, ok), Err(TxError::NoTransaction));
}

#[test]
fn ack_before_any_final_is_passed_to_the_tu() {
    let mut s = Sim::new();
    let text = request("INVITE", PHONE_VIA, "z9hG4bKearly", 1);
    let key = new_key(s.on_request(&text));
    assert_eq!(
        s.on_request(&ack(PHONE_VIA, "z9hG4bKearly", 1, "x")),
        RequestDisposition::Ack
    );
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
}
