//! Issue 9, items 3–7 and 10, sans-IO: the exhaustion, amplification and
//! snooping attacks an attacker on the LAN ran against the bridge, replayed
//! against the `Endpoint` on the simulated network with a simulated clock. Each
//! test states the bound the hardened bridge keeps with its defaults (or with the
//! small caps its configuration names).

mod sim;

use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::msg::Req;
use sim::*;
use std::time::Duration;

const GXP: &str = "Grandstream GXP2170 1.0.11.3";

fn status(m: &SipMessage) -> u16 {
    m.status().unwrap_or(0)
}

fn statuses(v: &[SipMessage]) -> Vec<u16> {
    v.iter().filter_map(|m| m.status()).collect()
}

fn subscribes(v: &[SipMessage]) -> usize {
    v.iter().filter(|m| is_method(m, Method::Subscribe)).count()
}

fn registers(v: &[SipMessage]) -> Vec<SipMessage> {
    v.iter()
        .filter(|m| is_method(m, Method::Register))
        .cloned()
        .collect()
}

/// A phone's BLF SUBSCRIBE (GXP: a translate profile) from `from` (ip:port),
/// its From user `user` (a bare user or a whole URI), to `target`.
fn blf(from: &str, user: &str, target: &str, n: u32, expires: u32) -> Req {
    Req::new("SUBSCRIBE", &format!("sip:{target}@pbx.test"))
        .top_via(
            from,
            &format!("z9hG4bKblf{n}x{}", from.replace([':', '.'], "")),
        )
        .rport()
        .from(user, &format!("ft{n}"))
        .to(target)
        .call_id(&format!("blf-{n}-{}@phone", from.replace([':', '.'], "")))
        .contact(&format!("<sip:w@{from}>"))
        .header("Event", "dialog")
        .header("Accept", "application/dialog-info+xml")
        .header("Expires", &expires.to_string())
        .header("User-Agent", GXP)
}

/// A REGISTER of `user` from 127.0.0.x:`port` (`ip` the whole address).
fn register(from: &str, user: &str, cseq: u32, contacts: &[String], extra: &str) -> Req {
    let mut r = Req::new("REGISTER", "sip:pbx.test")
        .top_via(
            from,
            &format!("z9hG4bKreg{user}{cseq}x{}", from.replace([':', '.'], "")),
        )
        .rport()
        .from(user, &format!("r{user}"))
        .to(user)
        .call_id(&format!(
            "reg-{user}-{}@phone",
            from.replace([':', '.'], "")
        ))
        .cseq(cseq)
        .header("Expires", "3600")
        .headers(extra)
        .header("User-Agent", GXP);
    if !contacts.is_empty() {
        r = r.contact(&contacts.join(", "));
    }
    r
}

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n";

/// A phone registers through the bridge: REGISTER → 401 → with credentials → 200.
fn register_through_bridge(sim: &mut Sim, from: &str, user: &str) {
    let contact = vec![format!("<sip:{user}@{from}>")];
    sim.udp_from(from, &register(from, user, 1, &contact, ""));
    let up = registers(&sim.take_to(UPSTREAM));
    assert_eq!(up.len(), 1);
    sim.udp_from(
        UPSTREAM,
        &reply(&up[0], 401, "Unauthorized", Some("k"), CHALLENGE),
    );
    assert_eq!(statuses(&sim.take_to(from)), vec![401]);
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"pbx.test\", nonce=\"n1\", uri=\"sip:pbx.test\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"c\"\n"
    );
    sim.udp_from(from, &register(from, user, 2, &contact, &auth));
    let up = registers(&sim.take_to(UPSTREAM));
    assert_eq!(up.len(), 1);
    let c = hv(&up[0], HeaderName::Contact);
    sim.udp_from(
        UPSTREAM,
        &reply(
            &up[0],
            200,
            "OK",
            Some("k"),
            &format!("Contact: {c};expires=3600\r\n"),
        ),
    );
    assert_eq!(statuses(&sim.take_to(from)), vec![200]);
}

// ------------------------------------------------------------------ item 7

