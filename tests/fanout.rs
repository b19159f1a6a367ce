//! Fan-out, sans-IO: one upstream NOTIFY for a target many phones watch. The
//! core decides at once which phones get a NOTIFY (reserving their CSeq and
//! version) and builds each NOTIFY only when the endpoint is asked for its next
//! transmit, so the 200 to the upstream leaves first and the first phone NOTIFY
//! leaves before the others are made. The tests poll the endpoint one transmit
//! at a time (`Sim::udp_from` would drain it) and check what a phone sees: one
//! NOTIFY per decision, CSeq and dialog-info version rising by one, the newest
//! document for a phone not yet sent when a second change comes, nothing after
//! its final NOTIFY, and reserved marks that hold across a crash.

mod sim;

use blf_bridge::flow::Transmit;
use blf_bridge::presence::{DialogState, parse_dialog_info};
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::*;
use std::collections::HashMap;
use std::time::Duration;

const WAVE: &str = "Grandstream Wave 1.0.6.8";

const EXTRA: &str = r#"
[security]
max_subscriptions_per_source = 100000
max_subscriptions_per_target = 100000
rate_per_source = 100000
"#;

/// A Wave phone on 127.0.0.1:`port` watching 1002, with what it last got.
struct Phone {
    port: u16,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
    /// (CSeq, version, document without its version) of every NOTIFY it got.
    got: Vec<(u32, u32, String)>,
}

