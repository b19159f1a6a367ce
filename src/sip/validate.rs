//! Judging a framed message: is it well-formed enough to act on?
//!
//! A request that fails gets a [`Defect`] naming the problem, which the caller turns
//! into `400 Bad Request` (or 416/505) with that reason phrase, as long as the
//! request's Via can be read. A response that fails is dropped. The checks follow
//! RFC 3261 and the RFC 4475 torture tests (see `tests/rfc4475.rs`).

use super::header::HeaderName;
use super::message::{Defect, SipMessage};
use super::uri::{Scheme, Uri};

/// Check a request. `Ok` means it can be processed.
pub fn check_request(msg: &SipMessage) -> Result<(), Defect> {
    if let Some(d) = msg.defect() {
        return Err(d);
    }
    check_common(msg)?;
    let method = msg.method().ok_or(Defect::bad("Not a Request"))?;
    let cseq = msg
        .cseq()
        .ok_or(Defect::bad("Missing CSeq"))?
        .map_err(|_| Defect::bad("Malformed CSeq"))?;
    // RFC 4475 badbranch: the magic cookie promises an RFC 3261 transaction
    // identifier but there is none; answering statelessly beats guessing which
    // transaction this is.
    if let Some(Ok(via)) = msg.top_via()
        && via
            .branch()
            .is_some_and(|b| b.eq_ignore_ascii_case(b"z9hG4bK"))
    {
        return Err(Defect::bad("Missing Transaction Identifier in Via Branch"));
    }
    if cseq.method != method.as_bytes() {
        return Err(Defect::bad("CSeq Method Does Not Match Request Method"));
    }
    if let Some(mf) = msg.max_forwards() {
        match mf {
            Ok(n) if n <= 255 => {}
            _ => return Err(Defect::bad("Malformed Max-Forwards")),
        }
    }
    // Request-URI
    let ruri = msg.request_uri().unwrap_or_default();
    let uri = Uri::parse(ruri).map_err(|_| Defect::bad("Malformed Request-URI"))?;
    match uri.scheme {
        Scheme::Sip | Scheme::Sips => {
            if uri.headers.is_some() {
                return Err(Defect::bad("Headers Not Allowed in Request-URI"));
            }
        }
        Scheme::Tel => {}
        Scheme::Other => {
            return Err(Defect {
                code: 416,
                reason: "Unsupported URI Scheme",
            });
        }
    }
    // Contact (all values, or a lone '*')
    if !msg.is_wildcard_contact() {
        for (_, c) in msg.contacts() {
            let c = c.map_err(|_| Defect::bad("Malformed Contact"))?;
            if let Some(e) = c.params.get("expires")
                && e.and_then(|v| super::grammar::parse_delta(v).ok())
                    .is_none()
            {
                return Err(Defect::bad("Malformed Contact expires"));
            }
        }
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute] {
        for s in msg.values(name) {
            super::header::NameAddr::parse(msg.slice(s)).map_err(|_| {
                Defect::bad(if name == HeaderName::Route {
                    "Malformed Route"
                } else {
                    "Malformed Record-Route"
                })
            })?;
        }
    }
    Ok(())
}

/// Check a response. `Err` means drop it.
pub fn check_response(msg: &SipMessage) -> Result<(), Defect> {
    if let Some(d) = msg.defect() {
        return Err(d);
    }
    check_common(msg)?;
    Ok(())
}

fn check_common(msg: &SipMessage) -> Result<(), Defect> {
    // single-valued headers that appear twice (RFC 4475 multi01, mcl01)
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::Expires,
    ] {
        if msg.count(name) > 1 {
            return Err(Defect::bad(match name {
                HeaderName::From => "Duplicate From",
                HeaderName::To => "Duplicate To",
                HeaderName::CallId => "Duplicate Call-ID",
                HeaderName::CSeq => "Duplicate CSeq",
                HeaderName::MaxForwards => "Duplicate Max-Forwards",
                HeaderName::ContentLength => "Duplicate Content-Length",
                HeaderName::ContentType => "Duplicate Content-Type",
                _ => "Duplicate Expires",
            }));
        }
    }
    if msg.header(HeaderName::Via).is_none() {
        return Err(Defect::bad("Missing Via"));
    }
    for v in msg.vias() {
        v.map_err(|_| Defect::bad("Malformed Via"))?;
    }
    if msg.values(HeaderName::Via).count() != msg.vias().count() {
        return Err(Defect::bad("Malformed Via"));
    }
    // empty list elements (",,") in Via are malformed (badinv01)
    for h in msg.headers_named(HeaderName::Via) {
        let v = msg.value(h);
        let mut last_comma = true;
        let mut depth_quote = false;
        for &c in v {
            match c {
                b'"' => depth_quote = !depth_quote,
                b',' if !depth_quote => {
                    if last_comma {
                        return Err(Defect::bad("Malformed Via"));
                    }
                    last_comma = true;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => last_comma = false,
            }
        }
        if last_comma {
            return Err(Defect::bad("Malformed Via"));
        }
    }
    match msg.call_id() {
        Some(c) if !c.is_empty() => {}
        _ => return Err(Defect::bad("Missing Call-ID")),
    }
    msg.from()
        .ok_or(Defect::bad("Missing From"))?
        .map_err(|_| Defect::bad("Malformed From"))?;
    msg.to()
        .ok_or(Defect::bad("Missing To"))?
        .map_err(|_| Defect::bad("Malformed To"))?;
    // CSeq before Expires: RFC 4475 scalar02 is to be rejected "due to the CSeq error"
    msg.cseq()
        .ok_or(Defect::bad("Missing CSeq"))?
        .map_err(|_| Defect::bad("Malformed CSeq"))?;
    if let Some(e) = msg.expires() {
        e.map_err(|_| Defect::bad("Malformed Expires"))?;
    }
    Ok(())
}

