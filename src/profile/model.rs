//! The validated profile model and its TOML parser.
//!
//! A profile file is parsed in two steps: serde reads it into `Raw*` structs whose
//! values keep their byte spans (`toml::Spanned`), then [`parse_profile`] checks
//! every value and builds a [`Profile`]. All problems are collected and reported
//! as `file:line: key.path: message`, the style of [`crate::config::ConfigError`].
//! The format itself is documented in `profiles/README.md`.

use crate::config::{ConfigError, line_of};
use crate::presence::MergedState;
use regex::bytes::Regex;
use serde::Deserialize;
use toml::Spanned;

/// A problem in a profile file, located by file and line (same type and display
/// format as configuration errors, so the CLI can print both alike).
pub type ProfileError = ConfigError;

/// Name of the fallback profile: it has no User-Agent pattern and is always
/// selected last.
pub const GENERIC: &str = "generic";

/// What the bridge does with a phone's dialog subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The bridge answers the SUBSCRIBE itself and sends dialog-info rendered
    /// from the merged dialog+presence state with this profile's rules.
    Translate,
    /// The bridge proxies the subscription to the upstream untouched (for phones
    /// that already render what the upstream sends, e.g. Zoiper).
    Passthrough,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Translate => "translate",
            Mode::Passthrough => "passthrough",
        }
    }
}

/// RFC 4235 `<state>` values (there is no "offline" among them, protocol.md §3.2):
/// the same type the dialog-info parser produces.
pub use crate::presence::DialogState;

/// A state value as written in a profile: lower case, exactly.
fn dialog_state_value(s: &str) -> Option<DialogState> {
    DialogState::ALL.into_iter().find(|d| d.as_str() == s)
}

/// Where the `direction` attribute of a rendered `<dialog>` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectionRule {
    /// No `direction` attribute.
    Omit,
    Initiator,
    Recipient,
    /// The direction of the call behind the state, if known (else omitted).
    FromCall,
}

/// The display name of `<remote><identity>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteDisplay {
    /// The other party's display name as the upstream reported it (if any).
    FromCall,
    /// Fixed text, e.g. "Offline" (an empty text renders no `display`).
    Literal(String),
}

/// Where the URI of `<remote><target>` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetSource {
    /// The call's remote target, else the other party's identity.
    FromCall,
    /// The monitored target's own AOR (the document's `entity`), as Asterisk
    /// chan_sip does for Snom (ASTERISK-16735, protocol.md §1.7).
    Entity,
}

/// How one merged state is rendered when it produces a `<dialog>` element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogRule {
    pub state: DialogState,
    pub direction: DirectionRule,
    /// `<state event="…">` (RFC 4235: cancelled, rejected, replaced, local-bye,
    /// remote-bye, error, timeout).
    pub event: Option<String>,
    /// `call-id`, `local-tag`, `remote-tag` attributes from the call (needed for
    /// pickup with INVITE/Replaces).
    pub include_ids: bool,
    /// `<local>` with the target's identity and target URI.
    pub include_local: bool,
    /// `<remote><identity>` (the other party, or a literal display such as "Offline").
    pub include_remote: bool,
    /// `<remote><target uri>` (where a pickup INVITE goes).
    pub include_target: bool,
    pub remote_display: RemoteDisplay,
    pub target: TargetSource,
    /// `+sip.rendering` parameter on the local target (`Some(false)` = "no",
    /// the RFC 4235 way to say the target holds the call).
    pub rendering: Option<bool>,
}

/// How the bridge signals "offline" to a phone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OfflineStrategy {
    /// Render `[states.offline]` like any other state.
    Render,
    /// Terminate the phone's subscription while the target is offline
    /// (`Subscription-State: terminated;reason=…;retry-after=…`) and answer its
    /// re-SUBSCRIBEs with `reject_code` until the target is back.
    FailSubscription {
        reason: String,
        retry_after: Option<u32>,
        reject_code: u16,
    },
}

/// Per-device workarounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quirks {
    /// Never more than one `<dialog>` (Linksys SPA962 crashes on several).
    pub single_dialog: bool,
    /// Render a dummy terminated `<dialog>` instead of an empty `<dialog-info/>`
    /// (Yealink, Bria).
    pub never_empty: bool,
    /// What an `early` state is sent as (`confirmed` for phones that blink on
    /// early dialogs regardless of direction).
    pub early_as: DialogState,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            single_dialog: false,
            never_empty: false,
            early_as: DialogState::Early,
        }
    }
}

