//! Byte-preserving edits for forwarding.
//!
//! An [`Editor`] collects splices against the original message and writes a new
//! buffer in one pass: every byte that no edit touches is copied verbatim, so vendor
//! headers, compact names, folding, header order and bodies survive. Only the
//! headers a proxy must change are touched: Via, Max-Forwards, Route, Record-Route,
//! the Request-URI and Contact (plus Content-Length when a datagram without one
//! goes out on a stream).

use super::header::HeaderName;
use super::message::{SipMessage, Span, split_list};
use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone)]
struct Splice {
    /// Replace `at.start..at.end` (empty for an insertion) with `data`.
    at: Span,
    data: Vec<u8>,
    /// Insertion order, to keep several inserts at one offset in call order.
    seq: u32,
}

/// Collects edits against one message; [`Editor::finish`] produces the new bytes.
pub struct Editor<'m> {
    msg: &'m SipMessage,
    splices: Vec<Splice>,
}

impl<'m> Editor<'m> {
    pub fn new(msg: &'m SipMessage) -> Self {
        Editor {
            msg,
            splices: Vec::with_capacity(4),
        }
    }

    fn push(&mut self, at: Span, data: Vec<u8>) {
        let seq = self.splices.len() as u32;
        self.splices.push(Splice { at, data, seq });
    }

    fn header_line(name: &str, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(name.len() + value.len() + 4);
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(value);
        v.extend_from_slice(b"\r\n");
        v
    }

    /// Offset right after the start line: where headers go when there is no better
    /// anchor.
    fn after_start_line(&self) -> u32 {
        self.msg.start_line_span().end
    }

    /// Add a header line at the top of the headers named `name` (or right after the
    /// start line when there are none).
    fn insert_top(&mut self, name: HeaderName, value: &[u8]) {
        let at = self
            .msg
            .header(name)
            .map(|h| h.line.start)
            .unwrap_or_else(|| self.after_start_line());
        self.push(
            Span { start: at, end: at },
            Self::header_line(name.as_str(), value),
        );
    }

    /// Push our Via on top (`value` without the `Via: ` prefix).
    pub fn push_via(&mut self, value: &[u8]) -> &mut Self {
        self.insert_top(HeaderName::Via, value);
        self
    }

    /// Remove the topmost Via value: the whole line when it holds one value, else
    /// just the first element and its comma.
    pub fn pop_via(&mut self) -> &mut Self {
        self.remove_first_value(HeaderName::Via);
        self
    }

    /// Remove the first Route value (loose routing: our own Route entry).
    pub fn pop_route(&mut self) -> &mut Self {
        self.remove_first_value(HeaderName::Route);
        self
    }

    /// Remove the last Route value (strict-router fix-up, RFC 3261 §16.4).
    pub fn remove_last_route(&mut self) -> &mut Self {
        let msg = self.msg;
        let Some(h) = msg.headers_named(HeaderName::Route).last().copied() else {
            return self;
        };
        let vals: Vec<Span> = split_list(msg.buffer(), h.value).collect();
        match vals.as_slice() {
            [] => {}
            [_] => self.push(h.line, Vec::new()),
            [.., prev, last] => {
                // from the end of the previous value through the last value
                self.push(
                    Span {
                        start: prev.end,
                        end: last.end,
                    },
                    Vec::new(),
                );
            }
        }
        self
    }

    fn remove_first_value(&mut self, name: HeaderName) {
        let msg = self.msg;
        let Some(h) = msg.header(name).copied() else {
            return;
        };
        let mut it = split_list(msg.buffer(), h.value);
        let Some(first) = it.next() else {
            self.push(h.line, Vec::new());
            return;
        };
        match it.next() {
            None => self.push(h.line, Vec::new()),
            Some(second) => self.push(
                Span {
                    start: first.start,
                    end: second.start,
                },
                Vec::new(),
            ),
        }
    }

    /// Add a Route header value on top of the route set.
    pub fn push_route(&mut self, value: &[u8]) -> &mut Self {
        self.insert_top(HeaderName::Route, value);
        self
    }

    /// Add a Record-Route value on top (`<sip:us;lr>`).
    pub fn push_record_route(&mut self, value: &[u8]) -> &mut Self {
        let at = self
            .msg
            .header(HeaderName::RecordRoute)
            .map(|h| h.line.start)
            .or_else(|| {
                self.msg
                    .header(HeaderName::Via)
                    .map(|_| self.last_via_end())
            })
            .unwrap_or_else(|| self.after_start_line());
        self.push(
            Span { start: at, end: at },
            Self::header_line("Record-Route", value),
        );
        self
    }

