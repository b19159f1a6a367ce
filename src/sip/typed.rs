//! Typed, lazily computed views of the header values the bridge acts on.
//!
//! These are small hand-written parsers over the original bytes (no allocation),
//! because they sit on the hot path of every message: top Via branch, tags, Call-ID,
//! CSeq, Event, Expires. They accept the full RFC 3261 LWS grammar (folded lines,
//! whitespace around `/`, `;` and `=`) as RFC 4475 `wsinv` requires, and reject the
//! malformations RFC 4475 §3.1.2 lists. Grammars that are intricate and off the hot
//! path (digest challenges) go through `ezk-sip-types`; see [`ezk_parse`].
//! Subscription-State is on the NOTIFY hot path and has its own parser,
//! [`SubState`].

use super::header::HeaderName;
use super::message::{SipMessage, Span, is_token_char, split_list};
use super::uri::Uri;
use bytes::Bytes;

/// Why a typed value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypedError(pub &'static str);

impl std::fmt::Display for TypedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TypedError {}

type Res<T> = Result<T, TypedError>;

/// A byte cursor that understands SIP linear whitespace (SP, HT and folded line
/// breaks).
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    #[inline]
    pub fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }
    #[inline]
    pub fn skip_lws(&mut self) {
        while let Some(c) = self.peek() {
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
                self.i += 1;
            } else {
                break;
            }
        }
    }
    /// Consume `c` (after optional LWS); leaves LWS after it unconsumed.
    pub fn eat(&mut self, c: u8) -> bool {
        let save = self.i;
        self.skip_lws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            self.i = save;
            false
        }
    }
    pub fn token(&mut self) -> Option<&'a [u8]> {
        let s = self.i;
        while let Some(c) = self.peek() {
            if is_token_char(c) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > s).then(|| &self.b[s..self.i])
    }
    /// A quoted string starting at the cursor; returns it with its quotes.
    pub fn quoted(&mut self) -> Res<&'a [u8]> {
        let s = self.i;
        if self.peek() != Some(b'"') {
            return Err(TypedError("expected quoted string"));
        }
        self.i += 1;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Ok(&self.b[s..self.i]);
                }
                _ => self.i += 1,
            }
        }
        self.i = self.b.len();
        Err(TypedError("unterminated quoted string"))
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.i.min(self.b.len())..]
    }
}

/// Header parameters (`;name[=value]`), as found after a Via sent-by, a name-addr or
/// an Event package: a raw slice that is searched on demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pub raw: &'a [u8],
}

impl<'a> Params<'a> {
    /// Iterate `(name, value)`; value is `None` for a flag parameter. Quoted values
    /// are returned with their quotes.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            c: Cursor::new(self.raw),
        }
    }
    /// `Some(None)` for a flag parameter, `Some(Some(v))` for `name=v`.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn value(&self, name: &str) -> Option<&'a [u8]> {
        self.get(name).flatten()
    }

    /// Append `;name[=value]` for every parameter except those named in `skip`
    /// (case-insensitive), normalising the whitespace around them away; for
    /// rewriting a parameter list.
    pub fn write_except(&self, skip: &[&str], out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            if skip.iter().any(|s| name.eq_ignore_ascii_case(s.as_bytes())) {
                continue;
            }
            out.push(b';');
            out.extend_from_slice(name);
            if let Some(v) = value {
                out.push(b'=');
                out.extend_from_slice(v);
            }
        }
    }
}

pub struct ParamIter<'a> {
    c: Cursor<'a>,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        if !self.c.eat(b';') {
            return None;
        }
        self.c.skip_lws();
        let name = self.c.token()?;
        if self.c.eat(b'=') {
            self.c.skip_lws();
            let v = if self.c.peek() == Some(b'"') {
                self.c.quoted().ok()?
            } else {
                param_value(&mut self.c)?
            };
            Some((name, Some(v)))
        } else {
            Some((name, None))
        }
    }
}

/// A parameter value: token, host (incl. `[v6]` and `:`), or quoted string.
fn param_value<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let s = c.i;
    if c.peek() == Some(b'[') {
        let e = memchr::memchr(b']', c.rest())?;
        c.i += e + 1;
        return Some(&c.b[s..c.i]);
    }
    while let Some(ch) = c.peek() {
        if is_token_char(ch) || ch == b':' || ch == b'[' || ch == b']' {
            c.i += 1;
        } else {
            break;
        }
    }
    (c.i > s).then(|| &c.b[s..c.i])
}

