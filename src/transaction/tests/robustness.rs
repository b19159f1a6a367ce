//! Unusable and malformed input, the Status-Line reader, timer heap upkeep and the
//! default timers.

use super::*;

#[test]
fn unusable_messages_are_reported_not_matched() {
    let mut s = Sim::new();
    let no_via =
        "OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(no_via), RequestDisposition::Malformed);
    assert_eq!(
        s.on_request(&no_via.replace("OPTIONS", "ACK")),
        RequestDisposition::Malformed
    );
    let bad_via =
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(bad_via), RequestDisposition::Malformed);
    // Legacy match needs CSeq and Call-ID.
    let no_cseq =
        "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(s.on_request(no_cseq), RequestDisposition::Malformed);
    let resp_no_via = parse("SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(s.on_response(&resp_no_via), ResponseDisposition::Stray);
    assert_eq!(s.on_response(&parse(no_via)), ResponseDisposition::Stray);
    assert!(s.take_sent().is_empty());
    assert!(s.layer.is_empty());
}

#[test]
fn malformed_input_never_panics() {
    let mut s = Sim::new();
    let inv = request("INVITE", PHONE_VIA, "z9hG4bKfz1", 1);
    let sub = request("SUBSCRIBE", PHONE_VIA, "z9hG4bKfz2", 1);
    let ours = request("INVITE", OUR_VIA, "z9hG4bKfz3", 1);
    let legacy = request("INVITE", "SIP/2.0/UDP 127.0.0.9", "", 3);
    let ki = new_key(s.on_request(&inv));
    new_key(s.on_request(&sub));
    let kl = new_key(s.on_request(&legacy));
    s.respond(&kl, response_bytes(&legacy, 603, "t")).unwrap();
    s.send(peer_udp(), &ours);
    s.send(peer_udp(), &request("NOTIFY", OUR_VIA, "z9hG4bKfz4", 1));
    s.respond(&ki, response_bytes(&inv, 486, "t")).unwrap();
    let seeds: Vec<Vec<u8>> = vec![
        inv.clone().into_bytes(),
        sub.clone().into_bytes(),
        legacy.clone().into_bytes(),
        ack(PHONE_VIA, "z9hG4bKfz1", 1, "t").into_bytes(),
        request("CANCEL", PHONE_VIA, "z9hG4bKfz1", 1).into_bytes(),
        response_bytes(&ours, 180, "x").to_vec(),
        response_bytes(&ours, 486, "x").to_vec(),
        response_bytes(&request("NOTIFY", OUR_VIA, "z9hG4bKfz4", 1), 200, "x").to_vec(),
    ];
    let mut rng = Rng::seeded(4475);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in &seeds {
        for cut in 0..seed.len() {
            inputs.push(seed[..cut].to_vec());
        }
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len() as u64) as usize;
                let junk = [
                    0u8, b'\r', b'\n', b' ', b';', b':', b',', b'=', b'"', b'<', 0xff, b'z', b'9',
                ];
                m[i] = junk[rng.below(junk.len() as u64) as usize];
            }
            inputs.push(m);
        }
    }
    let mut step = 0u64;
    for input in inputs {
        step += 1;
        let now = s.now + ms(step % 7);
        s.now = now;
        let bytes = Bytes::from(input);
        if let Ok(msg) = SipMessage::parse(bytes.clone()) {
            if msg.is_request() {
                let d = s.layer.on_request(&msg, phone_udp(), phone_udp(), now);
                if let RequestDisposition::New(k) = d {
                    let _ = s.layer.respond(&k, bytes.clone(), now);
                    let _ = s.layer.respond(&k, response_bytes(&inv, 500, "z"), now);
                }
                let _ = s.layer.find_invite_for_cancel(&msg);
            } else {
                let _ = s.layer.on_response(&msg, now);
            }
        }
        let _ = s.layer.send_request(peer_udp(), bytes.clone(), now);
        let _ = s.layer.respond(&ki, bytes, now);
        s.layer.handle_timeout(now);
        s.drain();
    }
    s.run_until(s.elapsed() + ms(200_000));
    assert!(s.layer.is_empty(), "{:?}", s.layer.len());
    assert_eq!(s.layer.poll_timeout(), None);
    // Still works afterwards.
    let k = new_key(s.on_request(&inv));
    assert_eq!(s.layer.server_state(&k), Some(ServerState::Proceeding));
}

#[test]
fn status_line_reader() {
    assert_eq!(status_code(b"SIP/2.0 200 OK\r\n"), Some(200));
    assert_eq!(status_code(b"sip/2.0 486\r\n"), Some(486));
    assert_eq!(status_code(b"SIP/2.0 699"), Some(699));
    for bad in [
        &b"SIP/2.0 2000 OK\r\n"[..],
        b"SIP/2.0 099 x\r\n",
        b"SIP/2.0 700 x\r\n",
        b"SIP/2.0 20 OK",
        b"SIP/3.0 200 OK",
        b"INVITE sip:a SIP/2.0",
        b"",
    ] {
        assert_eq!(status_code(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn dead_timer_entries_do_not_accumulate() {
    let mut s = Sim::new();
    // Thousands of transactions answered at once leave their E and F entries
    // dead in the heap; the heap is rebuilt instead of growing without bound.
    for i in 0..5000 {
        let text = request("OPTIONS", OUR_VIA, &format!("z9hG4bKmany{i}"), 1);
        s.send(peer_tcp(), &text);
        s.on_response(&response(&text, 200, "x"));
    }
    assert_eq!(s.layer.len(), (0, 0));
    assert!(
        s.layer.queue.heap.len() <= 1025,
        "{}",
        s.layer.queue.heap.len()
    );
    assert_eq!(s.layer.poll_timeout(), None);
}

#[test]
fn timers_default_to_rfc3261_values() {
    let t = Timers::default();
    assert_eq!((t.t1, t.t2, t.t4), (ms(500), ms(4000), ms(5000)));
    assert_eq!(t.t1x64(), ms(32_000));
    assert_eq!(t.timer_d(), ms(32_000));
    let slow = Timers {
        t1: ms(1000),
        ..Timers::default()
    };
    assert_eq!(slow.timer_d(), ms(64_000));
    let zero = TransactionLayer::new(Timers {
        t1: Duration::ZERO,
        t2: Duration::ZERO,
        t4: Duration::ZERO,
    });
    assert!(zero.timers().t1 > Duration::ZERO);
}
