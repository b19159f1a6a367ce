//! Sans-IO SIP digest client (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760) for the
//! SUBSCRIBEs the bridge originates upstream and their in-dialog refreshes. (The
//! keep-alive OPTIONS pings go without credentials: any answer, a 401/407
//! included, shows the flow alive, and a challenge to them is not answered.)
//!
//! The subscription manager feeds every 401/407 to its SUBSCRIBEs to
//! [`DigestClient::handle_challenge`] together with the request that was challenged; on `Ok(())` it resends the request (new
//! CSeq/branch) with the headers from [`DigestClient::authorize`]. Every later
//! request also gets [`DigestClient::authorize`] headers: the stored nonce is reused
//! with an incremented `nc` (pre-emptive credentials) until a new challenge replaces
//! it, which saves a round trip per refresh with servers that keep nonces valid.
//!
//! State is kept per protection space, i.e. per (realm, `WWW-` or `Proxy-`):
//! nonce, opaque, chosen algorithm and qop, the cnonce and the last `nc`. It is
//! plain serde data; the password is never serialised (see [`Credentials`]).
//!
//! Loop protection (the FreeSWITCH 401-without-challenge bug, wrong passwords):
//! a challenge is only answered when the challenged request carried no
//! credentials for that realm, or the server says `stale=true` with a new
//! nonce, or (with [`DigestClient::handle_rechallenge`]) the request reused a
//! stored nonce and the challenge brings another; otherwise the credentials
//! were rejected and [`AuthError::Rejected`] is returned. The caller bounds the
//! answers per request (the subscription manager: two per SUBSCRIBE attempt).

mod digest;

pub use digest::{Algorithm, Qop};

use crate::sip::header::ezk_parse;
use crate::sip::{HeaderName, Method, SipMessage};
use crate::util::{Rng, hex};
use digest::{ResponseInput, compute_response, push_quoted_escaped, unescape};
use ezk_sip_types::header::typed::{AkaVersion, AuthChallenge, DigestChallenge, QopOption};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// The account the bridge authenticates upstream with.
///
/// The password is skipped when serialising (state snapshots must not leak it);
/// a deserialised client has an empty password until
/// [`DigestClient::set_credentials`] is called with the configured one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    #[serde(skip_serializing, default)]
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which pair of headers a challenge came in: `WWW-Authenticate` (a UAS or
/// registrar, normally with 401) → `Authorization`, or `Proxy-Authenticate` (a
/// proxy, normally with 407) → `Proxy-Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeKind {
    Www,
    Proxy,
}

impl ChallengeKind {
    /// The challenge header this kind is read from.
    pub fn challenge_header(self) -> HeaderName {
        match self {
            ChallengeKind::Www => HeaderName::WwwAuthenticate,
            ChallengeKind::Proxy => HeaderName::ProxyAuthenticate,
        }
    }

