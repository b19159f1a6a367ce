//! Ports, bounded waits and commands, process groups: everything that keeps a
//! harness process from outliving its test.

use super::tools::find_tool;
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bound for any process started here, enforced by `timeout(1)` (Kamailio,
/// bridge) or `sipp -timeout`, so that nothing outlives a test run that was killed
/// before the guards could drop.
pub const MAX_PROCESS_LIFETIME: Duration = Duration::from_secs(900);

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
pub(super) fn free_ports_at(offsets: &[u16]) -> u16 {
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
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
pub(super) fn kill_group(pgid: u32, signal: &str) {
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
pub(super) fn group_alive(pgid: u32) -> bool {
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
pub(super) fn stop_group(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
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
pub(super) fn lifetime_limited(program: &Path) -> Command {
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

pub(super) fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
