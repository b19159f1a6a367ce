//! Digest hashing primitives (RFC 2617, RFC 7616 and RFC 3261 §22.4): the
//! algorithm and qop variants the client supports and the `response` computation.
//!
//! Kept free of SIP message handling so the RFC example vectors can be checked
//! against exactly the function the client uses.

use crate::util::hex;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::borrow::Cow;

/// A digest algorithm the client can answer. The `-sess` variants hash the
/// session key `H(H(user:realm:password):nonce:cnonce)` as A1 (RFC 7616 §3.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// Map a challenge's `algorithm` token (case-insensitive). `None` for anything
    /// the client cannot compute (SHA-512-256, AKA, unknown tokens).
    pub fn from_token(token: &str) -> Option<Algorithm> {
        const ALL: [Algorithm; 4] = [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ];
        ALL.into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    /// The token as written in an `Authorization` header (RFC 7616 spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether A1 is the session key (needs a cnonce, hence a qop).
    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// Preference when one realm offers several challenges: SHA-256 over MD5
    /// (RFC 7616 §3.7 / RFC 8760 §2.4), plain over `-sess` within a family.
    pub(crate) fn preference(self) -> u8 {
        match self {
            Algorithm::Sha256 => 3,
            Algorithm::Sha256Sess => 2,
            Algorithm::Md5 => 1,
            Algorithm::Md5Sess => 0,
        }
    }

    /// Lower-case hex of H(p0 ":" p1 ":" …), hashing the parts in place (no joined
    /// buffer).
    pub(crate) fn hash(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hash_parts::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hash_parts::<Sha256>(parts),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hash_parts<D: Digest>(parts: &[&[u8]]) -> String {
    let mut d = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(p);
    }
    hex(&d.finalize())
}

/// Quality of protection chosen for a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Qop {
    /// `qop=auth`: A2 = method ":" uri.
    Auth,
    /// `qop=auth-int`: A2 = method ":" uri ":" H(entity-body).
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// Everything the `response` value depends on. String values are the *unquoted*
/// values (quoted-pair escapes removed, see [`unescape`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a [u8],
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `None`: RFC 2069 compatibility (no qop in the challenge).
    pub qop: Option<Qop>,
    /// Eight lower-case hex digits; unused without qop.
    pub nc: &'a str,
    /// Unused without qop (and then a `-sess` algorithm is not allowed).
    pub cnonce: &'a str,
    /// The entity body, hashed only for `auth-int`.
    pub body: &'a [u8],
}

