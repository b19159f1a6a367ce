//! What the operator's window shows: a plain-data snapshot of the endpoint
//! (targets, their upstream subscriptions and watching phones) and the counters
//! behind the metrics. Built by the core task on demand — only when someone
//! looks: the counts for `/metrics` and `/readyz` without a record per phone,
//! the full list for `/api/targets` and the panel — and the runtime hands it to
//! the HTTP side, which never touches the core.

use crate::presence::{MergedState, PresenceStatus};
use crate::subscription::{Target, UpState, Upstream};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Counters since start, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// NOTIFYs the bridge sent to phones.
    pub notifies_sent: u64,
    /// NOTIFYs the upstream sent into the bridge's subscriptions.
    pub notifies_received: u64,
    /// Requests forwarded by the proxy, by method (known methods; `other`).
    pub requests_forwarded: BTreeMap<&'static str, u64>,
    /// Requests the bridge itself refused, by status code.
    pub requests_rejected: BTreeMap<u16, u64>,
    /// Upstream SUBSCRIBEs whose authentication failed.
    pub upstream_auth_failures: u64,
    /// Client transactions that timed out (Timer B/F).
    pub transaction_timeouts: u64,
    /// Moves from one resolved upstream server to another (failover and
    /// failback).
    pub upstream_failovers: u64,
    /// Times the TCP connection to the upstream was lost (then opened again).
    pub upstream_reconnects: u64,
}

/// Methods counted by name; anything else is `other` (bounded label values).
const KNOWN_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "INFO",
    "UPDATE",
    "PRACK",
    "MESSAGE",
    "PUBLISH",
];

impl Counters {
    /// Count a forwarded request by the method at the start of its bytes.
    pub fn forwarded(&mut self, data: &[u8]) {
        let method = data.split(|b| *b == b' ').next().unwrap_or_default();
        let name = KNOWN_METHODS
            .iter()
            .find(|m| m.as_bytes() == method)
            .copied()
            .unwrap_or("other");
        *self.requests_forwarded.entry(name).or_default() += 1;
    }

    /// Count a response the bridge generated, if it refuses (>= 300).
    pub fn rejected(&mut self, data: &[u8]) {
        let code = data
            .get(8..11)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok());
        if let Some(code) = code.filter(|c| *c >= 300) {
            *self.requests_rejected.entry(code).or_default() += 1;
        }
    }
}

/// One upstream subscription as the window shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamStatus {
    /// `idle`, `subscribing`, `active`, `backoff`, `stopped`, `unsubscribing`.
    pub state: &'static str,
    pub last_error: Option<String>,
}

/// One phone watching a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatcherStatus {
    /// `udp:192.168.1.50:5062` and the like.
    pub address: String,
    pub profile: String,
    pub user_agent: Option<String>,
    /// Seconds until the phone's subscription expires.
    pub expires_in_s: u64,
}

/// One watched target: its lamp and what it is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub aor: String,
    /// The merged state (`unknown`, `offline`, `idle`, `ringing`, `busy`, `held`).
    pub state: &'static str,
    /// The upstream `dialog` package: the subscription and the dialog states it reports.
    pub dialog: UpstreamStatus,
    pub dialogs: Vec<String>,
    /// The upstream `presence` package: the subscription and what it reports
    /// (`unknown`, `offline`, `online`, or `online (<activity>)`).
    pub presence: UpstreamStatus,
    pub presence_status: String,
    pub watchers: Vec<WatcherStatus>,
}

/// Merged target states, in the order [`Summary::targets_by_state`] counts them.
pub const TARGET_STATES: [&str; 6] = ["unknown", "offline", "idle", "ringing", "busy", "held"];
/// Upstream subscription states, in the order [`Summary::upstream_by_state`]
/// counts them.
pub const UP_STATES: [&str; 6] = [
    "idle",
    "subscribing",
    "active",
    "backoff",
    "stopped",
    "unsubscribing",
];

/// The counts behind `/metrics`: one pass over the targets, nothing allocated
/// per phone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Targets by merged state ([`TARGET_STATES`]).
    pub targets_by_state: [usize; 6],
    /// Upstream subscriptions by package (`[dialog, presence]`) and state
    /// ([`UP_STATES`]).
    pub upstream_by_state: [[usize; 6]; 2],
}

