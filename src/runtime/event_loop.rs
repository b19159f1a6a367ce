//! The core task: the only owner of the sans-IO core. It waits for the next
//! event (datagram, message from a connection task, timer, shutdown), feeds it
//! to the core and then performs every [`Transmit`] the core produced. Nothing
//! here awaits a TCP peer, so a slow peer cannot stall the bridge.

use super::conn::{ConnParams, ConnTask, CoreEvent, TlsTarget, far_future};
use super::net;
use super::{Limits, SansIoCore};
use crate::flow::{ConnId, Flow, Transmit};
use crate::sip::Transport;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Receive buffer: one byte more than the largest message, so an oversize
/// datagram is seen as such rather than silently truncated.
const UDP_BUF: usize = crate::sip::MAX_MESSAGE_SIZE + 1;

/// How long a UDP send may wait for socket buffer space before the datagram is
/// dropped (the transaction layer retransmits).
const UDP_SEND_WAIT: Duration = Duration::from_millis(100);

/// Most datagrams in one `sendmmsg` (the kernel's own cap, UIO_MAXIOV, is 1024).
const UDP_BATCH: usize = 32;

/// A burst's first datagrams of fan-out NOTIFYs leave from the loop itself;
/// past this many, part of them go to the second sender ([`super::lane`]).
const LANE_AFTER: usize = 64;

/// Past [`LANE_AFTER`], of every this many batches of fan-out NOTIFYs one is
/// sent by the loop (which also builds them all) and the others by the lane.
/// Measured on 2 cores (docs/benchmarks.md): a third sent by the loop gives
/// the earliest last NOTIFY; sharing by the lane's backlog instead was slower.
const LANE_ROUND: usize = 3;

/// Most datagrams read in one wake-up: after the one that woke the loop, what
/// is already queued in the socket is read without waiting (`try_recv_from`)
/// before anything is flushed, so a burst costs one pass of the loop (its
/// timers, its flush, one `sendmmsg` of the answers) per batch instead of per
/// datagram. Bounded so timers and TCP events still get their turn.
const UDP_RECV_BATCH: usize = 32;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the acceptor
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Events queued from connection tasks to the core.
const EVENT_QUEUE: usize = 1024;

/// A future resolving to the name of the signal that asked us to stop.
pub(crate) type SignalFuture = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// A TCP connection as the core sees it.
struct Conn {
    remote: SocketAddr,
    /// TCP or TLS.
    transport: Transport,
    tx: mpsc::Sender<Bytes>,
    abort: AbortHandle,
}

/// The open TCP connections, by id and by remote address.
#[derive(Default)]
struct ConnTable {
    by_id: HashMap<ConnId, Conn>,
    by_remote: HashMap<SocketAddr, Vec<ConnId>>,
    /// Open connections per remote IP.
    by_ip: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl ConnTable {
    fn alloc(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn insert(&mut self, id: ConnId, conn: Conn) {
        *self.by_ip.entry(conn.remote.ip()).or_default() += 1;
        self.by_remote.entry(conn.remote).or_default().push(id);
        self.by_id.insert(id, conn);
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.by_id.remove(&id)?;
        if let Some(n) = self.by_ip.get_mut(&conn.remote.ip()) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&conn.remote.ip());
            }
        }
        if let Some(ids) = self.by_remote.get_mut(&conn.remote) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_remote.remove(&conn.remote);
            }
        }
        Some(conn)
    }

    /// The connection to use for `flow`: `flow.conn` if it is still open and
    /// goes to `flow.remote`, else the newest open connection to `flow.remote`.
    /// Only a connection of the flow's transport (TCP or TLS) is used.
    fn route(&self, flow: &Flow) -> Option<ConnId> {
        let fits = |id: &ConnId| {
            self.by_id
                .get(id)
                .is_some_and(|c| c.remote == flow.remote && c.transport == flow.transport)
        };
        flow.conn.filter(fits).or_else(|| {
            self.by_remote
                .get(&flow.remote)
                .and_then(|ids| ids.iter().rev().find(|id| fits(id)).copied())
        })
    }

    fn transport(&self, id: ConnId) -> Option<Transport> {
        self.by_id.get(&id).map(|c| c.transport)
    }
}

/// The link to the state store's writer thread: batches go out numbered, the
/// writer reports the highest number it made durable, and what the core sent
/// after a batch waits for it.
pub(crate) struct Persistence {
    writer: crate::store::Writer,
    committed_rx: mpsc::UnboundedReceiver<u64>,
    submitted: u64,
    committed: u64,
    /// The last durable batch: transmits wait until it is committed.
    hold_until: u64,
    held: VecDeque<(u64, Transmit)>,
    /// Since when something has been held (the store must confirm in time).
    held_since: Option<Instant>,
    /// The store did not confirm within [`MAX_HOLD`]: transmits go out without
    /// waiting until it has caught up with this batch.
    degraded_until: Option<u64>,
}

