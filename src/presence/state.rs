//! The merged, per-target state every phone subscription is rendered from. Plain
//! data (serialisable) so that it can be stored and shown on the lamp panel.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a BLF lamp should say about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MergedState {
    /// Nothing reliable known yet (upstream not answered or failed).
    Unknown,
    /// Not registered (only the presence package can say this).
    Offline,
    /// Registered, no call.
    Idle,
    /// An incoming call is ringing (pickup possible).
    Ringing,
    /// In a call (or placing one).
    Busy,
    /// In a call that is on hold.
    Held,
}

impl MergedState {
    pub const ALL: [MergedState; 6] = [
        MergedState::Unknown,
        MergedState::Offline,
        MergedState::Idle,
        MergedState::Ringing,
        MergedState::Busy,
        MergedState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MergedState::Unknown => "unknown",
            MergedState::Offline => "offline",
            MergedState::Idle => "idle",
            MergedState::Ringing => "ringing",
            MergedState::Busy => "busy",
            MergedState::Held => "held",
        }
    }
}

impl fmt::Display for MergedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MergedState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MergedState::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown state '{s}' (expected one of: unknown, offline, idle, ringing, busy, held)")
            })
    }
}

/// RFC 4235 `direction` of a dialog, seen from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The target placed the call.
    Initiator,
    /// The target is being called.
    Recipient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Initiator => "initiator",
            Direction::Recipient => "recipient",
        }
    }
}

/// Details of the call behind a ringing/busy/held state, from the upstream dialog
/// stream: what a phone needs to show the other party and to pick the call up
/// (INVITE with Replaces needs call-id and both tags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupInfo {
    pub call_id: Option<String>,
    /// Tag of the target's side of the dialog.
    pub local_tag: Option<String>,
    /// Tag of the other party's side.
    pub remote_tag: Option<String>,
    pub direction: Option<Direction>,
    /// The other party (`<remote><identity>`), a URI.
    pub remote_identity: Option<String>,
    /// Its display name, if the upstream gave one.
    pub remote_display: Option<String>,
    /// `<remote><target uri>`.
    pub remote_target: Option<String>,
    /// `<local><identity>` / `<local><target uri>` (the target itself).
    pub local_identity: Option<String>,
    pub local_target: Option<String>,
}

/// The merged state of one target, the input of every profile rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub state: MergedState,
    /// The dialog that decided a ringing/busy/held state.
    pub call: Option<PickupInfo>,
}

impl TargetView {
    pub fn new(state: MergedState) -> TargetView {
        TargetView { state, call: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_their_names() {
        for s in MergedState::ALL {
            assert_eq!(s.as_str().parse::<MergedState>().unwrap(), s);
            assert_eq!(
                s.to_string().to_uppercase().parse::<MergedState>().unwrap(),
                s
            );
        }
        assert!("away".parse::<MergedState>().is_err());
    }
}