/// Does a Via below the top one (where this response would be forwarded next, or
/// any hop after that) name the IPv4 limited-broadcast address as sent-by,
/// `received` or `maddr`? A proxy drops such responses instead of forwarding them
/// (RFC 4475 §3.3.10 bcast: a well-formed message that would otherwise turn the
/// proxy into a broadcast amplifier).
pub fn has_broadcast_via(msg: &SipMessage) -> bool {
    const BCAST: &[u8] = b"255.255.255.255";
    msg.vias().skip(1).any(|v| {
        v.is_ok_and(|v| {
            v.host.as_bytes() == BCAST || v.received() == Some(BCAST) || v.maddr() == Some(BCAST)
        })
    })
}

/// Option tags in Proxy-Require: a proxy supports none of them (RFC 3261 §16.3
/// step 6 — answer 420 listing them in Unsupported).
pub fn unsupported_proxy_require(msg: &SipMessage) -> Vec<&[u8]> {
    msg.option_tags(HeaderName::ProxyRequire).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn check(s: &str) -> Result<(), Defect> {
        check_request(&SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap())
    }

    const OK: &str = "SUBSCRIBE sip:1002@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1491280923;rport\r\n\
From: <sip:1001@pbx.example.com>;tag=1365906328\r\n\
To: <sip:1002@pbx.example.com>\r\n\
Call-ID: 1979306516-5062-1@BA.BG.B.FA\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Max-Forwards: 70\r\n\
Expires: 0\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn good_request_passes() {
        assert_eq!(check(OK), Ok(()));
    }

    #[test]
    fn each_required_header_is_named_when_missing() {
        for (hdr, reason) in [
            ("Via:", "Missing Via"),
            ("From:", "Missing From"),
            ("To:", "Missing To"),
            ("Call-ID:", "Missing Call-ID"),
            ("CSeq:", "Missing CSeq"),
        ] {
            let s: String = OK
                .split("\r\n")
                .filter(|l| !l.starts_with(hdr))
                .collect::<Vec<_>>()
                .join("\r\n");
            assert_eq!(check(&s).unwrap_err().reason, reason, "{hdr}");
        }
    }

    #[test]
    fn mismatched_cseq_method_and_bad_scalars() {
        assert_eq!(
            check(&OK.replace("1 SUBSCRIBE", "1 INVITE"))
                .unwrap_err()
                .reason,
            "CSeq Method Does Not Match Request Method"
        );
        assert_eq!(
            check(&OK.replace("Max-Forwards: 70", "Max-Forwards: 300"))
                .unwrap_err()
                .reason,
            "Malformed Max-Forwards"
        );
        assert_eq!(
            check(&OK.replace("Expires: 0", "Expires: soon"))
                .unwrap_err()
                .reason,
            "Malformed Expires"
        );
        assert_eq!(
            check(&OK.replace("Call-ID: 19", "Call-ID: 19\r\nCall-ID: 20"))
                .unwrap_err()
                .reason,
            "Duplicate Call-ID"
        );
    }

    #[test]
    fn cseq_is_judged_before_expires() {
        // RFC 4475 scalar02: both are out of range, the answer names the CSeq
        let s = OK
            .replace("1 SUBSCRIBE", "36893488147419103232 SUBSCRIBE")
            .replace("Expires: 0", "Expires: 100000000000000000000");
        assert_eq!(check(&s).unwrap_err().reason, "Malformed CSeq");
    }

    #[test]
    fn bare_magic_cookie_branch_is_rejected() {
        let s = OK.replace("branch=z9hG4bK1491280923", "branch=z9hG4bK");
        assert_eq!(
            check(&s).unwrap_err().reason,
            "Missing Transaction Identifier in Via Branch"
        );
        // RFC 2543 style (no cookie, or no branch at all) is still accepted
        assert_eq!(
            check(&OK.replace("branch=z9hG4bK1491280923", "branch=1491280923")),
            Ok(())
        );
        assert_eq!(check(&OK.replace(";branch=z9hG4bK1491280923", "")), Ok(()));
    }

    #[test]
    fn broadcast_via_below_the_top() {
        let resp = |vias: &str| {
            SipMessage::parse(Bytes::from(format!(
                "SIP/2.0 200 OK\r\n{vias}From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
            )))
            .unwrap()
        };
        let m = resp(
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK2\r\n",
        );
        assert_eq!(check_response(&m), Ok(()));
        assert!(has_broadcast_via(&m));
        let m = resp(
            "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;received=255.255.255.255\r\n",
        );
        assert!(has_broadcast_via(&m));
        // our own (top) Via is not looked at; ordinary hops are fine
        let m = resp(
            "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK2\r\n",
        );
        assert!(!has_broadcast_via(&m));
    }

    #[test]
    fn request_uri_schemes() {
        assert_eq!(
            check(&OK.replace("SUBSCRIBE sip:1002@pbx.example.com", "SUBSCRIBE urn:x:y"))
                .unwrap_err()
                .code,
            416
        );
        assert_eq!(
            check(&OK.replace("SUBSCRIBE sip:1002@pbx.example.com", "SUBSCRIBE tel:+1555")),
            Ok(())
        );
    }
}
