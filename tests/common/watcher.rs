//! A BLF phone in a thread, for tests over a lossy network: where SIPp's
//! scenarios cannot follow (a NOTIFY that overtakes the response to a refresh,
//! a lost 200 answered by SIPp's "resend the last message" rule with the wrong
//! message), this one behaves like a phone: every NOTIFY (retransmissions too)
//! is answered with 200, each request is a new transaction (new branch, next
//! CSeq) retransmitted on T1 doubling until Timer F, refreshes are in-dialog.
//!
//! [`BlfPhone::spawn`] subscribes `watcher` → `target` (Event: dialog) at
//! `bridge`, refreshes every `refresh`, unsubscribes after `run` and waits for
//! the terminating NOTIFY; [`BlfPhone::join`] returns what it saw.

#![allow(dead_code)] // not every test crate runs phones in threads

use super::kamailio::DOMAIN;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One NOTIFY the phone got (first copy of each CSeq).
#[derive(Debug, Clone)]
pub struct PhoneNotify {
    pub cseq: u32,
    pub subscription_state: String,
    pub body: String,
}

impl PhoneNotify {
    pub fn is_terminated(&self) -> bool {
        self.subscription_state.starts_with("terminated")
    }
}

#[derive(Debug, Default)]
pub struct PhoneRun {
    /// By CSeq.
    pub notifies: Vec<PhoneNotify>,
    /// Refreshes answered 2xx.
    pub refreshes: u32,
    /// Anything that a working subscription would not do (rejections, 481,
    /// terminated before the end, a transaction timing out).
    pub errors: Vec<String>,
}

pub struct BlfPhone {
    pub name: String,
    thread: Option<JoinHandle<PhoneRun>>,
}

struct Tx {
    cseq: u32,
    text: String,
    next: Instant,
    interval: Duration,
    deadline: Instant,
}

