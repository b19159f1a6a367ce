//! The phone side: the bridge as notifier (RFC 6665 §4.2, RFC 4235) for the
//! dialog-event subscriptions of translate-profile phones.
//!
//! A [`PhoneSub`] owns its transitions (accept, refresh, release of the held first
//! NOTIFY, NOTIFY building, the outcome of a NOTIFY transaction); the registry
//! decides when they happen and keeps the timers.

use super::build;
use super::target::Target;
use super::types::{BuiltNotify, DialogKey, Env, Out, PhoneId, RESERVE, ReqTag, TargetId};
use crate::config::Subscriptions;
use crate::flow::Flow;
use crate::presence::TargetView;
use crate::profile::{OfflineStrategy, Profile, ProfileSet, RenderedDoc, Rendering, SubState};
use crate::sip::{HeaderName, MessageBuilder, Method, SipMessage};
use crate::util::instant_serde;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Life cycle of one phone subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneState {
    /// Accepted; the first NOTIFY waits for the upstream (or the hold deadline).
    Holding,
    Active,
    /// The final NOTIFY has been queued. The registry removes the subscription in
    /// the same step; the NOTIFY's transaction runs on without it.
    Terminating,
}

/// The profile a phone was matched to at SUBSCRIBE time: the profile itself,
/// resolved once and shared by every phone of that model (8 bytes per phone),
/// or — restored from a store and not found — its name. Stored as the name.
#[derive(Clone)]
pub struct ProfileRef(Resolved);

#[derive(Clone)]
enum Resolved {
    Shared(Arc<Profile>),
    /// Not (yet) found in the profile set: after a restore the profile is
    /// found by name again.
    Named(Box<str>),
}

impl ProfileRef {
    pub fn new(profile: &Arc<Profile>) -> ProfileRef {
        ProfileRef(Resolved::Shared(profile.clone()))
    }

    pub fn name(&self) -> &str {
        match &self.0 {
            Resolved::Shared(p) => p.name(),
            Resolved::Named(n) => n,
        }
    }

    /// The profile: the one resolved at SUBSCRIBE time, or (restored from a
    /// store) the set's profile of that name.
    pub fn get<'a>(&'a self, set: &'a ProfileSet) -> Option<&'a Arc<Profile>> {
        match &self.0 {
            Resolved::Shared(p) => Some(p),
            Resolved::Named(n) => set.get_shared(n),
        }
    }

    /// After a reload: use the set's profile of that name (keep the old one if
    /// the set no longer has it).
    pub fn reresolve(&mut self, set: &ProfileSet) {
        if let Some(p) = set.get_shared(self.name()) {
            self.0 = Resolved::Shared(p.clone());
        }
    }
}

impl Serialize for ProfileRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ProfileRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(ProfileRef(Resolved::Named(name.into_boxed_str())))
    }
}

impl std::fmt::Debug for ProfileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProfileRef({})", self.name())
    }
}

/// The strings of a phone's dialog, in one heap block: eight strings made
/// one allocation instead of eight (each block costs glibc's malloc 8 bytes of
/// header and up to 15 of rounding, and each `Box<str>` 16 bytes of handle).
/// Read by field ([`DialogText::get`]); replacing one rebuilds the block,
/// which happens only when a refresh brings a new Contact.
#[derive(Clone, Default)]
pub struct DialogText {
    /// The strings, one after the other.
    buf: Box<str>,
    /// Where each field ends in `buf` (by `Field as usize`).
    ends: [u32; FIELDS],
    /// Which fields are present (a bit per field): `None` is not `Some("")`.
    present: u8,
}

/// The fields of a [`DialogText`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    CallId,
    LocalTag,
    RemoteTag,
    LocalHeader,
    RemoteHeader,
    RemoteTarget,
    EventId,
    UserAgent,
}

const FIELDS: usize = 8;

impl DialogText {
    /// The block of `parts`, in [`Field`] order. A block longer than 4 GiB
    /// cannot come from one SIP message; its excess is cut.
    pub fn new(parts: [Option<&str>; FIELDS]) -> DialogText {
        let len: usize = parts.iter().flatten().map(|p| p.len()).sum();
        let mut buf = String::with_capacity(len.min(u32::MAX as usize));
        let mut ends = [0u32; FIELDS];
        let mut present = 0u8;
        for (i, part) in parts.iter().enumerate() {
            if let Some(p) = part {
                if buf.len() + p.len() <= u32::MAX as usize {
                    buf.push_str(p);
                }
                present |= 1 << i;
            }
            ends[i] = buf.len() as u32;
        }
        DialogText {
            buf: buf.into_boxed_str(),
            ends,
            present,
        }
    }

    /// A field; `None` when it was not given.
    pub fn get(&self, f: Field) -> Option<&str> {
        let i = f as usize;
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.buf.get(start..self.ends[i] as usize)
    }

    /// A field that is always given (the empty string otherwise).
    pub fn text(&self, f: Field) -> &str {
        self.get(f).unwrap_or_default()
    }

    /// The same block with `f` replaced.
    pub fn with(&self, f: Field, value: Option<&str>) -> DialogText {
        let mut parts = self.parts();
        parts[f as usize] = value;
        DialogText::new(parts)
    }

    fn parts(&self) -> [Option<&str>; FIELDS] {
        use Field::*;
        [
            CallId,
            LocalTag,
            RemoteTag,
            LocalHeader,
            RemoteHeader,
            RemoteTarget,
            EventId,
            UserAgent,
        ]
        .map(|f| self.get(f))
    }
}

