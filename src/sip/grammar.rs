//! The lexical layer of the SIP grammar (RFC 3261 §25) that every typed view is
//! built from: token characters, linear whitespace, a `Cursor` that understands
//! folded lines, header parameters ([`Params`]), and the small scalar parsers
//! (`host[:port]`, 32-bit numbers, delta-seconds).
//!
//! These are small hand-written parsers over the original bytes (no allocation),
//! because they sit on the hot path of every message. They accept the full
//! RFC 3261 LWS grammar (folded lines, whitespace around `/`, `;` and `=`) as
//! RFC 4475 `wsinv` requires, and reject the malformations RFC 4475 §3.1.2 lists.
//!
//! Nothing here knows about messages or header names: this module is the bottom of
//! `sip/` and imports none of its siblings.

/// Why a typed value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypedError(pub &'static str);

impl std::fmt::Display for TypedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TypedError {}

pub(crate) type Res<T> = Result<T, TypedError>;

/// Lookup table behind [`is_token_char`] (a table lookup instead of a chain of
/// comparisons: this runs for every byte of every header name and parameter).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// RFC 3261 `token` characters.
#[inline(always)]
pub fn is_token_char(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Trim linear whitespace (SP, HT, CR, LF) around `b[s..e]`.
#[inline]
pub fn trim_lws(b: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && matches!(b[s], b' ' | b'\t' | b'\r' | b'\n') {
        s += 1;
    }
    while e > s && matches!(b[e - 1], b' ' | b'\t' | b'\r' | b'\n') {
        e -= 1;
    }
    (s, e)
}

/// `b` without leading and trailing linear whitespace.
#[inline]
pub(crate) fn trim(b: &[u8]) -> &[u8] {
    let (s, e) = trim_lws(b, 0, b.len());
    &b[s..e]
}

/// A byte cursor that understands SIP linear whitespace (SP, HT and folded line
/// breaks).
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
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
    #[inline]
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
    #[inline]
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
    #[inline]
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
    #[inline]
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            c: Cursor::new(self.raw),
        }
    }
    /// `Some(None)` for a flag parameter, `Some(Some(v))` for `name=v`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
    #[inline]
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    #[inline]
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
pub(crate) fn strict_params<'a>(c: &mut Cursor<'a>, stop_at_comma: bool) -> Res<Params<'a>> {
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

#[inline]
pub(crate) fn ascii(b: &[u8]) -> Res<&str> {
    std::str::from_utf8(b).map_err(|_| TypedError("non-ASCII where ASCII is required"))
}

#[inline]
pub(crate) fn parse_u32(b: &[u8]) -> Res<u32> {
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
pub(crate) fn host_port<'a>(c: &mut Cursor<'a>) -> Res<(&'a str, Option<u16>)> {
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

/// A delta-seconds value (Expires, Min-Expires, Max-Forwards …).
#[inline]
pub fn parse_delta(v: &[u8]) -> Res<u32> {
    parse_u32(trim(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta(b" 600 ").unwrap(), 600);
        assert!(parse_delta(b"1.0").is_err());
        assert!(parse_delta(b"-1").is_err());
        assert!(parse_delta(b"99999999999").is_err());
    }
}
