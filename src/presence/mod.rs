//! Presence model: parsing the upstream `dialog` (RFC 4235 dialog-info) and
//! `presence` (RFC 3863 PIDF / RFC 4480 RPID) documents, and merging both streams
//! into one state per watched target.

pub mod state;

pub use state::{Direction, MergedState, PickupInfo, TargetView};
