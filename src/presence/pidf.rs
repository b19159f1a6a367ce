//! RFC 3863 PIDF parsing with the RFC 4479 data model (`dm:person`) and RFC 4480
//! RPID activities (the upstream `presence` stream).
//!
//! The presence stream is the only place a hosted PBX says "offline" (see the
//! protocol notes §0), so this module's job is mostly [`PidfDoc::status`]. Matching
//! is on local names: FreeSWITCH writes `dm:`/`rpid:`, Asterisk chan_sip its
//! pre-RFC `pp:`/`ep:` namespaces, Kamailio repeats `xmlns` on inner elements.
//! Bounded and panic-free like [`dialog_info`](super::dialog_info).

use super::xml::{self, PresenceError, Step};
use serde::{Deserialize, Serialize};

/// `<basic>` of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basic {
    Open,
    Closed,
}

/// An RPID activity, reduced to what a lamp can use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    /// `on-the-phone`, and `busy` (Asterisk chan_sip reports calls as `ep:busy`).
    OnThePhone,
    Away,
    Meeting,
    Vacation,
    /// Any other RPID activity by its local name (`lunch`, `appointment`, …), or
    /// the text of `<other>`.
    Other(String),
}

impl Activity {
    /// From an element's local name inside `<activities>`; `None` for `unknown`
    /// (which says nothing) and `note`/`other` (handled by the parser).
    fn from_local(name: &str) -> Option<Activity> {
        let known = [
            ("on-the-phone", Activity::OnThePhone),
            ("busy", Activity::OnThePhone),
            ("away", Activity::Away),
            ("meeting", Activity::Meeting),
            ("vacation", Activity::Vacation),
        ];
        if let Some((_, a)) = known.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Some(a.clone());
        }
        if ["unknown", "note", "other", ""]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return None;
        }
        Some(Activity::Other(name.to_ascii_lowercase()))
    }

    /// Text for logs and the lamp panel.
    pub fn as_str(&self) -> &str {
        match self {
            Activity::OnThePhone => "on the phone",
            Activity::Away => "away",
            Activity::Meeting => "meeting",
            Activity::Vacation => "vacation",
            Activity::Other(s) => s,
        }
    }
}

/// What the `presence` stream says about a target: the reading of a PIDF document
/// ([`PidfDoc::status`]), or unknown before the first one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum PresenceStatus {
    /// Not answered yet, failed or rejected (never treated as offline).
    #[default]
    Unknown,
    /// Not registered.
    Offline,
    /// Registered; the RPID activity if one was given.
    Online { activity: Option<Activity> },
}

/// One `<tuple>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidfTuple {
    pub id: Option<String>,
    /// `<status><basic>`; `None` when absent or neither open nor closed.
    pub basic: Option<Basic>,
    pub contact: Option<String>,
    /// `<note>` children of the tuple.
    pub notes: Vec<String>,
    /// RPID activities placed inside the tuple (some UAs do).
    pub activities: Vec<Activity>,
}

/// One RFC 4479 `<person>` (`dm:person`, or Asterisk's `pp:person`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidfPerson {
    pub id: Option<String>,
    /// `<activities>` anywhere below the person (Asterisk nests them in `<status>`).
    pub activities: Vec<Activity>,
    /// `<note>` children of the person (`dm:note`).
    pub notes: Vec<String>,
}

/// A parsed PIDF document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidfDoc {
    /// Root `entity` as written (Kamailio omits `sip:`); `None` when empty.
    pub entity: Option<String>,
    pub tuples: Vec<PidfTuple>,
    pub persons: Vec<PidfPerson>,
    /// `<note>` children of `<presence>`.
    pub notes: Vec<String>,
}

/// Notes that mean "not registered" when no tuple carries a `<basic>`
/// (FreeSWITCH, Asterisk chan_sip and PJSIP wording), compared case-insensitively.
const OFFLINE_NOTES: [&str; 4] = ["unregistered", "unavailable", "not online", "offline"];

impl PidfDoc {
    /// Every note: presence level, then tuples, then persons.
    pub fn all_notes(&self) -> impl Iterator<Item = &str> {
        self.notes
            .iter()
            .chain(self.tuples.iter().flat_map(|t| t.notes.iter()))
            .chain(self.persons.iter().flat_map(|p| p.notes.iter()))
            .map(String::as_str)
    }

    /// The activity that matters most for a lamp: `on the phone` if any tuple or
    /// person says so, else the first other activity.
    pub fn activity(&self) -> Option<Activity> {
        let mut all = self
            .persons
            .iter()
            .flat_map(|p| p.activities.iter())
            .chain(self.tuples.iter().flat_map(|t| t.activities.iter()));
        let mut first = None;
        for a in &mut all {
            if *a == Activity::OnThePhone {
                return Some(Activity::OnThePhone);
            }
            if first.is_none() {
                first = Some(a.clone());
            }
        }
        first
    }

