//! A restart of the bridge is invisible to the phones and to calls, end to end:
//! the blf-bridge binary with its state directory, Kamailio as the hosted PBX,
//! SIPp phones. A GXP watches 1002; 1002 is registered through the bridge;
//! 1003 is registered directly at the PBX. The bridge is killed with SIGKILL
//! (a) while 1002 is idle and (b) during a call 1003 → 1002, and (c) stopped
//! with SIGTERM; each time it is started again on the same state directory.

mod common;

use common::*;
use std::time::Duration;

const GXP: &str = "grandstream-gxp";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Wait (≤ `within`) for a NOTIFY after the first `seen`, and check it: active,
/// CSeq and dialog-info version above every NOTIFY before, in the same dialog,
/// showing `want`.
fn assert_resumed(gxp: &Sipp, seen: usize, want: &str, within: Duration, what: &str) -> usize {
    let ok = wait_until(within, POLL, || {
        gxp.notifies()
            .iter()
            .skip(seen)
            .any(|n| !n.is_terminated() && label(GXP, &n.body) == want)
    });
    let all = gxp.notifies();
    assert!(
        ok,
        "{what}: no NOTIFY showing {want} within {within:?} after the restart; lamps {:?}\n{}",
        lamp(GXP, gxp),
        gxp.diagnostics()
    );
    let (before, after) = all.split_at(seen);
    let max_cseq = before.iter().map(|n| n.cseq).max().unwrap_or(0);
    let max_version = before
        .iter()
        .filter_map(|n| version(&n.body))
        .max()
        .unwrap_or(0);
    for n in after {
        assert!(
            !n.is_terminated(),
            "{what}: the phone got a terminated NOTIFY: {n:?}"
        );
        assert_eq!(n.call_id, before[0].call_id, "{what}: same dialog");
        assert!(
            n.cseq > max_cseq,
            "{what}: CSeq {} after {max_cseq}",
            n.cseq
        );
        let v = version(&n.body).expect("version");
        assert!(v > max_version, "{what}: version {v} after {max_version}");
    }
    all.len()
}

/// The `version` attribute of the dialog-info root.
fn version(body: &str) -> Option<u32> {
    let root = &body[body.find("<dialog-info")?..];
    let i = root.find(" version=\"")? + " version=\"".len();
    root[i..].split('"').next()?.parse().ok()
}

#[test]
fn bridge_restarts_are_invisible_to_a_watching_gxp_and_to_calls() {
    if !e2e_ready("bridge_restarts_are_invisible_to_a_watching_gxp_and_to_calls") {
        return;
    }
    let kam = Kamailio::start(KamailioOpts::default());
    let mut bridge = Bridge::start(&bridge_config(free_port(), kam.addr()));
    let b = bridge.addr();

    // 1002 registers through the bridge and answers calls after 1 s of ringing
    let mut p1002 = SippCmd::phone(b, "1002", secs(75))
        .set("ringing_ms", "1000")
        .limit(secs(110))
        .spawn();
    assert!(
        wait_until(secs(10), POLL, || kam.is_registered("1002")),
        "1002 registered through the bridge\n{}",
        p1002.diagnostics()
    );
    let mut gxp = SippCmd::blf_watcher(b, BlfModel::Gxp, "1001", "1002", secs(70))
        .limit(secs(110))
        .spawn();
    wait_lamp(GXP, &gxp, &["idle"], secs(8));
    let mut seen = gxp.notifies().len();

    // (a) SIGKILL while idle
    bridge.kill();
    bridge.restart();
    assert_resumed(&gxp, seen, "idle", secs(5), "(a) killed while idle");
    // a call from 1003 (at the PBX) reaches 1002 through the restarted bridge
    let mut call = SippCmd::caller(kam.addr(), "1003", "1002", Duration::from_millis(500)).spawn();
    call.wait_success(secs(20));
    wait_lamp(GXP, &gxp, &["busy", "idle"], secs(8));
    seen = gxp.notifies().len();

    // (b) SIGKILL during a call: the BYE of the call set up before still reaches 1002
    let mut call = SippCmd::caller(kam.addr(), "1003", "1002", secs(8)).spawn();
    wait_lamp(GXP, &gxp, &["busy"], secs(10));
    seen = seen.max(gxp.notifies().len());
    bridge.kill();
    bridge.restart();
    seen = assert_resumed(&gxp, seen, "busy", secs(5), "(b) killed during a call");
    // 1003 hangs up after 8 s: its BYE goes PBX → bridge (flow token) → 1002
    call.wait_success(secs(20));
    wait_lamp(GXP, &gxp, &["busy", "idle"], secs(8));
    seen = seen.max(gxp.notifies().len());

    // (c) SIGTERM: a graceful stop, exit 0, phone subscriptions not terminated
    let status = bridge.stop(secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "graceful stop exits 0: {status:?}\n{}",
        tail(&bridge.log(), 30)
    );
    bridge.restart();
    assert_resumed(&gxp, seen, "idle", secs(5), "(c) SIGTERM");
    // and calls still work
    let mut call = SippCmd::caller(kam.addr(), "1003", "1002", Duration::from_millis(500)).spawn();
    call.wait_success(secs(20));

    // the GXP ends its subscription itself; it never got 481 (the scenario
    // fails on one) nor an early terminated NOTIFY
    gxp.wait_success(secs(60));
    let n = gxp.notifies();
    let terminated: Vec<usize> = (0..n.len()).filter(|&i| n[i].is_terminated()).collect();
    assert_eq!(
        terminated,
        vec![n.len() - 1],
        "only the final NOTIFY is terminated"
    );
    assert!(
        !gxp.received_statuses().contains(&481),
        "{}",
        gxp.diagnostics()
    );
    p1002.wait_success(secs(60));
}