/// Item 7: a watcher with no account and no registration through the bridge
/// (`From: nobody@evil.example`) learns nothing: 403, no upstream subscription,
/// no NOTIFY (so no Call-ID, tag, identity or contact of anyone's call).
#[test]
fn a_watcher_without_account_or_registration_learns_nothing() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    // 1002 is busy in a call the bridge already watches for a legitimate phone
    sim.udp_from(
        "127.0.0.1:40000",
        &blf("127.0.0.1:40000", "1001", "1002", 1, 600),
    );
    assert_eq!(statuses(&sim.take_to("127.0.0.1:40000")), vec![200]);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(EARLY));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    sim.clear();

    let evil = "127.0.0.9:5099";
    sim.udp_from(evil, &blf(evil, "sip:nobody@evil.example", "1002", 2, 600));
    sim.udp_from(evil, &blf(evil, "sip:nobody@evil.example", "1003", 3, 600));
    let got = sim.take_to(evil);
    assert_eq!(statuses(&got), vec![403, 403], "{got:?}");
    sim.advance(Duration::from_secs(5));
    let later = sim.take_to(evil);
    assert!(
        later.is_empty(),
        "nothing else reaches the snooper: {later:?}"
    );
    assert!(
        sim.ep
            .subscriptions()
            .target_by_aor("sip:1003@pbx.test")
            .is_none(),
        "no target for the snooper"
    );
    assert_eq!(subscribes(&pbx.take(&mut sim)), 0);
    assert_eq!(sim.ep.subscriptions().phones().count(), 1);
}

/// Who may watch: a phone registered through the bridge, from the address it
/// registered from (any From user); an `[[account]]` user; with
/// `watchers = "allowed"`, anyone in `allow`.
#[test]
fn registered_phones_and_account_users_may_watch_and_allowed_opens_it() {
    let mut sim = Sim::new("");
    let phone = "127.0.0.5:5062";
    register_through_bridge(&mut sim, phone, "2001");
    sim.udp_from(phone, &blf(phone, "2001", "1002", 1, 600));
    assert_eq!(statuses(&sim.take_to(phone)), vec![200]);
    // the same user from another address that never registered: refused
    let other = "127.0.0.6:5062";
    sim.udp_from(other, &blf(other, "2001", "1002", 2, 600));
    assert_eq!(statuses(&sim.take_to(other)), vec![403]);
    // an account user from anywhere allowed
    sim.udp_from(other, &blf(other, "1005", "1002", 3, 600));
    assert_eq!(statuses(&sim.take_to(other)), vec![200]);

    let mut open = Sim::new("[security]\nwatchers = \"allowed\"\n");
    open.udp_from(
        other,
        &blf(other, "sip:nobody@evil.example", "1002", 4, 600),
    );
    assert_eq!(statuses(&open.take_to(other)), vec![200]);
}

// ------------------------------------------------------------------ item 3

/// Item 3: `Expires: 0` (a fetch) for a target nobody watches creates no
/// upstream subscription: the phone gets the unknown rendering, terminated.
#[test]
fn a_fetch_of_an_unwatched_target_costs_the_provider_nothing() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let phone = "127.0.0.1:40000";
    for n in 0..50 {
        sim.udp_from(phone, &blf(phone, "1001", &format!("3{n:03}"), n, 0));
    }
    let got = sim.take_to(phone);
    assert_eq!(statuses(&got).iter().filter(|&&c| c == 200).count(), 50);
    let notifies: Vec<_> = got
        .iter()
        .filter(|m| is_method(m, Method::Notify))
        .collect();
    assert_eq!(notifies.len(), 50, "one final NOTIFY each");
    for n in &notifies {
        assert!(hv(n, HeaderName::SubscriptionState).starts_with("terminated"));
    }
    sim.advance(Duration::from_secs(5));
    assert_eq!(subscribes(&pbx.take(&mut sim)), 0, "no upstream SUBSCRIBE");
    assert_eq!(sim.ep.subscriptions().targets().count(), 0);
    assert_eq!(sim.ep.subscriptions().phones().count(), 0);
}

/// Item 10/3: a 30 KB Request-URI user (and one that is no extension) is
/// refused before a target exists; nothing goes upstream.
#[test]
fn an_implausible_target_user_is_refused_before_a_target_exists() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let phone = "127.0.0.1:40000";
    let huge = "7".repeat(30_000);
    sim.udp_from(phone, &blf(phone, "1001", &huge, 1, 600));
    sim.udp_from(phone, &blf(phone, "1001", &"8".repeat(65), 2, 600));
    sim.udp_from(phone, &blf(phone, "1001", "a\"b", 3, 600));
    let got = statuses(&sim.take_to(phone));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|&c| c == 414 || c == 404 || c == 400),
        "{got:?}"
    );
    sim.advance(Duration::from_secs(60));
    assert_eq!(subscribes(&pbx.take(&mut sim)), 0);
    assert_eq!(sim.ep.subscriptions().targets().count(), 0);
    // 64 bytes is still an extension
    sim.udp_from(phone, &blf(phone, "1001", &"9".repeat(64), 4, 600));
    assert_eq!(statuses(&sim.take_to(phone)), vec![200]);
}

