//! Parsing a message: the start line and the header section indexed into spans
//! over the original bytes (`parse_head`), completed into a [`SipMessage`] once
//! the body is delimited.
//!
//! The parser is deliberately *lenient in framing and strict in judgement*: when a
//! message is framable but broken (bad start line, bad Content-Length, a header line
//! without a colon, …) it is still returned, with its first [`Defect`] recorded.
//! Only input that is not SIP at all is an error ([`ParseError`]).

use super::grammar::{is_token_char, trim_lws};
use super::header::HeaderName;
use super::message::{
    Defect, Framing, Header, MAX_MESSAGE_SIZE, Method, ParseError, SipMessage, Span, StartLine,
};
use bytes::Bytes;

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Is the line starting at `pos` empty (`LF` or `CRLF`), i.e. the blank line that
/// ends the header section? Returns the offset of the first byte after it.
#[inline]
fn blank_line_at(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos) {
        Some(b'\n') => Some(pos + 1),
        Some(b'\r') if b.get(pos + 1) == Some(&b'\n') => Some(pos + 2),
        _ => None,
    }
}

/// The header section of a message, indexed: everything but the body. The stream
/// framer parses this once to learn the Content-Length, then completes it with
/// [`SipMessage::from_head`] when the body has arrived, so that framing and parsing
/// can never disagree about where a message ends.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    start: StartLine,
    start_line: Span,
    version: Span,
    headers: Vec<Header>,
    headers_end: u32,
    /// First body byte (after the blank line); the end of the input when the
    /// header section is incomplete.
    body_start: u32,
    /// The first Content-Length value, `Err` when it is not a number.
    pub content_length: Option<Result<usize, ()>>,
    /// A later Content-Length header disagrees with the first one (or is not a
    /// number): the message cannot be framed on a stream (RFC 4475 mcl01).
    pub content_length_conflict: bool,
    defect: Option<Defect>,
}

impl Head {
    /// Length of the header section including the blank line.
    pub fn len(&self) -> usize {
        self.body_start as usize
    }
}

#[inline]
fn note(slot: &mut Option<Defect>, d: Defect) {
    if slot.is_none() {
        *slot = Some(d);
    }
}