impl std::fmt::Debug for DialogText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.parts()).finish()
    }
}

/// A phone's subscription to a target, terminated at the bridge.
///
/// Stored (and restored) as a flat record with one field per string
/// ([`PhoneRecord`]): the layout in memory is not the store's format.
#[derive(Debug, Clone)]
pub struct PhoneSub {
    pub id: PhoneId,
    pub target: TargetId,
    pub profile: ProfileRef,
    /// Call-ID; our tag (the To-tag of our 200, From-tag of our NOTIFYs); the
    /// phone's From-tag; the SUBSCRIBE's To header value plus our tag (the
    /// From of our NOTIFYs); its From header value with its tag (the To of our
    /// NOTIFYs); the Request-URI of our NOTIFYs (the phone's Contact); the
    /// `id` parameter of the Event header, echoed in every NOTIFY; the phone's
    /// User-Agent (for the operator's window), as sent, cut to 128 bytes.
    /// Read with the accessors ([`PhoneSub::call_id`] …).
    pub text: DialogText,
    /// Record-Route of the SUBSCRIBE, in order (RFC 3261 §12.1.1).
    pub route_set: Vec<String>,
    /// The flow the SUBSCRIBE came on: NOTIFYs go back over it (NAT, TCP).
    pub flow: Flow,
    /// CSeq of the last NOTIFY we sent (strictly increasing).
    pub local_cseq: u32,
    /// CSeq of the last SUBSCRIBE accepted from the phone.
    pub remote_cseq: u32,
    /// dialog-info `version` of the next document (starts at 0, +1 per document).
    pub next_version: u32,
    pub expires_at: Instant,
    pub state: PhoneState,
    pub hold_until: Option<Instant>,
    /// The digest of the last document sent (without version), to send only
    /// on changes: 8 bytes instead of a copy of the document per phone. Not
    /// stored: after a restore the next update sends full state anyway.
    pub last_doc: Option<DocDigest>,
    /// A NOTIFY transaction is outstanding (one at a time keeps CSeq order).
    /// Set from the moment its CSeq and version are reserved, while it still
    /// waits in the fan-out queue ([`PhoneSub::queued`]).
    pub notify_in_flight: bool,
    /// Its next NOTIFY has its CSeq and version reserved and waits in the
    /// manager's fan-out queue to be built: it will carry the target's newest
    /// rendering, whatever changed meanwhile. Not stored (a restored
    /// subscription continues from its reserved marks).
    pub queued: bool,
    /// The state changed while a NOTIFY was in flight: send again when it ends.
    pub dirty: bool,
    /// A refresh asked for a full-state NOTIFY even if nothing changed.
    pub force_full: bool,
    /// `Expires: 0` on the initial SUBSCRIBE: one terminated NOTIFY, then gone.
    pub fetch: bool,
    /// Bumped on every refresh so stale expiry timers are ignored.
    pub timer_gen: u32,
    /// High-water marks reserved ahead in the store: a restored subscription
    /// continues from them, so CSeq and version never go backwards after a
    /// crash, and a NOTIFY costs a disk write only when it reaches them.
    pub reserved_cseq: u32,
    pub reserved_version: u32,
    /// The phone has answered one of our NOTIFYs or refreshed in the dialog:
    /// its source is real. Until then a NOTIFY is retransmitted only a few
    /// times ([`UNVERIFIED_RETRANSMITS`]), so a spoofed SUBSCRIBE reflects little.
    pub verified: bool,
}

/// The store's record of a [`PhoneSub`] (JSON): one field per string, the
/// names and order they have had since the store was introduced, so records
/// written by earlier versions restore and later ones read these.
#[derive(Serialize)]
struct PhoneRecordRef<'a> {
    id: PhoneId,
    target: TargetId,
    profile: &'a ProfileRef,
    call_id: &'a str,
    local_tag: &'a str,
    remote_tag: &'a str,
    local_header: &'a str,
    remote_header: &'a str,
    remote_target: &'a str,
    route_set: &'a [String],
    flow: &'a Flow,
    event_id: Option<&'a str>,
    local_cseq: u32,
    remote_cseq: u32,
    next_version: u32,
    #[serde(with = "instant_serde")]
    expires_at: Instant,
    state: PhoneState,
    #[serde(with = "instant_serde::option")]
    hold_until: Option<Instant>,
    notify_in_flight: bool,
    dirty: bool,
    force_full: bool,
    fetch: bool,
    timer_gen: u32,
    reserved_cseq: u32,
    reserved_version: u32,
    user_agent: Option<&'a str>,
    verified: bool,
}

/// [`PhoneRecordRef`], owned, as read back.
#[derive(Deserialize)]
struct PhoneRecord {
    id: PhoneId,
    target: TargetId,
    profile: ProfileRef,
    call_id: String,
    local_tag: String,
    remote_tag: String,
    local_header: String,
    remote_header: String,
    remote_target: String,
    route_set: Vec<String>,
    flow: Flow,
    event_id: Option<String>,
    local_cseq: u32,
    remote_cseq: u32,
    next_version: u32,
    #[serde(with = "instant_serde")]
    expires_at: Instant,
    state: PhoneState,
    #[serde(with = "instant_serde::option")]
    hold_until: Option<Instant>,
    notify_in_flight: bool,
    dirty: bool,
    force_full: bool,
    fetch: bool,
    timer_gen: u32,
    #[serde(default)]
    reserved_cseq: u32,
    #[serde(default)]
    reserved_version: u32,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    verified: bool,
}