/// Item 3 (the bound): 5,000 phone SUBSCRIBEs to distinct non-existent
/// targets from one source in 25 s cause at most 3,000 upstream SUBSCRIBEs until
/// 30 s after, at most 5/s from 25 s after the flood; targets stay capped.
#[test]
fn a_distinct_target_flood_from_one_source_is_bounded_upstream() {
    let mut sim = Sim::new("");
    let attacker = "127.0.0.7:5099";
    let mut upstream_subscribes = 0usize;
    let mut late = 0usize;
    let mut answer = |sim: &mut Sim, counting_late: bool| {
        let up = sim.take_to(UPSTREAM);
        for m in up.iter().filter(|m| is_method(m, Method::Subscribe)) {
            upstream_subscribes += 1;
            if counting_late {
                late += 1;
            }
            // non-existent extension
            sim.udp_from(UPSTREAM, &reply(m, 404, "Not Found", Some("x"), ""));
        }
    };
    // 200 per second for 25 s, in 10 ms steps
    for n in 0..5000u32 {
        sim.udp_from(
            attacker,
            &blf(attacker, "1001", &format!("5{n:04}"), n, 3600),
        );
        sim.take_to(attacker);
        if n % 2 == 1 {
            sim.advance(Duration::from_millis(10));
            answer(&mut sim, false);
        }
    }
    let targets_after_flood = sim.ep.subscriptions().targets().count();
    // 30 s after the flood, every second
    for s in 0..30 {
        sim.advance(Duration::from_secs(1));
        sim.take_to(attacker);
        answer(&mut sim, s >= 25);
    }
    eprintln!(
        "flood: {upstream_subscribes} upstream SUBSCRIBEs, {targets_after_flood} targets, {late} in the last 5 s"
    );
    assert!(upstream_subscribes <= 3000, "{upstream_subscribes}");
    assert!(
        targets_after_flood <= 200,
        "targets capped per source: {targets_after_flood}"
    );
    assert!(late <= 25, "≤ 5/s from 25 s after the flood: {late} in 5 s");
    assert!(sim.ep.subscriptions().paced() <= 400);
}

/// Item 3/6: the caps, with the codes a phone understands: a source beyond its
/// share gets 403, a target beyond its watchers and the bridge beyond its
/// targets 503 with Retry-After; refused SUBSCRIBEs create nothing.
#[test]
fn caps_on_targets_and_subscriptions_per_source_and_per_target() {
    let mut sim = Sim::new(
        "[security]\nmax_targets = 4\nmax_subscriptions_per_source = 3\nmax_subscriptions_per_target = 2\n",
    );
    let a = "127.0.0.11:5062";
    let b = "127.0.0.12:5062";
    let c = "127.0.0.13:5062";
    let codes = |sim: &mut Sim, from: &str| statuses(&sim.take_to(from));
    // per source: a watches 3 targets; the 4th is refused
    for (n, t) in ["2001", "2002", "2003", "2004"].iter().enumerate() {
        sim.udp_from(a, &blf(a, "1001", t, n as u32, 600));
    }
    assert_eq!(codes(&mut sim, a), vec![200, 200, 200, 403]);
    assert_eq!(sim.ep.subscriptions().targets().count(), 3);
    // per target: 2001 has a; b is the second watcher, c the third (refused)
    sim.udp_from(b, &blf(b, "1001", "2001", 10, 600));
    assert_eq!(codes(&mut sim, b), vec![200]);
    sim.udp_from(c, &blf(c, "1001", "2001", 11, 600));
    let r = sim.take_to(c);
    assert_eq!(statuses(&r), vec![503]);
    assert!(hv_named(&r[0], "Retry-After").is_some());
    // targets: a 4th target (b), then a 5th (c) is refused
    sim.udp_from(b, &blf(b, "1001", "2005", 12, 600));
    assert_eq!(codes(&mut sim, b), vec![200]);
    sim.udp_from(c, &blf(c, "1001", "2006", 13, 600));
    let r = sim.take_to(c);
    assert_eq!(statuses(&r), vec![503]);
    assert!(hv_named(&r[0], "Retry-After").is_some());
    assert_eq!(sim.ep.subscriptions().targets().count(), 4);
    assert!(
        sim.ep
            .subscriptions()
            .target_by_aor("sip:2006@pbx.test")
            .is_none()
    );
}

