//! Server transactions (RFC 3261 §17.2): the INVITE (§17.2.1 + RFC 6026) and
//! non-INVITE (§17.2.2 + RFC 4320) machines, as the server half of
//! [`TransactionLayer`].

use super::{
    After, RequestDisposition, ServerKey, ServerState, TimerEntry, TimerKind, TransactionLayer,
    TxError, TxEvent, TxKey, next_deadline, status_code,
};
use crate::flow::{Flow, Transmit};
use crate::sip::{MessageBuilder, Method, SipMessage};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct ServerTx {
    pub(super) id: u64,
    invite: bool,
    state: ServerState,
    reply_to: Flow,
    first_rx: Instant,
    /// The request, kept only by a non-INVITE in Trying (to build the late 100).
    request: Bytes,
    /// The last response sent (re-sent on request retransmissions and by Timer G).
    response: Bytes,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
}

impl ServerTx {
    pub(super) fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        match kind {
            TimerKind::Retransmit => self.retransmit_at,
            TimerKind::Timeout => self.timeout_at,
        }
    }
}

impl TransactionLayer {
    /// Feed a request that arrived on `from`; responses of its transaction go to
    /// `reply_to` (the caller applies RFC 3261 §18.2.2 / RFC 3581 to pick it).
    ///
    /// A new non-INVITE request is kept (zero-copy) until its final response, to
    /// build the late 100 from. A new INVITE gets `100 Trying` at once. A retransmission is answered from
    /// the stored response where the state calls for it, and a non-INVITE
    /// retransmission in Trying at least T2 after the first reception gets the
    /// late `100 Trying` of RFC 4320.
    pub fn on_request(
        &mut self,
        msg: &SipMessage,
        from: Flow,
        reply_to: Flow,
        now: Instant,
    ) -> RequestDisposition {
        let Some(method) = msg.method() else {
            return RequestDisposition::Malformed;
        };
        if *method == Method::Ack {
            return self.on_ack(msg, now);
        }
        let Some(key) = ServerKey::lookup(msg, method.clone()) else {
            return RequestDisposition::Malformed;
        };
        if let Some(tx) = self.servers.get_mut(&key) {
            match tx.state {
                ServerState::Trying => {
                    if now.saturating_duration_since(tx.first_rx) >= self.timers.t2 {
                        // RFC 4320 §4.1: the client's Timer E has reached T2.
                        if let Ok(req) = SipMessage::parse(tx.request.clone()) {
                            tx.response = trying_for(&req);
                            tx.request = Bytes::new();
                            tx.state = ServerState::Proceeding;
                            self.out.push_back(Transmit {
                                flow: tx.reply_to,
                                data: tx.response.clone(),
                            });
                        }
                    }
                }
                ServerState::Proceeding | ServerState::Completed => {
                    self.out.push_back(Transmit {
                        flow: tx.reply_to,
                        data: tx.response.clone(),
                    });
                }
                // Accepted: the TU re-sends its 2xx; Confirmed: nothing to send.
                ServerState::Accepted | ServerState::Confirmed => {}
            }
            tracing::trace!(%from, "request retransmission");
            return RequestDisposition::Retransmission;
        }

        let key = key.compact();
        let invite = *method == Method::Invite;
        let id = self.new_id();
        let mut tx = ServerTx {
            id,
            invite,
            state: ServerState::Trying,
            reply_to,
            first_rx: now,
            request: Bytes::new(),
            response: Bytes::new(),
            interval: self.timers.t1,
            retransmit_at: None,
            timeout_at: None,
        };
        if invite {
            // §17.2.1: we cannot know the TU answers within 200 ms.
            tx.state = ServerState::Proceeding;
            tx.response = trying_for(msg);
            self.out.push_back(Transmit {
                flow: reply_to,
                data: tx.response.clone(),
            });
        } else {
            tx.request = msg.message_bytes();
            // Not an RFC 3261 timer: forget a transaction the TU never answers once
            // the client has certainly given up (its Timer F).
            let at = now + self.timers.t1x64();
            tx.timeout_at = Some(at);
            self.queue
                .push(at, id, TimerKind::Timeout, TxKey::Server(key.clone()));
        }
        self.servers.insert(key.clone(), tx);
        self.maintain();
        RequestDisposition::New(key)
    }

