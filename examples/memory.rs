//! Bytes per held phone subscription, measured with a heap profiler (dhat) over
//! the sans-IO core: no sockets, a simulated clock, so the figures do not move
//! with the machine's noise. `bench/memory.sh` runs it; docs/benchmarks.md,
//! "Memory per held subscription", has the method and the results.
//!
//! The workload: TARGETS targets (default 5,000) established upstream (each
//! upstream SUBSCRIBE challenged once with 407, then 200 and a NOTIFY, as
//! Kamailio with authentication does), and PHONES phone subscriptions (default
//! 50,000): devices with 10 BLF keys each, four kinds in turn — Grandstream GXP
//! (UDP), Yealink (UDP), Grandstream Wave (TCP), snom (UDP). Every NOTIFY is
//! answered 200, then the clock runs 40 s past the last message so that no
//! transaction state remains (Timer J 32 s, Timer K 5 s).
//!
//! Phase A: one phone subscription per target (all targets made); phase B: the
//! rest. Reported: live heap (bytes the program asked for, and the malloc chunks
//! they occupy with glibc's 8-byte header and 16-byte rounding) after each
//! phase; per phone subscription (whole heap / phones, and the marginal cost of a
//! phone on an existing target), per target; and the allocation sites live at
//! the end, grouped by the innermost blf_bridge function.
//!
//! `cargo run --profile memprof --example memory -- [--phones N] [--targets N]
//!  [--top N] [--rss] [--json FILE]`
//! `--rss`: no profiler (the allocator passes straight through to glibc); the
//! process's VmRSS before and after instead.

use blf_bridge::config::Config;
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{ConnId, Flow, Transmit};
use blf_bridge::profile::ProfileSet;
use blf_bridge::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// dhat's allocator, plus the live size of the malloc chunks (glibc: 8 bytes
/// of header, 16-byte multiples, at least 32).
struct Counting;

static CHUNK_BYTES: AtomicI64 = AtomicI64::new(0);
static DHAT: dhat::Alloc = dhat::Alloc;

