//! Subscription translation end to end: SIPp phones → the blf-bridge binary →
//! Kamailio as the hosted PBX (registrar with digest auth, presence server for
//! `dialog` and `presence`, offline visible only through presence).
//!
//! The lamps of a Grandstream Wave and a GXP follow extension 1002 through
//! offline → idle → ringing → busy → idle → offline; both phones share one
//! upstream dialog and one upstream presence subscription; a Zoiper phone's
//! subscriptions are passed through untranslated.

mod common;

use common::*;
use std::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn wave_and_gxp_follow_an_extension_through_offline_idle_ringing_busy() {
    if !e2e_ready("wave_and_gxp_follow_an_extension_through_offline_idle_ringing_busy") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default()); // SUBSCRIBE challenged with 407
    let bridge = Bridge::start(&bridge_config(free_port(), kam.addr()));
    let b = bridge.addr();

    // Two phones watch 1002 (never registered yet).
    let mut wave = SippCmd::blf_watcher(b, BlfModel::Wave, "1001", "1002", secs(24)).spawn();
    let mut gxp = SippCmd::blf_watcher(b, BlfModel::Gxp, "1003", "1002", secs(24)).spawn();
    wait_lamp("grandstream-wave", &wave, &["offline"], secs(8));
    wait_lamp("grandstream-gxp", &gxp, &["offline"], secs(8));
    // the first NOTIFY is the offline document itself (never an idle flash)
    assert_eq!(
        label("grandstream-wave", &wave.notifies()[0].body),
        "offline"
    );
    assert_eq!(label("grandstream-gxp", &gxp.notifies()[0].body), "offline");
    assert!(gxp.notifies()[0].body.contains("display=\"Offline\""));

    // exactly one upstream dialog and one upstream presence subscription, made by
    // the bridge with its own credentials (the PBX challenges every SUBSCRIBE with
    // 407 and records a watcher only once authenticated)
    let d = kam.watchers_of("1002", "dialog");
    let p = kam.watchers_of("1002", "presence");
    assert_eq!((d.len(), p.len()), (1, 1), "watchers {:?}", kam.watchers());
    for w in d.iter().chain(&p) {
        assert!(
            w.from == "sip:1001@pbx.test" || w.from == "sip:1003@pbx.test",
            "the account of a watching phone: {w:?}"
        );
    }

    // 1002 registers (directly at the PBX) and answers calls after 3 s of ringing
    let mut phone = SippCmd::phone(kam.addr(), "1002", secs(12))
        .set("ringing_ms", "3000")
        .spawn();
    wait_lamp("grandstream-wave", &wave, &["offline", "idle"], secs(8));
    wait_lamp("grandstream-gxp", &gxp, &["offline", "idle"], secs(8));

    // 1003 calls 1002: ringing, answered (busy), hung up after 3 s (idle)
    let mut call = SippCmd::caller(kam.addr(), "1003", "1002", secs(3)).spawn();
    wait_lamp("grandstream-gxp", &gxp, &["idle", "ringing"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["idle", "ringing"], secs(8));
    wait_lamp("grandstream-gxp", &gxp, &["ringing", "busy"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["ringing", "busy"], secs(8));
    call.wait_success(secs(15));
    wait_lamp("grandstream-gxp", &gxp, &["busy", "idle"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["busy", "idle"], secs(8));

    // 1002 un-registers: offline again
    phone.wait_success(secs(20));
    wait_lamp("grandstream-gxp", &gxp, &["idle", "offline"], secs(8));
    wait_lamp("grandstream-wave", &wave, &["idle", "offline"], secs(8));

    wave.wait_success(secs(30));
    gxp.wait_success(secs(30));
    for (profile, s) in [("grandstream-wave", &wave), ("grandstream-gxp", &gxp)] {
        assert_eq!(
            lamp(profile, s),
            ["offline", "idle", "ringing", "busy", "idle", "offline"],
            "{profile}\n{}",
            s.diagnostics()
        );
        let n = s.notifies();
        // the unsubscribe is confirmed by a terminated NOTIFY
        assert!(n.last().is_some_and(Notify::is_terminated), "{profile}");
        // versions 0, 1, 2, … per phone subscription; CSeq strictly increasing
        for (i, x) in n.iter().enumerate() {
            assert!(
                x.body.contains(&format!("version=\"{i}\"")),
                "{profile}: NOTIFY {i} has the wrong version: {}",
                x.body
            );
            assert!(x.body.contains("entity=\"sip:1002@pbx.test\""));
            assert_eq!(x.event.as_deref(), Some("dialog"));
        }
        assert!(n.windows(2).all(|w| w[0].cseq < w[1].cseq), "{profile}");
    }
    // Wave only ever gets confirmed/terminated
    for n in wave.notifies() {
        for st in n.dialog_states() {
            assert!(st == "confirmed" || st == "terminated", "Wave got {st}");
        }
    }
}

#[test]
fn zoiper_subscriptions_pass_through_untranslated() {
    if !e2e_ready("zoiper_subscriptions_pass_through_untranslated") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default());
    let bridge = Bridge::start(&bridge_config(free_port(), kam.addr()));
    let b = bridge.addr();

    // Zoiper's BLF (Event: dialog) and presence subscriptions through the bridge
    let mut blf = SippCmd::blf_watcher(b, BlfModel::Zoiper, "1001", "1002", secs(4)).spawn();
    let mut pres = SippCmd::presence_watcher(b, "1001", "1002", secs(4)).spawn();
    assert!(
        wait_until(secs(8), POLL, || {
            !blf.notifies().is_empty() && !pres.notifies().is_empty()
        }),
        "both get NOTIFYs\n{}\n{}",
        blf.diagnostics(),
        pres.diagnostics()
    );
    // the PBX itself answered them: the dialog document is Kamailio's dummy (not a
    // rendering of ours) and the presence NOTIFY is the PBX's bodiless one
    let first = &blf.notifies()[0];
    assert!(
        first.body.contains("615293b33c62dec073e05d9421e9f48b"),
        "Kamailio's own document: {}",
        first.body
    );
    // the PBX challenged the phone itself (the bridge never challenges)
    assert!(
        blf.received_statuses().contains(&407),
        "{}",
        blf.diagnostics()
    );
    assert!(
        pres.received_statuses().contains(&407),
        "{}",
        pres.diagnostics()
    );
    // the PBX sees the phone's own subscriptions, From the phone
    let d = kam.watchers_of("1002", "dialog");
    assert!(d.iter().all(|w| w.from == "sip:1001@pbx.test"), "{d:?}");
    blf.wait_success(secs(15));
    pres.wait_success(secs(15));
}
