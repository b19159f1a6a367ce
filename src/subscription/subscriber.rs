//! The upstream side: the bridge as subscriber (RFC 6665 §4.1). Each watched
//! target has one [`Upstream`] per [`Package`], shared by all phones watching it,
//! authenticated with the configured account, refreshed with jitter,
//! re-established with capped exponential backoff.
//!
//! An [`Upstream`] owns its transitions and builds its own SUBSCRIBEs; what the
//! registry must do next (timers, a fresh dialog, backoff) comes back as an
//! [`Action`].

use super::build;
use super::types::{Env, Out, Package, ReqTag, TargetId};
use crate::auth::{AuthError, DigestClient};
use crate::config::Subscriptions;
use crate::sip::SubStateKind;
use crate::sip::{HeaderName, MessageBuilder, Method, SipMessage};
use crate::util::{Rng, instant_serde};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Consecutive transient failures during which an upstream stream keeps its last
/// known state.
const TRANSIENT_FAILURES_KEPT: u32 = 3;

/// First wait after an authentication failure (a 401/407 that cannot or must
/// not be answered): doubled per consecutive failure up to [`RARE_MAX_S`].
pub const AUTH_FIRST_S: u64 = 120;
/// First wait after a refusal that waiting hardly cures (403, 404, 489…).
pub const RARE_FIRST_S: u64 = 600;
/// The longest wait between two attempts of a refused subscription, and the
/// cap on a `Retry-After`.
pub const RARE_MAX_S: u64 = 3600;
/// The longest subscription the bridge asks for, whatever `Min-Expires` says.
pub const MAX_UPSTREAM_EXPIRES_S: u32 = 7200;
/// Challenges answered for one SUBSCRIBE attempt: the first one, and one more
/// for a nonce that went stale (or a reused nonce the server no longer takes).
const CHALLENGES_PER_ATTEMPT: u8 = 2;

/// State of one upstream subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpState {
    /// Nothing sent yet.
    Idle,
    /// Initial SUBSCRIBE in flight.
    Subscribing,
    /// Established (2xx or NOTIFY seen).
    Active,
    /// Waiting for the next attempt after a failure.
    Backoff,
    /// Rejected for good (`rejected`, `noresource`, 403/404/489…) until the retry
    /// ceiling passes.
    Stopped,
    /// Un-SUBSCRIBE sent; the target is going away.
    Unsubscribing,
}

/// The bridge's subscription to one package of one target at the upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upstream {
    pub package: Package,
    pub state: UpState,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub remote_target: Option<String>,
    /// Route set (Record-Route of the 2xx, reversed).
    pub route_set: Vec<String>,
    pub cseq: u32,
    /// Incremented for every new upstream dialog; responses and timers of older
    /// generations are ignored.
    pub generation: u32,
    /// A SUBSCRIBE transaction is outstanding.
    pub in_flight: bool,
    #[serde(with = "instant_serde::option")]
    pub expires_at: Option<Instant>,
    /// At least one NOTIFY arrived (in any generation): the stream has spoken.
    pub ever_notified: bool,
    /// A NOTIFY arrived in the current generation (Timer N satisfied).
    pub notified: bool,
    /// Consecutive failures (for backoff).
    pub failures: u32,
    /// `Min-Expires` learned from a 423: never ask for less.
    pub expires_floor: Option<u32>,
    /// When the next attempt after a failure is due.
    #[serde(default, with = "instant_serde::option")]
    pub retry_at: Option<Instant>,
    /// Challenges answered since the last SUBSCRIBE attempt began (at most
    /// [`CHALLENGES_PER_ATTEMPT`]).
    #[serde(skip)]
    pub challenges: u8,
    /// `Expires` of the last SUBSCRIBE sent (a 423 is worth a retry only when
    /// its `Min-Expires` is above it).
    #[serde(default)]
    pub asked_expires: u32,
    /// Bytes of the SUBSCRIBE in flight (the digest client needs the challenged
    /// request); taken by its final response.
    #[serde(skip)]
    pub last_request: Option<Bytes>,
    /// Why the last attempt failed (for logs and the lamp panel).
    pub last_error: Option<String>,
    /// CSeq reserved ahead in the store (see `PhoneSub::reserved_cseq`): a
    /// refresh after a restart uses a CSeq above any sent before.
    #[serde(default)]
    pub reserved_cseq: u32,
}