/// The longest a transmit waits for the store. A disk that hangs must not stop
/// calls: past this the bridge sends without waiting (and says so), and waits
/// again once the store has caught up.
const MAX_HOLD: Duration = Duration::from_secs(2);

impl Persistence {
    /// Release everything held now (the store is late; see [`MAX_HOLD`]).
    fn committed_degraded(&mut self) {
        let all: Vec<Transmit> = self.held.drain(..).map(|(_, t)| t).collect();
        self.held = all.into_iter().map(|t| (0, t)).collect();
        self.held_since = None;
    }

    /// When a held transmit must go out at the latest.
    fn hold_deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + MAX_HOLD)
    }

    pub fn new(store: crate::store::Store) -> Persistence {
        let (tx, committed_rx) = mpsc::unbounded_channel();
        let writer = crate::store::Writer::spawn(store, move |seq, _result| {
            // a failed commit is logged by the writer; the bridge keeps serving
            let _ = tx.send(seq);
        });
        Persistence {
            writer,
            committed_rx,
            submitted: 0,
            committed: 0,
            hold_until: 0,
            held: VecDeque::new(),
            held_since: None,
            degraded_until: None,
        }
    }
}

/// Reloads the configuration and profiles on SIGHUP (the CLI knows the file).
pub type Reloader = Arc<
    dyn Fn() -> Result<(Arc<crate::config::Config>, Arc<crate::profile::ProfileSet>), String>
        + Send
        + Sync,
>;

/// The link to the HTTP side: the core's status is published into `tx` when
/// the HTTP side asks (`demand`: a request, or an open `/events` stream and
/// something happened since), at most every [`STATUS_EVERY`]. Nobody looking,
/// nothing is built.
pub(crate) struct StatusLink {
    tx: watch::Sender<Arc<crate::http::Snapshot>>,
    task: AbortHandle,
    pub(crate) demand: Arc<crate::http::Demand>,
    dirty: bool,
    /// A request came (`demand.notify`) and is not served yet.
    requested: bool,
    next: Instant,
}

/// How often the operator's window is refreshed at most.
const STATUS_EVERY: Duration = Duration::from_millis(250);

impl StatusLink {
    pub fn new(
        tx: watch::Sender<Arc<crate::http::Snapshot>>,
        demand: Arc<crate::http::Demand>,
        task: AbortHandle,
    ) -> StatusLink {
        StatusLink {
            tx,
            task,
            demand,
            dirty: true,
            requested: false,
            next: Instant::now(),
        }
    }

    /// When to publish next (`None`: nobody is waiting for a snapshot).
    fn publish_at(&self) -> Option<Instant> {
        (self.requested || (self.dirty && self.demand.streams() > 0)).then_some(self.next)
    }
}

/// The one TLS connection to the upstream (RFC 5923: the upstream's requests
/// come on it too). Opened at start, reopened with backoff whenever it ends.
pub(crate) struct UpstreamLink {
    pub remote: SocketAddr,
    pub tls: Arc<TlsTarget>,
    conn: Option<ConnId>,
    /// While set, nothing is sent towards the upstream; at this time the
    /// connection is opened again.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// When the current connection finished its handshake.
    connected_at: Option<Instant>,
}

/// First pause after a failed or lost upstream connection; doubled up to
/// [`BACKOFF_MAX`], reset when a connection had lasted [`BACKOFF_RESET`]
/// (a server that completes the handshake and hangs up at once is not
/// hammered every second).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(30);

impl UpstreamLink {
    pub fn new(remote: SocketAddr, tls: Arc<TlsTarget>) -> UpstreamLink {
        UpstreamLink {
            remote,
            tls,
            conn: None,
            // open at once
            retry_at: Some(Instant::now()),
            backoff: BACKOFF_MIN,
            connected_at: None,
        }
    }
}

