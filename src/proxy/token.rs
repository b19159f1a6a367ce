//! Flow tokens: a phone's [`Flow`] encoded into the user part of the
//! `Record-Route` URI the bridge inserts, authenticated with an HMAC so that only
//! flows the bridge itself minted can be targeted (RFC 5626 §5.2 uses the same
//! idea for edge proxies).
//!
//! Requests the upstream sends inside a dialog come back through the bridge with
//! that URI as their top `Route`; the token says which phone (address, port,
//! transport, TCP connection) the request belongs to, without any per-dialog
//! state — dialogs have no known lifetime, so a table of them could only leak.
//! A forged or damaged token does not decode, and the request is refused.

use crate::flow::{ConnId, Flow};
use crate::sip::Transport;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of the truncated HMAC-SHA256 carried in a token.
const MAC_LEN: usize = 8;
const FLAG_TCP: u8 = 1;
const FLAG_V6: u8 = 2;
const FLAG_CONN: u8 = 4;
/// With `FLAG_TCP`: the stream is TLS (only the upstream speaks it).
const FLAG_TLS: u8 = 8;

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut h = Sha256::new();
    h.update(ipad);
    h.update(data);
    let inner = h.finalize();
    let mut h = Sha256::new();
    h.update(opad);
    h.update(&inner[..]);
    let outer = h.finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer[..]);
    out
}

/// Encode `flow` as a lower-case hex token (30 characters for IPv4/UDP).
pub fn encode(key: &[u8; 32], flow: &Flow) -> String {
    let mut data = Vec::with_capacity(40);
    let mut flags = 0u8;
    match flow.transport {
        Transport::Udp => {}
        Transport::Tcp => flags |= FLAG_TCP,
        Transport::Tls => flags |= FLAG_TCP | FLAG_TLS,
    }
    if flow.remote.is_ipv6() {
        flags |= FLAG_V6;
    }
    if flow.conn.is_some() {
        flags |= FLAG_CONN;
    }
    data.push(flags);
    match flow.remote.ip() {
        IpAddr::V4(a) => data.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => data.extend_from_slice(&a.octets()),
    }
    data.extend_from_slice(&flow.remote.port().to_be_bytes());
    if let Some(c) = flow.conn {
        data.extend_from_slice(&c.0.to_be_bytes());
    }
    let mac = hmac(key, &data);
    data.extend_from_slice(&mac[..MAC_LEN]);
    crate::util::hex(&data)
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks_exact(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// Decode a token made by [`encode`] with the same key. `None` when it is
/// malformed or its MAC does not verify.
pub fn decode(key: &[u8; 32], token: &[u8]) -> Option<Flow> {
    let raw = unhex(token)?;
    let (&flags, _) = raw.split_first()?;
    if flags & !(FLAG_TCP | FLAG_V6 | FLAG_CONN | FLAG_TLS) != 0
        || flags & (FLAG_TCP | FLAG_TLS) == FLAG_TLS
    {
        return None;
    }
    let ip_len = if flags & FLAG_V6 != 0 { 16 } else { 4 };
    let conn_len = if flags & FLAG_CONN != 0 { 8 } else { 0 };
    let body_len = 1 + ip_len + 2 + conn_len;
    if raw.len() != body_len + MAC_LEN {
        return None;
    }
    let (body, mac) = raw.split_at(body_len);
    let expect = hmac(key, body);
    // constant-time comparison
    let diff = mac
        .iter()
        .zip(&expect[..MAC_LEN])
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff != 0 {
        return None;
    }
    let ip_bytes = body.get(1..1 + ip_len)?;
    let ip = if ip_len == 16 {
        let mut o = [0u8; 16];
        o.copy_from_slice(ip_bytes);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        let mut o = [0u8; 4];
        o.copy_from_slice(ip_bytes);
        IpAddr::V4(Ipv4Addr::from(o))
    };
    let p = body.get(1 + ip_len..3 + ip_len)?;
    let port = u16::from_be_bytes([p[0], p[1]]);
    let conn = if conn_len > 0 {
        let c = body.get(3 + ip_len..11 + ip_len)?;
        let mut o = [0u8; 8];
        o.copy_from_slice(c);
        Some(ConnId(u64::from_be_bytes(o)))
    } else {
        None
    };
    let transport = if flags & FLAG_TLS != 0 {
        Transport::Tls
    } else if flags & FLAG_TCP != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    Some(Flow {
        transport,
        remote: SocketAddr::new(ip, port),
        conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trips_every_flow_shape() {
        let flows = [
            Flow::udp("192.168.1.50:5062".parse().unwrap()),
            Flow::tcp("10.0.0.7:40112".parse().unwrap(), Some(ConnId(991))),
            Flow::tcp("[fe80::1]:5060".parse().unwrap(), None),
            Flow::udp("[2001:db8::5]:5090".parse().unwrap()),
            Flow::tls("203.0.113.20:5061".parse().unwrap(), Some(ConnId(3))),
        ];
        for f in flows {
            let t = encode(&KEY, &f);
            assert!(t.bytes().all(|c| c.is_ascii_hexdigit()), "{t}");
            assert_eq!(decode(&KEY, t.as_bytes()), Some(f), "{t}");
        }
        assert_eq!(encode(&KEY, &flows[0]).len(), 30);
    }

    #[test]
    fn forged_damaged_or_foreign_tokens_are_refused() {
        let f = Flow::udp("192.168.1.50:5062".parse().unwrap());
        let t = encode(&KEY, &f);
        // another key
        assert_eq!(decode(&[8; 32], t.as_bytes()), None);
        // every single-character change is caught
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(decode(&KEY, &b), None, "position {i}");
        }
        // an attacker-chosen address with a made-up MAC
        let mut forged = t.clone();
        forged.replace_range(2..10, "08080808");
        assert_eq!(decode(&KEY, forged.as_bytes()), None);
        for junk in ["", "0", "zz", "00", &t[..t.len() - 2], &format!("{t}00")] {
            assert_eq!(decode(&KEY, junk.as_bytes()), None, "{junk}");
        }
    }
}
