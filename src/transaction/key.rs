//! Transaction keys and how a message is matched to them (RFC 3261 §17.1.3 and
//! §17.2.3).
//!
//! Keys built for a *lookup* borrow the message's buffer (zero-copy `Bytes`
//! slices), so matching a message never allocates. Keys that are *stored* are
//! compacted into one small private buffer ([`ServerKey::compact`]) so that a live
//! transaction does not pin a large receive buffer.

use crate::sip::{Method, SipMessage, Via};
use bytes::{Bytes, BytesMut};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The RFC 3261 branch prefix. A branch that starts with it is globally unique and
/// is the whole server-side key (with sent-by and method); one that does not comes
/// from an RFC 2543 peer and forces the legacy field-by-field match.
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

/// `Bytes` compared and hashed ASCII-case-insensitively (Via host names and branch
/// tokens: RFC 3261 §7.3.1 makes parameter values case-insensitive unless stated
/// otherwise, and host names are always case-insensitive).
#[derive(Clone)]
pub(crate) struct CiBytes(pub(crate) Bytes);

impl PartialEq for CiBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}
impl Eq for CiBytes {}

impl Hash for CiBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        // Lower-case through a small stack buffer: no allocation, few hasher calls.
        let mut chunk = [0u8; 32];
        for part in self.0.chunks(chunk.len()) {
            let out = &mut chunk[..part.len()];
            out.copy_from_slice(part);
            out.make_ascii_lowercase();
            state.write(out);
        }
    }
}

impl std::fmt::Debug for CiBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Identifies a client transaction: the branch of the Via we put on the request and
/// the request's method (RFC 3261 §17.1.3). A CANCEL shares its INVITE's branch and
/// is a different transaction because the method differs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    branch: Bytes,
    method: Method,
}

impl ClientKey {
    /// The branch of the request's top Via.
    pub fn branch(&self) -> &[u8] {
        &self.branch
    }
    /// The request method (never ACK).
    pub fn method(&self) -> &Method {
        &self.method
    }

    pub(crate) fn new(branch: Bytes, method: Method) -> ClientKey {
        ClientKey { branch, method }
    }

    /// The key a response belongs to: its top Via branch and its CSeq method.
    pub(crate) fn for_response(msg: &SipMessage) -> Option<ClientKey> {
        let branch = msg.branch()?;
        let cseq = msg.cseq()?.ok()?;
        Some(ClientKey {
            branch: sub_bytes(msg.buffer(), branch),
            method: Method::from_bytes(cseq.method),
        })
    }
}

