//! Device-model profiles: golden renderings of every shipped translate profile in
//! every merged state, User-Agent selection, loading/overriding from a directory,
//! file:line errors, and the rendering rules (quirks, versions, equality).
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test profiles`
//! (see tests/golden/README.md); without that variable a difference fails.

use blf_bridge::presence::{Direction, MergedState, PickupInfo, TargetView};
use blf_bridge::profile::{
    DIALOG_INFO_NS, DialogState, Mode, OfflineStrategy, Profile, ProfileSet, Rendering, list_text,
    render, render_text,
};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const ENTITY: &str = "sip:1002@pbx.test";
/// The caller's display name in the goldens: quotes, ampersand and angle
/// brackets must come out escaped.
const NASTY_DISPLAY: &str = "Bob \"The Builder\" & <Sons>";

/// What the upstream dialog stream reports for a call of 1002 with 1003.
fn call(state: MergedState) -> PickupInfo {
    PickupInfo {
        call_id: Some("1-5707@127.0.0.1".into()),
        local_tag: Some("5549SIPpTag010".into()),
        remote_tag: Some("5707SIPpTag001".into()),
        direction: Some(match state {
            MergedState::Busy => Direction::Initiator,
            _ => Direction::Recipient,
        }),
        remote_identity: Some("sip:1003@pbx.test".into()),
        remote_display: Some(NASTY_DISPLAY.into()),
        remote_target: Some("sip:1003@192.0.2.74:5074;transport=udp".into()),
        local_identity: Some("sip:1002@pbx.test".into()),
        local_target: Some("sip:1002@192.0.2.73:5073;transport=udp".into()),
    }
}

fn view(state: MergedState) -> TargetView {
    TargetView {
        state,
        call: matches!(
            state,
            MergedState::Ringing | MergedState::Busy | MergedState::Held
        )
        .then(|| call(state)),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A fresh directory under the system temp dir (no tempfile crate).
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "blf-profiles-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ------------------------------------------------------------ dialog-info check

#[derive(Debug, Default)]
struct Parsed {
    version: u32,
    entity: String,
    /// (id, direction, state, state event)
    dialogs: Vec<(String, Option<String>, String, Option<String>)>,
    call_ids: Vec<String>,
    /// display names of <remote><identity>
    remote_displays: Vec<String>,
    remote_identities: Vec<String>,
    remote_targets: Vec<String>,
    local_rendering: Vec<String>,
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .expect("well-formed attributes")
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::Explicit1_0)
                .expect("attribute value unescapes")
                .into_owned()
        })
}

/// Parse a document with quick-xml and check it against the dialog-info rules
/// (RFC 4235 §4): XML declaration, root name/namespace/version/state/entity,
/// unique dialog ids, valid state values and directions, children order.
fn check_dialog_info(doc: &str) -> Parsed {
    let mut r = Reader::from_str(doc);
    r.config_mut().trim_text(true);
    let mut p = Parsed::default();
    let mut stack: Vec<String> = Vec::new();
    let mut saw_decl = false;
    let mut saw_root = false;
    let mut ids = BTreeSet::new();
    let mut text_target: Option<&'static str> = None;
    loop {
        let ev = r
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{doc}"));
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::Decl(d) => {
                assert!(!saw_root, "declaration after root");
                assert_eq!(d.version().unwrap(), "1.0");
                saw_decl = true;
                continue;
            }
            Event::Text(t) => {
                let text = t.xml10_content().into_owned();
                match text_target {
                    Some("state") => {
                        assert!(
                            ["trying", "proceeding", "early", "confirmed", "terminated"]
                                .contains(&text.as_str()),
                            "state value {text}"
                        );
                        p.dialogs.last_mut().unwrap().2 = text;
                    }
                    Some("remote-identity") => {
                        p.remote_identities.last_mut().unwrap().push_str(&text)
                    }
                    Some(_) => {}
                    None => panic!("stray text {text:?}"),
                }
                continue;
            }
            Event::GeneralRef(g) => {
                // an escaped character inside text
                let name = g.to_string();
                let c = match name.as_str() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => panic!("unexpected reference &{other};"),
                };
                match text_target {
                    Some("remote-identity") => p.remote_identities.last_mut().unwrap().push_str(c),
                    Some("local-identity") => {}
                    other => panic!("reference &{name}; in {other:?}"),
                }
                continue;
            }
            Event::End(e) => {
                let top = stack.pop().expect("balanced");
                assert_eq!(top.as_str(), e.name().as_ref());
                text_target = None;
                continue;
            }
            Event::Eof => break,
            other => panic!("unexpected {other:?}"),
        };
        if stack.is_empty() {
            assert_eq!(e.name().as_ref(), "dialog-info", "root element");
            assert!(!saw_root, "two root elements");
            saw_root = true;
            assert_eq!(attr(&e, "xmlns").as_deref(), Some(DIALOG_INFO_NS));
            let v = attr(&e, "version").expect("version attribute");
            p.version = v
                .parse()
                .unwrap_or_else(|_| panic!("version '{v}' is not a 32-bit number"));
            assert_eq!(attr(&e, "state").as_deref(), Some("full"));
            p.entity = attr(&e, "entity").expect("entity attribute");
            assert!(p.entity.starts_with("sip:"), "entity must be a URI");
            if !empty {
                stack.push("dialog-info".into());
            }
            continue;
        }
        let name = e.name().as_ref().to_string();
        let parent = stack.last().cloned().unwrap_or_default();
        match (parent.as_str(), name.as_str()) {
            ("dialog-info", "dialog") => {
                let id = attr(&e, "id").expect("dialog id");
                assert!(ids.insert(id.clone()), "duplicate dialog id {id}");
                let dir = attr(&e, "direction");
                if let Some(d) = &dir {
                    assert!(d == "initiator" || d == "recipient", "direction {d}");
                }
                if let Some(c) = attr(&e, "call-id") {
                    p.call_ids.push(c);
                }
                p.dialogs.push((id, dir, String::new(), None));
            }
            ("dialog", "state") => {
                let ev = attr(&e, "event");
                if let Some(ev) = &ev {
                    assert!(
                        [
                            "cancelled",
                            "rejected",
                            "replaced",
                            "local-bye",
                            "remote-bye",
                            "error",
                            "timeout"
                        ]
                        .contains(&ev.as_str())
                    );
                }
                p.dialogs.last_mut().unwrap().3 = ev;
                text_target = Some("state");
            }
            ("dialog", "local") | ("dialog", "remote") => {
                let d = p.dialogs.last().unwrap();
                assert!(!d.2.is_empty(), "<{name}> before <state>");
            }
            ("remote", "identity") => {
                if let Some(d) = attr(&e, "display") {
                    p.remote_displays.push(d);
                }
                p.remote_identities.push(String::new());
                text_target = Some("remote-identity");
            }
            ("local", "identity") => text_target = Some("local-identity"),
            ("remote", "target") => p.remote_targets.push(attr(&e, "uri").expect("target uri")),
            ("local", "target") => {
                attr(&e, "uri").expect("target uri");
            }
            ("target", "param") => {
                assert_eq!(attr(&e, "pname").as_deref(), Some("+sip.rendering"));
                p.local_rendering.push(attr(&e, "pvalue").unwrap());
            }
            other => panic!("unexpected element {other:?} in\n{doc}"),
        }
        if !empty {
            stack.push(name);
        }
    }
    assert!(saw_decl, "missing <?xml version=\"1.0\"?>");
    assert!(saw_root, "missing <dialog-info>");
    assert!(stack.is_empty());
    for d in &p.dialogs {
        assert!(!d.2.is_empty(), "dialog {} without <state>", d.0);
    }
    p
}

// --------------------------------------------------------------------- goldens

fn golden_name(state: MergedState, r: &Rendering) -> String {
    match r {
        Rendering::Document(_) => format!("{state}.xml"),
        Rendering::Terminate { .. } => format!("{state}.subscription-state"),
    }
}

fn golden_content(r: &Rendering) -> String {
    match r {
        Rendering::Document(d) => d.with_version(0),
        t @ Rendering::Terminate { .. } => {
            format!("Subscription-State: {}\n", t.subscription_state().unwrap())
        }
    }
}

#[test]
fn golden_renderings_of_every_translate_profile_and_state() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let set = ProfileSet::builtin();
    let dir = golden_dir();
    let mut expected: BTreeMap<PathBuf, String> = BTreeMap::new();
    for p in set.iter().filter(|p| p.mode() == Mode::Translate) {
        for state in MergedState::ALL {
            let r = render(p, ENTITY, &view(state));
            let content = golden_content(&r);
            if let Rendering::Document(_) = r {
                let parsed = check_dialog_info(&content);
                assert_eq!(parsed.entity, ENTITY);
                assert_eq!(parsed.version, 0);
            }
            expected.insert(dir.join(p.name()).join(golden_name(state, &r)), content);
        }
    }
    if update {
        for (path, content) in &expected {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }
    let mut problems = Vec::new();
    for (path, content) in &expected {
        match std::fs::read_to_string(path) {
            Ok(on_disk) if &on_disk == content => {}
            Ok(on_disk) => problems.push(format!(
                "{} differs:\n--- golden\n{on_disk}--- rendered\n{content}",
                path.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    // Files for renderings that no longer exist are stale.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(entry.path()).unwrap() {
            let path = f.unwrap().path();
            if !expected.contains_key(&path) {
                if update {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    problems.push(format!(
                        "{} is stale (no such profile/state rendering)",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} golden problem(s); if the change is intended run `UPDATE_GOLDEN=1 cargo test --test profiles`:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn golden_files_are_well_formed_dialog_info() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // the files are being rewritten by the golden test running in parallel
        return;
    }
    let set = ProfileSet::builtin();
    let mut docs = 0;
    for p in set.iter().filter(|p| p.mode() == Mode::Translate) {
        for state in MergedState::ALL {
            let xml = golden_dir().join(p.name()).join(format!("{state}.xml"));
            let Ok(text) = std::fs::read_to_string(&xml) else {
                // only the fail-subscription offline state has no document
                assert_eq!(state, MergedState::Offline, "{} missing", xml.display());
                assert!(matches!(
                    p.offline(),
                    OfflineStrategy::FailSubscription { .. }
                ));
                continue;
            };
            let parsed = check_dialog_info(&text);
            assert_eq!(parsed.entity, ENTITY, "{}", xml.display());
            assert_eq!(parsed.version, 0);
            // escaping round-trips: what the phone decodes is the caller's real name
            for d in &parsed.remote_displays {
                assert!(
                    d == NASTY_DISPLAY || d == "Offline",
                    "{}: display {d:?}",
                    xml.display()
                );
            }
            assert!(
                text.contains("Bob &quot;The Builder&quot; &amp; &lt;Sons&gt;")
                    || parsed.remote_displays.iter().all(|d| d == "Offline")
            );
            docs += 1;
        }
    }
    assert_eq!(docs, 4 * 6 + 5, "4 profiles render all 6 states, yealink 5");
}

/// The key decisions of each shipped profile, asserted on the parsed documents
/// (independently of the golden bytes).
#[test]
fn shipped_profiles_render_what_their_phones_need() {
    let set = ProfileSet::builtin();
    let states = |name: &str| -> Vec<(MergedState, Option<Parsed>)> {
        let p = set.get(name).unwrap();
        MergedState::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    render(p, ENTITY, &view(s))
                        .document()
                        .map(|d| check_dialog_info(&d.with_version(3))),
                )
            })
            .collect()
    };
    let only_state = |p: &Option<Parsed>| -> String {
        let p = p.as_ref().unwrap();
        assert_eq!(p.dialogs.len(), 1);
        p.dialogs[0].2.clone()
    };

    // GXP: offline is a red key labelled Offline; ringing carries pickup data.
    for (s, p) in states("grandstream-gxp") {
        match s {
            MergedState::Offline => {
                assert_eq!(only_state(&p), "confirmed");
                assert_eq!(p.as_ref().unwrap().remote_displays, ["Offline"]);
            }
            MergedState::Ringing => {
                let p = p.unwrap();
                assert_eq!(p.dialogs[0].1.as_deref(), Some("recipient"));
                assert_eq!(p.dialogs[0].2, "early");
                assert_eq!(p.call_ids, ["1-5707@127.0.0.1"]);
                assert_eq!(p.remote_displays, [NASTY_DISPLAY]);
                assert_eq!(p.remote_targets, ["sip:1003@192.0.2.74:5074;transport=udp"]);
            }
            MergedState::Busy | MergedState::Held => {
                assert_eq!(only_state(&p), "confirmed");
                assert_eq!(p.as_ref().unwrap().remote_displays, [NASTY_DISPLAY]);
            }
            MergedState::Idle | MergedState::Unknown => assert_eq!(only_state(&p), "terminated"),
        }
    }
    // Wave: only confirmed / terminated.
    for (s, p) in states("grandstream-wave") {
        let want = match s {
            MergedState::Idle | MergedState::Unknown => "terminated",
            _ => "confirmed",
        };
        assert_eq!(only_state(&p), want, "wave {s}");
    }
    // Yealink: always a dialog node; offline fails the subscription.
    for (s, p) in states("yealink") {
        match s {
            MergedState::Offline => assert!(p.is_none()),
            MergedState::Idle | MergedState::Unknown => {
                let p = p.unwrap();
                assert_eq!(
                    p.dialogs,
                    [("1002".to_string(), None, "terminated".to_string(), None)]
                );
            }
            _ => assert!(!p.unwrap().dialogs.is_empty()),
        }
    }
    // Snom: ringing's remote target is the monitored extension itself.
    let snom = states("snom");
    let ringing = snom[3].1.as_ref().unwrap();
    assert_eq!(ringing.remote_targets, [ENTITY]);
    assert_eq!(ringing.dialogs[0].2, "early");
    // Generic: RFC 4235 only; offline is terminated; held says +sip.rendering=no.
    let generic = states("generic");
    assert_eq!(only_state(&generic[1].1), "terminated");
    assert_eq!(generic[5].1.as_ref().unwrap().local_rendering, ["no"]);
    assert_eq!(
        generic[4].1.as_ref().unwrap().dialogs[0].1.as_deref(),
        Some("initiator")
    );
}

// ----------------------------------------------------------- User-Agent choice

#[test]
fn user_agent_selects_the_profile() {
    let set = ProfileSet::builtin();
    let cases: [(&[u8], &str); 11] = [
        (b"Grandstream Wave", "grandstream-wave"),
        (b"Grandstream Wave 1.0.6.8", "grandstream-wave"),
        (b"Grandstream GXP2170 1.0.11.3", "grandstream-gxp"),
        (b"Grandstream GRP2614 1.0.5.33", "grandstream-gxp"),
        (b"Grandstream GXV3350 1.0.3.30", "grandstream-gxp"),
        (b"Z 5.2.25 rv2.8.112", "zoiper"),
        (b"Zoiper rv2.10.11.1", "zoiper"),
        (b"Yealink VP59 91.87.0.25", "yealink"),
        (b"Yealink SIP-T46S 66.86.0.15", "yealink"),
        (b"snomD785/10.1.33.33", "snom"),
        (b"Linphone/5.2.0 (belle-sip/5.2.0)", "generic"),
    ];
    for (ua, want) in cases {
        assert_eq!(
            set.select(Some(ua)).name(),
            want,
            "{}",
            String::from_utf8_lossy(ua)
        );
    }
    assert_eq!(set.select(None).name(), "generic");
    // "Z" alone, or a Z-something that is not Zoiper's "Z <version>", is not Zoiper.
    assert_eq!(set.select(Some(b"ZXV10 B860")).name(), "generic");
    assert_eq!(set.get("zoiper").unwrap().mode(), Mode::Passthrough);
}

// ---------------------------------------------------------- directory loading

const FANVIL: &str = r#"
name = "fanvil"
description = "test profile"
[match]
user_agent = ['(?i)^Fanvil']
[states.unknown]
dialog = false
[states.offline]
dialog = true
state = "confirmed"
[states.idle]
dialog = false
[states.ringing]
dialog = true
state = "early"
direction = "recipient"
[states.busy]
dialog = true
state = "confirmed"
[states.held]
dialog = true
state = "confirmed"
[quirks]
single_dialog = true
"#;

#[test]
fn a_directory_overrides_and_extends_the_builtins() {
    let dir = temp_dir("override");
    let gxp = ProfileSet::builtin()
        .get("grandstream-gxp")
        .map(|_| include_str!("../profiles/grandstream-gxp.toml"))
        .unwrap()
        .replace(
            "remote_display = \"Offline\"",
            "remote_display = \"Abgemeldet\"",
        );
    std::fs::write(dir.join("my-gxp.toml"), gxp).unwrap();
    std::fs::write(dir.join("fanvil.toml"), FANVIL).unwrap();
    std::fs::write(dir.join("README.md"), "not a profile = [").unwrap();

    let set = ProfileSet::load(Some(&dir)).unwrap();
    assert_eq!(
        set.iter().map(|p| p.name()).collect::<Vec<_>>(),
        [
            "zoiper",
            "grandstream-wave",
            "grandstream-gxp",
            "yealink",
            "snom",
            "fanvil",
            "generic"
        ]
    );
    let p = set.select(Some(b"Grandstream GXP2170 1.0.11.3"));
    assert_eq!(p.source(), dir.join("my-gxp.toml").display().to_string());
    let doc = render(p, ENTITY, &TargetView::new(MergedState::Offline));
    assert!(
        doc.document()
            .unwrap()
            .template()
            .contains("display=\"Abgemeldet\"")
    );
    let f = set.select(Some(b"Fanvil X4U 2.12.1"));
    assert_eq!(f.name(), "fanvil");
    assert!(f.quirks().single_dialog);
    assert_eq!(set.select(Some(b"something else")).name(), "generic");

    // no directory: built-ins only
    let plain = ProfileSet::load(None).unwrap();
    assert_eq!(plain.iter().count(), 6);
    assert_eq!(plain.get("grandstream-gxp").unwrap().source(), "built-in");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Load a directory holding one file and return its rendered errors.
fn load_errors(text: &str) -> Vec<String> {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("gxp.toml"), text).unwrap();
    let errs = ProfileSet::load(Some(&dir)).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = dir.join("gxp.toml").display().to_string();
    errs.iter()
        .map(|e| {
            let s = e.to_string();
            assert!(s.starts_with(&prefix), "{s}");
            s[prefix.len()..].to_string()
        })
        .collect()
}

#[test]
fn malformed_profiles_are_reported_with_file_and_line() {
    // broken TOML syntax
    let e = load_errors("name = \"x\"\n[states\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with(":2: "), "{e:?}");

    // unknown key
    let bad = FANVIL.replace("state = \"early\"", "state = \"early\"\ncolour = \"red\"");
    let e = load_errors(&bad);
    assert!(
        e[0].starts_with(":16: states.ringing.colour: unknown field `colour`"),
        "{e:?}"
    );

    // bad state value: the exact message style
    let bad = FANVIL.replace(
        "[states.busy]\ndialog = true\nstate = \"confirmed\"",
        "[states.busy]\ndialog = true\nstate = \"bsy\"",
    );
    let e = load_errors(&bad);
    assert_eq!(
        e,
        [
            ":19: states.busy.state: 'bsy' is not one of trying, proceeding, early, confirmed, terminated"
        ]
    );

    // bad regex
    let bad = FANVIL.replace("'(?i)^Fanvil'", "'(?i)^Fanvil(', 'ok'");
    let e = load_errors(&bad);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(":5: match.user_agent: bad regex '(?i)^Fanvil('"),
        "{e:?}"
    );

    // missing state
    let bad = FANVIL.replace("[states.held]\ndialog = true\nstate = \"confirmed\"\n", "");
    let e = load_errors(&bad);
    assert!(
        e[0].starts_with(":6: states: missing [states.held]"),
        "{e:?}"
    );

    // several problems in one file are all reported, in line order
    let bad = FANVIL
        .replace("direction = \"recipient\"", "direction = \"inbound\"")
        .replace(
            "[quirks]\nsingle_dialog = true",
            "[offline]\nstrategy = \"vanish\"\n[quirks]\nearly_as = \"late\"",
        );
    let e = load_errors(&bad);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with(":16: states.ringing.direction: 'inbound'"),
        "{e:?}"
    );
    assert!(e[1].starts_with(":24: offline.strategy: 'vanish'"), "{e:?}");
    assert!(e[2].starts_with(":26: quirks.early_as: 'late'"), "{e:?}");

    // a wrong type, a missing key, an unknown state
    let e = load_errors(&FANVIL.replace(
        "[states.idle]\ndialog = false",
        "[states.idle]\ndialog = \"no\"",
    ));
    assert!(
        e[0].starts_with(":12: states.idle.dialog: invalid type"),
        "{e:?}"
    );
    let e = load_errors(&FANVIL.replace("[states.idle]\ndialog = false", "[states.idle]"));
    assert_eq!(e, [":11: states.idle: missing field `dialog`"]);
    let e = load_errors(&FANVIL.replace("[states.idle]", "[states.away]"));
    assert!(
        e[0].starts_with(":11: states.away: unknown field `away`"),
        "{e:?}"
    );

    // keys that would be silently ignored are errors too
    let e = load_errors(&FANVIL.replace(
        "[states.idle]\ndialog = false",
        "[states.idle]\ndialog = false\nstate = \"early\"",
    ));
    assert_eq!(
        e,
        [":13: states.idle.state: has no effect with dialog = false"]
    );
    let e = load_errors(&FANVIL.replace("direction = \"recipient\"", "remote_display = \"X\""));
    assert_eq!(
        e,
        [":16: states.ringing.remote_display: needs include_remote = true"]
    );

    // fail-subscription reasons that stop the phone from ever retrying
    let e = load_errors(&format!(
        "{FANVIL}[offline]\nstrategy = \"fail-subscription\"\nreason = \"noresource\"\n"
    ));
    assert!(
        e[0].starts_with(":27: offline.reason: 'noresource'"),
        "{e:?}"
    );

    // the fallback may not claim user agents
    let e = load_errors(&FANVIL.replace("name = \"fanvil\"", "name = \"generic\""));
    assert!(e[0].contains("generic profile is the fallback"), "{e:?}");

    // unreadable directory
    let missing = std::env::temp_dir().join("blf-profiles-does-not-exist-xyz");
    let e = ProfileSet::load(Some(&missing)).unwrap_err();
    assert_eq!(e[0].line, 0);
    assert!(e[0].to_string().contains("cannot read profiles directory"));
}

#[test]
fn duplicate_names_in_a_directory_are_an_error() {
    let dir = temp_dir("dup");
    std::fs::write(dir.join("a.toml"), FANVIL).unwrap();
    std::fs::write(dir.join("b.toml"), format!("# the name is taken\n{FANVIL}")).unwrap();
    let e = ProfileSet::load(Some(&dir)).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e[0].file.ends_with("b.toml") && e[0].line == 3, "{e:?}");
    assert!(e[0].message.contains("already defined"), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ----------------------------------------------------------- rendering rules

fn profile(extra_quirks: &str, offline: &str) -> Profile {
    let text = FANVIL.replace(
        "[quirks]\nsingle_dialog = true",
        &format!("{offline}\n[quirks]\n{extra_quirks}"),
    );
    Profile::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn fail_subscription_renders_a_termination() {
    let yealink = ProfileSet::builtin().get("yealink").unwrap().clone();
    let r = render(&yealink, ENTITY, &TargetView::new(MergedState::Offline));
    assert_eq!(
        r,
        Rendering::Terminate {
            reason: "probation".into(),
            retry_after: Some(60)
        }
    );
    assert_eq!(
        r.subscription_state().unwrap().to_string(),
        "terminated;reason=probation;retry-after=60"
    );
    assert_eq!(yealink.reject_code(), Some(480));
    // other states still render documents
    assert!(
        render(&yealink, ENTITY, &view(MergedState::Busy))
            .document()
            .is_some()
    );

    // defaults: reason probation, no retry-after, 480
    let p = profile("", "[offline]\nstrategy = \"fail-subscription\"");
    let r = render(&p, ENTITY, &TargetView::new(MergedState::Offline));
    assert_eq!(
        r.subscription_state().unwrap().to_string(),
        "terminated;reason=probation"
    );
    assert_eq!(p.reject_code(), Some(480));
    let p = profile(
        "",
        "[offline]\nstrategy = \"fail-subscription\"\nreason = \"deactivated\"\nreject_code = 404",
    );
    assert_eq!(
        render(&p, ENTITY, &TargetView::new(MergedState::Offline))
            .subscription_state()
            .unwrap()
            .to_string(),
        "terminated;reason=deactivated"
    );
    assert_eq!(p.reject_code(), Some(404));
    // render strategy: a document, no reject code
    let p = profile("", "");
    assert!(
        render(&p, ENTITY, &TargetView::new(MergedState::Offline))
            .document()
            .is_some()
    );
    assert_eq!(p.reject_code(), None);
}

#[test]
fn never_empty_renders_a_dummy_dialog() {
    let p = profile("never_empty = false", "");
    let doc = render(&p, ENTITY, &TargetView::new(MergedState::Idle))
        .document()
        .unwrap()
        .with_version(1);
    assert!(doc.contains("entity=\"sip:1002@pbx.test\"/>"), "{doc}");
    assert!(check_dialog_info(&doc).dialogs.is_empty());

    let p = profile("never_empty = true", "");
    let doc = render(&p, ENTITY, &TargetView::new(MergedState::Idle))
        .document()
        .unwrap()
        .with_version(1);
    let parsed = check_dialog_info(&doc);
    assert_eq!(
        parsed.dialogs,
        [("1002".to_string(), None, "terminated".to_string(), None)]
    );
    // states with a dialog are unaffected
    let doc = render(&p, ENTITY, &view(MergedState::Busy))
        .document()
        .unwrap()
        .with_version(1);
    assert_eq!(check_dialog_info(&doc).dialogs[0].2, "confirmed");
}

#[test]
fn single_dialog_never_renders_more_than_one() {
    let p = profile("single_dialog = true\nnever_empty = true", "");
    assert!(p.quirks().single_dialog);
    for s in MergedState::ALL {
        let doc = render(&p, ENTITY, &view(s))
            .document()
            .unwrap()
            .with_version(0);
        assert_eq!(check_dialog_info(&doc).dialogs.len(), 1, "{s}");
    }
}

#[test]
fn early_as_confirmed_rewrites_early_states() {
    let early = profile("early_as = \"early\"", "");
    let confirmed = profile("early_as = \"confirmed\"", "");
    assert_eq!(confirmed.quirks().early_as, DialogState::Confirmed);
    let get = |p: &Profile| {
        let d = render(p, ENTITY, &view(MergedState::Ringing))
            .document()
            .unwrap()
            .with_version(0);
        check_dialog_info(&d).dialogs[0].clone()
    };
    assert_eq!(get(&early).2, "early");
    let c = get(&confirmed);
    assert_eq!(c.2, "confirmed");
    assert_eq!(c.1.as_deref(), Some("recipient"), "only the state changes");
    // non-early states are untouched
    let d = render(&confirmed, ENTITY, &TargetView::new(MergedState::Idle));
    assert!(
        check_dialog_info(&d.document().unwrap().with_version(0))
            .dialogs
            .is_empty()
    );
}

#[test]
fn the_version_is_spliced_in_at_send_time() {
    let set = ProfileSet::builtin();
    let doc = render(
        set.get("grandstream-gxp").unwrap(),
        ENTITY,
        &view(MergedState::Ringing),
    );
    let doc = doc.document().unwrap();
    assert!(doc.template().contains(" version=\"\" state=\"full\""));
    for v in [0u32, 1, 9, 10, 12345, u32::MAX] {
        let s = doc.with_version(v);
        assert_eq!(check_dialog_info(&s).version, v);
        assert_eq!(
            s.replace(&format!("version=\"{v}\" state"), "version=\"\" state"),
            doc.template()
        );
        let head = b"NOTIFY sip:x SIP/2.0\r\n\r\n";
        let mut buf = head.to_vec();
        doc.write_with_version(v, &mut buf);
        assert_eq!(&buf[head.len()..], s.as_bytes());
        assert_eq!(doc.len_with_version(v), s.len());
    }
    // the XML declaration's version is untouched
    assert!(
        doc.with_version(7)
            .starts_with("<?xml version=\"1.0\"?>\n<dialog-info xmlns=")
    );
}

#[test]
fn renderings_compare_equal_regardless_of_version() {
    let set = ProfileSet::builtin();
    let gxp = set.get("grandstream-gxp").unwrap();
    let a = render(gxp, ENTITY, &view(MergedState::Busy));
    let b = render(gxp, ENTITY, &view(MergedState::Busy));
    assert_eq!(a, b);
    assert_ne!(
        a.document().unwrap().with_version(1),
        b.document().unwrap().with_version(2)
    );

    // a different caller name is a change the phone must see
    let mut v = view(MergedState::Busy);
    v.call.as_mut().unwrap().remote_display = Some("Alice".into());
    assert_ne!(render(gxp, ENTITY, &v), a);

    // the target's stale call details do not churn idle documents
    let mut idle_with_call = TargetView::new(MergedState::Idle);
    idle_with_call.call = Some(call(MergedState::Busy));
    assert_eq!(
        render(gxp, ENTITY, &idle_with_call),
        render(gxp, ENTITY, &TargetView::new(MergedState::Idle))
    );

    // fields the profile does not render do not matter either (generic busy has no ids)
    let generic = set.get("generic").unwrap();
    let mut other_tags = view(MergedState::Busy);
    other_tags.call.as_mut().unwrap().remote_tag = Some("different".into());
    assert_eq!(
        render(generic, ENTITY, &other_tags),
        render(generic, ENTITY, &view(MergedState::Busy))
    );

    // a different target is a different document
    assert_ne!(
        render(gxp, "sip:1003@pbx.test", &view(MergedState::Busy)),
        a
    );
}

#[test]
fn dialog_ids_are_stable_per_target_and_call() {
    let gxp = ProfileSet::builtin()
        .get("grandstream-gxp")
        .unwrap()
        .clone();
    let id = |entity: &str, v: &TargetView| {
        let d = render(&gxp, entity, v).document().unwrap().with_version(0);
        check_dialog_info(&d).dialogs[0].0.clone()
    };
    let ringing = id(ENTITY, &view(MergedState::Ringing));
    assert_eq!(
        ringing,
        id(ENTITY, &view(MergedState::Busy)),
        "answering keeps the dialog id"
    );
    assert_eq!(ringing, id(ENTITY, &view(MergedState::Held)));
    assert_ne!(
        ringing,
        id("sip:1003@pbx.test", &view(MergedState::Ringing))
    );
    let mut other_call = view(MergedState::Ringing);
    other_call.call.as_mut().unwrap().call_id = Some("another-call".into());
    assert_ne!(ringing, id(ENTITY, &other_call));
    assert!(
        !ringing.contains("5707"),
        "the Call-ID is not exposed as the id"
    );
    assert_eq!(id(ENTITY, &TargetView::new(MergedState::Idle)), "1002");
    assert_eq!(id(ENTITY, &TargetView::new(MergedState::Offline)), "1002");
    // a busy state without call details (presence only) still renders
    assert_eq!(id(ENTITY, &TargetView::new(MergedState::Busy)), "1002");
}

#[test]
fn untrusted_names_are_escaped_and_control_characters_dropped() {
    let gxp = ProfileSet::builtin()
        .get("grandstream-gxp")
        .unwrap()
        .clone();
    let mut v = view(MergedState::Busy);
    let c = v.call.as_mut().unwrap();
    c.remote_display = Some("A\u{1}'x' </identity><evil/> &amp;\r\n".into());
    c.remote_identity = Some("sip:\"x\"<y>@pbx.test".into());
    let doc = render(&gxp, "sip:10&02@pbx.test", &v)
        .document()
        .unwrap()
        .with_version(0);
    let p = check_dialog_info(&doc);
    assert_eq!(p.entity, "sip:10&02@pbx.test");
    assert_eq!(p.remote_displays, ["A 'x' </identity><evil/> &amp;  "]);
    assert_eq!(p.remote_identities, ["sip:\"x\"<y>@pbx.test"]);
}

#[test]
fn the_entity_is_always_the_one_passed_in() {
    let set = ProfileSet::builtin();
    let mut v = view(MergedState::Ringing);
    v.call.as_mut().unwrap().local_identity = Some("sip:upstream-name@10.0.0.1".into());
    for p in set.iter().filter(|p| p.mode() == Mode::Translate) {
        if let Some(d) = render(p, "sip:1002@bridge.lan", &v).document() {
            assert_eq!(
                check_dialog_info(&d.with_version(0)).entity,
                "sip:1002@bridge.lan"
            );
        }
    }
}

#[test]
fn passthrough_profiles_still_render_safely() {
    let zoiper = ProfileSet::builtin().get("zoiper").unwrap().clone();
    for s in MergedState::ALL {
        let d = render(&zoiper, ENTITY, &view(s))
            .document()
            .unwrap()
            .with_version(0);
        check_dialog_info(&d);
    }
}

// --------------------------------------------------------------- CLI helpers

#[test]
fn render_text_prints_the_notify_body_or_subscription_state() {
    let set = ProfileSet::builtin();
    let s = render_text(
        &set,
        "grandstream-gxp",
        "busy",
        Some("Alice & Bob"),
        ENTITY,
        7,
    )
    .unwrap();
    let p = check_dialog_info(&s);
    assert_eq!(p.version, 7);
    assert_eq!(p.remote_displays, ["Alice & Bob"]);
    assert_eq!(p.remote_identities, ["sip:caller@pbx.test"]);
    assert_eq!(
        s,
        render(
            set.get("grandstream-gxp").unwrap(),
            ENTITY,
            &TargetView {
                state: MergedState::Busy,
                call: Some(PickupInfo {
                    call_id: Some("example-call-id@bridge".into()),
                    local_tag: Some("target-tag".into()),
                    remote_tag: Some("caller-tag".into()),
                    direction: Some(Direction::Initiator),
                    remote_identity: Some("sip:caller@pbx.test".into()),
                    remote_display: Some("Alice & Bob".into()),
                    remote_target: Some("sip:caller@pbx.test".into()),
                    local_identity: Some(ENTITY.into()),
                    local_target: Some(ENTITY.into()),
                }),
            }
        )
        .document()
        .unwrap()
        .with_version(7)
    );
    let idle = render_text(&set, "generic", "IDLE", None, ENTITY, 0).unwrap();
    assert_eq!(check_dialog_info(&idle).dialogs[0].2, "terminated");
    assert_eq!(
        render_text(&set, "yealink", "offline", None, ENTITY, 0).unwrap(),
        "Subscription-State: terminated;reason=probation;retry-after=60\n"
    );
    let e = render_text(&set, "gxp", "busy", None, ENTITY, 0).unwrap_err();
    assert!(e.contains("grandstream-gxp, yealink"), "{e}");
}

#[test]
fn list_text_shows_every_profile() {
    let text = list_text(&ProfileSet::builtin());
    for name in [
        "zoiper",
        "grandstream-wave",
        "grandstream-gxp",
        "yealink",
        "snom",
        "generic",
    ] {
        assert!(
            text.contains(&format!("{name}  [built-in]")),
            "{name}\n{text}"
        );
    }
    assert!(text.contains("mode:       passthrough"));
    assert!(text.contains("(?i)^Grandstream (GXP|GRP|GXV)"));
    assert!(text.contains(
        "fail-subscription (reason=probation, retry-after=60, re-SUBSCRIBE answered 480)"
    ));
    assert!(text.contains("render (confirmed \"Offline\")"));
    // selection order is listing order
    assert!(text.find("grandstream-wave").unwrap() < text.find("generic  [").unwrap());
}

#[test]
fn shipped_files_document_themselves() {
    for (file, text) in blf_bridge::profile::BUILTIN_FILES {
        assert!(
            text.starts_with("# "),
            "{file} must start with a comment saying what it does"
        );
        assert!(
            text.contains("Profile file format"),
            "{file} lacks the format reference"
        );
        let p = Profile::parse(text, file).unwrap();
        assert_eq!(
            format!("{}.toml", p.name()),
            file,
            "file name = profile name"
        );
    }
    assert!(
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/README.md"))
            .is_ok()
    );
}
