//! Client transactions (RFC 3261 §17.1): the INVITE (§17.1.1 + RFC 6026) and
//! non-INVITE (§17.1.2) machines, as the client half of [`TransactionLayer`].

use super::{
    After, ClientKey, ClientState, ResponseDisposition, TimerEntry, TimerKind, TransactionLayer,
    TxError, TxEvent, TxKey, key, next_deadline,
};
use crate::flow::{Flow, Transmit};
use crate::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct ClientTx {
    pub(super) id: u64,
    invite: bool,
    state: ClientState,
    flow: Flow,
    /// The request while it may be retransmitted (and, for an INVITE, until the
    /// final response, to build the ACK from); the ACK in INVITE Completed.
    data: Bytes,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    /// Retransmissions still allowed (`None`: as many as the timers give).
    retransmits_left: Option<u32>,
}

impl ClientTx {
    pub(super) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        match kind {
            TimerKind::Retransmit => self.retransmit_at,
            TimerKind::Timeout => self.timeout_at,
        }
    }
}

impl TransactionLayer {
    /// Start a client transaction for `request` (already carrying our Via with a
    /// unique `z9hG4bK` branch) and queue its first transmission to `flow`.
    ///
    /// The request bytes are kept (zero-copy) for retransmissions and, for an
    /// INVITE, to build the ACK of a 300-699 response.
    pub fn send_request(
        &mut self,
        flow: Flow,
        request: Bytes,
        now: Instant,
    ) -> Result<ClientKey, TxError> {
        let msg = SipMessage::parse(request).map_err(|_| TxError::Unparsable)?;
        let method = msg.method().ok_or(TxError::NotARequest)?.clone();
        if method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        let branch = msg
            .branch()
            .filter(|b| key::has_magic_cookie(b))
            .ok_or(TxError::NoRfc3261Branch)?;
        match msg.cseq() {
            Some(Ok(c)) if c.method == method.as_bytes() => {}
            _ => return Err(TxError::CSeqMismatch),
        }
        let data = msg.message_bytes();
        // The key owns a copy of the branch: a slice would pin the whole request
        // for as long as any copy of the key lives — in the map until Timer K,
        // and in the timer heap's stale Timer F entry for 64·T1 after the
        // request, long after the transaction dropped `data`.
        let key = ClientKey::new(Bytes::copy_from_slice(branch), method);
        self.start_client(flow, data, key, now)
    }

    /// [`send_request`](Self::send_request) for a request the bridge built
    /// itself (a fan-out's NOTIFY): its top Via branch (`branch`, a slice of
    /// `request`, with the magic cookie) and its method are known, so it is not
    /// parsed again.
    pub fn send_built_request(
        &mut self,
        flow: Flow,
        request: Bytes,
        branch: Bytes,
        method: Method,
        now: Instant,
    ) -> Result<ClientKey, TxError> {
        if method == Method::Ack {
            return Err(TxError::AckIsNotATransaction);
        }
        if !key::has_magic_cookie(&branch) {
            return Err(TxError::NoRfc3261Branch);
        }
        #[cfg(debug_assertions)]
        {
            // what send_request would have found
            let msg = SipMessage::parse(request.clone()).expect("a built request parses");
            debug_assert_eq!(msg.method(), Some(&method));
            debug_assert_eq!(msg.branch(), Some(&branch[..]));
            debug_assert!(
                msg.cseq()
                    .and_then(|c| c.ok())
                    .is_some_and(|c| c.method == method.as_bytes())
            );
        }
        // (a copy, not the slice: see send_request)
        let key = ClientKey::new(Bytes::copy_from_slice(&branch), method);
        self.start_client(flow, request, key, now)
    }

