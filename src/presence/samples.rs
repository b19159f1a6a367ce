//! Tests against real upstream bodies (tests/data/presence/, see its README):
//! Kamailio captures from the upstream harness, FreeSWITCH / Asterisk / BroadWorks
//! bodies from the protocol notes, and a few constructed documents. Also the full
//! merge table and truncation/mutation robustness.

use super::*;
use crate::config::EmptyPresence;
use crate::util::Rng;

macro_rules! sample {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../tests/data/presence/", $name)).as_slice(),
        )
    };
}

const DIALOG_SAMPLES: &[(&str, &[u8])] = &[
    sample!("kamailio-dialog-v1-dummy.xml"),
    sample!("kamailio-dialog-v2-early.xml"),
    sample!("kamailio-dialog-v3-confirmed.xml"),
    sample!("kamailio-dialog-v4-terminated.xml"),
    sample!("kamailio-dialog-v5-dummy.xml"),
    sample!("kamailio-dialog-dummy-template.xml"),
    sample!("opensips-dialog-idle.xml"),
    sample!("freeswitch-dialog-early.xml"),
    sample!("freeswitch-dialog-held.xml"),
    sample!("freeswitch-dialog-idle.xml"),
    sample!("asterisk-chansip-dialog-early.xml"),
    sample!("asterisk-pjsip-dialog-v0-terminated.xml"),
    sample!("asterisk-pjsip-dialog-v1-early.xml"),
    sample!("asterisk-pjsip-dialog-v2-confirmed.xml"),
    sample!("asterisk-pjsip-dialog-v3-hold.xml"),
    sample!("mikopbx-dialog-confirmed.xml"),
    sample!("broadworks-dialog-confirmed.xml"),
    sample!("constructed-dialog-early-initiator.xml"),
    sample!("constructed-dialog-ringing-and-busy.xml"),
    sample!("constructed-dialog-partial-v0-full.xml"),
    sample!("constructed-dialog-partial-v1-add-early.xml"),
    sample!("constructed-dialog-partial-v2-terminate.xml"),
    sample!("constructed-dialog-partial-v4-gap.xml"),
];

const PIDF_SAMPLES: &[(&str, &[u8])] = &[
    sample!("kamailio-presence-open.xml"),
    sample!("kamailio-presence-closed.xml"),
    sample!("kamailio-presence-dummy.xml"),
    sample!("freeswitch-pidf-unregistered.xml"),
    sample!("freeswitch-pidf-on-the-phone.xml"),
    sample!("asterisk-chansip-pidf-unavailable.xml"),
    sample!("asterisk-chansip-pidf-on-the-phone.xml"),
    sample!("asterisk-pjsip-pidf-on-the-phone.xml"),
];

fn body(name: &str) -> &'static [u8] {
    DIALOG_SAMPLES
        .iter()
        .chain(PIDF_SAMPLES)
        .chain([sample!("kamailio-presence-nobody.xml")].iter())
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

