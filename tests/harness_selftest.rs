//! Self-test of the end-to-end harness (tests/common, tests/harness), run directly
//! against the harness PBX — no bridge in between. It pins down the upstream
//! behaviour the product exists for: the dialog package says the same for an idle
//! and an offline extension, only the presence package shows offline.

mod common;

use common::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The idle/offline dialog document of extension 1002 as captured from the reference
/// upstream (Kamailio 5.6, `force_dummy_dialog`; literal TABs around `<state>`).
const CAPTURED_DUMMY_1002: &str = "<?xml version=\"1.0\"?>\n\
<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"1\" state=\"full\" entity=\"sip:1002@pbx.test\">\n\
\x20 <dialog id=\"615293b33c62dec073e05d9421e9f48b\" direction=\"recipient\">\t<state>terminated</state>\t</dialog>\n\
</dialog-info>";

/// A dialog-info body with the per-watcher `version` attribute of `<dialog-info>`
/// blanked and trailing white space removed, so that documents can be compared.
fn without_version(body: &str) -> String {
    let body = body.trim_end();
    let Some(tag) = body.find("<dialog-info") else {
        return body.to_string();
    };
    match body[tag..].find(" version=\"") {
        Some(i) => {
            let start = tag + i + " version=\"".len();
            let end = body[start..].find('"').map_or(body.len(), |e| start + e);
            format!("{}_{}", &body[..start], &body[end..])
        }
        None => body.to_string(),
    }
}