    fn start_client(
        &mut self,
        flow: Flow,
        data: Bytes,
        key: ClientKey,
        now: Instant,
    ) -> Result<ClientKey, TxError> {
        let id = self.new_id();
        // one lookup: the key is hashed once
        let slot = match self.clients.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(TxError::DuplicateTransaction);
            }
            std::collections::hash_map::Entry::Vacant(v) => v,
        };
        let invite = *key.method() == Method::Invite;
        let t = self.timers;
        let mut tx = ClientTx {
            id,
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            flow,
            data: data.clone(),
            interval: t.t1,
            retransmit_at: None,
            timeout_at: Some(now + t.t1x64()),
            retransmits_left: None,
        };
        if !flow.transport.is_reliable() {
            tx.retransmit_at = Some(now + t.t1);
            self.queue.push(
                now + t.t1,
                id,
                TimerKind::Retransmit,
                TxKey::Client(key.clone()),
            );
        }
        self.queue.push(
            now + t.t1x64(),
            id,
            TimerKind::Timeout,
            TxKey::Client(key.clone()),
        );
        slot.insert(tx);
        self.out.push_back(Transmit { flow, data });
        self.maintain();
        Ok(key)
    }

    /// Feed a response. It is matched by top Via branch and CSeq method.
    pub fn on_response(&mut self, msg: &SipMessage, now: Instant) -> ResponseDisposition {
        let Some(code) = msg.status() else {
            return ResponseDisposition::Stray;
        };
        let Some(lookup) = ClientKey::for_response(msg) else {
            return ResponseDisposition::Stray;
        };
        // Hand out the stored key: the lookup key borrows the response's buffer.
        let Some(key) = self.clients.get_key_value(&lookup).map(|(k, _)| k.clone()) else {
            return ResponseDisposition::Stray;
        };
        let Some(tx) = self.clients.get_mut(&key) else {
            return ResponseDisposition::Stray;
        };
        if !(100..=699).contains(&code) || msg.defect().is_some() {
            return ResponseDisposition::Absorbed;
        }
        let t = self.timers;
        let reliable = tx.flow.transport.is_reliable();
        let mut after = After::Keep;
        let disposition = if tx.invite {
            match tx.state {
                ClientState::Calling | ClientState::Proceeding => {
                    tx.retransmit_at = None;
                    if code < 200 {
                        // Timer B only covers Calling; the TU's Timer C takes over.
                        tx.state = ClientState::Proceeding;
                        tx.timeout_at = None;
                    } else if code < 300 {
                        tx.state = ClientState::Accepted;
                        tx.data = Bytes::new();
                        let at = now + t.t1x64();
                        tx.timeout_at = Some(at);
                        self.queue
                            .push(at, tx.id, TimerKind::Timeout, TxKey::Client(key.clone()));
                    } else {
                        tx.state = ClientState::Completed;
                        tx.data = build_ack(&tx.data, msg).unwrap_or_default();
                        if !tx.data.is_empty() {
                            self.out.push_back(Transmit {
                                flow: tx.flow,
                                data: tx.data.clone(),
                            });
                        }
                        if reliable {
                            tx.timeout_at = None;
                            after = After::Terminate;
                        } else {
                            let at = now + t.timer_d();
                            tx.timeout_at = Some(at);
                            self.queue.push(
                                at,
                                tx.id,
                                TimerKind::Timeout,
                                TxKey::Client(key.clone()),
                            );
                        }
                    }
                    ResponseDisposition::PassUp(key.clone())
                }
                ClientState::Accepted if (200..300).contains(&code) => {
                    ResponseDisposition::PassUp(key.clone())
                }
                ClientState::Completed if code >= 300 => {
                    if !tx.data.is_empty() {
                        self.out.push_back(Transmit {
                            flow: tx.flow,
                            data: tx.data.clone(),
                        });
                    }
                    ResponseDisposition::Absorbed
                }
                _ => ResponseDisposition::Absorbed,
            }
        } else {
            match tx.state {
                ClientState::Trying | ClientState::Proceeding if code < 200 => {
                    // Timer E keeps its current deadline; from then on it runs every T2.
                    tx.state = ClientState::Proceeding;
                    ResponseDisposition::PassUp(key.clone())
                }
                ClientState::Trying | ClientState::Proceeding => {
                    tx.state = ClientState::Completed;
                    tx.retransmit_at = None;
                    tx.data = Bytes::new();
                    if reliable {
                        tx.timeout_at = None;
                        after = After::Terminate;
                    } else {
                        let at = now + t.t4;
                        tx.timeout_at = Some(at);
                        self.queue
                            .push(at, tx.id, TimerKind::Timeout, TxKey::Client(key.clone()));
                    }
                    ResponseDisposition::PassUp(key.clone())
                }
                _ => ResponseDisposition::Absorbed,
            }
        };
        if let After::Terminate = after {
            self.remove_client(&key);
        }
        self.maintain();
        disposition
    }

    /// Drop a client transaction without further events, e.g. an INVITE in
    /// Proceeding whose CANCEL got no final response within 64·T1 (RFC 3261 §9.1).
    /// Returns whether it existed.
    pub fn terminate_client(&mut self, key: &ClientKey) -> bool {
        let found = self.clients.remove(key).is_some();
        self.maintain();
        found
    }

    fn remove_client(&mut self, key: &ClientKey) {
        if let Some((k, _)) = self.clients.remove_entry(key) {
            self.events.push_back(TxEvent::Terminated(TxKey::Client(k)));
        }
    }

    pub(super) fn fire_client(&mut self, key: &ClientKey, e: &TimerEntry, now: Instant) {
        let t = self.timers;
        let Some(tx) = self.clients.get_mut(key) else {
            return;
        };
        if tx.id != e.id || tx.deadline(e.kind) != Some(e.at) {
            return;
        }
        match e.kind {
            TimerKind::Retransmit => {
                tx.retransmit_at = None;
                match tx.retransmits_left {
                    Some(0) => return,
                    Some(n) => tx.retransmits_left = Some(n - 1),
                    None => {}
                }
                let interval = match tx.state {
                    ClientState::Calling => tx.interval.saturating_mul(2),
                    ClientState::Trying => tx.interval.saturating_mul(2).min(t.t2),
                    ClientState::Proceeding if !tx.invite => t.t2,
                    _ => return,
                };
                tx.interval = interval;
                self.out.push_back(Transmit {
                    flow: tx.flow,
                    data: tx.data.clone(),
                });
                let at = next_deadline(e.at, interval, now);
                tx.retransmit_at = Some(at);
                self.queue
                    .push(at, tx.id, TimerKind::Retransmit, TxKey::Client(key.clone()));
            }
            TimerKind::Timeout => {
                tx.timeout_at = None;
                tx.retransmit_at = None;
                if matches!(
                    tx.state,
                    ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                ) {
                    // Timer B (Calling) or F (Trying/Proceeding): no final response.
                    self.events.push_back(TxEvent::Timeout(key.clone()));
                }
                // Timers D, K, M just end the transaction.
                self.remove_client(key);
            }
        }
    }

    /// Retransmit this client transaction's request at most `n` more times
    /// (Timer F still decides when it times out): for a request to a peer
    /// that has not shown its source address is real, so that a spoofed
    /// request does not turn the bridge into a reflector.
    pub fn limit_retransmits(&mut self, key: &ClientKey, n: u32) {
        if let Some(tx) = self.clients.get_mut(key) {
            tx.retransmits_left = Some(n);
        }
    }

    /// Current state of a client transaction; `None` once terminated.
    /// Where the request of the client transaction `response` matches went
    /// (`None`: no transaction matches, a stray). A response is only taken from
    /// there.
    pub fn response_flow(&self, response: &SipMessage) -> Option<Flow> {
        let key = ClientKey::for_response(response)?;
        self.clients.get(&key).map(|tx| tx.flow)
    }

    pub fn client_state(&self, key: &ClientKey) -> Option<ClientState> {
        self.clients.get(key).map(|tx| tx.state)
    }

    /// Client transactions still waiting for a final response (Calling,
    /// Trying, Proceeding); those in Completed/Accepted only absorb strays.
    pub fn awaiting_final(&self) -> usize {
        self.clients
            .values()
            .filter(|tx| {
                matches!(
                    tx.state,
                    ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                )
            })
            .count()
    }
}

/// The ACK for a 300-699 response to `invite` (RFC 3261 §17.1.1.3): the INVITE's
/// Request-URI, top Via only, Route headers, From, Call-ID and CSeq number; To from
/// the response (with its tag); Max-Forwards 70; no body.
fn build_ack(invite: &Bytes, response: &SipMessage) -> Option<Bytes> {
    let req = SipMessage::parse(invite.clone()).ok()?;
    crate::sip::builder::invite_transaction_request(
        &req,
        &Method::Ack,
        response.header_value(HeaderName::To),
    )
}
