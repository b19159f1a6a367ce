//! The merge of a dialog stream and a presence stream: every combination, the
//! priorities between dialogs, and a real timeline.

use super::*;

#[derive(Debug, Clone, Copy)]
enum Dlg {
    Unknown,
    KnownEmpty,
    EarlyRecipient,
    EarlyInitiator,
    Confirmed,
    ConfirmedHeld,
    TerminatedOnly,
    RingingAndBusy,
}

#[derive(Debug, Clone, Copy)]
enum Pres {
    Unknown,
    Offline,
    Online,
    OnThePhone,
}

fn dialog_stream(d: Dlg) -> DialogStream {
    let mut ds = DialogStream::new();
    let name = match d {
        Dlg::Unknown => return ds,
        Dlg::KnownEmpty => "opensips-dialog-idle.xml",
        Dlg::EarlyRecipient => "kamailio-dialog-v2-early.xml",
        Dlg::EarlyInitiator => "constructed-dialog-early-initiator.xml",
        Dlg::Confirmed => "kamailio-dialog-v3-confirmed.xml",
        Dlg::ConfirmedHeld => "freeswitch-dialog-held.xml",
        Dlg::TerminatedOnly => "kamailio-dialog-v4-terminated.xml",
        Dlg::RingingAndBusy => "constructed-dialog-ringing-and-busy.xml",
    };
    let out = ds.apply_body(body(name)).unwrap();
    assert!(
        matches!(out, ApplyOutcome::Applied { .. }),
        "{name}: {out:?}"
    );
    ds
}

fn presence_stream(p: Pres) -> PresenceStream {
    let mut ps = PresenceStream::new();
    let name = match p {
        Pres::Unknown => return ps,
        Pres::Offline => "kamailio-presence-closed.xml",
        Pres::Online => "kamailio-presence-open.xml",
        Pres::OnThePhone => "freeswitch-pidf-on-the-phone.xml",
    };
    ps.apply_body(body(name), EmptyPresence::Offline).unwrap();
    ps
}

/// The call details each dialog variant must yield, written out from the sample text.
fn expected_call(d: Dlg) -> Option<PickupInfo> {
    Some(match d {
        Dlg::Unknown | Dlg::KnownEmpty | Dlg::TerminatedOnly => return None,
        Dlg::EarlyRecipient => PickupInfo {
            call_id: s("1-5707@127.0.0.1"),
            local_tag: s("5549SIPpTag010"),
            remote_tag: s("5707SIPpTag001"),
            direction: Some(Direction::Recipient),
            remote_identity: s("sip:1003@pbx.test"),
            remote_display: None,
            remote_target: s("sip:1003@127.0.0.1:5074;transport=UDP"),
            local_identity: s("sip:1002@pbx.test"),
            local_target: s("sip:1002@127.0.0.1:5073;transport=UDP"),
        },
        Dlg::EarlyInitiator => PickupInfo {
            call_id: s("1-6001@127.0.0.1"),
            local_tag: s("6001SIPpTag001"),
            remote_tag: s("6123SIPpTag010"),
            direction: Some(Direction::Initiator),
            remote_identity: s("sip:1003@pbx.test"),
            remote_display: None,
            remote_target: s("sip:1003@pbx.test"),
            local_identity: s("sip:1002@pbx.test"),
            local_target: s("sip:1002@127.0.0.1:5073;transport=UDP"),
        },
        Dlg::Confirmed => PickupInfo {
            call_id: s("1-5707@127.0.0.1"),
            local_tag: None,
            remote_tag: None,
            direction: Some(Direction::Recipient),
            remote_identity: s("sip:1003@pbx.test"),
            remote_display: None,
            remote_target: s("sip:1003@127.0.0.1:5074;transport=UDP"),
            local_identity: s("sip:1002@pbx.test"),
            local_target: s("sip:1002@pbx.test"),
        },
        Dlg::ConfirmedHeld => PickupInfo {
            call_id: None,
            local_tag: None,
            remote_tag: None,
            direction: Some(Direction::Recipient),
            remote_identity: s("sip:1002@host"),
            remote_display: s("Caller Name"),
            remote_target: s("sip:**1001@host"),
            local_identity: s("sip:1001@host"),
            local_target: s("sip:1001@host"),
        },
        Dlg::RingingAndBusy => PickupInfo {
            call_id: s("1-7002@127.0.0.1"),
            local_tag: s("7002SIPpTag010"),
            remote_tag: s("7002SIPpTag001"),
            direction: Some(Direction::Recipient),
            remote_identity: s("sip:1003@pbx.test"),
            remote_display: s("Carol"),
            remote_target: s("sip:1003@127.0.0.1:5074;transport=UDP"),
            local_identity: s("sip:1002@pbx.test"),
            local_target: s("sip:1002@127.0.0.1:5073;transport=UDP"),
        },
    })
}

