//! The thin tokio runtime around the sans-IO [`Endpoint`]: sockets, timers,
//! signals and nothing else.
//!
//! Tasks:
//! - the **core task** owns the endpoint (no locks): it `select!`s over UDP
//!   receive, events from connection tasks, the endpoint's next timeout and
//!   shutdown, and after every event performs all of the endpoint's
//!   [`Transmit`]s;
//! - an **acceptor** hands accepted TCP connections to the core task, which
//!   enforces [`RuntimeOptions::max_tcp_connections`];
//! - one **task per TCP connection** frames incoming bytes
//!   ([`StreamFramer`](crate::sip::StreamFramer)) and writes what the core
//!   queued for it through a bounded queue.
//!
//! TCP transmits go to `flow.conn` if it is still open, else to any open
//! connection to `flow.remote`, else over a new connection (connect timeout
//! [`RuntimeOptions::tcp_connect_timeout`]). Connections are reused in both
//! directions: a connection a phone opened carries the bridge's requests to it.
//! Every connection has a [`ConnId`]; when one ends the
//! endpoint hears `connection_closed`.
//!
//! A peer that does not read cannot block the core: when its queue
//! ([`RuntimeOptions::tcp_write_queue`]) is full the connection is closed. A
//! connection without traffic in either direction for
//! [`RuntimeOptions::tcp_idle_timeout`] is closed; traffic the endpoint sends
//! counts, so connections it keeps using stay open.
//!
//! Shutdown (SIGINT/SIGTERM with [`RuntimeOptions::handle_signals`], or a
//! [`ShutdownHandle`]) is graceful: the core hears
//! [`SansIoCore::begin_shutdown`] and is served until it is drained or
//! [`RuntimeOptions::shutdown_grace`] has passed; then its last transmits are
//! sent, the state store is flushed, the listeners closed and each connection
//! writes out its queue (again bounded by the grace period).
//!
//! With a state store, what the core sends after a durable batch waits for the
//! store's writer to confirm it (at most 2 s: a hanging disk must not stop
//! calls, so past that the bridge sends without waiting until it caught up).

mod conn;
pub mod dns;
mod event_loop;
mod lane;
mod mmsg;
pub mod net;

