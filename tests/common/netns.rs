//! A customer site in network namespaces (issue 11): the phones and the bridge on a
//! LAN behind a NAT router, the provider on the "internet". Built by
//! tests/netns/site.sh; [`Site`] tears it down when dropped, also when the test
//! panics.
//!
//! ```text
//!  NAME-lan                      NAME-rtr                         NAME-wan
//!  192.0.2.2  bridge     eth0 ── lan0 192.0.2.1                   203.0.113.20 PBX 1
//!  192.0.2.10-19 phones          wan0 203.0.113.1 ── eth0         203.0.113.21 PBX 2
//!  default via 192.0.2.1         MASQUERADE, replies only inward  203.0.113.30 a phone
//!                                conntrack UDP 30 s                203.0.113.53 DNS (hook)
//!                                                                  no route to the LAN
//! ```
//!
//! Programs run inside a namespace through `ip netns exec NS` ([`Site::command`]);
//! the harness's [`super::KamailioOpts::netns`], [`super::Bridge::start_in`] and
//! [`super::SippCmd::netns`] do so. Readiness is probed from inside the namespace
//! ([`netns_sip_ping`]).
//!
//! Tests call [`netns_ready`] first: without root, `ip netns`, veth pairs or
//! iptables it prints a loud SKIPPED banner and returns false, unless
//! `BLF_REQUIRE_E2E` is set (CI runs as root), where it panics.
#![allow(dead_code)] // the DNS and TLS tests use other parts than the NAT ones

use super::process::{CmdOutput, run_bounded};
use super::sip_client::Transport;
use super::tools::{e2e_required, find_tool, repo_root};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The bridge's address on the LAN.
pub const LAN_BRIDGE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The router's LAN address (the LAN's default gateway).
pub const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The router's public address: everything from the site comes from here.
pub const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The provider's first SIP server.
pub const PBX1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// The provider's second SIP server.
pub const PBX2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);
/// A phone elsewhere on the internet (in the WAN namespace), talking to the
/// provider directly: its calls reach the site only through the router.
pub const WAN_PHONE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
/// Where a DNS server for `pbx.test` runs (started by the tests that need one).
pub const WAN_DNS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// The conntrack UDP timeout on the router (seconds), unreplied and "stream".
pub const NAT_UDP_TIMEOUT_S: u64 = 30;
/// The conntrack timeout of an established TCP connection on the router (seconds).
pub const NAT_TCP_TIMEOUT_S: u64 = 30;

/// Phone `i` (0..=9) on the LAN: 192.0.2.10 + i.
pub fn phone_ip(i: u8) -> IpAddr {
    assert!(i <= 9, "the site has ten phone addresses");
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i))
}

fn site_script() -> PathBuf {
    repo_root().join("tests").join("netns").join("site.sh")
}

/// Why namespace tests cannot run here, if they cannot.
pub fn netns_unavailable() -> Option<String> {
    if find_tool("ip").is_none() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if find_tool("iptables").is_none() {
        return Some("`iptables` is not installed (apt-get install iptables)".into());
    }
    let out = run_bounded(
        Command::new("bash").arg(site_script()).arg("check"),
        None,
        Duration::from_secs(20),
    );
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "network namespaces unusable ({}{})",
            o.stdout.trim(),
            o.stderr.trim()
        )),
        Err(e) => Some(e),
    }
}