    /// Add a Path value on top (RFC 3327).
    pub fn push_path(&mut self, value: &[u8]) -> &mut Self {
        let at = self
            .msg
            .header(HeaderName::Path)
            .map(|h| h.line.start)
            .unwrap_or_else(|| self.last_via_end());
        self.push(
            Span { start: at, end: at },
            Self::header_line("Path", value),
        );
        self
    }

    fn last_via_end(&self) -> u32 {
        self.msg
            .headers_named(HeaderName::Via)
            .last()
            .map(|h| h.line.end)
            .unwrap_or_else(|| self.after_start_line())
    }

    /// Set Max-Forwards (replacing the value, or adding the header after the Vias).
    pub fn set_max_forwards(&mut self, n: u32) -> &mut Self {
        let v = n.to_string().into_bytes();
        match self.msg.header(HeaderName::MaxForwards).copied() {
            Some(h) => self.push(h.value, v),
            None => {
                let at = self.last_via_end();
                self.push(
                    Span { start: at, end: at },
                    Self::header_line("Max-Forwards", &v),
                );
            }
        }
        self
    }

    /// Replace the Request-URI.
    pub fn set_request_uri(&mut self, uri: &[u8]) -> &mut Self {
        if let Some(s) = self.msg.request_uri_span() {
            self.push(s, uri.to_vec());
        }
        self
    }

    /// Replace one list value (e.g. a Contact found by [`SipMessage::contacts`]).
    pub fn replace_value(&mut self, value: Span, with: &[u8]) -> &mut Self {
        self.push(value, with.to_vec());
        self
    }

    /// Replace a span of the message (must lie inside the header section).
    pub fn replace_span(&mut self, span: Span, with: &[u8]) -> &mut Self {
        self.push(span, with.to_vec());
        self
    }

    /// Remove every header line with this name.
    pub fn remove_all(&mut self, name: HeaderName) -> &mut Self {
        let lines: Vec<Span> = self.msg.headers_named(name).map(|h| h.line).collect();
        for l in lines {
            self.push(l, Vec::new());
        }
        self
    }

