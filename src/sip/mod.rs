//! The SIP message layer: a zero-copy framer that keeps the original bytes, lazy
//! typed views of the headers the bridge acts on, byte-preserving edits for
//! forwarding, a builder for what the bridge originates, and validation.
//!
//! Pure functions over bytes: no I/O, no clocks, no global state.
//!
//! Layers, bottom up (each file imports only from the layers below it):
//! [`grammar`] (tokens, LWS, parameters, small scalar parsers) → [`uri`] →
//! [`header`] (header names; one typed view per header value) → [`message`]
//! (the message, its header index and list splitting) → [`parse`] (start line
//! and header section into a message) and [`view`] (typed accessors,
//! [`Request`] / [`Response`]) → [`framer`], [`edit`], [`builder`], [`validate`].

pub mod builder;
pub mod edit;
pub mod framer;
pub mod grammar;
pub mod header;
pub mod message;
pub mod parse;
pub mod uri;
pub mod validate;
pub mod view;

pub use builder::{MessageBuilder, reason_phrase};
pub use edit::Editor;
pub use framer::{StreamError, StreamFramer, StreamItem};
pub use grammar::{ParamIter, Params, TypedError, parse_delta};
pub use header::{CSeq, Event, HeaderName, NameAddr, SubState, SubStateKind, Via};
pub use message::{
    Defect, Framing, Header, MAX_MESSAGE_SIZE, Method, ParseError, SipMessage, Span, StartLine,
};
pub use uri::{Scheme, Uri};
pub use view::{Request, Response};

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// TLS over TCP: only towards the upstream (`[upstream] transport = "tls"`);
    /// phones keep UDP/TCP. A stream transport like TCP.
    Tls,
}

impl Transport {
    /// As written in a Via sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Reliable transports have no retransmissions (timers E/G) and zero-length
    /// absorb timers (K/J/I/D).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}
