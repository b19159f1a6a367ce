//! Two processes on loopback: the `blf-bridge` binary, and this test acting as a
//! phone (and as a silent upstream). A SUBSCRIBE/200 exchange over UDP and over
//! TCP through the real runtime, and a UDP retransmission absorbed by the server
//! transaction (answered with the stored 200, no second subscription).
//! Waits are bounded; nothing asserts on timing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_blf-bridge");
const WAIT: Duration = Duration::from_secs(10);

struct Bridge {
    child: Child,
    port: u16,
    upstream: UdpSocket,
    dir: PathBuf,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn start_bridge() -> Bridge {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    let port = free_port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loopback-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\nudp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\n\n\
             [upstream]\nproxy = \"127.0.0.1:{up_port}\"\ndomain = \"pbx.test\"\nkeepalive = \"none\"\n\n\
             [[account]]\nuser = \"1001\"\npassword = \"secret\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bridge starts");
    let b = Bridge {
        child,
        port,
        upstream,
        dir,
    };
    // wait until it answers OPTIONS
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        let local = probe.local_addr().unwrap();
        let o = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            Instant::now().elapsed().as_nanos()
        );
        probe.send_to(o.as_bytes(), ("127.0.0.1", port)).unwrap();
        if let Ok((n, _)) = probe.recv_from(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return b;
        }
        assert!(Instant::now() < until, "bridge did not come up");
    }
}

fn subscribe(transport: &str, local: SocketAddr, branch: &str, call_id: &str) -> String {
    format!(
        "SUBSCRIBE sip:1002@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/{transport} {local};branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: \"1001\" <sip:1001@pbx.test>;tag=ph1\r\n\
To: <sip:1002@pbx.test>\r\n\
Call-ID: {call_id}\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:1001@{local};transport={}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml, multipart/related, application/rlmi+xml\r\n\
Supported: replaces, path, timer, eventlist\r\n\
User-Agent: Grandstream Wave\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n",
        transport.to_ascii_lowercase()
    )
}

/// Receive datagrams until one starts with `prefix`.
fn recv_until(sock: &UdpSocket, prefix: &[u8]) -> Vec<u8> {
    let until = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && buf[..n].starts_with(prefix)
        {
            return buf[..n].to_vec();
        }
        assert!(
            Instant::now() < until,
            "no {:?} within {WAIT:?}",
            String::from_utf8_lossy(prefix)
        );
    }
}

/// Distinct Call-IDs of the SUBSCRIBEs the upstream socket received so far.
fn upstream_subscriptions(b: &Bridge, for_at_least: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    let until = Instant::now() + for_at_least;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < until {
        if let Ok((n, _)) = b.upstream.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.starts_with("SUBSCRIBE ")
                && let Some(cid) = text.lines().find_map(|l| l.strip_prefix("Call-ID: "))
                && !ids.iter().any(|i| i == cid)
            {
                ids.push(cid.to_string());
            }
        }
    }
    ids
}

#[test]
fn subscribe_over_udp_with_an_absorbed_retransmission() {
    let b = start_bridge();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = phone.local_addr().unwrap();
    let req = subscribe("UDP", local, "z9hG4bKloopudp1", "loop-udp-1");
    phone
        .send_to(req.as_bytes(), ("127.0.0.1", b.port))
        .unwrap();
    let ok1 = recv_until(&phone, b"SIP/2.0 ");
    let text1 = String::from_utf8_lossy(&ok1).into_owned();
    assert!(text1.starts_with("SIP/2.0 200 OK\r\n"), "{text1}");
    assert!(
        text1.contains(&format!("received=127.0.0.1;rport={}", local.port())),
        "RFC 3581 stamped: {text1}"
    );
    assert!(text1.contains("Expires: 600\r\n"));
    assert!(text1.contains("To: <sip:1002@pbx.test>;tag="));

    // the phone did not hear the 200 and retransmits the very same request
    phone
        .send_to(req.as_bytes(), ("127.0.0.1", b.port))
        .unwrap();
    let ok2 = recv_until(&phone, b"SIP/2.0 ");
    assert_eq!(
        ok1, ok2,
        "the server transaction answers from its stored 200"
    );

    // one phone subscription → exactly one dialog + one presence subscription
    let ids = upstream_subscriptions(&b, Duration::from_millis(1500));
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[test]
fn subscribe_over_tcp() {
    let b = start_bridge();
    let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = s.local_addr().unwrap();
    let req = subscribe("TCP", local, "z9hG4bKlooptcp1", "loop-tcp-1");
    s.write_all(req.as_bytes()).unwrap();
    let until = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => panic!("connection closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(Instant::now() < until, "no response over TCP");
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    assert!(text.contains("Via: SIP/2.0/TCP"));
    assert!(
        text.contains(";transport=tcp>"),
        "our Contact says TCP: {text}"
    );
    assert_eq!(
        upstream_subscriptions(&b, Duration::from_millis(1500)).len(),
        2
    );
}

#[test]
fn health_command_probes_a_running_bridge() {
    let b = start_bridge();
    let out = Command::new(BIN)
        .args(["health", "--addr", &format!("127.0.0.1:{}", b.port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIP/2.0 200"));
    // the same, finding the address in the bridge's configuration
    let out = Command::new(BIN)
        .args(["health", "--config"])
        .arg(b.dir.join("bridge.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(b);
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let out = Command::new(BIN)
        .args([
            "health",
            "--timeout-ms",
            "600",
            "--addr",
            &dead.local_addr().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
