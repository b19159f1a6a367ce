//! Presence model: parsing the upstream `dialog` (RFC 4235 dialog-info) and
//! `presence` (RFC 3863 PIDF / RFC 4480 RPID) documents, and merging both streams
//! into one state per watched target.
//!
//! Feed each upstream NOTIFY body into the target's [`DialogStream`] or
//! [`PresenceStream`], then [`merge()`] them into the [`TargetView`] every phone
//! subscription is rendered from.

pub mod dialog_info;
pub mod merge;
pub mod pidf;
pub mod state;
mod xml;

#[cfg(test)]
mod samples;

pub use dialog_info::{
    DialogEntry, DialogInfoDoc, DialogState, DocState, Participant, TargetParam, parse_dialog_info,
};
pub use merge::{ApplyOutcome, DialogStream, PresenceStream, merge};
pub use pidf::{Activity, Basic, PidfDoc, PidfPerson, PidfTuple, PresenceStatus, parse_pidf};
pub use state::{Direction, MergedState, PickupInfo, TargetView};
pub use xml::{MAX_BODY, MAX_DEPTH, PresenceError};
