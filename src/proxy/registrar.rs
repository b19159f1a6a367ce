//! Registrations the bridge relayed: which phone (flow) stands behind which
//! Contact, so that requests the upstream sends to a registered phone reach it
//! through the bridge.
//!
//! Two ways to stay on the inbound path (chosen per REGISTER):
//! - **Path** (RFC 3327): when `[proxy] path` is on, the phone lists `path` in
//!   `Supported`, and the registrar has not shown that it ignores Path. The
//!   Contact stays the phone's; the Path URI `sip:b-<token>@bridge;lr` names the
//!   binding.
//! - **Contact rewrite** otherwise: each Contact URI is replaced by
//!   `sip:b-<token>@bridge`; the 2xx's Contact list gets the original URIs back
//!   so that the phone recognises its bindings.
//!
//! A registrar that ignores Path (no Path echoed in its 2xx) is remembered: the
//! phone is told to come back within a minute, and its next REGISTER carries a
//! token Contact plus the removal of its directly registered one.
//!
//! A binding's token is stable: a re-REGISTER of the same Contact for the same
//! AoR reuses it (and so does the retry after a 401), and the binding expires with
//! the registrar's binding (the expiry the 2xx grants). All of it is plain data
//! (serde), so a store can persist it across a restart.

use crate::flow::{ConnId, Flow};
use crate::util::instant_serde;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How a binding keeps the bridge on the inbound path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    /// A Path header names the bridge; the registrar stores the phone's Contact.
    Path,
    /// The registrar stores a Contact of the bridge carrying the token.
    Contact,
}

/// One Contact of one AoR, registered through the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub token: String,
    /// The AoR (the REGISTER's To URI as the phone wrote it).
    pub aor: String,
    /// The phone's own Contact URI, as written.
    pub contact: String,
    /// Where requests for this binding go (the flow the REGISTER came on).
    pub flow: Flow,
    pub mode: BindingMode,
    /// The registrar accepted it at least once.
    pub confirmed: bool,
    /// The registrar ignored our Path and holds the phone's own Contact: the next
    /// REGISTER switches the binding to Contact rewriting and removes that one.
    #[serde(default)]
    pub direct_registered: bool,
    /// The TCP connection the phone registered on closed: the flow is gone
    /// (RFC 5626 §5.3), requests for the binding get `430 Flow Failed` until
    /// the phone registers again. Never a fall-back to the Contact's address:
    /// that may name any host.
    #[serde(default)]
    pub flow_failed: bool,
    #[serde(with = "instant_serde")]
    pub expires_at: Instant,
}

/// Every binding plus what was learned about the registrar. Plain data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registrations {
    /// By token.
    pub bindings: BTreeMap<String, Binding>,
    /// Whether the registrar echoes Path in its 2xx (`None`: not seen yet).
    pub registrar_path: Option<bool>,
    /// (AoR, Contact URI) → token. Rebuilt on restore.
    #[serde(skip)]
    by_contact: HashMap<(String, String), String>,
    /// Lower-cased Contact URI → token. Rebuilt on restore.
    #[serde(skip)]
    by_uri: HashMap<String, String>,
    /// Tokens changed since the last [`Registrations::take_changes`] (for the
    /// state store).
    #[serde(skip)]
    changed: BTreeSet<String>,
    /// Changes are tracked only for a state store (else the set would only grow).
    #[serde(skip)]
    track: bool,
}

/// How long a binding the registrar has not yet accepted is kept: the
/// REGISTER's transaction (Timer F, 32 s) and the phone's retry with
/// credentials (which reuses the token) fit; pending bindings are also capped
/// (`[security] max_pending_registrations`, per source
/// [`PENDING_PER_SOURCE`]).
pub const PENDING_LIFETIME: Duration = Duration::from_secs(40);

/// Bindings the registrar has not accepted yet, per source IP: a phone with
/// several lines has a few at once, while it answers a challenge.
pub const PENDING_PER_SOURCE: usize = 32;