/// A Grandstream Wave BLF key and a Zoiper presence watcher follow extension 1002
/// while it registers and un-registers: the dialog package only ever shows the
/// dummy "terminated" dialog (idle and offline look identical), the presence
/// package goes offline (no body) → open → closed.
#[test]
fn offline_is_visible_only_in_presence() {
    if !e2e_ready("offline_is_visible_only_in_presence") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default()); // SUBSCRIBE challenged with 407
    let up = kam.addr();

    let mut blf = SippCmd::blf_watcher(up, BlfModel::Wave, "1001", "1002", secs(9)).spawn();
    let mut pres = SippCmd::presence_watcher(up, "1001", "1002", secs(9)).spawn();
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || {
            !kam.watchers_of("1002", "dialog").is_empty()
                && !kam.watchers_of("1002", "presence").is_empty()
        }),
        "both subscriptions should be accepted; watchers {:?}\n{}\n{}",
        kam.watchers(),
        blf.diagnostics(),
        pres.diagnostics()
    );
    let w = kam.watchers_of("1002", "dialog");
    assert_eq!(w[0].from, "sip:1001@pbx.test");

    // 1002 was never registered: presence says nothing (bodiless NOTIFY)
    assert!(
        wait_until(secs(3), Duration::from_millis(50), || !pres
            .notifies()
            .is_empty()),
        "no initial presence NOTIFY\n{}",
        pres.diagnostics()
    );
    assert_eq!(
        pres.notifies()[0].body,
        "",
        "never-registered presence must have no body"
    );
    assert!(!kam.is_registered("1002"));

    let mut phone = SippCmd::phone(up, "1002", secs(3)).spawn();
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || kam
            .is_registered("1002")),
        "1002 did not register\n{}",
        phone.diagnostics()
    );
    let contacts = kam.registered_contacts("1002");
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert!(
        contacts[0].contains(&format!("127.0.0.1:{}", phone.port())),
        "contact {contacts:?} should be the phone's port {}",
        phone.port()
    );
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || {
            pres.notifies().iter().any(|n| n.basic() == ["open"])
        }),
        "presence never became open\n{}",
        pres.diagnostics()
    );

    phone.wait_success(secs(10));
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || !kam
            .is_registered("1002")),
        "1002 still registered after un-REGISTER"
    );
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || {
            pres.notifies().iter().any(|n| n.basic() == ["closed"])
        }),
        "presence never became closed\n{}",
        pres.diagnostics()
    );

    blf.wait_success(secs(15));
    pres.wait_success(secs(15));
    assert!(
        wait_until(secs(3), Duration::from_millis(50), || kam
            .watchers_of("1002", "dialog")
            .is_empty()
            && kam.watchers_of("1002", "presence").is_empty()),
        "unsubscribes should remove the watchers: {:?}",
        kam.watchers()
    );

    // --- the BLF key: identical dummy documents, whatever the registration did
    let dlg = blf.notifies();
    assert!(
        dlg.len() >= 2,
        "initial + final NOTIFY expected\n{}",
        blf.diagnostics()
    );
    for n in &dlg {
        assert_eq!(n.event.as_deref(), Some("dialog"));
        assert_eq!(
            n.content_type.as_deref(),
            Some("application/dialog-info+xml"),
            "{n:?}"
        );
        assert!(
            n.body.contains("entity=\"sip:1002@pbx.test\""),
            "{}",
            n.body
        );
        assert_eq!(n.dialog_count(), 1, "{}", n.body);
        assert_eq!(n.dialog_states(), ["terminated"], "{}", n.body);
        assert!(
            !n.body.contains("call-id="),
            "dummy dialog has no call-id: {}",
            n.body
        );
    }
    let captured = without_version(CAPTURED_DUMMY_1002);
    for n in &dlg {
        assert_eq!(
            without_version(&n.body),
            captured,
            "idle and offline must both look like the captured dummy document"
        );
    }
    assert!(!dlg[0].is_terminated());
    assert!(
        dlg.last().is_some_and(Notify::is_terminated),
        "unsubscribe ends with terminated"
    );
    // Wave headers as sent
    let sub = blf
        .messages()
        .into_iter()
        .find(|m| !m.received && m.method() == Some("SUBSCRIBE"))
        .expect("a SUBSCRIBE was sent");
    assert_eq!(sub.header("User-Agent"), Some("Grandstream Wave"));
    assert_eq!(
        sub.header("Supported"),
        Some("replaces, path, timer, eventlist")
    );
    assert_eq!(
        sub.header("Accept"),
        Some("application/dialog-info+xml, multipart/related, application/rlmi+xml")
    );
    assert_eq!(sub.header("Event"), Some("dialog"));
    assert!(
        blf.received_statuses().contains(&407),
        "the PBX challenged with 407"
    );

    // --- presence: offline (no body) -> open -> closed -> final (no body, terminated)
    let p = pres.notifies();
    let states: Vec<String> = p
        .iter()
        .map(|n| n.basic().first().cloned().unwrap_or_else(|| "-".into()))
        .collect();
    let open = states.iter().position(|s| s == "open").expect("open");
    let closed = states.iter().position(|s| s == "closed").expect("closed");
    assert!(
        states[0] == "-" && open < closed,
        "presence sequence {states:?}"
    );
    assert!(
        p[open].body.contains("entity=\"1002@pbx.test\""),
        "{}",
        p[open].body
    );
    assert!(p.last().is_some_and(Notify::is_terminated), "{states:?}");
}