use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::flow::{ConnId, Flow, Transmit};
use crate::local::LocalAddrs;
use crate::sip::{SipMessage, Transport};
use bytes::Bytes;
use conn::ConnParams;
pub use event_loop::Reloader;
use event_loop::{EventLoop, SignalFuture};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default for [`RuntimeOptions::max_tcp_connections`].
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 4096;
/// Default for [`RuntimeOptions::tcp_idle_timeout`]: 10 minutes.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default for [`RuntimeOptions::tcp_connect_timeout`].
pub const DEFAULT_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`RuntimeOptions::tcp_message_timeout`]: 5 seconds.
pub const DEFAULT_TCP_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the runtime drives: the methods of [`Endpoint`]. It is a trait so the
/// runtime can be exercised with a scripted core in tests; the bridge itself
/// always runs an [`Endpoint`] (see [`Runtime::start`]).
pub trait SansIoCore {
    /// A UDP datagram (one message) arrived.
    fn handle_datagram(&mut self, from: Flow, data: Bytes, now: Instant);
    /// A framed message arrived on a TCP connection.
    fn handle_message(&mut self, from: Flow, msg: SipMessage, now: Instant);
    /// A CRLFCRLF keep-alive arrived on a TCP connection.
    fn handle_keepalive_ping(&mut self, from: Flow);
    /// The deadline from [`SansIoCore::poll_timeout`] passed.
    fn handle_timeout(&mut self, now: Instant);
    /// A TCP connection ended.
    fn connection_closed(&mut self, conn: ConnId, now: Instant);
    /// `server` could not be reached (a UDP send error, a refused or reset TCP
    /// connection). Default: ignored.
    fn transport_failed(&mut self, _server: Flow, _now: Instant) {}
    /// `[upstream] proxy` was resolved again: the servers, most preferred
    /// first. Default: ignored.
    fn set_upstreams(&mut self, _servers: Vec<Flow>, _now: Instant) {}
    /// The host names of that resolution (SRV targets). Default: ignored.
    fn set_upstream_names(&mut self, _names: Vec<String>) {}
    /// The next message to send, at `now` (a core may build it only now: the
    /// bridge makes a fan-out's NOTIFYs one at a time, as they are sent).
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    /// Whether the message `poll_transmit` just returned may be sent in any
    /// order among the other such messages of the same flush (a phone NOTIFY
    /// of a fan-out: one per dialog). The runtime may then send part of a
    /// large fan-out from a second thread. Default: never.
    fn transmit_is_independent(&self) -> bool {
        false
    }
    /// When `handle_timeout` is due next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A graceful stop begins (SIGINT/SIGTERM or [`ShutdownHandle::shutdown`]):
    /// the place to stop taking new requests (the bridge keeps its phone
    /// subscriptions: they resume at the next start). The runtime keeps serving
    /// until [`SansIoCore::is_drained`] or [`RuntimeOptions::shutdown_grace`]
    /// has passed. Default: nothing to do.
    fn begin_shutdown(&mut self, _now: Instant) {}
    /// Whether the work started by `begin_shutdown` is done. Default: `true`.
    fn is_drained(&self) -> bool {
        true
    }
    /// State changed since the last call, to be made durable. Everything the
    /// core sends after a batch was taken is held back until the store has
    /// committed it (see [`crate::store`]). Default: nothing to persist.
    fn poll_persist(&mut self) -> Option<crate::store::Batch> {
        None
    }
    /// `poll_transmit` returned `None` only because the next message waits
    /// for `poll_persist` to take a change first (the runtime takes it and
    /// polls on). Default: never.
    fn waits_for_persist(&self) -> bool {
        false
    }
    /// The operator's window: a snapshot of the state (none by default);
    /// `full`: with every target and its watchers, else the counts only.
    fn status(&self, _now: Instant, _full: bool) -> Option<crate::endpoint::status::Status> {
        None
    }
    /// SIGHUP: a new configuration and profile set were loaded. Default: ignored.
    fn reload(
        &mut self,
        _cfg: Arc<Config>,
        _profiles: Arc<crate::profile::ProfileSet>,
        _now: Instant,
    ) {
    }
}

impl SansIoCore for Endpoint {
    fn handle_datagram(&mut self, from: Flow, data: Bytes, now: Instant) {
        Endpoint::handle_datagram(self, from, data, now)
    }
    fn handle_message(&mut self, from: Flow, msg: SipMessage, now: Instant) {
        Endpoint::handle_message(self, from, msg, now)
    }
    fn handle_keepalive_ping(&mut self, from: Flow) {
        Endpoint::handle_keepalive_ping(self, from)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now)
    }
    fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        Endpoint::connection_closed(self, conn, now)
    }
    fn transport_failed(&mut self, server: Flow, now: Instant) {
        Endpoint::transport_failed(self, server, now)
    }
    fn set_upstreams(&mut self, servers: Vec<Flow>, now: Instant) {
        Endpoint::set_upstreams(self, servers, now)
    }
    fn set_upstream_names(&mut self, names: Vec<String>) {
        Endpoint::set_upstream_names(self, names)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        Endpoint::poll_transmit_at(self, now)
    }
    fn transmit_is_independent(&self) -> bool {
        Endpoint::transmit_is_fanout(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }
    fn begin_shutdown(&mut self, now: Instant) {
        Endpoint::begin_shutdown(self, now)
    }
    fn is_drained(&self) -> bool {
        Endpoint::is_drained(self)
    }
    fn poll_persist(&mut self) -> Option<crate::store::Batch> {
        Endpoint::poll_persist(self)
    }
    fn waits_for_persist(&self) -> bool {
        Endpoint::waits_for_persist(self)
    }
    fn status(&self, now: Instant, full: bool) -> Option<crate::endpoint::status::Status> {
        Some(if full {
            Endpoint::status(self, now)
        } else {
            Endpoint::status_summary(self, now)
        })
    }
    fn reload(
        &mut self,
        cfg: Arc<Config>,
        profiles: Arc<crate::profile::ProfileSet>,
        now: Instant,
    ) {
        Endpoint::reload(self, cfg, profiles, now)
    }
}

