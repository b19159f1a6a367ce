//! Rendering a merged target state into the RFC 4235 dialog-info document a phone
//! of a given model gets.
//!
//! The rendering is a value without the `version` attribute's number: each phone
//! subscription has its own version counter (RFC 4235 §4.1, protocol.md §3.2), and
//! only a *change* of the rendered document should cause a NOTIFY. So the
//! subscription layer compares [`Rendering`]s (equal documents ⇒ nothing to send)
//! and splices its own counter in at send time with
//! [`RenderedDoc::write_with_version`]: one rendering per target change serves
//! every phone of the same profile.

use super::model::{
    DialogRule, DialogState, DirectionRule, OfflineStrategy, Profile, RemoteDisplay, TargetSource,
};
use crate::presence::{MergedState, PickupInfo, TargetView};
use crate::sip::Uri;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

/// The dialog-info namespace (RFC 4235 §4.1).
pub const DIALOG_INFO_NS: &str = "urn:ietf:params:xml:ns:dialog-info";

/// A rendered dialog-info document with an empty `version` attribute, ready to
/// have a subscription's version number spliced in.
///
/// Equality compares the documents without their version, which is exactly "would
/// the phone see a change". Cloning is cheap (shared body).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenderedDoc {
    /// The document with `version=""`.
    body: Arc<str>,
    /// Byte offset between the two quotes of `version=""`.
    version_at: usize,
}

impl RenderedDoc {
    fn parts(&self) -> (&str, &str) {
        self.body
            .split_at_checked(self.version_at)
            .unwrap_or((&self.body, ""))
    }

    /// The document with `version="v"`.
    pub fn with_version(&self, v: u32) -> String {
        let (head, tail) = self.parts();
        let mut s = String::with_capacity(self.body.len() + 10);
        s.push_str(head);
        let _ = write!(s, "{v}");
        s.push_str(tail);
        s
    }

    /// Append the document with `version="v"` to a buffer (e.g. a NOTIFY being
    /// built), without an intermediate allocation.
    pub fn write_with_version(&self, v: u32, out: &mut Vec<u8>) {
        let (head, tail) = self.parts();
        out.extend_from_slice(head.as_bytes());
        let mut digits = [0u8; 10];
        out.extend_from_slice(format_u32(v, &mut digits));
        out.extend_from_slice(tail.as_bytes());
    }

    /// Length in bytes of [`with_version`](Self::with_version)`(v)` (the
    /// Content-Length of the NOTIFY).
    pub fn len_with_version(&self, v: u32) -> usize {
        let mut digits = [0u8; 10];
        self.body.len() + format_u32(v, &mut digits).len()
    }

    /// The document with an empty version attribute (for logs and comparisons).
    pub fn template(&self) -> &str {
        &self.body
    }
}

fn format_u32(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// What a phone gets for a target state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rendering {
    /// A dialog-info body for a NOTIFY.
    Document(RenderedDoc),
    /// No document: terminate the phone's subscription with
    /// `Subscription-State: terminated;reason=<reason>[;retry-after=<n>]` (the
    /// profile's `[offline] strategy = "fail-subscription"`).
    Terminate {
        reason: String,
        retry_after: Option<u32>,
    },
}

impl Rendering {
    /// The `Subscription-State` for [`Rendering::Terminate`].
    pub fn subscription_state(&self) -> Option<SubState<'_>> {
        match self {
            Rendering::Document(_) => None,
            Rendering::Terminate {
                reason,
                retry_after,
            } => Some(SubState::Terminated {
                reason,
                retry_after: *retry_after,
            }),
        }
    }

    pub fn document(&self) -> Option<&RenderedDoc> {
        match self {
            Rendering::Document(d) => Some(d),
            Rendering::Terminate { .. } => None,
        }
    }
}

/// A `Subscription-State` value the bridge sends to a phone (RFC 6665 §8.2.3);
/// `Display` writes the header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState<'a> {
    /// `active;expires=N`
    Active { expires: u64 },
    /// `terminated;reason=R[;retry-after=N]`
    Terminated {
        reason: &'a str,
        retry_after: Option<u32>,
    },
}