/// One device-model profile: how phones whose User-Agent matches are served.
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) source: String,
    pub(crate) patterns: Vec<Regex>,
    pub(crate) mode: Mode,
    /// Indexed like [`MergedState::ALL`]; `None` = no `<dialog>` element.
    pub(crate) states: [Option<DialogRule>; 6],
    pub(crate) offline: OfflineStrategy,
    pub(crate) quirks: Quirks,
}

impl Profile {
    /// Parse and validate one profile file's text; `file` names it in errors and
    /// becomes its [`source`](Self::source).
    pub fn parse(text: &str, file: &str) -> Result<Profile, Vec<ProfileError>> {
        parse_profile(text, file, file)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where it was loaded from: "built-in" or the file's path.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The User-Agent patterns as written in the file.
    pub fn user_agent_patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|r| r.as_str())
    }

    /// Whether one of the profile's patterns matches this User-Agent value.
    pub fn matches(&self, user_agent: &[u8]) -> bool {
        self.patterns.iter().any(|r| r.is_match(user_agent))
    }

    /// The rule for a merged state (`None`: no `<dialog>` element).
    pub fn rule(&self, state: MergedState) -> Option<&DialogRule> {
        self.states[state_index(state)].as_ref()
    }

    pub fn offline(&self) -> &OfflineStrategy {
        &self.offline
    }

    pub fn quirks(&self) -> Quirks {
        self.quirks
    }

    /// The response code for re-SUBSCRIBEs while the target is offline, when
    /// the profile fails subscriptions for offline targets.
    pub fn reject_code(&self) -> Option<u16> {
        match &self.offline {
            OfflineStrategy::Render => None,
            OfflineStrategy::FailSubscription { reject_code, .. } => Some(*reject_code),
        }
    }
}

pub(crate) fn state_index(state: MergedState) -> usize {
    match state {
        MergedState::Unknown => 0,
        MergedState::Offline => 1,
        MergedState::Idle => 2,
        MergedState::Ringing => 3,
        MergedState::Busy => 4,
        MergedState::Held => 5,
    }
}

// ------------------------------------------------------------------ raw (serde)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(rename = "match", default)]
    matching: Option<Spanned<RawMatch>>,
    #[serde(default)]
    states: Option<Spanned<RawStates>>,
    #[serde(default)]
    offline: Option<Spanned<RawOffline>>,
    #[serde(default)]
    quirks: Option<RawQuirks>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    user_agent: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStates {
    unknown: Option<Spanned<RawState>>,
    offline: Option<Spanned<RawState>>,
    idle: Option<Spanned<RawState>>,
    ringing: Option<Spanned<RawState>>,
    busy: Option<Spanned<RawState>>,
    held: Option<Spanned<RawState>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dialog: bool,
    state: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    remote_display: Option<Spanned<String>>,
    include_ids: Option<Spanned<bool>>,
    include_local: Option<Spanned<bool>>,
    include_remote: Option<Spanned<bool>>,
    include_target: Option<Spanned<bool>>,
    target: Option<Spanned<String>>,
    rendering: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    strategy: Spanned<String>,
    reason: Option<Spanned<String>>,
    retry_after: Option<Spanned<u32>>,
    reject_code: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuirks {
    #[serde(default)]
    single_dialog: bool,
    #[serde(default)]
    never_empty: bool,
    early_as: Option<Spanned<String>>,
}

// ------------------------------------------------------------------- validation

const STATE_EVENTS: [&str; 7] = [
    "cancelled",
    "rejected",
    "replaced",
    "local-bye",
    "remote-bye",
    "error",
    "timeout",
];

/// Reasons that make the phone come back (RFC 6665 §4.1.3). `rejected`,
/// `noresource` and `invariant` tell the subscriber never to retry, which would
/// leave the key dead after the target comes back online.
const RETRY_REASONS: [&str; 4] = ["probation", "deactivated", "giveup", "timeout"];

struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<ProfileError>,
}

impl Ctx<'_> {
    fn err(&mut self, offset: usize, message: String) {
        self.errors.push(ProfileError {
            file: self.file.to_string(),
            line: line_of(self.text, offset),
            message,
        });
    }
}

fn one_of(list: &[&str]) -> String {
    list.join(", ")
}

