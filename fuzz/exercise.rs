//! Drives one input through everything the SIP layer offers: framing, every typed
//! accessor, validation, the editor and the response builder, and checks the
//! properties that must hold for any input; likewise for the typed headers, the
//! presence documents, the profile and config loaders, and the whole endpoint fed
//! a sequence of events with restarts from its store. Shared by the cargo-fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the no-panic sweep in `tests/rfc4475.rs`, so that
//! both exercise exactly the same surface.
//!
//! Any panic, or a failed `assert!`, is a bug in the SIP layer: network input must
//! never crash the bridge.

#![allow(dead_code)]

use blf_bridge::config::{Config, EmptyPresence};
use blf_bridge::endpoint::{Endpoint, LocalAddrs};
use blf_bridge::flow::{ConnId, Flow};
use blf_bridge::presence::{
    DialogStream, PickupInfo, PresenceStatus, PresenceStream, TargetView, merge, parse_dialog_info,
    parse_pidf,
};
use blf_bridge::sip::{
    CSeq, Editor, Event, HeaderName, MessageBuilder, NameAddr, SipMessage, StreamFramer,
    StreamItem, SubState, Uri, Via, validate,
};
use blf_bridge::store::Snapshot;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

// ===================================================================== typed headers

/// Typed header values (`blf_bridge::sip::header`): the input as a Via, a
/// name-addr (From/To/Contact/Route), a CSeq, an Event, a Subscription-State and a
/// URI. Every slice a view hands out lies inside the input.
pub fn headers(data: &[u8]) {
    let inside = |s: &[u8]| {
        let (b, e) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
        let p = s.as_ptr() as usize;
        assert!(
            s.is_empty() || (p >= b && p + s.len() <= e),
            "slice outside the input"
        );
    };
    if let Ok(v) = Via::parse(data) {
        inside(v.host.as_bytes());
        inside(v.transport.as_bytes());
        inside(v.params.raw);
        for b in [v.branch(), v.received(), v.maddr()].into_iter().flatten() {
            inside(b);
        }
        let _ = (v.rport(), v.has_rfc3261_branch(), v.sent_by(), v.port);
        params(&v.params, &inside);
    }
    if let Ok(na) = NameAddr::parse(data) {
        inside(na.uri);
        inside(na.params.raw);
        if let Some(d) = na.display {
            inside(d);
        }
        name_addr(&na);
        params(&na.params, &inside);
    }
    if let Ok(c) = CSeq::parse(data) {
        inside(c.method);
        let _ = c.seq;
    }
    if let Ok(e) = Event::parse(data) {
        inside(e.package);
        let _ = (e.id(), e.is("dialog"), e.is("presence"));
        params(&e.params, &inside);
    }
    if let Ok(s) = SubState::parse(data) {
        let _ = (s.state, s.expires, s.retry_after, s.reason_is("timeout"));
        if let Some(r) = s.reason {
            inside(r);
        }
        params(&s.params, &inside);
    }
    if let Ok(u) = Uri::parse(data) {
        inside(u.raw);
        inside(u.host);
        for s in [u.user, u.headers].into_iter().flatten() {
            inside(s);
        }
        uri(&u);
        params(&u.params, &inside);
    }
    let _ = blf_bridge::sip::parse_delta(data);
}

fn params(p: &blf_bridge::sip::Params<'_>, inside: &dyn Fn(&[u8])) {
    for (name, value) in p.iter() {
        inside(name);
        if let Some(v) = value {
            inside(v);
        }
    }
    let _ = (p.get("tag"), p.has("lr"), p.value("expires"));
    let mut out = Vec::new();
    p.write_except(&["tag", "branch"], &mut out);
}

// ===================================================================== presence documents

const ENTITY: &str = "sip:1002@pbx.test";

fn builtin_profiles() -> &'static blf_bridge::profile::ProfileSet {
    static P: std::sync::OnceLock<blf_bridge::profile::ProfileSet> = std::sync::OnceLock::new();
    P.get_or_init(blf_bridge::profile::ProfileSet::builtin)
}

/// A view rendered with a built-in profile (each pair checked once): what the
/// bridge writes must be what a dialog-info parser (its own) accepts, with the
/// entity it was given.
fn render_checked(profile: &blf_bridge::profile::Profile, view: &TargetView) {
    // Rendering is a pure function of (profile, view): a pair already checked
    // needs no second check. Most fuzz inputs merge to one of a few views, and
    // the check (render, then parse three versions back) dominated the run time.
    thread_local! {
        static CHECKED: std::cell::RefCell<std::collections::HashSet<(String, String)>> =
            std::cell::RefCell::new(std::collections::HashSet::new());
    }
    let key = (profile.name().to_string(), format!("{view:?}"));
    if CHECKED.with(|c| c.borrow().contains(&key)) {
        return;
    }
    render_checked_uncached(profile, view);
    CHECKED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 100_000 {
            c.clear();
        }
        c.insert(key);
    });
}

