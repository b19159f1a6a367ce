//! End-to-end test harness shared by the integration tests (`mod common;`).
//!
//! It runs the real programs the bridge sits between, all on 127.0.0.1:
//! - [`Kamailio`]: the "hosted PBX" (tests/harness/kamailio.cfg) on a free port, with
//!   its own run directory (SQLite DB with users 1001..1003, ctl socket, log);
//! - [`Bridge`]: the `blf-bridge` binary of this crate with a given TOML config;
//! - [`Sipp`]: SIPp "phones" playing the scenarios in tests/harness/scenarios/,
//!   with parsers for their `-trace_msg` logs ([`TraceMsg`], [`Notify`]).
//!
//! Everything is bounded (every wait has a deadline), every process runs in its own
//! process group and is killed with it on drop (also when the test panics), every
//! run gets a unique temporary directory (kept and printed when the test fails, or
//! always with `BLF_KEEP_TMP=1`), and no port is fixed: [`free_port`] hands out ports
//! that are free on UDP and TCP. Nothing here depends on files outside the repository
//! except the installed tools (sipp, kamailio, kamcmd, sqlite3 and the Kamailio
//! SQLite schema in /usr/share/kamailio/db_sqlite).
//!
//! Tests call [`e2e_ready`] first: when the tools are missing it prints a loud SKIPPED
//! banner and returns false, unless `BLF_REQUIRE_E2E` is set (CI), where it panics.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Domain / digest realm of the harness PBX.
pub const DOMAIN: &str = "pbx.test";
/// The users provisioned in the harness PBX (user, password).
pub const USERS: [(&str, &str); 3] = [
    ("1001", "pass1001"),
    ("1002", "pass1002"),
    ("1003", "pass1003"),
];
/// Debian packages that provide the tools (what `scripts/test` installs).
pub const E2E_PACKAGES: &str =
    "sip-tester kamailio kamailio-presence-modules kamailio-sqlite-modules sqlite3";
/// Upper bound for any process started here, enforced by `timeout(1)` (Kamailio,
/// bridge) or `sipp -timeout`, so that nothing outlives a test run that was killed
/// before the guards could drop.
pub const MAX_PROCESS_LIFETIME: Duration = Duration::from_secs(900);

const KAMAILIO_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
const KAMAILIO_SCHEMAS: [&str; 4] = [
    "standard-create.sql",
    "auth_db-create.sql",
    "presence-create.sql",
    "usrloc-create.sql",
];

/// Password of a harness user (`pass<user>`).
pub fn password(user: &str) -> String {
    format!("pass{user}")
}

// =====================================================================================
// paths and tools
// =====================================================================================

/// Root of this repository (the crate directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tests/harness/ (Kamailio config, users, scenarios).
pub fn harness_dir() -> PathBuf {
    repo_root().join("tests").join("harness")
}

/// Absolute path of a scenario in tests/harness/scenarios/ (a path containing `/` is
/// taken as is).
pub fn scenario_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        harness_dir().join("scenarios").join(name)
    }
}

/// Find an executable in PATH (plus /usr/sbin and /sbin, where Debian puts kamailio).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} not found in PATH (install: apt-get install -y --no-install-recommends {E2E_PACKAGES})")
    })
}

/// True when `BLF_REQUIRE_E2E` is set to anything but "" or "0".
pub fn e2e_required() -> bool {
    std::env::var("BLF_REQUIRE_E2E").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The tools an end-to-end test needs that are not installed.
pub fn missing_e2e_tools() -> Vec<String> {
    let mut missing: Vec<String> = ["sipp", "kamailio", "kamcmd", "sqlite3"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .map(String::from)
        .collect();
    if find_tool("kamailio").is_some()
        && !Path::new(KAMAILIO_SCHEMA_DIR)
            .join(KAMAILIO_SCHEMAS[0])
            .is_file()
    {
        missing.push(format!("{KAMAILIO_SCHEMA_DIR} (kamailio-sqlite-modules)"));
    }
    missing
}

/// Call at the start of every end-to-end test: `if !common::e2e_ready("name") { return; }`.
///
/// Returns true when sipp, kamailio, kamcmd and sqlite3 are installed. Otherwise prints
/// a loud SKIPPED banner and returns false — or panics when `BLF_REQUIRE_E2E` is set,
/// so that CI cannot silently skip the end-to-end tests.
pub fn e2e_ready(test: &str) -> bool {
    let missing = missing_e2e_tools();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "end-to-end test `{test}` needs: {} (install: apt-get install -y --no-install-recommends {E2E_PACKAGES}, or run scripts/test)",
        missing.join(", ")
    );
    if e2e_required() {
        panic!("BLF_REQUIRE_E2E is set but {msg}");
    }
    // straight to the stderr handle: the test harness captures eprintln! of passing tests
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!! SKIPPED: {msg}\n!! Set BLF_REQUIRE_E2E=1 to turn this into a failure.\n{bar}\n",
        bar = "!".repeat(78)
    );
    false
}

// =====================================================================================
// temporary directories
// =====================================================================================