/// Validate a parameter list strictly: every `;` is followed by a token name,
/// optional `=value`, and nothing is left over. Returns the raw parameter slice.
fn strict_params<'a>(c: &mut Cursor<'a>, stop_at_comma: bool) -> Res<Params<'a>> {
    let s = c.i;
    loop {
        let save = c.i;
        c.skip_lws();
        match c.peek() {
            None => break,
            Some(b',') if stop_at_comma => {
                c.i = save;
                break;
            }
            Some(b';') => {
                c.i += 1;
                c.skip_lws();
                if c.token().is_none() {
                    return Err(TypedError("empty or malformed parameter"));
                }
                if c.eat(b'=') {
                    c.skip_lws();
                    if c.peek() == Some(b'"') {
                        c.quoted()?;
                    } else if param_value(c).is_none() {
                        return Err(TypedError("malformed parameter value"));
                    }
                }
            }
            Some(_) => return Err(TypedError("unexpected characters after value")),
        }
    }
    let raw = &c.b[s..c.i];
    Ok(Params { raw })
}

fn ascii(b: &[u8]) -> Res<&str> {
    std::str::from_utf8(b).map_err(|_| TypedError("non-ASCII where ASCII is required"))
}

fn parse_u32(b: &[u8]) -> Res<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return Err(TypedError("not a 32-bit decimal number"));
    }
    let mut n: u64 = 0;
    for &d in b {
        n = n * 10 + (d - b'0') as u64;
    }
    u32::try_from(n).map_err(|_| TypedError("number out of range"))
}

/// `host[:port]`; host is a hostname, IPv4 or `[IPv6]`.
fn host_port<'a>(c: &mut Cursor<'a>) -> Res<(&'a str, Option<u16>)> {
    c.skip_lws();
    let s = c.i;
    if c.peek() == Some(b'[') {
        let e = memchr::memchr(b']', c.rest()).ok_or(TypedError("unterminated IPv6 reference"))?;
        c.i += e + 1;
    } else {
        while let Some(ch) = c.peek() {
            if ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'.' || ch == b'_' {
                c.i += 1;
            } else {
                break;
            }
        }
    }
    if c.i == s {
        return Err(TypedError("missing host"));
    }
    let host = ascii(&c.b[s..c.i])?;
    let save = c.i;
    if c.eat(b':') {
        c.skip_lws();
        let ps = c.i;
        while c.peek().is_some_and(|d| d.is_ascii_digit()) {
            c.i += 1;
        }
        let p = parse_u32(&c.b[ps..c.i]).map_err(|_| TypedError("malformed port"))?;
        let p = u16::try_from(p).map_err(|_| TypedError("port out of range"))?;
        return Ok((host, Some(p)));
    }
    c.i = save;
    Ok((host, None))
}

// ------------------------------------------------------------------------- Via

/// One Via value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, `TLS`, … as written.
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Res<Via<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let name = c.token().ok_or(TypedError("Via: missing protocol name"))?;
        if !name.eq_ignore_ascii_case(b"SIP") {
            return Err(TypedError("Via: protocol is not SIP"));
        }
        if !c.eat(b'/') {
            return Err(TypedError("Via: malformed sent-protocol"));
        }
        c.skip_lws();
        let ver = c.token().ok_or(TypedError("Via: missing version"))?;
        if !c.eat(b'/') {
            return Err(TypedError("Via: malformed sent-protocol"));
        }
        c.skip_lws();
        let transport = ascii(c.token().ok_or(TypedError("Via: missing transport"))?)?;
        if ver != b"2.0" {
            return Err(TypedError("Via: unsupported SIP version"));
        }
        // sent-by must be separated from the protocol by LWS
        if !matches!(c.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            return Err(TypedError("Via: malformed sent-by"));
        }
        let (host, port) = host_port(&mut c)?;
        let params = strict_params(&mut c, false)?;
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params.value("branch")
    }
    pub fn received(&self) -> Option<&'a [u8]> {
        self.params.value("received")
    }
    /// `None`: no rport; `Some(None)`: bare `rport` (a request); `Some(Some(p))`:
    /// filled in by the server.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| {
            v.and_then(|p| parse_u32(p).ok())
                .and_then(|p| u16::try_from(p).ok())
        })
    }
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.value("maddr")
    }
    /// RFC 3261 branch with the magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > 7 && b[..7].eq_ignore_ascii_case(b"z9hG4bK"))
    }
    /// `host[:port]` as written, for transaction matching.
    pub fn sent_by(&self) -> (&'a str, u16) {
        let default = if self.transport.eq_ignore_ascii_case("TLS") {
            5061
        } else {
            5060
        };
        (self.host, self.port.unwrap_or(default))
    }
}

