//! The two upstream streams of one target and their merge into a [`TargetView`].
//!
//! The hosted PBX reports calls only through `dialog` and "offline" only through
//! `presence` (protocol notes §0, upstream README "Limitations"), so each target
//! has one [`DialogStream`] and one [`PresenceStream`], fed with the NOTIFY bodies
//! of the two upstream subscriptions, and [`merge`] decides what the lamps show.
//! Both streams are plain serialisable data.

use super::dialog_info::{DialogEntry, DialogInfoDoc, DialogState, DocState, parse_dialog_info};
use super::pidf::{Activity, PresenceStatus, parse_pidf};
use super::state::{Direction, MergedState, TargetView};
use super::xml::{PresenceError, is_blank};
use crate::config::EmptyPresence;
use serde::{Deserialize, Serialize};

/// How far below the last applied version a document may be and still count
/// as stale (beyond: the upstream's counter started over).
pub const MAX_VERSION_JUMP: u32 = 1000;

/// What applying a dialog-info document did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The document (or an empty body) was applied. `ended` lists the dialogs that
    /// were active before and are not any more (explicitly `terminated`, or missing
    /// from a full document), each reported exactly once with state `terminated`.
    Applied { ended: Vec<DialogEntry> },
    /// A stale or duplicate document (version ≤ the last applied one, e.g. a
    /// retransmitted NOTIFY); nothing changed.
    Ignored { version: u32, last: u32 },
    /// A partial document that cannot be applied (version gap, no version, or no
    /// full state to apply it to); nothing changed. The caller should refresh the
    /// upstream subscription, whose answer carries full state (RFC 4235 §4.1).
    NeedRefresh {
        expected: Option<u32>,
        got: Option<u32>,
    },
}

/// The upstream `dialog` stream of one target.
///
/// Unknown until the first NOTIFY of a subscription is applied; afterwards it
/// holds the active (non-terminated) dialogs in document order and the version
/// of the last applied document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogStream {
    known: bool,
    version: Option<u32>,
    dialogs: Vec<DialogEntry>,
}

impl DialogStream {
    /// A stream nothing is known about (subscription not answered yet).
    pub fn new() -> DialogStream {
        DialogStream::default()
    }

    /// Whether the upstream has answered (at least one body applied).
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Version of the last applied document (`None` before the first, after a
    /// fresh subscription, or when the upstream sent none).
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The active dialogs, in the upstream's order.
    pub fn dialogs(&self) -> &[DialogEntry] {
        &self.dialogs
    }

    /// Applies the body of a `dialog` NOTIFY. An empty (or blank) body means
    /// "known, no calls" (Kamailio without its dummy dialog). On a parse error the
    /// state is unchanged.
    pub fn apply_body(&mut self, body: &[u8]) -> Result<ApplyOutcome, PresenceError> {
        if is_blank(body) {
            self.known = true;
            let ended = std::mem::take(&mut self.dialogs)
                .into_iter()
                .map(ended)
                .collect();
            return Ok(ApplyOutcome::Applied { ended });
        }
        let doc = parse_dialog_info(body)?;
        Ok(self.apply_doc(doc))
    }

    /// Applies a parsed document following RFC 4235 §4.1: stale versions are
    /// ignored, a full document replaces everything, a partial one applies only
    /// on top of version − 1.
    ///
    /// The version jump is bounded ([`MAX_VERSION_JUMP`]): a document more than
    /// that far below the last one means the counter started over (or the last
    /// version was bogus, e.g. `4294967295`): a full one is taken as new state, a
    /// partial one needs a refresh — so one outlandish version cannot freeze the
    /// stream. A version far above the last one is applied only when it is full
    /// state. (Phones never see these numbers: each phone's version is the
    /// bridge's own counter.)
    pub fn apply_doc(&mut self, doc: DialogInfoDoc) -> ApplyOutcome {
        let mut restarted = false;
        if let (Some(v), Some(last)) = (doc.version, self.version)
            && v <= last
        {
            if last - v <= MAX_VERSION_JUMP {
                return ApplyOutcome::Ignored { version: v, last };
            }
            restarted = true;
        }
        if restarted && doc.state == DocState::Partial {
            return ApplyOutcome::NeedRefresh {
                expected: self.version.and_then(|l| l.checked_add(1)),
                got: doc.version,
            };
        }
        match doc.state {
            DocState::Full => self.apply_full(doc),
            DocState::Partial => {
                let expected = self.version.and_then(|l| l.checked_add(1));
                if !self.known || expected.is_none() || doc.version != expected {
                    return ApplyOutcome::NeedRefresh {
                        expected,
                        got: doc.version,
                    };
                }
                self.apply_partial(doc)
            }
        }
    }

    fn apply_full(&mut self, doc: DialogInfoDoc) -> ApplyOutcome {
        let mut next: Vec<DialogEntry> = Vec::with_capacity(doc.dialogs.len());
        let mut terminated: Vec<DialogEntry> = Vec::new();
        for d in doc.dialogs {
            // A later element with the same id replaces an earlier one.
            next.retain(|n| n.id != d.id);
            terminated.retain(|n| n.id != d.id);
            if d.state.is_active() {
                next.push(d);
            } else {
                terminated.push(d);
            }
        }
        let mut gone = Vec::new();
        for old in std::mem::take(&mut self.dialogs) {
            if next.iter().any(|n| n.id == old.id) {
                continue;
            }
            // Prefer the document's own terminated element (it has event/code).
            match terminated.iter().position(|t| t.id == old.id) {
                Some(i) => gone.push(terminated.swap_remove(i)),
                None => gone.push(ended(old)),
            }
        }
        self.dialogs = next;
        self.version = doc.version;
        self.known = true;
        ApplyOutcome::Applied { ended: gone }
    }

    fn apply_partial(&mut self, doc: DialogInfoDoc) -> ApplyOutcome {
        let mut gone = Vec::new();
        for d in doc.dialogs {
            let pos = self.dialogs.iter().position(|n| n.id == d.id);
            match (pos, d.state.is_active()) {
                (Some(i), true) => {
                    if let Some(slot) = self.dialogs.get_mut(i) {
                        *slot = d;
                    }
                }
                (None, true) => self.dialogs.push(d),
                (Some(i), false) => {
                    self.dialogs.remove(i);
                    gone.push(d);
                }
                (None, false) => {}
            }
        }
        self.version = doc.version;
        ApplyOutcome::Applied { ended: gone }
    }

    /// A fresh upstream subscription (new dialog) starts a new version sequence.
    /// The current dialogs stay until its first NOTIFY replaces them, so the lamps
    /// do not flicker across a re-subscription.
    pub fn new_subscription(&mut self) {
        self.version = None;
    }

    /// The subscription failed, was rejected or terminated: nothing is known.
    pub fn set_unknown(&mut self) {
        *self = DialogStream::default();
    }
}

fn ended(mut d: DialogEntry) -> DialogEntry {
    d.state = DialogState::Terminated;
    d
}

/// The upstream `presence` stream of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceStream {
    status: PresenceStatus,
}