    /// The credentials header answering this kind, as written in requests.
    pub fn credentials_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }

    fn credentials_header_name(self) -> HeaderName {
        match self {
            ChallengeKind::Www => HeaderName::Authorization,
            ChallengeKind::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

/// Why a challenge cannot (or must not) be answered. Each of these ends the
/// retry: the caller treats the request as failed with the original 401/407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The response given to [`DigestClient::handle_challenge`] is not a 401/407.
    NotAChallenge { status: Option<u16> },
    /// A 401/407 without any `WWW-Authenticate`/`Proxy-Authenticate` header
    /// (seen from FreeSWITCH); retrying would loop.
    NoChallenge { status: u16 },
    /// No challenge header could be parsed.
    Malformed { reason: String },
    /// Only non-Digest schemes (e.g. Basic) were offered.
    UnsupportedScheme { scheme: String },
    /// Every challenge for this realm names an algorithm the client cannot
    /// compute (SHA-512-256, AKA, unknown tokens).
    UnsupportedAlgorithm { realm: String, algorithm: String },
    /// The challenge's qop list has neither `auth` nor `auth-int`, or a `-sess`
    /// algorithm comes without any qop (it needs a cnonce).
    UnsupportedQop { realm: String, qop: String },
    /// The server re-challenged although the request carried credentials for the
    /// realm (same nonce, or a fresh nonce without `stale=true`): the password or
    /// user name is wrong.
    Rejected { realm: String, user: String },
    /// The challenge names a realm other than the account's: the credentials
    /// are not offered to it.
    ForeignRealm { realm: String, expected: String },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NotAChallenge { status: Some(s) } => {
                write!(f, "status {s} is not an authentication challenge")
            }
            AuthError::NotAChallenge { status: None } => {
                f.write_str("a request is not an authentication challenge")
            }
            AuthError::NoChallenge { status } => write!(
                f,
                "{status} response without WWW-Authenticate/Proxy-Authenticate header"
            ),
            AuthError::Malformed { reason } => write!(f, "malformed digest challenge: {reason}"),
            AuthError::UnsupportedScheme { scheme } => {
                write!(f, "unsupported authentication scheme {scheme}")
            }
            AuthError::UnsupportedAlgorithm { realm, algorithm } => write!(
                f,
                "unsupported digest algorithm {algorithm} for realm {realm} (supported: MD5, MD5-sess, SHA-256, SHA-256-sess)"
            ),
            AuthError::UnsupportedQop { realm, qop } => write!(
                f,
                "no usable qop for realm {realm} (offered: {qop}; supported: auth, auth-int, or none with non-sess algorithms)"
            ),
            AuthError::Rejected { realm, user } => {
                write!(f, "credentials for user {user} rejected by realm {realm}")
            }
            AuthError::ForeignRealm { realm, expected } => write!(
                f,
                "challenge for realm {realm} not answered (the account's realm is {expected})"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

/// What is stored for one protection space (realm + kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSpace {
    pub kind: ChallengeKind,
    /// As written between the quotes of the challenge (echoed verbatim).
    pub realm: String,
    /// As written between the quotes of the challenge (echoed verbatim).
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `None`: the challenge offered no qop (RFC 2069 compatibility).
    pub qop: Option<Qop>,
    /// Last nonce count sent with this nonce (0: not used yet).
    pub nc: u32,
    /// Client nonce, fresh for every new server nonce.
    pub cnonce: String,
}

/// The digest client: credentials plus per-realm challenge state. See the module
/// documentation for the flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestClient {
    credentials: Credentials,
    spaces: Vec<AuthSpace>,
}

/// One answerable challenge from a response.
struct Candidate {
    kind: ChallengeKind,
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    qop: Option<Qop>,
    stale: bool,
}

impl DigestClient {
    pub fn new(credentials: Credentials) -> Self {
        DigestClient {
            credentials,
            spaces: Vec::new(),
        }
    }

    /// Replace the credentials (config reload, or after deserialising state, which
    /// carries no password). The stored challenges are kept.
    pub fn set_credentials(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    pub fn username(&self) -> &str {
        &self.credentials.username
    }

    /// Any challenge stored, i.e. [`DigestClient::authorize`] will add headers.
    pub fn has_credentials(&self) -> bool {
        !self.spaces.is_empty()
    }

    /// The stored protection spaces (for inspection and logging).
    pub fn spaces(&self) -> &[AuthSpace] {
        &self.spaces
    }

    /// Forget every stored challenge (e.g. when the upstream target changes).
    pub fn clear(&mut self) {
        self.spaces.clear();
    }

    /// A 401/407 `response` arrived for `challenged` (the request we sent).
    /// `Ok(())`: the challenges were stored; resend the request with
    /// [`DigestClient::authorize`] headers. `Err`: do not resend.
    ///
    /// Every `WWW-Authenticate` and `Proxy-Authenticate` header is read (a forking
    /// proxy may aggregate several, RFC 3261 §16.7). Per realm the best supported
    /// algorithm is chosen (SHA-256 over MD5). Non-Digest and unparsable
    /// challenges are skipped when another challenge is usable. The challenge is
    /// stored even when it means rejection, so that a later attempt starts from
    /// the server's newest nonce.
    pub fn handle_challenge(
        &mut self,
        response: &SipMessage,
        challenged: &SipMessage,
        rng: &mut Rng,
    ) -> Result<(), AuthError> {
        self.handle_challenge_in_realm(response, challenged, None, rng)
            .map(|_| ())
    }

    /// [`DigestClient::handle_challenge`], answering only challenges for
    /// `realm` (when given): a challenge naming any other realm is
    /// [`AuthError::ForeignRealm`] and nothing of it is stored. `Ok`: the realm
    /// answered (unescaped).
    pub fn handle_challenge_in_realm(
        &mut self,
        response: &SipMessage,
        challenged: &SipMessage,
        realm: Option<&str>,
        rng: &mut Rng,
    ) -> Result<String, AuthError> {
        self.handle_rechallenge(response, challenged, realm, false, rng)
    }

    /// [`DigestClient::handle_challenge_in_realm`] for a request whose
    /// credentials may have `reused` a stored nonce (pre-emptive credentials,
    /// not the answer to a challenge of this very request): then a challenge
    /// with another nonce is taken even without `stale=true` (servers that
    /// expire nonces do not all say so). The same nonce again is always a
    /// rejection, so a server repeating one nonce forever is never answered
    /// twice.
    pub fn handle_rechallenge(
        &mut self,
        response: &SipMessage,
        challenged: &SipMessage,
        realm: Option<&str>,
        reused: bool,
        rng: &mut Rng,
    ) -> Result<String, AuthError> {
        let status = match response.status() {
            Some(s @ (401 | 407)) => s,
            other => return Err(AuthError::NotAChallenge { status: other }),
        };
        let mut saw_header = false;
        let mut problem: Option<AuthError> = None;
        let mut best: Vec<Candidate> = Vec::new();
        let mut unsupported: Vec<(ChallengeKind, AuthError)> = Vec::new();
        for kind in [ChallengeKind::Www, ChallengeKind::Proxy] {
            for h in response.headers_named(kind.challenge_header()) {
                saw_header = true;
                match parse_challenge(response.value(h)) {
                    Ok((AuthChallenge::Digest(c), empty_opaque)) => {
                        match candidate(kind, &c, empty_opaque) {
                            Ok(cand) => insert_preferred(&mut best, cand),
                            Err(e @ AuthError::Malformed { .. }) => {
                                problem.get_or_insert(e);
                            }
                            Err(e) => unsupported.push((kind, e)),
                        }
                    }
                    Ok((AuthChallenge::Other(other), _)) => {
                        problem.get_or_insert(AuthError::UnsupportedScheme {
                            scheme: other.scheme.to_string(),
                        });
                    }
                    Err(reason) => {
                        problem.get_or_insert(AuthError::Malformed { reason });
                    }
                }
            }
        }
        if !saw_header {
            return Err(AuthError::NoChallenge { status });
        }
        // A realm we cannot answer at all would be challenged again forever.
        for (kind, err) in unsupported {
            let realm = match &err {
                AuthError::UnsupportedAlgorithm { realm, .. }
                | AuthError::UnsupportedQop { realm, .. } => realm.as_str(),
                _ => "",
            };
            if !best.iter().any(|c| c.kind == kind && c.realm == realm) {
                return Err(err);
            }
        }
        if best.is_empty() {
            return Err(problem.unwrap_or(AuthError::Malformed {
                reason: "no digest challenge".into(),
            }));
        }

        if let Some(expected) = realm
            && let Some(c) = best.iter().find(|c| unescape(&c.realm) != expected)
        {
            return Err(AuthError::ForeignRealm {
                realm: unescape(&c.realm).into_owned(),
                expected: expected.to_owned(),
            });
        }
        let answered_realm = unescape(&best[0].realm).into_owned();
        let mut rejected = None;
        for cand in best {
            let answered = sent_nonce(challenged, cand.kind, &cand.realm);
            let is_rejection = match &answered {
                None => false,
                Some(sent) => *sent == cand.nonce || !(cand.stale || reused),
            };
            if is_rejection && rejected.is_none() {
                rejected = Some(AuthError::Rejected {
                    realm: unescape(&cand.realm).into_owned(),
                    user: self.credentials.username.clone(),
                });
            }
            self.store(cand, rng);
        }
        match rejected {
            Some(e) => Err(e),
            None => Ok(answered_realm),
        }
    }

    /// Header lines `(name, value)` to add to a new request with this method,
    /// Request-URI (the digest `uri`, which differs between an initial SUBSCRIBE
    /// and its in-dialog refreshes) and body (hashed for `auth-int` only). Empty if
    /// no challenge is known yet. Each call uses the next `nc` of every stored nonce.
    pub fn authorize(
        &mut self,
        method: &Method,
        request_uri: &str,
        body: &[u8],
        rng: &mut Rng,
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(self.spaces.len());
        for space in &mut self.spaces {
            if space.cnonce.is_empty() {
                space.cnonce = new_cnonce(rng);
            }
            space.nc = space.nc.wrapping_add(1).max(1);
            let value = credentials_value(&self.credentials, space, method, request_uri, body);
            out.push((space.kind.credentials_header(), value));
        }
        out
    }

    fn store(&mut self, cand: Candidate, rng: &mut Rng) {
        let existing = self
            .spaces
            .iter_mut()
            .find(|s| s.kind == cand.kind && s.realm == cand.realm);
        match existing {
            Some(s) if s.nonce == cand.nonce && s.algorithm == cand.algorithm => {
                // Same nonce: keep counting (a server must never see an nc twice).
                s.opaque = cand.opaque;
                s.qop = cand.qop;
            }
            Some(s) => {
                s.nonce = cand.nonce;
                s.opaque = cand.opaque;
                s.algorithm = cand.algorithm;
                s.qop = cand.qop;
                s.nc = 0;
                s.cnonce = new_cnonce(rng);
            }
            None => self.spaces.push(AuthSpace {
                kind: cand.kind,
                realm: cand.realm,
                nonce: cand.nonce,
                opaque: cand.opaque,
                algorithm: cand.algorithm,
                qop: cand.qop,
                nc: 0,
                cnonce: new_cnonce(rng),
            }),
        }
    }
}

/// 32 hex digits (128 bits) from the injected random source.
fn new_cnonce(rng: &mut Rng) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    hex(&b)
}

/// Parse one challenge header value into the challenge and whether it carried an
/// empty `opaque=""` (see [`normalise_challenge`]).
fn parse_challenge(raw: &[u8]) -> Result<(AuthChallenge, bool), String> {
    let (value, empty_opaque) = normalise_challenge(raw);
    ezk_parse::<AuthChallenge>(&value)
        .map(|c| (c, empty_opaque))
        .map_err(|e| format!("{e} in {:?}", String::from_utf8_lossy(raw)))
}

/// ezk's challenge grammar is narrower than RFC 3261 §25.1 in ways real servers
/// hit: the scheme must be spelled `Digest` (it is case-insensitive), parameter
/// names are matched case-sensitively, and an empty quoted string (`opaque=""`)
/// does not parse. A Digest challenge with any of these is rewritten: scheme and
/// names canonicalised, empty-valued parameters dropped (the returned flag says
/// whether one was `opaque`, which must still be echoed). Anything else is passed
/// through untouched and left to ezk to accept or reject.
fn normalise_challenge(raw: &[u8]) -> (Cow<'_, [u8]>, bool) {
    let (scheme, rest) = split_scheme(raw);
    if !scheme.eq_ignore_ascii_case(b"digest") {
        return (Cow::Borrowed(raw), false);
    }
    let mut changed = scheme != b"Digest";
    let mut empty_opaque = false;
    let mut out = Vec::with_capacity(raw.len() + 8);
    out.extend_from_slice(b"Digest");
    let mut first = true;
    for (name, value) in auth_params(rest) {
        if value == Some(&b"\"\""[..]) {
            changed = true;
            empty_opaque |= name.eq_ignore_ascii_case(b"opaque");
            continue;
        }
        changed |= name.iter().any(u8::is_ascii_uppercase);
        out.extend_from_slice(if first { b" " } else { b", " });
        first = false;
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        if let Some(v) = value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    if changed {
        (Cow::Owned(out), empty_opaque)
    } else {
        (Cow::Borrowed(raw), false)
    }
}

/// `(auth-scheme, rest)` of a challenge or credentials value.
fn split_scheme(raw: &[u8]) -> (&[u8], &[u8]) {
    let scheme_len = raw
        .iter()
        .position(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(raw.len());
    raw.split_at(scheme_len)
}

/// The comma-separated `name[=value]` items after the scheme, trimmed; values
/// keep their quotes.
fn auth_params(rest: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    split_outside_quotes(rest).map(|part| {
        let part = trim_lws(part);
        match part.iter().position(|&c| c == b'=') {
            Some(e) => (
                trim_lws(part.get(..e).unwrap_or_default()),
                Some(trim_lws(part.get(e + 1..).unwrap_or_default())),
            ),
            None => (part, None),
        }
    })
}

/// Split at commas that are not inside a quoted string (honouring `\x` escapes).
fn split_outside_quotes(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    let mut escaped = false;
    b.split(move |&c| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => return true,
            _ => {}
        }
        false
    })
}

fn trim_lws(b: &[u8]) -> &[u8] {
    let is_lws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let s = b.iter().position(|c| !is_lws(c)).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !is_lws(c)).map_or(s, |e| e + 1);
    b.get(s..e).unwrap_or_default()
}

