//! SIPp "phones" playing the scenarios in tests/harness/scenarios/.
#![allow(dead_code)] // not every test crate uses every SIPp knob and accessor

use super::kamailio::password;
use super::process::{free_media_port, free_port, read_lossy, stop_group, tail, wait_child};
use super::sip_client::Transport;
use super::tmp::TempDir;
use super::tools::{scenario_path, tool};
use super::trace::{Notify, TraceMsg, notifies, parse_trace};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

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
    /// `ip netns exec NS` and the local IP (`-i`), default 127.0.0.1 here.
    netns: Option<(String, std::net::IpAddr)>,
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
            netns: None,
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

    /// Run inside the network namespace `ns` (e.g. a [`super::Site`]'s `lan`) on
    /// the local address `ip` (`-i`; a phone address such as
    /// [`super::phone_ip`]). The local port defaults to 5060 there.
    pub fn netns(mut self, ns: &str, ip: std::net::IpAddr) -> SippCmd {
        self.netns = Some((ns.to_string(), ip));
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
        let port = match (self.local_port, &self.netns) {
            (Some(p), _) => p,
            (None, Some(_)) => 5060,
            (None, None) => free_port(),
        };
        let local_ip = self
            .netns
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |(_, ip)| ip.to_string());
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
            local_ip.clone(),
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
        let mut cmd = match &self.netns {
            Some((ns, _)) => super::netns::Site::command(ns, &sipp),
            None => Command::new(&sipp),
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp: {e}"));
        Sipp {
            name: self.name,
            ip: local_ip
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
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

pub(super) fn sanitize(s: &str) -> String {
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
    ip: std::net::IpAddr,
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

    /// Its local SIP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its local SIP address (127.0.0.1 unless [`SippCmd::netns`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
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