/// What the registry must do after an upstream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Nothing,
    /// Set this timer (the refresh of an established subscription).
    Schedule {
        after: Duration,
        timer: UpTimer,
    },
    /// Send the SUBSCRIBE again (challenge answered, longer expiry, refresh due).
    Resubscribe,
    /// Start a fresh dialog (new Call-ID and tag).
    Restart,
    /// The attempt failed: back off.
    Failed(Failure),
}

/// Why an upstream attempt failed, and how long the upstream asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub why: String,
    /// The upstream's `Retry-After`: the next attempt not before it (capped).
    pub retry_after: Option<u64>,
    pub class: Refusal,
}

/// How a failure is retried (the table in `docs/decisions.md`, "Polite
/// upstream").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Timeouts, 5xx, 429, other 4xx: `retry_min` doubled up to `retry_max`;
    /// the last state is kept for two failures.
    Transient,
    /// A 401/407 that cannot or must not be answered: [`AUTH_FIRST_S`] doubled
    /// up to [`RARE_MAX_S`]; the stream becomes unknown.
    Auth,
    /// Refused for good (403, 489, 405, 501, 603, `rejected`…):
    /// [`RARE_FIRST_S`] doubled up to [`RARE_MAX_S`]; the stream becomes unknown.
    Rare,
    /// 404/604, the target does not exist: as [`Refusal::Rare`], and the
    /// target renders offline.
    NotFound,
}

impl Action {
    fn failed(why: impl Into<String>, retry_after: Option<u64>, class: Refusal) -> Action {
        Action::Failed(Failure {
            why: why.into(),
            retry_after,
            class,
        })
    }
}

/// The timers of one upstream subscription, each for one generation of its
/// dialog (a timer of an older generation does nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum UpTimer {
    /// Refresh the subscription established by the SUBSCRIBE with this CSeq.
    Refresh { generation: u32, cseq: u32 },
    /// Try again after a failure.
    Retry { generation: u32 },
    /// Timer N (RFC 6665 §4.1.2.4): a NOTIFY must follow the SUBSCRIBE within
    /// 64·T1.
    TimerN { generation: u32 },
}

/// What an accepted NOTIFY brought.
pub(super) struct Notified {
    /// Its body carries state to apply.
    pub has_state: bool,
    /// `Subscription-State: terminated`: what to do about it.
    pub ended: Option<Action>,
}

/// The target an [`Upstream`] belongs to, as its SUBSCRIBEs name it.
pub(super) struct Owner<'a> {
    pub id: TargetId,
    pub aor: &'a str,
    /// The account user the SUBSCRIBEs come from.
    pub account: &'a str,
}

/// The wait decided after a failure.
pub(super) struct Backoff {
    pub delay_s: u64,
    pub generation: u32,
    /// The failure makes the stream's state unknown (a rejection, or repeated
    /// failures; a single transient one keeps the last known state, so lamps do
    /// not flap on an upstream hiccup).
    pub forget_state: bool,
    /// The target does not exist at the upstream: render it offline.
    pub not_found: bool,
    /// Another cause than the previous failure's (logged; a repeat is not).
    pub new_cause: bool,
}

impl Upstream {
    pub(super) fn new(package: Package, call_id: String, local_tag: String) -> Upstream {
        Upstream {
            package,
            state: UpState::Idle,
            call_id,
            local_tag,
            remote_tag: None,
            remote_target: None,
            route_set: Vec::new(),
            cseq: 0,
            generation: 0,
            in_flight: false,
            expires_at: None,
            ever_notified: false,
            notified: false,
            failures: 0,
            expires_floor: None,
            retry_at: None,
            challenges: 0,
            asked_expires: 0,
            last_request: None,
            last_error: None,
            reserved_cseq: 0,
        }
    }