/// [`render_checked`] without the cache (for profiles made by the fuzzer).
fn render_checked_uncached(profile: &blf_bridge::profile::Profile, view: &TargetView) {
    let r = blf_bridge::profile::render(profile, ENTITY, view);
    let _ = r.subscription_state().map(|s| s.to_string());
    if let Some(doc) = r.document() {
        for v in [0, 1, u32::MAX] {
            let text = doc.with_version(v);
            assert_eq!(doc.len_with_version(v), text.len());
            let back = parse_dialog_info(text.as_bytes()).unwrap_or_else(|e| {
                panic!(
                    "profile {} rendered a document its parser rejects ({e:?}): {text}",
                    profile.name()
                )
            });
            assert_eq!(back.version, Some(v), "version lost: {text}");
            assert_eq!(back.entity.as_deref(), Some(ENTITY), "entity lost: {text}");
        }
    }
}

/// An RFC 4235 dialog-info body from the upstream: parsed, applied to a dialog
/// stream (twice: the same version again changes nothing), merged with each
/// presence state and rendered for every shipped profile.
pub fn dialog_info(data: &[u8]) {
    let parsed = parse_dialog_info(data);
    let mut ds = DialogStream::new();
    let applied = ds.apply_body(data);
    // (a blank body is "known, no calls" to the stream, an error to the parser)
    assert!(
        parsed.is_err() || applied.is_ok(),
        "parser and stream disagree"
    );
    let Ok(doc) = parsed else { return };
    let _ = format!("{doc:?}");
    let before = ds.dialogs().to_vec();
    let _ = ds.apply_body(data);
    assert_eq!(
        before,
        ds.dialogs(),
        "the same document again changed the stream"
    );
    let _ = (ds.is_known(), ds.version());
    for ps in [
        PresenceStream::new(),
        PresenceStream::from_status(PresenceStatus::Offline),
        PresenceStream::from_status(PresenceStatus::Online { activity: None }),
    ] {
        let view = merge(&ds, &ps);
        for p in builtin_profiles().iter() {
            render_checked(p, &view);
        }
    }
    ds.new_subscription();
    let _ = ds.apply_doc(doc);
    ds.set_unknown();
}

/// A PIDF (RFC 3863/4480) body from the upstream: parsed, its status, applied to
/// a presence stream (both empty-body policies), merged and rendered.
pub fn pidf(data: &[u8]) {
    let parsed = parse_pidf(data);
    if let Ok(doc) = &parsed {
        let _ = (doc.status(), format!("{doc:?}"));
    }
    for empty in [EmptyPresence::Offline, EmptyPresence::Unknown] {
        let mut ps = PresenceStream::new();
        let r = ps.apply_body(data, empty);
        if let Ok(doc) = &parsed {
            assert!(r.is_ok());
            assert_eq!(ps.status(), &doc.status());
        }
        let view = merge(&DialogStream::new(), &ps);
        if r.is_err() {
            assert_eq!(view.state, blf_bridge::presence::MergedState::Unknown);
        }
        for p in builtin_profiles().iter() {
            render_checked(p, &view);
        }
    }
}

// ===================================================================== loaders

/// A device-model profile file (`profiles/*.toml`). One accepted is rendered for
/// every state, with and without call details, and must produce documents its
/// own parser accepts.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = blf_bridge::profile::Profile::parse(text, "fuzz.toml") else {
        return;
    };
    let _ = (
        p.name(),
        p.mode(),
        p.offline(),
        p.user_agent_patterns().count(),
    );
    let _ = p.matches(b"Grandstream GXP2170 1.0.11.23");
    let call = PickupInfo {
        call_id: Some("abc@1.2.3.4".into()),
        local_tag: Some("lt".into()),
        remote_tag: Some("rt".into()),
        direction: Some(blf_bridge::presence::Direction::Recipient),
        remote_identity: Some("sip:1003@pbx.test".into()),
        remote_display: Some("Alice <&> \"Bob\"".into()),
        remote_target: Some("sip:1003@127.0.0.1:5062".into()),
        local_identity: Some(ENTITY.into()),
        local_target: Some("sip:1002@127.0.0.1:5064".into()),
    };
    for s in blf_bridge::presence::MergedState::ALL {
        let _ = p.rule(s);
        // (a fuzzed profile is new every time: never from the cache of checked pairs)
        render_checked_uncached(&p, &TargetView::new(s));
        render_checked_uncached(
            &p,
            &TargetView {
                state: s,
                call: Some(call.clone()),
            },
        );
    }
}

