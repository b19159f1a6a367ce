//! The configuration file (TOML). Every error names the file and line.
//!
//! ```toml
//! [listen]
//! udp = "0.0.0.0:5060"        # phones send here
//! tcp = "0.0.0.0:5060"        # optional
//! [upstream]
//! proxy = "pbx.example.com:5060"
//! domain = "pbx.example.com"
//! transport = "udp"
//! [[account]]
//! user = "1001"
//! password = "secret"         # or password_env = "VAR"
//! realm = "asterisk"          # optional: the only digest realm answered
//! [profiles]
//! dir = "/etc/blf-bridge/profiles"
//! ```

use crate::sip::Transport;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Spanned;

mod cidr;
mod lint;

pub use cidr::{Cidr, default_allow};
pub use lint::MAX_FIRST_NOTIFY_TIMEOUT_MS;

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a line (e.g. unreadable file).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..offset.min(text.len())]).count() + 1
}

/// Default `[state] dir`, beside the configuration file.
pub const DEFAULT_STATE_DIR: &str = "state";
/// Environment variable naming the state directory when the file does not
/// (the container image sets it to its volume, `/var/lib/blf-bridge`).
pub const STATE_DIR_ENV: &str = "BLF_STATE_DIR";

/// `[upstream] keepalive_interval` when not given: below the 30 s after which
/// Linux (and many routers) forget a UDP binding, so that the provider can
/// always reach the bridge through the customer's NAT.
pub const DEFAULT_KEEPALIVE_INTERVAL_S: u64 = 20;

/// `path` resolved against the directory of the configuration file `file`.
pub fn relative_to_file(file: &str, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match Path::new(file).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(p),
        _ => p.to_path_buf(),
    }
}

/// Whether the text says `[state] dir = ""`.
fn state_disabled(text: &str) -> bool {
    #[derive(Deserialize)]
    struct S {
        #[serde(default)]
        state: Option<D>,
    }
    #[derive(Deserialize)]
    struct D {
        dir: Option<String>,
    }
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.try_into::<S>().ok())
        .and_then(|s| s.state)
        .and_then(|d| d.dir)
        .is_some_and(|d| d.is_empty())
}

// ------------------------------------------------------------------ raw (serde)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Spanned<RawListen>,
    upstream: Spanned<RawUpstream>,
    #[serde(default)]
    account: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    profiles: RawProfiles,
    #[serde(default)]
    subscriptions: RawSubscriptions,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<String>>,
    user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    udp: Option<Spanned<String>>,
    tcp: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    proxy: Spanned<String>,
    domain: Spanned<String>,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    empty_presence: Option<Spanned<String>>,
    #[serde(default)]
    keepalive: Option<Spanned<String>>,
    keepalive_interval: Option<Spanned<u64>>,
    #[serde(default)]
    dns: Option<Spanned<String>>,
    #[serde(default)]
    tls_name: Option<Spanned<String>>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    client_cert: Option<Spanned<String>>,
    #[serde(default)]
    client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    user: String,
    auth_user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    realm: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    dir: Option<String>,
    default: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSubscriptions {
    min_expires: Option<u32>,
    max_expires: Option<u32>,
    default_expires: Option<u32>,
    upstream_expires: Option<u32>,
    first_notify_timeout_ms: Option<u64>,
    linger: Option<u64>,
    retry_min: Option<u64>,
    retry_max: Option<u64>,
    upstream_rate: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    allow: Option<Vec<Spanned<String>>>,
    watchers: Option<Spanned<String>>,
    max_targets: Option<usize>,
    max_subscriptions_per_source: Option<usize>,
    max_subscriptions_per_target: Option<usize>,
    max_tcp_per_source: Option<usize>,
    max_pending_registrations: Option<usize>,
    max_contacts_per_register: Option<usize>,
    rate_per_source: Option<Spanned<u32>>,
    block_s: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    path: Option<bool>,
}

// -------------------------------------------------------------- validated types

