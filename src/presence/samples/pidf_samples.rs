//! PIDF / RPID bodies: availability, notes and activities per server.

use super::*;

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