/// Parse and validate one profile file. `file` names it in errors; `source` is
/// what [`Profile::source`] reports.
pub(crate) fn parse_profile(
    text: &str,
    file: &str,
    source: &str,
) -> Result<Profile, Vec<ProfileError>> {
    let raw: RawProfile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let message = e.message().trim().replace('\n', " ");
            // A missing field is reported at the start of its table: name the
            // table only (the key on that line is not the culprit).
            let whole_table = message.starts_with("missing field");
            let message = match e
                .span()
                .and_then(|s| key_path_at(text, s.start, !whole_table))
            {
                Some(path) => format!("{path}: {message}"),
                None => message,
            };
            return Err(vec![ProfileError {
                file: file.to_string(),
                line,
                message,
            }]);
        }
    };
    let mut cx = Ctx {
        text,
        file,
        errors: Vec::new(),
    };

    let name = raw.name.get_ref().clone();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        });
    if !name_ok {
        cx.err(
            raw.name.span().start,
            format!("name: '{name}' must be 1-64 characters of a-z, 0-9, '-', '_', '.'"),
        );
    }

    let mode = match raw.mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("translate") => Mode::Translate,
        Some("passthrough") => Mode::Passthrough,
        Some(other) => {
            let at = raw.mode.as_ref().map(|m| m.span().start).unwrap_or(0);
            cx.err(
                at,
                format!("mode: '{other}' is not one of translate, passthrough"),
            );
            Mode::Translate
        }
    };

    // [match]
    let mut patterns = Vec::new();
    if let Some(m) = &raw.matching {
        if name == GENERIC && !m.get_ref().user_agent.is_empty() {
            cx.err(
                m.span().start,
                "match.user_agent: the generic profile is the fallback and must not have patterns"
                    .into(),
            );
        }
        for p in &m.get_ref().user_agent {
            match regex::bytes::RegexBuilder::new(p.get_ref())
                .size_limit(1 << 20)
                .build()
            {
                Ok(r) => patterns.push(r),
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .trim_start_matches("error: ");
                    cx.err(
                        p.span().start,
                        format!("match.user_agent: bad regex '{}': {msg}", p.get_ref()),
                    );
                }
            }
        }
    }

    // [offline]
    let offline = match &raw.offline {
        None => OfflineStrategy::Render,
        Some(o) => parse_offline(&mut cx, o.get_ref()),
    };

    // [quirks]
    let quirks = match &raw.quirks {
        None => Quirks::default(),
        Some(q) => Quirks {
            single_dialog: q.single_dialog,
            never_empty: q.never_empty,
            early_as: match &q.early_as {
                None => DialogState::Early,
                Some(s) => match s.get_ref().as_str() {
                    "early" => DialogState::Early,
                    "confirmed" => DialogState::Confirmed,
                    other => {
                        cx.err(
                            s.span().start,
                            format!("quirks.early_as: '{other}' is not one of early, confirmed"),
                        );
                        DialogState::Early
                    }
                },
            },
        },
    };

    // [states]
    let mut states: [Option<DialogRule>; 6] = passthrough_fallback();
    let raw_states = raw.states.as_ref().map(|s| s.get_ref());
    let entries: [(MergedState, Option<&Spanned<RawState>>); 6] = [
        (
            MergedState::Unknown,
            raw_states.and_then(|s| s.unknown.as_ref()),
        ),
        (
            MergedState::Offline,
            raw_states.and_then(|s| s.offline.as_ref()),
        ),
        (MergedState::Idle, raw_states.and_then(|s| s.idle.as_ref())),
        (
            MergedState::Ringing,
            raw_states.and_then(|s| s.ringing.as_ref()),
        ),
        (MergedState::Busy, raw_states.and_then(|s| s.busy.as_ref())),
        (MergedState::Held, raw_states.and_then(|s| s.held.as_ref())),
    ];
    let mut missing = Vec::new();
    for (state, raw_state) in entries {
        match raw_state {
            Some(rs) => states[state_index(state)] = parse_state(&mut cx, state, rs),
            None => {
                let needed = mode == Mode::Translate
                    && !(state == MergedState::Offline
                        && matches!(offline, OfflineStrategy::FailSubscription { .. }));
                if needed {
                    missing.push(state.as_str());
                }
            }
        }
    }
    if !missing.is_empty() {
        let at = raw
            .states
            .as_ref()
            .map(|s| s.span().start)
            .unwrap_or_else(|| raw.name.span().start);
        cx.err(
            at,
            format!(
                "states: missing [states.{}] (a translate profile needs unknown, offline, idle, ringing, busy and held; offline may be left out with [offline] strategy = \"fail-subscription\")",
                missing.join("], [states.")
            ),
        );
    }

    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| e.line);
        return Err(cx.errors);
    }
    Ok(Profile {
        name,
        description: raw.description.unwrap_or_default().trim().to_string(),
        source: source.to_string(),
        patterns,
        mode,
        states,
        offline,
        quirks,
    })
}