impl SubState<'static> {
    /// `terminated;reason=timeout`: the subscription ran out, was ended with
    /// `Expires: 0`, or was a fetch.
    pub const TIMEOUT: SubState<'static> = SubState::Terminated {
        reason: "timeout",
        retry_after: None,
    };
}

impl std::fmt::Display for SubState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubState::Active { expires } => write!(f, "active;expires={expires}"),
            SubState::Terminated {
                reason,
                retry_after: None,
            } => write!(f, "terminated;reason={reason}"),
            SubState::Terminated {
                reason,
                retry_after: Some(n),
            } => write!(f, "terminated;reason={reason};retry-after={n}"),
        }
    }
}

/// One `<dialog>` element about to be written (borrowing from the profile, the
/// view and the entity).
#[derive(Debug, Clone)]
pub(crate) struct DialogOut<'a> {
    pub(crate) id: String,
    pub(crate) call_id: Option<&'a str>,
    pub(crate) local_tag: Option<&'a str>,
    pub(crate) remote_tag: Option<&'a str>,
    pub(crate) direction: Option<&'static str>,
    pub(crate) state: DialogState,
    pub(crate) event: Option<&'a str>,
    /// (identity, target, +sip.rendering)
    pub(crate) local: Option<(&'a str, &'a str, Option<bool>)>,
    /// (display, identity URI)
    pub(crate) remote_identity: Option<(Option<&'a str>, &'a str)>,
    pub(crate) remote_target: Option<&'a str>,
}

/// Render `view` for phones using `profile`. `entity` is the monitored target's
/// AOR as the phone subscribed to it (`sip:1002@pbx.test`); it is always the
/// document's `entity`, never what the upstream wrote.
///
/// Call details (`view.call`) are only used for ringing, busy and held; the
/// dialog id is derived from the target and the call's Call-ID so it stays the
/// same across NOTIFYs about one call, and is the target's user part when there
/// is no call.
pub fn render(profile: &Profile, entity: &str, view: &TargetView) -> Rendering {
    if view.state == MergedState::Offline
        && let OfflineStrategy::FailSubscription {
            reason,
            retry_after,
            ..
        } = &profile.offline
    {
        return Rendering::Terminate {
            reason: reason.clone(),
            retry_after: *retry_after,
        };
    }
    let call = match view.state {
        MergedState::Ringing | MergedState::Busy | MergedState::Held => view.call.as_ref(),
        MergedState::Unknown | MergedState::Offline | MergedState::Idle => None,
    };
    let mut dialogs: Vec<DialogOut<'_>> = Vec::with_capacity(1);
    if let Some(rule) = profile.rule(view.state) {
        dialogs.push(build_dialog(rule, call, entity, profile.quirks.early_as));
    }
    if profile.quirks.single_dialog {
        keep_most_interesting(&mut dialogs);
    }
    if dialogs.is_empty() && profile.quirks.never_empty {
        dialogs.push(dummy_dialog(entity));
    }
    Rendering::Document(write_document(entity, &dialogs))
}

