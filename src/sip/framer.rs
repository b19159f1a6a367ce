//! Stream (TCP) framing: cuts a byte stream into messages by Content-Length
//! (RFC 3261 §18.3), handling several messages per read, partial messages, and
//! RFC 5626 CRLF keep-alives.

use super::message::{Framing, MAX_MESSAGE_SIZE, ParseError, SipMessage};
use super::parse::{Head, parse_head};
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
    /// The header section of the message at the front of `buf`, once complete
    /// (indexed once, while the body is still arriving).
    pending: Option<Head>,
    /// Where to resume looking for the end of the header section: bytes before
    /// it were searched already (so a message trickling in byte by byte costs
    /// linear, not quadratic, time).
    scan_from: usize,
    /// The first line of the message at the front of `buf` has been checked.
    start_ok: bool,
}

impl StreamFramer {
    pub fn new() -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            pending: None,
            scan_from: 0,
            start_ok: false,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Drop `n` bytes from the front (keep-alives, stray line ends): what was
    /// learnt about the front of the buffer no longer applies.
    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.scan_from = 0;
        self.start_ok = false;
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    ///
    /// The header section is indexed by the same code as a datagram
    /// ([`SipMessage::parse_with`]), so framing and parsing agree on every header,
    /// fold and Content-Length. A missing Content-Length means an empty body; a
    /// Content-Length that is not a number, or several that disagree, leave no
    /// way to find the next message (RFC 4475 ncl, mcl01): the connection must be
    /// closed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, StreamError> {
        if self.pending.is_none() {
            // keep-alives; a ping split across reads ("\r" or "\r\n\r" so far)
            // waits for the rest instead of being taken for the start of a message.
            if matches!(&self.buf[..], b"\r" | b"\r\n\r") {
                return Ok(None);
            }
            if self.buf.starts_with(b"\r\n\r\n") {
                self.consume(4);
                return Ok(Some(StreamItem::Ping));
            }
            if self.buf.starts_with(b"\r\n") && (self.buf.len() == 2 || self.buf[2] != b'\r') {
                self.consume(2);
                return Ok(Some(StreamItem::Pong));
            }
            // stray line ends between messages
            while self.buf.first().is_some_and(|&c| c == b'\n' || c == b'\r')
                && !self.buf.starts_with(b"\r\n")
            {
                self.consume(1);
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            // reject garbage as soon as the first line is complete
            if !self.start_ok
                && let Some(nl) = memchr::memchr(b'\n', &self.buf)
            {
                if !looks_like_start_line(&self.buf[..nl]) {
                    return Err(StreamError::NotSip);
                }
                self.start_ok = true;
            }
            let Some(header_len) = find_end_of_headers(&self.buf, self.scan_from) else {
                if self.buf.len() > MAX_MESSAGE_SIZE {
                    return Err(StreamError::TooLarge);
                }
                // an LF in the last two bytes may yet start the blank line
                self.scan_from = self.buf.len().saturating_sub(2);
                return Ok(None);
            };
            if header_len > MAX_MESSAGE_SIZE {
                return Err(StreamError::TooLarge);
            }
            let head = match parse_head(&self.buf[..header_len], Framing::Stream) {
                Ok(h) => h,
                Err(ParseError::TooLarge) => return Err(StreamError::TooLarge),
                Err(_) => return Err(StreamError::NotSip),
            };
            if head.content_length_conflict || matches!(head.content_length, Some(Err(()))) {
                return Err(StreamError::BadContentLength);
            }
            if head.len() + head.content_length.and_then(Result::ok).unwrap_or(0) > MAX_MESSAGE_SIZE
            {
                return Err(StreamError::TooLarge);
            }
            self.pending = Some(head);
        }
        let Some(head) = self.pending.as_ref() else {
            return Ok(None);
        };
        let total = head.len() + head.content_length.and_then(Result::ok).unwrap_or(0);
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        self.scan_from = 0;
        self.start_ok = false;
        match self.pending.take() {
            Some(head) => Ok(Some(StreamItem::Message(SipMessage::from_head(
                frame,
                head,
                Framing::Stream,
            )))),
            None => Ok(None),
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
            line[..a].iter().all(|&c| super::grammar::is_token_char(c))
                && memchr::memmem::find(line, b"SIP/").is_some()
        }
        _ => false,
    }
}