    /// Append a header at the end of the header section.
    pub fn append_header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let at = self.msg.headers_end() as u32;
        self.push(Span { start: at, end: at }, Self::header_line(name, value));
        self
    }

    /// Add `Content-Length` when the message has none (a UDP message without one
    /// that is forwarded over TCP, RFC 3261 §18.3).
    pub fn ensure_content_length(&mut self) -> &mut Self {
        if self.msg.header(HeaderName::ContentLength).is_none() {
            let n = self.msg.body().len().to_string();
            self.append_header("Content-Length", n.as_bytes());
        }
        self
    }

    /// Write the edited message. Bytes after the message (ignored trailing bytes of
    /// a datagram) are not copied.
    pub fn finish(mut self) -> Bytes {
        let buf = self.msg.buffer();
        let start = self.msg.start_line_span().start as usize;
        let end = self.msg.body_span().end as usize;
        // At one offset, insertions go before a replacement that starts there (else
        // the replacement would move past the offset and the insertion be lost).
        self.splices
            .sort_by_key(|s| (s.at.start, s.at.end > s.at.start, s.seq));
        let extra: usize = self.splices.iter().map(|s| s.data.len()).sum();
        let mut out = BytesMut::with_capacity(end - start + extra);
        let mut pos = start;
        for s in &self.splices {
            let (a, b) = (s.at.start as usize, s.at.end as usize);
            if a < pos || b > end || a > b {
                // overlapping or out-of-range splice: skip rather than corrupt
                continue;
            }
            out.extend_from_slice(&buf[pos..a]);
            out.extend_from_slice(&s.data);
            pos = b;
        }
        out.extend_from_slice(&buf[pos..end]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    const REQ: &[u8] = b"INVITE sip:1002@pbx.test SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;rport, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb\r\n\
Route: <sip:bridge.lan;lr>, <sip:pbx.test;lr>\r\n\
Max-Forwards: 70\r\n\
X-GS-Vendor-Tag: a=b;;c , d\r\n\
f: <sip:1001@pbx.test>;tag=1\r\n\
t: <sip:1002@pbx.test>\r\n\
i: abc\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:1001@10.0.0.5:5062>\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\n\x00\x01\xff\xfe";

    #[test]
    fn no_edits_is_byte_identical() {
        let m = SipMessage::parse(Bytes::from_static(REQ)).unwrap();
        assert_eq!(&Editor::new(&m).finish()[..], REQ);
    }

    #[test]
    fn proxy_edits_touch_only_their_headers() {
        let m = SipMessage::parse(Bytes::from_static(REQ)).unwrap();
        let mut e = Editor::new(&m);
        e.push_via(b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbridge;rport")
            .set_max_forwards(69)
            .pop_route()
            .push_record_route(b"<sip:10.0.0.1:5060;lr>");
        let out = e.finish();
        let expected: &[u8] = b"INVITE sip:1002@pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbridge;rport\r\n\
v: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;rport, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb\r\n\
Record-Route: <sip:10.0.0.1:5060;lr>\r\n\
Route: <sip:pbx.test;lr>\r\n\
Max-Forwards: 69\r\n\
X-GS-Vendor-Tag: a=b;;c , d\r\n\
f: <sip:1001@pbx.test>;tag=1\r\n\
t: <sip:1002@pbx.test>\r\n\
i: abc\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:1001@10.0.0.5:5062>\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\n\x00\x01\xff\xfe";
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected)
        );
        assert_eq!(&out[..], expected);
        // and the result parses back with the new top Via
        let m2 = SipMessage::parse(out).unwrap();
        assert_eq!(m2.branch(), Some(&b"z9hG4bKbridge"[..]));
        assert_eq!(m2.body(), b"\x00\x01\xff\xfe");
    }

    #[test]
    fn pop_via_removes_only_the_first_value() {
        let m = SipMessage::parse(Bytes::from_static(REQ)).unwrap();
        let mut e = Editor::new(&m);
        e.pop_via();
        let m2 = SipMessage::parse(e.finish()).unwrap();
        assert_eq!(m2.branch(), Some(&b"z9hG4bKb"[..]));
        assert_eq!(m2.values(HeaderName::Via).count(), 1);
        let mut e = Editor::new(&m2);
        e.pop_via();
        let m3 = SipMessage::parse(e.finish()).unwrap();
        assert_eq!(m3.header(HeaderName::Via).map(|_| ()), None);
    }

    #[test]
    fn request_uri_contact_and_strict_route_fixup() {
        let m = SipMessage::parse(Bytes::from_static(REQ)).unwrap();
        let contact = m.contacts().next().unwrap().0;
        let mut e = Editor::new(&m);
        e.set_request_uri(b"sip:1002@10.0.0.7:5060")
            .replace_value(contact, b"<sip:tok@10.0.0.1:5060>")
            .remove_last_route();
        let m2 = SipMessage::parse(e.finish()).unwrap();
        assert_eq!(m2.request_uri(), Some(&b"sip:1002@10.0.0.7:5060"[..]));
        assert_eq!(
            m2.header_value(HeaderName::Contact),
            Some(&b"<sip:tok@10.0.0.1:5060>"[..])
        );
        assert_eq!(
            m2.header_value(HeaderName::Route),
            Some(&b"<sip:bridge.lan;lr>"[..])
        );
    }

    #[test]
    fn content_length_added_and_trailing_datagram_bytes_dropped() {
        let m = parse("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nv=0\r\n");
        let mut e = Editor::new(&m);
        e.ensure_content_length();
        assert_eq!(
            &e.finish()[..],
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
        let m = parse("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\nINVITE junk");
        assert_eq!(
            &Editor::new(&m).finish()[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n"
        );
    }

    #[test]
    fn insertion_where_a_removed_line_starts_is_kept() {
        // Record-Route goes after the last Via, which is where the Route line starts.
        let m = parse(
            "NOTIFY sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRoute: <sip:us;lr>\r\nl: 0\r\n\r\n",
        );
        let mut e = Editor::new(&m);
        e.pop_route().push_record_route(b"<sip:us;lr>");
        assert_eq!(
            &e.finish()[..],
            b"NOTIFY sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRecord-Route: <sip:us;lr>\r\nl: 0\r\n\r\n"
        );
    }

    #[test]
    fn max_forwards_added_when_missing() {
        let m =
            parse("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n");
        let mut e = Editor::new(&m);
        e.set_max_forwards(70);
        assert_eq!(
            &e.finish()[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n"
        );
    }
}