/// A unique directory under `$BLF_E2E_TMPDIR` or the system temp dir
/// (`blf-bridge-e2e/<prefix>-<pid>-<n>-<nanos>`; short, because it holds a unix
/// socket). Removed on drop, except when the thread is panicking (a failing test)
/// or `BLF_KEEP_TMP` is set: then it is kept and its path printed.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var_os("BLF_E2E_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("blf-bridge-e2e"));
        fs::create_dir_all(&base)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", base.display()));
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => {
                    return TempDir {
                        path,
                        keep: std::env::var_os("BLF_KEEP_TMP").is_some(),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
        panic!("cannot create a unique directory under {}", base.display());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory after drop (its path is printed).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep || thread::panicking() {
            eprintln!("[harness] kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// =====================================================================================
// ports, waiting, bounded commands, process groups
// =====================================================================================

/// A port that is currently free on 127.0.0.1 for both UDP and TCP and has not been
/// handed out before by this process. Picked at random below the kernel's ephemeral
/// range (so that the OS does not give it to an outgoing socket meanwhile), falling
/// back to an OS-assigned port.
pub fn free_port() -> u16 {
    free_ports_at(&[0])
}

/// A SIPp media port (`-mp`): SIPp binds the audio RTP socket on it and the video
/// one on port + 2 (+ 1 and + 3 being RTCP), and exits when either bind fails. All
/// four are free (UDP and TCP) and reserved like [`free_port`]'s.
pub fn free_media_port() -> u16 {
    free_ports_at(&[0, 1, 2, 3])
}

/// A base port such that base + every offset is free on UDP and TCP and was not
/// handed out before; all of them are then reserved.
fn free_ports_at(offsets: &[u16]) -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static SEED: AtomicU64 = AtomicU64::new(0);
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut x = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    let bindable = |p: u16| {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, p));
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, p));
        udp.is_ok() && tcp.is_ok()
    };
    for attempt in 0..400 {
        let base = if attempt < 300 {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            20000 + (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u16 % 12000
        } else {
            match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|s| s.local_addr()) {
                Ok(a) => a.port(),
                Err(_) => continue,
            }
        };
        let Some(ports) = offsets
            .iter()
            .map(|&o| base.checked_add(o))
            .collect::<Option<Vec<u16>>>()
        else {
            continue;
        };
        let mut set = given.lock().unwrap_or_else(|e| e.into_inner());
        if ports.iter().any(|p| set.contains(p) || !bindable(*p)) {
            continue;
        }
        set.extend(ports);
        return base;
    }
    panic!("no free UDP+TCP port found on 127.0.0.1");
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Poll `predicate` every `poll` until it returns true (→ true) or `timeout` has
/// passed (→ false). The predicate is always evaluated at least once, and once more
/// at the deadline.
pub fn wait_until(timeout: Duration, poll: Duration, mut predicate: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// Output of a bounded command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run a command with stdin from `input`, killing it (and its process group) after
/// `timeout`. Err describes a spawn failure or the timeout.
pub fn run_bounded(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<CmdOutput, String> {
    let desc = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {desc}: {e}"))?;
    let writer = input.map(|bytes| {
        let bytes = bytes.to_vec();
        let mut stdin = child.stdin.take();
        thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&bytes);
            }
        })
    });
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read_all(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = match wait_child(&mut child, timeout) {
        Some(s) => s,
        None => {
            kill_group(child.id(), "KILL");
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{desc} did not finish within {timeout:?}"));
        }
    };
    // a left-over member of its group could hold the pipes open
    if group_alive(child.id()) {
        kill_group(child.id(), "KILL");
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(CmdOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Wait (bounded) for a child to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Send a signal to a whole process group (by its id, never by name).
fn kill_group(pgid: u32, signal: &str) {
    if pgid == 0 {
        return;
    }
    let kill = find_tool("kill").unwrap_or_else(|| PathBuf::from("/bin/kill"));
    let _ = Command::new(kill)
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether any process is still in process group `pgid` (from /proc).
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Some(name) = e.file_name().to_str().map(String::from) else {
            return false;
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let stat = read_lossy(&e.path().join("stat"));
        // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses
        let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
            return false;
        };
        let mut f = after.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// Stop a child that leads its own process group: SIGTERM to the group, up to
/// `grace` for the leader to exit, then SIGKILL to whatever is left of the group
/// (children that outlived the leader). The group is only signalled while it has
/// members, so its id cannot have been reused.
fn stop_group(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pgid = child.id();
    let status = match child.try_wait() {
        Ok(Some(s)) => Some(s),
        _ => {
            kill_group(pgid, "TERM");
            match wait_child(child, grace) {
                Some(s) => Some(s),
                None => {
                    kill_group(pgid, "KILL");
                    let _ = child.kill();
                    wait_child(child, Duration::from_secs(5))
                }
            }
        }
    };
    // the leader is reaped; give stragglers a moment, then kill them
    if !wait_until(Duration::from_secs(2), Duration::from_millis(50), || {
        !group_alive(pgid)
    }) {
        kill_group(pgid, "KILL");
    }
    status
}

/// A command that runs `program` under `timeout(1)` when available, so that it cannot
/// outlive [`MAX_PROCESS_LIFETIME`] even if the test process is SIGKILLed.
fn lifetime_limited(program: &Path) -> Command {
    match find_tool("timeout") {
        Some(t) => {
            let mut c = Command::new(t);
            c.args(["-s", "TERM", "-k", "5"])
                .arg(format!("{}", MAX_PROCESS_LIFETIME.as_secs()))
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// =====================================================================================
// minimal SIP client (probes and raw requests)
// =====================================================================================

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
            let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
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
fn framed_len(buf: &[u8]) -> Option<usize> {
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

fn status_of(msg: &str) -> Option<u16> {
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

// =====================================================================================
// Kamailio
// =====================================================================================

/// Knobs of the harness PBX (see the header of tests/harness/kamailio.cfg).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KamailioOpts {
    /// Port on 127.0.0.1 (UDP and TCP); None = a [`free_port`].
    pub port: Option<u16>,
    /// SUBSCRIBE challenge: 0 = none, 1 = 407 (default), 2 = 401.
    pub sub_auth: u8,
    /// Also challenge in-dialog SUBSCRIBEs (refresh / unsubscribe).
    pub sub_auth_indlg: bool,
    /// presence_dialoginfo `force_dummy_dialog` (default true: idle = dummy terminated dialog).
    pub dummy_dialog: bool,
    /// presence_xml `force_dummy_presence` (default false; true makes offline look open).
    pub dummy_presence: bool,
    /// Challenges without `qop="auth"`.
    pub no_qop: bool,
    /// Accept `Event: message-summary` (presence_mwi; default true). False = 489.
    pub mwi: bool,
}

impl Default for KamailioOpts {
    fn default() -> Self {
        KamailioOpts {
            port: None,
            sub_auth: 1,
            sub_auth_indlg: false,
            dummy_dialog: true,
            dummy_presence: false,
            no_qop: false,
            mwi: true,
        }
    }
}

/// An accepted subscription as the harness PBX records it (htable "watchers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Presentity user (To user), e.g. "1002".
    pub target: String,
    /// Event package, e.g. "dialog", "presence", "message-summary".
    pub event: String,
    pub call_id: String,
    /// Watcher URI (From), e.g. "sip:1001@pbx.test".
    pub from: String,
}

/// A running harness PBX. Dropping it kills its whole process group.
pub struct Kamailio {
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    ctl: String,
    opts: KamailioOpts,
    dir: TempDir,
}

impl Kamailio {
    /// Start Kamailio with `opts` and wait (≤10 s) until UDP and TCP answer OPTIONS
    /// and the ctl socket answers. Panics with the log tail when it does not come up
    /// (after up to 3 attempts on fresh ports if the port was taken meanwhile).
    pub fn start(opts: KamailioOpts) -> Kamailio {
        let mut last_err = String::new();
        for _ in 0..3 {
            match Kamailio::try_start(opts.clone()) {
                Ok(k) => return k,
                Err((e, retry)) => {
                    last_err = e;
                    if !retry || opts.port.is_some() {
                        break;
                    }
                }
            }
        }
        panic!("{last_err}");
    }

    /// Like [`Kamailio::start`], but returns the error (and whether a retry on another
    /// port could help) instead of panicking.
    fn try_start(opts: KamailioOpts) -> Result<Kamailio, (String, bool)> {
        let kamailio = tool("kamailio");
        let dir = TempDir::new("kam");
        let port = opts.port.unwrap_or_else(free_port);
        let db = dir.path().join("kamailio.sqlite");
        let ctl = format!("unix:{}", dir.path().join("ctl").display());
        let log_path = dir.path().join("kamailio.log");
        init_db(&db).map_err(|e| (e, false))?;

        let cfg = harness_dir().join("kamailio.cfg");
        let mut args: Vec<String> = vec![
            "-f".into(),
            cfg.display().to_string(),
            "-DD".into(),
            "-E".into(),
            "-Y".into(),
            dir.path().display().to_string(),
            "-w".into(),
            dir.path().display().to_string(),
            "-m".into(),
            "32".into(),
            "-M".into(),
            "8".into(),
        ];
        let mut define = |d: String| {
            args.push("-A".into());
            args.push(d);
        };
        define(format!("SIP_PORT={port}"));
        define(format!("SERVER_ADDR=\"sip:127.0.0.1:{port}\""));
        define(format!("DBURL=\"sqlite:///{}\"", db.display()));
        define(format!("CTLSOCK=\"{ctl}\""));
        define(format!("SUB_AUTH_DEFAULT={}", opts.sub_auth));
        define(format!(
            "SUB_AUTH_INDLG_DEFAULT={}",
            u8::from(opts.sub_auth_indlg)
        ));
        define(format!("DUMMY_DIALOG={}", u8::from(opts.dummy_dialog)));
        define(format!("DUMMY_PRESENCE={}", u8::from(opts.dummy_presence)));
        if opts.no_qop {
            define("NO_QOP".into());
        }
        if !opts.mwi {
            define("NO_MWI".into());
        }
        let _ = fs::write(
            dir.path().join("cmdline.txt"),
            format!("{} {}\n", kamailio.display(), args.join(" ")),
        );

        let check = run_bounded(
            Command::new(&kamailio).args(&args).arg("-c"),
            None,
            Duration::from_secs(10),
        )
        .map_err(|e| (e, false))?;
        if !check.status.success() {
            return Err((
                format!(
                    "kamailio config check failed ({}):\n{}",
                    check.status,
                    tail(&check.stderr, 30)
                ),
                false,
            ));
        }

        let log = File::create(&log_path)
            .map_err(|e| (format!("cannot create {}: {e}", log_path.display()), false))?;
        let log2 = log
            .try_clone()
            .map_err(|e| (format!("cannot clone log handle: {e}"), false))?;
        let child = lifetime_limited(&kamailio)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| (format!("cannot start kamailio: {e}"), false))?;
        let mut k = Kamailio {
            port,
            child: Some(child),
            log_path,
            ctl,
            opts,
            dir,
        };

        let addr = k.addr();
        let mut exited = None;
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if let Some(Ok(Some(s))) = k.child.as_mut().map(Child::try_wait) {
                exited = Some(s);
                return true;
            }
            sip_ping(addr, Transport::Udp, Duration::from_millis(300)).is_some()
                && sip_ping(addr, Transport::Tcp, Duration::from_millis(300)).is_some()
                && k.kamcmd(&["core.uptime"]).is_ok()
        });
        let log = k.log();
        if exited.is_some() || !up {
            k.dir.keep();
        }
        let bind_problem = log.contains("Address already in use") || log.contains("bind(");
        if let Some(s) = exited {
            return Err((
                format!(
                    "kamailio exited during start-up ({s}), log {}:\n{}",
                    k.log_path.display(),
                    tail(&log, 30)
                ),
                bind_problem,
            ));
        }
        if !up {
            return Err((
                format!(
                    "kamailio did not come up on 127.0.0.1:{port} within 10 s, log {}:\n{}",
                    k.log_path.display(),
                    tail(&log, 30)
                ),
                bind_problem,
            ));
        }
        if log.contains("init_child failed") || log.contains("cannot fork") {
            return Err((
                format!(
                    "a kamailio child failed to initialise, log {}:\n{}",
                    k.log_path.display(),
                    tail(&log, 30)
                ),
                false,
            ));
        }
        Ok(k)
    }

    /// UDP and TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The options it was started with.
    pub fn opts(&self) -> &KamailioOpts {
        &self.opts
    }

    /// Its run directory (DB, ctl socket, log, cmdline.txt).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// `kamcmd -s unix:<run dir>/ctl ARGS...` (bounded, 5 s); Ok(stdout) on success.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let out = run_bounded(
            Command::new(tool("kamcmd"))
                .arg("-s")
                .arg(&self.ctl)
                .args(args),
            None,
            Duration::from_secs(5),
        )?;
        if out.status.success() && !out.stdout.starts_with("error:") {
            Ok(out.stdout)
        } else {
            Err(format!(
                "kamcmd {args:?}: {} {}{}",
                out.status, out.stdout, out.stderr
            ))
        }
    }

    /// Contact URIs registered for `user` (`ul.lookup location s:<user>`); empty when
    /// not registered.
    pub fn registered_contacts(&self, user: &str) -> Vec<String> {
        let Ok(out) = self.kamcmd(&["ul.lookup", "location", &format!("s:{user}")]) else {
            return Vec::new();
        };
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Address:"))
            .map(|a| a.trim().to_string())
            .collect()
    }

    pub fn is_registered(&self, user: &str) -> bool {
        !self.registered_contacts(user).is_empty()
    }

    /// Accepted subscriptions, from the config's htable "watchers" (an entry lives as
    /// long as the subscription's Expires, and an unsubscribe removes it).
    pub fn watchers(&self) -> Vec<Watcher> {
        let Ok(out) = self.kamcmd(&["htable.dump", "watchers"]) else {
            return Vec::new();
        };
        let mut res = Vec::new();
        let mut pending: Option<(String, String, String)> = None;
        for line in out.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("name:") {
                let mut parts = name.trim().splitn(3, '|');
                if let (Some(t), Some(e), Some(c)) = (parts.next(), parts.next(), parts.next()) {
                    pending = Some((t.to_string(), e.to_string(), c.to_string()));
                }
            } else if let (Some(value), Some((target, event, call_id))) =
                (line.strip_prefix("value:"), pending.take())
            {
                res.push(Watcher {
                    target,
                    event,
                    call_id,
                    from: value.trim().to_string(),
                });
            }
        }
        res
    }

    /// Subscriptions to `target` for `event`.
    pub fn watchers_of(&self, target: &str, event: &str) -> Vec<Watcher> {
        self.watchers()
            .into_iter()
            .filter(|w| w.target == target && w.event == event)
            .collect()
    }

    /// States of the calls the dialog module tracks (`dlg.list`: 1 unconfirmed,
    /// 2 early, 3/4 confirmed, 5 deleted).
    pub fn dialog_states(&self) -> Vec<u32> {
        let Ok(out) = self.kamcmd(&["dlg.list"]) else {
            return Vec::new();
        };
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("state:"))
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Change the SUBSCRIBE challenge mode at run time (0 none, 1 = 407, 2 = 401).
    pub fn set_sub_auth(&self, mode: u8) {
        self.kamcmd(&["cfg.set_now_int", "harness", "sub_auth", &mode.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stop it now (the same as dropping it).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!(
                "[harness] kamailio on port {} log {} (tail):\n{}",
                self.port,
                self.log_path.display(),
                tail(&self.log(), 25)
            );
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Create the SQLite DB: Debian's Kamailio schema + the users.
fn init_db(db: &Path) -> Result<(), String> {
    let mut sql = String::new();
    for f in KAMAILIO_SCHEMAS {
        let p = Path::new(KAMAILIO_SCHEMA_DIR).join(f);
        sql += &fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        sql.push('\n');
    }
    let users = fs::read_to_string(harness_dir().join("users.txt"))
        .map_err(|e| format!("users.txt: {e}"))?;
    for line in users.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace();
        if let (Some(u), Some(p)) = (it.next(), it.next()) {
            let _ = writeln!(
                sql,
                "INSERT INTO subscriber (username, domain, password) VALUES ('{u}','{DOMAIN}','{p}');"
            );
        }
    }
    // Rollback journal, not WAL: the DB is only read (users; presence, pua, usrloc
    // and dialogs are kept in memory), and readers of a rollback-journal DB only take
    // shared locks. In WAL mode the children opening the DB concurrently at start-up
    // run WAL recovery under an exclusive lock, and a first query racing with it
    // fails with "database is locked" (no busy_timeout in db_sqlite 5.6) - seen as a
    // spurious second 407.
    let out = run_bounded(
        Command::new(tool("sqlite3")).arg(db),
        Some(sql.as_bytes()),
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        return Err(format!(
            "sqlite3 {} failed: {}{}",
            db.display(),
            out.stdout,
            out.stderr
        ));
    }
    Ok(())
}

// =====================================================================================
// the bridge
// =====================================================================================

/// A running `blf-bridge run --config FILE`. Dropping it kills its process group.
pub struct Bridge {
    child: Option<Child>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    config_path: PathBuf,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    dir: TempDir,
}

impl Bridge {
    /// Write `config_toml` to a temp dir, start the bridge with it (RUST_LOG from the
    /// environment, default "debug") and wait (≤10 s) until every configured listen
    /// port answers an OPTIONS. Panics with the bridge's log otherwise.
    pub fn start(config_toml: &str) -> Bridge {
        Bridge::start_with_env(config_toml, &[])
    }

    /// [`Bridge::start`] with extra environment variables (e.g. for `password_env`).
    pub fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Bridge {
        Bridge::launch(config_toml, env, true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Bridge::start`], but returns Err (with the log tail) when the bridge
    /// exits or does not answer within 10 s (e.g. to test config errors).
    pub fn try_start(config_toml: &str) -> Result<Bridge, String> {
        Bridge::try_start_with_env(config_toml, &[])
    }

    /// [`Bridge::try_start`] with extra environment variables.
    pub fn try_start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Result<Bridge, String> {
        Bridge::launch(config_toml, env, false)
    }

    fn launch(
        config_toml: &str,
        env: &[(&str, &str)],
        keep_on_error: bool,
    ) -> Result<Bridge, String> {
        let dir = TempDir::new("bridge");
        let config_path = dir.path().join("bridge.toml");
        let log_path = dir.path().join("bridge.log");
        fs::write(&config_path, config_toml).map_err(|e| format!("cannot write config: {e}"))?;
        let (udp, tcp) = listen_addrs(config_toml);
        let log = File::create(&log_path).map_err(|e| format!("cannot create log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot clone log handle: {e}"))?;
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_blf-bridge"));
        let mut cmd = lifetime_limited(&exe);
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut b = Bridge {
            child: Some(child),
            udp,
            tcp,
            config_path,
            log_path,
            exit: None,
            dir,
        };
        if udp.is_none() && tcp.is_none() {
            return Err(format!(
                "the bridge config has no [listen] udp/tcp address to probe:\n{config_toml}"
            ));
        }
        let mut exited = None;
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if let Some(Ok(Some(s))) = b.child.as_mut().map(Child::try_wait) {
                exited = Some(s);
                return true;
            }
            udp.is_none_or(|a| sip_ping(a, Transport::Udp, Duration::from_millis(300)).is_some())
                && tcp.is_none_or(|a| {
                    sip_ping(a, Transport::Tcp, Duration::from_millis(300)).is_some()
                })
        });
        if keep_on_error && (exited.is_some() || !up) {
            b.dir.keep();
        }
        if let Some(s) = exited {
            b.exit = Some(s);
            return Err(format!(
                "blf-bridge exited before answering OPTIONS ({s}); config {}, log:\n{}",
                b.config_path.display(),
                tail(&b.log(), 40)
            ));
        }
        if !up {
            return Err(format!(
                "blf-bridge did not answer OPTIONS on {udp:?} / {tcp:?} within 10 s; log:\n{}",
                tail(&b.log(), 40)
            ));
        }
        Ok(b)
    }

    /// The UDP listen address (0.0.0.0 replaced by 127.0.0.1).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// The TCP listen address (0.0.0.0 replaced by 127.0.0.1).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Where the phones send to: the UDP address, else the TCP one.
    pub fn addr(&self) -> SocketAddr {
        self.udp.or(self.tcp).unwrap_or_else(|| loopback(0))
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far (stdout + stderr), for assertion messages.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(s))) => {
                self.exit = Some(s);
                false
            }
            _ => false,
        }
    }

    /// Graceful stop: SIGTERM, up to `grace` to exit, then SIGKILL. Returns the exit
    /// status (None if it had to be killed after the grace period and still did not
    /// report one).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(mut c) = self.child.take() {
            let pgid = c.id();
            if let Ok(Some(s)) = c.try_wait() {
                self.exit = Some(s);
            } else {
                kill_group(pgid, "TERM");
                self.exit = wait_child(&mut c, grace);
                if self.exit.is_none() {
                    kill_group(pgid, "KILL");
                    let _ = c.kill();
                    let _ = wait_child(&mut c, Duration::from_secs(5));
                }
            }
            if group_alive(pgid) {
                kill_group(pgid, "KILL");
            }
        }
        self.exit
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!(
                "[harness] blf-bridge log {} (tail):\n{}",
                self.log_path.display(),
                tail(&self.log(), 40)
            );
        }
    }
}

/// A minimal bridge config (src/config.rs format): phones on 127.0.0.1:`listen_port`
/// (UDP and TCP), the harness PBX at `upstream` over UDP as the hosted PBX, and the
/// harness users as accounts. Tests append or replace sections as they need.
pub fn bridge_config(listen_port: u16, upstream: SocketAddr) -> String {
    let mut s = format!(
        "[listen]\nudp = \"127.0.0.1:{listen_port}\"\ntcp = \"127.0.0.1:{listen_port}\"\n\n\
         [upstream]\nproxy = \"{upstream}\"\ndomain = \"{DOMAIN}\"\ntransport = \"udp\"\n"
    );
    for (user, pass) in USERS {
        let _ = write!(
            s,
            "\n[[account]]\nuser = \"{user}\"\npassword = \"{pass}\"\n"
        );
    }
    s
}

/// `[listen] udp` / `tcp` of a bridge config, unspecified IPs replaced by 127.0.0.1.
/// A config that is not valid TOML (tests of config errors) is scanned line by line.
fn listen_addrs(config_toml: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let value = |key: &str| -> Option<String> {
        if let Ok(table) = config_toml.parse::<toml::Table>() {
            return table.get("listen")?.get(key)?.as_str().map(String::from);
        }
        let mut in_listen = false;
        for line in config_toml.lines().map(str::trim) {
            if line.starts_with('[') {
                in_listen = line == "[listen]";
            } else if let (true, Some((k, v))) = (in_listen, line.split_once('='))
                && k.trim() == key
            {
                return Some(v.trim().trim_matches('"').to_string());
            }
        }
        None
    };
    let get = |key: &str| {
        let mut a: SocketAddr = value(key)?.parse().ok()?;
        if a.ip().is_unspecified() {
            a.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        Some(a)
    };
    (get("udp"), get("tcp"))
}

// =====================================================================================
// SIPp
// =====================================================================================

/// Device model of a BLF watcher scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlfModel {
    /// subscribe-dialog-wave.xml (`User-Agent: Grandstream Wave`)
    Wave,
    /// subscribe-dialog-gxp.xml (`User-Agent: Grandstream GXP2170 1.0.11.3`)
    Gxp,
    /// subscribe-dialog-zoiper.xml (`User-Agent: Z 5.2.25 rv2.8.112`, `Event: dialog`)
    Zoiper,
}

/// A SIPp command line under construction; [`SippCmd::spawn`] runs it.
///
/// Always added: `-i 127.0.0.1 -p <free port> -m 1 -nostdin -default_behaviors none
/// -cp <free port> -timeout <limit>s`, `-t u1`/`t1`, and the traces (`-trace_msg`,
/// `-trace_logs`, `-trace_err`) into the Sipp's own temp dir.
#[derive(Debug, Clone)]
pub struct SippCmd {
    scenario: String,
    remote: SocketAddr,
    name: String,
    transport: Transport,
    local_port: Option<u16>,
    service: Option<String>,
    auth: Option<(String, String)>,
    duration_ms: Option<u64>,
    oocsf: Option<String>,
    sets: Vec<(String, String)>,
    extra: Vec<String>,
    limit: Duration,
}

impl SippCmd {
    /// `sipp <remote> -sf <scenario>`; `scenario` is a file name in
    /// tests/harness/scenarios/ (or a path).
    pub fn new(scenario: &str, remote: SocketAddr) -> SippCmd {
        SippCmd {
            scenario: scenario.to_string(),
            remote,
            name: scenario
                .trim_end_matches(".xml")
                .rsplit('/')
                .next()
                .unwrap_or("sipp")
                .to_string(),
            transport: Transport::Udp,
            local_port: None,
            service: None,
            auth: None,
            duration_ms: None,
            oocsf: None,
            sets: Vec::new(),
            extra: Vec::new(),
            limit: Duration::from_secs(120),
        }
    }

    /// Registering phone `user` (register.xml, answering calls with answer.xml after
    /// `ringing_ms` 3000 unless `.set("ringing_ms", ..)`), registered for `hold`.
    pub fn phone(remote: SocketAddr, user: &str, hold: Duration) -> SippCmd {
        SippCmd::new("register.xml", remote)
            .name(&format!("phone-{user}"))
            .oocsf("answer.xml")
            .service(user)
            .credentials(user)
            .duration(hold)
    }

    /// Caller `caller` → `callee` (call.xml), talking for `talk` after the answer.
    pub fn caller(remote: SocketAddr, caller: &str, callee: &str, talk: Duration) -> SippCmd {
        SippCmd::new("call.xml", remote)
            .name(&format!("call-{caller}-{callee}"))
            .service(callee)
            .set("caller", caller)
            .credentials(caller)
            .duration(talk)
    }

    /// Caller that CANCELs `cancel_after` after the first 180/183 (cancel.xml).
    pub fn canceller(
        remote: SocketAddr,
        caller: &str,
        callee: &str,
        cancel_after: Duration,
    ) -> SippCmd {
        SippCmd::new("cancel.xml", remote)
            .name(&format!("cancel-{caller}-{callee}"))
            .service(callee)
            .set("caller", caller)
            .credentials(caller)
            .duration(cancel_after)
    }

    /// BLF watcher (`Event: dialog`) `watcher` → `target`, unsubscribing after `run`
    /// (whole seconds, at least 1). Options: `.set("refresh_s", ..)`,
    /// `.set("expires", ..)`, `.set("unsubscribe", "0")`, `.set("domain", ..)`.
    pub fn blf_watcher(
        remote: SocketAddr,
        model: BlfModel,
        watcher: &str,
        target: &str,
        run: Duration,
    ) -> SippCmd {
        let scenario = match model {
            BlfModel::Wave => "subscribe-dialog-wave.xml",
            BlfModel::Gxp => "subscribe-dialog-gxp.xml",
            BlfModel::Zoiper => "subscribe-dialog-zoiper.xml",
        };
        SippCmd::new(scenario, remote)
            .name(&format!("blf-{model:?}-{watcher}-{target}").to_lowercase())
            .service(target)
            .set("watcher", watcher)
            .credentials(watcher)
            .set("run_s", &run.as_secs().max(1).to_string())
    }

    /// Zoiper-like presence watcher (`Event: presence`), same options as [`SippCmd::blf_watcher`].
    pub fn presence_watcher(
        remote: SocketAddr,
        watcher: &str,
        target: &str,
        run: Duration,
    ) -> SippCmd {
        SippCmd::new("subscribe-presence-zoiper.xml", remote)
            .name(&format!("presence-{watcher}-{target}"))
            .service(target)
            .set("watcher", watcher)
            .credentials(watcher)
            .set("run_s", &run.as_secs().max(1).to_string())
    }

    /// MWI subscriber (`Event: message-summary`) of `user` for its own mailbox.
    pub fn mwi_subscriber(remote: SocketAddr, user: &str, run: Duration) -> SippCmd {
        SippCmd::new("subscribe-mwi.xml", remote)
            .name(&format!("mwi-{user}"))
            .service(user)
            .set("watcher", user)
            .credentials(user)
            .set("run_s", &run.as_secs().max(1).to_string())
    }

    /// One raw request (raw-request.xml): `method` to `ruri`. Options:
    /// `.set("expect", "403")`, `.set("expect_none", "1")`, `from`, `to`, `contact`,
    /// `event`, `expires`, `max_forwards`, `domain`.
    pub fn raw_request(remote: SocketAddr, method: &str, ruri: &str) -> SippCmd {
        SippCmd::new("raw-request.xml", remote)
            .name(&format!("raw-{}", method.to_lowercase()))
            .service("raw")
            .set("method", method)
            .set("ruri", ruri)
    }

    /// Name used for log files and messages.
    pub fn name(mut self, name: &str) -> SippCmd {
        self.name = name.to_string();
        self
    }

    /// `-t u1` (default) or `-t t1`.
    pub fn transport(mut self, t: Transport) -> SippCmd {
        self.transport = t;
        self
    }

    /// Local port (`-p`); default: a [`free_port`].
    pub fn local_port(mut self, port: u16) -> SippCmd {
        self.local_port = Some(port);
        self
    }

    /// `-s user` ([service]: the target / own user, depending on the scenario).
    pub fn service(mut self, user: &str) -> SippCmd {
        self.service = Some(user.to_string());
        self
    }

    /// `-au user -ap password`.
    pub fn auth(mut self, user: &str, password: &str) -> SippCmd {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// `-au user -ap pass<user>` (harness users).
    pub fn credentials(self, user: &str) -> SippCmd {
        let p = password(user);
        self.auth(user, &p)
    }

    /// `-d <ms>` (the scenario's `<pause/>`).
    pub fn duration(mut self, d: Duration) -> SippCmd {
        self.duration_ms = Some(d.as_millis() as u64);
        self
    }

    /// `-oocsf <scenario>` (out-of-call scenario, e.g. answer.xml).
    pub fn oocsf(mut self, scenario: &str) -> SippCmd {
        self.oocsf = Some(scenario.to_string());
        self
    }

    /// `-set var value` (a later set of the same variable replaces an earlier one).
    pub fn set(mut self, var: &str, value: &str) -> SippCmd {
        self.sets.retain(|(k, _)| k != var);
        self.sets.push((var.to_string(), value.to_string()));
        self
    }

    /// Extra raw sipp arguments.
    pub fn arg(mut self, a: &str) -> SippCmd {
        self.extra.push(a.to_string());
        self
    }

    /// Hard limit for the run (`sipp -timeout`, default 120 s); a test's own
    /// [`Sipp::wait`] bound is normally much shorter.
    pub fn limit(mut self, limit: Duration) -> SippCmd {
        self.limit = limit;
        self
    }

    /// Start sipp (in its own process group). Panics if sipp cannot be spawned.
    pub fn spawn(self) -> Sipp {
        let sipp = tool("sipp");
        let dir = TempDir::new(&format!("sipp-{}", sanitize(&self.name)));
        let port = self.local_port.unwrap_or_else(free_port);
        let msg_log = dir.path().join("msg.log");
        let actions_log = dir.path().join("actions.log");
        let err_log = dir.path().join("err.log");
        let console = dir.path().join("console.log");
        let mut args: Vec<String> = vec![
            self.remote.to_string(),
            "-sf".into(),
            scenario_path(&self.scenario).display().to_string(),
            "-t".into(),
            match self.transport {
                Transport::Udp => "u1".into(),
                Transport::Tcp => "t1".into(),
            },
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-cp".into(),
            free_port().to_string(),
            "-mp".into(),
            free_media_port().to_string(),
            "-m".into(),
            "1".into(),
            "-nostdin".into(),
            "-default_behaviors".into(),
            "none".into(),
            "-timeout".into(),
            format!("{}s", self.limit.as_secs().max(1)),
            "-trace_msg".into(),
            "-message_file".into(),
            msg_log.display().to_string(),
            "-trace_logs".into(),
            "-log_file".into(),
            actions_log.display().to_string(),
            "-trace_err".into(),
            "-error_file".into(),
            err_log.display().to_string(),
        ];
        if let Some(s) = &self.oocsf {
            args.push("-oocsf".into());
            args.push(scenario_path(s).display().to_string());
        }
        if let Some(s) = &self.service {
            args.push("-s".into());
            args.push(s.clone());
        }
        if let Some((u, p)) = &self.auth {
            args.extend(["-au".into(), u.clone(), "-ap".into(), p.clone()]);
        }
        if let Some(d) = self.duration_ms {
            args.push("-d".into());
            args.push(d.to_string());
        }
        for (k, v) in &self.sets {
            args.extend(["-set".into(), k.clone(), v.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let _ = fs::write(
            dir.path().join("cmdline.txt"),
            format!("{} {}\n", sipp.display(), args.join(" ")),
        );
        let out = File::create(&console)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", console.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let child = Command::new(&sipp)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp: {e}"));
        Sipp {
            name: self.name,
            port,
            child: Some(child),
            status: None,
            killed: false,
            msg_log,
            actions_log,
            err_log,
            console,
            dir,
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// How a sipp run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippExit {
    /// It exited by itself (0 = every call succeeded; 1 = a call failed; 255/254 = fatal).
    Exited(ExitStatus),
    /// It was still running at the deadline and was killed.
    TimedOut,
}

/// A running (or finished) sipp. Dropping it kills its process group.
pub struct Sipp {
    name: String,
    port: u16,
    child: Option<Child>,
    status: Option<ExitStatus>,
    killed: bool,
    msg_log: PathBuf,
    actions_log: PathBuf,
    err_log: PathBuf,
    console: PathBuf,
    dir: TempDir,
}

impl Sipp {
    /// `sipp <remote> -sf <scenario> ARGS...` with the harness defaults of [`SippCmd`].
    pub fn run(scenario: &str, remote: SocketAddr, args: &[&str]) -> Sipp {
        args.iter()
            .fold(SippCmd::new(scenario, remote), |c, a| c.arg(a))
            .spawn()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its local SIP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its local SIP address.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// Its temp dir (cmdline.txt, msg.log, actions.log, err.log, console.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while sipp runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(s))) => {
                self.status = Some(s);
                self.child = None;
                false
            }
            _ => false,
        }
    }

    /// Wait up to `timeout` for sipp to exit; kill it (→ [`SippExit::TimedOut`]) if it
    /// has not.
    pub fn wait(&mut self, timeout: Duration) -> SippExit {
        if let Some(mut c) = self.child.take() {
            match wait_child(&mut c, timeout) {
                Some(s) => {
                    self.status = Some(s);
                }
                None => {
                    self.killed = true;
                    stop_group(&mut c, Duration::from_secs(2));
                }
            }
        }
        match self.status {
            Some(s) if !self.killed => SippExit::Exited(s),
            _ => SippExit::TimedOut,
        }
    }

    /// [`Sipp::wait`], then panic with the diagnostics unless sipp exited with 0.
    pub fn wait_success(&mut self, timeout: Duration) {
        match self.wait(timeout) {
            SippExit::Exited(s) if s.success() => {}
            other => panic!(
                "sipp {} did not succeed ({other:?}):\n{}",
                self.name,
                self.diagnostics()
            ),
        }
    }

    /// Kill it now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.killed = true;
            stop_group(&mut c, Duration::from_secs(2));
        }
    }

    /// Every message in its -trace_msg log so far (sent and received).
    pub fn messages(&self) -> Vec<TraceMsg> {
        parse_trace(&read_lossy(&self.msg_log))
    }

    /// Received messages so far.
    pub fn received(&self) -> Vec<TraceMsg> {
        self.messages().into_iter().filter(|m| m.received).collect()
    }

    /// Received NOTIFYs so far (retransmissions dropped).
    pub fn notifies(&self) -> Vec<Notify> {
        notifies(&self.messages())
    }

    /// Body of the last received NOTIFY ("" for a NOTIFY without body).
    pub fn last_notify_body(&self) -> Option<String> {
        self.notifies().pop().map(|n| n.body)
    }

    /// Status codes of the responses it received, in order.
    pub fn received_statuses(&self) -> Vec<u16> {
        self.received()
            .iter()
            .filter_map(TraceMsg::status)
            .collect()
    }

    /// Its -trace_logs log (the scenarios' `<log>` lines).
    pub fn actions_log(&self) -> String {
        read_lossy(&self.actions_log)
    }

    /// Its -trace_err log without the routine "receive timeout ... jumping to label"
    /// ticks of the polling loops.
    pub fn error_log(&self) -> String {
        read_lossy(&self.err_log)
            .replace("\r", "")
            .split("\n")
            .filter(|l| !l.contains("jumping to label"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Everything useful in an assertion message: command line, status, console and
    /// error tails, actions log and the first lines of every traced message.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "--- sipp {} (dir {})",
            self.name,
            self.dir.path().display()
        );
        let _ = writeln!(
            s,
            "cmd: {}",
            read_lossy(&self.dir.path().join("cmdline.txt")).trim()
        );
        let _ = writeln!(s, "status: {:?}, killed: {}", self.status, self.killed);
        let _ = writeln!(
            s,
            "--- console (tail)\n{}",
            tail(&read_lossy(&self.console), 15)
        );
        let _ = writeln!(s, "--- errors (tail)\n{}", tail(&self.error_log(), 15));
        let _ = writeln!(s, "--- actions\n{}", tail(&self.actions_log(), 30));
        let _ = writeln!(s, "--- messages");
        for m in self.messages() {
            let _ = writeln!(
                s,
                "{} {} {}",
                m.time,
                if m.received { "<-" } else { "->" },
                m.start_line()
            );
        }
        s
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_secs(2));
        }
        if thread::panicking() {
            eprintln!("[harness] {}", self.diagnostics());
        }
    }
}

// =====================================================================================
// sipp -trace_msg parsing
// =====================================================================================

/// One message of a sipp `-trace_msg` log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMsg {
    /// Received (true) or sent (false).
    pub received: bool,
    /// "UDP" / "TCP".
    pub transport: String,
    /// "2026-01-01 12:00:00.123456" as logged.
    pub time: String,
    /// The message, CRLFs normalised to LF, body cut to its Content-Length.
    pub text: String,
}

impl TraceMsg {
    /// First line ("NOTIFY sip:... SIP/2.0" / "SIP/2.0 200 OK").
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    pub fn is_request(&self) -> bool {
        !self.start_line().starts_with("SIP/2.0 ")
    }

    /// Request method.
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start_line()
                .split(' ')
                .next()
                .filter(|m| !m.is_empty())
        } else {
            None
        }
    }

    /// Response status.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.text)
    }

    /// Values of every header `name` (case-insensitive; compact forms accepted),
    /// folded lines joined, comma-lists not split.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        let compact = compact_form(name);
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                let n = n.trim();
                (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                    .then_some(v.trim())
            })
            .collect()
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?))
    }

    /// The header section (start line included).
    pub fn head(&self) -> &str {
        self.text
            .split_once("\n\n")
            .map_or(self.text.as_str(), |(h, _)| h)
    }

    /// The body ("" when none).
    pub fn body(&self) -> &str {
        self.text.split_once("\n\n").map_or("", |(_, b)| b)
    }
}