/// How the bridge keeps the NAT binding towards the upstream alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    None,
    /// OPTIONS pings (and the 200 refreshes the binding).
    Options,
    /// CRLF pings (RFC 5626 on TCP, a bare CRLF datagram on UDP).
    Crlf,
}

/// What a presence NOTIFY without a body means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPresence {
    Offline,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// Host (name or address) written into Via/Contact/Record-Route instead of the
    /// bound address (needed when listening on 0.0.0.0).
    pub advertise: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` as configured (resolved by the runtime).
    pub proxy: String,
    pub proxy_host: String,
    pub proxy_port: u16,
    /// `proxy` is a bare domain (no port, not an IP literal): resolved the
    /// RFC 3263 way (NAPTR, SRV, then A/AAAA on 5060).
    pub proxy_srv: bool,
    /// `transport` was written in the file (then NAPTR is skipped: SRV for
    /// that transport directly).
    pub transport_given: bool,
    /// `dns`: the DNS server to ask (`ip[:port]`, port 53 by default); `None`:
    /// the system's (resolv.conf).
    pub dns: Option<SocketAddr>,
    pub domain: String,
    pub transport: Transport,
    pub aliases: Vec<String>,
    pub empty_presence: EmptyPresence,
    pub keepalive: Keepalive,
    pub keepalive_interval_s: u64,
    /// `transport = "tls"` only: how the provider's certificate is checked.
    pub tls: Option<UpstreamTls>,
}

/// `[upstream]` TLS settings (`transport = "tls"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name the certificate must carry, also sent as SNI: `tls_name`, else
    /// the host of `proxy`.
    pub name: String,
    /// Extra trusted CAs (PEM), besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), when the provider asks for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub auth_user: String,
    pub password: String,
    /// The only digest realm the account's credentials answer (`None`: the
    /// first realm the upstream challenges with is kept).
    pub realm: Option<String>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("auth_user", &self.auth_user)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriptions {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub upstream_expires: u32,
    pub first_notify_timeout_ms: u64,
    pub linger_s: u64,
    pub retry_min_s: u64,
    pub retry_max_s: u64,
    /// Upstream SUBSCRIBEs per second at most (initial, refresh, retry,
    /// un-SUBSCRIBE), with a burst of as many; so a site coming up, or a bridge
    /// resuming thousands of targets, does not flood the provider.
    pub upstream_rate: u32,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            upstream_expires: 600,
            first_notify_timeout_ms: 2000,
            linger_s: 30,
            retry_min_s: 5,
            retry_max_s: 300,
            upstream_rate: 20,
        }
    }
}

/// Who may have a BLF SUBSCRIBE translated (`[security] watchers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchers {
    /// A phone that registered through the bridge, from the address it
    /// registered from, or whose From user is an `[[account]]` user.
    Registered,
    /// Any source in `allow`.
    Allowed,
}

/// `[security]`: who may use the bridge, and the caps and rate limits that
/// keep one source from exhausting it or flooding the provider through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    pub allow: Vec<Cidr>,
    pub watchers: Watchers,
    /// Targets watched at once (each costs two upstream subscriptions).
    pub max_targets: usize,
    /// Phone subscriptions from one source IP.
    pub max_subscriptions_per_source: usize,
    /// Phone subscriptions to one target.
    pub max_subscriptions_per_target: usize,
    /// TCP connections from one source IP (the upstream excepted).
    pub max_tcp_per_source: usize,
    /// Bindings the registrar has not accepted yet, bridge-wide.
    pub max_pending_registrations: usize,
    /// Contacts in one REGISTER.
    pub max_contacts_per_register: usize,
    /// Requests per second from one source IP (a burst of twice as many);
    /// beyond it requests are dropped. The upstream is not limited.
    pub rate_per_source: u32,
    /// A source whose REGISTERs got [`AUTH_FAILURES_TO_BLOCK`] 401/403/407
    /// answers within [`AUTH_FAILURE_WINDOW_S`] is ignored this long.
    pub block_s: u64,
}

