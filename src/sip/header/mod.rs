//! Header names and the typed views of the header values the bridge acts on, one
//! file per header (the `ezk-sip-types` layout): [`Via`], [`NameAddr`] (From, To,
//! Contact, Route, Record-Route, Path), [`CSeq`], [`Event`], [`SubState`]
//! (Subscription-State), and the bridge to `ezk-sip-types` for the grammars that
//! are intricate and off the hot path ([`ezk_parse`]).
//!
//! Each view parses a value slice with the primitives of
//! [`grammar`](crate::sip::grammar); none of them knows about messages. The
//! accessors that find a header in a [`SipMessage`](crate::sip::SipMessage) and
//! parse it are in [`view`](crate::sip::view).

pub mod cseq;
pub mod event;
pub mod ezk;
pub mod name;
pub mod name_addr;
pub mod sub_state;
pub mod via;

pub use cseq::CSeq;
pub use event::Event;
pub use ezk::{EventReasonValue, SubStateValue, SubscriptionState, ezk_parse};
pub use name::HeaderName;
pub use name_addr::NameAddr;
pub use sub_state::{SubState, SubStateKind};
pub use via::Via;