fn dialog(name: &str) -> DialogInfoDoc {
    parse_dialog_info(body(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn pidf(name: &str) -> PidfDoc {
    parse_pidf(body(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

// ------------------------------------------------------------------ dialog-info samples

#[test]
fn kamailio_dummy_with_tabs_is_one_terminated_dialog() {
    let body = body("kamailio-dialog-v1-dummy.xml");
    assert!(
        body.contains(&b'\t'),
        "the capture has literal TABs around <state>"
    );
    let d = dialog("kamailio-dialog-v1-dummy.xml");
    assert_eq!(d.version, Some(1));
    assert_eq!(d.state, DocState::Full);
    assert_eq!(d.entity.as_deref(), Some("sip:1002@pbx.test"));
    assert_eq!(d.dialogs.len(), 1);
    let e = &d.dialogs[0];
    assert_eq!(e.id, "615293b33c62dec073e05d9421e9f48b");
    assert_eq!(e.state, DialogState::Terminated);
    assert_eq!(e.direction, Some(Direction::Recipient));
    assert_eq!(e.call_id, None);
    assert_eq!(e.local, Participant::default());

    // The notify_body.c template: no namespace, no root attributes, TAB-indented.
    let t = dialog("kamailio-dialog-dummy-template.xml");
    assert_eq!(
        (t.version, t.state, t.entity.as_deref()),
        (None, DocState::Full, None)
    );
    assert_eq!(t.dialogs.len(), 1);
    assert_eq!(t.dialogs[0].state, DialogState::Terminated);
}

#[test]
fn kamailio_early_carries_tags_and_the_phone_contact() {
    let d = dialog("kamailio-dialog-v2-early.xml");
    assert_eq!(d.version, Some(2));
    let e = &d.dialogs[0];
    assert_eq!(e.id, "padi-6b07e5f5-150a-1");
    assert_eq!(e.state, DialogState::Early);
    assert_eq!(e.call_id.as_deref(), Some("1-5707@127.0.0.1"));
    assert_eq!(e.local_tag.as_deref(), Some("5549SIPpTag010"));
    assert_eq!(e.remote_tag.as_deref(), Some("5707SIPpTag001"));
    assert_eq!(e.remote.identity.as_deref(), Some("sip:1003@pbx.test"));
    assert_eq!(e.remote.display, None);
    assert_eq!(
        e.remote.target.as_deref(),
        Some("sip:1003@127.0.0.1:5074;transport=UDP")
    );
    assert_eq!(e.local.identity.as_deref(), Some("sip:1002@pbx.test"));
    assert_eq!(
        e.local.target.as_deref(),
        Some("sip:1002@127.0.0.1:5073;transport=UDP")
    );
    assert!(!e.is_held());
}

#[test]
fn kamailio_confirmed_and_terminated_drop_the_tags() {
    for (name, state) in [
        ("kamailio-dialog-v3-confirmed.xml", DialogState::Confirmed),
        ("kamailio-dialog-v4-terminated.xml", DialogState::Terminated),
    ] {
        let d = dialog(name);
        let e = &d.dialogs[0];
        assert_eq!(e.state, state, "{name}");
        assert_eq!(e.call_id.as_deref(), Some("1-5707@127.0.0.1"));
        assert_eq!(
            (e.local_tag.as_deref(), e.remote_tag.as_deref()),
            (None, None)
        );
        assert_eq!(e.local.target.as_deref(), Some("sip:1002@pbx.test"));
    }
}

#[test]
fn freeswitch_dialogs_with_rendering_params() {
    let e = &dialog("freeswitch-dialog-early.xml").dialogs[0];
    assert_eq!(e.state, DialogState::Early);
    assert_eq!(e.local.rendering(), Some(true));
    assert_eq!(e.remote.display.as_deref(), Some("Caller Name"));
    assert_eq!(e.remote.target.as_deref(), Some("sip:**1001@host"));
    assert_eq!(e.local.display.as_deref(), Some("1001"));
    let e = &dialog("freeswitch-dialog-held.xml").dialogs[0];
    assert_eq!(e.state, DialogState::Confirmed);
    assert!(e.is_held());
    assert_eq!(
        e.local.target_params,
        [TargetParam {
            name: "+sip.rendering".into(),
            value: "no".into()
        }]
    );
    assert!(dialog("freeswitch-dialog-idle.xml").dialogs.is_empty());
    assert!(dialog("opensips-dialog-idle.xml").dialogs.is_empty());
}

#[test]
fn asterisk_dialogs() {
    // chan_sip: <state> after <remote>/<local>, fake pickup call-id.
    let e = &dialog("asterisk-chansip-dialog-early.xml").dialogs[0];
    assert_eq!(e.state, DialogState::Early);
    assert_eq!(e.call_id.as_deref(), Some("pickup-3c2a7f0e1b@10.0.0.5"));
    assert_eq!(e.remote.display.as_deref(), Some("Caller"));
    assert_eq!(e.local.identity.as_deref(), Some("sip:1001@domain"));
    // PJSIP testsuite sequence.
    let seq: Vec<_> = [
        "asterisk-pjsip-dialog-v0-terminated.xml",
        "asterisk-pjsip-dialog-v1-early.xml",
        "asterisk-pjsip-dialog-v2-confirmed.xml",
        "asterisk-pjsip-dialog-v3-hold.xml",
    ]
    .iter()
    .map(|n| {
        let d = dialog(n);
        let e = &d.dialogs[0];
        (d.version, e.id.clone(), e.state, e.direction, e.is_held())
    })
    .collect();
    assert_eq!(
        seq,
        [
            (
                Some(0),
                "presence".to_owned(),
                DialogState::Terminated,
                None,
                false
            ),
            (
                Some(1),
                "presence".to_owned(),
                DialogState::Early,
                Some(Direction::Recipient),
                false
            ),
            (
                Some(2),
                "presence".to_owned(),
                DialogState::Confirmed,
                None,
                false
            ),
            (
                Some(3),
                "presence".to_owned(),
                DialogState::Confirmed,
                None,
                true
            ),
        ]
    );
    let e = &dialog("mikopbx-dialog-confirmed.xml").dialogs[0];
    assert_eq!((e.id.as_str(), e.state), ("103", DialogState::Confirmed));
}

#[test]
fn broadworks_entity_without_scheme_and_two_identities() {
    let d = dialog("broadworks-dialog-confirmed.xml");
    assert_eq!(d.version, Some(11));
    assert_eq!(d.entity.as_deref(), Some("thomson4@as.iop1.broadworks.net"));
    let e = &d.dialogs[0];
    assert_eq!(e.id, "bG9jYWxIb3N0NDU5NDY4OjA=");
    assert_eq!(e.direction, Some(Direction::Initiator));
    assert_eq!(
        e.local.identity.as_deref(),
        Some("sip:thomson4@as.iop1.broadworks.net")
    );
    assert_eq!(e.local.display.as_deref(), Some("BroadSoft SIP4"));
    assert_eq!(
        e.remote.identity.as_deref(),
        Some("sip:1411@as.iop1.broadworks.net;user=phone")
    );
    assert_eq!(e.remote.display.as_deref(), Some("Broadsoft SIP1"));
}

#[test]
fn prefixed_single_quoted_partial_documents() {
    let d = dialog("constructed-dialog-partial-v1-add-early.xml");
    assert_eq!((d.version, d.state), (Some(1), DocState::Partial));
    let e = &d.dialogs[0];
    assert_eq!(e.remote.display.as_deref(), Some("Alice & Co"));
    assert_eq!(e.event.as_deref(), Some("notify"));
    let d = dialog("constructed-dialog-partial-v2-terminate.xml");
    let e = &d.dialogs[0];
    assert_eq!(
        (e.state, e.event.as_deref(), e.code),
        (DialogState::Terminated, Some("local-bye"), Some(200))
    );
}

// ------------------------------------------------------------------ PIDF samples

#[test]
fn pidf_samples_availability() {
    let cases: &[(&str, PresenceStatus)] = &[
        (
            "kamailio-presence-open.xml",
            PresenceStatus::Online { activity: None },
        ),
        ("kamailio-presence-closed.xml", PresenceStatus::Offline),
        (
            "kamailio-presence-dummy.xml",
            PresenceStatus::Online { activity: None },
        ),
        ("freeswitch-pidf-unregistered.xml", PresenceStatus::Offline),
        (
            "freeswitch-pidf-on-the-phone.xml",
            PresenceStatus::Online {
                activity: Some(Activity::OnThePhone),
            },
        ),
        (
            "asterisk-chansip-pidf-unavailable.xml",
            PresenceStatus::Offline,
        ),
        (
            "asterisk-chansip-pidf-on-the-phone.xml",
            PresenceStatus::Online {
                activity: Some(Activity::OnThePhone),
            },
        ),
        (
            "asterisk-pjsip-pidf-on-the-phone.xml",
            PresenceStatus::Online {
                activity: Some(Activity::OnThePhone),
            },
        ),
    ];
    assert_eq!(cases.len(), PIDF_SAMPLES.len());
    for (name, want) in cases {
        assert_eq!(&pidf(name).status(), want, "{name}");
    }
}

#[test]
fn kamailio_pidf_details() {
    let open = pidf("kamailio-presence-open.xml");
    assert_eq!(open.entity.as_deref(), Some("1002@pbx.test"));
    assert_eq!(open.tuples.len(), 1);
    assert_eq!(open.tuples[0].id.as_deref(), Some("0x7f3c99fbb888"));
    assert_eq!(open.tuples[0].basic, Some(Basic::Open));
    // Explicit xmlns on <tuple>/<status> (the closed form).
    let closed = pidf("kamailio-presence-closed.xml");
    assert_eq!(closed.tuples[0].basic, Some(Basic::Closed));
    let dummy = pidf("kamailio-presence-dummy.xml");
    assert_eq!(dummy.entity.as_deref(), Some("1002"));
    assert_eq!(dummy.notes, ["Available"]);
    assert_eq!(dummy.persons.len(), 1);
    assert_eq!(dummy.persons[0].notes, ["Available"]);
    assert!(dummy.persons[0].activities.is_empty());
}

#[test]
fn freeswitch_and_asterisk_pidf_details() {
    let fs = pidf("freeswitch-pidf-unregistered.xml");
    assert!(
        body("freeswitch-pidf-unregistered.xml")
            .windows(2)
            .any(|w| w == b"\r\n")
    );
    assert_eq!(fs.entity.as_deref(), Some("sip:1001@host"));
    assert_eq!(fs.tuples[0].id.as_deref(), Some("t6a5ed77e"));
    assert_eq!(fs.persons[0].id.as_deref(), Some("p06360c4a"));
    assert_eq!(fs.all_notes().collect::<Vec<_>>(), ["Unregistered"]);
    let fs = pidf("freeswitch-pidf-on-the-phone.xml");
    assert_eq!(fs.persons[0].notes, ["Talk 1002"]);
    // chan_sip: pp:person/status/ep:activities, presence-level note, contact.
    let a = pidf("asterisk-chansip-pidf-unavailable.xml");
    assert_eq!(a.persons[0].activities, [Activity::Away]);
    assert_eq!(a.notes, ["Unavailable"]);
    assert_eq!(a.tuples[0].contact.as_deref(), Some("sip:1001@host"));
    assert_eq!(a.tuples[0].basic, Some(Basic::Closed));
    let p = pidf("asterisk-pjsip-pidf-on-the-phone.xml");
    assert_eq!(p.notes, ["On the phone"]);
    assert_eq!(
        p.tuples[0].contact.as_deref(),
        Some("sip:1001@127.0.0.1:5060")
    );
}

#[test]
fn offline_note_applies_only_when_no_basic() {
    // The FreeSWITCH body without its tuple: the "Unregistered" note decides.
    let text = String::from_utf8_lossy(body("freeswitch-pidf-unregistered.xml")).into_owned();
    let start = text.find(" <tuple").unwrap();
    let end = text.find("</tuple>").unwrap() + "</tuple>".len();
    let without_tuple = format!("{}{}", &text[..start], &text[end..]);
    assert_eq!(
        parse_pidf(without_tuple.as_bytes()).unwrap().status(),
        PresenceStatus::Offline
    );
    // With the tuple open, the note is overruled.
    let open = text.replace("closed", "open");
    assert_eq!(
        parse_pidf(open.as_bytes()).unwrap().status(),
        PresenceStatus::Online { activity: None }
    );
}

// ------------------------------------------------------------------ streams

#[test]
fn kamailio_dialog_timeline() {
    let mut ds = DialogStream::new();
    let pres = {
        let mut p = PresenceStream::new();
        p.apply_body(body("kamailio-presence-open.xml"), EmptyPresence::Offline)
            .unwrap();
        p
    };
    assert_eq!(merge(&ds, &pres).state, MergedState::Idle);
    assert!(!ds.is_known());

    let apply = |ds: &mut DialogStream, name: &str| ds.apply_body(body(name)).unwrap();
    assert_eq!(
        apply(&mut ds, "kamailio-dialog-v1-dummy.xml"),
        ApplyOutcome::Applied { ended: vec![] }
    );
    assert!(ds.is_known());
    assert!(
        ds.dialogs().is_empty(),
        "the dummy is terminated and not kept"
    );
    assert_eq!(merge(&ds, &pres), TargetView::new(MergedState::Idle));

    assert_eq!(
        apply(&mut ds, "kamailio-dialog-v2-early.xml"),
        ApplyOutcome::Applied { ended: vec![] }
    );
    let v = merge(&ds, &pres);
    assert_eq!(v.state, MergedState::Ringing);
    assert_eq!(
        v.call.as_ref().and_then(|c| c.local_tag.as_deref()),
        Some("5549SIPpTag010")
    );

    assert_eq!(
        apply(&mut ds, "kamailio-dialog-v3-confirmed.xml"),
        ApplyOutcome::Applied { ended: vec![] }
    );
    assert_eq!(merge(&ds, &pres).state, MergedState::Busy);
    assert_eq!(ds.version(), Some(3));

    let out = apply(&mut ds, "kamailio-dialog-v4-terminated.xml");
    let ApplyOutcome::Applied { ended } = out else {
        panic!("{out:?}")
    };
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].id.as_str(), ended[0].state),
        ("padi-6b07e5f5-150a-1", DialogState::Terminated)
    );
    assert_eq!(merge(&ds, &pres), TargetView::new(MergedState::Idle));

    // Retransmission of v4: duplicate, ignored.
    assert_eq!(
        apply(&mut ds, "kamailio-dialog-v4-terminated.xml"),
        ApplyOutcome::Ignored {
            version: 4,
            last: 4
        }
    );
    // Kamailio keeps repeating the terminated dialog for a while: not reported again.
    let again = String::from_utf8_lossy(body("kamailio-dialog-v4-terminated.xml"))
        .replace("version=\"4\"", "version=\"5\"");
    assert_eq!(
        ds.apply_body(again.as_bytes()).unwrap(),
        ApplyOutcome::Applied { ended: vec![] }
    );
    // The dummy v5 is now stale.
    assert_eq!(
        apply(&mut ds, "kamailio-dialog-v5-dummy.xml"),
        ApplyOutcome::Ignored {
            version: 5,
            last: 5
        }
    );
}

#[test]
fn a_full_document_ends_vanished_dialogs() {
    let mut ds = DialogStream::new();
    ds.apply_body(body("constructed-dialog-ringing-and-busy.xml"))
        .unwrap();
    assert_eq!(ds.dialogs().len(), 2);
    // Version 6, only the ringing dialog remains: the busy one ended implicitly.
    let doc = String::from_utf8_lossy(body("kamailio-dialog-v2-early.xml"))
        .replace("version=\"2\"", "version=\"6\"");
    let out = ds.apply_body(doc.as_bytes()).unwrap();
    let ApplyOutcome::Applied { ended } = out else {
        panic!("{out:?}")
    };
    let ids: Vec<_> = ended.iter().map(|e| (e.id.as_str(), e.state)).collect();
    assert_eq!(
        ids,
        [
            ("padi-aaaa-1", DialogState::Terminated),
            ("padi-bbbb-1", DialogState::Terminated)
        ]
    );
    assert_eq!(ds.dialogs().len(), 1);
    assert_eq!(ds.dialogs()[0].id, "padi-6b07e5f5-150a-1");
}

#[test]
fn partial_documents_follow_versions() {
    let mut ds = DialogStream::new();
    // A partial document without a full baseline cannot be applied.
    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v1-add-early.xml"))
            .unwrap(),
        ApplyOutcome::NeedRefresh {
            expected: None,
            got: Some(1)
        }
    );
    assert!(!ds.is_known());

    ds.apply_body(body("constructed-dialog-partial-v0-full.xml"))
        .unwrap();
    assert_eq!(merge(&ds, &PresenceStream::new()).state, MergedState::Busy);

    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v1-add-early.xml"))
            .unwrap(),
        ApplyOutcome::Applied { ended: vec![] }
    );
    assert_eq!(ds.dialogs().len(), 2);
    let v = merge(&ds, &PresenceStream::new());
    assert_eq!(
        v.state,
        MergedState::Ringing,
        "the new early dialog wins over the confirmed one"
    );
    assert_eq!(v.call.and_then(|c| c.remote_display), s("Alice & Co"));

    let out = ds
        .apply_body(body("constructed-dialog-partial-v2-terminate.xml"))
        .unwrap();
    let ApplyOutcome::Applied { ended } = out else {
        panic!("{out:?}")
    };
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].id.as_str(), ended[0].code),
        ("as7d900as8", Some(200))
    );
    assert_eq!(ds.dialogs().len(), 1);

    // v4 after v2: gap → refresh, state unchanged.
    let before = ds.clone();
    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v4-gap.xml"))
            .unwrap(),
        ApplyOutcome::NeedRefresh {
            expected: Some(3),
            got: Some(4)
        }
    );
    assert_eq!(ds, before);
    // Old versions are ignored, full or partial.
    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v1-add-early.xml"))
            .unwrap(),
        ApplyOutcome::Ignored {
            version: 1,
            last: 2
        }
    );
    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v0-full.xml"))
            .unwrap(),
        ApplyOutcome::Ignored {
            version: 0,
            last: 2
        }
    );
    // A partial without a version cannot be ordered.
    let unversioned = String::from_utf8_lossy(body("constructed-dialog-partial-v4-gap.xml"))
        .replace("version='4' ", "");
    assert_eq!(
        ds.apply_body(unversioned.as_bytes()).unwrap(),
        ApplyOutcome::NeedRefresh {
            expected: Some(3),
            got: None
        }
    );
    assert_eq!(ds, before);

    // A fresh subscription restarts the sequence: its full v0 is accepted, the
    // dialogs are kept until then.
    ds.new_subscription();
    assert_eq!(ds.dialogs().len(), 1);
    assert_eq!(
        ds.apply_body(body("constructed-dialog-partial-v4-gap.xml"))
            .unwrap(),
        ApplyOutcome::NeedRefresh {
            expected: None,
            got: Some(4)
        }
    );
    let out = ds
        .apply_body(body("constructed-dialog-partial-v0-full.xml"))
        .unwrap();
    assert!(matches!(out, ApplyOutcome::Applied { .. }), "{out:?}");
    assert_eq!(ds.version(), Some(0));
    assert_eq!(
        ds.dialogs()
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["as7d900as8"]
    );
}