fn build_dialog<'a>(
    rule: &'a DialogRule,
    call: Option<&'a PickupInfo>,
    entity: &'a str,
    early_as: DialogState,
) -> DialogOut<'a> {
    let id = match call.and_then(|c| c.call_id.as_deref()) {
        Some(call_id) => call_dialog_id(entity, call_id),
        None => target_dialog_id(entity),
    };
    let state = if rule.state == DialogState::Early {
        early_as
    } else {
        rule.state
    };
    let direction = match rule.direction {
        DirectionRule::Omit => None,
        DirectionRule::Initiator => Some("initiator"),
        DirectionRule::Recipient => Some("recipient"),
        DirectionRule::FromCall => call.and_then(|c| c.direction).map(|d| d.as_str()),
    };
    let ids = |f: fn(&'a PickupInfo) -> &'a Option<String>| {
        if rule.include_ids {
            call.and_then(|c| f(c).as_deref())
        } else {
            None
        }
    };
    let local = rule.include_local.then(|| {
        let identity = call
            .and_then(|c| c.local_identity.as_deref())
            .unwrap_or(entity);
        let target = call
            .and_then(|c| c.local_target.as_deref())
            .unwrap_or(entity);
        (identity, target, rule.rendering)
    });
    let remote_identity = if rule.include_remote {
        match &rule.remote_display {
            RemoteDisplay::FromCall => call.and_then(|c| {
                c.remote_identity
                    .as_deref()
                    .map(|uri| (c.remote_display.as_deref().filter(|d| !d.is_empty()), uri))
            }),
            RemoteDisplay::Literal(text) => {
                let uri = call
                    .and_then(|c| c.remote_identity.as_deref())
                    .unwrap_or(entity);
                Some((Some(text.as_str()).filter(|d| !d.is_empty()), uri))
            }
        }
    } else {
        None
    };
    let remote_target = if rule.include_target {
        match rule.target {
            TargetSource::Entity => Some(entity),
            TargetSource::FromCall => {
                call.and_then(|c| c.remote_target.as_deref().or(c.remote_identity.as_deref()))
            }
        }
    } else {
        None
    };
    DialogOut {
        id,
        call_id: ids(|c| &c.call_id),
        local_tag: ids(|c| &c.local_tag),
        remote_tag: ids(|c| &c.remote_tag),
        direction,
        state,
        event: rule.event.as_deref(),
        local,
        remote_identity,
        remote_target,
    }
}

/// The `<dialog id=… ><state>terminated</state></dialog>` rendered by
/// `never_empty` when a state has no dialog.
fn dummy_dialog(entity: &str) -> DialogOut<'_> {
    DialogOut {
        id: target_dialog_id(entity),
        call_id: None,
        local_tag: None,
        remote_tag: None,
        direction: None,
        state: DialogState::Terminated,
        event: None,
        local: None,
        remote_identity: None,
        remote_target: None,
    }
}

/// `single_dialog`: keep only the most interesting dialog (Kamailio
/// `force_single_dialog` order; the first one among equals).
pub(crate) fn keep_most_interesting(dialogs: &mut Vec<DialogOut<'_>>) {
    if dialogs.len() <= 1 {
        return;
    }
    let mut best = 0;
    for (i, d) in dialogs.iter().enumerate() {
        if d.state.interest() > dialogs[best].state.interest() {
            best = i;
        }
    }
    let keep = dialogs.swap_remove(best);
    dialogs.clear();
    dialogs.push(keep);
}

/// 64-bit FNV-1a: tiny, and stable across releases and platforms, so dialog ids
/// do not change when the bridge restarts or is upgraded.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // separator, so ("ab","c") and ("a","bc") differ
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Dialog id for a call: stable per target and Call-ID, without exposing it.
fn call_dialog_id(entity: &str, call_id: &str) -> String {
    format!("{:016x}", fnv1a(&[entity.as_bytes(), call_id.as_bytes()]))
}

/// Dialog id when there is no call: the target's user part (as Asterisk does,
/// `<dialog id="1002">`), or a hash of the entity if it has no plain user part.
fn target_dialog_id(entity: &str) -> String {
    let user = Uri::parse(entity.as_bytes()).ok().and_then(|u| u.user);
    match user {
        Some(u)
            if !u.is_empty()
                && u.len() <= 64
                && u.iter().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'+' | b'*')
                }) =>
        {
            String::from_utf8_lossy(u).into_owned()
        }
        _ => format!("{:016x}", fnv1a(&[entity.as_bytes()])),
    }
}

/// Replace characters XML 1.0 cannot carry at all (C0 controls other than
/// tab/LF/CR, U+FFFE, U+FFFF) and line breaks/tabs (meaningless in a display
/// name or URI) with spaces. Upstream display names are untrusted.
fn xml_safe(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}';
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if bad(c) { ' ' } else { c }).collect())
}