fn compact_form(name: &str) -> Option<&'static str> {
    const PAIRS: [(&str, &str); 12] = [
        ("call-id", "i"),
        ("contact", "m"),
        ("content-encoding", "e"),
        ("content-length", "l"),
        ("content-type", "c"),
        ("event", "o"),
        ("from", "f"),
        ("subject", "s"),
        ("supported", "k"),
        ("to", "t"),
        ("via", "v"),
        ("allow-events", "u"),
    ];
    PAIRS
        .iter()
        .find(|(long, _)| long.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// Parse a sipp `-trace_msg` log: records separated by a line of dashes (+ time),
/// then "UDP message received [N] bytes :" / "UDP message sent (N bytes):", a blank
/// line and the N bytes of the message. "Unexpected ... message received:" records
/// (repeats of a message already logged) are skipped. CRLFs become LFs.
pub fn parse_trace(log: &str) -> Vec<TraceMsg> {
    const SEP: &str = "-----------------------------------------------";
    let mut out = Vec::new();
    for record in log.split(SEP) {
        let Some((first, rest)) = record.split_once('\n') else {
            continue;
        };
        let time = first.trim().to_string();
        let Some((kind, rest)) = rest.split_once('\n') else {
            continue;
        };
        let kind = kind.trim();
        if kind.starts_with("Unexpected") {
            continue;
        }
        let received = if kind.contains("message received") {
            true
        } else if kind.contains("message sent") {
            false
        } else {
            continue;
        };
        let transport = kind.split_whitespace().next().unwrap_or("").to_string();
        let raw = rest.strip_prefix('\n').unwrap_or(rest);
        // "[280] bytes" (received) / "(225 bytes)" (sent): the exact message length
        let len = kind
            .split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse::<usize>().ok());
        let msg = match len.and_then(|n| raw.get(..n)) {
            Some(m) => m.to_string(),
            None => cut_at_content_length(raw),
        };
        let text = msg.replace("\r\n", "\n");
        if text.trim().is_empty() {
            continue;
        }
        out.push(TraceMsg {
            received,
            transport,
            time,
            text,
        });
    }
    out
}

