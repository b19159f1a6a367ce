//! Non-INVITE server transactions (RFC 3261 §17.2.2, RFC 4320): Timer J, the late
//! `100 Trying`, no 408.

use super::*;

#[test]
fn nist_udp_retransmission_answered_byte_identically_until_timer_j() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKnist1", 7);
    let key = new_key(s.on_request(&text));
    assert_eq!(key.method(), &Method::Subscribe);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.run_until(ms(500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    assert!(s.take_sent().is_empty(), "nothing to answer with yet");

    s.run_until(ms(1000));
    let ok = MessageBuilder::response_to(&parse(&text), 200, "OK", Some("srv"))
        .header("Expires", 600)
        .header("Contact", "<sip:127.0.0.1:5060>")
        .finish();
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Completed));
    s.run_until(ms(1500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    s.run_until(ms(31_500));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[1000, 1500, 31_500]));
    for (_, t) in &sent {
        assert_eq!(t.data, ok, "answered byte-identically from the store");
        assert_eq!(t.flow, phone_reply_udp());
    }
    s.run_until(ms(60_000));
    // Timer J = 64·T1 after the final response; no retransmission of our own.
    assert_eq!(
        s.take_events(),
        vec![(ms(33_000), TxEvent::Terminated(TxKey::Server(key.clone())))]
    );
    assert!(s.take_sent().is_empty());
    assert_eq!(
        s.layer.respond(&key, ok, s.now),
        Err(TxError::NoTransaction)
    );
    assert!(matches!(s.on_request(&text), RequestDisposition::New(_)));
}

#[test]
fn nist_tcp_timer_j_is_zero() {
    let mut s = Sim::new();
    let text = request("NOTIFY", PHONE_VIA, "z9hG4bKnist2", 3);
    let key = new_key(s.on_request_from(&text, phone_tcp(), phone_tcp()));
    s.respond(&key, response_bytes(&text, 200, "x")).unwrap();
    assert_eq!(s.layer.server_state(&key), None);
    assert_eq!(
        s.take_events(),
        vec![(ms(0), TxEvent::Terminated(TxKey::Server(key)))]
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.flow, phone_tcp());
    assert_eq!(s.layer.len(), (0, 0));
}

#[test]
fn nist_late_100_only_after_t2_rfc4320() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKlate100", 1).replace(
        "Content-Length: 0\r\n",
        "Timestamp: 54\r\nContent-Length: 0\r\n",
    );
    let key = new_key(s.on_request(&text));
    // The client's E schedule: 0.5, 1.5, 3.5 are all before T2.
    for at in [500, 1500, 3500, 3999] {
        s.run_until(ms(at));
        assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    }
    assert!(s.take_sent().is_empty(), "no 100 before T2");
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.run_until(ms(4000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Proceeding));
    s.run_until(ms(8000));
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[4000, 8000]));
    assert_eq!(sent[0].1.data, sent[1].1.data);
    let trying = SipMessage::parse(sent[0].1.data.clone()).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.branch(), Some(&b"z9hG4bKlate100"[..]));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.cseq().unwrap().unwrap().seq, 1);
    assert_eq!(trying.header_value_by_name("Timestamp"), Some(&b"54"[..]));
    assert_eq!(sent[0].1.flow, phone_reply_udp());
    // The final response replaces the 100 in the store.
    let ok = response_bytes(&text, 200, "srv");
    s.respond(&key, ok.clone()).unwrap();
    assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
    let sent = s.take_sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(_, t)| t.data == ok));
}

