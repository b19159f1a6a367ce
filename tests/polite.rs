//! Polite upstream traffic, sans-IO (issue 11, item 5): a provider that refuses
//! the bridge's SUBSCRIBEs, always the same way, for ten minutes of simulated
//! time. Each test counts the SUBSCRIBEs the bridge sent (retransmissions of
//! one request not counted) and checks that the phone watching the target
//! still got a NOTIFY with a sensible state. Also: nonce reuse across the
//! account's subscriptions, and pacing that serves waiting phones first.

mod sim;

use blf_bridge::presence::{MergedState, TargetView};
use blf_bridge::profile::{ProfileSet, render};
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use sim::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const GXP: &str = "Grandstream GXP2170 1.0.11.3";
const TEN_MINUTES: Duration = Duration::from_secs(600);
const STEP: Duration = Duration::from_millis(100);

/// A GXP (account user 1001) watching one target from 127.0.0.1:`port`.
struct Phone {
    ua: &'static str,
    port: u16,
    target: String,
    call_id: String,
    cseq: u32,
    to_tag: Option<String>,
}

impl Phone {
    fn new(port: u16, target: &str) -> Phone {
        Phone {
            ua: GXP,
            port,
            target: target.into(),
            call_id: format!("gxp-{port}-{target}@192.168.1.50"),
            cseq: 0,
            to_tag: None,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An initial SUBSCRIBE for an hour (the phone outlives the test).
    fn subscribe(&mut self, sim: &mut Sim) {
        let msgs = self.try_subscribe(sim);
        let ok = msgs
            .iter()
            .find(|m| m.status() == Some(200))
            .expect("the phone's SUBSCRIBE is accepted");
        self.to_tag = ok.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
    }

    /// Send the SUBSCRIBE; what the bridge answered.
    fn try_subscribe(&mut self, sim: &mut Sim) -> Vec<SipMessage> {
        self.cseq += 1;
        let req = format!(
            "SUBSCRIBE sip:{t}@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKgxp{port}x{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@pbx.test>;tag=gxptag{port}\r\n\
To: <sip:{t}@pbx.test>\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:1001@127.0.0.1:{port}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {ua}\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n",
            t = self.target,
            port = self.port,
            cseq = self.cseq,
            cid = self.call_id,
            ua = self.ua,
        );
        sim.udp_from(&self.addr(), &req);
        sim.take_to(&self.addr())
    }
}

/// Whether a GXP NOTIFY carries exactly the profile's rendering of `state`.
fn is_rendering(m: &SipMessage, target: &str, state: MergedState) -> bool {
    let set = ProfileSet::builtin();
    let p = set.get("grandstream-gxp").unwrap();
    let strip = |b: &str| {
        let root = b.find("<dialog-info").unwrap_or(0);
        let i = b[root..]
            .find(" version=\"")
            .map(|i| root + i + 10)
            .unwrap_or(0);
        let j = b[i..].find('"').map(|j| i + j).unwrap_or(i);
        format!("{}{}", &b[..i], &b[j..]).trim_end().to_string()
    };
    let body = String::from_utf8_lossy(m.body()).into_owned();
    render(
        p,
        &format!("sip:{target}@pbx.test"),
        &TargetView::new(state),
    )
    .document()
    .is_some_and(|d| strip(&d.with_version(0)) == strip(&body))
}

/// What ten minutes against one refusing provider looked like.
#[derive(Default)]
struct Run {
    /// SUBSCRIBEs per Event (dialog / presence), retransmissions excluded.
    per_event: HashMap<String, usize>,
    /// Seconds since the start at which each SUBSCRIBE went out, per Event.
    times: HashMap<String, Vec<f64>>,
    /// Every SUBSCRIBE, in order.
    subscribes: Vec<SipMessage>,
    /// NOTIFYs to the phone (answered 200), retransmissions excluded.
    notifies: Vec<SipMessage>,
}

impl Run {
    fn total(&self) -> usize {
        self.per_event.values().sum()
    }
    fn of(&self, event: &str) -> usize {
        self.per_event.get(event).copied().unwrap_or(0)
    }
    fn last_notify(&self) -> &SipMessage {
        self.notifies.last().expect("the phone got a NOTIFY")
    }
}

/// A phone watches 1002; for `d` of simulated time every upstream SUBSCRIBE is
/// answered by `answer` (`None`: never answered, so it times out) and the phone
/// answers every NOTIFY.
fn run_against(
    sim: &mut Sim,
    pbx: &mut FakePbx,
    d: Duration,
    mut answer: impl FnMut(&mut Sim, &mut FakePbx, &SipMessage) -> Option<String>,
) -> Run {
    let mut phone = Phone::new(40100, "1002");
    phone.subscribe(sim);
    let mut run = Run::default();
    let mut seen_notifies = HashSet::new();
    let end = sim.now + d;
    loop {
        for m in pbx.take(sim) {
            if !is_method(&m, Method::Subscribe) {
                continue;
            }
            let ev = event_of(&m);
            *run.per_event.entry(ev.clone()).or_default() += 1;
            run.times
                .entry(ev)
                .or_default()
                .push(sim.elapsed().as_secs_f64());
            run.subscribes.push(m.clone());
            if let Some(r) = answer(sim, pbx, &m) {
                sim.udp_from(UPSTREAM, &r);
            }
        }
        for n in sim.take_to(&phone.addr()) {
            if !is_method(&n, Method::Notify) {
                continue;
            }
            sim.udp_from(&phone.addr(), &reply(&n, 200, "OK", None, ""));
            if seen_notifies.insert(hv(&n, HeaderName::CSeq)) {
                run.notifies.push(n);
            }
        }
        if sim.now >= end {
            break;
        }
        sim.advance(STEP);
    }
    let mut counts: Vec<_> = run.per_event.iter().collect();
    counts.sort();
    eprintln!("upstream SUBSCRIBEs in {d:?}: {counts:?}");
    run
}

/// Ten minutes against a provider that answers every SUBSCRIBE with `code`
/// and these extra header lines.
fn refused(code: u16, reason: &str, extra: &str) -> (Sim, Run) {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |_, _, m| {
        Some(reply(m, code, reason, Some("refuser"), extra))
    });
    (sim, run)
}

fn merged(sim: &Sim) -> MergedState {
    sim.ep
        .subscriptions()
        .target_by_aor("sip:1002@pbx.test")
        .expect("the target is kept while its phone watches")
        .view
        .state
}

/// The phone's last NOTIFY is an active subscription rendering `state`.
fn assert_phone_sees(run: &Run, state: MergedState) {
    let n = run.last_notify();
    assert!(
        hv(n, HeaderName::SubscriptionState).starts_with("active"),
        "{}",
        text(n)
    );
    assert!(
        is_rendering(n, "1002", state),
        "expected the {state:?} rendering: {}",
        body(n)
    );
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

// ------------------------------------------------------------- the refusals

#[test]
fn a_401_without_any_challenge_is_retried_rarely() {
    let (sim, run) = refused(401, "Unauthorized", "");
    // both at 0, then the account is held: one probe at ~2 min, one at ~6
    // (2 min doubling)
    assert!(run.total() <= 4, "{:?}", run.per_event);
    assert!(run.total() >= 3, "still retried: {:?}", run.per_event);
    let mut times: Vec<f64> = run.times.values().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    assert!(times[2] >= 120.0, "not before 2 min: {times:?}");
    assert_eq!(merged(&sim), MergedState::Unknown);
    assert_phone_sees(&run, MergedState::Unknown);
    assert!(sim.ep.subscriptions().auth_failures() >= 4);
}

#[test]
fn a_challenge_with_an_unsupported_algorithm_is_not_answered() {
    let chal = "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"n1\", algorithm=SHA-512-256, qop=\"auth\"\r\n";
    let (sim, run) = refused(401, "Unauthorized", chal);
    assert!(run.total() <= 4, "{:?}", run.per_event);
    assert!(
        run.subscribes
            .iter()
            .all(|s| hv_named(s, "Authorization").is_none()),
        "never answered"
    );
    assert_phone_sees(&run, MergedState::Unknown);
    assert_eq!(merged(&sim), MergedState::Unknown);
}

#[test]
fn a_garbage_challenge_is_not_answered() {
    let chal = "Proxy-Authenticate: Digest ,,realm=,nonce==\"\r\n";
    let (_, run) = refused(407, "Proxy Authentication Required", chal);
    assert!(run.total() <= 4, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn the_same_stale_nonce_forever_is_answered_once() {
    // the server says stale=true but never changes its nonce
    let chal = "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"always-the-same\", qop=\"auth\", stale=true\r\n";
    let (sim, run) = refused(401, "Unauthorized", chal);
    // the first attempt answers the challenge once (2 requests per package),
    // the account's probes carry the stored nonce and are refused at once
    assert!(run.total() <= 6, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
    assert_eq!(merged(&sim), MergedState::Unknown);
}

#[test]
fn a_fresh_stale_nonce_for_every_answer_is_answered_twice_per_attempt() {
    // every answer gets a new nonce with stale=true: without a bound per
    // attempt this is a loop at the speed of the round trip
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut n = 0;
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |_, _, m| {
        n += 1;
        let chal = format!(
            "WWW-Authenticate: Digest realm=\"pbx.test\", nonce=\"nonce{n}\", qop=\"auth\", stale=true\r\n"
        );
        Some(reply(m, 401, "Unauthorized", Some("x"), &chal))
    });
    // 3 requests per attempt (initial, 2 answers): both packages at first,
    // then the account's probes
    assert!(run.total() <= 12, "{:?}", run.per_event);
    assert!(run.total() >= 6, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn a_wrong_password_is_not_retried_at_once() {
    // a fresh nonce without stale=true to every answer: the credentials are wrong
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut n = 0;
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |_, _, m| {
        n += 1;
        let chal = format!(
            "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"nonce{n}\", qop=\"auth\"\r\n"
        );
        Some(reply(
            m,
            407,
            "Proxy Authentication Required",
            Some("x"),
            &chal,
        ))
    });
    assert!(run.total() <= 12, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn a_423_is_honoured_once_with_its_min_expires() {
    // the provider wants 1800 s and then accepts
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |sim, pbx, m| {
        let exp = m.expires().and_then(|e| e.ok()).unwrap_or(0);
        if exp < 1800 {
            return Some(reply(
                m,
                423,
                "Interval Too Brief",
                Some("x"),
                "Min-Expires: 1800\r\n",
            ));
        }
        pbx.accept(sim, std::slice::from_ref(m), exp);
        let body = if event_of(m) == "dialog" {
            DUMMY_IDLE
        } else {
            PIDF_OPEN
        };
        pbx.notify(sim, &event_of(m), "active;expires=1800", Some(body));
        None
    });
    // per package: the first (600 s), then 1800 s; no refresh within 10 min
    assert_eq!(run.of("dialog"), 2, "{:?}", run.per_event);
    assert_eq!(run.of("presence"), 2, "{:?}", run.per_event);
    let second = &run.subscribes[2];
    assert_eq!(second.expires().unwrap().unwrap(), 1800);
    assert_phone_sees(&run, MergedState::Idle);
}

#[test]
fn a_423_forever_is_a_refusal_and_an_absurd_min_expires_is_not_followed() {
    // a broken provider: 423 whatever was asked
    let (_, run) = refused(423, "Interval Too Brief", "Min-Expires: 1800\r\n");
    // the request and one retry with 1800 s; a 423 to that is a refusal
    // retried rarely (10 min): 2 per package
    assert_eq!(run.total(), 4, "{:?}", run.per_event);
    let asked: Vec<u32> = run
        .subscribes
        .iter()
        .map(|s| s.expires().unwrap().unwrap())
        .collect();
    assert_eq!(asked.iter().filter(|&&e| e != 1800).count(), 2, "{asked:?}");
    assert_phone_sees(&run, MergedState::Unknown);

    // Min-Expires of a year: not followed, retried rarely
    let (_, run) = refused(423, "Interval Too Brief", "Min-Expires: 31536000\r\n");
    assert!(run.total() <= 2, "{:?}", run.per_event);
    assert!(
        run.subscribes
            .iter()
            .all(|s| s.expires().unwrap().unwrap() <= 7200)
    );
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn a_489_stops_that_package_and_the_other_one_carries_the_state() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |sim, pbx, m| {
        if event_of(m) == "dialog" {
            return Some(reply(
                m,
                489,
                "Bad Event",
                Some("x"),
                "Allow-Events: presence\r\n",
            ));
        }
        pbx.accept(sim, std::slice::from_ref(m), 3600);
        pbx.notify(sim, "presence", "active;expires=3600", Some(PIDF_OPEN));
        None
    });
    assert_eq!(
        run.of("dialog"),
        1,
        "not retried within 10 min: {:?}",
        run.per_event
    );
    assert_eq!(run.of("presence"), 1, "{:?}", run.per_event);
    assert_eq!(merged(&sim), MergedState::Idle);
    assert_phone_sees(&run, MergedState::Idle);
}

#[test]
fn a_403_is_retried_rarely() {
    let (sim, run) = refused(403, "Forbidden", "");
    assert_eq!(
        run.total(),
        2,
        "once per package in 10 min: {:?}",
        run.per_event
    );
    assert_eq!(merged(&sim), MergedState::Unknown);
    assert_phone_sees(&run, MergedState::Unknown);
    // and again after 10 minutes (plus jitter), then 20
    let mut sim = sim;
    let mut pbx = FakePbx::default();
    let mut again = 0;
    for _ in 0..(40 * 60 * 10) {
        sim.advance(STEP);
        for m in pbx.take(&mut sim) {
            if is_method(&m, Method::Subscribe) {
                again += 1;
                sim.udp_from(UPSTREAM, &reply(&m, 403, "Forbidden", Some("x"), ""));
            }
        }
        sim.take_to("127.0.0.1:40100");
    }
    // at ~10 and ~30 min after the first (40 min more): 2 per package
    assert_eq!(again, 4, "10 min doubling");
}

#[test]
fn a_404_renders_the_target_offline_and_is_retried_rarely() {
    let (sim, run) = refused(404, "Not Found", "");
    assert_eq!(run.total(), 2, "{:?}", run.per_event);
    assert_eq!(merged(&sim), MergedState::Offline);
    assert_phone_sees(&run, MergedState::Offline);
}

#[test]
fn a_404_with_a_fail_subscription_profile_ends_the_subscription_without_new_upstream_traffic() {
    // a Yealink (fail-subscription profile: terminated while the target is
    // offline, retry after 60 s) keeps coming back to a target the provider
    // does not know
    const YEALINK: &str = "Yealink SIP-T46S 66.86.0.15";
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut upstream = 0;
    let mut phone_answers: Vec<String> = Vec::new();
    let mut terminated = 0;
    let mut next_try = Duration::ZERO;
    let mut attempt = 0u16;
    while sim.elapsed() < TEN_MINUTES {
        if sim.elapsed() >= next_try {
            attempt += 1;
            let mut p = Phone::new(40200 + attempt, "1002");
            p.ua = YEALINK;
            let r = p.try_subscribe(&mut sim);
            phone_answers.extend(r.iter().filter_map(|m| m.status()).map(|c| c.to_string()));
            next_try = sim.elapsed() + Duration::from_secs(61);
        }
        for m in pbx.take(&mut sim) {
            if is_method(&m, Method::Subscribe) {
                upstream += 1;
                sim.udp_from(UPSTREAM, &reply(&m, 404, "Not Found", Some("x"), ""));
            }
        }
        for (flow, n) in std::mem::take(&mut sim.pending)
            .into_iter()
            .filter_map(|t| SipMessage::parse(t.data).ok().map(|m| (t.flow, m)))
        {
            if is_method(&n, Method::Notify) {
                if hv(&n, HeaderName::SubscriptionState).starts_with("terminated") {
                    terminated += 1;
                }
                sim.udp_from(&flow.remote.to_string(), &reply(&n, 200, "OK", None, ""));
            }
        }
        sim.advance(STEP);
    }
    assert_eq!(
        terminated, 1,
        "the first phone subscription is ended (offline)"
    );
    assert!(
        phone_answers.iter().skip(1).all(|c| c == "480"),
        "later SUBSCRIBEs while offline: {phone_answers:?}"
    );
    assert!(attempt >= 9);
    assert_eq!(upstream, 2, "the phone's retries cause no upstream traffic");
}

#[test]
fn a_429_retry_after_is_honoured_and_capped() {
    let (_, run) = refused(429, "Too Many Requests", "Retry-After: 120\r\n");
    // per package at 0, 120, 240, 360, 480, (600+jitter): never sooner
    for ev in ["dialog", "presence"] {
        for g in gaps(&run.times[ev]) {
            assert!(g >= 120.0, "{ev}: {:?}", run.times[ev]);
        }
    }
    assert!(run.total() <= 10, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);

    // a day: capped at an hour, so one attempt per package in 10 minutes
    let (_, run) = refused(429, "Too Many Requests", "Retry-After: 86400\r\n");
    assert_eq!(run.total(), 2, "{:?}", run.per_event);
}

#[test]
fn a_503_retry_after_zero_is_not_a_loop() {
    let (_, run) = refused(503, "Service Unavailable", "Retry-After: 0\r\n");
    // transient backoff: 5, 10, 20 … 300 s: 7 per package
    assert!(run.total() <= 14, "{:?}", run.per_event);
    let (_, run) = refused(503, "Service Unavailable", "Retry-After: 90\r\n");
    for g in gaps(&run.times["dialog"]) {
        assert!(g >= 90.0, "{:?}", run.times["dialog"]);
    }
    assert!(run.total() <= 12, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn a_generic_5xx_backs_off_exponentially() {
    let (sim, run) = refused(500, "Server Internal Error", "");
    assert!(run.total() <= 14, "{:?}", run.per_event);
    let g = gaps(&run.times["dialog"]);
    for w in g.windows(2) {
        assert!(w[1] >= w[0] * 1.7 || w[1] >= 299.0, "doubling: {g:?}");
    }
    assert_eq!(merged(&sim), MergedState::Unknown);
    assert_phone_sees(&run, MergedState::Unknown);
}

#[test]
fn timeouts_back_off_exponentially() {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let run = run_against(&mut sim, &mut pbx, TEN_MINUTES, |_, _, _| None);
    // Timer F (32 s) + 5, 10, 20 … s: 5 per package
    assert!(run.total() <= 10, "{:?}", run.per_event);
    assert!(run.total() >= 8, "{:?}", run.per_event);
    assert_phone_sees(&run, MergedState::Unknown);
}

// ------------------------------------------------------------- nonce reuse

/// A provider that challenges (407) every SUBSCRIBE whose credentials do not
/// name its current nonce, checks that `nc` only grows per nonce, and accepts
/// the others for 600 s (with a NOTIFY after each initial one).
struct NonceServer {
    nonce: String,
    /// Whether an expired nonce is challenged with `stale=true`.
    says_stale: bool,
    challenges: usize,
    accepted: usize,
    last_nc: HashMap<String, u32>,
}

impl NonceServer {
    fn new(says_stale: bool) -> NonceServer {
        NonceServer {
            nonce: "nonce-0".into(),
            says_stale,
            challenges: 0,
            accepted: 0,
            last_nc: HashMap::new(),
        }
    }

    fn param<'a>(v: &'a str, name: &str) -> Option<&'a str> {
        v.split(',').find_map(|p| {
            let p = p.trim().trim_start_matches("Digest ").trim();
            let (k, val) = p.split_once('=')?;
            (k.trim() == name).then(|| val.trim().trim_matches('"'))
        })
    }

    fn answer(&mut self, sim: &mut Sim, pbx: &mut FakePbx, m: &SipMessage) {
        let creds = hv_named(m, "Proxy-Authorization");
        let nonce = creds.as_deref().and_then(|c| Self::param(c, "nonce"));
        if nonce != Some(self.nonce.as_str()) {
            self.challenges += 1;
            let stale = if nonce.is_some() && self.says_stale {
                ", stale=true"
            } else {
                ""
            };
            let chal = format!(
                "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"{}\", qop=\"auth\"{stale}\r\n",
                self.nonce
            );
            let r = reply(m, 407, "Proxy Authentication Required", Some("c"), &chal);
            sim.udp_from(UPSTREAM, &r);
            return;
        }
        let c = creds.unwrap();
        let nc = u32::from_str_radix(Self::param(&c, "nc").unwrap(), 16).unwrap();
        let last = self.last_nc.entry(self.nonce.clone()).or_default();
        assert!(nc > *last, "nc {nc} after {last}: a server drops replays");
        *last = nc;
        self.accepted += 1;
        let initial = m.to_tag().is_none();
        pbx.accept(sim, std::slice::from_ref(m), 600);
        if initial {
            let ev = event_of(m);
            let body = if ev == "dialog" {
                DUMMY_IDLE
            } else {
                PIDF_OPEN
            };
            pbx.notify(sim, &ev, "active;expires=600", Some(body));
        }
    }
}

/// Five phones watch five targets (ten upstream subscriptions), one second
/// apart; an hour passes with the server's nonce changed every `rotate`.
fn an_hour_with(server: &mut NonceServer, rotate: Option<Duration>) -> Sim {
    let mut sim = Sim::new("");
    let mut pbx = FakePbx::default();
    let mut phones: Vec<Phone> = (0..5u16)
        .map(|i| Phone::new(40300 + i, &format!("{}", 1002 + i)))
        .collect();
    let mut next_rotation = rotate;
    let mut i = 0;
    while sim.elapsed() < Duration::from_secs(3600) {
        if i < phones.len() && sim.elapsed() >= Duration::from_secs(i as u64) {
            phones[i].subscribe(&mut sim);
            i += 1;
        }
        if let (Some(at), Some(every)) = (next_rotation, rotate)
            && sim.elapsed() >= at
        {
            server.nonce = format!("nonce-{}", sim.elapsed().as_secs());
            next_rotation = Some(at + every);
        }
        for m in pbx.take(&mut sim) {
            if is_method(&m, Method::Subscribe) {
                server.answer(&mut sim, &mut pbx, &m);
            }
        }
        for (flow, n) in std::mem::take(&mut sim.pending)
            .into_iter()
            .filter_map(|t| SipMessage::parse(t.data).ok().map(|m| (t.flow, m)))
        {
            if is_method(&n, Method::Notify) {
                sim.udp_from(&flow.remote.to_string(), &reply(&n, 200, "OK", None, ""));
            }
        }
        sim.advance(STEP);
    }
    sim
}

/// Every phone answers the NOTIFYs pending for it with 200.
fn answer_phone_notifies(sim: &mut Sim) {
    let pending = std::mem::take(&mut sim.pending);
    for t in pending {
        match SipMessage::parse(t.data.clone()) {
            Ok(n) if is_method(&n, Method::Notify) && t.flow.remote.to_string() != UPSTREAM => {
                sim.udp_from(&t.flow.remote.to_string(), &reply(&n, 200, "OK", None, ""));
            }
            _ => sim.pending.push(t),
        }
    }
}

fn all_active(sim: &Sim) -> bool {
    sim.ep.subscriptions().targets().count() == 5
        && sim
            .ep
            .subscriptions()
            .targets()
            .all(|t| t.view.state == MergedState::Idle)
}

#[test]
fn nonce_reuse_saves_the_challenge_round_trip() {
    let mut server = NonceServer::new(true);
    let sim = an_hour_with(&mut server, None);
    // 10 initial SUBSCRIBEs and ~7 refreshes each: only the first two (sent
    // together, before the first challenge came back) were challenged
    assert!(server.accepted >= 70, "{}", server.accepted);
    eprintln!(
        "{} challenges for {} accepted SUBSCRIBEs",
        server.challenges, server.accepted
    );
    assert!(
        server.challenges <= 2,
        "{} challenges for {} SUBSCRIBEs",
        server.challenges,
        server.accepted
    );
    assert_eq!(sim.ep.subscriptions().auth_failures(), 0);
    assert!(all_active(&sim));
}

#[test]
fn an_expired_nonce_is_replaced_with_one_retry_with_or_without_stale() {
    for says_stale in [true, false] {
        let mut server = NonceServer::new(says_stale);
        let sim = an_hour_with(&mut server, Some(Duration::from_secs(900)));
        eprintln!(
            "stale={says_stale}: {} challenges for {} accepted SUBSCRIBEs",
            server.challenges, server.accepted
        );
        // 2 at the start, then one per rotation (3), perhaps two when both
        // packages of a target refresh at the same moment
        assert!(
            server.challenges <= 2 + 3 * 2,
            "stale={says_stale}: {} challenges for {} SUBSCRIBEs",
            server.challenges,
            server.accepted
        );
        assert_eq!(
            sim.ep.subscriptions().auth_failures(),
            0,
            "stale={says_stale}: a new nonce for a reused one is not a wrong password"
        );
        assert!(all_active(&sim), "stale={says_stale}");
    }
}

// ------------------------------------------------------------- pacing

#[test]
fn the_default_pace_is_twenty_per_second() {
    let cfg = blf_bridge::config::Config::parse(&base_config(""), "sim.toml", &|_| None).unwrap();
    assert_eq!(cfg.subscriptions.upstream_rate, 20);
}

#[test]
fn a_key_just_pressed_goes_before_queued_refreshes() {
    // 200 targets resumed after a restart queue 400 refreshes at 20/s (20 s);
    // a phone then watches a new target: its SUBSCRIBEs go next, not last
    let mut sim = Sim::new_persistent(
        "[subscriptions]\nupstream_rate = 20\n\
         [security]\nrate_per_source = 100000\nmax_subscriptions_per_source = 1000\n",
    );
    let mut pbx = FakePbx::default();
    let mut phones: Vec<Phone> = (0..200u16)
        .map(|i| Phone::new(41000 + i, &format!("{}", 3000 + i)))
        .collect();
    for p in phones.iter_mut() {
        p.subscribe(&mut sim);
        sim.advance(Duration::from_millis(50));
        let up = pbx.take(&mut sim);
        pbx.accept(&mut sim, &up, 3600);
    }
    // 30 s: the PBX accepts, the phones answer their NOTIFYs (real phones do;
    // a target no phone ever answered for is not kept)
    for _ in 0..300 {
        sim.advance(STEP);
        let up = pbx.take(&mut sim);
        pbx.accept(&mut sim, &up, 3600);
        answer_phone_notifies(&mut sim);
    }
    sim.clear();
    sim.restart();
    let queued = sim.ep.subscriptions().paced();
    assert!(queued >= 300, "refreshes queued: {queued}");
    // one second later a key is pressed for a target nobody watched before
    sim.advance(Duration::from_secs(1));
    let before = pbx.take(&mut sim).len();
    let mut p = Phone::new(42000, "4999");
    p.subscribe(&mut sim);
    let mut waited = Duration::ZERO;
    let mut got = 0;
    while got < 2 && waited < Duration::from_secs(30) {
        sim.advance(STEP);
        waited += STEP;
        got += pbx
            .take(&mut sim)
            .iter()
            .filter(|m| hv(m, HeaderName::To).contains("4999"))
            .count();
    }
    assert_eq!(got, 2, "both packages of the new target");
    assert!(
        waited <= Duration::from_millis(200),
        "waited {waited:?} behind {queued} queued refreshes ({before} sent)"
    );
    assert!(
        sim.ep.subscriptions().paced() > 200,
        "the refreshes still wait"
    );
}

// ------------------------------------------------------------- logging

/// Log lines written while `f` runs (level WARN and above).
fn warnings_during(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_refusal_is_logged_once_per_target_and_cause_not_per_retry() {
    let mut total = 0;
    let log = warnings_during(|| {
        let (_, run) = refused(500, "Server Internal Error", "");
        total = run.total();
    });
    let failed = log
        .lines()
        .filter(|l| l.contains("upstream subscription failed"))
        .count();
    assert!(total >= 10, "{total}");
    assert_eq!(
        failed, 2,
        "one line per package for {total} refusals:\n{log}"
    );
    assert!(log.contains("500 Server Internal Error"), "{log}");
}

#[test]
fn an_account_whose_authentication_fails_is_held_for_all_its_targets() {
    // twenty keys, one account, a provider that refuses its credentials:
    // after the first refusal the others wait, and one SUBSCRIBE probes for
    // all of them; once the password works, every key comes up
    let mut sim = Sim::new("[security]\nrate_per_source = 100000\n");
    let mut pbx = FakePbx::default();
    let mut phones: Vec<Phone> = (0..20u16)
        .map(|i| Phone::new(43000 + i, &format!("{}", 5000 + i)))
        .collect();
    let mut refused = 0;
    let mut accepting = false;
    let mut i = 0;
    let answer_phones = |sim: &mut Sim| {
        for (flow, n) in std::mem::take(&mut sim.pending)
            .into_iter()
            .filter_map(|t| SipMessage::parse(t.data).ok().map(|m| (t.flow, m)))
        {
            if is_method(&n, Method::Notify) {
                sim.udp_from(&flow.remote.to_string(), &reply(&n, 200, "OK", None, ""));
            }
        }
    };
    while sim.elapsed() < Duration::from_secs(600 + 3600) {
        if i < phones.len() && sim.elapsed() >= Duration::from_secs(i as u64) {
            phones[i].subscribe(&mut sim);
            i += 1;
        }
        if !accepting && sim.elapsed() >= TEN_MINUTES {
            eprintln!("{refused} refused SUBSCRIBEs for 20 keys in 10 min");
            assert!(refused <= 10, "{refused} refused SUBSCRIBEs for 20 keys");
            assert!(
                sim.ep
                    .subscriptions()
                    .targets()
                    .all(|t| t.view.state == MergedState::Unknown)
            );
            accepting = true;
        }
        for m in pbx.take(&mut sim) {
            if !is_method(&m, Method::Subscribe) {
                continue;
            }
            if !accepting {
                refused += 1;
                sim.udp_from(UPSTREAM, &reply(&m, 401, "Unauthorized", Some("x"), ""));
                continue;
            }
            pbx.accept(&mut sim, std::slice::from_ref(&m), 3600);
            if m.to_tag().is_none() {
                let ev = event_of(&m);
                let body = if ev == "dialog" {
                    DUMMY_IDLE
                } else {
                    PIDF_OPEN
                };
                pbx.notify(&mut sim, &ev, "active;expires=3600", Some(body));
            }
        }
        answer_phones(&mut sim);
        let up = sim.ep.subscriptions().targets().count() == 20
            && sim
                .ep
                .subscriptions()
                .targets()
                .all(|t| t.view.state == MergedState::Idle);
        if accepting && up {
            break;
        }
        sim.advance(STEP);
    }
    let took = sim.elapsed() - TEN_MINUTES;
    eprintln!("all keys idle {took:?} after the provider took the password");
    assert!(
        sim.ep
            .subscriptions()
            .targets()
            .all(|t| t.view.state == MergedState::Idle),
        "every key comes up"
    );
    // the next probe is at most an hour away, then the rest follow at once
    assert!(took <= Duration::from_secs(3600 + 120), "{took:?}");
}

/// The operator learns how many targets `upstream_rate` keeps refreshed
/// (status and /metrics), and is warned once when the watched targets outgrow
/// it: 2/s with 60 s upstream subscriptions refreshed at 70 % keeps 42
/// targets (84 subscriptions) refreshed.
#[test]
fn more_targets_than_the_rate_can_refresh_is_reported_and_warned_once() {
    let config = "[subscriptions]\nupstream_rate = 2\nupstream_expires = 60\n\
                  [security]\nmax_subscriptions_per_source = 1000\nrate_per_source = 1000\n";
    const WARNING: &str = "more watched targets than upstream_rate can keep refreshed";
    let mut sim = Sim::new(config);
    let status = sim.ep.status_summary(sim.now);
    assert_eq!(status.upstream_refresh_capacity, 42);
    let text = blf_bridge::http::render_metrics(&status, 0.0).unwrap();
    assert!(
        text.contains("blf_bridge_upstream_refresh_capacity_targets 42"),
        "{text}"
    );
    let within = warnings_during(|| {
        for i in 0..42u16 {
            Phone::new(6000 + i, &format!("{}", 2000 + i)).subscribe(&mut sim);
        }
    });
    assert_eq!(
        within.matches(WARNING).count(),
        0,
        "42 targets: within the capacity"
    );
    let beyond = warnings_during(|| {
        for i in 42..50u16 {
            Phone::new(6000 + i, &format!("{}", 2000 + i)).subscribe(&mut sim);
        }
    });
    assert_eq!(sim.ep.subscriptions().targets().count(), 50);
    assert_eq!(
        beyond.matches(WARNING).count(),
        1,
        "said once, when the 43rd came"
    );
    assert!(
        beyond.contains("targets=43") && beyond.contains("capacity=42"),
        "{beyond}"
    );
    // the default: 20/s, 600 s
    let sim = Sim::new("");
    assert_eq!(
        sim.ep.status_summary(sim.now).upstream_refresh_capacity,
        4200
    );
}