// -------------------------------------------------------------------- NameAddr

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route, Path values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quoted string with its quotes, or tokens), if any.
    pub display: Option<&'a [u8]>,
    /// The URI between `<` `>` (or the bare addr-spec).
    pub uri: &'a [u8],
    /// Whether the URI was in angle brackets.
    pub angle: bool,
    /// Header parameters after the URI (`;tag=…;expires=…`).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Res<NameAddr<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let mut display = None;
        if c.peek() == Some(b'"') {
            display = Some(c.quoted()?);
            c.skip_lws();
            if c.peek() != Some(b'<') {
                return Err(TypedError("display name not followed by <URI>"));
            }
        } else if let Some(lt) = memchr::memchr(b'<', c.rest()) {
            // token display name up to '<' (only if the '<' comes before any URI char
            // that could not be part of a display name)
            let dn = &c.rest()[..lt];
            let looks_like_display = dn
                .iter()
                .all(|&ch| is_token_char(ch) || matches!(ch, b' ' | b'\t' | b'\r' | b'\n'));
            if looks_like_display {
                let trimmed = trim(dn);
                if !trimmed.is_empty() {
                    display = Some(trimmed);
                }
                c.i += lt;
            } else if !dn.contains(&b':') {
                return Err(TypedError("malformed display name"));
            }
        }
        if c.peek() == Some(b'<') {
            c.i += 1;
            let e = memchr::memchr(b'>', c.rest()).ok_or(TypedError("missing >"))?;
            let uri = &c.rest()[..e];
            if uri.is_empty()
                || uri
                    .iter()
                    .any(|&ch| matches!(ch, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Err(TypedError("whitespace or nothing inside <URI>"));
            }
            c.i += e + 1;
            let params = strict_params(&mut c, false)?;
            return Ok(NameAddr {
                display,
                uri,
                angle: true,
                params,
            });
        }
        // addr-spec: the URI ends at the first ';' (everything after is a header
        // parameter, RFC 3261 §20.10) and may not contain '?' or ','.
        let s = c.i;
        while let Some(ch) = c.peek() {
            if matches!(ch, b';' | b' ' | b'\t' | b'\r' | b'\n' | b',') {
                break;
            }
            c.i += 1;
        }
        let uri = &c.b[s..c.i];
        if uri.is_empty() || !uri.contains(&b':') {
            return Err(TypedError("malformed addr-spec"));
        }
        if uri.contains(&b'?') {
            return Err(TypedError("URI with headers must be enclosed in <>"));
        }
        let params = strict_params(&mut c, false)?;
        Ok(NameAddr {
            display,
            uri,
            angle: false,
            params,
        })
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.value("tag")
    }

    pub fn parsed_uri(&self) -> Res<Uri<'a>> {
        Uri::parse(self.uri)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let (s, e) = super::message::trim_lws(b, 0, b.len());
    &b[s..e]
}

// ------------------------------------------------------------- scalar headers

/// `CSeq: <number> <method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    pub fn parse(v: &'a [u8]) -> Res<CSeq<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let s = c.i;
        while c.peek().is_some_and(|d| d.is_ascii_digit()) {
            c.i += 1;
        }
        let seq = parse_u32(&c.b[s..c.i]).map_err(|_| TypedError("CSeq number out of range"))?;
        if seq >= 1 << 31 {
            return Err(TypedError("CSeq number out of range"));
        }
        c.skip_lws();
        let method = c.token().ok_or(TypedError("CSeq without method"))?;
        c.skip_lws();
        if !c.at_end() {
            return Err(TypedError("trailing characters in CSeq"));
        }
        Ok(CSeq { seq, method })
    }
}

