//! Subscription translation, sans-IO.
//!
//! The [`SubscriptionManager`] is two state machines glued by a target registry:
//!
//! - **Phone side** ([`PhoneSub`]): the bridge is the notifier (RFC 6665, RFC 4235)
//!   for every dialog-only BLF SUBSCRIBE a translate-profile phone sends. It answers
//!   200 with its own To-tag, sends the first NOTIFY with the current state (held
//!   until the upstream has spoken, or a deadline), one NOTIFY per change of the
//!   rendered document, counts `Subscription-State: active;expires=` down, keeps a
//!   per-subscription dialog-info `version` (0, 1, 2, …) and CSeq, and ends the
//!   subscription on expiry, `Expires: 0`, 481 or a NOTIFY timeout.
//! - **Upstream side** ([`Upstream`]): the bridge is the subscriber. Each watched
//!   target has exactly one `dialog` and one `presence` subscription towards the
//!   hosted PBX, shared by all phones watching it, authenticated with the
//!   configured account, refreshed with jitter, re-established with capped
//!   exponential backoff, and dropped after a linger once the last phone leaves.
//!
//! The manager never touches sockets or the clock: it is fed requests, responses,
//! transaction timeouts and `now`, and produces [`Out`] items (requests to send
//! through a client transaction, responses for a server transaction). The state
//! is plain serialisable data ([`Target`], [`PhoneSub`], [`Upstream`]), so that a
//! store can persist it.
//!
//! Files, each using only those above it: `types.rs` (ids, keys, messages),
//! `build.rs` (shared wire formats), `subscriber.rs` (upstream side),
//! `target.rs` (the per-target record), `notifier.rs` (phone side), `timers.rs`
//! (the timer heap), `pacer.rs` (upstream SUBSCRIBE pacing), `manager.rs` (registry, indices,
//! routing, timers), `phones.rs` (its phone side), `upstreams.rs` (its upstream side), `persist.rs` (the manager's side of the state store), `liveness.rs` (the
//! upstream lost and back).

mod build;
mod liveness;
mod manager;
mod notifier;
mod pacer;
mod persist;
mod phones;
mod subscriber;
mod target;
mod timers;
mod types;
mod upstreams;

pub use crate::profile::SubState;
pub use manager::SubscriptionManager;
pub use notifier::{MAX_TARGET_USER, PhoneState, PhoneSub, ProfileRef, UNVERIFIED_RETRANSMITS};
pub use persist::Restored;
pub use subscriber::{UpState, Upstream};
pub use target::Target;
pub use types::{
    BuiltNotify, Changes, DialogKey, Env, Out, Package, PhoneId, RESERVE, ReqTag, Route, TargetId,
};
