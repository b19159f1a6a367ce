//! RFC 4235 `application/dialog-info+xml` parsing (the upstream `dialog` stream).
//!
//! Lenient by design, because every PBX writes it differently: elements are
//! matched on local names (any or no namespace prefix), whitespace and TABs
//! around values are trimmed, attributes may use single quotes, and missing
//! optional parts (version, state, entity, `<local>`, `<remote>`, tags) are simply
//! absent in the result. A `<dialog>` without a recognisable `<state>` is skipped
//! (it cannot be rendered). Bounded by [`MAX_BODY`](super::MAX_BODY) and
//! [`MAX_DEPTH`](super::MAX_DEPTH); never panics.

use super::state::{Direction, PickupInfo};
use super::xml::{self, PresenceError, Step};
use serde::{Deserialize, Serialize};

/// Root `state` attribute: whether the document carries the full state or only
/// the dialogs that changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocState {
    Full,
    Partial,
}

/// `<state>` of one dialog (RFC 4235 §3.7.1 finite state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialogState {
    Trying,
    Proceeding,
    Early,
    Confirmed,
    Terminated,
}

impl DialogState {
    pub const ALL: [DialogState; 5] = [
        DialogState::Trying,
        DialogState::Proceeding,
        DialogState::Early,
        DialogState::Confirmed,
        DialogState::Terminated,
    ];

    /// Parses a state value (ASCII case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<DialogState> {
        let s = s.trim();
        DialogState::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }

    /// How interesting a dialog in this state is for a lamp (Kamailio
    /// `force_single_dialog` order: early beats confirmed because it can be picked
    /// up). Used by the profiles' `single_dialog` quirk.
    pub fn interest(self) -> u8 {
        match self {
            DialogState::Terminated => 0,
            DialogState::Trying => 1,
            DialogState::Proceeding => 2,
            DialogState::Confirmed => 3,
            DialogState::Early => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Proceeding => "proceeding",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }

    /// Every state but `terminated`: the dialog exists and says something about the target.
    pub fn is_active(self) -> bool {
        self != DialogState::Terminated
    }
}

impl std::fmt::Display for DialogState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `<param pname= pvalue=/>` of a `<target>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetParam {
    pub name: String,
    pub value: String,
}

/// A `<local>` or `<remote>` participant of a dialog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// `<identity>` URI. With several identities (BroadWorks sends sip: and tel:),
    /// the first one, unless a later one is a `sip:`/`sips:` URI and the first is not.
    pub identity: Option<String>,
    /// `display` attribute of that identity.
    pub display: Option<String>,
    /// `<target uri=…>`.
    pub target: Option<String>,
    /// `<param>` children of `<target>`, in document order.
    pub target_params: Vec<TargetParam>,
}

impl Participant {
    /// The `+sip.rendering` target parameter: `Some(false)` means the participant
    /// is not rendering media, i.e. it put the call on hold.
    pub fn rendering(&self) -> Option<bool> {
        let p = self
            .target_params
            .iter()
            .find(|p| p.name.trim().eq_ignore_ascii_case("+sip.rendering"))?;
        match p.value.trim() {
            v if v.eq_ignore_ascii_case("yes") => Some(true),
            v if v.eq_ignore_ascii_case("no") => Some(false),
            _ => None,
        }
    }
}

/// One `<dialog>` element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogEntry {
    /// `id` attribute; when missing, the `call-id`, else `#<position>` (so that the
    /// entry still has a key).
    pub id: String,
    pub call_id: Option<String>,
    pub local_tag: Option<String>,
    pub remote_tag: Option<String>,
    /// `direction`, seen from the target; `None` when absent or unknown.
    pub direction: Option<Direction>,
    pub state: DialogState,
    /// `<state event=…>` (why it terminated: cancelled, rejected, remote-bye, …).
    pub event: Option<String>,
    /// `<state code=…>` (the final response code).
    pub code: Option<u16>,
    /// The target's side.
    pub local: Participant,
    /// The other party.
    pub remote: Participant,
}

impl DialogEntry {
    /// A bare entry (no identities, tags or direction): for tests and synthetic state.
    pub fn new(id: impl Into<String>, state: DialogState) -> DialogEntry {
        DialogEntry {
            id: id.into(),
            call_id: None,
            local_tag: None,
            remote_tag: None,
            direction: None,
            state,
            event: None,
            code: None,
            local: Participant::default(),
            remote: Participant::default(),
        }
    }