/// `Event: package[.template] *(;param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub package: &'a [u8],
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    pub fn parse(v: &'a [u8]) -> Res<Event<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let package = c.token().ok_or(TypedError("Event: missing package"))?;
        let params = strict_params(&mut c, false)?;
        Ok(Event { package, params })
    }
    pub fn id(&self) -> Option<&'a [u8]> {
        self.params.value("id")
    }
    pub fn is(&self, package: &str) -> bool {
        self.package.eq_ignore_ascii_case(package.as_bytes())
    }
}

/// A delta-seconds value (Expires, Min-Expires, Max-Forwards …).
pub fn parse_delta(v: &[u8]) -> Res<u32> {
    parse_u32(trim(v))
}

// ---------------------------------------------------------- Subscription-State

/// The `substate-value` of a Subscription-State header (RFC 6665 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubStateKind {
    Active,
    Pending,
    Terminated,
    /// An `extension-substate` token; RFC 6665 §8.4 says to treat an unknown
    /// state like `active` unless the package says otherwise, so callers decide.
    Other,
}

/// `Subscription-State: state *(;param)` (RFC 6665 §4.1.3, §8.4), read without
/// allocation straight from the message bytes. This is on the hot path of every
/// NOTIFY, which is why it is hand-written rather than going through
/// `ezk-sip-types` (several times slower, and it copies the value first; see
/// docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubState<'a> {
    pub state: SubStateKind,
    /// `expires=` (delta-seconds), if present.
    pub expires: Option<u32>,
    /// `reason=` as written (`deactivated`, `probation`, `rejected`, `timeout`,
    /// `giveup`, `noresource`, `invariant` or an extension token).
    pub reason: Option<&'a [u8]>,
    /// `retry-after=` (delta-seconds), if present.
    pub retry_after: Option<u32>,
    /// Every parameter as written (including the three above).
    pub params: Params<'a>,
}

impl<'a> SubState<'a> {
    /// Parse a Subscription-State value. Linear whitespace (including folded line
    /// breaks) is accepted wherever RFC 3261 allows LWS; anything else that does not
    /// match the grammar is an error: a missing or non-token state, an empty or
    /// malformed parameter, `expires`/`retry-after` that are not 32-bit
    /// delta-seconds, a `reason` that is not a token, trailing garbage.
    pub fn parse(v: &'a [u8]) -> Res<SubState<'a>> {
        let mut c = Cursor::new(v);
        c.skip_lws();
        let state = c
            .token()
            .ok_or(TypedError("Subscription-State: missing or malformed state"))?;
        let state = if state.eq_ignore_ascii_case(b"active") {
            SubStateKind::Active
        } else if state.eq_ignore_ascii_case(b"pending") {
            SubStateKind::Pending
        } else if state.eq_ignore_ascii_case(b"terminated") {
            SubStateKind::Terminated
        } else {
            SubStateKind::Other
        };
        let params = strict_params(&mut c, false)?;
        let mut out = SubState {
            state,
            expires: None,
            reason: None,
            retry_after: None,
            params,
        };
        for (name, value) in params.iter() {
            if name.eq_ignore_ascii_case(b"expires") {
                let v = value.ok_or(TypedError("Subscription-State: expires without a value"))?;
                let n = parse_u32(v)
                    .map_err(|_| TypedError("Subscription-State: malformed expires"))?;
                out.expires.get_or_insert(n);
            } else if name.eq_ignore_ascii_case(b"retry-after") {
                let v = value.ok_or(TypedError(
                    "Subscription-State: retry-after without a value",
                ))?;
                let n = parse_u32(v)
                    .map_err(|_| TypedError("Subscription-State: malformed retry-after"))?;
                out.retry_after.get_or_insert(n);
            } else if name.eq_ignore_ascii_case(b"reason") {
                let v = value.ok_or(TypedError("Subscription-State: reason without a value"))?;
                if !v.iter().all(|&ch| is_token_char(ch)) {
                    return Err(TypedError("Subscription-State: reason is not a token"));
                }
                out.reason.get_or_insert(v);
            }
        }
        Ok(out)
    }

    /// Is `reason` this value (case-insensitive)?
    pub fn reason_is(&self, reason: &str) -> bool {
        self.reason
            .is_some_and(|r| r.eq_ignore_ascii_case(reason.as_bytes()))
    }
}

/// Subscription-State types of `ezk-sip-types`, for callers that want its enums;
/// the bridge itself reads the header with [`SubState`].
pub use ezk_sip_types::header::typed::{EventReasonValue, SubStateValue, SubscriptionState};

/// Parse one header value with an `ezk-sip-types` grammar. Folded line breaks are
/// turned into single spaces first (ezk expects an unfolded value). The whole value
/// must be consumed.
pub fn ezk_parse<T: ezk_sip_types::header::HeaderParse>(raw: &[u8]) -> Res<T> {
    let unfolded: Bytes = if raw.iter().any(|&c| c == b'\r' || c == b'\n') {
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let ch = raw[i];
            if ch == b'\r' || ch == b'\n' {
                while i < raw.len() && matches!(raw[i], b'\r' | b'\n' | b' ' | b'\t') {
                    i += 1;
                }
                v.push(b' ');
                continue;
            }
            v.push(ch);
            i += 1;
        }
        Bytes::from(v)
    } else {
        Bytes::copy_from_slice(raw)
    };
    let s = std::str::from_utf8(&unfolded).map_err(|_| TypedError("value is not UTF-8"))?;
    match T::parse(&unfolded, s) {
        Ok((rest, v)) if rest.trim().is_empty() => Ok(v),
        Ok(_) => Err(TypedError("trailing characters after value")),
        Err(_) => Err(TypedError("malformed value")),
    }
}

