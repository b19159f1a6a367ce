//! End-to-end tests of the RFC 3261 proxy (issue 4, "Done when"): the real
//! `blf-bridge` binary between SIPp phones and the harness Kamailio "hosted PBX",
//! everything on loopback (tests/common, tests/harness).
//!
//! - phones 1001 and 1002 register through the bridge (answering the registrar's
//!   401 themselves) and the PBX holds a Contact of the bridge for them;
//! - 1001 calls 1002 and 1002 calls 1001 through the bridge (INVITE, 407 from the
//!   PBX answered, 180, 200, ACK, BYE), a caller registered directly on the PBX
//!   (1003) reaches 1002 through the bridge, and a ringing call is CANCELled —
//!   over UDP, over TCP, and with TCP phones in front of a UDP upstream;
//! - an MWI `message-summary` SUBSCRIBE and its NOTIFYs pass through the bridge,
//!   and an un-REGISTER through it removes the binding;
//! - a request for a foreign domain from a phone and a request from a source
//!   outside `[security] allow` (a phone bound on 127.0.0.2) get 403 from the
//!   bridge and never reach the PBX.
//!
//! Each test has its own Kamailio and bridge on free ports, so they run in
//! parallel. Every wait is bounded; sleeps are only the scenarios' own pauses.

mod common;

use common::*;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(50);
/// How long a phone stays registered; the tests stop the phones (drop) once their
/// calls are done, long before.
const PHONE_HOLD: Duration = Duration::from_secs(60);
/// Bound for a single call or request scenario.
const CALL_BOUND: Duration = Duration::from_secs(15);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// =====================================================================================
// set-up
// =====================================================================================

/// A harness PBX and a bridge in front of it.
struct Site {
    kam: Kamailio,
    bridge: Bridge,
    /// Transport of the phones (towards the bridge).
    phones: Transport,
    /// Transport of the bridge towards the PBX.
    upstream: Transport,
}

impl Site {
    /// Kamailio (INVITEs and SUBSCRIBEs challenged with 407, REGISTER with 401)
    /// and a bridge listening on UDP and TCP of one free port, talking to the PBX
    /// over `upstream`; `extra` is appended to the bridge config.
    fn start(phones: Transport, upstream: Transport, extra: &str) -> Site {
        let kam = Kamailio::start(KamailioOpts::default());
        let mut cfg = bridge_config(free_port(), kam.addr());
        if upstream == Transport::Tcp {
            let udp = "transport = \"udp\"";
            assert!(cfg.contains(udp), "bridge_config changed: {cfg}");
            cfg = cfg.replace(udp, "transport = \"tcp\"");
        }
        cfg.push_str(extra);
        let bridge = Bridge::start(&cfg);
        Site {
            kam,
            bridge,
            phones,
            upstream,
        }
    }

    /// Where the phones send to.
    fn entry(&self) -> std::net::SocketAddr {
        match self.phones {
            Transport::Udp => self.bridge.udp_addr(),
            Transport::Tcp => self.bridge.tcp_addr(),
        }
        .expect("the bridge listens on the phones' transport")
    }

    fn bridge_port(&self) -> u16 {
        self.entry().port()
    }

    /// `127.0.0.1:<bridge port>`: the bridge's sent-by in Via, its host in
    /// Record-Route and in the Contacts it registers.
    fn bridge_hostport(&self) -> String {
        format!("127.0.0.1:{}", self.bridge_port())
    }