impl Serialize for PhoneSub {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PhoneRecordRef {
            id: self.id,
            target: self.target,
            profile: &self.profile,
            call_id: self.call_id(),
            local_tag: self.local_tag(),
            remote_tag: self.remote_tag(),
            local_header: self.local_header(),
            remote_header: self.remote_header(),
            remote_target: self.remote_target(),
            route_set: &self.route_set,
            flow: &self.flow,
            event_id: self.event_id(),
            local_cseq: self.local_cseq,
            remote_cseq: self.remote_cseq,
            next_version: self.next_version,
            expires_at: self.expires_at,
            state: self.state,
            hold_until: self.hold_until,
            notify_in_flight: self.notify_in_flight,
            dirty: self.dirty,
            force_full: self.force_full,
            fetch: self.fetch,
            timer_gen: self.timer_gen,
            reserved_cseq: self.reserved_cseq,
            reserved_version: self.reserved_version,
            user_agent: self.user_agent(),
            verified: self.verified,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PhoneSub {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PhoneRecord::deserialize(d)?;
        Ok(PhoneSub {
            id: r.id,
            target: r.target,
            profile: r.profile,
            text: DialogText::new([
                Some(r.call_id.as_str()),
                Some(r.local_tag.as_str()),
                Some(r.remote_tag.as_str()),
                Some(r.local_header.as_str()),
                Some(r.remote_header.as_str()),
                Some(r.remote_target.as_str()),
                r.event_id.as_deref(),
                r.user_agent.as_deref(),
            ]),
            route_set: r.route_set,
            flow: r.flow,
            local_cseq: r.local_cseq,
            remote_cseq: r.remote_cseq,
            next_version: r.next_version,
            expires_at: r.expires_at,
            state: r.state,
            hold_until: r.hold_until,
            last_doc: None,
            notify_in_flight: r.notify_in_flight,
            queued: false,
            dirty: r.dirty,
            force_full: r.force_full,
            fetch: r.fetch,
            timer_gen: r.timer_gen,
            reserved_cseq: r.reserved_cseq,
            reserved_version: r.reserved_version,
            verified: r.verified,
        })
    }
}

/// A document as a phone last got it, for "is this news?": a 64-bit SipHash
/// of the template (the document without its version) under a key drawn at
/// start, so no peer can aim two documents at one digest; an accidental match
/// of two different documents has odds of 2^-64 per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocDigest(u64);

impl DocDigest {
    pub fn of(doc: &RenderedDoc) -> DocDigest {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        DocDigest(KEY.get_or_init(Default::default).hash_one(doc.template()))
    }
}

/// Retransmissions of a NOTIFY to a phone that has not shown its source is real.
pub const UNVERIFIED_RETRANSMITS: u32 = 2;

/// A refused SUBSCRIBE: (code, reason, extra headers).
pub(super) type Refusal = (u16, &'static str, Vec<(&'static str, String)>);

/// The expiry granted to a SUBSCRIBE: its `Expires` (or the default), capped;
/// 423 (+ `Min-Expires`) below the minimum, 400 when malformed.
fn granted_expires(msg: &SipMessage, s: &Subscriptions) -> Result<u32, Refusal> {
    let req = match msg.expires() {
        None => s.default_expires,
        Some(Ok(e)) => e,
        Some(Err(_)) => return Err((400, "Malformed Expires", Vec::new())),
    };
    if req != 0 && req < s.min_expires {
        let min = vec![("Min-Expires", s.min_expires.to_string())];
        return Err((423, "Interval Too Brief", min));
    }
    Ok(req.min(s.max_expires))
}

/// The longest target user (an extension, a number, a name) the bridge watches.
pub const MAX_TARGET_USER: usize = 64;

/// A target user made of the characters an extension or an address uses (RFC
/// 3261 `user`: unreserved, user-unreserved, escapes), nothing else.
fn plausible_user(user: &str) -> bool {
    user.bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&c))
}

/// What an acceptable initial SUBSCRIBE asks for.
pub(super) struct Initial {
    pub expires: u32,
    /// The target: the Request-URI user (the To user when the R-URI has none).
    pub user: String,
    /// The phone's Contact URI.
    pub contact: String,
    /// The From user (selects the upstream account).
    pub from_user: Option<String>,
}

impl Initial {
    /// Checks an initial SUBSCRIBE, in this order: `Accept` (406, RFC 6665
    /// §4.2.1.1), `Expires` (423/400), a target user (404), a Contact (400).
    pub(super) fn check(msg: &SipMessage, s: &Subscriptions) -> Result<Initial, Refusal> {
        if msg.accepts("application/dialog-info+xml") == Some(false) {
            let accept = vec![("Accept", "application/dialog-info+xml".into())];
            return Err((406, "Not Acceptable", accept));
        }
        let expires = granted_expires(msg, s)?;
        let user = msg
            .request_uri()
            .and_then(|u| crate::sip::Uri::parse(u).ok())
            .and_then(|u| u.user_str().map(str::to_string))
            .or_else(|| {
                msg.to()
                    .and_then(|t| t.ok())
                    .and_then(|t| t.parsed_uri().ok())
                    .and_then(|u| u.user_str().map(str::to_string))
            });
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Err((404, "Not Found", Vec::new()));
        };
        // refused before a target exists: a 30 KB user once made an upstream
        // SUBSCRIBE that could not be built and was retried forever
        if user.len() > MAX_TARGET_USER {
            return Err((414, "Request-URI Too Long", Vec::new()));
        }
        if !plausible_user(&user) {
            return Err((404, "Not Found", Vec::new()));
        }
        let Some(contact) = msg
            .contacts()
            .next()
            .and_then(|(_, c)| c.ok())
            .map(|c| String::from_utf8_lossy(c.uri).into_owned())
        else {
            return Err((400, "Missing Contact", Vec::new()));
        };
        let from_user = msg
            .from()
            .and_then(|f| f.ok())
            .and_then(|f| f.parsed_uri().ok())
            .and_then(|u| u.user_str().map(str::to_string));
        Ok(Initial {
            expires,
            user,
            contact,
            from_user,
        })
    }
}