/// Turn a parsed challenge into something we can answer, or say why not.
fn candidate(
    kind: ChallengeKind,
    c: &DigestChallenge,
    empty_opaque: bool,
) -> Result<Candidate, AuthError> {
    use ezk_sip_types::header::typed::Algorithm as EzkAlgorithm;
    let realm = c.realm.to_string();
    if c.nonce.is_empty() {
        return Err(AuthError::Malformed {
            reason: format!("empty nonce for realm {realm}"),
        });
    }
    let algorithm = match &c.algorithm {
        EzkAlgorithm::AlgorithmValue(v) => Algorithm::from_token(&v.to_string()),
        EzkAlgorithm::AkaNamespace(_) => None,
    }
    .ok_or_else(|| AuthError::UnsupportedAlgorithm {
        realm: realm.clone(),
        algorithm: algorithm_text(&c.algorithm),
    })?;
    let qop = if c.qop.is_empty() {
        if algorithm.is_sess() {
            return Err(AuthError::UnsupportedQop {
                realm,
                qop: format!("none (required by {algorithm})"),
            });
        }
        None
    } else if c.qop.contains(&QopOption::Auth) {
        Some(Qop::Auth)
    } else if c.qop.contains(&QopOption::AuthInt) {
        Some(Qop::AuthInt)
    } else {
        let offered: Vec<String> = c.qop.iter().map(|q| q.to_string()).collect();
        return Err(AuthError::UnsupportedQop {
            realm,
            qop: offered.join(","),
        });
    };
    Ok(Candidate {
        kind,
        realm,
        nonce: c.nonce.to_string(),
        opaque: match &c.opaque {
            Some(o) => Some(o.to_string()),
            None if empty_opaque => Some(String::new()),
            None => None,
        },
        algorithm,
        qop,
        stale: c.stale,
    })
}