#[test]
fn empty_dialog_body_means_known_without_calls() {
    let mut ds = DialogStream::new();
    ds.apply_body(body("kamailio-dialog-v2-early.xml")).unwrap();
    let out = ds.apply_body(b"  \r\n").unwrap();
    let ApplyOutcome::Applied { ended } = out else {
        panic!("{out:?}")
    };
    assert_eq!(ended.len(), 1);
    assert!(ds.is_known() && ds.dialogs().is_empty());
    assert_eq!(merge(&ds, &PresenceStream::new()).state, MergedState::Idle);
    ds.set_unknown();
    assert_eq!(
        merge(&ds, &PresenceStream::new()).state,
        MergedState::Unknown
    );
}

#[test]
fn parse_errors_leave_streams_unchanged() {
    let mut ds = DialogStream::new();
    ds.apply_body(body("kamailio-dialog-v2-early.xml")).unwrap();
    let before = ds.clone();
    assert!(ds.apply_body(b"<dialog-info><dialog id='x'>").is_err());
    assert!(ds.apply_body(body("kamailio-presence-open.xml")).is_err());
    assert_eq!(ds, before);

    let mut ps = PresenceStream::new();
    ps.apply_body(body("kamailio-presence-closed.xml"), EmptyPresence::Offline)
        .unwrap();
    assert!(
        ps.apply_body(b"<presence><tuple>", EmptyPresence::Offline)
            .is_err()
    );
    assert_eq!(ps.status(), &PresenceStatus::Offline);
}

