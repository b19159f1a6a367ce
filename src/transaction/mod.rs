//! The RFC 3261 §17 transaction layer, sans-IO: fed with `(message, flow, time)`,
//! it returns dispositions, and queues [`Transmit`]s and [`TxEvent`]s that the
//! caller drains with [`TransactionLayer::poll_transmit`] and
//! [`TransactionLayer::poll_event`]. Time only moves when the caller says so
//! ([`TransactionLayer::handle_timeout`] at [`TransactionLayer::poll_timeout`]), so
//! every schedule is testable with a simulated clock.
//!
//! The four machines, with the updates that matter for a proxy:
//! - non-INVITE client (§17.1.2): Trying → Proceeding → Completed; Timer E
//!   retransmits (UDP only) from T1 doubling up to T2, every T2 once a 1xx
//!   arrived; Timer F (64·T1) reports [`TxEvent::Timeout`]; Timer K (T4 on UDP,
//!   0 on TCP) absorbs response retransmissions.
//! - non-INVITE server (§17.2.2 + RFC 4320): Trying → Proceeding → Completed.
//!   Request retransmissions are answered byte-identically from the last response
//!   sent. The layer never sends a provisional other than `100 Trying`, and that
//!   only late: on a retransmission that arrives in Trying at least T2 after the
//!   first reception. It never sends (nor lets the TU send) a 408. Timer J (64·T1
//!   on UDP, 0 on TCP). A transaction the TU never answers is dropped silently
//!   64·T1 after the request arrived (the client has given up by then).
//! - INVITE client (§17.1.1 + RFC 6026): Calling → Proceeding → Accepted (2xx,
//!   Timer M = 64·T1, every further 2xx passed up) or Completed (300-699: the
//!   layer builds, sends and re-sends the hop-by-hop ACK; Timer D = max(32 s,
//!   64·T1) on UDP, 0 on TCP). Timer A (UDP only) from T1 doubling; Timer B
//!   (64·T1) reports [`TxEvent::Timeout`] while still Calling.
//! - INVITE server (§17.2.1 + RFC 6026): `100 Trying` goes out at once; Proceeding
//!   (the last provisional is re-sent on retransmissions) → Accepted (2xx, Timer
//!   L = 64·T1; INVITE retransmissions absorbed, ACKs passed up) or Completed
//!   (300-699; Timer G re-sends the final response on UDP, T1 doubling up to T2;
//!   Timer H = 64·T1 reports [`TxEvent::AckTimeout`]) → Confirmed on the ACK
//!   (Timer I = T4 on UDP, 0 on TCP).
//!
//! Per transaction only the request/response `Bytes` are kept (no parsed copies),
//! and all timers live in one min-heap with lazy deletion: a heap entry is live
//! only while its transaction still has that exact deadline set.

mod client;
mod key;
mod server;
#[cfg(test)]
mod tests;

pub use key::{ClientKey, MAGIC_COOKIE, ServerKey};

use client::ClientTx;
use server::ServerTx;

use crate::flow::Transmit;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The RFC 3261 base timers. Every other timer derives from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Cap on the non-INVITE request and INVITE response retransmission interval
    /// (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s): Timers K and I.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Base timers are clamped to this so that no deadline arithmetic can overflow.
const MAX_BASE_TIMER: Duration = Duration::from_secs(3600);
/// T1 and T2 are at least this, so that a retransmission schedule always advances.
const MIN_RETRANSMIT: Duration = Duration::from_millis(1);
/// RFC 3261 Timer D lower bound on unreliable transports.
const TIMER_D_MIN: Duration = Duration::from_secs(32);

impl Timers {
    /// 64·T1: Timers B, F, H, J, L and M.
    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
    /// Timer D on an unreliable transport: at least 32 s, and at least as long as
    /// the server keeps retransmitting its final response (64·T1).
    fn timer_d(&self) -> Duration {
        self.t1x64().max(TIMER_D_MIN)
    }
    fn clamped(self) -> Timers {
        Timers {
            t1: self.t1.clamp(MIN_RETRANSMIT, MAX_BASE_TIMER),
            t2: self.t2.clamp(MIN_RETRANSMIT, MAX_BASE_TIMER),
            t4: self.t4.min(MAX_BASE_TIMER),
        }
    }
}