/// Knobs of the runtime that are not in the configuration file.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// Seed for the endpoint's random source (branches, tags). `None`: from the
    /// OS. Tests fix it.
    pub seed: Option<u64>,
    /// Stop on SIGINT/SIGTERM (Ctrl-C elsewhere). The CLI sets it; in-process
    /// tests leave it off and use [`ShutdownHandle`].
    pub handle_signals: bool,
    /// An accepted TCP connection is closed at once while this many connections
    /// (accepted or opened by the bridge) are open. Connections the bridge
    /// opens itself are never refused.
    pub max_tcp_connections: usize,
    /// Close a TCP connection after this long without traffic in either direction.
    pub tcp_idle_timeout: Duration,
    /// Close a TCP connection whose peer started a message (or, on an accepted
    /// connection, connected) and has not completed it within this long: a
    /// slow or unfinished header must not hold a connection and its buffer.
    pub tcp_message_timeout: Duration,
    /// Give up opening a TCP connection after this long.
    pub tcp_connect_timeout: Duration,
    /// Close a TCP connection whose peer has not taken a message for this long.
    pub tcp_write_timeout: Duration,
    /// Messages queued per TCP connection; when full, the peer is considered
    /// dead and the connection is closed.
    pub tcp_write_queue: usize,
    /// Datagrams larger than this are dropped with a warning. Defaults to
    /// [`crate::sip::MAX_MESSAGE_SIZE`]; larger values are capped there.
    pub max_datagram_size: usize,
    /// How long name resolution of `[upstream] proxy` may take at start-up.
    pub resolve_timeout: Duration,
    /// How long a graceful stop waits for the core to drain
    /// ([`SansIoCore::is_drained`]), and then for connections to write out
    /// their queues.
    pub shutdown_grace: Duration,
    /// Device profiles (built-in ones when `None`).
    pub profiles: Option<Arc<crate::profile::ProfileSet>>,
    /// How SIGHUP reloads the configuration and profiles (the CLI sets it;
    /// without it SIGHUP is not handled).
    pub reloader: Option<event_loop::Reloader>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            seed: None,
            handle_signals: false,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            tcp_message_timeout: DEFAULT_TCP_MESSAGE_TIMEOUT,
            tcp_connect_timeout: DEFAULT_TCP_CONNECT_TIMEOUT,
            tcp_write_timeout: Duration::from_secs(30),
            tcp_write_queue: 256,
            max_datagram_size: crate::sip::MAX_MESSAGE_SIZE,
            resolve_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            profiles: None,
            reloader: None,
        }
    }
}

/// Limits the core task applies.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_tcp_connections: usize,
    /// `[security] allow`: an accepted connection from elsewhere (but the
    /// upstream) is closed at once.
    pub allow: Vec<crate::config::Cidr>,
    /// `[security] max_tcp_per_source`: accepted connections from one IP (the
    /// upstream excepted).
    pub max_tcp_per_source: usize,
    /// The upstream's IP: it may connect from anywhere, as often as it likes.
    pub upstream_ips: Vec<std::net::IpAddr>,
    pub tcp_write_queue: usize,
    pub max_datagram_size: usize,
    pub shutdown_grace: Duration,
}

/// Why the runtime could not start or stopped abnormally.
#[derive(Debug)]
pub enum RuntimeError {
    /// A listener could not be bound.
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: io::Error,
    },
    /// `[upstream] proxy` did not resolve.
    Resolve { proxy: String, detail: String },
    /// No host to advertise could be found.
    Advertise(String),
    /// Signal handlers could not be installed.
    Signals(io::Error),
    /// The state directory could not be used.
    Store(crate::store::StoreError),
    /// The core task ended abnormally (a panic in the endpoint).
    Core(String),
    /// The TLS settings of `[upstream]` cannot be used.
    Tls(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Bind {
                transport,
                addr,
                source,
            } => write!(f, "cannot listen on {transport} {addr}: {source}"),
            RuntimeError::Resolve { proxy, detail } => {
                write!(f, "cannot resolve upstream proxy {proxy}: {detail}")
            }
            RuntimeError::Advertise(m) => f.write_str(m),
            RuntimeError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            RuntimeError::Store(e) => write!(f, "state store: {e}"),
            RuntimeError::Core(m) => write!(f, "core task failed: {m}"),
            RuntimeError::Tls(m) => write!(f, "upstream TLS: {m}"),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Bind { source, .. } => Some(source),
            RuntimeError::Signals(e) => Some(e),
            _ => None,
        }
    }
}

