//! The upstream as a whole goes away and comes back (a PBX restart, a network
//! outage): the endpoint's keep-alive notices, and the manager makes every
//! lamp say "unknown" meanwhile, then re-establishes every upstream
//! subscription (refresh in its dialog; a PBX that lost it answers 481 and a
//! fresh one follows), paced.

use super::manager::SubscriptionManager;
use super::types::{Package, TargetId};
use std::time::Instant;

impl SubscriptionManager {
    /// The upstream stopped answering: nothing is known about any target any
    /// more. Phones get their profile's `unknown` rendering, never a stale state.
    pub fn upstream_lost(&mut self, now: Instant) {
        let ids: Vec<TargetId> = self.targets.keys().copied().collect();
        tracing::warn!(
            targets = ids.len(),
            "upstream unreachable: every watched target is unknown until it answers again"
        );
        for id in ids {
            if let Some(t) = self.targets.get_mut(&id) {
                t.dialog_stream.set_unknown();
                t.presence_stream.set_unknown();
            }
            self.mark_target(id, false);
            self.recompute(id, now);
        }
    }

    /// The connection to the upstream was lost and is being opened again:
    /// refresh every established upstream subscription (paced), so that the
    /// provider sends its NOTIFYs over the new connection. The lamps keep their
    /// state (nothing says it changed); a refresh answered `481` makes a fresh
    /// subscription, as always.
    pub fn upstream_reconnected(&mut self, now: Instant) {
        let ids: Vec<TargetId> = self.targets.keys().copied().collect();
        for id in ids {
            for package in Package::BOTH {
                let established = self
                    .targets
                    .get(&id)
                    .is_some_and(|t| t.upstream(package).established());
                if established {
                    self.send_subscribe(id, package, false, now);
                }
            }
        }
    }

    /// The upstream answers again: re-establish every upstream subscription
    /// (paced), so each lamp is right as soon as its NOTIFYs arrive.
    pub fn upstream_back(&mut self, now: Instant) {
        let ids: Vec<TargetId> = self.targets.keys().copied().collect();
        tracing::info!(
            targets = ids.len(),
            "upstream answers again: re-establishing the upstream subscriptions"
        );
        if std::mem::take(&mut self.moved) {
            self.resubscribe_all_fresh(now);
            return;
        }
        for id in ids {
            for package in Package::BOTH {
                let established = self
                    .targets
                    .get(&id)
                    .is_some_and(|t| t.upstream(package).established());
                if established {
                    self.send_subscribe(id, package, false, now);
                } else {
                    self.resubscribe_fresh(id, package, now);
                }
            }
        }
    }

    /// Requests to the upstream go to this server from now on (another one of
    /// the resolved servers, see `endpoint::failover`).
    pub fn set_upstream(&mut self, env: super::Env) {
        self.env = env;
    }

    /// The upstream moved to another server. Its dialogs are gone with the old
    /// one: every subscription is made afresh on the new server, at once when
    /// it is known to answer (`answering`), else when it first answers
    /// ([`SubscriptionManager::upstream_back`]).
    pub fn upstream_moved(&mut self, answering: bool, now: Instant) {
        if answering {
            self.moved = false;
            self.resubscribe_all_fresh(now);
        } else {
            self.moved = true;
        }
    }

    fn resubscribe_all_fresh(&mut self, now: Instant) {
        let ids: Vec<TargetId> = self.targets.keys().copied().collect();
        tracing::info!(
            targets = ids.len(),
            upstream = %self.env.upstream,
            "subscribing afresh on the upstream server now in use"
        );
        for id in ids {
            for package in Package::BOTH {
                self.resubscribe_fresh(id, package, now);
            }
        }
    }
}