/// The configuration file. One accepted must make an endpoint that starts
/// (timers, keep-alive) without panicking.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |k: &str| k.len().is_multiple_of(2).then(|| format!("secret-{k}"));
    let Ok(cfg) = Config::parse(text, "fuzz.toml", &env) else {
        return;
    };
    let _ = format!("{cfg:?}");
    let now = Instant::now();
    let local = LocalAddrs {
        udp: cfg.listen.udp,
        tcp: cfg.listen.tcp,
        advertise_host: "127.0.0.1".into(),
    };
    let upstream = addr("127.0.0.1:5070");
    // the built-in profiles once (parsing them is not what this target tests,
    // and it cost more than the rest of an execution)
    let profiles = endpoint_shared().1.clone();
    let mut ep = Endpoint::new(Arc::new(cfg), profiles, local, upstream, 1, now);
    ep.handle_timeout(now + Duration::from_secs(60));
    while ep.poll_transmit().is_some() {}
}

// ===================================================================== the whole endpoint

/// The configuration of the endpoint sequences.
pub const ENDPOINT_CONFIG: &str = r#"
[listen]
udp = "127.0.0.1:5060"
tcp = "127.0.0.1:5060"
[upstream]
proxy = "127.0.0.1:5070"
domain = "pbx.test"
keepalive = "options"
keepalive_interval = 30
[[account]]
user = "1001"
password = "pass1001"
"#;