fn chunk(size: usize) -> i64 {
    (size.saturating_add(8 + 15) & !15).max(32) as i64
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CHUNK_BYTES.fetch_add(chunk(l.size()), Ordering::Relaxed);
        unsafe { DHAT.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        CHUNK_BYTES.fetch_add(chunk(l.size()), Ordering::Relaxed);
        unsafe { DHAT.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CHUNK_BYTES.fetch_sub(chunk(l.size()), Ordering::Relaxed);
        unsafe { DHAT.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        CHUNK_BYTES.fetch_add(chunk(new) - chunk(l.size()), Ordering::Relaxed);
        unsafe { DHAT.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BRIDGE: &str = "127.0.0.1:5060";
const UPSTREAM: &str = "127.0.0.1:5070";
const KEYS_PER_DEVICE: usize = 10;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> String {
    r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"

[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.test"
transport = "udp"
keepalive = "none"

[[account]]
user = "1001"
password = "pass1001"

[subscriptions]
upstream_rate = 100000

[security]
watchers = "allowed"
max_targets = 1000000
max_subscriptions_per_source = 1000000
max_subscriptions_per_target = 1000000
rate_per_source = 1000000
"#
    .to_string()
}

/// The kinds of phone, by device number.
#[derive(Clone, Copy)]
enum Kind {
    GxpUdp,
    YealinkUdp,
    WaveTcp,
    SnomUdp,
}

impl Kind {
    fn of(device: usize) -> Kind {
        [Kind::GxpUdp, Kind::YealinkUdp, Kind::WaveTcp, Kind::SnomUdp][device % 4]
    }
    fn user_agent(self) -> &'static str {
        match self {
            Kind::GxpUdp => "Grandstream GXP2170 1.0.11.3",
            Kind::YealinkUdp => "Yealink SIP-T46S 66.86.0.15",
            Kind::WaveTcp => "Grandstream Wave 1.0.6.8",
            Kind::SnomUdp => "snomD785/10.1.33.33",
        }
    }
    fn tcp(self) -> bool {
        matches!(self, Kind::WaveTcp)
    }
}

fn device_addr(device: usize) -> SocketAddr {
    let n = device + 1;
    SocketAddr::from(([127, 1, (n >> 8) as u8, (n & 0xff) as u8], 5060))
}

fn device_flow(device: usize) -> Flow {
    let a = device_addr(device);
    if Kind::of(device).tcp() {
        Flow::tcp(a, Some(ConnId(device as u64 + 1)))
    } else {
        Flow::udp(a)
    }
}

/// A phone's initial BLF SUBSCRIBE, as the real models send it.
fn subscribe(sub: usize, targets: usize) -> String {
    let device = sub / KEYS_PER_DEVICE;
    let kind = Kind::of(device);
    let target = 2000 + sub % targets;
    let a = device_addr(device);
    let user = 100_000 + device;
    let (tp, tpl) = if kind.tcp() {
        ("TCP", "tcp")
    } else {
        ("UDP", "udp")
    };
    format!(
        "SUBSCRIBE sip:{target}@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/{tp} {a};branch=z9hG4bK{sub:08x}a93f;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Desk {user}\" <sip:{user}@pbx.test>;tag={sub:010}77\r\n\
To: <sip:{target}@pbx.test>\r\n\
Call-ID: {sub:08x}-5f1c2e9a-4d3b@{ip}\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:{user}@{a};transport={tpl}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
Supported: replaces, path, timer, eventlist\r\n\
Allow: INVITE, ACK, OPTIONS, CANCEL, BYE, SUBSCRIBE, NOTIFY, INFO, REFER, UPDATE, MESSAGE\r\n\
User-Agent: {ua}\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n",
        ip = a.ip(),
        ua = kind.user_agent(),
    )
}

/// A response to `req` (Via, From, To, Call-ID, CSeq copied).
fn reply(req: &SipMessage, code: u16, reason: &str, to_tag: Option<&str>, extra: &str) -> String {
    let hv = |n| String::from_utf8_lossy(req.header_value(n).unwrap_or_default()).into_owned();
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for h in req.headers_named(HeaderName::Via) {
        let _ = write!(s, "Via: {}\r\n", String::from_utf8_lossy(req.value(h)));
    }
    let _ = write!(s, "From: {}\r\n", hv(HeaderName::From));
    match (to_tag, req.to_tag()) {
        (Some(t), None) => {
            let _ = write!(s, "To: {};tag={t}\r\n", hv(HeaderName::To));
        }
        _ => {
            let _ = write!(s, "To: {}\r\n", hv(HeaderName::To));
        }
    }
    let _ = write!(s, "Call-ID: {}\r\n", hv(HeaderName::CallId));
    let _ = write!(
        s,
        "CSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        hv(HeaderName::CSeq)
    );
    s
}

const DIALOG_IDLE: &str = "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"0\" state=\"full\" entity=\"ENTITY\"/>\n";
const PIDF_OPEN: &str = "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"ENTITY\">\n  <tuple id=\"0x7f3c99fbb888\">\n    <status>\n      <basic>open</basic>\n    </status>\n  </tuple>\n</presence>\n";

/// The driver: the bridge, the clock, and a scripted PBX (challenges every new
/// upstream dialog once, then 200 and a full-state NOTIFY) and phones (answer
/// every NOTIFY 200).
struct Run {
    ep: Endpoint,
    now: Instant,
    notifies: u64,
    pbx_tag: u64,
}

impl Run {
    fn deliver(&mut self, flow: Flow, text: String) {
        let data = Bytes::from(text);
        if flow.transport == blf_bridge::sip::Transport::Udp {
            self.ep.handle_datagram(flow, data, self.now);
        } else {
            let msg = SipMessage::parse(data).expect("harness message parses");
            self.ep.handle_message(flow, msg, self.now);
        }
    }

    /// Answer everything the bridge sent, until it sends nothing more.
    fn pump(&mut self) {
        loop {
            let mut out: Vec<Transmit> = Vec::new();
            while let Some(t) = self.ep.poll_transmit() {
                out.push(t);
            }
            while self.ep.poll_persist().is_some() {}
            if out.is_empty() {
                return;
            }
            for t in out {
                let Ok(m) = SipMessage::parse(t.data) else {
                    continue;
                };
                if t.flow.remote == addr(UPSTREAM) {
                    self.pbx(t.flow, &m);
                } else if m.method() == Some(&Method::Notify) {
                    self.notifies += 1;
                    let ok = reply(&m, 200, "OK", None, "");
                    self.deliver(t.flow, ok);
                }
            }
        }
    }

    fn pbx(&mut self, flow: Flow, m: &SipMessage) {
        if m.method() != Some(&Method::Subscribe) {
            return;
        }
        let authorized = m.header_value_by_name("Proxy-Authorization").is_some()
            || m.header_value_by_name("Authorization").is_some();
        if !authorized && m.to_tag().is_none() {
            let ch = "Proxy-Authenticate: Digest realm=\"pbx.test\", nonce=\"Z2V0LXRoZS1ub25jZS0xNzAwMDAwMDAwOjY0YzI3\", qop=\"auth\", algorithm=MD5\r\n";
            let r = reply(m, 407, "Proxy Authentication Required", None, ch);
            return self.deliver(flow, r);
        }
        self.pbx_tag += 1;
        let tag = format!(
            "{:x}.{:08x}",
            self.pbx_tag,
            self.pbx_tag * 2654435761 % (1 << 32)
        );
        let extra = "Contact: <sip:127.0.0.1:5070>\r\nExpires: 600\r\n";
        self.deliver(flow, reply(m, 200, "OK", Some(&tag), extra));
        let hv = |n| String::from_utf8_lossy(m.header_value(n).unwrap_or_default()).into_owned();
        let event = hv(HeaderName::Event);
        let entity = String::from_utf8_lossy(m.request_uri().unwrap_or_default()).into_owned();
        let (ct, body) = if event.starts_with("dialog") {
            ("application/dialog-info+xml", DIALOG_IDLE)
        } else {
            ("application/pidf+xml", PIDF_OPEN)
        };
        let body = body.replace("ENTITY", &entity);
        let to_tag = m.to_tag().map(|t| String::from_utf8_lossy(t).into_owned());
        let remote_tag = to_tag.unwrap_or(tag);
        let notify = format!(
            "NOTIFY sip:blf-bridge@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpbx{n}\r\n\
Max-Forwards: 70\r\n\
From: <{entity}>;tag={remote_tag}\r\n\
To: {to}\r\n\
Call-ID: {cid}\r\n\
CSeq: {n} NOTIFY\r\n\
Contact: <sip:127.0.0.1:5070>\r\n\
Event: {event}\r\n\
Subscription-State: active;expires=600\r\n\
Content-Type: {ct}\r\n\
Content-Length: {len}\r\n\r\n{body}",
            n = self.pbx_tag,
            to = hv(HeaderName::From),
            cid = hv(HeaderName::CallId),
            len = body.len(),
        );
        self.deliver(flow, notify);
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.ep.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.ep.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
        self.ep.handle_timeout(self.now);
        self.pump();
    }

    /// Phone subscriptions `range`, 1,000 per 100 ms of simulated time, then
    /// 40 s more: every transaction done.
    fn subscribe(&mut self, range: std::ops::Range<usize>, targets: usize) {
        let start = range.start;
        for sub in range {
            let device = sub / KEYS_PER_DEVICE;
            let text = subscribe(sub, targets);
            self.deliver(device_flow(device), text);
            self.pump();
            if (sub - start + 1).is_multiple_of(1000) {
                self.advance(Duration::from_millis(100));
            }
        }
        self.advance(Duration::from_secs(40));
    }
}

#[derive(Clone, Copy, Default)]
struct Heap {
    bytes: i64,
    blocks: i64,
    chunks: i64,
}

fn heap(profiling: bool) -> Heap {
    let (bytes, blocks) = if profiling {
        let s = dhat::HeapStats::get();
        (s.curr_bytes as i64, s.curr_blocks as i64)
    } else {
        (0, 0)
    };
    Heap {
        bytes,
        blocks,
        chunks: CHUNK_BYTES.load(Ordering::Relaxed),
    }
}

fn rss_kb() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let phones: usize = arg(&args, "--phones").map_or(50_000, |v| v.parse().unwrap());
    let targets: usize = arg(&args, "--targets").map_or(5_000, |v| v.parse().unwrap());
    let top: usize = arg(&args, "--top").map_or(25, |v| v.parse().unwrap());
    let json = arg(&args, "--json").unwrap_or_else(|| "dhat-heap.json".into());
    let rss_mode = args.iter().any(|a| a == "--rss");
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    assert!(phones >= targets, "at least one phone per target");

    let profiler = (!rss_mode).then(|| {
        dhat::Profiler::builder()
            .file_name(&json)
            .trim_backtraces(None)
            .build()
    });
    let profiling = profiler.is_some();

    let rss0 = rss_kb();
    let cfg = Config::parse(&config(), "memory.toml", &|_| None).expect("config");
    let local = LocalAddrs {
        udp: Some(addr(BRIDGE)),
        tcp: Some(addr(BRIDGE)),
        advertise_host: "127.0.0.1".into(),
    };
    let now = Instant::now();
    let ep = Endpoint::new(
        Arc::new(cfg),
        Arc::new(ProfileSet::builtin()),
        local,
        addr(UPSTREAM),
        7,
        now,
    );
    let mut run = Run {
        ep,
        now,
        notifies: 0,
        pbx_tag: 0,
    };
    run.ep.enable_persistence();
    run.advance(Duration::from_secs(1));
    let h0 = heap(profiling);
    let rss_base = rss_kb();

    run.subscribe(0..targets, targets);
    let ha = heap(profiling);
    let rss_a = rss_kb();
    run.subscribe(targets..phones, targets);
    let hb = heap(profiling);
    let rss_b = rss_kb();

    let subs = run.ep.subscriptions();
    let held = subs.phones().count();
    let ntargets = subs.targets().count();
    let established = subs
        .targets()
        .filter(|t| t.dialog.remote_tag.is_some() && t.presence.remote_tag.is_some())
        .count();
    let timers = subs.timer_count();
    assert_eq!(held, phones, "every phone subscription is held");
    assert_eq!(ntargets, targets, "every target exists");
    assert_eq!(established, targets, "every target is established upstream");
    assert_eq!(run.ep.transactions(), (0, 0), "no transaction left");

    println!("# Memory per held phone subscription (sans-IO core, simulated clock)");
    println!();
    println!(
        "{phones} phone subscriptions ({} devices x {KEYS_PER_DEVICE} keys: GXP/UDP, Yealink/UDP, Wave/TCP, snom/UDP) over {targets} targets, {} upstream subscriptions established (407 then 200), {} NOTIFYs answered, no transaction left, {timers} timer entries",
        phones.div_ceil(KEYS_PER_DEVICE),
        2 * established,
        run.notifies
    );
    println!();
    let per = |d: i64, n: usize| d as f64 / n as f64;
    let extra = phones - targets;
    if profiling {
        println!("| live heap (dhat) | requested bytes | blocks |");
        println!("|---|---:|---:|");
        println!("| empty bridge | {} | {} |", h0.bytes, h0.blocks);
        println!(
            "| + {targets} targets, 1 phone each | {} | {} |",
            ha.bytes, ha.blocks
        );
        println!("| + {extra} more phones | {} | {} |", hb.bytes, hb.blocks);
        let phone_b = per(hb.bytes - ha.bytes, extra);
        let phone_k = per(hb.blocks - ha.blocks, extra);
        let target_b = per(ha.bytes - h0.bytes, targets) - phone_b;
        let target_k = per(ha.blocks - h0.blocks, targets) - phone_k;
        println!();
        println!("| per | requested bytes | blocks |");
        println!("|---|---:|---:|");
        println!(
            "| held phone subscription, all in (heap growth / phones) | {:.0} | {:.2} |",
            per(hb.bytes - h0.bytes, phones),
            per(hb.blocks - h0.blocks, phones),
        );
        println!(
            "| phone subscription on an existing target (phase B) | {phone_b:.0} | {phone_k:.2} |"
        );
        println!(
            "| target (its two upstream subscriptions, state) | {target_b:.0} | {target_k:.1} |"
        );
        println!();
        drop(profiler); // writes the JSON: "end" = live now
        sites(&json, top, phones);
    } else {
        // no profiler: the chunk counter sees only the program's own blocks
        println!("| glibc heap and RSS | malloc chunk bytes | VmRSS kB |");
        println!("|---|---:|---:|");
        println!("| process start | | {rss0} |");
        println!("| empty bridge | {} | {rss_base} |", h0.chunks);
        println!(
            "| + {targets} targets, 1 phone each | {} | {rss_a} |",
            ha.chunks
        );
        println!("| + {extra} more phones | {} | {rss_b} |", hb.chunks);
        println!();
        println!("| per held phone subscription | bytes |");
        println!("|---|---:|");
        println!(
            "| malloc chunks, all in (growth / phones) | {:.0} |",
            per(hb.chunks - h0.chunks, phones)
        );
        println!(
            "| malloc chunks, a phone on an existing target (phase B) | {:.0} |",
            per(hb.chunks - ha.chunks, extra)
        );
        println!(
            "| VmRSS, all in (growth / phones) | {:.0} |",
            per((rss_b - rss_base) * 1024, phones)
        );
        // glibc keeps the pages the establishment burst (transactions,
        // messages) freed inside its heap; malloc_trim hands them back
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free pages.
        unsafe { malloc_trim(0) };
        println!(
            "| VmRSS after malloc_trim(0), all in | {:.0} |",
            per((rss_kb() - rss_base) * 1024, phones)
        );
    }
    drop(run);
}

/// The allocation sites live at the end, grouped by the innermost function of
/// this crate (the line where the crate asked for the memory).
fn sites(json: &str, top: usize, phones: usize) {
    let text = std::fs::read_to_string(json).expect("dhat output");
    let v: serde_json::Value = serde_json::from_str(&text).expect("dhat json");
    let ftbl: Vec<&str> = v["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap_or(""))
        .collect();
    let mut by_site: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for pp in v["pps"].as_array().unwrap() {
        let eb = pp["eb"].as_i64().unwrap_or(0);
        let ebk = pp["ebk"].as_i64().unwrap_or(0);
        if eb == 0 {
            continue;
        }
        let frames: Vec<&str> = pp["fs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| ftbl.get(i.as_u64()? as usize).copied())
            .collect();
        // the innermost two frames of this crate: the line that allocated, and
        // who called it
        let ours: Vec<String> = frames
            .iter()
            .filter(|f| f.contains("blf_bridge::") && !f.contains("memory::"))
            .take(2)
            .map(|f| short(f))
            .collect();
        let site = if ours.is_empty() {
            frames
                .iter()
                .find(|f| !f.contains("dhat") && !f.contains("alloc::"))
                .map_or_else(|| "?".into(), |f| short(f))
        } else {
            ours.join(" ← ")
        };
        let e = by_site.entry(site).or_default();
        e.0 += eb;
        e.1 += ebk;
    }
    let mut rows: Vec<(String, (i64, i64))> = by_site.into_iter().collect();
    rows.sort_by_key(|(_, (b, _))| std::cmp::Reverse(*b));
    let total: i64 = rows.iter().map(|(_, (b, _))| b).sum();
    println!(
        "Live at the end, by allocation site (innermost blf_bridge frame); bytes per phone = bytes / {phones}:"
    );
    println!();
    println!("| bytes/phone | blocks/phone | share | site |");
    println!("|---:|---:|---:|---|");
    for (site, (b, k)) in rows.iter().take(top) {
        println!(
            "| {:.1} | {:.2} | {:.1} % | `{site}` |",
            *b as f64 / phones as f64,
            *k as f64 / phones as f64,
            *b as f64 * 100.0 / total.max(1) as f64
        );
    }
    let rest: i64 = rows.iter().skip(top).map(|(_, (b, _))| b).sum();
    println!(
        "| {:.1} | | {:.1} % | {} other sites |",
        rest as f64 / phones as f64,
        rest as f64 * 100.0 / total.max(1) as f64,
        rows.len().saturating_sub(top)
    );
}

/// `0x1234: blf_bridge::a::b::f (src/a/b.rs:10:5)` → `a::b::f (src/a/b.rs:10)`.
fn short(frame: &str) -> String {
    let f = frame.split_once(": ").map_or(frame, |(_, r)| r);
    let f = f.replace("blf_bridge::", "");
    // drop the column
    match f.rfind(':') {
        Some(i)
            if f.ends_with(')') && f[i + 1..f.len() - 1].chars().all(|c| c.is_ascii_digit()) =>
        {
            format!("{})", &f[..i])
        }
        _ => f,
    }
}