    /// Phone `user` registering through the bridge and answering calls after
    /// ringing for `ringing`. Returns once the PBX holds the bridge's Contact for
    /// it; asserts how the registration went.
    fn register(&self, user: &str, ringing: Duration) -> Sipp {
        let mut phone = SippCmd::phone(self.entry(), user, PHONE_HOLD)
            .transport(self.phones)
            .set("ringing_ms", &ringing.as_millis().to_string())
            .limit(PHONE_HOLD + secs(30))
            .spawn();
        let registered = wait_until(secs(10), POLL, || {
            phone.actions_log().contains("registered") && self.kam.is_registered(user)
        });
        assert!(
            registered,
            "{user} did not register through the bridge; PBX contacts {:?}\n{}\n{}",
            self.kam.registered_contacts(user),
            phone.diagnostics(),
            tail(&self.bridge.log(), 30)
        );
        assert!(phone.is_running(), "{}", phone.diagnostics());
        self.assert_binding_is_the_bridge(user, &phone);
        phone
    }

    /// The PBX reaches `user` through the bridge: its only Contact is a binding
    /// URI of the bridge (on the upstream transport), not the phone's address; the
    /// phone answered the registrar's challenge itself and got its own Contact
    /// back in the 200.
    fn assert_binding_is_the_bridge(&self, user: &str, phone: &Sipp) {
        let contacts = self.kam.registered_contacts(user);
        assert_eq!(contacts.len(), 1, "{user}: {contacts:?}");
        let c = &contacts[0];
        assert!(
            c.starts_with("sip:b-") && c.contains(&format!("@{}", self.bridge_hostport())),
            "{user}'s registered Contact {c} must be a binding URI of the bridge {}",
            self.bridge_hostport()
        );
        assert!(
            !c.contains(&format!(":{}", phone.port())),
            "the phone's own address must not reach the PBX: {c}"
        );
        assert_eq!(
            c.contains(";transport=tcp"),
            self.upstream == Transport::Tcp,
            "the binding names the upstream transport: {c}"
        );
        let statuses = phone.received_statuses();
        assert!(
            statuses.starts_with(&[401]) && statuses.contains(&200),
            "REGISTER challenged (401) and then accepted: {statuses:?}\n{}",
            phone.diagnostics()
        );
        let sent_auth = phone
            .messages()
            .iter()
            .filter(|m| !m.received && m.method() == Some("REGISTER"))
            .any(|m| m.header("Authorization").is_some());
        assert!(sent_auth, "the phone answered the challenge itself");
        let ok = phone
            .received()
            .into_iter()
            .find(|m| m.status() == Some(200) && m.cseq().is_some_and(|(_, m)| m == "REGISTER"))
            .expect("a 200 to REGISTER");
        let own = format!("sip:{user}@127.0.0.1:{}", phone.port());
        assert!(
            ok.headers("Contact").iter().any(|v| v.contains(&own)),
            "the 200 must list the phone's own Contact {own}: {:?}",
            ok.headers("Contact")
        );
    }

    fn caller(&self, caller: &str, callee: &str) -> SippCmd {
        SippCmd::caller(self.entry(), caller, callee, ms(200)).transport(self.phones)
    }

    fn canceller(&self, caller: &str, callee: &str) -> SippCmd {
        SippCmd::canceller(self.entry(), caller, callee, ms(200)).transport(self.phones)
    }

    /// Every dialog the PBX tracked has ended (dlg.list: deleted or gone).
    fn assert_pbx_dialogs_ended(&self) {
        assert!(
            wait_until(secs(5), POLL, || self
                .kam
                .dialog_states()
                .iter()
                .all(|&s| s == 5)),
            "the PBX still has live dialogs: {:?}",
            self.kam.dialog_states()
        );
    }
}

// =====================================================================================
// trace helpers
// =====================================================================================

/// Call-ID of the first request `method` a sipp sent.
fn sent_call_id(s: &Sipp, method: &str) -> String {
    s.messages()
        .into_iter()
        .find(|m| !m.received && m.method() == Some(method))
        .and_then(|m| m.header("Call-ID").map(String::from))
        .unwrap_or_else(|| panic!("{} sent no {method}\n{}", s.name(), s.diagnostics()))
}

/// Messages of one call in a sipp's trace.
fn of_call(s: &Sipp, call_id: &str) -> Vec<TraceMsg> {
    s.messages()
        .into_iter()
        .filter(|m| m.header("Call-ID") == Some(call_id))
        .collect()
}