    fn on_ack(&mut self, msg: &SipMessage, now: Instant) -> RequestDisposition {
        let Some(key) = ServerKey::lookup(msg, Method::Invite) else {
            return RequestDisposition::Malformed;
        };
        let key = if self.servers.contains_key(&key) {
            key
        } else {
            // RFC 2543: the ACK to an initial INVITE carries the To tag of our
            // response, which the INVITE did not have.
            let Some(untagged) = key.without_to_tag() else {
                return RequestDisposition::Ack;
            };
            let matches = self.servers.get(&untagged).is_some_and(|tx| {
                SipMessage::parse(tx.response.clone())
                    .is_ok_and(|r| r.to_tag().is_some() && r.to_tag() == msg.to_tag())
            });
            if !matches {
                return RequestDisposition::Ack;
            }
            untagged
        };
        let Some(tx) = self.servers.get_mut(&key) else {
            return RequestDisposition::Ack;
        };
        match tx.state {
            ServerState::Completed => {
                tx.state = ServerState::Confirmed;
                tx.retransmit_at = None;
                tx.response = Bytes::new();
                if tx.reply_to.transport.is_reliable() {
                    tx.timeout_at = None;
                    self.remove_server(&key);
                } else {
                    let at = now + self.timers.t4;
                    tx.timeout_at = Some(at);
                    self.queue
                        .push(at, tx.id, TimerKind::Timeout, TxKey::Server(key.clone()));
                }
                self.maintain();
                RequestDisposition::AckAbsorbed
            }
            ServerState::Confirmed => RequestDisposition::AckAbsorbed,
            // Accepted: the ACK for our 2xx is the TU's (RFC 6026 §7.1).
            _ => RequestDisposition::Ack,
        }
    }

    /// The TU answers on a server transaction; the status is read from the
    /// Status-Line of `response`, which is sent as is.
    pub fn respond(
        &mut self,
        key: &ServerKey,
        response: Bytes,
        now: Instant,
    ) -> Result<(), TxError> {
        let code = status_code(&response).ok_or(TxError::NotAResponse)?;
        let tx = self.servers.get_mut(key).ok_or(TxError::NoTransaction)?;
        let t = self.timers;
        let reliable = tx.reply_to.transport.is_reliable();
        let mut after = After::Keep;
        if tx.invite {
            match tx.state {
                ServerState::Proceeding | ServerState::Trying => {
                    if code < 200 {
                        tx.state = ServerState::Proceeding;
                        tx.response = response.clone();
                    } else if code < 300 {
                        tx.state = ServerState::Accepted;
                        tx.response = Bytes::new();
                        let at = now + t.t1x64();
                        tx.timeout_at = Some(at);
                        self.queue
                            .push(at, tx.id, TimerKind::Timeout, TxKey::Server(key.clone()));
                    } else {
                        tx.state = ServerState::Completed;
                        tx.response = response.clone();
                        if !reliable {
                            tx.interval = t.t1;
                            let at = now + t.t1;
                            tx.retransmit_at = Some(at);
                            self.queue.push(
                                at,
                                tx.id,
                                TimerKind::Retransmit,
                                TxKey::Server(key.clone()),
                            );
                        }
                        let at = now + t.t1x64();
                        tx.timeout_at = Some(at);
                        self.queue
                            .push(at, tx.id, TimerKind::Timeout, TxKey::Server(key.clone()));
                    }
                }
                ServerState::Accepted if (200..300).contains(&code) => {}
                _ => return Err(TxError::AlreadyFinal),
            }
        } else {
            match tx.state {
                ServerState::Trying | ServerState::Proceeding => {
                    if code < 200 {
                        return Err(TxError::ProvisionalToNonInvite);
                    }
                    if code == 408 {
                        return Err(TxError::Timeout408ToNonInvite);
                    }
                    tx.state = ServerState::Completed;
                    tx.request = Bytes::new();
                    if reliable {
                        tx.timeout_at = None;
                        after = After::Terminate;
                    } else {
                        // kept 64·T1: in the layer's FIFO blocks, not on its own
                        tx.response = self.retained.keep(&response);
                        let at = now + t.t1x64();
                        tx.timeout_at = Some(at);
                        self.queue
                            .push(at, tx.id, TimerKind::Timeout, TxKey::Server(key.clone()));
                    }
                }
                _ => return Err(TxError::AlreadyFinal),
            }
        }
        self.out.push_back(Transmit {
            flow: tx.reply_to,
            data: response,
        });
        if let After::Terminate = after {
            self.remove_server(key);
        }
        self.maintain();
        Ok(())
    }