/// Asks a running [`Runtime`] to stop gracefully. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Request a graceful stop (idempotent).
    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

/// A started bridge: its bound addresses, a way to stop it and its completion.
/// Dropping every [`ShutdownHandle`] and the `Runtime` itself also stops it.
#[derive(Debug)]
pub struct Runtime {
    local: LocalAddrs,
    http: Option<SocketAddr>,
    upstream: SocketAddr,
    shutdown: ShutdownHandle,
    task: JoinHandle<()>,
    /// The task that resolves `[upstream] proxy` again at its TTL.
    resolver: Option<tokio::task::AbortHandle>,
}

impl Runtime {
    /// Bind the listeners of `cfg`, resolve the upstream, create the
    /// [`Endpoint`] and start serving. Returns once the sockets are bound.
    ///
    /// With `[state] dir`, the store there is opened first (a second bridge on
    /// the same directory fails here), the flow-token key is read or created,
    /// and everything stored is restored before the first packet is read.
    pub async fn start(cfg: Arc<Config>, opts: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let rng = match opts.seed {
            Some(seed) => crate::util::Rng::seeded(seed),
            None => crate::util::Rng::from_entropy(),
        };
        let profiles = opts
            .profiles
            .clone()
            .unwrap_or_else(|| Arc::new(crate::profile::ProfileSet::builtin()));
        let store = match &cfg.state_dir {
            Some(dir) => {
                let key = crate::store::load_or_create_key(dir).map_err(RuntimeError::Store)?;
                let store = crate::store::Store::open(dir).map_err(RuntimeError::Store)?;
                let snapshot = store.load().map_err(RuntimeError::Store)?;
                tracing::info!(
                    dir = %dir.display(),
                    phones = snapshot.phones.len(),
                    targets = snapshot.targets.len(),
                    bindings = snapshot.bindings.len(),
                    "state store opened"
                );
                Some((store, snapshot, key))
            }
            None => {
                tracing::warn!(
                    "no state store ([state] dir = \"\"): a restart loses every subscription and registration"
                );
                None
            }
        };
        let (store, restore) = match store {
            Some((store, snap, key)) => (Some(store), Some((snap, key))),
            None => (None, None),
        };
        Self::start_inner(cfg, opts, store, move |cfg, local, upstream, now| {
            let mut ep = Endpoint::with_rng(cfg, profiles, local, upstream, rng, now);
            if let Some((snap, key)) = restore {
                ep.set_token_key(key);
                ep.enable_persistence();
                ep.restore(&snap, now);
            }
            ep
        })
        .await
    }

    /// Like [`Runtime::start`] with any core; `make_core` receives the
    /// configuration, the bound addresses, the resolved upstream and the start
    /// time (the arguments of [`Endpoint::new`] but the seed).
    pub async fn start_with<C, F>(
        cfg: Arc<Config>,
        opts: RuntimeOptions,
        make_core: F,
    ) -> Result<Runtime, RuntimeError>
    where
        C: SansIoCore + Send + 'static,
        F: FnOnce(Arc<Config>, LocalAddrs, SocketAddr, Instant) -> C,
    {
        Self::start_inner(cfg, opts, None, make_core).await
    }

