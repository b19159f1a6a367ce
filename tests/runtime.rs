//! The tokio runtime on real loopback sockets: an in-process bridge on
//! 127.0.0.1 port 0, driven by UDP sockets and TCP streams. Every wait is
//! bounded by `tokio::time::timeout`; no assertion depends on timing.
//!
//! The first group runs the real `Endpoint` (which answers OPTIONS with 200 and
//! malformed requests with 400). The second drives the runtime with a scripted
//! core to check what only a core that originates traffic can show: connection
//! reuse, outgoing connections, `connection_closed`, timers, slow peers.

use blf_bridge::config::Config;
use blf_bridge::endpoint::LocalAddrs;
use blf_bridge::flow::{ConnId, Flow, Transmit};
use blf_bridge::runtime::{Runtime, RuntimeOptions, SansIoCore};
use blf_bridge::sip::{SipMessage, StreamFramer, StreamItem, Transport};
use bytes::Bytes;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound for any single wait; generous for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(10);

fn config(upstream_port: u16) -> Arc<Config> {
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\n\
         [upstream]\nproxy = \"127.0.0.1:{upstream_port}\"\ndomain = \"pbx.test\"\n"
    );
    Arc::new(Config::parse(&text, "test.toml", &|_| None).expect("test config"))
}

fn opts() -> RuntimeOptions {
    RuntimeOptions {
        seed: Some(7),
        ..RuntimeOptions::default()
    }
}

/// A bridge with the real endpoint, plus the socket standing in for the
/// upstream (so anything the bridge sends upstream stays on a socket we own).
async fn start_bridge(o: RuntimeOptions) -> (Runtime, UdpSocket) {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let rt = Runtime::start(config(port), o)
        .await
        .expect("runtime starts");
    (rt, upstream)
}

fn options(transport: &str, local: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1001@pbx.test>;tag=a1\r\n\
         To: <sip:bridge@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Receive one datagram (bounded wait) and parse it.
async fn recv_msg(sock: &UdpSocket) -> (SipMessage, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("a reply within the wait")
        .unwrap();
    let msg = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).expect("reply parses");
    (msg, from)
}

/// Read from a stream until `n` messages are framed.
async fn read_msgs(s: &mut TcpStream, framer: &mut StreamFramer, n: usize) -> Vec<SipMessage> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        while let Some(item) = framer.next_item().unwrap() {
            if let StreamItem::Message(m) = item {
                out.push(m);
            }
        }
        if out.len() >= n {
            break;
        }
        let k = timeout(WAIT, s.read(&mut buf))
            .await
            .expect("data within the wait")
            .unwrap();
        assert!(
            k > 0,
            "connection closed after {} of {n} messages",
            out.len()
        );
        framer.push(&buf[..k]);
    }
    out
}

/// Wait until the peer closes `s` (EOF or reset), discarding data.
async fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the bridge closes the connection")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

fn call_id(m: &SipMessage) -> &[u8] {
    m.call_id().unwrap_or_default()
}

// ------------------------------------------------------------- real endpoint