fn algorithm_text(a: &ezk_sip_types::header::typed::Algorithm) -> String {
    use ezk_sip_types::header::typed::Algorithm as EzkAlgorithm;
    match a {
        EzkAlgorithm::AlgorithmValue(v) => v.to_string(),
        EzkAlgorithm::AkaNamespace((AkaVersion::Other(v), alg)) => format!("{v}-{alg}"),
        EzkAlgorithm::AkaNamespace((v, alg)) => format!("{v}-{alg}"),
    }
}

/// Keep one candidate per (kind, realm): the one with the preferred algorithm
/// (the first of equals).
fn insert_preferred(best: &mut Vec<Candidate>, cand: Candidate) {
    match best
        .iter_mut()
        .find(|c| c.kind == cand.kind && c.realm == cand.realm)
    {
        Some(c) if cand.algorithm.preference() > c.algorithm.preference() => *c = cand,
        Some(_) => {}
        None => best.push(cand),
    }
}

/// The nonce of the digest credentials `request` carried for (kind, realm), if
/// it carried any. Read with a small quote-aware scanner rather than ezk, whose
/// quoted-string grammar does not handle `\"` escapes: a credentials header we
/// wrote ourselves must always be recognised, or a rejected password would be
/// retried forever.
fn sent_nonce(request: &SipMessage, kind: ChallengeKind, realm: &str) -> Option<String> {
    request
        .headers_named(kind.credentials_header_name())
        .find_map(|h| {
            let (scheme, rest) = split_scheme(request.value(h));
            if !scheme.eq_ignore_ascii_case(b"digest") {
                return None;
            }
            let mut this_realm = None;
            let mut nonce = None;
            for (name, value) in auth_params(rest) {
                let value = value.map(unquote);
                if name.eq_ignore_ascii_case(b"realm") {
                    this_realm = value;
                } else if name.eq_ignore_ascii_case(b"nonce") {
                    nonce = value;
                }
            }
            (this_realm? == realm.as_bytes()).then_some(())?;
            Some(String::from_utf8_lossy(nonce?).into_owned())
        })
}