    /// Request-URI and Route set of the next SUBSCRIBE: in-dialog once
    /// established, else the target's AoR.
    pub(super) fn request_target(&self, aor: &str) -> (String, Vec<String>) {
        match (&self.remote_tag, &self.remote_target) {
            (Some(_), Some(rt)) => build::in_dialog_target(rt, &self.route_set),
            _ => (aor.to_string(), Vec::new()),
        }
    }

    /// The next SUBSCRIBE (initial, refresh, answer to a challenge, or
    /// un-SUBSCRIBE), with pre-emptive credentials once a challenge is known
    /// (nonce reuse with nc+1, from the account's `auth`, shared by all its
    /// upstream subscriptions).
    pub(super) fn subscribe(
        &mut self,
        env: &Env,
        owner: Owner<'_>,
        branch: &str,
        unsubscribe: bool,
        auth: &mut DigestClient,
        rng: &mut Rng,
    ) -> Out {
        let Owner { id, aor, account } = owner;
        self.cseq += 1;
        let expires = if unsubscribe {
            0
        } else {
            let floor = self.expires_floor.unwrap_or(0);
            env.cfg.subscriptions.upstream_expires.max(floor)
        };
        self.asked_expires = expires;
        let (ruri, _) = self.request_target(aor);
        let auth = auth.authorize(&Method::Subscribe, &ruri, b"", rng);
        let data = subscribe_request(env, aor, account, self, branch, expires, &auth);
        self.in_flight = true;
        self.last_request = Some(data.clone());
        if matches!(
            self.state,
            UpState::Idle | UpState::Backoff | UpState::Stopped
        ) {
            self.state = UpState::Subscribing;
        }
        if unsubscribe {
            self.state = UpState::Unsubscribing;
        }
        Out::Request {
            flow: env.upstream,
            data,
            tag: ReqTag::Upstream {
                target: id,
                package: self.package,
                generation: self.generation,
                cseq: self.cseq,
                unsubscribe,
            },
        }
    }

    /// A new dialog (new Call-ID and tag) in a new generation. Returns the old
    /// Call-ID and whether it had an established dialog.
    pub(super) fn restart(&mut self, call_id: String, local_tag: String) -> (String, bool) {
        let old = std::mem::replace(&mut self.call_id, call_id);
        let had_dialog = self.remote_tag.is_some();
        self.local_tag = local_tag;
        self.remote_tag = None;
        self.remote_target = None;
        self.route_set.clear();
        self.generation += 1;
        self.in_flight = false;
        self.challenges = 0;
        self.notified = false;
        self.expires_at = None;
        self.state = UpState::Idle;
        (old, had_dialog)
    }

    /// Count a failure and decide the wait before the next attempt: capped
    /// exponential backoff, or `retry_after` when the upstream gave one.
    pub(super) fn fail(&mut self, failure: Failure, s: &Subscriptions) -> Backoff {
        let Failure {
            why,
            retry_after,
            class,
        } = failure;
        self.failures = self.failures.saturating_add(1);
        self.in_flight = false;
        self.challenges = 0;
        let new_cause = self.last_error.as_deref() != Some(why.as_str());
        self.last_error = Some(why);
        let doubled = |first: u64, max: u64| {
            first
                .saturating_mul(1u64 << (self.failures - 1).min(16))
                .min(max)
        };
        let delay_s = match class {
            Refusal::Transient => doubled(s.retry_min_s, s.retry_max_s),
            Refusal::Auth => doubled(AUTH_FIRST_S, RARE_MAX_S),
            Refusal::Rare | Refusal::NotFound => doubled(RARE_FIRST_S, RARE_MAX_S),
        };
        // Retry-After is a floor (never sooner than asked), capped; a
        // `Retry-After: 0` does not turn the backoff into a loop
        let delay_s = delay_s.max(retry_after.unwrap_or(0).min(RARE_MAX_S));
        let stop = class != Refusal::Transient;
        self.state = if stop {
            UpState::Stopped
        } else {
            UpState::Backoff
        };
        Backoff {
            delay_s,
            generation: self.generation,
            forget_state: stop || self.failures >= TRANSIENT_FAILURES_KEPT,
            not_found: class == Refusal::NotFound,
            new_cause,
        }
    }

