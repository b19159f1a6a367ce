//! Building the requests and responses the bridge originates itself (SUBSCRIBE,
//! NOTIFY, 100/200/4xx answers, OPTIONS pings). Content-Length is always written
//! and always right.

use super::header::HeaderName;
use super::message::{Method, SipMessage};
use bytes::Bytes;
use std::fmt::Write as _;

/// Incrementally writes a message. Header values are written as given.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// `METHOD uri SIP/2.0`
    pub fn request(method: &Method, uri: &str) -> Self {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(uri.as_bytes());
        buf.extend_from_slice(b" SIP/2.0\r\n");
        MessageBuilder { buf }
    }

    /// `METHOD uri SIP/2.0`, with room for `capacity` bytes of message (no
    /// reallocation while a message of known size is written).
    pub fn request_with_capacity(method: &Method, uri: &str, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(uri.as_bytes());
        buf.extend_from_slice(b" SIP/2.0\r\n");
        MessageBuilder { buf }
    }

    /// `SIP/2.0 code reason`
    pub fn response(code: u16, reason: &str) -> Self {
        let mut buf = Vec::with_capacity(512);
        let _ = write!(Vec8(&mut buf), "SIP/2.0 {code} {reason}\r\n");
        MessageBuilder { buf }
    }

    /// A response to `req` (RFC 3261 §8.2.6): all Via values in order, From,
    /// Call-ID and CSeq copied byte for byte, To copied and given `to_tag` when it
    /// has no tag yet.
    pub fn response_to(req: &SipMessage, code: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut b = Self::response(code, reason);
        for h in req.headers_named(HeaderName::Via) {
            b.header_bytes("Via", req.value(h));
        }
        if let Some(v) = req.header_value(HeaderName::From) {
            b.header_bytes("From", v);
        }
        if let Some(v) = req.header_value(HeaderName::To) {
            let has_tag = req.to_tag().is_some();
            match to_tag {
                Some(t) if !has_tag => {
                    let mut to = Vec::with_capacity(v.len() + t.len() + 5);
                    to.extend_from_slice(v);
                    to.extend_from_slice(b";tag=");
                    to.extend_from_slice(t.as_bytes());
                    b.header_bytes("To", &to);
                }
                _ => {
                    b.header_bytes("To", v);
                }
            }
        }
        if let Some(v) = req.header_value(HeaderName::CallId) {
            b.header_bytes("Call-ID", v);
        }
        if let Some(v) = req.header_value(HeaderName::CSeq) {
            b.header_bytes("CSeq", v);
        }
        b
    }

    pub fn header(&mut self, name: &str, value: impl std::fmt::Display) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        let _ = write!(Vec8(&mut self.buf), "{value}");
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn header_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet (never true: a builder starts with its first line).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A header whose value is `parts` one after the other (no formatting).
    pub fn header_parts(&mut self, name: &str, parts: &[&[u8]]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Finish without a body (`Content-Length: 0`).
    pub fn finish(&mut self) -> Bytes {
        self.buf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Bytes::from(std::mem::take(&mut self.buf))
    }

    /// Finish with a body and its Content-Type.
    pub fn finish_with_body(&mut self, content_type: &str, body: &[u8]) -> Bytes {
        self.finish_with_body_writer(content_type, body.len(), |buf| buf.extend_from_slice(body))
    }

    /// Finish with a body of `len` bytes that `write` appends to the message
    /// (no intermediate copy of the body).
    pub fn finish_with_body_writer(
        &mut self,
        content_type: &str,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Bytes {
        self.header("Content-Type", content_type);
        let _ = write!(Vec8(&mut self.buf), "Content-Length: {len}\r\n\r\n");
        self.buf.reserve(len);
        let start = self.buf.len();
        write(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start, len, "body length as announced");
        Bytes::from(std::mem::take(&mut self.buf))
    }
}

/// A request that belongs to an INVITE's transaction — the hop-by-hop ACK for a
/// non-2xx final response or a CANCEL (RFC 3261 §17.1.1.3, §9.1): the INVITE's
/// Request-URI, its top Via only, its Route headers, From, Call-ID and CSeq number
/// with `method`; To from `to` (the response's, with its tag) or else the INVITE's;
/// Max-Forwards 70; no body. `None` when the INVITE lacks what it needs.
pub fn invite_transaction_request(
    invite: &SipMessage,
    method: &Method,
    to: Option<&[u8]>,
) -> Option<Bytes> {
    let uri = invite.request_uri()?;
    let via = invite.slice(invite.top_via_span()?);
    let seq = invite.cseq()?.ok()?.seq;
    let call_id = invite.header_value(HeaderName::CallId)?;
    let mut b = MessageBuilder {
        buf: Vec::with_capacity(256 + uri.len() + via.len()),
    };
    b.buf.extend_from_slice(method.as_bytes());
    b.buf.push(b' ');
    b.buf.extend_from_slice(uri);
    b.buf.extend_from_slice(b" SIP/2.0\r\n");
    b.header_bytes("Via", via);
    b.header_bytes("Max-Forwards", b"70");
    for h in invite.headers_named(HeaderName::Route) {
        b.header_bytes("Route", invite.value(h));
    }
    if let Some(v) = invite.header_value(HeaderName::From) {
        b.header_bytes("From", v);
    }
    if let Some(v) = to.or_else(|| invite.header_value(HeaderName::To)) {
        b.header_bytes("To", v);
    }
    b.header_bytes("Call-ID", call_id);
    b.header("CSeq", format_args!("{seq} {method}"));
    Some(b.finish())
}

/// `fmt::Write` over a `Vec<u8>`.
struct Vec8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Vec8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Standard reason phrases for the codes the bridge sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_body_has_right_content_length() {
        let body = b"<?xml version=\"1.0\"?><dialog-info/>";
        let out = MessageBuilder::request(&Method::Notify, "sip:1001@10.0.0.5:5062")
            .header("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport")
            .header("CSeq", "2 NOTIFY")
            .finish_with_body("application/dialog-info+xml", body);
        let m = SipMessage::parse(out).unwrap();
        assert_eq!(m.method(), Some(&Method::Notify));
        assert_eq!(m.body(), body);
        assert_eq!(m.defect(), None);
        assert_eq!(m.content_type(), Some(&b"application/dialog-info+xml"[..]));
    }

    #[test]
    fn response_copies_vias_and_adds_to_tag() {
        let req = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:1002@pbx SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1;rport=5062;received=10.0.0.5\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\nf: <sip:1001@pbx>;tag=77\r\nt: <sip:1002@pbx>\r\ni: cid\r\nCSeq: 4 SUBSCRIBE\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let out = MessageBuilder::response_to(&req, 200, "OK", Some("abc"))
            .header("Expires", 600)
            .finish();
        let m = SipMessage::parse(out).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.values(HeaderName::Via).count(), 2);
        assert_eq!(m.branch(), Some(&b"z9hG4bK1"[..]));
        assert_eq!(m.to_tag(), Some(&b"abc"[..]));
        assert_eq!(m.from_tag(), Some(&b"77"[..]));
        assert_eq!(m.call_id(), Some(&b"cid"[..]));
        assert_eq!(m.cseq().unwrap().unwrap().seq, 4);
        assert_eq!(m.expires().unwrap().unwrap(), 600);
    }

    #[test]
    fn existing_to_tag_is_kept() {
        let req = SipMessage::parse(Bytes::from_static(
            b"SUBSCRIBE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=old\r\nl: 0\r\n\r\n",
        ))
        .unwrap();
        let m =
            SipMessage::parse(MessageBuilder::response_to(&req, 481, "x", Some("new")).finish())
                .unwrap();
        assert_eq!(m.to_tag(), Some(&b"old"[..]));
    }
}
