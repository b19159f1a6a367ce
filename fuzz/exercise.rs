//! Drives one input through everything the SIP layer offers: framing, every typed
//! accessor, validation, the editor and the response builder, and checks the
//! properties that must hold for any input. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the no-panic sweep in `tests/rfc4475.rs`, so that
//! both exercise exactly the same surface.
//!
//! Any panic, or a failed `assert!`, is a bug in the SIP layer: network input must
//! never crash the bridge.

#![allow(dead_code)]

use blf_bridge::sip::{
    Editor, HeaderName, MessageBuilder, NameAddr, SipMessage, StreamFramer, StreamItem, Uri,
    validate,
};
use bytes::Bytes;

/// The Via the "proxy" pushes in the editor round trip.
pub const OUR_VIA: &[u8] = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzzbridge;rport";
const OUR_BRANCH: &[u8] = b"z9hG4bKfuzzbridge";

/// Datagram path: parse `data` as one UDP datagram and exercise the result.
/// Returns whether it parsed.
pub fn datagram(data: &[u8]) -> bool {
    match SipMessage::parse(Bytes::copy_from_slice(data)) {
        Ok(m) => {
            message(&m, true);
            true
        }
        Err(_) => false,
    }
}

/// Stream path: feed `data` to a [`StreamFramer`] in chunks whose sizes are taken
/// from `sizes` (cycled; a zero means one byte), exercising every message that
/// comes out. Stops at the first framing error (the runtime closes the
/// connection there). Returns the number of messages framed.
pub fn stream(data: &[u8], sizes: &[u8]) -> usize {
    let mut f = StreamFramer::new();
    let mut pos = 0;
    let mut k = 0;
    let mut framed = 0;
    let mut consumed = 0usize;
    while pos < data.len() {
        let n = sizes
            .get(k % sizes.len().max(1))
            .map_or(data.len(), |&s| s.max(1) as usize);
        k += 1;
        let end = (pos + n).min(data.len());
        f.push(&data[pos..end]);
        pos = end;
        loop {
            let before = f.buffered();
            match f.next_item() {
                Ok(Some(item)) => {
                    let after = f.buffered();
                    assert!(after < before, "framer made no progress");
                    consumed += before - after;
                    if let StreamItem::Message(m) = item {
                        framed += 1;
                        // A stream frame is exactly one message: nothing trails it.
                        assert_eq!(
                            m.message_bytes().len() + m.start_line_span().start as usize,
                            m.buffer().len()
                        );
                        message(&m, false);
                    }
                }
                Ok(None) => break,
                Err(_) => return framed,
            }
        }
    }
    assert!(consumed + f.buffered() <= data.len());
    framed
}

/// Run every accessor, validation and edit over a parsed message. `datagram`
/// selects the datagram-only properties (body = rest of datagram when there is no
/// Content-Length).
pub fn message(m: &SipMessage, datagram: bool) {
    let len = m.buffer().len();
    // ---- spans stay inside the buffer and in order
    let sl = m.start_line_span();
    assert!(sl.start <= sl.end && sl.end as usize <= len);
    let body = m.body_span();
    assert!(body.start <= body.end && body.end as usize <= len);
    assert!(m.headers_end() <= body.start as usize);
    for h in m.headers() {
        assert!(h.line.start <= h.value.start && h.value.start <= h.value.end);
        assert!(h.value.end <= h.line.end && h.line.end as usize <= m.headers_end());
        let _ = (m.header_name_bytes(h), m.value(h));
    }
    // ---- start line
    let _ = (
        m.start_line_bytes(),
        m.version(),
        m.status(),
        m.reason(),
        m.defect(),
    );
    let _ = m.start().clone();
    if let Some(meth) = m.method() {
        let _ = (meth.as_bytes(), meth.as_str(), meth.to_string());
    }
    if let Some(Ok(u)) = m.request_uri().map(Uri::parse) {
        uri(&u);
    }
    let _ = format!("{m:?}");
    // ---- generic header access
    // every header name the bridge knows, and `Other`
    for n in HeaderName::ALL.iter().copied().chain([HeaderName::Other]) {
        let _ = (m.header(n), m.header_value(n), m.count(n));
        for s in m.values(n) {
            assert!(s.start <= s.end && s.end as usize <= len);
            let _ = m.slice(s);
        }
        let _ = m.headers_named(n).count();
    }
    let _ = (
        m.header_value_by_name("x-gs-vendor-tag"),
        m.header_value_by_name("via"),
    );
    // ---- typed views
    let _ = (m.top_via(), m.top_via_span(), m.branch(), m.call_id());
    for v in m.vias().flatten() {
        let _ = (
            v.branch(),
            v.received(),
            v.rport(),
            v.maddr(),
            v.has_rfc3261_branch(),
            v.sent_by(),
        );
        let _ = v.params.iter().count();
    }
    if let Some(Ok(c)) = m.cseq() {
        let _ = (c.seq, c.method);
    }
    for na in [m.from(), m.to()].into_iter().flatten().flatten() {
        name_addr(&na);
    }
    let _ = (m.from_tag(), m.to_tag(), m.is_wildcard_contact());
    for (span, c) in m.contacts() {
        assert!(span.end as usize <= len);
        if let Ok(c) = c {
            name_addr(&c);
            let _ = c.params.get("expires");
        }
    }
    for n in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
        for s in m.values(n) {
            if let Ok(na) = NameAddr::parse(m.slice(s)) {
                name_addr(&na);
            }
        }
    }
    if let Some(Ok(e)) = m.event() {
        let _ = (e.id(), e.is("dialog"), e.params.iter().count());
    }
    let _ = (m.expires(), m.max_forwards());
    if let Some(Ok(s)) = m.subscription_state() {
        let _ = (
            s.state,
            s.expires,
            s.reason,
            s.retry_after,
            s.reason_is("timeout"),
        );
        let _ = s.params.iter().count();
    }
    let _ = (
        m.content_type(),
        m.user_agent(),
        m.accepts("application/dialog-info+xml"),
    );
    for n in [
        HeaderName::Supported,
        HeaderName::Require,
        HeaderName::ProxyRequire,
    ] {
        let _ = m.option_tags(n).count();
    }
    let _ = (
        validate::unsupported_proxy_require(m),
        validate::has_broadcast_via(m),
    );
    let _ = m.message_bytes();

    // ---- forwarding unchanged is byte-for-byte
    let unchanged = Editor::new(m).finish();
    assert_eq!(
        unchanged,
        m.message_bytes(),
        "Editor without edits changed the message"
    );
    if datagram {
        assert!(SipMessage::parse(unchanged).is_ok());
    }

    // ---- judge, then edit like a proxy would
    let verdict = if m.is_request() {
        validate::check_request(m)
    } else {
        validate::check_response(m)
    };
    if m.is_request() {
        proxy_request_edits(m, verdict.is_ok());
        // Whatever the verdict, an answer can be built and parses back.
        let code = verdict.err().map_or(200, |d| d.code);
        let resp = MessageBuilder::response_to(m, code, "Fuzz Reason", Some("fuzztag")).finish();
        let r = SipMessage::parse(resp).expect("a built response parses");
        assert_eq!(r.status(), Some(code));
        assert_eq!(r.count(HeaderName::Via), m.count(HeaderName::Via));
        assert_eq!(r.call_id(), m.call_id());
    } else {
        response_edits(m, verdict.is_ok());
    }
}