/// The hosted PBX restarts: Kamailio is killed with SIGKILL for 20 s and comes
/// back on the same port with a fresh database (no registrations, no
/// subscriptions). Two GXP keys watch 1002 (never registered: offline) and 1003
/// (registered directly at the PBX: idle). While the PBX is away the phones get
/// their profile's `unknown` rendering, never a stale state; within 10 s of its
/// return every lamp is right — 1003 included, which went offline meanwhile.
#[test]
fn upstream_restart_shows_unknown_then_every_lamp_right_within_10_s() {
    if !e2e_ready("upstream_restart_shows_unknown_then_every_lamp_right_within_10_s") {
        return;
    }
    use blf_bridge::presence::MergedState;
    let kam = Kamailio::start(KamailioOpts::default());
    let pbx = kam.addr();
    // keep-alive every 5 s: the loss is noticed one unanswered interval later
    // a PBX that is still starting may refuse a first SUBSCRIBE: retry after 1 s
    // rather than the default 5 s, so the 10 s bound measures the bridge
    let config = bridge_config(free_port(), pbx).replace(
        "transport = \"udp\"\n",
        "transport = \"udp\"\nkeepalive_interval = 5\n",
    ) + "\n[subscriptions]\nretry_min = 1\n";
    let bridge = Bridge::start(&config);
    let b = bridge.addr();

    let mut p1003 = SippCmd::phone(pbx, "1003", secs(25))
        .limit(secs(60))
        .spawn();
    assert!(wait_until(secs(10), POLL, || kam.is_registered("1003")));
    let mut key1002 = SippCmd::blf_watcher(b, BlfModel::Gxp, "1001", "1002", secs(60))
        .limit(secs(110))
        .spawn();
    let mut key1003 = SippCmd::blf_watcher(b, BlfModel::Gxp, "1001", "1003", secs(60))
        .limit(secs(110))
        .spawn();
    wait_lamp(GXP, &key1002, &["offline"], secs(8));
    let ok = wait_until(secs(8), POLL, || {
        key1003
            .notifies()
            .last()
            .is_some_and(|n| renders(GXP, &n.body, MergedState::Idle))
    });
    assert!(ok, "1003 idle\n{}", key1003.diagnostics());
    let seen1002 = key1002.notifies().len();

    // the PBX crashes; 1003's phone loses its registrar with it
    kam.kill();
    let killed = std::time::Instant::now();
    p1003.kill();
    // within two keep-alive intervals: 1002's key leaves "offline" for the
    // profile's unknown rendering (1003's unknown looks like its idle on a GXP)
    let unknown = wait_until(secs(15), POLL, || {
        key1002
            .notifies()
            .iter()
            .skip(seen1002)
            .any(|n| renders(GXP, &n.body, MergedState::Unknown))
    });
    assert!(
        unknown,
        "1002 unknown while the PBX is away; lamps {:?}\n{}",
        lamp(GXP, &key1002),
        tail(&bridge.log(), 30)
    );
    // away for 20 s in all
    std::thread::sleep(secs(20).saturating_sub(killed.elapsed()));
    let seen1003 = key1003.notifies().len();
    for n in key1003.notifies() {
        assert!(
            renders(GXP, &n.body, MergedState::Idle) || renders(GXP, &n.body, MergedState::Unknown),
            "1003 never shows a stale or invented state: {}",
            n.body
        );
    }

    // the PBX comes back on the same port, with a fresh database
    let kam = Kamailio::start(KamailioOpts {
        port: Some(pbx.port()),
        ..KamailioOpts::default()
    });
    let right = |s: &Sipp, from: usize| {
        s.notifies()
            .iter()
            .skip(from)
            .last()
            .is_some_and(|n| renders(GXP, &n.body, MergedState::Offline))
    };
    let ok = wait_until(secs(10), POLL, || {
        right(&key1002, seen1002) && right(&key1003, seen1003)
    });
    assert!(
        ok,
        "within 10 s of the PBX's return both keys show offline: 1002 {:?}, 1003 {:?}\n{}",
        lamp(GXP, &key1002),
        lamp(GXP, &key1003),
        tail(&bridge.log(), 40)
    );
    // the bridge subscribed afresh at the new PBX, both packages, with its own account
    let all = wait_until(secs(10), POLL, || {
        ["1002", "1003"].iter().all(|t| {
            kam.watchers_of(t, "dialog").len() == 1 && kam.watchers_of(t, "presence").len() == 1
        })
    });
    assert!(all, "{:?}\n{}", kam.watchers(), tail(&bridge.log(), 60));
    key1002.wait_success(secs(60));
    key1003.wait_success(secs(60));
}
