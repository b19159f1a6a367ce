//! Stream (TCP) framing: cuts a byte stream into messages by Content-Length
//! (RFC 3261 §18.3), handling several messages per read, partial messages, and
//! RFC 5626 CRLF keep-alives.

use super::message::{Framing, MAX_MESSAGE_SIZE, ParseError, SipMessage};
use bytes::{Buf, BytesMut};
use std::fmt;

/// What the framer produced.
#[derive(Debug)]
pub enum StreamItem {
    /// A complete message (possibly with a [`crate::sip::Defect`]).
    Message(SipMessage),
    /// A double-CRLF keep-alive ping (answer with a single CRLF pong).
    Ping,
    /// A single-CRLF pong.
    Pong,
}

/// The stream is unusable and the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// A message (or the header section so far) is larger than 64 KiB.
    TooLarge,
    /// The bytes are not SIP.
    NotSip,
    /// Content-Length is missing its number or is not a number.
    BadContentLength,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamError::TooLarge => "message larger than 64 KiB",
            StreamError::NotSip => "stream does not carry SIP",
            StreamError::BadContentLength => "malformed Content-Length on a stream",
        })
    }
}

impl std::error::Error for StreamError {}

/// Accumulates bytes from a stream and yields complete messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: BytesMut,
}

impl StreamFramer {
    pub fn new() -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, StreamError> {
        // keep-alives
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Ok(Some(StreamItem::Ping));
        }
        if self.buf.starts_with(b"\r\n") && (self.buf.len() == 2 || self.buf[2] != b'\r') {
            self.buf.advance(2);
            return Ok(Some(StreamItem::Pong));
        }
        // stray line ends between messages
        while self.buf.first().is_some_and(|&c| c == b'\n' || c == b'\r')
            && !self.buf.starts_with(b"\r\n")
        {
            self.buf.advance(1);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        // reject garbage as soon as the first line is complete
        if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
            if !looks_like_start_line(&self.buf[..nl]) {
                return Err(StreamError::NotSip);
            }
        } else if self.buf.len() > MAX_MESSAGE_SIZE {
            return Err(StreamError::TooLarge);
        }
        let Some(header_len) = find_end_of_headers(&self.buf) else {
            if self.buf.len() > MAX_MESSAGE_SIZE {
                return Err(StreamError::TooLarge);
            }
            return Ok(None);
        };
        let body_len = content_length(&self.buf[..header_len])?.unwrap_or(0);
        let total = header_len + body_len;
        if total > MAX_MESSAGE_SIZE {
            return Err(StreamError::TooLarge);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        match SipMessage::parse_with(frame, Framing::Stream) {
            Ok(m) => Ok(Some(StreamItem::Message(m))),
            Err(ParseError::TooLarge) => Err(StreamError::TooLarge),
            Err(_) => Err(StreamError::NotSip),
        }
    }
}

fn looks_like_start_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return true;
    }
    // Method SP ... SP SIP/x.y
    match (memchr::memchr(b' ', line), memchr::memrchr(b' ', line)) {
        (Some(a), Some(_)) if a > 0 => {
            line[..a].iter().all(|&c| super::message::is_token_char(c))
                && memchr::memmem::find(line, b"SIP/").is_some()
        }
        _ => false,
    }
}

/// Length of the header section including the blank line.
fn find_end_of_headers(b: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(i) = memchr::memchr(b'\n', &b[pos..]) {
        let next = pos + i + 1;
        if b.get(next) == Some(&b'\n') {
            return Some(next + 1);
        }
        if b.get(next) == Some(&b'\r') && b.get(next + 1) == Some(&b'\n') {
            return Some(next + 2);
        }
        pos = next;
    }
    None
}

/// Content-Length from a header section (`Content-Length` or compact `l`).
fn content_length(head: &[u8]) -> Result<Option<usize>, StreamError> {
    let mut found = None;
    let mut lines = head.split(|&c| c == b'\n').peekable();
    lines.next(); // start line
    while let Some(line) = lines.next() {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut v: Vec<u8> = line[colon + 1..].to_vec();
        while let Some(cont) = lines.peek() {
            if cont.first().is_some_and(|&c| c == b' ' || c == b'\t') {
                v.extend_from_slice(cont);
                lines.next();
            } else {
                break;
            }
        }
        let t = v.trim_ascii();
        if t.is_empty() || t.len() > 10 || !t.iter().all(u8::is_ascii_digit) {
            return Err(StreamError::BadContentLength);
        }
        let n = t.iter().fold(0usize, |a, &d| a * 10 + (d - b'0') as usize);
        if found.is_none() {
            found = Some(n);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Method;

    const A: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc";
    const B: &[u8] = b"NOTIFY sip:a@b SIP/2.0\r\ni: 2\r\nl: 0\r\n\r\n";

    fn drain(f: &mut StreamFramer) -> Vec<StreamItem> {
        let mut v = Vec::new();
        while let Some(i) = f.next_item().unwrap() {
            v.push(i);
        }
        v
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut f = StreamFramer::new();
        let mut data = A.to_vec();
        data.extend_from_slice(B);
        f.push(&data);
        let items = drain(&mut f);
        assert_eq!(items.len(), 2);
        match (&items[0], &items[1]) {
            (StreamItem::Message(a), StreamItem::Message(b)) => {
                assert_eq!(a.body(), b"abc");
                assert_eq!(b.method(), Some(&Method::Notify));
                assert_eq!(b.call_id(), Some(&b"2"[..]));
            }
            _ => panic!("expected two messages"),
        }
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_delivery() {
        let mut f = StreamFramer::new();
        let mut got = 0;
        for (i, &b) in A.iter().chain(B.iter()).enumerate() {
            f.push(&[b]);
            while let Some(item) = f.next_item().unwrap() {
                assert!(matches!(item, StreamItem::Message(_)), "at {i}");
                got += 1;
            }
        }
        assert_eq!(got, 2);
    }

    #[test]
    fn keepalives() {
        let mut f = StreamFramer::new();
        f.push(b"\r\n\r\n");
        assert!(matches!(f.next_item().unwrap(), Some(StreamItem::Ping)));
        f.push(b"\r\n");
        assert!(matches!(f.next_item().unwrap(), Some(StreamItem::Pong)));
        f.push(b"\r\n\r\n");
        f.push(A);
        let items = drain(&mut f);
        assert!(matches!(items[0], StreamItem::Ping));
        assert!(matches!(items[1], StreamItem::Message(_)));
    }

    #[test]
    fn garbage_and_oversize_are_errors() {
        let mut f = StreamFramer::new();
        f.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(f.next_item().unwrap_err(), StreamError::NotSip);

        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n");
        assert_eq!(f.next_item().unwrap_err(), StreamError::TooLarge);

        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
        for _ in 0..2000 {
            f.push(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(f.next_item().unwrap_err(), StreamError::TooLarge);

        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\n");
        assert_eq!(f.next_item().unwrap_err(), StreamError::BadContentLength);

        let mut f = StreamFramer::new();
        f.push(&[0u8; 100]);
        f.push(b"\n");
        assert_eq!(f.next_item().unwrap_err(), StreamError::NotSip);
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nCall-ID: 2\r\n\r\n");
        let items = drain(&mut f);
        assert_eq!(items.len(), 2);
    }
}
