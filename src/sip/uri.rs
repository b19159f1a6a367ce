//! A tolerant, zero-copy SIP URI view (RFC 3261 §19.1).
//!
//! Only `sip:`/`sips:` URIs are taken apart; any other scheme is kept opaque so
//! that the bridge can still forward or answer `416 Unsupported URI Scheme`.

use super::grammar::{Params, TypedError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    /// The whole URI as written.
    pub raw: &'a [u8],
    /// User part (escaped as written), without password.
    pub user: Option<&'a [u8]>,
    /// Host (lower/upper case as written; `[v6]` keeps its brackets).
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params<'a>,
    /// Headers after `?`, if any.
    pub headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, TypedError> {
        let colon = memchr::memchr(b':', raw).ok_or(TypedError("URI without scheme"))?;
        let scheme_b = &raw[..colon];
        if scheme_b.is_empty()
            || !scheme_b[0].is_ascii_alphabetic()
            || !scheme_b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return Err(TypedError("malformed URI scheme"));
        }
        let scheme = if scheme_b.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_b.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_b.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let rest = &raw[colon + 1..];
        if !matches!(scheme, Scheme::Sip | Scheme::Sips) {
            return Ok(Uri {
                scheme,
                raw,
                user: None,
                host: b"",
                port: None,
                params: Params::default(),
                headers: None,
            });
        }
        if rest
            .iter()
            .any(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'<' | b'>' | b'"'))
        {
            return Err(TypedError("illegal character in SIP URI"));
        }
        // userinfo ends at the last '@': users may contain ';', '?', '&', '=', '+',
        // '$', ',' and '/' (RFC 3261 user-unreserved; RFC 4475 semiuri, intmeth),
        // while '@' cannot appear unescaped in URI parameters or headers.
        let (user, after_user) = match memchr::memrchr(b'@', rest) {
            Some(at) => {
                let ui = &rest[..at];
                let user = match memchr::memchr(b':', ui) {
                    Some(c) => &ui[..c],
                    None => ui,
                };
                (Some(user), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostpart, headers) = match memchr::memchr(b'?', after_user) {
            Some(q) => (&after_user[..q], Some(&after_user[q + 1..])),
            None => (after_user, None),
        };
        let (hostport, params) = match memchr::memchr(b';', hostpart) {
            Some(s) => (&hostpart[..s], &hostpart[s..]),
            None => (hostpart, &b""[..]),
        };
        let (host, port) = if hostport.first() == Some(&b'[') {
            let e =
                memchr::memchr(b']', hostport).ok_or(TypedError("unterminated IPv6 reference"))?;
            let host = &hostport[..=e];
            // an IPv6 reference must be an IPv6 address (RFC 5118 §4.10:
            // `[2001:db8:::192.0.2.1]` is not one)
            let inner = std::str::from_utf8(&host[1..host.len() - 1]).unwrap_or("");
            if inner.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(TypedError("malformed IPv6 reference"));
            }
            let after = &hostport[e + 1..];
            let port = match after {
                [] => None,
                [b':', p @ ..] => Some(parse_port(p)?),
                _ => return Err(TypedError("malformed host:port")),
            };
            (host, port)
        } else {
            match memchr::memchr(b':', hostport) {
                Some(c) => (&hostport[..c], Some(parse_port(&hostport[c + 1..])?)),
                None => (hostport, None),
            }
        };
        if host.is_empty()
            || !host.iter().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            })
        {
            return Err(TypedError("malformed host"));
        }
        Ok(Uri {
            scheme,
            raw,
            user,
            host,
            port,
            params: Params { raw: params },
            headers,
        })
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    pub fn host_str(&self) -> &'a str {
        std::str::from_utf8(self.host).unwrap_or("")
    }

    pub fn user_str(&self) -> Option<&'a str> {
        self.user.and_then(|u| std::str::from_utf8(u).ok())
    }

    /// Loose-routing flag.
    pub fn has_lr(&self) -> bool {
        self.params.has("lr")
    }

    pub fn transport(&self) -> Option<&'a [u8]> {
        self.params.value("transport")
    }

    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.value("maddr")
    }

    /// Host without IPv6 brackets, for address parsing.
    pub fn host_unbracketed(&self) -> &'a str {
        let h = self.host_str();
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
    }
}

fn parse_port(p: &[u8]) -> Result<u16, TypedError> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(TypedError("malformed port"));
    }
    let n: u32 = p.iter().fold(0, |a, &d| a * 10 + (d - b'0') as u32);
    u16::try_from(n).map_err(|_| TypedError("port out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse(b"sip:1001@192.168.1.50:5062;transport=udp").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"1001"[..]));
        assert_eq!(u.host, b"192.168.1.50");
        assert_eq!(u.port, Some(5062));
        assert_eq!(u.transport(), Some(&b"udp"[..]));
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, b"example.com");
        let u = Uri::parse(b"sip:10.0.0.1;lr").unwrap();
        assert!(u.has_lr());
        assert_eq!(u.user, None);
        let u = Uri::parse(b"sips:[2001:db8::1]:5061").unwrap();
        assert_eq!(u.host_unbracketed(), "2001:db8::1");
        assert_eq!(u.port, Some(5061));
        // RFC 4475 intmeth: '?', ',', ';', '&', '=', '$' and '/' in the user part
        let u = Uri::parse(
            b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        )
        .unwrap();
        assert_eq!(
            u.user,
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(u.host, b"example.com");
        assert_eq!(u.headers, None);
        assert!(u.params.raw.is_empty());
        let u = Uri::parse(b"sip:a?b@host;lr?X=y").unwrap();
        assert_eq!(
            (u.user, u.host, u.headers),
            (Some(&b"a?b"[..]), &b"host"[..], Some(&b"X=y"[..]))
        );
        assert!(u.has_lr());
        let u = Uri::parse(b"sip:user:pw@host?Route=%3Csip:x%3E").unwrap();
        assert_eq!(u.user, Some(&b"user"[..]));
        assert_eq!(u.headers, Some(&b"Route=%3Csip:x%3E"[..]));
    }

    #[test]
    fn other_schemes_are_opaque() {
        assert_eq!(Uri::parse(b"tel:+1555").unwrap().scheme, Scheme::Tel);
        assert_eq!(
            Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent")
                .unwrap()
                .scheme,
            Scheme::Other
        );
        assert_eq!(
            Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap().scheme,
            Scheme::Other
        );
        assert!(Uri::parse(b"no-scheme").is_err());
        assert!(Uri::parse(b"sip:").is_err());
        assert!(Uri::parse(b"sip:a@b:70000").is_err());
        assert!(Uri::parse(b"sip:a@b c").is_err());
    }
}