// ------------------------------------------------------------------ item 6

/// Item 6: an unanswered SUBSCRIBE (a spoofed source never answers) is not a
/// reflector: what goes back to the source is a small multiple of what it sent
/// (the 200 and a few copies of one NOTIFY), not ~21×.
#[test]
fn an_unanswered_subscribe_is_no_amplifier() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let victim = "127.0.0.20:5062";
    let req = blf(victim, "1001", "1002", 1, 3600).to_string();
    sim.udp_from(victim, &req);
    let mut sent_back: usize = 0;
    let count = |sim: &mut Sim| -> usize {
        sim.take_to(victim)
            .iter()
            .map(|m| m.message_bytes().len())
            .sum()
    };
    sent_back += count(&mut sim);
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    for _ in 0..400 {
        sim.advance(Duration::from_millis(100));
        sent_back += count(&mut sim);
        pbx.take(&mut sim);
    }
    let ratio = sent_back as f64 / crlf(&req).len() as f64;
    eprintln!(
        "unanswered SUBSCRIBE: {} bytes in, {sent_back} out ({ratio:.1}×)",
        crlf(&req).len()
    );
    assert!(ratio <= 8.0, "{ratio:.1}× reflected");
    assert_eq!(
        sim.ep.subscriptions().phones().count(),
        0,
        "dropped after Timer F"
    );
}

// ------------------------------------------------------------------ item 4

/// Item 4 (the bound): 1,500 unauthenticated REGISTERs × 700 Contacts
/// (each from its own source, all answered 401) keep a bounded number of
/// bindings: Contacts per REGISTER and pending bindings are capped.
#[test]
fn a_contact_flood_keeps_bindings_bounded() {
    let mut sim = Sim::new("");
    let contacts: Vec<String> = (0..700)
        .map(|i| format!("<sip:x{i}@10.9.{}.{}:5060>", i / 250, i % 250))
        .collect();
    let few: Vec<String> = contacts[..8].to_vec();
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..1500u32 {
        let from = format!("127.1.{}.{}:5060", n / 250, n % 250 + 1);
        let c = if n % 2 == 0 { &contacts } else { &few };
        sim.udp_from(&from, &register(&from, &format!("9{n:04}"), 1, c, ""));
        for m in sim.take_to(&from) {
            *codes.entry(status(&m)).or_default() += 1;
        }
        for up in registers(&sim.take_to(UPSTREAM)) {
            sim.udp_from(
                UPSTREAM,
                &reply(&up, 401, "Unauthorized", Some("k"), CHALLENGE),
            );
        }
        sim.take_to(&from);
        if n % 100 == 99 {
            sim.advance(Duration::from_secs(1));
        }
    }
    let bindings = sim.ep.proxy().registrations().len();
    eprintln!("contact flood: {bindings} bindings; answers {codes:?}");
    assert!(bindings <= 1000, "{bindings} pending bindings");
    assert!(codes.get(&403).copied().unwrap_or(0) >= 750, "{codes:?}");
    // they go away with their pending lifetime
    sim.advance(Duration::from_secs(120));
    assert_eq!(sim.ep.proxy().registrations().len(), 0);
}

// ------------------------------------------------------------------ item 10

