//! Header names: the headers the bridge acts on get a variant, everything else is
//! [`HeaderName::Other`] and is only ever carried through byte for byte.
//!
//! Compact forms (RFC 3261 §7.3.3 and the IANA registry) map to the same variant as
//! their long names, so `v:` is a [`HeaderName::Via`].
//!
//! The list of known headers is written once, in the `header_names!` macro; the
//! enum, the canonical names, [`HeaderName::ALL`] and the lookup tables behind
//! [`HeaderName::parse`] are generated from it.

/// Declares the known headers: `Variant = "Canonical-Name" [, b'compact'];`.
/// Generates [`HeaderName`] (plus its `Other` variant), [`HeaderName::as_str`],
/// [`HeaderName::ALL`] and the compact-form list the lookup table is built from.
macro_rules! header_names {
    ($( $variant:ident = $long:literal $(, $compact:literal)? ; )*) => {
        /// A header name the bridge knows. Comparison is case-insensitive at parse time;
        /// the original spelling stays in the message bytes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $variant, )*
            /// Any other header. The name is available from the message as raw bytes.
            Other,
        }

        impl HeaderName {
            /// Every named header (all but [`HeaderName::Other`]), in declaration order.
            pub const ALL: &'static [HeaderName] = &[$( HeaderName::$variant, )*];

            /// The canonical long name, used when the bridge writes a header itself.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $long, )*
                    HeaderName::Other => "",
                }
            }
        }

        /// `(compact form, header)` pairs.
        const COMPACT_FORMS: &[(u8, HeaderName)] = &[$( $( ($compact, HeaderName::$variant), )? )*];
    };
}

header_names! {
    Via = "Via", b'v';
    From = "From", b'f';
    To = "To", b't';
    CallId = "Call-ID", b'i';
    CSeq = "CSeq";
    Contact = "Contact", b'm';
    MaxForwards = "Max-Forwards";
    Expires = "Expires";
    MinExpires = "Min-Expires";
    Event = "Event", b'o';
    AllowEvents = "Allow-Events", b'u';
    SubscriptionState = "Subscription-State";
    Accept = "Accept";
    Allow = "Allow";
    Route = "Route";
    RecordRoute = "Record-Route";
    Path = "Path";
    WwwAuthenticate = "WWW-Authenticate";
    ProxyAuthenticate = "Proxy-Authenticate";
    Authorization = "Authorization";
    ProxyAuthorization = "Proxy-Authorization";
    UserAgent = "User-Agent";
    Server = "Server";
    ContentType = "Content-Type", b'c';
    ContentLength = "Content-Length", b'l';
    ContentEncoding = "Content-Encoding", b'e';
    Supported = "Supported", b'k';
    Require = "Require";
    ProxyRequire = "Proxy-Require";
    Unsupported = "Unsupported";
    RetryAfter = "Retry-After";
    Subject = "Subject", b's';
    ReferTo = "Refer-To", b'r';
    ReferredBy = "Referred-By", b'b';
    SessionExpires = "Session-Expires", b'x';
    Identity = "Identity", b'y';
    AcceptContact = "Accept-Contact", b'a';
    RejectContact = "Reject-Contact", b'j';
    RequestDisposition = "Request-Disposition", b'd';
    Date = "Date";
    Warning = "Warning";
}

/// Compact form (`a`..=`z`, lower case) → header.
static COMPACT: [HeaderName; 26] = {
    let mut t = [HeaderName::Other; 26];
    let mut i = 0;
    while i < COMPACT_FORMS.len() {
        let (c, h) = COMPACT_FORMS[i];
        assert!(
            c.is_ascii_lowercase(),
            "compact forms are lower-case letters"
        );
        assert!(
            matches!(t[(c - b'a') as usize], HeaderName::Other),
            "two headers with the same compact form"
        );
        t[(c - b'a') as usize] = h;
        i += 1;
    }
    t
};

/// The longest canonical name.
const MAX_LEN: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let l = HeaderName::ALL[i].as_str().len();
        if l > m {
            m = l;
        }
        i += 1;
    }
    m
};

/// Candidates by (name length, first letter): at most two long names share both,
/// so that a name costs at most one or two full comparisons (this runs for every
/// header of every message). Empty slots are [`HeaderName::Other`].
static BY_SHAPE: [[[HeaderName; 2]; 26]; MAX_LEN + 1] = {
    let mut t = [[[HeaderName::Other; 2]; 26]; MAX_LEN + 1];
    let mut i = 0;
    while i < HeaderName::ALL.len() {
        let h = HeaderName::ALL[i];
        let n = h.as_str().as_bytes();
        assert!(n.len() > 1 && n[0].is_ascii_alphabetic());
        let slots = &mut t[n.len()][((n[0] | 0x20) - b'a') as usize];
        if matches!(slots[0], HeaderName::Other) {
            slots[0] = h;
        } else if matches!(slots[1], HeaderName::Other) {
            slots[1] = h;
        } else {
            panic!("more than two header names share a length and a first letter");
        }
        i += 1;
    }
    t
};

