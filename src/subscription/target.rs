//! The per-target record: one watched extension, its two upstream
//! subscriptions and their document streams, merged into the view every phone
//! watching it is rendered from.
//!
//! [`Target`], [`PhoneSub`](super::PhoneSub) and [`Upstream`] are plain serde data,
//! so that a store can persist them and a restart never sends CSeq or version
//! backwards.

use super::build;
use super::subscriber::{Action, Backoff, Failure, UpState, Upstream};
use super::types::{Package, PhoneId, TargetId};
use crate::config::{Account, EmptyPresence, Subscriptions};
use crate::presence::{
    self, ApplyOutcome, DialogStream, MergedState, PresenceStatus, PresenceStream, TargetView,
};
use crate::sip::SipMessage;
use crate::util::{Rng, instant_serde};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// What an accepted upstream NOTIFY asks of the registry.
#[derive(Debug)]
pub(super) enum UpNotified {
    Applied,
    /// A partial dialog-info document did not fit: refresh for full state.
    VersionGap,
    /// `Subscription-State: terminated`: what to do about it.
    Ended(Action),
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
    /// A phone that showed its source is real (answered a NOTIFY, refreshed)
    /// has watched it. Without one, the target lingers not at all when its
    /// last watcher goes (records from before this field: assumed so).
    #[serde(default = "yes")]
    pub verified_watch: bool,
}

fn yes() -> bool {
    true
}

impl Target {
    /// A new target, with its two upstream subscriptions (not sent yet) from
    /// `account`.
    pub(super) fn new(
        id: TargetId,
        aor: &str,
        user: &str,
        account: Option<&Account>,
        rng: &mut Rng,
    ) -> Target {
        let mut upstream = |package| {
            let call_id = build::call_id(rng);
            Upstream::new(package, call_id, rng.tag())
        };
        let (dialog, presence) = (upstream(Package::Dialog), upstream(Package::Presence));
        Target {
            id,
            aor: aor.to_string(),
            user: user.to_string(),
            account: account.map(|a| a.user.clone()).unwrap_or_default(),
            dialog,
            presence,
            dialog_stream: DialogStream::default(),
            presence_stream: PresenceStream::default(),
            view: TargetView::new(MergedState::Unknown),
            watchers: Vec::new(),
            linger_until: None,
            linger_gen: 0,
            verified_watch: false,
        }
    }

    /// A phone started watching (the linger, if any, is over); whether the
    /// target is [`ready`](Self::ready).
    pub(super) fn watch(&mut self, phone: PhoneId) -> bool {
        self.watchers.push(phone);
        self.linger_until = None;
        self.ready()
    }

    /// A phone stopped watching. When it was the last, the upstream
    /// subscriptions linger until `until`: the generation of that linger.
    pub(super) fn unwatch(&mut self, phone: PhoneId, until: Instant) -> Option<u32> {
        self.watchers.retain(|w| *w != phone);
        if !self.watchers.is_empty() {
            return None;
        }
        self.linger_gen += 1;
        self.linger_until = Some(until);
        Some(self.linger_gen)
    }

    /// When the last refused upstream subscription (stopped: 403, 404, 489,
    /// authentication…) is tried again, if one is.
    pub(super) fn refused_until(&self) -> Option<Instant> {
        [&self.dialog, &self.presence]
            .iter()
            .filter(|u| u.state == UpState::Stopped)
            .filter_map(|u| u.retry_at)
            .max()
    }

    /// The linger of this generation ran out with no phone watching.
    pub(super) fn lingered(&self, generation: u32) -> bool {
        self.linger_gen == generation && self.watchers.is_empty()
    }

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

    /// A NOTIFY in the package's upstream dialog: `None` (answer 481) when it is
    /// not acceptable; else its body is applied to the package's stream (a
    /// terminating NOTIFY without a body carries no state).
    pub(super) fn on_notify(
        &mut self,
        package: Package,
        msg: &SipMessage,
        empty: EmptyPresence,
        now: Instant,
    ) -> Option<UpNotified> {
        let was = self.upstream_mut(package).state;
        let notified = self.upstream_mut(package).on_notify(msg, now)?;
        if was == UpState::Subscribing && self.upstream_mut(package).state == UpState::Active {
            tracing::info!(target = %self.aor, package = package.event(), "upstream subscription active (first NOTIFY before the 2xx)");
        }
        let mut version_gap = false;
        if notified.has_state {
            let body = msg.body();
            let applied = match package {
                Package::Dialog => self
                    .dialog_stream
                    .apply_body(body)
                    .map(|o| version_gap = matches!(o, ApplyOutcome::NeedRefresh { .. })),
                Package::Presence => self.presence_stream.apply_body(body, empty),
            };
            if let Err(e) = applied {
                let what = match package {
                    Package::Dialog => "unusable dialog-info from upstream",
                    Package::Presence => "unusable PIDF from upstream",
                };
                tracing::warn!(target = %self.aor, error = %e, "{what}");
            }
        }
        Some(match notified.ended {
            Some(action) => UpNotified::Ended(action),
            None if version_gap => {
                tracing::info!(target = %self.aor, "dialog-info version gap: refreshing for full state");
                UpNotified::VersionGap
            }
            None => UpNotified::Applied,
        })
    }

    /// Start a fresh upstream dialog for this package (new Call-ID and tag).
    /// Returns the old Call-ID and whether it had an established dialog.
    pub(super) fn restart(
        &mut self,
        package: Package,
        call_id: String,
        local_tag: String,
    ) -> (String, bool) {
        if package == Package::Dialog {
            // a new dialog restarts the version sequence of the document stream
            self.dialog_stream.new_subscription();
        }
        self.upstream_mut(package).restart(call_id, local_tag)
    }

    /// An upstream subscription failed: the wait before the next attempt. A
    /// rejection, or repeated failures, make the package's stream unknown; a
    /// target the upstream does not know (404) renders offline. Logged once per
    /// cause, not per retry.
    pub(super) fn fail(
        &mut self,
        package: Package,
        failure: Failure,
        s: &Subscriptions,
    ) -> Backoff {
        let up = match package {
            Package::Dialog => &mut self.dialog,
            Package::Presence => &mut self.presence,
        };
        let wait = up.fail(failure, s);
        let why = up.last_error.as_deref().unwrap_or_default();
        if wait.new_cause {
            tracing::warn!(target = %self.aor, package = package.event(), error = %why, retry_in_s = wait.delay_s, "upstream subscription failed (logged once until it changes or recovers)");
        } else {
            tracing::debug!(target = %self.aor, package = package.event(), error = %why, retry_in_s = wait.delay_s, "upstream subscription failed again");
        }
        if wait.forget_state {
            match package {
                Package::Dialog => self.dialog_stream.set_unknown(),
                Package::Presence => self.presence_stream.set_unknown(),
            }
        }
        if wait.not_found {
            // no such user at the upstream: offline (each profile renders or
            // fails it), not a lamp stuck on unknown
            self.presence_stream = PresenceStream::from_status(PresenceStatus::Offline);
        }
        wait
    }
}