/// The first received request `method` of a call.
fn received_request(s: &Sipp, call_id: &str, method: &str) -> TraceMsg {
    of_call(s, call_id)
        .into_iter()
        .find(|m| m.received && m.method() == Some(method))
        .unwrap_or_else(|| {
            panic!(
                "{} received no {method} of call {call_id}\n{}",
                s.name(),
                s.diagnostics()
            )
        })
}

/// `(transport, sent-by)` of every Via value, top first ("UDP", "127.0.0.1:5060").
fn vias(m: &TraceMsg) -> Vec<(String, String)> {
    m.headers("Via")
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|v| {
            let v = v.trim();
            let (proto, rest) = v.split_once(char::is_whitespace)?;
            let transport = proto.rsplit('/').next()?.to_ascii_uppercase();
            let sent_by = rest.trim().split(';').next()?.trim().to_string();
            Some((transport, sent_by))
        })
        .collect()
}

/// The URIs of every Record-Route entry, top first.
fn record_routes(m: &TraceMsg) -> Vec<String> {
    m.headers("Record-Route")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The sipp received every status of `codes`, first occurrences in this order
/// (panics with the diagnostics otherwise).
fn assert_in_order(s: &Sipp, codes: &[u16]) {
    let statuses = s.received_statuses();
    let mut last = None;
    for c in codes {
        let pos = statuses.iter().position(|x| x == c);
        assert!(
            pos.is_some() && pos > last,
            "{}: expected {codes:?} in this order in {statuses:?}\n{}",
            s.name(),
            s.diagnostics()
        );
        last = pos;
    }
}

// =====================================================================================
// call flows
// =====================================================================================

/// How a caller reaches the callee's phone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CallerAt {
    /// A phone behind the same bridge: the INVITE passes the bridge twice.
    Bridge,
    /// Registered directly on the PBX: the INVITE passes the bridge once.
    Pbx,
}

