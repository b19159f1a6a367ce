//! INVITE client transactions (RFC 3261 §17.1.1, RFC 6026): Timers A, B, D and M,
//! and the hop-by-hop ACK of a 300-699 response.

use super::*;

#[test]
fn ict_udp_timer_a_doubles_without_cap_and_timer_b_times_out() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict1", 1);
    let key = s.send(peer_udp(), &text);
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Calling));
    s.run_until(ms(60_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[0, 500, 1500, 3500, 7500, 15500, 31500])
    );
    assert!(sent.iter().all(|(_, t)| t.data == text.as_bytes()));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key))),
        ]
    );
}

#[test]
fn ict_tcp_never_retransmits_and_timer_b_times_out() {
    let mut s = Sim::new();
    let key = s.send(peer_tcp(), &request("INVITE", OUR_VIA, "z9hG4bKict2", 1));
    s.run_until(ms(60_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0]));
    assert_eq!(s.take_events()[0], (ms(32_000), TxEvent::Timeout(key)));
}

#[test]
fn ict_provisional_stops_timer_a_and_b_then_non2xx_acked_until_timer_d() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict3", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(1000));
    assert_eq!(
        s.on_response(&response(&text, 180, "callee")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Proceeding));
    assert_eq!(s.layer.poll_timeout(), None);
    s.run_until(ms(100_000));
    assert!(s.take_events().is_empty(), "no Timer B once Proceeding");
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500]));

    let busy = response(&text, 486, "callee");
    assert_eq!(
        s.on_response(&busy),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Completed));
    s.run_until(ms(101_000));
    assert_eq!(s.on_response(&busy), ResponseDisposition::Absorbed);
    s.run_until(ms(101_500));
    assert_eq!(s.on_response(&busy), ResponseDisposition::Absorbed);
    // A 2xx after a non-2xx is not ours to pass up.
    assert_eq!(
        s.on_response(&response(&text, 200, "callee")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(200_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[100_000, 101_000, 101_500]));
    let first_ack = sent[0].1.data.clone();
    assert!(first_ack.starts_with(b"ACK "));
    assert!(
        sent.iter()
            .all(|(_, t)| t.data == first_ack && t.flow == peer_udp())
    );
    // Timer D = 32 s after the final response.
    assert_eq!(
        s.take_events(),
        vec![(ms(132_000), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&busy), ResponseDisposition::Stray);
}

#[test]
fn ict_non2xx_ack_has_exactly_the_rfc3261_headers() {
    let mut s = Sim::new();
    // As a proxy would forward it: our Via on top of the phone's, a route set,
    // a decremented Max-Forwards, a Contact and a body.
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\n";
    let invite = format!(
        "INVITE sip:1002@127.0.0.2:5080;transport=udp SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1;rport\r\n\
         Via: SIP/2.0/UDP 127.0.0.5:5062;branch=z9hG4bKphone;received=127.0.0.5;rport=5062\r\n\
         Max-Forwards: 69\r\n\
         Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
         Record-Route: <sip:127.0.0.1;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\n\
         From: \"Alice\" <sip:1001@example.com>;tag=from-1\r\n\
         To: <sip:1002@example.com>\r\n\
         Call-ID: call-ack-1@example.com\r\n\
         CSeq: 314 INVITE\r\n\
         Contact: <sip:1001@127.0.0.5:5062>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let key = s.send(peer_udp(), &invite);
    s.take_sent();
    let busy = response(&invite, 486, "callee-tag");
    assert_eq!(s.on_response(&busy), ResponseDisposition::PassUp(key));
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, peer_udp());
    let expected = "ACK sip:1002@127.0.0.2:5080;transport=udp SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack1;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\n\
         From: \"Alice\" <sip:1001@example.com>;tag=from-1\r\n\
         To: <sip:1002@example.com>;tag=callee-tag\r\n\
         Call-ID: call-ack-1@example.com\r\n\
         CSeq: 314 ACK\r\n\
         Content-Length: 0\r\n\r\n";
    assert_eq!(
        String::from_utf8_lossy(&sent[0].1.data),
        expected,
        "ACK for a non-2xx"
    );
    let ack = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(crate::sip::validate::check_request(&ack), Ok(()));
    assert_eq!(ack.values(HeaderName::Via).count(), 1);
}

#[test]
fn ict_end_to_end_ack_is_absorbed_by_the_server_layer() {
    // Our client layer talks to a second layer acting as the UAS.
    let mut uac = Sim::new();
    let mut uas = Sim::new();
    let key = uac.send(peer_udp(), &request("INVITE", OUR_VIA, "z9hG4bKe2e", 5));
    let invite = SipMessage::parse(uac.take_sent()[0].1.data.clone()).unwrap();
    let skey = new_key(
        uas.layer
            .on_request(&invite, phone_udp(), phone_udp(), uas.now),
    );
    uas.drain();
    let trying = SipMessage::parse(uas.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(
        uac.on_response(&trying),
        ResponseDisposition::PassUp(key.clone())
    );
    let busy = MessageBuilder::response_to(&invite, 486, "Busy Here", Some("uas-tag")).finish();
    uas.respond(&skey, busy).unwrap();
    let busy = SipMessage::parse(uas.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(uac.on_response(&busy), ResponseDisposition::PassUp(key));
    let ack = SipMessage::parse(uac.take_sent()[0].1.data.clone()).unwrap();
    assert_eq!(
        uas.layer
            .on_request(&ack, phone_udp(), phone_udp(), uas.now),
        RequestDisposition::AckAbsorbed
    );
    assert_eq!(uas.layer.server_state(&skey), Some(ServerState::Confirmed));
}

#[test]
fn ict_2xx_accepted_passes_up_every_2xx_until_timer_m() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict4", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(1000));
    let ok = response(&text, 200, "callee");
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Accepted));
    s.run_until(ms(2000));
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    // A forked 2xx (another To tag) is passed up too.
    assert_eq!(
        s.on_response(&response(&text, 200, "fork-2")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(
        s.on_response(&response(&text, 180, "callee")),
        ResponseDisposition::Absorbed
    );
    assert_eq!(
        s.on_response(&response(&text, 486, "callee")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(60_000));
    // No ACK from the layer for a 2xx, no retransmission after it.
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500]));
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&ok), ResponseDisposition::Stray);
}

#[test]
fn ict_tcp_non2xx_ack_sent_and_timer_d_zero() {
    let mut s = Sim::new();
    let text = request("INVITE", OUR_VIA, "z9hG4bKict5", 1);
    let key = s.send(peer_tcp(), &text);
    s.take_sent();
    let busy = response(&text, 603, "callee");
    assert_eq!(
        s.on_response(&busy),
        ResponseDisposition::PassUp(key.clone())
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .1
            .data
            .starts_with(b"ACK sip:1002@127.0.0.2:5080 SIP/2.0\r\n")
    );
    assert_eq!(sent[0].1.flow, peer_tcp());
    assert_eq!(
        s.take_events(),
        vec![(ms(0), TxEvent::Terminated(TxKey::Client(key)))]
    );
    assert_eq!(s.on_response(&busy), ResponseDisposition::Stray);
}