    async fn start_inner<C, F>(
        cfg: Arc<Config>,
        opts: RuntimeOptions,
        store: Option<crate::store::Store>,
        make_core: F,
    ) -> Result<Runtime, RuntimeError>
    where
        C: SansIoCore + Send + 'static,
        F: FnOnce(Arc<Config>, LocalAddrs, SocketAddr, Instant) -> C,
    {
        let mut signals = if opts.handle_signals {
            signal_future().map_err(RuntimeError::Signals)?
        } else {
            Box::pin(std::future::pending())
        };
        let (udp, tcp) = bind(&cfg).await?;
        let udp_local = udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp_local = tcp.as_ref().and_then(|s| s.local_addr().ok());
        // The listener that talks to the upstream decides the preferred family
        // and, when it is bound to a specific IP, the advertised host.
        let primary = match cfg.upstream.transport {
            Transport::Udp => udp_local.or(tcp_local),
            Transport::Tcp | Transport::Tls => tcp_local.or(udp_local),
        };
        let tls = match &cfg.upstream.tls {
            Some(t) if cfg.upstream.transport == Transport::Tls => Some(tls_target(t)?),
            _ => None,
        };
        let mut resolver =
            dns::UpstreamResolver::new(&cfg.upstream, udp_local, tcp_local, opts.resolve_timeout)
                .map_err(|detail| RuntimeError::Resolve {
                proxy: cfg.upstream.proxy.clone(),
                detail,
            })?;
        // A resolution failure at start is retried with backoff (a DNS outage
        // must not keep the bridge down once DNS is back).
        let mut failures = 0;
        let resolution = loop {
            match resolver.resolve().await {
                Ok(r) => break r,
                Err(detail) => {
                    let wait = dns::backoff(failures);
                    failures += 1;
                    tracing::error!(error = %detail, retry_in_s = wait.as_secs(), "cannot resolve [upstream] proxy");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        sig = &mut signals => {
                            tracing::info!(signal = sig, "stopping");
                            return Err(RuntimeError::Resolve { proxy: cfg.upstream.proxy.clone(), detail });
                        }
                    }
                }
            }
        };
        let servers = resolution.servers();
        let upstream = servers[0].remote;
        tracing::info!(proxy = %cfg.upstream.proxy, "upstream resolved: {}", resolution.to_string().trim_end());
        let advertise_host = net::advertise_host(
            cfg.listen.advertise.as_deref(),
            primary.map(|a| a.ip()),
            upstream,
        )?;
        let local = LocalAddrs {
            udp: udp_local,
            tcp: tcp_local,
            advertise_host,
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            udp = %display_opt(local.udp),
            tcp = %display_opt(local.tcp),
            upstream = %cfg.upstream.proxy,
            upstream_addr = %upstream,
            upstream_transport = %cfg.upstream.transport,
            advertise = %local.advertise_host,
            "blf-bridge started"
        );
        let mut core = make_core(
            cfg.clone(),
            local.clone(),
            upstream,
            tokio::time::Instant::now().into_std(),
        );
        core.set_upstream_names(resolution.names());
        if servers.len() > 1 {
            core.set_upstreams(servers.clone(), tokio::time::Instant::now().into_std());
        }
        let limits = Limits {
            max_tcp_connections: opts.max_tcp_connections,
            allow: cfg.security.allow.clone(),
            max_tcp_per_source: cfg.security.max_tcp_per_source,
            upstream_ips: servers.iter().map(|f| f.remote.ip()).collect(),
            tcp_write_queue: opts.tcp_write_queue,
            max_datagram_size: opts.max_datagram_size.min(crate::sip::MAX_MESSAGE_SIZE),
            shutdown_grace: opts.shutdown_grace,
        };
        let params = ConnParams {
            idle_timeout: opts.tcp_idle_timeout,
            message_timeout: opts.tcp_message_timeout,
            connect_timeout: opts.tcp_connect_timeout,
            write_timeout: opts.tcp_write_timeout,
            local_ip: tcp_local.map(|a| a.ip()),
        };
        let (tx, rx) = watch::channel(false);
        let mut event_loop = EventLoop::new(core, udp, tcp, limits, params);
        event_loop.upstream_link = tls.map(|t| event_loop::UpstreamLink::new(upstream, t));
        event_loop.persist = store.map(event_loop::Persistence::new);
        event_loop.reloader = opts.reloader.clone();
        let resolver_task = resolution.ttl.map(|ttl| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            event_loop.upstreams_rx = Some(rx);
            tokio::spawn(re_resolve(resolver, resolution, ttl, tx)).abort_handle()
        });
        let http_addr = match cfg.http.listen {
            Some(addr) => start_http(&cfg, addr, &mut event_loop).await,
            None => None,
        };
        let task = tokio::spawn(event_loop.run(rx, signals));
        Ok(Runtime {
            local,
            http: http_addr,
            upstream,
            shutdown: ShutdownHandle { tx: Arc::new(tx) },
            task,
            resolver: resolver_task,
        })
    }

    /// The bound addresses and the advertised host.
    pub fn local_addrs(&self) -> &LocalAddrs {
        &self.local
    }

    /// The bound UDP address, if UDP is configured.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.local.udp
    }

    /// The bound TCP address, if TCP is configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.local.tcp
    }

    /// The bound HTTP address (`[http] listen`), if it could be bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The resolved upstream proxy address.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
    }

    /// A handle that stops the runtime.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Wait until the runtime has stopped (after a shutdown request or signal).
    pub async fn wait(self) -> Result<(), RuntimeError> {
        let Runtime {
            shutdown,
            task,
            resolver,
            ..
        } = self;
        let r = task.await;
        if let Some(r) = resolver {
            r.abort();
        }
        drop(shutdown);
        r.map_err(|e| RuntimeError::Core(e.to_string()))
    }

    /// Request a graceful stop and wait for it.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        self.shutdown.shutdown();
        self.wait().await
    }
}

