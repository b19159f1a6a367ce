//! The whole sans-IO core: arbitrary messages from phones (UDP and TCP) and from
//! the upstream, with time advancing between them, fed into one `Endpoint`
//! (validation, transactions, subscription translation, proxy). Nothing may
//! panic, and every transmit must be non-empty and go to a loopback peer.
//!
//! Input: chunks separated by `\0\0`. The first byte of a chunk picks what
//! happens: `% 4` = 0 a datagram from phone A, 1 a datagram from the upstream,
//! 2 bytes on phone B's TCP connection, 3 time passes (`byte * 97 ms`).
#![no_main]

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{ConnId, Flow};
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{StreamFramer, StreamItem};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"
[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.test"
keepalive = "options"
keepalive_interval = 5
[[account]]
user = "1001"
password = "pass1001"
"#;

fn shared() -> &'static (Arc<Config>, Arc<ProfileSet>) {
    static S: OnceLock<(Arc<Config>, Arc<ProfileSet>)> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = Config::parse(CONFIG, "fuzz.toml", &|_| None).expect("fuzz config");
        (Arc::new(cfg), Arc::new(ProfileSet::builtin()))
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fuzz_target!(|data: &[u8]| {
    let (cfg, profiles) = shared();
    let start = Instant::now();
    let mut now = start;
    let local = LocalAddrs {
        udp: Some(addr("127.0.0.1:5060")),
        tcp: Some(addr("127.0.0.1:5060")),
        advertise_host: "127.0.0.1".into(),
    };
    let mut ep = Endpoint::new(cfg.clone(), profiles.clone(), local, addr("127.0.0.1:5070"), 7, now);
    let mut framer = StreamFramer::new();
    let phone_a = Flow::udp(addr("127.0.0.1:40000"));
    let upstream = Flow::udp(addr("127.0.0.1:5070"));
    let phone_b = Flow::tcp(addr("127.0.0.1:40002"), Some(ConnId(1)));
    for chunk in data.split(|_| false).flat_map(|d| split(d)) {
        let Some((&op, rest)) = chunk.split_first() else { continue };
        match op % 4 {
            0 => ep.handle_datagram(phone_a, Bytes::copy_from_slice(rest), now),
            1 => ep.handle_datagram(upstream, Bytes::copy_from_slice(rest), now),
            2 => {
                framer.push(rest);
                loop {
                    match framer.next_item() {
                        Ok(Some(StreamItem::Message(m))) => ep.handle_message(phone_b, m, now),
                        Ok(Some(StreamItem::Ping)) => ep.handle_keepalive_ping(phone_b),
                        Ok(Some(StreamItem::Pong)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            ep.connection_closed(ConnId(1));
                            framer = StreamFramer::new();
                            break;
                        }
                    }
                }
            }
            _ => {
                let end = now + Duration::from_millis(op as u64 * 97);
                while let Some(t) = ep.poll_timeout() {
                    if t > end {
                        break;
                    }
                    now = now.max(t);
                    ep.handle_timeout(now);
                    drain(&mut ep);
                }
                now = end;
                ep.handle_timeout(now);
            }
        }
        drain(&mut ep);
    }
});

/// Chunks separated by `\0\0`.
fn split(d: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut s = 0;
    let mut i = 0;
    while i + 1 < d.len() {
        if d[i] == 0 && d[i + 1] == 0 {
            out.push(&d[s..i]);
            i += 2;
            s = i;
        } else {
            i += 1;
        }
    }
    out.push(&d[s..]);
    out
}

fn drain(ep: &mut Endpoint) {
    while let Some(t) = ep.poll_transmit() {
        assert!(!t.data.is_empty(), "empty transmit to {}", t.flow);
        assert!(t.flow.remote.ip().is_loopback(), "traffic to a non-loopback peer: {}", t.flow);
    }
}
