//! Plain-data state of the subscription translator (serde-serialisable, so a
//! store can persist it and a restart never sends CSeq or version backwards).

use crate::auth::DigestClient;
use crate::flow::Flow;
use crate::presence::{DialogStream, PresenceStream, TargetView};
use crate::profile::RenderedDoc;
use crate::util::instant_serde;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The two upstream event packages merged per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Package {
    Dialog,
    Presence,
}

impl Package {
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

/// Life cycle of one phone subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneState {
    /// Accepted; the first NOTIFY waits for the upstream (or the hold deadline).
    Holding,
    Active,
    /// The final NOTIFY has been queued; the subscription is removed once it is sent.
    Terminating,
}

/// A phone's subscription to a target, terminated at the bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhoneSub {
    pub id: u64,
    pub target: u64,
    /// Profile the phone was matched to at SUBSCRIBE time.
    pub profile: String,
    pub call_id: String,
    /// Our tag (the To-tag of our 200; From-tag of our NOTIFYs).
    pub local_tag: String,
    /// The phone's From-tag.
    pub remote_tag: String,
    /// The SUBSCRIBE's To header value plus our tag: the From of our NOTIFYs.
    pub local_header: String,
    /// The SUBSCRIBE's From header value (with its tag): the To of our NOTIFYs.
    pub remote_header: String,
    /// Request-URI of our NOTIFYs (the phone's Contact).
    pub remote_target: String,
    /// Record-Route of the SUBSCRIBE, in order (RFC 3261 §12.1.1).
    pub route_set: Vec<String>,
    /// The flow the SUBSCRIBE came on: NOTIFYs go back over it (NAT, TCP).
    pub flow: Flow,
    /// `id` parameter of the Event header, echoed in every NOTIFY.
    pub event_id: Option<String>,
    /// CSeq of the last NOTIFY we sent (strictly increasing).
    pub local_cseq: u32,
    /// CSeq of the last SUBSCRIBE accepted from the phone.
    pub remote_cseq: u32,
    /// dialog-info `version` of the next document (starts at 0, +1 per document).
    pub next_version: u32,
    #[serde(with = "instant_serde")]
    pub expires_at: Instant,
    pub state: PhoneState,
    #[serde(with = "instant_serde::option")]
    pub hold_until: Option<Instant>,
    /// The last document sent (without version), to send only on changes. Not
    /// stored: after a restore the next update sends full state anyway.
    #[serde(skip)]
    pub last_doc: Option<RenderedDoc>,
    /// A NOTIFY transaction is outstanding (one at a time keeps CSeq order).
    pub notify_in_flight: bool,
    /// The state changed while a NOTIFY was in flight: send again when it ends.
    pub dirty: bool,
    /// A refresh asked for a full-state NOTIFY even if nothing changed.
    pub force_full: bool,
    /// `Expires: 0` on the initial SUBSCRIBE: one terminated NOTIFY, then gone.
    pub fetch: bool,
    /// Bumped on every refresh so stale expiry timers are ignored.
    pub timer_gen: u32,
}

/// State of one upstream subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpState {
    /// Nothing sent yet.
    Idle,
    /// Initial SUBSCRIBE in flight.
    Subscribing,
    /// Established (2xx or NOTIFY seen).
    Active,
    /// Waiting for the next attempt after a failure.
    Backoff,
    /// Rejected for good (`rejected`, `noresource`, 403/404/489…) until the retry
    /// ceiling passes.
    Stopped,
    /// Un-SUBSCRIBE sent; the target is going away.
    Unsubscribing,
}

/// The bridge's subscription to one package of one target at the upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstream {
    pub package: Package,
    pub state: UpState,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub remote_target: Option<String>,
    /// Route set (Record-Route of the 2xx, reversed).
    pub route_set: Vec<String>,
    pub cseq: u32,
    /// Incremented for every new upstream dialog; responses and timers of older
    /// generations are ignored.
    pub generation: u32,
    /// A SUBSCRIBE transaction is outstanding.
    pub in_flight: bool,
    #[serde(with = "instant_serde::option")]
    pub expires_at: Option<Instant>,
    /// At least one NOTIFY arrived (in any generation): the stream has spoken.
    pub ever_notified: bool,
    /// A NOTIFY arrived in the current generation (Timer N satisfied).
    pub notified: bool,
    /// Consecutive failures (for backoff).
    pub failures: u32,
    /// `Min-Expires` learned from a 423: never ask for less.
    pub expires_floor: Option<u32>,
    pub auth: DigestClient,
    /// Bytes of the last SUBSCRIBE sent (the digest client needs the challenged
    /// request).
    #[serde(skip)]
    pub last_request: Option<bytes::Bytes>,
    /// Why the last attempt failed (for logs and the lamp panel).
    pub last_error: Option<String>,
}

/// One watched extension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub id: u64,
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
    pub watchers: Vec<u64>,
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
}