/// State of a live client transaction (a terminated one no longer exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// INVITE sent, no response yet (Timers A and B running).
    Calling,
    /// Non-INVITE sent, no response yet (Timers E and F running).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-INVITE: any; INVITE: 300-699).
    Completed,
    /// INVITE answered with 2xx (RFC 6026); further 2xx are passed up.
    Accepted,
}

/// State of a live server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// Non-INVITE received, nothing sent yet.
    Trying,
    /// A provisional response was sent (for INVITE: at least the layer's 100).
    Proceeding,
    /// A final response was sent (non-INVITE: any; INVITE: 300-699).
    Completed,
    /// INVITE answered with 2xx (RFC 6026).
    Accepted,
    /// The ACK for a 300-699 INVITE response arrived.
    Confirmed,
}

/// What [`TransactionLayer::on_request`] made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new server transaction: the TU handles the request and answers with
    /// [`TransactionLayer::respond`]. For an INVITE the layer has already queued
    /// `100 Trying`.
    New(ServerKey),
    /// A retransmission of a request with a live server transaction; the layer
    /// has re-sent the stored response if one is due. Nothing for the TU to do.
    Retransmission,
    /// An ACK for a 300-699 response of a live INVITE server transaction,
    /// consumed by the transaction.
    AckAbsorbed,
    /// An ACK that does not belong to a non-2xx INVITE server transaction (the ACK
    /// for a 2xx, or a stray one): the TU routes it.
    Ack,
    /// No transaction can be formed (top Via missing or malformed; for the
    /// RFC 2543 match also CSeq, Call-ID or Request-URI). The caller should have
    /// rejected the request with 400 before.
    Malformed,
}

/// What [`TransactionLayer::on_response`] made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// The client transaction passes this response to the TU.
    PassUp(ClientKey),
    /// Consumed by the client transaction (a retransmission, or a response the
    /// current state ignores).
    Absorbed,
    /// No client transaction matches: a proxy forwards it statelessly, a UA drops
    /// it.
    Stray,
}

/// Either kind of transaction key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxKey {
    Client(ClientKey),
    Server(ServerKey),
}

/// Something the TU must learn about without having asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// Timer B or F fired before a final response arrived (RFC 3261 §17.1.1.2,
    /// §17.1.2.2). Treat like a 408 from the peer; never send a 408 to a
    /// non-INVITE upstream because of it (RFC 4320).
    Timeout(ClientKey),
    /// Timer H fired: the ACK for our 300-699 INVITE response never came.
    AckTimeout(ServerKey),
    /// The transaction is gone (after its last timer, or at once on a reliable
    /// transport). Every transaction ends with exactly one such event, except the
    /// ones the TU ends itself with `terminate_client` / `terminate_server`.
    Terminated(TxKey),
}

/// Why the layer refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// The bytes are not a parsable SIP message.
    Unparsable,
    /// [`TransactionLayer::send_request`] was given a response.
    NotARequest,
    /// ACK has no client transaction: the ACK for a 300-699 is built by the
    /// layer, the ACK for a 2xx is sent by the TU directly.
    AckIsNotATransaction,
    /// The top Via is missing or malformed, or its branch lacks the magic cookie.
    NoRfc3261Branch,
    /// CSeq is missing, malformed or names another method than the request line.
    CSeqMismatch,
    /// A live client transaction already has this branch and method.
    DuplicateTransaction,
    /// [`TransactionLayer::respond`] was given bytes without a valid Status-Line.
    NotAResponse,
    /// No live transaction has this key.
    NoTransaction,
    /// RFC 4320: no provisional response to a non-INVITE from the TU (the layer
    /// sends the late `100 Trying` itself).
    ProvisionalToNonInvite,
    /// RFC 4320 §4.2: a transaction-stateful element must not send 408 to a
    /// non-INVITE; send nothing instead.
    Timeout408ToNonInvite,
    /// The transaction already sent a final response (for an INVITE in Accepted,
    /// only further 2xx may be sent).
    AlreadyFinal,
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxError::Unparsable => "not a parsable SIP message",
            TxError::NotARequest => "not a request",
            TxError::AckIsNotATransaction => "ACK does not start a client transaction",
            TxError::NoRfc3261Branch => "top Via has no RFC 3261 branch",
            TxError::CSeqMismatch => "CSeq missing, malformed or not matching the method",
            TxError::DuplicateTransaction => {
                "a client transaction with this branch and method exists"
            }
            TxError::NotAResponse => "no valid Status-Line",
            TxError::NoTransaction => "no such transaction",
            TxError::ProvisionalToNonInvite => {
                "provisional responses to non-INVITE requests are not sent (RFC 4320)"
            }
            TxError::Timeout408ToNonInvite => "408 to a non-INVITE request is not sent (RFC 4320)",
            TxError::AlreadyFinal => "the transaction already sent its final response",
        })
    }
}