/// The client side of `[upstream] transport = "tls"`: roots, client
/// certificate, the name to check.
fn tls_target(t: &crate::config::UpstreamTls) -> Result<Arc<conn::TlsTarget>, RuntimeError> {
    let client = t.client_cert.as_deref().zip(t.client_key.as_deref());
    let (config, trusted) =
        crate::tls::client_config(t.ca_file.as_deref(), client).map_err(RuntimeError::Tls)?;
    let name = crate::tls::server_name(&t.name).map_err(RuntimeError::Tls)?;
    tracing::info!(name = %t.name, trusted = %trusted, client_cert = client.is_some(), "upstream over TLS");
    Ok(Arc::new(conn::TlsTarget { config, name }))
}

/// Start the bridge for `cfg` and serve until stopped (with
/// [`RuntimeOptions::handle_signals`], by SIGINT/SIGTERM).
pub async fn run(cfg: Arc<Config>, opts: RuntimeOptions) -> Result<(), RuntimeError> {
    Runtime::start(cfg, opts).await?.wait().await
}

fn display_opt(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// Bind `[http] listen` and serve the operator's window. A port that cannot be
/// bound is logged and the bridge runs without it: the phones' proxy matters
/// more than the window (the health check then fails, which is visible).
async fn start_http<C: SansIoCore>(
    cfg: &Config,
    addr: SocketAddr,
    event_loop: &mut EventLoop<C>,
) -> Option<SocketAddr> {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen for HTTP: running without the lamp panel, metrics and health endpoints");
            return None;
        }
    };
    let bound = listener.local_addr().ok();
    let now = tokio::time::Instant::now().into_std();
    let snap = crate::http::Snapshot {
        status: event_loop
            .core
            .status(now, false)
            .unwrap_or_else(crate::endpoint::status::Status::empty),
        listening: true,
        taken_at: std::time::Instant::now(),
        keepalive_interval_s: cfg.upstream.keepalive_interval_s,
        keepalive_options: cfg.upstream.keepalive == crate::config::Keepalive::Options,
    };
    let (tx, rx) = watch::channel(Arc::new(snap));
    let demand = Arc::new(crate::http::Demand::default());
    let state = crate::http::HttpState::new(
        rx,
        Some(demand.clone()),
        cfg.http.user.as_deref(),
        cfg.http.password.as_deref(),
    );
    let task = tokio::spawn(crate::http::serve(listener, state));
    event_loop.status = Some(event_loop::StatusLink::new(tx, demand, task.abort_handle()));
    tracing::info!(http = %display_opt(bound), "operator's window: lamp panel, /metrics, /healthz, /readyz, /api/targets");
    bound
}