/// A call from `caller` to the phone `callee` completed end to end: the caller
/// (sipp exit 0) answered the PBX's 407, saw 180 then 200, ACKed and hung up; the
/// callee received INVITE, ACK and BYE of that call from the bridge, addressed to
/// its own Contact, and never saw the bridge's binding URI.
fn assert_call_completed(
    site: &Site,
    call: &mut Sipp,
    callee_user: &str,
    callee: &Sipp,
    at: CallerAt,
) {
    call.wait_success(CALL_BOUND);
    assert_in_order(call, &[407, 180, 200]);
    let call_id = sent_call_id(call, "INVITE");
    let bridge = site.bridge_hostport();
    let own_contact = format!("sip:{callee_user}@127.0.0.1:{}", callee.port());

    let invite = received_request(callee, &call_id, "INVITE");
    assert!(
        invite
            .start_line()
            .starts_with(&format!("INVITE {own_contact}")),
        "the bridge must restore the callee's own Contact as Request-URI: {}",
        invite.start_line()
    );
    // Via: the bridge towards the phone, the PBX, (the bridge towards the PBX,)
    // the caller
    let phone_t = site.phones.as_str().to_string();
    let up_t = site.upstream.as_str().to_string();
    let caller_addr = format!("127.0.0.1:{}", call.port());
    let pbx = site.kam.addr().to_string();
    let expected: Vec<(String, String)> = match at {
        CallerAt::Bridge => vec![
            (phone_t.clone(), bridge.clone()),
            (up_t.clone(), pbx),
            (up_t, bridge.clone()),
            (phone_t, caller_addr),
        ],
        CallerAt::Pbx => vec![
            (phone_t, bridge.clone()),
            (up_t.clone(), pbx),
            (up_t, caller_addr),
        ],
    };
    assert_eq!(
        vias(&invite),
        expected,
        "{at:?} caller: the INVITE's path (Via, top first)"
    );
    // Record-Route: the bridge on top, once per pass — twice per pass when its
    // two sides use different transports (one entry for each)
    let rr = record_routes(&invite);
    assert!(
        rr.first()
            .is_some_and(|r| r.contains(&format!("@{bridge}"))),
        "the bridge record-routes the call (top entry): {rr:?}"
    );
    let passes = match at {
        CallerAt::Bridge => 2,
        CallerAt::Pbx => 1,
    };
    let per_pass = if site.phones == site.upstream { 1 } else { 2 };
    let ours: Vec<&String> = rr
        .iter()
        .filter(|r| r.contains(&format!("@{bridge}")))
        .collect();
    assert_eq!(ours.len(), passes * per_pass, "{rr:?}");
    assert_eq!(
        ours.iter().filter(|r| r.contains("transport=tcp")).count(),
        passes * usize::from(site.phones == Transport::Tcp || site.upstream == Transport::Tcp),
        "one entry with transport=tcp per pass when a side uses TCP: {rr:?}"
    );
    assert!(
        !invite.text.contains("sip:b-"),
        "the binding URI must not leak to the phone:\n{}",
        invite.text
    );

    // ACK and BYE of the call come through the bridge too (Record-Route)
    for method in ["ACK", "BYE"] {
        let m = received_request(callee, &call_id, method);
        assert!(
            m.start_line()
                .starts_with(&format!("{method} {own_contact}")),
            "{}",
            m.start_line()
        );
        assert_eq!(
            vias(&m).first().map(|(_, h)| h.clone()),
            Some(bridge.clone()),
            "{method} from the bridge: {:?}",
            vias(&m)
        );
    }
    let answered_bye = of_call(callee, &call_id).iter().any(|m| {
        !m.received && m.status() == Some(200) && m.cseq().is_some_and(|(_, x)| x == "BYE")
    });
    assert!(answered_bye, "{}", callee.diagnostics());
    // the caller's BYE was answered by the callee (through the bridge)
    let bye_ok = of_call(call, &call_id).iter().any(|m| {
        m.received && m.status() == Some(200) && m.cseq().is_some_and(|(_, x)| x == "BYE")
    });
    assert!(bye_ok, "{}", call.diagnostics());
}

/// A ringing call CANCELled by the caller: 200 for the CANCEL and 487 for the
/// INVITE reach the caller, the callee got the CANCEL through the bridge,
/// answered 487 and got the ACK — and never answered 200.
fn assert_cancelled(site: &Site, cancel: &mut Sipp, callee: &Sipp) {
    cancel.wait_success(CALL_BOUND);
    assert!(
        cancel.actions_log().contains("cancelled"),
        "{}",
        cancel.diagnostics()
    );
    assert_in_order(cancel, &[407, 180]);
    let got = |code: u16, method: &str| {
        cancel
            .received()
            .iter()
            .any(|m| m.status() == Some(code) && m.cseq().is_some_and(|(_, x)| x == method))
    };
    assert!(
        got(200, "CANCEL") && got(487, "INVITE") && !got(200, "INVITE"),
        "CANCEL answered 200, INVITE ended with 487: {:?}\n{}",
        cancel.received_statuses(),
        cancel.diagnostics()
    );
    let call_id = sent_call_id(cancel, "INVITE");
    let c = received_request(callee, &call_id, "CANCEL");
    assert_eq!(
        vias(&c).first().map(|(_, h)| h.clone()),
        Some(site.bridge_hostport()),
        "CANCEL from the bridge: {:?}",
        vias(&c)
    );
    let msgs = of_call(callee, &call_id);
    let sent_200_invite = msgs.iter().any(|m| {
        !m.received && m.status() == Some(200) && m.cseq().is_some_and(|(_, x)| x == "INVITE")
    });
    assert!(!sent_200_invite, "{}", callee.diagnostics());
    // The proxied CANCEL carries only the bridge's Via: the callee must answer
    // the INVITE's 487 with the INVITE's Via list (answer.xml), or it would not
    // find its way back through the bridge and the PBX.
    let sent_487 = msgs
        .iter()
        .find(|m| !m.received && m.status() == Some(487))
        .unwrap_or_else(|| panic!("the callee sent no 487\n{}", callee.diagnostics()));
    let invite = received_request(callee, &call_id, "INVITE");
    assert!(vias(&invite).len() >= 3, "{:?}", vias(&invite));
    assert_eq!(
        vias(sent_487),
        vias(&invite),
        "487 Via list = INVITE Via list"
    );
    assert!(
        wait_until(secs(3), POLL, || of_call(callee, &call_id)
            .iter()
            .any(|m| m.received && m.method() == Some("ACK"))),
        "the 487 must be ACKed (hop by hop, by the bridge)\n{}",
        callee.diagnostics()
    );
}