/// Call at the start of every namespace test (after [`super::e2e_ready`]): true
/// when the site can be built; otherwise a loud SKIPPED banner and false — or a
/// panic when `BLF_REQUIRE_E2E` is set.
pub fn netns_ready(test: &str) -> bool {
    let Some(why) = netns_unavailable() else {
        return true;
    };
    let msg = format!(
        "namespace test `{test}` needs root, iproute2 and iptables (apt-get install iproute2 iptables conntrack): {why}"
    );
    if e2e_required() {
        panic!("BLF_REQUIRE_E2E is set but {msg}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!! SKIPPED: {msg}\n!! Set BLF_REQUIRE_E2E=1 to turn this into a failure.\n{bar}\n",
        bar = "!".repeat(78)
    );
    false
}

/// A site built by tests/netns/site.sh; removed (processes inside killed,
/// namespaces deleted) when dropped. Declare it before the processes that run
/// in it, so that they are stopped first.
pub struct Site {
    name: String,
    /// The LAN namespace (bridge, phones).
    pub lan: String,
    /// The router namespace (NAT).
    pub router: String,
    /// The internet side (providers, DNS).
    pub wan: String,
}

impl Site {
    /// Build a site with a name unique to this process and call. Panics with the
    /// script's output when it cannot be built (after removing what was built).
    pub fn up() -> Site {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "blf{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let out = run_bounded(
            Command::new("bash").arg(site_script()).args(["up", &name]),
            None,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("site.sh up {name}: {e}"));
        assert!(
            out.status.success(),
            "site.sh up {name} failed ({}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
        Site {
            lan: format!("{name}-lan"),
            router: format!("{name}-rtr"),
            wan: format!("{name}-wan"),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NS PROGRAM`: a command that runs `program` inside `ns`.
    pub fn command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(find_tool("ip").unwrap_or_else(|| "ip".into()));
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Run `args` inside `ns` (bounded, 20 s); Ok(stdout) on success.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let (program, rest) = args.split_first().ok_or("empty command")?;
        let out: CmdOutput = run_bounded(
            Site::command(ns, program).args(rest),
            None,
            Duration::from_secs(20),
        )?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{args:?} in {ns}: {} {}{}",
                out.status, out.stdout, out.stderr
            ))
        }
    }

    /// The router's connection-tracking table (`conntrack -L`), one entry a line.
    pub fn conntrack(&self) -> String {
        self.exec(&self.router, &["conntrack", "-L"])
            .unwrap_or_else(|e| e)
    }

    /// Forget every NAT binding on the router (`conntrack -F`): the next packet
    /// from the LAN gets a fresh one; packets from the WAN for an old one are dropped.
    pub fn flush_nat(&self) {
        if let Err(e) = self.exec(&self.router, &["conntrack", "-F"]) {
            panic!("conntrack -F: {e}");
        }
    }

    /// Local ports of the established TCP connections from `ns` to `remote`
    /// (`ss` inside the namespace).
    pub fn tcp_ports_to(&self, ns: &str, remote: SocketAddr) -> Vec<u16> {
        let out = self
            .exec(ns, &["ss", "-Htn", "state", "established"])
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // Recv-Q Send-Q Local:Port Peer:Port
                let local: SocketAddr = cols.get(2)?.parse().ok()?;
                let peer: SocketAddr = cols.get(3)?.parse().ok()?;
                (peer == remote).then_some(local.port())
            })
            .collect()
    }

    /// From now on the router counts, under `name`, the packets it forwards that
    /// match `rule` (iptables match arguments, e.g. `["-d", "203.0.113.0/24", "-m",
    /// "string", "--string", "SIP/2.0", "--algo", "bm"]`): a rule without a target
    /// at the top of FORWARD, so it only counts. Read with [`Site::forwarded`].
    pub fn count_forwarded(&self, name: &str, rule: &[&str]) {
        let mut args = vec!["iptables", "-I", "FORWARD", "1"];
        args.extend_from_slice(rule);
        args.extend_from_slice(&["-m", "comment", "--comment", name]);
        self.exec(&self.router, &args)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The packets counted so far under `name` (see [`Site::count_forwarded`]).
    pub fn forwarded(&self, name: &str) -> u64 {
        let table = self
            .exec(
                &self.router,
                &["iptables", "-L", "FORWARD", "-v", "-n", "-x"],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let tag = format!("/* {name} */");
        let line = table
            .lines()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no counting rule {name}:\n{table}"));
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("packet count of {line}"))
    }

    /// From now on the router resets the TCP connection of `lan_ip:port` (both
    /// ways: `iptables -j REJECT --reject-with tcp-reset` in FORWARD), as a
    /// router does that forgot the connection or the provider that closed it.
    /// Other connections, new ones included, pass.
    pub fn reset_tcp(&self, lan_ip: IpAddr, port: u16) {
        let (ip, port) = (lan_ip.to_string(), port.to_string());
        for (who, which) in [("-s", "--sport"), ("-d", "--dport")] {
            let args = [
                "iptables",
                "-I",
                "FORWARD",
                "-p",
                "tcp",
                who,
                &ip,
                which,
                &port,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ];
            self.exec(&self.router, &args)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let out = run_bounded(
            Command::new("bash")
                .arg(site_script())
                .args(["down", &self.name]),
            None,
            Duration::from_secs(30),
        );
        if let Ok(o) = &out
            && !o.status.success()
        {
            eprintln!(
                "[harness] site.sh down {}: {}{}",
                self.name, o.stdout, o.stderr
            );
        }
    }
}

/// The status code of the answer to an OPTIONS sent from inside `ns` (bash's
/// /dev/udp, /dev/tcp; one write through `dd`, so one datagram; source address
/// chosen by the namespace's routes), if one came within `timeout`.
pub fn netns_sip_ping(
    ns: &str,
    target: SocketAddr,
    transport: Transport,
    timeout: Duration,
) -> Option<u16> {
    let msg = super::sip_client::options_request(target, transport).replace("{local}", "0.0.0.0:9");
    let dev = match transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    let script = format!(
        "exec 3<>/dev/{dev}/{}/{} || exit 1; \
         printf '%s' \"$1\" | dd bs=65536 iflag=fullblock status=none >&3; head -c 12 <&3",
        target.ip(),
        target.port()
    );
    let secs = format!("{:.1}", timeout.as_secs_f64().max(0.1));
    let out = run_bounded(
        Site::command(ns, "timeout")
            .args([secs.as_str(), "bash", "-c", &script, "ping"])
            .arg(msg),
        None,
        timeout + Duration::from_secs(5),
    )
    .ok()?;
    let s = out.stdout;
    s.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}