impl Registrations {
    /// Rebuild the indices after deserialising.
    pub fn reindex(&mut self) {
        self.by_contact = self
            .bindings
            .values()
            .map(|b| ((b.aor.clone(), b.contact.clone()), b.token.clone()))
            .collect();
        self.by_uri = self
            .bindings
            .values()
            .map(|b| (b.contact.to_ascii_lowercase(), b.token.clone()))
            .collect();
    }

    pub fn get(&self, token: &[u8]) -> Option<&Binding> {
        std::str::from_utf8(token)
            .ok()
            .and_then(|t| self.bindings.get(t))
    }

    pub fn find(&self, aor: &str, contact: &str) -> Option<&Binding> {
        self.by_contact
            .get(&(aor.to_owned(), contact.to_owned()))
            .and_then(|t| self.bindings.get(t))
    }

    /// A binding whose phone Contact is exactly `uri` (any AoR).
    pub fn by_phone_contact(&self, uri: &[u8]) -> Option<&Binding> {
        let uri = std::str::from_utf8(uri).ok()?.to_ascii_lowercase();
        self.by_uri.get(&uri).and_then(|t| self.bindings.get(t))
    }

    /// The binding for (AoR, Contact): the existing one, or a new pending one
    /// with token `new_token`.
    pub fn upsert(
        &mut self,
        aor: &str,
        contact: &str,
        flow: Flow,
        mode: BindingMode,
        new_token: impl FnOnce() -> String,
        now: Instant,
    ) -> &Binding {
        let key = (aor.to_owned(), contact.to_owned());
        let token = match self.by_contact.get(&key) {
            Some(t) if self.bindings.contains_key(t) => t.clone(),
            _ => {
                let token = new_token();
                self.bindings.insert(
                    token.clone(),
                    Binding {
                        token: token.clone(),
                        aor: aor.to_owned(),
                        contact: contact.to_owned(),
                        flow,
                        mode,
                        confirmed: false,
                        direct_registered: false,
                        flow_failed: false,
                        expires_at: now + PENDING_LIFETIME,
                    },
                );
                self.by_contact.insert(key, token.clone());
                self.by_uri
                    .insert(contact.to_ascii_lowercase(), token.clone());
                token
            }
        };
        if self.track {
            self.changed.insert(token.clone());
        }
        let b = self
            .bindings
            .get_mut(&token)
            .expect("just inserted or present");
        if !b.confirmed {
            b.flow = flow;
            b.flow_failed = false;
            b.expires_at = b.expires_at.max(now + PENDING_LIFETIME);
        }
        b
    }

    /// The registrar granted `expires` seconds (0: removed). Returns the new
    /// deadline when the binding lives on.
    pub fn confirm(
        &mut self,
        token: &str,
        flow: Flow,
        expires: u32,
        now: Instant,
    ) -> Option<Instant> {
        if expires == 0 {
            self.remove(token);
            return None;
        }
        let b = self.bindings.get_mut(token)?;
        if self.track {
            self.changed.insert(token.to_owned());
        }
        b.confirmed = true;
        b.flow = flow;
        b.flow_failed = false;
        b.expires_at = now + Duration::from_secs(u64::from(expires));
        Some(b.expires_at)
    }

    pub fn get_mut(&mut self, token: &str) -> Option<&mut Binding> {
        let b = self.bindings.get_mut(token)?;
        if self.track {
            self.changed.insert(token.to_owned());
        }
        Some(b)
    }

    pub fn remove(&mut self, token: &str) -> Option<Binding> {
        let b = self.bindings.remove(token)?;
        if self.track {
            self.changed.insert(token.to_owned());
        }
        let key = (b.aor.clone(), b.contact.clone());
        if self.by_contact.get(&key) == Some(&b.token) {
            self.by_contact.remove(&key);
        }
        let uri = b.contact.to_ascii_lowercase();
        if self.by_uri.get(&uri) == Some(&b.token) {
            self.by_uri.remove(&uri);
        }
        Some(b)
    }