pub(crate) struct EventLoop<C> {
    /// `[upstream] transport = "tls"`: the upstream connection.
    pub upstream_link: Option<UpstreamLink>,
    pub core: C,
    pub status: Option<StatusLink>,
    pub persist: Option<Persistence>,
    pub reloader: Option<Reloader>,
    /// Renewed resolutions of `[upstream] proxy` (the resolver task).
    pub upstreams_rx: Option<mpsc::Receiver<(Vec<Flow>, Vec<String>)>>,
    pub udp: Option<UdpSocket>,
    pub udp_local: Option<SocketAddr>,
    pub limits: Limits,
    pub params: Arc<ConnParams>,
    conns: ConnTable,
    events_tx: mpsc::Sender<CoreEvent>,
    events_rx: mpsc::Receiver<CoreEvent>,
    guard_tx: mpsc::Sender<()>,
    guard_rx: mpsc::Receiver<()>,
    acceptor: Option<AbortHandle>,
    /// Refused connections are logged once per source and interval.
    log_gate: crate::util::LogGate,
    /// The second UDP sender for large fan-outs (Linux).
    lane: Option<super::lane::Lane>,
}

impl<C: SansIoCore> EventLoop<C> {
    pub fn new(
        core: C,
        udp: Option<UdpSocket>,
        tcp: Option<TcpListener>,
        limits: Limits,
        params: ConnParams,
    ) -> Self {
        let udp_local = udp.as_ref().and_then(|s| s.local_addr().ok());
        let lane = udp.as_ref().and_then(start_lane);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (guard_tx, guard_rx) = mpsc::channel(1);
        let acceptor = tcp.map(|l| tokio::spawn(accept_loop(l, events_tx.clone())).abort_handle());
        EventLoop {
            upstream_link: None,
            core,
            status: None,
            persist: None,
            reloader: None,
            upstreams_rx: None,
            udp,
            udp_local,
            limits,
            params: Arc::new(params),
            conns: ConnTable::default(),
            events_tx,
            events_rx,
            guard_tx,
            guard_rx,
            acceptor,
            log_gate: crate::util::LogGate::default(),
            lane,
        }
    }

