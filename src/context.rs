//! What the core's components share about their surroundings: the
//! configuration, the device profiles, the bridge's own addresses, the flow
//! towards the upstream and the transaction timer base. The endpoint builds one
//! [`Context`] and hands a copy to the subscription manager and to the proxy.

use crate::config::Config;
use crate::flow::Flow;
use crate::local::{LocalAddrs, USER_AGENT};
use crate::profile::ProfileSet;
use crate::sip::Transport;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The surroundings of the sans-IO core (see the module docs).
#[derive(Clone)]
pub struct Context {
    pub cfg: Arc<Config>,
    pub profiles: Arc<ProfileSet>,
    pub local: LocalAddrs,
    /// Flow towards `[upstream] proxy`: the server in use now (with several
    /// resolved servers, the one failover chose; see `endpoint::failover`).
    pub upstream: Flow,
    /// Every server `[upstream] proxy` resolved to, most preferred first
    /// (RFC 3263); messages from any of them come from "the upstream".
    pub upstreams: Arc<[Flow]>,
    /// Host names the resolution went through (SRV targets): they name the
    /// upstream too, e.g. in its Record-Route.
    pub upstream_names: Arc<[String]>,
    /// RFC 3261 T1 (Timer N, Timer C give-up and CANCEL give-up derive from it).
    pub t1: Duration,
    /// User-Agent (and Server) header of messages the bridge originates.
    pub user_agent: &'static str,
    /// The bridge's own Via and Contact per transport, written once: a
    /// fan-out writes them into every NOTIFY without formatting them again.
    pub own: Arc<OwnHeaders>,
}

/// Header values the bridge writes into the requests it originates, per
/// transport (UDP, TCP, TLS), from [`LocalAddrs`].
#[derive(Debug)]
pub struct OwnHeaders {
    /// `SIP/2.0/<T> host:port;branch=` (the branch follows).
    via_prefix: [String; 3],
    /// `;rport`, `;rport;alias` over TLS (after the branch).
    via_suffix: [&'static str; 3],
    /// `<sip:blf-bridge@host:port[;transport=…]>`.
    contact: [String; 3],
}

impl OwnHeaders {
    fn new(local: &LocalAddrs) -> OwnHeaders {
        let ts = [Transport::Udp, Transport::Tcp, Transport::Tls];
        let via = |t: Transport| {
            // LocalAddrs::via with an empty branch, cut where the branch goes
            let v = local.via(t, "");
            let at = v.find(";branch=").map_or(v.len(), |i| i + ";branch=".len());
            v[..at].to_string()
        };
        OwnHeaders {
            via_prefix: ts.map(via),
            via_suffix: ts.map(|t| {
                if t == Transport::Tls {
                    ";rport;alias"
                } else {
                    ";rport"
                }
            }),
            contact: ts.map(|t| local.contact(t)),
        }
    }

    fn at(t: Transport) -> usize {
        match t {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }

    /// The Via value around `branch`: (before it, after it). Together the same
    /// as [`LocalAddrs::via`].
    pub fn via(&self, t: Transport) -> (&str, &str) {
        (&self.via_prefix[Self::at(t)], self.via_suffix[Self::at(t)])
    }

    /// [`LocalAddrs::contact`].
    pub fn contact(&self, t: Transport) -> &str {
        &self.contact[Self::at(t)]
    }
}

impl Context {
    /// `upstream` is the resolved `[upstream] proxy` address, reached over the
    /// configured upstream transport.
    pub fn new(
        cfg: Arc<Config>,
        profiles: Arc<ProfileSet>,
        local: LocalAddrs,
        upstream: SocketAddr,
        t1: Duration,
    ) -> Context {
        let upstream = Flow {
            transport: cfg.upstream.transport,
            remote: upstream,
            conn: None,
        };
        Context {
            own: Arc::new(OwnHeaders::new(&local)),
            cfg,
            profiles,
            local,
            upstream,
            upstreams: Arc::from(vec![upstream]),
            upstream_names: Arc::from(Vec::new()),
            t1,
            user_agent: USER_AGENT,
        }
    }

    /// Does this host name the upstream: its domain, the configured proxy host,
    /// a resolved server's address or SRV target name, or an `[upstream]
    /// aliases` entry?
    pub fn is_upstream_host(&self, host: &str) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let up = &self.cfg.upstream;
        if host.eq_ignore_ascii_case(&up.domain) || host.eq_ignore_ascii_case(&up.proxy_host) {
            return true;
        }
        if up.aliases.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return true;
        }
        if self
            .upstream_names
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host.trim_end_matches('.')))
        {
            return true;
        }
        host.parse::<IpAddr>()
            .is_ok_and(|ip| self.upstreams.iter().any(|u| u.remote.ip() == ip))
    }

    /// The same surroundings with another upstream server in use (`current`)
    /// among the resolved ones (`all`).
    pub fn with_upstream(&self, current: Flow, all: Arc<[Flow]>, names: Arc<[String]>) -> Context {
        Context {
            upstream: current,
            upstreams: all,
            upstream_names: names,
            ..self.clone()
        }
    }
}