/// Authentication failures (401/403/407 to a source's REGISTERs) that block it.
pub const AUTH_FAILURES_TO_BLOCK: u32 = 10;
/// The window in which they are counted, seconds.
pub const AUTH_FAILURE_WINDOW_S: u64 = 60;

impl Default for Security {
    fn default() -> Self {
        Security {
            allow: default_allow(),
            watchers: Watchers::Registered,
            max_targets: 2000,
            max_subscriptions_per_source: 200,
            max_subscriptions_per_target: 200,
            max_tcp_per_source: 32,
            max_pending_registrations: 1000,
            max_contacts_per_register: 16,
            rate_per_source: 50,
            block_s: 60,
        }
    }
}

impl Security {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }
}

/// `[http]`: the operator's window (lamp panel, metrics, health, API).
#[derive(Clone, PartialEq, Eq)]
pub struct Http {
    /// `None`: no HTTP listener (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// Basic authentication for every path but `/healthz` when both are set.
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Default `[http] listen`: loopback only.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it was loaded from (for messages).
    pub source: String,
    pub listen: Listen,
    pub upstream: Upstream,
    pub accounts: Vec<Account>,
    pub profiles_dir: Option<PathBuf>,
    /// Profile used when no User-Agent pattern matches (default `generic`).
    pub default_profile: String,
    pub subscriptions: Subscriptions,
    pub security: Security,
    /// Add a Path header to REGISTERs when the phone supports it (RFC 3327).
    pub use_path: bool,
    /// Where the state store lives (`[state] dir`, relative to the config
    /// file's directory). `None`: no store (`dir = ""`, or a configuration
    /// parsed from text without a file and without `dir`).
    pub state_dir: Option<PathBuf>,
    pub http: Http,
}

