//! The harness PBX: Kamailio (tests/harness/kamailio.cfg) on a free port, with its own
//! run directory (SQLite DB with the harness users, ctl socket, log).
#![allow(dead_code)] // some test crates use only part of the PBX controls

use super::process::{
    free_port, lifetime_limited, read_lossy, run_bounded, stop_group, tail, wait_until,
};
use super::sip_client::{Transport, sip_ping};
use super::tmp::TempDir;
use super::tools::{harness_dir, tool};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// Domain / digest realm of the harness PBX.
pub const DOMAIN: &str = "pbx.test";
/// The users provisioned in the harness PBX (user, password).
pub const USERS: [(&str, &str); 3] = [
    ("1001", "pass1001"),
    ("1002", "pass1002"),
    ("1003", "pass1003"),
];

pub(super) const KAMAILIO_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
pub(super) const KAMAILIO_SCHEMAS: [&str; 4] = [
    "standard-create.sql",
    "auth_db-create.sql",
    "presence-create.sql",
    "usrloc-create.sql",
];

/// Password of a harness user (`pass<user>`).
pub fn password(user: &str) -> String {
    format!("pass{user}")
}

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
    /// The address it listens on (`LISTEN_ADDR`); None = 127.0.0.1. With an
    /// address, the port defaults to 5060.
    pub listen_ip: Option<IpAddr>,
    /// Run inside this network namespace (`ip netns exec NS`, e.g. a
    /// [`super::Site`]'s `wan`); readiness is probed from inside it.
    pub netns: Option<String>,
    /// The provider's NAT handling towards the namespace site (`WITH_NAT`, see
    /// the header of tests/harness/kamailio.cfg).
    pub nat: bool,
    /// Also listen for TLS (`WITH_TLS`), with this certificate.
    pub tls: Option<KamailioTls>,
}

/// Kamailio's TLS listener: a server certificate (chain) and key, PEM, written
/// into the run directory with a generated tls.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KamailioTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// TLS port on 127.0.0.1; None = a [`free_port`].
    pub port: Option<u16>,
    /// Require a client certificate issued by these CAs (PEM).
    pub client_ca_pem: Option<String>,
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
            tls: None,
            listen_ip: None,
            netns: None,
            nat: false,
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
    ip: IpAddr,
    port: u16,
    tls_port: Option<u16>,
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
        let ip = opts.listen_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = match (opts.port, opts.listen_ip) {
            (Some(p), _) => p,
            (None, Some(_)) => 5060,
            (None, None) => free_port(),
        };
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
        define(format!("LISTEN_ADDR={ip}"));
        define(format!("SERVER_ADDR=\"sip:{}\"", SocketAddr::new(ip, port)));
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
        let tls_port = match &opts.tls {
            Some(t) => {
                let tls_port = t.port.unwrap_or_else(free_port);
                let (cert, key) = (
                    dir.path().join("tls-cert.pem"),
                    dir.path().join("tls-key.pem"),
                );
                let tls_cfg = dir.path().join("tls.cfg");
                let verify = match &t.client_ca_pem {
                    Some(ca) => {
                        let ca_path = dir.path().join("tls-client-ca.pem");
                        fs::write(&ca_path, ca)
                            .map_err(|e| (format!("cannot write the client CA: {e}"), false))?;
                        format!(
                            "verify_certificate = yes\nrequire_certificate = yes\nca_list = {}\n",
                            ca_path.display()
                        )
                    }
                    None => "verify_certificate = no\nrequire_certificate = no\n".to_string(),
                };
                let conf = format!(
                    "[server:default]\nmethod = TLSv1.2+\n{verify}private_key = {}\ncertificate = {}\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
                    key.display(),
                    cert.display()
                );
                fs::write(&cert, &t.cert_pem)
                    .and_then(|()| fs::write(&key, &t.key_pem))
                    .and_then(|()| fs::write(&tls_cfg, conf))
                    .map_err(|e| (format!("cannot write the TLS files: {e}"), false))?;
                define("WITH_TLS".into());
                define(format!("TLS_PORT={tls_port}"));
                define(format!("TLS_CFG=\"{}\"", tls_cfg.display()));
                Some(tls_port)
            }
            None => None,
        };
        if opts.nat {
            define("WITH_NAT".into());
        }
        // inside a namespace: `ip netns exec NS` in front of everything
        let in_ns = |program: &Path| -> Command {
            match &opts.netns {
                Some(ns) => {
                    let mut c = super::netns::Site::command(ns, "timeout");
                    c.args(["-s", "TERM", "-k", "5"])
                        .arg(super::process::MAX_PROCESS_LIFETIME.as_secs().to_string())
                        .arg(program);
                    c
                }
                None => lifetime_limited(program),
            }
        };
        let _ = fs::write(
            dir.path().join("cmdline.txt"),
            format!("{} {}\n", kamailio.display(), args.join(" ")),
        );

        let check = run_bounded(
            in_ns(&kamailio).args(&args).arg("-c"),
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
        let child = in_ns(&kamailio)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| (format!("cannot start kamailio: {e}"), false))?;
        let mut k = Kamailio {
            ip,
            port,
            tls_port,
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
            let ping = |t| match &k.opts.netns {
                Some(ns) => {
                    super::netns::netns_sip_ping(ns, addr, t, Duration::from_millis(500)).is_some()
                }
                None => sip_ping(addr, t, Duration::from_millis(300)).is_some(),
            };
            ping(Transport::Udp)
                && ping(Transport::Tcp)
                && k.kamcmd(&["core.uptime"]).is_ok()
                && k.tls_port.is_none_or(|p| {
                    std::net::TcpStream::connect_timeout(
                        &SocketAddr::new(k.ip, p),
                        Duration::from_millis(300),
                    )
                    .is_ok()
                })
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
                    "kamailio did not come up on {addr} within 10 s, log {}:\n{}",
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

    /// UDP and TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `listen address:port` (127.0.0.1 unless [`KamailioOpts::listen_ip`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// `127.0.0.1:<TLS port>` when started with [`KamailioOpts::tls`].
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port.map(|p| SocketAddr::new(self.ip, p))
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

    /// SIGKILL it (a crash: its shared memory, and with it every subscription
    /// and registration, is gone). Its port is free again at once.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            super::process::kill_group(c.id(), "KILL");
            let _ = c.kill();
            let _ = c.wait();
        }
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
pub(super) fn init_db(db: &Path) -> Result<(), String> {
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
