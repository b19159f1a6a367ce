//! Device-model profiles and dialog-info rendering.
//!
//! Phones differ in what they can show on a BLF key (protocol.md §1): Grandstream
//! GXP/GRP show the remote party's display name, Grandstream Wave renders only
//! `confirmed` and `terminated`, Yealink needs a `<dialog>` node, Snom picks calls
//! up through `<remote><target>`, Zoiper already shows "Offline" from what the
//! hosted PBX sends. A [`Profile`] says, per merged target state
//! ([`MergedState`]), which document a phone model gets; the profile is chosen by
//! the phone's User-Agent ([`ProfileSet::select`]).
//!
//! Profiles are TOML files (format: `profiles/README.md`). The shipped ones are
//! compiled into the binary; a profiles directory can override them (same `name`)
//! or add new ones ([`ProfileSet::load`]).

mod model;
mod render;

pub use model::{
    DialogRule, DialogState, DirectionRule, GENERIC, Mode, OfflineStrategy, Profile, ProfileError,
    Quirks, RemoteDisplay, TargetSource,
};
pub use render::{DIALOG_INFO_NS, RenderedDoc, Rendering, SubState, render};

use crate::presence::{Direction, MergedState, PickupInfo, TargetView};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// The shipped profiles, in selection order (`generic` last), as
/// (file name, text).
pub const BUILTIN_FILES: [(&str, &str); 6] = [
    ("zoiper.toml", include_str!("../../profiles/zoiper.toml")),
    (
        "grandstream-wave.toml",
        include_str!("../../profiles/grandstream-wave.toml"),
    ),
    (
        "grandstream-gxp.toml",
        include_str!("../../profiles/grandstream-gxp.toml"),
    ),
    ("yealink.toml", include_str!("../../profiles/yealink.toml")),
    ("snom.toml", include_str!("../../profiles/snom.toml")),
    ("generic.toml", include_str!("../../profiles/generic.toml")),
];

/// 1-based line of the top-level `name = …` key (0 if not found).
fn name_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix("name")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// The profiles in selection order; the last one is always `generic`. Each is
/// shared ([`Arc`]), so a subscription can hold the profile it was matched to.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    profiles: Vec<Arc<Profile>>,
}

impl ProfileSet {
    /// The shipped profiles only.
    pub fn builtin() -> ProfileSet {
        let profiles = BUILTIN_FILES
            .iter()
            .map(|(file, text)| {
                // The shipped files are part of the program and covered by tests; a
                // failure here is a build defect, not an input problem.
                model::parse_profile(text, &format!("profiles/{file}"), "built-in")
                    .map(Arc::new)
                    .unwrap_or_else(|e| panic!("shipped profile profiles/{file} is invalid: {e:?}"))
            })
            .collect();
        ProfileSet { profiles }
    }

