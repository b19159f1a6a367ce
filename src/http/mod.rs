//! The operator's window over HTTP (`[http] listen`, default 127.0.0.1:8080):
//!
//! - `/` — the live lamp panel (HTML and JS compiled into the binary), updated
//!   over server-sent events from `/events`;
//! - `/events` — the status as JSON, one event per change;
//! - `/api/targets` — the same status as JSON, for scripts;
//! - `/metrics` — Prometheus text format (`prometheus-client`);
//! - `/healthz` — the process is up (never behind authentication);
//! - `/readyz` — the SIP listeners are bound and the upstream answered within
//!   the last keep-alive interval; 503 with the reason otherwise.
//!
//! Runtime side: the core task publishes a [`Snapshot`] into a `watch`
//! channel only when someone looks ([`Demand`]): a request whose snapshot is
//! older than [`FRESH`] asks for one (the counts, or the full list for
//! `/api/targets`), an open `/events` stream gets every change in full. At most
//! one snapshot per 250 ms is built whatever the clients do, and the handlers
//! only read the channel, so a slow or hostile HTTP client can never stall SIP;
//! with nobody looking, the core builds nothing (at 50,000 phones a full
//! snapshot four times a second was most of the CPU of a quiet bridge).

use crate::endpoint::status::{Status, TARGET_STATES, UP_STATES};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;

/// The lamp panel, compiled in (no CDN, no files at run time).
const PANEL: &str = include_str!("panel.html");

/// A snapshot younger than this answers a request as it is.
pub const FRESH: Duration = Duration::from_millis(250);
/// How long a request waits for the core's new snapshot before it answers with
/// the last one.
pub const WAIT_FOR_CORE: Duration = Duration::from_secs(1);

/// What the HTTP side asks of the core task, which builds a status only when
/// asked: a request waiting (the counts, or the full list), or open `/events`
/// streams (then every change, in full).
#[derive(Debug, Default)]
pub struct Demand {
    streams: AtomicUsize,
    /// 0: nothing asked; 1: the counts; 2: the full list.
    wanted: AtomicU8,
    /// Wakes the core task.
    pub notify: tokio::sync::Notify,
}

