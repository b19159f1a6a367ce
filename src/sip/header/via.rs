//! `Via` (RFC 3261 §20.42): sent-protocol, sent-by and the parameters the
//! transaction layer and the proxy read (branch, received, rport, maddr).

use crate::sip::grammar::{
    Cursor, Params, Res, TypedError, ascii, host_port, parse_u32, strict_params,
};

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
}