    /// The SUBSCRIBE of this generation got no final response (Timer F).
    pub(super) fn on_request_timeout(&self, generation: u32) -> Action {
        if self.generation != generation {
            return Action::Nothing;
        }
        Action::failed("SUBSCRIBE timed out", None, Refusal::Transient)
    }

    /// Whether a response belongs to the outstanding SUBSCRIBE of this dialog.
    pub(super) fn is_current(&self, generation: u32, cseq: u32) -> bool {
        self.generation == generation && self.cseq == cseq
    }

    /// The final response to our current SUBSCRIBE (see [`is_current`](Self::is_current)).
    ///
    /// A 401/407 is answered with the account's `auth` only for `realm` when
    /// given (the account's pinned or learned realm), at most
    /// [`CHALLENGES_PER_ATTEMPT`] times per attempt; the realm answered is put
    /// in `answered_realm`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_response(
        &mut self,
        msg: &SipMessage,
        default_expires: u32,
        aor: &str,
        realm: Option<&str>,
        answered_realm: &mut Option<String>,
        auth: &mut DigestClient,
        now: Instant,
        rng: &mut Rng,
    ) -> Action {
        let code = msg.status().unwrap_or(0);
        let package = self.package.event();
        self.in_flight = false;
        if !matches!(code, 401 | 407) {
            self.challenges = 0;
        }
        // needed only to answer a challenge: not kept for the subscription's life
        let last_request = self.last_request.take();
        let reason = || {
            format!(
                "{code} {}",
                String::from_utf8_lossy(msg.reason().unwrap_or_default())
            )
        };
        match code {
            200..=299 => {
                let was_initial = self.remote_tag.is_none();
                if let Some(tag) = msg.to_tag() {
                    self.remote_tag = Some(String::from_utf8_lossy(tag).into_owned());
                }
                if let Some(c) = msg.contacts().next().and_then(|(_, c)| c.ok()) {
                    self.remote_target = Some(String::from_utf8_lossy(c.uri).into_owned());
                }
                if was_initial {
                    // route set = Record-Route of the 2xx, reversed (RFC 3261 §12.1.2)
                    let mut rs: Vec<String> = msg
                        .values(HeaderName::RecordRoute)
                        .map(|s| String::from_utf8_lossy(msg.slice(s)).into_owned())
                        .collect();
                    rs.reverse();
                    self.route_set = rs;
                }
                let granted = msg
                    .expires()
                    .and_then(|e| e.ok())
                    .unwrap_or(default_expires);
                if self.state != UpState::Active {
                    tracing::info!(target = %aor, package, code, granted, "upstream subscription active");
                }
                self.state = UpState::Active;
                // failures are reset by the first NOTIFY, not by the 2xx: an
                // upstream that accepts but never notifies must still back off
                if granted == 0 {
                    return Action::Nothing;
                }
                self.expires_at = Some(now + Duration::from_secs(granted as u64));
                let timer = UpTimer::Refresh {
                    generation: self.generation,
                    cseq: self.cseq,
                };
                let after = refresh_delay(granted, rng);
                tracing::debug!(target = %aor, package, granted, "upstream subscription active");
                Action::Schedule { after, timer }
            }
            401 | 407 => {
                if self.challenges >= CHALLENGES_PER_ATTEMPT {
                    // a new (stale) nonce for every answer: not answered again
                    // until the backoff is over
                    let why = format!(
                        "authentication failed: challenged again after {} answers",
                        self.challenges
                    );
                    return Action::failed(why, None, Refusal::Auth);
                }
                let challenged = last_request.and_then(|b| SipMessage::parse(b).ok());
                // the first challenge of an attempt may replace a nonce the
                // request reused (pre-emptive credentials), stale or not
                let reused = self.challenges == 0;
                let result = match &challenged {
                    Some(req) => auth
                        .handle_rechallenge(msg, req, realm, reused, rng)
                        .map_err(|e| {
                            // another realm asks for this target: the
                            // target's refusal, not the account's failure
                            let class = match e {
                                AuthError::ForeignRealm { .. } => Refusal::Rare,
                                _ => Refusal::Auth,
                            };
                            (e.to_string(), class)
                        }),
                    None => Err((
                        "challenge without a request to answer".to_string(),
                        Refusal::Auth,
                    )),
                };
                match result {
                    Ok(r) => {
                        self.challenges += 1;
                        *answered_realm = Some(r);
                        Action::Resubscribe
                    }
                    Err((e, class)) => {
                        Action::failed(format!("authentication failed: {e}"), None, class)
                    }
                }
            }
            423 => {
                let min = msg
                    .header_value(HeaderName::MinExpires)
                    .and_then(|v| crate::sip::parse_delta(v).ok());
                match min {
                    // once with the longer time (never ask for less again);
                    // a 423 to that is a refusal
                    Some(m) if m > self.asked_expires && m <= MAX_UPSTREAM_EXPIRES_S => {
                        tracing::info!(target = %aor, package, min = m, "upstream wants a longer subscription");
                        self.expires_floor = Some(m);
                        Action::Resubscribe
                    }
                    Some(m) if m > MAX_UPSTREAM_EXPIRES_S => Action::failed(
                        format!(
                            "423: Min-Expires {m} above the {MAX_UPSTREAM_EXPIRES_S} s the bridge asks for at most"
                        ),
                        None,
                        Refusal::Rare,
                    ),
                    // refused again with what we already asked for, or
                    // without the Min-Expires it must carry: a broken server
                    _ => Action::failed(
                        format!(
                            "{}: Min-Expires {min:?} for Expires {}",
                            reason(),
                            self.asked_expires
                        ),
                        None,
                        Refusal::Rare,
                    ),
                }
            }
            481 => {
                // the upstream lost our subscription (restart): start a fresh one now
                tracing::info!(target = %aor, package, "upstream answered 481: re-subscribing");
                Action::Restart
            }
            404 | 604 => Action::failed(reason(), None, Refusal::NotFound),
            403 | 405 | 489 | 501 | 603 => Action::failed(reason(), None, Refusal::Rare),
            300..=699 => {
                let retry_after = msg
                    .header_value(HeaderName::RetryAfter)
                    .and_then(|v| {
                        let e = memchr::memchr(b';', v).unwrap_or(v.len());
                        crate::sip::parse_delta(&v[..e]).ok()
                    })
                    .map(u64::from);
                Action::failed(reason(), retry_after, Refusal::Transient)
            }
            _ => Action::Nothing,
        }
    }

    /// A NOTIFY in this dialog; `None` (answer 481) when its tags or Event do
    /// not match, or the subscription is being ended.
    pub(super) fn on_notify(&mut self, msg: &SipMessage, now: Instant) -> Option<Notified> {
        // The NOTIFY's To-tag is our From-tag; its From-tag is the notifier's tag.
        let to_tag_ok = msg
            .to_tag()
            .is_some_and(|tt| tt == self.local_tag.as_bytes());
        let from_tag = msg.from_tag();
        let event_ok = matches!(msg.event(), Some(Ok(e)) if e.is(self.package.event()));
        let tag_ok = match (&self.remote_tag, from_tag) {
            (Some(r), Some(f)) => String::from_utf8_lossy(f) == r.as_str(),
            (None, Some(_)) => true, // NOTIFY before the 2xx (RFC 6665 §4.1.2.4)
            _ => false,
        };
        if !to_tag_ok || !tag_ok || !event_ok || self.state == UpState::Unsubscribing {
            return None;
        }
        if self.remote_tag.is_none() {
            self.remote_tag = from_tag.map(|f| String::from_utf8_lossy(f).into_owned());
        }
        if let Some(c) = msg.contacts().next().and_then(|(_, c)| c.ok()) {
            self.remote_target = Some(String::from_utf8_lossy(c.uri).into_owned());
        }
        self.ever_notified = true;
        self.notified = true;
        self.failures = 0;
        self.last_error = None;
        if self.state == UpState::Subscribing {
            self.state = UpState::Active;
        }
        let mut ended = None;
        match msg.subscription_state().and_then(|s| s.ok()) {
            Some(s) if matches!(s.state, SubStateKind::Terminated) => {
                let reason = s
                    .reason
                    .map(|r| String::from_utf8_lossy(r).to_ascii_lowercase());
                ended = Some(self.on_terminated(reason.as_deref(), s.retry_after));
            }
            Some(s) => {
                if let Some(e) = s.expires {
                    self.expires_at = Some(now + Duration::from_secs(e as u64));
                }
            }
            None => {}
        }
        Some(Notified {
            // a terminating NOTIFY without a body carries no state
            has_state: ended.is_none() || !msg.body().is_empty(),
            ended,
        })
    }

    /// `Subscription-State: terminated` from the upstream (RFC 6665 §4.1.3).
    fn on_terminated(&self, reason: Option<&str>, retry_after: Option<u32>) -> Action {
        if self.state == UpState::Unsubscribing {
            return Action::Nothing;
        }
        match reason {
            None | Some("deactivated") | Some("timeout") => match retry_after {
                Some(r) => {
                    Action::failed("terminated by upstream", Some(r as u64), Refusal::Transient)
                }
                None => Action::Restart,
            },
            Some(r @ ("probation" | "giveup")) => Action::failed(
                format!("terminated ({r})"),
                retry_after.map(u64::from),
                Refusal::Transient,
            ),
            // rejected / noresource / invariant / unknown: do not retry soon
            Some(r) => Action::failed(format!("terminated ({r})"), None, Refusal::Rare),
        }
    }

    /// One of its timers fired.
    pub(super) fn on_timer(&self, timer: UpTimer) -> Action {
        let current = |generation| self.generation == generation;
        match timer {
            UpTimer::Refresh { generation, cseq }
                if current(generation)
                    && self.cseq == cseq
                    && self.state == UpState::Active
                    && !self.in_flight =>
            {
                Action::Resubscribe
            }
            UpTimer::Retry { generation }
                if current(generation)
                    && matches!(self.state, UpState::Backoff | UpState::Stopped) =>
            {
                Action::Restart
            }
            // a final non-2xx stopped it (RFC 6665 §4.1.2.4): the failure is
            // counted once, not again 64·T1 later
            UpTimer::TimerN { generation }
                if current(generation)
                    && !self.notified
                    && matches!(self.state, UpState::Subscribing | UpState::Active) =>
            {
                Action::failed("no NOTIFY within Timer N", None, Refusal::Transient)
            }
            _ => Action::Nothing,
        }
    }

    /// An established dialog to end with an un-SUBSCRIBE.
    pub(super) fn established(&self) -> bool {
        self.remote_tag.is_some() && self.state == UpState::Active
    }
}