/// Item 10 (the bound): 2,000 wrong-password REGISTERs from one source in
/// 20 s: at most 50 reach the PBX, and another phone's REGISTER still succeeds.
#[test]
fn password_guessing_is_throttled_and_blocked_while_others_register() {
    let mut sim = Sim::new("");
    let attacker = "127.0.0.30:5062";
    let mut reached = 0;
    for n in 0..2000u32 {
        let auth = format!(
            "Authorization: Digest username=\"1001\", realm=\"pbx.test\", nonce=\"n1\", uri=\"sip:pbx.test\", response=\"{n:032x}\", qop=auth, nc=00000001, cnonce=\"c\"\n"
        );
        let contact = vec!["<sip:1001@127.0.0.30:5062>".to_string()];
        sim.udp_from(
            attacker,
            &register(attacker, "1001", n + 1, &contact, &auth),
        );
        for up in registers(&sim.take_to(UPSTREAM)) {
            reached += 1;
            sim.udp_from(UPSTREAM, &reply(&up, 403, "Forbidden", Some("k"), ""));
        }
        sim.take_to(attacker);
        sim.advance(Duration::from_millis(10));
        if n == 1000 {
            // meanwhile, a phone registers as usual
            register_through_bridge(&mut sim, "127.0.0.1:5063", "1002");
        }
    }
    eprintln!("password guessing: {reached} of 2000 REGISTERs reached the PBX");
    assert!(reached <= 50, "{reached}");
    // the block ends
    sim.advance(Duration::from_secs(61));
    let contact = vec!["<sip:1001@127.0.0.30:5062>".to_string()];
    sim.udp_from(attacker, &register(attacker, "1001", 5000, &contact, ""));
    assert_eq!(registers(&sim.take_to(UPSTREAM)).len(), 1);
}

/// A source beyond `rate_per_source` has its requests dropped (no answer: no
/// reflection); the upstream is never limited.
#[test]
fn requests_beyond_the_per_source_rate_are_dropped() {
    let mut sim = Sim::new("[security]\nrate_per_source = 10\n");
    let src = "127.0.0.40:5062";
    let mut answered = 0;
    for n in 0..100u32 {
        let r = Req::new("OPTIONS", "sip:127.0.0.1:5060")
            .top_via(src, &format!("z9hG4bKopt{n}"))
            .rport()
            .from("1001", &format!("o{n}"))
            .to("sip:127.0.0.1:5060")
            .call_id(&format!("opt{n}"));
        sim.udp_from(src, &r);
        answered += sim.take_to(src).len();
    }
    assert_eq!(answered, 20, "a burst of twice the rate");
    sim.advance(Duration::from_secs(1));
    let r = Req::new("OPTIONS", "sip:127.0.0.1:5060")
        .top_via(src, "z9hG4bKoptlater")
        .rport()
        .from("1001", "ol")
        .to("sip:127.0.0.1:5060")
        .call_id("optlater");
    sim.udp_from(src, &r);
    assert_eq!(sim.take_to(src).len(), 1, "refilled");
}

// ------------------------------------------------------------------ item 10: timer heaps

/// Item 10: refreshes and re-REGISTERs do not grow the timer heaps without
/// bound until the old timers fire.
#[test]
fn timer_heaps_stay_bounded_under_refreshes() {
    let mut sim = Sim::new("[security]\nrate_per_source = 100000\n");
    let mut pbx = FakePbx::default();
    let phone = "127.0.0.1:40000";
    let first = blf(phone, "1001", "1002", 0, 3600);
    sim.udp_from(phone, &first);
    let ok = sim
        .take_to(phone)
        .into_iter()
        .find(|m| status(m) == 200)
        .unwrap();
    let tag = String::from_utf8_lossy(ok.to_tag().unwrap()).into_owned();
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    for n in 1..20_000u32 {
        let r = blf(phone, "1001", "1002", 0, 3600)
            .with_to_tag(&tag)
            .ruri("sip:blf-bridge@127.0.0.1:5060")
            .top_via(phone, &format!("z9hG4bKref{n}"))
            .rport()
            .cseq(n + 1);
        sim.udp_from(phone, &r);
        // answer the NOTIFYs so that one is never in flight for long
        for m in sim.take_to(phone) {
            if is_method(&m, Method::Notify) {
                sim.udp_from(phone, &reply(&m, 200, "OK", None, ""));
            }
        }
        sim.take_to(phone);
    }
    let subs_timers = sim.ep.subscriptions().timer_count();
    let contact = vec!["<sip:1003@127.0.0.1:5064>".to_string()];
    for n in 0..20_000u32 {
        sim.udp_from(
            "127.0.0.1:5064",
            &register("127.0.0.1:5064", "1003", n + 1, &contact, ""),
        );
        for up in registers(&sim.take_to(UPSTREAM)) {
            let c = hv(&up, HeaderName::Contact);
            sim.udp_from(
                UPSTREAM,
                &reply(
                    &up,
                    200,
                    "OK",
                    Some("k"),
                    &format!("Contact: {c};expires=3600\r\n"),
                ),
            );
        }
        sim.take_to("127.0.0.1:5064");
    }
    let proxy_timers = sim.ep.proxy().timer_count();
    eprintln!(
        "timer heaps after 20,000 refreshes each: subscriptions {subs_timers}, proxy {proxy_timers}"
    );
    assert!(subs_timers <= 2_100, "{subs_timers}");
    assert!(proxy_timers <= 2_100, "{proxy_timers}");
}