/// Index the start line and header section of `b`. With [`Framing::Stream`] an
/// incomplete header section is [`ParseError::Incomplete`]; a datagram is indexed
/// as far as it goes, with a defect.
pub(crate) fn parse_head(b: &[u8], framing: Framing) -> Result<Head, ParseError> {
    if b.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::TooLarge);
    }
    // Skip leading CRLFs (keep-alives, RFC 3261 §7.5 allows ignoring them).
    let mut p = 0;
    while p < b.len() && (b[p] == b'\r' || b[p] == b'\n') {
        p += 1;
    }
    if p == b.len() {
        return Err(ParseError::Empty);
    }
    let mut defect: Option<Defect> = None;

    // ---- start line
    let line_end = match memchr::memchr(b'\n', &b[p..]) {
        Some(i) => p + i + 1,
        None => b.len(),
    };
    let mut content_end = line_end;
    while content_end > p && (b[content_end - 1] == b'\n' || b[content_end - 1] == b'\r') {
        content_end -= 1;
    }
    let line = &b[p..content_end];
    let (start, version) = parse_start_line(line, p, &mut defect)?;
    let start_line = Span::new(p, line_end);

    // ---- headers, one line at a time up to the blank line (CRLF or bare LF)
    let mut headers: Vec<Header> = Vec::with_capacity(24);
    // first problem in the header lines; reported after a missing end of the
    // header section, which is the real problem of a truncated message
    let mut hdefect: Option<Defect> = None;
    // Whether a continuation line extends the last header: not after a malformed
    // line, whose continuation lines belong to it and are ignored with it.
    let mut open = false;
    let mut pos = line_end;
    // (offset of the blank line, first body byte); the end of the input when the
    // header section is not terminated
    let mut end: Option<(usize, usize)> = None;
    // the start line must end in LF for a header section to follow
    let terminated = line_end > p && b[line_end - 1] == b'\n';
    while terminated && pos < b.len() {
        if let Some(body) = blank_line_at(b, pos) {
            end = Some((pos, body));
            break;
        }
        let nl = memchr::memchr(b'\n', &b[pos..]).map_or(b.len(), |i| pos + i + 1);
        let mut vend = nl;
        while vend > pos && (b[vend - 1] == b'\n' || b[vend - 1] == b'\r') {
            vend -= 1;
        }
        if is_ws(b[pos]) {
            // continuation of the previous header (folding)
            match headers.last_mut() {
                Some(h) if open => {
                    // a value that was empty so far starts on this line
                    if h.value.is_empty() {
                        let mut vs = pos;
                        while vs < vend && is_ws(b[vs]) {
                            vs += 1;
                        }
                        h.value = Span::new(vs, vend.max(vs));
                    } else if vend > h.value.end as usize {
                        h.value.end = vend as u32;
                    }
                    h.line.end = nl as u32;
                }
                Some(_) => {}
                None => note(&mut hdefect, Defect::bad("Whitespace Before First Header")),
            }
            pos = nl;
            continue;
        }
        // the name: token characters up to the colon (optionally followed by
        // blanks, RFC 3261 HCOLON)
        let mut name_end = pos;
        while name_end < vend && is_token_char(b[name_end]) {
            name_end += 1;
        }
        let mut colon = name_end;
        while colon < vend && is_ws(b[colon]) {
            colon += 1;
        }
        if colon >= vend || b[colon] != b':' {
            match memchr::memchr(b':', &b[pos..vend]) {
                // a colon after non-token characters: a header with a bad name
                Some(i) => {
                    colon = pos + i;
                    name_end = colon;
                    while name_end > pos && is_ws(b[name_end - 1]) {
                        name_end -= 1;
                    }
                    note(&mut hdefect, Defect::bad("Malformed Header Name"));
                }
                None => {
                    note(&mut hdefect, Defect::bad("Malformed Header Line"));
                    open = false;
                    pos = nl;
                    continue;
                }
            }
        } else if name_end == pos {
            note(&mut hdefect, Defect::bad("Malformed Header Name"));
        }
        let mut vs = colon + 1;
        while vs < vend && is_ws(b[vs]) {
            vs += 1;
        }
        headers.push(Header {
            name: HeaderName::parse(&b[pos..name_end]),
            name_span: Span::new(pos, name_end),
            value: Span::new(vs, vend.max(vs)),
            line: Span::new(pos, nl),
        });
        open = true;
        pos = nl;
    }
    let (headers_end, body_start) = match end {
        Some(e) => e,
        None => {
            if framing == Framing::Stream {
                return Err(ParseError::Incomplete);
            }
            note(&mut defect, Defect::bad("Missing End of Header Section"));
            (b.len(), b.len())
        }
    };
    if let Some(d) = hdefect {
        note(&mut defect, d);
    }
    // Content-Length (after folding is resolved)
    let mut content_length: Option<Result<usize, ()>> = None;
    let mut content_length_conflict = false;
    for h in headers
        .iter()
        .filter(|h| h.name == HeaderName::ContentLength)
    {
        let v = parse_content_length(b.get(h.value.range()).unwrap_or_default()).ok_or(());
        match content_length {
            None => content_length = Some(v),
            Some(first) => {
                note(&mut defect, Defect::bad("Multiple Content-Length Values"));
                if first != v || v.is_err() {
                    content_length_conflict = true;
                }
            }
        }
    }
    Ok(Head {
        start,
        start_line,
        version,
        headers,
        headers_end: headers_end as u32,
        body_start: body_start as u32,
        content_length,
        content_length_conflict,
        defect,
    })
}

impl SipMessage {
    /// Parse one message from a UDP datagram.
    pub fn parse(buf: Bytes) -> Result<SipMessage, ParseError> {
        Self::parse_with(buf, Framing::Datagram)
    }

    /// Parse one message. With [`Framing::Stream`] `buf` must hold exactly one frame
    /// as cut by [`crate::sip::StreamFramer`].
    pub fn parse_with(buf: Bytes, framing: Framing) -> Result<SipMessage, ParseError> {
        let head = parse_head(&buf, framing)?;
        Ok(Self::from_head(buf, head, framing))
    }

