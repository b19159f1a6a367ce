//! Non-INVITE client transactions (RFC 3261 §17.1.2): Timers E, F and K.

use super::*;

#[test]
fn nict_udp_timer_e_doubles_to_t2_and_timer_f_times_out() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", OUR_VIA, "z9hG4bKnict1", 1);
    let key = s.send(peer_udp(), &text);
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Trying));
    s.run_until(ms(40_000));
    let sent = s.take_sent();
    assert_eq!(
        times(&sent),
        ms_list(&[
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ])
    );
    assert!(
        sent.iter()
            .all(|(_, t)| t.flow == peer_udp() && t.data == text.as_bytes())
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key.clone()))),
        ]
    );
    assert_eq!(s.layer.client_state(&key), None);
    assert_eq!(s.layer.len(), (0, 0));
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn nict_completed_holds_no_reference_to_the_request() {
    // At a large site's refresh rate, every NOTIFY answered at once must leave
    // memory when its transaction completes, not 64·T1 after it was sent: the
    // map keeps the key until Timer K and the timer heap a stale Timer F entry,
    // so a key sliced from the request would pin the whole message that long.
    let mut s = Sim::new();
    let text = request("NOTIFY", OUR_VIA, "z9hG4bKnict-pin", 7);
    let req = Bytes::copy_from_slice(text.as_bytes());
    let key = s
        .layer
        .send_request(peer_udp(), req.clone(), s.now)
        .unwrap();
    s.drain();
    s.take_sent();
    assert!(!req.is_unique(), "kept for retransmissions while Trying");
    assert_eq!(
        s.on_response(&response(&text, 200, "")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Completed));
    assert!(
        req.is_unique(),
        "Completed: neither the transaction, nor its key, nor a timer entry holds the request"
    );
    assert_eq!(key.branch(), b"z9hG4bKnict-pin");
    s.run_until(ms(40_000));
    assert_eq!(s.layer.len(), (0, 0));
}

#[test]
fn nict_udp_proceeding_retransmits_every_t2() {
    let mut s = Sim::new();
    let text = request("NOTIFY", OUR_VIA, "z9hG4bKnict2", 2);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(600));
    assert_eq!(
        s.on_response(&response(&text, 100, "")),
        ResponseDisposition::PassUp(key.clone())
    );
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Proceeding));
    s.run_until(ms(40_000));
    // E at 1.5 s was already set; from then on every T2 until F.
    assert_eq!(
        times(&s.take_sent()),
        ms_list(&[0, 500, 1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500])
    );
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(key.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(key))),
        ]
    );
}

#[test]
fn nict_custom_timers_scale_e_and_f() {
    let mut s = Sim::with(Timers {
        t1: ms(100),
        t2: ms(400),
        t4: ms(1000),
    });
    let key = s.send(peer_udp(), &request("OPTIONS", OUR_VIA, "z9hG4bKnict3", 1));
    s.run_until(ms(10_000));
    assert_eq!(
        times(&s.take_sent()),
        ms_list(&[
            0, 100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100,
            5500, 5900, 6300
        ])
    );
    assert_eq!(s.take_events()[0], (ms(6400), TxEvent::Timeout(key)));
}

#[test]
fn nict_udp_final_response_completes_and_timer_k_absorbs() {
    let mut s = Sim::new();
    let text = request("SUBSCRIBE", OUR_VIA, "z9hG4bKnict4", 1);
    let key = s.send(peer_udp(), &text);
    s.run_until(ms(2000));
    let ok = response(&text, 200, "t1");
    assert_eq!(s.on_response(&ok), ResponseDisposition::PassUp(key.clone()));
    assert_eq!(s.layer.client_state(&key), Some(ClientState::Completed));
    // K is the only deadline left (not the stale E or F).
    assert_eq!(s.layer.poll_timeout(), Some(s.t0 + ms(7000)));
    s.run_until(ms(3000));
    assert_eq!(s.on_response(&ok), ResponseDisposition::Absorbed);
    assert_eq!(
        s.on_response(&response(&text, 100, "")),
        ResponseDisposition::Absorbed
    );
    s.run_until(ms(40_000));
    assert_eq!(times(&s.take_sent()), ms_list(&[0, 500, 1500]));
    assert_eq!(
        s.take_events(),
        vec![(ms(7000), TxEvent::Terminated(TxKey::Client(key.clone())))]
    );
    assert_eq!(s.on_response(&ok), ResponseDisposition::Stray);
}

#[test]
fn nict_tcp_never_retransmits_f_still_runs_k_is_zero() {
    let mut s = Sim::new();
    let a = s.send(peer_tcp(), &request("SUBSCRIBE", OUR_VIA, "z9hG4bKtcp1", 1));
    let text_b = request("NOTIFY", OUR_VIA, "z9hG4bKtcp2", 1);
    let b = s.send(peer_tcp(), &text_b);
    s.run_until(ms(1000));
    assert_eq!(
        s.on_response(&response(&text_b, 200, "t")),
        ResponseDisposition::PassUp(b.clone())
    );
    // Timer K = 0: gone at once.
    assert_eq!(s.layer.client_state(&b), None);
    assert_eq!(
        s.take_events(),
        vec![(ms(1000), TxEvent::Terminated(TxKey::Client(b)))]
    );
    s.run_until(ms(40_000));
    let sent = s.take_sent();
    assert_eq!(times(&sent), ms_list(&[0, 0]));
    assert!(sent.iter().all(|(_, t)| t.flow == peer_tcp()));
    assert_eq!(
        s.take_events(),
        vec![
            (ms(32_000), TxEvent::Timeout(a.clone())),
            (ms(32_000), TxEvent::Terminated(TxKey::Client(a))),
        ]
    );
}

#[test]
fn late_handle_timeout_does_not_burst() {
    let mut s = Sim::new();
    s.send(peer_udp(), &request("OPTIONS", OUR_VIA, "z9hG4bKlate", 1));
    s.take_sent();
    // The runtime oversleeps: three retransmissions were due by 4 s.
    s.now = s.t0 + ms(4000);
    s.layer.handle_timeout(s.now);
    s.drain();
    assert_eq!(s.take_sent().len(), 1);
    // The schedule continues from the late instant, not from the missed ones.
    assert_eq!(s.layer.poll_timeout(), Some(s.t0 + ms(5000)));
}