    /// Every token of an AoR (for `Contact: *`).
    pub fn tokens_of(&self, aor: &str) -> Vec<String> {
        self.bindings
            .values()
            .filter(|b| b.aor == aor)
            .map(|b| b.token.clone())
            .collect()
    }

    /// Drop the binding if its deadline has passed.
    pub fn expire(&mut self, token: &str, now: Instant) -> bool {
        if self
            .bindings
            .get(token)
            .is_some_and(|b| b.expires_at <= now)
        {
            self.remove(token);
            true
        } else {
            false
        }
    }

    /// A TCP connection closed: its bindings' flow failed (nothing is sent
    /// for them until the phone registers again).
    pub fn connection_closed(&mut self, conn: ConnId) {
        for b in self.bindings.values_mut() {
            if b.flow.conn != Some(conn) {
                continue;
            }
            b.flow.conn = None;
            b.flow_failed = true;
            if self.track {
                self.changed.insert(b.token.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Bindings the registrar has not accepted yet: all of them, and those
    /// from `ip`.
    pub fn pending_counts(&self, ip: IpAddr) -> (usize, usize) {
        self.bindings
            .values()
            .filter(|b| !b.confirmed)
            .fold((0, 0), |(all, from), b| {
                (all + 1, from + usize::from(b.flow.remote.ip() == ip))
            })
    }

    /// Whether a binding the registrar accepted came from this flow's source
    /// (UDP: the same address and port; TCP: the same IP, connections come
    /// from new ports).
    pub fn has_confirmed_from(&self, flow: &Flow) -> bool {
        self.bindings.values().any(|b| {
            b.confirmed
                && b.flow.remote.ip() == flow.remote.ip()
                && (b.flow.remote.port() == flow.remote.port()
                    || (b.flow.transport.is_reliable() && flow.transport.is_reliable()))
        })
    }

    /// What changed since the last call, for the state store: each changed
    /// token with its binding when it is one the registrar accepted (persist
    /// it), or `None` (gone or still pending: delete it from the store — a
    /// binding nobody authenticated is not worth a disk write).
    pub fn take_changes(&mut self) -> Vec<(String, Option<&Binding>)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|t| {
                let b = self.bindings.get(&t).filter(|b| b.confirmed);
                (t, b)
            })
            .collect()
    }

    /// Track changes for [`Registrations::take_changes`] from now on.
    pub fn track_changes(&mut self) {
        self.track = true;
    }

    pub fn tracking(&self) -> bool {
        self.track
    }

    /// Whether [`Registrations::take_changes`] has anything.
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Rebuild from stored bindings (confirmed ones; expired ones are dropped by
    /// the caller's timers).
    pub fn from_bindings(
        bindings: impl IntoIterator<Item = Binding>,
        registrar_path: Option<bool>,
    ) -> Registrations {
        let mut r = Registrations {
            bindings: bindings.into_iter().map(|b| (b.token.clone(), b)).collect(),
            registrar_path,
            ..Registrations::default()
        };
        r.reindex();
        r
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn flow(p: u16) -> Flow {
        Flow::udp(SocketAddr::from(([192, 168, 1, 50], p)))
    }

    #[test]
    fn token_is_stable_across_re_registers_and_expires_with_the_binding() {
        let now = Instant::now();
        let mut r = Registrations::default();
        let mut n = 0;
        let mut mk = || {
            n += 1;
            format!("tok{n}")
        };
        let t1 = r
            .upsert(
                "sip:1001@pbx",
                "sip:1001@192.168.1.50:5062",
                flow(5062),
                BindingMode::Contact,
                &mut mk,
                now,
            )
            .token
            .clone();
        // the retry after a 401, before any 2xx
        let t2 = r
            .upsert(
                "sip:1001@pbx",
                "sip:1001@192.168.1.50:5062",
                flow(5062),
                BindingMode::Contact,
                &mut mk,
                now,
            )
            .token
            .clone();
        assert_eq!(t1, t2);
        let deadline = r.confirm(&t1, flow(5062), 120, now).unwrap();
        assert_eq!(deadline, now + Duration::from_secs(120));
        // re-REGISTER later, from a new NAT port: same token, flow updated on 2xx
        let later = now + Duration::from_secs(100);
        let t3 = r
            .upsert(
                "sip:1001@pbx",
                "sip:1001@192.168.1.50:5062",
                flow(6000),
                BindingMode::Contact,
                &mut mk,
                later,
            )
            .token
            .clone();
        assert_eq!(t1, t3);
        assert_eq!(
            r.get(t1.as_bytes()).unwrap().flow,
            flow(5062),
            "unconfirmed flow change ignored"
        );
        r.confirm(&t1, flow(6000), 120, later);
        assert_eq!(r.get(t1.as_bytes()).unwrap().flow, flow(6000));
        assert!(!r.expire(&t1, later + Duration::from_secs(119)));
        assert!(r.expire(&t1, later + Duration::from_secs(120)));
        assert!(r.is_empty());
        // a new binding after expiry gets a new token
        let t4 = r
            .upsert(
                "sip:1001@pbx",
                "sip:1001@192.168.1.50:5062",
                flow(5062),
                BindingMode::Contact,
                &mut mk,
                later,
            )
            .token
            .clone();
        assert_ne!(t1, t4);
    }

    #[test]
    fn state_round_trips_through_serde_and_reindexes() {
        let now = Instant::now();
        let mut r = Registrations::default();
        r.upsert(
            "sip:1002@pbx",
            "sip:1002@10.0.0.9",
            flow(5060),
            BindingMode::Path,
            || "abc".into(),
            now,
        );
        r.confirm("abc", flow(5060), 3600, now);
        r.registrar_path = Some(true);
        let json = serde_json_like(&r);
        let mut back: Registrations = toml::from_str(&json).unwrap();
        back.reindex();
        // deadlines travel as Unix milliseconds
        let (a, b) = (&back.bindings["abc"], &r.bindings["abc"]);
        let skew = if a.expires_at > b.expires_at {
            a.expires_at - b.expires_at
        } else {
            b.expires_at - a.expires_at
        };
        assert!(skew < Duration::from_millis(50), "{skew:?}");
        assert_eq!(
            Binding {
                expires_at: b.expires_at,
                ..a.clone()
            },
            *b
        );
        assert_eq!(back.registrar_path, Some(true));
        assert_eq!(
            back.find("sip:1002@pbx", "sip:1002@10.0.0.9")
                .map(|b| b.token.as_str()),
            Some("abc")
        );
    }

    fn serde_json_like(r: &Registrations) -> String {
        toml::to_string(r).unwrap()
    }

    #[test]
    fn closed_tcp_connection_fails_the_flow_until_the_phone_registers_again() {
        let now = Instant::now();
        let mut r = Registrations::default();
        let f = Flow::tcp(
            SocketAddr::from(([192, 168, 1, 50], 40001)),
            Some(ConnId(3)),
        );
        // the Contact names another host: never a fall-back to it
        let contact = "sip:1@192.0.2.9:5062;transport=tcp";
        r.upsert(
            "sip:1@pbx",
            contact,
            f,
            BindingMode::Contact,
            || "t".into(),
            now,
        );
        r.confirm("t", f, 600, now);
        r.connection_closed(ConnId(4));
        assert_eq!(r.get(b"t").unwrap().flow, f);
        assert!(!r.get(b"t").unwrap().flow_failed);
        r.connection_closed(ConnId(3));
        let b = r.get(b"t").unwrap();
        assert!(b.flow_failed);
        assert_eq!((b.flow.conn, b.flow.remote), (None, f.remote));
        // registered again on a new connection
        let g = Flow::tcp(
            SocketAddr::from(([192, 168, 1, 50], 40002)),
            Some(ConnId(5)),
        );
        r.upsert(
            "sip:1@pbx",
            contact,
            g,
            BindingMode::Contact,
            || "u".into(),
            now,
        );
        r.confirm("t", g, 600, now);
        let b = r.get(b"t").unwrap();
        assert_eq!((b.flow, b.flow_failed), (g, false));
    }
}
