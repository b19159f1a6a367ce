//! The parsed SIP message: the original bytes plus an index of spans into them.
//!
//! Parsing ([`parse`](super::parse)) never copies header values and never rewrites
//! anything; every accessor returns a slice of the original datagram (or stream
//! frame). Typed views are computed on demand (see [`view`](super::view) and
//! [`header`](super::header)), so framing a message costs one pass over its header
//! section and one small `Vec`.
//!
//! A message that is framable but broken carries its first [`Defect`], so that the
//! caller can answer `400 Bad Request` with a reason phrase built from the
//! message's own Via/From/To/Call-ID/CSeq. Only input that is not SIP at all is an
//! error ([`ParseError`]).

use super::grammar::trim_lws;
use super::header::HeaderName;
use bytes::Bytes;
use std::fmt;

/// Largest message the bridge accepts (RFC 3261 §18.1.1 puts 1300 bytes as the UDP
/// comfort limit; 64 KiB is the UDP datagram bound and our hard limit on TCP too).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Byte range `start..end` into the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    #[inline]
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    #[inline]
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    #[inline]
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1); anything that is not a
/// method the bridge knows is kept as `Other` with its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Subscribe,
    Notify,
    Publish,
    Refer,
    Message,
    Info,
    Prack,
    Update,
    Other(Bytes),
}

impl Method {
    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"INFO" => Method::Info,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            other => Method::Other(Bytes::copy_from_slice(other)),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Register => b"REGISTER",
            Method::Options => b"OPTIONS",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Notify => b"NOTIFY",
            Method::Publish => b"PUBLISH",
            Method::Refer => b"REFER",
            Method::Message => b"MESSAGE",
            Method::Info => b"INFO",
            Method::Prack => b"PRACK",
            Method::Update => b"UPDATE",
            Method::Other(b) => b,
        }
    }

    /// The method as text (lossy for the rare non-UTF-8 extension method).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone)]
pub enum StartLine {
    Request { method: Method, uri: Span },
    Response { code: u16, reason: Span },
}

/// One header field as it appears in the message.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: HeaderName,
    /// The name as written (e.g. `v`, `VIA`, `Via`).
    pub name_span: Span,
    /// The value: from the first non-blank byte after the colon up to the end of the
    /// last continuation line, without the final line terminator. May contain folded
    /// line breaks (CRLF + whitespace) which are linear whitespace.
    pub value: Span,
    /// The whole field including continuation lines and the final line terminator;
    /// what an edit removes or inserts before.
    pub line: Span,
}

/// Something wrong with a framable message, with the status code and reason phrase
/// the bridge answers a request with (responses with a defect are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defect {
    pub code: u16,
    pub reason: &'static str,
}

impl Defect {
    pub const fn bad(reason: &'static str) -> Defect {
        Defect { code: 400, reason }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// Input that is not a SIP message at all (nothing to answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but whitespace.
    Empty,
    /// Over [`MAX_MESSAGE_SIZE`].
    TooLarge,
    /// The first line is neither a Request-Line nor a Status-Line.
    NotSip,
    /// Stream framing only: the header section is incomplete (need more bytes).
    Incomplete,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty message",
            ParseError::TooLarge => "message larger than 64 KiB",
            ParseError::NotSip => "not a SIP message (no Request-Line or Status-Line)",
            ParseError::Incomplete => "incomplete header section",
        })
    }
}

impl std::error::Error for ParseError {}

/// A parsed SIP message over its original bytes. Built by [`SipMessage::parse`]
/// (in [`parse`](super::parse)), the only writer of its fields.
#[derive(Clone)]
pub struct SipMessage {
    pub(super) buf: Bytes,
    pub(super) start: StartLine,
    /// The whole start line including its terminator.
    pub(super) start_line: Span,
    pub(super) version: Span,
    pub(super) headers: Vec<Header>,
    /// Offset of the blank line that ends the header section (where headers are appended).
    pub(super) headers_end: u32,
    pub(super) body: Span,
    pub(super) defect: Option<Defect>,
}

impl fmt::Debug for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipMessage")
            .field("start", &String::from_utf8_lossy(self.start_line_bytes()))
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .field("defect", &self.defect)
            .finish()
    }
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// UDP: a missing Content-Length means "the rest of the datagram" (RFC 3261
    /// §18.3); bytes after the Content-Length body are ignored.
    Datagram,
    /// TCP: Content-Length is mandatory; the message ends where it says.
    Stream,
}

impl SipMessage {
    // ---------------------------------------------------------------- accessors

    /// The bytes the message was parsed from (for a datagram, possibly followed by
    /// ignored trailing bytes; see [`SipMessage::message_bytes`]).
    #[inline]
    pub fn buffer(&self) -> &Bytes {
        &self.buf
    }

    /// Exactly the bytes of this message: start line through the end of the body.
    pub fn message_bytes(&self) -> Bytes {
        self.buf
            .slice(self.start_line.start as usize..self.body.end as usize)
    }

    #[inline]
    pub fn slice(&self, s: Span) -> &[u8] {
        self.buf.get(s.range()).unwrap_or(&[])
    }

    /// Zero-copy `Bytes` of a span.
    #[inline]
    pub fn slice_bytes(&self, s: Span) -> Bytes {
        if (s.end as usize) <= self.buf.len() && s.start <= s.end {
            self.buf.slice(s.range())
        } else {
            Bytes::new()
        }
    }

