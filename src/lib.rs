//! blf-bridge: a SIP subscription-translating proxy that makes offline extensions
//! visible on dialog-only BLF phones (Grandstream GXP/Wave) by merging the hosted
//! PBX's `dialog` and `presence` event packages.
//!
//! Layout (sans-IO core, thin runtime — the quinn-proto/quinn split; see `docs/architecture.md`):
//! - [`local`]: the bridge's own addresses, Via/Contact host and "is this URI us?".
//! - [`context`]: the surroundings shared by the translator and the proxy.
//! - [`sip`]: byte-preserving message layer (framing, typed views, edits, builder).
//! - [`auth`]: digest client (401/407).
//! - [`transaction`]: RFC 3261 transaction state machines, fed with (message, time).
//! - [`presence`]: dialog-info and PIDF parsing and the merged per-target state.
//! - [`profile`]: device-model profiles and dialog-info rendering.
//! - [`subscription`]: phone-side notifier and upstream subscriber state machines.
//! - [`proxy`]: RFC 3261 §16 forwarding of everything that is not translated.
//! - [`runtime`]: tokio sockets, timers and the event loop around the core.
//! - [`cli`]: the `blf-bridge` command line.

pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod endpoint;
pub mod flow;
pub mod http;
pub mod local;
pub mod presence;
pub mod profile;
pub mod proxy;
pub mod runtime;
pub mod sip;
pub mod store;
pub mod subscription;
pub mod tls;
pub mod transaction;
pub mod util;