/// The whole call flow of issue 4 on one site.
fn call_flow(phones: Transport, upstream: Transport) {
    let site = Site::start(phones, upstream, "");
    // ringing long enough for the CANCEL (200 ms after 180), short for the calls
    let p1001 = site.register("1001", ms(1500));
    let p1002 = site.register("1002", ms(1500));

    let mut call = site.caller("1001", "1002").spawn();
    assert_call_completed(&site, &mut call, "1002", &p1002, CallerAt::Bridge);

    let mut call = site.caller("1002", "1001").spawn();
    assert_call_completed(&site, &mut call, "1001", &p1001, CallerAt::Bridge);

    // 1003 is not behind the bridge: it calls the PBX directly
    let mut call = SippCmd::caller(site.kam.addr(), "1003", "1002", ms(200))
        .transport(upstream)
        .spawn();
    assert_call_completed(&site, &mut call, "1002", &p1002, CallerAt::Pbx);

    let mut cancel = site.canceller("1001", "1002").spawn();
    assert_cancelled(&site, &mut cancel, &p1002);

    site.assert_pbx_dialogs_ended();
    drop((p1001, p1002));
}

/// Phones and upstream over UDP.
#[test]
fn udp_register_calls_both_ways_inbound_and_cancel() {
    if !e2e_ready("udp_register_calls_both_ways_inbound_and_cancel") {
        return;
    }
    call_flow(Transport::Udp, Transport::Udp);
}

/// Phones and upstream over TCP.
#[test]
fn tcp_register_calls_both_ways_inbound_and_cancel() {
    if !e2e_ready("tcp_register_calls_both_ways_inbound_and_cancel") {
        return;
    }
    call_flow(Transport::Tcp, Transport::Tcp);
}

/// TCP phones in front of a UDP upstream: the bridge record-routes on both
/// transports.
#[test]
fn tcp_phones_udp_upstream_calls() {
    if !e2e_ready("tcp_phones_udp_upstream_calls") {
        return;
    }
    call_flow(Transport::Tcp, Transport::Udp);
}

// =====================================================================================
// MWI and un-REGISTER
// =====================================================================================

/// Kamailio log lines of requests it received (`RX <method> ...`) for a Call-ID
/// (the config logs "RX $rm $ru from $proto:$si:$sp" with the Call-ID in the prefix).
fn pbx_rx_lines(kam: &Kamailio, call_id: &str) -> Vec<String> {
    kam.log()
        .lines()
        .filter(|l| l.contains(&format!(" {call_id}}}")) && l.contains("RX "))
        .map(String::from)
        .collect()
}