/// Item 6: 5,000 subscriptions to one target from one host; one change of the
/// target then sends NOTIFYs (and their retransmissions) to the per-source share
/// of 200 subscriptions only, not 54,500 datagrams.
#[test]
fn fan_out_to_one_host_is_bounded() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let host = "127.0.0.50";
    for n in 0..5000u32 {
        let from = format!("{host}:{}", 10000 + n);
        sim.udp_from(&from, &blf(&from, "1001", "1002", n, 3600));
        if n % 50 == 49 {
            sim.advance(Duration::from_millis(100));
        }
    }
    let up = pbx.take(&mut sim);
    pbx.accept(&mut sim, &up, 600);
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(DUMMY_IDLE));
    pbx.notify(&mut sim, "presence", "active;expires=600", Some(PIDF_OPEN));
    sim.advance(Duration::from_secs(3));
    // the host answers the first NOTIFYs (so it is no spoofed source), then
    // goes quiet
    let ip: std::net::IpAddr = host.parse().unwrap();
    let first: Vec<_> = std::mem::take(&mut sim.pending);
    for t in first {
        if t.flow.remote.ip() != ip {
            sim.pending.push(t);
            continue;
        }
        let m = SipMessage::parse(t.data).unwrap();
        if is_method(&m, Method::Notify) {
            sim.udp_from(&t.flow.remote.to_string(), &reply(&m, 200, "OK", None, ""));
        }
    }
    let to_host = |sim: &mut Sim| {
        let ip: std::net::IpAddr = host.parse().unwrap();
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut sim.pending)
            .into_iter()
            .partition(|t| t.flow.remote.ip() == ip);
        sim.pending = rest;
        mine.len()
    };
    to_host(&mut sim);
    let watchers = sim.ep.subscriptions().phones().count();
    // one change
    pbx.notify(&mut sim, "dialog", "active;expires=600", Some(CONFIRMED));
    let mut datagrams = to_host(&mut sim);
    for _ in 0..400 {
        sim.advance(Duration::from_millis(100));
        datagrams += to_host(&mut sim);
        pbx.take(&mut sim);
    }
    eprintln!(
        "fan-out: {watchers} watchers from one host, one change → {datagrams} datagrams in 40 s"
    );
    assert!(watchers <= 200, "{watchers}");
    assert!(datagrams <= 200 * 11, "{datagrams}");
}

/// A Kamailio-like upstream for floods: an initial SUBSCRIBE without credentials
/// is challenged (407); the answer is accepted (202) and followed by a NOTIFY
/// (dialog: an idle document; presence: no body, as for an extension that never
/// registered); an un-SUBSCRIBE gets 200. Every SUBSCRIBE datagram is counted
/// (retransmissions included: what the provider receives).
#[derive(Default)]
struct KamailioLike {
    n: u32,
}

impl KamailioLike {
    fn serve(&mut self, sim: &mut Sim) -> usize {
        let mut count = 0;
        loop {
            let msgs = sim.take_to(UPSTREAM);
            if msgs.is_empty() {
                return count;
            }
            for m in msgs.iter().filter(|m| is_method(m, Method::Subscribe)) {
                count += 1;
                let authed = hv_named(m, "Proxy-Authorization").is_some();
                let expires = hv(m, HeaderName::Expires);
                if !authed && m.to_tag().is_none() {
                    let challenge = "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", qop=\"auth\"\r\n";
                    sim.udp_from(
                        UPSTREAM,
                        &reply(m, 407, "Proxy Authentication Required", None, challenge),
                    );
                    continue;
                }
                if expires == "0" {
                    sim.udp_from(UPSTREAM, &reply(m, 200, "OK", Some("k"), ""));
                    continue;
                }
                self.n += 1;
                let tag = match m.to_tag() {
                    Some(t) => String::from_utf8_lossy(t).into_owned(),
                    None => format!("k{}", self.n),
                };
                let extra = "Contact: <sip:127.0.0.1:5070>\r\nExpires: 600\r\n";
                sim.udp_from(UPSTREAM, &reply(m, 202, "OK", Some(&tag), extra));
                let to = hv(m, HeaderName::To);
                let target = to.split(";tag=").next().unwrap_or_default().to_string();
                let event = event_of(m);
                let (ct, body) = if event == "dialog" {
                    let b = DUMMY_IDLE.replace("VERSION", &self.n.to_string());
                    ("Content-Type: application/dialog-info+xml\r\n", b)
                } else {
                    ("", String::new())
                };
                let notify = format!(
                    "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKkam{}\r\nMax-Forwards: 70\r\nFrom: {target};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} NOTIFY\r\nContact: <sip:127.0.0.1:5070>\r\nEvent: {event}\r\nSubscription-State: active;expires=600\r\n{ct}Content-Length: {}\r\n\r\n{body}",
                    self.n,
                    hv(m, HeaderName::From),
                    hv(m, HeaderName::CallId),
                    self.n,
                    body.len()
                );
                sim.raw_from(
                    blf_bridge::flow::Flow::udp(addr(UPSTREAM)),
                    notify.as_bytes(),
                );
            }
        }
    }
}