    /// Run until `shutdown` turns true (or all its senders are dropped) or
    /// `signals` fires, then stop gracefully: the core is told
    /// ([`SansIoCore::begin_shutdown`]) and served until it reports
    /// [`SansIoCore::is_drained`] or the grace period ends, then the
    /// connections are closed.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, mut signals: SignalFuture) {
        let mut buf = vec![0u8; UDP_BUF];
        let mut drain_until: Option<Instant> = None;
        let mut hup = hangup_signal(self.reloader.is_some());
        let mut published = false;
        let demand = self.status.as_ref().map(|s| s.demand.clone());
        loop {
            self.flush().await;
            if !std::mem::take(&mut published) {
                self.mark_status();
            }
            if drain_until.is_some() && self.core.is_drained() {
                break;
            }
            let draining = drain_until.is_some();
            let deadline = self.core.poll_timeout().map(Instant::from_std);
            let publish_at = self.status.as_ref().and_then(StatusLink::publish_at);
            let hold_deadline = self.persist.as_ref().and_then(Persistence::hold_deadline);
            let reconnect_at = self
                .upstream_link
                .as_ref()
                .filter(|l| l.conn.is_none() && !draining)
                .and_then(|l| l.retry_at);
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop), if !draining => {
                    tracing::info!("shutdown requested");
                    drain_until = Some(self.begin_drain());
                }
                sig = &mut signals, if !draining => {
                    tracing::info!(signal = sig, "stopping");
                    drain_until = Some(self.begin_drain());
                }
                _ = tokio::time::sleep_until(drain_until.unwrap_or_else(far_future)), if draining => {
                    tracing::warn!("grace period over before the endpoint finished shutting down");
                    break;
                }
                Some(seq) = recv_committed(self.persist.as_mut()) => self.on_committed(seq),
                _ = recv_hangup(hup.as_mut()), if !draining => self.on_hangup(),
                r = recv_udp(self.udp.as_ref(), &mut buf), if !draining || self.core_takes_requests_while_draining() => {
                    self.on_datagram(r, &buf);
                    self.read_queued_datagrams(&mut buf);
                }
                Some(ev) = self.events_rx.recv() => self.on_event(ev),
                Some((servers, names)) = recv_upstreams(self.upstreams_rx.as_mut()) => {
                    self.limits.upstream_ips = servers.iter().map(|f| f.remote.ip()).collect();
                    self.core.set_upstream_names(names);
                    self.core.set_upstreams(servers, now());
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    self.core.handle_timeout(now());
                }
                _ = tokio::time::sleep_until(reconnect_at.unwrap_or_else(far_future)), if reconnect_at.is_some() => {
                    self.reconnect_upstream();
                }
                _ = tokio::time::sleep_until(hold_deadline.unwrap_or_else(far_future)), if hold_deadline.is_some() => {
                    // the next flush sends what waited too long for the store
                }
                _ = tokio::time::sleep_until(publish_at.unwrap_or_else(far_future)), if publish_at.is_some() => {
                    self.publish_status();
                    published = true;
                }
                _ = status_asked(demand.as_deref()) => {
                    if let Some(s) = self.status.as_mut() {
                        s.requested = true;
                    }
                }
            }
        }
        self.stop().await;
    }

    /// While draining, datagrams are still read (responses finish the
    /// transactions in flight; the core refuses new requests itself).
    fn core_takes_requests_while_draining(&self) -> bool {
        true
    }

    /// Something happened: the window is refreshed at its next slot.
    fn mark_status(&mut self) {
        if let Some(s) = self.status.as_mut() {
            s.dirty = true;
        }
    }

    fn publish_status(&mut self) {
        let Some(link) = self.status.as_mut() else {
            return;
        };
        link.requested = false;
        let Some(full) = link.demand.take() else {
            return;
        };
        link.dirty = false;
        link.next = Instant::now() + STATUS_EVERY;
        if let Some(st) = self.core.status(now(), full) {
            let old = link.tx.borrow().clone();
            link.tx.send_replace(Arc::new(crate::http::Snapshot {
                status: st,
                taken_at: std::time::Instant::now(),
                listening: old.listening,
                keepalive_interval_s: old.keepalive_interval_s,
                keepalive_options: old.keepalive_options,
            }));
        }
    }

    fn on_hangup(&mut self) {
        let Some(reload) = self.reloader.clone() else {
            return;
        };
        match reload() {
            Ok((cfg, profiles)) => {
                tracing::info!(config = %cfg.source, "SIGHUP: configuration and profiles reloaded");
                self.limits.allow = cfg.security.allow.clone();
                self.limits.max_tcp_per_source = cfg.security.max_tcp_per_source;
                self.core.reload(cfg, profiles, now());
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload failed, keeping the running configuration")
            }
        }
    }

    /// The store made batches up to `seq` durable: what waited for them goes
    /// out at the next [`EventLoop::flush`].
    fn on_committed(&mut self, seq: u64) {
        if let Some(p) = self.persist.as_mut() {
            p.committed = p.committed.max(seq);
        }
    }

    /// Tell the core to wind down; returns the end of the grace period.
    fn begin_drain(&mut self) -> Instant {
        self.core.begin_shutdown(now());
        Instant::now() + self.limits.shutdown_grace
    }

    /// Reads what is already waiting in the UDP socket, up to
    /// [`UDP_RECV_BATCH`] - 1 datagrams, without waiting.
    fn read_queued_datagrams(&mut self, buf: &mut [u8]) {
        for _ in 1..UDP_RECV_BATCH {
            let r = match self.udp.as_ref() {
                Some(sock) => sock.try_recv_from(buf),
                None => return,
            };
            if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return;
            }
            self.on_datagram(r, buf);
        }
    }

    fn on_datagram(&mut self, r: io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        let (n, from) = match r {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors reported on the socket and the like: not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                return;
            }
        };
        let from = net::normalize(from);
        if n > self.limits.max_datagram_size {
            tracing::warn!(peer = %from, size = n, "dropping oversize datagram");
            return;
        }
        let Some(data) = buf.get(..n) else {
            return;
        };
        self.core
            .handle_datagram(Flow::udp(from), Bytes::copy_from_slice(data), now());
    }

    fn on_event(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::Accepted { stream, remote } => self.on_accepted(stream, remote),
            CoreEvent::Message { conn, remote, msg } => {
                // Messages still queued from a connection the core already gave
                // up on are dropped: their connection is gone.
                if let Some(t) = self.conns.transport(conn) {
                    self.core
                        .handle_message(Flow::stream(t, remote, Some(conn)), msg, now());
                } else {
                    tracing::debug!(peer = %remote, conn = conn.0, "dropping message from a closed connection");
                }
            }
            CoreEvent::Ping { conn, remote } => {
                if let Some(t) = self.conns.transport(conn) {
                    self.core
                        .handle_keepalive_ping(Flow::stream(t, remote, Some(conn)));
                }
            }
            CoreEvent::Connected { conn } => {
                if let Some(l) = self.upstream_link.as_mut().filter(|l| l.conn == Some(conn)) {
                    l.connected_at = Some(Instant::now());
                }
            }
            CoreEvent::Closed { conn, failed } => {
                self.upstream_closed(conn);
                if let Some(c) = self.conns.remove(conn) {
                    self.core.connection_closed(conn, now());
                    if failed {
                        let server = Flow {
                            transport: c.transport,
                            remote: c.remote,
                            conn: None,
                        };
                        self.core.transport_failed(server, now());
                    }
                }
            }
        }
    }

    fn on_accepted(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let ip = remote.ip();
        let upstream = self.limits.upstream_ips.contains(&ip);
        let refusal = if upstream {
            None
        } else if !self.limits.allow.iter().any(|c| c.contains(ip)) {
            Some("source not in [security] allow")
        } else if self.conns.by_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_tcp_per_source
        {
            Some("[security] max_tcp_per_source reached")
        } else {
            None
        };
        if let Some(why) = refusal {
            // dropping the stream closes it at once
            if self.log_gate.allow(ip, now()) {
                tracing::warn!(peer = %remote, reason = why, "TCP connection refused (logged once per source every 10 s)");
            }
            return;
        }
        if self.conns.by_id.len() >= self.limits.max_tcp_connections {
            tracing::warn!(
                peer = %remote,
                limit = self.limits.max_tcp_connections,
                "too many TCP connections, refusing"
            );
            return;
        }
        let id = self.conns.alloc();
        let (tx, rx) = mpsc::channel(self.limits.tcp_write_queue.max(1));
        let task = self.conn_task(id, remote, None);
        let abort = tokio::spawn(task.run_accepted(stream, rx)).abort_handle();
        tracing::debug!(peer = %remote, conn = id.0, "TCP connection accepted");
        self.conns.insert(
            id,
            Conn {
                remote,
                transport: Transport::Tcp,
                tx,
                abort,
            },
        );
    }

    fn conn_task(&self, id: ConnId, remote: SocketAddr, tls: Option<Arc<TlsTarget>>) -> ConnTask {
        ConnTask {
            id,
            remote,
            events: self.events_tx.clone(),
            params: self.params.clone(),
            tls,
            _guard: self.guard_tx.clone(),
        }
    }

    /// Perform everything the core wants sent. With a store, state the core
    /// changed goes to the writer first, and what the core sends from then on
    /// waits (in order) until that state is durable.
    async fn flush(&mut self) {
        let mut ready = Vec::new();
        if let Some(p) = self.persist.as_mut() {
            if p.held_since.is_some_and(|t| t.elapsed() >= MAX_HOLD) {
                tracing::error!(
                    held = p.held.len(),
                    queued_changes = p.writer.queued(),
                    "state store has not confirmed for 2 s: sending without waiting for the disk until it catches up"
                );
                p.degraded_until = Some(p.hold_until);
                p.committed_degraded();
            }
            if p.degraded_until.is_some_and(|d| p.committed >= d) {
                tracing::info!("state store caught up: responses wait for the disk again");
                p.degraded_until = None;
            }
            while p.held.front().is_some_and(|(s, _)| *s <= p.committed) {
                if let Some((_, t)) = p.held.pop_front() {
                    ready.push(t);
                }
            }
        }
        for t in ready {
            self.send(t).await;
        }
        // a core may stop handing out messages until it has given its latest
        // changes to the store (a fan-out's phone moved its marks): then take
        // them and go on, holding what follows until they are durable
        loop {
            self.flush_pass().await;
            if !(self.persist.is_some() && self.core.waits_for_persist()) {
                break;
            }
        }
    }

    /// One round of [`EventLoop::flush`]: the core's changes to the store,
    /// then what it sends, held back while an earlier change is not durable.
    async fn flush_pass(&mut self) {
        if let Some(p) = self.persist.as_mut() {
            if let Some(batch) = self.core.poll_persist() {
                p.submitted += 1;
                if batch.durable {
                    p.hold_until = p.submitted;
                }
                p.writer.submit(p.submitted, batch);
            }
            if p.held.is_empty() {
                p.held_since = None;
            }
            let hold = p.degraded_until.is_none() && p.hold_until > p.committed;
            if hold || !p.held.is_empty() {
                while let Some(t) = self.core.poll_transmit(now()) {
                    p.held.push_back((p.hold_until, t));
                }
                p.held_since.get_or_insert_with(Instant::now);
                return;
            }
        }
        // UDP datagrams go out in batches (one sendmmsg each), growing from
        // one: the first messages (the upstream's 200, the first NOTIFY of a
        // fan-out) leave at once, the rest of a fan-out in few system calls
        let mut batch: Vec<Transmit> = Vec::new();
        let mut limit = 1;
        // a large fan-out's NOTIFYs are shared with the lane (a second
        // thread); the flush ends when the lane is idle again, so whatever
        // the core sends next keeps its order
        let mut fanout = 0usize;
        let mut job: Vec<super::lane::Datagram> = Vec::new();
        let mut lane_used = false;
        while let Some(t) = self.core.poll_transmit(now()) {
            if t.flow.transport == Transport::Udp && self.udp.is_some() {
                // past the first LANE_AFTER, two batches of fan-out NOTIFYs
                // in every LANE_ROUND go to the lane, the other is sent here
                if let Some(lane) = &self.lane
                    && self.core.transmit_is_independent()
                {
                    fanout += 1;
                    let past = fanout.saturating_sub(LANE_AFTER + 1);
                    if fanout > LANE_AFTER && !(past / UDP_BATCH).is_multiple_of(LANE_ROUND) {
                        job.push(super::lane::Datagram {
                            dest: net::for_socket(t.flow.remote, self.udp_local),
                            data: t.data,
                            flow: t.flow,
                        });
                        if job.len() >= UDP_BATCH {
                            lane.submit(std::mem::take(&mut job));
                            lane_used = true;
                        }
                        continue;
                    }
                }
                batch.push(t);
                if batch.len() >= limit {
                    self.send_udp_batch(&mut batch).await;
                    limit = (limit * 2).min(UDP_BATCH);
                }
            } else {
                self.send_udp_batch(&mut batch).await;
                self.send(t).await;
            }
        }
        self.send_udp_batch(&mut batch).await;
        if let Some(lane) = &self.lane {
            if !job.is_empty() {
                lane.submit(job);
                lane_used = true;
            }
            if lane_used {
                let idle = lane.wait_idle();
                for flow in idle.failed {
                    self.core.transport_failed(flow, now());
                }
            }
        }
    }

    /// Send (and empty) `batch`, in order: as few `sendmmsg` calls as the
    /// kernel takes; a datagram the kernel refuses (a full buffer, an error)
    /// the usual way ([`EventLoop::send_udp`]: a bounded wait, the error
    /// reported), then the batch goes on.
    async fn send_udp_batch(&mut self, batch: &mut Vec<Transmit>) {
        let mut at = 0;
        while at < batch.len() {
            let sent = match &self.udp {
                Some(sock) => {
                    let local = self.udp_local;
                    let msgs: Vec<(SocketAddr, &[u8])> = batch[at..]
                        .iter()
                        .map(|t| (net::for_socket(t.flow.remote, local), &t.data[..]))
                        .collect();
                    super::mmsg::send_batch(sock, &msgs)
                }
                None => Ok(0),
            };
            match sent {
                Ok(n) if n > 0 => at += n,
                _ => {
                    let t = batch[at].clone();
                    self.send_udp(t).await;
                    at += 1;
                }
            }
        }
        batch.clear();
    }

    async fn send(&mut self, t: Transmit) {
        match t.flow.transport {
            Transport::Udp => self.send_udp(t).await,
            Transport::Tcp | Transport::Tls => self.send_stream(t),
        }
    }

    /// At the end of a graceful stop: wait (bounded) until every batch is
    /// durable, then send whatever still waited for it.
    async fn flush_store(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let Some(p) = self.persist.as_mut() else {
                return;
            };
            if p.committed >= p.submitted {
                break;
            }
            match tokio::time::timeout_at(deadline, p.committed_rx.recv()).await {
                Ok(Some(seq)) => p.committed = p.committed.max(seq),
                Ok(None) | Err(_) => {
                    tracing::error!("state store did not confirm the last changes in time");
                    break;
                }
            }
        }
        let held: Vec<Transmit> = self
            .persist
            .as_mut()
            .map(|p| p.held.drain(..).map(|(_, t)| t).collect())
            .unwrap_or_default();
        for t in held {
            self.send(t).await;
        }
    }

    async fn send_udp(&mut self, t: Transmit) {
        let peer = t.flow.remote;
        let Some(sock) = &self.udp else {
            tracing::warn!(%peer, "no UDP listener configured, dropping UDP message");
            return;
        };
        let dest = net::for_socket(peer, self.udp_local);
        match sock.try_send_to(&t.data, dest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(UDP_SEND_WAIT, sock.send_to(&t.data, dest)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "UDP send failed");
                        self.core.transport_failed(t.flow, now());
                    }
                    Err(_) => tracing::warn!(%peer, "UDP socket busy, datagram dropped"),
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "UDP send failed");
                self.core.transport_failed(t.flow, now());
            }
        }
    }

    fn send_stream(&mut self, t: Transmit) {
        let mut flow = t.flow;
        let mut data = t.data;
        // At most two rounds: if the chosen connection has just ended, forget it
        // and route again (another connection to the peer, or a new one).
        for _ in 0..2 {
            let Some(id) = self.conns.route(&flow) else {
                self.connect(flow, data);
                return;
            };
            let Some(conn) = self.conns.by_id.get(&id) else {
                return;
            };
            match conn.tx.try_send(data) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        peer = %flow.remote,
                        conn = id.0,
                        "peer is not reading (write queue full), closing the connection"
                    );
                    self.close(id);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    self.close(id);
                    data = d;
                    flow.conn = None;
                }
            }
        }
    }

    /// Open a new connection for `flow` with `data` queued on it. TLS goes
    /// only to the upstream, over its [`UpstreamLink`]: while that waits out
    /// its backoff, what is sent towards the upstream is dropped (the
    /// transactions time out and are retried by their owners).
    fn connect(&mut self, flow: Flow, data: Bytes) {
        if flow.transport == Transport::Tls {
            let Some(link) = self.upstream_link.as_ref() else {
                tracing::warn!(peer = %flow.remote, "no TLS configured towards this peer, dropping message");
                return;
            };
            if link.remote != flow.remote {
                // another server [upstream] proxy resolved to (failover, or a
                // failback probe): its own connection, same trust and name
                // (RFC 5922: the provider's domain)
                if self.limits.upstream_ips.contains(&flow.remote.ip()) {
                    let tls = link.tls.clone();
                    self.open(flow.remote, Transport::Tls, Some(tls), Some(data));
                    return;
                }
                tracing::warn!(peer = %flow.remote, "TLS only goes to the upstream, dropping message");
                return;
            }
            if link.retry_at.is_some_and(|t| t > Instant::now()) {
                tracing::debug!(peer = %flow.remote, "upstream TLS connection down (backing off), dropping message");
                return;
            }
            self.open_upstream(Some(data));
            return;
        }
        self.open(flow.remote, Transport::Tcp, None, Some(data));
    }

    /// Start a connection task to `remote` (TLS with `tls`), `data` queued first.
    fn open(
        &mut self,
        remote: SocketAddr,
        transport: Transport,
        tls: Option<Arc<TlsTarget>>,
        data: Option<Bytes>,
    ) -> ConnId {
        let id = self.conns.alloc();
        let (tx, rx) = mpsc::channel(self.limits.tcp_write_queue.max(1));
        if let Some(data) = data {
            // a fresh channel with capacity >= 1 always takes one
            let _ = tx.try_send(data);
        }
        let task = self.conn_task(id, remote, tls);
        let abort = tokio::spawn(task.run_outbound(rx)).abort_handle();
        tracing::debug!(peer = %remote, conn = id.0, %transport, "opening connection");
        self.conns.insert(
            id,
            Conn {
                remote,
                transport,
                tx,
                abort,
            },
        );
        id
    }

    /// Open the upstream's TLS connection now.
    fn open_upstream(&mut self, data: Option<Bytes>) {
        let Some((remote, tls)) = self
            .upstream_link
            .as_ref()
            .map(|l| (l.remote, l.tls.clone()))
        else {
            return;
        };
        let id = self.open(remote, Transport::Tls, Some(tls), data);
        if let Some(l) = self.upstream_link.as_mut() {
            l.conn = Some(id);
            l.retry_at = None;
        }
    }

    /// The backoff is over: open the upstream connection again (unless
    /// something already did).
    fn reconnect_upstream(&mut self) {
        let open = self.upstream_link.as_ref().and_then(|l| l.conn);
        if open.is_none_or(|id| !self.conns.by_id.contains_key(&id)) {
            self.open_upstream(None);
        }
    }

    /// The upstream connection ended: try again after the backoff, which
    /// doubles each time until a handshake succeeds.
    fn upstream_closed(&mut self, conn: ConnId) {
        let Some(l) = self.upstream_link.as_mut().filter(|l| l.conn == Some(conn)) else {
            return;
        };
        l.conn = None;
        if l.connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= BACKOFF_RESET)
        {
            l.backoff = BACKOFF_MIN;
        }
        l.retry_at = Some(Instant::now() + l.backoff);
        tracing::info!(
            peer = %l.remote,
            retry_in_s = l.backoff.as_secs(),
            "upstream TLS connection closed; reconnecting after the backoff"
        );
        l.backoff = (l.backoff * 2).min(BACKOFF_MAX);
    }

    /// The core gives up on a connection: stop its task now and tell the core.
    fn close(&mut self, id: ConnId) {
        self.upstream_closed(id);
        if let Some(conn) = self.conns.remove(id) {
            conn.abort.abort();
            self.core.connection_closed(id, now());
        }
    }

    /// The end of a graceful stop: send what the core still has queued, stop
    /// accepting, let every connection write out its queue and close (bounded
    /// by the grace period), then return.
    async fn stop(mut self) {
        self.flush().await;
        if let Some(s) = self.status.take() {
            s.task.abort();
        }
        let grace = self.limits.shutdown_grace;
        self.flush_store(grace).await;
        if let Some(p) = self.persist.take() {
            let stats = p.writer.close();
            tracing::info!(store = ?stats.as_ref().map(|s| s.path().to_path_buf()), "state store closed");
        }
        if let Some(a) = self.acceptor.take() {
            a.abort();
        }
        let open = self.conns.by_id.len();
        let EventLoop {
            conns,
            events_rx,
            guard_tx,
            mut guard_rx,
            limits,
            ..
        } = self;
        // Dropping the queues ends each writer once its queue is written;
        // dropping the event receiver unblocks readers waiting to hand us a message.
        drop(conns);
        drop(events_rx);
        drop(guard_tx);
        if open > 0 {
            tracing::debug!(connections = open, "closing TCP connections");
        }
        if tokio::time::timeout(limits.shutdown_grace, guard_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("some TCP connections did not finish writing in time");
        }
        tracing::info!("stopped");
    }
}