/// Bind the configured listeners. When both are on port 0 and the same IP,
/// TCP first tries the port UDP got, so the bridge has one port as in production.
async fn bind(cfg: &Config) -> Result<(Option<UdpSocket>, Option<TcpListener>), RuntimeError> {
    let udp = match cfg.listen.udp {
        Some(addr) => Some(bind_udp(addr).map_err(|source| RuntimeError::Bind {
            transport: Transport::Udp,
            addr,
            source,
        })?),
        None => None,
    };
    let udp_local = udp.as_ref().and_then(|s| s.local_addr().ok());
    let tcp =
        match cfg.listen.tcp {
            Some(addr) => {
                let same_port = match udp_local {
                    Some(u)
                        if addr.port() == 0
                            && cfg.listen.udp.is_some_and(|c| c.ip() == addr.ip()) =>
                    {
                        TcpListener::bind(SocketAddr::new(addr.ip(), u.port()))
                            .await
                            .ok()
                    }
                    _ => None,
                };
                match same_port {
                    Some(l) => Some(l),
                    None => Some(TcpListener::bind(addr).await.map_err(|source| {
                        RuntimeError::Bind {
                            transport: Transport::Tcp,
                            addr,
                            source,
                        }
                    })?),
                }
            }
            None => None,
        };
    Ok((udp, tcp))
}

/// glibc's malloc, set for a process that holds tens of thousands of small
/// records for hours while transactions come and go around them: large blocks
/// (above 128 KiB: the transaction layer's blocks of retained responses, hash
/// tables after a burst) are always mapped apart from the heap and returned to
/// the system when freed. By default glibc raises that threshold to the size
/// of the largest block freed so far (up to 32 MiB), after which such blocks
/// land in the heap between the records and their memory is never returned.
/// Call once, before any thread starts. A no-op elsewhere than glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Receive/send buffer asked for on the UDP listener. The kernel default
/// (`net.core.rmem_default`, often 208 KiB) holds only ~160 SIP datagrams, which a
/// burst of SUBSCRIBEs or the 200s of a large fan-out overflow in a few ms while
/// the core is busy (docs/benchmarks.md). The kernel caps it at
/// `net.core.rmem_max` / `wmem_max`.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Bind the UDP listener with large socket buffers.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(UDP_BUFFER_BYTES);
    // Linux reports twice the value granted (bookkeeping overhead)
    match s.recv_buffer_size() {
        Ok(got) if got < UDP_BUFFER_BYTES => tracing::warn!(
            requested = UDP_BUFFER_BYTES,
            granted = got,
            "UDP receive buffer capped by the kernel: raise net.core.rmem_max for bursty loads"
        ),
        Ok(got) => tracing::debug!(granted = got, "UDP receive buffer"),
        Err(_) => {}
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

#[cfg(unix)]
fn signal_future() -> io::Result<SignalFuture> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }))
}

#[cfg(not(unix))]
fn signal_future() -> io::Result<SignalFuture> {
    Ok(Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }))
}

/// Resolve `[upstream] proxy` again whenever the last resolution's TTL runs
/// out; a failure keeps the last good servers and is retried with backoff.
/// Changes are logged and handed to the core task.
async fn re_resolve(
    mut resolver: dns::UpstreamResolver,
    mut last: dns::Resolution,
    mut wait: Duration,
    tx: tokio::sync::mpsc::Sender<(Vec<Flow>, Vec<String>)>,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(wait).await;
        match resolver.resolve().await {
            Ok(r) => {
                failures = 0;
                wait = r.ttl.unwrap_or(dns::MAX_TTL);
                if r.servers() != last.servers() {
                    tracing::info!(
                        "upstream resolved again, servers changed: {}",
                        r.to_string().trim_end()
                    );
                } else {
                    tracing::debug!("upstream resolved again: {}", r.to_string().trim_end());
                }
                // sent every time: a renewed resolution is also when the more
                // preferred servers are probed (failback)
                if tx.send((r.servers(), r.names())).await.is_err() {
                    return;
                }
                last = r;
            }
            Err(e) => {
                wait = dns::backoff(failures);
                failures += 1;
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "cannot resolve [upstream] proxy again; keeping the servers of the last resolution");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_listener_gets_a_large_receive_buffer() {
        let sock = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        // what the kernel allows at most (Linux reports twice the granted size)
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(UDP_BUFFER_BYTES);
        let default = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        assert!(
            got >= UDP_BUFFER_BYTES.min(max),
            "granted {got}, asked {UDP_BUFFER_BYTES}, kernel max {max}"
        );
        if max > default {
            assert!(got > default, "larger than the default {default}: {got}");
        }
    }
}