/// Fallback framing of a logged message: headers up to the blank line, then
/// Content-Length bytes of body.
fn cut_at_content_length(raw: &str) -> String {
    let (head_end, sep_len) = match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return raw.trim_end().to_string(),
    };
    let head = &raw[..head_end];
    let clen = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let body_start = head_end + sep_len;
    let end = (body_start + clen).min(raw.len());
    raw.get(..end).unwrap_or(raw).to_string()
}

/// A received NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub time: String,
    pub call_id: String,
    pub cseq: u32,
    pub event: Option<String>,
    pub subscription_state: Option<String>,
    pub content_type: Option<String>,
    /// "" when the NOTIFY has no body.
    pub body: String,
}

impl Notify {
    /// Whether Subscription-State is terminated.
    pub fn is_terminated(&self) -> bool {
        self.subscription_state.as_deref().is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        })
    }

    /// Texts of the `<state>` elements of a dialog-info body (one per dialog).
    pub fn dialog_states(&self) -> Vec<String> {
        xml_texts(&self.body, "state")
    }

    /// Texts of the `<basic>` elements of a PIDF body ("open" / "closed").
    pub fn basic(&self) -> Vec<String> {
        xml_texts(&self.body, "basic")
    }

    /// Number of `<dialog>` elements.
    pub fn dialog_count(&self) -> usize {
        xml_open_tags(&self.body, "dialog").len()
    }

    /// The `<dialog ...>` start tags (attributes included).
    pub fn dialog_tags(&self) -> Vec<String> {
        xml_open_tags(&self.body, "dialog")
    }
}