impl std::error::Error for TxError {}

// ------------------------------------------------------------------ internals

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// Timers A, E (client) and G (server).
    Retransmit,
    /// Every other timer: what it means depends on the state.
    Timeout,
}

/// One heap entry. Live only while the transaction with `id` still has `at` as its
/// deadline of `kind` (lazy deletion).
#[derive(Debug)]
struct TimerEntry {
    at: Instant,
    seq: u64,
    id: u64,
    kind: TimerKind,
    key: TxKey,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    /// Reversed: `BinaryHeap` is a max-heap, we want the earliest deadline (and,
    /// among equal deadlines, the first scheduled) on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Default)]
struct TimerQueue {
    heap: BinaryHeap<TimerEntry>,
    seq: u64,
}

impl TimerQueue {
    fn push(&mut self, at: Instant, id: u64, kind: TimerKind, key: TxKey) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(TimerEntry {
            at,
            seq: self.seq,
            id,
            kind,
            key,
        });
    }
}

/// Owns every client and server transaction of an endpoint or proxy.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    clients: HashMap<ClientKey, ClientTx>,
    servers: HashMap<ServerKey, ServerTx>,
    queue: TimerQueue,
    next_id: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
    /// Where completed non-INVITE server transactions keep their response.
    retained: Retained,
}

/// The final responses that non-INVITE server transactions keep over UDP for
/// Timer J (64·T1, 32 s by default), to answer retransmissions of their
/// request: copied one after the other into shared blocks of [`Retained::BLOCK`]
/// bytes instead of each staying in its own heap block.
///
/// Their lifetimes are first in, first out (Timer J is the same for all), so a
/// block is freed whole about 32 s after it filled. One heap block per
/// response instead would leave, after a burst (thousands of phones
/// subscribing at once), 32 s worth of responses' holes between the
/// subscriptions made meanwhile, which live for hours: the allocator could
/// not give those pages back, and the bridge's memory would stay at the size
/// of its busiest half-minute. A block is large enough for glibc's malloc to
/// map it apart from the heap, and to give it back to the system when freed.
#[derive(Debug, Default)]
struct Retained {
    block: bytes::BytesMut,
}

impl Retained {
    /// 256 KiB: above glibc's mmap threshold (128 KiB, fixed at start by
    /// `runtime::tune_allocator`); ~500 SUBSCRIBE responses.
    const BLOCK: usize = 256 << 10;

    /// `data`, copied into the current block (a new one when it is full). A
    /// response larger than a sixteenth of a block keeps its own allocation.
    fn keep(&mut self, data: &bytes::Bytes) -> bytes::Bytes {
        if data.len() > Self::BLOCK / 16 {
            return data.clone();
        }
        if self.block.capacity() - self.block.len() < data.len() {
            self.block = bytes::BytesMut::with_capacity(Self::BLOCK);
        }
        self.block.extend_from_slice(data);
        self.block.split().freeze()
    }
}

/// What to do with a transaction once its map borrow has ended.
enum After {
    Keep,
    Terminate,
}