impl HeaderName {
    /// Recognise a header name (long or compact form, any case).
    #[inline]
    pub fn parse(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            let i = name[0].to_ascii_lowercase().wrapping_sub(b'a');
            return COMPACT
                .get(i as usize)
                .copied()
                .unwrap_or(HeaderName::Other);
        }
        // Dispatch on length and first letter. A non-letter first byte may alias a
        // letter under `| 0x20`; the full comparison below rejects it.
        let len = name.len();
        let Some(&first) = name.first() else {
            return HeaderName::Other;
        };
        let letter = (first | 0x20).wrapping_sub(b'a') as usize;
        if len > MAX_LEN || letter >= 26 {
            return HeaderName::Other;
        }
        let [a, b] = BY_SHAPE[len][letter];
        if a == HeaderName::Other || a.is(name) {
            return a;
        }
        if b == HeaderName::Other || b.is(name) {
            return b;
        }
        HeaderName::Other
    }

    /// Is `name` this header's canonical name, in any case?
    #[inline(always)]
    fn is(self, name: &[u8]) -> bool {
        let n = self.as_str().as_bytes();
        // most senders write the canonical spelling: one memcmp
        name == n || name.eq_ignore_ascii_case(n)
    }

    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so that
    /// several values may share one header line. Authentication headers and
    /// single-valued headers are not lists even though their values contain commas.
    pub fn is_list(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Path
                | Accept
                | Allow
                | AllowEvents
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
                | ContentEncoding
                | AcceptContact
                | RejectContact
                | RequestDisposition
                | Warning
        )
    }

    /// Headers that may appear at most once in a message (RFC 3261 §20 and
    /// RFC 4475 §3.3.9). A second occurrence makes a request malformed.
    pub fn is_single(self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            From | To
                | CallId
                | CSeq
                | MaxForwards
                | Expires
                | MinExpires
                | ContentLength
                | ContentType
                | Event
                | SubscriptionState
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_forms_map_to_the_same_name() {
        for (c, l) in [
            ("v", "Via"),
            ("f", "From"),
            ("t", "To"),
            ("i", "Call-ID"),
            ("m", "Contact"),
            ("l", "Content-Length"),
            ("c", "Content-Type"),
            ("k", "Supported"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("e", "Content-Encoding"),
            ("s", "Subject"),
            ("r", "Refer-To"),
            ("b", "Referred-By"),
        ] {
            let a = HeaderName::parse(c.as_bytes());
            let b = HeaderName::parse(l.as_bytes());
            assert_eq!(a, b, "{c} vs {l}");
            assert_ne!(a, HeaderName::Other, "{c}");
            assert_eq!(a.as_str(), l);
            // upper-case compact forms too
            assert_eq!(HeaderName::parse(c.to_ascii_uppercase().as_bytes()), a);
        }
    }

    #[test]
    fn the_other_compact_forms_are_known_too() {
        for (c, l) in [
            ("x", "Session-Expires"),
            ("y", "Identity"),
            ("a", "Accept-Contact"),
            ("j", "Reject-Contact"),
            ("d", "Request-Disposition"),
        ] {
            assert_eq!(HeaderName::parse(c.as_bytes()).as_str(), l);
            assert_eq!(
                HeaderName::parse(c.to_ascii_uppercase().as_bytes()).as_str(),
                l
            );
        }
        for c in [b"g", b"h", b"n", b"p", b"q", b"w", b"z"] {
            assert_eq!(HeaderName::parse(c), HeaderName::Other);
        }
    }

    #[test]
    fn all_lists_every_named_header_once() {
        assert_eq!(HeaderName::ALL.len(), 41);
        assert!(!HeaderName::ALL.contains(&HeaderName::Other));
        for (i, h) in HeaderName::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
        }
    }

    #[test]
    fn every_named_header_round_trips_through_its_canonical_name() {
        for &h in HeaderName::ALL {
            assert_eq!(HeaderName::parse(h.as_str().as_bytes()), h, "{h:?}");
            assert_eq!(
                HeaderName::parse(h.as_str().to_ascii_lowercase().as_bytes()),
                h
            );
            assert_eq!(
                HeaderName::parse(h.as_str().to_ascii_uppercase().as_bytes()),
                h
            );
        }
    }

    /// The lookup tables agree with the plain definition (a case-insensitive match
    /// of the canonical name, or the compact form) on every one-byte name and on
    /// every canonical name with any one byte replaced.
    #[test]
    fn lookup_agrees_with_a_linear_search() {
        fn reference(name: &[u8]) -> HeaderName {
            if let [c] = name {
                return COMPACT_FORMS
                    .iter()
                    .find(|(f, _)| f.eq_ignore_ascii_case(c))
                    .map_or(HeaderName::Other, |&(_, h)| h);
            }
            HeaderName::ALL
                .iter()
                .copied()
                .find(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
                .unwrap_or(HeaderName::Other)
        }
        for b in 0..=255u8 {
            assert_eq!(HeaderName::parse(&[b]), reference(&[b]), "{b}");
        }
        for h in HeaderName::ALL {
            let canonical = h.as_str().as_bytes();
            for i in 0..canonical.len() {
                let mut n = canonical.to_vec();
                for b in 0..=255u8 {
                    n[i] = b;
                    assert_eq!(HeaderName::parse(&n), reference(&n), "{n:?}");
                }
            }
        }
    }

    #[test]
    fn unknown_names_are_other() {
        // including names whose first byte aliases a letter under `| 0x20`
        for n in [
            "X-GS-Vendor-Tag",
            "NewFangledHeader",
            "z",
            "",
            "Viaa",
            "Tos",
            "\x16ia",
            "Vi@",
            "C%6Fntact",
        ] {
            assert_eq!(HeaderName::parse(n.as_bytes()), HeaderName::Other, "{n}");
        }
    }
}
