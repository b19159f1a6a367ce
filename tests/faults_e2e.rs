//! A lossy network on both sides of the bridge, end to end: phones (BLF phones in
//! threads, [`BlfPhone`]; SIPp registering phones and callers) ↔ [`UdpRelay`] ↔
//! the blf-bridge binary ↔ [`UdpRelay`] ↔ Kamailio. Each relay
//! drops 5 % of the datagrams each way, duplicates 3 % and holds back 5 % (so
//! later ones overtake them), from a fixed seed.
//!
//! Over a 50 s run (what CI affords; the issue asks for 2 minutes: set
//! `BLF_FAULT_RUN_S=120`) four phones subscribe to two extensions (20 s expiry,
//! refreshing every 8 s), the bridge
//! refreshes upstream (upstream_expires 30 s), two extensions register through
//! the bridge, calls ring and are answered through it, and everyone
//! un-registers at the end. Asserted: no subscription lost (every watcher runs
//! to its own unsubscribe with every refresh accepted), every phone's final lamp
//! is right (offline), and no phone ever sees a dialog-info version twice or out
//! of order.

mod common;

use blf_bridge::presence::MergedState;
use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// dialog-info `version="N"` of a body.
fn version(body: &str) -> Option<u64> {
    let i = body.find("version=\"")? + 9;
    body[i..].split('"').next()?.parse().ok()
}

