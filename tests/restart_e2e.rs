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
    let max_version = before.iter().filter_map(|n| version(&n.body)).max().unwrap_or(0);
    for n in after {
        assert!(!n.is_terminated(), "{what}: the phone got a terminated NOTIFY: {n:?}");
        assert_eq!(n.call_id, before[0].call_id, "{what}: same dialog");
        assert!(n.cseq > max_cseq, "{what}: CSeq {} after {max_cseq}", n.cseq);
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
    seen = assert_resumed(&gxp, seen, "idle", secs(5), "(a) killed while idle");
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
    assert_eq!(terminated, vec![n.len() - 1], "only the final NOTIFY is terminated");
    assert!(
        !gxp.received_statuses().contains(&481),
        "{}",
        gxp.diagnostics()
    );
    p1002.wait_success(secs(60));
}