    /// The target holds this call: its own (local) target says `+sip.rendering=no`.
    pub fn is_held(&self) -> bool {
        self.local.rendering() == Some(false)
    }

    /// What a phone needs to show and pick up this call.
    pub fn pickup_info(&self) -> PickupInfo {
        PickupInfo {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
            direction: self.direction,
            remote_identity: self.remote.identity.clone(),
            remote_display: self.remote.display.clone(),
            remote_target: self.remote.target.clone(),
            local_identity: self.local.identity.clone(),
            local_target: self.local.target.clone(),
        }
    }
}

/// A parsed dialog-info document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogInfoDoc {
    /// Root `version`; `None` when absent or not a 32-bit unsigned number.
    pub version: Option<u32>,
    /// Root `state`; absent or unrecognised values count as `full` (what every
    /// known PBX sends).
    pub state: DocState,
    /// Root `entity` as written (may lack `sip:` or be empty → `None`).
    pub entity: Option<String>,
    /// The dialogs with a recognisable state, in document order.
    pub dialogs: Vec<DialogEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Local,
    Remote,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root,
    Dialog,
    State,
    Side(Side),
    Identity(Side),
    Target(Side),
    Ignored,
}

/// Dialog being read; `state: None` until a valid `<state>` was seen.
struct Pending {
    entry: DialogEntry,
    state: Option<DialogState>,
    /// Whether the local / remote `<target>` was read already.
    seen_target: (bool, bool),
}

impl Pending {
    fn seen_target(&self, side: Side) -> bool {
        match side {
            Side::Local => self.seen_target.0,
            Side::Remote => self.seen_target.1,
        }
    }

