//! Identifiers, keys and the messages between the subscription translator's
//! parts and the endpoint.

use crate::context::Context;
use crate::flow::Flow;
use crate::transaction::ServerKey;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Everything the subscription translator needs to know about its
/// surroundings: the core's shared [`Context`] (T1 gives Timer N = 64·T1).
pub type Env = Context;

/// The two upstream event packages merged per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Package {
    Dialog,
    Presence,
}

impl Package {
    pub const BOTH: [Package; 2] = [Package::Dialog, Package::Presence];

    pub fn event(self) -> &'static str {
        match self {
            Package::Dialog => "dialog",
            Package::Presence => "presence",
        }
    }
    pub fn accept(self) -> &'static str {
        match self {
            Package::Dialog => "application/dialog-info+xml",
            Package::Presence => "application/pidf+xml",
        }
    }
}

/// Hashes the ids the bridge hands out itself ([`PhoneId`], [`TargetId`]:
/// one counter, never chosen by a peer, so no one can aim keys at a bucket):
/// a multiply and a fold instead of SipHash, for the fan-out's per-phone
/// lookups.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // the high bits (the table's tag) and the low ones (its index) both
        // depend on every bit of the id
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(17) ^ n;
    }
}

/// A map keyed by the bridge's own ids (see [`IdHash`]).
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHash>;

/// Identifies a phone subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneId(pub u64);

/// Identifies a watched target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetId(pub u64);

impl fmt::Display for PhoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A dialog the bridge is an endpoint of, as it is looked up: a 128-bit
/// keyed digest of Call-ID and the bridge's own tag (two SipHashes under keys
/// drawn at start), 16 bytes inline instead of a copy of both per dialog. The
/// keys are secret, so no peer can aim two dialogs at one digest; the lookup
/// still compares the subscription's own Call-ID and tag, so even that would
/// only miss, never reach another dialog.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DialogKey(u64, u64);

impl DialogKey {
    pub fn new(call_id: &[u8], local_tag: &[u8]) -> DialogKey {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        static KEYS: std::sync::OnceLock<(RandomState, RandomState)> = std::sync::OnceLock::new();
        let (a, b) = KEYS.get_or_init(Default::default);
        let digest = |k: &RandomState| {
            let mut h = k.build_hasher();
            // length-prefixed, so no two pairs run together
            h.write_usize(call_id.len());
            h.write(call_id);
            h.write(local_tag);
            h.finish()
        };
        DialogKey(digest(a), digest(b))
    }
}

impl fmt::Debug for DialogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DialogKey({:016x}{:016x})", self.0, self.1)
    }
}

/// Identifies what a client transaction started by the manager was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReqTag {
    Notify {
        phone: PhoneId,
        cseq: u32,
    },
    Upstream {
        target: TargetId,
        package: Package,
        generation: u32,
        cseq: u32,
        unsubscribe: bool,
    },
}

/// Work for the endpoint.
#[derive(Debug, Clone)]
pub enum Out {
    /// Send through a new client transaction; report its outcome with `tag`.
    Request {
        flow: Flow,
        data: Bytes,
        tag: ReqTag,
    },
    /// Answer a server transaction.
    Response { key: ServerKey, data: Bytes },
}

/// A phone NOTIFY of a fan-out, built when the endpoint asked for it
/// ([`SubscriptionManager::poll_notify`](super::SubscriptionManager::poll_notify)):
/// send it through a new client transaction started `at`, reporting with
/// `tag`. `branch` is its top Via branch, a slice of `data` (the transaction
/// layer need not parse what the bridge just wrote).
#[derive(Debug, Clone)]
pub struct BuiltNotify {
    pub flow: Flow,
    pub data: Bytes,
    pub branch: Bytes,
    pub tag: ReqTag,
    pub at: std::time::Instant,
}

/// Where an incoming request belongs: the one question the endpoint asks
/// ([`SubscriptionManager::route`](super::SubscriptionManager::route)); it hands
/// every route but [`NotOurs`](Route::NotOurs) back to
/// [`SubscriptionManager::on_request`](super::SubscriptionManager::on_request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// In one of our upstream subscription dialogs, recognised by its Call-ID
    /// (ours, random) whatever flow it arrives on.
    Upstream(TargetId, Package),
    /// A NOTIFY in an upstream subscription we just ended: answered 200.
    RetiredNotify,
    /// In a phone subscription the bridge terminates (Call-ID and our tag).
    PhoneDialog(PhoneId),
    /// An out-of-dialog dialog-event SUBSCRIBE whose phone's profile translates.
    NewTranslated,
    /// Not for the subscription translator.
    NotOurs,
}

impl Route {
    /// Phone-side routes; a request from the upstream is never one.
    pub fn is_phone_side(self) -> bool {
        matches!(self, Route::PhoneDialog(_) | Route::NewTranslated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialog_keys_of_different_pairs_differ() {
        let a = DialogKey::new(b"ab", b"c");
        assert_eq!(a, DialogKey::new(b"ab", b"c"));
        assert_ne!(a, DialogKey::new(b"a", b"bc"));
        assert_ne!(a, DialogKey::new(b"ab", b"d"));
        assert_eq!(std::mem::size_of::<DialogKey>(), 16);
    }
}

/// How far ahead CSeq and version are reserved: one disk write per this many
/// NOTIFYs (or upstream SUBSCRIBEs) of a subscription.
pub const RESERVE: u32 = 64;

/// Records changed since the store last took them: id → durable.
#[derive(Debug, Default)]
pub struct Changes {
    pub(super) phones: std::collections::HashMap<PhoneId, bool>,
    pub(super) targets: std::collections::HashMap<TargetId, bool>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.phones.is_empty() && self.targets.is_empty()
    }
}