impl Config {
    /// Load and validate a file. Environment variables named by `password_env` are
    /// read here.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        Self::load_with_env(path, &|k| std::env::var(k).ok())
    }

    /// [`Config::load`] with `password_env` resolved by `env` (`health` and
    /// `status` pass a stand-in so they run without the account passwords).
    /// A file must have an `[[account]]` (text parsed by [`Config::parse`] need not).
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                file: name.clone(),
                line: 0,
                message: format!("cannot read: {e}"),
            }]
        })?;
        let mut cfg = match (
            Self::parse(&text, &name, env),
            lint::no_account(&text, &name),
        ) {
            (Ok(cfg), None) => cfg,
            (Ok(_), Some(e)) => return Err(vec![e]),
            (Err(mut errors), e) => {
                errors.extend(e);
                errors.sort_by_key(|e| e.line);
                return Err(errors);
            }
        };
        // default store: $BLF_STATE_DIR (the container sets it to its volume),
        // else a `state` directory beside the file; none with `dir = ""`
        if cfg.state_dir.is_none() && !state_disabled(&text) {
            cfg.state_dir = Some(match std::env::var_os(STATE_DIR_ENV) {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => relative_to_file(&name, DEFAULT_STATE_DIR),
            });
        }
        Ok(cfg)
    }

    /// Parse configuration text. `env` resolves `password_env`.
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let err_at = |errors: &mut Vec<ConfigError>, off: usize, msg: String| {
            errors.push(ConfigError {
                file: file.to_string(),
                line: line_of(text, off),
                message: msg,
            })
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                // every syntax/type error with its key, and the mistakes serde cannot see
                let mut all = lint::structure(text, file);
                if all.is_empty() {
                    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
                    all.push(ConfigError {
                        file: file.to_string(),
                        line,
                        message: e.message().trim().to_string(),
                    });
                }
                all.extend(lint::semantics(text, file));
                all.sort_by_key(|e| e.line);
                return Err(all);
            }
        };
        errors.extend(lint::semantics(text, file));

        // [listen]
        let listen_span = raw.listen.span();
        let rl = raw.listen.into_inner();
        let addr = |v: &Option<Spanned<String>>, key: &str, errors: &mut Vec<ConfigError>| {
            v.as_ref()
                .and_then(|s| match s.get_ref().parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        err_at(
                            errors,
                            s.span().start,
                            format!(
                                "listen.{key}: '{}' is not an address:port (e.g. \"0.0.0.0:5060\")",
                                s.get_ref()
                            ),
                        );
                        None
                    }
                })
        };
        let udp = addr(&rl.udp, "udp", &mut errors);
        let tcp = addr(&rl.tcp, "tcp", &mut errors);
        if rl.udp.is_none() && rl.tcp.is_none() {
            err_at(
                &mut errors,
                listen_span.start,
                "[listen] needs at least one of udp or tcp".into(),
            );
        }
        let (udp_given, tcp_given) = (rl.udp.is_some(), rl.tcp.is_some());
        let advertise = rl.advertise.map(|a| a.into_inner());

        // [upstream]
        let ru = raw.upstream.into_inner();
        let (proxy_host, proxy_port) = match split_host_port(ru.proxy.get_ref()) {
            Ok(hp) => hp,
            Err(m) => {
                err_at(
                    &mut errors,
                    ru.proxy.span().start,
                    format!("upstream.proxy: {m}"),
                );
                (String::new(), 5060)
            }
        };
        let proxy_srv = {
            let p = ru.proxy.get_ref().trim();
            !p.starts_with('[') && !p.contains(':') && p.parse::<IpAddr>().is_err() && !p.is_empty()
        };
        let transport_given = ru.transport.is_some();
        let dns = ru.dns.as_ref().and_then(|d| {
            let v = d.get_ref().trim();
            let parsed = v
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| v.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
            if parsed.is_none() {
                err_at(
                    &mut errors,
                    d.span().start,
                    format!("upstream.dns: '{v}' is not an IP address or ip:port (e.g. \"192.0.2.53\" or \"127.0.0.1:5353\")"),
                );
            }
            parsed
        });
        if ru.domain.get_ref().trim().is_empty() {
            err_at(
                &mut errors,
                ru.domain.span().start,
                "upstream.domain must not be empty".into(),
            );
        }
        let transport = match ru
            .transport
            .as_ref()
            .map(|t| t.get_ref().to_ascii_lowercase())
        {
            None => Transport::Udp,
            Some(t) if t == "udp" => Transport::Udp,
            Some(t) if t == "tcp" => Transport::Tcp,
            Some(t) if t == "tls" => Transport::Tls,
            Some(t) => {
                let span = ru.transport.as_ref().map(|s| s.span().start).unwrap_or(0);
                err_at(
                    &mut errors,
                    span,
                    format!("upstream.transport: '{t}' is not udp, tcp or tls"),
                );
                Transport::Udp
            }
        };
        if transport == Transport::Tcp && !tcp_given {
            let span = ru.transport.as_ref().map(|s| s.span().start).unwrap_or(0);
            err_at(
                &mut errors,
                span,
                "upstream.transport = \"tcp\" needs listen.tcp (the bridge opens TCP connections from its TCP listener)".into(),
            );
        }
        if transport == Transport::Udp && !udp_given {
            err_at(
                &mut errors,
                listen_span.start,
                "upstream.transport = \"udp\" needs listen.udp".into(),
            );
        }
        // RFC 3261 §19.1.2: SIP over TLS defaults to port 5061
        let proxy_port = if transport == Transport::Tls && !has_port(ru.proxy.get_ref()) {
            5061
        } else {
            proxy_port
        };
        let tls_path = |v: &Option<Spanned<String>>| {
            v.as_ref()
                .map(|s| (s.span().start, relative_to_file(file, s.get_ref())))
        };
        let (ca_file, client_cert, client_key) = (
            tls_path(&ru.ca_file),
            tls_path(&ru.client_cert),
            tls_path(&ru.client_key),
        );
        let tls = if transport == Transport::Tls {
            let name = match &ru.tls_name {
                Some(n) => {
                    if let Err(m) = crate::tls::server_name(n.get_ref()) {
                        err_at(
                            &mut errors,
                            n.span().start,
                            format!("upstream.tls_name: {m}"),
                        );
                    }
                    n.get_ref().trim().to_string()
                }
                None => proxy_host.clone(),
            };
            let problems = crate::tls::check_files(
                ca_file.as_ref().map(|(_, p)| p.as_path()),
                client_cert.as_ref().map(|(_, p)| p.as_path()),
                client_key.as_ref().map(|(_, p)| p.as_path()),
            );
            for (key, m) in problems {
                let at = match key {
                    "ca_file" => &ca_file,
                    "client_cert" => &client_cert,
                    _ => &client_key,
                };
                let off = at
                    .as_ref()
                    .or(client_cert.as_ref())
                    .or(client_key.as_ref())
                    .map(|(o, _)| *o)
                    .unwrap_or(0);
                err_at(&mut errors, off, format!("upstream.{key}: {m}"));
            }
            Some(UpstreamTls {
                name,
                ca_file: ca_file.map(|(_, p)| p),
                client_cert: client_cert.map(|(_, p)| p),
                client_key: client_key.map(|(_, p)| p),
            })
        } else {
            let given = [
                ("tls_name", ru.tls_name.as_ref().map(|s| s.span().start)),
                ("ca_file", ca_file.as_ref().map(|(o, _)| *o)),
                ("client_cert", client_cert.as_ref().map(|(o, _)| *o)),
                ("client_key", client_key.as_ref().map(|(o, _)| *o)),
            ];
            for (key, off) in given {
                if let Some(off) = off {
                    err_at(
                        &mut errors,
                        off,
                        format!("upstream.{key} is only used with transport = \"tls\""),
                    );
                }
            }
            None
        };
        let empty_presence = match ru.empty_presence.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("offline") => EmptyPresence::Offline,
            Some("unknown") => EmptyPresence::Unknown,
            Some(o) => {
                let span = ru
                    .empty_presence
                    .as_ref()
                    .map(|s| s.span().start)
                    .unwrap_or(0);
                err_at(
                    &mut errors,
                    span,
                    format!("upstream.empty_presence: '{o}' is not \"offline\" or \"unknown\""),
                );
                EmptyPresence::Offline
            }
        };
        let keepalive = match ru.keepalive.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("options") => Keepalive::Options,
            Some("crlf") => Keepalive::Crlf,
            Some("none") => Keepalive::None,
            Some(o) => {
                let span = ru.keepalive.as_ref().map(|s| s.span().start).unwrap_or(0);
                err_at(
                    &mut errors,
                    span,
                    format!("upstream.keepalive: '{o}' is not \"options\", \"crlf\" or \"none\""),
                );
                Keepalive::Options
            }
        };
        let keepalive_interval_s = match &ru.keepalive_interval {
            None => DEFAULT_KEEPALIVE_INTERVAL_S,
            Some(v) if *v.get_ref() >= 5 => *v.get_ref(),
            Some(v) => {
                err_at(
                    &mut errors,
                    v.span().start,
                    "upstream.keepalive_interval must be >= 5 seconds".into(),
                );
                DEFAULT_KEEPALIVE_INTERVAL_S
            }
        };

        // [[account]]
        let mut accounts = Vec::new();
        for a in &raw.account {
            let span = a.span().start;
            let a = a.get_ref();
            let password = match (&a.password, &a.password_env) {
                (Some(p), None) => Some(p.clone()),
                (None, Some(var)) => match env(var) {
                    Some(p) => Some(p),
                    None => {
                        err_at(
                            &mut errors,
                            span,
                            format!(
                                "account '{}': environment variable {var} is not set",
                                a.user
                            ),
                        );
                        None
                    }
                },
                (Some(_), Some(_)) => {
                    err_at(
                        &mut errors,
                        span,
                        format!(
                            "account '{}': give password or password_env, not both",
                            a.user
                        ),
                    );
                    None
                }
                (None, None) => {
                    err_at(
                        &mut errors,
                        span,
                        format!("account '{}': missing password (or password_env)", a.user),
                    );
                    None
                }
            };
            if a.user.trim().is_empty() {
                err_at(&mut errors, span, "account: user must not be empty".into());
            }
            if a.realm.as_ref().is_some_and(|r| r.trim().is_empty()) {
                err_at(
                    &mut errors,
                    span,
                    format!("account '{}': realm must not be empty", a.user),
                );
            }
            if let Some(password) = password {
                accounts.push(Account {
                    auth_user: a.auth_user.clone().unwrap_or_else(|| a.user.clone()),
                    user: a.user.clone(),
                    password,
                    realm: a.realm.clone(),
                });
            }
        }

        // [subscriptions]
        let d = Subscriptions::default();
        let rs = raw.subscriptions;
        let subscriptions = Subscriptions {
            min_expires: rs.min_expires.unwrap_or(d.min_expires),
            max_expires: rs.max_expires.unwrap_or(d.max_expires),
            default_expires: rs.default_expires.unwrap_or(d.default_expires),
            upstream_expires: rs.upstream_expires.unwrap_or(d.upstream_expires),
            first_notify_timeout_ms: rs
                .first_notify_timeout_ms
                .unwrap_or(d.first_notify_timeout_ms),
            linger_s: rs.linger.unwrap_or(d.linger_s),
            retry_min_s: rs.retry_min.unwrap_or(d.retry_min_s),
            retry_max_s: rs.retry_max.unwrap_or(d.retry_max_s),
            upstream_rate: rs.upstream_rate.unwrap_or(d.upstream_rate),
        };
        let sub_line = text.find("[subscriptions]").unwrap_or(0);
        if subscriptions.min_expires > subscriptions.max_expires {
            err_at(
                &mut errors,
                sub_line,
                "subscriptions.min_expires is larger than max_expires".into(),
            );
        }
        if subscriptions.upstream_rate == 0 {
            err_at(
                &mut errors,
                sub_line,
                "subscriptions.upstream_rate must be at least 1 SUBSCRIBE per second".into(),
            );
        }
        if subscriptions.upstream_expires < 30 {
            err_at(
                &mut errors,
                sub_line,
                "subscriptions.upstream_expires must be >= 30 seconds".into(),
            );
        }
        if subscriptions.retry_min_s == 0 || subscriptions.retry_min_s > subscriptions.retry_max_s {
            err_at(
                &mut errors,
                sub_line,
                "subscriptions: need 0 < retry_min <= retry_max".into(),
            );
        }

        // [security]
        let rsec = raw.security;
        let dsec = Security::default();
        let watchers = match rsec.watchers.as_ref().map(|w| w.get_ref().as_str()) {
            None | Some("registered") => Watchers::Registered,
            Some("allowed") => Watchers::Allowed,
            Some(o) => {
                let span = rsec.watchers.as_ref().map(|s| s.span().start).unwrap_or(0);
                err_at(
                    &mut errors,
                    span,
                    format!("security.watchers: '{o}' is not \"registered\" or \"allowed\""),
                );
                Watchers::Registered
            }
        };
        let rate_per_source = match &rsec.rate_per_source {
            None => dsec.rate_per_source,
            Some(r) if *r.get_ref() > 0 => *r.get_ref(),
            Some(r) => {
                err_at(
                    &mut errors,
                    r.span().start,
                    "security.rate_per_source must be at least 1 request per second".into(),
                );
                dsec.rate_per_source
            }
        };
        let allow = match rsec.allow {
            None => default_allow(),
            Some(list) => list
                .iter()
                .filter_map(|s| match Cidr::parse(s.get_ref()) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        err_at(&mut errors, s.span().start, format!("security.allow: {m}"));
                        None
                    }
                })
                .collect(),
        };

        let default_profile = raw
            .profiles
            .default
            .map(|s| s.into_inner())
            .unwrap_or_else(|| "generic".to_string());

        // [http]
        let rh = raw.http;
        let listen = match rh.listen.as_ref().map(|l| l.get_ref().as_str()) {
            Some("") => None,
            other => match other.unwrap_or(DEFAULT_HTTP_LISTEN).parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    let span = rh.listen.as_ref().map(|l| l.span().start).unwrap_or(0);
                    err_at(
                        &mut errors,
                        span,
                        format!(
                            "http.listen: '{}' is not an address:port (e.g. \"127.0.0.1:8080\"; \"\" turns the HTTP listener off)",
                            other.unwrap_or_default()
                        ),
                    );
                    None
                }
            },
        };
        let http_line = text.find("[http]").unwrap_or(0);
        let http_password = match (&rh.password, &rh.password_env) {
            (Some(p), None) => Some(p.clone()),
            (None, Some(var)) => {
                let p = env(var);
                if p.is_none() {
                    err_at(
                        &mut errors,
                        http_line,
                        format!("http.password_env: environment variable {var} is not set"),
                    );
                }
                p
            }
            (Some(_), Some(_)) => {
                err_at(
                    &mut errors,
                    http_line,
                    "http: give password or password_env, not both".into(),
                );
                None
            }
            (None, None) => None,
        };
        if rh.user.is_some() != http_password.is_some() && errors.is_empty() {
            err_at(
                &mut errors,
                http_line,
                "http: basic authentication needs both user and password (or password_env)".into(),
            );
        }
        let http = Http {
            listen,
            user: rh.user,
            password: http_password,
        };

        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(errors);
        }
        Ok(Config {
            source: file.to_string(),
            listen: Listen {
                udp,
                tcp,
                advertise,
            },
            upstream: Upstream {
                proxy: ru.proxy.into_inner(),
                proxy_host,
                proxy_port,
                proxy_srv,
                transport_given,
                dns,
                domain: ru.domain.into_inner(),
                transport,
                aliases: ru.aliases,
                empty_presence,
                keepalive,
                keepalive_interval_s,
                tls,
            },
            accounts,
            profiles_dir: raw.profiles.dir.map(|d| relative_to_file(file, &d)),
            default_profile,
            subscriptions,
            security: Security {
                allow,
                watchers,
                max_targets: rsec.max_targets.unwrap_or(dsec.max_targets),
                max_subscriptions_per_source: rsec
                    .max_subscriptions_per_source
                    .unwrap_or(dsec.max_subscriptions_per_source),
                max_subscriptions_per_target: rsec
                    .max_subscriptions_per_target
                    .unwrap_or(dsec.max_subscriptions_per_target),
                max_tcp_per_source: rsec.max_tcp_per_source.unwrap_or(dsec.max_tcp_per_source),
                max_pending_registrations: rsec
                    .max_pending_registrations
                    .unwrap_or(dsec.max_pending_registrations),
                max_contacts_per_register: rsec
                    .max_contacts_per_register
                    .unwrap_or(dsec.max_contacts_per_register),
                rate_per_source,
                block_s: rsec.block_s.unwrap_or(dsec.block_s),
            },
            use_path: raw.proxy.path.unwrap_or(true),
            http,
            state_dir: match raw.state.dir.as_deref() {
                Some("") => None,
                Some(d) => Some(relative_to_file(file, d)),
                None => None,
            },
        })
    }

    /// The account used for a request on behalf of a phone whose From user is
    /// `user`: the account with that user, else the first account.
    pub fn account_for(&self, user: Option<&str>) -> Option<&Account> {
        user.and_then(|u| self.accounts.iter().find(|a| a.user == u))
            .or_else(|| self.accounts.first())
    }
}

/// Split `host[:port]` (IPv6 in brackets).
/// Does a `host[:port]` / `[v6][:port]` string name a port?
fn has_port(s: &str) -> bool {
    let s = s.trim();
    match s.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, a)| a.starts_with(':')),
        None => s.rsplit_once(':').is_some_and(|(h, _)| !h.contains(':')),
    }
}

pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unterminated [IPv6] address")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port in '{s}'"))?,
            None if after.is_empty() => 5060,
            None => return Err(format!("bad address '{s}'")),
        };
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| format!("bad port in '{s}'"))?;
            Ok((h.to_string(), port))
        }
        _ => Ok((s.to_string(), 5060)),
    }
}

#[cfg(test)]
mod tests;