#[test]
fn presence_timeline_and_empty_body_policy() {
    let mut ps = PresenceStream::new();
    assert_eq!(ps.status(), &PresenceStatus::Unknown);
    let nobody = body("kamailio-presence-nobody.xml");
    assert!(nobody.is_empty());
    ps.apply_body(nobody, EmptyPresence::Offline).unwrap();
    assert_eq!(ps.status(), &PresenceStatus::Offline);
    ps.apply_body(body("kamailio-presence-open.xml"), EmptyPresence::Offline)
        .unwrap();
    assert_eq!(ps.status(), &PresenceStatus::Online { activity: None });
    ps.apply_body(body("kamailio-presence-closed.xml"), EmptyPresence::Offline)
        .unwrap();
    assert_eq!(ps.status(), &PresenceStatus::Offline);
    ps.apply_body(nobody, EmptyPresence::Unknown).unwrap();
    assert_eq!(ps.status(), &PresenceStatus::Unknown);
    ps.apply_body(body("kamailio-presence-open.xml"), EmptyPresence::Unknown)
        .unwrap();
    ps.set_unknown();
    assert_eq!(ps.status(), &PresenceStatus::Unknown);
}

#[test]
fn streams_round_trip_through_serde() {
    let mut ds = DialogStream::new();
    ds.apply_body(body("constructed-dialog-ringing-and-busy.xml"))
        .unwrap();
    ds.apply_body(
        &String::from_utf8_lossy(body("freeswitch-dialog-held.xml"))
            .replace("version=\"9\"", "version=\"10\"")
            .into_bytes(),
    )
    .unwrap();
    let text = toml::to_string(&ds).unwrap();
    let back: DialogStream = toml::from_str(&text).unwrap();
    assert_eq!(back, ds);
    assert_eq!(
        merge(&back, &PresenceStream::new()).state,
        MergedState::Held
    );

    for status in [
        PresenceStatus::Unknown,
        PresenceStatus::Offline,
        PresenceStatus::Online { activity: None },
        PresenceStatus::Online {
            activity: Some(Activity::OnThePhone),
        },
        PresenceStatus::Online {
            activity: Some(Activity::Other("lunch".into())),
        },
    ] {
        let ps = PresenceStream::from_status(status);
        let text = toml::to_string(&ps).unwrap();
        let back: PresenceStream = toml::from_str(&text).unwrap();
        assert_eq!(back, ps, "{text}");
    }
}