    /// Availability rule:
    /// - at least one tuple has a `<basic>` and all of those are `closed` → offline;
    /// - no `<basic>` at all, and some note reads "Unregistered", "Unavailable",
    ///   "Not online" or "Offline" (any case) → offline;
    /// - otherwise online, with [`activity`](Self::activity).
    pub fn status(&self) -> PresenceStatus {
        let mut basics = self.tuples.iter().filter_map(|t| t.basic).peekable();
        let offline = if basics.peek().is_some() {
            basics.all(|b| b == Basic::Closed)
        } else {
            self.all_notes().any(|n| {
                OFFLINE_NOTES
                    .iter()
                    .any(|o| n.trim().eq_ignore_ascii_case(o))
            })
        };
        if offline {
            PresenceStatus::Offline
        } else {
            PresenceStatus::Online {
                activity: self.activity(),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Tuple,
    Person,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NoteOf {
    Presence,
    Tuple,
    Person,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Presence,
    Tuple,
    Person,
    Basic,
    Contact,
    Note(NoteOf),
    Activities(Owner),
    OtherActivity(Owner),
    /// Anything else; remembers the tuple/person it is nested in so that
    /// `<status><basic>` and `<status><activities>` are still found.
    Inside(Option<Owner>),
}

impl Ctx {
    fn owner(self) -> Option<Owner> {
        match self {
            Ctx::Tuple => Some(Owner::Tuple),
            Ctx::Person => Some(Owner::Person),
            Ctx::Inside(o) => o,
            _ => None,
        }
    }
}

/// Parses a PIDF body. The root element must be `presence` (any prefix).
pub fn parse_pidf(body: &[u8]) -> Result<PidfDoc, PresenceError> {
    let text = xml::decode(body)?;
    let mut doc = PidfDoc::default();
    let mut stack: Vec<Ctx> = Vec::with_capacity(8);
    let mut buf = String::new();
    let mut wrong_root: Option<String> = None;

    xml::walk(&text, |step| match step {
        Step::Open { name, depth, elem } => {
            let parent = stack.last().copied();
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            let ctx = match parent {
                None if depth == 0 => {
                    if is("presence") {
                        doc.entity = xml::attr(elem, "entity")
                            .map(|e| e.trim().to_owned())
                            .filter(|e| !e.is_empty());
                        Ctx::Presence
                    } else {
                        wrong_root = Some(name.to_owned());
                        Ctx::Inside(None)
                    }
                }
                Some(Ctx::Presence) if is("tuple") => {
                    doc.tuples.push(PidfTuple {
                        id: xml::attr(elem, "id"),
                        ..PidfTuple::default()
                    });
                    Ctx::Tuple
                }
                Some(Ctx::Presence) if is("person") => {
                    doc.persons.push(PidfPerson {
                        id: xml::attr(elem, "id"),
                        ..PidfPerson::default()
                    });
                    Ctx::Person
                }
                Some(Ctx::Presence) if is("note") => Ctx::Note(NoteOf::Presence),
                Some(Ctx::Tuple) if is("note") => Ctx::Note(NoteOf::Tuple),
                Some(Ctx::Tuple) if is("contact") => Ctx::Contact,
                Some(Ctx::Person) if is("note") => Ctx::Note(NoteOf::Person),
                Some(Ctx::Activities(owner)) => {
                    if is("other") {
                        Ctx::OtherActivity(owner)
                    } else {
                        if let (Some(a), Some(list)) =
                            (Activity::from_local(name), activities_of(&mut doc, owner))
                        {
                            list.push(a);
                        }
                        Ctx::Inside(None)
                    }
                }
                Some(p) => match p.owner() {
                    Some(Owner::Tuple) if is("basic") => Ctx::Basic,
                    Some(owner) if is("activities") => Ctx::Activities(owner),
                    owner => Ctx::Inside(owner),
                },
                None => Ctx::Inside(None),
            };
            if matches!(
                ctx,
                Ctx::Basic | Ctx::Contact | Ctx::Note(_) | Ctx::OtherActivity(_)
            ) {
                buf.clear();
            }
            stack.push(ctx);
        }
        Step::Text(t) => {
            if matches!(
                stack.last(),
                Some(Ctx::Basic | Ctx::Contact | Ctx::Note(_) | Ctx::OtherActivity(_))
            ) {
                buf.push_str(t);
            }
        }
        Step::Close => match stack.pop() {
            Some(Ctx::Basic) => {
                let v = buf.trim();
                let b = if v.eq_ignore_ascii_case("open") {
                    Some(Basic::Open)
                } else if v.eq_ignore_ascii_case("closed") {
                    Some(Basic::Closed)
                } else {
                    None
                };
                if let (Some(t), Some(b)) = (doc.tuples.last_mut(), b) {
                    t.basic = Some(b);
                }
                buf.clear();
            }
            Some(Ctx::Contact) => {
                let c = xml::take_trimmed(&mut buf);
                if let Some(t) = doc.tuples.last_mut()
                    && t.contact.is_none()
                {
                    t.contact = c;
                }
            }
            Some(Ctx::Note(of)) => {
                if let Some(n) = xml::take_trimmed(&mut buf) {
                    match of {
                        NoteOf::Presence => doc.notes.push(n),
                        NoteOf::Tuple => {
                            if let Some(t) = doc.tuples.last_mut() {
                                t.notes.push(n);
                            }
                        }
                        NoteOf::Person => {
                            if let Some(p) = doc.persons.last_mut() {
                                p.notes.push(n);
                            }
                        }
                    }
                }
            }
            Some(Ctx::OtherActivity(owner)) => {
                if let (Some(n), Some(list)) =
                    (xml::take_trimmed(&mut buf), activities_of(&mut doc, owner))
                {
                    list.push(Activity::Other(n));
                }
            }
            _ => {}
        },
    })?;
    if let Some(r) = wrong_root {
        return Err(PresenceError::WrongRoot(r));
    }
    Ok(doc)
}

/// The activity list of the innermost open tuple/person (the last one; an owner
/// context is only pushed after its tuple/person was appended).
fn activities_of(doc: &mut PidfDoc, owner: Owner) -> Option<&mut Vec<Activity>> {
    match owner {
        Owner::Tuple => doc.tuples.last_mut().map(|t| &mut t.activities),
        Owner::Person => doc.persons.last_mut().map(|p| &mut p.activities),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: &str) -> PresenceStatus {
        parse_pidf(s.as_bytes()).unwrap().status()
    }

    #[test]
    fn all_closed_is_offline_any_open_is_online() {
        let t = |b: &str| format!("<tuple><status><basic>{b}</basic></status></tuple>");
        let doc = |tuples: String| format!("<presence>{tuples}</presence>");
        assert_eq!(
            status(&doc(t("closed") + &t("closed"))),
            PresenceStatus::Offline
        );
        assert_eq!(
            status(&doc(t("closed") + &t(" OPEN "))),
            PresenceStatus::Online { activity: None }
        );
        // A tuple without basic does not count either way.
        assert_eq!(
            status(&doc(t("closed") + "<tuple/>")),
            PresenceStatus::Offline
        );
    }

    #[test]
    fn offline_notes_count_only_without_basic() {
        for note in ["Unregistered", "unavailable", " NOT ONLINE ", "Offline"] {
            let d = format!("<presence><note>{note}</note></presence>");
            assert_eq!(status(&d), PresenceStatus::Offline, "{note}");
            let d = format!("<presence><tuple><note>{note}</note></tuple></presence>");
            assert_eq!(status(&d), PresenceStatus::Offline, "{note}");
            let d =
                format!("<presence><dm:person><dm:note>{note}</dm:note></dm:person></presence>");
            assert_eq!(status(&d), PresenceStatus::Offline, "{note}");
            let d = format!(
                "<presence><tuple><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
            );
            assert_eq!(
                status(&d),
                PresenceStatus::Online { activity: None },
                "{note}"
            );
        }
        assert_eq!(
            status("<presence><note>Ready</note></presence>"),
            PresenceStatus::Online { activity: None }
        );
        // A note nested elsewhere (inside a device) is not a presence/tuple/person note.
        assert_eq!(
            status("<presence><dm:device><dm:note>Offline</dm:note></dm:device></presence>"),
            PresenceStatus::Online { activity: None }
        );
    }

    #[test]
    fn activities_any_prefix_and_priority() {
        let d = "<presence><tuple><status><basic>open</basic></status></tuple>\
                 <x:person><x:activities><x:lunch/><x:unknown/><x:note>n</x:note>\
                 <x:other> knitting </x:other></x:activities></x:person>\
                 <person><activities><on-the-phone/></activities></person></presence>";
        let doc = parse_pidf(d.as_bytes()).unwrap();
        assert_eq!(
            doc.persons[0].activities,
            [
                Activity::Other("lunch".into()),
                Activity::Other("knitting".into())
            ]
        );
        assert_eq!(doc.activity(), Some(Activity::OnThePhone));
        assert_eq!(
            status("<presence><person><activities><ep:busy/></activities></person></presence>"),
            PresenceStatus::Online {
                activity: Some(Activity::OnThePhone)
            }
        );
        assert_eq!(
            status(
                "<presence><tuple><status><activities><Away/></activities></status></tuple></presence>"
            ),
            PresenceStatus::Online {
                activity: Some(Activity::Away)
            }
        );
    }

    #[test]
    fn basic_outside_a_tuple_is_ignored_and_garbage_basic_is_none() {
        let doc = parse_pidf(b"<presence><basic>closed</basic><tuple><status><basic>maybe</basic></status></tuple></presence>")
            .unwrap();
        assert_eq!(doc.tuples.len(), 1);
        assert_eq!(doc.tuples[0].basic, None);
        assert_eq!(doc.status(), PresenceStatus::Online { activity: None });
    }

    #[test]
    fn wrong_root_is_an_error() {
        assert_eq!(
            parse_pidf(b"<dialog-info/>"),
            Err(PresenceError::WrongRoot("dialog-info".into()))
        );
    }
}