/// Calls through the PBX, all over TCP with unchallenged SUBSCRIBEs: a GXP BLF key
/// watching 1002 sees early → confirmed → terminated for an answered call, and a
/// cancelled call is ended with 487.
#[test]
fn calls_and_cancel_are_seen_in_the_dialog_package_over_tcp() {
    if !e2e_ready("calls_and_cancel_are_seen_in_the_dialog_package_over_tcp") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts {
        sub_auth: 0,
        ..KamailioOpts::default()
    });
    let up = kam.addr();
    let tcp = Transport::Tcp;

    let mut phone = SippCmd::phone(up, "1002", secs(9))
        .set("ringing_ms", "1000")
        .transport(tcp)
        .spawn();
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || kam
            .is_registered("1002")),
        "1002 did not register\n{}",
        phone.diagnostics()
    );
    let mut blf = SippCmd::blf_watcher(up, BlfModel::Gxp, "1001", "1002", secs(7))
        .transport(tcp)
        .spawn();
    assert!(
        wait_until(secs(5), Duration::from_millis(50), || !blf
            .notifies()
            .is_empty()),
        "no initial dialog NOTIFY\n{}",
        blf.diagnostics()
    );

    let mut call = SippCmd::caller(up, "1003", "1002", SEC)
        .transport(tcp)
        .spawn();
    call.wait_success(secs(10));
    assert!(
        call.received_statuses().contains(&407),
        "INVITE is challenged"
    );
    assert!(call.received_statuses().contains(&180));

    let mut cancel = SippCmd::canceller(up, "1003", "1002", Duration::from_millis(200))
        .transport(tcp)
        .spawn();
    cancel.wait_success(secs(10));
    assert!(
        cancel.received_statuses().contains(&487),
        "{}",
        cancel.diagnostics()
    );

    blf.wait_success(secs(15));
    phone.wait_success(secs(15));

    let states: Vec<String> = blf
        .notifies()
        .iter()
        .flat_map(|n| n.dialog_states())
        .collect();
    let pos = |s: &str| states.iter().position(|x| x == s);
    let (early, confirmed) = (pos("early"), pos("confirmed"));
    assert!(
        early.is_some() && confirmed.is_some() && early < confirmed,
        "dialog states {states:?}\n{}",
        blf.diagnostics()
    );
    assert!(
        states[confirmed.unwrap_or(0)..]
            .iter()
            .any(|s| s == "terminated"),
        "hang-up must show terminated: {states:?}"
    );
    assert!(
        !blf.received_statuses().contains(&407) && !blf.received_statuses().contains(&401),
        "sub_auth 0: no challenge"
    );
    let sub = blf
        .messages()
        .into_iter()
        .find(|m| !m.received && m.method() == Some("SUBSCRIBE"))
        .expect("a SUBSCRIBE was sent");
    assert_eq!(
        sub.header("User-Agent"),
        Some("Grandstream GXP2170 1.0.11.3")
    );
    assert_eq!(sub.transport, "TCP");
}

/// The raw request sender, the MWI subscriber (401 challenges, set at run time),
/// refreshes and the Rust-side SIP probe.
#[test]
fn raw_requests_mwi_and_refresh() {
    if !e2e_ready("raw_requests_mwi_and_refresh") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default());
    let up = kam.addr();

    // the PBX answers OPTIONS to itself, on UDP and TCP
    assert_eq!(sip_ping(up, Transport::Udp, secs(2)), Some(200));
    assert_eq!(sip_ping(up, Transport::Tcp, secs(2)), Some(200));

    // foreign domains are refused (loopback harness: "Not relaying")
    let mut foreign_opts = SippCmd::raw_request(up, "OPTIONS", "sip:1002@evil.example")
        .set("expect", "403")
        .spawn();
    let mut foreign_invite = SippCmd::raw_request(up, "INVITE", "sip:1002@evil.example")
        .set("expect", "403")
        .spawn();
    // a wrong expectation must fail the scenario
    let mut wrong = SippCmd::raw_request(up, "OPTIONS", &format!("sip:127.0.0.1:{}", kam.port()))
        .set("expect", "404")
        .spawn();
    // nothing listens on a fresh port: expect_none succeeds
    let dead = loopback(free_port());
    let mut silent = SippCmd::raw_request(dead, "OPTIONS", "sip:1002@pbx.test")
        .set("expect_none", "1")
        .spawn();
    foreign_opts.wait_success(secs(10));
    foreign_invite.wait_success(secs(10));
    assert_eq!(foreign_invite.received_statuses(), [403]);
    assert!(
        foreign_invite
            .messages()
            .iter()
            .any(|m| !m.received && m.method() == Some("ACK")),
        "the 403 to the INVITE is ACKed"
    );
    match wrong.wait(secs(10)) {
        SippExit::Exited(s) => assert!(!s.success(), "expect 404 but got 200 must fail"),
        SippExit::TimedOut => panic!("raw request hung\n{}", wrong.diagnostics()),
    }
    silent.wait_success(secs(10));
    assert!(silent.received().is_empty());

    // MWI with 401 challenges, switched at run time
    kam.set_sub_auth(2);
    let mut mwi = SippCmd::mwi_subscriber(up, "1001", SEC).spawn();
    mwi.wait_success(secs(10));
    assert!(
        mwi.received_statuses().contains(&401),
        "{}",
        mwi.diagnostics()
    );
    let n = mwi.notifies();
    assert!(n.len() >= 2, "{}", mwi.diagnostics());
    assert_eq!(n[0].event.as_deref(), Some("message-summary"));

    // refresh: a second NOTIFY with the full state in the same dialog, then the final one
    let mut blf = SippCmd::blf_watcher(up, BlfModel::Wave, "1003", "1002", secs(2))
        .set("refresh_s", "1")
        .set("expires", "120")
        .spawn();
    blf.wait_success(secs(10));
    let n = blf.notifies();
    assert!(
        n.len() >= 3,
        "initial, refresh, final\n{}",
        blf.diagnostics()
    );
    assert!(n.iter().all(|x| x.call_id == n[0].call_id));
    assert!(
        n[0].subscription_state
            .as_deref()
            .is_some_and(|s| s.contains("expires="))
    );
    let sent: Vec<_> = blf
        .messages()
        .into_iter()
        .filter(|m| !m.received && m.method() == Some("SUBSCRIBE"))
        .collect();
    assert_eq!(sent.first().and_then(|m| m.header("Expires")), Some("120"));
    assert_eq!(sent.last().and_then(|m| m.header("Expires")), Some("0"));
    assert!(
        sent.len() >= 4,
        "challenged, authenticated, refresh, unsubscribe"
    );
}