    #[inline]
    pub fn start(&self) -> &StartLine {
        &self.start
    }

    #[inline]
    pub fn start_line_span(&self) -> Span {
        self.start_line
    }

    pub fn start_line_bytes(&self) -> &[u8] {
        let s = self.slice(self.start_line);
        let mut e = s.len();
        while e > 0 && (s[e - 1] == b'\n' || s[e - 1] == b'\r') {
            e -= 1;
        }
        &s[..e]
    }

    #[inline]
    pub fn version(&self) -> &[u8] {
        self.slice(self.version)
    }

    #[inline]
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    #[inline]
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            _ => None,
        }
    }

    #[inline]
    pub fn request_uri(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.slice(*uri)),
            _ => None,
        }
    }

    #[inline]
    pub fn request_uri_span(&self) -> Option<Span> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(*uri),
            _ => None,
        }
    }

    #[inline]
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(self.slice(*reason)),
            _ => None,
        }
    }

    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    #[inline]
    pub fn headers_end(&self) -> usize {
        self.headers_end as usize
    }

    #[inline]
    pub fn body_span(&self) -> Span {
        self.body
    }

    #[inline]
    pub fn body(&self) -> &[u8] {
        self.slice(self.body)
    }

    /// The first problem found while framing, if any.
    #[inline]
    pub fn defect(&self) -> Option<Defect> {
        self.defect
    }

    /// The name of a header as written in the message.
    pub fn header_name_bytes(&self, h: &Header) -> &[u8] {
        self.slice(h.name_span)
    }

    /// Raw value of a header (may contain folded line breaks).
    #[inline]
    pub fn value(&self, h: &Header) -> &[u8] {
        self.slice(h.value)
    }

    /// First header with this name.
    #[inline]
    pub fn header(&self, name: HeaderName) -> Option<&Header> {
        self.headers.iter().find(|h| h.name == name)
    }

    /// Raw value of the first header with this name.
    #[inline]
    pub fn header_value(&self, name: HeaderName) -> Option<&[u8]> {
        self.header(name).map(|h| self.slice(h.value))
    }

    /// First header whose name (as written, case-insensitive) equals `name`; for
    /// headers the bridge has no variant for.
    pub fn header_value_by_name(&self, name: &str) -> Option<&[u8]> {
        let n = HeaderName::parse(name.as_bytes());
        if n != HeaderName::Other {
            return self.header_value(n);
        }
        self.headers
            .iter()
            .find(|h| {
                h.name == HeaderName::Other
                    && self
                        .slice(h.name_span)
                        .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|h| self.slice(h.value))
    }

    /// All header fields with this name, in order.
    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header> + '_ {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// Number of header fields with this name.
    pub fn count(&self, name: HeaderName) -> usize {
        self.headers.iter().filter(|h| h.name == name).count()
    }

    /// Every list element of every header with this name, in order, split at commas
    /// that are outside quotes and angle brackets (RFC 3261 §7.3.1). Each element is
    /// returned as a span, trimmed of surrounding LWS.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = Span> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| split_list(&self.buf, h.value))
    }
}

/// Split a list-valued header value into its elements.
pub fn split_list(buf: &Bytes, value: Span) -> ListIter<'_> {
    ListIter {
        buf,
        pos: value.start as usize,
        end: value.end as usize,
    }
}

/// Iterator behind [`split_list`].
pub struct ListIter<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl Iterator for ListIter<'_> {
    type Item = Span;
    fn next(&mut self) -> Option<Span> {
        let b = self.buf;
        let end = self.end.min(b.len());
        while self.pos < end {
            let start = self.pos;
            let mut i = start;
            let mut in_quote = false;
            let mut in_angle = false;
            // jump from one byte that matters to the next
            while i < end {
                let hay = &b[i..end];
                let next = if in_quote {
                    memchr::memchr2(b'"', b'\\', hay)
                } else if in_angle {
                    memchr::memchr2(b'>', b'"', hay)
                } else {
                    memchr::memchr3(b',', b'"', b'<', hay)
                };
                let Some(k) = next else {
                    i = end;
                    break;
                };
                i += k;
                match b[i] {
                    b'\\' => {
                        // quoted-pair (only searched for inside quotes)
                        i += 2;
                        continue;
                    }
                    b'"' => in_quote = !in_quote,
                    b'<' => in_angle = true,
                    b'>' => in_angle = false,
                    _ => break, // ',' outside quotes and angle brackets
                }
                i += 1;
            }
            let i = i.min(end);
            self.pos = i + 1;
            let (s, e) = trim_lws(b, start, i);
            if s < e {
                return Some(Span::new(s, e));
            }
            // empty element (",,"): skip
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn list_values_split_outside_quotes_and_brackets() {
        let m = msg(
            "REGISTER sip:b SIP/2.0\r\nContact: \"a,b\" <sip:x@y;p=1,2>;q=0.5 ,<sip:z@w>\r\nContact: sip:k@l\r\nl: 0\r\n\r\n",
        );
        let v: Vec<String> = m
            .values(HeaderName::Contact)
            .map(|s| String::from_utf8_lossy(m.slice(s)).into_owned())
            .collect();
        assert_eq!(v, ["\"a,b\" <sip:x@y;p=1,2>;q=0.5", "<sip:z@w>", "sip:k@l"]);
    }
}