/// Identifies a server transaction (RFC 3261 §17.2.3).
///
/// For an RFC 3261 branch (magic cookie `z9hG4bK`): branch + sent-by of the top
/// Via (host case-insensitive, port defaulted to 5060, or 5061 for TLS) + method,
/// where an ACK is looked up under INVITE. Otherwise (RFC 2543 peers) the legacy
/// key: Request-URI, To tag, From tag, Call-ID, CSeq number, the top Via as written
/// and the method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey(Inner);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Inner {
    Branch {
        branch: CiBytes,
        host: CiBytes,
        port: u16,
        method: Method,
    },
    /// Shared, so that cloning a key into a timer entry never allocates.
    Legacy(Arc<Legacy>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Legacy {
    request_uri: Bytes,
    /// Empty when the request has no To tag.
    to_tag: Bytes,
    from_tag: Bytes,
    call_id: Bytes,
    cseq: u32,
    top_via: Bytes,
    method: Method,
}

impl ServerKey {
    /// The method of the request that created the transaction (INVITE for the
    /// transaction an ACK belongs to).
    pub fn method(&self) -> &Method {
        match &self.0 {
            Inner::Branch { method, .. } => method,
            Inner::Legacy(l) => &l.method,
        }
    }

    /// Whether this transaction was matched with the RFC 2543 fallback rules.
    pub fn is_legacy(&self) -> bool {
        matches!(self.0, Inner::Legacy(_))
    }

    /// The key of `msg` as a member of a transaction created by a `method` request:
    /// `method` is the request's own method, or INVITE for an ACK or for the INVITE
    /// a CANCEL refers to. `None` when the top Via (or, for the legacy match, CSeq)
    /// is missing or malformed.
    pub(crate) fn lookup(msg: &SipMessage, method: Method) -> Option<ServerKey> {
        let via = msg.top_via()?.ok()?;
        let buf = msg.buffer();
        if let Some(branch) = rfc3261_branch(&via) {
            let (host, port) = via.sent_by();
            return Some(ServerKey(Inner::Branch {
                branch: CiBytes(sub_bytes(buf, branch)),
                host: CiBytes(sub_bytes(buf, host.as_bytes())),
                port,
                method,
            }));
        }
        let cseq = msg.cseq()?.ok()?;
        let via_span = msg.top_via_span()?;
        Some(ServerKey(Inner::Legacy(Arc::new(Legacy {
            request_uri: sub_bytes(buf, msg.request_uri()?),
            to_tag: msg.to_tag().map(|t| sub_bytes(buf, t)).unwrap_or_default(),
            from_tag: msg
                .from_tag()
                .map(|t| sub_bytes(buf, t))
                .unwrap_or_default(),
            call_id: sub_bytes(buf, msg.call_id()?),
            cseq: cseq.seq,
            top_via: msg.slice_bytes(via_span),
            method,
        }))))
    }

    /// For a legacy key: the same key with no To tag (an ACK to an initial INVITE
    /// carries the To tag of our response, which the INVITE did not have).
    pub(crate) fn without_to_tag(&self) -> Option<ServerKey> {
        match &self.0 {
            Inner::Legacy(l) if !l.to_tag.is_empty() => {
                let mut l = Legacy::clone(l);
                l.to_tag = Bytes::new();
                Some(ServerKey(Inner::Legacy(Arc::new(l))))
            }
            _ => None,
        }
    }

    /// A copy whose byte fields live in one private buffer, for storing: a lookup
    /// key borrows the (possibly large) receive buffer of the message.
    pub(crate) fn compact(&self) -> ServerKey {
        match &self.0 {
            Inner::Branch {
                branch,
                host,
                port,
                method,
            } => {
                let [branch, host] = pack([&branch.0, &host.0]);
                ServerKey(Inner::Branch {
                    branch: CiBytes(branch),
                    host: CiBytes(host),
                    port: *port,
                    method: method.clone(),
                })
            }
            Inner::Legacy(l) => {
                let [request_uri, to_tag, from_tag, call_id, top_via] = pack([
                    &l.request_uri,
                    &l.to_tag,
                    &l.from_tag,
                    &l.call_id,
                    &l.top_via,
                ]);
                ServerKey(Inner::Legacy(Arc::new(Legacy {
                    request_uri,
                    to_tag,
                    from_tag,
                    call_id,
                    cseq: l.cseq,
                    top_via,
                    method: l.method.clone(),
                })))
            }
        }
    }
}

/// The branch of a Via if it is an RFC 3261 one (magic cookie, case-insensitive,
/// and something after it).
fn rfc3261_branch<'a>(via: &Via<'a>) -> Option<&'a [u8]> {
    via.branch().filter(|b| has_magic_cookie(b))
}

/// Whether a branch value carries the RFC 3261 magic cookie.
pub(crate) fn has_magic_cookie(branch: &[u8]) -> bool {
    branch.len() > MAGIC_COOKIE.len()
        && branch[..MAGIC_COOKIE.len()].eq_ignore_ascii_case(MAGIC_COOKIE)
}

/// Copy several byte strings into one allocation and hand back slices of it.
fn pack<const N: usize>(parts: [&Bytes; N]) -> [Bytes; N] {
    let total = parts.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for p in parts {
        buf.extend_from_slice(p);
    }
    let all = buf.freeze();
    let mut at = 0;
    parts.map(|p| {
        let s = all.slice(at..at + p.len());
        at += p.len();
        s
    })
}

/// `sub` as a zero-copy slice of `buf` when it lies inside it, else a copy (never
/// panics, unlike `Bytes::slice_ref` on a foreign slice).
pub(crate) fn sub_bytes(buf: &Bytes, sub: &[u8]) -> Bytes {
    let base = buf.as_ptr() as usize;
    let start = sub.as_ptr() as usize;
    if start >= base && start + sub.len() <= base + buf.len() {
        let off = start - base;
        buf.slice(off..off + sub.len())
    } else {
        Bytes::copy_from_slice(sub)
    }
}
