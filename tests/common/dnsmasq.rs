//! A DNS server for the tests: dnsmasq (Debian's) on 127.0.0.1 and a free
//! port, serving only the records a test gives (no /etc/hosts, no upstream
//! resolvers), with a short TTL so that re-resolution happens inside a test.
#![allow(dead_code)] // not every test crate runs a DNS server

use super::process::{
    MAX_PROCESS_LIFETIME, free_port, lifetime_limited, read_lossy, stop_group, tail, wait_until,
};
use super::tmp::TempDir;
use super::tools::{e2e_required, find_tool};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running dnsmasq. Dropping it stops its process group.
pub struct Dnsmasq {
    ip: IpAddr,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

/// Whether dnsmasq is installed; otherwise a loud skip (a failure with
/// `BLF_REQUIRE_E2E`).
pub fn dnsmasq_ready(test: &str) -> bool {
    if find_tool("dnsmasq").is_some() {
        return true;
    }
    let msg = format!(
        "end-to-end test `{test}` needs dnsmasq (apt-get install -y --no-install-recommends dnsmasq-base)"
    );
    if e2e_required() {
        panic!("BLF_REQUIRE_E2E is set but {msg}");
    }
    eprintln!("\n!! SKIPPED: {msg}\n");
    false
}

impl Dnsmasq {
    /// Serve `records` (dnsmasq options such as `--srv-host=…`,
    /// `--host-record=…`, `--naptr-record=…`) with this TTL (seconds) on every
    /// answer.
    pub fn start(records: &[String], ttl: u32) -> Dnsmasq {
        Dnsmasq::start_on(free_port(), records, ttl)
    }

    /// [`Dnsmasq::start`] on a given port of 127.0.0.1.
    pub fn start_on(port: u16, records: &[String], ttl: u32) -> Dnsmasq {
        Dnsmasq::spawn(None, IpAddr::from([127, 0, 0, 1]), port, records, ttl)
    }

    /// [`Dnsmasq::start`] inside the network namespace `ns` (a [`super::Site`]'s
    /// `wan`), on `ip`, port 53.
    pub fn start_in(ns: &str, ip: IpAddr, records: &[String], ttl: u32) -> Dnsmasq {
        Dnsmasq::spawn(Some(ns), ip, 53, records, ttl)
    }

    fn spawn(ns: Option<&str>, ip: IpAddr, port: u16, records: &[String], ttl: u32) -> Dnsmasq {
        let dir = TempDir::new("dns");
        let log = dir.path().join("dnsmasq.log");
        let out = File::create(&log).expect("dnsmasq log");
        let err = out.try_clone().expect("dnsmasq log");
        let exe = find_tool("dnsmasq").expect("dnsmasq");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = super::netns::Site::command(ns, "timeout");
                c.args(["-s", "TERM", "-k", "5"])
                    .arg(MAX_PROCESS_LIFETIME.as_secs().to_string())
                    .arg(&exe);
                c
            }
            None => lifetime_limited(&exe),
        };
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--log-queries",
        ])
        .arg(format!("--listen-address={ip}"))
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={ttl}"))
        .args(records)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
        // as root dnsmasq drops to "nobody" unless told otherwise
        if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        }) {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().expect("cannot start dnsmasq");
        let mut d = Dnsmasq {
            ip,
            port,
            child: Some(child),
            log,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            read_lossy(&d.log).contains("started")
        });
        if !up
            || d.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        {
            panic!("dnsmasq did not start:\n{}", tail(&d.log(), 20));
        }
        d
    }

    /// `ip:port` (127.0.0.1 unless started in a namespace), for `[upstream] dns`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Its log (with `--log-queries`: every query).
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_group(&mut c, Duration::from_secs(2));
        }
    }
}