/// The refusal of a `fail-subscription` profile while the target is offline.
pub(super) fn offline_refusal(profile: &Profile) -> Option<Refusal> {
    let OfflineStrategy::FailSubscription {
        reject_code,
        retry_after,
        ..
    } = profile.offline()
    else {
        return None;
    };
    let extra = retry_after
        .iter()
        .map(|r| ("Retry-After", r.to_string()))
        .collect();
    Some((*reject_code, crate::sip::reason_phrase(*reject_code), extra))
}

/// What follows the final response to one of our NOTIFYs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterNotify {
    Nothing,
    /// The state changed meanwhile: render and send again.
    Update,
    /// The phone no longer knows the subscription (481).
    Remove,
}

/// What a phone does with a rendering of its target.
pub(super) enum Update {
    Nothing,
    /// A NOTIFY is due: its CSeq and version are reserved (`(cseq, version)`),
    /// it is built when the endpoint asks for it ([`PhoneSub::build_queued`]).
    Notify(u32, u32),
    /// End the subscription (with the rendering's `Subscription-State`).
    Terminate,
}

/// The parts of the SUBSCRIBE that a new phone subscription is made of.
pub(super) struct Accepted {
    pub id: PhoneId,
    pub target: TargetId,
    pub profile: ProfileRef,
    /// The phone's Contact URI.
    pub remote_target: String,
    pub flow: Flow,
    pub local_tag: String,
    /// Granted expiry in seconds (0: a fetch).
    pub expires: u32,
}

impl PhoneSub {
    /// The subscription an accepted initial SUBSCRIBE creates.
    pub(super) fn accept(a: Accepted, msg: &SipMessage, now: Instant) -> PhoneSub {
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let to_value = text(msg.header_value(HeaderName::To));
        let route_set: Vec<String> = msg
            .values(HeaderName::RecordRoute)
            .map(|s| String::from_utf8_lossy(msg.slice(s)).into_owned())
            .collect();
        let event_id = msg
            .event()
            .and_then(|e| e.ok())
            .and_then(|e| e.id().map(|i| String::from_utf8_lossy(i).into_owned()));
        let local_header = format!("{to_value};tag={}", a.local_tag);
        let call_id = text(msg.call_id());
        let remote_tag = text(msg.from_tag());
        let remote_header = text(msg.header_value(HeaderName::From));
        let user_agent = msg
            .user_agent()
            .map(|ua| String::from_utf8_lossy(&ua[..ua.len().min(128)]).into_owned());
        PhoneSub {
            id: a.id,
            target: a.target,
            profile: a.profile,
            text: DialogText::new([
                Some(call_id.as_str()),
                Some(a.local_tag.as_str()),
                Some(remote_tag.as_str()),
                Some(local_header.as_str()),
                Some(remote_header.as_str()),
                Some(a.remote_target.as_str()),
                event_id.as_deref(),
                user_agent.as_deref(),
            ]),
            route_set,
            flow: a.flow,
            local_cseq: 0,
            remote_cseq: msg.cseq().and_then(|c| c.ok()).map(|c| c.seq).unwrap_or(0),
            next_version: 0,
            expires_at: now + Duration::from_secs(a.expires as u64),
            state: PhoneState::Holding,
            hold_until: None,
            last_doc: None,
            notify_in_flight: false,
            queued: false,
            dirty: false,
            force_full: true,
            fetch: a.expires == 0,
            timer_gen: 0,
            reserved_cseq: 0,
            reserved_version: 0,
            verified: false,
        }
    }

    /// The key of its dialog in the registry's index.
    pub fn key(&self) -> DialogKey {
        DialogKey::new(self.call_id().as_bytes(), self.local_tag().as_bytes())
    }

    pub fn call_id(&self) -> &str {
        self.text.text(Field::CallId)
    }

    /// Our tag (the To-tag of our 200; From-tag of our NOTIFYs).
    pub fn local_tag(&self) -> &str {
        self.text.text(Field::LocalTag)
    }

    /// The phone's From-tag.
    pub fn remote_tag(&self) -> &str {
        self.text.text(Field::RemoteTag)
    }

    /// The SUBSCRIBE's To header value plus our tag: the From of our NOTIFYs.
    pub fn local_header(&self) -> &str {
        self.text.text(Field::LocalHeader)
    }

    /// The SUBSCRIBE's From header value (with its tag): the To of our NOTIFYs.
    pub fn remote_header(&self) -> &str {
        self.text.text(Field::RemoteHeader)
    }

    /// Request-URI of our NOTIFYs (the phone's Contact).
    pub fn remote_target(&self) -> &str {
        self.text.text(Field::RemoteTarget)
    }

    /// `id` parameter of the Event header, echoed in every NOTIFY.
    pub fn event_id(&self) -> Option<&str> {
        self.text.get(Field::EventId)
    }

    /// The phone's User-Agent, as sent, cut to 128 bytes.
    pub fn user_agent(&self) -> Option<&str> {
        self.text.get(Field::UserAgent)
    }