/// A `message-summary` subscription of phone 1001 passes the bridge both ways:
/// the PBX's 407 goes back to the phone, which answers it; the PBX accepts the
/// subscription; its NOTIFYs (initial and, after the unsubscribe, the final
/// terminated one) reach the phone through the bridge (Record-Route). Meanwhile
/// phone 1003 registers through the bridge and un-REGISTERs: the PBX drops the
/// binding.
#[test]
fn mwi_subscription_and_unregister_pass_through_the_bridge() {
    if !e2e_ready("mwi_subscription_and_unregister_pass_through_the_bridge") {
        return;
    }
    let site = Site::start(Transport::Udp, Transport::Udp, "");
    let bridge = site.bridge_hostport();
    let pbx = site.kam.addr().to_string();

    let mut mwi = SippCmd::mwi_subscriber(site.entry(), "1001", secs(3)).spawn();
    let mut phone = SippCmd::phone(site.entry(), "1003", secs(3)).spawn();

    assert!(
        wait_until(secs(10), POLL, || !site
            .kam
            .watchers_of("1001", "message-summary")
            .is_empty()),
        "the PBX never accepted the MWI subscription: {:?}\n{}",
        site.kam.watchers(),
        mwi.diagnostics()
    );
    assert_eq!(
        site.kam.watchers_of("1001", "message-summary")[0].from,
        "sip:1001@pbx.test"
    );

    // registration of 1003 (while it lasts), then its un-REGISTER
    assert!(
        wait_until(secs(10), POLL, || phone
            .actions_log()
            .contains("registered")),
        "{}",
        phone.diagnostics()
    );
    site.assert_binding_is_the_bridge("1003", &phone);
    phone.wait_success(CALL_BOUND);
    assert!(phone.actions_log().contains("unregistered"));
    assert!(
        wait_until(secs(5), POLL, || !site.kam.is_registered("1003")),
        "the un-REGISTER through the bridge must remove the binding: {:?}",
        site.kam.registered_contacts("1003")
    );

    mwi.wait_success(CALL_BOUND);
    assert_in_order(&mwi, &[407, 200]);
    let notifies = mwi.notifies();
    assert!(
        notifies.len() >= 2,
        "initial and final NOTIFY\n{}",
        mwi.diagnostics()
    );
    assert!(!notifies[0].is_terminated(), "{:?}", notifies[0]);
    assert!(notifies.last().is_some_and(Notify::is_terminated));
    let call_id = sent_call_id(&mwi, "SUBSCRIBE");
    let own_contact = format!("sip:1001@127.0.0.1:{}", mwi.port());
    let received: Vec<TraceMsg> = of_call(&mwi, &call_id)
        .into_iter()
        .filter(|m| m.received && m.method() == Some("NOTIFY"))
        .collect();
    assert!(received.len() >= 2, "{}", mwi.diagnostics());
    for n in &received {
        assert_eq!(n.header("Event"), Some("message-summary"));
        assert!(
            n.start_line().starts_with(&format!("NOTIFY {own_contact}")),
            "{}",
            n.start_line()
        );
        assert_eq!(
            vias(n),
            [
                ("UDP".to_string(), bridge.clone()),
                ("UDP".to_string(), pbx.clone())
            ],
            "every NOTIFY comes from the PBX through the bridge"
        );
    }
    // the PBX got every SUBSCRIBE of the dialog (challenged, authenticated,
    // unsubscribe) from the bridge, none from the phone
    let rx: Vec<String> = pbx_rx_lines(&site.kam, &call_id)
        .into_iter()
        .filter(|l| l.contains("RX SUBSCRIBE"))
        .collect();
    assert!(rx.len() >= 3, "{rx:#?}");
    let via_bridge = format!("from udp:{bridge} ");
    assert!(rx.iter().all(|l| l.contains(&via_bridge)), "{rx:#?}");
    assert!(
        wait_until(secs(3), POLL, || site
            .kam
            .watchers_of("1001", "message-summary")
            .is_empty()),
        "the unsubscribe must end the subscription: {:?}",
        site.kam.watchers()
    );
}

// =====================================================================================
// refusals
// =====================================================================================