/// Length of the header section including the blank line, searching for it from
/// `from` on.
fn find_end_of_headers(b: &[u8], from: usize) -> Option<usize> {
    let mut pos = from.min(b.len());
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

    /// Regression: a CRLFCRLF ping split after its third byte used to be rejected as
    /// "not SIP" (closing the connection); after its first byte the CR was dropped
    /// as a stray line end.
    #[test]
    fn ping_split_across_reads() {
        for split in 1..4 {
            let mut f = StreamFramer::new();
            f.push(&b"\r\n\r\n"[..split]);
            let mut items = drain(&mut f);
            f.push(&b"\r\n\r\n"[split..]);
            f.push(A);
            items.extend(drain(&mut f));
            let kinds: Vec<&str> = items
                .iter()
                .map(|i| match i {
                    StreamItem::Ping => "ping",
                    StreamItem::Pong => "pong",
                    StreamItem::Message(_) => "msg",
                })
                .collect();
            // A lone CRLF is indistinguishable from a pong (RFC 5626 §4.4.1), so a
            // split after two bytes reads as two pongs; every other split is a ping.
            let expected: &[&str] = if split == 2 {
                &["pong", "pong", "msg"]
            } else {
                &["ping", "msg"]
            };
            assert_eq!(kinds, expected, "split at {split}");
        }
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

    /// RFC 4475 mcl01 on a stream: conflicting Content-Length values leave no way
    /// to find the next message, so the connection is closed. Identical repeats
    /// frame (and the message is still rejected for its defect).
    #[test]
    fn conflicting_content_lengths_close_the_stream() {
        let mut f = StreamFramer::new();
        f.push(
            b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\nThere's no way to know",
        );
        assert_eq!(f.next_item().unwrap_err(), StreamError::BadContentLength);

        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc");
        f.push(B);
        let items = drain(&mut f);
        assert_eq!(items.len(), 2);
        let StreamItem::Message(m) = &items[0] else {
            panic!("message expected")
        };
        assert_eq!(m.body(), b"abc");
        assert_eq!(m.defect().unwrap().reason, "Multiple Content-Length Values");
    }

    /// Regression (found by the RFC 4475 byte-flip sweep): the framer read
    /// Content-Length with its own, more lenient rules (it trimmed form feeds and
    /// ignored folding after a malformed line), so the frame it cut and the
    /// message parsed from it disagreed on where the body ends.
    #[test]
    fn framer_and_parser_agree_on_content_length() {
        // a form feed is not LWS: not a number, so the stream cannot be framed
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\x0c3\r\n\r\nabc");
        assert_eq!(f.next_item().unwrap_err(), StreamError::BadContentLength);
        // a folded Content-Length is read the same way by both
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n  3\r\n\r\nabc");
        f.push(B);
        let items = drain(&mut f);
        assert_eq!(items.len(), 2);
        let StreamItem::Message(m) = &items[0] else {
            panic!("message expected")
        };
        assert_eq!(m.body(), b"abc");
        assert_eq!(m.message_bytes().len(), m.buffer().len());
    }

    /// A header section trickling in byte by byte is found wherever the blank line
    /// is split (the search resumes instead of restarting).
    #[test]
    fn end_of_headers_found_across_any_split() {
        for msg in [A, B, b"OPTIONS sip:a@b SIP/2.0\nl: 1\n\nZ".as_slice()] {
            for split in 1..msg.len() {
                let mut f = StreamFramer::new();
                f.push(&msg[..split]);
                assert!(f.next_item().unwrap().is_none(), "split {split}");
                f.push(&msg[split..]);
                let items = drain(&mut f);
                assert_eq!(items.len(), 1, "split {split}");
                let StreamItem::Message(m) = &items[0] else {
                    panic!("message expected")
                };
                assert_eq!(&m.message_bytes()[..], msg);
            }
        }
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let mut f = StreamFramer::new();
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nCall-ID: 2\r\n\r\n");
        let items = drain(&mut f);
        assert_eq!(items.len(), 2);
    }
}