    /// Checks an in-dialog SUBSCRIBE: the same package and `id` (RFC 6665
    /// §4.1.2.2), a higher CSeq, an acceptable expiry. Its CSeq and the granted
    /// expiry, or the refusal.
    pub(super) fn check_resubscribe(
        &self,
        msg: &SipMessage,
        s: &Subscriptions,
    ) -> Result<(u32, u32), Refusal> {
        let ev = msg.event().and_then(|e| e.ok());
        let same_event = ev.is_some_and(|e| {
            e.is("dialog")
                && e.id().map(|i| String::from_utf8_lossy(i)).as_deref() == self.event_id()
        });
        if !same_event {
            return Err((489, "Bad Event", vec![("Allow-Events", "dialog".into())]));
        }
        let cseq = msg.cseq().and_then(|c| c.ok()).map(|c| c.seq).unwrap_or(0);
        if cseq <= self.remote_cseq {
            return Err((500, "CSeq Out of Order", Vec::new()));
        }
        Ok((cseq, granted_expires(msg, s)?))
    }

    /// An accepted refresh (or `Expires: 0`): new CSeq, target, flow and expiry;
    /// the next NOTIFY carries full state.
    pub(super) fn refresh(
        &mut self,
        msg: &SipMessage,
        cseq: u32,
        flow: Flow,
        expires: u32,
        now: Instant,
    ) {
        self.remote_cseq = cseq;
        self.verified = true;
        // SUBSCRIBE is a target-refresh request
        if let Some(c) = msg.contacts().next().and_then(|(_, c)| c.ok()) {
            let contact = String::from_utf8_lossy(c.uri);
            if contact != self.remote_target() {
                self.text = self.text.with(Field::RemoteTarget, Some(&contact));
            }
        }
        self.flow = flow;
        self.timer_gen += 1;
        self.force_full = true;
        self.expires_at = now + Duration::from_secs(expires as u64);
    }

    /// Leave `Holding` (the upstream answered, or the hold deadline passed).
    /// False when it was not holding.
    pub(super) fn release(&mut self) -> bool {
        if self.state != PhoneState::Holding {
            return false;
        }
        self.state = PhoneState::Active;
        self.hold_until = None;
        true
    }

    /// Whether a NOTIFY may go out now: only when active and none is in flight
    /// (then the change is remembered and sent when that NOTIFY ends). One
    /// still queued needs nothing more: it is built from the newest rendering.
    pub(super) fn may_notify(&mut self) -> bool {
        if self.state != PhoneState::Active || self.queued {
            return false;
        }
        if self.notify_in_flight {
            self.dirty = true;
            return false;
        }
        true
    }

    /// What the phone gets for the target's current rendering (`digest`: the
    /// digest of its document): a NOTIFY when the document is news (or full
    /// state was asked for) — its CSeq and version reserved now, the message
    /// built later ([`PhoneSub::build_queued`]) — or the end of the
    /// subscription (`fail-subscription` profiles while the target is offline).
    pub(super) fn on_rendering(
        &mut self,
        rendering: &Rendering,
        digest: Option<DocDigest>,
    ) -> Update {
        if let Rendering::Terminate { .. } = rendering {
            return Update::Terminate;
        }
        if !self.force_full && self.last_doc.is_some() && self.last_doc == digest {
            return Update::Nothing;
        }
        let (cseq, version) = self.reserve_notify();
        Update::Notify(cseq, version)
    }

    /// When CSeq or version reached the reserved marks: move them [`RESERVE`]
    /// ahead (true: the record must be written before the NOTIFY leaves).
    pub(super) fn move_marks(&mut self) -> bool {
        if self.local_cseq >= self.reserved_cseq || self.next_version >= self.reserved_version {
            self.reserved_cseq = self.local_cseq.saturating_add(RESERVE);
            self.reserved_version = self.next_version.saturating_add(RESERVE);
            return true;
        }
        false
    }

    /// Reserve the next NOTIFY's CSeq and document version; from now on the
    /// subscription counts as having a NOTIFY in flight.
    fn reserve_notify(&mut self) -> (u32, u32) {
        self.local_cseq += 1;
        let version = self.next_version;
        self.next_version = self.next_version.wrapping_add(1);
        self.force_full = false;
        self.dirty = false;
        self.notify_in_flight = true;
        self.queued = true;
        (self.local_cseq, version)
    }

    /// The queued NOTIFY, built now (`now` starts its transaction's timers and
    /// counts `expires` down) from the target's newest rendering `doc`,
    /// stamped with the version reserved for it.
    pub(super) fn build_queued(
        &mut self,
        env: &Env,
        branch: &str,
        doc: &RenderedDoc,
        digest: DocDigest,
        version: u32,
        now: Instant,
    ) -> BuiltNotify {
        self.queued = false;
        self.last_doc = Some(digest);
        let state = SubState::Active {
            expires: self.expires_at.saturating_duration_since(now).as_secs(),
        };
        let (data, at) = notify_request_lean(env, self, branch, state, doc, version);
        BuiltNotify {
            flow: self.flow,
            branch: data.slice(at..at + branch.len()),
            data,
            tag: ReqTag::Notify {
                phone: self.id,
                cseq: self.local_cseq,
            },
            at: now,
        }
    }

    /// The queued NOTIFY will not be built (its target's rendering is no
    /// document any more): nothing is in flight. Its CSeq and version stay
    /// used (both only have to increase).
    pub(super) fn unqueue(&mut self) {
        self.queued = false;
        self.notify_in_flight = false;
    }