/// The received NOTIFYs of a trace, in order, retransmissions (same Call-ID and
/// CSeq as an earlier one) dropped.
pub fn notifies(msgs: &[TraceMsg]) -> Vec<Notify> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in msgs
        .iter()
        .filter(|m| m.received && m.method() == Some("NOTIFY"))
    {
        let call_id = m.header("Call-ID").unwrap_or("").to_string();
        let cseq = m.cseq().map_or(0, |(n, _)| n);
        if !seen.insert((call_id.clone(), cseq)) {
            continue;
        }
        out.push(Notify {
            time: m.time.clone(),
            call_id,
            cseq,
            event: m.header("Event").map(String::from),
            subscription_state: m.header("Subscription-State").map(String::from),
            content_type: m.header("Content-Type").map(String::from),
            body: m.body().to_string(),
        });
    }
    out
}

/// Body of the last NOTIFY ("" if it had none).
pub fn last_body(notifies: &[Notify]) -> Option<&str> {
    notifies.last().map(|n| n.body.as_str())
}

/// Start tags `<[prefix:]name ...>` in an XML text.
fn xml_open_tags(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        if local == name && !tag.starts_with('/') {
            out.push(format!("<{tag}>"));
        }
        rest = &rest[end..];
    }
    out
}

/// Texts of the elements `<[prefix:]name ...>text</[prefix:]name>`, trimmed.
fn xml_texts(xml: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let tag_name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        rest = rest.get(end + 1..).unwrap_or("");
        if local == name && !tag.ends_with('/') {
            let close = format!("</{tag_name}>");
            if let Some(j) = rest.find(&close) {
                out.push(rest[..j].trim().to_string());
                rest = &rest[j + close.len()..];
            }
        }
    }
    out
}