#[tokio::test]
async fn udp_options_answered_at_the_source_port() {
    let (rt, _up) = start_bridge(opts()).await;
    let bridge = rt.udp_addr().unwrap();
    assert_eq!(rt.local_addrs().advertise_host, "127.0.0.1");
    assert_ne!(bridge.port(), 0);

    let c = udp_client().await;
    let me = c.local_addr().unwrap();
    c.send_to(options("UDP", me, "udp-1").as_bytes(), bridge)
        .await
        .unwrap();
    let (reply, from) = recv_msg(&c).await;
    assert_eq!(from, bridge, "the reply comes from the listening socket");
    assert_eq!(reply.status(), Some(200));
    assert_eq!(call_id(&reply), b"udp-1");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_request_gets_400_with_reason_phrase() {
    let (rt, _up) = start_bridge(opts()).await;
    let c = udp_client().await;
    let me = c.local_addr().unwrap();
    let bad = options("UDP", me, "bad-1").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    c.send_to(bad.as_bytes(), rt.udp_addr().unwrap())
        .await
        .unwrap();
    let (reply, _) = recv_msg(&c).await;
    assert_eq!(reply.status(), Some(400));
    assert_eq!(
        reply.reason(),
        Some(&b"CSeq Method Does Not Match Request Method"[..])
    );
    assert_eq!(call_id(&reply), b"bad-1");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_two_requests_in_one_write_and_one_split_across_writes() {
    let (rt, _up) = start_bridge(opts()).await;
    let mut s = TcpStream::connect(rt.tcp_addr().unwrap()).await.unwrap();
    let me = s.local_addr().unwrap();
    let mut framer = StreamFramer::new();

    let two = options("TCP", me, "tcp-a") + &options("TCP", me, "tcp-b");
    s.write_all(two.as_bytes()).await.unwrap();
    let replies = read_msgs(&mut s, &mut framer, 2).await;
    assert_eq!(
        replies.iter().map(|m| m.status()).collect::<Vec<_>>(),
        [Some(200), Some(200)]
    );
    assert_eq!(call_id(&replies[0]), b"tcp-a");
    assert_eq!(call_id(&replies[1]), b"tcp-b");

    // One request in three writes, cut inside the start line and inside a header.
    let req = options("TCP", me, "tcp-c");
    let (a, rest) = req.split_at(10);
    let (b, c) = rest.split_at(60);
    for part in [a, b, c] {
        s.write_all(part.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await; // spacing only, not asserted
    }
    let replies = read_msgs(&mut s, &mut framer, 1).await;
    assert_eq!(replies[0].status(), Some(200));
    assert_eq!(call_id(&replies[0]), b"tcp-c");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_crlf_ping_gets_a_pong_and_the_connection_keeps_working() {
    let (rt, _up) = start_bridge(opts()).await;
    let mut s = TcpStream::connect(rt.tcp_addr().unwrap()).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    timeout(WAIT, s.read_exact(&mut pong))
        .await
        .expect("pong")
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    let me = s.local_addr().unwrap();
    s.write_all(options("TCP", me, "after-ping").as_bytes())
        .await
        .unwrap();
    let replies = read_msgs(&mut s, &mut StreamFramer::new(), 1).await;
    assert_eq!(call_id(&replies[0]), b"after-ping");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_garbage_closes_only_that_connection() {
    let (rt, _up) = start_bridge(opts()).await;
    let addr = rt.tcp_addr().unwrap();
    let mut good = TcpStream::connect(addr).await.unwrap();
    let good_me = good.local_addr().unwrap();
    let mut framer = StreamFramer::new();
    good.write_all(options("TCP", good_me, "good-1").as_bytes())
        .await
        .unwrap();
    read_msgs(&mut good, &mut framer, 1).await;

    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: bridge\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut bad).await;

    // A bad Content-Length is a framing error too.
    let mut bad2 = TcpStream::connect(addr).await.unwrap();
    let me2 = bad2.local_addr().unwrap();
    let req = options("TCP", me2, "cl").replace("Content-Length: 0", "Content-Length: zero");
    bad2.write_all(req.as_bytes()).await.unwrap();
    expect_closed(&mut bad2).await;

    // The other connection and new ones are still served.
    good.write_all(options("TCP", good_me, "good-2").as_bytes())
        .await
        .unwrap();
    let r = read_msgs(&mut good, &mut framer, 1).await;
    assert_eq!(call_id(&r[0]), b"good-2");
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    let me = fresh.local_addr().unwrap();
    fresh
        .write_all(options("TCP", me, "fresh").as_bytes())
        .await
        .unwrap();
    let r = read_msgs(&mut fresh, &mut StreamFramer::new(), 1).await;
    assert_eq!(call_id(&r[0]), b"fresh");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversize_datagram_is_dropped_and_the_server_keeps_serving() {
    // A datagram cannot exceed 64 KiB over IPv4, so the limit is lowered to
    // reach the drop path with a real datagram.
    let (rt, _up) = start_bridge(RuntimeOptions {
        max_datagram_size: 1000,
        ..opts()
    })
    .await;
    let bridge = rt.udp_addr().unwrap();
    let c = udp_client().await;
    let me = c.local_addr().unwrap();
    let padding = format!("X-Padding: {}\r\n", "p".repeat(1200));
    let big = options("UDP", me, "too-big").replacen(
        "Max-Forwards",
        &format!("{padding}Max-Forwards"),
        1,
    );
    assert!(big.len() > 1000);
    c.send_to(big.as_bytes(), bridge).await.unwrap();
    c.send_to(options("UDP", me, "small").as_bytes(), bridge)
        .await
        .unwrap();
    // Datagrams are handled in order: had the big one been answered, its
    // reply would arrive first.
    let (reply, _) = recv_msg(&c).await;
    assert_eq!(call_id(&reply), b"small");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn largest_ipv4_datagram_does_not_disturb_the_server() {
    let (rt, _up) = start_bridge(opts()).await;
    let bridge = rt.udp_addr().unwrap();
    let c = udp_client().await;
    let me = c.local_addr().unwrap();
    let junk = vec![b'z'; 65_507]; // the IPv4 UDP maximum
    c.send_to(&junk, bridge).await.unwrap();
    c.send_to(options("UDP", me, "after-junk").as_bytes(), bridge)
        .await
        .unwrap();
    let (reply, _) = recv_msg(&c).await;
    assert_eq!(call_id(&reply), b"after-junk");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn tcp_connection_limit_refuses_extra_connections() {
    let (rt, _up) = start_bridge(RuntimeOptions {
        max_tcp_connections: 1,
        ..opts()
    })
    .await;
    let addr = rt.tcp_addr().unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    let me = first.local_addr().unwrap();
    first
        .write_all(options("TCP", me, "first").as_bytes())
        .await
        .unwrap();
    read_msgs(&mut first, &mut StreamFramer::new(), 1).await; // registered by now

    let mut second = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut second).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_tcp_connection_is_closed() {
    let (rt, _up) = start_bridge(RuntimeOptions {
        tcp_idle_timeout: Duration::from_millis(200),
        ..opts()
    })
    .await;
    let mut s = TcpStream::connect(rt.tcp_addr().unwrap()).await.unwrap();
    expect_closed(&mut s).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_handle_stops_the_runtime_and_frees_the_port() {
    let (rt, _up) = start_bridge(opts()).await;
    let udp = rt.udp_addr().unwrap();
    let handle = rt.shutdown_handle();
    handle.shutdown();
    timeout(WAIT, rt.wait()).await.expect("stops").unwrap();
    UdpSocket::bind(udp)
        .await
        .expect("the UDP port is free again");
}

#[tokio::test]
async fn port_in_use_is_a_bind_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:{port}\"\n[upstream]\nproxy = \"127.0.0.1:9\"\ndomain = \"pbx.test\"\n"
    );
    let cfg = Arc::new(Config::parse(&text, "t.toml", &|_| None).unwrap());
    let err = Runtime::start(cfg, opts()).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

// ------------------------------------------------------------ scripted core

/// What the scripted core saw.
#[derive(Debug)]
enum Seen {
    Datagram(Flow, Bytes),
    Message(Flow, Bytes),
    Ping(Flow),
    Timeout,
    Closed(ConnId),
    ShutdownBegun,
    /// The runtime asked for a transmit and got none: the end of one flush
    /// (reported only when [`Ctl::report_flushes`] is set).
    Flushed,
}

/// What a script may change in the scripted core.
#[derive(Default)]
struct Ctl {
    out: VecDeque<Transmit>,
    /// Sent after `out`, reported as independent of each other (a fan-out's
    /// NOTIFYs).
    fanout: VecDeque<Transmit>,
    deadline: Option<Instant>,
    /// Reported by `is_drained` (starts true: nothing to wind down).
    busy: bool,
    /// Report every end of a flush as [`Seen::Flushed`].
    report_flushes: bool,
}

type Script = Box<dyn FnMut(&Seen, &mut Ctl) + Send>;

/// A core that reports every input to the test and reacts through `script`.
struct Scripted {
    seen: mpsc::UnboundedSender<Seen>,
    script: Script,
    ctl: Ctl,
    last_independent: bool,
}

impl Scripted {
    fn input(&mut self, s: Seen) {
        (self.script)(&s, &mut self.ctl);
        let _ = self.seen.send(s);
    }
}

impl SansIoCore for Scripted {
    fn handle_datagram(&mut self, from: Flow, data: Bytes, _now: Instant) {
        self.input(Seen::Datagram(from, data));
    }
    fn handle_message(&mut self, from: Flow, msg: SipMessage, _now: Instant) {
        self.input(Seen::Message(from, msg.message_bytes()));
    }
    fn handle_keepalive_ping(&mut self, from: Flow) {
        self.input(Seen::Ping(from));
    }
    fn handle_timeout(&mut self, _now: Instant) {
        self.ctl.deadline = None;
        self.input(Seen::Timeout);
    }
    fn connection_closed(&mut self, conn: ConnId, _now: Instant) {
        self.input(Seen::Closed(conn));
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        self.last_independent = false;
        let mut t = self.ctl.out.pop_front();
        if t.is_none() {
            t = self.ctl.fanout.pop_front();
            self.last_independent = t.is_some();
        }
        if t.is_none() && self.ctl.report_flushes {
            let _ = self.seen.send(Seen::Flushed);
        }
        t
    }
    fn transmit_is_independent(&self) -> bool {
        self.last_independent
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.ctl.deadline
    }
    fn begin_shutdown(&mut self, _now: Instant) {
        self.input(Seen::ShutdownBegun);
    }
    fn is_drained(&self) -> bool {
        !self.ctl.busy
    }
}

async fn start_scripted(
    o: RuntimeOptions,
    deadline: Option<Duration>,
    script: Script,
) -> (Runtime, mpsc::UnboundedReceiver<Seen>, LocalAddrs) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = Runtime::start_with(config(9), o, move |_cfg, _local, _up, now| Scripted {
        seen: tx,
        script,
        ctl: Ctl {
            deadline: deadline.map(|d| now + d),
            ..Ctl::default()
        },
        last_independent: false,
    })
    .await
    .unwrap();
    let local = rt.local_addrs().clone();
    (rt, rx, local)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    timeout(WAIT, rx.recv())
        .await
        .expect("core input within the wait")
        .expect("core alive")
}

fn notify(call_id: &str) -> Bytes {
    Bytes::from(format!(
        "NOTIFY sip:1001@127.0.0.1 SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[tokio::test]
async fn request_to_a_phone_reuses_the_connection_the_phone_opened() {
    // On any TCP message, send a NOTIFY to the sender's address without naming
    // the connection: the runtime must find the phone's connection.
    let script: Script = Box::new(|s, ctl| {
        if let Seen::Message(from, _) = s {
            ctl.out.push_back(Transmit {
                flow: Flow::tcp(from.remote, None),
                data: notify("to-phone"),
            });
        }
    });
    let (rt, mut seen, local) = start_scripted(opts(), None, script).await;
    let mut phone = TcpStream::connect(local.tcp.unwrap()).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone
        .write_all(options("TCP", me, "reg").as_bytes())
        .await
        .unwrap();
    match next_seen(&mut seen).await {
        Seen::Message(flow, data) => {
            assert_eq!(flow.transport, Transport::Tcp);
            assert_eq!(flow.remote, me);
            assert!(flow.conn.is_some());
            assert!(data.starts_with(b"OPTIONS "));
        }
        other => panic!("{other:?}"),
    }
    let got = read_msgs(&mut phone, &mut StreamFramer::new(), 1).await;
    assert_eq!(call_id(&got[0]), b"to-phone");
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn outgoing_connection_is_opened_reused_for_replies_and_reported_closed() {
    let pbx = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx.local_addr().unwrap();
    // A UDP datagram triggers a request to the "PBX" over TCP (no connection yet).
    let script: Script = Box::new(move |s, ctl| {
        if let Seen::Datagram(..) = s {
            ctl.out.push_back(Transmit {
                flow: Flow::tcp(pbx_addr, None),
                data: notify("to-pbx"),
            });
        }
    });
    let (rt, mut seen, local) = start_scripted(opts(), None, script).await;
    let c = udp_client().await;
    c.send_to(b"go", local.udp.unwrap()).await.unwrap();
    match next_seen(&mut seen).await {
        Seen::Datagram(flow, data) => {
            assert_eq!(flow, Flow::udp(c.local_addr().unwrap()));
            assert_eq!(&data[..], b"go");
        }
        other => panic!("{other:?}"),
    }

    let (mut conn, bridge_side) = timeout(WAIT, pbx.accept())
        .await
        .expect("bridge connects")
        .unwrap();
    assert_eq!(
        bridge_side.ip(),
        local.tcp.unwrap().ip(),
        "connects from the listening IP"
    );
    let mut framer = StreamFramer::new();
    let got = read_msgs(&mut conn, &mut framer, 1).await;
    assert_eq!(call_id(&got[0]), b"to-pbx");

    // The PBX answers on the same connection: the core sees it with that connection.
    conn.write_all(
        b"SIP/2.0 200 OK\r\nCall-ID: to-pbx\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let id = match next_seen(&mut seen).await {
        Seen::Message(flow, data) => {
            assert_eq!(flow.remote, pbx_addr);
            assert!(data.starts_with(b"SIP/2.0 200"));
            flow.conn.expect("the connection is named")
        }
        other => panic!("{other:?}"),
    };
    drop(conn);
    match next_seen(&mut seen).await {
        Seen::Closed(c) => assert_eq!(c, id),
        other => panic!("{other:?}"),
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_connect_is_reported_as_closed() {
    // A port with nothing listening: the connect is refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let script: Script = Box::new(move |s, ctl| {
        if let Seen::Datagram(..) = s {
            ctl.out.push_back(Transmit {
                flow: Flow::tcp(dead, None),
                data: notify("nowhere"),
            });
        }
    });
    let (rt, mut seen, local) = start_scripted(opts(), None, script).await;
    udp_client()
        .await
        .send_to(b"go", local.udp.unwrap())
        .await
        .unwrap();
    assert!(matches!(next_seen(&mut seen).await, Seen::Datagram(..)));
    assert!(matches!(next_seen(&mut seen).await, Seen::Closed(_)));
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn keepalive_ping_reaches_the_core_with_its_connection() {
    let (rt, mut seen, local) = start_scripted(opts(), None, Box::new(|_, _| {})).await;
    let mut s = TcpStream::connect(local.tcp.unwrap()).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    match next_seen(&mut seen).await {
        Seen::Ping(flow) => {
            assert_eq!(flow.remote, me);
            assert!(flow.conn.is_some());
        }
        other => panic!("{other:?}"),
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn timer_fires_and_its_transmit_is_sent() {
    let target = udp_client().await;
    let target_addr = target.local_addr().unwrap();
    let script: Script = Box::new(move |s, ctl| {
        if let Seen::Timeout = s {
            ctl.out.push_back(Transmit {
                flow: Flow::udp(target_addr),
                data: notify("from-timer"),
            });
        }
    });
    let (rt, mut seen, local) =
        start_scripted(opts(), Some(Duration::from_millis(50)), script).await;
    assert!(matches!(next_seen(&mut seen).await, Seen::Timeout));
    let (msg, from) = recv_msg(&target).await;
    assert_eq!(call_id(&msg), b"from-timer");
    assert_eq!(from, local.udp.unwrap(), "sent from the listening socket");
    rt.shutdown().await.unwrap();
}

/// Datagrams already queued in the socket are read in one pass of the loop (up
/// to 32), in order, before anything is flushed; none is lost, and what is left
/// over is read in the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_datagrams_are_read_in_one_pass_before_the_flush() {
    const N: usize = 41;
    // the core stays busy with the first datagram until the other 40 are sent
    let (busy_tx, busy_rx) = tokio::sync::oneshot::channel::<()>();
    let busy_tx = std::sync::Mutex::new(Some(busy_tx));
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let sent_rx = std::sync::Mutex::new(sent_rx);
    let script: Script = Box::new(move |s, ctl| {
        ctl.report_flushes = true;
        if let Seen::Datagram(_, d) = s
            && d.ends_with(b"call-0\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n")
        {
            if let Some(tx) = busy_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let _ = sent_rx.lock().unwrap().recv_timeout(WAIT);
            // (the last datagram sent may still be on its way through lo)
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (rt, mut seen, local) = start_scripted(opts(), None, script).await;
    let bridge = local.udp.unwrap();
    let phone = udp_client().await;
    phone.send_to(&notify("call-0"), bridge).await.unwrap();
    timeout(WAIT, busy_rx).await.unwrap().unwrap();
    for i in 1..N {
        phone
            .send_to(&notify(&format!("call-{i}")), bridge)
            .await
            .unwrap();
    }
    sent_tx.send(()).unwrap();
    // what the core saw, flushes marked: "D" per datagram (in order), "F" per flush
    let mut trace = String::new();
    let mut next = 0;
    while next < N {
        match next_seen(&mut seen).await {
            Seen::Datagram(_, d) => {
                let want = notify(&format!("call-{next}"));
                assert_eq!(d, want, "datagram {next} in order, whole");
                next += 1;
                trace.push('D');
            }
            Seen::Flushed => trace.push('F'),
            other => panic!("{other:?}"),
        }
    }
    let first_pass = format!("D{}F", "D".repeat(31));
    assert!(
        trace.contains(&first_pass),
        "the 31 datagrams queued behind the first are read before the flush: {trace}"
    );
    rt.shutdown().await.unwrap();
}

/// A large fan-out (its messages marked independent) is shared between the
/// loop and the second sender: every datagram arrives exactly once, whole,
/// and what the core sends in its next pass arrives after all of them (the
/// flush ends only when the second sender is done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fanout_arrives_whole_and_before_what_the_core_sends_next() {
    const N: usize = 700;
    let mut phone_flow = None;
    let script: Script = Box::new(move |s, ctl| match s {
        Seen::Datagram(from, d) if d.starts_with(b"go") => {
            phone_flow = Some(*from);
            ctl.out.push_back(Transmit {
                flow: *from,
                data: Bytes::from_static(b"before"),
            });
            for i in 0..N {
                ctl.fanout.push_back(Transmit {
                    flow: *from,
                    data: Bytes::from(format!("notify {i:04} {}", "x".repeat(600))),
                });
            }
            // the next pass of the loop (a timer due now) sends one more
            ctl.deadline = Some(Instant::now());
        }
        Seen::Timeout => {
            if let Some(to) = phone_flow {
                ctl.out.push_back(Transmit {
                    flow: to,
                    data: Bytes::from_static(b"after"),
                });
            }
        }
        _ => {}
    });
    let (rt, _seen, local) = start_scripted(opts(), None, script).await;
    let phone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&phone)
        .set_recv_buffer_size(8 << 20)
        .unwrap();
    phone.set_read_timeout(Some(WAIT)).unwrap();
    phone.send_to(b"go", local.udp.unwrap()).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    while got.len() < N + 2 {
        let n = phone
            .recv(&mut buf)
            .expect("every datagram within the wait");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got[0], "before");
    assert_eq!(got[N + 1], "after", "after the whole fan-out");
    let mut notifies: Vec<&String> = got[1..=N].iter().collect();
    notifies.sort();
    notifies.dedup();
    assert_eq!(notifies.len(), N, "each fan-out datagram exactly once");
    assert!(
        notifies
            .iter()
            .all(|d| d.len() == "notify 0000 ".len() + 600)
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn peer_that_does_not_read_is_dropped_without_blocking_the_core() {
    // The phone connects, then never reads. On its message the core queues far
    // more than the write queue holds; the runtime must close that connection,
    // tell the core, and keep serving UDP.
    let answer = udp_client().await;
    let answer_addr = answer.local_addr().unwrap();
    let script: Script = Box::new(move |s, ctl| match s {
        Seen::Message(from, _) => {
            for _ in 0..8 {
                ctl.out.push_back(Transmit {
                    flow: Flow::tcp(from.remote, from.conn),
                    data: Bytes::from(vec![b'x'; 60_000]),
                });
            }
        }
        Seen::Datagram(..) => ctl.out.push_back(Transmit {
            flow: Flow::udp(answer_addr),
            data: notify("still-alive"),
        }),
        _ => {}
    });
    let o = RuntimeOptions {
        tcp_write_queue: 4,
        ..opts()
    };
    let (rt, mut seen, local) = start_scripted(o, None, script).await;
    let mut phone = TcpStream::connect(local.tcp.unwrap()).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone
        .write_all(options("TCP", me, "flood").as_bytes())
        .await
        .unwrap();
    let id = match next_seen(&mut seen).await {
        Seen::Message(flow, _) => flow.conn.unwrap(),
        other => panic!("{other:?}"),
    };
    match next_seen(&mut seen).await {
        Seen::Closed(c) => assert_eq!(c, id),
        other => panic!("{other:?}"),
    }
    udp_client()
        .await
        .send_to(b"ping", local.udp.unwrap())
        .await
        .unwrap();
    let (msg, _) = recv_msg(&answer).await;
    assert_eq!(call_id(&msg), b"still-alive");
    expect_closed(&mut phone).await;
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_stop_keeps_serving_until_the_core_is_drained() {
    // On shutdown the core sends a "bye" upstream and stays busy until a
    // datagram answers it; the runtime must keep serving meanwhile.
    let peer = udp_client().await;
    let peer_addr = peer.local_addr().unwrap();
    let script: Script = Box::new(move |s, ctl| match s {
        Seen::ShutdownBegun => {
            ctl.busy = true;
            ctl.out.push_back(Transmit {
                flow: Flow::udp(peer_addr),
                data: notify("bye"),
            });
        }
        Seen::Datagram(..) => ctl.busy = false,
        _ => {}
    });
    let o = RuntimeOptions {
        shutdown_grace: Duration::from_secs(60),
        ..opts()
    };
    let (rt, mut seen, local) = start_scripted(o, None, script).await;
    let stopped = tokio::spawn(rt.shutdown());
    assert!(matches!(next_seen(&mut seen).await, Seen::ShutdownBegun));
    let (bye, from) = recv_msg(&peer).await;
    assert_eq!(call_id(&bye), b"bye");
    peer.send_to(b"done", from).await.unwrap();
    assert!(matches!(next_seen(&mut seen).await, Seen::Datagram(..)));
    timeout(WAIT, stopped)
        .await
        .expect("stops once drained")
        .unwrap()
        .unwrap();
    assert_eq!(from, local.udp.unwrap());
}

#[tokio::test]
async fn graceful_stop_is_bounded_by_the_grace_period() {
    let script: Script = Box::new(|s, ctl| {
        if let Seen::ShutdownBegun = s {
            ctl.busy = true; // never drains
        }
    });
    let o = RuntimeOptions {
        shutdown_grace: Duration::from_millis(100),
        ..opts()
    };
    let (rt, mut seen, _) = start_scripted(o, None, script).await;
    let stopped = tokio::spawn(rt.shutdown());
    assert!(matches!(next_seen(&mut seen).await, Seen::ShutdownBegun));
    timeout(WAIT, stopped)
        .await
        .expect("stops after the grace period")
        .unwrap()
        .unwrap();
}

// ------------------------------------------------------------- issue 9, item 5

fn config_with(upstream_port: u16, extra: &str) -> Arc<Config> {
    let text = format!(
        "[listen]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\n\
         [upstream]\nproxy = \"127.0.0.1:{upstream_port}\"\ndomain = \"pbx.test\"\n{extra}"
    );
    Arc::new(Config::parse(&text, "test.toml", &|_| None).expect("test config"))
}

async fn start_bridge_with(o: RuntimeOptions, extra: &str) -> (Runtime, UdpSocket) {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let rt = Runtime::start(config_with(port, extra), o)
        .await
        .expect("runtime starts");
    (rt, upstream)
}

/// A TCP connection from `ip` (a loopback address) to `to`.
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    timeout(WAIT, sock.connect(to))
        .await
        .expect("connect within the wait")
        .unwrap()
}

/// An allowed phone's TCP OPTIONS is answered.
async fn tcp_options_answered(to: SocketAddr, call_id: &str) {
    let mut s = TcpStream::connect(to).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(options("TCP", me, call_id).as_bytes())
        .await
        .unwrap();
    let got = read_msgs(&mut s, &mut StreamFramer::new(), 1).await;
    assert_eq!(got[0].status(), Some(200));
}

/// Item 5 (the bound, on loopback): 1,000 TCP connections from a source
/// outside `allow`, each sending 64 KB of an unfinished header, are closed at
/// accept; an allowed phone's TCP OPTIONS is answered throughout.
#[tokio::test]
async fn tcp_from_a_source_outside_allow_is_closed_at_accept() {
    let (rt, _up) = start_bridge_with(opts(), "[security]\nallow = [\"127.0.0.1/32\"]\n").await;
    let addr = rt.tcp_addr().unwrap();
    let junk = format!("OPTIONS sip:x SIP/2.0\r\nX: {}", "a".repeat(60 * 1024));
    for i in 0..1000 {
        let mut s = connect_from("127.0.0.2", addr).await;
        // the bridge may have closed it already: a failed write is fine
        let _ = s.write_all(junk.as_bytes()).await;
        expect_closed(&mut s).await;
        if i % 250 == 0 {
            tcp_options_answered(addr, &format!("allowed-{i}")).await;
        }
    }
    tcp_options_answered(addr, "allowed-end").await;
    rt.shutdown().await.unwrap();
}

/// Item 5: one source holds at most `max_tcp_per_source` connections.
#[tokio::test]
async fn tcp_connections_per_source_are_capped() {
    let (rt, _up) = start_bridge_with(opts(), "[security]\nmax_tcp_per_source = 3\n").await;
    let addr = rt.tcp_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = connect_from("127.0.0.3", addr).await;
        let me = s.local_addr().unwrap();
        s.write_all(options("TCP", me, &format!("held{i}")).as_bytes())
            .await
            .unwrap();
        read_msgs(&mut s, &mut StreamFramer::new(), 1).await;
        held.push(s);
    }
    let mut fourth = connect_from("127.0.0.3", addr).await;
    expect_closed(&mut fourth).await;
    // another source is not affected
    tcp_options_answered(addr, "other-source").await;
    rt.shutdown().await.unwrap();
}

/// Item 5: a connection that starts a message and does not complete it within
/// the message timeout (or sends nothing after connecting) is closed, long
/// before the idle timeout.
#[tokio::test]
async fn tcp_unfinished_message_is_closed_after_the_message_timeout() {
    let (rt, _up) = start_bridge(RuntimeOptions {
        tcp_message_timeout: Duration::from_millis(300),
        ..opts()
    })
    .await;
    let addr = rt.tcp_addr().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n",
    )
    .await
    .unwrap();
    expect_closed(&mut s).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut silent).await;
    rt.shutdown().await.unwrap();
}

// ------------------------------------------------------------ the operator's window

/// A core that counts the datagrams it saw and the statuses the runtime asked
/// it to build (the counts for /metrics, the full list for /api/targets).
struct Counting {
    seen: mpsc::UnboundedSender<()>,
    datagrams: usize,
    summaries: Arc<std::sync::atomic::AtomicUsize>,
    fulls: Arc<std::sync::atomic::AtomicUsize>,
}

impl SansIoCore for Counting {
    fn handle_datagram(&mut self, _from: Flow, _data: Bytes, _now: Instant) {
        self.datagrams += 1;
        let _ = self.seen.send(());
    }
    fn handle_message(&mut self, _from: Flow, _msg: SipMessage, _now: Instant) {}
    fn handle_keepalive_ping(&mut self, _from: Flow) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn connection_closed(&mut self, _conn: ConnId, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Transmit> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn status(&self, _now: Instant, full: bool) -> Option<blf_bridge::endpoint::status::Status> {
        use std::sync::atomic::Ordering;
        if full { &self.fulls } else { &self.summaries }.fetch_add(1, Ordering::SeqCst);
        let mut st = blf_bridge::endpoint::status::Status::empty();
        st.phone_subscriptions = self.datagrams;
        st.phones_by_profile
            .insert("scripted".into(), self.datagrams);
        st.full = full;
        Some(st)
    }
}

/// GET over HTTP/1.1 (Connection: close): the whole answer, headers included.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// At 50,000 phones a status snapshot is tens of megabytes of allocations: the
/// core builds one only when the HTTP side asks (the counts for /metrics, the
/// full list for /api/targets and an open /events stream), never because
/// something happened.
#[tokio::test]
async fn status_is_built_only_when_someone_looks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let text = "[listen]\nudp = \"127.0.0.1:0\"\n\
                [upstream]\nproxy = \"127.0.0.1:9\"\ndomain = \"pbx.test\"\n\
                [http]\nlisten = \"127.0.0.1:0\"\n";
    let cfg = Arc::new(Config::parse(text, "t.toml", &|_| None).unwrap());
    let (tx, mut seen) = mpsc::unbounded_channel();
    let summaries = Arc::new(AtomicUsize::new(0));
    let fulls = Arc::new(AtomicUsize::new(0));
    let (s2, f2) = (summaries.clone(), fulls.clone());
    let rt = Runtime::start_with(cfg, opts(), move |_cfg, _local, _up, _now| Counting {
        seen: tx,
        datagrams: 0,
        summaries: s2,
        fulls: f2,
    })
    .await
    .unwrap();
    let http = rt.http_addr().expect("HTTP bound");
    // the one status taken when the HTTP side starts (the counts)
    assert_eq!(summaries.load(Ordering::SeqCst), 1);
    let c = udp_client().await;
    for _ in 0..20 {
        c.send_to(b"x", rt.udp_addr().unwrap()).await.unwrap();
    }
    for _ in 0..20 {
        timeout(WAIT, seen.recv()).await.unwrap().unwrap();
    }
    assert_eq!(
        (
            summaries.load(Ordering::SeqCst),
            fulls.load(Ordering::SeqCst)
        ),
        (1, 0),
        "twenty datagrams, nobody looking: nothing built"
    );
    // past the freshness of the start's snapshot, /metrics asks for the counts
    tokio::time::sleep(blf_bridge::http::FRESH + Duration::from_millis(50)).await;
    let m = http_get(http, "/metrics").await;
    assert!(
        m.contains("blf_bridge_phone_subscriptions{profile=\"scripted\"} 20"),
        "{m}"
    );
    assert_eq!(summaries.load(Ordering::SeqCst), 2);
    assert_eq!(fulls.load(Ordering::SeqCst), 0, "/metrics needs no list");
    let api = http_get(http, "/api/targets").await;
    assert!(api.contains("\"phone_subscriptions\":20"), "{api}");
    assert_eq!(fulls.load(Ordering::SeqCst), 1);
    // the panel's stream: while it is open, the core publishes in full
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(format!("GET /events HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while got.matches("event: status").count() < 2 {
        let n = timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "stream closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(fulls.load(Ordering::SeqCst) >= 2);
    rt.shutdown().await.unwrap();
}