impl BlfPhone {
    pub fn spawn(
        bridge: SocketAddr,
        user_agent: &str,
        watcher: &str,
        target: &str,
        expires: u32,
        refresh: Duration,
        run: Duration,
    ) -> BlfPhone {
        let name = format!("phone-{watcher}-{target}");
        let (ua, w, t) = (
            user_agent.to_string(),
            watcher.to_string(),
            target.to_string(),
        );
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || phone(bridge, &ua, &w, &t, expires, refresh, run))
            .expect("phone thread");
        BlfPhone {
            name,
            thread: Some(thread),
        }
    }

    pub fn join(mut self) -> PhoneRun {
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("phone thread panicked")
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn phone(
    bridge: SocketAddr,
    ua: &str,
    watcher: &str,
    target: &str,
    expires: u32,
    refresh: Duration,
    run: Duration,
) -> PhoneRun {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("phone socket");
    let me = sock.local_addr().unwrap();
    let call_id = format!("blf-{watcher}-{target}-{}@{me}", std::process::id());
    let from_tag = format!("ft{}", me.port());
    let mut out = PhoneRun::default();
    let mut seen: BTreeMap<u32, PhoneNotify> = BTreeMap::new();
    let mut cseq = 0u32;
    let mut to_tag: Option<String> = None;
    let mut rtarget = format!("sip:{target}@{DOMAIN}");
    let start = Instant::now();
    let mut next_refresh = start + refresh;
    let mut unsubscribed = false;
    let mut done_at: Option<Instant> = None;
    let t1 = Duration::from_millis(500);

    let request = |cseq: u32, to_tag: &Option<String>, rtarget: &str, expires: u32| {
        let to = match to_tag {
            Some(t) => format!("<sip:{target}@{DOMAIN}>;tag={t}"),
            None => format!("<sip:{target}@{DOMAIN}>"),
        };
        format!(
            "SUBSCRIBE {rtarget} SIP/2.0\r\n\
Via: SIP/2.0/UDP {me};branch=z9hG4bK-{}-{cseq};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:{watcher}@{DOMAIN}>;tag={from_tag}\r\n\
To: {to}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:{watcher}@{me}>\r\n\
Event: dialog\r\n\
Accept: application/dialog-info+xml\r\n\
User-Agent: {ua}\r\n\
Expires: {expires}\r\n\
Content-Length: 0\r\n\r\n",
            me.port()
        )
    };
    let send_new = |cseq: &mut u32, to_tag: &Option<String>, rtarget: &str, expires: u32| {
        *cseq += 1;
        let text = request(*cseq, to_tag, rtarget, expires);
        let _ = sock.send_to(text.as_bytes(), bridge);
        let now = Instant::now();
        Tx {
            cseq: *cseq,
            text,
            next: now + t1,
            interval: t1,
            deadline: now + 64 * t1,
        }
    };
    let mut tx = Some(send_new(&mut cseq, &to_tag, &rtarget, expires));
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if let Some(d) = done_at
            && now >= d
        {
            break;
        }
        if now > start + run + Duration::from_secs(40) {
            out.errors.push("did not finish".into());
            break;
        }
        // retransmissions, Timer F
        if let Some(t) = tx.as_mut() {
            if now >= t.deadline {
                out.errors
                    .push(format!("SUBSCRIBE CSeq {} timed out", t.cseq));
                tx = None;
            } else if now >= t.next {
                let _ = sock.send_to(t.text.as_bytes(), bridge);
                t.interval = (t.interval * 2).min(Duration::from_secs(4));
                t.next = now + t.interval;
            }
        }
        // refresh, unsubscribe
        if tx.is_none() && to_tag.is_some() && !unsubscribed {
            if now >= start + run {
                unsubscribed = true;
                tx = Some(send_new(&mut cseq, &to_tag, &rtarget, 0));
            } else if now >= next_refresh {
                next_refresh = now + refresh;
                tx = Some(send_new(&mut cseq, &to_tag, &rtarget, expires));
            }
        }
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let first = msg.lines().next().unwrap_or("");
        if let Some(status) = first.strip_prefix("SIP/2.0 ") {
            let code: u16 = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let rcseq: u32 = header(&msg, "CSeq")
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            let Some(t) = tx.as_ref() else { continue };
            if rcseq != t.cseq || code < 200 {
                continue; // a late copy of an older answer, or provisional
            }
            tx = None;
            if (200..300).contains(&code) {
                if to_tag.is_none() {
                    to_tag = header(&msg, "To")
                        .and_then(|v| v.split(";tag=").nth(1))
                        .map(|t| t.split([';', '>', ' ']).next().unwrap_or(t).to_string());
                    if let Some(c) = header(&msg, "Contact")
                        && let (Some(a), Some(b)) = (c.find('<'), c.find('>'))
                    {
                        rtarget = c[a + 1..b].to_string();
                    }
                } else if !unsubscribed {
                    out.refreshes += 1;
                }
            } else {
                out.errors
                    .push(format!("SUBSCRIBE CSeq {rcseq} answered {code}"));
                if to_tag.is_none() || code == 481 {
                    break;
                }
            }
        } else if first.starts_with("NOTIFY ") {
            // answer every copy
            let mut ok = String::from("SIP/2.0 200 OK\r\n");
            for l in msg.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
                let name = l
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
                ) {
                    ok.push_str(l);
                    ok.push_str("\r\n");
                }
            }
            ok.push_str(&format!(
                "Contact: <sip:{watcher}@{me}>\r\nContent-Length: 0\r\n\r\n"
            ));
            let _ = sock.send_to(ok.as_bytes(), from);
            let ncseq: u32 = header(&msg, "CSeq")
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            if seen.contains_key(&ncseq) {
                continue;
            }
            let body = msg
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            let n = PhoneNotify {
                cseq: ncseq,
                subscription_state: header(&msg, "Subscription-State").unwrap_or("").to_string(),
                body,
            };
            if n.is_terminated() {
                if unsubscribed {
                    done_at = Some(Instant::now() + Duration::from_secs(2));
                } else {
                    out.errors.push(format!(
                        "terminated before the end: {}",
                        n.subscription_state
                    ));
                }
            }
            seen.insert(ncseq, n);
        }
    }
    out.notifies = seen.into_values().collect();
    out
}