impl Phone {
    fn new(port: u16) -> Phone {
        Phone {
            port,
            call_id: format!("wave-{port}@192.168.1.50"),
            cseq: 0,
            to_tag: None,
            got: Vec::new(),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn request(&mut self, expires: u32) -> String {
        self.cseq += 1;
        let (ruri, to) = match &self.to_tag {
            Some(t) => (
                "sip:blf-bridge@127.0.0.1:5060".to_string(),
                format!("<sip:1002@pbx.test>;tag={t}"),
            ),
            None => ("sip:1002@pbx.test".into(), "<sip:1002@pbx.test>".into()),
        };
        format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKw{port}x{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=w{port}\r\n\
To: {to}\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:1001@127.0.0.1:{port}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {WAVE}\r\n\
Expires: {expires}\r\n\
Content-Length: 0\r\n\r\n",
            port = self.port,
            cseq = self.cseq,
            cid = self.call_id,
        )
    }

    /// A (re-)SUBSCRIBE, delivered and everything drained; the bridge's
    /// answers to this phone.
    fn subscribe(&mut self, sim: &mut Sim, expires: u32) -> Vec<SipMessage> {
        let req = self.request(expires);
        sim.udp_from(&self.addr(), &req);
        let msgs = sim.take_to(&self.addr());
        if self.to_tag.is_none()
            && let Some(ok) = msgs.iter().find(|m| m.status() == Some(200))
        {
            self.to_tag = ok.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
        }
        msgs
    }
}

impl Phone {
    /// Record a NOTIFY taken from the sim and answer it 200.
    fn answer(&mut self, sim: &mut Sim, m: &SipMessage) {
        let v = parse_dialog_info(m.body()).ok().and_then(|d| d.version);
        self.got
            .push((cseq(m), v.unwrap_or(u32::MAX), unversioned_or_empty(m)));
        let r = reply(m, 200, "OK", None, "");
        sim.udp_from(&self.addr(), &r);
    }
}

fn cseq(m: &SipMessage) -> u32 {
    m.cseq().unwrap().unwrap().seq
}

/// The document with its version attribute cut out (to compare contents).
fn unversioned(m: &SipMessage) -> String {
    let b = body(m);
    let v = parse_dialog_info(m.body()).unwrap().version.unwrap();
    b.replacen(&format!("version=\"{v}\""), "", 1)
}

fn first_state(doc_of: &SipMessage) -> Option<DialogState> {
    let d = parse_dialog_info(doc_of.body()).unwrap();
    d.dialogs.first().map(|x| x.state)
}

/// `n` Wave phones watching 1002, the upstream pair established (dialog idle,
/// presence open), every first NOTIFY answered, and 40 s later no
/// transaction left.
fn watched(n: u16, persistent: bool) -> (Sim, FakePbx, Vec<Phone>) {
    let mut sim = if persistent {
        Sim::new_persistent(EXTRA)
    } else {
        Sim::new(EXTRA)
    };
    let mut pbx = FakePbx::default();
    let mut phones: Vec<Phone> = (0..n).map(|i| Phone::new(41000 + i)).collect();
    for (i, p) in phones.iter_mut().enumerate() {
        let msgs = p.subscribe(&mut sim, 3600);
        assert!(msgs.iter().any(|m| m.status() == Some(200)), "{msgs:?}");
        for m in msgs.iter().filter(|m| is_method(m, Method::Notify)) {
            p.answer(&mut sim, m);
        }
        if i == 0 {
            let up = pbx.take(&mut sim);
            assert_eq!(pbx.accept(&mut sim, &up, 3600), 2);
            pbx.notify(&mut sim, "dialog", "active;expires=3600", Some(DUMMY_IDLE));
            pbx.notify(&mut sim, "presence", "active;expires=3600", Some(PIDF_OPEN));
        }
    }
    deliver_and_answer(&mut sim, &mut phones);
    sim.advance(Duration::from_secs(40));
    deliver_and_answer(&mut sim, &mut phones);
    assert_eq!(sim.ep.transactions(), (0, 0), "nothing in flight");
    for p in &phones {
        assert_eq!(p.got.len(), 1, "one first NOTIFY each");
    }
    (sim, pbx, phones)
}

/// Record a transmit to a phone (a NOTIFY, once per CSeq) in its history;
/// returns the NOTIFY, if it was one.
fn record(phones: &mut [Phone], t: &Transmit) -> Option<(usize, SipMessage)> {
    let m = SipMessage::parse(t.data.clone()).ok()?;
    if !is_method(&m, Method::Notify) {
        return None;
    }
    let i = phones.iter().position(|p| p.port == t.flow.remote.port())?;
    let c = cseq(&m);
    if phones[i].got.last().is_some_and(|g| g.0 == c) {
        return None; // a retransmission
    }
    let v = parse_dialog_info(m.body()).ok().and_then(|d| d.version);
    phones[i]
        .got
        .push((c, v.unwrap_or(u32::MAX), unversioned_or_empty(&m)));
    Some((i, m))
}

fn unversioned_or_empty(m: &SipMessage) -> String {
    if m.body().is_empty() {
        String::new()
    } else {
        unversioned(m)
    }
}

/// Take what the sim collected: phone NOTIFYs recorded and answered 200 (and
/// whatever that makes the bridge send, until it is quiet).
fn deliver_and_answer(sim: &mut Sim, phones: &mut [Phone]) {
    loop {
        let pending = std::mem::take(&mut sim.pending);
        let mut answered = false;
        let mut rest = Vec::new();
        for t in pending {
            match record(phones, &t) {
                Some((i, m)) => {
                    let r = reply(&m, 200, "OK", None, "");
                    sim.udp_from(&phones[i].addr(), &r);
                    answered = true;
                }
                None => rest.push(t),
            }
        }
        // what is left are responses and requests to the upstream (or
        // retransmissions): not ours to answer here
        sim.pending.extend(rest);
        if !answered {
            return;
        }
    }
}

/// The endpoint's next transmit, polled directly.
fn next(sim: &mut Sim) -> Option<Transmit> {
    sim.ep.poll_transmit()
}

fn is_200_upstream(t: &Transmit) -> bool {
    let m = SipMessage::parse(t.data.clone()).unwrap();
    t.flow.remote == addr(UPSTREAM)
        && m.status() == Some(200)
        && m.cseq().unwrap().unwrap().method == b"NOTIFY"
}

fn client_transactions(sim: &Sim) -> usize {
    sim.ep.transactions().0
}

fn queued(sim: &Sim) -> usize {
    sim.ep.subscriptions().queued_notifies()
}

/// Every phone's NOTIFYs so far rise by exactly one in CSeq and version.
fn assert_monotonic(phones: &[Phone]) {
    for p in phones {
        for w in p.got.windows(2) {
            assert_eq!(w[1].0, w[0].0 + 1, "phone {}: CSeq {:?}", p.port, p.got);
            assert_eq!(w[1].1, w[0].1 + 1, "phone {}: version {:?}", p.port, p.got);
        }
    }
}

#[test]
fn the_200_upstream_leaves_first_then_each_phone_notify_is_built_as_it_is_sent() {
    const N: u16 = 50;
    let (mut sim, mut pbx, mut phones) = watched(N, false);
    let cseqs = |sim: &Sim| -> Vec<u32> {
        sim.ep
            .subscriptions()
            .phones()
            .map(|p| p.local_cseq)
            .collect()
    };
    let before = cseqs(&sim);
    pbx.notify_undrained(&mut sim, "presence", Some(PIDF_CLOSED));
    // one NOTIFY per watcher to come, none decided (numbered) or built yet
    assert_eq!(queued(&sim), N as usize, "one NOTIFY per watcher pending");
    assert_eq!(client_transactions(&sim), 0, "none built yet");
    assert_eq!(cseqs(&sim), before, "no phone decided yet");

    let first = next(&mut sim).expect("something to send");
    assert!(is_200_upstream(&first), "the upstream's 200 goes first");
    assert!(!sim.ep.transmit_is_fanout(), "the 200 keeps its order");
    assert_eq!(client_transactions(&sim), 0);

    let t = next(&mut sim).expect("a phone NOTIFY");
    assert!(record(&mut phones, &t).is_some(), "a phone NOTIFY next");
    assert!(
        sim.ep.transmit_is_fanout(),
        "a fan-out NOTIFY may be sent in any order with the others"
    );
    assert_eq!(
        client_transactions(&sim),
        1,
        "the first phone NOTIFY leaves before the others are made"
    );
    let decided = cseqs(&sim)
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(decided, 1, "the others are not even decided yet");
    assert_eq!(queued(&sim), N as usize - 1);

    let mut sent = 1;
    while let Some(t) = next(&mut sim) {
        assert!(record(&mut phones, &t).is_some(), "only phone NOTIFYs");
        sent += 1;
        assert_eq!(
            client_transactions(&sim),
            sent,
            "one transaction per NOTIFY made"
        );
    }
    assert_eq!(sent, N as usize);
    assert_eq!(queued(&sim), 0);
    for p in &phones {
        assert_eq!(
            p.got.len(),
            2,
            "phone {}: one NOTIFY for the change",
            p.port
        );
        assert_ne!(p.got[1].2, p.got[0].2, "the new document");
    }
    assert_monotonic(&phones);
}

#[test]
fn a_second_change_mid_fanout_gives_unsent_phones_only_the_newest_document() {
    const N: u16 = 30;
    const SENT: usize = 10;
    let (mut sim, mut pbx, mut phones) = watched(N, false);
    let before: Vec<(u32, u32)> = phones.iter().map(|p| (p.got[0].0, p.got[0].1)).collect();

    // change 1: offline; ten phones get it before change 2 (busy) arrives
    pbx.notify_undrained(&mut sim, "presence", Some(PIDF_CLOSED));
    assert!(is_200_upstream(&next(&mut sim).unwrap()));
    let mut early = Vec::new();
    let mut unanswered = Vec::new();
    for _ in 0..SENT {
        let t = next(&mut sim).unwrap();
        let (i, m) = record(&mut phones, &t).expect("a phone NOTIFY");
        early.push(i);
        unanswered.push((i, m));
    }
    let offline_doc = phones[early[0]].got[1].2.clone();

    pbx.notify_undrained(&mut sim, "dialog", Some(CONFIRMED));
    assert!(
        is_200_upstream(&next(&mut sim).unwrap()),
        "the second change's 200 leaves before the rest of the first fan-out"
    );
    let mut late = Vec::new();
    while let Some(t) = next(&mut sim) {
        let (i, m) = record(&mut phones, &t).expect("only phone NOTIFYs");
        assert!(
            !early.contains(&i),
            "a phone already sent waits for its answer"
        );
        assert_eq!(first_state(&m), Some(DialogState::Confirmed), "the newest");
        late.push(i);
        unanswered.push((i, m));
    }
    assert_eq!(late.len(), N as usize - SENT, "each unsent phone once");
    let busy_doc = phones[late[0]].got[1].2.clone();
    assert_ne!(busy_doc, offline_doc);
    for &i in &late {
        let p = &phones[i];
        assert_eq!(p.got.len(), 2, "one NOTIFY, not one per change");
        assert_eq!((p.got[1].0, p.got[1].1), (before[i].0 + 1, before[i].1 + 1));
        assert_eq!(p.got[1].2, busy_doc);
    }
    // the phones answer: the early ones then get the newest
    for (i, m) in unanswered {
        let r = reply(&m, 200, "OK", None, "");
        sim.udp_from(&phones[i].addr(), &r);
    }
    deliver_and_answer(&mut sim, &mut phones);
    for &i in &early {
        let p = &phones[i];
        assert_eq!(p.got.len(), 3, "offline, then busy: {:?}", p.got);
        assert_eq!(p.got[1].2, offline_doc);
        assert_eq!(p.got[2].2, busy_doc);
    }
    assert_monotonic(&phones);
    assert_eq!(queued(&sim), 0);
}

#[test]
fn a_phone_that_unsubscribes_mid_fanout_gets_only_its_final_notify() {
    const N: u16 = 20;
    let (mut sim, mut pbx, mut phones) = watched(N, false);
    pbx.notify_undrained(&mut sim, "presence", Some(PIDF_CLOSED));
    assert!(is_200_upstream(&next(&mut sim).unwrap()));
    let mut sent = Vec::new();
    for _ in 0..5 {
        let t = next(&mut sim).unwrap();
        sent.push(record(&mut phones, &t).expect("a phone NOTIFY").0);
    }
    // one phone not yet sent unsubscribes (delivering it drains the rest)
    let leaving = (0..N as usize).find(|i| !sent.contains(i)).unwrap();
    let last_cseq = phones[leaving].got[0].0;
    let req = phones[leaving].request(0);
    sim.udp_from(&phones[leaving].addr(), &req);
    let to_leaving = sim.take_to(&phones[leaving].addr());
    let notifies: Vec<&SipMessage> = to_leaving
        .iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    assert_eq!(notifies.len(), 1, "only the final NOTIFY: {to_leaving:?}");
    assert!(
        hv(notifies[0], HeaderName::SubscriptionState).starts_with("terminated"),
        "{}",
        text(notifies[0])
    );
    assert!(cseq(notifies[0]) > last_cseq, "its CSeq still rises");
    // the others got theirs
    let mut rest = 0;
    for t in std::mem::take(&mut sim.pending) {
        if record(&mut phones, &t).is_some() {
            rest += 1;
        }
    }
    assert_eq!(rest, N as usize - 5 - 1);
    assert_eq!(queued(&sim), 0);
    assert!(sim.ep.subscriptions().phones().count() == N as usize - 1);
    assert_monotonic(&phones);
}

#[test]
fn a_phone_that_expires_mid_fanout_gets_its_final_notify_only() {
    let (mut sim, mut pbx, mut phones) = watched(4, false);
    // phone 3 refreshes with a short expiry
    let req = phones[3].request(60);
    sim.udp_from(&phones[3].addr(), &req);
    deliver_and_answer(&mut sim, &mut phones);
    sim.take_to(&phones[3].addr());
    let last = phones[3].got.last().unwrap().0;
    sim.advance(Duration::from_secs(59));
    deliver_and_answer(&mut sim, &mut phones);
    // a change, decided; the expiry fires before anything is sent
    pbx.notify_undrained(&mut sim, "presence", Some(PIDF_CLOSED));
    assert_eq!(queued(&sim), 4);
    sim.advance(Duration::from_secs(2));
    let to3 = sim.take_to(&phones[3].addr());
    let mut n3: Vec<&SipMessage> = to3
        .iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    n3.dedup_by_key(|m| cseq(m)); // retransmissions
    assert_eq!(n3.len(), 1, "{to3:?}");
    assert!(hv(n3[0], HeaderName::SubscriptionState).starts_with("terminated"));
    assert!(cseq(n3[0]) > last);
    let others = std::mem::take(&mut sim.pending)
        .iter()
        .filter(|t| record(&mut phones, t).is_some())
        .count();
    assert_eq!(others, 3);
    assert_eq!(queued(&sim), 0);
}

#[test]
fn versions_and_cseqs_rise_by_one_whatever_the_interleaving() {
    const N: u16 = 12;
    let (mut sim, mut pbx, mut phones) = watched(N, false);
    let changes: [(&str, &str); 4] = [
        ("presence", PIDF_CLOSED),
        ("dialog", CONFIRMED),
        ("dialog", EARLY),
        ("presence", PIDF_OPEN),
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut roll = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut notify_of: HashMap<usize, SipMessage> = HashMap::new();
    for round in 0..60 {
        let (event, body) = changes[round % changes.len()];
        pbx.notify_undrained(&mut sim, event, Some(body));
        // send a few of what is due, then some phones answer
        for _ in 0..roll(N as u64 + 4) {
            let Some(t) = next(&mut sim) else { break };
            if let Some((i, m)) = record(&mut phones, &t) {
                notify_of.insert(i, m);
            }
        }
        for (i, phone) in phones.iter().enumerate() {
            if roll(3) == 0
                && let Some(m) = notify_of.remove(&i)
            {
                let r = reply(&m, 200, "OK", None, "");
                sim.ep.handle_datagram(
                    blf_bridge::flow::Flow::udp(addr(&phone.addr())),
                    bytes::Bytes::from(crlf(&r)),
                    sim.now,
                );
            }
        }
    }
    // everything sent and answered until quiet
    loop {
        while let Some(t) = next(&mut sim) {
            if let Some((i, m)) = record(&mut phones, &t) {
                notify_of.insert(i, m);
            }
        }
        if notify_of.is_empty() {
            break;
        }
        for (i, m) in notify_of.drain() {
            let r = reply(&m, 200, "OK", None, "");
            sim.ep.handle_datagram(
                blf_bridge::flow::Flow::udp(addr(&phones[i].addr())),
                bytes::Bytes::from(crlf(&r)),
                sim.now,
            );
        }
    }
    assert_monotonic(&phones);
    // each ends on the last state, and got more than one NOTIFY on the way
    let last_doc = phones[0].got.last().unwrap().2.clone();
    for p in &phones {
        assert!(p.got.len() > 5, "phone {}: {:?}", p.port, p.got.len());
        assert_eq!(p.got.last().unwrap().2, last_doc, "phone {}", p.port);
    }
    assert_eq!(queued(&sim), 0);
}

#[test]
fn a_fanout_crossing_the_reserved_mark_is_durable_before_its_first_notify_and_survives_a_crash() {
    const N: u16 = 5;
    let (mut sim, mut pbx, mut phones) = watched(N, true);
    // versions 1..=62: within the first reservation (64 ahead)
    for round in 0..62 {
        let body = if round % 2 == 0 {
            PIDF_CLOSED
        } else {
            PIDF_OPEN
        };
        pbx.notify(&mut sim, "presence", "active;expires=3600", Some(body));
        deliver_and_answer(&mut sim, &mut phones);
    }
    for p in &phones {
        assert_eq!(p.got.last().unwrap().1, 62);
    }
    sim.advance(Duration::from_secs(40));
    deliver_and_answer(&mut sim, &mut phones);
    while let Some(b) = sim.ep.poll_persist() {
        sim.store.as_mut().unwrap().apply(&b);
    }

    // version 63 reaches the mark: the first phone decided moves its marks,
    // the others' move with it, and no NOTIFY is built before the store has
    // taken them (in a durable batch)
    pbx.notify_undrained(&mut sim, "presence", Some(PIDF_CLOSED));
    assert_eq!(queued(&sim), N as usize);
    assert_eq!(client_transactions(&sim), 0);
    assert!(is_200_upstream(&next(&mut sim).unwrap()));
    assert!(
        next(&mut sim).is_none(),
        "held until the store takes the marks"
    );
    assert!(sim.ep.waits_for_persist());
    assert_eq!(client_transactions(&sim), 0);
    let batch = sim.ep.poll_persist().expect("the marks moved");
    assert!(!sim.ep.waits_for_persist());
    assert!(batch.durable, "the NOTIFYs wait for the disk");
    let store = sim.store.as_mut().unwrap();
    store.apply(&batch);
    for (_, v) in &store.phones {
        let rec: serde_json::Value = serde_json::from_slice(v).unwrap();
        assert!(
            rec["reserved_version"].as_u64().unwrap() > 63,
            "reserved ahead of the queued version: {rec}"
        );
    }
    let t = next(&mut sim).unwrap();
    let (i, _) = record(&mut phones, &t).expect("a phone NOTIFY");
    assert_eq!(phones[i].got.last().unwrap().1, 63);
    assert!(
        sim.ep.poll_persist().is_none(),
        "building it changed nothing stored"
    );

    // crash with the rest unsent; after the restart every phone's next NOTIFY
    // carries a higher version and CSeq than anything decided before
    let (max_cseq, max_version) = phones
        .iter()
        .flat_map(|p| p.got.iter())
        .fold((0, 0), |(c, v), g| (c.max(g.0 + 1), v.max(g.1 + 1)));
    sim.restart();
    sim.advance(Duration::from_millis(100));
    let refreshes: Vec<SipMessage> = pbx
        .take(&mut sim)
        .into_iter()
        .filter(|m| is_method(m, Method::Subscribe))
        .collect();
    assert_eq!(pbx.accept(&mut sim, &refreshes, 3600), 2);
    pbx.notify(&mut sim, "dialog", "active;expires=3600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=3600", Some(PIDF_OPEN));
    let lens: Vec<usize> = phones.iter().map(|p| p.got.len()).collect();
    deliver_and_answer(&mut sim, &mut phones);
    for (p, before) in phones.iter().zip(lens) {
        assert_eq!(p.got.len(), before + 1, "phone {}: one NOTIFY", p.port);
        let (c, v, _) = p.got.last().unwrap();
        assert!(
            *c > max_cseq && *v > max_version,
            "phone {}: {c}/{v}",
            p.port
        );
    }
}