impl Demand {
    /// A request needs a new snapshot (`full`: with every target and watcher).
    pub fn ask(&self, full: bool) {
        self.wanted
            .fetch_max(if full { 2 } else { 1 }, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// What to publish now (`Some(full)`), taking the requests; `None`: nobody
    /// asked and no stream is open.
    pub fn take(&self) -> Option<bool> {
        let wanted = self.wanted.swap(0, Ordering::SeqCst);
        match (wanted, self.streams() > 0) {
            (_, true) | (2, _) => Some(true),
            (0, false) => None,
            _ => Some(false),
        }
    }

    /// Open `/events` streams.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// An `/events` stream opens: every change is published in full until the
    /// guard is dropped.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::SeqCst);
        self.ask(true);
        StreamGuard(self.clone())
    }
}

/// Counts one open `/events` stream (see [`Demand::open_stream`]).
pub struct StreamGuard(Arc<Demand>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the HTTP side knows: the core's last status and how fresh it is.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: Status,
    /// The SIP listeners are bound (false only before the start completed).
    pub listening: bool,
    /// When the core took `status` (ages in it are relative to this).
    pub taken_at: std::time::Instant,
    /// `[upstream] keepalive_interval` in seconds (readiness window).
    pub keepalive_interval_s: u64,
    /// Whether keep-alive OPTIONS are sent at all (without them readiness
    /// cannot judge the upstream and only checks the listeners).
    pub keepalive_options: bool,
}

/// Shared with every handler.
#[derive(Clone)]
pub struct HttpState {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Where requests ask the core for a new snapshot (`None`: the channel is
    /// all there is, e.g. a fixed snapshot in a test).
    pub demand: Option<Arc<Demand>>,
    /// `Basic <base64(user:password)>` when authentication is configured.
    pub auth: Option<Arc<String>>,
    pub started_unix_s: f64,
}

impl HttpState {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        demand: Option<Arc<Demand>>,
        user: Option<&str>,
        password: Option<&str>,
    ) -> HttpState {
        let auth = match (user, password) {
            (Some(u), Some(p)) => Some(Arc::new(format!(
                "Basic {}",
                base64(format!("{u}:{p}").as_bytes())
            ))),
            _ => None,
        };
        HttpState {
            snapshots,
            demand,
            auth,
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

impl HttpState {
    /// A snapshot at most [`FRESH`] old, with the full list when `full`: the
    /// last one if it will do, else one asked of the core (waiting at most
    /// [`WAIT_FOR_CORE`], then the last one as it is).
    pub async fn snapshot(&self, full: bool) -> Arc<Snapshot> {
        let mut rx = self.snapshots.clone();
        let deadline = tokio::time::Instant::now() + WAIT_FOR_CORE;
        loop {
            let snap = rx.borrow_and_update().clone();
            let will_do = (snap.status.full || !full) && snap.taken_at.elapsed() < FRESH;
            let Some(demand) = self.demand.as_ref().filter(|_| !will_do) else {
                return snap;
            };
            demand.ask(full);
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return rx.borrow().clone(),
            }
        }
    }
}

/// The router (also used by tests without a socket).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(panel))
        .route("/events", get(events))
        .route("/api/targets", get(targets))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Serve until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: HttpState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// Constant-time comparison of the Authorization header.
fn authorized(state: &HttpState, headers: &HeaderMap) -> bool {
    let Some(want) = &state.auth else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let want = want.as_bytes();
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"blf-bridge\"")],
        "authentication required\n",
    )
        .into_response()
}

async fn panel(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PANEL).into_response()
}

async fn targets(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let snap = s.snapshot(true).await;
    axum::Json(&snap.status).into_response()
}