// ------------------------------------------------------- message-level helpers

impl SipMessage {
    /// The topmost Via value.
    pub fn top_via(&self) -> Option<Res<Via<'_>>> {
        let h = self.header(HeaderName::Via)?;
        let first = split_list(self.buffer(), h.value).next()?;
        Some(Via::parse(self.slice(first)))
    }

    /// Span of the topmost Via value (first element of the first Via header).
    pub fn top_via_span(&self) -> Option<Span> {
        let h = self.header(HeaderName::Via)?;
        split_list(self.buffer(), h.value).next()
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> impl Iterator<Item = Res<Via<'_>>> + '_ {
        self.values(HeaderName::Via)
            .map(|s| Via::parse(self.slice(s)))
    }

    /// Branch of the top Via, the transaction key on the hot path.
    pub fn branch(&self) -> Option<&[u8]> {
        self.top_via()?.ok()?.branch()
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::CallId).map(trim)
    }

    pub fn cseq(&self) -> Option<Res<CSeq<'_>>> {
        self.header_value(HeaderName::CSeq).map(CSeq::parse)
    }

    pub fn from(&self) -> Option<Res<NameAddr<'_>>> {
        self.header_value(HeaderName::From).map(NameAddr::parse)
    }

    pub fn to(&self) -> Option<Res<NameAddr<'_>>> {
        self.header_value(HeaderName::To).map(NameAddr::parse)
    }

    pub fn from_tag(&self) -> Option<&[u8]> {
        self.from()?.ok()?.tag()
    }

    pub fn to_tag(&self) -> Option<&[u8]> {
        self.to()?.ok()?.tag()
    }

    /// Every Contact value (a `*` Contact is returned as an error-free `None` URI by
    /// the caller checking [`SipMessage::is_wildcard_contact`]).
    pub fn contacts(&self) -> impl Iterator<Item = (Span, Res<NameAddr<'_>>)> + '_ {
        self.values(HeaderName::Contact)
            .map(|s| (s, NameAddr::parse(self.slice(s))))
    }

    /// `Contact: *` (REGISTER remove-all).
    pub fn is_wildcard_contact(&self) -> bool {
        self.values(HeaderName::Contact)
            .next()
            .is_some_and(|s| self.slice(s) == b"*")
    }

    pub fn event(&self) -> Option<Res<Event<'_>>> {
        self.header_value(HeaderName::Event).map(Event::parse)
    }

    pub fn expires(&self) -> Option<Res<u32>> {
        self.header_value(HeaderName::Expires).map(parse_delta)
    }

    pub fn max_forwards(&self) -> Option<Res<u32>> {
        self.header_value(HeaderName::MaxForwards).map(parse_delta)
    }

    /// The Subscription-State header (first one), see [`SubState::parse`].
    pub fn subscription_state(&self) -> Option<Res<SubState<'_>>> {
        self.header_value(HeaderName::SubscriptionState)
            .map(SubState::parse)
    }

    /// Content-Type media type without parameters, lower-cased comparison helper.
    pub fn content_type(&self) -> Option<&[u8]> {
        let v = self.header_value(HeaderName::ContentType)?;
        let e = memchr::memchr(b';', v).unwrap_or(v.len());
        Some(trim(&v[..e]))
    }

    pub fn user_agent(&self) -> Option<&[u8]> {
        self.header_value(HeaderName::UserAgent)
    }

    /// Does any Accept header list `media` (or a matching wildcard)? `None` when the
    /// request has no Accept header at all.
    pub fn accepts(&self, media: &str) -> Option<bool> {
        self.header(HeaderName::Accept)?;
        let (ty, _sub) = media.split_once('/').unwrap_or((media, ""));
        Some(self.values(HeaderName::Accept).any(|s| {
            let v = self.slice(s);
            let e = memchr::memchr(b';', v).unwrap_or(v.len());
            let m = trim(&v[..e]);
            m.eq_ignore_ascii_case(media.as_bytes())
                || m == b"*/*"
                || (m.len() == ty.len() + 2
                    && m[..ty.len()].eq_ignore_ascii_case(ty.as_bytes())
                    && &m[ty.len()..] == b"/*")
        }))
    }

    /// Option tags listed in all headers of `name` (Supported, Require, Proxy-Require).
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.values(name).map(|s| trim(self.slice(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn via_params() {
        let v = Via::parse(
            b"SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1;rport=5062;received=198.51.100.7",
        )
        .unwrap();
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.rport(), Some(Some(5062)));
        assert_eq!(v.received(), Some(&b"198.51.100.7"[..]));
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.sent_by(), ("[2001:db8::1]", 5060));
    }

    #[test]
    fn via_rejects_malformed() {
        for bad in [
            &b"SIP/2.0/UDP 192.0.2.15;;"[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0/UDP host:99999",
            b"SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            b"HTTP/2.0/UDP h",
            b"SIP/2.0/UDP h;branch=",
        ] {
            assert!(Via::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(n.uri, b"sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));
        let n = NameAddr::parse(b"sip:caller@example.net;tag=134161461246").unwrap();
        assert_eq!(n.uri, b"sip:caller@example.net");
        assert!(!n.angle);
        assert_eq!(n.tag(), Some(&b"134161461246"[..]));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some(&b"caller"[..]));
        let n = NameAddr::parse(b"A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe").unwrap();
        assert_eq!(n.display, Some(&b"A. Bell"[..]));
        let n = NameAddr::parse(b"isbn:2983792873").unwrap();
        assert_eq!(n.uri, b"isbn:2983792873");
        let n = NameAddr::parse(b"<sip:1002@pbx.example.com>").unwrap();
        assert_eq!(n.tag(), None);
    }

    #[test]
    fn name_addr_rejects_rfc4475_malformations() {
        for bad in [
            &b"\"Mr. J. User <sip:j.user@example.com>"[..],
            b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            b"\"Watson, Thomas\" < sip:t.watson@example.org >",
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"\"Joe\" <sip:joe@example.org>;;;;",
            b"",
        ] {
            assert!(
                NameAddr::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cseq_and_scalars() {
        let c = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, &b"INVITE"[..]));
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483648 REGISTER").is_err());
        assert!(CSeq::parse(b"1").is_err());
        assert_eq!(parse_delta(b" 600 ").unwrap(), 600);
        assert!(parse_delta(b"1.0").is_err());
        assert!(parse_delta(b"-1").is_err());
        assert!(parse_delta(b"99999999999").is_err());
    }

    #[test]
    fn event_with_id() {
        let e = Event::parse(b"presence;id=7").unwrap();
        assert!(e.is("presence"));
        assert_eq!(e.id(), Some(&b"7"[..]));
        let e = Event::parse(b"dialog").unwrap();
        assert_eq!(e.id(), None);
    }

    #[test]
    fn subscription_state_via_ezk() {
        let s: SubscriptionState =
            ezk_parse(b"terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.state, SubStateValue::Terminated);
        assert_eq!(s.reason, Some(EventReasonValue::Probation));
        assert_eq!(s.retry_after, Some(30));
        let s: SubscriptionState = ezk_parse(b"active;\r\n expires=3599").unwrap();
        assert_eq!(s.state, SubStateValue::Active);
        assert_eq!(s.expires, Some(3599));
    }

    #[test]
    fn sub_state_states_and_params() {
        let s = SubState::parse(b"active;expires=3599").unwrap();
        assert_eq!(s.state, SubStateKind::Active);
        assert_eq!(s.expires, Some(3599));
        assert_eq!((s.reason, s.retry_after), (None, None));
        let s = SubState::parse(b"Terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.state, SubStateKind::Terminated);
        assert_eq!(s.reason, Some(&b"probation"[..]));
        assert!(s.reason_is("PROBATION"));
        assert_eq!(s.retry_after, Some(30));
        assert_eq!(s.expires, None);
        let s = SubState::parse(b"pending").unwrap();
        assert_eq!(s.state, SubStateKind::Pending);
        assert!(s.params.raw.is_empty());
        // extension state and unknown parameters are kept
        let s = SubState::parse(b"waiting;x-vendor=1;flag").unwrap();
        assert_eq!(s.state, SubStateKind::Other);
        assert_eq!(s.params.value("x-vendor"), Some(&b"1"[..]));
        assert!(s.params.has("flag"));
        // the first of a repeated parameter wins
        assert_eq!(
            SubState::parse(b"active;expires=5;expires=6")
                .unwrap()
                .expires,
            Some(5)
        );
    }

    #[test]
    fn sub_state_accepts_lws_and_folding() {
        let s = SubState::parse(b"  active ;\r\n expires = 3599 ; reason\t=\ttimeout  ").unwrap();
        assert_eq!(s.state, SubStateKind::Active);
        assert_eq!(s.expires, Some(3599));
        assert_eq!(s.reason, Some(&b"timeout"[..]));
    }

    #[test]
    fn sub_state_rejects_malformed() {
        for bad in [
            &b""[..],
            b"   ",
            b";expires=3",
            b"active;",
            b"active;;expires=3",
            b"active;expires",
            b"active;expires=",
            b"active;expires=-1",
            b"active;expires=4294967296",
            b"active;expires=\"30\"",
            b"active;retry-after=soon",
            b"terminated;reason=\"timeout\"",
            b"active expires=3",
            b"active,pending",
            b"\"active\"",
        ] {
            assert!(
                SubState::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sub_state_agrees_with_ezk_on_valid_values() {
        for v in [
            &b"active;expires=3599"[..],
            b"pending;expires=60",
            b"terminated;reason=noresource",
            b"terminated;reason=timeout;retry-after=120",
            b"active;\r\n expires=1",
        ] {
            let ours = SubState::parse(v).unwrap();
            let theirs: SubscriptionState = ezk_parse(v).unwrap();
            let kind = match theirs.state {
                SubStateValue::Active => SubStateKind::Active,
                SubStateValue::Pending => SubStateKind::Pending,
                SubStateValue::Terminated => SubStateKind::Terminated,
            };
            assert_eq!(ours.state, kind, "{v:?}");
            assert_eq!(ours.expires, theirs.expires, "{v:?}");
            assert_eq!(ours.retry_after, theirs.retry_after, "{v:?}");
            assert_eq!(ours.reason.is_some(), theirs.reason.is_some(), "{v:?}");
        }
    }

    #[test]
    fn message_subscription_state_uses_sub_state() {
        let m = SipMessage::parse(Bytes::from_static(
            b"NOTIFY sip:a@b SIP/2.0\r\nSubscription-State: terminated;reason=deactivated\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let s = m.subscription_state().unwrap().unwrap();
        assert_eq!(s.state, SubStateKind::Terminated);
        assert!(s.reason_is("deactivated"));
        let m = SipMessage::parse(Bytes::from_static(
            b"NOTIFY sip:a@b SIP/2.0\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert!(m.subscription_state().is_none());
    }

    #[test]
    fn accept_matching() {
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nAccept: application/dialog-info+xml, multipart/related, application/rlmi+xml\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/dialog-info+xml"), Some(true));
        assert_eq!(m.accepts("application/pidf+xml"), Some(false));
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nAccept: application/*\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/pidf+xml"), Some(true));
        let m = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:a@b SIP/2.0\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(m.accepts("application/pidf+xml"), None);
    }
}