#[test]
fn merge_table_every_combination() {
    use MergedState as M;
    #[rustfmt::skip]
    let table: &[(Dlg, Pres, MergedState)] = &[
        (Dlg::Unknown,        Pres::Unknown,    M::Unknown),
        (Dlg::Unknown,        Pres::Offline,    M::Offline),
        (Dlg::Unknown,        Pres::Online,     M::Idle),
        (Dlg::Unknown,        Pres::OnThePhone, M::Busy),
        (Dlg::KnownEmpty,     Pres::Unknown,    M::Idle),
        (Dlg::KnownEmpty,     Pres::Offline,    M::Offline),
        (Dlg::KnownEmpty,     Pres::Online,     M::Idle),
        (Dlg::KnownEmpty,     Pres::OnThePhone, M::Idle),
        (Dlg::EarlyRecipient, Pres::Unknown,    M::Ringing),
        (Dlg::EarlyRecipient, Pres::Offline,    M::Ringing),
        (Dlg::EarlyRecipient, Pres::Online,     M::Ringing),
        (Dlg::EarlyRecipient, Pres::OnThePhone, M::Ringing),
        (Dlg::EarlyInitiator, Pres::Unknown,    M::Busy),
        (Dlg::EarlyInitiator, Pres::Offline,    M::Busy),
        (Dlg::EarlyInitiator, Pres::Online,     M::Busy),
        (Dlg::EarlyInitiator, Pres::OnThePhone, M::Busy),
        (Dlg::Confirmed,      Pres::Unknown,    M::Busy),
        (Dlg::Confirmed,      Pres::Offline,    M::Busy),
        (Dlg::Confirmed,      Pres::Online,     M::Busy),
        (Dlg::Confirmed,      Pres::OnThePhone, M::Busy),
        (Dlg::ConfirmedHeld,  Pres::Unknown,    M::Held),
        (Dlg::ConfirmedHeld,  Pres::Offline,    M::Held),
        (Dlg::ConfirmedHeld,  Pres::Online,     M::Held),
        (Dlg::ConfirmedHeld,  Pres::OnThePhone, M::Held),
        (Dlg::TerminatedOnly, Pres::Unknown,    M::Idle),
        (Dlg::TerminatedOnly, Pres::Offline,    M::Offline),
        (Dlg::TerminatedOnly, Pres::Online,     M::Idle),
        (Dlg::TerminatedOnly, Pres::OnThePhone, M::Idle),
        (Dlg::RingingAndBusy, Pres::Unknown,    M::Ringing),
        (Dlg::RingingAndBusy, Pres::Offline,    M::Ringing),
        (Dlg::RingingAndBusy, Pres::Online,     M::Ringing),
        (Dlg::RingingAndBusy, Pres::OnThePhone, M::Ringing),
    ];
    assert_eq!(table.len(), 8 * 4);
    for &(d, p, want) in table {
        let got = merge(&dialog_stream(d), &presence_stream(p));
        assert_eq!(got.state, want, "{d:?} × {p:?}");
        assert_eq!(got.call, expected_call(d), "{d:?} × {p:?}");
    }
}