    /// Queue the final NOTIFY: sent even if one is in flight (it carries a higher
    /// CSeq, and the subscription is gone afterwards; a queued one is then
    /// never built).
    pub(super) fn end(&mut self) {
        self.state = PhoneState::Terminating;
        self.notify_in_flight = false;
        self.queued = false;
    }

    /// The next NOTIFY: a new CSeq, and the document (if any) stamped with the
    /// next version.
    pub(super) fn notify(
        &mut self,
        env: &Env,
        branch: &str,
        state: SubState<'_>,
        doc: Option<&RenderedDoc>,
    ) -> Out {
        self.local_cseq += 1;
        let body = doc.map(|d| {
            let v = self.next_version;
            self.next_version = self.next_version.wrapping_add(1);
            (d, v)
        });
        if let Some(d) = doc {
            self.last_doc = Some(DocDigest::of(d));
        }
        self.force_full = false;
        self.dirty = false;
        self.notify_in_flight = true;
        Out::Request {
            flow: self.flow,
            data: notify_request(env, self, branch, state, body),
            tag: ReqTag::Notify {
                phone: self.id,
                cseq: self.local_cseq,
            },
        }
    }

    /// The final response to the NOTIFY with this CSeq.
    pub(super) fn on_notify_response(&mut self, cseq: u32, code: u16) -> AfterNotify {
        self.verified = true;
        if self.local_cseq != cseq {
            return AfterNotify::Nothing; // an older NOTIFY; a newer one is in flight
        }
        self.notify_in_flight = false;
        let phone = self.id;
        match code {
            200..=299 => {}
            481 => {
                tracing::info!(
                    %phone,
                    "phone answered NOTIFY with 481: removing the subscription"
                );
                return AfterNotify::Remove;
            }
            401 | 407 => {
                // RFC 6665: a challenged NOTIFY does not end the subscription; we have
                // no credentials for the phone, so keep going and try on the next change.
                tracing::warn!(
                    %phone,
                    code,
                    "phone challenged our NOTIFY; keeping the subscription"
                );
                return AfterNotify::Nothing;
            }
            _ => tracing::warn!(%phone, code, "phone rejected a NOTIFY"),
        }
        if self.dirty {
            AfterNotify::Update
        } else {
            AfterNotify::Nothing
        }
    }
}

/// A NOTIFY for a phone subscription; the document (if any) is written into the
/// message with its version, without an intermediate copy.
fn notify_request(
    env: &Env,
    sub: &PhoneSub,
    branch: &str,
    subscription_state: SubState<'_>,
    body: Option<(&RenderedDoc, u32)>,
) -> Bytes {
    let (ruri, routes) = build::in_dialog_target(sub.remote_target(), &sub.route_set);
    let mut b = MessageBuilder::request(&Method::Notify, &ruri);
    b.header("Via", env.local.via(sub.flow.transport, branch))
        .header("Max-Forwards", 70);
    for r in &routes {
        b.header("Route", r);
    }
    b.header("From", sub.local_header())
        .header("To", sub.remote_header())
        .header("Call-ID", sub.call_id())
        .header("CSeq", format_args!("{} NOTIFY", sub.local_cseq))
        .header("Contact", build::contact(env, sub.flow.transport));
    match sub.event_id() {
        Some(id) => b.header("Event", format_args!("dialog;id={id}")),
        None => b.header("Event", "dialog"),
    };
    b.header("Subscription-State", subscription_state)
        .header("User-Agent", env.user_agent);
    match body {
        Some((doc, version)) => b.finish_with_body_writer(
            "application/dialog-info+xml",
            doc.len_with_version(version),
            |buf| doc.write_with_version(version, buf),
        ),
        None => b.finish(),
    }
}

/// [`notify_request`] with a document, written straight into a buffer of the
/// right size: no intermediate strings (the bridge's Via and Contact come
/// from [`Env::own`], the Request-URI and routes from the subscription).
/// Returns the message and where the branch starts in it. The same bytes as
/// `notify_request` (a unit test checks).
fn notify_request_lean(
    env: &Env,
    sub: &PhoneSub,
    branch: &str,
    subscription_state: SubState<'_>,
    doc: &RenderedDoc,
    version: u32,
) -> (Bytes, usize) {
    let t = sub.flow.transport;
    let (via_pre, via_post) = env.own.via(t);
    let contact = env.own.contact(t);
    let strict;
    let (ruri, routes): (&str, &[String]) = if sub.route_set.is_empty() {
        (sub.remote_target(), &[])
    } else {
        strict = build::in_dialog_target(sub.remote_target(), &sub.route_set);
        (&strict.0, &strict.1)
    };
    let body_len = doc.len_with_version(version);
    let routes_len: usize = routes.iter().map(|r| r.len() + 9).sum();
    let capacity = 320
        + ruri.len()
        + via_pre.len()
        + branch.len()
        + routes_len
        + sub.local_header().len()
        + sub.remote_header().len()
        + sub.call_id().len()
        + contact.len()
        + env.user_agent.len()
        + body_len;
    let mut b = MessageBuilder::request_with_capacity(&Method::Notify, ruri, capacity);
    let branch_at = b.len() + "Via: ".len() + via_pre.len();
    b.header_parts(
        "Via",
        &[via_pre.as_bytes(), branch.as_bytes(), via_post.as_bytes()],
    )
    .header_bytes("Max-Forwards", b"70");
    for r in routes {
        b.header_bytes("Route", r.as_bytes());
    }
    b.header_bytes("From", sub.local_header().as_bytes())
        .header_bytes("To", sub.remote_header().as_bytes())
        .header_bytes("Call-ID", sub.call_id().as_bytes())
        .header("CSeq", format_args!("{} NOTIFY", sub.local_cseq))
        .header_bytes("Contact", contact.as_bytes());
    match sub.event_id() {
        Some(id) => b.header_parts("Event", &[b"dialog;id=", id.as_bytes()]),
        None => b.header_bytes("Event", b"dialog"),
    };
    b.header("Subscription-State", subscription_state)
        .header_bytes("User-Agent", env.user_agent.as_bytes());
    let data = b.finish_with_body_writer("application/dialog-info+xml", body_len, |buf| {
        doc.write_with_version(version, buf)
    });
    (data, branch_at)
}