#[test]
fn lossy_relays_between_phones_bridge_and_pbx_lose_no_subscription() {
    if !e2e_ready("lossy_relays_between_phones_bridge_and_pbx_lose_no_subscription") {
        return;
    }
    let run_s: u64 = std::env::var("BLF_FAULT_RUN_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(45);
    let kam = Kamailio::start(KamailioOpts::default());
    let port = free_port();
    // The upstream side: the bridge listens on 127.0.0.2:port but says it is at
    // 127.0.0.1:port (Via, Contact, Path, Record-Route: `[listen] advertise`),
    // where the relay's back socket is, so that Kamailio's requests to the bridge
    // come through the relay too (and Kamailio's harness still sees 127.0.0.1
    // Contacts only).
    let upstream = UdpRelay::start_with(
        kam.addr(),
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        Faults::LOSSY,
        0x5eed_0001,
    );
    let cfg = bridge_config(port, upstream.front()).replace(
        &format!("udp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\n"),
        &format!("udp = \"127.0.0.2:{port}\"\nadvertise = \"127.0.0.1\"\n"),
    ) + "\n[subscriptions]\nmin_expires = 10\nupstream_expires = 30\n";
    assert!(cfg.contains("127.0.0.2"), "{cfg}");
    let bridge = Bridge::start(&cfg);
    let phones = UdpRelay::start(bridge.addr(), Faults::LOSSY, 0x5eed_0002);
    let b = phones.front();

    // BLF phones (threads: SIPp's scenarios cannot follow a lossy network, see
    // tests/common/watcher.rs), refreshing every 8 s with a 20 s expiry
    const WAVE: &str = "Grandstream Wave 1.0.3.16";
    const GXP: &str = "Grandstream GXP2170 1.0.11.3";
    let watch = |ua: &str, watcher: &str, target: &str| {
        BlfPhone::spawn(b, ua, watcher, target, 20, secs(8), secs(run_s))
    };
    // (profile, target, phone)
    let watchers = [
        ("grandstream-wave", "1002", watch(WAVE, "1001", "1002")),
        ("grandstream-gxp", "1002", watch(GXP, "1003", "1002")),
        ("grandstream-gxp", "1003", watch(GXP, "1001", "1003")),
        ("grandstream-wave", "1003", watch(WAVE, "1002", "1003")),
    ];
    std::thread::sleep(secs(3));
    // 1002 and 1003 register through the bridge; 1002 answers calls after 2 s
    let stay = run_s - 14;
    let mut p1002 = SippCmd::phone(b, "1002", secs(stay))
        .set("ringing_ms", "2000")
        .spawn();
    let mut p1003 = SippCmd::phone(b, "1003", secs(stay / 2)).spawn();
    std::thread::sleep(secs(3));
    // calls 1003 → 1002 through the bridge, until 1002 is about to leave
    let mut calls = 0;
    let mut call_failures = Vec::new();
    let t0 = std::time::Instant::now();
    while t0.elapsed() + secs(12) < secs(stay - 3) {
        let mut c = SippCmd::caller(b, "1003", "1002", secs(3)).spawn();
        match c.wait(secs(30)) {
            SippExit::Exited(s) if s.success() => calls += 1,
            other => call_failures.push(format!("{other:?}\n{}", c.diagnostics())),
        }
        std::thread::sleep(secs(2));
    }
    // SIPp itself sometimes crashes (SIGSEGV) on the duplicated and reordered
    // out-of-call INVITEs of this network; such a phone never un-registers,
    // so its target's final lamp is not checked (everything else is).
    let mut crashed: Vec<&str> = Vec::new();
    for (user, phone) in [("1003", &mut p1003), ("1002", &mut p1002)] {
        match phone.wait(secs(60)) {
            SippExit::Exited(s) if s.success() => {}
            SippExit::Exited(s) if std::os::unix::process::ExitStatusExt::signal(&s).is_some() => {
                eprintln!(
                    "SIPp phone {user} crashed ({s}): its final lamp is not checked\n{}",
                    phone.diagnostics()
                );
                crashed.push(user);
            }
            other => panic!("phone {user}: {other:?}\n{}", phone.diagnostics()),
        }
    }
    let runs: Vec<(&str, &str, String, PhoneRun)> = watchers
        .into_iter()
        .map(|(p, t, w)| (p, t, w.name.clone(), w.join()))
        .collect();
    let report = format!(
        "phones relay: {}\nupstream relay: {}\ncalls answered: {calls}, failed: {}",
        phones.stats.summary(),
        upstream.stats.summary(),
        call_failures.len()
    ) + &call_failures
        .iter()
        .map(|f| format!("\n--- failed call:\n{}", tail(f, 12)))
        .collect::<String>();
    eprintln!("{report}");
    assert!(
        phones.stats.dropped() > 0 && upstream.stats.dropped() > 0,
        "{report}"
    );
    assert!(calls >= 1, "{report}\n{}", call_failures.join("\n"));

    // A call whose BYE (or ACK) a SIPp caller gave up on stays a confirmed
    // dialog at the PBX (dialog timeout 1 h): then the right final lamp for
    // 1002 is busy, not offline. The bridge must show what the PBX says.
    let pbx_dialogs = kam.dialog_states();
    let stale_call = pbx_dialogs.iter().any(|s| (1..=4).contains(s));
    for (profile, target, name, r) in &runs {
        // no subscription lost: every refresh accepted, nothing refused or
        // terminated before the phone's own unsubscribe
        assert!(r.errors.is_empty(), "{name}: {:?}\n{report}", r.errors);
        assert!(r.refreshes >= 3, "{name}: {} refreshes", r.refreshes);
        let n = &r.notifies;
        // no version twice, none out of order (by CSeq: the bridge's order)
        let versions: Vec<u64> = n.iter().filter_map(|x| version(&x.body)).collect();
        assert!(
            versions.windows(2).all(|v| v[0] < v[1]),
            "{name}: versions {versions:?}\n{report}"
        );
        // final state: everyone un-registered → offline, then the unsubscribe
        assert!(n.last().is_some_and(PhoneNotify::is_terminated), "{name}");
        let last_active = n
            .iter()
            .rev()
            .find(|x| !x.is_terminated())
            .expect("NOTIFYs");
        if crashed.contains(target) {
            continue;
        }
        if stale_call {
            // both ends of the call the PBX still holds are in it
            let l = label(profile, &last_active.body);
            assert!(
                l == "busy" || l == "ringing",
                "{name}: the PBX still has a call ({pbx_dialogs:?}), lamp {l}\n{report}"
            );
            continue;
        }
        let offline = expected_for(
            profile,
            &format!("sip:{target}@{DOMAIN}"),
            MergedState::Offline,
        );
        assert_eq!(
            without_version(&last_active.body),
            offline,
            "{name}: the last lamp is not offline (PBX dialogs {pbx_dialogs:?})\n{report}"
        );
    }
    // 1002's watchers saw its calls
    for (profile, _, name, r) in &runs[..2] {
        let mut l: Vec<&str> = Vec::new();
        for x in r.notifies.iter().filter(|x| !x.is_terminated()) {
            let s = label(profile, &x.body);
            if l.last() != Some(&s) {
                l.push(s);
            }
        }
        assert!(l.contains(&"idle") && l.contains(&"busy"), "{name}: {l:?}");
    }
}