impl Summary {
    pub(super) fn count(&mut self, t: &Target) {
        self.targets_by_state[target_state_index(t.phone_view().state)] += 1;
        self.upstream_by_state[0][up_state_index(t.dialog.state)] += 1;
        self.upstream_by_state[1][up_state_index(t.presence.state)] += 1;
    }
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Every target with its watchers — only in a full status (`full`); the
    /// counts alone (for `/metrics`, `/readyz`) leave it empty.
    pub targets: Vec<TargetStatus>,
    pub phone_subscriptions: usize,
    /// Phone subscriptions by profile name.
    pub phones_by_profile: BTreeMap<String, usize>,
    /// Upstream SUBSCRIBEs waiting for the pacer.
    pub upstream_paced: usize,
    /// How many targets `upstream_rate` keeps refreshed upstream (see
    /// `SubscriptionManager::refresh_capacity`).
    pub upstream_refresh_capacity: usize,
    /// Whether the upstream answers (keep-alive), and when it was last heard
    /// (seconds ago; `None`: not yet).
    pub upstream_reachable: bool,
    pub upstream_heard_ms_ago: Option<u64>,
    /// The upstream server in use (`ip:port`), and how many `[upstream] proxy`
    /// resolved to (failover, RFC 3263).
    pub upstream_server: String,
    pub upstream_servers: usize,
    pub counters: Counters,
    /// Targets and upstream subscriptions by state (not in the JSON: the
    /// list has them).
    #[serde(skip)]
    pub summary: Summary,
    /// Whether `targets` lists every target (false: the counts only).
    #[serde(skip)]
    pub full: bool,
}

impl Status {
    /// Nothing watched, nothing counted.
    pub fn empty() -> Status {
        Status {
            targets: Vec::new(),
            phone_subscriptions: 0,
            phones_by_profile: BTreeMap::new(),
            upstream_paced: 0,
            upstream_refresh_capacity: 0,
            upstream_reachable: true,
            upstream_heard_ms_ago: None,
            upstream_server: String::new(),
            upstream_servers: 0,
            counters: Counters::default(),
            summary: Summary::default(),
            full: true,
        }
    }
}

fn target_state_index(s: MergedState) -> usize {
    match s {
        MergedState::Unknown => 0,
        MergedState::Offline => 1,
        MergedState::Idle => 2,
        MergedState::Ringing => 3,
        MergedState::Busy => 4,
        MergedState::Held => 5,
    }
}

fn up_state_index(s: UpState) -> usize {
    match s {
        UpState::Idle => 0,
        UpState::Subscribing => 1,
        UpState::Active => 2,
        UpState::Backoff => 3,
        UpState::Stopped => 4,
        UpState::Unsubscribing => 5,
    }
}

pub(super) fn state_name(s: MergedState) -> &'static str {
    TARGET_STATES[target_state_index(s)]
}

fn up_status(u: &Upstream) -> UpstreamStatus {
    UpstreamStatus {
        state: UP_STATES[up_state_index(u.state)],
        last_error: u.last_error.clone(),
    }
}

/// A target's part of the snapshot (its watchers are filled in by the caller).
pub(super) fn target_status(t: &Target) -> TargetStatus {
    let view = t.phone_view();
    TargetStatus {
        aor: t.aor.clone(),
        state: state_name(view.state),
        dialog: up_status(&t.dialog),
        dialogs: t
            .dialog_stream
            .dialogs()
            .iter()
            .map(|d| d.state.to_string())
            .collect(),
        presence: up_status(&t.presence),
        presence_status: match t.presence_stream.status() {
            PresenceStatus::Unknown => "unknown".to_string(),
            PresenceStatus::Offline => "offline".to_string(),
            PresenceStatus::Online { activity: None } => "online".to_string(),
            PresenceStatus::Online { activity: Some(a) } => {
                format!("online ({a:?})").to_lowercase()
            }
        },
        watchers: Vec::new(),
    }
}

/// Seconds from `now` to `at` (0 when passed).
pub(super) fn secs_until(at: Instant, now: Instant) -> u64 {
    at.saturating_duration_since(now).as_secs()
}
