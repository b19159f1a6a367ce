//! How the sans-IO core names peers: a [`Flow`] is the transport, the remote
//! address and (for TCP) the connection a message came on or must go out on.
//! The runtime maps flows to sockets; the core never touches a socket.

use crate::sip::Transport;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Identifies one TCP connection owned by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// Where a message came from, or where it must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    pub transport: Transport,
    pub remote: SocketAddr,
    /// For TCP: the connection the message arrived on / should be sent on. `None`
    /// lets the runtime reuse any open connection to `remote` or open a new one.
    pub conn: Option<ConnId>,
}

impl Flow {
    pub fn udp(remote: SocketAddr) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote,
            conn: None,
        }
    }
    pub fn tcp(remote: SocketAddr, conn: Option<ConnId>) -> Flow {
        Flow {
            transport: Transport::Tcp,
            remote,
            conn,
        }
    }

    /// A TLS stream (only the upstream's).
    pub fn tls(remote: SocketAddr, conn: Option<ConnId>) -> Flow {
        Flow {
            transport: Transport::Tls,
            remote,
            conn,
        }
    }
    /// A stream flow of `transport` (TCP or TLS) on connection `conn`.
    pub fn stream(transport: Transport, remote: SocketAddr, conn: Option<ConnId>) -> Flow {
        Flow {
            transport,
            remote,
            conn,
        }
    }

    /// Where responses to a request that came on this flow go: back where it came
    /// from — the same TCP connection, or over UDP the source address and port
    /// (symmetric response routing, RFC 3581 behaviour applied to every request).
    /// RFC 3261 §18.2.2 would use the Via's sent-by port when the request has no
    /// `rport`, but a phone behind NAT can only be reached on the port its packets
    /// came from, and a phone on the LAN sends from the port it listens on anyway.
    /// See docs/decisions.md.
    pub fn reply(&self) -> Flow {
        if self.transport.is_reliable() {
            return *self;
        }
        Flow {
            conn: None,
            ..*self
        }
    }
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport, self.remote)
    }
}

/// Bytes the core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub flow: Flow,
    pub data: Bytes,
}
