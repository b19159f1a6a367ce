//! The bridge's own identity on the wire: the addresses it is bound to and
//! advertises, the `host:port` it writes into Via, Contact, Record-Route and
//! Path, the one rule that says whether a URI or a Via names the bridge, and the
//! names it signs its messages with.
//!
//! "Is this URI us?" has one answer, [`LocalAddrs::is_own_uri`]: the host is the
//! advertised host or a bound address, and the port is one the bridge listens
//! on — a URI without a port means the default port of its scheme and transport
//! (RFC 3261 §19.1.2: 5060 for `sip` over UDP/TCP, 5061 for `sips` or TLS).
//! Only the endpoint's question "is this request for the bridge's own UAS?"
//! ([`LocalAddrs::addresses_bridge`]) is more lenient: a Request-URI with our
//! host and no port at all is taken as ours whatever port we listen on (the
//! request did reach us; phones often leave the port out of the bridge's
//! address).

use crate::sip::{Scheme, Transport, Uri, Via};
use std::net::{IpAddr, SocketAddr};

/// `User-Agent` of the requests and `Server` of the responses the bridge
/// originates.
pub const USER_AGENT: &str = concat!("blf-bridge/", env!("CARGO_PKG_VERSION"));

/// User part of the bridge's own Contact URIs (dialogs it terminates, OPTIONS
/// pings). Requests addressed to it are for the bridge itself.
pub const CONTACT_USER: &str = "blf-bridge";

/// Host part of the Call-IDs the bridge generates (`<random>@blf-bridge`).
pub const CALL_ID_HOST: &str = "blf-bridge";

/// RFC 3261 §19.1.2: the port of a `sip`/`sips` URI that names none — 5061 for
/// `sips` or `;transport=tls`, else 5060.
pub fn default_port(uri: &Uri<'_>) -> u16 {
    let tls = uri.scheme == Scheme::Sips
        || uri
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"tls"));
    if tls { 5061 } else { 5060 }
}