/// The lane on a duplicate of the UDP socket (none where it cannot be made).
fn start_lane(sock: &UdpSocket) -> Option<super::lane::Lane> {
    #[cfg(target_os = "linux")]
    {
        let dup = socket2::SockRef::from(sock).try_clone();
        match dup.and_then(|s| super::lane::Lane::start(s, UDP_SEND_WAIT)) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no second UDP sender: fan-outs are sent by the loop alone");
                None
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        None
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

async fn recv_committed(p: Option<&mut Persistence>) -> Option<u64> {
    match p {
        Some(p) => p.committed_rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal(wanted: bool) -> Option<Hangup> {
    if !wanted {
        return None;
    }
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler: no live reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal(_wanted: bool) -> Option<Hangup> {
    None
}

#[cfg(unix)]
async fn recv_hangup(h: Option<&mut Hangup>) {
    match h {
        Some(h) => {
            if h.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_h: Option<&mut Hangup>) {
    std::future::pending().await
}

/// An HTTP request asked for a new status (never, without the HTTP side).
async fn status_asked(demand: Option<&crate::http::Demand>) {
    match demand {
        Some(d) => d.notify.notified().await,
        None => std::future::pending().await,
    }
}

async fn recv_upstreams(
    rx: Option<&mut mpsc::Receiver<(Vec<Flow>, Vec<String>)>>,
) -> Option<(Vec<Flow>, Vec<String>)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_udp(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Accepts connections and hands them to the core task, which decides whether
/// to keep them. Runs until aborted at shutdown or the core is gone.
async fn accept_loop(listener: TcpListener, events: mpsc::Sender<CoreEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let remote = net::normalize(remote);
                if events
                    .send(CoreEvent::Accepted { stream, remote })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn conn(remote: SocketAddr) -> Conn {
        let (tx, _rx) = mpsc::channel(1);
        let abort = tokio::spawn(async {}).abort_handle();
        Conn {
            remote,
            transport: Transport::Tcp,
            tx,
            abort,
        }
    }

    #[tokio::test]
    async fn routing_prefers_the_named_connection_then_the_newest_to_the_peer() {
        let (phone, pbx) = (sa("10.0.0.5:40000"), sa("192.0.2.1:5060"));
        let mut t = ConnTable::default();
        let a = t.alloc();
        t.insert(a, conn(phone));
        let b = t.alloc();
        t.insert(b, conn(phone));
        let c = t.alloc();
        t.insert(c, conn(pbx));
        assert_ne!(a, b);

        assert_eq!(t.route(&Flow::tcp(phone, Some(a))), Some(a));
        assert_eq!(
            t.route(&Flow::tcp(phone, None)),
            Some(b),
            "newest to the peer"
        );
        // a named connection to another peer is not used for this peer
        assert_eq!(t.route(&Flow::tcp(phone, Some(c))), Some(b));
        assert_eq!(t.route(&Flow::tcp(sa("10.0.0.6:1"), None)), None);

        assert!(t.remove(b).is_some());
        assert!(t.remove(b).is_none(), "removed once");
        assert_eq!(
            t.route(&Flow::tcp(phone, Some(b))),
            Some(a),
            "stale id falls back"
        );
        t.remove(a);
        assert_eq!(t.route(&Flow::tcp(phone, None)), None);
        assert!(
            !t.by_remote.contains_key(&phone),
            "no empty entries left behind"
        );
        assert_eq!(t.route(&Flow::tcp(pbx, None)), Some(c));
    }
}