/// The edits a proxy makes to a request, then re-parse. For a request that passed
/// [`validate::check_request`] the result must pass too and carry the edits.
fn proxy_request_edits(m: &SipMessage, valid: bool) {
    let mut e = Editor::new(m);
    e.push_via(OUR_VIA)
        .set_max_forwards(69)
        .pop_route()
        .push_record_route(b"<sip:127.0.0.1:5060;lr>")
        .ensure_content_length();
    let out = e.finish();
    let Ok(m2) = SipMessage::parse(out.clone()) else {
        assert!(!valid, "edited valid request no longer parses");
        return;
    };
    if valid {
        assert_eq!(
            validate::check_request(&m2),
            Ok(()),
            "edited valid request: {:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(m2.branch(), Some(OUR_BRANCH));
        assert_eq!(m2.max_forwards(), Some(Ok(69)));
        assert_eq!(m2.body(), m.body());
        assert_eq!(m2.call_id(), m.call_id());
        assert_eq!(
            m2.values(HeaderName::Via).count(),
            m.values(HeaderName::Via).count() + 1
        );
        assert_eq!(
            m2.values(HeaderName::Route).count(),
            m.values(HeaderName::Route).count().saturating_sub(1)
        );
        assert_eq!(m2.count(HeaderName::ContentLength), 1);
        assert_eq!(m2.method(), m.method());
        assert_eq!(m2.request_uri(), m.request_uri());
        // and back: popping our Via gives the original Via list
        let mut e = Editor::new(&m2);
        e.pop_via();
        let m3 = SipMessage::parse(e.finish()).expect("pop_via keeps it parsable");
        let orig: Vec<&[u8]> = m.values(HeaderName::Via).map(|s| m.slice(s)).collect();
        let back: Vec<&[u8]> = m3.values(HeaderName::Via).map(|s| m3.slice(s)).collect();
        assert_eq!(orig, back);
    }
    // exercise the edited message too, without recursing into more edits
    let _ = (
        m2.top_via(),
        m2.vias().count(),
        m2.cseq(),
        m2.contacts().count(),
    );
    let _ = validate::check_request(&m2);
}

/// A proxy forwarding a response pops its own (top) Via.
fn response_edits(m: &SipMessage, valid: bool) {
    let mut e = Editor::new(m);
    e.pop_via().ensure_content_length();
    let out = e.finish();
    let m2 = SipMessage::parse(out).expect("a response stays a response");
    if valid {
        assert_eq!(
            m2.values(HeaderName::Via).count() + 1,
            m.values(HeaderName::Via).count()
        );
        assert_eq!(m2.status(), m.status());
        assert_eq!(m2.body(), m.body());
        assert_eq!(m2.cseq(), m.cseq());
    }
    let _ = validate::check_response(&m2);
}

fn name_addr(na: &NameAddr<'_>) {
    let _ = (
        na.display,
        na.tag(),
        na.params.iter().count(),
        na.params.has("lr"),
    );
    if let Ok(u) = na.parsed_uri() {
        uri(&u);
    }
}

fn uri(u: &Uri<'_>) {
    let _ = (
        u.is_sip(),
        u.host_str(),
        u.user_str(),
        u.has_lr(),
        u.transport(),
        u.maddr(),
    );
    let _ = (
        u.host_unbracketed(),
        u.params.iter().count(),
        u.headers,
        u.port,
    );
}