async fn events(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    // while the stream is open the core publishes every change in full; the
    // snapshots taken for /metrics in between (counts only) are skipped
    let guard = s.demand.as_ref().map(Demand::open_stream);
    let stream = WatchStream::new(s.snapshots.clone())
        .filter(|snap| snap.status.full)
        .map(move |snap| {
            let _open = &guard;
            Ok::<Event, Infallible>(
                Event::default()
                    .event("status")
                    .json_data(&snap.status)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable")),
            )
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Ready: listening, and (with OPTIONS keep-alives) the upstream answered within
/// the last keep-alive interval (plus the time a ping takes).
pub fn readiness(snap: &Snapshot) -> Result<(), String> {
    if !snap.listening {
        return Err("SIP listeners not bound yet".into());
    }
    if !snap.keepalive_options {
        return Ok(());
    }
    // one interval, plus half a second for the ping's round trip
    let window = Duration::from_secs(snap.keepalive_interval_s) + Duration::from_millis(500);
    let heard = snap
        .status
        .upstream_heard_ms_ago
        .map(|ms| Duration::from_millis(ms) + snap.taken_at.elapsed());
    match heard {
        _ if !snap.status.upstream_reachable => {
            Err("upstream unreachable (keep-alive OPTIONS unanswered)".into())
        }
        None => Err("upstream has not answered yet".into()),
        Some(ago) if ago > window => Err(format!(
            "upstream last answered {:.1} s ago (keep-alive interval {} s)",
            ago.as_secs_f64(),
            snap.keepalive_interval_s
        )),
        Some(_) => Ok(()),
    }
}

async fn readyz(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let snap = s.snapshot(false).await;
    match readiness(&snap) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let snap = s.snapshot(false).await;
    match render_metrics(&snap.status, s.started_unix_s) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

type Labels = Vec<(String, String)>;

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// The status in Prometheus text format.
pub fn render_metrics(st: &Status, started_unix_s: f64) -> Result<String, String> {
    let mut reg = Registry::default();
    let targets = gauge_family(
        &mut reg,
        "blf_bridge_targets",
        "Watched targets by merged state",
    );
    for (state, n) in TARGET_STATES.iter().zip(st.summary.targets_by_state) {
        targets.get_or_create(&label("state", state)).set(n as i64);
    }
    let phones = gauge_family(
        &mut reg,
        "blf_bridge_phone_subscriptions",
        "Phone subscriptions the bridge terminates, by profile",
    );
    for (profile, n) in &st.phones_by_profile {
        phones
            .get_or_create(&label("profile", profile))
            .set(*n as i64);
    }
    let ups = gauge_family(
        &mut reg,
        "blf_bridge_upstream_subscriptions",
        "Upstream subscriptions by package and state",
    );
    for (package, counts) in ["dialog", "presence"]
        .iter()
        .zip(st.summary.upstream_by_state)
    {
        for (state, n) in UP_STATES.iter().zip(counts) {
            ups.get_or_create(&vec![
                ("package".to_string(), package.to_string()),
                ("state".to_string(), state.to_string()),
            ])
            .set(n as i64);
        }
    }
    let paced = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    paced.set(st.upstream_paced as i64);
    reg.register(
        "blf_bridge_upstream_subscribes_paced",
        "Upstream SUBSCRIBEs waiting for the pacer",
        paced,
    );
    let capacity = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    capacity.set(i64::try_from(st.upstream_refresh_capacity).unwrap_or(i64::MAX));
    reg.register(
        "blf_bridge_upstream_refresh_capacity_targets",
        "Watched targets whose upstream refreshes upstream_rate keeps up with (upstream_expires refreshed at 70 %)",
        capacity,
    );
    let reachable = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    reachable.set(i64::from(st.upstream_reachable));
    reg.register(
        "blf_bridge_upstream_reachable",
        "1 while the upstream answers the keep-alive OPTIONS",
        reachable,
    );
    let c = &st.counters;
    counter(
        &mut reg,
        "blf_bridge_notifies_sent",
        "NOTIFYs sent to phones",
        c.notifies_sent,
    );
    counter(
        &mut reg,
        "blf_bridge_notifies_received",
        "NOTIFYs received from the upstream",
        c.notifies_received,
    );
    let fwd = counter_family(
        &mut reg,
        "blf_bridge_requests_forwarded",
        "Requests forwarded by the proxy, by method",
    );
    for (m, n) in &c.requests_forwarded {
        fwd.get_or_create(&label("method", m)).inc_by(*n);
    }
    let rej = counter_family(
        &mut reg,
        "blf_bridge_requests_rejected",
        "Requests the bridge refused itself, by status code",
    );
    for (code, n) in &c.requests_rejected {
        rej.get_or_create(&label("code", &code.to_string()))
            .inc_by(*n);
    }
    counter(
        &mut reg,
        "blf_bridge_upstream_auth_failures",
        "Upstream SUBSCRIBEs whose digest authentication failed",
        c.upstream_auth_failures,
    );
    counter(
        &mut reg,
        "blf_bridge_transaction_timeouts",
        "Client transactions that timed out (Timer B/F)",
        c.transaction_timeouts,
    );
    counter(
        &mut reg,
        "blf_bridge_upstream_failovers",
        "Moves from one resolved upstream server to another (failover and failback)",
        c.upstream_failovers,
    );
    counter(
        &mut reg,
        "blf_bridge_upstream_reconnects",
        "Times the TCP connection to the upstream was lost and opened again",
        c.upstream_reconnects,
    );
    let start = Gauge::<f64, AtomicU64>::default();
    start.set(started_unix_s);
    reg.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        start,
    );
    let build = gauge_family(&mut reg, "blf_bridge_build_info", "Version of the bridge");
    build
        .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
        .set(1);
    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Standard base64 (RFC 4648) of `data`.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