/// Item 3, against a Kamailio-like upstream that accepts every target: a flood
/// of `count` distinct-target SUBSCRIBEs from one source over `secs` seconds,
/// from a source that never answers a NOTIFY. Returns the upstream SUBSCRIBEs
/// per second from the start until 60 s after the flood.
fn distinct_target_flood(count: u32, secs: u32) -> Vec<usize> {
    let mut sim = Sim::new("");
    let mut kam = KamailioLike::default();
    let attacker = "127.0.0.7:5099";
    let mut per_s = vec![0usize; (secs + 60) as usize + 1];
    let per_step = (count / (secs * 100)).max(1);
    let mut n = 0u32;
    while n < count {
        for _ in 0..per_step {
            sim.udp_from(
                attacker,
                &blf(attacker, "1001", &format!("5{n:05}"), n, 3600),
            );
            n += 1;
        }
        sim.take_to(attacker);
        sim.advance(Duration::from_millis(10));
        let s = (sim.elapsed().as_secs() as usize).min(per_s.len() - 1);
        per_s[s] += kam.serve(&mut sim);
    }
    for _ in 0..60 * 10 {
        sim.advance(Duration::from_millis(100));
        sim.take_to(attacker);
        let s = sim.elapsed().as_secs() as usize;
        if s < per_s.len() {
            per_s[s] += kam.serve(&mut sim);
        }
    }
    per_s
}

/// Item 3 against an upstream that accepts every target (Kamailio does), from
/// a source that never answers a NOTIFY: 5,000 SUBSCRIBEs in 25 s and 20,000 in
/// 50 s. At most 3,000 upstream SUBSCRIBEs until 30 s after, and the bridge is
/// quiet (≤ 5/s in every second) from 25 s after the flood on, for a minute.
/// Before the fix, each unanswered subscription gave its source's share back at
/// Timer F (a second wave of 200 targets in the 20,000 flood), and its target
/// lingered 30 s and then sent its un-SUBSCRIBEs in one unpaced burst (264 in
/// one second, 45–53 s after the 20,000 flood; the real binary did the same).
#[test]
fn a_distinct_target_flood_against_an_accepting_upstream_goes_quiet() {
    for (count, secs) in [(5_000u32, 25u32), (20_000, 50)] {
        let per_s = distinct_target_flood(count, secs);
        let end = secs as usize;
        let total: usize = per_s[..=end + 30].iter().sum();
        let late = &per_s[end + 25..];
        let busiest = late.iter().copied().max().unwrap_or(0);
        eprintln!(
            "{count} in {secs} s: {total} upstream SUBSCRIBEs until 30 s after, busiest second from 25 s after: {busiest}; per second {per_s:?}"
        );
        assert!(total <= 3000, "{count}: {total} upstream SUBSCRIBEs");
        assert!(
            busiest <= 5,
            "{count}: {busiest} upstream SUBSCRIBEs in one second from 25 s after the flood: {late:?}"
        );
        // the pacer holds for un-SUBSCRIBEs too (default upstream_rate 50/s,
        // burst of as many)
        assert!(
            per_s[1..].iter().all(|&n| n <= 100),
            "{count}: a second over the pacer's rate: {per_s:?}"
        );
    }
}
