//! `name-addr` / `addr-spec` with header parameters (RFC 3261 §20.10, §25.1): the
//! values of From, To, Contact, Route, Record-Route and Path.

use crate::sip::grammar::{Cursor, Params, Res, TypedError, is_token_char, strict_params, trim};
use crate::sip::uri::Uri;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