/// The renderings of one target's current view, one per profile: a target
/// change is rendered (and its document digested) once per profile, and each
/// phone gets the same document stamped with its own version.
#[derive(Default)]
pub(super) struct Renderings {
    view: Option<TargetView>,
    by_profile: Vec<(Arc<Profile>, Rendering, Option<DocDigest>)>,
}

impl Renderings {
    /// The profile's rendering of the target and, for a document, its digest.
    pub(super) fn get(
        &mut self,
        profile: &Arc<Profile>,
        target: &Target,
    ) -> (&Rendering, Option<DocDigest>) {
        let at = match self
            .by_profile
            .iter()
            .position(|(p, _, _)| Arc::ptr_eq(p, profile))
        {
            Some(i) => i,
            None => {
                let view = self.view.get_or_insert_with(|| target.phone_view());
                let r = crate::profile::render(profile, &target.aor, view);
                let digest = r.document().map(DocDigest::of);
                self.by_profile.push((profile.clone(), r, digest));
                self.by_profile.len() - 1
            }
        };
        let (_, r, d) = &self.by_profile[at];
        (r, *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Record {
        profile: ProfileRef,
    }

    /// The held subscription's own record stays compact (issue 12: bytes per
    /// held subscription; docs/benchmarks.md "Memory per held subscription").
    /// (It was larger with `String` fields, a copy of the last document and
    /// the profile's name, and — 320 bytes — with a `Box<str>` per string.)
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_record_stays_compact() {
        let size = std::mem::size_of::<PhoneSub>();
        assert!(size <= 248, "PhoneSub grew to {size} bytes");
        assert_eq!(std::mem::size_of::<ProfileRef>(), 16);
        assert_eq!(std::mem::size_of::<Option<DocDigest>>(), 16);
    }

    /// The fan-out's NOTIFY builder writes exactly what the general one
    /// does, over UDP and TCP, with no route, a loose and a strict route set,
    /// with and without an Event id; the branch is where it says.
    #[test]
    fn the_lean_notify_is_byte_for_byte_the_general_one() {
        use crate::presence::{MergedState, TargetView};
        let cfg = crate::config::Config::parse(
            "[listen]\nudp = \"192.0.2.10:5060\"\n[upstream]\nproxy = \"127.0.0.1:5070\"\ndomain = \"pbx.test\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let local = crate::local::LocalAddrs {
            udp: Some("192.0.2.10:5060".parse().unwrap()),
            tcp: Some("192.0.2.10:5062".parse().unwrap()),
            advertise_host: "bridge.example".into(),
        };
        let env = Env::new(
            Arc::new(cfg),
            Arc::new(ProfileSet::builtin()),
            local,
            "127.0.0.1:5070".parse().unwrap(),
            Duration::from_millis(500),
        );
        let profile = env.profiles.get_shared("grandstream-gxp").unwrap().clone();
        let view = TargetView::new(MergedState::Idle);
        let rendering = crate::profile::render(&profile, "sip:1002@pbx.test", &view);
        let doc = rendering.document().unwrap();
        let routes = [
            "",
            "Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\n",
            "Record-Route: <sip:10.0.0.1>\r\nRecord-Route: <sip:10.0.0.2;lr>\r\n",
        ];
        let now = Instant::now();
        for (i, rr) in routes.iter().enumerate() {
            for event in ["dialog", "dialog;id=7"] {
                for flow in [
                    Flow::udp("10.1.1.1:5060".parse().unwrap()),
                    Flow::tcp("10.1.1.1:5060".parse().unwrap(), None),
                ] {
                    let text = format!(
                        "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKa{i}\r\n{rr}From: <sip:1001@pbx.test>;tag=f\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: c{i}@x\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:1001@10.1.1.1>\r\nEvent: {event}\r\nContent-Length: 0\r\n\r\n"
                    );
                    let msg = SipMessage::parse(Bytes::from(text)).unwrap();
                    let a = Accepted {
                        id: PhoneId(1),
                        target: TargetId(2),
                        profile: ProfileRef::new(&profile),
                        remote_target: "sip:1001@10.1.1.1".into(),
                        flow,
                        local_tag: "ours".into(),
                        expires: 600,
                    };
                    let mut sub = PhoneSub::accept(a, &msg, now);
                    sub.local_cseq = 42;
                    let state = SubState::Active { expires: 599 };
                    let branch = "z9hG4bKbranch1";
                    let general = notify_request(&env, &sub, branch, state, Some((doc, 17)));
                    let (lean, at) = notify_request_lean(&env, &sub, branch, state, doc, 17);
                    assert_eq!(
                        String::from_utf8_lossy(&lean),
                        String::from_utf8_lossy(&general)
                    );
                    assert_eq!(&lean[at..at + branch.len()], branch.as_bytes());
                }
            }
        }
    }

    /// The dialog's strings live in one block, but the store's record keeps
    /// one named field per string (records of earlier versions restore, and
    /// these read back the same); `None` stays distinct from the empty string;
    /// a refresh with a new Contact replaces only the Request-URI.
    #[test]
    fn the_strings_of_a_subscription_are_one_block_and_the_record_is_flat() {
        let set = ProfileSet::builtin();
        let profile = set.get_shared("grandstream-gxp").unwrap().clone();
        let text = "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKa\r\nFrom: \"Desk\" <sip:1001@pbx.test>;tag=ft\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: c1@x\r\nCSeq: 5 SUBSCRIBE\r\nContact: <sip:1001@10.1.1.1>\r\nEvent: dialog;id=7\r\nUser-Agent: Grandstream GXP2170 1.0.11.3\r\nContent-Length: 0\r\n\r\n";
        let msg = SipMessage::parse(Bytes::from(text)).unwrap();
        let accepted = || Accepted {
            id: PhoneId(1),
            target: TargetId(2),
            profile: ProfileRef::new(&profile),
            remote_target: "sip:1001@10.1.1.1".into(),
            flow: Flow::udp("10.1.1.1:5060".parse().unwrap()),
            local_tag: "ours".into(),
            expires: 600,
        };
        let now = Instant::now();
        let mut sub = PhoneSub::accept(accepted(), &msg, now);
        let strings = [
            sub.call_id(),
            sub.local_tag(),
            sub.remote_tag(),
            sub.local_header(),
            sub.remote_header(),
            sub.remote_target(),
        ];
        assert_eq!(
            strings,
            [
                "c1@x",
                "ours",
                "ft",
                "<sip:1002@pbx.test>;tag=ours",
                "\"Desk\" <sip:1001@pbx.test>;tag=ft",
                "sip:1001@10.1.1.1",
            ]
        );
        assert_eq!(sub.event_id(), Some("7"));
        assert_eq!(sub.user_agent(), Some("Grandstream GXP2170 1.0.11.3"));

        let json: serde_json::Value = serde_json::to_value(&sub).unwrap();
        for (k, v) in [
            ("call_id", "c1@x"),
            ("local_tag", "ours"),
            ("remote_tag", "ft"),
            ("local_header", "<sip:1002@pbx.test>;tag=ours"),
            ("remote_header", "\"Desk\" <sip:1001@pbx.test>;tag=ft"),
            ("remote_target", "sip:1001@10.1.1.1"),
            ("event_id", "7"),
            ("user_agent", "Grandstream GXP2170 1.0.11.3"),
            ("profile", "grandstream-gxp"),
        ] {
            assert_eq!(json[k], v, "{k}");
        }
        assert_eq!(json["remote_cseq"], 5);
        assert!(json.get("text").is_none(), "the block is not the format");
        let back: PhoneSub = serde_json::from_value(json.clone()).unwrap();
        let mut again = serde_json::to_value(&back).unwrap();
        // (instants are stored as wall-clock milliseconds: ±1 ms on the way back)
        let mut same = json.clone();
        again.as_object_mut().unwrap().remove("expires_at");
        same.as_object_mut().unwrap().remove("expires_at");
        assert_eq!(again, same);
        assert_eq!(back.key(), sub.key());

        // a record without the optional strings (or from before they existed)
        let mut old = json.clone();
        old["event_id"] = serde_json::Value::Null;
        old.as_object_mut().unwrap().remove("user_agent");
        let back: PhoneSub = serde_json::from_value(old).unwrap();
        assert_eq!((back.event_id(), back.user_agent()), (None, None));
        assert_eq!(back.remote_header(), "\"Desk\" <sip:1001@pbx.test>;tag=ft");
        let empty = DialogText::new([Some(""), None, None, None, None, None, Some(""), None]);
        assert_eq!(empty.get(Field::CallId), Some(""));
        assert_eq!(empty.get(Field::EventId), Some(""));
        assert_eq!(empty.get(Field::UserAgent), None);

        // a refresh with a new Contact: only the Request-URI of our NOTIFYs moves
        let refresh = text
            .replace("CSeq: 5", "CSeq: 6")
            .replace("<sip:1001@10.1.1.1>", "<sip:1001@10.1.1.9:5062>");
        let msg = SipMessage::parse(Bytes::from(refresh)).unwrap();
        sub.refresh(&msg, 6, sub.flow, 600, now);
        assert_eq!(sub.remote_target(), "sip:1001@10.1.1.9:5062");
        assert_eq!(sub.call_id(), "c1@x");
        assert_eq!(sub.remote_header(), "\"Desk\" <sip:1001@pbx.test>;tag=ft");
        assert_eq!(sub.user_agent(), Some("Grandstream GXP2170 1.0.11.3"));
        assert_eq!(sub.event_id(), Some("7"));
    }

    #[test]
    fn profile_ref_is_stored_as_its_name_and_found_again() {
        let set = ProfileSet::builtin();
        let gxp = set.get_shared("grandstream-gxp").unwrap();
        let r = Record {
            profile: ProfileRef::new(gxp),
        };
        let text = toml::to_string(&r).unwrap();
        assert_eq!(text.trim(), r#"profile = "grandstream-gxp""#);
        let back: Record = toml::from_str(&text).unwrap();
        assert!(matches!(back.profile.0, Resolved::Named(_)));
        let found = back.profile.get(&set).unwrap();
        assert!(Arc::ptr_eq(found, gxp));
        assert!(Arc::ptr_eq(r.profile.get(&set).unwrap(), gxp));
    }
}