    fn mark_target(&mut self, side: Side) {
        match side {
            Side::Local => self.seen_target.0 = true,
            Side::Remote => self.seen_target.1 = true,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.and_then(|s| {
        let t = s.trim();
        if t.is_empty() {
            None
        } else if t.len() == s.len() {
            Some(s)
        } else {
            Some(t.to_owned())
        }
    })
}

fn is_sip_uri(u: &str) -> bool {
    let u = u.trim_start();
    u.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:"))
        || u.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("sips:"))
}

/// Parses a dialog-info body. The root element must be `dialog-info` (any prefix).
pub fn parse_dialog_info(body: &[u8]) -> Result<DialogInfoDoc, PresenceError> {
    let text = xml::decode(body)?;
    let mut doc = DialogInfoDoc {
        version: None,
        state: DocState::Full,
        entity: None,
        dialogs: Vec::new(),
    };
    let mut stack: Vec<Ctx> = Vec::with_capacity(8);
    let mut cur: Option<Pending> = None;
    let mut buf = String::new();
    // Attributes of the element whose text is being collected.
    let mut ident_display: Option<String> = None;
    let mut state_attrs: (Option<String>, Option<u16>) = (None, None);
    let mut wrong_root: Option<String> = None;
    let mut count = 0usize;

    xml::walk(&text, |step| match step {
        Step::Open { name, depth, elem } => {
            let parent = stack.last().copied();
            let ctx = match (depth, parent) {
                (0, _) => {
                    if !name.eq_ignore_ascii_case("dialog-info") {
                        wrong_root = Some(name.to_owned());
                        Ctx::Ignored
                    } else {
                        doc.version =
                            xml::attr(elem, "version").and_then(|v| v.trim().parse().ok());
                        doc.state = match xml::attr(elem, "state") {
                            Some(s) if s.trim().eq_ignore_ascii_case("partial") => {
                                DocState::Partial
                            }
                            _ => DocState::Full,
                        };
                        doc.entity = non_empty(xml::attr(elem, "entity"));
                        Ctx::Root
                    }
                }
                (_, Some(Ctx::Root)) if name.eq_ignore_ascii_case("dialog") => {
                    count += 1;
                    let call_id = non_empty(xml::attr(elem, "call-id"));
                    let id = non_empty(xml::attr(elem, "id"))
                        .or_else(|| call_id.clone())
                        .unwrap_or_else(|| format!("#{count}"));
                    let mut entry = DialogEntry::new(id, DialogState::Terminated);
                    entry.call_id = call_id;
                    entry.local_tag = non_empty(xml::attr(elem, "local-tag"));
                    entry.remote_tag = non_empty(xml::attr(elem, "remote-tag"));
                    entry.direction = xml::attr(elem, "direction").and_then(|d| {
                        let d = d.trim();
                        if d.eq_ignore_ascii_case("initiator") {
                            Some(Direction::Initiator)
                        } else if d.eq_ignore_ascii_case("recipient") {
                            Some(Direction::Recipient)
                        } else {
                            None
                        }
                    });
                    cur = Some(Pending {
                        entry,
                        state: None,
                        seen_target: (false, false),
                    });
                    Ctx::Dialog
                }
                (_, Some(Ctx::Dialog)) if name.eq_ignore_ascii_case("state") => {
                    buf.clear();
                    state_attrs = (
                        non_empty(xml::attr(elem, "event")),
                        xml::attr(elem, "code").and_then(|c| c.trim().parse().ok()),
                    );
                    Ctx::State
                }
                (_, Some(Ctx::Dialog)) if name.eq_ignore_ascii_case("local") => {
                    Ctx::Side(Side::Local)
                }
                (_, Some(Ctx::Dialog)) if name.eq_ignore_ascii_case("remote") => {
                    Ctx::Side(Side::Remote)
                }
                (_, Some(Ctx::Side(side))) if name.eq_ignore_ascii_case("identity") => {
                    buf.clear();
                    ident_display = non_empty(xml::attr(elem, "display"));
                    Ctx::Identity(side)
                }
                (_, Some(Ctx::Side(side))) if name.eq_ignore_ascii_case("target") => match cur
                    .as_mut()
                {
                    // Only the first <target> counts (uri and params together).
                    Some(p) if !p.seen_target(side) => {
                        p.mark_target(side);
                        participant(&mut p.entry, side).target = non_empty(xml::attr(elem, "uri"));
                        Ctx::Target(side)
                    }
                    _ => Ctx::Ignored,
                },
                (_, Some(Ctx::Target(side))) if name.eq_ignore_ascii_case("param") => {
                    if let (Some(p), Some(n)) = (cur.as_mut(), xml::attr(elem, "pname")) {
                        let value = xml::attr(elem, "pvalue").unwrap_or_default();
                        participant(&mut p.entry, side)
                            .target_params
                            .push(TargetParam {
                                name: n.trim().to_owned(),
                                value: value.trim().to_owned(),
                            });
                    }
                    Ctx::Ignored
                }
                _ => Ctx::Ignored,
            };
            stack.push(ctx);
        }
        Step::Text(t) => {
            if matches!(stack.last(), Some(Ctx::State | Ctx::Identity(_))) {
                buf.push_str(t);
            }
        }
        Step::Close => match stack.pop() {
            Some(Ctx::State) => {
                if let (Some(p), Some(s)) = (cur.as_mut(), DialogState::parse(&buf)) {
                    p.state = Some(s);
                    p.entry.event = state_attrs.0.take();
                    p.entry.code = state_attrs.1.take();
                }
                buf.clear();
            }
            Some(Ctx::Identity(side)) => {
                let uri = xml::take_trimmed(&mut buf);
                let display = ident_display.take();
                if let (Some(p), Some(uri)) = (cur.as_mut(), uri) {
                    let part = participant(&mut p.entry, side);
                    let replace = match &part.identity {
                        None => true,
                        Some(old) => !is_sip_uri(old) && is_sip_uri(&uri),
                    };
                    if replace {
                        part.identity = Some(uri);
                        part.display = display;
                    }
                }
            }
            Some(Ctx::Dialog) => {
                if let Some(Pending {
                    mut entry,
                    state: Some(s),
                    ..
                }) = cur.take()
                {
                    entry.state = s;
                    doc.dialogs.push(entry);
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

fn participant(e: &mut DialogEntry, side: Side) -> &mut Participant {
    match side {
        Side::Local => &mut e.local,
        Side::Remote => &mut e.remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DialogInfoDoc {
        parse_dialog_info(s.as_bytes()).unwrap()
    }

    #[test]
    fn states_parse_case_insensitively() {
        assert_eq!(DialogState::parse(" Early\t"), Some(DialogState::Early));
        assert_eq!(
            DialogState::parse("CONFIRMED"),
            Some(DialogState::Confirmed)
        );
        assert_eq!(DialogState::parse("offline"), None);
        assert!(!DialogState::Terminated.is_active());
        assert!(DialogState::Trying.is_active());
    }

    #[test]
    fn root_attributes_are_optional() {
        let d = parse("<dialog-info/>");
        assert_eq!(
            (d.version, d.state, d.entity, d.dialogs.len()),
            (None, DocState::Full, None, 0)
        );
        let d = parse(
            "<x:dialog-info xmlns:x='urn:ietf:params:xml:ns:dialog-info' version=' 42 ' state='PARTIAL' entity=''/>",
        );
        assert_eq!(
            (d.version, d.state, d.entity),
            (Some(42), DocState::Partial, None)
        );
        let d =
            parse(r#"<dialog-info version="4294967296" state="bogus" entity="1002@pbx.test"/>"#);
        assert_eq!(
            (d.version, d.state, d.entity.as_deref()),
            (None, DocState::Full, Some("1002@pbx.test"))
        );
    }

    #[test]
    fn dialog_without_state_is_skipped_and_missing_id_falls_back() {
        let d = parse(
            "<dialog-info><dialog id='a'/><dialog id='b'><state>ringing</state></dialog>\
             <dialog call-id='c1'><state>early</state></dialog><dialog><state>trying</state></dialog></dialog-info>",
        );
        let ids: Vec<_> = d.dialogs.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["c1", "#4"]);
    }

    #[test]
    fn state_attributes_and_unknown_direction() {
        let d = parse(
            "<dialog-info><dialog id='a' direction='sideways'>\
             <state event='remote-bye' code='487'>terminated</state></dialog></dialog-info>",
        );
        let e = &d.dialogs[0];
        assert_eq!(e.direction, None);
        assert_eq!(e.event.as_deref(), Some("remote-bye"));
        assert_eq!(e.code, Some(487));
    }

    #[test]
    fn prefers_a_sip_identity_and_reads_hold() {
        let d = parse(
            "<dialog-info><dialog id='a'><state>confirmed</state>\
             <local><identity display='T'>tel:+1555</identity><identity display='S'>sip:s@x</identity>\
             <target uri='sip:s@h'><param pname='+SIP.rendering' pvalue=' NO '/><param pname='x'/></target></local>\
             <remote><identity>sip:r@x</identity><identity>sip:r2@x</identity>\
             <target><param pname='+sip.rendering' pvalue='yes'/></target>\
             <target uri='sip:second@x'><param pname='+sip.rendering' pvalue='no'/></target></remote>\
             </dialog></dialog-info>",
        );
        let e = &d.dialogs[0];
        assert_eq!(e.local.identity.as_deref(), Some("sip:s@x"));
        assert_eq!(e.local.display.as_deref(), Some("S"));
        assert_eq!(e.remote.identity.as_deref(), Some("sip:r@x"));
        assert_eq!(e.local.target_params.len(), 2);
        // Only the first <target> of a participant is read, even without a uri.
        assert_eq!(e.remote.target, None);
        assert_eq!(e.remote.rendering(), Some(true));
        assert!(e.is_held());
        let mut e2 = e.clone();
        e2.local.target_params[0].value = "yes".into();
        assert!(!e2.is_held());
        e2.local.target_params.clear();
        assert!(!e2.is_held());
    }

    #[test]
    fn state_outside_a_dialog_and_nested_dialogs_are_ignored() {
        let d = parse(
            "<dialog-info><state>early</state><dialog id='a'><dialog id='b'><state>early</state></dialog>\
             <state>confirmed</state></dialog></dialog-info>",
        );
        assert_eq!(d.dialogs.len(), 1);
        assert_eq!(
            (d.dialogs[0].id.as_str(), d.dialogs[0].state),
            ("a", DialogState::Confirmed)
        );
    }

    #[test]
    fn wrong_root_is_an_error() {
        assert_eq!(
            parse_dialog_info(b"<presence><tuple/></presence>"),
            Err(PresenceError::WrongRoot("presence".into()))
        );
    }
}