    /// The live INVITE server transaction a CANCEL refers to (same branch and
    /// sent-by, or the RFC 2543 fields), so the TU can answer it with 487. It is
    /// returned in any state: when [`TransactionLayer::server_state`] shows a final
    /// response was already sent, the CANCEL has no effect beyond its own 200.
    pub fn find_invite_for_cancel(&self, cancel: &SipMessage) -> Option<ServerKey> {
        if cancel.method() != Some(&Method::Cancel) {
            return None;
        }
        let key = ServerKey::lookup(cancel, Method::Invite)?;
        self.servers.get_key_value(&key).map(|(k, _)| k.clone())
    }

    /// Drop a server transaction without further events or transmissions.
    /// Returns whether it existed.
    pub fn terminate_server(&mut self, key: &ServerKey) -> bool {
        let found = self.servers.remove(key).is_some();
        self.maintain();
        found
    }

    fn remove_server(&mut self, key: &ServerKey) {
        if let Some((k, _)) = self.servers.remove_entry(key) {
            self.events.push_back(TxEvent::Terminated(TxKey::Server(k)));
        }
    }

    pub(super) fn fire_server(&mut self, key: &ServerKey, e: &TimerEntry, now: Instant) {
        let t = self.timers;
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        if tx.id != e.id || tx.deadline(e.kind) != Some(e.at) {
            return;
        }
        match e.kind {
            TimerKind::Retransmit => {
                tx.retransmit_at = None;
                if tx.state != ServerState::Completed || !tx.invite {
                    return;
                }
                // Timer G.
                tx.interval = tx.interval.saturating_mul(2).min(t.t2);
                self.out.push_back(Transmit {
                    flow: tx.reply_to,
                    data: tx.response.clone(),
                });
                let at = next_deadline(e.at, tx.interval, now);
                tx.retransmit_at = Some(at);
                self.queue
                    .push(at, tx.id, TimerKind::Retransmit, TxKey::Server(key.clone()));
            }
            TimerKind::Timeout => {
                tx.timeout_at = None;
                tx.retransmit_at = None;
                if tx.invite && tx.state == ServerState::Completed {
                    // Timer H.
                    self.events.push_back(TxEvent::AckTimeout(key.clone()));
                }
                // Timers I, J, L and the unanswered non-INVITE guard.
                self.remove_server(key);
            }
        }
    }

    /// Current state of a server transaction; `None` once terminated.
    pub fn server_state(&self, key: &ServerKey) -> Option<ServerState> {
        self.servers.get(key).map(|tx| tx.state)
    }
}

/// `100 Trying` for `req` (RFC 3261 §8.2.6.1: Timestamp copied, no To tag added).
fn trying_for(req: &SipMessage) -> Bytes {
    let mut b = MessageBuilder::response_to(req, 100, "Trying", None);
    if let Some(ts) = req.header_value_by_name("Timestamp") {
        b.header_bytes("Timestamp", ts);
    }
    b.finish()
}
