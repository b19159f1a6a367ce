//! REGISTER through the proxy: the bindings a phone's REGISTER creates and the
//! edits that keep the bridge on the inbound path (RFC 3327 Path, or Contact
//! rewriting), what the registrar's 2xx updates, and the phone's own Contacts
//! restored in the 2xx relayed back. The bindings themselves live in
//! [`super::registrar`].

use super::registrar::{BindingMode, PENDING_PER_SOURCE};
use super::route::{self, OwnUser};
use super::{Proxy, Reject, TimerRef};
use crate::flow::Flow;
use crate::sip::{Editor, HeaderName, NameAddr, SipMessage, Span, Uri};
use std::collections::HashMap;
use std::time::Instant;

/// What a REGISTER's 2xx must update.
#[derive(Debug, Clone)]
pub(super) struct RegCtx {
    pub(super) aor: String,
    pub(super) flow: Flow,
    pub(super) mode: BindingMode,
    /// Tokens of the request's Contacts, with the expiry each asked for.
    pub(super) tokens: Vec<(String, Option<u32>)>,
    pub(super) wildcard: bool,
    /// Tokens whose directly registered Contact this request asks to remove.
    pub(super) removes_direct: Vec<String>,
    /// The registrar ignored our Path: tell the phone to re-register soon, so
    /// that the binding moves to Contact rewriting.
    pub(super) shorten: bool,
}

/// Retry-After (seconds) of a REGISTER refused because pending bindings are at
/// their cap: by then the pending ones have been accepted or have expired.
const PENDING_RETRY_AFTER_S: u32 = 30;

/// Expiry handed to a phone whose REGISTER the registrar accepted while ignoring
/// our Path: its next REGISTER (then with a rewritten Contact) comes this soon.
const PATH_FALLBACK_EXPIRES: u32 = 60;

/// The edits for a REGISTER and what its 2xx must update.
pub(super) struct RegisterEdit {
    pub(super) contact_edits: Vec<(Span, String)>,
    /// Contact values to add (removals of directly registered Contacts).
    pub(super) extra_contacts: Vec<String>,
    pub(super) path: Option<String>,
    pub(super) ctx: RegCtx,
}

impl Proxy {
    /// Bindings for a REGISTER from a phone, and the edits that keep the bridge
    /// on the inbound path. Refused (nothing kept) with more Contacts than
    /// `[security] max_contacts_per_register` (403), or when its new bindings
    /// would pass the caps on bindings the registrar has not accepted yet
    /// (`max_pending_registrations`, [`PENDING_PER_SOURCE`]; 503).
    pub(super) fn register_edit(
        &mut self,
        msg: &SipMessage,
        phone: Flow,
        now: Instant,
    ) -> Result<RegisterEdit, Reject> {
        let aor = msg
            .to()
            .and_then(|t| t.ok())
            .map(|t| String::from_utf8_lossy(t.uri).into_owned())
            .unwrap_or_default();
        let wildcard = msg.is_wildcard_contact();
        let header_expires = msg.expires().and_then(|e| e.ok());
        let supports_path = msg
            .option_tags(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(b"path"));
        let contacts: Vec<(Span, NameAddr<'_>)> = if wildcard {
            Vec::new()
        } else {
            msg.contacts()
                .filter_map(|(s, c)| c.ok().map(|c| (s, c)))
                .collect()
        };
        self.check_register_caps(&aor, &contacts, phone, now)?;
        let existing = contacts.iter().find_map(|(_, c)| {
            self.regs
                .find(&aor, &String::from_utf8_lossy(c.uri))
                .map(|b| b.mode)
        });
        let mode = existing.unwrap_or(
            if self.env.cfg.use_path && supports_path && self.regs.registrar_path != Some(false) {
                BindingMode::Path
            } else {
                BindingMode::Contact
            },
        );
        let mut edits = Vec::new();
        let mut tokens = Vec::new();
        let mut removes_direct = Vec::new();
        let mut extra_contacts = Vec::new();
        for (_, c) in &contacts {
            let uri = String::from_utf8_lossy(c.uri).into_owned();
            let rng = &mut self.rng;
            let b = self
                .regs
                .upsert(&aor, &uri, phone, mode, || rng.token(16), now);
            let token = b.token.clone();
            if mode == BindingMode::Contact && b.direct_registered {
                // The registrar holds the phone's own Contact from a REGISTER whose
                // Path it ignored: replace it with the token Contact.
                extra_contacts.push(format!("<{uri}>;expires=0"));
                removes_direct.push(token.clone());
            }
            let asked = c
                .params
                .value("expires")
                .and_then(|v| crate::sip::parse_delta(v).ok())
                .or(header_expires);
            if mode == BindingMode::Contact {
                let new = route::binding_contact(&self.env, &token);
                if let Some(span) = route::span_in(msg, c.uri) {
                    let with = if c.angle { new } else { format!("<{new}>") };
                    edits.push((span, with));
                }
            }
            let at = self.regs.get(token.as_bytes()).map(|b| b.expires_at);
            if let Some(at) = at {
                self.schedule(at, TimerRef::Binding(token.clone()));
            }
            tokens.push((token, asked));
        }
        let path = (mode == BindingMode::Path)
            .then(|| tokens.first().map(|(t, _)| route::path(&self.env, t)))
            .flatten();
        Ok(RegisterEdit {
            contact_edits: edits,
            extra_contacts,
            path,
            ctx: RegCtx {
                aor,
                flow: phone,
                mode,
                tokens,
                wildcard,
                removes_direct,
                shorten: false,
            },
        })
    }

