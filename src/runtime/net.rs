//! Address plumbing for the runtime (resolving the upstream proxy is
//! `super::dns`): choosing the host the bridge advertises in Via/Contact/Record-Route, and keeping IPv4
//! peers in one canonical form whatever socket family they arrive on.

use super::RuntimeError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack `[::]`
/// socket reports for IPv4 peers) become plain IPv4 addresses, so that a peer
/// has one name in the core whichever socket it used.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The inverse of [`normalize`] for sending: an IPv4 destination on an IPv6
/// socket is written as `::ffff:a.b.c.d` (a dual-stack socket cannot take an
/// IPv4 sockaddr).
pub fn for_socket(dest: SocketAddr, local: Option<SocketAddr>) -> SocketAddr {
    match (dest, local) {
        (SocketAddr::V4(v4), Some(SocketAddr::V6(_))) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => dest,
    }
}

/// An IP address written as a SIP `host`: IPv6 in brackets (RFC 3261 §25.1
/// `IPv6reference`).
pub fn host_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    }
}

/// The local address the OS would use to reach `dest`: a UDP socket is
/// connected (which only sets its default destination, no packet is sent) and
/// its local address read back.
pub fn route_source(dest: SocketAddr) -> std::io::Result<IpAddr> {
    let any = match dest {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let sock = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    sock.connect(dest)?;
    Ok(sock.local_addr()?.ip())
}

/// The host written into Via/Contact/Record-Route: `configured`
/// (`[listen] advertise`) if set, else the bound IP unless it is unspecified,
/// else the address the OS picks to reach the upstream.
pub fn advertise_host(
    configured: Option<&str>,
    bound: Option<IpAddr>,
    upstream: SocketAddr,
) -> Result<String, RuntimeError> {
    if let Some(h) = configured.map(str::trim).filter(|h| !h.is_empty()) {
        return Ok(h.to_string());
    }
    if let Some(ip) = bound.filter(|ip| !ip.is_unspecified()) {
        return Ok(host_string(ip));
    }
    match route_source(upstream) {
        Ok(ip) if !ip.is_unspecified() => Ok(host_string(ip)),
        Ok(_) => Err(RuntimeError::Advertise(format!(
            "no local address routes to the upstream {upstream}; set [listen] advertise"
        ))),
        Err(e) => Err(RuntimeError::Advertise(format!(
            "cannot find the local address towards the upstream {upstream} ({e}); set [listen] advertise"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_normalized_and_restored() {
        assert_eq!(normalize(sa("[::ffff:10.1.2.3]:5060")), sa("10.1.2.3:5060"));
        assert_eq!(
            normalize(sa("[2001:db8::1]:5060")),
            sa("[2001:db8::1]:5060")
        );
        assert_eq!(normalize(sa("10.1.2.3:5")), sa("10.1.2.3:5"));
        assert_eq!(
            for_socket(sa("10.1.2.3:5060"), Some(sa("[::]:5060"))),
            sa("[::ffff:10.1.2.3]:5060")
        );
        assert_eq!(
            for_socket(sa("10.1.2.3:5060"), Some(sa("0.0.0.0:5060"))),
            sa("10.1.2.3:5060")
        );
        assert_eq!(
            for_socket(sa("[2001:db8::1]:1"), Some(sa("[::]:5060"))),
            sa("[2001:db8::1]:1")
        );
    }

    #[test]
    fn hosts_are_written_as_sip_hosts() {
        assert_eq!(host_string("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(host_string("2001:db8::7".parse().unwrap()), "[2001:db8::7]");
        assert_eq!(
            host_string("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
    }

    #[test]
    fn advertise_order_configured_then_bound_then_route() {
        let up = sa("127.0.0.1:5060");
        assert_eq!(
            advertise_host(
                Some("sip.example.net"),
                Some("10.0.0.1".parse().unwrap()),
                up
            )
            .unwrap(),
            "sip.example.net"
        );
        assert_eq!(
            advertise_host(None, Some("10.0.0.1".parse().unwrap()), up).unwrap(),
            "10.0.0.1"
        );
        // unspecified bind address: ask the OS (towards loopback: a loopback address)
        let routed = advertise_host(None, Some("0.0.0.0".parse().unwrap()), up).unwrap();
        assert!(
            routed.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()),
            "{routed}"
        );
        let routed = advertise_host(Some("  "), None, up).unwrap();
        assert!(routed.starts_with("127."), "{routed}");
    }
}
