//! BLF lamps as a phone shows them: the state a dialog-info NOTIFY body means in
//! a profile's terms (its rendering of offline and idle, else the dialog state),
//! and waits on the sequence of lamps a SIPp watcher saw.
#![allow(dead_code)]

use super::process::wait_until;
use super::sipp::Sipp;
use blf_bridge::presence::{MergedState, TargetView};
use blf_bridge::profile::{ProfileSet, Rendering, render};
use std::time::Duration;

/// Poll interval of the lamp waits.
pub const POLL: Duration = Duration::from_millis(50);

/// dialog-info with the `version` attribute blanked, trailing space trimmed.
pub fn without_version(body: &str) -> String {
    let body = body.trim_end();
    let root = body.find("<dialog-info").unwrap_or(0);
    match body[root..].find(" version=\"") {
        Some(i) => {
            let start = root + i + " version=\"".len();
            let end = body[start..].find('"').map_or(body.len(), |e| start + e);
            format!("{}_{}", &body[..start], &body[end..])
        }
        None => body.to_string(),
    }
}

/// What the bridge must send a phone of `profile` for a call-less state of 1002.
pub fn expected(profile: &str, state: MergedState) -> String {
    expected_for(profile, "sip:1002@pbx.test", state)
}

/// What the bridge must send a phone of `profile` for a call-less state of `aor`.
pub fn expected_for(profile: &str, aor: &str, state: MergedState) -> String {
    let set = ProfileSet::builtin();
    let p = set.get(profile).expect("profile");
    match render(p, aor, &TargetView::new(state)) {
        Rendering::Document(d) => without_version(&d.with_version(0)),
        Rendering::Terminate { .. } => panic!("{profile} {state} is not a document"),
    }
}

/// Whether a NOTIFY body is exactly `profile`'s rendering of a call-less `state`
/// (some profiles render `unknown` like `idle`: then both are true).
pub fn renders(profile: &str, body: &str, state: MergedState) -> bool {
    let entity = body
        .split_once("entity=\"")
        .and_then(|(_, r)| r.split('"').next())
        .unwrap_or("sip:1002@pbx.test");
    without_version(body) == expected_for(profile, entity, state)
}

/// The lamp state a NOTIFY body shows, in this profile's terms.
pub fn label(profile: &str, body: &str) -> &'static str {
    let b = without_version(body);
    if b == expected(profile, MergedState::Offline) {
        return "offline";
    }
    if b == expected(profile, MergedState::Idle) {
        return "idle";
    }
    if b == expected(profile, MergedState::Unknown) {
        return "unknown";
    }
    let early = body.contains("<state>early</state>");
    let confirmed = body.contains("<state>confirmed</state>");
    let pickup = body.contains("local-tag=") && body.contains("call-id=");
    match (profile, early, confirmed, pickup) {
        (_, true, _, _) => "ringing",
        // Wave shows ringing as confirmed; the pickup data tells it apart
        ("grandstream-wave", false, true, true) => "ringing",
        (_, false, true, _) => "busy",
        _ => "other",
    }
}

/// The successive distinct lamp states of a watcher's active NOTIFYs.
pub fn lamp(profile: &str, sipp: &Sipp) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for n in sipp.notifies() {
        if n.is_terminated() {
            continue;
        }
        let l = label(profile, &n.body);
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

pub fn wait_lamp(profile: &str, sipp: &Sipp, want: &[&str], timeout: Duration) {
    let ok = wait_until(timeout, POLL, || lamp(profile, sipp).ends_with(want));
    assert!(
        ok,
        "{profile}: lamp {:?} should end with {want:?}\n{}",
        lamp(profile, sipp),
        sipp.diagnostics()
    );
}

/// SRV failover tests: wait until the GXP `gxp` watching 1002 shows a lamp
/// sequence ending with `lamps` AND `server` holds the bridge's `dialog`
/// subscription to 1002 (so the bridge listens to that server); panics after
/// `within` with `what`, the lamps and the bridge's log.
pub fn wait_on_server(
    server: &super::Kamailio,
    gxp: &Sipp,
    lamps: &[&str],
    within: Duration,
    bridge: &super::Bridge,
    what: &str,
) {
    const GXP: &str = "grandstream-gxp";
    let done = wait_until(within, POLL, || {
        lamp(GXP, gxp).ends_with(lamps) && !server.watchers_of("1002", "dialog").is_empty()
    });
    assert!(
        done,
        "{what} within {within:?}: lamps {:?}\n{}",
        lamp(GXP, gxp),
        super::tail(&bridge.log(), 40)
    );
}