// ------------------------------------------------------------------ merge table

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

// ------------------------------------------------------------------ robustness

fn root_end(b: &[u8]) -> usize {
    b.iter().rposition(|&c| c == b'>').map_or(0, |p| p + 1)
}

#[test]
fn every_truncation_of_every_sample_is_handled() {
    for (name, b) in DIALOG_SAMPLES.iter().chain(PIDF_SAMPLES) {
        let end = root_end(b);
        let is_dialog = DIALOG_SAMPLES.iter().any(|(n, _)| n == name);
        for i in 0..=b.len() {
            let cut = &b[..i];
            let d = parse_dialog_info(cut);
            let p = parse_pidf(cut);
            let mine = if is_dialog { d.is_ok() } else { p.is_ok() };
            assert_eq!(mine, i >= end, "{name} cut at {i}");
            let mut ds = DialogStream::new();
            let _ = ds.apply_body(cut);
            let mut ps = PresenceStream::new();
            let _ = ps.apply_body(cut, EmptyPresence::Unknown);
            let _ = merge(&ds, &ps);
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = Rng::seeded(0x05ee_db1f);
    let noise = b"<>/'\"&;=: \t\r\n\0\xff\xc3abc";
    for (_, b) in DIALOG_SAMPLES.iter().chain(PIDF_SAMPLES) {
        for _ in 0..300 {
            let mut m = b.to_vec();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(m.len() as u64 + 1) as usize;
                let byte = noise[rng.below(noise.len() as u64) as usize];
                match rng.below(3) {
                    0 if pos < m.len() => m[pos] = byte,
                    1 if pos < m.len() => {
                        m.remove(pos);
                    }
                    _ => m.insert(pos, byte),
                }
            }
            let mut ds = DialogStream::new();
            let _ = ds.apply_body(&m);
            let mut ps = PresenceStream::new();
            let _ = ps.apply_body(&m, EmptyPresence::Offline);
            let _ = merge(&ds, &ps);
        }
    }
}

#[test]
fn size_and_depth_limits() {
    let base = body("kamailio-dialog-v2-early.xml");
    // Padded to exactly the limit: accepted.
    let mut at_limit = base.to_vec();
    at_limit.resize(MAX_BODY, b' ');
    assert_eq!(parse_dialog_info(&at_limit).map(|d| d.dialogs.len()), Ok(1));
    at_limit.push(b' ');
    assert_eq!(
        parse_dialog_info(&at_limit),
        Err(PresenceError::TooLarge(MAX_BODY + 1))
    );
    let mut ps = PresenceStream::new();
    assert_eq!(
        ps.apply_body(&at_limit, EmptyPresence::Offline),
        Err(PresenceError::TooLarge(MAX_BODY + 1))
    );

    let deep = format!(
        "<dialog-info><dialog id='a'><state>early</state><local>{}{}</local></dialog></dialog-info>",
        "<x>".repeat(MAX_DEPTH),
        "</x>".repeat(MAX_DEPTH)
    );
    assert_eq!(
        parse_dialog_info(deep.as_bytes()),
        Err(PresenceError::TooDeep)
    );
    let deep = format!(
        "<presence>{}{}</presence>",
        "<a:b>".repeat(MAX_DEPTH),
        "</a:b>".repeat(MAX_DEPTH)
    );
    assert_eq!(parse_pidf(deep.as_bytes()), Err(PresenceError::TooDeep));
}

#[test]
fn doctype_entities_are_not_expanded() {
    let doc =
        b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>\
        <dialog-info entity='&b;'><dialog id='x'><state>early</state>\
        <remote><identity display='&b;'>sip:&b;@h</identity></remote></dialog></dialog-info>";
    let d = parse_dialog_info(doc).unwrap();
    assert_eq!(d.entity.as_deref(), Some("&b;"));
    assert_eq!(d.dialogs[0].remote.identity.as_deref(), Some("sip:&b;@h"));
}