/// The dotted key at a byte offset (`states.busy.dialog`), for serde's messages
/// that do not name it: the key on that line under the nearest table header.
/// Best effort (plain `key = value` lines and `[table]` headers); with
/// `allow_key` false only a header line yields a path.
fn key_path_at(text: &str, offset: usize, allow_key: bool) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?.trim();
    let unquote = |k: &str| k.trim().trim_matches('"').trim_matches('\'').to_string();
    let table_of = |h: &str| {
        h.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    };
    if line.starts_with('[') {
        return Some(table_of(line));
    }
    if !allow_key {
        return None;
    }
    let key = unquote(line.split_once('=')?.0);
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    let header = text
        .get(..start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    Some(match header {
        Some(h) => format!("{}.{key}", table_of(h)),
        None => key,
    })
}

fn parse_offline(cx: &mut Ctx<'_>, o: &RawOffline) -> OfflineStrategy {
    match o.strategy.get_ref().as_str() {
        "render" => {
            for (key, at) in [
                ("reason", o.reason.as_ref().map(|s| s.span().start)),
                (
                    "retry_after",
                    o.retry_after.as_ref().map(|s| s.span().start),
                ),
                (
                    "reject_code",
                    o.reject_code.as_ref().map(|s| s.span().start),
                ),
            ] {
                if let Some(at) = at {
                    cx.err(
                        at,
                        format!("offline.{key}: only used with strategy = \"fail-subscription\""),
                    );
                }
            }
            OfflineStrategy::Render
        }
        "fail-subscription" => {
            let reason = match &o.reason {
                None => "probation".to_string(),
                Some(r) if RETRY_REASONS.contains(&r.get_ref().as_str()) => r.get_ref().clone(),
                Some(r) => {
                    cx.err(
                        r.span().start,
                        format!(
                            "offline.reason: '{}' is not one of {} (rejected, noresource and invariant tell the phone never to retry)",
                            r.get_ref(),
                            one_of(&RETRY_REASONS)
                        ),
                    );
                    "probation".to_string()
                }
            };
            let reject_code = match &o.reject_code {
                None => 480,
                Some(c) if (400..=699).contains(c.get_ref()) => *c.get_ref(),
                Some(c) => {
                    cx.err(
                        c.span().start,
                        format!(
                            "offline.reject_code: {} is not a final error code (400-699)",
                            c.get_ref()
                        ),
                    );
                    480
                }
            };
            OfflineStrategy::FailSubscription {
                reason,
                retry_after: o.retry_after.as_ref().map(|r| *r.get_ref()),
                reject_code,
            }
        }
        other => {
            cx.err(
                o.strategy.span().start,
                format!("offline.strategy: '{other}' is not one of render, fail-subscription"),
            );
            OfflineStrategy::Render
        }
    }
}