fn write_document(entity: &str, dialogs: &[DialogOut<'_>]) -> RenderedDoc {
    let mut w = Writer::new_with_indent(Vec::with_capacity(256 + 512 * dialogs.len()), b' ', 2);
    // Writing into a Vec cannot fail; the Result only comes from io::Write.
    write_events(&mut w, entity, dialogs).expect("writing XML into a Vec cannot fail");
    let mut buf = w.into_inner();
    buf.push(b'\n');
    let body = String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    // The first `version="` after the root's name is its version attribute (the
    // XML declaration's own version comes before, the namespace has no quote).
    let root = body.find("<dialog-info ").unwrap_or(0);
    let version_at = body[root..]
        .find("version=\"")
        .map(|i| root + i + "version=\"".len())
        .unwrap_or(0);
    RenderedDoc {
        body: body.into(),
        version_at,
    }
}

fn write_events(
    w: &mut Writer<Vec<u8>>,
    entity: &str,
    dialogs: &[DialogOut<'_>],
) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", None, None)))?;
    let entity = xml_safe(entity);
    let mut root = BytesStart::new("dialog-info");
    root.push_attribute(("xmlns", DIALOG_INFO_NS));
    root.push_attribute(("version", ""));
    root.push_attribute(("state", "full"));
    root.push_attribute(("entity", entity.as_ref()));
    if dialogs.is_empty() {
        return w.write_event(Event::Empty(root));
    }
    w.write_event(Event::Start(root))?;
    for d in dialogs {
        write_dialog(w, d)?;
    }
    w.write_event(Event::End(BytesEnd::new("dialog-info")))
}

fn write_dialog(w: &mut Writer<Vec<u8>>, d: &DialogOut<'_>) -> std::io::Result<()> {
    let mut el = BytesStart::new("dialog");
    el.push_attribute(("id", xml_safe(&d.id).as_ref()));
    for (key, value) in [
        ("call-id", d.call_id),
        ("local-tag", d.local_tag),
        ("remote-tag", d.remote_tag),
    ] {
        if let Some(v) = value {
            el.push_attribute((key, xml_safe(v).as_ref()));
        }
    }
    if let Some(dir) = d.direction {
        el.push_attribute(("direction", dir));
    }
    w.write_event(Event::Start(el))?;

    let mut st = BytesStart::new("state");
    if let Some(ev) = d.event {
        st.push_attribute(("event", ev));
    }
    w.write_event(Event::Start(st))?;
    w.write_event(Event::Text(BytesText::new(d.state.as_str())))?;
    w.write_event(Event::End(BytesEnd::new("state")))?;

    // RFC 4235 schema order: state, …, local, remote.
    if let Some((identity, target, rendering)) = d.local {
        w.write_event(Event::Start(BytesStart::new("local")))?;
        write_identity(w, None, identity)?;
        write_target(w, target, rendering)?;
        w.write_event(Event::End(BytesEnd::new("local")))?;
    }
    if d.remote_identity.is_some() || d.remote_target.is_some() {
        w.write_event(Event::Start(BytesStart::new("remote")))?;
        if let Some((display, uri)) = d.remote_identity {
            write_identity(w, display, uri)?;
        }
        if let Some(target) = d.remote_target {
            write_target(w, target, None)?;
        }
        w.write_event(Event::End(BytesEnd::new("remote")))?;
    }
    w.write_event(Event::End(BytesEnd::new("dialog")))
}

fn write_identity(
    w: &mut Writer<Vec<u8>>,
    display: Option<&str>,
    uri: &str,
) -> std::io::Result<()> {
    let mut el = BytesStart::new("identity");
    if let Some(display) = display {
        el.push_attribute(("display", xml_safe(display).as_ref()));
    }
    w.write_event(Event::Start(el))?;
    w.write_event(Event::Text(BytesText::new(&xml_safe(uri))))?;
    w.write_event(Event::End(BytesEnd::new("identity")))
}

fn write_target(
    w: &mut Writer<Vec<u8>>,
    uri: &str,
    rendering: Option<bool>,
) -> std::io::Result<()> {
    let mut el = BytesStart::new("target");
    el.push_attribute(("uri", xml_safe(uri).as_ref()));
    match rendering {
        None => w.write_event(Event::Empty(el)),
        Some(r) => {
            w.write_event(Event::Start(el))?;
            let mut p = BytesStart::new("param");
            p.push_attribute(("pname", "+sip.rendering"));
            p.push_attribute(("pvalue", if r { "yes" } else { "no" }));
            w.write_event(Event::Empty(p))?;
            w.write_event(Event::End(BytesEnd::new("target")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(state: DialogState, id: &str) -> DialogOut<'static> {
        DialogOut {
            id: id.to_string(),
            call_id: None,
            local_tag: None,
            remote_tag: None,
            direction: None,
            state,
            event: None,
            local: None,
            remote_identity: None,
            remote_target: None,
        }
    }

    #[test]
    fn single_dialog_keeps_the_most_interesting() {
        let mut v = vec![
            out(DialogState::Terminated, "a"),
            out(DialogState::Confirmed, "b"),
            out(DialogState::Early, "c"),
            out(DialogState::Confirmed, "d"),
        ];
        keep_most_interesting(&mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].id, "c");
        let mut v = vec![
            out(DialogState::Confirmed, "x"),
            out(DialogState::Confirmed, "y"),
        ];
        keep_most_interesting(&mut v);
        assert_eq!(v.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["x"]);
        let mut v = vec![out(DialogState::Trying, "t")];
        keep_most_interesting(&mut v);
        assert_eq!(v[0].id, "t");
    }

    #[test]
    fn single_dialog_quirk_writes_one_dialog() {
        let mut v = vec![
            out(DialogState::Confirmed, "b"),
            out(DialogState::Early, "c"),
        ];
        let both = write_document("sip:1@x", &v);
        assert_eq!(both.template().matches("<dialog ").count(), 2);
        keep_most_interesting(&mut v);
        let one = write_document("sip:1@x", &v);
        assert_eq!(one.template().matches("<dialog ").count(), 1);
        assert!(one.template().contains("<dialog id=\"c\">"));
    }

    #[test]
    fn dialog_ids() {
        assert_eq!(target_dialog_id("sip:1002@pbx.test"), "1002");
        assert_eq!(
            target_dialog_id("sips:alice.b@pbx.test;transport=tls"),
            "alice.b"
        );
        let odd = target_dialog_id("sip:a%20b@pbx.test");
        assert_eq!(odd.len(), 16);
        assert_ne!(odd, target_dialog_id("sip:pbx.test"));
        assert_eq!(
            call_dialog_id("sip:1@x", "c1"),
            call_dialog_id("sip:1@x", "c1")
        );
        assert_ne!(
            call_dialog_id("sip:1@x", "c1"),
            call_dialog_id("sip:2@x", "c1")
        );
        assert_ne!(
            call_dialog_id("sip:1@x", "c1"),
            call_dialog_id("sip:1@x", "c2")
        );
        // a known value: ids must not change between releases (phones would see churn)
        assert_eq!(
            call_dialog_id("sip:1002@pbx.test", "1-5707@127.0.0.1"),
            "ba192857617248d4"
        );
        assert_eq!(target_dialog_id("sip:pbx.test"), "4476704819954204");
    }

    #[test]
    fn version_formatting() {
        let mut b = [0u8; 10];
        assert_eq!(format_u32(0, &mut b), b"0");
        assert_eq!(format_u32(4_294_967_295, &mut b), b"4294967295");
        assert_eq!(format_u32(1203, &mut b), b"1203");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(xml_safe("a\u{1}b\nc\u{FFFF}"), "a b c ");
        assert!(matches!(xml_safe("plain \"&<>"), Cow::Borrowed(_)));
    }
}