impl TransactionLayer {
    /// An empty layer. Base timers are clamped to one hour (and T1, T2 to at least
    /// 1 ms) so that deadline arithmetic cannot overflow or stall.
    pub fn new(timers: Timers) -> Self {
        TransactionLayer {
            timers: timers.clamped(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            queue: TimerQueue::default(),
            next_id: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            retained: Retained::default(),
        }
    }

    /// The timers in use.
    pub fn timers(&self) -> Timers {
        self.timers
    }

    fn new_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    // The client side (send_request, on_response, ...) is in client.rs, the server
    // side (on_request, respond, ...) in server.rs.

    // ------------------------------------------------------------------ driving

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.queue.heap.peek().is_some_and(|e| e.at <= now) {
            let Some(e) = self.queue.heap.pop() else {
                break;
            };
            match &e.key {
                TxKey::Client(k) => self.fire_client(k, &e, now),
                TxKey::Server(k) => self.fire_server(k, &e, now),
            }
        }
        self.maintain();
    }

    /// When [`TransactionLayer::handle_timeout`] must be called next (the earliest
    /// live deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.heap.peek().map(|e| e.at)
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        drained(&mut self.out)
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        drained(&mut self.events)
    }

    /// Live (client, server) transactions.
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// No live transaction at all.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.servers.is_empty()
    }

    /// Drop dead entries from the top of the timer heap (so that `poll_timeout` is
    /// exact) and rebuild the heap when dead entries dominate it.
    fn maintain(&mut self) {
        let TransactionLayer {
            clients,
            servers,
            queue,
            ..
        } = self;
        let live = |e: &TimerEntry| match &e.key {
            TxKey::Client(k) => clients
                .get(k)
                .is_some_and(|tx| tx.id == e.id && tx.deadline(e.kind) == Some(e.at)),
            TxKey::Server(k) => servers
                .get(k)
                .is_some_and(|tx| tx.id == e.id && tx.deadline(e.kind) == Some(e.at)),
        };
        while queue.heap.peek().is_some_and(|e| !live(e)) {
            queue.heap.pop();
        }
        // At most two live entries per transaction.
        let bound = 2 * (clients.len() + servers.len());
        if queue.heap.len() > 1024 && queue.heap.len() > 4 * bound {
            queue.heap.retain(live);
        }
        // A burst (thousands of SUBSCRIBEs in Timer J's 32 s) leaves tables
        // sized for it long after its transactions ended: give the room back
        // once it is mostly empty (amortised: only at a quarter full).
        shrink_map(clients);
        shrink_map(servers);
        if queue.heap.capacity() > SHRINK_MIN && queue.heap.len() * 4 < queue.heap.capacity() {
            queue.heap.shrink_to(queue.heap.len() * 2);
        }
    }
}

/// Tables this small are never shrunk.
const SHRINK_MIN: usize = 256;

/// The front of a queue; once a burst (every Timer J of a second firing at
/// once) has been drained, the queue's room goes back too.
pub fn drained<T>(q: &mut VecDeque<T>) -> Option<T> {
    let front = q.pop_front();
    if front.is_none() && q.capacity() > SHRINK_MIN {
        q.shrink_to(SHRINK_MIN / 4);
    }
    front
}

/// Halve a map's room when it is less than a quarter full.
fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > SHRINK_MIN && m.len() * 4 < m.capacity() {
        m.shrink_to(m.len() * 2);
    }
}

/// The next retransmission deadline: `interval` after the one that fired, or
/// after `now` if the caller was so late that this is already past.
fn next_deadline(fired: Instant, interval: Duration, now: Instant) -> Instant {
    let at = fired + interval;
    if at <= now { now + interval } else { at }
}

/// The status code of a Status-Line (`SIP/2.0 NNN ...`), 100-699 only.
fn status_code(b: &[u8]) -> Option<u16> {
    let head = b.get(..11)?;
    if !head[..8].eq_ignore_ascii_case(b"SIP/2.0 ") || !head[8..11].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(b.get(11), None | Some(b' ' | b'\r' | b'\n')) {
        return None;
    }
    let code = head[8..11]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=699).contains(&code).then_some(code)
}