/// The bridge guard reports a bridge that exits instead of serving.
#[test]
fn bridge_that_exits_is_reported_with_its_log() {
    let port = free_port();
    let err = match Bridge::try_start(&format!(
        "[listen]\nudp = \"127.0.0.1:{port}\"\nnot valid toml [[[\n"
    )) {
        Ok(_) => panic!("a bridge with a broken config must not come up"),
        Err(e) => e,
    };
    assert!(err.contains("blf-bridge"), "{err}");
}

// ------------------------------------------------------------- no tools needed

#[test]
fn bridge_config_is_accepted_by_the_config_parser() {
    let text = bridge_config(25060, loopback(25070));
    let cfg = blf_bridge::config::Config::parse(&text, "bridge.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert_eq!(cfg.listen.udp, Some(loopback(25060)));
    assert_eq!(cfg.listen.tcp, Some(loopback(25060)));
    assert_eq!(cfg.upstream.proxy_port, 25070);
    assert_eq!(cfg.upstream.domain, DOMAIN);
    assert_eq!(cfg.accounts.len(), 3);
}

/// One record as sipp -trace_msg writes it (sipp/src/call.cpp: dashes + time,
/// "<T> message sent (N bytes):" or "<T> message received [N] bytes :", blank
/// line, the message bytes, blank lines).
fn record(received: bool, transport: &str, time: &str, msg: &str) -> String {
    let kind = if received {
        format!("{transport} message received [{}] bytes :", msg.len())
    } else {
        format!("{transport} message sent ({} bytes):", msg.len())
    };
    format!("----------------------------------------------- {time}\n{kind}\n\n{msg}\n\n")
}

fn trace() -> String {
    let notify = "NOTIFY sip:1001@127.0.0.1:5601 SIP/2.0\r\no: dialog\r\nCall-ID: c1\r\nCSeq: 2 NOTIFY\r\n\
                  Subscription-State: active;expires=600\r\nl: 27\r\n\r\n<x><state>early</state></x>";
    [
        record(false, "UDP", "2026-11-26 09:11:35.100000", "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n"),
        record(true, "UDP", "2026-11-26 09:11:35.200000", notify),
        // sipp repeats a message it did not expect, without time
        format!("-----------------------------------------------\nUnexpected UDP message received:\n\n{notify}\n\n"),
        // a retransmission
        record(true, "UDP", "2026-11-26 09:11:35.300000", notify),
        record(
            true,
            "TCP",
            "2026-11-26 09:11:36.000000",
            "NOTIFY sip:1001@127.0.0.1:5601 SIP/2.0\r\nCall-ID: c1\r\nCSeq: 3 NOTIFY\r\n\
             Subscription-State: terminated;reason=timeout\r\nContent-Length: 0\r\n\r\n",
        ),
    ]
    .concat()
}

#[test]
fn trace_parser_reads_sipp_message_logs() {
    let msgs = parse_trace(&trace());
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(!msgs[0].received);
    assert_eq!(msgs[0].method(), Some("SUBSCRIBE"));
    assert_eq!(msgs[1].transport, "UDP");
    assert_eq!(msgs[1].time, "2026-11-26 09:11:35.200000");
    assert_eq!(msgs[1].header("event"), Some("dialog"), "compact form o:");
    assert_eq!(
        msgs[1].header("Content-Length"),
        Some("27"),
        "compact form l:"
    );
    assert_eq!(msgs[1].body(), "<x><state>early</state></x>");
    assert_eq!(msgs[3].transport, "TCP");
    let n = notifies(&msgs);
    assert_eq!(
        n.len(),
        2,
        "the retransmission (same Call-ID/CSeq) is dropped: {n:#?}"
    );
    assert_eq!(n[0].dialog_states(), ["early"]);
    assert_eq!(n[0].cseq, 2);
    assert!(!n[0].is_terminated());
    assert!(n[1].is_terminated());
    assert_eq!(last_body(&n), Some(""));
}

#[test]
fn xml_helpers_ignore_namespace_prefixes() {
    let n = Notify {
        time: String::new(),
        call_id: String::new(),
        cseq: 1,
        event: None,
        subscription_state: None,
        content_type: None,
        body: "<p:presence><p:tuple id=\"a\"><status xmlns=\"x\"><basic>closed</basic></status></p:tuple>\
               <dialog-info state=\"full\"><dialog id=\"1\"><state>confirmed</state></dialog><dialog id=\"2\"/></dialog-info>"
            .into(),
    };
    assert_eq!(n.basic(), ["closed"]);
    assert_eq!(n.dialog_states(), ["confirmed"]);
    assert_eq!(n.dialog_count(), 2);
    assert_eq!(n.dialog_tags()[1], "<dialog id=\"2\"/>");
}

#[test]
fn free_ports_are_distinct_and_bindable_on_udp_and_tcp() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut uniq = ports.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), ports.len(), "{ports:?}");
    for p in ports.iter().take(5) {
        let _u = std::net::UdpSocket::bind(("127.0.0.1", *p)).expect("udp");
        let _t = std::net::TcpListener::bind(("127.0.0.1", *p)).expect("tcp");
    }
}

