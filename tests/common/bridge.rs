//! The `blf-bridge` binary under test and its minimal config.
#![allow(dead_code)] // some test crates start a bridge without using every accessor

use super::kamailio::{DOMAIN, USERS};
use super::process::{
    group_alive, kill_group, lifetime_limited, loopback, read_lossy, stop_group, tail, wait_child,
    wait_until,
};
use super::sip_client::{Transport, sip_ping};
use super::tmp::TempDir;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

/// A running `blf-bridge run --config FILE`. Dropping it kills its process group.
pub struct Bridge {
    child: Option<Child>,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    config_path: PathBuf,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    dir: TempDir,
    /// The network namespace it runs in ([`Bridge::start_in`]).
    netns: Option<String>,
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
        Bridge::launch(config_toml, env, true, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Bridge::start`], but returns Err (with the log tail) when the bridge
    /// exits or does not answer within 10 s (e.g. to test config errors).
    pub fn try_start(config_toml: &str) -> Result<Bridge, String> {
        Bridge::try_start_with_env(config_toml, &[])
    }

    /// [`Bridge::try_start`] with extra environment variables.
    pub fn try_start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Result<Bridge, String> {
        Bridge::launch(config_toml, env, false, None)
    }

    /// [`Bridge::start`] inside the network namespace `ns` (`ip netns exec`, e.g. a
    /// [`super::Site`]'s `lan`); its listen ports are probed from inside it.
    pub fn start_in(ns: &str, config_toml: &str) -> Bridge {
        Bridge::launch(config_toml, &[], true, Some(ns)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn launch(
        config_toml: &str,
        env: &[(&str, &str)],
        keep_on_error: bool,
        netns: Option<&str>,
    ) -> Result<Bridge, String> {
        let dir = TempDir::new("bridge");
        let config_path = dir.path().join("bridge.toml");
        let log_path = dir.path().join("bridge.log");
        fs::write(&config_path, config_toml).map_err(|e| format!("cannot write config: {e}"))?;
        let (udp, tcp) = listen_addrs(config_toml);
        let child = spawn_bridge(&config_path, &log_path, env, false, netns)?;
        let mut b = Bridge {
            netns: netns.map(String::from),
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
        b.wait_up(keep_on_error)?;
        Ok(b)
    }

    /// Wait (≤10 s) until every listen port answers an OPTIONS.
    fn wait_up(&mut self, keep_on_error: bool) -> Result<(), String> {
        let (udp, tcp) = (self.udp, self.tcp);
        let ns = self.netns.clone();
        let ping = |a: SocketAddr, t: Transport| match &ns {
            Some(ns) => {
                super::netns::netns_sip_ping(ns, a, t, Duration::from_millis(500)).is_some()
            }
            None => sip_ping(a, t, Duration::from_millis(300)).is_some(),
        };
        let mut exited = None;
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(Child::try_wait) {
                exited = Some(s);
                return true;
            }
            udp.is_none_or(|a| ping(a, Transport::Udp))
                && tcp.is_none_or(|a| ping(a, Transport::Tcp))
        });
        if keep_on_error && (exited.is_some() || !up) {
            self.dir.keep();
        }
        if let Some(s) = exited {
            self.exit = Some(s);
            return Err(format!(
                "blf-bridge exited before answering OPTIONS ({s}); config {}, log:\n{}",
                self.config_path.display(),
                tail(&self.log(), 40)
            ));
        }
        if !up {
            return Err(format!(
                "blf-bridge did not answer OPTIONS on {udp:?} / {tcp:?} within 10 s; log:\n{}",
                tail(&self.log(), 40)
            ));
        }
        Ok(())
    }

    /// SIGKILL the bridge (a crash: nothing is flushed, no signal handler runs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(c.id(), "KILL");
            let _ = c.kill();
            self.exit = wait_child(&mut c, Duration::from_secs(5));
        }
    }

    /// The directory holding the config file (and the default `state/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start the bridge again, after [`Bridge::kill`] or [`Bridge::stop`], with
    /// the same config file, state directory and ports; its log is appended to
    /// the same file. Waits until it answers OPTIONS (panics otherwise).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the bridge is still running");
        let child = spawn_bridge(
            &self.config_path,
            &self.log_path,
            &[],
            true,
            self.netns.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
        self.exit = None;
        if let Err(e) = self.wait_up(true) {
            panic!("{e}");
        }
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

/// Start `blf-bridge run --config <config_path>` in its own process group with
/// its output in `log_path` (appended when `append`).
fn spawn_bridge(
    config_path: &Path,
    log_path: &Path,
    env: &[(&str, &str)],
    append: bool,
    netns: Option<&str>,
) -> Result<Child, String> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log_path)
        .map_err(|e| format!("cannot create log: {e}"))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot clone log handle: {e}"))?;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_blf-bridge"));
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = super::netns::Site::command(ns, "timeout");
            c.args(["-s", "TERM", "-k", "5"])
                .arg(super::process::MAX_PROCESS_LIFETIME.as_secs().to_string())
                .arg(&exe);
            c
        }
        None => lifetime_limited(&exe),
    };
    cmd.arg("run")
        .arg("--config")
        .arg(config_path)
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
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
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
pub(super) fn listen_addrs(config_toml: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
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