#[test]
fn nist_tu_may_not_send_provisionals_or_408() {
    let mut s = Sim::new();
    let text = request("OPTIONS", PHONE_VIA, "z9hG4bKno1xx", 1);
    let key = new_key(s.on_request(&text));
    for code in [100, 180, 183] {
        assert_eq!(
            s.respond(&key, response_bytes(&text, code, "t")),
            Err(TxError::ProvisionalToNonInvite)
        );
    }
    assert_eq!(
        s.respond(&key, response_bytes(&text, 408, "t")),
        Err(TxError::Timeout408ToNonInvite)
    );
    assert_eq!(
        s.respond(&key, Bytes::from_static(b"SIP/2.0 99 Odd\r\n\r\n")),
        Err(TxError::NotAResponse)
    );
    assert_eq!(
        s.respond(&key, Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n")),
        Err(TxError::NotAResponse)
    );
    assert!(s.take_sent().is_empty());
    assert_eq!(s.layer.server_state(&key), Some(ServerState::Trying));
    s.respond(&key, response_bytes(&text, 404, "t")).unwrap();
    assert_eq!(
        s.respond(&key, response_bytes(&text, 200, "t")),
        Err(TxError::AlreadyFinal)
    );
    let sent = s.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(status_of(&sent[0].1), Some(404));
}

#[test]
fn no_408_is_ever_generated() {
    let mut s = Sim::new();
    // A non-INVITE the TU never answers, retransmitted on the client's E schedule.
    let text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKnever", 1);
    let nist = new_key(s.on_request(&text));
    // An INVITE the TU never answers.
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKneverinv", 1);
    let ist = new_key(s.on_request(&inv));
    // Our own requests that never get an answer.
    let nict = s.send(
        peer_udp(),
        &request("NOTIFY", OUR_VIA, "z9hG4bKnoanswer", 1),
    );
    let ict = s.send(
        peer_udp(),
        &request("INVITE", OUR_VIA, "z9hG4bKnoanswer", 1),
    );
    for at in [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ] {
        s.run_until(ms(at));
        assert_eq!(s.on_request(&text), RequestDisposition::Retransmission);
        assert_eq!(s.on_request(&inv), RequestDisposition::Retransmission);
    }
    s.run_until(ms(100_000));
    let sent = s.take_sent();
    for (_, t) in &sent {
        assert!(
            t.data.starts_with(b"SIP/2.0 100 ")
                || t.data.starts_with(b"SUBSCRIBE ")
                || t.data.starts_with(b"NOTIFY ")
                || t.data.starts_with(b"INVITE "),
            "unexpected transmission {:?}",
            String::from_utf8_lossy(&t.data)
        );
        assert!(!t.data.starts_with(b"SIP/2.0 408"));
    }
    // Only the late 100 (from 7.5 s) for the non-INVITE, the 100 for the INVITE
    // at once and on every retransmission.
    let to_phone: Vec<_> = sent
        .iter()
        .filter(|(_, t)| t.flow == phone_reply_udp())
        .map(|(d, t)| (*d, status_of(t).unwrap()))
        .collect();
    assert_eq!(
        to_phone.iter().filter(|(_, c)| *c == 100).count(),
        to_phone.len()
    );
    assert_eq!(to_phone.len(), 1 + 10 + 7);
    let events = s.take_events();
    // The unanswered non-INVITE is dropped silently 64·T1 after it arrived.
    assert!(events.contains(&(ms(32_000), TxEvent::Terminated(TxKey::Server(nist)))));
    assert!(events.contains(&(ms(32_000), TxEvent::Timeout(nict))));
    assert!(events.contains(&(ms(32_000), TxEvent::Timeout(ict))));
    // The INVITE server transaction waits for its TU (Timer C is the TU's).
    assert_eq!(s.layer.server_state(&ist), Some(ServerState::Proceeding));
    assert!(s.layer.terminate_server(&ist));
    assert!(s.layer.is_empty());
}

/// A burst of SUBSCRIBEs (a site's phones all booting at once) leaves no room
/// behind once its transactions ended: the tables, the timer heap and the event
/// queue are sized for what is live, not for the peak (issue 12: bytes per
/// held subscription).
#[test]
fn a_burst_gives_its_room_back_after_timer_j() {
    let mut s = Sim::new();
    for i in 0..5000 {
        let text = request("SUBSCRIBE", PHONE_VIA, &format!("z9hG4bKburst{i}"), 1);
        let key = new_key(s.on_request(&text));
        let ok = MessageBuilder::response_to(&parse(&text), 200, "OK", Some("srv")).finish();
        s.respond(&key, ok).unwrap();
    }
    assert_eq!(s.layer.len(), (0, 5000));
    assert!(s.layer.servers.capacity() >= 5000);
    s.run_until(ms(40_000));
    assert_eq!(s.layer.len(), (0, 0));
    assert!(
        s.layer.servers.capacity() <= SHRINK_MIN,
        "{}",
        s.layer.servers.capacity()
    );
    assert!(s.layer.queue.heap.capacity() <= SHRINK_MIN);
    assert!(s.layer.events.capacity() <= SHRINK_MIN);
    assert!(s.layer.out.capacity() <= SHRINK_MIN);
}

/// The responses kept for Timer J share the layer's blocks: hundreds of
/// completed transactions' responses lie one after the other in one
/// allocation, each still answered byte for byte, and a large response keeps
/// its own.
#[test]
fn responses_kept_for_timer_j_share_blocks_and_stay_byte_identical() {
    let mut s = Sim::new();
    let mut kept = Vec::new();
    for i in 0..300u32 {
        let text = request("SUBSCRIBE", PHONE_VIA, &format!("z9hG4bKblk{i}"), i + 1);
        let key = new_key(s.on_request(&text));
        let ok = MessageBuilder::response_to(&parse(&text), 200, "OK", Some("srv"))
            .header("Expires", 600 + i)
            .finish();
        s.respond(&key, ok.clone()).unwrap();
        kept.push((text, ok));
    }
    s.take_sent();
    let mut answers = Vec::new();
    for (text, ok) in &kept {
        assert_eq!(s.on_request(text), RequestDisposition::Retransmission);
        let sent = s.take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].1.data, ok, "answered byte-identically");
        answers.push(sent[0].1.data.clone());
    }
    // consecutive responses follow each other in memory (one block, not 300)
    let adjacent = answers
        .windows(2)
        .filter(|w| w[0].as_ptr().wrapping_add(w[0].len()) == w[1].as_ptr())
        .count();
    assert!(adjacent >= 290, "{adjacent} of 299 pairs adjacent");

    let big_text = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKbig", 1);
    let key = new_key(s.on_request(&big_text));
    let big = MessageBuilder::response_to(&parse(&big_text), 200, "OK", Some("srv"))
        .header("X-Pad", "x".repeat(20_000))
        .finish();
    s.respond(&key, big.clone()).unwrap();
    let sent = s.take_sent();
    assert_eq!(sent[0].1.data.as_ptr(), big.as_ptr(), "sent as given");
    assert_eq!(s.on_request(&big_text), RequestDisposition::Retransmission);
    let again = s.take_sent();
    assert_eq!(again[0].1.data, big);
    assert_eq!(
        again[0].1.data.as_ptr(),
        big.as_ptr(),
        "a large one kept as is"
    );
}