/// Only phones on 127.0.0.1 are allowed. A phone asking for a foreign domain and
/// a phone on 127.0.0.2 get 403 from the bridge itself, and the PBX never sees
/// their requests — while the very same requests from an allowed phone to the
/// PBX's domain do reach it (the PBX challenges them).
#[test]
fn foreign_domain_and_unknown_source_are_refused_at_the_bridge() {
    if !e2e_ready("foreign_domain_and_unknown_source_are_refused_at_the_bridge") {
        return;
    }
    let site = Site::start(
        Transport::Udp,
        Transport::Udp,
        "\n[security]\nallow = [\"127.0.0.1/32\"]\n",
    );
    let entry = site.entry();
    let foreign = "sip:1002@evil.example";
    let home = "sip:1002@pbx.test";
    let outsider = |method: &str, ruri: &str| {
        SippCmd::raw_request(entry, method, ruri)
            .name(&format!("outsider-{}", method.to_lowercase()))
            .arg("-i")
            .arg("127.0.0.2")
    };

    let mut refused = vec![
        SippCmd::raw_request(entry, "INVITE", foreign)
            .name("foreign-invite")
            .set("expect", "403")
            .spawn(),
        SippCmd::raw_request(entry, "MESSAGE", foreign)
            .name("foreign-message")
            .set("expect", "403")
            .spawn(),
        outsider("INVITE", home).set("expect", "403").spawn(),
        outsider("REGISTER", "sip:pbx.test")
            .set("to", home)
            .set("expect", "403")
            .spawn(),
    ];
    for s in &mut refused {
        s.wait_success(CALL_BOUND);
    }
    // the same requests, allowed: the PBX answers them (with its challenges)
    let mut allowed = vec![
        SippCmd::raw_request(entry, "INVITE", home)
            .name("home-invite")
            .set("expect", "407")
            .spawn(),
        SippCmd::raw_request(entry, "REGISTER", "sip:pbx.test")
            .name("home-register")
            .set("to", home)
            .set("expect", "401")
            .spawn(),
    ];
    for s in &mut allowed {
        s.wait_success(CALL_BOUND);
    }
    for s in &allowed {
        let id = sent_call_id(
            s,
            if s.name().ends_with("invite") {
                "INVITE"
            } else {
                "REGISTER"
            },
        );
        assert!(
            wait_until(secs(3), POLL, || !pbx_rx_lines(&site.kam, &id).is_empty()),
            "control request {} never reached the PBX",
            s.name()
        );
    }

    let pbx_log = site.kam.log();
    for s in &refused {
        let method = if s.name().ends_with("invite") {
            "INVITE"
        } else if s.name().ends_with("message") {
            "MESSAGE"
        } else {
            "REGISTER"
        };
        let id = sent_call_id(s, method);
        assert!(
            !pbx_log.contains(&format!(" {id}}}")),
            "{} (Call-ID {id}) must never reach the PBX:\n{}",
            s.name(),
            pbx_rx_lines(&site.kam, &id).join("\n")
        );
        let finals: Vec<TraceMsg> = s
            .received()
            .into_iter()
            .filter(|m| m.status().is_some_and(|c| c >= 200))
            .collect();
        assert_eq!(finals.len(), 1, "{}", s.diagnostics());
        assert_eq!(finals[0].status(), Some(403));
        assert!(
            finals[0]
                .header("Server")
                .is_none_or(|v| !v.contains("harness-pbx")),
            "the 403 comes from the bridge, not the PBX: {}",
            finals[0].text
        );
    }
    // no further work for an unknown source: not even 100 Trying
    assert_eq!(refused[2].received_statuses(), [403]);

    let log = site.bridge.log();
    assert!(
        log.lines()
            .any(|l| l.contains("proxy refused request") && l.contains(foreign)),
        "the bridge logs the foreign-domain refusal"
    );
    assert!(
        log.lines()
            .filter(|l| l.contains("neither allowed nor the upstream") && l.contains("127.0.0.2"))
            .count()
            >= 2,
        "the bridge logs the refusals of 127.0.0.2"
    );
}