/// A SUBSCRIBE towards the upstream for `aor`, from the `account` user: initial
/// (no remote tag yet) or in-dialog.
fn subscribe_request(
    env: &Env,
    aor: &str,
    account: &str,
    up: &Upstream,
    branch: &str,
    expires: u32,
    auth: &[(&'static str, String)],
) -> Bytes {
    let domain = &env.cfg.upstream.domain;
    let transport = env.upstream.transport;
    let (ruri, routes) = up.request_target(aor);
    let mut b = MessageBuilder::request(&Method::Subscribe, &ruri);
    b.header("Via", env.local.via(transport, branch))
        .header("Max-Forwards", 70);
    for r in &routes {
        b.header("Route", r);
    }
    b.header(
        "From",
        format_args!("<sip:{account}@{domain}>;tag={}", up.local_tag),
    );
    match &up.remote_tag {
        Some(t) => b.header("To", format_args!("<{aor}>;tag={t}")),
        None => b.header("To", format_args!("<{aor}>")),
    };
    b.header("Call-ID", &up.call_id)
        .header("CSeq", format_args!("{} SUBSCRIBE", up.cseq))
        .header("Contact", build::contact(env, transport))
        .header("Event", up.package.event())
        .header("Accept", up.package.accept())
        .header("Expires", expires);
    for (name, value) in auth {
        b.header(name, value);
    }
    b.header("User-Agent", env.user_agent);
    b.finish()
}

/// Refresh before expiry: at 70–85 % of the granted time, at least 5 s early.
fn refresh_delay(granted: u32, rng: &mut Rng) -> Duration {
    let g = granted as u64 * 1000;
    let frac = 700 + rng.below(150);
    let at = g * frac / 1000;
    Duration::from_millis(at.min(g.saturating_sub(5000)).max(1000))
}