#[test]
fn wait_until_is_bounded() {
    let start = std::time::Instant::now();
    assert!(!wait_until(
        Duration::from_millis(100),
        Duration::from_millis(10),
        || false
    ));
    assert!(start.elapsed() < secs(5));
    let mut n = 0;
    assert!(wait_until(secs(5), Duration::from_millis(1), || {
        n += 1;
        n == 3
    }));
}

/// The committed subscriber and raw-request scenarios are what gen-scenarios.sh
/// generates from subscribe.xml.in.
#[test]
fn generated_scenarios_are_up_to_date() {
    let Some(bash) = find_tool("bash") else {
        eprintln!("SKIPPED generated_scenarios_are_up_to_date: no bash");
        return;
    };
    let out = TempDir::new("gen");
    let dir = harness_dir().join("scenarios");
    let res = run_bounded(
        std::process::Command::new(bash)
            .arg(dir.join("gen-scenarios.sh"))
            .arg(out.path()),
        None,
        secs(30),
    )
    .expect("generator runs");
    assert!(res.status.success(), "{}{}", res.stdout, res.stderr);
    let mut n = 0;
    for entry in std::fs::read_dir(out.path()).expect("read generated") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let generated = std::fs::read_to_string(entry.path()).expect("generated");
        let committed = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("{name:?} is generated but not committed: {e}"));
        assert!(
            generated == committed,
            "{name:?} is stale: run tests/harness/scenarios/gen-scenarios.sh"
        );
        n += 1;
    }
    assert_eq!(n, 6, "five subscribers and raw-request.xml");
}
