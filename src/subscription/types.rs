//! Identifiers, keys and the per-target record of the subscription translator.
//!
//! [`Target`], [`PhoneSub`](super::PhoneSub) and [`Upstream`] are plain serde data,
//! so that a store can persist them and a restart never sends CSeq or version
//! backwards.

use super::subscriber::{UpState, Upstream};
use crate::config::EmptyPresence;
use crate::presence::{
    self, ApplyOutcome, DialogStream, MergedState, PresenceError, PresenceStream, TargetView,
};
use crate::util::instant_serde;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Instant;

/// The two upstream event packages merged per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Package {
    Dialog,
    Presence,
}

impl Package {
    pub const BOTH: [Package; 2] = [Package::Dialog, Package::Presence];

    pub fn event(self) -> &'static str {
        match self {
            Package::Dialog => "dialog",
            Package::Presence => "presence",
        }
    }
    pub fn accept(self) -> &'static str {
        match self {
            Package::Dialog => "application/dialog-info+xml",
            Package::Presence => "application/pidf+xml",
        }
    }
}

/// Identifies a phone subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneId(pub u64);

/// Identifies a watched target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetId(pub u64);

impl fmt::Display for PhoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A dialog the bridge is an endpoint of, as it is looked up: Call-ID plus the
/// bridge's own tag, in one owned buffer (length-prefixed, so no two pairs
/// collide).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DialogKey(Bytes);

impl DialogKey {
    pub fn new(call_id: &[u8], local_tag: &[u8]) -> DialogKey {
        let mut b = BytesMut::with_capacity(4 + call_id.len() + local_tag.len());
        b.put_u32(call_id.len() as u32);
        b.put_slice(call_id);
        b.put_slice(local_tag);
        DialogKey(b.freeze())
    }

    /// (Call-ID, our tag).
    fn split(&self) -> (&[u8], &[u8]) {
        let (len, rest) = self.0.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        rest.split_at(len)
    }
}

impl fmt::Debug for DialogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cid, tag) = self.split();
        write!(
            f,
            "DialogKey({}, {})",
            String::from_utf8_lossy(cid),
            String::from_utf8_lossy(tag)
        )
    }
}

/// One watched extension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub id: TargetId,
    /// `sip:user@domain`: the entity of every document sent for it.
    pub aor: String,
    pub user: String,
    /// Account user whose credentials the upstream subscriptions use.
    pub account: String,
    pub dialog: Upstream,
    pub presence: Upstream,
    pub dialog_stream: DialogStream,
    pub presence_stream: PresenceStream,
    pub view: TargetView,
    /// Phone subscriptions watching it.
    pub watchers: Vec<PhoneId>,
    /// When set, the upstream subscriptions are dropped at that time (no watchers).
    #[serde(with = "instant_serde::option")]
    pub linger_until: Option<Instant>,
    pub linger_gen: u32,
}

impl Target {
    pub fn upstream(&self, p: Package) -> &Upstream {
        match p {
            Package::Dialog => &self.dialog,
            Package::Presence => &self.presence,
        }
    }
    pub fn upstream_mut(&mut self, p: Package) -> &mut Upstream {
        match p {
            Package::Dialog => &mut self.dialog,
            Package::Presence => &mut self.presence,
        }
    }
    /// Both streams have spoken (or failed for good): the first NOTIFY to a phone
    /// may go out without risking an idle flash before offline is known.
    pub fn ready(&self) -> bool {
        [&self.dialog, &self.presence]
            .iter()
            .all(|u| u.ever_notified || matches!(u.state, UpState::Stopped) || u.failures > 0)
    }

    /// The view a phone gets now. Before both streams have spoken, an idle view is
    /// really "unknown" (do not flash idle before offline is known).
    pub fn phone_view(&self) -> TargetView {
        let mut v = self.view.clone();
        if !self.ready() && matches!(v.state, MergedState::Idle | MergedState::Offline) {
            v.state = MergedState::Unknown;
        }
        v
    }

    /// Recompute the merged view from the two streams.
    pub(super) fn merge(&mut self) {
        let view = presence::merge(&self.dialog_stream, &self.presence_stream);
        if view != self.view {
            tracing::info!(target = %self.aor, from = %self.view.state, to = %view.state, "target state changed");
            self.view = view;
        }
    }

    /// Apply the body of an upstream NOTIFY to the package's stream. True when the
    /// dialog stream needs a refresh for full state (version gap).
    pub(super) fn apply_body(
        &mut self,
        package: Package,
        body: &[u8],
        empty: EmptyPresence,
    ) -> Result<bool, PresenceError> {
        match package {
            Package::Dialog => self
                .dialog_stream
                .apply_body(body)
                .map(|o| matches!(o, ApplyOutcome::NeedRefresh { .. })),
            Package::Presence => self.presence_stream.apply_body(body, empty).map(|_| false),
        }
    }

    /// The package's stream no longer knows the target's state.
    pub(super) fn set_unknown(&mut self, package: Package) {
        match package {
            Package::Dialog => self.dialog_stream.set_unknown(),
            Package::Presence => self.presence_stream.set_unknown(),
        }
    }
}
