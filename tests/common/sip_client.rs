//! A minimal SIP client: raw requests from a private socket and OPTIONS probes.

use super::kamailio::DOMAIN;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Transport for [`Sipp`] and the raw SIP helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// Send one SIP request (raw bytes, exactly as given) from a fresh 127.0.0.1 socket
/// and return every SIP message received on that socket until a final response
/// (status >= 200) arrived or `timeout` passed. Responses are matched to nothing:
/// the socket is private to this call. Useful for negative tests with malformed or
/// foreign requests; `{local}` in `request` is replaced by the socket's own
/// `127.0.0.1:port` (for Via/Contact).
pub fn sip_exchange(
    transport: Transport,
    to: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    match transport {
        Transport::Udp => {
            // from loopback of the target's family (a bridge may listen on [::1])
            let local: SocketAddr = if to.is_ipv6() {
                (Ipv6Addr::LOCALHOST, 0).into()
            } else {
                (Ipv4Addr::LOCALHOST, 0).into()
            };
            let Ok(sock) = UdpSocket::bind(local) else {
                return got;
            };
            let Ok(local) = sock.local_addr() else {
                return got;
            };
            let req = request.replace("{local}", &local.to_string());
            if sock.send_to(req.as_bytes(), to).is_err() {
                return got;
            }
            let mut buf = vec![0u8; 65536];
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let fin = status_of(&msg).is_some_and(|s| s >= 200);
                        got.push(msg);
                        if fin {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        Transport::Tcp => {
            let Ok(mut stream) = TcpStream::connect_timeout(&to, timeout) else {
                return got;
            };
            let Ok(local) = stream.local_addr() else {
                return got;
            };
            let req = request.replace("{local}", &local.to_string());
            if stream.write_all(req.as_bytes()).is_err() {
                return got;
            }
            let mut acc: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 65536];
            'read: while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => acc.extend_from_slice(&buf[..n]),
                }
                while let Some(len) = framed_len(&acc) {
                    let msg = String::from_utf8_lossy(&acc[..len]).into_owned();
                    acc.drain(..len);
                    let fin = status_of(&msg).is_some_and(|s| s >= 200);
                    got.push(msg);
                    if fin {
                        break 'read;
                    }
                }
            }
        }
    }
    got
}

/// Length of the first complete SIP message in a stream buffer (headers + Content-Length).
pub(super) fn framed_len(buf: &[u8]) -> Option<usize> {
    // skip keep-alive CRLFs
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let rest = &buf[start..];
    let end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&rest[..end]);
    let clen = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    (rest.len() >= end + clen).then_some(start + end + clen)
}

pub(super) fn status_of(msg: &str) -> Option<u16> {
    let line = msg.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// A minimal OPTIONS request to `target` (Request-URI `sip:<target>`), with `{local}`
/// placeholders for [`sip_exchange`].
pub fn options_request(target: SocketAddr, transport: Transport) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", std::process::id());
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/{t} {{local}};branch=z9hG4bK-probe-{id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{DOMAIN}>;tag=probe-{id}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: probe-{id}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:probe@{{local}};transport={tl}>\r\n\
         User-Agent: blf-bridge-tests probe\r\n\
         Content-Length: 0\r\n\r\n",
        t = transport.as_str(),
        tl = transport.as_str().to_ascii_lowercase(),
    )
}

/// Status code of the final answer to an OPTIONS sent to `target`, if any came
/// within `timeout`.
pub fn sip_ping(target: SocketAddr, transport: Transport, timeout: Duration) -> Option<u16> {
    sip_exchange(
        transport,
        target,
        &options_request(target, transport),
        timeout,
    )
    .iter()
    .filter_map(|m| status_of(m))
    .find(|&s| s >= 200)
}