/// The content of a quoted string (escapes kept, as the challenge parser keeps
/// them); a token is returned as is.
fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

/// One `Authorization`/`Proxy-Authorization` value (RFC 3261 §22.4 / §25.1
/// quoting: username, realm, nonce, uri, response, cnonce, opaque quoted; algorithm,
/// qop and nc unquoted).
fn credentials_value(
    creds: &Credentials,
    space: &AuthSpace,
    method: &Method,
    request_uri: &str,
    body: &[u8],
) -> String {
    let nc = format!("{:08x}", space.nc);
    let realm = unescape(&space.realm);
    let nonce = unescape(&space.nonce);
    let response = compute_response(&ResponseInput {
        algorithm: space.algorithm,
        username: &creds.username,
        realm: &realm,
        password: &creds.password,
        method: method.as_bytes(),
        uri: request_uri,
        nonce: &nonce,
        qop: space.qop,
        nc: &nc,
        cnonce: &space.cnonce,
        body,
    });
    let mut v = String::with_capacity(
        160 + creds.username.len() + space.realm.len() + space.nonce.len() + request_uri.len(),
    );
    v.push_str("Digest username=\"");
    push_quoted_escaped(&mut v, &creds.username);
    v.push_str("\", realm=\"");
    v.push_str(&space.realm);
    v.push_str("\", nonce=\"");
    v.push_str(&space.nonce);
    v.push_str("\", uri=\"");
    push_quoted_escaped(&mut v, request_uri);
    v.push_str("\", response=\"");
    v.push_str(&response);
    v.push_str("\", algorithm=");
    v.push_str(space.algorithm.as_str());
    if let Some(qop) = space.qop {
        v.push_str(", cnonce=\"");
        v.push_str(&space.cnonce);
        v.push_str("\", qop=");
        v.push_str(qop.as_str());
        v.push_str(", nc=");
        v.push_str(&nc);
    }
    if let Some(opaque) = &space.opaque {
        v.push_str(", opaque=\"");
        v.push_str(opaque);
        v.push('"');
    }
    v
}

#[cfg(test)]
mod tests;
