//! Dialog and presence streams fed with sample timelines: versions, partial and
//! full documents, empty bodies, parse errors, serde.

use super::*;

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

/// Issue 9: one document with `version="4294967295"` must not freeze the stream.
#[test]
fn an_outlandish_version_does_not_freeze_the_stream() {
    let full = |v: u32, state: &str| {
        format!(
            "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{v}\" state=\"{state}\" entity=\"sip:1002@pbx.test\">\
<dialog id=\"d1\"><state>confirmed</state></dialog></dialog-info>"
        )
    };
    let idle = |v: u32| {
        format!(
            "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{v}\" state=\"full\" entity=\"sip:1002@pbx.test\"/>"
        )
    };
    let mut ds = DialogStream::new();
    ds.apply_body(idle(3).as_bytes()).unwrap();
    ds.apply_body(full(u32::MAX, "full").as_bytes()).unwrap();
    assert_eq!(merge(&ds, &PresenceStream::new()).state, MergedState::Busy);
    // a stale duplicate within the window is still ignored
    assert_eq!(
        ds.apply_body(full(u32::MAX - 5, "full").as_bytes())
            .unwrap(),
        ApplyOutcome::Ignored {
            version: u32::MAX - 5,
            last: u32::MAX
        }
    );
    // far below: the counter started over; a partial one asks for full state…
    assert!(matches!(
        ds.apply_body(full(4, "partial").as_bytes()).unwrap(),
        ApplyOutcome::NeedRefresh { .. }
    ));
    // …and full state is taken
    assert!(matches!(
        ds.apply_body(idle(4).as_bytes()).unwrap(),
        ApplyOutcome::Applied { .. }
    ));
    assert_eq!(merge(&ds, &PresenceStream::new()).state, MergedState::Idle);
    assert_eq!(ds.version(), Some(4));
    // a partial jumping far ahead is not applied
    assert!(matches!(
        ds.apply_body(full(4 + 5000, "partial").as_bytes()).unwrap(),
        ApplyOutcome::NeedRefresh { .. }
    ));
    assert_eq!(ds.version(), Some(4));
}