    /// Complete a [`Head`] indexed over the start of `buf` into a message: the body
    /// is delimited by Content-Length, or (datagrams only) is the rest of `buf`.
    pub(crate) fn from_head(buf: Bytes, head: Head, framing: Framing) -> SipMessage {
        let Head {
            start,
            start_line,
            version,
            headers,
            headers_end,
            body_start,
            content_length,
            content_length_conflict: _,
            mut defect,
        } = head;
        let body_start = (body_start as usize).min(buf.len());
        let available = buf.len() - body_start;
        let body_len = match content_length {
            Some(Ok(n)) if n <= available => n,
            Some(Ok(_)) => {
                note(&mut defect, Defect::bad("Content-Length Exceeds Message"));
                available
            }
            Some(Err(())) => {
                note(&mut defect, Defect::bad("Malformed Content-Length"));
                if framing == Framing::Stream {
                    0
                } else {
                    available
                }
            }
            // UDP: the rest of the datagram. TCP: the stream framer cut the frame
            // at the end of the header section, so the body is empty.
            None => available,
        };
        SipMessage {
            start,
            start_line,
            version,
            headers,
            headers_end,
            body: Span::new(body_start, body_start + body_len),
            defect,
            buf,
        }
    }
}

fn parse_content_length(v: &[u8]) -> Option<usize> {
    let (s, e) = trim_lws(v, 0, v.len());
    let v = &v[s..e];
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: usize = 0;
    for &d in v {
        n = n.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    Some(n)
}

/// Parse the start line `line` (without terminator) found at offset `off`.
fn parse_start_line(
    line: &[u8],
    off: usize,
    defect: &mut Option<Defect>,
) -> Result<(StartLine, Span), ParseError> {
    let mut note = |d: Defect| {
        if defect.is_none() {
            *defect = Some(d);
        }
    };
    // ---- Status-Line: SIP-Version SP Status-Code SP Reason-Phrase
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::NotSip)?;
        let version = Span::new(off, off + sp1);
        if !line[..sp1].eq_ignore_ascii_case(b"SIP/2.0") {
            note(Defect {
                code: 505,
                reason: "Version Not Supported",
            });
        }
        let rest = &line[sp1 + 1..];
        let code_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let after = rest.get(code_len).copied();
        if code_len != 3 || !(after.is_none() || after == Some(b' ')) {
            // bigcode: "4294967301" - not a Status-Code
            note(Defect::bad("Malformed Status-Line"));
            let code = if code_len >= 3 { 999 } else { 0 };
            return Ok((
                StartLine::Response {
                    code,
                    reason: Span::new(off + line.len(), off + line.len()),
                },
                version,
            ));
        }
        let code =
            (rest[0] - b'0') as u16 * 100 + (rest[1] - b'0') as u16 * 10 + (rest[2] - b'0') as u16;
        if !(100..=699).contains(&code) {
            note(Defect::bad("Status-Code Out of Range"));
        }
        let reason_start = (sp1 + 1 + 3 + 1).min(line.len());
        return Ok((
            StartLine::Response {
                code,
                reason: Span::new(off + reason_start, off + line.len()),
            },
            version,
        ));
    }
    // ---- Request-Line: Method SP Request-URI SP SIP-Version
    let sp1 = match memchr::memchr(b' ', line) {
        Some(i) if i > 0 => i,
        _ => return Err(ParseError::NotSip),
    };
    let method_bytes = &line[..sp1];
    if !method_bytes.iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::NotSip);
    }
    // The version is the last space-separated word (trailing spaces, as in RFC 4475
    // trws, are skipped); it must look like SIP/x.y for this to be SIP at all.
    let mut vend = line.len();
    while vend > sp1 + 1 && line[vend - 1] == b' ' {
        vend -= 1;
    }
    let vstart = memchr::memrchr(b' ', &line[..vend]).map_or(0, |i| i + 1);
    if vstart <= sp1 {
        return Err(ParseError::NotSip);
    }
    let version_bytes = &line[vstart..vend];
    if version_bytes.len() < 4 || !version_bytes[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::NotSip);
    }
    let mut ustart = sp1 + 1;
    let mut uend = vstart - 1; // >= sp1 because vstart > sp1
    if ustart > uend {
        // `Method SP SIP/2.0`: no Request-URI at all (an empty span at the space)
        note(Defect::bad("Missing Request-URI"));
        ustart = uend;
    }
    // extra whitespace anywhere in the Request-Line is malformed (lwsstart, trws)
    if vend != line.len() {
        note(Defect::bad("Trailing Whitespace in Request-Line"));
    }
    if line.get(ustart) == Some(&b' ') || (uend > 0 && line.get(uend - 1) == Some(&b' ')) {
        note(Defect::bad("Extra Whitespace in Request-Line"));
        while ustart < uend && line[ustart] == b' ' {
            ustart += 1;
        }
        while uend > ustart && line[uend - 1] == b' ' {
            uend -= 1;
        }
    }
    let uri = &line[ustart..uend];
    if uri.is_empty() {
        note(Defect::bad("Missing Request-URI"));
    } else if uri.iter().any(|&c| c == b' ' || c == b'\t') {
        note(Defect::bad("Whitespace in Request-URI"));
    } else if uri[0] == b'<' {
        note(Defect::bad("Request-URI in Angle Brackets"));
    }
    if !version_bytes.eq_ignore_ascii_case(b"SIP/2.0") {
        note(Defect {
            code: 505,
            reason: "Version Not Supported",
        });
    }
    Ok((
        StartLine::Request {
            method: Method::from_bytes(method_bytes),
            uri: Span::new(off + ustart, off + uend),
        },
        Span::new(off + vstart, off + vend),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    const SUB: &str = "SUBSCRIBE sip:1002@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.50:5062;branch=z9hG4bK1491280923;rport\r\n\
From: <sip:1001@pbx.example.com>;tag=1365906328\r\n\
To: <sip:1002@pbx.example.com>\r\n\
Call-ID: 1979306516-5062-1@BA.BG.B.FA\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Event: dialog\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn request_line_and_headers_are_indexed() {
        let m = msg(SUB);
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Subscribe));
        assert_eq!(m.request_uri(), Some(&b"sip:1002@pbx.example.com"[..]));
        assert_eq!(m.headers().len(), 7);
        assert_eq!(
            m.header_value(HeaderName::CallId),
            Some(&b"1979306516-5062-1@BA.BG.B.FA"[..])
        );
        assert_eq!(m.body(), b"");
        assert_eq!(m.defect(), None);
        assert_eq!(&m.message_bytes()[..], SUB.as_bytes());
    }

    #[test]
    fn folded_values_span_continuation_lines() {
        let m = msg(
            "OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n two\r\n\tthree\r\nX-Empty:\r\n  late\r\nl: 0\r\n\r\n",
        );
        assert_eq!(
            m.header_value(HeaderName::Subject),
            Some(&b"one\r\n two\r\n\tthree"[..])
        );
        assert_eq!(m.header_value_by_name("x-empty"), Some(&b"late"[..]));
        assert_eq!(m.defect(), None);
    }

    #[test]
    fn datagram_without_content_length_takes_the_rest() {
        let m = msg("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nv=0\r\n");
        assert_eq!(m.body(), b"v=0\r\n");
    }

    #[test]
    fn content_length_shorter_than_datagram_ignores_trailing_bytes() {
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nabcdef");
        assert_eq!(m.body(), b"ab");
        assert_eq!(
            &m.message_bytes()[..],
            b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nab"
        );
    }

    #[test]
    fn content_length_defects() {
        assert_eq!(
            msg("OPTIONS sip:a@b SIP/2.0\r\nl: 20\r\n\r\nabc")
                .defect()
                .unwrap()
                .reason,
            "Content-Length Exceeds Message"
        );
        assert_eq!(
            msg("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n")
                .defect()
                .unwrap()
                .reason,
            "Malformed Content-Length"
        );
        assert_eq!(
            msg("OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n")
                .defect()
                .unwrap()
                .reason,
            "Multiple Content-Length Values"
        );
    }

    #[test]
    fn status_line() {
        let m = msg("SIP/2.0 407 Proxy Authentication Required\r\nl: 0\r\n\r\n");
        assert_eq!(m.status(), Some(407));
        assert_eq!(m.reason(), Some(&b"Proxy Authentication Required"[..]));
        let m = msg("SIP/2.0 100 \r\n\r\n");
        assert_eq!(m.status(), Some(100));
        assert_eq!(m.reason(), Some(&b""[..]));
        let m = msg("SIP/2.0 100\r\n\r\n");
        assert_eq!(m.status(), Some(100));
        assert!(msg("SIP/2.0 4294967301 big\r\n\r\n").defect().is_some());
        assert!(msg("SIP/2.0 99 low\r\n\r\n").defect().is_some());
    }

    #[test]
    fn request_line_defects() {
        let d = |s: &str| msg(s).defect().map(|d| (d.code, d.reason));
        assert_eq!(d("INVITE  sip:a@b  SIP/2.0\r\n\r\n").unwrap().0, 400);
        assert_eq!(d("INVITE sip:a@b SIP/2.0  \r\n\r\n").unwrap().0, 400);
        assert_eq!(
            d("INVITE sip:a@b; lr SIP/2.0\r\n\r\n").unwrap().1,
            "Whitespace in Request-URI"
        );
        assert_eq!(
            d("INVITE <sip:a@b> SIP/2.0\r\n\r\n").unwrap().1,
            "Request-URI in Angle Brackets"
        );
        assert_eq!(d("OPTIONS sip:a@b SIP/7.0\r\n\r\n").unwrap().0, 505);
        assert_eq!(d("OPTIONS sip:a@b SIP/2.0\r\n\r\n"), None);
    }

    /// Regression (found by the RFC 4475 no-panic sweep): a Request-Line without a
    /// Request-URI used to slice `line[sp1 + 1..sp1]` and panic.
    #[test]
    fn request_line_without_uri_is_a_defect_not_a_panic() {
        for s in [
            "INVITE SIP/2.0\r\n\r\n",
            "INVITE SIP/2.0 \r\n\r\n",
            "INVITE SIP/2.0   \r\nVia: SIP/2.0/UDP h\r\n\r\n",
        ] {
            let m = msg(s);
            assert_eq!(
                m.defect().map(|d| (d.code, d.reason)),
                Some((400, "Missing Request-URI")),
                "{s:?}"
            );
            assert_eq!(m.request_uri(), Some(&b""[..]));
        }
        // still not SIP without a version word
        assert!(SipMessage::parse(Bytes::from_static(b"INVITE \r\n\r\n")).is_err());
        assert!(SipMessage::parse(Bytes::from_static(b"INVITE    \r\n\r\n")).is_err());
    }

    #[test]
    fn garbage_is_not_sip() {
        for g in [
            &b"hello world"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"\x00\x01\x02",
            b"INVITE\r\n\r\n",
        ] {
            assert!(
                SipMessage::parse(Bytes::copy_from_slice(g)).is_err(),
                "{g:?}"
            );
        }
        assert_eq!(
            SipMessage::parse(Bytes::from_static(b"\r\n\r\n")).unwrap_err(),
            ParseError::Empty
        );
    }

    #[test]
    fn header_line_without_colon_is_a_defect_but_framing_continues() {
        let m = msg(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\ngarbage\r\nCall-ID: x\r\n\r\n",
        );
        assert_eq!(m.defect().unwrap().reason, "Malformed Header Line");
        assert_eq!(m.header_value(HeaderName::CallId), Some(&b"x"[..]));
    }

    /// Regression (found by the RFC 4475 byte-flip sweep): continuation lines after
    /// a line without a colon were appended to the header *before* that line, so
    /// e.g. a folded Content-Length grew the garbage and framing changed.
    #[test]
    fn folding_after_a_malformed_line_does_not_extend_the_previous_header() {
        let m = msg(
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\ncseq8 0009\r\n  INVITE\r\nCall-ID: x\r\n\r\nabc",
        );
        assert_eq!(m.defect().unwrap().reason, "Malformed Header Line");
        assert_eq!(m.header_value(HeaderName::ContentLength), Some(&b"3"[..]));
        assert_eq!(m.body(), b"abc");
        assert_eq!(m.header_value(HeaderName::CallId), Some(&b"x"[..]));
        assert_eq!(m.headers().len(), 2);
    }

    #[test]
    fn truncated_header_section_is_named_before_line_defects() {
        // the last line is cut before its colon: the real problem is the missing end
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSe");
        assert_eq!(m.defect().unwrap().reason, "Missing End of Header Section");
        assert_eq!(m.header_value(HeaderName::CallId), Some(&b"x"[..]));
        assert_eq!(m.headers_end(), m.buffer().len());
        assert_eq!(m.body(), b"");
        // a start line alone has no header section at all
        let m = msg("OPTIONS sip:a@b SIP/2.0");
        assert_eq!(m.defect().unwrap().reason, "Missing End of Header Section");
        assert!(m.headers().is_empty());
        // but an empty header section is complete
        let m = msg("OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(m.defect(), None);
        assert!(m.headers().is_empty());
        assert_eq!(
            SipMessage::parse_with(
                Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n"),
                Framing::Stream
            )
            .unwrap_err(),
            ParseError::Incomplete
        );
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let m = msg("OPTIONS sip:a@b SIP/2.0\nCall-ID: x\nl: 1\n\nZ");
        assert_eq!(m.header_value(HeaderName::CallId), Some(&b"x"[..]));
        assert_eq!(m.body(), b"Z");
    }
}