impl PresenceStream {
    /// A stream nothing is known about.
    pub fn new() -> PresenceStream {
        PresenceStream::default()
    }

    /// A stream in a given state (restored state, tests).
    pub fn from_status(status: PresenceStatus) -> PresenceStream {
        PresenceStream { status }
    }

    pub fn status(&self) -> &PresenceStatus {
        &self.status
    }

    /// Applies the body of a `presence` NOTIFY. An empty (or blank) body means "no
    /// presence document" (Kamailio for never-registered targets and on every new
    /// subscription or refresh after un-REGISTER): offline, or unknown when so
    /// configured. On a parse error the state is unchanged.
    pub fn apply_body(&mut self, body: &[u8], empty: EmptyPresence) -> Result<(), PresenceError> {
        self.status = if is_blank(body) {
            match empty {
                EmptyPresence::Offline => PresenceStatus::Offline,
                EmptyPresence::Unknown => PresenceStatus::Unknown,
            }
        } else {
            parse_pidf(body)?.status()
        };
        Ok(())
    }

    /// The subscription failed, was rejected or terminated.
    pub fn set_unknown(&mut self) {
        self.status = PresenceStatus::Unknown;
    }
}

/// The lamp one active dialog asks for (`None` for terminated dialogs).
fn lamp_of(d: &DialogEntry) -> Option<MergedState> {
    match d.state {
        DialogState::Trying | DialogState::Proceeding | DialogState::Early => match d.direction {
            // The target is placing a call: busy, and nothing to pick up.
            Some(Direction::Initiator) => Some(MergedState::Busy),
            Some(Direction::Recipient) | None => Some(MergedState::Ringing),
        },
        DialogState::Confirmed if d.is_held() => Some(MergedState::Held),
        DialogState::Confirmed => Some(MergedState::Busy),
        DialogState::Terminated => None,
    }
}

/// How interesting a lamp is among several calls: a ringing call must stay
/// pickable, a held one is shown over a plain busy one.
fn rank(s: MergedState) -> u8 {
    match s {
        MergedState::Ringing => 3,
        MergedState::Held => 2,
        MergedState::Busy => 1,
        _ => 0,
    }
}

/// Merges both streams of one target:
/// 1. an active dialog beats presence: early/trying/proceeding → Ringing (Busy
///    when the target is the initiator), confirmed → Busy (Held with local
///    `+sip.rendering=no`); of several, ringing over held over busy (first in
///    document order on a tie), with `call` filled from that dialog;
/// 2. otherwise presence Offline → Offline, Online → Idle;
/// 3. presence Unknown → Idle if the dialog stream is known, else Unknown;
/// 4. dialog stream unknown and presence Online "on the phone" → Busy (no call data).
///
/// Presence Unknown never produces Offline.
pub fn merge(dialog: &DialogStream, presence: &PresenceStream) -> TargetView {
    let mut best: Option<(MergedState, &DialogEntry)> = None;
    for d in dialog.dialogs() {
        if let Some(s) = lamp_of(d)
            && best.is_none_or(|(b, _)| rank(s) > rank(b))
        {
            best = Some((s, d));
        }
    }
    if let Some((state, d)) = best {
        return TargetView {
            state,
            call: Some(d.pickup_info()),
        };
    }
    let state = match (presence.status(), dialog.is_known()) {
        (PresenceStatus::Offline, _) => MergedState::Offline,
        (
            PresenceStatus::Online {
                activity: Some(Activity::OnThePhone),
            },
            false,
        ) => MergedState::Busy,
        (PresenceStatus::Online { .. }, _) => MergedState::Idle,
        (PresenceStatus::Unknown, true) => MergedState::Idle,
        (PresenceStatus::Unknown, false) => MergedState::Unknown,
    };
    TargetView::new(state)
}