    /// The caps a REGISTER must stay within before any binding is made.
    fn check_register_caps(
        &mut self,
        aor: &str,
        contacts: &[(Span, NameAddr<'_>)],
        phone: Flow,
        now: Instant,
    ) -> Result<(), Reject> {
        let sec = &self.env.cfg.security;
        let ip = phone.remote.ip();
        let refusal = if contacts.len() > sec.max_contacts_per_register {
            Some((
                Reject::new(403, "Too Many Contacts"),
                "max_contacts_per_register",
            ))
        } else {
            let new = contacts
                .iter()
                .filter(|(_, c)| {
                    self.regs
                        .find(aor, &String::from_utf8_lossy(c.uri))
                        .is_none()
                })
                .count();
            let (total, from_ip) = self.regs.pending_counts(ip);
            let busy = Reject {
                retry_after: Some(PENDING_RETRY_AFTER_S),
                ..Reject::new(503, "Service Unavailable")
            };
            if new > 0 && total + new > sec.max_pending_registrations {
                Some((busy, "max_pending_registrations"))
            } else if new > 0 && from_ip + new > PENDING_PER_SOURCE {
                Some((busy, "pending registrations per source"))
            } else {
                None
            }
        };
        let Some((reject, cap)) = refusal else {
            return Ok(());
        };
        if self.log_gate.allow(ip, now) {
            tracing::warn!(source = %ip, aor, contacts = contacts.len(), cap, code = reject.code, "REGISTER refused: [security] cap reached (logged once per source every 10 s)");
        }
        Err(reject)
    }

    /// A REGISTER got a 2xx: update the bindings it names. Returns whether the
    /// registrar ignored the Path of this REGISTER.
    pub(super) fn registered(&mut self, r: &RegCtx, msg: &SipMessage, now: Instant) -> bool {
        let default = msg.expires().and_then(|e| e.ok()).unwrap_or(3600);
        if r.wildcard {
            for t in self.regs.tokens_of(&r.aor) {
                self.regs.remove(&t);
            }
            return false;
        }
        for t in &r.removes_direct {
            if let Some(b) = self.regs.get_mut(t) {
                b.direct_registered = false;
            }
        }
        let mut path_ignored = false;
        if r.mode == BindingMode::Path && !r.tokens.is_empty() {
            let ours = {
                let local = &self.env.local;
                msg.values(HeaderName::Path).any(|s| {
                    NameAddr::parse(msg.slice(s))
                        .ok()
                        .and_then(|na| Uri::parse(na.uri).ok())
                        .is_some_and(|u| {
                            local.is_own_uri(&u) && matches!(OwnUser::of(&u), OwnUser::Binding(_))
                        })
                })
            };
            if self.regs.registrar_path != Some(ours) {
                if ours {
                    tracing::info!("the registrar supports Path (RFC 3327)");
                } else {
                    tracing::warn!(
                        "the registrar ignored our Path header: registrations move to Contact rewriting (phones are asked to re-register within a minute)"
                    );
                }
                self.regs.registrar_path = Some(ours);
            }
            path_ignored = !ours;
        }
        // What the registrar granted, per token.
        let mut granted: HashMap<String, u32> = HashMap::new();
        let any_contact = msg.header(HeaderName::Contact).is_some();
        {
            let local = &self.env.local;
            for (_, c) in msg.contacts() {
                let Ok(c) = c else { continue };
                let exp = c
                    .params
                    .value("expires")
                    .and_then(|v| crate::sip::parse_delta(v).ok())
                    .unwrap_or(default);
                let token = match r.mode {
                    BindingMode::Contact => Uri::parse(c.uri).ok().and_then(|u| {
                        if !local.is_own_uri(&u) {
                            return None;
                        }
                        match OwnUser::of(&u) {
                            OwnUser::Binding(t) => Some(String::from_utf8_lossy(t).into_owned()),
                            _ => None,
                        }
                    }),
                    BindingMode::Path => r
                        .tokens
                        .iter()
                        .find(|(t, _)| {
                            self.regs
                                .get(t.as_bytes())
                                .is_some_and(|b| b.contact.as_bytes().eq_ignore_ascii_case(c.uri))
                        })
                        .map(|(t, _)| t.clone()),
                };
                if let Some(t) = token.filter(|t| r.tokens.iter().any(|(x, _)| x == t)) {
                    granted.insert(t, exp);
                }
            }
        }
        for (t, asked) in &r.tokens {
            let exp = match granted.get(t) {
                Some(&e) => e,
                // a registrar that lists no Contact at all: take what was asked
                None if !any_contact => asked.unwrap_or(default),
                None => 0,
            };
            match self.regs.confirm(t, r.flow, exp, now) {
                Some(at) => {
                    self.schedule(at, TimerRef::Binding(t.clone()));
                    if path_ignored && let Some(b) = self.regs.get_mut(t) {
                        b.mode = BindingMode::Contact;
                        b.direct_registered = true;
                    }
                }
                None => tracing::debug!(token = %t, "binding removed"),
            }
        }
        path_ignored
    }

    /// A REGISTER's 2xx on its way back to the phone: the phone's own Contacts
    /// in place of the binding Contacts the bridge registered, and — when the
    /// registrar ignored our Path — a short expiry, so that the phone
    /// re-registers soon (then with a rewritten Contact).
    pub(super) fn restore_contacts(&self, e: &mut Editor<'_>, msg: &SipMessage, r: &RegCtx) {
        if r.shorten {
            for (span, c) in msg.contacts() {
                let Ok(c) = c else { continue };
                let mine = r.tokens.iter().any(|(t, _)| {
                    self.regs
                        .get(t.as_bytes())
                        .is_some_and(|b| b.contact.as_bytes().eq_ignore_ascii_case(c.uri))
                });
                if mine {
                    e.replace_span(span, &with_expires(&c, PATH_FALLBACK_EXPIRES));
                }
            }
        }
        let local = &self.env.local;
        for (_, c) in msg.contacts() {
            let Ok(c) = c else { continue };
            let Ok(u) = Uri::parse(c.uri) else { continue };
            if !local.is_own_uri(&u) {
                continue;
            }
            let OwnUser::Binding(t) = OwnUser::of(&u) else {
                continue;
            };
            let Some(b) = self.regs.get(t) else { continue };
            if let Some(span) = route::span_in(msg, c.uri) {
                let with = if c.angle {
                    b.contact.clone()
                } else {
                    format!("<{}>", b.contact)
                };
                e.replace_span(span, with.as_bytes());
            }
        }
    }
}

/// A Contact value with its `expires` parameter lowered to at most `secs`.
fn with_expires(c: &NameAddr<'_>, secs: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(c.uri.len() + c.params.raw.len() + 16);
    if let Some(d) = c.display {
        v.extend_from_slice(d);
        v.push(b' ');
    }
    v.push(b'<');
    v.extend_from_slice(c.uri);
    v.push(b'>');
    let mut seen = false;
    for (name, value) in c.params.iter() {
        v.push(b';');
        v.extend_from_slice(name);
        if name.eq_ignore_ascii_case(b"expires") {
            seen = true;
            let granted = value
                .and_then(|x| crate::sip::parse_delta(x).ok())
                .unwrap_or(secs);
            v.extend_from_slice(format!("={}", granted.min(secs)).as_bytes());
        } else if let Some(val) = value {
            v.push(b'=');
            v.extend_from_slice(val);
        }
    }
    if !seen {
        v.extend_from_slice(format!(";expires={secs}").as_bytes());
    }
    v
}