/// The `response` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1, RFC 2069 without qop).
pub(crate) fn compute_response(i: &ResponseInput<'_>) -> String {
    let alg = i.algorithm;
    let mut ha1 = alg.hash(&[
        i.username.as_bytes(),
        i.realm.as_bytes(),
        i.password.as_bytes(),
    ]);
    if alg.is_sess() {
        ha1 = alg.hash(&[ha1.as_bytes(), i.nonce.as_bytes(), i.cnonce.as_bytes()]);
    }
    let ha2 = match i.qop {
        Some(Qop::AuthInt) => {
            let hbody = alg.hash(&[i.body]);
            alg.hash(&[i.method, i.uri.as_bytes(), hbody.as_bytes()])
        }
        _ => alg.hash(&[i.method, i.uri.as_bytes()]),
    };
    match i.qop {
        Some(q) => alg.hash(&[
            ha1.as_bytes(),
            i.nonce.as_bytes(),
            i.nc.as_bytes(),
            i.cnonce.as_bytes(),
            q.as_str().as_bytes(),
            ha2.as_bytes(),
        ]),
        None => alg.hash(&[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// The content of a quoted-string with its quoted-pairs (`\x`) resolved; borrowed
/// when there is nothing to resolve (the usual case).
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Append `s` as the content of a quoted-string (escaping `"` and `\`).
pub(crate) fn push_quoted_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_input(
        algorithm: Algorithm,
        realm: &'static str,
        password: &'static str,
    ) -> ResponseInput<'static> {
        ResponseInput {
            algorithm,
            username: "Mufasa",
            realm,
            password,
            method: b"GET",
            uri: "/dir/index.html",
            nonce: "",
            qop: Some(Qop::Auth),
            nc: "00000001",
            cnonce: "",
            body: b"",
        }
    }

    /// RFC 2617 §3.5: the Mufasa example.
    #[test]
    fn rfc2617_section_3_5_example() {
        let i = ResponseInput {
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            cnonce: "0a4f113b",
            ..rfc_input(Algorithm::Md5, "testrealm@host.com", "Circle Of Life")
        };
        assert_eq!(compute_response(&i), "6629fae49393a05397450978507c4ef1");
    }

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    /// RFC 7616 §3.9.1, the MD5 Authorization example.
    #[test]
    fn rfc7616_section_3_9_1_md5() {
        let i = ResponseInput {
            nonce: RFC7616_NONCE,
            cnonce: RFC7616_CNONCE,
            ..rfc_input(Algorithm::Md5, "http-auth@example.org", "Circle of Life")
        };
        assert_eq!(compute_response(&i), "8ca523f5e9506fed4657c9700eebdbec");
    }

    /// RFC 7616 §3.9.1, the SHA-256 Authorization example.
    #[test]
    fn rfc7616_section_3_9_1_sha256() {
        let i = ResponseInput {
            nonce: RFC7616_NONCE,
            cnonce: RFC7616_CNONCE,
            ..rfc_input(Algorithm::Sha256, "http-auth@example.org", "Circle of Life")
        };
        assert_eq!(
            compute_response(&i),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// Constants computed independently with Python's hashlib:
    /// ```text
    /// H=lambda s,a:hashlib.new(a,s.encode()).hexdigest()
    /// ha1=H(H("1001:pbx.test:s3cr3t",a)+":Yx2bQmZlYWQ0NTZk:0a4f113b",a)
    /// ha2=H("SUBSCRIBE:sip:1002@pbx.test",a)            # auth
    /// ha2=H("SUBSCRIBE:sip:1002@pbx.test:"+H(body,a),a)  # auth-int
    /// H(ha1+":Yx2bQmZlYWQ0NTZk:00000002:0a4f113b:auth:"+ha2,a)  # auth-int: ":auth-int:"
    /// H(H("1001:pbx.test:s3cr3t",a)+":Yx2bQmZlYWQ0NTZk:"+ha2,a)  # no qop (RFC 2069)
    /// ```
    /// with `a` = "md5" / "sha256" and body `b"v=0\r\n"` for auth-int.
    fn sip_input(algorithm: Algorithm, qop: Option<Qop>) -> ResponseInput<'static> {
        ResponseInput {
            algorithm,
            username: "1001",
            realm: "pbx.test",
            password: "s3cr3t",
            method: b"SUBSCRIBE",
            uri: "sip:1002@pbx.test",
            nonce: "Yx2bQmZlYWQ0NTZk",
            qop,
            nc: "00000002",
            cnonce: "0a4f113b",
            body: b"",
        }
    }

    #[test]
    fn md5_sess_vector_from_python_hashlib() {
        let i = sip_input(Algorithm::Md5Sess, Some(Qop::Auth));
        assert_eq!(compute_response(&i), MD5_SESS_AUTH);
        // The session key really enters: plain MD5 gives something else.
        let plain = sip_input(Algorithm::Md5, Some(Qop::Auth));
        assert_ne!(compute_response(&plain), MD5_SESS_AUTH);
    }

    #[test]
    fn sha256_sess_vector_from_python_hashlib() {
        let i = sip_input(Algorithm::Sha256Sess, Some(Qop::Auth));
        assert_eq!(compute_response(&i), SHA256_SESS_AUTH);
    }

    #[test]
    fn auth_int_hashes_the_body() {
        let i = ResponseInput {
            body: b"v=0\r\n",
            ..sip_input(Algorithm::Md5, Some(Qop::AuthInt))
        };
        assert_eq!(compute_response(&i), MD5_AUTH_INT);
        let other_body = ResponseInput {
            body: b"v=1\r\n",
            ..i
        };
        assert_ne!(compute_response(&other_body), MD5_AUTH_INT);
    }

    #[test]
    fn rfc2069_without_qop() {
        let i = sip_input(Algorithm::Md5, None);
        assert_eq!(compute_response(&i), MD5_NO_QOP);
    }

    const MD5_SESS_AUTH: &str = "c8e06a552c63adc2cb4d50e5ef69ce5b";
    const SHA256_SESS_AUTH: &str =
        "9a3cb683412d87596dd663a2de6f16bc862c1d72392bdf95f67b804c7383e90f";
    const MD5_AUTH_INT: &str = "5be5c8773be8e6f9320a8a56cd37e623";
    const MD5_NO_QOP: &str = "dad8ce0950de5e1893ff754a82dc4a75";

    #[test]
    fn algorithm_tokens() {
        assert_eq!(Algorithm::from_token("md5-SESS"), Some(Algorithm::Md5Sess));
        assert_eq!(Algorithm::from_token("SHA-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_token("SHA-512-256"), None);
        assert_eq!(Algorithm::from_token("AKAv1-MD5"), None);
    }

    #[test]
    fn quoted_string_helpers() {
        assert_eq!(unescape(r#"a\"b\\c"#), r#"a"b\c"#);
        assert!(matches!(unescape("plain"), Cow::Borrowed("plain")));
        let mut s = String::new();
        push_quoted_escaped(&mut s, r#"a"b\c"#);
        assert_eq!(s, r#"a\"b\\c"#);
    }
}
