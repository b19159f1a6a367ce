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
//! through a client transaction, responses for a server transaction). All state is
//! plain serialisable data.

mod build;
mod manager;
mod types;

pub use manager::{Classification, Env, Out, ReqTag, SubscriptionManager};
pub use types::{Package, PhoneState, PhoneSub, Target, UpState, Upstream};