fn parse_state(cx: &mut Ctx<'_>, state: MergedState, rs: &Spanned<RawState>) -> Option<DialogRule> {
    let key = |k: &str| format!("states.{state}.{k}");
    let r = rs.get_ref();
    if !r.dialog {
        // Every other key describes the <dialog> element; with none rendered they
        // would be silently ignored, which hides mistakes.
        let given = [
            ("state", r.state.as_ref().map(|s| s.span().start)),
            ("direction", r.direction.as_ref().map(|s| s.span().start)),
            ("event", r.event.as_ref().map(|s| s.span().start)),
            (
                "remote_display",
                r.remote_display.as_ref().map(|s| s.span().start),
            ),
            (
                "include_ids",
                r.include_ids.as_ref().map(|s| s.span().start),
            ),
            (
                "include_local",
                r.include_local.as_ref().map(|s| s.span().start),
            ),
            (
                "include_remote",
                r.include_remote.as_ref().map(|s| s.span().start),
            ),
            (
                "include_target",
                r.include_target.as_ref().map(|s| s.span().start),
            ),
            ("target", r.target.as_ref().map(|s| s.span().start)),
            ("rendering", r.rendering.as_ref().map(|s| s.span().start)),
        ];
        for (k, at) in given {
            if let Some(at) = at {
                cx.err(at, format!("{}: has no effect with dialog = false", key(k)));
            }
        }
        return None;
    }
    let dialog_state = match &r.state {
        None => {
            cx.err(
                rs.span().start,
                format!(
                    "{}: missing (dialog = true needs one of {})",
                    key("state"),
                    DialogState::ALL.map(|d| d.as_str()).join(", ")
                ),
            );
            DialogState::Terminated
        }
        Some(s) => dialog_state_value(s.get_ref()).unwrap_or_else(|| {
            cx.err(
                s.span().start,
                format!(
                    "{}: '{}' is not one of {}",
                    key("state"),
                    s.get_ref(),
                    DialogState::ALL.map(|d| d.as_str()).join(", ")
                ),
            );
            DialogState::Terminated
        }),
    };
    let direction = match &r.direction {
        None => DirectionRule::Omit,
        Some(d) => match d.get_ref().as_str() {
            "none" => DirectionRule::Omit,
            "initiator" => DirectionRule::Initiator,
            "recipient" => DirectionRule::Recipient,
            "from-call" => DirectionRule::FromCall,
            other => {
                cx.err(
                    d.span().start,
                    format!(
                        "{}: '{other}' is not one of initiator, recipient, from-call, none",
                        key("direction")
                    ),
                );
                DirectionRule::Omit
            }
        },
    };
    let event = r.event.as_ref().and_then(|e| {
        if STATE_EVENTS.contains(&e.get_ref().as_str()) {
            Some(e.get_ref().clone())
        } else {
            cx.err(
                e.span().start,
                format!(
                    "{}: '{}' is not one of {}",
                    key("event"),
                    e.get_ref(),
                    one_of(&STATE_EVENTS)
                ),
            );
            None
        }
    });
    let flag = |f: &Option<Spanned<bool>>| f.as_ref().is_some_and(|b| *b.get_ref());
    let include_local = flag(&r.include_local);
    let include_remote = flag(&r.include_remote);
    let include_target = flag(&r.include_target);
    let remote_display = match &r.remote_display {
        None => RemoteDisplay::FromCall,
        Some(d) => {
            if !include_remote {
                cx.err(
                    d.span().start,
                    format!("{}: needs include_remote = true", key("remote_display")),
                );
            }
            if d.get_ref() == "from-call" {
                RemoteDisplay::FromCall
            } else if d.get_ref().chars().any(|c| c.is_control()) {
                cx.err(
                    d.span().start,
                    format!(
                        "{}: must not contain control characters",
                        key("remote_display")
                    ),
                );
                RemoteDisplay::FromCall
            } else {
                RemoteDisplay::Literal(d.get_ref().clone())
            }
        }
    };
    let target = match &r.target {
        None => TargetSource::FromCall,
        Some(t) => {
            if !include_target {
                cx.err(
                    t.span().start,
                    format!("{}: needs include_target = true", key("target")),
                );
            }
            match t.get_ref().as_str() {
                "from-call" => TargetSource::FromCall,
                "entity" => TargetSource::Entity,
                other => {
                    cx.err(
                        t.span().start,
                        format!(
                            "{}: '{other}' is not one of from-call, entity",
                            key("target")
                        ),
                    );
                    TargetSource::FromCall
                }
            }
        }
    };
    let rendering = match &r.rendering {
        None => None,
        Some(v) => {
            if !include_local {
                cx.err(
                    v.span().start,
                    format!("{}: needs include_local = true", key("rendering")),
                );
            }
            match v.get_ref().as_str() {
                "yes" => Some(true),
                "no" => Some(false),
                other => {
                    cx.err(
                        v.span().start,
                        format!("{}: '{other}' is not one of yes, no", key("rendering")),
                    );
                    None
                }
            }
        }
    };
    Some(DialogRule {
        state: dialog_state,
        direction,
        event,
        include_ids: flag(&r.include_ids),
        include_local,
        include_remote,
        include_target,
        remote_display,
        target,
        rendering,
    })
}

/// Plain RFC 4235 rules without call details: what a passthrough profile
/// renders if [`crate::profile::render`] is ever asked to (the bridge proxies
/// such subscriptions instead), and the starting point for the rules a
/// translate profile reads from its file.
fn passthrough_fallback() -> [Option<DialogRule>; 6] {
    let rule = |state: DialogState, direction: DirectionRule| {
        Some(DialogRule {
            state,
            direction,
            event: None,
            include_ids: false,
            include_local: false,
            include_remote: false,
            include_target: false,
            remote_display: RemoteDisplay::FromCall,
            target: TargetSource::FromCall,
            rendering: None,
        })
    };
    [
        rule(DialogState::Terminated, DirectionRule::Omit),
        rule(DialogState::Terminated, DirectionRule::Omit),
        rule(DialogState::Terminated, DirectionRule::Omit),
        rule(DialogState::Early, DirectionRule::Recipient),
        rule(DialogState::Confirmed, DirectionRule::FromCall),
        rule(DialogState::Confirmed, DirectionRule::FromCall),
    ]
}
