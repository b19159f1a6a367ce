//! Parsing SIPp `-trace_msg` logs: the messages ([`TraceMsg`]) and the NOTIFYs
//! received ([`Notify`]).
#![allow(dead_code)] // not every test crate inspects NOTIFY bodies

use super::sip_client::status_of;
use super::xml::{xml_open_tags, xml_texts};
use blf_bridge::sip::HeaderName;
use std::collections::HashSet;

/// One message of a sipp `-trace_msg` log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMsg {
    /// Received (true) or sent (false).
    pub received: bool,
    /// "UDP" / "TCP".
    pub transport: String,
    /// "2026-01-01 12:00:00.123456" as logged.
    pub time: String,
    /// The message, CRLFs normalised to LF, body cut to its Content-Length.
    pub text: String,
}

impl TraceMsg {
    /// First line ("NOTIFY sip:... SIP/2.0" / "SIP/2.0 200 OK").
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    pub fn is_request(&self) -> bool {
        !self.start_line().starts_with("SIP/2.0 ")
    }

    /// Request method.
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start_line()
                .split(' ')
                .next()
                .filter(|m| !m.is_empty())
        } else {
            None
        }
    }

    /// Response status.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.text)
    }

    /// Values of every header `name` (case-insensitive; compact forms accepted),
    /// folded lines joined, comma-lists not split.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                same_header(n.trim(), name).then_some(v.trim())
            })
            .collect()
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?))
    }

    /// The header section (start line included).
    pub fn head(&self) -> &str {
        self.text
            .split_once("\n\n")
            .map_or(self.text.as_str(), |(h, _)| h)
    }

    /// The body ("" when none).
    pub fn body(&self) -> &str {
        self.text.split_once("\n\n").map_or("", |(_, b)| b)
    }
}

/// Whether the header line name `n` names header `name`: the same spelling (any
/// case), or the same header in its long and compact forms, as the product itself
/// reads them ([`HeaderName::parse`], RFC 3261 §7.3.3) — one compact-form table.
fn same_header(n: &str, name: &str) -> bool {
    n.eq_ignore_ascii_case(name) || {
        let h = HeaderName::parse(name.as_bytes());
        h != HeaderName::Other && h == HeaderName::parse(n.as_bytes())
    }
}

/// Parse a sipp `-trace_msg` log: records separated by a line of dashes (+ time),
/// then "UDP message received [N] bytes :" / "UDP message sent (N bytes):", a blank
/// line and the N bytes of the message. "Unexpected ... message received:" records
/// (repeats of a message already logged) are skipped. CRLFs become LFs.
pub fn parse_trace(log: &str) -> Vec<TraceMsg> {
    const SEP: &str = "-----------------------------------------------";
    let mut out = Vec::new();
    for record in log.split(SEP) {
        let Some((first, rest)) = record.split_once('\n') else {
            continue;
        };
        let time = first.trim().to_string();
        let Some((kind, rest)) = rest.split_once('\n') else {
            continue;
        };
        let kind = kind.trim();
        if kind.starts_with("Unexpected") {
            continue;
        }
        let received = if kind.contains("message received") {
            true
        } else if kind.contains("message sent") {
            false
        } else {
            continue;
        };
        let transport = kind.split_whitespace().next().unwrap_or("").to_string();
        let raw = rest.strip_prefix('\n').unwrap_or(rest);
        // "[280] bytes" (received) / "(225 bytes)" (sent): the exact message length
        let len = kind
            .split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse::<usize>().ok());
        let msg = match len.and_then(|n| raw.get(..n)) {
            Some(m) => m.to_string(),
            None => cut_at_content_length(raw),
        };
        let text = msg.replace("\r\n", "\n");
        if text.trim().is_empty() {
            continue;
        }
        out.push(TraceMsg {
            received,
            transport,
            time,
            text,
        });
    }
    out
}

/// Fallback framing of a logged message: headers up to the blank line, then
/// Content-Length bytes of body.
pub(super) fn cut_at_content_length(raw: &str) -> String {
    let (head_end, sep_len) = match (raw.find("\r\n\r\n"), raw.find("\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => return raw.trim_end().to_string(),
    };
    let head = &raw[..head_end];
    let clen = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            same_header(n, "Content-Length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let body_start = head_end + sep_len;
    let end = (body_start + clen).min(raw.len());
    raw.get(..end).unwrap_or(raw).to_string()
}

/// A received NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub time: String,
    pub call_id: String,
    pub cseq: u32,
    pub event: Option<String>,
    pub subscription_state: Option<String>,
    pub content_type: Option<String>,
    /// "" when the NOTIFY has no body.
    pub body: String,
}

impl Notify {
    /// Whether Subscription-State is terminated.
    pub fn is_terminated(&self) -> bool {
        self.subscription_state.as_deref().is_some_and(|s| {
            s.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        })
    }

    /// Texts of the `<state>` elements of a dialog-info body (one per dialog).
    pub fn dialog_states(&self) -> Vec<String> {
        xml_texts(&self.body, "state")
    }

    /// Texts of the `<basic>` elements of a PIDF body ("open" / "closed").
    pub fn basic(&self) -> Vec<String> {
        xml_texts(&self.body, "basic")
    }

    /// Number of `<dialog>` elements.
    pub fn dialog_count(&self) -> usize {
        xml_open_tags(&self.body, "dialog").len()
    }

    /// The `<dialog ...>` start tags (attributes included).
    pub fn dialog_tags(&self) -> Vec<String> {
        xml_open_tags(&self.body, "dialog")
    }
}

/// The received NOTIFYs of a trace, in order, retransmissions (same Call-ID and
/// CSeq as an earlier one) dropped.
pub fn notifies(msgs: &[TraceMsg]) -> Vec<Notify> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in msgs
        .iter()
        .filter(|m| m.received && m.method() == Some("NOTIFY"))
    {
        let call_id = m.header("Call-ID").unwrap_or("").to_string();
        let cseq = m.cseq().map_or(0, |(n, _)| n);
        if !seen.insert((call_id.clone(), cseq)) {
            continue;
        }
        out.push(Notify {
            time: m.time.clone(),
            call_id,
            cseq,
            event: m.header("Event").map(String::from),
            subscription_state: m.header("Subscription-State").map(String::from),
            content_type: m.header("Content-Type").map(String::from),
            body: m.body().to_string(),
        });
    }
    out
}

/// Body of the last NOTIFY ("" if it had none).
pub fn last_body(notifies: &[Notify]) -> Option<&str> {
    notifies.last().map(|n| n.body.as_str())
}