/// RFC 3261 §18.2.2 / §19.1.2: the port of a Via sent-by that names none —
/// 5061 over TLS, else 5060.
pub fn default_via_port(transport: &str) -> u16 {
    if transport.eq_ignore_ascii_case("TLS") {
        5061
    } else {
        5060
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The bridge's own addresses, as bound by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// Host written into Via/Contact/Record-Route.
    pub advertise_host: String,
}

impl LocalAddrs {
    // ------------------------------------------------------------ what we write

    /// The port the bridge advertises for a transport (the other listener's when
    /// that transport has none; 5060 when neither is bound).
    pub fn port(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Udp => self.udp.or(self.tcp),
            // no TLS listener: the upstream reaches the bridge on the TLS
            // connection the bridge opened (RFC 5923 alias), so the port only
            // names the bridge; the TCP listener's, else the UDP one's
            Transport::Tcp | Transport::Tls => self.tcp.or(self.udp),
        }
        .map(|a| a.port())
        .unwrap_or(5060)
    }

    /// `host:port` the bridge advertises for a transport (IPv6 bracketed).
    pub fn hostport(&self, transport: Transport) -> String {
        let port = self.port(transport);
        let host = &self.advertise_host;
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The Via value of a request the bridge sends (originated or forwarded).
    /// Over TLS it carries `;alias` (RFC 5923): the upstream may send its
    /// requests for the bridge's `host:port` on this connection — the bridge
    /// has no TLS listener to connect to.
    pub fn via(&self, transport: Transport, branch: &str) -> String {
        let alias = if transport == Transport::Tls {
            ";alias"
        } else {
            ""
        };
        format!(
            "SIP/2.0/{} {};branch={branch};rport{alias}",
            transport.via_name(),
            self.hostport(transport)
        )
    }

    /// `sip:<user>@<bridge>` for a transport, with `;transport=tcp` on TCP and
    /// `;transport=tls` on TLS (not `sips:`: the phones' side of the bridge is
    /// not TLS, so the path is not secure end to end, RFC 3261 §19.1).
    pub fn uri(&self, user: &str, transport: Transport) -> String {
        let t = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        format!("sip:{user}@{}{t}", self.hostport(transport))
    }

    /// The Contact of the dialogs the bridge terminates: `<sip:blf-bridge@…>`.
    pub fn contact(&self, transport: Transport) -> String {
        format!("<{}>", self.uri(CONTACT_USER, transport))
    }

    // ------------------------------------------------------- what names us

    /// Is `host` the advertised host or a bound address (brackets optional; a
    /// wildcard bind counts loopback addresses as ours)?
    pub fn is_local_host(&self, host: &str) -> bool {
        let host = unbracket(host);
        if host.eq_ignore_ascii_case(unbracket(&self.advertise_host)) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => [self.udp, self.tcp]
                .into_iter()
                .flatten()
                .any(|a| a.ip() == ip || (a.ip().is_unspecified() && ip.is_loopback())),
            Err(_) => false,
        }
    }

    /// Does a listener of the bridge use this port?
    pub fn listens_on(&self, port: u16) -> bool {
        self.udp.map(|a| a.port()) == Some(port) || self.tcp.map(|a| a.port()) == Some(port)
    }

    /// Is `host[:port]` the bridge, for `sip` over UDP/TCP (no port means 5060)?
    pub fn is_local(&self, host: &str, port: Option<u16>) -> bool {
        self.listens_on(port.unwrap_or(5060)) && self.is_local_host(host)
    }

    /// Is this `sip`/`sips` URI one of the bridge's own? The rule of the module
    /// docs: our host, on one of our ports, the default port of its scheme and
    /// transport when it names none.
    pub fn is_own_uri(&self, uri: &Uri<'_>) -> bool {
        uri.is_sip()
            && self.listens_on(uri.port.unwrap_or_else(|| default_port(uri)))
            && self.is_local_host(uri.host_str())
    }

    /// Is this Via one the bridge wrote (its sent-by names us)?
    pub fn is_own_via(&self, via: &Via<'_>) -> bool {
        self.listens_on(via.port.unwrap_or_else(|| default_via_port(via.transport)))
            && self.is_local_host(via.host)
    }

    /// Is this Request-URI addressed to the bridge's own UAS: our Contact user or
    /// no user, at one of our URIs ([`LocalAddrs::is_own_uri`]) or at our host
    /// without a port (the request reached us; phones often leave the port out)?
    pub fn addresses_bridge(&self, uri: &Uri<'_>) -> bool {
        let host_is_us = self.is_own_uri(uri)
            || (uri.is_sip() && uri.port.is_none() && self.is_local_host(uri.host_str()));
        host_is_us && (uri.user.is_none() || uri.user == Some(CONTACT_USER.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(bind: &str, advertise: &str) -> LocalAddrs {
        LocalAddrs {
            udp: Some(bind.parse().unwrap()),
            tcp: Some(bind.parse().unwrap()),
            advertise_host: advertise.into(),
        }
    }

    fn uri(s: &str) -> Uri<'_> {
        Uri::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn hostport_brackets_ipv6_and_falls_back_to_the_other_listener() {
        let l = LocalAddrs {
            udp: Some("[::1]:5070".parse().unwrap()),
            tcp: None,
            advertise_host: "::1".into(),
        };
        assert_eq!(l.hostport(Transport::Tcp), "[::1]:5070");
        assert_eq!(
            l.via(Transport::Udp, "z9hG4bKx"),
            "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKx;rport"
        );
        assert_eq!(
            l.contact(Transport::Tcp),
            "<sip:blf-bridge@[::1]:5070;transport=tcp>"
        );
        assert_eq!(
            l.via(Transport::Tls, "z9hG4bKx"),
            "SIP/2.0/TLS [::1]:5070;branch=z9hG4bKx;rport;alias"
        );
        assert_eq!(
            l.uri("f-1", Transport::Tls),
            "sip:f-1@[::1]:5070;transport=tls"
        );
        let none = LocalAddrs {
            udp: None,
            tcp: None,
            advertise_host: "bridge.lan".into(),
        };
        assert_eq!(none.hostport(Transport::Udp), "bridge.lan:5060");
    }

    #[test]
    fn a_uri_without_port_means_the_default_port_of_its_scheme() {
        let l = local("192.168.1.2:5060", "192.168.1.2");
        assert!(l.is_own_uri(&uri("sip:192.168.1.2")));
        assert!(l.is_own_uri(&uri("sip:f-x@192.168.1.2:5060;lr")));
        assert!(!l.is_own_uri(&uri("sips:192.168.1.2")), "sips means 5061");
        assert!(!l.is_own_uri(&uri("sip:192.168.1.2;transport=tls")));
        assert!(!l.is_own_uri(&uri("sip:192.168.1.2:5062")));
        assert!(!l.is_own_uri(&uri("tel:+15551234")));
        let tls = local("192.168.1.2:5061", "192.168.1.2");
        assert!(tls.is_own_uri(&uri("sips:192.168.1.2")));
        assert!(!tls.is_own_uri(&uri("sip:192.168.1.2")));
    }

    #[test]
    fn vias_default_by_transport() {
        let l = local("192.168.1.2:5060", "192.168.1.2");
        let via = |s: &'static str| Via::parse(s.as_bytes()).unwrap();
        assert!(l.is_own_via(&via("SIP/2.0/UDP 192.168.1.2;branch=z9hG4bKa")));
        assert!(!l.is_own_via(&via("SIP/2.0/TLS 192.168.1.2;branch=z9hG4bKa")));
        assert!(!l.is_own_via(&via("SIP/2.0/UDP 192.168.1.2:5070;branch=z9hG4bKa")));
        // what the bridge writes over TLS names it (the port is a listener's)
        let tls_via = l.via(Transport::Tls, "z9hG4bKa");
        assert!(l.is_own_via(&Via::parse(tls_via.as_bytes()).unwrap()));
        let tls_uri = l.uri("f-1", Transport::Tls);
        assert!(l.is_own_uri(&uri(&tls_uri)));
    }

    #[test]
    fn the_bridge_uas_takes_a_portless_uri_on_any_port() {
        let l = local("127.0.0.1:40000", "127.0.0.1");
        assert!(!l.is_own_uri(&uri("sip:127.0.0.1")));
        assert!(l.addresses_bridge(&uri("sip:127.0.0.1")));
        assert!(l.addresses_bridge(&uri("sip:blf-bridge@127.0.0.1:40000")));
        assert!(!l.addresses_bridge(&uri("sip:127.0.0.1:5060")));
        assert!(!l.addresses_bridge(&uri("sip:1001@127.0.0.1")));
        assert!(!l.addresses_bridge(&uri("sip:192.0.2.1")));
    }
}
