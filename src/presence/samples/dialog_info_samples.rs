//! RFC 4235 dialog-info bodies from Kamailio, FreeSWITCH, Asterisk, BroadWorks and
//! constructed documents.

use super::*;

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