    /// The shipped profiles, overridden and extended by the `*.toml` files in
    /// `dir` (other files, such as a README, are ignored). A file whose `name` is
    /// a shipped profile's replaces it in place; new names are inserted before
    /// `generic`, in file-name order. Every problem in every file is reported.
    pub fn load(dir: Option<&Path>) -> Result<ProfileSet, Vec<ProfileError>> {
        let mut set = ProfileSet::builtin();
        let Some(dir) = dir else {
            return Ok(set);
        };
        let dir_name = dir.display().to_string();
        let unreadable = |e: std::io::Error| {
            vec![ProfileError {
                file: dir_name.clone(),
                line: 0,
                message: format!("cannot read profiles directory: {e}"),
            }]
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut errors = Vec::new();
        let mut loaded: Vec<(Profile, String)> = Vec::new();
        for path in files {
            let file = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(ProfileError {
                        file,
                        line: 0,
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            match model::parse_profile(&text, &file, &file) {
                Ok(p) => {
                    if let Some((_, first)) = loaded.iter().find(|(q, _)| q.name == p.name) {
                        errors.push(ProfileError {
                            file: file.clone(),
                            line: name_line(&text),
                            message: format!(
                                "name: profile '{}' is already defined in {first}",
                                p.name
                            ),
                        });
                    } else {
                        loaded.push((p, file));
                    }
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (p, _) in loaded {
            set.insert(p);
        }
        Ok(set)
    }

    /// Replace the profile of the same name, or add it before `generic`.
    fn insert(&mut self, p: Profile) {
        if let Some(slot) = self.profiles.iter_mut().find(|q| q.name == p.name) {
            *slot = Arc::new(p);
        } else {
            let at = self.profiles.len().saturating_sub(1);
            self.profiles.insert(at, Arc::new(p));
        }
    }

    /// The profile for a phone: the first whose User-Agent pattern matches, else
    /// `generic` (also when the request has no User-Agent).
    pub fn select(&self, user_agent: Option<&[u8]>) -> &Profile {
        self.select_shared(user_agent)
    }

    /// [`select`](Self::select), as a handle a subscription can keep.
    pub fn select_shared(&self, user_agent: Option<&[u8]>) -> &Arc<Profile> {
        if let Some(ua) = user_agent
            && let Some(p) = self.profiles.iter().find(|p| p.matches(ua))
        {
            return p;
        }
        self.generic_shared()
    }

    /// The fallback profile.
    pub fn generic(&self) -> &Profile {
        self.generic_shared()
    }

    fn generic_shared(&self) -> &Arc<Profile> {
        // builtin() always provides `generic`, and an override keeps its name.
        self.get_shared(GENERIC)
            .or(self.profiles.last())
            .expect("a profile set always holds generic")
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.get_shared(name).map(|p| &**p)
    }

    /// [`get`](Self::get), as a handle a subscription can keep.
    pub fn get_shared(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The profiles in selection order (`generic` last).
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.iter().map(|p| &**p)
    }

    /// The profile names in selection order.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }
}

fn offline_text(p: &Profile) -> String {
    match &p.offline {
        OfflineStrategy::Render => {
            let how = match p.rule(MergedState::Offline) {
                None => "no dialog".to_string(),
                Some(r) => match &r.remote_display {
                    RemoteDisplay::Literal(t) if r.include_remote => format!("{} \"{t}\"", r.state),
                    _ => r.state.to_string(),
                },
            };
            format!("render ({how})")
        }
        OfflineStrategy::FailSubscription {
            reason,
            retry_after,
            reject_code,
        } => {
            let mut s = format!("fail-subscription (reason={reason}");
            if let Some(n) = retry_after {
                let _ = write!(s, ", retry-after={n}");
            }
            let _ = write!(s, ", re-SUBSCRIBE answered {reject_code})");
            s
        }
    }
}

/// `blf-bridge profiles list`: every profile in selection order with its mode,
/// offline strategy, User-Agent patterns and origin.
pub fn list_text(set: &ProfileSet) -> String {
    let mut out = String::new();
    for p in set.iter() {
        let _ = writeln!(out, "{}  [{}]", p.name, p.source);
        if !p.description.is_empty() {
            let first = p.description.lines().next().unwrap_or("");
            let _ = writeln!(out, "  {first}");
        }
        let _ = writeln!(out, "  mode:       {}", p.mode.as_str());
        if p.mode == Mode::Translate {
            let _ = writeln!(out, "  offline:    {}", offline_text(p));
        }
        let pats: Vec<&str> = p.user_agent_patterns().collect();
        if pats.is_empty() {
            let _ = writeln!(
                out,
                "  user-agent: (none: fallback when nothing else matches)"
            );
        } else {
            for (i, pat) in pats.iter().enumerate() {
                let label = if i == 0 { "user-agent:" } else { "           " };
                let _ = writeln!(out, "  {label} {pat}");
            }
        }
    }
    out
}

/// An example call for `profiles render`: what the upstream reports for a call
/// between the target and `sip:caller@<target's domain>`.
fn example_call(entity: &str, state: MergedState, remote_display: Option<&str>) -> PickupInfo {
    let domain = entity
        .split_once('@')
        .map(|(_, d)| d.split([';', '>', '?']).next().unwrap_or(d))
        .filter(|d| !d.is_empty())
        .unwrap_or("example.invalid");
    PickupInfo {
        call_id: Some("example-call-id@bridge".into()),
        local_tag: Some("target-tag".into()),
        remote_tag: Some("caller-tag".into()),
        direction: Some(if state == MergedState::Ringing {
            Direction::Recipient
        } else {
            Direction::Initiator
        }),
        remote_identity: Some(format!("sip:caller@{domain}")),
        remote_display: remote_display.map(str::to_string),
        remote_target: Some(format!("sip:caller@{domain}")),
        local_identity: Some(entity.to_string()),
        local_target: Some(entity.to_string()),
    }
}

/// `blf-bridge profiles render <profile> <state>`: the exact NOTIFY body a phone
/// using `profile` gets for `state` (ringing/busy/held with an example call whose
/// other party is named `remote_display`), with version `version`; or, for an
/// offline target on a fail-subscription profile, the `Subscription-State` header
/// it gets.
pub fn render_text(
    set: &ProfileSet,
    profile: &str,
    state: &str,
    remote_display: Option<&str>,
    entity: &str,
    version: u32,
) -> Result<String, String> {
    let p = set.get(profile).ok_or_else(|| {
        format!(
            "unknown profile '{profile}' (profiles: {})",
            set.names().join(", ")
        )
    })?;
    let state: MergedState = state.parse().map_err(|_| {
        format!(
            "unknown state '{state}' (states: {})",
            MergedState::ALL.map(|s| s.as_str()).join(", ")
        )
    })?;
    if p.mode == Mode::Passthrough {
        let translating: Vec<&str> = set
            .iter()
            .filter(|q| q.mode == Mode::Translate)
            .map(|q| q.name.as_str())
            .collect();
        return Err(format!(
            "profile '{profile}' is passthrough: its subscriptions are proxied to the upstream untouched and nothing is rendered (translating profiles: {})",
            translating.join(", ")
        ));
    }
    let view = TargetView {
        state,
        call: matches!(
            state,
            MergedState::Ringing | MergedState::Busy | MergedState::Held
        )
        .then(|| example_call(entity, state, remote_display)),
    };
    Ok(match render(p, entity, &view) {
        Rendering::Document(doc) => doc.with_version(version),
        t @ Rendering::Terminate { .. } => {
            format!(
                "Subscription-State: {}\n",
                t.subscription_state()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_in_order_with_generic_last() {
        let set = ProfileSet::builtin();
        assert_eq!(
            set.names(),
            [
                "zoiper",
                "grandstream-wave",
                "grandstream-gxp",
                "yealink",
                "snom",
                "generic"
            ]
        );
        assert_eq!(set.generic().name(), "generic");
        assert!(set.iter().all(|p| p.source() == "built-in"));
        for p in set.iter() {
            assert!(
                !p.description().is_empty(),
                "{} has no description",
                p.name()
            );
        }
    }

    #[test]
    fn select_without_user_agent_is_generic() {
        let set = ProfileSet::builtin();
        assert_eq!(set.select(None).name(), "generic");
        assert_eq!(set.select(Some(b"")).name(), "generic");
        assert_eq!(set.select(Some(b"\xff\xfe garbage")).name(), "generic");
    }

    #[test]
    fn render_text_errors_list_names() {
        let set = ProfileSet::builtin();
        let e = render_text(&set, "nope", "busy", None, "sip:1@x", 0).unwrap_err();
        assert!(
            e.contains("grandstream-gxp") && e.contains("generic"),
            "{e}"
        );
        let e = render_text(&set, "generic", "away", None, "sip:1@x", 0).unwrap_err();
        assert!(
            e.contains("unknown, offline, idle, ringing, busy, held"),
            "{e}"
        );
        let e = render_text(&set, "zoiper", "busy", None, "sip:1@x", 0).unwrap_err();
        assert!(
            e.contains("passthrough") && e.contains("grandstream-wave"),
            "{e}"
        );
    }
}