fn endpoint_shared() -> &'static (Arc<Config>, Arc<blf_bridge::profile::ProfileSet>) {
    static S: std::sync::OnceLock<(Arc<Config>, Arc<blf_bridge::profile::ProfileSet>)> =
        std::sync::OnceLock::new();
    S.get_or_init(|| {
        let cfg = Config::parse(ENDPOINT_CONFIG, "fuzz.toml", &|_| None).expect("fuzz config");
        (
            Arc::new(cfg),
            Arc::new(blf_bridge::profile::ProfileSet::builtin()),
        )
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Chunks separated by `\0\0`.
pub fn split_chunks(d: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut s = 0;
    let mut i = 0;
    while i + 1 < d.len() {
        if d[i] == 0 && d[i + 1] == 0 {
            out.push(&d[s..i]);
            i += 2;
            s = i;
        } else {
            i += 1;
        }
    }
    out.push(&d[s..]);
    out
}

/// One sans-IO `Endpoint` (with a state store kept in memory) fed a sequence of
/// events. Input: chunks separated by `\0\0`; a chunk's first byte `op` picks
/// the event, `op % 8`:
///
/// | op | event |
/// |----|-------|
/// | 0 | the rest is a datagram from phone A (127.0.0.1:40000) |
/// | 1 | a datagram from the upstream (127.0.0.1:5070) |
/// | 2 | bytes on phone B's TCP connection (127.0.0.1:40002) |
/// | 3 | time passes: `op * 97 ms`, plus the rest's first byte in seconds |
/// | 4 | the bridge restarts from its store (pending transmits lost) |
/// | 5 | a datagram from phone C (127.0.0.1:40004) |
/// | 6 | phone B's TCP connection closes |
/// | 7 | the upstream stops answering the bridge's OPTIONS, or starts again |
///
/// The upstream answers the bridge's keep-alive OPTIONS with a 200 until told
/// otherwise (op 7): with a dead upstream the endpoint probes every 2 s, and
/// minutes of simulated time would be spent mostly on probes and their
/// retransmissions instead of on the input. Nothing may panic; every transmit is non-empty and goes to a loopback peer;
/// every batch the endpoint persists applies to the store, and the store
/// restores into a new endpoint. Returns the number of transmits.
pub fn endpoint_sequence(data: &[u8]) -> usize {
    let (cfg, profiles) = endpoint_shared();
    let mut now = Instant::now();
    let local = LocalAddrs {
        udp: Some(addr("127.0.0.1:5060")),
        tcp: Some(addr("127.0.0.1:5060")),
        advertise_host: "127.0.0.1".into(),
    };
    let upstream_addr = addr("127.0.0.1:5070");
    let new_endpoint = |seed: u64, now: Instant| {
        let mut ep = Endpoint::new(
            cfg.clone(),
            profiles.clone(),
            local.clone(),
            upstream_addr,
            seed,
            now,
        );
        ep.enable_persistence();
        ep
    };
    let mut ep = new_endpoint(7, now);
    let mut store = Snapshot::default();
    let mut restarts = 0u64;
    let mut sent = 0usize;
    let mut framer = StreamFramer::new();
    let phone_a = Flow::udp(addr("127.0.0.1:40000"));
    let phone_c = Flow::udp(addr("127.0.0.1:40004"));
    let upstream = Flow::udp(upstream_addr);
    let phone_b = Flow::tcp(addr("127.0.0.1:40002"), Some(ConnId(1)));
    let mut answers = true;
    for chunk in split_chunks(data) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        match op % 8 {
            0 => ep.handle_datagram(phone_a, Bytes::copy_from_slice(rest), now),
            1 => ep.handle_datagram(upstream, Bytes::copy_from_slice(rest), now),
            5 => ep.handle_datagram(phone_c, Bytes::copy_from_slice(rest), now),
            2 => {
                framer.push(rest);
                loop {
                    match framer.next_item() {
                        Ok(Some(StreamItem::Message(m))) => ep.handle_message(phone_b, m, now),
                        Ok(Some(StreamItem::Ping)) => ep.handle_keepalive_ping(phone_b),
                        Ok(Some(StreamItem::Pong)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            ep.connection_closed(ConnId(1), now);
                            framer = StreamFramer::new();
                            break;
                        }
                    }
                }
            }
            4 => {
                // a crash: what was not taken is lost; the key file survives
                restarts += 1;
                let key = ep.proxy().token_key();
                ep = new_endpoint(7 + restarts, now);
                ep.set_token_key(key);
                ep.restore(&store, now);
                framer = StreamFramer::new();
            }
            6 => {
                ep.connection_closed(ConnId(1), now);
                framer = StreamFramer::new();
            }
            7 => answers = !answers,
            _ => {
                let secs = rest.first().copied().unwrap_or(0) as u64;
                let end = now + Duration::from_millis(op as u64 * 97) + Duration::from_secs(secs);
                while let Some(t) = ep.poll_timeout() {
                    if t > end {
                        break;
                    }
                    now = now.max(t);
                    ep.handle_timeout(now);
                    sent += drain(&mut ep, &mut store, answers.then_some(upstream), now);
                }
                now = end;
                ep.handle_timeout(now);
            }
        }
        sent += drain(&mut ep, &mut store, answers.then_some(upstream), now);
    }
    sent
}

/// Everything the endpoint sends and persists; with `upstream`, the upstream
/// answers each OPTIONS sent to it with a 200 (fed back at `now`).
fn drain(ep: &mut Endpoint, store: &mut Snapshot, upstream: Option<Flow>, now: Instant) -> usize {
    let mut n = 0;
    loop {
        let mut answers = Vec::new();
        while let Some(t) = ep.poll_transmit() {
            assert!(!t.data.is_empty(), "empty transmit to {}", t.flow);
            assert!(
                t.flow.remote.ip().is_loopback(),
                "traffic to a non-loopback peer: {}",
                t.flow
            );
            if let Some(up) = upstream.filter(|u| u.remote == t.flow.remote)
                && let Some(ok) = answer_options(&t.data)
            {
                answers.push((up, ok));
            }
            n += 1;
        }
        while let Some(b) = ep.poll_persist() {
            store.apply(&b);
        }
        if answers.is_empty() {
            return n;
        }
        for (up, ok) in answers {
            ep.handle_datagram(up, ok, now);
        }
    }
}

/// The upstream's 200 to an OPTIONS (its Via, From, To with a tag, Call-ID
/// and CSeq copied), or None for anything else.
fn answer_options(req: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(req).ok()?;
    if !text.starts_with("OPTIONS ") {
        return None;
    }
    let head = text.split("\r\n\r\n").next()?;
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in head.split("\r\n").skip(1) {
        let name = line.split(':').next()?.trim().to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {}
            "to" | "t" if !line.contains("tag=") => {
                out += line;
                out += ";tag=up\r\n";
                continue;
            }
            "to" | "t" => {}
            _ => continue,
        }
        out += line;
        out += "\r\n";
    }
    out += "Content-Length: 0\r\n\r\n";
    Some(Bytes::from(out))
}