#[test]
fn merge_priority_ringing_over_held_over_busy_in_any_order() {
    let mut busy = DialogEntry::new("busy", DialogState::Confirmed);
    busy.call_id = s("c-busy");
    let mut held = DialogEntry::new("held", DialogState::Confirmed);
    held.call_id = s("c-held");
    held.local.target_params.push(TargetParam {
        name: "+sip.rendering".into(),
        value: "no".into(),
    });
    let mut ring = DialogEntry::new("ring", DialogState::Proceeding);
    ring.call_id = s("c-ring");
    let mut out = DialogEntry::new("out", DialogState::Trying);
    out.direction = Some(Direction::Initiator);
    out.call_id = s("c-out");
    let orders: [[&DialogEntry; 4]; 3] = [
        [&busy, &held, &ring, &out],
        [&ring, &out, &held, &busy],
        [&out, &held, &busy, &ring],
    ];
    for order in orders {
        let doc = |entries: &[&DialogEntry]| DialogInfoDoc {
            version: None,
            state: DocState::Full,
            entity: None,
            dialogs: entries.iter().map(|e| (*e).clone()).collect(),
        };
        let check = |entries: &[&DialogEntry], want: MergedState, call: &str| {
            let mut ds = DialogStream::new();
            ds.apply_doc(doc(entries));
            let v = merge(&ds, &PresenceStream::new());
            assert_eq!(
                (v.state, v.call.and_then(|c| c.call_id)),
                (want, s(call)),
                "{entries:?}"
            );
        };
        check(&order, MergedState::Ringing, "c-ring");
        let no_ring: Vec<_> = order.iter().copied().filter(|e| e.id != "ring").collect();
        check(&no_ring, MergedState::Held, "c-held");
        let busy_only: Vec<_> = no_ring.iter().copied().filter(|e| e.id != "held").collect();
        // Placing a call and being in one are both busy: the first one listed is shown.
        let first = busy_only.first().and_then(|e| e.call_id.clone()).unwrap();
        check(&busy_only, MergedState::Busy, &first);
    }
}

#[test]
fn trying_and_proceeding_without_direction_ring() {
    for st in [
        DialogState::Trying,
        DialogState::Proceeding,
        DialogState::Early,
    ] {
        for (dir, want) in [
            (None, MergedState::Ringing),
            (Some(Direction::Recipient), MergedState::Ringing),
            (Some(Direction::Initiator), MergedState::Busy),
        ] {
            let mut e = DialogEntry::new("d", st);
            e.direction = dir;
            let mut ds = DialogStream::new();
            ds.apply_doc(DialogInfoDoc {
                version: Some(0),
                state: DocState::Full,
                entity: None,
                dialogs: vec![e],
            });
            assert_eq!(
                merge(&ds, &PresenceStream::new()).state,
                want,
                "{st:?} {dir:?}"
            );
        }
    }
}

#[test]
fn asterisk_pjsip_timeline_merges_with_presence() {
    let mut ds = DialogStream::new();
    let ps = presence_stream(Pres::Online);
    let mut states = Vec::new();
    for name in [
        "asterisk-pjsip-dialog-v0-terminated.xml",
        "asterisk-pjsip-dialog-v1-early.xml",
        "asterisk-pjsip-dialog-v2-confirmed.xml",
        "asterisk-pjsip-dialog-v3-hold.xml",
        "asterisk-pjsip-dialog-v0-terminated.xml",
    ] {
        ds.apply_body(body(name)).unwrap();
        states.push(merge(&ds, &ps).state);
    }
    use MergedState as M;
    // The final v0 is stale (a real PJSIP would send v4), so Held remains.
    assert_eq!(states, [M::Idle, M::Ringing, M::Busy, M::Held, M::Held]);
}
